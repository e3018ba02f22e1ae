//! The forwarding decisions of the two TC programs. Each returns the reason it reached
//! and the TC verdict to give; the entry points count and return.

use aks_ebpf_common::{FlowKey, Reason, ROUTE_MASQUERADE};
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    programs::TcContext,
};

use crate::{
    forward, maps, nat,
    packet::{parse_ipv4, transport, Frame, Ipv4Frame, Transport},
};

pub type Decision = (Reason, i32);

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
    if dst == config.node_ip {
        return (Reason::PassedToStack, TC_ACT_OK);
    }
    if let Some(pod) = maps::endpoint(dst) {
        if let Err(reason) = forward::decrement_ttl(&ip) {
            return (reason, TC_ACT_SHOT);
        }
        forward::set_macs(&ip, pod.host_mac, pod.pod_mac);
        return (Reason::RedirectedPeer, forward::to_peer(pod.host_ifindex));
    }
    // No route at all means the internet, which is outside every non-masquerade CIDR.
    let masquerade = maps::route(dst).is_none_or(|r| r.flags & ROUTE_MASQUERADE != 0);
    let snat = if masquerade {
        match transport(frame, &ip) {
            Ok(Some(l4)) => Some(l4),
            // Nothing NAT can translate: a pod source would be wrong out there.
            Ok(None) => return (Reason::DropNeedsMasquerade, TC_ACT_SHOT),
            Err(reason) => return (reason, TC_ACT_SHOT),
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
        Some(l4) => {
            let flow = flow_of(&ip, &l4);
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
    // A peer outside the non-masquerade CIDRs opening a flow to this pod: remember it,
    // so the pod's replies leave untranslated.
    if maps::route(ip.src()).is_none_or(|r| r.flags & ROUTE_MASQUERADE != 0) {
        if let Ok(Some(l4)) = transport(frame, &ip) {
            let reply = FlowKey::new(dst, ip.src(), l4.dst_port, l4.src_port, ip.protocol());
            nat::track_inbound(&reply, l4.tcp_flags, frame.len());
        }
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
