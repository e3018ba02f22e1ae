//! Privileged: Azure CNI Pod Subnet with dynamic allocation. Nodes take their pod
//! addresses in batches of 16 from the pod subnet (not maxPods up front), and pods keep
//! their address toward the VNet and on-prem (concepts-network-azure-cni-pod-subnet.md).

mod common;

use std::net::Ipv4Addr;

use aks_userspace::state::ClusterState;
use common::cluster::*;
use common::require_privileges;

#[test]
fn pod_subnet_nodes_take_batches_of_16_and_pods_keep_their_address() {
    require_privileges();
    let name = cluster_name("ps");
    let _down = Down(name.clone());
    let file = description_with(&name, "azure", "ebpf", 2, 2, "");
    // `description_with` writes no pod subnet: add one to the VNet block.
    let yaml = std::fs::read_to_string(&file)
        .expect("reading the description")
        .replace(
            "  nodeSubnet: 10.224.0.0/24\n",
            "  nodeSubnet: 10.224.0.0/24\n  podSubnet: 10.225.0.0/24\n",
        );
    std::fs::write(&file, yaml).expect("writing the description");
    up_keep(&file);

    let state = ClusterState::require(&name).expect("the cluster is recorded");
    let addresses: Vec<Vec<Ipv4Addr>> = state
        .nodes
        .iter()
        .map(|n| n.pods.iter().map(|p| p.address).collect())
        .collect();
    assert_eq!(
        addresses,
        [
            [Ipv4Addr::new(10, 225, 0, 4), Ipv4Addr::new(10, 225, 0, 5)],
            // Node 1's batch starts 16 after node 0's, whatever maxPods is.
            [Ipv4Addr::new(10, 225, 0, 20), Ipv4Addr::new(10, 225, 0, 21)],
        ]
    );

    let results = check(&name);
    for row in &results {
        assert_eq!(row["verdict"], "pass", "{row}");
    }
    for path in [
        "pod -> pod, other node",
        "pod -> on-prem",
        "pod -> node, other node",
    ] {
        let r = probe(&results, path);
        assert_eq!(r["connected"], true, "{path}: {r}");
        assert_eq!(r["seenSource"], r["sourceAddress"], "{path}: {r}");
    }
    aksnet_ok(&["down", &name]);
    assert_gone(&name);
}
