//! `inspect maps`: every pinned map of each node with its type, capacity, entries and
//! pressure, so a full `ROUTES` (or, later, `CONNTRACK`) shows before it bites.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use anyhow::{Context, Result};
use serde::Serialize;

use aks_ebpf_common::NSG_MAP;
use aya::maps::{MapData, MapType};

use super::{select_nodes, NodePins};
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
            // links (`from_pod_lxc0`, `nsg_eth0`), which are no maps.
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
    let data = MapData::from_pin(&path)
        .with_context(|| format!("opening pinned map {}", path.display()))?;
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
        ) => Some(
            count_keys(data.fd().as_fd(), info.key_size(), capacity)
                .with_context(|| format!("counting the entries of {}", path.display()))?,
        ),
        // NSG slots past the rule count are unused; CONFIG counts once written.
        Some(MapType::Array) if name == NSG_MAP => Some(pins.config()?.nsg_rules),
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

/// `BPF_MAP_GET_NEXT_KEY`, from `include/uapi/linux/bpf.h`.
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

/// The `bpf_attr` layout of the map element commands.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    next_key: u64,
    flags: u64,
}

/// The number of keys of a hash-like map, walked with `BPF_MAP_GET_NEXT_KEY` (works for
/// any key size, so maps added later are counted too). The walk stops after twice the
/// capacity: a map changing under the walk can restart it, and a count is all we want.
fn count_keys(fd: BorrowedFd<'_>, key_size: u32, capacity: u32) -> Result<u32> {
    let mut key = vec![0u8; key_size as usize];
    let mut next = vec![0u8; key_size as usize];
    let mut count = 0u32;
    let limit = capacity.saturating_mul(2);
    while count < limit {
        let attr = MapElemAttr {
            map_fd: fd.as_raw_fd() as u32,
            _pad: 0,
            // A null key asks for the first key.
            key: if count == 0 { 0 } else { key.as_ptr() as u64 },
            next_key: next.as_mut_ptr() as u64,
            flags: 0,
        };
        // SAFETY: `attr` points at two buffers of the map's key size that outlive the
        // call; the kernel reads `key` and writes `next_key`, nothing else.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_GET_NEXT_KEY,
                &attr as *const MapElemAttr,
                std::mem::size_of::<MapElemAttr>(),
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOENT) {
                break;
            }
            return Err(err).context("BPF_MAP_GET_NEXT_KEY");
        }
        count += 1;
        std::mem::swap(&mut key, &mut next);
    }
    Ok(count)
}
