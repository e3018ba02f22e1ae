//! `aksnet up [FILE] [--keep]`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, Signal, SignalKind};

use aks_userspace::cluster;
use aks_userspace::datapath::Datapath;

pub fn run(
    file: Option<&Path>,
    keep: bool,
    check: bool,
    log_level: log::LevelFilter,
) -> Result<ExitCode> {
    // Also the level the eBPF programs log at (written into the object when it loads).
    log::set_max_level(log_level);
    let (description, plan) = match super::load_description_and_plan(file)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    super::require_root("aksnet up")?;
    // Catch Ctrl-C and SIGTERM from here on, so one that arrives while the cluster is
    // being built is handled (the cluster removed) once the build is done, instead of
    // killing the process half-way.
    let stop = StopSignals::install()?;
    let pods: usize = plan.nodes.iter().map(|n| n.pods.len()).sum();
    eprintln!(
        "creating cluster {}: {}/{}, {} nodes, {} pods",
        plan.name,
        plan.network_plugin,
        plan.datapath,
        plan.nodes.len(),
        pods
    );
    let mut running = cluster::create(&plan)?;
    // Kept for `aksnet services`, which changes and plans it again.
    aks_userspace::state::ClusterState::save_description(&plan.name, &description)?;
    println!(
        "cluster {} is up: {} namespaces in {:.2}s",
        plan.name,
        running.state.namespaces.len(),
        running.build_time.as_secs_f64()
    );
    println!("  {}", running.datapath.summary());
    if check {
        let model = aks_userspace::check::NetworkModel::from_plan(&plan);
        if !super::check::matrix(&running.state, &model, false)? {
            return failed_check(running, &plan.name, keep);
        }
    }
    if keep {
        println!(
            "  left running (--keep); `aksnet check {0}` probes it, `aksnet down {0}` removes it",
            plan.name
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "  `aksnet check {}` in another terminal probes it; Ctrl-C here removes it; datapath logs at level {log_level} follow",
        plan.name
    );
    let gc_interval = std::time::Duration::from_secs(u64::from(plan.conntrack.gc_interval_seconds));
    stop.wait_serving(running.datapath.as_mut(), gc_interval)?;
    eprintln!("stopping: removing cluster {}", plan.name);
    drop(running);
    let removal = cluster::remove(&plan.name)?;
    println!(
        "cluster {} removed ({} namespaces)",
        plan.name, removal.namespaces
    );
    Ok(ExitCode::SUCCESS)
}

/// `up --check` found a row that does not match: a cluster that does not do what AKS
/// does is not left serving as if it did. With `--keep` it stays for inspection.
fn failed_check(running: cluster::RunningCluster, name: &str, keep: bool) -> Result<ExitCode> {
    if keep {
        println!(
            "  the check failed; left running (--keep) for inspection: `aksnet inspect … --cluster {name}`, `aksnet down {name}` removes it"
        );
    } else {
        drop(running);
        let removal = cluster::remove(name)?;
        println!(
            "  the check failed; cluster {name} removed ({} namespaces)",
            removal.namespaces
        );
    }
    Ok(ExitCode::from(super::check::EXIT_MISMATCH))
}

/// SIGINT (Ctrl-C) and SIGTERM (`aksnet down`, a service manager), caught from
/// `install` on.
struct StopSignals {
    runtime: tokio::runtime::Runtime,
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    fn install() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the tokio runtime")?;
        let _context = runtime.enter();
        let interrupt = signal(SignalKind::interrupt()).context("catching SIGINT")?;
        let terminate = signal(SignalKind::terminate()).context("catching SIGTERM")?;
        Ok(Self {
            runtime,
            interrupt,
            terminate,
        })
    }

    /// Blocks until one of the signals arrives (returns at once if one already has),
    /// meanwhile printing the datapath's log records a few times a second and expiring
    /// idle flows every `gc_interval`.
    fn wait_serving(
        mut self,
        datapath: &mut dyn Datapath,
        gc_interval: std::time::Duration,
    ) -> Result<()> {
        self.runtime.block_on(async {
            let mut logs = tokio::time::interval(std::time::Duration::from_millis(200));
            let mut gc = tokio::time::interval(gc_interval);
            loop {
                tokio::select! {
                    _ = self.interrupt.recv() => break,
                    _ = self.terminate.recv() => break,
                    _ = logs.tick() => datapath.flush_logs(),
                    _ = gc.tick() => report_gc(datapath),
                }
            }
            datapath.flush_logs();
        });
        Ok(())
    }
}

/// One GC pass; a line per node that expired flows, with the map pressure.
fn report_gc(datapath: &mut dyn Datapath) {
    match datapath.collect_garbage() {
        Ok(reports) => {
            for (node, r) in reports
                .iter()
                .filter(|(_, r)| r.expired + r.service_flows_expired > 0)
            {
                eprintln!(
                    "[{node}] conntrack gc: expired {} flows; {} flows of {} ({:.1} % pressure), {} NAT entries; expired {} service flows, {} left",
                    r.expired,
                    r.flows,
                    r.capacity,
                    r.pressure_percent(),
                    r.nat_entries,
                    r.service_flows_expired,
                    r.service_flows
                );
            }
        }
        Err(err) => eprintln!("conntrack gc failed: {err:#}"),
    }
}
