//! ClusterIP load balancing without iptables: a packet to a frontend gets a backend
//! (random among the slots for a new flow, the flow's own for the rest), is DNATed to
//! it, and the backend's replies get the frontend back as their source.

use aks_ebpf_common::{
    lb::{LbFlow, LbReply, RevNat, ServiceKey, ServiceSlot, HAIRPIN_SOURCE},
    wire::{
        ETH_DST, ETH_SRC, PROTO_TCP, TCP_ACK, TCP_ACK_SEQ, TCP_OFFSET_FLAGS, TCP_RST, TCP_SEQ,
        TCP_SYN,
    },
    FlowKey, Reason,
};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    programs::TcContext,
};

use crate::maps::{BACKENDS, LB_FLOWS, LB_REPLIES, REV_NAT, SERVICES};
use crate::packet::Transport;
use crate::rewrite::{rewrite_dst, rewrite_src, store_swapped};

#[inline(always)]
pub fn hairpin() -> u32 {
    aks_ebpf_common::addr::ipv4(HAIRPIN_SOURCE)
}

/// The frontend's master slot, if `flow` goes to a ClusterIP.
#[inline(always)]
pub fn frontend(flow: &FlowKey) -> Option<ServiceSlot> {
    let key = ServiceKey::new(flow.dst, flow.dst_port, flow.protocol, 0);
    // SAFETY: a valid pointer into the map, copied at once.
    SERVICES.get_ptr(key).map(|p| unsafe { *p })
}

/// The backend of `flow`: the one it already has, or a random slot's for a new flow
/// (recorded with its reply key). `Err` when the service has no backends.
#[inline(always)]
pub fn backend_for(flow: &FlowKey, master: &ServiceSlot, tcp_flags: u8) -> Result<LbFlow, Reason> {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(existing) = LB_FLOWS.get_ptr_mut(flow) {
        // SAFETY: a valid pointer into the map.
        unsafe {
            (*existing).last_seen_ns = now;
            (*existing).tcp_flags |= tcp_flags;
            return Ok(*existing);
        }
    }
    if master.count == 0 {
        return Err(if flow.protocol == PROTO_TCP {
            Reason::RejectServiceNoBackend
        } else {
            Reason::DropServiceNoBackend
        });
    }
    // SAFETY: a helper without arguments.
    let pick = unsafe { bpf_get_prandom_u32() } % u32::from(master.count);
    let slot_key = ServiceKey::new(flow.dst, flow.dst_port, flow.protocol, pick as u16 + 1);
    // A slot or backend missing while userspace rewrites the service: no backend now.
    let no_backend = Reason::DropServiceNoBackend;
    // SAFETY: valid pointers into the maps, copied at once.
    let slot = SERVICES
        .get_ptr(slot_key)
        .map(|p| unsafe { *p })
        .ok_or(no_backend)?;
    let backend = BACKENDS
        .get_ptr(slot.backend_id)
        .map(|p| unsafe { *p })
        .ok_or(no_backend)?;
    let chosen = LbFlow {
        backend_addr: backend.addr,
        backend_port: backend.port,
        _pad0: 0,
        rev_nat_id: master.rev_nat_id,
        tcp_flags,
        _pad: [0; 3],
        last_seen_ns: now,
    };
    let answer = LbReply {
        rev_nat_id: master.rev_nat_id,
        client: flow.src,
        last_seen_ns: now,
    };
    // Both entries or neither: a flow whose replies could not be translated back would
    // reach its backend and then fail at the client.
    let reply = chosen.reply_key(flow);
    if LB_REPLIES.insert(reply, answer, 0).is_err() {
        return Err(Reason::DropConntrackFull);
    }
    if LB_FLOWS
        .insert(flow, chosen, u64::from(BPF_NOEXIST))
        .is_err()
    {
        let _ = LB_REPLIES.remove(reply);
        return Err(Reason::DropConntrackFull);
    }
    Ok(chosen)
}

