//! The forwarding decisions of the two TC programs. Each returns the reason it reached
//! and the TC verdict to give; the entry points count and return.

use aks_ebpf_common::{FlowKey, Reason, ROUTE_MASQUERADE, ROUTE_OVERLAY};
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    programs::TcContext,
};

use crate::{
    forward, lb, maps, nat,
    packet::{parse_ipv4, transport, Frame, Ipv4Frame, Transport},
    policy,
};

pub type Decision = (Reason, i32);

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

fn flow_of(ip: &Ipv4Frame, l4: &Transport) -> FlowKey {
    FlowKey::new(ip.src(), ip.dst(), l4.src_port, l4.dst_port, ip.protocol())
}

/// A frame a pod sent (TC ingress of the host side of its veth).
#[inline(always)]
pub fn from_pod(ctx: &TcContext, frame: &Frame) -> Decision {
    let ip = match parse_ipv4(frame) {
        Ok(Some(ip)) => ip,
        Ok(None) => return (Reason::PassedNonIpv4, TC_ACT_OK),
        Err(reason) => return (reason, TC_ACT_SHOT),
    };
    let Some(config) = maps::config() else {
        return (Reason::DropNoConfig, TC_ACT_SHOT);
    };
    let dst = ip.dst();
    // Parsed once: services, replies to them, policy and SNAT all need the transport
    // header.
    let l4 = transport(frame, &ip);
    // The sending pod's policy flags (zero for a pod no policy selects).
    let source_flags = maps::endpoint(ip.src()).map_or(0, |pod| pod.flags);
    if dst == config.node_ip {
        // The node's own connections into its pods reach them without a program (the
        // node's stack sends them), so policy never saw them start: a TCP segment that
        // is not an opening SYN is such a reply and passes. (UDP has no such mark; a
        // reply of the node's UDP flow to an egress-isolated pod is judged as new.)
        let l4 = l4.as_ref().ok().and_then(Option::as_ref);
        let opening = l4.is_none_or(|l4| {
            ip.protocol() != aks_ebpf_common::conntrack::PROTO_TCP
                || l4.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
        });
        if opening {
            if let Err(reason) = policy::enforce(&policy::flow(&ip, l4), source_flags, 0) {
                return (reason, TC_ACT_SHOT);
            }
        }
        return (Reason::PassedToStack, TC_ACT_OK);
    }
    let flow = match &l4 {
        Ok(Some(l4)) => Some(flow_of(&ip, l4)),
        _ => None,
    };
    if let (Ok(Some(l4)), Some(flow)) = (&l4, &flow) {
        if let Some(decision) = service_reply(ctx, &ip, flow, l4) {
            return decision;
        }
        if let Some(master) = lb::frontend(flow) {
            return to_service(ctx, config, &ip, flow, l4, &master, source_flags);
        }
    }
    let policy_flow = policy::flow(&ip, l4.as_ref().ok().and_then(Option::as_ref));
    if let Some(pod) = maps::endpoint(dst) {
        if let Err(reason) = policy::enforce(&policy_flow, source_flags, pod.flags) {
            return (reason, TC_ACT_SHOT);
        }
        if let Err(reason) = forward::decrement_ttl(&ip) {
            return (reason, TC_ACT_SHOT);
        }
        forward::set_macs(&ip, pod.host_mac, pod.pod_mac);
        return (Reason::RedirectedPeer, forward::to_peer(pod.host_ifindex));
    }
    if let Err(reason) = policy::enforce(&policy_flow, source_flags, 0) {
        return (reason, TC_ACT_SHOT);
    }
    let route = maps::route(dst);
    // Overlay: pods of another node are reached through the node's tunnel device, which
    // the kernel routes to (and decrements the TTL for); pod addresses are kept.
    if route.is_some_and(|r| r.flags & ROUTE_OVERLAY != 0) {
        return (Reason::PassedToStack, TC_ACT_OK);
    }
    // No route at all means the internet, which is outside every non-masquerade CIDR.
    let masquerade = route.is_none_or(|r| r.flags & ROUTE_MASQUERADE != 0);
    let snat = if masquerade {
        match (l4, flow) {
            (Ok(Some(l4)), Some(flow)) => Some((l4, flow)),
            // Nothing NAT can translate: a pod source would be wrong out there.
            (Ok(_), _) => return (Reason::DropNeedsMasquerade, TC_ACT_SHOT),
            (Err(reason), _) => return (reason, TC_ACT_SHOT),
        }
    } else {
        None
    };
    if let Err(reason) = forward::decrement_ttl(&ip) {
        return (reason, TC_ACT_SHOT);
    }
    // Everything beyond this node leaves through the VNet gateway, as from an Azure NIC:
    // the fabric's routes pick the node or network behind it.
    forward::set_macs(&ip, config.uplink_mac, config.gateway_mac);
    let reason = match snat {
        Some((l4, flow)) => {
            if nat::answers_inbound(&flow, l4.tcp_flags, frame.len()) {
                Reason::RedirectedUplink
            } else if let Err(reason) = nat::snat(ctx, config, &flow, &l4, frame.len()) {
                return (reason, TC_ACT_SHOT);
            } else {
                Reason::RedirectedUplinkSnat
            }
        }
        None => Reason::RedirectedUplink,
    };
    (reason, forward::out_of(config.uplink_ifindex))
}

