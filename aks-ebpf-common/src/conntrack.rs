//! `CONNTRACK` and `NAT`: the flows the datapath masquerades (SNAT to the node address).
//!
//! Every masqueraded flow owns three entries, created together or not at all:
//! - `NAT[egress tuple]`  → the node address and port the flow leaves with;
//! - `NAT[reply tuple]`   → the pod address and port replies are translated back to;
//! - `CONNTRACK[egress tuple]` → state and timestamps, which `aksnet up` garbage-collects
//!   (and with it both NAT entries).
//!
//! Both are plain hash maps, not LRU: an LRU map evicts its oldest entries when full,
//! silently breaking live flows. A full map here makes the *new* flow fail with a
//! counted reason instead, and idle flows leave through the GC.

/// Names of the maps in the object and of their pin files.
pub const CONNTRACK_MAP: &str = "CONNTRACK";
pub const NAT_MAP: &str = "NAT";

/// Compiled-in capacity of `CONNTRACK`; `aksnet up` sets the real one at load time
/// (description `conntrack.maxEntries`, default sized from memory).
pub const CONNTRACK_DEFAULT_CAPACITY: u32 = 65_536;

/// `NAT` entries per masqueraded flow: the egress and the reply mapping.
pub const NAT_ENTRIES_PER_FLOW: u32 = 2;

/// The capacity `NAT` needs beside a `CONNTRACK` of `conntrack_capacity` flows.
pub const fn nat_capacity(conntrack_capacity: u32) -> u32 {
    conntrack_capacity.saturating_mul(NAT_ENTRIES_PER_FLOW)
}

/// How many random ports SNAT tries after the original one before it gives up.
pub const NAT_PORT_RETRIES: u32 = 16;

pub use crate::wire::{PROTO_ICMP, PROTO_TCP, PROTO_UDP, TCP_FIN, TCP_RST, TCP_SYN};

/// A flow as it appears on the wire in one direction. Addresses in map form (see
/// [`crate::addr`]); ports in host order. ICMP echo uses the identifier as a port: a
/// request carries it as `src_port` (`dst_port` 0), a reply as `dst_port` (`src_port` 0),
/// so the reply tuple of a request is the plain swap, as for TCP and UDP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: u32,
    pub dst: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    pub _pad: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 16);

impl FlowKey {
    pub const fn new(src: u32, dst: u32, src_port: u16, dst_port: u16, protocol: u8) -> Self {
        Self {
            src,
            dst,
            src_port,
            dst_port,
            protocol,
            _pad: [0; 3],
        }
    }

    /// The tuple with its ports zeroed unless `keep` (network policy matches ports only
    /// for TCP and UDP).
    pub const fn with_policy_ports(self, keep: bool) -> FlowKey {
        if keep {
            self
        } else {
            FlowKey::new(self.src, self.dst, 0, 0, self.protocol)
        }
    }

    /// The tuple replies to this (egress) flow carry once it leaves as
    /// `node:nat_port`.
    pub const fn reply_after_snat(&self, node: u32, nat_port: u16) -> FlowKey {
        FlowKey::new(self.dst, node, self.dst_port, nat_port, self.protocol)
    }

    /// The egress tuple of the flow a reply belongs to, given where `NAT` translates the
    /// reply back to (the pod's address and port).
    pub const fn egress_of_reply(&self, pod: u32, pod_port: u16) -> FlowKey {
        FlowKey::new(pod, self.src, pod_port, self.src_port, self.protocol)
    }
}

/// Where a `NAT` entry translates to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatTarget {
    pub addr: u32,
    pub port: u16,
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<NatTarget>() == 8);

/// `CtEntry::flags`: a reply has been seen (the flow is established both ways).
pub const CT_REPLY_SEEN: u8 = 1;
/// `CtEntry::flags`: the flow was opened from outside toward a local pod; the entry is
/// keyed by the pod's reply direction, whose packets must leave untranslated even when
/// the peer lies outside the non-masquerade CIDRs (as the kernel's conntrack keeps
/// MASQUERADE to new connections). No NAT entries belong to it.
pub const CT_INBOUND: u8 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the flow was created.
    pub created_ns: u64,
    /// … and when a packet of it, either way, was last seen.
    pub last_seen_ns: u64,
    /// Packets and bytes, both directions.
    pub packets: u64,
    pub bytes: u64,
    /// The node address and port the flow leaves with.
    pub nat_addr: u32,
    pub nat_port: u16,
    /// TCP flags seen so far, ORed (FIN, SYN, RST, …).
    pub tcp_flags: u8,
    /// `CT_*` bits.
    pub flags: u8,
}

const _: () = assert!(core::mem::size_of::<CtEntry>() == 40);

/// Which timeout applies to a flow, for the GC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtTimeout {
    /// TCP after FIN or RST, or a SYN that never got a reply.
    TcpClosing,
    /// TCP with replies and no FIN/RST.
    TcpEstablished,
    /// UDP and ICMP.
    Datagram,
}

impl CtEntry {
    /// The entry of a flow whose first packet (of `len` bytes) is seen at `now_ns`.
    pub const fn first_packet(now_ns: u64, len: u32, tcp_flags: u8, flags: u8) -> Self {
        Self {
            created_ns: now_ns,
            last_seen_ns: now_ns,
            packets: 1,
            bytes: len as u64,
            nat_addr: 0,
            nat_port: 0,
            tcp_flags,
            flags,
        }
    }

    pub fn timeout_class(&self, protocol: u8) -> CtTimeout {
        if protocol != PROTO_TCP {
            return CtTimeout::Datagram;
        }
        if self.tcp_flags & (TCP_FIN | TCP_RST) != 0 || self.flags & CT_REPLY_SEEN == 0 {
            CtTimeout::TcpClosing
        } else {
            CtTimeout::TcpEstablished
        }
    }
}

// SAFETY (all): repr(C), explicit padding, sizes asserted; every bit pattern valid.
crate::names::plain_data!(FlowKey, NatTarget, CtEntry);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_and_egress_tuples_invert_each_other() {
        let egress = FlowKey::new(10, 20, 40000, 80, PROTO_TCP);
        let reply = egress.reply_after_snat(4, 12345);
        assert_eq!(reply, FlowKey::new(20, 4, 80, 12345, PROTO_TCP));
        assert_eq!(reply.egress_of_reply(10, 40000), egress);
        // ICMP echo: the identifier travels as src_port out, dst_port back.
        let ping = FlowKey::new(10, 20, 7, 0, PROTO_ICMP);
        assert_eq!(
            ping.reply_after_snat(4, 9),
            FlowKey::new(20, 4, 0, 9, PROTO_ICMP)
        );
    }

    #[test]
    fn timeouts_follow_tcp_state() {
        let mut e = CtEntry::default();
        assert_eq!(e.timeout_class(PROTO_UDP), CtTimeout::Datagram);
        e.tcp_flags = TCP_SYN;
        assert_eq!(
            e.timeout_class(PROTO_TCP),
            CtTimeout::TcpClosing,
            "SYN without reply"
        );
        e.flags = CT_REPLY_SEEN;
        assert_eq!(e.timeout_class(PROTO_TCP), CtTimeout::TcpEstablished);
        e.tcp_flags |= TCP_FIN;
        assert_eq!(e.timeout_class(PROTO_TCP), CtTimeout::TcpClosing);
    }
}
