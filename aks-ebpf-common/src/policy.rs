//! Network policy maps, Cilium style: addresses resolve to identities (`IPCACHE`), and
//! each local endpoint's allowed (identity, port, protocol, direction) are keys of
//! `POLICY`. Whether an endpoint is isolated at all sits in its `ENDPOINTS` flags.
//! `POLICY_CT` remembers the connections policy allowed, so their packets (and replies)
//! skip the lookups.
//!
//! Identities are computed by `aksnet` from the policy model: every address range that
//! every peer of every policy treats alike gets one number (pods by namespace, labels
//! and the ipBlocks holding them; nodes and other addresses by the ipBlocks holding
//! them), so one lookup of the peer's address gives everything the rules can ask.

/// Names of the maps in the object and of their pin files.
pub const IPCACHE_MAP: &str = "IPCACHE";
pub const POLICY_MAP: &str = "POLICY";
pub const POLICY_CT_MAP: &str = "POLICY_CT";

/// Capacities: prefixes of every ipBlock and every pod and node address; allow keys of
/// this node's endpoints; allowed connections (LRU: an evicted connection is judged
/// again on its next packet, by the same rules).
pub const IPCACHE_CAPACITY: u32 = 16_384;
pub const POLICY_CAPACITY: u32 = 65_536;
pub const POLICY_CT_CAPACITY: u32 = 65_536;

/// `Endpoint::flags`: a policy isolates the pod's ingress.
pub const ENDPOINT_INGRESS_ISOLATED: u32 = 1;
/// `Endpoint::flags`: a policy isolates the pod's egress.
pub const ENDPOINT_EGRESS_ISOLATED: u32 = 2;

/// `PolicyKey::identity` that matches every peer (a rule without `from`/`to`).
pub const IDENTITY_ANY: u32 = 0;
/// The identity of an address no `IPCACHE` prefix holds (never written: 0.0.0.0/0 is
/// always in the map, so this only shows a map not yet filled).
pub const IDENTITY_UNKNOWN: u32 = 1;

pub const DIRECTION_INGRESS: u8 = 0;
pub const DIRECTION_EGRESS: u8 = 1;

/// One allowed (peer identity, destination port, protocol, direction) of one endpoint.
/// `dst_port` 0 means every port of `protocol`; `protocol` 0 means every protocol (and
/// then `dst_port` is 0). The datapath looks up the exact key, then the port wildcard,
/// then the protocol wildcard, for the peer's identity and for [`IDENTITY_ANY`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    /// The local pod (map form address, as `ENDPOINTS`' key).
    pub endpoint: u32,
    pub identity: u32,
    /// Host order.
    pub dst_port: u16,
    pub protocol: u8,
    pub direction: u8,
}

const _: () = assert!(core::mem::size_of::<PolicyKey>() == 12);

#[cfg(feature = "user")]
// SAFETY: repr(C), no padding (4 + 4 + 2 + 1 + 1 = 12, asserted), every bit pattern valid.
unsafe impl aya::Pod for PolicyKey {}

/// The keys tried for a packet, most specific first.
#[inline(always)]
pub const fn lookup_keys(
    endpoint: u32,
    identity: u32,
    dst_port: u16,
    protocol: u8,
    direction: u8,
) -> [PolicyKey; 6] {
    const fn key(
        endpoint: u32,
        identity: u32,
        dst_port: u16,
        protocol: u8,
        direction: u8,
    ) -> PolicyKey {
        PolicyKey {
            endpoint,
            identity,
            dst_port,
            protocol,
            direction,
        }
    }
    [
        key(endpoint, identity, dst_port, protocol, direction),
        key(endpoint, identity, 0, protocol, direction),
        key(endpoint, identity, 0, 0, direction),
        key(endpoint, IDENTITY_ANY, dst_port, protocol, direction),
        key(endpoint, IDENTITY_ANY, 0, protocol, direction),
        key(endpoint, IDENTITY_ANY, 0, 0, direction),
    ]
}
