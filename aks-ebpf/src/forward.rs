//! Sending a routed IPv4 frame on: one hop's TTL, the next hop's MACs, the redirect.

use aks_ebpf_common::{checksum, Reason};
use aya_ebpf::{
    bindings::{TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::bpf_redirect_peer,
};

use crate::{packet::Ipv4Frame, routing::Decision};

/// Makes the frame one router hop further on: the TTL decremented as a router does
/// (header checksum fixed incrementally) and the Ethernet addresses of the next hop
/// written. `Err(DropTtlExceeded)` if the packet must not travel another hop.
#[inline(always)]
pub fn hop(ip: &Ipv4Frame, src_mac: [u8; 6], dst_mac: [u8; 6]) -> Result<(), Reason> {
    let header = ip.ip_mut();
    if header.ttl <= 1 {
        return Err(Reason::DropTtlExceeded);
    }
    let old = u16::from_be_bytes([header.ttl, header.proto]);
    header.ttl -= 1;
    let new = u16::from_be_bytes([header.ttl, header.proto]);
    let check = checksum::replace_u16(u16::from_be_bytes(header.check), old, new);
    header.check = check.to_be_bytes();
    let eth = ip.eth_mut();
    eth.src_addr = src_mac;
    eth.dst_addr = dst_mac;
    Ok(())
}

/// Into the namespace of the veth peer of `host_ifindex` (the pod), skipping the
/// node's stack: TC ingress only. Counted under `reason` when the helper accepts the
/// target, else as a failed redirect.
#[inline(always)]
pub fn to_peer(host_ifindex: u32, reason: Reason) -> Decision {
    // SAFETY: a helper call with plain integer arguments.
    redirected(unsafe { bpf_redirect_peer(host_ifindex, 0) }, reason)
}

/// Out of the node through its uplink `ifindex` (a veth whose peer is the VNet's end of
/// the link), counted as `to_peer` is. The frame goes straight into the ingress of that
/// peer in the vnet namespace (`bpf_redirect_peer`), as a frame leaves an Azure NIC
/// onto the wire: no pass through the uplink's transmit path (qdisc, features check)
/// and no second trip through the CPU's backlog queue, which `bpf_redirect` to the
/// uplink's egress took (measured in the README's bench section). TC ingress only, as
/// `from_pod` is.
#[inline(always)]
pub fn out_of(ifindex: u32, reason: Reason) -> Decision {
    // SAFETY: a helper call with plain integer arguments.
    redirected(unsafe { bpf_redirect_peer(ifindex, 0) }, reason)
}

/// Both helpers return `TC_ACT_REDIRECT` when they accept, `TC_ACT_SHOT` otherwise.
#[inline(always)]
fn redirected(verdict: i64, reason: Reason) -> Decision {
    if verdict == i64::from(TC_ACT_REDIRECT) {
        (reason, TC_ACT_REDIRECT)
    } else {
        (Reason::DropRedirectFailed, TC_ACT_SHOT)
    }
}
