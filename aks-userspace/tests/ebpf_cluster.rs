//! Privileged: whole clusters on the eBPF datapath. The check matrix must show each
//! AKS behaviour, and the pinned `STATS` must show the traffic really took the BPF path
//! (redirects counted), not the kernel's routing.

mod common;

use aks_ebpf_common::Reason;
use aks_userspace::datapath::ebpf::{read_pinned, ReasonTotals};
use aks_userspace::state::ClusterState;
use common::cluster::*;

/// Asserts that `reason` counted at least `least` more packets in `after` than in
/// `before`.
fn assert_grew(
    before: &ReasonTotals,
    after: &ReasonTotals,
    reason: Reason,
    least: u64,
    what: &str,
) {
    let grew = after.get(reason).packets - before.get(reason).packets;
    assert!(grew >= least, "{what}: {grew}");
}

fn node_stats(cluster: &str, node: &str) -> ReasonTotals {
    read_pinned(&node_pins(cluster, node).join("STATS")).expect("reading pinned STATS")
}

/// `check --json` of cluster `name`, with nodepool1-0's counters before and after it.
fn check_counted(name: &str) -> (Vec<serde_json::Value>, ReasonTotals, ReasonTotals) {
    let before = node_stats(name, "nodepool1-0");
    let results = check(name);
    (results, before, node_stats(name, "nodepool1-0"))
}

#[test]
fn azure_cni_routes_pods_in_bpf_with_their_own_addresses() {
    let cluster = TestCluster::up("bz", "azure", "ebpf", 2, 2);
    let name = cluster.name.clone();
    // The eBPF datapath pins its counters and links per node.
    let pins = node_pins(&name, "nodepool1-0");
    assert!(
        pins.join("STATS").exists(),
        "STATS is pinned under {}",
        pins.display()
    );
    assert!(
        pins.join("from_pod_lxc0").exists(),
        "the from_pod link is pinned"
    );

    let (results, before, after) = check_counted(&name);
    assert_connected_unnatted(
        &results,
        &[&INSIDE_THE_CLUSTER[..], &["on-prem -> pod"]].concat(),
        "the original pod address: Azure CNI does not NAT inside the VNet, and on-prem reaches pods directly",
    );
    // Node Subnet: systems outside the VNet see the node (concepts-network-legacy-cni.md).
    assert_connected_as(
        &results,
        &["pod -> on-prem"],
        "nodepool1-0",
        "outside the VNet",
    );
    // Each probe that touches node 0's pods is a TCP handshake, a data segment and a
    // teardown: several packets per direction, all through the BPF programs.
    assert_grew(
        &before,
        &after,
        Reason::RedirectedPeer,
        8,
        "deliveries into pods were redirected",
    );
    assert_grew(
        &before,
        &after,
        Reason::RedirectedUplink,
        8,
        "pod traffic left through bpf_redirect",
    );
    assert_eq!(
        after.get(Reason::DropNeedsMasquerade).packets,
        before.get(Reason::DropNeedsMasquerade).packets,
        "Azure CNI pod addresses are VNet addresses"
    );
    cluster.down();
    let again = aksnet_ok(&["down", &name]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing to remove"),
        "down is idempotent"
    );
}

#[test]
fn kubenet_routes_pods_through_the_route_table_and_masquerades_the_rest() {
    let cluster = TestCluster::up("bk", "kubenet", "ebpf", 2, 2);
    let name = cluster.name.clone();
    let (results, before, after) = check_counted(&name);
    assert_connected_unnatted(
        &results,
        &INSIDE_THE_CLUSTER,
        "inside the non-masquerade CIDRs",
    );
    for (path, seen) in [
        // The node's address, SNATed again by the load balancer's outbound rule.
        ("pod -> internet", "198.51.100.4"),
        ("pod -> on-prem", "10.224.0.4"),
    ] {
        let r = probe(&results, path);
        assert_eq!(
            r["connected"], true,
            "{path}: the reply came back through reverse SNAT: {r}"
        );
        assert_eq!(
            r["seenSource"], seen,
            "{path}: kubenet pods leave as their node"
        );
    }
    assert_eq!(probe(&results, "on-prem -> pod")["connected"], false);
    assert_grew(
        &before,
        &after,
        Reason::RedirectedUplinkSnat,
        4,
        "SNATed packets counted",
    );
    assert_grew(
        &before,
        &after,
        Reason::RedirectedPeerRevSnat,
        4,
        "replies reverse-NATed",
    );
    cluster.down();
}

#[test]
fn up_streams_datapath_drops_at_debug_level_with_the_node_name() {
    use std::time::Duration;

    let cluster = TestCluster::new("bl");
    let name = cluster.name.clone();
    let file = description_with(&name, "azure", "ebpf", 1, 1, "");
    let up = ForegroundUp::start(&file, &["--log-level", "debug"], "[nodepool1-0]");
    // A datagram a pod sends with TTL 1 cannot be forwarded: from_pod drops it.
    let state = ClusterState::require(&name).expect("state");
    let pod = &state.nodes[0].pods[0];
    let on_prem = std::net::SocketAddr::from((state.on_prem.address, 17001));
    aks_userspace::netns::run_in(&pod.namespace, || {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
        socket.set_ttl(1)?;
        socket.send_to(b"ttl 1", on_prem)?;
        Ok(())
    })
    .expect("sending from the pod");
    let line = up
        .lines
        .recv_timeout(Duration::from_secs(10))
        .expect("a datapath log line within 10 s");
    assert!(
        line.contains("from_pod: drop-ttl-exceeded"),
        "the drop reason is named: {line}"
    );
    up.interrupt();
    assert_gone(&name);
}
