//! `aksnet monitor [--cluster NAME] [--node N] [--type drop|trace] [--json]`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};

use aks_userspace::errln;
use aks_userspace::monitor::{clock_time, EventKind, Monitor, MonitorEvent};
use aks_userspace::state::ClusterState;
use aks_userspace::stop;

/// How often the ring buffers are drained: short enough that a drop shows at once,
/// long enough that an idle monitor costs nothing.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

pub fn run(
    cluster: Option<&str>,
    node: Option<&str>,
    kind: EventKind,
    json: bool,
) -> Result<ExitCode> {
    super::require_root("aksnet monitor")?;
    let state = super::resolve_cluster(cluster)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .context("starting the tokio runtime")?;
    stop::install()?;
    // Dropped on every way out, which turns tracing off again.
    let mut monitor = Monitor::open(&state, node, kind)?;
    eprintln!(
        "monitoring {} events of cluster {} ({}); Ctrl-C stops",
        match kind {
            EventKind::Drop => "drop",
            EventKind::Trace => "all",
        },
        state.name,
        node.map_or_else(|| "every node".to_owned(), |n| format!("node {n}"))
    );
    let record = ClusterState::dir(&state.name);
    let removed = runtime.block_on(async {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        loop {
            tick.tick().await;
            for event in monitor.poll() {
                print_event(&event, json)?;
            }
            // On stderr in both formats: stdout stays one event per line.
            for (node, lost) in monitor.newly_lost()? {
                errln!(
                    "[{node}] {lost} events lost: the ring buffer was full (this monitor fell behind); their packets are still counted (`aksnet inspect stats`)"
                );
            }
            if stop::requested().is_some() {
                return anyhow::Ok(false);
            }
            // `down`, or the `up` that owns it, removed the cluster: its rings will never
            // carry another event.
            if !record.exists() {
                return anyhow::Ok(true);
            }
        }
    })?;
    if removed {
        errln!(
            "cluster {} was removed; monitor stops (start it again once the cluster is up)",
            state.name
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_event(event: &MonitorEvent, json: bool) -> Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string(event).context("while encoding an event as JSON")?
        );
        return Ok(());
    }
    let endpoint = |ip: std::net::Ipv4Addr, port: Option<u16>| match port {
        Some(port) => format!("{ip}:{port}"),
        None => ip.to_string(),
    };
    println!(
        "{} [{}] {:<9} {:<22} {} ({}) {} {} -> {} {}B {}{}",
        clock_time(event.time_ns),
        event.node,
        event.program,
        event.reason,
        event.interface.as_deref().unwrap_or("?"),
        event.ifindex,
        event.protocol,
        endpoint(event.packet.src, event.packet.sport),
        endpoint(event.packet.dst, event.packet.dport),
        event.len,
        event.verdict.to_uppercase(),
        event
            .policy
            .as_deref()
            .map_or_else(String::new, |p| format!(" ({p})"))
    );
    Ok(())
}
