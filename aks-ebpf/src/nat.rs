//! Masquerade (SNAT to the node address) and its reverse, Cilium style: a flow's
//! mappings and conntrack entry are created together or not at all; the port is the
//! pod's own when free, else one of a bounded number of random tries in the configured
//! range, else the packet is dropped and counted (port exhaustion stays visible).

use aks_ebpf_common::{
    conntrack::{CT_INBOUND, CT_REPLY_SEEN, NAT_PORT_RETRIES},
    CtEntry, FlowKey, NatTarget, NodeConfig, Reason,
};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    programs::TcContext,
};

use crate::maps::{CONNTRACK, NAT};
use crate::packet::Transport;
use crate::rewrite::{rewrite_dst, rewrite_src};

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
    rewrite_src(ctx, flow, l4, target.addr, target.port)
}

/// Where `NAT` translates a reply tuple back to (the pod's address and port), without
/// touching the flow: for packets that are about the flow, not of it (ICMP errors).
#[inline(always)]
pub fn translation_of_reply(reply: &FlowKey) -> Option<NatTarget> {
    // SAFETY: a valid pointer into the map, copied at once.
    NAT.get_ptr(reply).map(|p| unsafe { *p })
}

/// If `flow` (arriving from the VNet) is a reply to a masqueraded flow: where it goes
/// back to (the pod's address and port). Touches the flow's conntrack entry.
#[inline(always)]
pub fn reply_target(flow: &FlowKey, tcp_flags: u8, len: u32) -> Option<NatTarget> {
    let target = translation_of_reply(flow)?;
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
    rewrite_dst(ctx, flow, l4, target.addr, target.port)
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
        // A tuple a node port flow's SNAT holds would take that flow's replies.
        if crate::nodeport::holds(&flow.reply_after_snat(config.node_ip, port)) {
            port = random_port(min, span);
            continue;
        }
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
