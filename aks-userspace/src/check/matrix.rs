//! The standard matrix of a cluster: which probes `aksnet check` runs, chosen so every
//! AKS behaviour shows: pod to pod on one node and across nodes, pod to a node, to
//! on-prem and to the internet; a node to a pod; on-prem and the internet to a pod and
//! a node. What each probe should find comes from [`super::expect`], not from here.

use super::{Endpoint, EndpointKind, Probe};
use crate::state::ClusterState;

/// Every place of the cluster a probe can start from or go to, by the names `check`
/// prints: each pod and node, `on-prem` and `internet`.
pub fn cluster_endpoints(state: &ClusterState) -> Vec<Endpoint> {
    let mut endpoints = Vec::new();
    for node in &state.nodes {
        for pod in &node.pods {
            endpoints.push(Endpoint {
                label: pod.name.clone(),
                kind: EndpointKind::Pod {
                    node: node.name.clone(),
                },
                namespace: pod.namespace.clone(),
                address: pod.address,
            });
        }
    }
    for node in &state.nodes {
        endpoints.push(Endpoint {
            label: node.name.clone(),
            kind: EndpointKind::Node {
                name: node.name.clone(),
            },
            namespace: node.namespace.clone(),
            address: node.address,
        });
    }
    endpoints.push(Endpoint {
        label: "on-prem".into(),
        kind: EndpointKind::OnPrem,
        namespace: state.on_prem.namespace.clone(),
        address: state.on_prem.address,
    });
    endpoints.push(Endpoint {
        label: "internet".into(),
        kind: EndpointKind::Internet,
        namespace: state.internet.namespace.clone(),
        address: state.internet.address,
    });
    endpoints
}

/// Endpoints and probes for `state`. Probes whose endpoints the cluster lacks (a second
/// node, a second pod) are left out.
pub fn cluster_matrix(state: &ClusterState) -> (Vec<Endpoint>, Vec<Probe>) {
    let endpoints = cluster_endpoints(state);
    let index = |label: Option<&String>| {
        let label = label?;
        endpoints.iter().position(|e| &e.label == label)
    };
    let pod =
        |node: usize, slot: usize| index(state.nodes.get(node)?.pods.get(slot).map(|p| &p.name));
    let node = |i: usize| index(state.nodes.get(i).map(|n| &n.name));
    let (pod_a, pod_b, pod_c) = (pod(0, 0), pod(0, 1), pod(1, 0));
    let (node_0, node_1) = (node(0), node(1));
    let on_prem = index(Some(&"on-prem".to_owned()));
    let internet = index(Some(&"internet".to_owned()));

    let wanted = [
        (pod_a, pod_b, "pod -> pod, same node"),
        (pod_a, pod_c, "pod -> pod, other node"),
        (pod_a, node_1, "pod -> node, other node"),
        (pod_a, on_prem, "pod -> on-prem"),
        (pod_a, internet, "pod -> internet"),
        (node_0, pod_c, "node -> pod, other node"),
        (on_prem, pod_a, "on-prem -> pod"),
        (on_prem, node_0, "on-prem -> node"),
        (internet, pod_a, "internet -> pod"),
        (internet, node_0, "internet -> node"),
    ];
    let probes = wanted
        .into_iter()
        .filter_map(|(source, destination, path)| Some(Probe::new(source?, destination?, path)))
        .collect();
    (endpoints, probes)
}
