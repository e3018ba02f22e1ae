//! `aksnet bench`: every cell of the matrix and the limit, on identical topologies, in
//! one run; each workload measured round by round in alternation (A B C D E, A B C D E,
//! …) so the machine's noise falls on every cell alike; medians and ratios reported.
//!
//! - `cells`: building and removing the cells, where their workloads run;
//! - `workloads`: stream, request/response, connection rate, first-packet latency, each
//!   as a user sees it and pinned to one CPU (the datapath's own cost);
//! - `cost`: CPU time and the BPF programs' run time around each measurement;
//! - `sweep`: the service-count sweep;
//! - `frontends`: connection rate through a LoadBalancer frontend (`--frontends`);
//! - `policy_sweep`: the network-policy sweep (rule count against first packet and
//!   connection rate, eBPF vs iptables);
//! - `stats`: medians and percentiles; `report`: table, JSON, CSV; `plot`: the SVG;
//! - `interrupt`: Ctrl-C turns into an error, so the cells' guards clean up.

pub mod cells;
pub mod compare;
pub mod cost;
pub mod frontends;
pub mod interrupt;
pub mod plot;
pub mod policy_sweep;
pub mod report;
pub mod snat;
pub mod stats;
pub mod sweep;
pub mod workloads;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use cells::{Cell, CellKind, SERVICE_TARGET_PORT};
use report::{BenchReport, CellResult, Machine, Settings, Summary, Workload};
use workloads::{ConnectTarget, Measured, View};

/// The VNet fabric the cells run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fabric {
    /// As `aksnet up` builds it: the BPF forwarder routes node-to-node VNet traffic,
    /// the stateless iptables fabric the rest (`fabric::forwarder`).
    Forwarder,
    /// The iptables fabric alone, conntrack only on the internet link.
    Stateless,
    /// The old fabric, every forwarded packet tracked: to measure what that cost.
    Stateful,
}

impl Fabric {
    pub fn name(self) -> &'static str {
        match self {
            Self::Forwarder => "forwarder",
            Self::Stateless => "stateless",
            Self::Stateful => "stateful",
        }
    }
}

/// The shortest slice of a round: shorter, and setting up the server and connection
/// would weigh in the rate.
const MIN_SLICE: Duration = Duration::from_millis(50);

/// How long and how much a run measures; every workload is bounded by these.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchOptions {
    /// Up to 3 lowercase letters or digits, starting with a letter: every cluster the
    /// run makes is named `<prefix><tag>` (namespaces `aks-<prefix>…`).
    pub prefix: String,
    pub quick: bool,
    pub rounds: usize,
    /// Per workload per view per cell per round.
    pub duration: Duration,
    /// Connection-rate attempts per measurement, at most (keeps SNAT ports and
    /// conntrack entries bounded).
    pub max_connections: usize,
    /// Service counts of the sweep; empty skips it.
    pub sweep_services: Vec<usize>,
    /// First-packet samples per sweep point and round.
    pub sweep_connections: usize,
    /// Rule counts of the policy sweep; empty skips it. Measured with the service
    /// sweep's bounds (connections per round, duration).
    pub policy_rules: Vec<usize>,
    pub fabric: Fabric,
    /// Slices each round's measurement of a workload is cut into, every cell measured
    /// in turn within each slice (iperf3's stream, which counts whole seconds, is not
    /// cut).
    pub slices: usize,
    /// What is measured: every cell, workload and view unless narrowed (`--cells`,
    /// `--workloads`, `--views`), e.g. to profile one or to check a ratio's stability.
    pub cells: Vec<CellKind>,
    pub workloads: Vec<Workload>,
    pub views: Vec<View>,
}

