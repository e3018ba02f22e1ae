//! The policy sweep: what network policy costs a new connection as its rules grow.
//! Azure CNI clusters whose pods are all isolated for ingress by one NetworkPolicy of
//! 10, 1,000, 10,000 … ingress rules: every rule but the last allows one outside
//! address (an `ipBlock` /32 in 100.64.0.0/10, which no pod or host has), the last one
//! allows the cluster's pods on the measured port. So every new connection is decided
//! by the last rule: on iptables (Azure NPM's engine) after a walk through every rule
//! before it, on eBPF (Cilium) by one lookup of (identity, port, protocol) whatever the
//! count. Measured as the service sweep measures: first-packet latency (connect time)
//! and the one-at-a-time connection rate in both views, pod to pod across the VNet,
//! round by round in alternation.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use anyhow::{bail, Result};
use serde::Serialize;

use super::cells::{self, Cell, CellKind};
use super::report::Summary;
use super::stats;
use super::sweep::{Progress, SweepBounds};
use super::workloads::{self, ConnectTarget, View};
use crate::model::{self, NetworkPlugin};
use crate::plan::Plan;

/// One rule count on one datapath, medians over the rounds.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPoint {
    pub cell: String,
    /// The policy engine enforcing the rules (`azure`, `cilium`).
    pub engine: String,
    pub rules: usize,
    /// New connections/s pod to pod, one at a time, as a user sees it.
    pub connect_user: Option<Summary>,
    /// The same with client and server pinned to one CPU.
    pub connect_pinned: Option<Summary>,
    pub first_packet_p50_us: Option<f64>,
    pub first_packet_p99_us: Option<f64>,
    pub rounds: Vec<PolicyRound>,
}

/// One round at one rule count.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRound {
    pub first_packet_p50_us: f64,
    pub first_packet_p99_us: f64,
    pub connect_user: f64,
    pub connect_pinned: f64,
}

/// The most rules a point may have: one `IPCACHE` entry and one `POLICY` key each on
/// eBPF, within both maps' capacities with room for the pods.
pub const MAX_RULES: usize = 15_000;

/// Where the outside addresses of the allow rules come from (RFC 6598 shared address
/// space: no namespace of a cluster has one).
const OUTSIDE_BASE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 0);

/// The port every rule allows and the workloads connect to.
const PORT: u16 = workloads::CONNECT_PORT;

/// The cell of `datapath` (Azure CNI, pods in the node subnet: both engines run there)
/// and its AKS engine: Azure NPM on iptables, Cilium on eBPF.
fn cell_of(datapath: model::Datapath) -> (CellKind, &'static str) {
    let engine = match datapath {
        model::Datapath::Iptables => "azure",
        model::Datapath::Ebpf => "cilium",
    };
    (CellKind::cluster(NetworkPlugin::Azure, datapath), engine)
}

/// The plan of the policy cell named `name` on `datapath` with `rules` ingress rules.
pub fn plan(name: &str, datapath: model::Datapath, rules: usize) -> Result<Plan> {
    if !(1..=MAX_RULES).contains(&rules) {
        bail!("--policy-sweep {rules}: rule counts must be 1 to {MAX_RULES}");
    }
    let (kind, engine) = cell_of(datapath);
    let mut yaml = kind.description(name, 0)?;
    yaml.push_str(&format!("networkPolicy: {engine}\nnetworkPolicies:\n"));
    yaml.push_str(
        "  - metadata: { name: bench-rules }\n    spec:\n      podSelector: {}\n      policyTypes: [Ingress]\n      ingress:\n",
    );
    for i in 0..rules - 1 {
        let outside = Ipv4Addr::from(u32::from(OUTSIDE_BASE) + i as u32);
        yaml.push_str(&format!(
            "        - {{ from: [{{ ipBlock: {{ cidr: {outside}/32 }} }}], ports: [{{ protocol: TCP, port: {PORT} }}] }}\n"
        ));
    }
    yaml.push_str(&format!(
        "        - {{ from: [{{ podSelector: {{}} }}], ports: [{{ protocol: TCP, port: {PORT} }}] }}\n"
    ));
    cells::plan_for(&yaml)
}

/// Runs the sweep over `points` rule counts on both datapaths.
pub fn run(
    prefix: &str,
    points: &[usize],
    bounds: SweepBounds,
    progress: Progress,
) -> Result<Vec<PolicyPoint>> {
    let mut results = Vec::new();
    for datapath in [model::Datapath::Iptables, model::Datapath::Ebpf] {
        results.extend(sweep_datapath(datapath, prefix, points, bounds, progress)?);
    }
    Ok(results)
}

