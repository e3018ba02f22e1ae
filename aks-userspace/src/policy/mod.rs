//! The Kubernetes NetworkPolicy decision for one new connection, as a pure function of
//! the policy model: what `check` expects and what both datapaths must enforce.
//!
//! Kubernetes semantics (networking.k8s.io/v1):
//! - A pod is isolated for a direction when at least one policy of its namespace selects
//!   it (podSelector) and has that policy type. A pod no policy isolates allows all.
//! - An isolated pod allows a connection when any rule of any policy selecting it allows
//!   it (rules only add; there is no deny rule). Otherwise it is denied: the "default
//!   deny" of the policies that isolate it.
//! - A connection needs both: the egress side of the source pod and the ingress side of
//!   the destination pod.
//! - Ingress from the pod's own node is always allowed (kubelet probes), as the
//!   Kubernetes documentation states.
//! - Replies of an allowed connection are allowed (the engines track connections).
//! - Peers: `podSelector`/`namespaceSelector` match pods only; `ipBlock` matches the
//!   address, pods included (how Calico and NPM behave; Cilium prefers identities, and
//!   the two agree here because no ipBlock of the examples covers pod addresses).

pub mod render;

use std::fmt;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::model::policy::{
    Labels, NamespaceScope, NetworkPolicy, Peer, PolicyModel, PolicyRule, PolicyType,
};
use crate::model::Protocol;

/// One end of a connection as policy sees it.
#[derive(Clone, Copy, Debug)]
pub enum PolicyEndpoint<'a> {
    Pod {
        address: Ipv4Addr,
        namespace: &'a str,
        labels: &'a Labels,
        node: &'a str,
    },
    Node {
        address: Ipv4Addr,
        name: &'a str,
    },
    /// Anything outside the cluster (on-prem, the internet).
    External {
        address: Ipv4Addr,
    },
}

impl<'p> PolicyEndpoint<'p> {
    /// The pod of `plan` holding `address`, its node, or an address outside the cluster.
    pub fn in_plan(plan: &'p crate::plan::Plan, address: Ipv4Addr) -> Self {
        if let Some(pod) = plan.pods().find(|p| p.ip == address) {
            return Self::Pod {
                address,
                namespace: &pod.namespace,
                labels: &pod.labels,
                node: &pod.node,
            };
        }
        match plan.nodes.iter().find(|n| n.ip == address) {
            Some(node) => Self::Node {
                address,
                name: &node.name,
            },
            None => Self::External { address },
        }
    }

    pub fn address(&self) -> Ipv4Addr {
        match self {
            Self::Pod { address, .. } | Self::Node { address, .. } | Self::External { address } => {
                *address
            }
        }
    }
}

/// The first packet of a connection: from, to, protocol, destination port.
#[derive(Clone, Copy, Debug)]
pub struct PolicyFlow<'a> {
    pub source: PolicyEndpoint<'a>,
    pub destination: PolicyEndpoint<'a>,
    pub protocol: Protocol,
    pub port: u16,
}

/// Why one side lets a connection through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "policy")]
pub enum Allowance {
    /// The side is not a pod, or no policy isolates the pod in this direction.
    NotIsolated,
    /// A rule of this policy (`namespace/name`) allows it.
    Policy(String),
    /// Ingress from the destination pod's own node.
    OwnNode,
}

/// A connection one side's policies do not allow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Denial {
    pub direction: PolicyType,
    /// `namespace/name` of every policy that isolates the pod in `direction`.
    pub isolated_by: Vec<String>,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = match self.direction {
            PolicyType::Ingress => "ingress of the destination",
            PolicyType::Egress => "egress of the source",
        };
        let plural = if self.isolated_by.len() == 1 {
            "y"
        } else {
            "ies"
        };
        write!(
            f,
            "default deny by polic{plural} {} ({side}; no rule allows it)",
            self.isolated_by.join(", ")
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "verdict")]
pub enum PolicyVerdict {
    Allowed {
        egress: Allowance,
        ingress: Allowance,
    },
    Denied(Denial),
}

impl PolicyVerdict {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed { .. })
    }
}

/// The NetworkPolicy decision for the first packet of `flow`.
pub fn evaluate(model: &PolicyModel, flow: &PolicyFlow) -> PolicyVerdict {
    evaluate_as_seen(model, flow, flow.source)
}

/// As [`evaluate`], with the destination's ingress judging `seen_source`: the source as
/// it arrives, e.g. the node a pod was masqueraded to (Kubernetes policies see addresses
/// after NAT).
pub fn evaluate_as_seen(
    model: &PolicyModel,
    flow: &PolicyFlow,
    seen_source: PolicyEndpoint,
) -> PolicyVerdict {
    if !model.enforced() {
        return PolicyVerdict::Allowed {
            egress: Allowance::NotIsolated,
            ingress: Allowance::NotIsolated,
        };
    }
    let egress = match flow.source {
        PolicyEndpoint::Pod {
            namespace, labels, ..
        } => match side(
            model,
            namespace,
            labels,
            PolicyType::Egress,
            &flow.destination,
            flow,
        ) {
            Ok(allowance) => allowance,
            Err(denial) => return PolicyVerdict::Denied(denial),
        },
        _ => Allowance::NotIsolated,
    };
    let ingress = match flow.destination {
        PolicyEndpoint::Pod {
            namespace,
            labels,
            node,
            ..
        } => {
            let own_node = matches!(seen_source, PolicyEndpoint::Node { name, .. } if name == node);
            match side(
                model,
                namespace,
                labels,
                PolicyType::Ingress,
                &seen_source,
                flow,
            ) {
                Err(_) if own_node => Allowance::OwnNode,
                Ok(allowance) => allowance,
                Err(denial) => return PolicyVerdict::Denied(denial),
            }
        }
        _ => Allowance::NotIsolated,
    };
    PolicyVerdict::Allowed { egress, ingress }
}

