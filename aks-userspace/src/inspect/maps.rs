//! `inspect maps`: every pinned map of each node with its type, capacity, entries and
//! pressure, so a full `ROUTES` (or, later, `CONNTRACK`) shows before it bites.

use anyhow::{Context, Result};
use serde::Serialize;

use aks_ebpf_common::lb::{
    LbBackend, LbFlow, LbReply, RevNat, ServiceKey, ServiceSlot, BACKENDS_MAP, LB_FLOWS_MAP,
    LB_REPLIES_MAP, REV_NAT_MAP, SERVICES_MAP,
};
use aks_ebpf_common::nodeport::{
    NodePortFlow, NodePortKey, NodePortReply, NodePortSlot, NODEPORTS_MAP, NODEPORT_FLOWS_MAP,
    NODEPORT_REPLIES_MAP,
};
use aks_ebpf_common::policy::{PolicyKey, IPCACHE_MAP, POLICY_CT_MAP, POLICY_MAP};
use aks_ebpf_common::{
    CtEntry, Endpoint, FlowKey, NatTarget, Route, CONNTRACK_MAP, ENDPOINTS_MAP, NAT_MAP, ROUTES_MAP,
};
use aya::maps::{HashMap, LpmTrie, Map, MapData, MapError, MapType};
use aya::Pod;

use super::{select_nodes, NodePins};
use crate::datapath::ebpf::open_pinned;
use crate::state::ClusterState;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MapRow {
    pub node: String,
    pub name: String,
    /// The kernel's map type (`hash`, `lpm-trie`, `percpu-array`, `ringbuf`, …).
    pub map_type: String,
    pub key_size: u32,
    pub value_size: u32,
    /// `max_entries`: slots, or bytes for a ring buffer.
    pub capacity: u32,
    /// Entries in use; `None` where the question has no answer (ring buffers).
    pub entries: Option<u32>,
    /// `entries / capacity` in percent.
    pub pressure_percent: Option<f64>,
}

/// The maps of `node` (every node when `None`) in name order.
pub fn maps(state: &ClusterState, node: Option<&str>) -> Result<Vec<MapRow>> {
    let mut rows = Vec::new();
    for layout in select_nodes(state, node)? {
        let pins = NodePins::open(state, layout)?;
        let mut names: Vec<String> = std::fs::read_dir(&pins.dir)
            .with_context(|| format!("listing {}", pins.dir.display()))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            // Maps carry their upper-case names from the object; the other pins are
            // links (`from_pod_lxc0`, `from_vnet_eth0`), which are no maps.
            .filter(|name| name.starts_with(|c: char| c.is_ascii_uppercase()))
            .collect();
        names.sort();
        for name in names {
            rows.push(row(&pins, &name)?);
        }
    }
    Ok(rows)
}

fn row(pins: &NodePins<'_>, name: &str) -> Result<MapRow> {
    let path = pins.dir.join(name);
    let data = open_pinned(&path)?;
    let info = data
        .info()
        .with_context(|| format!("reading the kernel's info on {}", path.display()))?;
    let map_type = info.map_type().ok();
    let capacity = info.max_entries();
    let entries = match map_type {
        Some(
            MapType::Hash
            | MapType::LruHash
            | MapType::PerCpuHash
            | MapType::LruPerCpuHash
            | MapType::LpmTrie,
        ) => count_keys(name, data, capacity)
            .with_context(|| format!("counting the entries of {}", path.display()))?,
        // Arrays are preallocated: every slot exists (and is in use) from the start.
        Some(MapType::Array | MapType::PerCpuArray) => Some(capacity),
        _ => None,
    };
    Ok(MapRow {
        node: pins.node.name.clone(),
        name: name.to_owned(),
        map_type: map_type.map_or_else(|| "unknown".to_owned(), type_name),
        key_size: info.key_size(),
        value_size: info.value_size(),
        capacity,
        entries,
        pressure_percent: entries
            .filter(|_| capacity > 0)
            .map(|n| f64::from(n) * 100.0 / f64::from(capacity)),
    })
}