fn sweep_datapath(
    datapath: model::Datapath,
    prefix: &str,
    points: &[usize],
    bounds: SweepBounds,
    progress: Progress,
) -> Result<Vec<PolicyPoint>> {
    let (kind, engine) = cell_of(datapath);
    let tag = match datapath {
        model::Datapath::Iptables => 'i',
        model::Datapath::Ebpf => 'e',
    };
    let mut sweep_cells = Vec::with_capacity(points.len());
    for (i, &rules) in points.iter().enumerate() {
        super::interrupt::check()?;
        let name = format!("{prefix}p{tag}{i}");
        progress(&format!(
            "policy sweep: building {kind} cluster {name} ({engine}) with {rules} policy rules"
        ));
        let started = Instant::now();
        let plan = plan(&name, datapath, rules)?;
        let cell = Cell::from_plan(kind, &plan, None)?;
        progress(&format!(
            "policy sweep: {name} up in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
        sweep_cells.push((cell, rules));
    }

    let mut per_point: Vec<Vec<PolicyRound>> = vec![Vec::new(); sweep_cells.len()];
    for round in 0..bounds.rounds {
        for (i, (cell, rules)) in sweep_cells.iter_mut().enumerate() {
            super::interrupt::check()?;
            progress(&format!(
                "policy sweep: round {}/{}: {kind} with {rules} rules",
                round + 1,
                bounds.rounds
            ));
            let (client, server) = (cell.client.clone(), cell.server.clone());
            let connect = ConnectTarget {
                client: &client,
                server: &server,
                listen_port: PORT,
                address: SocketAddr::from((server.address, PORT)),
            };
            let first = workloads::first_packet_latency(&connect, bounds.connections)?;
            let mut rates = [f64::NAN; 2];
            for (rate, view) in rates.iter_mut().zip(View::ALL) {
                super::collect_garbage(cell)?;
                *rate = workloads::connection_rate(
                    &connect,
                    1,
                    bounds.duration,
                    bounds.max_connections,
                    view,
                )?
                .rate;
            }
            per_point[i].push(PolicyRound {
                first_packet_p50_us: first.p50_us().unwrap_or(f64::NAN),
                first_packet_p99_us: first.p99_us().unwrap_or(f64::NAN),
                connect_user: rates[0],
                connect_pinned: rates[1],
            });
        }
    }

    let results = sweep_cells
        .iter()
        .zip(per_point)
        .map(|((_, rules), rounds)| {
            let values = |f: fn(&PolicyRound) -> f64| rounds.iter().map(f).collect::<Vec<_>>();
            PolicyPoint {
                cell: kind.to_string(),
                engine: engine.to_owned(),
                rules: *rules,
                connect_user: Summary::of(&values(|r| r.connect_user)),
                connect_pinned: Summary::of(&values(|r| r.connect_pinned)),
                first_packet_p50_us: stats::median(&values(|r| r.first_packet_p50_us)),
                first_packet_p99_us: stats::median(&values(|r| r.first_packet_p99_us)),
                rounds,
            }
        })
        .collect();
    for (cell, _) in sweep_cells {
        progress(&format!("policy sweep: removing {}", cell.name));
        cell.remove()?;
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::policy::NetworkPolicyEngine;

    #[test]
    fn every_pod_is_isolated_and_only_the_last_rule_admits_the_client() {
        for datapath in [model::Datapath::Iptables, model::Datapath::Ebpf] {
            let plan = plan("bpx", datapath, 1_000).expect("plans");
            let expected = match datapath {
                model::Datapath::Iptables => NetworkPolicyEngine::Azure,
                model::Datapath::Ebpf => NetworkPolicyEngine::Cilium,
            };
            assert_eq!(plan.policy.engine, expected);
            assert_eq!(plan.policy.policies.len(), 1);
            let rules = plan.policy.policies[0]
                .rules(model::policy::PolicyType::Ingress)
                .expect("ingress rules");
            assert_eq!(rules.len(), 1_000);
            let flow = |port| crate::policy::PolicyFlow {
                source: crate::policy::PolicyEndpoint::in_plan(&plan, plan.nodes[0].pods[0].ip),
                destination: crate::policy::PolicyEndpoint::in_plan(
                    &plan,
                    plan.nodes[1].pods[0].ip,
                ),
                protocol: model::Protocol::Tcp,
                port,
            };
            let verdict = crate::policy::evaluate(&plan.policy, &flow(PORT));
            assert_eq!(
                verdict,
                crate::policy::PolicyVerdict::Allowed {
                    egress: crate::policy::Allowance::NotIsolated,
                    ingress: crate::policy::Allowance::Policy("default/bench-rules".to_owned()),
                },
                "{datapath}"
            );
            let closed = crate::policy::evaluate(&plan.policy, &flow(PORT + 1));
            assert!(!closed.is_allowed(), "{datapath}: other ports stay closed");
        }
    }

    #[test]
    fn rule_counts_are_bounded() {
        assert!(plan("bpx", model::Datapath::Ebpf, 0).is_err());
        assert!(plan("bpx", model::Datapath::Ebpf, MAX_RULES + 1).is_err());
    }
}
