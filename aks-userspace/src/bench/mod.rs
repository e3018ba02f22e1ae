//! `aksnet bench`: every cell of the matrix and the limit, on identical topologies, in
//! one run; each workload measured round by round in alternation (A B C D E, A B C D E,
//! …) so the machine's noise falls on every cell alike; medians and ratios reported.
//!
//! - `cells`: building and removing the cells, where their workloads run;
//! - `workloads`: stream, request/response, connection rate, first-packet latency;
//! - `sweep`: the service-count sweep;
//! - `stats`: medians and percentiles; `report`: table, JSON, CSV; `plot`: the SVG;
//! - `interrupt`: Ctrl-C turns into an error, so the cells' guards clean up.

pub mod cells;
pub mod interrupt;
pub mod plot;
pub mod report;
pub mod stats;
pub mod sweep;
pub mod workloads;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use cells::{Cell, CellKind, SERVICE_TARGET_PORT};
use report::{BenchReport, CellResult, Machine, Metric, Settings};

/// How long and how much a run measures; every workload is bounded by these.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchOptions {
    /// Up to 3 lowercase letters or digits, starting with a letter: every cluster the
    /// run makes is named `<prefix><tag>` (namespaces `aks-<prefix>…`).
    pub prefix: String,
    pub quick: bool,
    pub rounds: usize,
    /// Per workload per cell per round.
    pub duration: Duration,
    /// Connection-rate attempts per cell per round, at most (keeps SNAT ports and
    /// conntrack entries bounded).
    pub max_connections: usize,
    /// Service counts of the sweep; empty skips it.
    pub sweep_services: Vec<usize>,
    pub sweep_connections: usize,
}

impl BenchOptions {
    /// The full run.
    pub fn full(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            quick: false,
            rounds: 5,
            duration: Duration::from_secs(3),
            max_connections: 10_000,
            sweep_services: vec![10, 1_000, 10_000],
            sweep_connections: 1_000,
        }
    }

    /// A short run (seconds per cell): the smoke test's.
    pub fn quick(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            quick: true,
            rounds: 2,
            duration: Duration::from_millis(1000),
            max_connections: 2_000,
            sweep_services: vec![10, 1_000],
            sweep_connections: 100,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let p = &self.prefix;
        if p.is_empty()
            || p.len() > 3
            || !p.starts_with(|c: char| c.is_ascii_lowercase())
            || !p
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            bail!("--prefix {p:?}: use 1 to 3 lowercase letters or digits, starting with a letter (cluster names are <prefix><tag>, at most 8 characters)");
        }
        if !(1..=20).contains(&self.rounds) {
            bail!("--rounds {}: use 1 to 20", self.rounds);
        }
        if self.duration < Duration::from_millis(200) || self.duration > Duration::from_secs(60) {
            bail!(
                "--duration {:?}: use 0.2 to 60 seconds per workload and round",
                self.duration
            );
        }
        if let Some(n) = self
            .sweep_services
            .iter()
            .find(|&&n| !(1..=60_000).contains(&n))
        {
            bail!("--sweep {n}: service counts must be 1 to 60000 (the /16 service CIDR)");
        }
        Ok(())
    }
}

