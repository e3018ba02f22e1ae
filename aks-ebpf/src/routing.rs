//! The forwarding decisions of the two TC programs. Each returns the reason it reached
//! and the TC verdict to give; the entry points count and return.

use aks_ebpf_common::{
    lb::ServiceSlot,
    wire::{icmp_is_error, PROTO_ICMP},
    FlowKey, NodeConfig, Reason, ROUTE_MASQUERADE, ROUTE_OVERLAY,
};
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    cty::c_void,
    helpers::bpf_skb_load_bytes,
    programs::TcContext,
};

use crate::{
    forward, icmp_error, lb, maps, nat, nodeport,
    packet::{parse_ipv4, transport, Frame, Ipv4Frame, Transport},
    policy,
};

pub type Decision = (Reason, i32);

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// An IPv4 packet as both TC programs see it, parsed once.
struct Packet {
    ip: Ipv4Frame,
    /// The L4 header if `has_l4`, else all zeros. Not an `Option`: moving an `Option`
    /// copies its payload's undefined bytes when it is `None`, and the verifier refuses
    /// reads of registers that were never written.
    l4: Transport,
    has_l4: bool,
}

impl Packet {
    /// The L4 header; `None` for later fragments and protocols without one here.
    #[inline(always)]
    fn l4(&self) -> Option<&Transport> {
        self.has_l4.then_some(&self.l4)
    }

    /// The flow NAT and services work on, if they can translate this packet (TCP, UDP,
    /// ICMP echo; not a later fragment).
    #[inline(always)]
    fn translatable(&self) -> Option<(&Transport, FlowKey)> {
        let l4 = self.l4()?;
        let protocol = self.ip.protocol();
        if !l4.translatable(protocol) {
            return None;
        }
        let flow = FlowKey::new(
            self.ip.src(),
            self.ip.dst(),
            l4.src_port,
            l4.dst_port,
            protocol,
        );
        Some((l4, flow))
    }
}

/// The one parse of both TC programs: a VLAN tag (in the frame or in the packet's
/// metadata) is refused, the IPv4 header is checked as a router checks it, and the L4
/// header is read (cut short, it is malformed whatever the path).
#[inline(always)]
fn parse(ctx: &TcContext, frame: &Frame) -> Result<Option<Packet>, Reason> {
    // SAFETY: the context points at the kernel's `__sk_buff` for this run.
    if unsafe { (*ctx.skb.skb).vlan_present } != 0 {
        return Err(Reason::DropVlanTagged);
    }
    let Some(ip) = parse_ipv4(frame)? else {
        return Ok(None);
    };
    ip.check(ctx.len(), |offset, word| {
        // SAFETY: `word` is a stack buffer of 4 bytes, the length copied.
        let copied = unsafe {
            bpf_skb_load_bytes(
                ctx.skb.skb as *const c_void,
                offset as u32,
                word.as_mut_ptr().cast(),
                4,
            )
        };
        copied == 0
    })?;
    let (l4, has_l4) = match transport(frame, &ip)? {
        Some(l4) => (l4, true),
        None => (Transport::NONE, false),
    };
    Ok(Some(Packet { ip, l4, has_l4 }))
}

/// Whether `src` is the address of the pod whose veth the packet came in on.
#[inline(always)]
fn sent_by_its_pod(ctx: &TcContext, src: u32) -> bool {
    // SAFETY: the context points at the kernel's `__sk_buff` for this run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    maps::endpoint(src).is_some_and(|pod| pod.host_ifindex == ifindex)
}

