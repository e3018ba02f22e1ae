//! The agent's loop: each interval, read the cluster's record (services change under
//! it), keep the nodes' health servers in step, probe every node of every frontend from
//! the fabric, write the probe record, and when a node went in or out of rotation write
//! the fabric's load balancer again. Ends on SIGTERM/SIGINT/SIGHUP or when the record is
//! gone; what it opened (sockets) goes with the process.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cluster_lock::ClusterLock;
use crate::errln;
use crate::netns;
use crate::state::{ClusterState, Record};

use super::health_server::HealthServers;
use super::prober::{self, Target};
use super::record::ProbeRecord;
use super::ProbeSettings;

/// Runs the agent of `cluster` until it is asked to stop or the cluster is gone.
pub fn run(cluster: &str, settings: ProbeSettings) -> Result<()> {
    crate::stop::install()?;
    let _lock = ClusterLock::agent(cluster)?;
    errln!(
        "probe agent of {cluster} (pid {}): every {} ms, threshold {}",
        std::process::id(),
        settings.interval.as_millis(),
        settings.threshold
    );
    let mut servers = HealthServers::default();
    let mut record = ProbeRecord {
        agent_pid: std::process::id(),
        interval_ms: settings.interval.as_millis() as u64,
        threshold: settings.threshold,
        frontends: Vec::new(),
    };
    // The nodes in rotation the fabric was last written with (`up` and `aksnet
    // services` write what the plan says, which is where an undecided probe stands).
    let mut programmed: Option<Vec<(String, Vec<String>)>> = None;
    let mut pending = false;
    loop {
        let started = Instant::now();
        if crate::stop::requested().is_some() {
            break;
        }
        let state = match ClusterState::read(cluster) {
            Record::Valid(state) => *state,
            Record::Missing => {
                errln!("cluster {cluster} has no record any more; stopping");
                break;
            }
            Record::Untrusted(why) => {
                errln!("cluster {cluster}'s record cannot be used ({why}); stopping");
                break;
            }
        };
        for error in servers.sync(&state) {
            errln!("health server {error}");
        }
        let mut frontends = prober::frontends(&state);
        prober::carry_over(&mut frontends, &record.frontends);
        record.frontends = frontends;
        let before = prober::rotation(&record, &state);
        let programmed_now = programmed.get_or_insert(before);
        round(&state.vnet, &mut record, settings)?;
        if let Err(e) = record.save(cluster) {
            if !ClusterState::dir(cluster).is_dir() {
                break;
            }
            errln!("writing the probe record: {e:#}");
        }
        let rotation = prober::rotation(&record, &state);
        if *programmed_now != rotation || pending {
            match reprogram(cluster, &state.vnet) {
                Ok(true) => {
                    *programmed_now = rotation;
                    pending = false;
                }
                // Another command holds the change lock: try again next round.
                Ok(false) => pending = true,
                Err(e) => {
                    errln!("reprogramming the load balancer: {e:#}");
                    pending = true;
                }
            }
        }
        wait_until(started + settings.interval, &mut servers);
    }
    drop(servers);
    Ok(())
}

/// Probes every target once, all at once, from the fabric's namespace.
fn round(vnet: &str, record: &mut ProbeRecord, settings: ProbeSettings) -> Result<()> {
    let targets = prober::targets(&record.frontends);
    if targets.is_empty() {
        return Ok(());
    }
    let timeout = settings.timeout();
    let results: Vec<(Target, bool, String, u64)> = netns::run_in(vnet, || {
        Ok(std::thread::scope(|scope| {
            let probes: Vec<_> = targets
                .iter()
                .map(|target| {
                    // Threads made here are in the fabric's namespace, as their parent.
                    scope.spawn(move || {
                        let at = prober::now_ms();
                        let (ok, seen) = prober::probe(target.address, timeout);
                        (target.clone(), ok, seen, at)
                    })
                })
                .collect();
            probes.into_iter().filter_map(|p| p.join().ok()).collect()
        }))
    })
    .context("probing from the fabric")?;
    for (target, ok, seen, at) in results {
        let node = &mut record.frontends[target.frontend].nodes[target.node];
        let before = node.state;
        if prober::record(node, ok, seen, settings.threshold, at) {
            errln!(
                "{} frontend {}: node {} {:?} -> {:?} ({} × {})",
                record.frontends[target.frontend].service,
                record.frontends[target.frontend].frontend,
                record.frontends[target.frontend].nodes[target.node].node,
                before,
                record.frontends[target.frontend].nodes[target.node].state,
                record.frontends[target.frontend].nodes[target.node]
                    .last_result
                    .as_deref()
                    .unwrap_or("?"),
                settings.threshold
            );
        }
    }
    Ok(())
}

/// Writes the fabric again from the saved description and the probe record, under the
/// change lock if it is free now. `Ok(false)`: busy, not written.
fn reprogram(cluster: &str, vnet: &str) -> Result<bool> {
    let Some(_change) = ClusterLock::try_change(cluster)? else {
        return Ok(false);
    };
    let description = ClusterState::load_description(cluster)?;
    let model = crate::model::validate(&description)
        .map_err(|e| anyhow::anyhow!("planning the saved description: {e}"))?;
    let plan = crate::plan::plan(&model)?;
    crate::cluster::reprogram_fabric(&plan, vnet)?;
    Ok(true)
}

/// Sleeps until `deadline`, waking early for a stop signal, and meanwhile closes the
/// health servers of node namespaces that went (see `HealthServers::close_gone`).
fn wait_until(deadline: Instant, servers: &mut HealthServers) {
    while crate::stop::requested().is_none() {
        servers.close_gone();
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
}
