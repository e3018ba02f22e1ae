//! `aksnet up [FILE] [--keep]`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use aks_userspace::cluster;
use aks_userspace::datapath::Datapath;
use aks_userspace::probes::{self, ProbeSettings};
use aks_userspace::stop::{self, Stopped};
use aks_userspace::{errln, outln};

pub fn run(
    file: Option<&Path>,
    keep: bool,
    check: bool,
    log_level: log::LevelFilter,
    probes: ProbeSettings,
) -> Result<ExitCode> {
    // Also the level the eBPF programs log at (written into the object when it loads).
    log::set_max_level(log_level);
    let (description, plan) = match super::load_description_and_plan(file)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    super::require_root("aksnet up")?;
    // Stop signals are caught from here on: one that arrives while the cluster is being
    // built stops the build after the current namespace and removes what was made; one
    // that arrives later removes the cluster, also with `--keep`. Nothing below depends
    // on stdout or stderr still being there (`aksnet up | tee log` and Ctrl-C, a closed
    // terminal): output goes through `outln!`/`errln!`, which ignore a broken pipe.
    stop::install()?;
    let pods: usize = plan.nodes.iter().map(|n| n.pods.len()).sum();
    errln!(
        "creating cluster {}: {}/{}, {} nodes, {} pods",
        plan.name,
        plan.network_plugin,
        plan.datapath,
        plan.nodes.len(),
        pods
    );
    // The description is kept for `aksnet services`, which changes and plans it again.
    let mut running = match cluster::create_described(&plan, Some(&description)) {
        Ok(running) => running,
        Err(err) => {
            return match err.downcast_ref::<Stopped>() {
                Some(stopped) => {
                    errln!(
                        "cluster {}: {} arrived while it was being built; removed what was built",
                        plan.name,
                        stopped.0
                    );
                    Ok(ExitCode::from(stopped.exit_code()))
                }
                None => Err(err),
            }
        }
    };
    // The load balancer's health probes run in an agent that lives as long as the
    // cluster (also after `--keep` returns); without it the cluster is not what AKS is.
    let agent = match probes::start(&plan.name, probes) {
        Ok(pid) => pid,
        Err(err) => {
            drop(running);
            let removed = cluster::remove(&plan.name);
            let err = err.context(format!("starting cluster {}", plan.name));
            return Err(match removed {
                Ok(_) => err.context("the cluster was removed"),
                Err(cleanup) => err.context(format!("and removing it failed: {cleanup:#}")),
            });
        }
    };
    outln!(
        "cluster {} is up: {} namespaces in {:.2}s",
        plan.name,
        running.state.namespaces.len(),
        running.build_time.as_secs_f64()
    );
    outln!("  {}", running.datapath.summary());
    outln!(
        "  load balancer health probes: agent pid {agent}, every {} ms, {} in a row change a node's state",
        probes.interval.as_millis(),
        probes.threshold
    );
    if check && stop::requested().is_none() {
        let model = aks_userspace::check::NetworkModel::from_plan(&plan);
        if !super::check::matrix(&running.state, &model, false)? {
            return failed_check(running, &plan.name, keep);
        }
    }
    if stop::requested().is_none() {
        if keep {
            outln!(
                "  left running (--keep); `aksnet check {0}` probes it, `aksnet down {0}` removes it",
                plan.name
            );
            return Ok(ExitCode::SUCCESS);
        }
        outln!(
            "  `aksnet check {}` in another terminal probes it; Ctrl-C here removes it; datapath logs at level {log_level} follow",
            plan.name
        );
        let gc_interval =
            std::time::Duration::from_secs(u64::from(plan.conntrack.gc_interval_seconds));
        serve(running.datapath.as_mut(), gc_interval)?;
    }
    let signal = stop::requested().map_or_else(|| "a stop".to_owned(), |s| s.to_string());
    errln!("stopping ({signal}): removing cluster {}", plan.name);
    drop(running);
    let removal = cluster::remove(&plan.name)?;
    outln!(
        "cluster {} removed ({} namespaces)",
        plan.name,
        removal.namespaces
    );
    // Serving until a signal is how `up` ends; with --keep, a signal means it did not
    // do what was asked (leave the cluster), which a script must see.
    match (keep, stop::requested()) {
        (true, Some(signal)) => Ok(ExitCode::from(Stopped(signal).exit_code())),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// `up --check` found a row that does not match: a cluster that does not do what AKS
/// does is not left serving as if it did. With `--keep` it stays for inspection.
fn failed_check(running: cluster::RunningCluster, name: &str, keep: bool) -> Result<ExitCode> {
    if keep {
        outln!(
            "  the check failed; left running (--keep) for inspection: `aksnet inspect … --cluster {name}`, `aksnet down {name}` removes it"
        );
    } else {
        drop(running);
        let removal = cluster::remove(name)?;
        outln!(
            "  the check failed; cluster {name} removed ({} namespaces)",
            removal.namespaces
        );
    }
    Ok(ExitCode::from(super::check::EXIT_MISMATCH))
}

/// How often the serving loop looks for a stop signal.
const STOP_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Runs until a stop signal arrives, meanwhile printing the datapath's log records a
/// few times a second and expiring idle flows every `gc_interval`.
fn serve(datapath: &mut dyn Datapath, gc_interval: std::time::Duration) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let mut stop_poll = tokio::time::interval(STOP_POLL);
        let mut logs = tokio::time::interval(std::time::Duration::from_millis(200));
        let mut gc = tokio::time::interval(gc_interval);
        loop {
            tokio::select! {
                _ = stop_poll.tick() => if stop::requested().is_some() { break },
                _ = logs.tick() => datapath.flush_logs(),
                _ = gc.tick() => report_gc(datapath),
            }
        }
        datapath.flush_logs();
    });
    Ok(())
}

/// One GC pass; a line per node that expired flows, with the map pressure.
fn report_gc(datapath: &mut dyn Datapath) {
    match datapath.collect_garbage() {
        Ok(reports) => {
            for (node, r) in reports
                .iter()
                .filter(|(_, r)| r.expired + r.service_flows_expired > 0)
            {
                errln!(
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
        Err(err) => errln!("conntrack gc failed: {err:#}"),
    }
}
