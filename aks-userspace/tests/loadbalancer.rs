//! Privileged: LoadBalancer and NodePort services reached from outside. The fabric's
//! load balancer takes connections from the internet host at a public frontend and
//! spreads them over the nodes whose health probe answers; each node's NodePort chains
//! pick a backend. `externalTrafficPolicy: Cluster`: every node carries traffic and the
//! backend sees a node address; `Local`: only the backend's node carries traffic and the
//! backend sees the client. `loadBalancerSourceRanges` admit only their prefixes.
//! Both datapaths: kube-proxy's chains (iptables) and `from_vnet`'s node ports (eBPF).

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

/// `mode` (e.g. `networkPluginMode: overlay`) goes into the description as it is.
fn load_balancer_services_from_outside(plugin: &str, mode: &str, datapath: &str, tag: &str) {
    let cluster = TestCluster::new(tag);
    let name = cluster.name.clone();
    let extra = format!("{mode}{SERVICES}");
    let file = description_with(&name, plugin, datapath, 2, 1, &extra);
    up_keep(&file);
    // What a node masquerades to: its address, or (kubenet, Overlay: towards a pod on its
    // own bridge) the bridge's, as kube-proxy's MASQUERADE picks the outgoing
    // interface's address.
    let plan = json(&["plan", file.to_str().expect("utf-8 path"), "--json"]);
    // On the Overlay a node masquerades towards another node's pod to its tunnel
    // device's address, the network address of its pod range.
    let overlay = mode.contains("overlay");
    let node_addresses = |node: &serde_json::Value| -> BTreeSet<Ipv4Addr> {
        let tunnel = node["podCidr"]
            .as_str()
            .filter(|_| overlay)
            .and_then(|c| c.split('/').next()?.parse().ok());
        ["ip", "podGateway"]
            .iter()
            .filter_map(|k| node[k].as_str()?.parse().ok())
            .chain(tunnel)
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
    // The eBPF datapath SNATs only towards another node's backend (as Cilium): the
    // backend's own node hands it the client's address.
    let web_backends = &state
        .services
        .iter()
        .find(|s| s.name == "web")
        .expect("web recorded")
        .backends;
    let per_node: Vec<BTreeSet<Ipv4Addr>> = per_node
        .into_iter()
        .zip(&state.nodes)
        .map(|(addresses, node)| {
            let hosts_backend = web_backends.iter().any(|b| b.node == node.name);
            if datapath == "ebpf" && hosts_backend {
                BTreeSet::from([state.internet.address])
            } else {
                addresses
            }
        })
        .collect();
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
    // A pod of node 1 reaching node 0's node port arrives there from the VNet like any
    // client: with its own address on Azure CNI, masqueraded to node 1 where pod
    // addresses stay inside the node (kubenet, Overlay).
    let pod = &state.nodes[1].pods[0];
    let from_pod = host(
        &pod.name,
        &pod.namespace,
        pod.address,
        EndpointKind::Pod {
            node: state.nodes[1].name.clone(),
        },
    );
    let via_pod = probe(&state, "web-local", backend_node, &from_pod);
    assert_eq!(via_pod.answered, ATTEMPTS, "{via_pod:?}");
    let pod_source = if plugin == "kubenet" || mode.contains("overlay") {
        state.nodes[1].address
    } else {
        pod.address
    };
    assert_eq!(seen(&via_pod), BTreeSet::from([pod_source]), "{via_pod:?}");

    // loadBalancerSourceRanges: on-prem's prefix is admitted, the internet is not.
    let ranged = probe(&state, "onprem-only", frontend("onprem-only"), &on_prem);
    assert_eq!(ranged.answered, ATTEMPTS, "{ranged:?}");
    let denied = probe(&state, "onprem-only", frontend("onprem-only"), &internet);
    assert_eq!(denied.answered, 0, "outside the source ranges: {denied:?}");

    // The eBPF datapath counts each step under its own reason.
    if datapath == "ebpf" {
        let out = aksnet_ok(&["inspect", "stats", "--cluster", &name, "--json"]);
        let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        for reason in [
            "nodeport-dnat",
            "nodeport-dnat-snat",
            "nodeport-rev-dnat",
            "nodeport-rev-snat",
            "drop-nodeport-no-local-backend",
        ] {
            let counted = find_packets(&stats, reason);
            assert!(counted >= 1, "{reason} counted {counted} times");
        }
    }

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

// One test per cell, so they run in parallel and a failure names its cell.
cell_tests!(load_balancer_services_from_outside:
    azure_cni_iptables("azure", "", "iptables", "la"),
    kubenet_iptables("kubenet", "", "iptables", "lb"),
    azure_cni_ebpf("azure", "", "ebpf", "lc"),
    kubenet_ebpf("kubenet", "", "ebpf", "ld"),
    // A backend on another node sits behind the tunnel: the SNATed flow is routed into
    // it by the node's kernel.
    azure_overlay_ebpf("azure", "networkPluginMode: overlay\n", "ebpf", "le"),
    azure_overlay_iptables("azure", "networkPluginMode: overlay\n", "iptables", "lf"),
);

/// `aksnet services add|remove` on a running cluster reprograms the fabric's load
/// balancer (frontend, rule, the nodes its health probe admits) and the nodes' node
/// ports, on either datapath.
fn services_reprogram_the_load_balancer(datapath: &str, tag: &str) {
    let cluster = TestCluster::new(tag);
    let name = cluster.name.clone();
    let base = "services:\n  - { name: base, clusterIP: 10.0.0.20, port: 80, targetPort: 17001, backends: 1 }\n";
    let file = description_with(&name, "azure", datapath, 2, 1, base);
    up_keep(&file);
    let add = |policy: &str| add_load_balancer_service(&name, "web", "10.0.0.30", "1", policy);
    let state_now = || ClusterState::require(&name).expect("cluster state");
    let internet = |state: &ClusterState| {
        host(
            "internet",
            &state.internet.namespace,
            state.internet.address,
            EndpointKind::Internet,
        )
    };

    // Added as Local: the frontend answers, the backend sees the client.
    let out = add("Local");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("load balancer"),
        "says what it programmed: {said}"
    );
    let state = state_now();
    let exposure = state
        .exposures
        .iter()
        .find(|e| e.service == "web")
        .expect("web exposed")
        .clone();
    let frontend = SocketAddr::from((exposure.frontend.expect("a frontend"), 80));
    let local = probe(&state, "web", frontend, &internet(&state));
    assert_eq!(local.answered, ATTEMPTS, "{local:?}");
    assert_eq!(seen(&local), BTreeSet::from([state.internet.address]));
    let rows = json(&["check", &name, "--frontends", "--json"]);
    for row in rows.as_array().expect("frontend rows") {
        assert_eq!(row["verdict"], "pass", "{row}");
    }

    // A change that does not plan is bad input: exit 2, naming the field, nothing changed.
    let more = ["--type", "NodePort", "--node-port", "80"];
    let bad = aksnet(&services_add(&name, "bad", "10.0.0.31", "1", &more));
    let said = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{said}");
    assert!(said.contains("nodePort"), "names the field: {said}");
    assert!(state_now().services.iter().all(|s| s.name != "bad"));

    // Changed to Cluster: both nodes take traffic now; node 1 has no backend, so its
    // share reaches the backend SNATed to node 1's address.
    add("Cluster");
    let state = state_now();
    let after_change = probe(&state, "web", frontend, &internet(&state));
    assert_eq!(after_change.answered, ATTEMPTS, "{after_change:?}");
    assert!(
        seen(&after_change).contains(&state.nodes[1].address),
        "node 1 carries traffic after the change: {after_change:?}"
    );
    let rows = json(&["check", &name, "--frontends", "--json"]);
    for row in rows.as_array().expect("frontend rows") {
        assert_eq!(row["verdict"], "pass", "{row}");
    }

    // Removed: the frontend and the node ports are gone (the backend still listens,
    // so an answer would mean a leftover rule or map entry).
    let web = state
        .services
        .iter()
        .find(|s| s.name == "web")
        .expect("web recorded")
        .clone();
    let listeners = check::backend_listeners(&state, &web).expect("backend pods");
    aksnet_ok(&["services", "delete", "web", "--cluster", &name]);
    let state = state_now();
    assert!(state.exposures.iter().all(|e| e.service != "web"));
    let on_prem = host(
        "on-prem",
        &state.on_prem.namespace,
        state.on_prem.address,
        EndpointKind::OnPrem,
    );
    for (target, client) in [
        (frontend, internet(&state)),
        (
            SocketAddr::from((state.nodes[0].address, exposure.node_port)),
            on_prem,
        ),
    ] {
        let gone = check::probe_service_at(
            &web,
            target,
            &listeners,
            &client,
            3,
            check::FRONTEND_ATTEMPT_TIMEOUT,
        )
        .expect("probing a removed service");
        assert_eq!(gone.answered, 0, "{target} is gone: {gone:?}");
    }

    cluster.down();
}

cell_tests!(services_reprogram_the_load_balancer:
    services_add_and_remove_reprogram_the_load_balancer_ebpf("ebpf", "lg"),
    services_add_and_remove_reprogram_the_load_balancer_iptables("iptables", "lh"),
);