/// A frame a pod sent (TC ingress of the host side of its veth).
#[inline(always)]
pub fn from_pod(ctx: &TcContext, frame: &Frame) -> Decision {
    let packet = match parse(ctx, frame) {
        Ok(Some(packet)) => packet,
        Ok(None) => return (Reason::PassedNonIpv4, TC_ACT_OK),
        Err(reason) => return (reason, TC_ACT_SHOT),
    };
    let ip = &packet.ip;
    let Some(config) = maps::config() else {
        return (Reason::DropNoConfig, TC_ACT_SHOT);
    };
    // Before anything can claim a NAT entry or a service flow for it.
    if !sent_by_its_pod(ctx, ip.src()) {
        return (Reason::DropSpoofedSource, TC_ACT_SHOT);
    }
    let dst = ip.dst();
    // The sending pod's policy flags (zero for a pod no policy selects).
    let source_flags = maps::endpoint(ip.src()).map_or(0, |pod| pod.flags);
    if dst == config.node_ip {
        // The node's own connections into its pods reach them without a program (the
        // node's stack sends them), so policy never saw them start: a TCP segment that
        // is not an opening SYN is such a reply and passes. (UDP has no such mark; a
        // reply of the node's UDP flow to an egress-isolated pod is judged as new.)
        let opening = packet.l4().is_none_or(|l4| {
            ip.protocol() != aks_ebpf_common::conntrack::PROTO_TCP
                || l4.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
        });
        if opening {
            if let Err(reason) = policy::enforce_packet(ip, packet.l4(), source_flags, 0) {
                return (reason, TC_ACT_SHOT);
            }
        }
        return (Reason::PassedToStack, TC_ACT_OK);
    }
    let translatable = packet.translatable();
    if let Some((l4, flow)) = &translatable {
        if let Some(decision) = service_reply(ctx, ip, flow, l4) {
            return decision;
        }
        if let Some(decision) = nodeport::reply(ctx, config, ip, flow, l4, Reason::NodePortRevDnat)
        {
            return decision;
        }
        if let Some(master) = lb::frontend(flow) {
            return to_service(ctx, config, ip, flow, l4, &master, source_flags);
        }
    }
    if ip.is_later_fragment() && config.is_service_address(dst) {
        return (Reason::DropFragmentToService, TC_ACT_SHOT);
    }
    if let Some(pod) = maps::endpoint(dst) {
        if let Err(reason) = policy::enforce_packet(ip, packet.l4(), source_flags, pod.flags) {
            return (reason, TC_ACT_SHOT);
        }
        if let Err(reason) = forward::hop(ip, pod.host_mac, pod.pod_mac) {
            return (reason, TC_ACT_SHOT);
        }
        return forward::to_peer(pod.host_ifindex, Reason::RedirectedPeer);
    }
    if let Err(reason) = policy::enforce_packet(ip, packet.l4(), source_flags, 0) {
        return (reason, TC_ACT_SHOT);
    }
    let route = maps::route(dst);
    // Overlay: pods of another node are reached through the node's tunnel device, which
    // the kernel routes to (and decrements the TTL for); pod addresses are kept.
    if route.is_some_and(|r| r.flags & ROUTE_OVERLAY != 0) {
        return (Reason::ToOverlay, TC_ACT_OK);
    }
    // No route at all means the internet, which is outside every non-masquerade CIDR.
    let masquerade = route.is_none_or(|r| r.flags & ROUTE_MASQUERADE != 0);
    if masquerade && translatable.is_none() {
        // Nothing NAT can translate: a pod source would be wrong out there.
        return (Reason::DropNeedsMasquerade, TC_ACT_SHOT);
    }
    // Everything beyond this node leaves through the VNet gateway, as from an Azure NIC:
    // the fabric's routes pick the node or network behind it.
    if let Err(reason) = forward::hop(ip, config.uplink_mac, config.gateway_mac) {
        return (reason, TC_ACT_SHOT);
    }
    let reason = match (masquerade, translatable) {
        (true, Some((l4, flow))) => {
            if nat::answers_inbound(&flow, l4.tcp_flags, frame.len()) {
                Reason::RedirectedUplink
            } else if let Err(reason) = nat::snat(ctx, config, &flow, l4, frame.len()) {
                return (reason, TC_ACT_SHOT);
            } else {
                Reason::RedirectedUplinkSnat
            }
        }
        _ => Reason::RedirectedUplink,
    };
    forward::out_of(config.uplink_ifindex, reason)
}

/// A frame arriving from the VNet (TC ingress of the node uplink).
#[inline(always)]
pub fn from_vnet(ctx: &TcContext, frame: &Frame) -> Decision {
    let packet = match parse(ctx, frame) {
        Ok(Some(packet)) => packet,
        Ok(None) => return (Reason::PassedNonIpv4, TC_ACT_OK),
        Err(reason) => return (reason, TC_ACT_SHOT),
    };
    let ip = &packet.ip;
    let dst = ip.dst();
    if let Some(config) = maps::config().filter(|c| c.node_ip == dst) {
        return for_the_node(ctx, config, frame, &packet);
    }
    let Some(pod) = maps::endpoint(dst) else {
        return (Reason::PassedToStack, TC_ACT_OK);
    };
    let translatable = packet.translatable();
    if let Some((l4, flow)) = &translatable {
        if let Some(decision) = service_reply(ctx, ip, flow, l4) {
            return decision;
        }
    }
    if let Err(reason) = policy::enforce_packet(ip, packet.l4(), 0, pod.flags) {
        return (reason, TC_ACT_SHOT);
    }
    if let Some((l4, _)) = &translatable {
        // A peer outside the non-masquerade CIDRs opening a flow to this pod: remember
        // it, so the pod's replies leave untranslated.
        if maps::route(ip.src()).is_none_or(|r| r.flags & ROUTE_MASQUERADE != 0) {
            let reply = FlowKey::new(dst, ip.src(), l4.dst_port, l4.src_port, ip.protocol());
            nat::track_inbound(&reply, l4.tcp_flags, frame.len());
        }
    }
    if let Err(reason) = forward::hop(ip, pod.host_mac, pod.pod_mac) {
        return (reason, TC_ACT_SHOT);
    }
    forward::to_peer(pod.host_ifindex, Reason::RedirectedPeer)
}

