//! `aksnet bench`: run the benchmark, print the table, write JSON, CSV and the plot.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};

use aks_userspace::bench::cells::CellKind;
use aks_userspace::bench::report::Workload;
use aks_userspace::bench::workloads::View;
use aks_userspace::bench::{self, interrupt, BenchOptions};

/// What the command line asked for.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// A short run (0.3 s per workload, view and cell, 2 rounds, sweeps to 1,000).
    #[arg(long)]
    pub quick: bool,
    /// Rounds per workload, view and cell (default 9, quick 2).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Seconds per workload, view, cell and round (default 1, quick 0.3).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Service counts of the sweep, comma-separated (default 10,1000,10000,100000;
    /// iptables stops at 10,000); `--sweep` with no value skips it.
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    pub sweep: Option<Vec<usize>>,
    /// Rule counts of the network-policy sweep, comma-separated (default 10,1000,10000;
    /// quick 10,1000): Azure CNI with Azure NPM on iptables and Cilium on eBPF, first
    /// packet and connection rate pod to pod; `--policy-sweep` with no value skips it.
    #[arg(long, value_delimiter = ',', num_args = 0..)]
    pub policy_sweep: Option<Vec<usize>>,
    /// The VNet fabric of every cell: `forwarder` as `aksnet up` builds it (the BPF
    /// forwarder routes node-to-node traffic, the stateless iptables fabric the rest),
    /// `stateless` (the iptables fabric alone) or `stateful` (every forwarded packet
    /// tracked, as before) to measure what each costs. The limit cell has no fabric.
    #[arg(long, value_enum, default_value_t = FabricArg::Forwarder)]
    pub fabric: FabricArg,
    /// Slices each round of a workload is cut into, every cell measured in turn in
    /// each (default 4, quick 2; stream is not cut).
    #[arg(long)]
    pub slices: Option<usize>,
    /// Only these cells, comma-separated (e.g. azure/ebpf,kubenet/iptables,limit);
    /// ratios need kubenet/iptables (and the limit) among them.
    #[arg(long, value_delimiter = ',', value_parser = parse_cell)]
    pub cells: Option<Vec<CellKind>>,
    /// Only these workloads, comma-separated, by their JSON names (e.g.
    /// rr-pod-to-pod,connect-snat).
    #[arg(long, value_delimiter = ',', value_parser = parse_workload)]
    pub workloads: Option<Vec<Workload>>,
    /// Only these views: user, pinned.
    #[arg(long, value_delimiter = ',', value_parser = parse_view)]
    pub views: Option<Vec<View>>,
    /// Measure only the connection rate from the internet host to a LoadBalancer
    /// frontend (externalTrafficPolicy Cluster and Local, eBPF and iptables), on its own
    /// two clusters; --rounds and --duration apply, --json writes its report.
    #[arg(long)]
    pub frontends: bool,
    /// Names of the clusters it makes start with this (1-3 characters).
    #[arg(long, default_value = "bn")]
    pub prefix: String,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write the results as CSV to this file.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Also draw the results as an SVG plot into this file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Instead of the matrix: the connection rate from one pod to the internet until its
    /// node's load balancer SNAT ports run out (kubenet/iptables and azure/ebpf
    /// clusters, `--rounds` rounds, default 3).
    #[arg(long)]
    pub snat_exhaustion: bool,
    /// Measure nothing: compare two `--json` reports, BEFORE and AFTER, ratio by ratio
    /// (every cell's rate and CPU against kubenet/iptables and the limit), and exit 1
    /// when any moved by more than --tolerance. Needs no root.
    #[arg(long, num_args = 2, value_names = ["BEFORE", "AFTER"])]
    pub compare: Option<Vec<PathBuf>>,
    /// With --compare: the change, in percent either way, a ratio may show.
    #[arg(long, default_value_t = 5.0, requires = "compare")]
    pub tolerance: f64,
    /// `allocatedOutboundPorts` of the --snat-exhaustion clusters (a multiple of 8, at
    /// most 32,000 for their two nodes; default 1024, AKS's for up to 50 nodes).
    #[arg(long, default_value_t = 1024, requires = "snat_exhaustion")]
    pub snat_ports: u32,
}

fn parse_cell(name: &str) -> Result<CellKind, String> {
    CellKind::ALL
        .into_iter()
        .find(|k| k.to_string() == name)
        .ok_or_else(|| format!("no cell {name:?}; cells: {}", names(CellKind::ALL)))
}

fn parse_workload(name: &str) -> Result<Workload, String> {
    Workload::from_key(name).ok_or_else(|| {
        let keys = Workload::ALL.map(Workload::key);
        format!("no workload {name:?}; workloads: {}", keys.join(", "))
    })
}

