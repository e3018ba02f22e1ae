//! Masquerade (SNAT to the node address) and its reverse, Cilium style: a flow's
//! mappings and conntrack entry are created together or not at all; the port is the
//! pod's own when free, else one of a bounded number of random tries in the configured
//! range, else the packet is dropped and counted (port exhaustion stays visible).

use aks_ebpf_common::{
    conntrack::{CT_INBOUND, CT_REPLY_SEEN, NAT_PORT_RETRIES, PROTO_ICMP, PROTO_UDP},
    CtEntry, FlowKey, NatTarget, NodeConfig, Reason,
};
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_NOEXIST},
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    programs::TcContext,
};

use crate::maps::{CONNTRACK, NAT};
use crate::packet::Transport;

/// Offsets in an Ethernet + IPv4 frame.
const IP_CHECKSUM: usize = 14 + 10;
pub const IP_SRC: usize = 14 + 12;
pub const IP_DST: usize = 14 + 16;

/// `-E2BIG` from a map update: the map is full.
const E2BIG: i32 = 7;

/// Masquerades a pod's packet: finds or creates its flow's mapping, then rewrites the
/// source address and port (checksums updated incrementally by the kernel helpers, which
/// also handle checksum offload).
#[inline(always)]
pub fn snat(
    ctx: &TcContext,
    config: &NodeConfig,
    flow: &FlowKey,
    l4: &Transport,
    len: u32,
) -> Result<(), Reason> {
    let target = egress_mapping(config, flow, l4.tcp_flags, len)?;
    rewrite(
        ctx,
        l4,
        flow.protocol,
        IP_SRC,
        flow.src,
        target.addr,
        l4.src_port_offset,
        flow.src_port,
        target.port,
    )
}

/// If `flow` (arriving from the VNet) is a reply to a masqueraded flow: where it goes
/// back to (the pod's address and port). Touches the flow's conntrack entry.
#[inline(always)]
pub fn reply_target(flow: &FlowKey, tcp_flags: u8, len: u32) -> Option<NatTarget> {
    // SAFETY: a valid pointer into the map, copied at once.
    let target = NAT.get_ptr(flow).map(|p| unsafe { *p })?;
    touch(
        &flow.egress_of_reply(target.addr, target.port),
        tcp_flags,
        len,
        true,
    );
    Some(target)
}

/// Rewrites a reply's destination back to the pod.
#[inline(always)]
pub fn reverse_snat(
    ctx: &TcContext,
    flow: &FlowKey,
    l4: &Transport,
    target: &NatTarget,
) -> Result<(), Reason> {
    rewrite(
        ctx,
        l4,
        flow.protocol,
        IP_DST,
        flow.dst,
        target.addr,
        l4.dst_port_offset,
        flow.dst_port,
        target.port,
    )
}

