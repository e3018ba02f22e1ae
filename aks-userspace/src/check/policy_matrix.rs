//! `check --policies`: the probes that show every policy at work. Pod slots are the
//! units policies select (a template per slot), so every ordered pair of slots is probed
//! on one node and across two nodes (the local and the VNet path of each datapath),
//! whenever a policy isolates the source's egress or the destination's ingress, on each
//! port the policies name (both ends of a range) or the check port. Isolated pods are
//! also probed towards on-prem and the internet, and from on-prem and both nodes.

use std::collections::BTreeSet;

use super::expect::{Expectation, NetworkModel};
use super::REACHABLE_TIMEOUT;
use super::{cluster_endpoints, Endpoint, EndpointKind, Probe, CHECK_PORT};
use crate::model::policy::{PolicyType, PortRange};
use crate::model::Protocol;
use crate::state::ClusterState;

/// Endpoints and the policy probes of `state` with their expectations.
pub fn policy_matrix(
    state: &ClusterState,
    model: &NetworkModel,
) -> (Vec<Endpoint>, Vec<(Probe, Expectation)>) {
    let endpoints = cluster_endpoints(state);
    let mut probes = Vec::new();
    let find = |address| {
        endpoints
            .iter()
            .position(|e: &Endpoint| e.address == address)
    };
    let pod_at = |node: usize, slot: usize| find(state.nodes.get(node)?.pods.get(slot)?.address);
    let node_at = |node: usize| find(state.nodes.get(node)?.address);
    let slots = state.nodes.first().map_or(0, |n| n.pods.len());
    let isolated = |endpoint: usize, direction: PolicyType| -> bool {
        model.pods.iter().any(|p| {
            p.address == endpoints[endpoint].address
                && crate::policy::isolating(&model.policy, &p.namespace, &p.labels, direction)
                    .next()
                    .is_some()
        })
    };
    let mut add = |source: usize, destination: usize, path: String, ports: &BTreeSet<(u8, u16)>| {
        for &(protocol, port) in ports {
            let protocol = if protocol == 17 {
                Protocol::Udp
            } else {
                Protocol::Tcp
            };
            probes.push(Probe {
                source,
                destination,
                path: path.clone(),
                port,
                protocol,
                timeout: REACHABLE_TIMEOUT,
            });
        }
    };
    for from_slot in 0..slots {
        for to_slot in 0..slots {
            for (other_node, where_) in [(0, "same node"), (1, "other node")] {
                if other_node == 0 && from_slot == to_slot {
                    continue;
                }
                let (Some(source), Some(destination)) =
                    (pod_at(0, from_slot), pod_at(other_node, to_slot))
                else {
                    continue;
                };
                if !isolated(source, PolicyType::Egress)
                    && !isolated(destination, PolicyType::Ingress)
                {
                    continue;
                }
                let ports = policy_ports(model, &endpoints, source, destination);
                add(
                    source,
                    destination,
                    format!("slot {from_slot} -> slot {to_slot}, {where_}"),
                    &ports,
                );
            }
        }
    }
    let outside: Vec<usize> = endpoints
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e.kind, EndpointKind::OnPrem | EndpointKind::Internet))
        .map(|(i, _)| i)
        .collect();
    for slot in 0..slots {
        let Some(pod) = pod_at(0, slot) else { continue };
        if isolated(pod, PolicyType::Egress) {
            for &host in &outside {
                let ports = policy_ports(model, &endpoints, pod, host);
                add(
                    pod,
                    host,
                    format!("slot {slot} -> {}", endpoints[host].label),
                    &ports,
                );
            }
        }
        if isolated(pod, PolicyType::Ingress) {
            let ports = policy_ports(model, &endpoints, pod, pod);
            let sources = [
                node_at(0),
                node_at(1),
                outside
                    .iter()
                    .copied()
                    .find(|&i| endpoints[i].kind == EndpointKind::OnPrem),
            ];
            for source in sources.into_iter().flatten() {
                add(
                    source,
                    pod,
                    format!("{} -> slot {slot}", endpoints[source].label),
                    &ports,
                );
            }
        }
    }
    let checked = super::with_expectations(model, &endpoints, probes);
    (endpoints, checked)
}

