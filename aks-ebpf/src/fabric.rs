//! The fabric forwarder: TC ingress on the vnet namespace's end of every node link. A
//! packet from a node to another node's address or pods (a hit in `FABRIC_ROUTES` behind
//! another link) is routed here, as the vnet namespace's kernel would route it (TTL, MACs)
//! but without its routing lookup, netfilter walk and second veth hop: straight into the
//! destination node (`bpf_redirect_peer`). Everything else goes to the stack untouched, so
//! the iptables fabric (internet, on-prem, load balancer, NAT gateway, NSG) still applies.

use aks_ebpf_common::{fabric::is_tracked_source_port, Reason};
use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};

use crate::{
    forward, maps,
    packet::{parse_ipv4, ports, Frame},
    routing::Decision,
};

const PASS: Decision = (Reason::FabricPassed, TC_ACT_OK);

#[inline(always)]
pub fn forward(ctx: &TcContext, frame: &Frame) -> Decision {
    // SAFETY: the context points at the kernel's `__sk_buff` for this run.
    let (vlan, ingress) = unsafe { ((*ctx.skb.skb).vlan_present, (*ctx.skb.skb).ifindex) };
    if vlan != 0 {
        return PASS;
    }
    let ip = match parse_ipv4(frame) {
        Ok(Some(ip)) => ip,
        Ok(None) => return (Reason::PassedNonIpv4, TC_ACT_OK),
        // The stack drops what is malformed and counts it where a router does.
        Err(_) => return PASS,
    };
    // Fragments and options are rare inside the VNet; the stack handles both right.
    if ip.is_fragment() || ip.has_options() {
        return PASS;
    }
    let Some(hop) = maps::fabric_route(ip.dst()) else {
        return PASS;
    };
    if hop.ifindex == ingress {
        return PASS;
    }
    match ports(frame, &ip) {
        Ok(Some((source_port, _))) if is_tracked_source_port(source_port) => return PASS,
        Ok(_) => {}
        Err(_) => return PASS,
    }
    // A bad checksum or length: the stack drops it (and counts it in its own MIB). No
    // options here (passed above), so the loader of option words is never called.
    if ip.check(ctx.len(), |_, _| false).is_err() {
        return PASS;
    }
    // TTL about to expire: the stack sends the time-exceeded error.
    if forward::hop(&ip, hop.gateway_mac, hop.node_mac).is_err() {
        return PASS;
    }
    forward::out_of(hop.ifindex, Reason::FabricForwarded)
}
