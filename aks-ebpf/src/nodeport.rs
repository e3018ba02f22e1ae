//! NodePort and LoadBalancer services, for traffic from outside the cluster (see
//! aks-ebpf-common's `nodeport`): a flow to `nodeIP:nodePort` gets a backend (a local
//! one with `externalTrafficPolicy: Local`, any with `Cluster`), is DNATed to it and,
//! when the backend is on another node, SNATed to the node address so its replies come
//! back through this node; the replies are translated back on their way out.
//!
//! Entry points for the TC programs, each `None` when the packet is not theirs:
//! [`to_node_port`] and [`reply`] in `from_vnet` (packets for the node address),
//! [`reply`] in `from_pod`.

use aks_ebpf_common::{
    conntrack::NAT_PORT_RETRIES,
    nodeport::{
        NodePortFlow, NodePortKey, NodePortReply, NodePortSlot, NODEPORT_LOCAL, REPLY_OPENING,
    },
    wire::{PROTO_TCP, TCP_ACK, TCP_SYN},
    FlowKey, NodeConfig, Reason, ROUTE_OVERLAY,
};
use aya_ebpf::{
    bindings::{BPF_NOEXIST, TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_get_prandom_u32,
    programs::TcContext,
};

use crate::maps::{self, NAT, NODEPORTS, NODEPORT_FLOWS, NODEPORT_REPLIES};
use crate::packet::{Ipv4Frame, Transport};
use crate::rewrite::{rewrite, End};
use crate::{forward, policy, routing::Decision};

/// A packet from the VNet to `nodeIP:port`: if `port` is a node port, the packet goes
/// to its flow's backend (chosen now for a new flow).
#[inline(always)]
pub fn to_node_port(
    ctx: &TcContext,
    config: &NodeConfig,
    ip: &Ipv4Frame,
    flow: &FlowKey,
    l4: &Transport,
) -> Option<Decision> {
    let chosen = match NODEPORT_FLOWS.get_ptr(flow) {
        Some(existing) => {
            // SAFETY: a valid pointer into the map, copied at once.
            let chosen = unsafe { *existing };
            // A new connection on a tuple used before (the client reuses its port) keeps
            // the backend, but its reply entry is written again: with a local backend
            // the reply tuple is the client's own, which another node port's flow from
            // the same client port may have taken over since. The SYN opens the
            // handshake again (see `reply`).
            if is_new_connection(flow, l4) {
                let answer = reply_for(flow, l4);
                if NODEPORT_REPLIES
                    .insert(chosen.reply_key(flow), answer, 0)
                    .is_err()
                {
                    return Some((Reason::DropConntrackFull, TC_ACT_SHOT));
                }
            }
            chosen
        }
        None => {
            // SAFETY: as above.
            let master = NODEPORTS
                .get_ptr(NodePortKey::new(flow.dst_port, flow.protocol, 0))
                .map(|p| unsafe { *p })?;
            match new_flow(config, flow, l4, &master) {
                Ok(chosen) => chosen,
                Err(reason) => return Some((reason, TC_ACT_SHOT)),
            }
        }
    };
    Some(forward_to_backend(ctx, config, ip, flow, l4, &chosen))
}

/// A backend's reply to a node port flow, translated to `nodeIP:nodePort → client` and
/// sent out of the uplink: from a local backend (`backend → client`, in `from_pod`:
/// `NodePortRevDnat`) or from another node's (`backend → nodeIP:snatPort`, in
/// `from_vnet`: `NodePortRevSnat`), counted under `reason`.
///
/// The entries live until the LRU evicts them, so a reply tuple outlives its
/// connection: a TCP SYN(-ACK) on it is this flow's only while the client's SYN through
/// the node port opened it ([`REPLY_OPENING`], cleared by the backend's first segment
/// without SYN: it is then established and sends no more SYN-ACKs). Any other answers
/// a connection that reached the backend by another path on the same tuple (a peer
/// node's SNAT keeping the client port, say): the stale entries are forgotten and the
/// packet goes on untranslated. UDP has no handshake to tell flows apart: its entry
/// translates every reply until evicted or taken over by a new client flow.
#[inline(always)]
pub fn reply(
    ctx: &TcContext,
    config: &NodeConfig,
    ip: &Ipv4Frame,
    flow: &FlowKey,
    l4: &Transport,
    reason: Reason,
) -> Option<Decision> {
    let entry = NODEPORT_REPLIES.get_ptr_mut(flow)?;
    // SAFETY: a valid pointer into the map, copied at once.
    let reply = unsafe { *entry };
    if flow.protocol == PROTO_TCP {
        let opening = reply.flags & REPLY_OPENING != 0;
        if l4.tcp_flags & TCP_SYN == 0 {
            if opening {
                // SAFETY: as above; a plain store into the value.
                unsafe { (*entry).flags = reply.flags & !REPLY_OPENING };
            }
        } else if !opening {
            forget(config, flow, &reply);
            return None;
        }
    }
    Some(reply_out(ctx, config, ip, flow, l4, &reply, reason))
}

/// Removes the reply entry `reply_key` → `reply` of a closed flow, and the client
/// flow's entry when it still leads to this reply tuple (a new SYN then picks a
/// backend afresh, and a SNAT port is free again).
#[inline(always)]
fn forget(config: &NodeConfig, reply_key: &FlowKey, reply: &NodePortReply) {
    let _ = NODEPORT_REPLIES.remove(reply_key);
    let client = FlowKey::new(
        reply.client_addr,
        config.node_ip,
        reply.client_port,
        reply.node_port,
        reply_key.protocol,
    );
    // SAFETY: a valid pointer into the map, copied at once.
    let partner = NODEPORT_FLOWS.get_ptr(client).map(|p| unsafe { *p });
    if partner.is_some_and(|chosen| chosen.reply_key(&client) == *reply_key) {
        let _ = NODEPORT_FLOWS.remove(client);
    }
}

/// Whether a node port flow holds `reply` (a tuple SNAT may not hand out again).
#[inline(always)]
pub fn holds(reply: &FlowKey) -> bool {
    NODEPORT_REPLIES.get_ptr(reply).is_some()
}

/// Where the replies of the client flow `flow` go back to; a SYN opens the handshake.
#[inline(always)]
fn reply_for(flow: &FlowKey, l4: &Transport) -> NodePortReply {
    NodePortReply {
        client_addr: flow.src,
        client_port: flow.src_port,
        node_port: flow.dst_port,
        flags: if is_new_connection(flow, l4) {
            REPLY_OPENING
        } else {
            0
        },
        _pad: 0,
    }
}

/// A TCP SYN without ACK: a client opening a connection.
#[inline(always)]
fn is_new_connection(flow: &FlowKey, l4: &Transport) -> bool {
    flow.protocol == PROTO_TCP && l4.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// Picks a backend for a new client flow (random among the master's slots), SNAT port
/// included for a backend on another node, and records the flow and its reply key.
#[inline(always)]
fn new_flow(
    config: &NodeConfig,
    flow: &FlowKey,
    l4: &Transport,
    master: &NodePortSlot,
) -> Result<NodePortFlow, Reason> {
    let local_only = master.flags & NODEPORT_LOCAL != 0;
    if master.count == 0 {
        return Err(if local_only {
            Reason::DropNodePortNoLocalBackend
        } else {
            Reason::DropNodePortNoBackend
        });
    }
    // SAFETY: a helper without arguments.
    let pick = unsafe { bpf_get_prandom_u32() } % u32::from(master.count);
    let slot_key = NodePortKey::new(flow.dst_port, flow.protocol, pick as u16 + 1);
    // SAFETY: a valid pointer into the map, copied at once.
    let slot = NODEPORTS
        .get_ptr(slot_key)
        .map(|p| unsafe { *p })
        .ok_or(Reason::DropNodePortNoBackend)?;
    let mut chosen = NodePortFlow {
        backend_addr: slot.backend_addr,
        backend_port: slot.backend_port,
        snat_port: 0,
    };
    let answer = reply_for(flow, l4);
    if maps::endpoint(slot.backend_addr).is_some() {
        // A local backend answers the client directly; nothing to claim.
        if NODEPORT_REPLIES
            .insert(chosen.reply_key(flow), answer, 0)
            .is_err()
        {
            return Err(Reason::DropConntrackFull);
        }
    } else {
        if local_only {
            // Slots of a Local service name only this node's pods; one that left.
            return Err(Reason::DropNodePortNoLocalBackend);
        }
        chosen.snat_port = claim_snat_port(config, flow, &mut chosen, &answer)?;
    }
    if NODEPORT_FLOWS.insert(flow, chosen, 0).is_err() {
        let _ = NODEPORT_REPLIES.remove(chosen.reply_key(flow));
        return Err(Reason::DropConntrackFull);
    }
    Ok(chosen)
}

/// A node-address port for a SNATed flow whose reply tuple is free in both this map
/// and the masquerade's `NAT`: the client's own port when it is in range, else random
/// tries. The reply entry is written as the claim.
#[inline(always)]
fn claim_snat_port(
    config: &NodeConfig,
    flow: &FlowKey,
    chosen: &mut NodePortFlow,
    answer: &NodePortReply,
) -> Result<u16, Reason> {
    let (min, max) = (
        config.nat_port_min,
        config.nat_port_max.max(config.nat_port_min),
    );
    let span = u32::from(max - min) + 1;
    let mut port = if flow.src_port >= min && flow.src_port <= max {
        flow.src_port
    } else {
        random_port(min, span)
    };
    for _ in 0..=NAT_PORT_RETRIES {
        chosen.snat_port = port;
        let reply = chosen.reply_key(flow);
        if NAT.get_ptr(reply).is_none()
            && NODEPORT_REPLIES
                .insert(reply, answer, u64::from(BPF_NOEXIST))
                .is_ok()
        {
            return Ok(port);
        }
        port = random_port(min, span);
    }
    Err(Reason::DropNodePortNoSnatPort)
}

#[inline(always)]
fn random_port(min: u16, span: u32) -> u16 {
    // SAFETY: a helper without arguments.
    let r = unsafe { bpf_get_prandom_u32() };
    min + (r % span) as u16
}

/// DNAT (and SNAT, for a remote backend) of a client's packet, then on: into the local
/// pod, into the overlay through the kernel, or out of the uplink to the VNet.
#[inline(always)]
fn forward_to_backend(
    ctx: &TcContext,
    config: &NodeConfig,
    ip: &Ipv4Frame,
    flow: &FlowKey,
    l4: &Transport,
    chosen: &NodePortFlow,
) -> Decision {
    let local = maps::endpoint(chosen.backend_addr);
    // The network policy of a backend on this node judges the client's own address
    // (kept here); a backend on another node is judged there, on this node's address.
    if let Some(pod) = &local {
        let ports = (u32::from(flow.src_port) << 16) | u32::from(chosen.backend_port);
        let flags = policy::flags(0, pod.flags);
        if let Err(reason) =
            policy::enforce(flow.src, chosen.backend_addr, ports, flow.protocol, flags)
        {
            return (reason, TC_ACT_SHOT);
        }
    }
    let behind_overlay = local.is_none()
        && maps::route(chosen.backend_addr).is_some_and(|r| r.flags & ROUTE_OVERLAY != 0);
    // Next hop first (direct packet access), then the rewrite (helpers). Into the
    // overlay the kernel routes, and makes the hop itself.
    let hop = match &local {
        Some(pod) => Some((pod.host_mac, pod.pod_mac)),
        None if behind_overlay => None,
        None => Some((config.uplink_mac, config.gateway_mac)),
    };
    if let Some((src_mac, dst_mac)) = hop {
        if let Err(reason) = forward::hop(ip, src_mac, dst_mac) {
            return (reason, TC_ACT_SHOT);
        }
    }
    if let Err(reason) = rewrite(
        ctx,
        flow,
        l4,
        End::Destination,
        chosen.backend_addr,
        chosen.backend_port,
    ) {
        return (reason, TC_ACT_SHOT);
    }
    if chosen.snat_port != 0 {
        if let Err(reason) = rewrite(ctx, flow, l4, End::Source, config.node_ip, chosen.snat_port) {
            return (reason, TC_ACT_SHOT);
        }
    }
    match local {
        Some(pod) => forward::to_peer(pod.host_ifindex, Reason::NodePortDnat),
        // The node accepts its own address as a source on the uplink for this (see
        // the loader), so the SNATed packet is routed into the tunnel.
        None if behind_overlay => (Reason::NodePortDnatSnat, TC_ACT_OK),
        None => forward::out_of(config.uplink_ifindex, Reason::NodePortDnatSnat),
    }
}

/// A backend's reply, translated to `nodeIP:nodePort → client` and sent out of the
/// uplink toward the fabric (whose load balancer puts the frontend back).
#[inline(always)]
fn reply_out(
    ctx: &TcContext,
    config: &NodeConfig,
    ip: &Ipv4Frame,
    flow: &FlowKey,
    l4: &Transport,
    reply: &NodePortReply,
    reason: Reason,
) -> Decision {
    if let Err(reason) = forward::hop(ip, config.uplink_mac, config.gateway_mac) {
        return (reason, TC_ACT_SHOT);
    }
    if let Err(reason) = rewrite(ctx, flow, l4, End::Source, config.node_ip, reply.node_port) {
        return (reason, TC_ACT_SHOT);
    }
    if (flow.dst, flow.dst_port) != (reply.client_addr, reply.client_port) {
        if let Err(reason) = rewrite(
            ctx,
            flow,
            l4,
            End::Destination,
            reply.client_addr,
            reply.client_port,
        ) {
            return (reason, TC_ACT_SHOT);
        }
    }
    forward::out_of(config.uplink_ifindex, reason)
}
