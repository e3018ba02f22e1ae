//! `aksnet bench --frontends`: new connections per second from the internet host to a
//! LoadBalancer frontend, through the fabric's load balancer and a node port, with
//! `externalTrafficPolicy: Cluster` and `Local`, on the eBPF and the iptables datapath.
//!
//! Two Azure CNI clusters (2 nodes, 1 pod each), one per datapath, each with two
//! LoadBalancer services backed by the same pod on node 0: with `Local` every flow
//! lands on node 0 and goes straight to the pod; with `Cluster` the load balancer
//! spreads flows over both nodes, and node 1's share crosses a second node (SNATed).
//! Measured as the main benchmark's connection rate (one client, the "as a user sees
//! it" view), round by round in alternation, medians reported. Its own clusters and
//! its own report, so the main benchmark's rounds are untouched.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::cells::Place;
use super::report::{number, Summary};
use super::workloads::{self, ConnectTarget, View};
use crate::cluster::{self, RunningCluster};
use crate::model::{self, Datapath};
use crate::plan;
use crate::table::Table;

/// The first service's backend port (the second's is the next one), and the services'
/// port on the frontend. Each service has a port of its own on the shared backend pod:
/// with the client's address kept, one port would see a new connection's tuple still
/// in TIME_WAIT from the other service's, whose TCP timestamps (another destination
/// address, another offset) are older, and refuse it (PAWS), which is what the rate
/// would then measure.
const TARGET_PORT: u16 = 17001;
const FRONTEND_PORT: u16 = 80;

/// The services of each cluster: (name, externalTrafficPolicy).
const SERVICES: [(&str, &str); 2] = [("cluster", "Cluster"), ("local", "Local")];

/// How much the run measures.
#[derive(Clone, Debug, PartialEq)]
pub struct FrontendBenchOptions {
    pub prefix: String,
    pub rounds: usize,
    pub duration: Duration,
    /// Connection attempts per measurement, at most.
    pub max_connections: usize,
}

/// One datapath and policy, over the rounds.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FrontendRate {
    pub datapath: String,
    pub policy: String,
    /// Connections per second.
    pub rate: Option<Summary>,
    pub samples: Vec<f64>,
    /// Connections that failed, over every round.
    pub failures: usize,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FrontendReport {
    pub rounds: usize,
    pub duration_seconds: f64,
    pub results: Vec<FrontendRate>,
}

/// A cluster of this run, removed when dropped (also on an error or Ctrl-C).
struct Built {
    name: String,
    running: Option<RunningCluster>,
}

impl Drop for Built {
    fn drop(&mut self) {
        if self.running.take().is_some() {
            if let Err(e) = cluster::remove(&self.name) {
                crate::errln!("removing benchmark cluster {}: {e:#}", self.name);
            }
        }
    }
}

fn description(name: &str, datapath: Datapath) -> String {
    let mut yaml = format!(
        "name: {name}\nnetworkPlugin: azure\ndatapath: {datapath}\nvnet:\n  addressSpace: 10.224.0.0/12\n  nodeSubnet: 10.224.0.0/24\nmaxPods: 30\nnodePools:\n  - {{ name: nodepool1, count: 2, osType: Linux }}\npodsPerNode: 1\nservices:\n"
    );
    for (i, (service, policy)) in SERVICES.iter().enumerate() {
        yaml.push_str(&format!(
            "  - {{ name: {service}, clusterIP: 10.0.0.{}, port: {FRONTEND_PORT}, targetPort: {}, backends: 1, type: LoadBalancer, externalTrafficPolicy: {policy} }}\n",
            20 + i,
            TARGET_PORT + i as u16
        ));
    }
    yaml
}

/// Where one measurement connects from and to.
struct Target {
    client: Place,
    backend: Place,
    backend_port: u16,
    frontend: SocketAddr,
}

fn build(name: &str, datapath: Datapath) -> Result<(Built, Vec<Target>)> {
    let cluster = model::load(&description(name, datapath))
        .context("the frontend benchmark's cluster description is invalid")?;
    let plan = plan::plan(&cluster).context("planning the frontend benchmark's cluster")?;
    let running = cluster::create(&plan)?;
    let state = running.state.clone();
    let built = Built {
        name: name.to_owned(),
        running: Some(running),
    };
    let client = Place {
        namespace: state.internet.namespace.clone(),
        address: state.internet.address,
    };
    let mut targets = Vec::new();
    for (service, _) in SERVICES {
        let exposure = state
            .exposures
            .iter()
            .find(|e| e.service == service)
            .with_context(|| format!("{service} is not exposed"))?;
        let frontend = exposure
            .frontend
            .with_context(|| format!("{service} has no frontend"))?;
        let backend = state
            .services
            .iter()
            .find(|s| s.name == service)
            .and_then(|s| s.backends.first())
            .with_context(|| format!("{service} has no backend"))?;
        let namespace = state
            .nodes
            .iter()
            .flat_map(|n| &n.pods)
            .find(|p| p.name == backend.pod)
            .map(|p| p.namespace.clone())
            .with_context(|| format!("the pod of {service}'s backend is not recorded"))?;
        targets.push(Target {
            client: client.clone(),
            backend: Place {
                namespace,
                address: backend.ip,
            },
            backend_port: backend.port,
            frontend: SocketAddr::from((frontend, FRONTEND_PORT)),
        });
    }
    Ok((built, targets))
}

