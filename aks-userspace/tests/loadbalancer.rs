//! Privileged: LoadBalancer and NodePort services reached from outside. The fabric's
//! load balancer takes connections from the internet host at a public frontend and
//! spreads them over the nodes whose health probe answers; each node's NodePort chains
//! pick a backend. `externalTrafficPolicy: Cluster`: every node carries traffic and the
//! backend sees a node address; `Local`: only the backend's node carries traffic and the
//! backend sees the client. `loadBalancerSourceRanges` admit only their prefixes.

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};

use aks_userspace::check::{self, Endpoint, EndpointKind, ServiceProbeResult};
use aks_userspace::state::ClusterState;
use common::cluster::*;

/// Three services, one backend each (placed on the first node).
const SERVICES: &str = "services:\n  - { name: web, clusterIP: 10.0.0.20, port: 80, targetPort: 17001, backends: 1, type: LoadBalancer }\n  - { name: web-local, clusterIP: 10.0.0.21, port: 80, targetPort: 17001, backends: 1, type: LoadBalancer, externalTrafficPolicy: Local }\n  - { name: onprem-only, clusterIP: 10.0.0.22, port: 80, targetPort: 17001, backends: 1, type: LoadBalancer, loadBalancerSourceRanges: [192.168.100.0/24] }\n";

const ATTEMPTS: usize = 30;

fn host(label: &str, namespace: &str, address: Ipv4Addr, kind: EndpointKind) -> Endpoint {
    Endpoint {
        label: label.into(),
        kind,
        namespace: namespace.into(),
        address,
    }
}

/// `ATTEMPTS` connections from `client` to `target`, answered by the backends of
/// `service`.
fn probe(
    state: &ClusterState,
    service: &str,
    target: SocketAddr,
    client: &Endpoint,
) -> ServiceProbeResult {
    let plan = state
        .services
        .iter()
        .find(|s| s.name == service)
        .unwrap_or_else(|| panic!("service {service} recorded"));
    let backends = check::backend_listeners(state, plan).expect("backend pods");
    let result = check::probe_service_at(
        plan,
        target,
        &backends,
        client,
        ATTEMPTS,
        check::FRONTEND_ATTEMPT_TIMEOUT,
    )
    .expect("probing the service");
    eprintln!(
        "{service} via {target} from {}: {} of {} answered, seen {:?}, error {:?}",
        client.label,
        result.answered,
        result.attempts,
        result
            .backends
            .iter()
            .flat_map(|b| &b.seen_sources)
            .collect::<Vec<_>>(),
        result.error
    );
    result
}

fn seen(result: &ServiceProbeResult) -> BTreeSet<Ipv4Addr> {
    result
        .backends
        .iter()
        .flat_map(|b| b.seen_sources.iter().copied())
        .collect()
}

fn load_balancer_services_from_outside(plugin: &str, datapath: &str, tag: &str) {
    let cluster = TestCluster::new(tag);
    let name = cluster.name.clone();
    let file = description_with(&name, plugin, datapath, 2, 1, SERVICES);
    up_keep(&file);
    // What a node masquerades to: its address, or (kubenet, towards a pod on its own
    // bridge) cbr0's, as kube-proxy's MASQUERADE picks the outgoing interface's address.
    let plan = json(&["plan", file.to_str().expect("utf-8 path"), "--json"]);
    let node_addresses = |node: &serde_json::Value| -> BTreeSet<Ipv4Addr> {
        ["ip", "podGateway"]
            .iter()
            .filter_map(|k| node[k].as_str()?.parse().ok())
            .collect()
    };
    let per_node: Vec<BTreeSet<Ipv4Addr>> = plan["nodes"]
        .as_array()
        .expect("planned nodes")
        .iter()
        .map(node_addresses)
        .collect();
    let state = ClusterState::require(&name).expect("cluster state");
    let exposure = |service: &str| {
        state
            .exposures
            .iter()
            .find(|e| e.service == service)
            .unwrap_or_else(|| panic!("{service} exposed"))
            .clone()
    };
    let internet = host(
        "internet",
        &state.internet.namespace,
        state.internet.address,
        EndpointKind::Internet,
    );
    let on_prem = host(
        "on-prem",
        &state.on_prem.namespace,
        state.on_prem.address,
        EndpointKind::OnPrem,
    );
    let frontend = |service: &str| {
        let e = exposure(service);
        SocketAddr::from((e.frontend.expect("a frontend"), 80))
    };

    // Cluster: every node forwards (both answer the probe), the backend sees a node.
    let web = probe(&state, "web", frontend("web"), &internet);
    assert_eq!(web.answered, ATTEMPTS, "{web:?}");
    let seen_web = seen(&web);
    for (i, addresses) in per_node.iter().enumerate() {
        assert_eq!(
            seen_web.intersection(addresses).count(),
            1,
            "node {i} carried traffic, SNATed to one of {addresses:?}: {web:?}"
        );
    }
    assert_eq!(
        seen_web.len(),
        per_node.len(),
        "only node addresses: {web:?}"
    );

    // Local: only the backend's node gets traffic, and the backend sees the client.
    let local = probe(&state, "web-local", frontend("web-local"), &internet);
    assert_eq!(local.answered, ATTEMPTS, "{local:?}");
    assert_eq!(
        seen(&local),
        BTreeSet::from([state.internet.address]),
        "{local:?}"
    );
    // Straight at the NodePort of the node without a backend: kube-proxy drops it.
    let node_port = exposure("web-local").node_port;
    let empty_node = SocketAddr::from((state.nodes[1].address, node_port));
    let refused = probe(&state, "web-local", empty_node, &on_prem);
    assert_eq!(
        refused.answered, 0,
        "no local backend on node 1: {refused:?}"
    );
    let backend_node = SocketAddr::from((state.nodes[0].address, node_port));
    let direct = probe(&state, "web-local", backend_node, &on_prem);
    assert_eq!(direct.answered, ATTEMPTS, "{direct:?}");
    assert_eq!(seen(&direct), BTreeSet::from([state.on_prem.address]));

    // loadBalancerSourceRanges: on-prem's prefix is admitted, the internet is not.
    let ranged = probe(&state, "onprem-only", frontend("onprem-only"), &on_prem);
    assert_eq!(ranged.answered, ATTEMPTS, "{ranged:?}");
    let denied = probe(&state, "onprem-only", frontend("onprem-only"), &internet);
    assert_eq!(denied.answered, 0, "outside the source ranges: {denied:?}");

    // `check --frontends` judges each frontend from both hosts against the model.
    let rows = json(&["check", &name, "--frontends", "--json"]);
    let rows = rows.as_array().expect("frontend rows");
    assert_eq!(rows.len(), 6, "3 frontends x 2 clients: {rows:?}");
    assert_all_pass(rows);
    let blocked = rows
        .iter()
        .filter(|r| r["expected"]["outcome"] == "blocked")
        .count();
    assert_eq!(blocked, 1, "only the internet to onprem-only: {rows:?}");

    cluster.down();
}

#[test]
fn azure_cni_iptables() {
    load_balancer_services_from_outside("azure", "iptables", "la");
}

#[test]
fn kubenet_iptables() {
    load_balancer_services_from_outside("kubenet", "iptables", "lb");
}
