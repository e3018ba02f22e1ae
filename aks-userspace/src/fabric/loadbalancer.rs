//! The cluster's Azure Standard Load Balancer, played by the fabric (the vnet
//! namespace): one load-balancing rule per `LoadBalancer` service, from its public
//! frontend (`frontend:port`) to the node NodePorts of the nodes whose health probe
//! answers, as the cloud provider programs it for AKS.
//!
//! - **Distribution**: DNAT to `nodeIP:nodePort`, one node per flow chosen at random
//!   among the healthy ones (iptables `statistic`, as Azure's 5-tuple hash spreads
//!   flows); the client's address is kept, as Azure's load balancer keeps it.
//! - **Health probe**: the cluster's probe agent (`crate::probes`) probes every node
//!   of every frontend from the fabric and records what it decided; the rules send new
//!   flows only to nodes in rotation. With `externalTrafficPolicy: Local` kube-proxy's
//!   `healthCheckNodePort` answers 503 on nodes without a local backend, so they drop
//!   out; with `Cluster` every node's proxy answers. Until the probe has decided for a
//!   node (a new cluster or frontend), the answer kube-proxy would give from the plan
//!   stands in.
//! - **loadBalancerSourceRanges**: AKS writes them as NSG rules on the node subnet
//!   (allow the ranges to the frontend, deny the rest); here they admit or drop new
//!   flows to the frontend before the NSG's own rules are walked.
//! - Replies are translated back by the fabric's conntrack, kept for these flows only.

use std::net::Ipv4Addr;

use crate::model::loadbalancer::{Exposure, ExternalTrafficPolicy, ServiceType};
use crate::model::Protocol;
use crate::plan::{Plan, ServicePlan};
use crate::probes::{ProbeRecord, PROXY_HEALTHZ_PORT};

/// The `filter` chain every packet through the fabric meets first: admits new flows to
/// a frontend from allowed sources (past the fabric's "no inbound from the internet").
pub const ADMIT_CHAIN: &str = "AKSNET-LB-ADMIT";

/// One load-balancing rule, resolved from the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancingRule {
    pub service: String,
    pub frontend: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub node_port: u16,
    pub policy: ExternalTrafficPolicy,
    /// Node addresses whose health probe answers, in node order.
    pub healthy: Vec<(String, Ipv4Addr)>,
    /// Allowed client prefixes, as strings for iptables (`any` when empty).
    pub source_ranges: Vec<String>,
}

/// The load-balancing rules of `plan`: one per `LoadBalancer` service, each to the
/// nodes `probes` has in rotation (the plan's answer where it has not decided).
pub fn rules(plan: &Plan, probes: Option<&ProbeRecord>) -> Vec<LoadBalancingRule> {
    plan.exposures
        .iter()
        .filter(|e| e.service_type == ServiceType::LoadBalancer)
        .filter_map(|e| {
            let service = plan.services.iter().find(|s| s.name == e.service)?;
            Some(LoadBalancingRule {
                service: e.service.clone(),
                frontend: e.frontend?,
                port: service.port,
                protocol: service.protocol,
                node_port: e.node_port,
                policy: e.external_traffic_policy,
                healthy: in_rotation(plan, e, service, probes),
                source_ranges: e.source_ranges.iter().map(|c| c.to_string()).collect(),
            })
        })
        .collect()
}

/// The nodes whose health probe answers for `exposure`: every node with `Cluster`
/// (kube-proxy's health server is up on each), those hosting a backend with `Local`.
pub fn healthy_nodes(
    plan: &Plan,
    exposure: &Exposure,
    service: &ServicePlan,
) -> Vec<(String, Ipv4Addr)> {
    let nodes = plan.nodes.iter().map(|n| (n.name.clone(), n.ip));
    answering_nodes(nodes, exposure.external_traffic_policy, service)
}

/// The nodes that get new flows of `exposure`'s frontend: those the probe record has
/// in rotation, and where it has not decided, those whose probe kube-proxy would answer.
fn in_rotation(
    plan: &Plan,
    exposure: &Exposure,
    service: &ServicePlan,
    probes: Option<&ProbeRecord>,
) -> Vec<(String, Ipv4Addr)> {
    let expected = healthy_nodes(plan, exposure, service);
    let probe_port = match exposure.external_traffic_policy {
        ExternalTrafficPolicy::Local => exposure.health_check_node_port,
        ExternalTrafficPolicy::Cluster => Some(PROXY_HEALTHZ_PORT),
    };
    plan.nodes
        .iter()
        .filter(|n| {
            let probed = probes
                .zip(probe_port)
                .and_then(|(record, port)| record.in_rotation(&exposure.service, port, &n.name));
            probed.unwrap_or_else(|| expected.iter().any(|(name, _)| name == &n.name))
        })
        .map(|n| (n.name.clone(), n.ip))
        .collect()
}

