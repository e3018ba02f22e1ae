//! What AKS would do with a flow: the expected outcome of every check row, derived from
//! the cluster model (network plugin, datapath, non-masquerade CIDRs, the kubenet route
//! table, NSG rules, the hosts outside the VNet), never written per matrix cell.
//!
//! Pure functions of [`NetworkModel`]: unit-tested without root. Later rows (network
//! policy, LoadBalancer services, outbound types) add their rules here.
//!
//! The rules, in the order they are applied:
//! 1. The internet starts no connection to a private address: without a public IP or a
//!    load balancer there is no inbound path (Azure's default).
//! 2. kubenet and Overlay: on-prem cannot reach pod addresses. kubenet's route table (the
//!    UDRs carrying each node's pod /24) belongs to the node subnet and is not advertised
//!    over ExpressRoute; Overlay's pod CIDR is not routed by the VNet at all
//!    (concepts-network-azure-cni-overlay.md). Only node addresses are reachable.
//! 3. The address the destination sees: a pod keeps its own address towards the
//!    non-masquerade CIDRs (ip-masq-agent) and on its own node; otherwise it is
//!    masqueraded to its node's address. Nodes and external hosts are seen as themselves,
//!    except an Overlay node reaching a pod of another node: its packets enter the
//!    overlay with the node's tunnel address (the first address of its pod /24).
//! 4. kubenet and Overlay: a pod that keeps its private address towards on-prem or the
//!    internet gets no reply: neither has a route back to the pod CIDR.
//!    The internet, per `outboundType`: `none` has no egress (blocked);
//!    `managedNATGateway` sees the NAT gateway's public address (the fabric SNATs after
//!    the node's masquerade); `loadBalancer` sees the load balancer's outbound address
//!    when the flow leaves with a node's address (its outbound rule serves the nodes'
//!    primary addresses), the address of rule 3 otherwise; `userDefinedRouting` sees
//!    the firewall's public address (0.0.0.0/0 leads to it, it SNATs).
//! 5. The NSG of the node subnet: inbound rules, evaluated where a packet enters a node
//!    from the VNet (so not between pods of one node), on the address the node sees, in
//!    priority order, first match decides, no match allows. Azure's NSGs are stateful:
//!    replies are never filtered.
//! 6. Network policy (when the cluster has an engine): the Kubernetes decision of
//!    [`crate::policy::evaluate`]: the source pod's egress, then the destination pod's
//!    ingress, judged on the address the destination sees. A blocked row names the
//!    policies whose default deny stops it.

use std::fmt;
use std::net::Ipv4Addr;

use serde::Serialize;

use super::{Endpoint, EndpointKind};
use crate::cidr::Ipv4Cidr;
use crate::model::nsg::{Access, SecurityRule};
use crate::model::policy::{Labels, PolicyModel};
use crate::model::{Datapath, NetworkPlugin, PodNetwork, Protocol};
use crate::plan::Plan;
use crate::policy::{Allowance, PolicyEndpoint, PolicyFlow, PolicyVerdict};

/// The part of a cluster's plan the expectations depend on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkModel {
    pub network_plugin: NetworkPlugin,
    /// kubenet, Node Subnet, Pod Subnet or Overlay.
    pub pod_network: PodNetwork,
    pub datapath: Datapath,
    /// kubenet and Overlay: the private range pods are addressed from.
    pub pod_cidr: Option<Ipv4Cidr>,
    pub non_masquerade_cidrs: Vec<Ipv4Cidr>,
    /// Inbound NSG rules in priority order.
    pub nsg: Vec<SecurityRule>,
    pub nodes: Vec<ModelNode>,
    /// Egress to the internet (`outboundType`).
    pub outbound: crate::model::outbound::Outbound,
    /// The policy engine and policies.
    pub policy: PolicyModel,
    /// Every pod's Kubernetes identity, for the policy decision.
    pub pods: Vec<ModelPod>,
}

/// A pod as network policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelPod {
    pub address: Ipv4Addr,
    pub node: String,
    pub namespace: String,
    pub labels: Labels,
}

/// A node: its address, and (kubenet) the address of its pod bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelNode {
    pub name: String,
    pub address: Ipv4Addr,
    pub pod_gateway: Option<Ipv4Addr>,
    /// Overlay: the address of the node's tunnel device, its own packets' source towards
    /// pods of other nodes.
    pub tunnel_address: Option<Ipv4Addr>,
}

