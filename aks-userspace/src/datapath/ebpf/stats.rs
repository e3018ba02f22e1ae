//! Reading the per-CPU `STATS` map into totals per reason.

use aks_ebpf_common::{Reason, ReasonCounter, STATS_MAP};
use anyhow::{Context, Result};
use aya::maps::{MapData, PerCpuArray};

/// Packets and bytes per [`Reason`], summed over CPUs, in `Reason::ALL` order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReasonTotals(Vec<(Reason, ReasonCounter)>);

impl ReasonTotals {
    /// Sums every CPU's slot of every reason.
    pub fn read(map: &PerCpuArray<&MapData, ReasonCounter>) -> Result<Self> {
        let mut totals = Vec::with_capacity(Reason::ALL.len());
        for reason in Reason::ALL {
            let per_cpu = map.get(&reason.index(), 0).with_context(|| {
                format!(
                    "reading {STATS_MAP}[{}] ({})",
                    reason.index(),
                    reason.name()
                )
            })?;
            let mut total = ReasonCounter::default();
            for slot in per_cpu.iter() {
                total.add(slot);
            }
            totals.push((reason, total));
        }
        Ok(Self(totals))
    }

    /// The total for one reason.
    pub fn get(&self, reason: Reason) -> ReasonCounter {
        self.0
            .iter()
            .find(|(r, _)| *r == reason)
            .map(|(_, c)| *c)
            .unwrap_or_default()
    }

    /// Every reason with its total, in map order.
    pub fn iter(&self) -> impl Iterator<Item = &(Reason, ReasonCounter)> {
        self.0.iter()
    }
}

/// The counters of a node from its pinned `STATS` (another process's datapath), e.g.
/// `/sys/fs/bpf/aksnet/<cluster>/<node>/STATS`.
pub fn read_pinned(path: &std::path::Path) -> Result<ReasonTotals> {
    let map = aya::maps::Map::PerCpuArray(super::open_pinned(path)?);
    let stats: PerCpuArray<&MapData, ReasonCounter> = PerCpuArray::try_from(&map)?;
    ReasonTotals::read(&stats)
}

impl super::NodeDatapath {
    /// Monitor events the datapath could not hand to the `EVENTS` ring buffer because it
    /// was full (the monitor fell behind), summed over CPUs.
    pub fn monitor_events_lost(&self) -> Result<u64> {
        use aks_ebpf_common::EVENTS_LOST_MAP;
        let lost: PerCpuArray<_, u64> = PerCpuArray::try_from(self.map(EVENTS_LOST_MAP)?)?;
        let per_cpu = lost
            .get(&0, 0)
            .with_context(|| format!("reading {EVENTS_LOST_MAP}[0]"))?;
        Ok(per_cpu.iter().sum())
    }
}
