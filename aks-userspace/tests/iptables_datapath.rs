//! Privileged, end to end through the `aksnet` binary: the iptables datapath (kubenet
//! on `cbr0`, legacy Azure CNI on `azure0`, kube-proxy's chains, ip-masq-agent) gives
//! the check matrix the eBPF twins give, services reach every backend, and `down`
//! leaves nothing behind.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::cluster::*;
use common::require_privileges;
use serde_json::Value;

/// 2 nodes × 2 pods; `web` (TCP, 3 backends: node 0 pod 0 (the probing client itself,
/// so hairpin), node 1 pod 0, node 0 pod 1 (same bridge)) and `dns` (UDP, 2 backends).
fn services_description(name: &str, plugin: &str) -> PathBuf {
    description_with(
        name,
        plugin,
        "iptables",
        2,
        2,
        "services:\n  - { name: web, clusterIP: 10.0.0.20, port: 80, targetPort: 8080, protocol: TCP, backends: 3 }\n  - { name: dns, clusterIP: 10.0.0.53, port: 53, protocol: UDP, backends: 2 }\n",
    )
}

/// Reachability and source addresses both iptables cells share with their eBPF twins
/// (see tests/cluster_lifecycle.rs). `outside_seen_as` is who pod -> on-prem shows as.
fn assert_common_matrix(results: &[Value], plugin: &str) {
    for r in results {
        eprintln!("{plugin}: {r}");
    }
    for path in [
        "pod -> pod, same node",
        "pod -> pod, other node",
        "node -> pod, other node",
    ] {
        let r = probe(results, path);
        assert_eq!(r["connected"], true, "{plugin} {path}: {r}");
        assert_eq!(
            r["seenSource"], r["sourceAddress"],
            "{plugin} {path}: no NAT between pods and from nodes"
        );
    }
    // kubenet's ip-masq-agent keeps only the pod CIDR (configure-kubenet.md): another
    // node sees the pod's node; Azure CNI pods are VNet addresses and keep them.
    let to_node = probe(results, "pod -> node, other node");
    assert_eq!(to_node["connected"], true, "{plugin}: {to_node}");
    if plugin == "kubenet" {
        assert_eq!(to_node["seenAs"], "nodepool1-0", "{to_node}");
    } else {
        assert_eq!(to_node["seenSource"], to_node["sourceAddress"], "{to_node}");
    }
    // ip-masq-agent masquerades to the node towards the internet; the load balancer's
    // outbound rule (outboundType loadBalancer) then SNATs the node to its address.
    let internet = probe(results, "pod -> internet");
    assert_eq!(internet["connected"], true);
    assert_eq!(
        internet["seenSource"], "198.51.100.4",
        "{plugin}: {internet}"
    );
    let on_prem_node = probe(results, "on-prem -> node");
    assert_eq!(on_prem_node["connected"], true);
    assert_eq!(on_prem_node["seenSource"], on_prem_node["sourceAddress"]);
    for path in ["internet -> pod", "internet -> node"] {
        assert_eq!(
            probe(results, path)["connected"],
            false,
            "{plugin} {path}: no inbound from the internet"
        );
    }
}

/// `check --services`: every backend of every service answered, and a pod reaching
/// itself through the service (hairpin) was masqueraded.
fn assert_services_reach_every_backend(name: &str, hairpin_source: &str) {
    let results = json(&["check", name, "--services", "--json"]);
    let results = results.as_array().expect("an array of service results");
    assert_eq!(results.len(), 2);
    for r in results {
        let counts: Vec<String> = r["backends"]
            .as_array()
            .expect("backends")
            .iter()
            .map(|b| format!("{}={}", b["pod"], b["answers"]))
            .collect();
        eprintln!(
            "service {} ({}): {} of {} answered: {}",
            r["service"],
            r["protocol"],
            r["answered"],
            r["attempts"],
            counts.join(" ")
        );
        assert_eq!(r["attempts"], 60, "{r}");
        assert_eq!(r["answered"], 60, "every connection answered: {r}");
        for b in r["backends"].as_array().expect("backends") {
            assert!(
                b["answers"].as_u64().expect("a count") > 0,
                "backend {} of {} never answered: {r}",
                b["pod"],
                r["service"]
            );
            let seen = b["seenSources"].as_array().expect("seen sources");
            if b["pod"] == r["client"] {
                assert_eq!(
                    seen,
                    &vec![Value::from(hairpin_source)],
                    "hairpin traffic is masqueraded (KUBE-MARK-MASQ): {r}"
                );
            } else {
                assert_eq!(
                    seen,
                    &vec![r["clientAddress"].clone()],
                    "pod to service keeps the pod address: {r}"
                );
            }
        }
    }
}

