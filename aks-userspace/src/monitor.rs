//! `aksnet monitor`: the datapath's verdicts as they happen, read from each node's
//! pinned `EVENTS` ring buffer. Drops are always there; other verdicts only while a
//! monitor has switched tracing on in the node's `MONITOR` map, which [`Monitor`] does
//! for as long as it lives when asked to trace, and undoes when dropped.
//!
//! A ring buffer has one reader position: two monitors on the same node share the
//! events between them rather than each seeing all of them.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use serde::Serialize;

use aks_ebpf_common::{
    DatapathEvent, Program, Reason, EVENTS_LOST_MAP, EVENTS_MAP, MONITOR_MAP, MONITOR_TRACE,
};
use aya::maps::{Array, Map, MapData, RingBuf};
use nix::time::ClockId;

use crate::inspect::{ip, protocol_name, select_nodes, FlowTuple, NodePins};
use crate::netns;
use crate::state::ClusterState;

/// Which events a monitor shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Dropped packets only (what the datapath always reports).
    Drop,
    /// Every verdict: forwards too (turns tracing on while the monitor runs).
    Trace,
}

/// One verdict, ready to print.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MonitorEvent {
    /// Wall-clock time of the verdict, nanoseconds since the Unix epoch.
    pub time_ns: u128,
    pub node: String,
    pub program: String,
    pub reason: String,
    pub drop: bool,
    /// What became of the packet: `dropped`, `to-pod`, `to-vnet`, `to-stack`,
    /// `to-overlay`, `forwarded`.
    pub verdict: &'static str,
    pub ifindex: u32,
    /// The interface name in the node namespace, when it still exists.
    pub interface: Option<String>,
    pub protocol: String,
    /// Addresses and ports (`src`, `dst`, `sport`, `dport` in the JSON).
    #[serde(flatten)]
    pub packet: FlowTuple,
    pub len: u32,
    /// A network policy drop: `default deny by shop/db-from-api`, naming the policies
    /// that isolate the pod (from the cluster's description).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

struct NodeEvents {
    node: String,
    namespace: String,
    ring: RingBuf<MapData>,
    /// Set when this monitor turned tracing on, to turn it off again.
    trace_switch: Option<Map>,
    /// The node's `EVENTS_LOST` and its total when last read.
    events_lost: Map,
    lost_seen: u64,
    interfaces: HashMap<u32, Option<String>>,
}

/// Open event streams of one or every node of a cluster.
pub struct Monitor {
    nodes: Vec<NodeEvents>,
    kind: EventKind,
    /// Wall clock minus the monotonic clock the kernel stamps events with.
    clock_offset_ns: i128,
    /// The cluster's plan, to name the policies behind a policy drop; `None` when its
    /// description cannot be read (the drops still show, unnamed).
    plan: Option<crate::plan::Plan>,
}

impl Monitor {
    /// Opens the `EVENTS` of `node` (every node when `None`); with `Trace`, switches
    /// tracing on in those nodes until the monitor is dropped.
    pub fn open(state: &ClusterState, node: Option<&str>, kind: EventKind) -> Result<Self> {
        let mut nodes = Vec::new();
        for layout in select_nodes(state, node)? {
            let pins = NodePins::open(state, layout)?;
            let ring = RingBuf::try_from(pins.map(EVENTS_MAP)?).with_context(|| {
                format!("{EVENTS_MAP} of node {} is no ring buffer", layout.name)
            })?;
            let trace_switch = match kind {
                EventKind::Trace => Some(set_tracing(pins.map(MONITOR_MAP)?, true, &layout.name)?),
                EventKind::Drop => None,
            };
            let events_lost = pins.map(EVENTS_LOST_MAP)?;
            let lost_seen = crate::datapath::ebpf::events_lost(&events_lost)?;
            nodes.push(NodeEvents {
                node: layout.name.clone(),
                namespace: layout.namespace.clone(),
                ring,
                trace_switch,
                events_lost,
                lost_seen,
                interfaces: HashMap::new(),
            });
        }
        Ok(Self {
            nodes,
            kind,
            clock_offset_ns: clock_ns(ClockId::CLOCK_REALTIME)?
                - clock_ns(ClockId::CLOCK_MONOTONIC)?,
            plan: ClusterState::load_description(&state.name)
                .ok()
                .and_then(|d| crate::model::validate(&d).ok())
                .and_then(|c| crate::plan::plan(&c).ok()),
        })
    }

    /// Every event that has arrived since the last call, node by node.
    pub fn poll(&mut self) -> Vec<MonitorEvent> {
        let mut events = Vec::new();
        for node in &mut self.nodes {
            let mut raw = Vec::new();
            while let Some(record) = node.ring.next() {
                if let Some(event) = DatapathEvent::from_bytes(&record) {
                    raw.push(event);
                }
            }
            for event in raw {
                let reason = Reason::from_index(event.reason);
                // Another monitor may have tracing on; a drop monitor shows drops only.
                if self.kind == EventKind::Drop && !reason.is_some_and(Reason::is_drop) {
                    continue;
                }
                let interface = node.interface(event.ifindex);
                events.push(MonitorEvent {
                    time_ns: u128::try_from(self.clock_offset_ns + i128::from(event.time_ns))
                        .unwrap_or_default(),
                    node: node.node.clone(),
                    program: Program::from_u8(event.program)
                        .map_or_else(|| event.program.to_string(), |p| p.name().to_owned()),
                    reason: reason
                        .map_or_else(|| event.reason.to_string(), |r| r.name().to_owned()),
                    drop: reason.is_some_and(Reason::is_drop),
                    verdict: reason.map_or("unknown", verdict),
                    ifindex: event.ifindex,
                    interface,
                    protocol: protocol_name(event.protocol),
                    packet: FlowTuple {
                        src: ip(event.src_addr),
                        dst: ip(event.dst_addr),
                        sport: has_ports(event.protocol).then_some(event.src_port),
                        dport: has_ports(event.protocol).then_some(event.dst_port),
                    },
                    len: event.len,
                    policy: self.plan.as_ref().and_then(|plan| {
                        policy_drop(plan, reason?, ip(event.src_addr), ip(event.dst_addr))
                    }),
                });
            }
        }
        events
    }
}