#[inline(always)]
fn egress_mapping(
    config: &NodeConfig,
    flow: &FlowKey,
    tcp_flags: u8,
    len: u32,
) -> Result<NatTarget, Reason> {
    if let Some(existing) = NAT.get_ptr(flow) {
        touch(flow, tcp_flags, len, false);
        // SAFETY: a valid pointer into the map, copied at once.
        return Ok(unsafe { *existing });
    }
    let (min, max) = (
        config.nat_port_min,
        config.nat_port_max.max(config.nat_port_min),
    );
    let span = u32::from(max - min) + 1;
    let back = NatTarget {
        addr: flow.src,
        port: flow.src_port,
        _pad: 0,
    };
    // The pod's own port when it lies in the range and is free, else random tries.
    let mut port = if flow.src_port >= min && flow.src_port <= max {
        flow.src_port
    } else {
        random_port(min, span)
    };
    let mut claimed = false;
    for _ in 0..=NAT_PORT_RETRIES {
        match NAT.insert(
            flow.reply_after_snat(config.node_ip, port),
            back,
            u64::from(BPF_NOEXIST),
        ) {
            Ok(()) => {
                claimed = true;
                break;
            }
            Err(e) if e == -E2BIG => return Err(Reason::DropConntrackFull),
            Err(_) => port = random_port(min, span),
        }
    }
    if !claimed {
        return Err(Reason::DropNatNoPort);
    }
    let reply = flow.reply_after_snat(config.node_ip, port);
    let target = NatTarget {
        addr: config.node_ip,
        port,
        _pad: 0,
    };
    if NAT.insert(flow, target, u64::from(BPF_NOEXIST)).is_err() {
        let _ = NAT.remove(reply);
        return Err(Reason::DropConntrackFull);
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let entry = CtEntry {
        nat_addr: config.node_ip,
        nat_port: port,
        ..CtEntry::first_packet(now, len, tcp_flags, 0)
    };
    if CONNTRACK
        .insert(flow, entry, u64::from(BPF_NOEXIST))
        .is_err()
    {
        let _ = NAT.remove(flow);
        let _ = NAT.remove(reply);
        return Err(Reason::DropConntrackFull);
    }
    Ok(target)
}

/// Records a flow opened from outside toward a local pod whose replies would otherwise
/// be masqueraded (`reply` is the pod's direction), or refreshes it. Best effort: with a
/// full map the replies are masqueraded and the peer drops them, as it would with a
/// full kernel conntrack table.
#[inline(always)]
pub fn track_inbound(reply: &FlowKey, tcp_flags: u8, len: u32) {
    if CONNTRACK.get_ptr(reply).is_some() {
        touch(reply, tcp_flags, len, false);
        return;
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let entry = CtEntry::first_packet(now, len, tcp_flags, CT_INBOUND);
    let _ = CONNTRACK.insert(reply, entry, u64::from(BPF_NOEXIST));
}

/// Whether a pod's packet answers a flow opened from outside (see `track_inbound`).
#[inline(always)]
pub fn answers_inbound(flow: &FlowKey, tcp_flags: u8, len: u32) -> bool {
    // SAFETY: a valid pointer into the map, read at once.
    let inbound = CONNTRACK
        .get_ptr(flow)
        .is_some_and(|entry| unsafe { (*entry).flags } & CT_INBOUND != 0);
    if inbound {
        touch(flow, tcp_flags, len, true);
    }
    inbound
}

#[inline(always)]
fn random_port(min: u16, span: u32) -> u16 {
    // SAFETY: a helper without arguments.
    let r = unsafe { bpf_get_prandom_u32() };
    min + (r % span) as u16
}

/// Updates a flow's conntrack entry for one more packet (racy across CPUs by design:
/// the numbers are for GC and inspection, not accounting).
#[inline(always)]
fn touch(egress: &FlowKey, tcp_flags: u8, len: u32, reply: bool) {
    if let Some(entry) = CONNTRACK.get_ptr_mut(egress) {
        // SAFETY: a valid pointer into the map; a helper without arguments.
        unsafe {
            (*entry).last_seen_ns = bpf_ktime_get_ns();
            (*entry).packets += 1;
            (*entry).bytes += u64::from(len);
            (*entry).tcp_flags |= tcp_flags;
            if reply {
                (*entry).flags |= CT_REPLY_SEEN;
            }
        }
    }
}

/// Replaces one address and one port (or ICMP identifier) in the packet, fixing the
/// L4 checksum (with the pseudo-header for TCP and UDP) and the IPv4 header checksum.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn rewrite(
    ctx: &TcContext,
    l4: &Transport,
    protocol: u8,
    addr_offset: usize,
    old_addr: u32,
    new_addr: u32,
    port_offset: usize,
    old_port: u16,
    new_port: u16,
) -> Result<(), Reason> {
    // The helpers fail only for offsets outside the packet, which parsing has ruled out.
    let failed = |_| Reason::DropMalformed;
    let (old_port_be, new_port_be) = (u64::from(old_port.to_be()), u64::from(new_port.to_be()));
    let checksummed =
        protocol != PROTO_UDP || ctx.load::<u16>(l4.checksum_offset).map_err(failed)? != 0;
    if checksummed {
        // A UDP checksum that comes out as 0 must be sent as 0xffff (0 means "none").
        let mangled = if protocol == PROTO_UDP {
            u64::from(BPF_F_MARK_MANGLED_0)
        } else {
            0
        };
        if protocol != PROTO_ICMP {
            ctx.l4_csum_replace(
                l4.checksum_offset,
                u64::from(old_addr),
                u64::from(new_addr),
                u64::from(BPF_F_PSEUDO_HDR) | 4 | mangled,
            )
            .map_err(failed)?;
        }
        ctx.l4_csum_replace(l4.checksum_offset, old_port_be, new_port_be, 2 | mangled)
            .map_err(failed)?;
    }
    ctx.l3_csum_replace(IP_CHECKSUM, u64::from(old_addr), u64::from(new_addr), 4)
        .map_err(failed)?;
    ctx.store(addr_offset, &new_addr, 0).map_err(failed)?;
    ctx.store(port_offset, &new_port.to_be(), 0)
        .map_err(failed)?;
    Ok(())
}
