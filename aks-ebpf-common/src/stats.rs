//! The `STATS` map: a per-CPU array indexed by [`Reason`], one [`ReasonCounter`] per slot.
//!
//! Like Cilium's metrics map, every verdict the datapath reaches is counted under a
//! numbered reason, forwards as well as drops, so no packet is handled silently.
//! Userspace sums the per-CPU slots and prints reasons by name.

/// Name of the per-CPU counter map in the eBPF object (and of its pin file).
pub const STATS_MAP: &str = "STATS";

/// Why the datapath did what it did with a packet. The discriminant is the index into
/// `STATS`; the numbers are part of the map ABI, so append, never renumber.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Handed to the kernel's stack: IPv4 for the node itself, or (on the uplink) not for
    /// a local pod.
    PassedToStack = 0,
    /// Not IPv4 (ARP, IPv6 neighbour discovery, ...): handed on unchanged.
    PassedNonIpv4 = 1,
    /// A header the packet claims to carry is truncated (Ethernet shorter than 14 bytes,
    /// IPv4 shorter than 20) or invalid (IPv4 header length below 5 words): dropped.
    DropMalformed = 2,
    /// Delivered straight into a local pod's namespace (`bpf_redirect_peer`).
    RedirectedPeer = 3,
    /// Sent out of the node uplink towards the VNet (`bpf_redirect`), MACs rewritten.
    RedirectedUplink = 4,
    /// Going to a destination outside the non-masquerade CIDRs, so it needs SNAT, but SNAT
    /// cannot translate it (not TCP, UDP or ICMP echo, or a later fragment). A kubenet
    /// pod address would be unroutable there: dropped rather than sent with a source
    /// nobody can answer.
    DropNeedsMasquerade = 5,
    /// TTL would reach zero on this hop: dropped, as a router does.
    DropTtlExceeded = 6,
    /// Denied by an NSG rule at the uplink (XDP).
    DropNsgDenied = 7,
    /// Inspected by the NSG at the uplink (XDP) and allowed: by a rule or by default.
    NsgAllowed = 8,
    /// The node's `CONFIG` has not been written: the datapath cannot forward. Dropped.
    DropNoConfig = 9,
    /// Masqueraded (source rewritten to the node address and a NAT port) and sent out
    /// of the uplink.
    RedirectedUplinkSnat = 10,
    /// A reply to a masqueraded flow, translated back to the pod and delivered into it.
    RedirectedPeerRevSnat = 11,
    /// SNAT found no free port for a new flow after its retries: port exhaustion.
    DropNatNoPort = 12,
    /// `CONNTRACK` or `NAT` is full: a new flow cannot be tracked (existing ones go on).
    DropConntrackFull = 13,
    /// To a ClusterIP: translated to a backend (DNAT) and sent on.
    ServiceDnat = 14,
    /// A reply from a service backend, its source translated back to the ClusterIP.
    ServiceRevDnat = 15,
    /// A new TCP connection to a ClusterIP with no backends: answered with a reset, so
    /// the client fails at once instead of retrying for seconds.
    RejectServiceNoBackend = 16,
    /// A non-TCP packet to a ClusterIP with no backends: dropped.
    DropServiceNoBackend = 17,
    /// A new connection the source pod's egress network policy does not allow (the
    /// default deny of the policies isolating it): dropped in `from_pod`.
    DropPolicyEgress = 18,
    /// A new connection the destination pod's ingress network policy does not allow:
    /// dropped before delivery into the pod.
    DropPolicyIngress = 19,
}

impl Reason {
    /// Every reason, in map order. `STATS` has exactly this many slots.
    pub const ALL: [Reason; 20] = [
        Reason::PassedToStack,
        Reason::PassedNonIpv4,
        Reason::DropMalformed,
        Reason::RedirectedPeer,
        Reason::RedirectedUplink,
        Reason::DropNeedsMasquerade,
        Reason::DropTtlExceeded,
        Reason::DropNsgDenied,
        Reason::NsgAllowed,
        Reason::DropNoConfig,
        Reason::RedirectedUplinkSnat,
        Reason::RedirectedPeerRevSnat,
        Reason::DropNatNoPort,
        Reason::DropConntrackFull,
        Reason::ServiceDnat,
        Reason::ServiceRevDnat,
        Reason::RejectServiceNoBackend,
        Reason::DropServiceNoBackend,
        Reason::DropPolicyEgress,
        Reason::DropPolicyIngress,
    ];

