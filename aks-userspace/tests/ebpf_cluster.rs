//! Privileged: whole clusters on the eBPF datapath. The check matrix must show each
//! AKS behaviour, and the pinned `STATS` must show the traffic really took the BPF path
//! (redirects counted), not the kernel's routing.

mod common;

use std::path::Path;

use aks_ebpf_common::Reason;
use aks_userspace::check::{self, Probe};
use aks_userspace::datapath::ebpf::{read_pinned, ReasonTotals};
use aks_userspace::state::ClusterState;
use common::cluster::*;
use common::require_privileges;

fn node_stats(cluster: &str, node: &str) -> ReasonTotals {
    let path = Path::new("/sys/fs/bpf/aksnet")
        .join(cluster)
        .join(node)
        .join("STATS");
    read_pinned(&path).expect("reading pinned STATS")
}

#[test]
fn azure_cni_routes_pods_in_bpf_with_their_own_addresses() {
    require_privileges();
    let name = cluster_name("bz");
    let _down = Down(name.clone());
    up_keep(&description(&name, "azure", "ebpf", 2, 2));
    let before = node_stats(&name, "nodepool1-0");
    let results = check(&name);
    for path in [
        "pod -> pod, same node",
        "pod -> pod, other node",
        "on-prem -> pod",
    ] {
        let r = probe(&results, path);
        assert_eq!(r["connected"], true, "{path}: {r}");
        assert_eq!(
            r["seenSource"], r["sourceAddress"],
            "{path}: the original pod address, no NAT"
        );
    }
    let after = node_stats(&name, "nodepool1-0");
    let grew = |reason: Reason| after.get(reason).packets - before.get(reason).packets;
    // Each probe that touches node 0's pods is a TCP handshake, a data segment and a
    // teardown: several packets per direction, all through the BPF programs.
    assert!(
        grew(Reason::RedirectedPeer) >= 8,
        "deliveries into pods were redirected: {}",
        grew(Reason::RedirectedPeer)
    );
    assert!(
        grew(Reason::RedirectedUplink) >= 8,
        "pod traffic left through bpf_redirect: {}",
        grew(Reason::RedirectedUplink)
    );
    assert_eq!(
        grew(Reason::DropNeedsMasquerade),
        0,
        "Azure CNI pod addresses are VNet addresses"
    );
    aksnet_ok(&["down", &name]);
    assert_gone(&name);
}

#[test]
fn kubenet_routes_pods_through_the_route_table_and_masquerades_the_rest() {
    require_privileges();
    let name = cluster_name("bk");
    let _down = Down(name.clone());
    up_keep(&description(&name, "kubenet", "ebpf", 2, 2));
    let before = node_stats(&name, "nodepool1-0");
    let results = check(&name);
    for path in [
        "pod -> pod, same node",
        "pod -> pod, other node",
        "node -> pod, other node",
    ] {
        let r = probe(&results, path);
        assert_eq!(r["connected"], true, "{path}: {r}");
        assert_eq!(
            r["seenSource"], r["sourceAddress"],
            "{path}: inside the non-masquerade CIDRs"
        );
    }
    for path in ["pod -> internet", "pod -> on-prem"] {
        let r = probe(&results, path);
        assert_eq!(
            r["connected"], true,
            "{path}: the reply came back through reverse SNAT: {r}"
        );
        assert_eq!(
            r["seenAs"], "nodepool1-0",
            "{path}: kubenet pods leave as their node"
        );
    }
    assert_eq!(probe(&results, "on-prem -> pod")["connected"], false);
    let after = node_stats(&name, "nodepool1-0");
    let grew = |reason: Reason| after.get(reason).packets - before.get(reason).packets;
    assert!(
        grew(Reason::RedirectedUplinkSnat) >= 4,
        "SNATed packets counted: {}",
        grew(Reason::RedirectedUplinkSnat)
    );
    assert!(
        grew(Reason::RedirectedPeerRevSnat) >= 4,
        "replies reverse-NATed: {}",
        grew(Reason::RedirectedPeerRevSnat)
    );
    aksnet_ok(&["down", &name]);
    assert_gone(&name);
}

#[test]
fn an_nsg_rule_blocks_one_port_and_leaves_another_open() {
    require_privileges();
    let name = cluster_name("bn");
    let _down = Down(name.clone());
    let nsg = "nsg:\n  - { name: deny-17002, priority: 100, access: Deny, protocol: Tcp, destinationAddressPrefix: 10.224.0.0/24, destinationPortRange: \"17002\" }\n";
    up_keep(&description_with(&name, "azure", "ebpf", 1, 1, nsg));
    let state = ClusterState::require(&name).expect("cluster state");
    let (endpoints, _) = check::cluster_matrix(&state);
    let pod = endpoints
        .iter()
        .position(|e| e.label == "nodepool1-0-pod0")
        .expect("pod endpoint");
    let on_prem = endpoints
        .iter()
        .position(|e| e.label == "on-prem")
        .expect("on-prem endpoint");
    let open = Probe::new(on_prem, pod, "on-prem -> pod, open port");
    let blocked = Probe {
        port: 17002,
        ..Probe::new(on_prem, pod, "on-prem -> pod, denied port")
    };
    let before = node_stats(&name, "nodepool1-0")
        .get(Reason::DropNsgDenied)
        .packets;
    let results = check::run(&endpoints, &[open, blocked]).expect("probes");
    print!("{}", check::render_table(&results));
    assert!(
        results[0].connected,
        "port 17001 is open: {:?}",
        results[0].error
    );
    assert!(!results[1].connected, "port 17002 is denied by the NSG");
    let after = node_stats(&name, "nodepool1-0")
        .get(Reason::DropNsgDenied)
        .packets;
    assert!(
        after > before,
        "the denied SYNs are counted under drop-nsg-denied"
    );
    aksnet_ok(&["down", &name]);
    assert_gone(&name);
}

#[test]
fn up_streams_datapath_drops_at_debug_level_with_the_node_name() {
    use std::time::Duration;

    require_privileges();
    let name = cluster_name("bl");
    let _down = Down(name.clone());
    let nsg = "nsg:\n  - { name: deny-check, priority: 100, access: Deny, protocol: Tcp, destinationAddressPrefix: 10.224.0.0/24, destinationPortRange: \"17001\" }\n";
    let file = description_with(&name, "azure", "ebpf", 1, 1, nsg);
    let up = ForegroundUp::start(&file, &["--log-level", "debug"], "[nodepool1-0]");
    // On-prem reaching for a pod on the denied port: the NSG drops it at the uplink.
    let state = ClusterState::require(&name).expect("state");
    let (endpoints, probes) = check::cluster_matrix(&state);
    let to_pod: Vec<Probe> = probes
        .into_iter()
        .filter(|p| p.path == "on-prem -> pod")
        .collect();
    check::run(&endpoints, &to_pod).expect("probe");
    let line = up
        .lines
        .recv_timeout(Duration::from_secs(10))
        .expect("a datapath log line within 10 s");
    assert!(
        line.contains("nsg: drop-nsg-denied"),
        "the drop reason is named: {line}"
    );
    up.interrupt();
    assert_gone(&name);
}