impl BenchOptions {
    /// The full run: 9 rounds of 4 slices; the medians of the per-round ratios held
    /// about ±5 % between two runs even on the loaded shared machine (the README's
    /// "Stability of the ratios").
    pub fn full(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            quick: false,
            rounds: 9,
            duration: Duration::from_secs(1),
            max_connections: 20_000,
            sweep_services: vec![10, 1_000, 10_000, 100_000],
            sweep_connections: 500,
            policy_rules: vec![10, 1_000, 10_000],
            fabric: Fabric::Forwarder,
            slices: 4,
            cells: CellKind::ALL.to_vec(),
            workloads: Workload::ALL.to_vec(),
            views: View::ALL.to_vec(),
        }
    }

    /// A short run (a fraction of a second per workload and cell): the smoke test's.
    pub fn quick(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            quick: true,
            rounds: 2,
            duration: Duration::from_millis(300),
            max_connections: 2_000,
            sweep_services: vec![10, 1_000],
            sweep_connections: 100,
            policy_rules: vec![10, 1_000],
            fabric: Fabric::Forwarder,
            slices: 2,
            cells: CellKind::ALL.to_vec(),
            workloads: Workload::ALL.to_vec(),
            views: View::ALL.to_vec(),
        }
    }

    /// The slices of one round of `workload`.
    pub fn slices_of(&self, workload: Workload) -> usize {
        match workload {
            Workload::Stream => 1,
            _ => self.slices,
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
        if !(1..=10).contains(&self.slices) || self.duration.div_f64(self.slices as f64) < MIN_SLICE
        {
            bail!(
                "--slices {}: use 1 to 10, and at most one per {:?} of --duration ({:?})",
                self.slices,
                MIN_SLICE,
                self.duration
            );
        }
        if self.cells.is_empty() || self.workloads.is_empty() || self.views.is_empty() {
            bail!("--cells, --workloads and --views each need at least one name");
        }
        if let Some(n) = self
            .sweep_services
            .iter()
            .find(|&&n| !(1..=cells::MAX_SERVICES).contains(&n))
        {
            bail!(
                "--sweep {n}: service counts must be 1 to {} (the benchmark's /14 service CIDR)",
                cells::MAX_SERVICES
            );
        }
        if let Some(n) = self
            .policy_rules
            .iter()
            .find(|&&n| !(1..=policy_sweep::MAX_RULES).contains(&n))
        {
            bail!(
                "--policy-sweep {n}: rule counts must be 1 to {} (the eBPF policy maps' capacity)",
                policy_sweep::MAX_RULES
            );
        }
        Ok(())
    }

    fn sweep_bounds(&self) -> sweep::SweepBounds {
        sweep::SweepBounds {
            rounds: self.rounds,
            connections: self.sweep_connections,
            duration: self.duration,
            max_connections: self.max_connections,
        }
    }
}

