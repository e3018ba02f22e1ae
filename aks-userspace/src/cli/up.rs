//! `aksnet up [FILE] [--keep]`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use aks_userspace::cluster;

pub fn run(file: Option<&Path>, keep: bool) -> Result<ExitCode> {
    let plan = match super::load_plan(file)? {
        Ok(plan) => plan,
        Err(code) => return Ok(code),
    };
    super::require_root("aksnet up")?;
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
    wait_for_stop_signal()?;
    eprintln!("stopping: removing cluster {}", plan.name);
    drop(running);
    let removal = cluster::remove(&plan.name)?;
    println!(
        "cluster {} removed ({} namespaces)",
        plan.name, removal.namespaces
    );
    Ok(ExitCode::SUCCESS)
}

/// Blocks until SIGINT (Ctrl-C) or SIGTERM (`aksnet down`, a service manager).
fn wait_for_stop_signal() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("listening for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("listening for Ctrl-C"),
            _ = term.recv() => Ok(()),
        }
    })
}
