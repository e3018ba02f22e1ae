//! The address plan of each plugin, checked address by address.

use std::net::Ipv4Addr;

use super::*;
use crate::model;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

/// The plan of a description that must be valid (shared with other modules' tests).
pub(crate) fn plan_of(yaml: &str) -> Plan {
    let cluster = model::load(yaml).unwrap_or_else(|err| panic!("{err}"));
    plan(&cluster).unwrap_or_else(|err| panic!("{err}"))
}

fn example(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    std::fs::read_to_string(path).expect("example file")
}

#[test]
fn default_cluster_azure_addresses() {
    let plan = plan_of(model::DEFAULT_DESCRIPTION);
    let names: Vec<_> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["nodepool1-0", "nodepool1-1"]);
    // .0-.3 are Azure's; nodes from .4.
    assert_eq!(plan.nodes[0].ip, ip("10.224.0.4"));
    assert_eq!(plan.nodes[1].ip, ip("10.224.0.5"));
    // Pods after all node IPs, each node owning a block of maxPods (30).
    let block = plan.nodes[0].pod_block.expect("azure pod block");
    assert_eq!(
        (block.first, block.last),
        (ip("10.224.0.6"), ip("10.224.0.35"))
    );
    let pods: Vec<_> = plan.pods().map(|p| p.ip).collect();
    assert_eq!(
        pods,
        [
            ip("10.224.0.6"),
            ip("10.224.0.7"),
            ip("10.224.0.36"),
            ip("10.224.0.37")
        ]
    );
    assert_eq!(plan.nodes[0].pod_cidr, None);
    // The fabric knows each pod on its node.
    assert_eq!(plan.route_table.len(), 4);
    assert_eq!(
        plan.route_table[2].destination.to_string(),
        "10.224.0.36/32"
    );
    assert_eq!(plan.route_table[2].next_hop, ip("10.224.0.5"));
    assert_eq!(plan.route_table[2].source, RouteSource::NicAddress);
}

#[test]
fn services_round_robin_across_nodes() {
    let plan = plan_of(model::DEFAULT_DESCRIPTION);
    let web = &plan.services[0];
    let backends: Vec<_> = web.backends.iter().map(|b| b.pod.as_str()).collect();
    assert_eq!(
        backends,
        ["nodepool1-0-pod0", "nodepool1-1-pod0", "nodepool1-0-pod1"]
    );
    assert!(web.backends.iter().all(|b| b.port == 8080));
}

#[test]
fn kubenet_addresses_and_udrs() {
    let plan = plan_of(&example("kubenet-ebpf.yaml"));
    let node_ips: Vec<_> = plan.nodes.iter().map(|n| n.ip).collect();
    assert_eq!(
        node_ips,
        [ip("10.224.0.4"), ip("10.224.0.5"), ip("10.224.0.6")]
    );
    let third = &plan.nodes[2];
    assert_eq!(third.name, "user-0");
    assert_eq!(
        third.pod_cidr.map(|c| c.to_string()).as_deref(),
        Some("10.244.2.0/24")
    );
    assert_eq!(third.pod_gateway, Some(ip("10.244.2.1")));
    let pods: Vec<_> = third.pods.iter().map(|p| p.ip).collect();
    assert_eq!(pods, [ip("10.244.2.2"), ip("10.244.2.3")]);
    let udrs: Vec<_> = plan
        .route_table
        .iter()
        .map(|r| (r.destination.to_string(), r.next_hop))
        .collect();
    assert_eq!(
        udrs,
        [
            ("10.244.0.0/24".to_string(), ip("10.224.0.4")),
            ("10.244.1.0/24".to_string(), ip("10.224.0.5")),
            ("10.244.2.0/24".to_string(), ip("10.224.0.6")),
        ]
    );
    assert!(plan
        .route_table
        .iter()
        .all(|r| r.source == RouteSource::UserDefinedRoute));
}

