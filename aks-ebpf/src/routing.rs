//! The forwarding decisions of the two TC programs. Each returns the reason it reached
//! and the TC verdict to give; the entry points count and return.

use aks_ebpf_common::{config::POD_ADDRESSING_PRIVATE, Reason, ROUTE_MASQUERADE};
use aya_ebpf::bindings::{TC_ACT_OK, TC_ACT_SHOT};

use crate::{forward, maps, packet::parse_ipv4, packet::Frame};

pub type Decision = (Reason, i32);

/// A frame a pod sent (TC ingress of the host side of its veth).
#[inline(always)]
pub fn from_pod(frame: &Frame) -> Decision {
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
    if masquerade && config.pod_addressing == POD_ADDRESSING_PRIVATE {
        return (Reason::DropNeedsMasquerade, TC_ACT_SHOT);
    }
    if let Err(reason) = forward::decrement_ttl(&ip) {
        return (reason, TC_ACT_SHOT);
    }
    // Everything beyond this node leaves through the VNet gateway, as from an Azure NIC:
    // the fabric's routes pick the node or network behind it.
    forward::set_macs(&ip, config.uplink_mac, config.gateway_mac);
    (
        Reason::RedirectedUplink,
        forward::out_of(config.uplink_ifindex),
    )
}

/// A frame arriving from the VNet (TC ingress of the node uplink).
#[inline(always)]
pub fn from_vnet(frame: &Frame) -> Decision {
    let ip = match parse_ipv4(frame) {
        Ok(Some(ip)) => ip,
        Ok(None) => return (Reason::PassedNonIpv4, TC_ACT_OK),
        Err(reason) => return (reason, TC_ACT_SHOT),
    };
    let Some(pod) = maps::endpoint(ip.dst()) else {
        return (Reason::PassedToStack, TC_ACT_OK);
    };
    if let Err(reason) = forward::decrement_ttl(&ip) {
        return (reason, TC_ACT_SHOT);
    }
    forward::set_macs(&ip, pod.host_mac, pod.pod_mac);
    (Reason::RedirectedPeer, forward::to_peer(pod.host_ifindex))
}