/// A frame arriving from the VNet (TC ingress of the node uplink).
#[inline(always)]
pub fn from_vnet(ctx: &TcContext, frame: &Frame) -> Decision {
    let ip = match parse_ipv4(frame) {
        Ok(Some(ip)) => ip,
        Ok(None) => return (Reason::PassedNonIpv4, TC_ACT_OK),
        Err(reason) => return (reason, TC_ACT_SHOT),
    };
    let dst = ip.dst();
    if maps::config().is_some_and(|c| c.node_ip == dst) {
        return reply_to_masqueraded(ctx, frame, &ip);
    }
    let Some(pod) = maps::endpoint(dst) else {
        return (Reason::PassedToStack, TC_ACT_OK);
    };
    let l4 = transport(frame, &ip);
    let policy_flow = policy::flow(&ip, l4.as_ref().ok().and_then(Option::as_ref));
    if let Ok(Some(l4)) = l4 {
        if let Some(decision) = service_reply(ctx, &ip, &flow_of(&ip, &l4), &l4) {
            return decision;
        }
        if let Err(reason) = policy::enforce(&policy_flow, 0, pod.flags) {
            return (reason, TC_ACT_SHOT);
        }
        // A peer outside the non-masquerade CIDRs opening a flow to this pod: remember
        // it, so the pod's replies leave untranslated.
        if maps::route(ip.src()).is_none_or(|r| r.flags & ROUTE_MASQUERADE != 0) {
            let reply = FlowKey::new(dst, ip.src(), l4.dst_port, l4.src_port, ip.protocol());
            nat::track_inbound(&reply, l4.tcp_flags, frame.len());
        }
    } else if let Err(reason) = policy::enforce(&policy_flow, 0, pod.flags) {
        return (reason, TC_ACT_SHOT);
    }
    if let Err(reason) = forward::decrement_ttl(&ip) {
        return (reason, TC_ACT_SHOT);
    }
    forward::set_macs(&ip, pod.host_mac, pod.pod_mac);
    (Reason::RedirectedPeer, forward::to_peer(pod.host_ifindex))
}

/// A packet for the node's address: a reply to a masqueraded flow goes back to its pod;
/// anything else is the node's own traffic.
#[inline(always)]
fn reply_to_masqueraded(ctx: &TcContext, frame: &Frame, ip: &Ipv4Frame) -> Decision {
    let l4 = match transport(frame, ip) {
        Ok(Some(l4)) => l4,
        Ok(None) => return (Reason::PassedToStack, TC_ACT_OK),
        Err(reason) => return (reason, TC_ACT_SHOT),
    };
    let flow = flow_of(ip, &l4);
    let Some(target) = nat::reply_target(&flow, l4.tcp_flags, frame.len()) else {
        return (Reason::PassedToStack, TC_ACT_OK);
    };
    let Some(pod) = maps::endpoint(target.addr) else {
        // The pod is gone; its flow's entries expire with the GC.
        return (Reason::PassedToStack, TC_ACT_OK);
    };
    if let Err(reason) = forward::decrement_ttl(ip) {
        return (reason, TC_ACT_SHOT);
    }
    forward::set_macs(ip, pod.host_mac, pod.pod_mac);
    if let Err(reason) = nat::reverse_snat(ctx, &flow, &l4, &target) {
        return (reason, TC_ACT_SHOT);
    }
    (
        Reason::RedirectedPeerRevSnat,
        forward::to_peer(pod.host_ifindex),
    )
}

