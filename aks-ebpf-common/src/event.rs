//! `EVENTS` and `MONITOR`: what `aksnet monitor` streams.
//!
//! The datapath writes one [`DatapathEvent`] into the `EVENTS` ring buffer for every
//! dropped packet, and — only while `MONITOR` slot 0 has [`MONITOR_TRACE`] set — for
//! every other verdict too. Tracing is off unless a `monitor --type trace` runs, so a
//! benchmark pays one array lookup per forwarded packet, never a ring-buffer write.

/// Name of the ring buffer in the object and of its pin file.
pub const EVENTS_MAP: &str = "EVENTS";
/// Ring buffer size in bytes (a power of two and a multiple of the page size): room for
/// about 5,000 events between two polls of a monitor.
pub const EVENTS_BYTES: u32 = 256 * 1024;

/// Name of the one-slot switch array (`u32` flags) and of its pin file.
pub const MONITOR_MAP: &str = "MONITOR";
/// `MONITOR` flag: report every verdict, not only drops.
pub const MONITOR_TRACE: u32 = 1;

crate::names::named_enum! {
    /// Which program reported an event. Append-only numbering (event ABI); the name is
    /// the program's name in the object, which the loader attaches by.
    pub enum Program: u8, from from_u8 {
        /// TC ingress on the host side of a pod veth.
        FromPod = 0 => "from_pod",
        /// TC ingress on the node uplink.
        FromVnet = 1 => "from_vnet",
        // 2 was `nsg` (XDP on the node uplink), retired with NSG rules moving into the
        // fabric; never reuse it.
        /// TC ingress on the vnet namespace's end of a node link: the fabric forwarder.
        Fabric = 3 => "fabric",
    }
}

/// Name of the per-CPU counter (`u64`, one slot) of events the ring buffer had no room
/// for: the monitor fell behind; the packets themselves are still in `STATS`.
pub const EVENTS_LOST_MAP: &str = "EVENTS_LOST";

/// One verdict on one packet. Addresses in map form (see [`crate::addr`]), ports and
/// everything else in host order; fields the packet does not have are zero (ports of
/// ICMP, the whole tuple of a non-IPv4 frame).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatapathEvent {
    /// `bpf_ktime_get_ns()`: nanoseconds since boot (CLOCK_MONOTONIC).
    pub time_ns: u64,
    /// A [`crate::Reason`] index.
    pub reason: u32,
    /// Interface the packet arrived on (index in the node namespace).
    pub ifindex: u32,
    /// Packet length from the Ethernet header on.
    pub len: u32,
    pub src_addr: u32,
    pub dst_addr: u32,
    pub src_port: u16,
    pub dst_port: u16,
    /// IANA protocol number; 0 for non-IPv4 frames.
    pub protocol: u8,
    /// A [`Program`] as `u8`.
    pub program: u8,
    pub _pad: [u8; 6],
}

const _: () = assert!(core::mem::size_of::<DatapathEvent>() == 40);
// The ring buffer hands out 8-byte aligned records.
const _: () = assert!(core::mem::align_of::<DatapathEvent>() == 8);

#[cfg(feature = "user")]
// SAFETY: repr(C), explicit padding (8 + 5 × 4 + 2 × 2 + 2 + 6 = 40, asserted), every
// bit pattern valid.
unsafe impl aya::Pod for DatapathEvent {}

impl DatapathEvent {
    /// The event as the bytes the ring buffer carries, read back (userspace side).
    /// `None` when the record is shorter than an event.
    pub fn from_bytes(bytes: &[u8]) -> Option<DatapathEvent> {
        if bytes.len() < core::mem::size_of::<DatapathEvent>() {
            return None;
        }
        // SAFETY: the length was checked; every bit pattern is a valid event;
        // `read_unaligned` makes no alignment assumption about the record.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<DatapathEvent>()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_round_trip() {
        for p in Program::ALL {
            assert_eq!(Program::from_u8(p as u8), Some(p));
        }
        assert_eq!(Program::from_u8(2), None, "2 was the retired nsg");
        assert_eq!(Program::from_u8(4), None);
    }

    #[test]
    fn an_event_reads_back_from_its_bytes() {
        let event = DatapathEvent {
            time_ns: 7,
            reason: 7,
            ifindex: 2,
            len: 74,
            src_addr: crate::addr::ipv4([192, 168, 100, 10]),
            dst_addr: crate::addr::ipv4([10, 224, 0, 4]),
            src_port: 40000,
            dst_port: 17002,
            protocol: 6,
            program: Program::FromVnet as u8,
            _pad: [0; 6],
        };
        // SAFETY: a plain-old-data struct viewed as its bytes.
        let bytes = unsafe {
            core::slice::from_raw_parts(
                (&event as *const DatapathEvent).cast::<u8>(),
                core::mem::size_of::<DatapathEvent>(),
            )
        };
        assert_eq!(DatapathEvent::from_bytes(bytes), Some(event));
        assert_eq!(DatapathEvent::from_bytes(&bytes[..39]), None);
    }
}
