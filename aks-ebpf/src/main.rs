//! aksnet's kernel programs. Entry points stay thin: each one hands the frame to the
//! module that owns its concern, counts the [`Reason`] it came back with, and returns
//! the verdict.
//!
//! - `from_pod` (TC ingress, host side of every pod veth): local pods get the frame
//!   through `bpf_redirect_peer`, everything else leaves through the uplink.
//! - `from_vnet` (TC ingress, node uplink): frames for local pods go straight into them,
//!   the rest to the node's stack.
//! - `fabric` (TC ingress, the vnet namespace's end of each node link): node-to-node
//!   traffic inside the VNet routed straight into the destination node, the rest to the
//!   vnet namespace's stack.
//!
//! NSG rules are the fabric's (`fabric::nsg` in aks-userspace), enforced statefully
//! outside the node as Azure does; no program of this crate filters by NSG rule.
#![no_std]
#![no_main]

mod events;
mod fabric;
mod forward;
mod icmp_error;
mod lb;
mod maps;
mod nat;
mod nodeport;
mod packet;
mod policy;
mod rewrite;
mod routing;
mod stats;

use aks_ebpf_common::{Program, Reason};
use aya_ebpf::{macros::classifier, programs::TcContext, EbpfContext};
use aya_log_ebpf::debug;
use packet::Frame;

/// Counts the packet, reports it to `aksnet monitor` (drops always, the rest while a
/// trace runs) and, when debug logging is on (`aksnet up --log-level debug`), logs
/// drops. The level check is one load of a global, so logging that is off costs next
/// to nothing on the packet path.
///
/// The log carries the reason's number, which `aksnet` turns back into its name: a
/// name copied here would be a string of another length on every path that drops,
/// and verifying those copies was most of the verifier's work on these programs.
#[inline(always)]
fn account<C: EbpfContext>(ctx: &C, seen: Seen, reason: Reason, len: u32) {
    stats::count(reason, len);
    events::report(&seen.frame, seen.program, reason, seen.ifindex, len);
    if reason.is_drop() {
        debug!(
            ctx,
            "{}: drop reason {} ({} bytes)",
            seen.program.name(),
            reason.index(),
            len
        );
    }
}

/// Where a verdict was reached, for its event: the packet as it is after the decision
/// (read afresh from the context, since the decision may have rewritten it), the
/// program and the interface the packet arrived on.
struct Seen {
    frame: Frame,
    program: Program,
    ifindex: u32,
}

impl Seen {
    #[inline(always)]
    fn tc(ctx: &TcContext, program: Program) -> Self {
        Seen {
            frame: Frame {
                start: ctx.data(),
                end: ctx.data_end(),
            },
            program,
            // SAFETY: the context points at the kernel's `__sk_buff` for this run.
            ifindex: unsafe { (*ctx.skb.skb).ifindex },
        }
    }
}

/// Hands the frame to `decide` (the module that owns the program's concern), counts
/// and reports the reason it came back with, and returns its verdict.
#[inline(always)]
fn classify(
    ctx: &TcContext,
    program: Program,
    decide: impl Fn(&TcContext, &Frame) -> (Reason, i32),
) -> i32 {
    let frame = Frame {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    let (reason, verdict) = decide(ctx, &frame);
    account(ctx, Seen::tc(ctx, program), reason, ctx.len());
    verdict
}

#[classifier]
pub fn from_pod(ctx: TcContext) -> i32 {
    classify(&ctx, Program::FromPod, routing::from_pod)
}

#[classifier]
pub fn from_vnet(ctx: TcContext) -> i32 {
    classify(&ctx, Program::FromVnet, routing::from_vnet)
}

#[classifier]
pub fn fabric(ctx: TcContext) -> i32 {
    classify(&ctx, Program::Fabric, fabric::forward)
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