impl Monitor {
    /// Per node, the events lost since the last call (since `open` the first time): the
    /// ring buffer was full, so those verdicts will never be reported. Nodes that lost
    /// none are left out.
    pub fn newly_lost(&mut self) -> Result<Vec<(String, u64)>> {
        let mut lost = Vec::new();
        for node in &mut self.nodes {
            let total = crate::datapath::ebpf::events_lost(&node.events_lost)
                .with_context(|| format!("node {}", node.node))?;
            if total > node.lost_seen {
                lost.push((node.node.clone(), total - node.lost_seen));
            }
            node.lost_seen = node.lost_seen.max(total);
        }
        Ok(lost)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(switch) = node.trace_switch.take() {
                if let Err(err) = set_tracing(switch, false, &node.node) {
                    eprintln!("warning: {err:#}");
                }
            }
        }
    }
}

impl NodeEvents {
    /// The name of interface `ifindex` in the node namespace, looked up once.
    fn interface(&mut self, ifindex: u32) -> Option<String> {
        let namespace = &self.namespace;
        self.interfaces
            .entry(ifindex)
            .or_insert_with(|| interface_name(namespace, ifindex))
            .clone()
    }
}

fn interface_name(namespace: &str, ifindex: u32) -> Option<String> {
    netns::run_in(namespace, || {
        let name = nix::net::if_::if_indextoname(ifindex)
            .with_context(|| format!("no interface {ifindex}"))?;
        Ok(name.to_string_lossy().into_owned())
    })
    .ok()
}

/// Writes the `MONITOR` switch of a node and hands the map back.
fn set_tracing(mut map: Map, on: bool, node: &str) -> Result<Map> {
    {
        let mut switch: Array<&mut MapData, u32> = Array::try_from(&mut map)
            .with_context(|| format!("{MONITOR_MAP} of node {node} is no array"))?;
        switch
            .set(0, if on { MONITOR_TRACE } else { 0 }, 0)
            .with_context(|| {
                format!(
                    "turning tracing {} in {MONITOR_MAP} of node {node}",
                    if on { "on" } else { "off" }
                )
            })?;
    }
    Ok(map)
}

/// `default deny by <policies>` for a policy drop: the source pod's egress policies or
/// the destination pod's ingress policies.
fn policy_drop(
    plan: &crate::plan::Plan,
    reason: Reason,
    src: Ipv4Addr,
    dst: Ipv4Addr,
) -> Option<String> {
    use crate::model::policy::PolicyType;
    let names = match reason {
        Reason::DropPolicyEgress => crate::policy::isolating_names(plan, src, PolicyType::Egress),
        Reason::DropPolicyIngress => crate::policy::isolating_names(plan, dst, PolicyType::Ingress),
        _ => return None,
    };
    Some(format!("default deny by {}", names.join(", ")))
}

/// What a reason means for the packet.
fn verdict(reason: Reason) -> &'static str {
    match reason {
        Reason::RedirectedPeer | Reason::RedirectedPeerRevSnat => "to-pod",
        Reason::RedirectedUplink | Reason::RedirectedUplinkSnat => "to-vnet",
        Reason::PassedToStack | Reason::PassedNonIpv4 => "to-stack",
        Reason::ToOverlay => "to-overlay",
        // Reasons added later read by their kind until named here.
        other if other.is_drop() => "dropped",
        _ => "forwarded",
    }
}

fn has_ports(protocol: u8) -> bool {
    matches!(protocol, 6 | 17)
}

fn clock_ns(clock: ClockId) -> Result<i128> {
    let now = nix::time::clock_gettime(clock).context("clock_gettime")?;
    Ok(i128::from(now.tv_sec()) * 1_000_000_000 + i128::from(now.tv_nsec()))
}

/// `HH:MM:SS.micros` (UTC) of a time in nanoseconds since the epoch.
pub fn clock_time(time_ns: u128) -> String {
    let micros = time_ns / 1_000;
    let secs_of_day = (micros / 1_000_000) % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60,
        micros % 1_000_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_utc_clock_time() {
        // 2024-01-02 03:04:05.678901 UTC.
        let ns = 1_704_164_645_678_901_000u128;
        assert_eq!(clock_time(ns), "03:04:05.678901");
    }

    #[test]
    fn every_drop_reads_as_dropped() {
        for reason in Reason::ALL {
            assert_eq!(verdict(reason) == "dropped", reason.is_drop(), "{reason:?}");
        }
    }
}
