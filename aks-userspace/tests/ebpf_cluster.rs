//! Privileged: whole clusters on the eBPF datapath. The check matrix must show each
//! AKS behaviour, and the pinned `STATS` must show the traffic really took the BPF path
//! (redirects counted), not the kernel's routing.

mod common;

use std::path::Path;

use aks_ebpf_common::Reason;
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
fn up_streams_datapath_drops_at_debug_level_with_the_node_name() {
    use std::time::Duration;

    require_privileges();
    let name = cluster_name("bl");
    let _down = Down(name.clone());
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
