//! The service sweep: kubenet clusters holding 10, 1,000, 10,000 … ClusterIP services,
//! all up at once and measured in alternation. For each: the connection rate to the
//! service at the end of the table (one at a time, in both views), the first-packet
//! latency (connect time) to it, and the time to program one more service into a
//! running node. iptables stops at [`IPTABLES_LIMIT`] services: beyond, building the
//! rules and every sync of them take minutes (they grow linearly; the table shows
//! the 10,000-service numbers to extrapolate from).
//!
//! On iptables "one more service" is what kube-proxy does on every sync: one
//! `iptables-restore --noflush` of its whole `nat` table (every `KUBE-*` chain declared,
//! so flushed, and refilled), whatever changed. Its cost grows with the table.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::report::Summary;
use super::workloads::{ConnectTarget, View};

use crate::datapath::ebpf::ServiceMaps;
use crate::state::ClusterState;
use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::cells::{self, Cell, CellKind};
use super::stats;
use super::workloads;
use crate::datapath::iptables;
use crate::datapath::iptables_rules::{proxy_options, render_node, Ruleset};
use crate::model::{self, NetworkPlugin};
use crate::netns;
use crate::plan::Plan;

/// One service count on one datapath, medians over the rounds.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepPoint {
    pub cell: String,
    pub services: usize,
    /// New connections/s to the last service, one at a time, as a user sees it.
    pub connect_user: Option<Summary>,
    /// The same with client and server pinned to one CPU.
    pub connect_pinned: Option<Summary>,
    pub first_packet_p50_us: Option<f64>,
    pub first_packet_p99_us: Option<f64>,
    /// Time to program one more service, milliseconds.
    pub program_one_more_ms: Option<f64>,
    pub rounds: Vec<SweepRound>,
    /// Why there are no numbers, when there are none.
    pub note: Option<String>,
}

/// One round at one sweep point.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepRound {
    pub first_packet_p50_us: f64,
    pub first_packet_p99_us: f64,
    pub program_one_more_ms: f64,
    pub connect_user: f64,
    pub connect_pinned: f64,
}

/// A sweep cluster and what is needed to grow it by one service.
struct SweepCell {
    cell: Cell,
    plan: Plan,
    services: usize,
}

/// The most services the iptables datapath is swept to (see the module's note).
pub const IPTABLES_LIMIT: usize = 10_000;

/// How long and how much each sweep measurement runs.
#[derive(Clone, Copy, Debug)]
pub struct SweepBounds {
    pub rounds: usize,
    /// First-packet samples per round.
    pub connections: usize,
    /// Duration of each connection-rate measurement, and its cap.
    pub duration: Duration,
    pub max_connections: usize,
}

/// Progress lines go through this (the CLI prints them on stderr).
pub type Progress<'a> = &'a dyn Fn(&str);

/// Runs the sweep over `points` service counts on both datapaths, `rounds` rounds,
/// `connections` per measurement.
pub fn run(
    prefix: &str,
    points: &[usize],
    bounds: SweepBounds,
    progress: Progress,
) -> Result<Vec<SweepPoint>> {
    let mut results = Vec::new();
    for datapath in [model::Datapath::Iptables, model::Datapath::Ebpf] {
        let kind = CellKind::cluster(NetworkPlugin::Kubenet, datapath);
        let (measured, skipped): (Vec<usize>, Vec<usize>) = points
            .iter()
            .partition(|&&n| datapath == model::Datapath::Ebpf || n <= IPTABLES_LIMIT);
        results.extend(sweep_datapath(kind, prefix, &measured, bounds, progress)?);
        results.extend(skipped.into_iter().map(|services| SweepPoint {
            cell: kind.to_string(),
            services,
            connect_user: None,
            connect_pinned: None,
            first_packet_p50_us: None,
            first_packet_p99_us: None,
            program_one_more_ms: None,
            rounds: Vec::new(),
            note: Some(format!(
                "not run: beyond {IPTABLES_LIMIT} services iptables takes minutes to build and to sync (linear in services)"
            )),
        }));
    }
    Ok(results)
}

