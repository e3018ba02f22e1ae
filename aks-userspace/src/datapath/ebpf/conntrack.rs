//! Garbage collection of the masqueraded flows: a flow idle for longer than its state's
//! timeout loses its conntrack entry and both NAT mappings, freeing its port.

use aks_ebpf_common::conntrack::CtTimeout;
use aks_ebpf_common::lb::{LbFlow, LbReply, LB_FLOWS_MAP, LB_REPLIES_MAP};
use aks_ebpf_common::{CtEntry, FlowKey, NatTarget, CONNTRACK_MAP, NAT_MAP};
use anyhow::{Context, Result};
use aya::maps::{HashMap, MapData};
use serde::Serialize;

use super::NodeDatapath;

/// Idle timeouts per flow state, in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub tcp_established_ns: u64,
    pub tcp_closing_ns: u64,
    pub datagram_ns: u64,
}

impl Timeouts {
    fn for_class(&self, class: CtTimeout) -> u64 {
        match class {
            CtTimeout::TcpEstablished => self.tcp_established_ns,
            CtTimeout::TcpClosing => self.tcp_closing_ns,
            CtTimeout::Datagram => self.datagram_ns,
        }
    }
}

/// What one GC pass over a node found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    pub expired: usize,
    /// Load-balanced (ClusterIP) flows expired and left.
    pub service_flows_expired: usize,
    pub service_flows: usize,
    /// Flows left, and the map's capacity (pressure = flows / capacity).
    pub flows: usize,
    pub capacity: u32,
    pub nat_entries: usize,
}

impl GcReport {
    pub fn pressure_percent(&self) -> f64 {
        if self.capacity == 0 {
            return 0.0;
        }
        self.flows as f64 * 100.0 / f64::from(self.capacity)
    }
}

/// The clock `bpf_ktime_get_ns` reads (CLOCK_MONOTONIC), in nanoseconds.
pub fn monotonic_now_ns() -> u64 {
    // CLOCK_MONOTONIC exists on every Linux; the call can only fail on a bad clock id.
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    (ts.tv_sec() as u64) * 1_000_000_000 + ts.tv_nsec() as u64
}

impl NodeDatapath {
    /// Removes every flow idle for longer than its timeout at `now_ns`.
    pub fn collect_garbage(&mut self, timeouts: &Timeouts, now_ns: u64) -> Result<GcReport> {
        let (expired, flows, capacity) = {
            let map = self.map(CONNTRACK_MAP)?;
            let capacity = map_capacity(map)?;
            let conntrack: HashMap<&MapData, FlowKey, CtEntry> = HashMap::try_from(map)?;
            let mut expired = Vec::new();
            let mut flows = 0;
            for item in conntrack.iter() {
                let (flow, entry) = item.context("reading CONNTRACK")?;
                let idle = now_ns.saturating_sub(entry.last_seen_ns);
                if idle > timeouts.for_class(entry.timeout_class(flow.protocol)) {
                    expired.push((flow, entry));
                } else {
                    flows += 1;
                }
            }
            (expired, flows, capacity)
        };
        {
            let mut nat: HashMap<_, FlowKey, NatTarget> =
                HashMap::try_from(self.map_mut(NAT_MAP)?)?;
            for (flow, entry) in &expired {
                // Mappings may already be gone; removing is all that matters.
                let _ = nat.remove(flow);
                let _ = nat.remove(&flow.reply_after_snat(entry.nat_addr, entry.nat_port));
            }
        }
        let mut conntrack: HashMap<_, FlowKey, CtEntry> =
            HashMap::try_from(self.map_mut(CONNTRACK_MAP)?)?;
        for (flow, _) in &expired {
            let _ = conntrack.remove(flow);
        }
        let nat: HashMap<_, FlowKey, NatTarget> = HashMap::try_from(self.map(NAT_MAP)?)?;
        let nat_entries = nat.keys().filter(Result::is_ok).count();
        let (service_flows_expired, service_flows) =
            self.collect_service_flows(timeouts, now_ns)?;
        Ok(GcReport {
            expired: expired.len(),
            service_flows_expired,
            service_flows,
            flows,
            capacity,
            nat_entries,
        })
    }

    /// Expires idle load-balanced flows with their reply keys; returns (expired, left).
    fn collect_service_flows(
        &mut self,
        timeouts: &Timeouts,
        now_ns: u64,
    ) -> Result<(usize, usize)> {
        let (expired, left) = {
            let flows: HashMap<_, FlowKey, LbFlow> = HashMap::try_from(self.map(LB_FLOWS_MAP)?)?;
            let mut expired = Vec::new();
            let mut left = 0;
            for item in flows.iter() {
                let (flow, entry) = item.context("reading LB_FLOWS")?;
                let idle = now_ns.saturating_sub(entry.last_seen_ns);
                if idle > timeouts.for_class(entry.timeout_class(flow.protocol)) {
                    expired.push((flow, entry));
                } else {
                    left += 1;
                }
            }
            (expired, left)
        };
        {
            let mut replies: HashMap<_, FlowKey, LbReply> =
                HashMap::try_from(self.map_mut(LB_REPLIES_MAP)?)?;
            for (flow, entry) in &expired {
                let _ = replies.remove(&entry.reply_key(flow));
            }
        }
        let mut flows: HashMap<_, FlowKey, LbFlow> =
            HashMap::try_from(self.map_mut(LB_FLOWS_MAP)?)?;
        for (flow, _) in &expired {
            let _ = flows.remove(flow);
        }
        Ok((expired.len(), left))
    }

    /// Every masqueraded flow with its state (for tests and inspection).
    pub fn flows(&self) -> Result<Vec<(FlowKey, CtEntry)>> {
        let conntrack: HashMap<_, FlowKey, CtEntry> = HashMap::try_from(self.map(CONNTRACK_MAP)?)?;
        conntrack
            .iter()
            .map(|item| item.context("reading CONNTRACK"))
            .collect()
    }
}

fn map_capacity(map: &aya::maps::Map) -> Result<u32> {
    let data = match map {
        aya::maps::Map::HashMap(data) => data,
        _ => anyhow::bail!("CONNTRACK is not a hash map"),
    };
    Ok(data
        .info()
        .context("reading CONNTRACK's info")?
        .max_entries())
}

/// The masqueraded flows of a node from its pinned `CONNTRACK` (another process's
/// datapath), e.g. `/sys/fs/bpf/aksnet/<cluster>/<node>/CONNTRACK`.
pub fn read_pinned_flows(path: &std::path::Path) -> Result<Vec<(FlowKey, CtEntry)>> {
    let map = aya::maps::Map::HashMap(super::open_pinned(path)?);
    let conntrack: HashMap<&MapData, FlowKey, CtEntry> = HashMap::try_from(&map)?;
    conntrack
        .iter()
        .map(|item| item.context("reading CONNTRACK"))
        .collect()
}
