//! `aksnet check`: probes between the cluster's namespaces, each beside what AKS would
//! do. For every source and destination: whether a connection was made, which source
//! address the destination saw, what the cluster model expects ([`expect`]) and the
//! verdict. This is where NAT (or its absence) and every refusal become visible, and
//! where a datapath that does otherwise fails.
//!
//! Every probe runs in-process: the listener socket is created inside the destination's
//! namespace and the client socket inside the source's (a socket stays in the namespace
//! it was created in), so no helper processes are started.
//!
//! `service` probes ClusterIPs the same way: listeners in every backend pod, a client
//! that connects N times and counts which backend answered.

pub mod expect;
pub mod expect_file;
mod frontend;
mod listener;
mod matrix;
mod policy_matrix;
mod probe;
mod report;
mod service;
mod verdict;

use anyhow::Result;
use serde::Serialize;

pub use expect::{Expectation, NetworkModel};
pub use frontend::{check_frontends, FrontendCheck, FrontendExpectation, FRONTEND_ATTEMPT_TIMEOUT};
pub use matrix::{cluster_endpoints, cluster_matrix};
pub use policy_matrix::policy_matrix;
pub use probe::{
    run, Endpoint, EndpointKind, Probe, ProbeResult, BLOCKED_TIMEOUT, CHECK_PORT, REACHABLE_TIMEOUT,
};
pub use report::{render_checked, render_frontend_checks, render_service_checks, render_table};
pub use service::{
    backend_listeners, probe_service, probe_service_at, probe_services, BackendAnswers,
    BackendListener, ServiceProbeResult, DEFAULT_ATTEMPTS,
};
pub use verdict::{Outcome, Verdict};

use crate::state::ClusterState;

/// One row of `check`: what was observed, what the model expects, the verdict.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckRow {
    #[serde(flatten)]
    pub observed: ProbeResult,
    pub expected: Expectation,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// The standard matrix of `state` with the expectations of `model`; probes expected to
/// be blocked wait only [`BLOCKED_TIMEOUT`].
pub fn expected_matrix(
    state: &ClusterState,
    model: &NetworkModel,
) -> (Vec<Endpoint>, Vec<(Probe, Expectation)>) {
    let (endpoints, probes) = cluster_matrix(state);
    let checked = with_expectations(model, &endpoints, probes);
    (endpoints, checked)
}

/// Each probe with what `model` expects of it, waiting only [`BLOCKED_TIMEOUT`] when it
/// should be blocked.
pub fn with_expectations(
    model: &NetworkModel,
    endpoints: &[Endpoint],
    probes: Vec<Probe>,
) -> Vec<(Probe, Expectation)> {
    probes
        .into_iter()
        .map(|probe| {
            let expectation = expect::expect_flow(
                model,
                &expect::Flow {
                    source: &endpoints[probe.source],
                    destination: &endpoints[probe.destination],
                    protocol: probe.protocol,
                    port: probe.port,
                },
            );
            let timeout = if expectation.is_blocked() {
                BLOCKED_TIMEOUT
            } else {
                REACHABLE_TIMEOUT
            };
            (Probe { timeout, ..probe }, expectation)
        })
        .collect()
}

/// Runs the probes and judges each against its expectation.
pub fn run_checked(
    endpoints: &[Endpoint],
    checks: Vec<(Probe, Expectation)>,
) -> Result<Vec<CheckRow>> {
    let (probes, expectations): (Vec<Probe>, Vec<Expectation>) = checks.into_iter().unzip();
    let results = run(endpoints, &probes)?;
    Ok(results
        .into_iter()
        .zip(expectations)
        .map(|(observed, expected)| CheckRow {
            verdict: verdict::judge(&expected, &observed),
            observed,
            expected,
        })
        .collect())
}

/// One service probe judged: per backend, what it should see, and the verdict.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceCheck {
    #[serde(flatten)]
    pub observed: ServiceProbeResult,
    /// In the order of `observed.backends`.
    pub backend_checks: Vec<BackendCheck>,
    /// Pass when every backend passed and every connection was answered.
    #[serde(flatten)]
    pub verdict: Verdict,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendCheck {
    pub pod: String,
    pub expected: Expectation,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Probes every service of `state` and judges each backend against `model`.
pub fn check_services(
    state: &ClusterState,
    model: &NetworkModel,
    attempts: usize,
) -> Result<Vec<ServiceCheck>> {
    let endpoints = cluster_endpoints(state);
    let results = probe_services(state, attempts)?;
    Ok(results
        .into_iter()
        .map(|observed| judge_service(model, &endpoints, observed))
        .collect())
}

fn judge_service(
    model: &NetworkModel,
    endpoints: &[Endpoint],
    observed: ServiceProbeResult,
) -> ServiceCheck {
    let client = endpoints.iter().find(|e| e.label == observed.client);
    let backend_checks: Vec<BackendCheck> = observed
        .backends
        .iter()
        .map(|b| {
            let backend = endpoints.iter().find(|e| e.label == b.pod);
            let expected = match (client, backend) {
                (Some(client), Some(backend)) => expect::expect_service_backend(
                    model,
                    client,
                    backend,
                    observed.protocol,
                    b.port,
                ),
                _ => Expectation::Reachable {
                    source: None,
                    why: "the client or backend is not an endpoint of the cluster".into(),
                },
            };
            BackendCheck {
                pod: b.pod.clone(),
                verdict: verdict::judge_backend(&expected, b.answers, &b.seen_sources),
                expected,
            }
        })
        .collect();
    let failed: Vec<&str> = backend_checks
        .iter()
        .filter(|b| !b.verdict.passed())
        .map(|b| b.pod.as_str())
        .collect();
    let verdict = if observed.answered < observed.attempts {
        Verdict::fail(format!(
            "expected every connection answered, saw {} of {} ({})",
            observed.answered,
            observed.attempts,
            observed.error.as_deref().unwrap_or("no answer")
        ))
    } else if !failed.is_empty() {
        Verdict::fail(format!("backends {} did not pass", failed.join(", ")))
    } else {
        Verdict::pass()
    };
    ServiceCheck {
        observed,
        backend_checks,
        verdict,
    }
}

/// Namespaces the cluster's record lists that do not exist: a half-built cluster (an
/// `up` killed while building) or one damaged by hand. Its matrix would not be healthy.
pub fn missing_namespaces(state: &ClusterState) -> Result<Vec<String>> {
    let present = crate::netns::list_with_prefix(&crate::topology::layout::prefix(&state.name))?;
    Ok(state
        .namespaces
        .iter()
        .filter(|n| !present.contains(n))
        .cloned()
        .collect())
}
