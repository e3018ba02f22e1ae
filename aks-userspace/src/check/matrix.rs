//! The standard matrix of a cluster: which probes `aksnet check` runs, chosen so every
//! AKS behaviour shows: pod to pod on one node and across nodes, pod to a node, to
//! on-prem and to the internet; a node to a pod; on-prem and the internet to a pod and
//! a node.

use super::{Endpoint, EndpointKind, Probe};
use crate::state::ClusterState;

/// Endpoints and probes for `state`. Probes whose endpoints the cluster lacks (a second
/// node, a second pod) are left out.
pub fn cluster_matrix(state: &ClusterState) -> (Vec<Endpoint>, Vec<Probe>) {
    let mut endpoints = Vec::new();
    let mut add = |e: Endpoint| {
        endpoints.push(e);
        endpoints.len() - 1
    };
    let pod = |node: usize, slot: usize| -> Option<Endpoint> {
        let n = state.nodes.get(node)?;
        let p = n.pods.get(slot)?;
        Some(Endpoint {
            label: p.name.clone(),
            kind: EndpointKind::Pod {
                node: n.name.clone(),
            },
            namespace: p.namespace.clone(),
            address: p.address,
        })
    };
    let node = |i: usize| -> Option<Endpoint> {
        let n = state.nodes.get(i)?;
        Some(Endpoint {
            label: n.name.clone(),
            kind: EndpointKind::Node {
                name: n.name.clone(),
            },
            namespace: n.namespace.clone(),
            address: n.address,
        })
    };
    let pod_a = pod(0, 0).map(&mut add);
    let pod_b = pod(0, 1).map(&mut add);
    let pod_c = pod(1, 0).map(&mut add);
    let node_0 = node(0).map(&mut add);
    let node_1 = node(1).map(&mut add);
    let on_prem = Some(add(Endpoint {
        label: "on-prem".into(),
        kind: EndpointKind::OnPrem,
        namespace: state.on_prem.namespace.clone(),
        address: state.on_prem.address,
    }));
    let internet = Some(add(Endpoint {
        label: "internet".into(),
        kind: EndpointKind::Internet,
        namespace: state.internet.namespace.clone(),
        address: state.internet.address,
    }));

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
