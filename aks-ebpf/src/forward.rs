//! Sending a routed IPv4 frame on: one hop's TTL, the next hop's MACs, the redirect.

use aks_ebpf_common::{checksum, Reason};
use aya_ebpf::{
    bindings::TC_ACT_REDIRECT,
    helpers::{bpf_redirect, bpf_redirect_peer},
};

use crate::packet::Ipv4Frame;

/// Decrements the TTL as a router does, fixing the header checksum incrementally.
/// `Err(DropTtlExceeded)` if the packet must not travel another hop.
#[inline(always)]
pub fn decrement_ttl(ip: &Ipv4Frame) -> Result<(), Reason> {
    // SAFETY: `ip.ip` was bounds-checked by `parse_ipv4`.
    let header = unsafe { &mut *ip.ip };
    if header.ttl <= 1 {
        return Err(Reason::DropTtlExceeded);
    }
    let old = u16::from_be_bytes([header.ttl, header.proto]);
    header.ttl -= 1;
    let new = u16::from_be_bytes([header.ttl, header.proto]);
    let check = checksum::replace_u16(u16::from_be_bytes(header.check), old, new);
    header.check = check.to_be_bytes();
    Ok(())
}

/// Writes the Ethernet addresses of the next hop.
#[inline(always)]
pub fn set_macs(ip: &Ipv4Frame, src: [u8; 6], dst: [u8; 6]) {
    // SAFETY: `ip.eth` was bounds-checked by `parse_ipv4`.
    let eth = unsafe { &mut *ip.eth };
    eth.src_addr = src;
    eth.dst_addr = dst;
}

/// Into the namespace of the veth peer of `host_ifindex` (the pod), skipping the
/// node's stack: TC ingress only.
#[inline(always)]
pub fn to_peer(host_ifindex: u32) -> i32 {
    // SAFETY: a helper call with plain integer arguments.
    let verdict = unsafe { bpf_redirect_peer(host_ifindex, 0) };
    verdict as i32
}

/// Out of `ifindex` (egress).
#[inline(always)]
pub fn out_of(ifindex: u32) -> i32 {
    // SAFETY: a helper call with plain integer arguments.
    let verdict = unsafe { bpf_redirect(ifindex, 0) };
    // bpf_redirect returns TC_ACT_REDIRECT on success, TC_ACT_SHOT for bad flags.
    if verdict == i64::from(TC_ACT_REDIRECT) {
        TC_ACT_REDIRECT
    } else {
        verdict as i32
    }
}