#[test]
fn kubenet_on_a_slash_24_spends_only_node_addresses() {
    let plan = plan_of(&example("kubenet-ebpf.yaml"));
    let usage = &plan.subnet_usage[0];
    assert_eq!(usage.addresses, 256);
    assert_eq!(usage.reserved_by_azure, 5);
    assert_eq!(usage.used_by_nodes, 3);
    assert_eq!(usage.reserved_for_pods, 0);
    assert_eq!(usage.free, 248);
    assert_eq!(usage.pools[0].more_nodes_fit, 248);
    let pod_cidr = plan
        .pod_cidr_usage
        .as_ref()
        .expect("kubenet pod CIDR usage");
    assert_eq!(
        (pod_cidr.node_ranges, pod_cidr.used, pod_cidr.free),
        (256, 3, 253)
    );
}

#[test]
fn azure_usage_counts_max_pods_per_node() {
    let plan = plan_of(&example("azure-ebpf.yaml"));
    let usage = &plan.subnet_usage[0];
    // nodepool1: 2 × (30 + 1), win: 1 × (40 + 1).
    assert_eq!(usage.used_by_nodes, 3);
    assert_eq!(usage.reserved_for_pods, 100);
    assert_eq!(usage.free, 251 - 103);
    assert_eq!(usage.pools[0].more_nodes_fit, (251 - 103) / 31);
    assert_eq!(usage.pools[1].more_nodes_fit, (251 - 103) / 41);
    // The Windows node's block follows the Linux ones.
    let win = plan.node("win-0").expect("win-0");
    let block = win.pod_block.expect("block");
    assert_eq!(
        (block.first, block.last),
        (ip("10.224.0.67"), ip("10.224.0.106"))
    );
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
}

#[test]
fn pod_subnet_addresses_start_at_its_fifth_address() {
    let yaml = model::DEFAULT_DESCRIPTION.replace(
        "  nodeSubnet: 10.224.0.0/24\n",
        "  nodeSubnet: 10.224.0.0/24\n  podSubnet: 10.225.0.0/16\n",
    );
    let plan = plan_of(&yaml);
    assert_eq!(plan.nodes[0].ip, ip("10.224.0.4"));
    let pods: Vec<_> = plan.pods().map(|p| p.ip).collect();
    assert_eq!(
        pods,
        [
            ip("10.225.0.4"),
            ip("10.225.0.5"),
            // Pod Subnet hands out batches of 16, not maxPods: node 1's batch starts 16
            // after node 0's.
            ip("10.225.0.20"),
            ip("10.225.0.21")
        ]
    );
    assert_eq!(plan.subnet_usage.len(), 2);
    assert_eq!(plan.subnet_usage[0].reserved_for_pods, 0);
    assert_eq!(plan.subnet_usage[1].used_by_nodes, 0);
    assert_eq!(plan.subnet_usage[1].reserved_for_pods, 32);
    let block = plan.nodes[1].pod_block.expect("a batch");
    assert_eq!(
        (block.first, block.last),
        (ip("10.225.0.20"), ip("10.225.0.35"))
    );
}

#[test]
fn warns_when_an_upgrade_surge_would_not_fit() {
    // 8 × 31 + 5 = 253 fits a /24; a surge node needs 31 more.
    let yaml = model::DEFAULT_DESCRIPTION.replace("count: 2", "count: 8");
    let plan = plan_of(&yaml);
    let fields: Vec<_> = plan.warnings.iter().map(|w| w.field.as_str()).collect();
    assert_eq!(
        fields,
        ["vnet.nodeSubnet", "vnet.nodeSubnet"],
        "{:?}",
        plan.warnings
    );
    assert!(plan.warnings[0].message.contains("upgrade surges"));
    assert!(
        plan.warnings[1].message.contains("98.8 %"),
        "{}",
        plan.warnings[1].message
    );
    // 7 × 31 = 217 used (86 %): the surge fits (248 + 5 ≤ 256) but usage is above 80 %.
    let plan = plan_of(&model::DEFAULT_DESCRIPTION.replace("count: 2", "count: 7"));
    assert_eq!(plan.warnings.len(), 1);
    assert!(plan.warnings[0].message.contains("80 %"));
    // 6 × 31 = 186 used (74 %): quiet.
    let plan = plan_of(&model::DEFAULT_DESCRIPTION.replace("count: 2", "count: 6"));
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
}