fn sweep_datapath(
    kind: CellKind,
    prefix: &str,
    points: &[usize],
    bounds: SweepBounds,
    progress: Progress,
) -> Result<Vec<SweepPoint>> {
    let rounds = bounds.rounds;
    let Some(datapath) = kind.datapath() else {
        bail!("the sweep runs on clusters");
    };
    let tag = match datapath {
        model::Datapath::Iptables => 'i',
        model::Datapath::Ebpf => 'e',
    };
    let mut sweep_cells = Vec::with_capacity(points.len());
    for (i, &services) in points.iter().enumerate() {
        super::interrupt::check()?;
        let name = format!("{prefix}s{tag}{i}");
        progress(&format!(
            "sweep: building {kind} cluster {name} with {services} services"
        ));
        let started = Instant::now();
        let plan = kind.plan(&name, services)?;
        let target = cells::service_target(&plan, services - 1)?;
        let cell = Cell::from_plan(kind, &plan, Some(target))?;
        progress(&format!(
            "sweep: {name} up in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
        sweep_cells.push(SweepCell {
            cell,
            plan,
            services,
        });
    }

    let mut per_point: Vec<Vec<SweepRound>> = vec![Vec::new(); sweep_cells.len()];
    for round in 0..rounds {
        for (i, sweep) in sweep_cells.iter_mut().enumerate() {
            super::interrupt::check()?;
            progress(&format!(
                "sweep: round {}/{rounds}: {kind} with {} services",
                round + 1,
                sweep.services
            ));
            let target = sweep
                .cell
                .service
                .clone()
                .context("sweep cell without service")?;
            let connect = ConnectTarget {
                client: &target.client,
                server: &target.backend,
                listen_port: target.backend_port,
                address: SocketAddr::from((target.cluster_ip, target.port)),
            };
            let first = workloads::first_packet_latency(&connect, bounds.connections)?;
            let mut rates = [f64::NAN; 2];
            for (rate, view) in rates.iter_mut().zip(View::ALL) {
                super::collect_garbage(&mut sweep.cell)?;
                *rate = workloads::connection_rate(
                    &connect,
                    1,
                    bounds.duration,
                    bounds.max_connections,
                    view,
                )?
                .rate;
            }
            let programmed = program_one_more(&sweep.cell, &sweep.plan)?;
            per_point[i].push(SweepRound {
                first_packet_p50_us: first.p50_us().unwrap_or(f64::NAN),
                first_packet_p99_us: first.p99_us().unwrap_or(f64::NAN),
                program_one_more_ms: programmed.as_secs_f64() * 1000.0,
                connect_user: rates[0],
                connect_pinned: rates[1],
            });
        }
    }

    let results = sweep_cells
        .iter()
        .zip(per_point)
        .map(|(sweep, rounds)| {
            let values = |f: fn(&SweepRound) -> f64| rounds.iter().map(f).collect::<Vec<_>>();
            let column = |f: fn(&SweepRound) -> f64| stats::median(&values(f));
            SweepPoint {
                cell: kind.to_string(),
                services: sweep.services,
                connect_user: Summary::of(&values(|r| r.connect_user)),
                connect_pinned: Summary::of(&values(|r| r.connect_pinned)),
                first_packet_p50_us: column(|r| r.first_packet_p50_us),
                first_packet_p99_us: column(|r| r.first_packet_p99_us),
                program_one_more_ms: column(|r| r.program_one_more_ms),
                rounds,
                note: None,
            }
        })
        .collect();
    for sweep in sweep_cells {
        progress(&format!("sweep: removing {}", sweep.cell.name));
        sweep.cell.remove()?;
    }
    Ok(results)
}

/// Programs the services of `plan` plus one more into the first node of `cell`, timed,
/// the way the cell's datapath does it.
pub fn program_one_more(cell: &Cell, plan: &Plan) -> Result<Duration> {
    let mut grown = plan.clone();
    let mut extra = grown
        .services
        .last()
        .cloned()
        .context("the sweep plan has no services")?;
    extra.name = format!("svc-{}", grown.services.len());
    extra.cluster_ip = cells::service_ip(grown.services.len());
    grown.services.push(extra.clone());
    let running = cell
        .running
        .as_ref()
        .context("the sweep cell is not running")?;
    let node = running
        .state
        .nodes
        .first()
        .context("the sweep cluster has no node")?;
    match cell.kind.datapath() {
        Some(model::Datapath::Iptables) => {
            let masquerade_all = !netns::run_in(&node.namespace, || {
                Ok(std::path::Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists())
            })?;
            let payload =
                kube_proxy_sync(&render_node(&grown, proxy_options(&grown, masquerade_all)));
            let started = Instant::now();
            iptables::restore(&node.namespace, &payload)?;
            Ok(started.elapsed())
        }
        // The eBPF datapath: the new service (and its backends) written into the
        // running node's service maps, timed; removed again so every round starts from
        // the same table.
        Some(model::Datapath::Ebpf) => {
            let dir = ClusterState::pin_dir(&running.state.name).join(&node.name);
            let mut maps = ServiceMaps::open_pinned(&dir)?;
            let started = Instant::now();
            maps.upsert(&extra)?;
            let took = started.elapsed();
            maps.remove(extra.cluster_ip, extra.port, extra.protocol)?;
            Ok(took)
        }
        None => bail!("not available: the limit cell has no services"),
    }
}

/// kube-proxy's full sync of the `nat` table: every `KUBE-*` chain declared (so
/// `--noflush` flushes and refills it) with its rules; the built-in chains' jumps stay
/// as they are, and ip-masq-agent's chain is not kube-proxy's.
fn kube_proxy_sync(ruleset: &Ruleset) -> String {
    let mut sync = Ruleset::default();
    if let Some(nat) = ruleset.table("nat") {
        let table = sync.table_mut("nat");
        for chain in nat.chains.iter().filter(|c| c.starts_with("KUBE-")) {
            table.chain(chain);
        }
        for rule in nat.rules.iter().filter(|r| r.chain.starts_with("KUBE-")) {
            table.rule(&rule.chain, rule.spec.clone());
        }
    }
    sync.to_restore()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_redeclares_every_kube_chain_and_leaves_builtin_chains_alone() {
        let plan = CellKind::BASELINE.plan("bnx", 3).expect("plans");
        let payload = kube_proxy_sync(&render_node(&plan, proxy_options(&plan, false)));
        assert!(
            payload.starts_with("*nat\n:KUBE-SERVICES - [0:0]\n"),
            "{payload}"
        );
        assert!(!payload.contains("-A PREROUTING"), "{payload}");
        assert!(!payload.contains("IP-MASQ-AGENT"), "{payload}");
        assert_eq!(payload.matches("-A KUBE-SERVICES ").count(), 3);
        assert!(payload.ends_with("COMMIT\n"));
    }
}