impl NetworkModel {
    pub fn from_plan(plan: &Plan) -> Self {
        Self {
            network_plugin: plan.network_plugin,
            pod_network: plan.pod_network,
            datapath: plan.datapath,
            pod_cidr: plan.pod_cidr,
            non_masquerade_cidrs: plan.non_masquerade_cidrs.clone(),
            nsg: plan.nsg.clone(),
            outbound: plan.outbound.clone(),
            nodes: plan
                .nodes
                .iter()
                .map(|n| ModelNode {
                    name: n.name.clone(),
                    address: n.ip,
                    pod_gateway: n.pod_gateway,
                    tunnel_address: match plan.pod_network {
                        PodNetwork::AzureOverlay => n.pod_cidr.map(|c| c.network()),
                        _ => None,
                    },
                })
                .collect(),
            policy: plan.policy.clone(),
            pods: plan
                .pods()
                .map(|p| ModelPod {
                    address: p.ip,
                    node: p.node.clone(),
                    namespace: p.namespace.clone(),
                    labels: p.labels.clone(),
                })
                .collect(),
        }
    }

    /// `endpoint` as network policy sees it: a pod with its identity, a node, or an
    /// address outside the cluster.
    fn policy_endpoint<'m>(&'m self, endpoint: &'m Endpoint) -> PolicyEndpoint<'m> {
        match &endpoint.kind {
            EndpointKind::Pod { .. } => {
                match self.pods.iter().find(|p| p.address == endpoint.address) {
                    Some(pod) => PolicyEndpoint::Pod {
                        address: pod.address,
                        namespace: &pod.namespace,
                        labels: &pod.labels,
                        node: &pod.node,
                    },
                    None => PolicyEndpoint::External {
                        address: endpoint.address,
                    },
                }
            }
            EndpointKind::Node { name } => PolicyEndpoint::Node {
                address: endpoint.address,
                name,
            },
            EndpointKind::OnPrem | EndpointKind::Internet => PolicyEndpoint::External {
                address: endpoint.address,
            },
        }
    }

    /// Who the destination's ingress policy sees: the source itself, or the node it was
    /// masqueraded to (by any of the node's addresses: its own, its pod bridge's, its
    /// tunnel's).
    fn seen_endpoint<'m>(&'m self, source: &'m Endpoint, seen: Ipv4Addr) -> PolicyEndpoint<'m> {
        if seen == source.address {
            return self.policy_endpoint(source);
        }
        let of_node = |n: &&ModelNode| {
            n.address == seen || n.pod_gateway == Some(seen) || n.tunnel_address == Some(seen)
        };
        match self.nodes.iter().find(of_node) {
            Some(node) => PolicyEndpoint::Node {
                address: seen,
                name: &node.name,
            },
            None => PolicyEndpoint::External { address: seen },
        }
    }

    fn node(&self, name: &str) -> Option<&ModelNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    fn non_masquerade(&self, address: Ipv4Addr) -> Option<Ipv4Cidr> {
        self.non_masquerade_cidrs
            .iter()
            .copied()
            .find(|c| c.contains(address))
    }
}

/// The address a destination should see as the source, and whose it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpectedSource {
    pub address: Ipv4Addr,
    /// `itself`, `node nodepool1-0`, `hairpin address`, or the address the user wrote.
    pub who: String,
}

/// What should happen to a flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum Expectation {
    /// The connection is made; the destination sees `source` (`None`: not asserted, as
    /// in a user's expectation that leaves it out).
    Reachable {
        source: Option<ExpectedSource>,
        why: String,
    },
    Blocked {
        reason: String,
    },
}

impl Expectation {
    pub fn is_blocked(&self) -> bool {
        matches!(self, Expectation::Blocked { .. })
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expectation::Reachable {
                source: Some(source),
                ..
            } => write!(f, "reachable as {} ({})", source.address, source.who),
            Expectation::Reachable { source: None, .. } => write!(f, "reachable"),
            Expectation::Blocked { reason } => write!(f, "blocked: {reason}"),
        }
    }
}

/// One flow: from an endpoint to another, a protocol and destination port.
#[derive(Clone, Copy, Debug)]
pub struct Flow<'a> {
    pub source: &'a Endpoint,
    pub destination: &'a Endpoint,
    pub protocol: Protocol,
    pub port: u16,
}

