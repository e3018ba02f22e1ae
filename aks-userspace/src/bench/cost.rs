//! What a workload costs the machine, measured around it:
//!
//! - CPU time of this process and its reaped children (the iperf3 pair): the workload's
//!   client and server threads, and, because this kernel has no separate IRQ time
//!   accounting (`CONFIG_IRQ_TIME_ACCOUNTING` off), the softirq work of the veths and
//!   the datapath that runs in their context. Whole-machine `/proc/stat` would also count
//!   whatever else the (shared) machine does meanwhile.
//! - The BPF programs' own run time and run count, from the kernel's per-program
//!   statistics. They are counted only while enabled: [`BpfStatistics`] enables them
//!   with `BPF_ENABLE_STATS`, which the kernel keeps on only while the returned file
//!   descriptor is open, so `kernel.bpf_stats_enabled` returns to its previous value when
//!   the benchmark ends, errs, is interrupted or killed.

use std::os::fd::OwnedFd;
use std::time::Duration;

use anyhow::{Context, Result};
use aya::maps::MapInfo;
use aya::programs::loaded_programs;
use nix::sys::resource::{getrusage, UsageWho};

use crate::state::ClusterState;

/// CPU seconds (user + system) this process and its reaped children used so far.
pub fn process_cpu_seconds() -> Result<f64> {
    let mut total = 0.0;
    for who in [UsageWho::RUSAGE_SELF, UsageWho::RUSAGE_CHILDREN] {
        let usage = getrusage(who).context("reading this process's CPU usage")?;
        for t in [usage.user_time(), usage.system_time()] {
            total += t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        }
    }
    Ok(total)
}

/// The kernel's BPF run-time statistics, on while this value lives.
pub struct BpfStatistics {
    _enabled: OwnedFd,
}

impl BpfStatistics {
    pub fn enable() -> Result<Self> {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .context("enabling BPF run-time statistics (BPF_ENABLE_STATS, kernel ≥ 5.8)")?;
        Ok(Self { _enabled: fd })
    }
}

/// The BPF programs of one cluster: those using its nodes' pinned `STATS` maps (every
/// program of the object counts its verdicts there).
#[derive(Clone, Debug, Default)]
pub struct ClusterPrograms {
    ids: Vec<u32>,
}

/// Run time and runs of some programs, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BpfRuns {
    pub run_time: Duration,
    pub runs: u64,
}

impl ClusterPrograms {
    pub fn of(cluster: &str, nodes: &[String]) -> Result<Self> {
        let pin_dir = ClusterState::pin_dir(cluster);
        let mut stats_maps = Vec::new();
        for node in nodes {
            let path = pin_dir.join(node).join(aks_ebpf_common::STATS_MAP);
            let info = MapInfo::from_pin(&path)
                .with_context(|| format!("opening the pinned map {}", path.display()))?;
            stats_maps.push(info.id());
        }
        let mut ids = Vec::new();
        for program in loaded_programs() {
            let Ok(program) = program else { continue };
            let Ok(Some(maps)) = program.map_ids() else {
                continue;
            };
            if maps.iter().any(|m| stats_maps.contains(m)) {
                ids.push(program.id());
            }
        }
        anyhow::ensure!(
            !ids.is_empty(),
            "no loaded BPF program uses cluster {cluster}'s STATS maps"
        );
        Ok(Self { ids })
    }

    /// Run time and run count of these programs so far (while statistics were on).
    pub fn runs(&self) -> BpfRuns {
        let mut total = BpfRuns::default();
        for program in loaded_programs().flatten() {
            if self.ids.contains(&program.id()) {
                total.run_time += program.run_time();
                total.runs += program.run_count();
            }
        }
        total
    }
}

/// A measurement's cost, taken around it.
pub struct Meter<'a> {
    programs: Option<&'a ClusterPrograms>,
    cpu_seconds: f64,
    bpf: BpfRuns,
}

/// What the work between [`Meter::start`] and [`Meter::stop`] cost.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cost {
    pub cpu_seconds: f64,
    /// The BPF programs' runs meanwhile; `None` without BPF programs.
    pub bpf: Option<BpfRuns>,
}

impl Cost {
    /// Mean run time of one BPF program run (one packet at one hook), nanoseconds; `None`
    /// without BPF programs (or without runs).
    pub fn bpf_ns_per_run(&self) -> Option<f64> {
        let bpf = self.bpf?;
        (bpf.runs > 0).then(|| bpf.run_time.as_nanos() as f64 / bpf.runs as f64)
    }

    /// The cost of two measurements (slices of one round) together.
    pub fn plus(self, other: Cost) -> Cost {
        let bpf = match (self.bpf, other.bpf) {
            (Some(a), Some(b)) => Some(BpfRuns {
                run_time: a.run_time + b.run_time,
                runs: a.runs + b.runs,
            }),
            (a, b) => a.or(b),
        };
        Cost {
            cpu_seconds: self.cpu_seconds + other.cpu_seconds,
            bpf,
        }
    }
}

impl<'a> Meter<'a> {
    pub fn start(programs: Option<&'a ClusterPrograms>) -> Result<Self> {
        Ok(Self {
            programs,
            bpf: programs.map(ClusterPrograms::runs).unwrap_or_default(),
            cpu_seconds: process_cpu_seconds()?,
        })
    }

    pub fn stop(self) -> Result<Cost> {
        let cpu_seconds = process_cpu_seconds()? - self.cpu_seconds;
        let bpf = self.programs.map(|p| {
            let now = p.runs();
            BpfRuns {
                runs: now.runs.saturating_sub(self.bpf.runs),
                run_time: now.run_time.saturating_sub(self.bpf.run_time),
            }
        });
        Ok(Cost { cpu_seconds, bpf })
    }
}
