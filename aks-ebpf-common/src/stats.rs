//! The `STATS` map: a per-CPU array indexed by [`Reason`], one [`ReasonCounter`] per slot.
//!
//! Like Cilium's metrics map, every verdict the datapath reaches is counted under a
//! numbered reason, forwards as well as drops, so no packet is handled silently.
//! Userspace sums the per-CPU slots and prints reasons by name.

/// Name of the per-CPU counter map in the eBPF object (and of its pin file).
pub const STATS_MAP: &str = "STATS";

crate::names::named_enum! {
    /// Why the datapath did what it did with a packet. The number is the index into
    /// `STATS` and the event's reason; the numbers are part of the map ABI, so append,
    /// never renumber. A name starting with `drop-` or `reject-` is a drop (see
    /// [`Reason::is_drop`]): the name alone says what happened.
    pub enum Reason: u32, from from_index {
        /// Handed to the kernel's stack: IPv4 for the node itself, or (on the uplink) not
        /// for a local pod.
        PassedToStack = 0 => "passed-to-stack",
        /// Not IPv4 (ARP, IPv6 neighbour discovery, ...): handed on unchanged.
        PassedNonIpv4 = 1 => "passed-non-ipv4",
        /// A header the packet claims to carry is cut short (Ethernet shorter than 14
        /// bytes, IPv4 shorter than 20, a TCP, UDP or ICMP header that ends early) or
        /// invalid (IPv4 header length below 5 words, version not 4): dropped, on every
        /// path alike.
        DropMalformed = 2 => "drop-malformed",
        /// Delivered straight into a local pod's namespace (`bpf_redirect_peer`).
        RedirectedPeer = 3 => "redirected-peer",
        /// Sent out of the node uplink towards the VNet (`bpf_redirect`), MACs rewritten.
        RedirectedUplink = 4 => "redirected-uplink",
        /// Going to a destination outside the non-masquerade CIDRs, so it needs SNAT, but
        /// SNAT cannot translate it (not TCP, UDP or ICMP echo, or a later fragment). A
        /// kubenet pod address would be unroutable there: dropped rather than sent with a
        /// source nobody can answer.
        DropNeedsMasquerade = 5 => "drop-needs-masquerade",
        /// TTL would reach zero on this hop: dropped, as a router does.
        DropTtlExceeded = 6 => "drop-ttl-exceeded",
        // 7 and 8 were the retired XDP NSG's `drop-nsg-denied` and `nsg-allowed` (NSG
        // rules are the fabric's now). Never reused: a pinned `STATS` of an older
        // build must not show their counts under another name.
        /// The node's `CONFIG` has not been written: the datapath cannot forward. Dropped.
        DropNoConfig = 9 => "drop-no-config",
        /// Masqueraded (source rewritten to the node address and a NAT port) and sent out
        /// of the uplink.
        RedirectedUplinkSnat = 10 => "redirected-uplink-snat",
        /// A reply to a masqueraded flow, translated back to the pod and delivered into
        /// it.
        RedirectedPeerRevSnat = 11 => "redirected-peer-rev-snat",
        /// SNAT found no free port for a new flow after its retries: port exhaustion.
        DropNatNoPort = 12 => "drop-nat-no-port",
        /// `CONNTRACK`, `NAT` or the service flow maps are full: a new flow cannot be
        /// tracked (existing ones go on).
        DropConntrackFull = 13 => "drop-conntrack-full",
        /// To a ClusterIP: translated to a backend (DNAT) and sent on.
        ServiceDnat = 14 => "service-dnat",
        /// A reply from a service backend, its source translated back to the ClusterIP.
        ServiceRevDnat = 15 => "service-rev-dnat",
        /// A new TCP connection to a ClusterIP with no backends: answered with a reset, so
        /// the client fails at once instead of retrying for seconds.
        RejectServiceNoBackend = 16 => "reject-service-no-backend",
        /// A packet to a ClusterIP with no backend for it (a non-TCP packet to a service
        /// without backends, a TCP packet other than a SYN, or a backend slot removed
        /// while userspace rewrites the service): dropped.
        DropServiceNoBackend = 17 => "drop-service-no-backend",
        /// The redirect helper refused the target (`bpf_redirect` or `bpf_redirect_peer`
        /// did not return `TC_ACT_REDIRECT`): dropped, not counted as forwarded.
        DropRedirectFailed = 18 => "drop-redirect-failed",
        /// A helper that writes the packet (`bpf_skb_store_bytes`) or reads it for a
        /// rewrite failed: dropped half-rewritten rather than sent on (Cilium's
        /// DROP_WRITE_ERROR).
        DropWriteError = 19 => "drop-write-error",
        /// A checksum helper (`bpf_l3_csum_replace`, `bpf_l4_csum_replace`) failed: the
        /// packet's checksums could not be kept right (Cilium's DROP_CSUM_L3/L4).
        DropChecksumError = 20 => "drop-checksum-error",
        /// A pod sent with a source address that is not its own (the endpoint's address
        /// on the veth it came from): dropped before it can claim a NAT entry.
        DropSpoofedSource = 21 => "drop-spoofed-source",
        /// The IPv4 header checksum does not verify: dropped, as a router does.
        DropBadIpChecksum = 22 => "drop-bad-ip-checksum",
        /// The IPv4 total length claims more bytes than the frame holds, or fewer than
        /// its own header: dropped.
        DropBadIpLength = 23 => "drop-bad-ip-length",
        /// A later fragment (no ports) to a ClusterIP: the backend cannot be chosen
        /// without the ports, and the datapath does not reassemble. Dropped.
        DropFragmentToService = 24 => "drop-fragment-to-service",
        /// A VLAN-tagged frame (802.1Q/802.1ad, in the frame or in the packet's metadata):
        /// neither pods nor the VNet use VLANs, and a translated frame would leave still
        /// tagged. Dropped.
        DropVlanTagged = 25 => "drop-vlan-tagged",
        /// An ICMP error (destination unreachable, fragmentation needed, time exceeded)
        /// about a masqueraded flow: the outer destination and the quoted packet's source
        /// translated back to the pod, every checksum fixed, delivered into the pod.
        RedirectedPeerIcmpError = 26 => "redirected-peer-icmp-error",
        /// To a node port from outside: translated to a backend on this node and
        /// delivered into it, the client's address kept.
        NodePortDnat = 27 => "nodeport-dnat",
        /// To a node port from outside, `externalTrafficPolicy: Cluster`: translated to
        /// a backend on another node, SNATed to the node address (so the reply comes
        /// back here) and sent on.
        NodePortDnatSnat = 28 => "nodeport-dnat-snat",
        /// A local backend's reply to a node port flow: its source translated back to
        /// `nodeIP:nodePort`, sent out of the uplink.
        NodePortRevDnat = 29 => "nodeport-rev-dnat",
        /// A remote backend's reply to a SNATed node port flow: translated back to
        /// `nodeIP:nodePort → client`, sent out of the uplink.
        NodePortRevSnat = 30 => "nodeport-rev-snat",
        /// A new flow to the node port of an `externalTrafficPolicy: Local` service with
        /// no backend on this node: dropped (kube-proxy's KUBE-EXTERNAL-SERVICES does the
        /// same; the load balancer's health probe keeps traffic away from such a node).
        DropNodePortNoLocalBackend = 31 => "drop-nodeport-no-local-backend",
        /// A new flow to the node port of a `Cluster` service without backends, or a
        /// backend slot missing while userspace rewrites the service: dropped.
        DropNodePortNoBackend = 32 => "drop-nodeport-no-backend",
        /// SNAT for a node port flow to a backend on another node found no free port
        /// after its retries: dropped.
        DropNodePortNoSnatPort = 33 => "drop-nodeport-no-snat-port",
        /// Azure CNI Overlay: to another node's pods, handed to the kernel, which routes
        /// it into the node's tunnel device (keeping the pod address). Not
        /// `passed-to-stack`: the packet is forwarded, not delivered to the node.
        ToOverlay = 34 => "to-overlay",
        /// A new connection the sending pod's egress network policy does not allow (the
        /// default deny of the policies isolating it): dropped in `from_pod`.
        DropPolicyEgress = 35 => "drop-policy-egress",
        /// A new connection the receiving pod's ingress network policy does not allow:
        /// dropped before delivery into the pod.
        DropPolicyIngress = 36 => "drop-policy-ingress",
        /// The fabric forwarder (vnet namespace) routed a packet from one node link to
        /// another itself: TTL decremented, MACs rewritten, `bpf_redirect_peer` into the
        /// destination node.
        FabricForwarded = 37 => "fabric-forwarded",
        /// The fabric forwarder handed a packet to the vnet namespace's stack: not to a
        /// VNet route behind another node link, or a case the stack must handle (TTL
        /// about to expire, IP options, a fragment, a bad header, a reply from a node
        /// port the load balancer may have translated).
        FabricPassed = 38 => "fabric-passed",
    }
}

