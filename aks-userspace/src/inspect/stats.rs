//! `inspect stats`: the `STATS` counters of each node by reason name, and their total.

use anyhow::Result;
use serde::Serialize;

use aks_ebpf_common::{Reason, EVENTS_LOST_MAP, STATS_MAP};

use super::{select_nodes, NodePins};
use crate::datapath::ebpf::read_pinned;
use crate::state::ClusterState;

/// The packets and bytes counted under one reason on one node (summed over CPUs), or
/// over every listed node when `node` is `total`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsRow {
    pub node: String,
    pub reason: &'static str,
    pub drop: bool,
    pub packets: u64,
    pub bytes: u64,
}

/// The node name of the rows that sum every node.
pub const TOTAL: &str = "total";

/// Every reason of `node` (every node when `None`) in map order, then the totals per
/// reason when more than one node is listed. `keep` chooses the reasons to show.
pub fn stats(
    state: &ClusterState,
    node: Option<&str>,
    keep: impl Fn(Reason) -> bool,
) -> Result<Vec<StatsRow>> {
    let nodes = select_nodes(state, node)?;
    let mut rows = Vec::new();
    let mut totals: Vec<StatsRow> = Vec::new();
    for layout in &nodes {
        let pins = NodePins::open(state, layout)?;
        let counters = read_pinned(&pins.dir.join(STATS_MAP))?;
        for (reason, counter) in counters.iter().filter(|(r, _)| keep(*r)) {
            rows.push(StatsRow {
                node: layout.name.clone(),
                reason: reason.name(),
                drop: reason.is_drop(),
                packets: counter.packets,
                bytes: counter.bytes,
            });
            match totals.iter_mut().find(|t| t.reason == reason.name()) {
                Some(total) => {
                    total.packets += counter.packets;
                    total.bytes += counter.bytes;
                }
                None => totals.push(StatsRow {
                    node: TOTAL.to_owned(),
                    ..rows[rows.len() - 1].clone()
                }),
            }
        }
    }
    if nodes.len() > 1 {
        rows.extend(totals);
    }
    Ok(rows)
}

/// Monitor events a node's datapath could not report because its `EVENTS` ring buffer
/// was full (a monitor fell behind; the packets themselves are in the reason rows).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsLostRow {
    pub node: String,
    pub monitor_events_lost: u64,
}

/// `EVENTS_LOST` of `node` (every node when `None`), one row per node.
pub fn events_lost(state: &ClusterState, node: Option<&str>) -> Result<Vec<EventsLostRow>> {
    select_nodes(state, node)?
        .into_iter()
        .map(|layout| {
            let pins = NodePins::open(state, layout)?;
            Ok(EventsLostRow {
                node: layout.name.clone(),
                monitor_events_lost: crate::datapath::ebpf::events_lost(
                    &pins.map(EVENTS_LOST_MAP)?,
                )?,
            })
        })
        .collect()
}

/// A line of `inspect stats`: a reason's counters, or a node's lost monitor events
/// (listed after the reasons; JSON tells them apart by their fields).
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum StatsLine {
    Reason(StatsRow),
    EventsLost(EventsLostRow),
}

/// The reason named `name`, or an error listing the names there are.
pub fn reason_by_name(name: &str) -> Result<Reason> {
    Reason::ALL
        .into_iter()
        .find(|r| r.name() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = Reason::ALL.iter().map(|r| r.name()).collect();
            anyhow::anyhow!("no reason {name:?}; the reasons are: {}", names.join(", "))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_found_by_their_printed_name() {
        assert_eq!(
            reason_by_name("drop-spoofed-source").ok(),
            Some(Reason::DropSpoofedSource)
        );
        let err = reason_by_name("dropped")
            .expect_err("no such reason")
            .to_string();
        assert!(err.contains("redirected-peer"), "{err}");
    }
}
