//! aksnet's kernel programs. Entry points stay thin: each one calls into the module that
//! owns its concern and turns the outcome into a verdict and a counted [`Reason`].
#![no_std]
#![no_main]

mod packet;
mod stats;

use aks_ebpf_common::Reason;
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};

/// TC ingress on the host side of a pod's veth: every packet a pod sends enters here.
/// Today it parses Ethernet/IPv4 and counts; routing, NAT and load balancing grow here.
#[classifier]
pub fn from_pod(ctx: TcContext) -> i32 {
    let reason = match packet::parse_ipv4(&ctx) {
        Ok(Some(_ip)) => Reason::PassedIpv4,
        Ok(None) => Reason::PassedNonIpv4,
        Err(reason) => reason,
    };
    stats::count(reason, ctx.len());
    verdict(reason)
}

/// The TC verdict for a reason: drops are shot, everything else continues.
#[inline(always)]
fn verdict(reason: Reason) -> i32 {
    if reason.is_drop() {
        TC_ACT_SHOT
    } else {
        TC_ACT_OK
    }
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
