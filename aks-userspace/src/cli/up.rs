//! `aksnet up [FILE] [--keep]`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, Signal, SignalKind};

use aks_userspace::cluster;

pub fn run(file: Option<&Path>, keep: bool) -> Result<ExitCode> {
    let plan = match super::load_plan(file)? {
        Ok(plan) => plan,
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
    let running = cluster::create(&plan)?;
    println!(
        "cluster {} is up: {} namespaces in {:.2}s",
        plan.name,
        running.state.namespaces.len(),
        running.build_time.as_secs_f64()
    );
    println!("  {}", running.datapath.summary());
    if keep {
        println!(
            "  left running (--keep); `aksnet check {0}` probes it, `aksnet down {0}` removes it",
            plan.name
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "  `aksnet check {}` in another terminal probes it; Ctrl-C here removes it",
        plan.name
    );
    stop.wait()?;
    eprintln!("stopping: removing cluster {}", plan.name);
    drop(running);
    let removal = cluster::remove(&plan.name)?;
    println!(
        "cluster {} removed ({} namespaces)",
        plan.name, removal.namespaces
    );
    Ok(ExitCode::SUCCESS)
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

    /// Blocks until one of the signals arrives (returns at once if one already has).
    fn wait(mut self) -> Result<()> {
        self.runtime.block_on(async {
            tokio::select! {
                _ = self.interrupt.recv() => {}
                _ = self.terminate.recv() => {}
            }
        });
        Ok(())
    }
}