/// What AKS does with `flow`.
pub fn expect_flow(model: &NetworkModel, flow: &Flow) -> Expectation {
    let (source, destination) = (flow.source, flow.destination);
    let inside = matches!(
        destination.kind,
        EndpointKind::Pod { .. } | EndpointKind::Node { .. }
    );
    if source.kind == EndpointKind::Internet && inside {
        return Expectation::Blocked {
            reason: "no inbound from the internet without a public IP".into(),
        };
    }
    let private_pod_address = |a: Ipv4Addr| {
        model.pod_network.private_pod_cidr() && model.pod_cidr.is_some_and(|c| c.contains(a))
    };
    if source.kind == EndpointKind::OnPrem && private_pod_address(destination.address) {
        return Expectation::Blocked {
            reason: match model.pod_network {
                PodNetwork::AzureOverlay => {
                    "on-prem cannot reach Overlay pods: the VNet has no route for the pod CIDR"
                }
                _ => "on-prem cannot reach kubenet pods: the route table is not advertised",
            }
            .into(),
        };
    }
    let (mut seen, mut why) = seen_source(model, source, destination);
    let external = matches!(
        destination.kind,
        EndpointKind::OnPrem | EndpointKind::Internet
    );
    if external && private_pod_address(seen.address) {
        return Expectation::Blocked {
            reason: format!(
                "the pod keeps its {} address ({why}) and {} has no route back to the pod CIDR",
                model.pod_network.title(),
                destination.label
            ),
        };
    }
    if destination.kind == EndpointKind::Internet {
        use crate::model::outbound::OutboundType;
        match (model.outbound.outbound_type, model.outbound.public_ip) {
            (OutboundType::None, _) => {
                return Expectation::Blocked {
                    reason: "outboundType none: no egress to the internet".into(),
                }
            }
            (OutboundType::LoadBalancer, Some(address))
                if model.outbound.outbound_rule.is_some()
                    && model.nodes.iter().any(|n| n.address == seen.address) =>
            {
                why = format!(
                    "{why}, then the load balancer's outbound rule SNATs the node to its public address"
                );
                seen = ExpectedSource {
                    address,
                    who: "load balancer outbound".into(),
                };
            }
            (OutboundType::UserDefinedRouting, Some(address)) => {
                why = format!(
                    "{why}, then the route table sends it to the firewall, which SNATs to its public address"
                );
                seen = ExpectedSource {
                    address,
                    who: "firewall".into(),
                };
            }
            (OutboundType::ManagedNatGateway, Some(address)) => {
                why = format!("{why}, then the NAT gateway SNATs to its public address");
                seen = ExpectedSource {
                    address,
                    who: "NAT gateway".into(),
                };
            }
            _ => {}
        }
    }
    if crosses_node_uplink(source, destination) {
        if let Some(rule) = first_nsg_match(model, seen.address, destination.address, flow) {
            if rule.access == Access::Deny {
                return Expectation::Blocked {
                    reason: format!(
                        "NSG rule {} (priority {}) denies it",
                        rule.name, rule.priority
                    ),
                };
            }
        }
    }
    let why = match policy_decision(model, flow, seen.address) {
        PolicyVerdict::Denied(denial) => {
            return Expectation::Blocked {
                reason: format!("NetworkPolicy: {denial}"),
            }
        }
        PolicyVerdict::Allowed { egress, ingress } => {
            let mut allowed_by = Vec::new();
            for (side, allowance) in [("egress", egress), ("ingress", ingress)] {
                match allowance {
                    Allowance::Policy(name) => allowed_by.push(format!("{side} by {name}")),
                    Allowance::OwnNode => allowed_by.push(format!("{side} from its own node")),
                    Allowance::NotIsolated => {}
                }
            }
            if allowed_by.is_empty() {
                why
            } else {
                format!("{why}; NetworkPolicy allows {}", allowed_by.join(", "))
            }
        }
    };
    Expectation::Reachable {
        source: Some(seen),
        why,
    }
}

/// The policy decision for `flow`, the destination's ingress judged on `seen`.
fn policy_decision(model: &NetworkModel, flow: &Flow, seen: Ipv4Addr) -> PolicyVerdict {
    let policy_flow = PolicyFlow {
        source: model.policy_endpoint(flow.source),
        destination: model.policy_endpoint(flow.destination),
        protocol: flow.protocol,
        port: flow.port,
    };
    crate::policy::evaluate_as_seen(
        &model.policy,
        &policy_flow,
        model.seen_endpoint(flow.source, seen),
    )
}

