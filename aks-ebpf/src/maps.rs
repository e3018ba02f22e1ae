//! The maps the programs read, declared once (BTF maps, so `bpftool` shows their fields).
//! Userspace fills them from the plan; their layouts live in aks-ebpf-common.

use aks_ebpf_common::{
    conntrack::{nat_capacity, CONNTRACK_DEFAULT_CAPACITY},
    lb::{
        LbBackend, LbFlow, LbReply, RevNat, ServiceKey, ServiceSlot, BACKENDS_CAPACITY,
        LB_FLOWS_CAPACITY, REV_NAT_CAPACITY, SERVICES_CAPACITY,
    },
    nodeport::{
        NodePortFlow, NodePortKey, NodePortReply, NodePortSlot, NODEPORTS_CAPACITY,
        NODEPORT_FLOWS_CAPACITY,
    },
    CtEntry, Endpoint, FabricHop, FlowKey, NatTarget, NodeConfig, Route, ENDPOINTS_CAPACITY,
    FABRIC_ROUTES_CAPACITY, ROUTES_CAPACITY,
};
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    btf_maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap},
    macros::btf_map,
};

#[btf_map]
static CONFIG: Array<NodeConfig, 1> = Array::new();

#[btf_map]
static ENDPOINTS: HashMap<u32, Endpoint, { ENDPOINTS_CAPACITY as usize }> = HashMap::new();

#[btf_map]
static ROUTES: LpmTrie<u32, Route, { ROUTES_CAPACITY as usize }> = LpmTrie::new();

/// The VNet's route table for the fabric forwarder (vnet namespace only).
#[btf_map]
static FABRIC_ROUTES: LpmTrie<u32, FabricHop, { FABRIC_ROUTES_CAPACITY as usize }> = LpmTrie::new();

/// This node's configuration, once userspace has written it.
#[inline(always)]
pub fn config() -> Option<&'static NodeConfig> {
    CONFIG.get(0).filter(|c| c.ready != 0)
}

/// The local pod holding `addr` (map form), if any.
#[inline(always)]
pub fn endpoint(addr: u32) -> Option<Endpoint> {
    // SAFETY: the value is copied out at once; hash values may be replaced concurrently.
    unsafe { ENDPOINTS.get(addr).copied() }
}

/// The most specific route to `addr` (map form), if any.
#[inline(always)]
pub fn route(addr: u32) -> Option<Route> {
    ROUTES.get(&Key::new(32, addr)).copied()
}

/// The node link behind which the VNet routes `addr` (map form), if any.
#[inline(always)]
pub fn fabric_route(addr: u32) -> Option<FabricHop> {
    FABRIC_ROUTES.get(&Key::new(32, addr)).copied()
}

/// Masqueraded flows: state and timestamps (see aks-ebpf-common's `conntrack`). Not
/// preallocated: memory follows the flows, and `aksnet up` sets the capacity.
#[btf_map]
pub static CONNTRACK: HashMap<
    FlowKey,
    CtEntry,
    { CONNTRACK_DEFAULT_CAPACITY as usize },
    { BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// SNAT mappings, egress and reply, two per flow.
#[btf_map]
pub static NAT: HashMap<
    FlowKey,
    NatTarget,
    { nat_capacity(CONNTRACK_DEFAULT_CAPACITY) as usize },
    { BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// ClusterIP frontends and their backend slots (see aks-ebpf-common's `lb`).
#[btf_map]
pub static SERVICES: HashMap<ServiceKey, ServiceSlot, { SERVICES_CAPACITY as usize }> =
    HashMap::new();

#[btf_map]
pub static BACKENDS: HashMap<u64, LbBackend, { BACKENDS_CAPACITY as usize }> = HashMap::new();

#[btf_map]
pub static REV_NAT: HashMap<u32, RevNat, { REV_NAT_CAPACITY as usize }> = HashMap::new();

/// The backend each load-balanced flow was given.
#[btf_map]
pub static LB_FLOWS: HashMap<
    FlowKey,
    LbFlow,
    { LB_FLOWS_CAPACITY as usize },
    { BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// The frontend a backend's replies are translated back to.
#[btf_map]
pub static LB_REPLIES: HashMap<
    FlowKey,
    LbReply,
    { LB_FLOWS_CAPACITY as usize },
    { BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// Node ports and their backend slots (see aks-ebpf-common's `nodeport`).
#[btf_map]
pub static NODEPORTS: HashMap<NodePortKey, NodePortSlot, { NODEPORTS_CAPACITY as usize }> =
    HashMap::new();

/// The backend (and SNAT port) each flow from outside to a node port was given.
#[btf_map]
pub static NODEPORT_FLOWS: LruHashMap<FlowKey, NodePortFlow, { NODEPORT_FLOWS_CAPACITY as usize }> =
    LruHashMap::new();

/// Where a backend's reply to a node port flow goes back to.
#[btf_map]
pub static NODEPORT_REPLIES: LruHashMap<
    FlowKey,
    NodePortReply,
    { NODEPORT_FLOWS_CAPACITY as usize },
> = LruHashMap::new();
