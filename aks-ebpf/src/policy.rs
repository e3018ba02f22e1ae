//! Network policy at the pod's edge, Cilium style: the peer's address resolves to an
//! identity (`IPCACHE`, longest prefix), and the local endpoint's `POLICY` keys say which
//! identities, ports and protocols it allows per direction. Egress is judged in
//! `from_pod` for the sending pod, ingress before delivery into the receiving pod (local
//! redirect and `from_vnet`). A connection policy allowed is remembered in `POLICY_CT`,
//! so its later packets and its replies pass without lookups.

use aks_ebpf_common::{
    policy::{
        PolicyKey, DIRECTION_EGRESS, DIRECTION_INGRESS, ENDPOINT_EGRESS_ISOLATED,
        ENDPOINT_INGRESS_ISOLATED, IDENTITY_ANY, IDENTITY_UNKNOWN, IPCACHE_CAPACITY,
        POLICY_CAPACITY, POLICY_CT_CAPACITY,
    },
    FlowKey, Reason,
};
use aya_ebpf::{
    btf_maps::{lpm_trie::Key, HashMap, LpmTrie, LruHashMap},
    macros::btf_map,
};

use crate::packet::{Ipv4Frame, Transport};

/// Address prefix (map form) → identity.
#[btf_map]
static IPCACHE: LpmTrie<u32, u32, { IPCACHE_CAPACITY as usize }> = LpmTrie::new();

/// Allowed (endpoint, identity, port, protocol, direction); the value is unused (1).
#[btf_map]
static POLICY: HashMap<PolicyKey, u32, { POLICY_CAPACITY as usize }> = HashMap::new();

/// Connections policy allowed, by the tuple of their first packet.
#[btf_map]
static POLICY_CT: LruHashMap<FlowKey, u32, { POLICY_CT_CAPACITY as usize }> = LruHashMap::new();

/// Judges the packet `ip` (transport header `l4`) from a local pod whose `ENDPOINTS`
/// flags are `source` to a local pod with flags `destination` (0 for a side that is not a
/// local pod, or that no policy selects). Ports count only for TCP and UDP (ICMP echo
/// identifiers are not ports to policy). `Err` carries the drop reason.
#[inline(always)]
pub fn enforce_packet(
    ip: &Ipv4Frame,
    l4: Option<&Transport>,
    source: u32,
    destination: u32,
) -> Result<(), Reason> {
    use aks_ebpf_common::conntrack::{PROTO_TCP, PROTO_UDP};
    let protocol = ip.protocol();
    let ports = match l4 {
        Some(l4) if matches!(protocol, PROTO_TCP | PROTO_UDP) => {
            (u32::from(l4.src_port) << 16) | u32::from(l4.dst_port)
        }
        _ => 0,
    };
    enforce(
        ip.src(),
        ip.dst(),
        ports,
        protocol,
        flags(source, destination),
    )
}

/// Both sides' flags in one argument (BPF calls take five).
#[inline(always)]
pub fn flags(source: u32, destination: u32) -> u32 {
    (source & 0xff) | ((destination & 0xff) << 8)
}

/// The connection `src`:`ports >> 16` → `dst`:`ports & 0xffff` over `protocol`, with
/// [`flags`]. Scalars, not a `FlowKey` on the caller's stack, and not inlined: one frame
/// for its keys instead of one per call site in `from_pod`, which keeps the combined stack
/// under 6.1's 512 bytes (a local function, so any kernel accepts the call).
#[inline(never)]
pub fn enforce(src: u32, dst: u32, ports: u32, protocol: u8, flags: u32) -> Result<(), Reason> {
    let source = flags & 0xff;
    let destination = (flags >> 8) & 0xff;
    // A pod no policy selects needs nothing; one isolated in either direction has its
    // connections remembered, so replies to it pass its isolated side.
    if source == 0 && destination == 0 {
        return Ok(());
    }
    let flow = FlowKey::new(src, dst, (ports >> 16) as u16, ports as u16, protocol);
    if established(&flow) {
        return Ok(());
    }
    if source & ENDPOINT_EGRESS_ISOLATED != 0
        && !allowed(flow.src, identity(flow.dst), &flow, DIRECTION_EGRESS)
    {
        return Err(Reason::DropPolicyEgress);
    }
    if destination & ENDPOINT_INGRESS_ISOLATED != 0
        && !allowed(flow.dst, identity(flow.src), &flow, DIRECTION_INGRESS)
    {
        return Err(Reason::DropPolicyIngress);
    }
    // Best effort: an LRU insert only fails on memory pressure, and then the next packet
    // is judged again by the same rules.
    let _ = POLICY_CT.insert(flow, 1, 0);
    Ok(())
}

#[inline(always)]
fn established(flow: &FlowKey) -> bool {
    let reply = FlowKey::new(
        flow.dst,
        flow.src,
        flow.dst_port,
        flow.src_port,
        flow.protocol,
    );
    POLICY_CT.get_ptr(flow).is_some() || POLICY_CT.get_ptr(reply).is_some()
}

#[inline(always)]
fn identity(addr: u32) -> u32 {
    match IPCACHE.get(&Key::new(32, addr)) {
        Some(identity) => *identity,
        None => IDENTITY_UNKNOWN,
    }
}

#[inline(always)]
fn allowed(endpoint: u32, identity: u32, flow: &FlowKey, direction: u8) -> bool {
    // The keys of `lookup_keys`, built one at a time (an array of all six would sit on
    // the stack).
    let mut i = 0;
    while i < 6 {
        let key = PolicyKey {
            endpoint,
            identity: if i < 3 { identity } else { IDENTITY_ANY },
            dst_port: if i % 3 == 0 { flow.dst_port } else { 0 },
            protocol: if i % 3 == 2 { 0 } else { flow.protocol },
            direction,
        };
        if POLICY.get_ptr(key).is_some() {
            return true;
        }
        i += 1;
    }
    false
}