/// A packet for the node's address: a reply to a masqueraded flow, or an ICMP error
/// about one, goes back to its pod; a flow to a node port (or a remote backend's reply
/// to one) goes on as `nodeport` decides; anything else is the node's own traffic.
#[inline(always)]
fn for_the_node(ctx: &TcContext, config: &NodeConfig, frame: &Frame, packet: &Packet) -> Decision {
    let ip = &packet.ip;
    if let Some(l4) = packet.l4() {
        if ip.protocol() == PROTO_ICMP && icmp_is_error(l4.icmp_type) {
            return icmp_error_to_pod(ctx, ip);
        }
    }
    let Some((l4, flow)) = packet.translatable() else {
        return (Reason::PassedToStack, TC_ACT_OK);
    };
    if let Some(decision) = nodeport::reply(ctx, config, ip, &flow, l4, Reason::NodePortRevSnat) {
        return decision;
    }
    let Some(target) = nat::reply_target(&flow, l4.tcp_flags, frame.len()) else {
        return nodeport::to_node_port(ctx, config, ip, &flow, l4)
            .unwrap_or((Reason::PassedToStack, TC_ACT_OK));
    };
    let Some(pod) = maps::endpoint(target.addr) else {
        // The pod is gone; its flow's entries expire with the GC.
        return (Reason::PassedToStack, TC_ACT_OK);
    };
    if let Err(reason) = forward::hop(ip, pod.host_mac, pod.pod_mac) {
        return (reason, TC_ACT_SHOT);
    }
    if let Err(reason) = nat::reverse_snat(ctx, &flow, l4, &target) {
        return (reason, TC_ACT_SHOT);
    }
    forward::to_peer(pod.host_ifindex, Reason::RedirectedPeerRevSnat)
}

/// An ICMP error for the node: translated back and delivered if it is about a
/// masqueraded flow of a pod still here, else the node's own.
#[inline(always)]
fn icmp_error_to_pod(ctx: &TcContext, ip: &Ipv4Frame) -> Decision {
    let Some((quote, target)) = icmp_error::about_masqueraded_flow(ctx, ip) else {
        return (Reason::PassedToStack, TC_ACT_OK);
    };
    let Some(pod) = maps::endpoint(target.addr) else {
        return (Reason::PassedToStack, TC_ACT_OK);
    };
    let node = ip.dst();
    if let Err(reason) = forward::hop(ip, pod.host_mac, pod.pod_mac) {
        return (reason, TC_ACT_SHOT);
    }
    if let Err(reason) = icmp_error::translate(ctx, node, &quote, &target) {
        return (reason, TC_ACT_SHOT);
    }
    forward::to_peer(pod.host_ifindex, Reason::RedirectedPeerIcmpError)
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
    if let Err(reason) = forward::hop(ip, pod.host_mac, pod.pod_mac) {
        return Some((reason, TC_ACT_SHOT));
    }
    if let Err(reason) = lb::rev_dnat(ctx, flow, l4, &frontend, client) {
        return Some((reason, TC_ACT_SHOT));
    }
    Some(forward::to_peer(pod.host_ifindex, Reason::ServiceRevDnat))
}

/// A pod's packet to a ClusterIP: DNAT to the flow's backend, then on to it, in this
/// node's pod or out through the VNet.
#[inline(always)]
fn to_service(
    ctx: &TcContext,
    config: &NodeConfig,
    ip: &Ipv4Frame,
    flow: &FlowKey,
    l4: &Transport,
    master: &ServiceSlot,
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
                Ok(()) => forward::to_peer(client.host_ifindex, Reason::RejectServiceNoBackend),
                Err(reason) => (reason, TC_ACT_SHOT),
            };
        }
        Err(reason) => return (reason, TC_ACT_SHOT),
    };
    // A backend behind the Overlay: translate, then let the kernel route the packet into
    // the tunnel. Its reply comes back out of the tunnel device, where `from_vnet` undoes
    // the translation.
    let local = maps::endpoint(backend.backend_addr);
    // Policy judges the connection to the backend the service chose, as Kubernetes
    // policies see traffic after the ClusterIP is translated.
    let ports = (u32::from(flow.src_port) << 16) | u32::from(backend.backend_port);
    let flags = policy::flags(source_flags, local.map_or(0, |p| p.flags));
    if let Err(reason) =
        policy::enforce(flow.src, backend.backend_addr, ports, flow.protocol, flags)
    {
        return (reason, TC_ACT_SHOT);
    }
    let behind_overlay = local.is_none()
        && maps::route(backend.backend_addr).is_some_and(|r| r.flags & ROUTE_OVERLAY != 0);
    if behind_overlay {
        if let Err(reason) = lb::dnat(ctx, flow, l4, &backend) {
            return (reason, TC_ACT_SHOT);
        }
        return (Reason::ServiceDnat, TC_ACT_OK);
    }
    // Next hop first (direct packet access), then the rewrite (helpers).
    let (src_mac, dst_mac) = match &local {
        Some(pod) => (pod.host_mac, pod.pod_mac),
        None => (config.uplink_mac, config.gateway_mac),
    };
    if let Err(reason) = forward::hop(ip, src_mac, dst_mac) {
        return (reason, TC_ACT_SHOT);
    }
    if let Err(reason) = lb::dnat(ctx, flow, l4, &backend) {
        return (reason, TC_ACT_SHOT);
    }
    match local {
        Some(pod) => forward::to_peer(pod.host_ifindex, Reason::ServiceDnat),
        None => forward::out_of(config.uplink_ifindex, Reason::ServiceDnat),
    }
}
