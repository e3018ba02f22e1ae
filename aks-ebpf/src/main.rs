//! aksnet's kernel programs. Entry points stay thin: each one hands the frame to the
//! module that owns its concern, counts the [`Reason`] it came back with, and returns
//! the verdict.
//!
//! - `from_pod` (TC ingress, host side of every pod veth): local pods get the frame
//!   through `bpf_redirect_peer`, everything else leaves through the uplink.
//! - `from_vnet` (TC ingress, node uplink): frames for local pods go straight into them,
//!   the rest to the node's stack.
//! - `nsg` (XDP, node uplink): NSG rules, before anything else sees the frame.
#![no_std]
#![no_main]

mod forward;
mod maps;
mod nat;
mod nsg;
mod packet;
mod routing;
mod stats;

use aks_ebpf_common::Reason;
use aya_ebpf::{
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
    EbpfContext,
};
use aya_log_ebpf::debug;
use packet::Frame;

/// Counts the packet and, when debug logging is on (`aksnet up --log-level debug`),
/// reports drops. The level check is one load of a global, so logging that is off
/// costs next to nothing on the packet path.
#[inline(always)]
fn account<C: EbpfContext>(ctx: &C, program: &str, reason: Reason, len: u32) {
    stats::count(reason, len);
    if reason.is_drop() {
        debug!(ctx, "{}: {} ({} bytes)", program, reason.name(), len);
    }
}

#[classifier]
pub fn from_pod(ctx: TcContext) -> i32 {
    let frame = Frame {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    let (reason, verdict) = routing::from_pod(&ctx, &frame);
    account(&ctx, "from_pod", reason, ctx.len());
    verdict
}

#[classifier]
pub fn from_vnet(ctx: TcContext) -> i32 {
    let frame = Frame {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    let (reason, verdict) = routing::from_vnet(&ctx, &frame);
    account(&ctx, "from_vnet", reason, ctx.len());
    verdict
}

#[xdp]
pub fn nsg(ctx: XdpContext) -> u32 {
    let frame = Frame {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    let (reason, verdict) = nsg::filter(&frame);
    account(&ctx, "nsg", reason, frame.len());
    verdict
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves programs cannot reach a panic; this is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