/// Rewrites the destination to the backend (and, for a pod reaching itself, the source
/// to the hairpin address).
#[inline(always)]
pub fn dnat(
    ctx: &TcContext,
    flow: &FlowKey,
    l4: &Transport,
    backend: &LbFlow,
) -> Result<(), Reason> {
    rewrite_dst(ctx, flow, l4, backend.backend_addr, backend.backend_port)?;
    if backend.backend_addr == flow.src {
        rewrite_src(ctx, flow, l4, hairpin(), flow.src_port)?;
    }
    Ok(())
}

/// If `flow` is a backend's reply to a load-balanced flow: the frontend to put back as
/// its source, and the client it goes to.
#[inline(always)]
pub fn reply_frontend(flow: &FlowKey) -> Option<(RevNat, u32)> {
    let reply = LB_REPLIES.get_ptr_mut(flow)?;
    // SAFETY: a valid pointer into the map; a helper without arguments.
    let (id, client) = unsafe {
        (*reply).last_seen_ns = bpf_ktime_get_ns();
        ((*reply).rev_nat_id, (*reply).client)
    };
    // SAFETY: a valid pointer into the map, copied at once.
    let frontend = REV_NAT.get_ptr(id).map(|p| unsafe { *p })?;
    Some((frontend, client))
}

/// Puts the frontend back as the reply's source (and the client back as its destination
/// when it was a hairpin).
#[inline(always)]
pub fn rev_dnat(
    ctx: &TcContext,
    flow: &FlowKey,
    l4: &Transport,
    frontend: &RevNat,
    client: u32,
) -> Result<(), Reason> {
    rewrite_src(ctx, flow, l4, frontend.vip, frontend.port)?;
    if flow.dst == hairpin() {
        rewrite_dst(ctx, flow, l4, client, flow.dst_port)?;
    }
    Ok(())
}

/// Turns a TCP SYN into the RST+ACK its destination would send if nothing listened,
/// addressed back to the sender (addresses, ports and MACs swapped; the checksums
/// survive the swaps, the changed flags and sequence numbers are fixed incrementally).
/// `Err(DropServiceNoBackend)` if the packet is not a bare SYN.
#[inline(always)]
pub fn reset_syn(ctx: &TcContext, flow: &FlowKey, l4: &Transport) -> Result<(), Reason> {
    if flow.protocol != PROTO_TCP || l4.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return Err(Reason::DropServiceNoBackend);
    }
    let write_failed = |_| Reason::DropWriteError;
    let checksum_failed = |_| Reason::DropChecksumError;
    let tcp = l4.src_port_offset;
    let seq: u32 = ctx.load(tcp + TCP_SEQ).map_err(write_failed)?;
    let old_ack: u32 = ctx.load(tcp + TCP_ACK_SEQ).map_err(write_failed)?;
    let ack = (u32::from_be(seq).wrapping_add(1)).to_be();
    let old_word: u16 = ctx.load(tcp + TCP_OFFSET_FLAGS).map_err(write_failed)?;
    // Keep the data offset byte, replace the flags byte.
    let new_word = u16::from_ne_bytes([old_word.to_ne_bytes()[0], TCP_RST | TCP_ACK]);
    let csum = l4.checksum_offset;
    ctx.l4_csum_replace(csum, u64::from(old_word), u64::from(new_word), 2)
        .map_err(checksum_failed)?;
    ctx.l4_csum_replace(csum, u64::from(seq), 0, 4)
        .map_err(checksum_failed)?;
    ctx.l4_csum_replace(csum, u64::from(old_ack), u64::from(ack), 4)
        .map_err(checksum_failed)?;
    ctx.store(tcp + TCP_OFFSET_FLAGS, &new_word, 0)
        .map_err(write_failed)?;
    ctx.store(tcp + TCP_SEQ, &0u32, 0).map_err(write_failed)?;
    ctx.store(tcp + TCP_ACK_SEQ, &ack, 0)
        .map_err(write_failed)?;
    store_swapped(ctx, flow, l4)?;
    let src_mac: [u8; 6] = ctx.load(ETH_SRC).map_err(write_failed)?;
    let dst_mac: [u8; 6] = ctx.load(ETH_DST).map_err(write_failed)?;
    ctx.store(ETH_DST, &src_mac, 0).map_err(write_failed)?;
    ctx.store(ETH_SRC, &dst_mac, 0).map_err(write_failed)?;
    Ok(())
}