    /// Number of slots in `STATS`.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// The index of this reason's slot in `STATS`.
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// The reason stored at `index`, if the index names one.
    pub const fn from_index(index: u32) -> Option<Reason> {
        if index < Self::COUNT {
            Some(Self::ALL[index as usize])
        } else {
            None
        }
    }

    /// The stable name printed by `aksnet inspect stats` and used in JSON output.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::PassedToStack => "passed-to-stack",
            Reason::PassedNonIpv4 => "passed-non-ipv4",
            Reason::DropMalformed => "drop-malformed",
            Reason::RedirectedPeer => "redirected-peer",
            Reason::RedirectedUplink => "redirected-uplink",
            Reason::DropNeedsMasquerade => "drop-needs-masquerade",
            Reason::DropTtlExceeded => "drop-ttl-exceeded",
            Reason::DropNsgDenied => "drop-nsg-denied",
            Reason::NsgAllowed => "nsg-allowed",
            Reason::DropNoConfig => "drop-no-config",
            Reason::RedirectedUplinkSnat => "redirected-uplink-snat",
            Reason::RedirectedPeerRevSnat => "redirected-peer-rev-snat",
            Reason::DropNatNoPort => "drop-nat-no-port",
            Reason::DropConntrackFull => "drop-conntrack-full",
            Reason::ServiceDnat => "service-dnat",
            Reason::ServiceRevDnat => "service-rev-dnat",
            Reason::RejectServiceNoBackend => "reject-service-no-backend",
            Reason::DropServiceNoBackend => "drop-service-no-backend",
            Reason::DropPolicyEgress => "drop-policy-egress",
            Reason::DropPolicyIngress => "drop-policy-ingress",
        }
    }

    /// Whether packets counted under this reason were dropped.
    pub const fn is_drop(self) -> bool {
        matches!(
            self,
            Reason::DropMalformed
                | Reason::DropNeedsMasquerade
                | Reason::DropTtlExceeded
                | Reason::DropNsgDenied
                | Reason::DropNoConfig
                | Reason::DropNatNoPort
                | Reason::DropConntrackFull
                | Reason::RejectServiceNoBackend
                | Reason::DropServiceNoBackend
                | Reason::DropPolicyEgress
                | Reason::DropPolicyIngress
        )
    }
}

/// One slot of `STATS` on one CPU. Host byte order; only ever added to by the datapath.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReasonCounter {
    /// Packets counted under the slot's reason.
    pub packets: u64,
    /// Bytes of those packets, from the start of the Ethernet header (`skb->len`).
    pub bytes: u64,
}

const _: () = assert!(core::mem::size_of::<ReasonCounter>() == 16);
const _: () = assert!(core::mem::align_of::<ReasonCounter>() == 8);

impl ReasonCounter {
    /// Adds another CPU's slot to this one (used to total per-CPU values).
    pub fn add(&mut self, other: &ReasonCounter) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), two u64 fields, no padding (asserted above); every bit pattern is valid.
unsafe impl aya::Pod for ReasonCounter {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_round_trip() {
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i as u32, "{reason:?} is out of map order");
            assert_eq!(Reason::from_index(i as u32), Some(*reason));
        }
        assert_eq!(Reason::from_index(Reason::COUNT), None);
    }

    #[test]
    fn names_are_unique() {
        for a in Reason::ALL {
            for b in Reason::ALL {
                if a != b {
                    assert_ne!(a.name(), b.name());
                }
            }
        }
    }

    #[test]
    fn drops_are_named_as_drops() {
        for reason in Reason::ALL {
            let named_as_drop =
                reason.name().starts_with("drop-") || reason.name().starts_with("reject-");
            assert_eq!(reason.is_drop(), named_as_drop, "{reason:?}");
        }
    }

    #[test]
    fn counters_add() {
        let mut total = ReasonCounter {
            packets: 1,
            bytes: 60,
        };
        total.add(&ReasonCounter {
            packets: 2,
            bytes: 140,
        });
        assert_eq!(
            total,
            ReasonCounter {
                packets: 3,
                bytes: 200
            }
        );
    }
}