#[test]
fn kubenet_warns_when_the_pod_cidr_has_no_surge_range() {
    let yaml =
        example("kubenet-ebpf.yaml").replace("podCidr: 10.244.0.0/16", "podCidr: 10.244.0.0/23");
    let err = model::load(&yaml).expect_err("3 nodes do not fit 2 /24s");
    assert_eq!(err.field(), Some("podCidr"));
    let yaml = example("kubenet-ebpf.yaml")
        .replace("podCidr: 10.244.0.0/16", "podCidr: 10.244.0.0/22")
        .replace(
            "nonMasqueradeCidrs: [10.244.0.0/16",
            "nonMasqueradeCidrs: [10.244.0.0/22",
        );
    let plan = plan_of(&yaml);
    // 4 ranges, 3 used, 2 pools would surge 2.
    assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
    assert_eq!(plan.warnings[0].field, "podCidr");
}

#[test]
fn every_example_plans_and_renders() {
    for cell in [
        "azure-ebpf",
        "azure-iptables",
        "kubenet-ebpf",
        "kubenet-iptables",
    ] {
        let plan = plan_of(&example(&format!("{cell}.yaml")));
        let text = render(&plan);
        assert!(text.contains("SUBNET USAGE"), "{cell}");
        let json = serde_json::to_value(&plan).expect("json");
        assert_eq!(json["nodes"][0]["ip"], "10.224.0.4", "{cell}");
        assert_eq!(json["services"][0]["clusterIP"], "10.0.0.20", "{cell}");
    }
}

#[test]
fn notes_name_where_aks_differs_from_the_chapter_and_the_source() {
    let kubenet = plan_of(&example("kubenet-ebpf.yaml"));
    assert!(kubenet.notes[0].starts_with("kubenet: default maxPods 110"));
    assert!(kubenet.notes[1].contains("configure-kubenet.md"));
    assert!(kubenet.notes[2].contains("31 March 2028"));
    let azure = plan_of(&example("azure-ebpf.yaml"));
    assert!(azure.notes[0].starts_with("Azure CNI Node Subnet: default maxPods 30"));
    assert!(azure.notes[1].contains("concepts-network-legacy-cni.md"));
    let text = render(&azure);
    assert!(
        text.contains("NOTES (AKS today)\n- Azure CNI Node Subnet"),
        "{text}"
    );
}

#[test]
fn overlay_gives_nodes_pod_cidr_slash_24s_and_the_vnet_no_routes() {
    let plan = plan_of(&example("azure-overlay-ebpf.yaml"));
    assert_eq!(plan.pod_network, model::PodNetwork::AzureOverlay);
    assert!(plan.route_table.is_empty(), "{:?}", plan.route_table);
    let node1 = plan.node("nodepool1-1").expect("node 1");
    assert_eq!(node1.pod_cidr, Some("10.244.1.0/24".parse().expect("cidr")));
    assert_eq!(node1.pod_block, None);
    let pods: Vec<_> = node1.pods.iter().map(|p| p.ip).collect();
    assert_eq!(pods, [ip("10.244.1.2"), ip("10.244.1.3")]);
    // Only node addresses in the node subnet.
    assert_eq!(plan.subnet_usage[0].reserved_for_pods, 0);
    assert_eq!(plan.nodes[0].max_pods, 250);
    let text = render(&plan);
    assert!(text.contains("networkPluginMode overlay"), "{text}");
    assert!(text.contains("VNET ROUTES (none for pods"), "{text}");
    assert!(
        text.contains("concepts-network-azure-cni-overlay.md"),
        "{text}"
    );
}