impl Reason {
    /// Number of slots in `STATS`: one past the highest number (retired numbers keep
    /// their unused slot).
    pub const COUNT: u32 = {
        let mut count = 0;
        let mut i = 0;
        while i < Self::ALL.len() {
            if Self::ALL[i] as u32 >= count {
                count = Self::ALL[i] as u32 + 1;
            }
            i += 1;
        }
        count
    };

    /// Numbers that once named a reason and must stay unused.
    pub const RETIRED: [u32; 2] = [7, 8];

    /// The index of this reason's slot in `STATS`.
    #[inline(always)]
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// Whether packets counted under this reason were dropped: derived from the name.
    #[inline(always)]
    pub const fn is_drop(self) -> bool {
        // A table the compiler builds, so the datapath does one load, never a string
        // comparison.
        Self::DROPS[self as usize]
    }

    /// `is_drop` of every reason, by index, computed at compile time from the names.
    const DROPS: [bool; Self::COUNT as usize] = {
        let mut drops = [false; Self::COUNT as usize];
        let mut i = 0;
        while i < Self::ALL.len() {
            let name = Self::ALL[i].name();
            drops[Self::ALL[i] as usize] = crate::names::has_prefix(name, "drop-")
                || crate::names::has_prefix(name, "reject-");
            i += 1;
        }
        drops
    };
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
    fn indices_are_dense_but_for_the_retired_ones_and_round_trip() {
        let mut reasons = Reason::ALL.iter();
        for i in 0..Reason::COUNT {
            if Reason::RETIRED.contains(&i) {
                assert_eq!(Reason::from_index(i), None, "retired number {i} reused");
                continue;
            }
            let reason = reasons.next().expect("a reason for every live slot");
            assert_eq!(reason.index(), i, "{reason:?} is out of map order");
            assert_eq!(Reason::from_index(i), Some(*reason));
        }
        assert_eq!(reasons.next(), None);
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
        assert!(Reason::DropSpoofedSource.is_drop());
        assert!(Reason::RejectServiceNoBackend.is_drop());
        assert!(!Reason::RedirectedPeerIcmpError.is_drop());
        assert!(!Reason::ToOverlay.is_drop());
        assert!(Reason::DropVlanTagged.is_drop());
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