/// The policies of `namespace` that select a pod with `labels` and isolate `direction`.
pub fn isolating<'m>(
    model: &'m PolicyModel,
    namespace: &'m str,
    labels: &'m Labels,
    direction: PolicyType,
) -> impl Iterator<Item = &'m NetworkPolicy> + 'm {
    model.policies.iter().filter(move |policy| {
        policy.namespace == namespace
            && policy.rules(direction).is_some()
            && policy.pod_selector.matches(labels)
    })
}

/// `namespace/name` of the policies isolating the pod of `plan` at `address` in
/// `direction`: what a datapath's default-deny drop there is "by" (`monitor`).
pub fn isolating_names(
    plan: &crate::plan::Plan,
    address: Ipv4Addr,
    direction: PolicyType,
) -> Vec<String> {
    plan.pods()
        .find(|pod| pod.ip == address)
        .map(|pod| {
            isolating(&plan.policy, &pod.namespace, &pod.labels, direction)
                .map(NetworkPolicy::qualified_name)
                .collect()
        })
        .unwrap_or_default()
}

/// One side's decision: the pod (`namespace`, `labels`) talking to or hearing from `peer`.
fn side(
    model: &PolicyModel,
    namespace: &str,
    labels: &Labels,
    direction: PolicyType,
    peer: &PolicyEndpoint,
    flow: &PolicyFlow,
) -> Result<Allowance, Denial> {
    let mut isolated_by = Vec::new();
    for policy in isolating(model, namespace, labels, direction) {
        let rules = policy.rules(direction).unwrap_or_default();
        if rules
            .iter()
            .any(|rule| rule_allows(model, rule, peer, flow.protocol, flow.port))
        {
            return Ok(Allowance::Policy(policy.qualified_name()));
        }
        isolated_by.push(policy.qualified_name());
    }
    if isolated_by.is_empty() {
        Ok(Allowance::NotIsolated)
    } else {
        Err(Denial {
            direction,
            isolated_by,
        })
    }
}

/// Whether `rule` allows traffic with `peer` on `protocol`/`port`.
pub fn rule_allows(
    model: &PolicyModel,
    rule: &PolicyRule,
    peer: &PolicyEndpoint,
    protocol: Protocol,
    port: u16,
) -> bool {
    let port_ok = rule.ports.is_empty() || rule.ports.iter().any(|p| p.matches(protocol, port));
    let peer_ok = rule.peers.is_empty() || rule.peers.iter().any(|p| peer_matches(model, p, peer));
    port_ok && peer_ok
}

/// Whether `peer` (one `from`/`to` entry) matches the endpoint.
pub fn peer_matches(model: &PolicyModel, peer: &Peer, endpoint: &PolicyEndpoint) -> bool {
    match peer {
        Peer::IpBlock { cidr, except } => {
            let address = endpoint.address();
            cidr.contains(address) && !except.iter().any(|e| e.contains(address))
        }
        Peer::Pods { pods, namespaces } => match endpoint {
            PolicyEndpoint::Pod {
                namespace, labels, ..
            } => {
                let namespace_ok = match namespaces {
                    NamespaceScope::Own(own) => own == namespace,
                    NamespaceScope::Selected(selector) => {
                        selector.matches(&model.namespace_labels(namespace))
                    }
                };
                namespace_ok && pods.matches(labels)
            }
            _ => false,
        },
    }
}

/// What the policy tests of several modules share.
#[cfg(test)]
pub(crate) mod testing {
    use std::net::Ipv4Addr;

    use crate::model::Protocol;

    /// examples/three-tier.yaml.
    pub const THREE_TIER: &str = include_str!("../../../examples/three-tier.yaml");

    /// [`THREE_TIER`] with db's port a range (5432–5434, `endPort`) and its peer an
    /// `ipBlock` of the node subnet with an `except` (10.224.0.36/30).
    pub fn three_tier_with_except_and_end_port() -> String {
        THREE_TIER
            .replacen(
                "{ protocol: TCP, port: 5432 }",
                "{ port: 5432, endPort: 5434 }",
                1,
            )
            .replacen(
                "from: [{ podSelector: { matchLabels: { app: api } } }]",
                "from: [{ ipBlock: { cidr: 10.224.0.0/24, except: [10.224.0.36/30] } }]",
                1,
            )
    }

    /// Every (source, destination, protocol, port) between two distinct `addresses`.
    pub fn flows(
        addresses: &[Ipv4Addr],
        ports: &[(Protocol, u16)],
    ) -> Vec<(Ipv4Addr, Ipv4Addr, Protocol, u16)> {
        let mut out = Vec::new();
        for &source in addresses {
            for &destination in addresses.iter().filter(|&&d| d != source) {
                for &(protocol, port) in ports {
                    out.push((source, destination, protocol, port));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
