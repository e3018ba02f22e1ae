//! Every validation rule at its exact boundary, the defaults, and the examples.

use std::net::Ipv4Addr;

use super::*;
use crate::cidr::Ipv4Cidr;

fn cidr(s: &str) -> Ipv4Cidr {
    s.parse().expect("test CIDR")
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

/// A minimal valid description of the given plugin: one Linux pool of `count` nodes.
fn base(plugin: NetworkPlugin, count: u32) -> ClusterDescription {
    ClusterDescription {
        name: "t".into(),
        network_plugin: plugin,
        datapath: Datapath::Ebpf,
        vnet: Vnet {
            address_space: cidr("10.224.0.0/12"),
            node_subnet: cidr("10.224.0.0/24"),
            pod_subnet: None,
        },
        network_plugin_mode: None,
        pod_cidr: None,
        service_cidr: None,
        dns_service_ip: None,
        max_pods: None,
        node_pools: vec![pool("nodepool1", count)],
        pods_per_node: None,
        non_masquerade_cidrs: None,
        services: vec![],
        external_hosts: None,
        nsg: Vec::new(),
        conntrack: None,
        outbound_type: None,
        network_policy: None,
        pod_templates: Vec::new(),
        namespaces: Vec::new(),
        network_policies: Vec::new(),
        load_balancer_profile: None,
        firewall: None,
    }
}

fn pool(name: &str, count: u32) -> NodePoolDescription {
    NodePoolDescription {
        name: name.into(),
        count,
        os_type: None,
        max_pods: None,
    }
}

fn service(name: &str, cluster_ip: &str, backends: u32) -> ServiceDescription {
    ServiceDescription {
        service_type: None,
        node_port: None,
        external_traffic_policy: None,
        load_balancer_source_ranges: Vec::new(),
        load_balancer_ip: None,
        name: name.into(),
        cluster_ip: ip(cluster_ip),
        port: 80,
        target_port: None,
        protocol: None,
        backends,
    }
}

/// The field a description fails on; panics if it validates.
fn failing_field(description: &ClusterDescription) -> String {
    match validate(description) {
        Err(err) => err.field().unwrap_or("<syntax>").to_string(),
        Ok(_) => panic!("expected a validation error for {description:#?}"),
    }
}

fn error_text(description: &ClusterDescription) -> String {
    match validate(description) {
        Err(err) => err.to_string(),
        Ok(_) => panic!("expected a validation error"),
    }
}

fn valid(description: &ClusterDescription) -> Cluster {
    match validate(description) {
        Ok(cluster) => cluster,
        Err(err) => panic!("expected valid, got: {err}"),
    }
}

#[test]
fn defaults_for_azure() {
    let cluster = valid(&base(NetworkPlugin::Azure, 2));
    assert_eq!(cluster.node_pools[0].max_pods, 30);
    assert_eq!(cluster.node_pools[0].os_type, OsType::Linux);
    assert_eq!(cluster.pod_cidr, None);
    assert_eq!(cluster.service_cidr, cidr("10.0.0.0/16"));
    assert_eq!(cluster.dns_service_ip, ip("10.0.0.10"));
    assert_eq!(cluster.pods_per_node, 2);
    assert_eq!(cluster.pod_network, PodNetwork::AzureNodeSubnet);
    // Node Subnet: only VNet destinations see the pod (concepts-network-legacy-cni.md).
    assert_eq!(cluster.non_masquerade_cidrs, vec![cidr("10.224.0.0/12")]);
    assert_eq!(cluster.external_hosts.internet, ip("203.0.113.10"));
    assert_eq!(cluster.external_hosts.on_prem.host, ip("192.168.100.10"));
}

#[test]
fn defaults_for_kubenet() {
    let cluster = valid(&base(NetworkPlugin::Kubenet, 2));
    assert_eq!(cluster.node_pools[0].max_pods, 110);
    assert_eq!(cluster.pod_cidr, Some(cidr("10.244.0.0/16")));
    assert_eq!(cluster.pod_network, PodNetwork::Kubenet);
    // Only pod → pod keeps pod addresses; VNet resources see the node (configure-kubenet.md).
    assert_eq!(cluster.non_masquerade_cidrs, vec![cidr("10.244.0.0/16")]);
}

#[test]
fn dns_service_ip_defaults_to_the_tenth_address() {
    let mut d = base(NetworkPlugin::Azure, 1);
    d.service_cidr = Some(cidr("172.16.0.0/24"));
    assert_eq!(valid(&d).dns_service_ip, ip("172.16.0.10"));
    // A /28 has a 10th address, a /29 has not.
    d.service_cidr = Some(cidr("172.16.0.0/28"));
    assert_eq!(valid(&d).dns_service_ip, ip("172.16.0.10"));
    d.service_cidr = Some(cidr("172.16.0.0/29"));
    assert_eq!(failing_field(&d), "serviceCidr");
}

#[test]
fn pool_max_pods_overrides_cluster_max_pods() {
    let mut d = base(NetworkPlugin::Azure, 1);
    d.max_pods = Some(40);
    d.node_pools.push(NodePoolDescription {
        max_pods: Some(20),
        ..pool("user", 2)
    });
    let cluster = valid(&d);
    assert_eq!(cluster.node_pools[0].max_pods, 40);
    assert_eq!(cluster.node_pools[1].max_pods, 20);
}

#[test]
fn default_description_is_small_and_valid() {
    let cluster = load(DEFAULT_DESCRIPTION).expect("default description");
    assert_eq!(cluster.network_plugin, NetworkPlugin::Azure);
    assert_eq!(cluster.datapath, Datapath::Ebpf);
    assert_eq!(cluster.node_count(), 2);
    assert_eq!(cluster.node_pools.len(), 1);
    assert_eq!(cluster.pods_per_node, 2);
    assert_eq!(cluster.services.len(), 1);
    assert!((2..=3).contains(&cluster.services[0].backends));
}

#[test]
fn azure_cni_node_subnet_capacity_boundary() {
    // /24 at maxPods 30: 8 × 31 + 5 = 253 ≤ 256; 9 × 31 + 5 = 284 > 256.
    valid(&base(NetworkPlugin::Azure, 8));
    let d = base(NetworkPlugin::Azure, 9);
    assert_eq!(
        error_text(&d),
        "vnet.nodeSubnet: 10.224.0.0/24 has 256 addresses but Azure CNI needs 284: 9 nodes × \
         (30 maxPods + 1) (nodepool1) + 5 reserved by Azure; only 8 of the 9 nodes fit. Fix: \
         use a /23 or larger, or fewer nodes, or maxPods 26 or lower"
    );
}

#[test]
fn azure_cni_slash_20_takes_16_nodes_at_250_pods_not_17() {
    let mut d = base(NetworkPlugin::Azure, 16);
    d.vnet.node_subnet = cidr("10.224.0.0/20");
    d.max_pods = Some(250);
    valid(&d);
    d.node_pools[0].count = 17;
    assert!(error_text(&d).contains("only 16 of the 17 nodes fit"));
}

#[test]
fn azure_cni_slash_16_takes_500_nodes_at_30_pods() {
    let mut d = base(NetworkPlugin::Azure, 500);
    d.vnet.node_subnet = cidr("10.224.0.0/16");
    valid(&d);
}

#[test]
fn azure_cni_pod_subnet_boundaries() {
    // nodeSubnet /28 (16): nodes + 5 ≤ 16 → 11 nodes. podSubnet /23 (512): 16 × 30 + 5 = 485.
    let mut d = base(NetworkPlugin::Azure, 11);
    d.max_pods = Some(30);
    d.vnet.node_subnet = cidr("10.224.0.0/28");
    d.vnet.pod_subnet = Some(cidr("10.225.0.0/22"));
    valid(&d);
    d.node_pools[0].count = 12;
    assert_eq!(failing_field(&d), "vnet.nodeSubnet");

    // Dynamic allocation: a batch of 16 per node for 2 pods, not maxPods up front.
    // podSubnet /23 (512): 31 × 16 + 5 = 501 fits, 32 × 16 + 5 = 517 does not.
    let mut d = base(NetworkPlugin::Azure, 31);
    d.vnet.pod_subnet = Some(cidr("10.225.0.0/23"));
    valid(&d);
    d.node_pools[0].count = 32;
    assert_eq!(
        error_text(&d),
        "vnet.podSubnet: 10.225.0.0/23 has 512 addresses but Azure CNI needs 517: 32 nodes × \
         1 batch of 16 (nodepool1) + 5 reserved by Azure; only 31 of the 32 nodes fit. Fix: \
         use a /22 or larger, or fewer nodes"
    );
    // Nine pods per node leave fewer than 8 of a batch free: two batches per node.
    d.pods_per_node = Some(9);
    d.node_pools[0].count = 15; // 15 × 32 + 5 = 485 fits; 16 × 32 + 5 = 517 does not
    valid(&d);
    d.node_pools[0].count = 16;
    assert!(error_text(&d).contains("16 nodes × 2 batches of 16"));
}

#[test]
fn pod_subnet_must_be_in_the_vnet_apart_from_nodes_and_azure_only() {
    let mut d = base(NetworkPlugin::Azure, 1);
    d.vnet.pod_subnet = Some(cidr("10.240.0.0/24"));
    assert_eq!(failing_field(&d), "vnet.podSubnet");
    d.vnet.pod_subnet = Some(cidr("10.224.0.0/25"));
    assert_eq!(failing_field(&d), "vnet.podSubnet");
    let mut k = base(NetworkPlugin::Kubenet, 1);
    k.vnet.pod_subnet = Some(cidr("10.225.0.0/24"));
    assert_eq!(failing_field(&k), "vnet.podSubnet");
}

#[test]
fn kubenet_node_subnet_holds_251_nodes_on_a_slash_24_but_route_table_caps_400() {
    // A /24 would take 251 kubenet nodes, but the route table stops it at 400 only above;
    // test the subnet on a /24 with a smaller count and the cap on a bigger subnet.
    let mut d = base(NetworkPlugin::Kubenet, 251);
    valid(&d);
    d.node_pools[0].count = 252;
    assert_eq!(failing_field(&d), "vnet.nodeSubnet");

    let mut d = base(NetworkPlugin::Kubenet, 400);
    d.vnet.node_subnet = cidr("10.224.0.0/22");
    d.pod_cidr = Some(cidr("10.244.0.0/15"));
    valid(&d);
    d.node_pools[0].count = 401;
    assert_eq!(failing_field(&d), "nodePools");
}

#[test]
fn kubenet_pod_cidr_needs_a_slash_24_per_node() {
    let mut d = base(NetworkPlugin::Kubenet, 4);
    d.pod_cidr = Some(cidr("10.244.0.0/22"));
    valid(&d);
    d.node_pools[0].count = 5;
    assert_eq!(
        error_text(&d),
        "podCidr: 10.244.0.0/22 holds 4 node /24s but kubenet gives each of the 5 nodes its own \
         /24; use a /21 or larger, or fewer nodes"
    );
    d.node_pools[0].count = 1;
    d.pod_cidr = Some(cidr("10.244.0.0/25"));
    assert_eq!(failing_field(&d), "podCidr");
}

#[test]
fn kubenet_pod_cidr_outside_vnet_and_azure_has_none() {
    let mut d = base(NetworkPlugin::Kubenet, 1);
    d.pod_cidr = Some(cidr("10.225.0.0/16"));
    assert_eq!(failing_field(&d), "podCidr");
    let mut a = base(NetworkPlugin::Azure, 1);
    a.pod_cidr = Some(cidr("10.244.0.0/16"));
    assert_eq!(failing_field(&a), "podCidr");
}

#[test]
fn max_pods_between_10_and_250() {
    // Three nodes, so maxPods 10 also meets the 30-pods-per-pool rule.
    for (max_pods, ok) in [(9, false), (10, true), (250, true), (251, false)] {
        let mut d = base(NetworkPlugin::Kubenet, 3);
        d.max_pods = Some(max_pods);
        assert_eq!(validate(&d).is_ok(), ok, "cluster maxPods {max_pods}");
        let mut d = base(NetworkPlugin::Kubenet, 3);
        d.node_pools[0].max_pods = Some(max_pods);
        match validate(&d) {
            Ok(_) => assert!(ok, "pool maxPods {max_pods}"),
            Err(err) => {
                assert!(!ok);
                assert_eq!(err.field(), Some("nodePools[0].maxPods"));
            }
        }
    }
    let mut d = base(NetworkPlugin::Kubenet, 1);
    d.max_pods = Some(251);
    assert_eq!(
        error_text(&d),
        "maxPods: 251 is outside what AKS accepts; set it between 10 and 250"
    );
}

#[test]
fn windows_pools_need_azure_cni_and_cannot_be_first() {
    let windows = NodePoolDescription {
        os_type: Some(OsType::Windows),
        ..pool("win", 1)
    };
    let mut d = base(NetworkPlugin::Azure, 1);
    d.node_pools.push(windows.clone());
    valid(&d);
    d.network_plugin = NetworkPlugin::Kubenet;
    assert_eq!(failing_field(&d), "nodePools[1].osType");
    let mut d = base(NetworkPlugin::Azure, 1);
    d.node_pools.insert(0, windows);
    assert_eq!(failing_field(&d), "nodePools[0].osType");
}

#[test]
fn pool_names_unique_lowercase_and_short() {
    let mut d = base(NetworkPlugin::Azure, 1);
    d.node_pools[0].name = "abcdefghijkl".into(); // 12
    valid(&d);
    d.node_pools[0].name = "abcdefghijklm".into(); // 13
    assert_eq!(failing_field(&d), "nodePools[0].name");
    for bad in ["Pool", "1pool", "po-ol", ""] {
        d.node_pools[0].name = bad.into();
        assert_eq!(failing_field(&d), "nodePools[0].name", "{bad:?}");
    }
    let mut d = base(NetworkPlugin::Azure, 1);
    d.node_pools.push(NodePoolDescription {
        os_type: Some(OsType::Windows),
        ..pool("win123", 1)
    });
    valid(&d);
    d.node_pools[1].name = "win1234".into();
    assert_eq!(failing_field(&d), "nodePools[1].name");
    let mut d = base(NetworkPlugin::Azure, 1);
    d.node_pools.push(pool("nodepool1", 1));
    assert_eq!(failing_field(&d), "nodePools[1].name");
}

#[test]
fn pools_need_nodes() {
    let mut d = base(NetworkPlugin::Kubenet, 0);
    assert_eq!(failing_field(&d), "nodePools[0].count");
    d.node_pools.clear();
    assert_eq!(failing_field(&d), "nodePools");
    let mut d = base(NetworkPlugin::Kubenet, 1000);
    d.vnet.node_subnet = cidr("10.224.0.0/20");
    assert_eq!(
        failing_field(&d),
        "nodePools",
        "1000 is a valid count, 400 the cap"
    );
    d.node_pools[0].count = 1001;
    assert_eq!(failing_field(&d), "nodePools[0].count");
}

#[test]
fn cluster_name_fits_interface_names() {
    let mut d = base(NetworkPlugin::Azure, 1);
    d.name = "abcd-efg".into(); // 8
    valid(&d);
    d.name = "abcdefghi".into(); // 9
    let text = error_text(&d);
    assert!(
        text.starts_with("name: `abcdefghi` (9 characters)"),
        "{text}"
    );
    assert!(text.contains("15 bytes"), "{text}");
    for bad in ["Demo", "-demo", "demo-", "de_mo", ""] {
        d.name = bad.into();
        assert_eq!(failing_field(&d), "name", "{bad:?}");
    }
    // Characters, not bytes: "dé" is 2 characters (3 bytes), and not ASCII.
    d.name = "dé".into();
    let text = error_text(&d);
    assert!(text.starts_with("name: `dé` (2 characters)"), "{text}");
    assert!(text.contains("only ASCII"), "{text}");
}

#[test]
fn a_null_name_is_missing_not_a_cluster_called_null() {
    let yaml = |name: &str| {
        format!(
            "name: {name}\nnetworkPlugin: azure\ndatapath: ebpf\nvnet: {{ addressSpace: 10.224.0.0/12, nodeSubnet: 10.224.0.0/24 }}\nnodePools: [{{ name: nodepool1, count: 1 }}]\n"
        )
    };
    for null in ["null", "~", ""] {
        let err = parse(&yaml(null)).expect_err("a null name is an error");
        assert!(err.to_string().contains("name is null"), "{null:?}: {err}");
    }
    assert_eq!(
        parse(&yaml("demo")).expect("a plain name parses").name,
        "demo"
    );
}

#[test]
fn zero_pods_per_node_is_blamed_on_pods_per_node() {
    let mut d = base(NetworkPlugin::Azure, 2);
    d.services = vec![service("web", "10.0.0.20", 1)];
    d.pods_per_node = Some(0);
    assert_eq!(failing_field(&d), "podsPerNode");
}

#[test]
fn node_subnet_inside_address_space() {
    let mut d = base(NetworkPlugin::Azure, 1);
    d.vnet.node_subnet = cidr("10.239.255.0/24");
    valid(&d);
    d.vnet.node_subnet = cidr("10.240.0.0/24");
    assert_eq!(failing_field(&d), "vnet.nodeSubnet");
}

#[test]
fn service_cidr_must_not_overlap_vnet_or_pod_cidr() {
    let mut d = base(NetworkPlugin::Kubenet, 1);
    d.service_cidr = Some(cidr("10.224.0.0/16"));
    d.dns_service_ip = Some(ip("10.224.0.10"));
    assert!(error_text(&d).contains("overlaps vnet.addressSpace 10.224.0.0/12"));
    // Adjacent to the address space is fine.
    d.service_cidr = Some(cidr("10.240.0.0/16"));
    d.dns_service_ip = None;
    valid(&d);
    d.service_cidr = Some(cidr("10.244.128.0/24"));
    assert!(error_text(&d).contains("overlaps podCidr 10.244.0.0/16"));
}

#[test]
fn dns_service_ip_inside_service_cidr_and_not_reserved() {
    let mut d = base(NetworkPlugin::Azure, 1);
    d.dns_service_ip = Some(ip("10.0.255.254"));
    valid(&d);
    d.dns_service_ip = Some(ip("10.1.0.10"));
    assert_eq!(failing_field(&d), "dnsServiceIp");
    d.dns_service_ip = Some(ip("10.0.0.1"));
    assert_eq!(failing_field(&d), "dnsServiceIp");
    d.dns_service_ip = Some(ip("10.0.0.0"));
    assert_eq!(failing_field(&d), "dnsServiceIp");
    d.dns_service_ip = Some(ip("10.0.0.2"));
    valid(&d);
}

#[test]
fn pods_per_node_at_most_max_pods_of_every_pool() {
    let mut d = base(NetworkPlugin::Azure, 1);
    d.node_pools.push(NodePoolDescription {
        max_pods: Some(12),
        ..pool("small", 3)
    });
    d.pods_per_node = Some(12);
    valid(&d);
    d.pods_per_node = Some(13);
    assert_eq!(
        error_text(&d),
        "podsPerNode: 13 pods per node, but pool `small` allows maxPods 12; lower podsPerNode or \
         raise that pool's maxPods"
    );
}

#[test]
fn services_rules() {
    let mut d = base(NetworkPlugin::Azure, 2);
    d.services = vec![service("web", "10.0.0.20", 4)]; // 2 nodes × 2 pods
    let cluster = valid(&d);
    assert_eq!(cluster.services[0].target_port, 80);
    assert_eq!(cluster.services[0].protocol, Protocol::Tcp);

    d.services[0].backends = 5;
    assert_eq!(failing_field(&d), "services[0].backends");
    d.services[0].backends = 0;
    assert_eq!(failing_field(&d), "services[0].backends");
    d.services[0].backends = 1;

    for (port, ok) in [(0, false), (1, true), (65535, true), (65536, false)] {
        d.services[0].port = port;
        assert_eq!(validate(&d).is_ok(), ok, "port {port}");
        d.services[0].port = 80;
        d.services[0].target_port = Some(port);
        assert_eq!(validate(&d).is_ok(), ok, "targetPort {port}");
        d.services[0].target_port = None;
    }

    d.services[0].cluster_ip = ip("10.1.0.20");
    assert_eq!(failing_field(&d), "services[0].clusterIP");
    d.services[0].cluster_ip = ip("10.0.0.1");
    assert_eq!(failing_field(&d), "services[0].clusterIP");
    d.services[0].cluster_ip = ip("10.0.0.10"); // the DNS service
    assert_eq!(failing_field(&d), "services[0].clusterIP");
    d.services[0].cluster_ip = ip("10.0.0.20");

    d.services.push(service("api", "10.0.0.20", 1));
    assert_eq!(failing_field(&d), "services[1].clusterIP");
    d.services[1] = service("web", "10.0.0.21", 1);
    assert_eq!(failing_field(&d), "services[1].name");
    d.services[1] = service("Web", "10.0.0.21", 1);
    assert_eq!(failing_field(&d), "services[1].name");
}

#[test]
fn protocol_is_tcp_or_udp() {
    let yaml = DEFAULT_DESCRIPTION.replace("protocol: TCP", "protocol: SCTP");
    let err = load(&yaml).expect_err("SCTP is not accepted");
    assert!(err.to_string().contains("expected `TCP` or `UDP`"), "{err}");
    let yaml = DEFAULT_DESCRIPTION.replace("protocol: TCP", "protocol: UDP");
    assert_eq!(
        load(&yaml).expect("UDP").services[0].protocol,
        Protocol::Udp
    );
}

#[test]
fn external_hosts_stay_outside_the_cluster() {
    let mut d = base(NetworkPlugin::Azure, 1);
    let on_prem = |cidr_: &str, host: &str| {
        Some(ExternalHostsDescription {
            internet: None,
            on_prem: Some(OnPremNetwork {
                cidr: cidr(cidr_),
                host: ip(host),
            }),
        })
    };
    d.external_hosts = on_prem("10.225.0.0/24", "10.225.0.10");
    assert_eq!(failing_field(&d), "externalHosts.onPrem.cidr");
    d.external_hosts = on_prem("10.0.128.0/24", "10.0.128.10");
    assert_eq!(failing_field(&d), "externalHosts.onPrem.cidr");
    d.external_hosts = on_prem("192.168.1.0/24", "192.168.2.10");
    assert_eq!(failing_field(&d), "externalHosts.onPrem.host");
    d.external_hosts = on_prem("192.168.1.0/24", "192.168.1.255");
    assert_eq!(failing_field(&d), "externalHosts.onPrem.host");
    d.external_hosts = on_prem("192.168.1.0/24", "192.168.1.254");
    valid(&d);
    d.external_hosts = Some(ExternalHostsDescription {
        internet: Some(ip("10.224.0.99")),
        on_prem: None,
    });
    assert_eq!(failing_field(&d), "externalHosts.internet");
}

#[test]
fn cidr_with_host_bits_names_the_corrected_block() {
    let yaml =
        DEFAULT_DESCRIPTION.replace("nodeSubnet: 10.224.0.0/24", "nodeSubnet: 10.224.0.5/24");
    let err = load(&yaml).expect_err("host bits");
    let text = err.to_string();
    assert!(text.contains("vnet.nodeSubnet"), "{text}");
    assert!(
        text.contains("10.224.0.5/24 has host bits set; did you mean 10.224.0.0/24?"),
        "{text}"
    );
}

#[test]
fn unknown_fields_are_errors_with_line_and_column() {
    let yaml = "name: demo\nnetworkPlugin: azure\ndatapath: ebpf\nvnet:\n  addressSpace: 10.224.0.0/12\n  nodeSubnet: 10.224.0.0/24\nmaxPod: 30\nnodePools: []\n";
    let err = parse(yaml).expect_err("typo");
    let PlanError::Syntax {
        message,
        line,
        column,
    } = &err
    else {
        panic!("expected a syntax error, got {err:?}");
    };
    assert!(message.contains("unknown field `maxPod`"), "{message}");
    assert_eq!((*line, *column), (Some(7), Some(1)));
    assert!(message.contains("line 7 column 1"), "{message}");

    // Nested structs too.
    let yaml = DEFAULT_DESCRIPTION.replace("osType: Linux", "osTyp: Linux");
    assert!(parse(&yaml)
        .expect_err("nested typo")
        .to_string()
        .contains("unknown field `osTyp`"));
}

#[test]
fn bad_yaml_reports_line_and_column() {
    let err = parse("name: demo\nvnet: [unclosed\n").expect_err("bad YAML");
    match err {
        PlanError::Syntax { line, column, .. } => {
            assert!(line.is_some() && column.is_some(), "{line:?} {column:?}")
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

fn example_files() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/ directory")
        .map(|entry| entry.expect("examples/ entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_parses_validates_and_round_trips() {
    let files = example_files();
    let names: Vec<_> = files
        .iter()
        .filter_map(|f| f.file_name()?.to_str().map(str::to_string))
        .collect();
    for cell in [
        "azure-ebpf.yaml",
        "azure-iptables.yaml",
        "kubenet-ebpf.yaml",
        "kubenet-iptables.yaml",
    ] {
        assert!(names.iter().any(|n| n == cell), "examples/{cell} missing");
    }
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read example");
        let description = parse(&text).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
        validate(&description).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
        let again = parse(&to_yaml(&description)).expect("re-parse");
        assert_eq!(again, description, "{} round trip", file.display());
    }
    let default = parse(DEFAULT_DESCRIPTION).expect("default");
    assert_eq!(parse(&to_yaml(&default)).expect("re-parse"), default);
}

#[test]
fn example_defaults_match_what_the_examples_spell_out() {
    // The examples write every default out; dropping them must give the same cluster.
    for file in example_files() {
        let text = std::fs::read_to_string(&file).expect("read example");
        let full = parse(&text).expect("example");
        let mut bare = full.clone();
        bare.service_cidr = None;
        bare.dns_service_ip = None;
        bare.non_masquerade_cidrs = None;
        bare.external_hosts = None;
        if full.pod_network().private_pod_cidr() {
            bare.pod_cidr = None;
        }
        assert_eq!(
            validate(&bare).expect("bare"),
            validate(&full).expect("full"),
            "{}",
            file.display()
        );
    }
}

#[test]
fn max_pods_defaults_follow_the_model() {
    // concepts-network-ip-address-planning.md: Node Subnet 30, Pod Subnet 110, kubenet 110.
    let node_subnet = valid(&base(NetworkPlugin::Azure, 1));
    assert_eq!(node_subnet.node_pools[0].max_pods, 30);
    let mut d = base(NetworkPlugin::Azure, 1);
    d.vnet.pod_subnet = Some(cidr("10.225.0.0/16"));
    let pod_subnet = valid(&d);
    assert_eq!(pod_subnet.pod_network, PodNetwork::AzurePodSubnet);
    assert_eq!(pod_subnet.node_pools[0].max_pods, 110);
    assert_eq!(
        pod_subnet.non_masquerade_cidrs,
        vec![cidr("10.224.0.0/12"), cidr("192.168.100.0/24")],
        "Pod Subnet pods keep their address toward every destination but the internet"
    );
    assert_eq!(
        valid(&base(NetworkPlugin::Kubenet, 1)).node_pools[0].max_pods,
        110
    );
}

#[test]
fn every_pool_has_room_for_30_pods() {
    // count × maxPods ≥ 30: maxPods 10 needs 3 nodes, one node needs maxPods 30.
    for (count, max_pods, ok) in [(3, 10, true), (2, 10, false), (1, 30, true), (1, 29, false)] {
        let mut d = base(NetworkPlugin::Kubenet, 3);
        d.node_pools.push(NodePoolDescription {
            max_pods: Some(max_pods),
            ..pool("user", count)
        });
        match validate(&d) {
            Ok(_) => assert!(ok, "{count} × {max_pods} should fail"),
            Err(err) => {
                assert!(!ok, "{count} × {max_pods}: {err}");
                assert_eq!(err.field(), Some("nodePools[1].maxPods"));
            }
        }
    }
    // Taken from the cluster maxPods: the error names that field.
    let mut d = base(NetworkPlugin::Kubenet, 2);
    d.max_pods = Some(10);
    assert_eq!(
        error_text(&d),
        "maxPods: pool `nodepool1` has room for 20 pods (count 2 × maxPods 10) but AKS wants \
         room for at least 30 in every pool, for system pods; use count 3 or more, or maxPods 15 \
         or more"
    );
}

#[test]
fn reserved_ranges_are_refused_for_service_pod_and_vnet_ranges() {
    // Each reserved range, its neighbours below and above.
    let cases = [
        ("169.254.0.0/16", false),
        ("169.253.0.0/16", true),
        ("169.255.0.0/16", true),
        ("172.30.0.0/16", false),
        ("172.31.0.0/16", false),
        ("172.29.0.0/16", true),
        ("172.32.0.0/16", true),
        ("192.0.2.0/24", false),
        ("192.0.1.0/24", true),
        ("192.0.3.0/24", true),
        // Containing or inside a reserved range counts as using it.
        ("172.16.0.0/12", false),
        ("172.30.5.0/24", false),
    ];
    for (range, ok) in cases {
        let mut service = base(NetworkPlugin::Kubenet, 1);
        service.service_cidr = Some(cidr(range));
        service.dns_service_ip = None;
        let mut pod = base(NetworkPlugin::Kubenet, 1);
        pod.pod_cidr = Some(cidr(range));
        for (field, d) in [("serviceCidr", service), ("podCidr", pod)] {
            match validate(&d) {
                Ok(_) => assert!(ok, "{field} {range} should be refused"),
                Err(err) => {
                    assert!(!ok, "{field} {range}: {err}");
                    assert_eq!(err.field(), Some(field), "{range}: {err}");
                    assert!(err.to_string().contains("AKS reserves"), "{err}");
                }
            }
        }
    }
    let mut d = base(NetworkPlugin::Azure, 1);
    d.vnet.address_space = cidr("172.30.0.0/16");
    d.vnet.node_subnet = cidr("172.30.0.0/24");
    assert_eq!(
        error_text(&d),
        "vnet.addressSpace: 172.30.0.0/16 overlaps 172.30.0.0/16, which AKS reserves; keep clear \
         of 169.254.0.0/16, 172.30.0.0/16, 172.31.0.0/16, 192.0.2.0/24"
    );
}

#[test]
fn service_cidr_must_be_smaller_than_a_slash_12() {
    let mut d = base(NetworkPlugin::Azure, 1);
    d.service_cidr = Some(cidr("10.16.0.0/13"));
    d.dns_service_ip = None;
    valid(&d);
    d.service_cidr = Some(cidr("10.16.0.0/12"));
    assert_eq!(
        error_text(&d),
        "serviceCidr: 10.16.0.0/12 has 1048576 addresses but AKS wants a service CIDR smaller \
         than a /12; use a /13 or longer prefix (the AKS default is 10.0.0.0/16)"
    );
    d.service_cidr = Some(cidr("10.0.0.0/8"));
    assert_eq!(failing_field(&d), "serviceCidr");
}

fn overlay(count: u32) -> ClusterDescription {
    ClusterDescription {
        network_plugin_mode: Some(NetworkPluginMode::Overlay),
        ..base(NetworkPlugin::Azure, count)
    }
}

#[test]
fn defaults_for_overlay() {
    let cluster = valid(&overlay(2));
    assert_eq!(cluster.pod_network, PodNetwork::AzureOverlay);
    assert_eq!(cluster.pod_cidr, Some(cidr("10.244.0.0/16")));
    assert_eq!(cluster.node_pools[0].max_pods, 250);
    assert_eq!(cluster.azure_pod_subnet(), None);
    // Everything outside the pod CIDR is SNATed to the node.
    assert_eq!(cluster.non_masquerade_cidrs, vec![cidr("10.244.0.0/16")]);
}

#[test]
fn overlay_pod_cidr_needs_a_slash_24_per_node_and_no_route_table() {
    // A /22 holds 4 node /24s: 4 nodes fit, 5 do not.
    let mut d = overlay(4);
    d.pod_cidr = Some(cidr("10.244.0.0/22"));
    valid(&d);
    d.node_pools[0].count = 5;
    assert_eq!(
        error_text(&d),
        "podCidr: 10.244.0.0/22 holds 4 node /24s but Azure CNI Overlay gives each of the 5 \
         nodes its own /24; use a /21 or larger, or fewer nodes"
    );
    // No 400-node route table limit: 401 nodes over two pools, nodes only in the subnet.
    let mut d = overlay(300);
    d.vnet.node_subnet = cidr("10.224.0.0/20");
    d.pod_cidr = Some(cidr("10.244.0.0/15"));
    d.node_pools.push(pool("user", 101));
    valid(&d);
    let mut k = base(NetworkPlugin::Kubenet, 401);
    k.vnet.node_subnet = cidr("10.224.0.0/20");
    assert!(error_text(&k).contains("networkPluginMode: overlay"));
    // The node subnet holds only nodes: a /24 takes 251 Overlay nodes at maxPods 250.
    valid(&overlay(251));
    assert_eq!(failing_field(&overlay(252)), "vnet.nodeSubnet");
}

#[test]
fn overlay_is_azure_only_without_a_pod_subnet_and_its_pod_cidr_stays_clear() {
    let mut d = overlay(1);
    d.network_plugin = NetworkPlugin::Kubenet;
    assert_eq!(failing_field(&d), "networkPluginMode");
    let mut d = overlay(1);
    d.vnet.pod_subnet = Some(cidr("10.225.0.0/16"));
    assert_eq!(failing_field(&d), "vnet.podSubnet");
    let mut d = overlay(1);
    d.pod_cidr = Some(cidr("10.224.128.0/17"));
    assert!(error_text(&d).contains("overlaps vnet.addressSpace"));
    d.pod_cidr = Some(cidr("172.31.0.0/16"));
    assert!(error_text(&d).contains("which AKS reserves"));
    // Node Subnet still refuses a pod CIDR, and names Overlay as the way to use one.
    let mut a = base(NetworkPlugin::Azure, 1);
    a.pod_cidr = Some(cidr("10.244.0.0/16"));
    assert!(error_text(&a).contains("networkPluginMode: overlay"));
}

#[test]
fn network_plugin_mode_parses_and_round_trips() {
    let yaml = "name: ov\nnetworkPlugin: azure\nnetworkPluginMode: overlay\ndatapath: ebpf\nvnet:\n  addressSpace: 10.224.0.0/12\n  nodeSubnet: 10.224.0.0/24\nnodePools:\n  - { name: nodepool1, count: 1 }\n";
    let d = parse(yaml).expect("overlay description");
    assert_eq!(d.network_plugin_mode, Some(NetworkPluginMode::Overlay));
    assert_eq!(parse(&to_yaml(&d)).expect("re-parse"), d);
    let bad = yaml.replace("overlay", "underlay");
    assert!(parse(&bad).is_err());
}

#[test]
fn overlay_always_keeps_the_pod_cidr_unmasqueraded() {
    let mut d = overlay(1);
    d.non_masquerade_cidrs = Some(vec![cidr("192.168.100.0/24")]);
    assert_eq!(
        valid(&d).non_masquerade_cidrs,
        [cidr("10.244.0.0/16"), cidr("192.168.100.0/24")]
    );
    // Already covered: left as written.
    d.non_masquerade_cidrs = Some(vec![cidr("10.0.0.0/8")]);
    d.service_cidr = Some(cidr("172.16.0.0/16"));
    d.dns_service_ip = None;
    d.vnet.address_space = cidr("172.20.0.0/16");
    d.vnet.node_subnet = cidr("172.20.0.0/24");
    assert_eq!(valid(&d).non_masquerade_cidrs, [cidr("10.0.0.0/8")]);
}