/// A backend's reply to a load-balanced flow: the frontend goes back in as the source,
/// and the reply is delivered into the client pod. `None` if `flow` is no such reply.
#[inline(always)]
fn service_reply(
    ctx: &TcContext,
    ip: &Ipv4Frame,
    flow: &FlowKey,
    l4: &Transport,
) -> Option<Decision> {
    let (frontend, client) = lb::reply_frontend(flow)?;
    let Some(pod) = maps::endpoint(client) else {
        return Some((Reason::PassedToStack, TC_ACT_OK));
    };
    if let Err(reason) = forward::decrement_ttl(ip) {
        return Some((reason, TC_ACT_SHOT));
    }
    forward::set_macs(ip, pod.host_mac, pod.pod_mac);
    if let Err(reason) = lb::rev_dnat(ctx, flow, l4, &frontend, client) {
        return Some((reason, TC_ACT_SHOT));
    }
    Some((Reason::ServiceRevDnat, forward::to_peer(pod.host_ifindex)))
}

/// A pod's packet to a ClusterIP: DNAT to the flow's backend, then on to it, in this
/// node's pod or out through the VNet.
#[inline(always)]
fn to_service(
    ctx: &TcContext,
    config: &aks_ebpf_common::NodeConfig,
    ip: &Ipv4Frame,
    flow: &FlowKey,
    l4: &Transport,
    master: &aks_ebpf_common::lb::ServiceSlot,
    source_flags: u32,
) -> Decision {
    let backend = match lb::backend_for(flow, master, l4.tcp_flags) {
        Ok(backend) => backend,
        Err(Reason::RejectServiceNoBackend) => {
            // Answer the SYN with a reset, straight back into the client.
            let Some(client) = maps::endpoint(flow.src) else {
                return (Reason::DropServiceNoBackend, TC_ACT_SHOT);
            };
            return match lb::reset_syn(ctx, flow, l4) {
                Ok(()) => (
                    Reason::RejectServiceNoBackend,
                    forward::to_peer(client.host_ifindex),
                ),
                Err(reason) => (reason, TC_ACT_SHOT),
            };
        }
        Err(reason) => return (reason, TC_ACT_SHOT),
    };
    // Policy judges the connection to the backend the service chose, as Kubernetes
    // policies see traffic after the ClusterIP is translated.
    let backend_pod = maps::endpoint(backend.backend_addr);
    let to_backend = FlowKey::new(
        flow.src,
        backend.backend_addr,
        flow.src_port,
        backend.backend_port,
        flow.protocol,
    );
    if let Err(reason) = policy::enforce(
        &to_backend,
        source_flags,
        backend_pod.map_or(0, |p| p.flags),
    ) {
        return (reason, TC_ACT_SHOT);
    }
    // A backend behind the Overlay: translate, then let the kernel route the packet into
    // the tunnel. Its reply comes back out of the tunnel device, where `from_vnet` undoes
    // the translation.
    let behind_overlay = backend_pod.is_none()
        && maps::route(backend.backend_addr).is_some_and(|r| r.flags & ROUTE_OVERLAY != 0);
    if behind_overlay {
        if let Err(reason) = lb::dnat(ctx, flow, l4, &backend) {
            return (reason, TC_ACT_SHOT);
        }
        return (Reason::ServiceDnat, TC_ACT_OK);
    }
    if let Err(reason) = forward::decrement_ttl(ip) {
        return (reason, TC_ACT_SHOT);
    }
    // Next hop first (direct packet access), then the rewrite (helpers).
    let (verdict_target, local) = match backend_pod {
        Some(pod) => {
            forward::set_macs(ip, pod.host_mac, pod.pod_mac);
            (pod.host_ifindex, true)
        }
        None => {
            forward::set_macs(ip, config.uplink_mac, config.gateway_mac);
            (config.uplink_ifindex, false)
        }
    };
    if let Err(reason) = lb::dnat(ctx, flow, l4, &backend) {
        return (reason, TC_ACT_SHOT);
    }
    let verdict = if local {
        forward::to_peer(verdict_target)
    } else {
        forward::out_of(verdict_target)
    };
    (Reason::ServiceDnat, verdict)
}
