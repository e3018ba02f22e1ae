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
mod nsg;
mod packet;
mod routing;
mod stats;

use aya_ebpf::{
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use packet::Frame;

#[classifier]
pub fn from_pod(ctx: TcContext) -> i32 {
    let frame = Frame {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    let (reason, verdict) = routing::from_pod(&frame);
    stats::count(reason, ctx.len());
    verdict
}

#[classifier]
pub fn from_vnet(ctx: TcContext) -> i32 {
    let frame = Frame {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    let (reason, verdict) = routing::from_vnet(&frame);
    stats::count(reason, ctx.len());
    verdict
}

#[xdp]
pub fn nsg(ctx: XdpContext) -> u32 {
    let frame = Frame {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    let (reason, verdict) = nsg::filter(&frame);
    stats::count(reason, frame.len());
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
