use super::*;
use crate::model;

const ON_PREM: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 10);
const INTERNET: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

fn plan(plugin: &str, datapath: &str, extra: &str) -> Plan {
    let max_pods = if plugin == "kubenet" { 110 } else { 30 };
    let yaml = format!(
        "name: t\nnetworkPlugin: {plugin}\ndatapath: {datapath}\nvnet:\n  addressSpace: 10.224.0.0/12\n  nodeSubnet: 10.224.0.0/24\nmaxPods: {max_pods}\nnodePools:\n  - {{ name: nodepool1, count: 2, osType: Linux }}\npodsPerNode: 2\n{extra}"
    );
    let cluster = model::load(&yaml).expect("valid description");
    crate::plan::plan(&cluster).expect("plannable")
}

fn pod(plan: &Plan, node: usize, slot: usize) -> Endpoint {
    let n = &plan.nodes[node];
    Endpoint {
        label: n.pods[slot].name.clone(),
        kind: EndpointKind::Pod {
            node: n.name.clone(),
        },
        namespace: String::new(),
        address: n.pods[slot].ip,
    }
}

fn node(plan: &Plan, node: usize) -> Endpoint {
    let n = &plan.nodes[node];
    Endpoint {
        label: n.name.clone(),
        kind: EndpointKind::Node {
            name: n.name.clone(),
        },
        namespace: String::new(),
        address: n.ip,
    }
}

fn host(kind: EndpointKind, address: Ipv4Addr) -> Endpoint {
    Endpoint {
        label: if kind == EndpointKind::OnPrem {
            "on-prem"
        } else {
            "internet"
        }
        .into(),
        kind,
        namespace: String::new(),
        address,
    }
}

fn expect(plan: &Plan, source: &Endpoint, destination: &Endpoint, port: u16) -> Expectation {
    expect_flow(
        &NetworkModel::from_plan(plan),
        &Flow {
            source,
            destination,
            protocol: Protocol::Tcp,
            port,
        },
    )
}

fn seen(expectation: &Expectation) -> Ipv4Addr {
    match expectation {
        Expectation::Reachable {
            source: Some(s), ..
        } => s.address,
        other => panic!("expected reachable with a source, got {other}"),
    }
}

fn blocked_reason(expectation: &Expectation) -> &str {
    match expectation {
        Expectation::Blocked { reason } => reason,
        other => panic!("expected blocked, got {other}"),
    }
}

#[test]
fn azure_cni_node_subnet_pods_keep_their_address_in_the_vnet_only() {
    for datapath in ["ebpf", "iptables"] {
        let p = plan("azure", datapath, "");
        let a = pod(&p, 0, 0);
        let on_prem = host(EndpointKind::OnPrem, ON_PREM);
        let internet = host(EndpointKind::Internet, INTERNET);
        assert_eq!(seen(&expect(&p, &a, &pod(&p, 0, 1), 17001)), a.address);
        assert_eq!(seen(&expect(&p, &a, &pod(&p, 1, 0), 17001)), a.address);
        assert_eq!(seen(&expect(&p, &a, &node(&p, 1), 17001)), a.address);
        // Outside the VNet the node address (concepts-network-legacy-cni.md).
        assert_eq!(seen(&expect(&p, &a, &on_prem, 17001)), p.nodes[0].ip);
        // The internet sees the load balancer's outbound address (egress-outboundtype.md).
        assert_eq!(
            seen(&expect(&p, &a, &internet, 17001)),
            crate::model::outbound::LOAD_BALANCER_OUTBOUND_IP
        );
        assert_eq!(seen(&expect(&p, &on_prem, &a, 17001)), ON_PREM);
        assert_eq!(seen(&expect(&p, &on_prem, &node(&p, 0), 17001)), ON_PREM);
        assert_eq!(
            seen(&expect(&p, &node(&p, 0), &pod(&p, 1, 0), 17001)),
            p.nodes[0].ip
        );
    }
}