/// The (protocol number, port) pairs worth probing between `source` and `destination`:
/// the ports of the policies that isolate either (both ends of a range), or the check
/// port when they name none.
fn policy_ports(
    model: &NetworkModel,
    endpoints: &[Endpoint],
    source: usize,
    destination: usize,
) -> BTreeSet<(u8, u16)> {
    let mut ports = BTreeSet::new();
    let mut note = |range: &PortRange| {
        let protocol = match range.protocol {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        };
        if (range.first, range.last) == (0, u16::MAX) {
            ports.insert((protocol, CHECK_PORT));
        } else {
            ports.insert((protocol, range.first));
            ports.insert((protocol, range.last));
        }
    };
    for (endpoint, direction) in [
        (source, PolicyType::Egress),
        (destination, PolicyType::Ingress),
    ] {
        let Some(pod) = model
            .pods
            .iter()
            .find(|p| p.address == endpoints[endpoint].address)
        else {
            continue;
        };
        for policy in
            crate::policy::isolating(&model.policy, &pod.namespace, &pod.labels, direction)
        {
            for rule in policy.rules(direction).unwrap_or_default() {
                rule.ports.iter().for_each(&mut note);
            }
        }
    }
    if ports.is_empty() {
        ports.insert((6, CHECK_PORT));
    }
    ports
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::layout::layout;

    use crate::policy::testing::THREE_TIER;

    /// The record `up` would write for the three-tier example, without building it.
    fn three_tier() -> (ClusterState, NetworkModel) {
        three_tier_from(THREE_TIER)
    }

    fn three_tier_from(yaml: &str) -> (ClusterState, NetworkModel) {
        let plan = crate::plan::plan(&crate::model::load(yaml).expect("valid")).expect("plan");
        let layout = layout(&plan);
        let state = ClusterState {
            name: plan.name.clone(),
            network_plugin: plan.network_plugin,
            datapath: plan.datapath,
            pid: 0,
            namespaces: Vec::new(),
            vnet: layout.vnet.clone(),
            nodes: layout.nodes.clone(),
            internet: layout.internet.clone(),
            on_prem: layout.on_prem.clone(),
            non_masquerade_cidrs: Vec::new(),
            conntrack: None,
            services: Vec::new(),
            exposures: Vec::new(),
            outbound: plan.outbound.clone(),
            network_policy: plan.policy.engine,
        };
        (state, NetworkModel::from_plan(&plan))
    }

    fn row<'c>(
        endpoints: &[Endpoint],
        checks: &'c [(Probe, Expectation)],
        path: &str,
        destination: &str,
        port: u16,
    ) -> &'c Expectation {
        checks
            .iter()
            .find(|(p, _)| {
                p.path == path && p.port == port && endpoints[p.destination].label == destination
            })
            .map(|(_, e)| e)
            .unwrap_or_else(|| panic!("no probe {path} to {destination}:{port}"))
    }

    #[test]
    fn three_tier_pairs_and_ports() {
        let (state, model) = three_tier();
        let (endpoints, checks) = policy_matrix(&state, &model);
        let blocked = |path: &str, destination: &str, port: u16| {
            row(&endpoints, &checks, path, destination, port).is_blocked()
        };
        // api (slot 1) -> db (slot 2) on 5432 connects, on one node and across nodes.
        for (path, db) in [
            ("slot 1 -> slot 2, same node", "nodepool1-0-pod2"),
            ("slot 1 -> slot 2, other node", "nodepool1-1-pod2"),
        ] {
            let expected = row(&endpoints, &checks, path, db, 5432);
            assert!(!expected.is_blocked(), "{path}: {expected}");
            assert!(expected.to_string().contains("reachable"), "{expected}");
        }
        // web (slot 0) and the client (slot 3) do not reach db.
        for path in [
            "slot 0 -> slot 2, other node",
            "slot 3 -> slot 2, same node",
        ] {
            let db = if path.ends_with("same node") {
                "nodepool1-0-pod2"
            } else {
                "nodepool1-1-pod2"
            };
            match row(&endpoints, &checks, path, db, 5432) {
                Expectation::Blocked { reason } => {
                    assert!(reason.contains("shop/db-from-api"), "{reason}")
                }
                other => panic!("{path}: expected blocked, got {other}"),
            }
        }
        // web -> api on 8080 connects; probes are blocked-timeout only when blocked.
        let (probe, expected) = checks
            .iter()
            .find(|(p, _)| p.path == "slot 0 -> slot 1, other node" && p.port == 8080)
            .expect("web -> api:8080");
        assert!(!expected.is_blocked());
        assert_eq!(probe.timeout, REACHABLE_TIMEOUT);
        // Only api reaches the internet.
        assert!(!blocked("slot 1 -> internet", "internet", CHECK_PORT));
        assert!(blocked("slot 0 -> internet", "internet", CHECK_PORT));
        // db's own node reaches it (kubelet), the other node does not.
        assert!(!blocked("nodepool1-0 -> slot 2", "nodepool1-0-pod2", 5432));
        assert!(blocked("nodepool1-1 -> slot 2", "nodepool1-0-pod2", 5432));
        // Both outcomes are represented in numbers, so the view is not one-sided.
        let blocked_rows = checks.iter().filter(|(_, e)| e.is_blocked()).count();
        assert!(
            blocked_rows > 5 && blocked_rows < checks.len() - 5,
            "{blocked_rows} of {}",
            checks.len()
        );
    }

    #[test]
    fn on_iptables_overlay_a_node_reaches_its_own_pods_from_its_bridge_and_is_allowed() {
        let yaml = THREE_TIER
            .replacen("datapath: ebpf", "datapath: iptables", 1)
            .replacen("networkPolicy: cilium", "networkPolicy: calico", 1)
            .replacen(
                "networkPlugin: azure",
                "networkPlugin: azure\nnetworkPluginMode: overlay",
                1,
            );
        let (state, model) = three_tier_from(&yaml);
        let (endpoints, checks) = policy_matrix(&state, &model);
        let blocked = |path: &str, destination: &str, port: u16| {
            row(&endpoints, &checks, path, destination, port).is_blocked()
        };
        let bridge = model.nodes[0]
            .pod_gateway
            .expect("Overlay nodes have a pod bridge");
        match row(
            &endpoints,
            &checks,
            "nodepool1-0 -> slot 2",
            "nodepool1-0-pod2",
            5432,
        ) {
            Expectation::Reachable {
                source: Some(source),
                why,
            } => {
                assert_eq!(source.address, bridge, "{why}");
                assert!(why.contains("from its own node"), "{why}");
            }
            other => panic!("expected reachable from the bridge, got {other}"),
        }
        assert!(blocked("nodepool1-1 -> slot 2", "nodepool1-0-pod2", 5432));
    }

    #[test]
    fn nothing_to_probe_without_policies() {
        let yaml = include_str!("../../../examples/azure-ebpf.yaml");
        let plan = crate::plan::plan(&crate::model::load(yaml).expect("valid")).expect("plan");
        let (mut state, _) = three_tier();
        state.nodes = layout(&plan).nodes;
        let (_, checks) = policy_matrix(&state, &NetworkModel::from_plan(&plan));
        assert!(checks.is_empty());
    }
}
