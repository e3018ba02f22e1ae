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
        ICMP_CHECKSUM, ICMP_ECHO_ID, ICMP_ECHO_REQUEST, ICMP_HLEN, IPV4_FRAG_OFFSET_MASK,
        IPV4_HLEN, L4_DST_PORT, L4_SRC_PORT, PROTO_ICMP, PROTO_TCP, PROTO_UDP, TCP_CHECKSUM,
        UDP_CHECKSUM,
    },
    FlowKey, NatTarget,
};
use network_types::ip::Ipv4Hdr;

use crate::{
    nat,
    packet::{Frame, Ipv4Frame},
};

/// The quoted packet of an ICMP error: where it sits and the flow it belongs to.
pub struct Quote {
    icmp_at: usize,
    ip_at: usize,
    l4_at: usize,
    protocol: u8,
    /// The quoted source port (ICMP echo: identifier): the NAT port.
    nat_port: u16,
}

/// If `ip` (addressed to the node, `node`) is an ICMP error quoting a packet of a
/// masqueraded flow: the quote and the pod it goes back to. `None` for anything else,
/// including a quote too short to name the flow (the node's stack ignores those too).
#[inline(always)]
pub fn about_masqueraded_flow(
    frame: &Frame,
    ip: &Ipv4Frame,
    node: u32,
) -> Option<(Quote, NatTarget)> {
    let icmp_at = ip.l4_offset();
    let ip_at = icmp_at + ICMP_HLEN;
    let inner: *const Ipv4Hdr = frame.header(ip_at)?;
    // SAFETY: bounds-checked by `header`.
    let inner = unsafe { *inner };
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
    let l4: *const [u8; 8] = frame.header(l4_at)?;
    // SAFETY: bounds-checked by `header`.
    let l4 = unsafe { *l4 };
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

/// Rewrites the error for the pod `to` (see the module comment). Direct packet access:
/// every field was bounds-checked when the quote was found, or is checked here.
#[inline(always)]
pub fn translate(frame: &Frame, ip: &Ipv4Frame, quote: &Quote, to: &NatTarget) -> Option<()> {
    let node = ip.dst();
    let outer = ip.ip_mut();
    outer.dst_addr = to.addr.to_ne_bytes();
    outer.check = replace_u32(u16::from_be_bytes(outer.check), node, to.addr).to_be_bytes();

    let icmp: *mut [u8; ICMP_HLEN] = frame.header(quote.icmp_at)?;
    let inner: *mut Ipv4Hdr = frame.header(quote.ip_at)?;
    let port_at = if quote.protocol == PROTO_ICMP {
        quote.l4_at + ICMP_ECHO_ID
    } else {
        quote.l4_at + L4_SRC_PORT
    };
    let port: *mut [u8; 2] = frame.header(port_at)?;
    // SAFETY: all three bounds-checked by `header`; the packet is the program's to write.
    let (icmp, inner, port) = unsafe { (&mut *icmp, &mut *inner, &mut *port) };
    let mut icmp_check = u16::from_be_bytes([icmp[ICMP_CHECKSUM], icmp[ICMP_CHECKSUM + 1]]);

    // The quoted IPv4 header: source address and its own checksum.
    let old_inner_check = u16::from_be_bytes(inner.check);
    let new_inner_check = replace_u32(old_inner_check, node, to.addr);
    inner.src_addr = to.addr.to_ne_bytes();
    inner.check = new_inner_check.to_be_bytes();
    icmp_check = replace_u32(icmp_check, node, to.addr);
    icmp_check = replace_u16(icmp_check, old_inner_check, new_inner_check);

    // The quoted source port (or echo identifier).
    *port = to.port.to_be_bytes();
    icmp_check = replace_u16(icmp_check, quote.nat_port, to.port);

    // The quoted L4 checksum, when the quote reaches it (TCP's lies past the 8 bytes
    // every quote holds). UDP's 0 means "none" and stays so.
    let checksum_at = quote.l4_at
        + match quote.protocol {
            PROTO_TCP => TCP_CHECKSUM,
            PROTO_UDP => UDP_CHECKSUM,
            _ => ICMP_CHECKSUM,
        };
    if let Some(l4_check) = frame.header::<[u8; 2]>(checksum_at) {
        // SAFETY: bounds-checked by `header`.
        let l4_check = unsafe { &mut *l4_check };
        let old = u16::from_be_bytes(*l4_check);
        if quote.protocol != PROTO_UDP || old != 0 {
            let mut new = replace_u16(old, quote.nat_port, to.port);
            if quote.protocol != PROTO_ICMP {
                // TCP and UDP checksums cover the source address (pseudo-header).
                new = replace_u32(new, node, to.addr);
            }
            if quote.protocol == PROTO_UDP && new == 0 {
                new = 0xffff;
            }
            *l4_check = new.to_be_bytes();
            icmp_check = replace_u16(icmp_check, old, new);
        }
    }
    icmp[ICMP_CHECKSUM..ICMP_CHECKSUM + 2].copy_from_slice(&icmp_check.to_be_bytes());
    Some(())
}