#[test]
fn the_internet_starts_no_connection_into_the_vnet() {
    for plugin in ["azure", "kubenet"] {
        let p = plan(plugin, "ebpf", "");
        let internet = host(EndpointKind::Internet, INTERNET);
        for destination in [pod(&p, 0, 0), node(&p, 0)] {
            let e = expect(&p, &internet, &destination, 17001);
            assert!(
                blocked_reason(&e).contains("no inbound from the internet"),
                "{e}"
            );
        }
    }
}

#[test]
fn kubenet_pods_are_unreachable_from_on_prem_and_masqueraded_to_it() {
    let p = plan("kubenet", "iptables", "");
    let a = pod(&p, 0, 0);
    let on_prem = host(EndpointKind::OnPrem, ON_PREM);
    let e = expect(&p, &on_prem, &a, 17001);
    assert!(
        blocked_reason(&e).contains("route table is not advertised"),
        "{e}"
    );
    // Nodes are VNet addresses, which ExpressRoute carries.
    assert_eq!(seen(&expect(&p, &on_prem, &node(&p, 0), 17001)), ON_PREM);
    // The default non-masquerade CIDRs (pod CIDR, VNet) leave on-prem out.
    assert_eq!(seen(&expect(&p, &a, &on_prem, 17001)), p.nodes[0].ip);
    // Across nodes through the route table with the pod's own address.
    assert_eq!(seen(&expect(&p, &a, &pod(&p, 1, 0), 17001)), a.address);
}

/// A pod that keeps its private pod CIDR address toward on-prem: on-prem has no route
/// back.
fn assert_on_prem_cannot_answer_the_pod(p: &Plan) {
    let e = expect(
        p,
        &pod(p, 0, 0),
        &host(EndpointKind::OnPrem, ON_PREM),
        17001,
    );
    assert!(
        blocked_reason(&e).contains("no route back to the pod CIDR"),
        "{e}"
    );
}

#[test]
fn a_kubenet_pod_not_masqueraded_to_on_prem_gets_no_reply() {
    let p = plan(
        "kubenet",
        "ebpf",
        "nonMasqueradeCidrs: [10.244.0.0/16, 10.224.0.0/12, 192.168.100.0/24]\n",
    );
    assert_on_prem_cannot_answer_the_pod(&p);
}

#[test]
fn an_empty_non_masquerade_list_masquerades_everything_leaving_the_node() {
    let p = plan("azure", "ebpf", "nonMasqueradeCidrs: []\n");
    let a = pod(&p, 0, 0);
    assert_eq!(seen(&expect(&p, &a, &pod(&p, 1, 0), 17001)), p.nodes[0].ip);
    assert_eq!(
        seen(&expect(&p, &a, &pod(&p, 0, 1), 17001)),
        a.address,
        "same node: direct"
    );
}

#[test]
fn nsg_rules_decide_by_priority_on_the_address_the_node_sees() {
    let nsg = "nsg:\n  - { name: allow-onprem-17002, priority: 100, access: Allow, protocol: Tcp, sourceAddressPrefix: 192.168.100.0/24, destinationPortRange: \"17002\" }\n  - { name: deny-17002, priority: 200, access: Deny, protocol: Tcp, destinationAddressPrefix: 10.224.0.0/24, destinationPortRange: \"17002\" }\n";
    let p = plan("azure", "ebpf", nsg);
    let a = pod(&p, 0, 0);
    let on_prem = host(EndpointKind::OnPrem, ON_PREM);
    // The allow rule comes first for on-prem.
    assert_eq!(seen(&expect(&p, &on_prem, &a, 17002)), ON_PREM);
    // A pod of another node is denied on 17002, not on 17001.
    let e = expect(&p, &pod(&p, 1, 0), &a, 17002);
    assert!(
        blocked_reason(&e).contains("NSG rule deny-17002 (priority 200)"),
        "{e}"
    );
    assert_eq!(
        seen(&expect(&p, &pod(&p, 1, 0), &a, 17001)),
        pod(&p, 1, 0).address
    );
    // Pods of one node never cross the uplink, where the NSG applies.
    assert_eq!(
        seen(&expect(&p, &pod(&p, 0, 1), &a, 17002)),
        pod(&p, 0, 1).address
    );
    // Outbound flows are not filtered by inbound rules (replies pass a stateful NSG).
    // (Node Subnet masquerades on-prem to the node.)
    assert_eq!(seen(&expect(&p, &a, &on_prem, 17002)), p.nodes[0].ip);
}

