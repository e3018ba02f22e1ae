//! Service probes: does a ClusterIP reach its backends, and how are connections spread
//! over them? Every backend pod gets a listener on the service's targetPort (TCP or
//! UDP) that answers with the pod's name and the peer address it saw; a client inside
//! a pod (or node) namespace then connects to clusterIP:port a bounded number of times,
//! each time from a new source port, and counts who answered.
//!
//! Datapath-neutral on purpose: the iptables datapath answers through kube-proxy's
//! chains, the eBPF one will through its service maps, and the same probe measures both.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::listener::{self, Listener};
use super::probe::{ask_tcp, ask_udp, describe_error};
use super::Endpoint;
use crate::model::Protocol;
use crate::netns;
use crate::plan::ServicePlan;
use crate::state::ClusterState;

/// Connections per service `check --services` makes: enough that each of a handful of
/// backends answers with near certainty (3 backends: a backend misses all 60 with
/// probability (2/3)^60 ≈ 3e-11), few enough to stay under a second or two.
pub const DEFAULT_ATTEMPTS: usize = 60;

/// How long one attempt waits to connect and for the answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1000);

/// After this many failures in a row and no answer at all, the service is taken as
/// unreachable and the remaining attempts are skipped (keeps a broken datapath's check
/// short instead of waiting out every timeout).
pub(super) const GIVE_UP_AFTER: usize = 3;