/// Runs the benchmark; `progress` gets a line per step (which cell, which round).
pub fn run(options: &BenchOptions, progress: &dyn Fn(&str)) -> Result<BenchReport> {
    options.validate()?;
    let started = Instant::now();
    let date = utc_date();
    let mut cells = Vec::with_capacity(CellKind::ALL.len());
    for kind in CellKind::ALL {
        interrupt::check()?;
        progress(&format!("building cell {kind}"));
        cells.push(Cell::create(kind, &options.prefix)?);
    }

    let mut samples: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); cells.len()]; Metric::ALL.len()];
    let mut notes: Vec<Vec<Option<String>>> = vec![vec![None; cells.len()]; Metric::ALL.len()];
    let index = |m: Metric| Metric::ALL.iter().position(|&x| x == m).unwrap_or(0);
    let seconds = options.duration.as_secs_f64().ceil() as u64;
    for round in 1..=options.rounds {
        for (c, cell) in cells.iter().enumerate() {
            interrupt::check()?;
            progress(&format!(
                "stream: round {round}/{}: {}",
                options.rounds, cell.kind
            ));
            match workloads::stream(&cell.client, &cell.server, seconds) {
                Ok(gbps) => samples[index(Metric::Stream)][c].push(gbps),
                Err(e) => note_failure(&mut notes[index(Metric::Stream)][c], &e)?,
            }
        }
    }
    for round in 1..=options.rounds {
        for (c, cell) in cells.iter().enumerate() {
            interrupt::check()?;
            progress(&format!(
                "request/response: round {round}/{}: {}",
                options.rounds, cell.kind
            ));
            match workloads::request_response(&cell.client, &cell.server, options.duration) {
                Ok(rr) => {
                    samples[index(Metric::RrRate)][c].push(rr.transactions_per_second);
                    samples[index(Metric::RrP50)][c].push(rr.p50_us);
                    samples[index(Metric::RrP99)][c].push(rr.p99_us);
                }
                Err(e) => {
                    for m in [Metric::RrRate, Metric::RrP50, Metric::RrP99] {
                        note_failure(&mut notes[index(m)][c], &e)?;
                    }
                }
            }
        }
    }
    for round in 1..=options.rounds {
        for (c, cell) in cells.iter_mut().enumerate() {
            interrupt::check()?;
            progress(&format!(
                "connect internet: round {round}/{}: {}",
                options.rounds, cell.kind
            ));
            // The eBPF datapath's conntrack is collected by `up`; here, between rounds.
            if let Some(running) = cell.running.as_mut() {
                running.datapath.collect_garbage()?;
            }
            let target = SocketAddr::from((cell.internet.address, workloads::CONNECT_PORT));
            let m = index(Metric::ConnectInternet);
            match workloads::connection_rate(
                &cell.client,
                &cell.internet,
                workloads::CONNECT_PORT,
                target,
                options.duration,
                options.max_connections,
            ) {
                Ok(rate) => {
                    samples[m][c].push(rate.per_second);
                    if rate.failures > 0 {
                        notes[m][c] = Some(format!(
                            "{} failed connections in round {round}",
                            rate.failures
                        ));
                    }
                }
                Err(e) => note_failure(&mut notes[m][c], &e)?,
            }
        }
    }
    let m = index(Metric::ConnectService);
    for (c, cell) in cells.iter().enumerate() {
        if cell.service.is_none() {
            // Only the limit cell has no service: it has no datapath.
            notes[m][c] = Some("no services (no datapath)".to_owned());
        }
    }
    for round in 1..=options.rounds {
        for (c, cell) in cells.iter().enumerate() {
            let Some(service) = &cell.service else {
                continue;
            };
            interrupt::check()?;
            progress(&format!(
                "connect ClusterIP: round {round}/{}: {}",
                options.rounds, cell.kind
            ));
            match workloads::connection_rate(
                &service.client,
                &service.backend,
                SERVICE_TARGET_PORT,
                SocketAddr::from((service.cluster_ip, service.port)),
                options.duration,
                options.max_connections,
            ) {
                Ok(rate) => samples[m][c].push(rate.per_second),
                Err(e) => note_failure(&mut notes[m][c], &e)?,
            }
        }
    }
    let cell_names: Vec<String> = cells.iter().map(|c| c.kind.to_string()).collect();
    for cell in cells {
        progress(&format!("removing cell {}", cell.kind));
        cell.remove()?;
    }

    let sweep = if options.sweep_services.is_empty() {
        Vec::new()
    } else {
        sweep::run(
            &options.prefix,
            &options.sweep_services,
            options.rounds,
            options.sweep_connections,
            progress,
        )?
    };

    let baseline = CellKind::BASELINE.to_string();
    let limit = CellKind::Limit.to_string();
    let mut results = Vec::new();
    for (mi, metric) in Metric::ALL.into_iter().enumerate() {
        let medians: Vec<Option<f64>> = samples[mi].iter().map(|s| stats::median(s)).collect();
        let median_of = |name: &str| {
            cell_names
                .iter()
                .position(|n| n == name)
                .and_then(|i| medians[i])
        };
        let (base, lim) = (median_of(&baseline), median_of(&limit));
        for (c, name) in cell_names.iter().enumerate() {
            let median = medians[c];
            let against = |reference: Option<f64>| metric.ratio(median?, reference?);
            results.push(CellResult {
                metric,
                unit: metric.unit(),
                higher_is_better: metric.higher_is_better(),
                cell: name.clone(),
                samples: samples[mi][c].clone(),
                median,
                vs_kubenet_iptables: against(base),
                vs_limit: against(lim),
                note: notes[mi][c].clone(),
            });
        }
    }
    Ok(BenchReport {
        date,
        machine: machine(),
        settings: Settings {
            quick: options.quick,
            rounds: options.rounds,
            duration_seconds: options.duration.as_secs_f64(),
            max_connections_per_round: options.max_connections,
            sweep_services: options.sweep_services.clone(),
            sweep_connections_per_round: options.sweep_connections,
        },
        cells: cell_names,
        results,
        sweep,
        elapsed_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Records a failed measurement (the first failure's message); an interruption is not a
/// failure of the cell and ends the run.
fn note_failure(note: &mut Option<String>, err: &anyhow::Error) -> Result<()> {
    interrupt::check()?;
    if note.is_none() {
        *note = Some(format!("failed: {:#}", err));
    }
    Ok(())
}

/// The machine, as the README describes it: cores, memory, kernel.
fn machine() -> Machine {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory_gib = crate::model::conntrack::machine_memory_bytes() as f64 / (1u64 << 30) as f64;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    Machine {
        cores,
        memory_gib,
        kernel,
    }
}

fn utc_date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