fn parse_view(name: &str) -> Result<View, String> {
    View::ALL
        .into_iter()
        .find(|v| v.name() == name)
        .ok_or_else(|| format!("no view {name:?}; views: user, pinned"))
}

fn names<T: std::fmt::Display>(all: impl IntoIterator<Item = T>) -> String {
    all.into_iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum FabricArg {
    Forwarder,
    Stateless,
    Stateful,
}

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    if let Some(files) = &args.compare {
        return compare(&files[0], &files[1], args.tolerance, args.json.as_deref());
    }
    super::require_root("aksnet bench")?;
    if args.snat_exhaustion {
        return super::bench_snat::run(
            &args.prefix,
            args.snat_ports,
            args.rounds,
            args.json.as_deref(),
        );
    }
    let mut options = if args.quick {
        BenchOptions::quick(&args.prefix)
    } else {
        BenchOptions::full(&args.prefix)
    };
    if let Some(rounds) = args.rounds {
        options.rounds = rounds;
    }
    if let Some(seconds) = args.duration {
        anyhow::ensure!(
            seconds.is_finite() && seconds > 0.0,
            "--duration {seconds}: give seconds, e.g. 3 or 0.5"
        );
        options.duration = Duration::from_secs_f64(seconds);
    }
    options.fabric = match args.fabric {
        FabricArg::Forwarder => bench::Fabric::Forwarder,
        FabricArg::Stateless => bench::Fabric::Stateless,
        FabricArg::Stateful => bench::Fabric::Stateful,
    };
    if let Some(sweep) = args.sweep {
        options.sweep_services = sweep;
    }
    if let Some(slices) = args.slices {
        options.slices = slices;
    }
    if let Some(cells) = args.cells {
        options.cells = cells;
    }
    if let Some(workloads) = args.workloads {
        options.workloads = workloads;
    }
    if let Some(views) = args.views {
        options.views = views;
    }
    if let Some(rules) = args.policy_sweep {
        options.policy_rules = rules;
    }
    options.validate()?;
    // From here Ctrl-C and SIGTERM end the run through the cells' guards.
    interrupt::install()?;
    if args.frontends {
        return frontends(&options, args.json.as_deref());
    }
    eprintln!(
        "aksnet bench: {} cells × {} workloads × {} views × {} rounds × {:.1}s{}{}; clusters named {}*",
        options.cells.len(),
        options.workloads.len(),
        options.views.len(),
        options.rounds,
        options.duration.as_secs_f64(),
        if options.sweep_services.is_empty() {
            String::new()
        } else {
            format!(", service sweep {:?}", options.sweep_services)
        },
        if options.policy_rules.is_empty() {
            String::new()
        } else {
            format!(", policy sweep {:?} rules", options.policy_rules)
        },
        options.prefix
    );
    let report = bench::run(&options, &|line| eprintln!("bench: {line}"))?;
    print!("{}", report.render());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.csv {
        std::fs::write(path, report.to_csv()?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        bench::plot::write_svg(&report, path)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `--compare`: exit 0 when every ratio held within `tolerance` percent, 1 when one did
/// not, 2 when a file is not a report.
fn compare(before: &Path, after: &Path, tolerance: f64, json: Option<&Path>) -> Result<ExitCode> {
    if !(tolerance.is_finite() && tolerance >= 0.0) {
        eprintln!("error: --tolerance {tolerance}: give a percentage, e.g. 5");
        return Ok(ExitCode::from(2));
    }
    let read = |path: &Path| -> Result<serde_json::Value> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not JSON (an `aksnet bench --json` report)",
                path.display()
            )
        })
    };
    let compared = read(before).and_then(|b| bench::compare::compare(&b, &read(after)?));
    let comparison = match compared {
        Ok(comparison) => comparison,
        Err(err) => {
            eprintln!("error: {err:#}");
            return Ok(ExitCode::from(2));
        }
    };
    print!("{}", comparison.render(tolerance));
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_vec_pretty(&comparison)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(if comparison.beyond(tolerance).is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `--frontends`: the LoadBalancer frontend's connection rate, on its own.
fn frontends(options: &BenchOptions, json: Option<&Path>) -> Result<ExitCode> {
    let options = bench::frontends::FrontendBenchOptions {
        prefix: options.prefix.clone(),
        rounds: options.rounds,
        duration: options.duration,
        max_connections: options.max_connections,
    };
    eprintln!(
        "aksnet bench --frontends: 2 clusters x 2 policies x {} rounds x {:.1}s; clusters named {}*",
        options.rounds,
        options.duration.as_secs_f64(),
        options.prefix
    );
    let report = bench::frontends::run(&options, &|line| eprintln!("bench: {line}"))?;
    print!("{}", report.render());
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