/// The kernel's name of a map type (as `bpftool` prints it).
fn type_name(map_type: MapType) -> String {
    match map_type {
        MapType::Hash => "hash".to_owned(),
        MapType::Array => "array".to_owned(),
        MapType::PerCpuArray => "percpu_array".to_owned(),
        MapType::PerCpuHash => "percpu_hash".to_owned(),
        MapType::LruHash => "lru_hash".to_owned(),
        MapType::LruPerCpuHash => "lru_percpu_hash".to_owned(),
        MapType::LpmTrie => "lpm_trie".to_owned(),
        MapType::RingBuf => "ringbuf".to_owned(),
        MapType::PerfEventArray => "perf_event_array".to_owned(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The entries of a hash-like map, counted with aya's typed key iteration, for the maps
/// this datapath pins (`None` for a map this build does not know the types of). The walk
/// stops after twice the capacity: a map changing under the walk can restart it, and a
/// count is all we want.
fn count_keys(name: &str, data: MapData, capacity: u32) -> Result<Option<u32>> {
    fn hash<K: Pod, V: Pod>(map: Map, limit: usize) -> Result<u32> {
        let map: HashMap<MapData, K, V> = HashMap::try_from(map)?;
        count(map.keys().take(limit))
    }
    fn count<K>(keys: impl Iterator<Item = Result<K, MapError>>) -> Result<u32> {
        let mut n = 0;
        for key in keys {
            key?;
            n += 1;
        }
        Ok(n)
    }
    let map = Map::from_map_data(data)?;
    let limit = capacity.saturating_mul(2) as usize;
    Ok(Some(match name {
        ENDPOINTS_MAP => hash::<u32, Endpoint>(map, limit)?,
        CONNTRACK_MAP => hash::<FlowKey, CtEntry>(map, limit)?,
        NAT_MAP => hash::<FlowKey, NatTarget>(map, limit)?,
        SERVICES_MAP => hash::<ServiceKey, ServiceSlot>(map, limit)?,
        BACKENDS_MAP => hash::<u64, LbBackend>(map, limit)?,
        REV_NAT_MAP => hash::<u32, RevNat>(map, limit)?,
        LB_FLOWS_MAP => hash::<FlowKey, LbFlow>(map, limit)?,
        LB_REPLIES_MAP => hash::<FlowKey, LbReply>(map, limit)?,
        NODEPORTS_MAP => hash::<NodePortKey, NodePortSlot>(map, limit)?,
        NODEPORT_FLOWS_MAP => hash::<FlowKey, NodePortFlow>(map, limit)?,
        NODEPORT_REPLIES_MAP => hash::<FlowKey, NodePortReply>(map, limit)?,
        ROUTES_MAP => {
            let trie: LpmTrie<MapData, u32, Route> = LpmTrie::try_from(map)?;
            count(trie.keys().take(limit))?
        }
        IPCACHE_MAP => {
            let trie: LpmTrie<MapData, u32, u32> = LpmTrie::try_from(map)?;
            count(trie.keys().take(limit))?
        }
        POLICY_MAP => hash::<PolicyKey, u32>(map, limit)?,
        POLICY_CT_MAP => {
            let lru: HashMap<MapData, FlowKey, u32> = HashMap::try_from(map)?;
            count(lru.keys().take(limit))?
        }
        // Declared by the object every node loads, filled only in the vnet namespace's
        // (`fabric::forwarder`): empty on a node.
        aks_ebpf_common::FABRIC_ROUTES_MAP => {
            let trie: LpmTrie<MapData, u32, aks_ebpf_common::FabricHop> = LpmTrie::try_from(map)?;
            count(trie.keys().take(limit))?
        }
        _ => return Ok(None),
    }))
}
