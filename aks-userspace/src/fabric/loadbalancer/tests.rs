use super::*;
use crate::plan::tests::plan_of;

const SERVICES: &str = "services:\n  - { name: web, clusterIP: 10.0.0.20, port: 80, targetPort: 17001, backends: 1, type: LoadBalancer }\n  - { name: web-local, clusterIP: 10.0.0.21, port: 80, targetPort: 17001, backends: 1, type: LoadBalancer, externalTrafficPolicy: Local, loadBalancerSourceRanges: [203.0.113.0/24] }\n  - { name: np, clusterIP: 10.0.0.22, port: 8080, backends: 2, type: NodePort }\n";

fn plan() -> Plan {
    plan_of(&format!(
        "name: lb\nnetworkPlugin: azure\ndatapath: iptables\nvnet:\n  addressSpace: 10.224.0.0/12\n  nodeSubnet: 10.224.0.0/24\nmaxPods: 30\nnodePools:\n  - {{ name: nodepool1, count: 2 }}\npodsPerNode: 1\n{SERVICES}"
    ))
}

#[test]
fn only_load_balancer_services_get_a_rule_and_local_only_backend_nodes() {
    let plan = plan();
    let rules = rules(&plan, None);
    assert_eq!(rules.len(), 2, "NodePort services have no frontend");
    assert_eq!(rules[0].service, "web");
    assert_eq!(rules[0].healthy.len(), 2, "Cluster: every node answers");
    let local = &rules[1];
    assert_eq!(local.policy, ExternalTrafficPolicy::Local);
    // One backend, placed on the first node: only it answers the probe.
    assert_eq!(
        local.healthy,
        vec![(plan.nodes[0].name.clone(), plan.nodes[0].ip)]
    );
}

#[test]
fn frontends_are_dnatted_to_healthy_node_ports_at_random() {
    let plan = plan();
    let rules = rules(&plan, None);
    let nat = nat_rules(&rules);
    let web = &rules[0];
    assert!(nat.contains(&format!(
        "-A PREROUTING -d {}/32 -p tcp -m tcp --dport 80 ",
        web.frontend
    )));
    assert!(nat.contains(&format!(
        "-m statistic --mode random --probability 0.5000000000 -j DNAT --to-destination {}:{}",
        plan.nodes[0].ip, web.node_port
    )));
    assert!(nat.contains(&format!(
        "-A AKSNET-LB-0 -p tcp -m tcp -m comment --comment \"web -> {}\" -j DNAT --to-destination {}:{}",
        plan.nodes[1].name, plan.nodes[1].ip, web.node_port
    )));
    assert_eq!(
        nat.matches("-A AKSNET-LB-1 ").count(),
        1,
        "Local: one healthy node: {nat}"
    );
}

#[test]
fn source_ranges_admit_their_prefix_and_drop_the_rest() {
    let rules = rules(&plan(), None);
    let filter = filter_rules(&rules, Some("AKSNET-NSG"));
    let open: Vec<&str> = filter
        .lines()
        .filter(|l| l.starts_with("-A AKSNET-LBSRC-0 "))
        .collect();
    assert_eq!(open.len(), 2, "no ranges: NSG, then accept: {filter}");
    let ranged: Vec<&str> = filter
        .lines()
        .filter(|l| l.starts_with("-A AKSNET-LBSRC-1 "))
        .collect();
    assert_eq!(ranged.len(), 3, "{filter}");
    assert!(ranged[0].contains("-s 203.0.113.0/24 -j AKSNET-NSG"));
    assert!(ranged[1].contains("-s 203.0.113.0/24 ") && ranged[1].ends_with("-j ACCEPT"));
    assert!(ranged[2].ends_with("-j DROP"));
    assert!(filter_rules(&[], None).is_empty() && filter_chains(&[]).is_empty());
}

#[test]
fn the_probe_record_decides_which_nodes_are_in_rotation() {
    use crate::probes::{FrontendProbes, NodeProbe, ProbeRecord, ProbeState};
    let plan = plan();
    let local = plan
        .exposures
        .iter()
        .find(|e| e.service == "web-local")
        .expect("web-local exposed");
    let node = |i: usize, state: ProbeState| NodeProbe {
        state,
        ..NodeProbe::new(&plan.nodes[i].name, plan.nodes[i].ip)
    };
    let frontend = |service: &str, port: u16, nodes: Vec<NodeProbe>| FrontendProbes {
        service: service.into(),
        frontend: Ipv4Addr::new(198, 51, 100, 10),
        port: 80,
        policy: ExternalTrafficPolicy::Local,
        probe_port: port,
        path: "/healthz".into(),
        nodes,
    };
    let record = ProbeRecord {
        frontends: vec![
            // The backend's node failed its probe, the other passed: the record wins
            // over the plan (the endpoint moved before the plan was written here).
            frontend(
                "web-local",
                local.health_check_node_port.expect("a health check port"),
                vec![node(0, ProbeState::Down), node(1, ProbeState::Up)],
            ),
            // Cluster: node 1 undecided keeps the plan's answer (in rotation).
            frontend(
                "web",
                PROXY_HEALTHZ_PORT,
                vec![node(0, ProbeState::Down), node(1, ProbeState::Unknown)],
            ),
        ],
        ..ProbeRecord::default()
    };
    let rules = rules(&plan, Some(&record));
    assert_eq!(
        rules[1].healthy,
        vec![(plan.nodes[1].name.clone(), plan.nodes[1].ip)]
    );
    assert_eq!(
        rules[0].healthy,
        vec![(plan.nodes[1].name.clone(), plan.nodes[1].ip)]
    );
    // A record of another probe port (the service changed policy) is not used.
    let other = ProbeRecord {
        frontends: vec![frontend(
            "web-local",
            1,
            vec![node(0, ProbeState::Down), node(1, ProbeState::Down)],
        )],
        ..ProbeRecord::default()
    };
    assert_eq!(rules_of(&plan, &other)[1].healthy.len(), 1);
}

fn rules_of(plan: &Plan, record: &crate::probes::ProbeRecord) -> Vec<LoadBalancingRule> {
    rules(plan, Some(record))
}