/// Runs the measurement; `progress` gets a line per step.
pub fn run(options: &FrontendBenchOptions, progress: &dyn Fn(&str)) -> Result<FrontendReport> {
    if !(1..=20).contains(&options.rounds) {
        bail!("--rounds {}: use 1 to 20", options.rounds);
    }
    let datapaths = [Datapath::Ebpf, Datapath::Iptables];
    let mut clusters = Vec::new();
    for (datapath, tag) in datapaths.iter().zip(["fe", "fi"]) {
        super::interrupt::check()?;
        let name = format!("{}{tag}", options.prefix);
        progress(&format!("building cluster {name} (azure/{datapath})"));
        clusters.push(build(&name, *datapath)?);
    }
    let cells = datapaths.len() * SERVICES.len();
    let mut samples = vec![Vec::new(); cells];
    let mut failures = vec![0; cells];
    for round in 1..=options.rounds {
        progress(&format!(
            "round {round}/{}: connection rate to the frontends",
            options.rounds
        ));
        for (c, (built, targets)) in clusters.iter_mut().enumerate() {
            for (s, target) in targets.iter().enumerate() {
                super::interrupt::check()?;
                if let Some(running) = built.running.as_mut() {
                    // Each measurement starts from the same conntrack, as the main
                    // benchmark's connection workloads do.
                    running.datapath.collect_garbage()?;
                }
                let connect = ConnectTarget {
                    client: &target.client,
                    server: &target.backend,
                    listen_port: target.backend_port,
                    address: target.frontend,
                };
                let measured = workloads::connection_rate(
                    &connect,
                    1,
                    options.duration,
                    options.max_connections,
                    View::User,
                )?;
                let i = c * SERVICES.len() + s;
                samples[i].push(measured.rate);
                failures[i] += measured.failures;
            }
        }
    }
    for (built, _) in clusters {
        progress(&format!("removing cluster {}", built.name));
        drop(built);
    }
    let mut results = Vec::new();
    for (c, datapath) in datapaths.iter().enumerate() {
        for (s, (_, policy)) in SERVICES.iter().enumerate() {
            let i = c * SERVICES.len() + s;
            results.push(FrontendRate {
                datapath: datapath.to_string(),
                policy: (*policy).to_owned(),
                rate: Summary::of(&samples[i]),
                samples: samples[i].clone(),
                failures: failures[i],
            });
        }
    }
    Ok(FrontendReport {
        rounds: options.rounds,
        duration_seconds: options.duration.as_secs_f64(),
        results,
    })
}

impl FrontendReport {
    /// The table: one row per datapath and policy, eBPF's ratio to iptables per policy.
    pub fn render(&self) -> String {
        let mut table = Table::new(&[
            "FRONTEND",
            "POLICY",
            "DATAPATH",
            ">CONN/S (MIN–MAX)",
            ">VS IPTABLES",
            ">FAILED",
        ]);
        for r in &self.results {
            let iptables = self
                .results
                .iter()
                .find(|o| o.policy == r.policy && o.datapath == Datapath::Iptables.to_string())
                .and_then(|o| o.rate)
                .map(|s| s.median);
            let ratio = match (r.rate, iptables) {
                (Some(mine), Some(base)) if base > 0.0 => format!("{:.2}×", mine.median / base),
                _ => "-".to_owned(),
            };
            table.row(vec![
                "internet → LB".to_owned(),
                r.policy.clone(),
                r.datapath.clone(),
                r.rate.map_or_else(
                    || "-".to_owned(),
                    |s| format!("{} ({}–{})", number(s.median), number(s.min), number(s.max)),
                ),
                ratio,
                r.failures.to_string(),
            ]);
        }
        format!(
            "aksnet bench --frontends: {} rounds of {}s, one client, medians (min–max over rounds)\n{table}",
            self.rounds, self.duration_seconds
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_plans_two_load_balancers_per_datapath() {
        for datapath in [Datapath::Ebpf, Datapath::Iptables] {
            let cluster = model::load(&description("bnfe", datapath)).expect("valid");
            let plan = plan::plan(&cluster).expect("plans");
            assert_eq!(plan.exposures.len(), 2);
            assert!(plan.exposures.iter().all(|e| e.frontend.is_some()));
        }
    }
}
