//! Rewriting one side of a flow (address and port) through the kernel's helpers, which
//! keep the checksums right, checksum offload included. SNAT, its reverse, service DNAT
//! and its reverse are each one or two of these.

use aks_ebpf_common::{
    wire::{ETH_HLEN, IPV4_CHECKSUM, IPV4_DST, IPV4_SRC, PROTO_ICMP, PROTO_UDP},
    FlowKey, Reason,
};
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};

use crate::packet::Transport;

/// Offsets of the IPv4 fields rewritten here, from the start of the frame.
const IP_CHECKSUM_AT: usize = ETH_HLEN + IPV4_CHECKSUM;
const IP_SRC_AT: usize = ETH_HLEN + IPV4_SRC;
const IP_DST_AT: usize = ETH_HLEN + IPV4_DST;

/// Replaces the source address and port (ICMP echo: identifier) of `flow`'s packet.
#[inline(always)]
pub fn rewrite_src(
    ctx: &TcContext,
    flow: &FlowKey,
    l4: &Transport,
    addr: u32,
    port: u16,
) -> Result<(), Reason> {
    let side = Side {
        addr_offset: IP_SRC_AT,
        old_addr: flow.src,
        port_offset: l4.src_port_offset,
        old_port: flow.src_port,
    };
    rewrite(ctx, flow.protocol, l4, &side, addr, port)
}

/// Replaces the destination address and port (ICMP echo: identifier) of `flow`'s
/// packet.
#[inline(always)]
pub fn rewrite_dst(
    ctx: &TcContext,
    flow: &FlowKey,
    l4: &Transport,
    addr: u32,
    port: u16,
) -> Result<(), Reason> {
    let side = Side {
        addr_offset: IP_DST_AT,
        old_addr: flow.dst,
        port_offset: l4.dst_port_offset,
        old_port: flow.dst_port,
    };
    rewrite(ctx, flow.protocol, l4, &side, addr, port)
}

/// Writes the source and destination addresses and ports exactly as given (no checksum
/// change: for a swap of the two, which leaves every checksum as it was).
#[inline(always)]
pub fn store_swapped(ctx: &TcContext, flow: &FlowKey, l4: &Transport) -> Result<(), Reason> {
    let failed = |_| Reason::DropWriteError;
    ctx.store(l4.src_port_offset, &flow.dst_port.to_be(), 0)
        .map_err(failed)?;
    ctx.store(l4.dst_port_offset, &flow.src_port.to_be(), 0)
        .map_err(failed)?;
    ctx.store(IP_SRC_AT, &flow.dst, 0).map_err(failed)?;
    ctx.store(IP_DST_AT, &flow.src, 0).map_err(failed)?;
    Ok(())
}

/// Where one side of a flow sits in the packet, and what it holds now.
struct Side {
    addr_offset: usize,
    old_addr: u32,
    port_offset: usize,
    old_port: u16,
}

/// Replaces one address and one port (or ICMP identifier), fixing the L4 checksum (with
/// the pseudo-header for TCP and UDP) and the IPv4 header checksum.
#[inline(always)]
fn rewrite(
    ctx: &TcContext,
    protocol: u8,
    l4: &Transport,
    side: &Side,
    new_addr: u32,
    new_port: u16,
) -> Result<(), Reason> {
    let write_failed = |_| Reason::DropWriteError;
    let checksum_failed = |_| Reason::DropChecksumError;
    let (old_port_be, new_port_be) = (
        u64::from(side.old_port.to_be()),
        u64::from(new_port.to_be()),
    );
    let checksummed =
        protocol != PROTO_UDP || ctx.load::<u16>(l4.checksum_offset).map_err(write_failed)? != 0;
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
                u64::from(side.old_addr),
                u64::from(new_addr),
                u64::from(BPF_F_PSEUDO_HDR) | 4 | mangled,
            )
            .map_err(checksum_failed)?;
        }
        ctx.l4_csum_replace(l4.checksum_offset, old_port_be, new_port_be, 2 | mangled)
            .map_err(checksum_failed)?;
    }
    ctx.l3_csum_replace(
        IP_CHECKSUM_AT,
        u64::from(side.old_addr),
        u64::from(new_addr),
        4,
    )
    .map_err(checksum_failed)?;
    ctx.store(side.addr_offset, &new_addr, 0)
        .map_err(write_failed)?;
    ctx.store(side.port_offset, &new_port.to_be(), 0)
        .map_err(write_failed)?;
    Ok(())
}
