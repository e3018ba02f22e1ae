//! `check --frontends`: LoadBalancer services reached from outside through their public
//! frontend, judged against what AKS does:
//! - a client outside `loadBalancerSourceRanges` is blocked (AKS writes the ranges as
//!   NSG rules), as is one an NSG rule denies towards the nodes' NodePort, and every
//!   client when no node answers the health probe;
//! - `externalTrafficPolicy: Local`: every connection answered, the backend sees the
//!   client's own address (only nodes with a backend take traffic; any other would drop);
//! - `Cluster`: every connection answered, the backend sees the address of the node that
//!   took it (SNAT), and every node takes some (any node forwards). On kubenet a node
//!   forwarding to a backend on its own bridge masquerades to `cbr0`'s address. The eBPF
//!   datapath SNATs only towards a backend on another node (as Cilium): a node handing
//!   the flow to its own backend keeps the client's address.
//! - NetworkPolicy on an isolated backend judges the source its node sees: the client
//!   when the node that took the connection holds the backend (DNAT only; the SNAT of
//!   `Cluster` comes after the policy, in POSTROUTING), the address of the node that
//!   forwarded it otherwise (SNATed there). So with `Cluster` a policy admitting the
//!   client can still deny the paths through other nodes: the frontend is then partly
//!   reachable, as in a real cluster.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use super::expect::{first_nsg_match, Flow, NetworkModel};
use super::service::{backend_listeners, probe_service_giving_up_after, GIVE_UP_AFTER};
use super::verdict::Verdict;
use super::{Endpoint, EndpointKind};
use crate::fabric::loadbalancer::answering_nodes;
use crate::model::loadbalancer::{Exposure, ExternalTrafficPolicy, ServiceType};
use crate::model::nsg::Access;
use crate::model::{Datapath, NetworkPlugin, PodNetwork};
use crate::plan::ServicePlan;
use crate::policy::{PolicyEndpoint, PolicyFlow, PolicyVerdict};
use crate::state::ClusterState;

/// How long one connection through a frontend may take: past TCP's 1 s initial
/// retransmission timeout, so one SYN lost on the way (two NATs, possibly a second node)
/// is retransmitted as a real client's would be, instead of failing the row.
pub const FRONTEND_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);

/// What a frontend should do for one client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum FrontendExpectation {
    Blocked {
        reason: String,
    },
    /// Answered every time; the backend sees only addresses of `allowed`, and (when
    /// `every` holds) each set in `per_node` at least once.
    Reachable {
        why: String,
        allowed: BTreeSet<Ipv4Addr>,
        per_node: Vec<BTreeSet<Ipv4Addr>>,
    },
    /// Some paths are denied by NetworkPolicy, others allowed: not every connection is
    /// answered, and the answered ones show only addresses of `allowed`.
    Partly {
        why: String,
        allowed: BTreeSet<Ipv4Addr>,
    },
}

/// One frontend probed from one client, judged.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FrontendCheck {
    pub service: String,
    pub frontend: SocketAddr,
    pub policy: ExternalTrafficPolicy,
    pub client: String,
    pub client_address: Ipv4Addr,
    pub attempts: usize,
    pub answered: usize,
    pub seen_sources: BTreeSet<Ipv4Addr>,
    pub expected: FrontendExpectation,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Probes every LoadBalancer frontend of `state` from the internet and on-prem hosts,