/// A backend the probe listens as: the pod's name and namespace, its address and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendListener {
    pub pod: String,
    pub namespace: String,
    pub address: Ipv4Addr,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendAnswers {
    pub pod: String,
    pub address: Ipv4Addr,
    /// The port the backend listens on (the service's targetPort).
    pub port: u16,
    pub answers: usize,
    /// Source addresses the backend saw (the client's own, or an address it was
    /// masqueraded to, e.g. for hairpin traffic).
    pub seen_sources: BTreeSet<Ipv4Addr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceProbeResult {
    pub service: String,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub client: String,
    pub client_address: Ipv4Addr,
    pub attempts: usize,
    pub answered: usize,
    /// Every backend, in the service's order, with how often it answered.
    pub backends: Vec<BackendAnswers>,
    /// The first failure, if any attempt failed.
    pub error: Option<String>,
}

impl ServiceProbeResult {
    /// Whether every backend answered at least once.
    pub fn all_backends_answered(&self) -> bool {
        self.backends.iter().all(|b| b.answers > 0)
    }
}

/// Probes every service of `state` from its first pod, `attempts` connections each.
pub fn probe_services(state: &ClusterState, attempts: usize) -> Result<Vec<ServiceProbeResult>> {
    let Some((node, pod)) = state
        .nodes
        .iter()
        .find_map(|n| n.pods.first().map(|p| (n, p)))
    else {
        bail!("cluster {} has no pods to probe services from", state.name);
    };
    let client = Endpoint {
        label: pod.name.clone(),
        kind: super::EndpointKind::Pod {
            node: node.name.clone(),
        },
        namespace: pod.namespace.clone(),
        address: pod.address,
    };
    state
        .services
        .iter()
        .map(|service| {
            let backends = backend_listeners(state, service)?;
            probe_service(service, &backends, &client, attempts)
        })
        .collect()
}

/// Where each backend of `service` listens: its pod's namespace, address and port.
pub fn backend_listeners(
    state: &ClusterState,
    service: &ServicePlan,
) -> Result<Vec<BackendListener>> {
    service
        .backends
        .iter()
        .map(|b| {
            let namespace = state
                .nodes
                .iter()
                .flat_map(|n| &n.pods)
                .find(|p| p.name == b.pod)
                .map(|p| p.namespace.clone())
                .with_context(|| {
                    format!(
                        "backend {} of service {} is not a pod of the cluster",
                        b.pod, service.name
                    )
                })?;
            Ok(BackendListener {
                pod: b.pod.clone(),
                namespace,
                address: b.ip,
                port: b.port,
            })
        })
        .collect()
}

/// Opens a listener in every backend's namespace, makes `attempts` connections to the
/// service from `client`'s namespace, and closes the listeners again.
pub fn probe_service(
    service: &ServicePlan,
    backends: &[BackendListener],
    client: &Endpoint,
    attempts: usize,
) -> Result<ServiceProbeResult> {
    let target = SocketAddr::from((service.cluster_ip, service.port));
    probe_service_at(service, target, backends, client, attempts, ATTEMPT_TIMEOUT)
}

/// As [`probe_service`], through `target` instead of the ClusterIP: a node's NodePort
/// or a load balancer frontend, each attempt waiting up to `timeout`.
pub fn probe_service_at(
    service: &ServicePlan,
    target: SocketAddr,
    backends: &[BackendListener],
    client: &Endpoint,
    attempts: usize,
    timeout: Duration,
) -> Result<ServiceProbeResult> {
    probe_service_giving_up_after(
        service,
        target,
        backends,
        client,
        (attempts, GIVE_UP_AFTER),
        timeout,
    )
}

/// As [`probe_service_at`], giving up only after `attempts.1` failures in a row with no
/// answer at all. A target expected to answer only some connections (a random share
/// of paths denied) must not be given up after the first few denials: with two equal
/// paths, three leading denials happen one time in eight.
pub fn probe_service_giving_up_after(
    service: &ServicePlan,
    target: SocketAddr,
    backends: &[BackendListener],
    client: &Endpoint,
    (attempts, give_up_after): (usize, usize),
    timeout: Duration,
) -> Result<ServiceProbeResult> {
    let listeners = backends
        .iter()
        .map(|b| Listener::open(&b.namespace, b.port, service.protocol, &b.pod))
        .collect::<Result<Vec<_>>>()?;
    let outcomes = listener::serve(&listeners, || {
        connect_repeatedly(service, target, client, (attempts, give_up_after), timeout)
    })?;

    let mut by_pod: BTreeMap<String, (usize, BTreeSet<Ipv4Addr>)> = BTreeMap::new();
    let mut answered = 0;
    let mut error = None;
    for outcome in &outcomes {
        match outcome {
            Ok((pod, seen)) => {
                answered += 1;
                let entry = by_pod.entry(pod.clone()).or_default();
                entry.0 += 1;
                entry.1.insert(*seen);
            }
            Err(e) => {
                error.get_or_insert_with(|| e.clone());
            }
        }
    }
    Ok(ServiceProbeResult {
        service: service.name.clone(),
        cluster_ip: service.cluster_ip,
        port: service.port,
        protocol: service.protocol,
        client: client.label.clone(),
        client_address: client.address,
        attempts: outcomes.len(),
        answered,
        backends: backends
            .iter()
            .map(|b| {
                let (answers, seen_sources) = by_pod.remove(&b.pod).unwrap_or_default();
                BackendAnswers {
                    pod: b.pod.clone(),
                    address: b.address,
                    port: b.port,
                    answers,
                    seen_sources,
                }
            })
            .collect(),
        error,
    })
}

/// One answer: which backend pod, and which source address it saw.
type Answer = std::result::Result<(String, Ipv4Addr), String>;

/// The attempts, each on a new socket (so a new source port and a new load-balancing
/// choice), from a thread inside the client's namespace.
fn connect_repeatedly(
    service: &ServicePlan,
    target: SocketAddr,
    client: &Endpoint,
    (attempts, give_up_after): (usize, usize),
    timeout: Duration,
) -> Result<Vec<Answer>> {
    netns::run_in(&client.namespace, || {
        let mut outcomes = Vec::with_capacity(attempts);
        for _ in 0..attempts {
            let outcome = match service.protocol {
                Protocol::Tcp => ask_tcp(target, timeout),
                Protocol::Udp => ask_udp(target, timeout),
            }
            .map_err(|e| describe_error(&e, timeout))
            .and_then(|line| {
                listener::parse_answer(&line).map_err(|e| format!("{:#}", e.root_cause()))
            });
            outcomes.push(outcome);
            let failing = outcomes.iter().rev().take_while(|o| o.is_err()).count();
            if failing >= give_up_after && failing == outcomes.len() {
                break;
            }
        }
        Ok(outcomes)
    })
    .with_context(|| format!("probing service {} from {}", service.name, client.label))
}
