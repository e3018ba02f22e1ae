//! ICMP errors about masqueraded flows (destination unreachable, fragmentation needed,
//! time exceeded, parameter problem). They reach the node address and quote the packet
//! as it left: the node address and NAT port as its source. Translated back as Cilium's
//! BPF masquerade does: the outer destination and the quoted source address and port
//! (ICMP echo: identifier) become the pod's again, and every checksum covering them is
//! fixed incrementally: the outer IPv4 header, the quoted IPv4 header, the quoted L4
//! checksum when the quote holds it, and the ICMP checksum over the quoted bytes. Then
//! the pod's stack can act on it (path-MTU discovery, a failed connect).

use aks_ebpf_common::{
    checksum::{replace_u16, replace_u32},
    wire::{
        ETH_HLEN, ICMP_CHECKSUM, ICMP_ECHO_ID, ICMP_ECHO_REQUEST, ICMP_HLEN, IPV4_CHECKSUM,
        IPV4_DST, IPV4_FRAG_OFFSET_MASK, IPV4_HLEN, IPV4_SRC, L4_DST_PORT, L4_SRC_PORT, PROTO_ICMP,
        PROTO_TCP, PROTO_UDP, TCP_CHECKSUM, UDP_CHECKSUM,
    },
    FlowKey, NatTarget, Reason,
};
use aya_ebpf::programs::TcContext;
use network_types::ip::Ipv4Hdr;

use crate::{nat, packet::Ipv4Frame};

/// The quoted packet of an ICMP error: where it sits and the flow it belongs to.
/// Offsets from the start of the frame.
pub struct Quote {
    icmp_at: usize,
    ip_at: usize,
    l4_at: usize,
    protocol: u8,
    /// The quoted source port (ICMP echo: identifier): the NAT port.
    nat_port: u16,
}

// The quote lies at offsets that depend on two header lengths; it is read and written
// through the skb helpers, which check every access themselves, rather than through
// packet pointers whose ranges the verifier would have to follow.

/// If `ip` (addressed to the node) is an ICMP error quoting a packet of a masqueraded
/// flow: the quote and the pod it goes back to. `None` for anything else, including a
/// quote too short to name the flow (the node's stack ignores those too).
#[inline(always)]
pub fn about_masqueraded_flow(ctx: &TcContext, ip: &Ipv4Frame) -> Option<(Quote, NatTarget)> {
    let node = ip.dst();
    let icmp_at = ip.l4_offset();
    let ip_at = icmp_at + ICMP_HLEN;
    let inner: Ipv4Hdr = ctx.load(ip_at).ok()?;
    let ihl = usize::from(inner.vihl & 0x0f) * 4;
    let later_fragment = u16::from_be_bytes(inner.frags) & IPV4_FRAG_OFFSET_MASK != 0;
    if inner.vihl >> 4 != 4 || ihl < IPV4_HLEN || later_fragment {
        return None;
    }
    if u32::from_ne_bytes(inner.src_addr) != node {
        return None;
    }
    let l4_at = ip_at + ihl;
    // Every quote holds at least 8 bytes of the payload: ports, or the echo header.
    let l4: [u8; 8] = ctx.load(l4_at).ok()?;
    let word = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    let (src_port, dst_port) = match inner.proto {
        PROTO_TCP | PROTO_UDP => (word(L4_SRC_PORT), word(L4_DST_PORT)),
        PROTO_ICMP if l4[0] == ICMP_ECHO_REQUEST => (word(ICMP_ECHO_ID), 0),
        _ => return None,
    };
    let peer = u32::from_ne_bytes(inner.dst_addr);
    // The quoted packet went node → peer; NAT is keyed by the reply direction.
    let reply = FlowKey::new(peer, node, dst_port, src_port, inner.proto);
    let target = nat::translation_of_reply(&reply)?;
    let quote = Quote {
        icmp_at,
        ip_at,
        l4_at,
        protocol: inner.proto,
        nat_port: src_port,
    };
    Some((quote, target))
}

/// Rewrites the error for the pod `to` (see the module comment); `node` is the address
/// it was sent to.
#[inline(always)]
pub fn translate(ctx: &TcContext, node: u32, quote: &Quote, to: &NatTarget) -> Result<(), Reason> {
    let write_failed = |_| Reason::DropWriteError;
    let checksum_failed = |_| Reason::DropChecksumError;
    let icmp_check_at = quote.icmp_at + ICMP_CHECKSUM;
    // The ICMP checksum covers the quote, not the outer header: one helper per change.
    let icmp_replace = |old: u64, new: u64, size: u64| {
        ctx.l4_csum_replace(icmp_check_at, old, new, size)
            .map_err(checksum_failed)
    };

    // The outer destination.
    ctx.l3_csum_replace(
        ETH_HLEN + IPV4_CHECKSUM,
        u64::from(node),
        u64::from(to.addr),
        4,
    )
    .map_err(checksum_failed)?;
    ctx.store(ETH_HLEN + IPV4_DST, &to.addr, 0)
        .map_err(write_failed)?;

    // The quoted IPv4 header: source address and its own checksum.
    let inner_check_at = quote.ip_at + IPV4_CHECKSUM;
    let old_inner: u16 = ctx.load(inner_check_at).map_err(write_failed)?;
    let new_inner = replace_u32(u16::from_be(old_inner), node, to.addr).to_be();
    ctx.store(quote.ip_at + IPV4_SRC, &to.addr, 0)
        .map_err(write_failed)?;
    ctx.store(inner_check_at, &new_inner, 0)
        .map_err(write_failed)?;
    icmp_replace(u64::from(node), u64::from(to.addr), 4)?;
    icmp_replace(u64::from(old_inner), u64::from(new_inner), 2)?;

    // The quoted source port (or echo identifier).
    let port_at = quote.l4_at
        + if quote.protocol == PROTO_ICMP {
            ICMP_ECHO_ID
        } else {
            L4_SRC_PORT
        };
    let (old_port, new_port) = (quote.nat_port.to_be(), to.port.to_be());
    ctx.store(port_at, &new_port, 0).map_err(write_failed)?;
    icmp_replace(u64::from(old_port), u64::from(new_port), 2)?;

    // The quoted L4 checksum, when the quote reaches it (TCP's lies past the 8 bytes
    // every quote holds). UDP's 0 means "none" and stays so.
    let l4_check_at = quote.l4_at
        + match quote.protocol {
            PROTO_TCP => TCP_CHECKSUM,
            PROTO_UDP => UDP_CHECKSUM,
            _ => ICMP_CHECKSUM,
        };
    let Ok(old) = ctx.load::<u16>(l4_check_at) else {
        return Ok(());
    };
    let old = u16::from_be(old);
    if quote.protocol == PROTO_UDP && old == 0 {
        return Ok(());
    }
    let mut new = replace_u16(old, quote.nat_port, to.port);
    if quote.protocol != PROTO_ICMP {
        // TCP and UDP checksums cover the source address (pseudo-header).
        new = replace_u32(new, node, to.addr);
    }
    if quote.protocol == PROTO_UDP && new == 0 {
        new = 0xffff;
    }
    ctx.store(l4_check_at, &new.to_be(), 0)
        .map_err(write_failed)?;
    icmp_replace(u64::from(old.to_be()), u64::from(new.to_be()), 2)
}