/// `attempts` connections each.
pub fn check_frontends(
    state: &ClusterState,
    model: &NetworkModel,
    attempts: usize,
) -> Result<Vec<FrontendCheck>> {
    let clients = [
        Endpoint {
            label: "internet".into(),
            kind: EndpointKind::Internet,
            namespace: state.internet.namespace.clone(),
            address: state.internet.address,
        },
        Endpoint {
            label: "on-prem".into(),
            kind: EndpointKind::OnPrem,
            namespace: state.on_prem.namespace.clone(),
            address: state.on_prem.address,
        },
    ];
    let mut checks = Vec::new();
    for exposure in &state.exposures {
        let (Some(frontend), ServiceType::LoadBalancer) =
            (exposure.frontend, exposure.service_type)
        else {
            continue;
        };
        let service = state
            .services
            .iter()
            .find(|s| s.name == exposure.service)
            .with_context(|| {
                format!("LoadBalancer {} has no recorded service", exposure.service)
            })?;
        let backends = backend_listeners(state, service)?;
        let target = SocketAddr::from((frontend, service.port));
        for client in &clients {
            let expected = expect_frontend(model, state, exposure, service, client);
            // Where only some paths are expected to answer, every attempt is made.
            let give_up_after = match expected {
                FrontendExpectation::Partly { .. } => attempts,
                _ => GIVE_UP_AFTER,
            };
            let observed = probe_service_giving_up_after(
                service,
                target,
                &backends,
                client,
                (attempts, give_up_after),
                FRONTEND_ATTEMPT_TIMEOUT,
            )?;
            let seen_sources: BTreeSet<Ipv4Addr> = observed
                .backends
                .iter()
                .flat_map(|b| b.seen_sources.iter().copied())
                .collect();
            let verdict = judge(
                &expected,
                observed.attempts,
                observed.answered,
                &seen_sources,
            );
            checks.push(FrontendCheck {
                service: service.name.clone(),
                frontend: target,
                policy: exposure.external_traffic_policy,
                client: client.label.clone(),
                client_address: client.address,
                attempts: observed.attempts,
                answered: observed.answered,
                seen_sources,
                expected,
                verdict,
            });
        }
    }
    Ok(checks)
}

/// What AKS does with `client` connecting to the frontend of `exposure`.
pub fn expect_frontend(
    model: &NetworkModel,
    state: &ClusterState,
    exposure: &Exposure,
    service: &ServicePlan,
    client: &Endpoint,
) -> FrontendExpectation {
    if !exposure.source_ranges.is_empty()
        && !exposure
            .source_ranges
            .iter()
            .any(|r| r.contains(client.address))
    {
        return FrontendExpectation::Blocked {
            reason: "not in loadBalancerSourceRanges".into(),
        };
    }
    if client.kind == EndpointKind::Internet && model.outbound.firewall.is_some() {
        return FrontendExpectation::Blocked {
            reason: "asymmetric routing: the reply follows 0.0.0.0/0 to the firewall, which has no session and drops it (limit-egress-traffic.md)".into(),
        };
    }
    let nodes = state.nodes.iter().map(|n| (n.name.clone(), n.address));
    let healthy = answering_nodes(nodes, exposure.external_traffic_policy, service);
    // The NSG sees the flow after the load balancer: towards a node's NodePort.
    let admitted: Vec<&(String, Ipv4Addr)> = healthy
        .iter()
        .filter(|(name, address)| {
            let node = Endpoint {
                label: name.clone(),
                kind: EndpointKind::Node { name: name.clone() },
                namespace: String::new(),
                address: *address,
            };
            let flow = Flow {
                source: client,
                destination: &node,
                protocol: service.protocol,
                port: exposure.node_port,
            };
            first_nsg_match(model, client.address, *address, &flow)
                .is_none_or(|rule| rule.access == Access::Allow)
        })
        .collect();
    if healthy.is_empty() {
        return FrontendExpectation::Blocked {
            reason: "no node answers the health probe".into(),
        };
    }
    if admitted.len() < healthy.len() {
        return FrontendExpectation::Blocked {
            reason: "an NSG rule denies it towards the NodePort".into(),
        };
    }
    let taking: Vec<(String, Ipv4Addr)> = admitted.iter().map(|n| (*n).clone()).collect();
    let (denials, open_nodes) = policy_paths(model, exposure, service, client, &taking);
    let Some(denial) = denials.first() else {
        return reachable_frontend(model, exposure, service, client, &healthy);
    };
    if open_nodes.is_empty() {
        return FrontendExpectation::Blocked {
            reason: format!("NetworkPolicy: {denial}"),
        };
    }
    // What the backends can see is what the nodes with an open path deliver.
    let open: Vec<(String, Ipv4Addr)> = healthy
        .iter()
        .filter(|(name, _)| open_nodes.contains(name))
        .cloned()
        .collect();
    match reachable_frontend(model, exposure, service, client, &open) {
        FrontendExpectation::Reachable { allowed, .. } => FrontendExpectation::Partly {
            why: format!(
                "NetworkPolicy denies {} of the paths through the nodes ({denial})",
                denials.len()
            ),
            allowed,
        },
        other => other,
    }
}

