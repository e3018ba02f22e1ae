//! Bounds-checked access to packet headers, in the shape the verifier accepts: every
//! header pointer is checked against `data_end` before it is returned.

use core::mem::size_of;

use aks_ebpf_common::Reason;
use aya_ebpf::programs::TcContext;
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

/// A pointer to a `T` at `offset` bytes into the packet, if the whole `T` is inside it.
#[inline(always)]
fn header<T>(ctx: &TcContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data() + offset;
    if start + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some(start as *mut T)
}

/// The IPv4 header of an Ethernet frame.
///
/// `Ok(None)` for frames that are not IPv4 (ARP, IPv6, …); `Err(reason)` for frames too
/// short to hold their headers or with an IPv4 header length below the minimum.
#[inline(always)]
pub fn parse_ipv4(ctx: &TcContext) -> Result<Option<*mut Ipv4Hdr>, Reason> {
    let eth: *mut EthHdr = header(ctx, 0).ok_or(Reason::DropMalformed)?;
    // SAFETY: `header` checked that the Ethernet header lies inside the packet.
    if unsafe { (*eth).ether_type } != EtherType::Ipv4 as u16 {
        return Ok(None);
    }
    let ip: *mut Ipv4Hdr = header(ctx, EthHdr::LEN).ok_or(Reason::DropMalformed)?;
    // SAFETY: `header` checked that the IPv4 header lies inside the packet.
    let ihl = unsafe { (*ip).ihl() } as usize;
    if ihl < Ipv4Hdr::LEN {
        return Err(Reason::DropMalformed);
    }
    Ok(Some(ip))
}
