//! Monitor events: a full ring buffer loses events, and the loss is counted.

use aks_ebpf_common::{event::EVENTS_BYTES, DatapathEvent, Reason};

use crate::frames::*;
use crate::harness::*;

#[test]
fn events_the_ring_cannot_hold_are_counted_as_lost() {
    let h = Harness::new();
    assert_eq!(h.datapath.monitor_events_lost().expect("EVENTS_LOST"), 0);
    // Every drop is an event; nobody reads the ring here. One more than fits, and some.
    let fits = EVENTS_BYTES as usize / std::mem::size_of::<DatapathEvent>();
    let spoofed = FrameSpec::udp(REMOTE_POD, INTERNET).bytes();
    let runs = fits + 100;
    let before = h
        .datapath
        .stats()
        .expect("STATS")
        .get(Reason::DropSpoofedSource);
    for _ in 0..runs {
        h.run_uncounted("from_pod", &spoofed);
    }
    let after = h
        .datapath
        .stats()
        .expect("STATS")
        .get(Reason::DropSpoofedSource);
    assert_eq!(
        after.packets - before.packets,
        runs as u64,
        "every packet counted"
    );
    let lost = h.datapath.monitor_events_lost().expect("EVENTS_LOST");
    assert!(
        lost >= 100 && lost < runs as u64,
        "{lost} of {runs} events lost; the ring holds fewer than {fits}"
    );
}
