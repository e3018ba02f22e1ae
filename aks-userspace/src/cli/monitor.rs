//! `aksnet monitor [--cluster NAME] [--node N] [--type drop|trace] [--json]`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};

use aks_userspace::monitor::{clock_time, EventKind, Monitor, MonitorEvent};

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
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let _context = runtime.enter();
    let mut interrupt = signal(SignalKind::interrupt()).context("catching SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("catching SIGTERM")?;
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
    runtime.block_on(async {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        loop {
            tokio::select! {
                _ = interrupt.recv() => break,
                _ = terminate.recv() => break,
                _ = tick.tick() => {
                    for event in monitor.poll() {
                        print_event(&event, json)?;
                    }
                }
            }
        }
        anyhow::Ok(())
    })?;
    for event in monitor.poll() {
        print_event(&event, json)?;
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
        "{} [{}] {:<9} {:<22} {} ({}) {} {} -> {} {}B {}",
        clock_time(event.time_ns),
        event.node,
        event.program,
        event.reason,
        event.interface.as_deref().unwrap_or("?"),
        event.ifindex,
        event.protocol,
        endpoint(event.src, event.sport),
        endpoint(event.dst, event.dport),
        event.len,
        event.verdict.to_uppercase()
    );
    Ok(())
}