/// The NetworkPolicy decision on every path a connection from `client` can take: through
/// each node of `taking` to each backend that node forwards to. Returns the denials (as
/// text) and the nodes with at least one allowed path.
fn policy_paths(
    model: &NetworkModel,
    exposure: &Exposure,
    service: &ServicePlan,
    client: &Endpoint,
    taking: &[(String, Ipv4Addr)],
) -> (Vec<String>, BTreeSet<String>) {
    let mut denials = Vec::new();
    let mut open = BTreeSet::new();
    for (node, node_address) in taking {
        for backend in &service.backends {
            let local = &backend.node == node;
            if exposure.external_traffic_policy == ExternalTrafficPolicy::Local && !local {
                continue;
            }
            let Some(pod) = model.pods.iter().find(|p| p.address == backend.ip) else {
                continue;
            };
            let destination = PolicyEndpoint::Pod {
                address: pod.address,
                namespace: &pod.namespace,
                labels: &pod.labels,
                node: &pod.node,
            };
            let source = PolicyEndpoint::External {
                address: client.address,
            };
            let seen = if local {
                source
            } else {
                PolicyEndpoint::Node {
                    address: *node_address,
                    name: node,
                }
            };
            let flow = PolicyFlow {
                source,
                destination,
                protocol: service.protocol,
                port: backend.port,
            };
            match crate::policy::evaluate_as_seen(&model.policy, &flow, seen) {
                PolicyVerdict::Allowed { .. } => {
                    open.insert(node.clone());
                }
                PolicyVerdict::Denied(denial) => {
                    denials.push(format!("via {node} to {}: {denial}", backend.pod))
                }
            }
        }
    }
    (denials, open)
}

/// What the frontend does when NetworkPolicy stands in no path's way.
fn reachable_frontend(
    model: &NetworkModel,
    exposure: &Exposure,
    service: &ServicePlan,
    client: &Endpoint,
    healthy: &[(String, Ipv4Addr)],
) -> FrontendExpectation {
    match exposure.external_traffic_policy {
        ExternalTrafficPolicy::Local => FrontendExpectation::Reachable {
            why: "Local: only backend nodes take it, the client's address is kept".into(),
            allowed: BTreeSet::from([client.address]),
            per_node: Vec::new(),
        },
        ExternalTrafficPolicy::Cluster => {
            let per_node: Vec<BTreeSet<Ipv4Addr>> = healthy
                .iter()
                .map(|(name, address)| {
                    let hosts_backend = service.backends.iter().any(|b| &b.node == name);
                    // The eBPF datapath (as Cilium) SNATs only towards a backend on
                    // another node; a node with a backend of its own hands the flow
                    // to it with the client's address. Its backends are picked among
                    // all, so such a node shows the client or its own address.
                    if model.datapath == Datapath::Ebpf && hosts_backend {
                        return BTreeSet::from([client.address, *address]);
                    }
                    let mut seen = BTreeSet::from([*address]);
                    let node = model.nodes.iter().find(|n| &n.name == name);
                    let overlay = model.pod_network == PodNetwork::AzureOverlay;
                    // kube-proxy's MASQUERADE takes the address of the interface the
                    // flow leaves by: the pod bridge (kubenet, Overlay) towards a
                    // backend of this node, the tunnel device (Overlay) towards one of
                    // another node.
                    let bridge = node.and_then(|n| n.pod_gateway);
                    if let (true, Some(bridge)) = (
                        hosts_backend
                            && (model.network_plugin == NetworkPlugin::Kubenet || overlay),
                        bridge,
                    ) {
                        seen.insert(bridge);
                    }
                    if let (true, Some(tunnel)) = (overlay, node.and_then(|n| n.tunnel_address)) {
                        seen.insert(tunnel);
                    }
                    seen
                })
                .collect();
            FrontendExpectation::Reachable {
                why: "Cluster: every node takes some, SNATed to the node".into(),
                allowed: per_node.iter().flatten().copied().collect(),
                per_node,
            }
        }
    }
}