/// Runs the benchmark; `progress` gets a line per step (which workload, which round).
pub fn run(options: &BenchOptions, progress: &dyn Fn(&str)) -> Result<BenchReport> {
    options.validate()?;
    let started = Instant::now();
    let date = utc_date();
    // The kernel counts BPF run time only while this lives.
    let _statistics = cost::BpfStatistics::enable()?;
    let mut cells = Vec::with_capacity(options.cells.len());
    for &kind in &options.cells {
        interrupt::check()?;
        progress(&format!("building cell {kind}"));
        let cell = Cell::create(kind, &options.prefix)?;
        if let Some(running) = &cell.running {
            let state = &running.state;
            if options.fabric != Fabric::Forwarder {
                crate::fabric::forwarder::remove(&state.name, &state.vnet, state.nodes.len())?;
            }
            if options.fabric == Fabric::Stateful {
                crate::cluster::make_fabric_stateful(&state.vnet)?;
            }
        }
        cells.push(cell);
    }

    let plan: Vec<(Workload, View)> = options
        .workloads
        .iter()
        .flat_map(|&w| options.views.iter().map(move |&v| (w, v)))
        .collect();
    // samples[workload and view][cell][round]: `None` where the round measured nothing.
    let mut samples: Vec<Vec<Vec<Option<Sample>>>> =
        vec![vec![Vec::with_capacity(options.rounds); cells.len()]; plan.len()];
    let mut notes: Vec<Vec<Option<String>>> = vec![vec![None; cells.len()]; plan.len()];
    for round in 0..options.rounds {
        for (p, &(workload, view)) in plan.iter().enumerate() {
            progress(&format!(
                "round {}/{}: {} ({})",
                round + 1,
                options.rounds,
                workload.name(),
                view.name()
            ));
            // The round's time split into slices, each measuring every cell in turn, the
            // order rotated from slice to slice: the noise of any moment falls on every
            // cell alike, and no cell always goes first.
            let slices = options.slices_of(workload);
            let slice = options.duration.div_f64(slices as f64);
            let mut taken: Vec<Vec<Sample>> = vec![Vec::new(); cells.len()];
            for s in 0..slices {
                for c in stats::turn_order(round * slices + s, cells.len()) {
                    let cell = &mut cells[c];
                    interrupt::check()?;
                    if !workload.is_request_response() && workload != Workload::Stream {
                        collect_garbage(cell)?;
                    }
                    let meter = cost::Meter::start(cell.programs.as_ref())?;
                    let measured = measure(workload, view, cell, options, slice);
                    let cost = meter.stop()?;
                    match measured {
                        Ok(Some(m)) => {
                            if m.failures > 0 {
                                notes[p][c] =
                                    Some(format!("{} failed in round {}", m.failures, round + 1));
                            }
                            taken[c].push(Sample { measured: m, cost });
                        }
                        Ok(None) => notes[p][c] = Some("no services (no datapath)".to_owned()),
                        Err(e) => note_failure(&mut notes[p][c], &e)?,
                    }
                }
            }
            for (c, slices) in taken.into_iter().enumerate() {
                samples[p][c].push(Sample::merged(slices));
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
            options.sweep_bounds(),
            progress,
        )?
    };
    let policy = if options.policy_rules.is_empty() {
        Vec::new()
    } else {
        policy_sweep::run(
            &options.prefix,
            &options.policy_rules,
            options.sweep_bounds(),
            progress,
        )?
    };

    let position = |kind: CellKind| cell_names.iter().position(|n| *n == kind.to_string());
    let (baseline, limit) = (position(CellKind::BASELINE), position(CellKind::Limit));
    let mut results = Vec::new();
    for (p, &(workload, view)) in plan.iter().enumerate() {
        let (cost_unit, per) = workload.cost_unit();
        let rounds = &samples[p];
        let rate = |s: &Sample| Some(s.measured.rate);
        let cost = |s: &Sample| Some(s.cost.cpu_seconds / s.measured.work * per);
        for (c, name) in cell_names.iter().enumerate() {
            let of = |f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<f64> {
                rounds[c].iter().flatten().filter_map(f).collect()
            };
            // Ratios round by round, each from measurements taken side by side.
            let per_round = |i: usize, f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<Option<f64>> {
                rounds[i].iter().map(|s| s.as_ref().and_then(f)).collect()
            };
            let ratio_to =
                |reference: Option<usize>, f: &dyn Fn(&Sample) -> Option<f64>, inverse| {
                    let (mine, theirs) = (per_round(c, f), per_round(reference?, f));
                    let ratios = if inverse {
                        stats::paired_ratios(&theirs, &mine)
                    } else {
                        stats::paired_ratios(&mine, &theirs)
                    };
                    Summary::of(&ratios)
                };
            let rate_samples = of(&rate);
            let cost_samples = of(&cost);
            results.push(CellResult {
                workload,
                view,
                cell: name.clone(),
                unit: workload.unit(),
                rate: Summary::of(&rate_samples),
                p50_us: Summary::of(&of(&|s| s.measured.p50_us())),
                p99_us: Summary::of(&of(&|s| s.measured.p99_us())),
                cost_unit,
                cost: Summary::of(&cost_samples),
                bpf_ns_per_run: Summary::of(&of(&|s| s.cost.bpf_ns_per_run())),
                rate_samples,
                cost_samples,
                vs_kubenet_iptables: ratio_to(baseline, &rate, false),
                vs_limit: ratio_to(limit, &rate, false),
                cost_vs_kubenet_iptables: ratio_to(baseline, &cost, true),
                note: notes[p][c].clone(),
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
            slices: options.slices,
            max_connections_per_round: options.max_connections,
            concurrency: workloads::CONCURRENCY,
            sweep_services: options.sweep_services.clone(),
            sweep_connections_per_round: options.sweep_connections,
            policy_rules: options.policy_rules.clone(),
            fabric: options.fabric.name().to_owned(),
        },
        cells: cell_names,
        results,
        sweep,
        policy,
        elapsed_seconds: started.elapsed().as_secs_f64(),
    })
}

/// One round's measurement of one cell and what it cost.
#[derive(Clone, Debug)]
struct Sample {
    measured: Measured,
    cost: cost::Cost,
}

impl Sample {
    /// A round's slices as one measurement.
    fn merged(slices: Vec<Sample>) -> Option<Sample> {
        let cost = slices
            .iter()
            .fold(cost::Cost::default(), |a, s| a.plus(s.cost));
        let measured = Measured::merged(slices.into_iter().map(|s| s.measured).collect())?;
        Some(Sample { measured, cost })
    }
}

/// Runs `workload` once on `cell`; `None` where the cell has nothing to measure (the
/// limit has no ClusterIPs).
fn measure(
    workload: Workload,
    view: View,
    cell: &Cell,
    options: &BenchOptions,
    d: Duration,
) -> Result<Option<Measured>> {
    let internet = ConnectTarget {
        client: &cell.client,
        server: &cell.internet,
        listen_port: workloads::CONNECT_PORT,
        address: SocketAddr::from((cell.internet.address, workloads::CONNECT_PORT)),
    };
    // The cap holds for the round: its slices share it.
    let cap = options
        .max_connections
        .div_ceil(options.slices_of(workload));
    let connect =
        |target: &ConnectTarget, clients| workloads::connection_rate(target, clients, d, cap, view);
    let service = || {
        cell.service.as_ref().map(|s| ConnectTarget {
            client: &s.client,
            server: &s.backend,
            listen_port: SERVICE_TARGET_PORT,
            address: SocketAddr::from((s.cluster_ip, s.port)),
        })
    };
    Ok(Some(match workload {
        Workload::Stream => {
            let seconds = d.as_secs_f64().ceil() as u64;
            workloads::stream(&cell.client, &cell.server, seconds, view)?
        }
        Workload::RrPodToPod => workloads::request_response(&cell.client, &cell.server, d, view)?,
        Workload::RrSameNode => {
            workloads::request_response(&cell.client, &cell.same_node_server, d, view)?
        }
        Workload::RrNodeToNode => {
            workloads::request_response(&cell.node_client, &cell.node_server, d, view)?
        }
        Workload::ConnectSnat => connect(&internet, 1)?,
        Workload::ConnectSnatConcurrent => connect(&internet, workloads::CONCURRENCY)?,
        Workload::ConnectService => match service() {
            Some(target) => connect(&target, 1)?,
            None => return Ok(None),
        },
        Workload::ConnectServiceConcurrent => match service() {
            Some(target) => connect(&target, workloads::CONCURRENCY)?,
            None => return Ok(None),
        },
    }))
}

/// Expires idle flows of the eBPF datapath's conntrack (`up` does it every few
/// seconds; here, before every connection workload, so each starts alike).
pub(crate) fn collect_garbage(cell: &mut Cell) -> Result<()> {
    if let Some(running) = cell.running.as_mut() {
        running.datapath.collect_garbage()?;
    }
    Ok(())
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

/// The machine, as the README describes it: CPU model, cores, memory, kernel.
fn machine() -> Machine {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory_gib = crate::model::conntrack::machine_memory_bytes() as f64 / (1u64 << 30) as f64;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    Machine {
        cpu_model,
        cores,
        memory_gib,
        kernel,
        pinned_cpu: View::Datapath.cpu().unwrap_or(0),
    }
}

/// Now, UTC, to the minute.
fn utc_date() -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default()
}