#[test]
fn hairpin_through_a_service_is_masqueraded_per_datapath() {
    let cases = [
        ("azure", "ebpf", None),
        ("kubenet", "ebpf", None),
        ("kubenet", "iptables", Some("cbr0")),
        ("azure", "iptables", Some("node")),
    ];
    for (plugin, datapath, kind) in cases {
        let p = plan(plugin, datapath, "");
        let model = NetworkModel::from_plan(&p);
        let client = pod(&p, 0, 0);
        let own = expect_service_backend(&model, &client, &client, Protocol::Tcp, 8080);
        let want = match kind {
            None => Ipv4Addr::new(169, 254, 42, 1),
            Some("cbr0") => p.nodes[0].pod_gateway.expect("kubenet gateway"),
            Some(_) => p.nodes[0].ip,
        };
        assert_eq!(seen(&own), want, "{plugin}/{datapath}");
        let other = expect_service_backend(&model, &client, &pod(&p, 1, 0), Protocol::Tcp, 8080);
        assert_eq!(seen(&other), client.address, "{plugin}/{datapath}");
    }
}

#[test]
fn overlay_keeps_pod_addresses_between_pods_and_masquerades_everything_else() {
    for datapath in ["ebpf", "iptables"] {
        let p = plan("azure", datapath, "networkPluginMode: overlay\n");
        let a = pod(&p, 0, 0);
        let on_prem = host(EndpointKind::OnPrem, ON_PREM);
        let internet = host(EndpointKind::Internet, INTERNET);
        assert_eq!(seen(&expect(&p, &a, &pod(&p, 1, 0), 17001)), a.address);
        for outside in [node(&p, 1), on_prem.clone()] {
            assert_eq!(seen(&expect(&p, &a, &outside, 17001)), p.nodes[0].ip);
        }
        assert_eq!(
            seen(&expect(&p, &a, &internet, 17001)),
            crate::model::outbound::LOAD_BALANCER_OUTBOUND_IP
        );
        let e = expect(&p, &on_prem, &a, 17001);
        assert!(
            blocked_reason(&e).contains("the VNet has no route for the pod CIDR"),
            "{e}"
        );
        // A node reaches another node's pod from its tunnel address.
        assert_eq!(
            seen(&expect(&p, &node(&p, 0), &pod(&p, 1, 0), 17001)),
            Ipv4Addr::new(10, 244, 0, 0)
        );
        assert_eq!(
            seen(&expect(&p, &on_prem, &node(&p, 0), 17001)),
            ON_PREM,
            "nodes stay VNet addresses"
        );
    }
    // Hairpin through a service: the eBPF link-local source, or cbr0's address.
    for (datapath, want) in [
        ("ebpf", Ipv4Addr::new(169, 254, 42, 1)),
        ("iptables", Ipv4Addr::new(10, 244, 0, 1)),
    ] {
        let p = plan("azure", datapath, "networkPluginMode: overlay\n");
        let model = NetworkModel::from_plan(&p);
        let client = pod(&p, 0, 0);
        let own = expect_service_backend(&model, &client, &client, Protocol::Tcp, 8080);
        assert_eq!(seen(&own), want, "overlay/{datapath}");
    }
    // Without masquerade to on-prem, an Overlay pod gets no reply.
    let p = plan(
        "azure",
        "ebpf",
        "networkPluginMode: overlay\nnonMasqueradeCidrs: [10.244.0.0/16, 192.168.100.0/24]\n",
    );
    assert_on_prem_cannot_answer_the_pod(&p);
}