/// `inspect rules --json`: one KUBE-SVC chain per service, one KUBE-SEP per backend,
/// and ip-masq-agent's chain, as the kernel holds them.
fn assert_rules_in_place(name: &str) {
    let rules = json(&[
        "inspect",
        "rules",
        "nodepool1-1",
        "--cluster",
        name,
        "--json",
    ]);
    let chains = rules["chains"].as_array().expect("chains");
    let count = |prefix: &str| {
        chains
            .iter()
            .filter(|c| c["chain"].as_str().is_some_and(|n| n.starts_with(prefix)))
            .count()
    };
    assert_eq!(count("KUBE-SVC-"), 2, "{rules}");
    assert_eq!(count("KUBE-SEP-"), 3 + 2, "{rules}");
    assert_eq!(count("IP-MASQ-AGENT"), 1);
    let unknown = aksnet(&["inspect", "rules", "nodepool9-9", "--cluster", name]);
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("nodepool1-0, nodepool1-1"),
        "an unknown node lists the known ones: {stderr}"
    );
}

fn assert_hairpin_on_bridge_ports(name: &str, node: &str, bridge: &str) {
    let out = Command::new("ip")
        .args([
            "-n",
            &format!("aks-{name}-{node}"),
            "-d",
            "link",
            "show",
            "lxc0",
        ])
        .output()
        .expect("ip link");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("master {bridge}")) && text.contains("hairpin on"),
        "lxc0 is a hairpin port of {bridge}: {text}"
    );
}

// `assert_gone` (common::cluster): no namespace, so no rule either (the rules lived
// only in the node namespaces), no record, no pins.

#[test]
fn kubenet_iptables_bridges_pods_and_balances_services() {
    require_privileges();
    let name = cluster_name("ik");
    let _down = Down(name.clone());
    aksnet_ok(&[
        "up",
        services_description(&name, "kubenet")
            .to_str()
            .expect("utf-8"),
        "--keep",
    ]);
    assert_hairpin_on_bridge_ports(&name, "nodepool1-0", "cbr0");

    let results = json(&["check", &name, "--json"]);
    let results = results.as_array().expect("results");
    assert_common_matrix(results, "kubenet");
    assert_eq!(
        probe(results, "pod -> on-prem")["seenAs"],
        "nodepool1-0",
        "kubenet pods leave the VNet as their node"
    );
    assert_eq!(
        probe(results, "on-prem -> pod")["connected"],
        false,
        "kubenet pod addresses are not routable from on-prem"
    );
    // Hairpin: masqueraded to cbr0's address, the node's pod gateway.
    assert_services_reach_every_backend(&name, "10.244.0.1");
    assert_rules_in_place(&name);

    aksnet_ok(&["down", &name]);
    assert_gone(&name);
}

#[test]
fn azure_iptables_keeps_vnet_addresses_and_balances_services() {
    require_privileges();
    let name = cluster_name("ia");
    let _down = Down(name.clone());
    aksnet_ok(&[
        "up",
        services_description(&name, "azure")
            .to_str()
            .expect("utf-8"),
        "--keep",
    ]);
    assert_hairpin_on_bridge_ports(&name, "nodepool1-0", "azure0");

    let results = json(&["check", &name, "--json"]);
    let results = results.as_array().expect("results");
    assert_common_matrix(results, "azure");
    // Node Subnet: on-prem reaches pods by their VNet address, but pods reach on-prem
    // as their node: the default non-masquerade CIDRs hold only the VNet.
    let inbound = probe(results, "on-prem -> pod");
    assert_eq!(inbound["connected"], true, "{inbound}");
    assert_eq!(inbound["seenSource"], inbound["sourceAddress"], "{inbound}");
    let outbound = probe(results, "pod -> on-prem");
    assert_eq!(outbound["connected"], true, "{outbound}");
    assert_eq!(outbound["seenAs"], "nodepool1-0", "{outbound}");
    // Hairpin: azure0 has no address, so MASQUERADE picks the node's.
    assert_services_reach_every_backend(&name, "10.224.0.4");
    assert_rules_in_place(&name);

    aksnet_ok(&["down", &name]);
    assert_gone(&name);
}