/// Of `nodes` (name, address), those that answer the health probe under `policy`.
pub fn answering_nodes(
    nodes: impl Iterator<Item = (String, Ipv4Addr)>,
    policy: ExternalTrafficPolicy,
    service: &ServicePlan,
) -> Vec<(String, Ipv4Addr)> {
    nodes
        .filter(|(name, _)| match policy {
            ExternalTrafficPolicy::Cluster => true,
            ExternalTrafficPolicy::Local => service.backends.iter().any(|b| &b.node == name),
        })
        .collect()
}

fn protocol_match(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "-p tcp -m tcp",
        Protocol::Udp => "-p udp -m udp",
    }
}

/// `AKSNET-LB-<n>`: the chain of the n-th rule (service names can be 63 characters;
/// iptables allows 28).
fn chain(index: usize) -> String {
    format!("AKSNET-LB-{index}")
}

fn admit_chain(index: usize) -> String {
    format!("AKSNET-LBSRC-{index}")
}

/// `raw` PREROUTING lines keeping conntrack for load-balanced flows (to be placed
/// before the fabric's `NOTRACK`): packets to a frontend, and the nodes' replies from
/// a NodePort.
pub fn raw_rules(rules: &[LoadBalancingRule]) -> String {
    let mut out = String::new();
    for rule in rules {
        let p = protocol_match(rule.protocol);
        out.push_str(&format!(
            "-A PREROUTING -d {}/32 {p} --dport {} -m comment --comment \"aksnet: load balancer {}\" -j RETURN\n",
            rule.frontend, rule.port, rule.service
        ));
        out.push_str(&format!(
            "-A PREROUTING -i node+ {p} --sport {} -m comment --comment \"aksnet: load balancer {} replies\" -j RETURN\n",
            rule.node_port, rule.service
        ));
    }
    out
}

/// `nat` chain declarations and rules: frontend → a healthy node's NodePort.
pub fn nat_rules(rules: &[LoadBalancingRule]) -> String {
    let mut chains = String::new();
    let mut lines = String::new();
    for (i, rule) in rules.iter().enumerate() {
        let chain = chain(i);
        let p = protocol_match(rule.protocol);
        chains.push_str(&format!(":{chain} - [0:0]\n"));
        lines.push_str(&format!(
            "-A PREROUTING -d {}/32 {p} --dport {} -m comment --comment \"aksnet: load balancer frontend of {}\" -j {chain}\n",
            rule.frontend, rule.port, rule.service
        ));
        let count = rule.healthy.len();
        for (k, (node, address)) in rule.healthy.iter().enumerate() {
            let choice = if k + 1 < count {
                format!(
                    " -m statistic --mode random --probability {:.10}",
                    1.0 / (count - k) as f64
                )
            } else {
                String::new()
            };
            lines.push_str(&format!(
                "-A {chain} {p} -m comment --comment \"{} -> {node}\"{choice} -j DNAT --to-destination {address}:{}\n",
                rule.service, rule.node_port
            ));
        }
    }
    format!("{chains}{lines}")
}

/// `filter` chain declarations (placed before any rule).
pub fn filter_chains(rules: &[LoadBalancingRule]) -> String {
    if rules.is_empty() {
        return String::new();
    }
    let mut out = format!(":{ADMIT_CHAIN} - [0:0]\n");
    for i in 0..rules.len() {
        out.push_str(&format!(":{} - [0:0]\n", admit_chain(i)));
    }
    out
}

/// `filter` lines, to be the first of FORWARD: a new flow the load balancer translated
/// is admitted if its source is allowed (then the NSG, `nsg_chain`, still applies),
/// dropped otherwise; a frontend with no healthy node drops everything, as Azure does.
pub fn filter_rules(rules: &[LoadBalancingRule], nsg_chain: Option<&str>) -> String {
    if rules.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"aksnet: the load balancer's frontends\" -j {ADMIT_CHAIN}\n"
    );
    for (i, rule) in rules.iter().enumerate() {
        let sources = admit_chain(i);
        let p = protocol_match(rule.protocol);
        out.push_str(&format!(
            "-A {ADMIT_CHAIN} {p} -m conntrack --ctorigdst {}/32 --ctorigdstport {} -m comment --comment \"aksnet: load balancer {}\" -j {sources}\n",
            rule.frontend, rule.port, rule.service
        ));
        if rule.healthy.is_empty() {
            out.push_str(&format!(
                "-A {sources} -m comment --comment \"aksnet: no node answers the health probe\" -j DROP\n"
            ));
            continue;
        }
        let allowed: Vec<String> = if rule.source_ranges.is_empty() {
            vec![String::new()]
        } else {
            rule.source_ranges
                .iter()
                .map(|r| format!("-s {r} "))
                .collect()
        };
        for source in allowed {
            if let Some(nsg) = nsg_chain {
                out.push_str(&format!("-A {sources} {source}-j {nsg}\n"));
            }
            out.push_str(&format!(
                "-A {sources} {source}-m comment --comment \"aksnet: loadBalancerSourceRanges allow\" -j ACCEPT\n"
            ));
        }
        if !rule.source_ranges.is_empty() {
            out.push_str(&format!(
                "-A {sources} -m comment --comment \"aksnet: not in loadBalancerSourceRanges\" -j DROP\n"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