/// What a service backend should see when `client` reaches it through a ClusterIP: as a
/// direct flow to the backend, except when the client is the backend itself (hairpin),
/// which every datapath masquerades (a pod cannot take a packet from its own address).
pub fn expect_service_backend(
    model: &NetworkModel,
    client: &Endpoint,
    backend: &Endpoint,
    protocol: Protocol,
    target_port: u16,
) -> Expectation {
    if client.address != backend.address {
        return expect_flow(
            model,
            &Flow {
                source: client,
                destination: backend,
                protocol,
                port: target_port,
            },
        );
    }
    let node = match &client.kind {
        EndpointKind::Pod { node } => model.node(node),
        _ => None,
    };
    let hairpin = match (model.datapath, model.network_plugin, node) {
        (Datapath::Ebpf, _, _) => Some((
            Ipv4Addr::from(aks_ebpf_common::lb::HAIRPIN_SOURCE),
            "hairpin address".to_owned(),
            "the eBPF datapath gives hairpin traffic a link-local source, as Cilium does",
        )),
        // kubenet and Overlay pods sit on cbr0.
        (Datapath::Iptables, _, Some(node)) if node.pod_gateway.is_some() => {
            node.pod_gateway.map(|a| {
                (
                    a,
                    format!("cbr0 of {}", node.name),
                    "kube-proxy masquerades hairpin traffic to the bridge's address",
                )
            })
        }
        (Datapath::Iptables, NetworkPlugin::Azure, Some(node)) => Some((
            node.address,
            format!("node {}", node.name),
            "kube-proxy masquerades hairpin traffic; azure0 has no address, so the node's",
        )),
        _ => None,
    };
    match hairpin {
        Some((address, who, why)) => Expectation::Reachable {
            source: Some(ExpectedSource { address, who }),
            why: why.into(),
        },
        None => Expectation::Reachable {
            source: None,
            why: "hairpin through the service; the client's node is not in the plan".into(),
        },
    }
}

/// The address `destination` sees for a connection from `source`, and why.
fn seen_source(
    model: &NetworkModel,
    source: &Endpoint,
    destination: &Endpoint,
) -> (ExpectedSource, String) {
    let itself = ExpectedSource {
        address: source.address,
        who: "itself".into(),
    };
    if let (EndpointKind::Node { name }, EndpointKind::Pod { node: pod_node }) =
        (&source.kind, &destination.kind)
    {
        // On the iptables datapath kubenet's and Overlay's pods hang off a bridge with
        // an address (cbr0): the node's stack reaches its own pods from that address.
        let bridge = match model.datapath {
            Datapath::Iptables => model.node(name).and_then(|n| n.pod_gateway),
            Datapath::Ebpf => None,
        };
        if let (Some(address), true) = (bridge, pod_node == name) {
            return (
                ExpectedSource {
                    address,
                    who: format!("cbr0 of {name}"),
                },
                "a node reaches its own pods over the pod bridge, from the bridge's address".into(),
            );
        }
        let tunnel = model.node(name).and_then(|n| n.tunnel_address);
        if let (Some(address), true) = (tunnel, pod_node != name) {
            return (
                ExpectedSource {
                    address,
                    who: format!("overlay address of node {name}"),
                },
                "a node reaches another node's pods through the overlay, from its tunnel \
                 address"
                    .into(),
            );
        }
    }
    let EndpointKind::Pod { node } = &source.kind else {
        return (itself, "only pods are masqueraded".into());
    };
    if let EndpointKind::Pod { node: other } = &destination.kind {
        if other == node {
            return (itself, "pods of one node talk directly".into());
        }
    }
    if let Some(cidr) = model.non_masquerade(destination.address) {
        return (
            itself,
            format!(
                "{} is in the non-masquerade CIDR {cidr}",
                destination.address
            ),
        );
    }
    match model.node(node) {
        Some(n) => (
            ExpectedSource {
                address: n.address,
                who: format!("node {}", n.name),
            },
            format!(
                "{} is outside the non-masquerade CIDRs: masqueraded to the node",
                destination.address
            ),
        ),
        None => (
            itself,
            format!("node {node} of the source is not in the plan; no masquerade assumed"),
        ),
    }
}

/// Whether the flow enters a node from the VNet (where the NSG applies): towards a pod
/// or node, from anywhere but that same node.
fn crosses_node_uplink(source: &Endpoint, destination: &Endpoint) -> bool {
    let node_of = |e: &Endpoint| match &e.kind {
        EndpointKind::Pod { node } => Some(node.clone()),
        EndpointKind::Node { name } => Some(name.clone()),
        _ => None,
    };
    match node_of(destination) {
        None => false,
        Some(target) => node_of(source).as_ref() != Some(&target),
    }
}

pub(crate) fn first_nsg_match<'m>(
    model: &'m NetworkModel,
    source: Ipv4Addr,
    destination: Ipv4Addr,
    flow: &Flow,
) -> Option<&'m SecurityRule> {
    let protocol = match flow.protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
    };
    model.nsg.iter().find(|rule| {
        rule.protocol.is_none_or(|p| p == protocol)
            && rule.source.is_none_or(|c| c.contains(source))
            && rule.destination.is_none_or(|c| c.contains(destination))
            && (rule.ports.0..=rule.ports.1).contains(&flow.port)
    })
}

#[cfg(test)]
mod tests;