fn judge(
    expected: &FrontendExpectation,
    attempts: usize,
    answered: usize,
    seen: &BTreeSet<Ipv4Addr>,
) -> Verdict {
    let list = |set: &BTreeSet<Ipv4Addr>| {
        set.iter()
            .map(Ipv4Addr::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match expected {
        FrontendExpectation::Blocked { .. } if answered == 0 => Verdict::pass(),
        FrontendExpectation::Blocked { .. } => Verdict::fail(format!(
            "expected blocked, saw {answered} of {attempts} answered"
        )),
        FrontendExpectation::Reachable { .. } if answered < attempts => Verdict::fail(format!(
            "expected every connection answered, saw {answered} of {attempts}"
        )),
        FrontendExpectation::Reachable { allowed, .. } if !seen.is_subset(allowed) => {
            Verdict::fail(format!(
                "expected the backend to see {}, saw {}",
                list(allowed),
                list(seen)
            ))
        }
        FrontendExpectation::Reachable { per_node, .. }
            if per_node.iter().any(|n| n.is_disjoint(seen)) =>
        {
            Verdict::fail(format!(
                "expected every node to take some connections, saw only {}",
                list(seen)
            ))
        }
        FrontendExpectation::Reachable { .. } => Verdict::pass(),
        FrontendExpectation::Partly { .. } if answered == attempts => Verdict::fail(format!(
            "expected NetworkPolicy to deny some paths, saw all {attempts} answered"
        )),
        FrontendExpectation::Partly { allowed, .. } if !seen.is_subset(allowed) => {
            Verdict::fail(format!(
                "expected the backend to see {}, saw {}",
                list(allowed),
                list(seen)
            ))
        }
        FrontendExpectation::Partly { .. } => Verdict::pass(),
    }
}

impl std::fmt::Display for FrontendExpectation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Blocked { reason } => write!(f, "blocked: {reason}"),
            Self::Reachable { allowed, .. } => {
                let seen: Vec<String> = allowed.iter().map(Ipv4Addr::to_string).collect();
                write!(f, "reachable as {}", seen.join(" | "))
            }
            Self::Partly { allowed, .. } => {
                let seen: Vec<String> = allowed.iter().map(Ipv4Addr::to_string).collect();
                write!(
                    f,
                    "partly reachable (policy denies some paths) as {}",
                    seen.join(" | ")
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(addresses: &[[u8; 4]]) -> BTreeSet<Ipv4Addr> {
        addresses.iter().map(|a| Ipv4Addr::from(*a)).collect()
    }

    #[test]
    fn cluster_needs_every_node_and_only_node_addresses() {
        let expected = FrontendExpectation::Reachable {
            why: String::new(),
            allowed: set(&[[10, 224, 0, 4], [10, 224, 0, 5]]),
            per_node: vec![set(&[[10, 224, 0, 4]]), set(&[[10, 224, 0, 5]])],
        };
        assert!(judge(&expected, 30, 30, &set(&[[10, 224, 0, 4], [10, 224, 0, 5]])).passed());
        assert!(
            !judge(&expected, 30, 30, &set(&[[10, 224, 0, 4]])).passed(),
            "one node only"
        );
        assert!(
            !judge(
                &expected,
                30,
                30,
                &set(&[[10, 224, 0, 4], [10, 224, 0, 5], [203, 0, 113, 10]])
            )
            .passed(),
            "the client unSNATed"
        );
        assert!(
            !judge(&expected, 30, 29, &set(&[[10, 224, 0, 4], [10, 224, 0, 5]])).passed(),
            "one lost"
        );
        let blocked = FrontendExpectation::Blocked {
            reason: String::new(),
        };
        assert!(judge(&blocked, 3, 0, &BTreeSet::new()).passed());
        assert!(!judge(&blocked, 3, 1, &set(&[[203, 0, 113, 10]])).passed());
    }

    #[test]
    fn partly_needs_some_paths_denied_and_only_the_open_nodes_seen() {
        let expected = FrontendExpectation::Partly {
            why: String::new(),
            allowed: set(&[[10, 224, 0, 4]]),
        };
        assert!(judge(&expected, 60, 31, &set(&[[10, 224, 0, 4]])).passed());
        assert!(
            !judge(&expected, 60, 60, &set(&[[10, 224, 0, 4]])).passed(),
            "policy not enforced: every connection answered"
        );
        assert!(
            !judge(&expected, 60, 40, &set(&[[10, 224, 0, 4], [10, 224, 0, 5]])).passed(),
            "a denied node's path delivered"
        );
    }
}
