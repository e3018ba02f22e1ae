//! `EVENTS`: the verdicts `aksnet monitor` streams. Drops are always reported; other
//! verdicts only while userspace has set `MONITOR_TRACE` in `MONITOR`, so with no
//! `monitor --type trace` running a forwarded packet costs one array lookup here.

use aks_ebpf_common::{
    event::{EVENTS_BYTES, MONITOR_TRACE},
    DatapathEvent, Program, Reason,
};
use aya_ebpf::{
    btf_maps::{Array, PerCpuArray, RingBuf},
    helpers::bpf_ktime_get_ns,
    macros::btf_map,
};

use crate::packet::{parse_ipv4, ports, Frame};

#[btf_map]
static EVENTS: RingBuf<DatapathEvent, { EVENTS_BYTES as usize }> = RingBuf::new();

/// Slot 0: `MONITOR_*` flags, written by `aksnet monitor`.
#[btf_map]
static MONITOR: Array<u32, 1> = Array::new();

/// Events the ring buffer had no room for, per CPU (`EVENTS_LOST_MAP`).
#[btf_map]
static EVENTS_LOST: PerCpuArray<u64, 1> = PerCpuArray::new();

#[inline(always)]
fn tracing() -> bool {
    MONITOR
        .get(0)
        .is_some_and(|flags| flags & MONITOR_TRACE != 0)
}

/// Reports the verdict `reason` on the frame if anyone should see it. `frame` must be
/// the packet as it is now (after any rewrite), read afresh from the context.
#[inline(always)]
pub fn report(frame: &Frame, program: Program, reason: Reason, ifindex: u32, len: u32) {
    if !reason.is_drop() && !tracing() {
        return;
    }
    let mut event = DatapathEvent {
        // SAFETY: a helper without arguments.
        time_ns: unsafe { bpf_ktime_get_ns() },
        reason: reason.index(),
        ifindex,
        len,
        program: program as u8,
        ..DatapathEvent::default()
    };
    fill_tuple(frame, &mut event);
    // A full ring loses this event, not the packet: the monitor is behind, and the
    // STATS counter still has the packet. The loss itself is counted.
    if EVENTS.output(event, 0).is_err() {
        if let Some(lost) = EVENTS_LOST.get_ptr_mut(0) {
            // SAFETY: the map returned a valid pointer to this CPU's slot.
            unsafe { *lost += 1 };
        }
    }
}

/// Addresses, protocol and (TCP/UDP, first fragment) ports, as far as the frame holds
/// them; a truncated frame leaves the rest zero.
#[inline(always)]
fn fill_tuple(frame: &Frame, event: &mut DatapathEvent) {
    let Ok(Some(ip)) = parse_ipv4(frame) else {
        return;
    };
    event.src_addr = ip.src();
    event.dst_addr = ip.dst();
    event.protocol = ip.protocol();
    if let Ok(Some((src_port, dst_port))) = ports(frame, &ip) {
        event.src_port = src_port;
        event.dst_port = dst_port;
    }
}
