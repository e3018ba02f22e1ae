use std::net::Ipv4Addr;

use super::*;
use crate::model::load;
use crate::model::policy::NetworkPolicyEngine;
use crate::plan::{plan, Plan};

use crate::policy::testing::{three_tier_with_except_and_end_port, THREE_TIER};
const INTERNET: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const ON_PREM: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 10);

fn three_tier(yaml: &str) -> Plan {
    plan(&load(yaml).expect("valid")).expect("plan")
}

/// The pod of `app` on node `node` (0 or 1).
fn pod<'p>(plan: &'p Plan, app: &str, node: usize) -> PolicyEndpoint<'p> {
    let pod = plan.nodes[node]
        .pods
        .iter()
        .find(|p| p.labels.get("app").map(String::as_str) == Some(app))
        .unwrap_or_else(|| panic!("no {app} pod on node {node}"));
    PolicyEndpoint::Pod {
        address: pod.ip,
        namespace: &pod.namespace,
        labels: &pod.labels,
        node: &pod.node,
    }
}

fn node(plan: &Plan, index: usize) -> PolicyEndpoint<'_> {
    PolicyEndpoint::Node {
        address: plan.nodes[index].ip,
        name: &plan.nodes[index].name,
    }
}

fn tcp<'a>(
    source: PolicyEndpoint<'a>,
    destination: PolicyEndpoint<'a>,
    port: u16,
) -> PolicyFlow<'a> {
    PolicyFlow {
        source,
        destination,
        protocol: Protocol::Tcp,
        port,
    }
}

fn verdict(plan: &Plan, flow: PolicyFlow) -> PolicyVerdict {
    evaluate(&plan.policy, &flow)
}

fn denied_by(plan: &Plan, flow: PolicyFlow) -> Denial {
    match verdict(plan, flow) {
        PolicyVerdict::Denied(denial) => denial,
        allowed => panic!("expected a denial, got {allowed:?}"),
    }
}

#[test]
fn three_tier_allowed_pairs_name_their_policies() {
    let plan = three_tier(THREE_TIER);
    // web -> api:8080 on the other node: egress by the in-cluster policy, ingress by api's.
    assert_eq!(
        verdict(&plan, tcp(pod(&plan, "web", 0), pod(&plan, "api", 1), 8080)),
        PolicyVerdict::Allowed {
            egress: Allowance::Policy("shop/egress-in-cluster".into()),
            ingress: Allowance::Policy("shop/api-from-web".into()),
        }
    );
    assert!(verdict(&plan, tcp(pod(&plan, "api", 0), pod(&plan, "db", 0), 5432)).is_allowed());
    assert!(verdict(&plan, tcp(pod(&plan, "api", 1), pod(&plan, "db", 0), 5432)).is_allowed());
    // api to the internet: its own egress policy.
    let internet = PolicyEndpoint::External { address: INTERNET };
    assert_eq!(
        verdict(&plan, tcp(pod(&plan, "api", 0), internet, 443)),
        PolicyVerdict::Allowed {
            egress: Allowance::Policy("shop/api-to-internet".into()),
            ingress: Allowance::NotIsolated,
        }
    );
    // The client pod of `default` is not isolated, and web's ingress is open.
    assert_eq!(
        verdict(
            &plan,
            tcp(pod(&plan, "client", 1), pod(&plan, "web", 0), 80)
        ),
        PolicyVerdict::Allowed {
            egress: Allowance::NotIsolated,
            ingress: Allowance::NotIsolated,
        }
    );
    assert!(verdict(&plan, tcp(pod(&plan, "client", 0), internet, 443)).is_allowed());
}

#[test]
fn three_tier_denied_pairs_are_default_deny_of_named_policies() {
    let plan = three_tier(THREE_TIER);
    // Nothing but api reaches db.
    for app in ["web", "client", "db"] {
        let denial = denied_by(&plan, tcp(pod(&plan, app, 1), pod(&plan, "db", 0), 5432));
        assert_eq!(denial.direction, PolicyType::Ingress);
        assert_eq!(denial.isolated_by, vec!["shop/db-from-api".to_owned()]);
    }
    // api reaches db only on 5432.
    let denial = denied_by(&plan, tcp(pod(&plan, "api", 0), pod(&plan, "db", 1), 5433));
    assert_eq!(denial.isolated_by, vec!["shop/db-from-api".to_owned()]);
    assert_eq!(
        denial.to_string(),
        "default deny by policy shop/db-from-api (ingress of the destination; no rule allows it)"
    );
    // db cannot reach api (api's ingress only from web).
    let denial = denied_by(&plan, tcp(pod(&plan, "db", 0), pod(&plan, "api", 0), 8080));
    assert_eq!(denial.isolated_by, vec!["shop/api-from-web".to_owned()]);
    // web and db may not reach the internet or on-prem: egress default deny of both
    // egress policies that select them... only egress-in-cluster selects web.
    for destination in [INTERNET, ON_PREM] {
        let external = PolicyEndpoint::External {
            address: destination,
        };
        let denial = denied_by(&plan, tcp(pod(&plan, "web", 0), external, 443));
        assert_eq!(denial.direction, PolicyType::Egress);
        assert_eq!(
            denial.isolated_by,
            vec!["shop/egress-in-cluster".to_owned()]
        );
    }
    // api reaches the internet but not on-prem: the except list holds 192.168.0.0/16.
    let denial = denied_by(
        &plan,
        tcp(
            pod(&plan, "api", 0),
            PolicyEndpoint::External { address: ON_PREM },
            443,
        ),
    );
    assert_eq!(
        denial.isolated_by,
        vec![
            "shop/egress-in-cluster".to_owned(),
            "shop/api-to-internet".to_owned()
        ]
    );
    // Egress is judged before ingress: web -> db is denied by db's ingress, but a shop pod
    // reaching a node is denied by its egress (nodes are not pods).
    let denial = denied_by(&plan, tcp(pod(&plan, "web", 0), node(&plan, 1), 10250));
    assert_eq!(denial.direction, PolicyType::Egress);
}

#[test]
fn ingress_from_the_pods_own_node_is_always_allowed() {
    let plan = three_tier(THREE_TIER);
    assert_eq!(
        verdict(&plan, tcp(node(&plan, 0), pod(&plan, "db", 0), 5432)),
        PolicyVerdict::Allowed {
            egress: Allowance::NotIsolated,
            ingress: Allowance::OwnNode,
        }
    );
    let denial = denied_by(&plan, tcp(node(&plan, 1), pod(&plan, "db", 0), 5432));
    assert_eq!(denial.direction, PolicyType::Ingress);
    // From outside the cluster db is closed too.
    let denial = denied_by(
        &plan,
        tcp(
            PolicyEndpoint::External { address: ON_PREM },
            pod(&plan, "db", 1),
            5432,
        ),
    );
    assert_eq!(denial.isolated_by, vec!["shop/db-from-api".to_owned()]);
}

#[test]
fn without_an_engine_everything_is_allowed() {
    let mut plan = three_tier(THREE_TIER);
    plan.policy.engine = NetworkPolicyEngine::None;
    assert!(verdict(&plan, tcp(pod(&plan, "web", 0), pod(&plan, "db", 0), 5432)).is_allowed());
}

#[test]
fn ip_block_except_and_end_port() {
    let yaml = three_tier_with_except_and_end_port();
    let plan = three_tier(&yaml);
    // Node 0's pods (10.224.0.6-9) are inside the block; node 1's (.36-.39) are excepted.
    for port in [5432, 5434] {
        assert!(verdict(
            &plan,
            tcp(pod(&plan, "client", 0), pod(&plan, "db", 1), port)
        )
        .is_allowed());
    }
    assert!(!verdict(
        &plan,
        tcp(pod(&plan, "client", 0), pod(&plan, "db", 1), 5435)
    )
    .is_allowed());
    assert!(!verdict(
        &plan,
        tcp(pod(&plan, "client", 1), pod(&plan, "db", 0), 5432)
    )
    .is_allowed());
    // UDP is not TCP.
    let mut flow = tcp(pod(&plan, "client", 0), pod(&plan, "db", 1), 5432);
    flow.protocol = Protocol::Udp;
    assert!(!verdict(&plan, flow).is_allowed());
    // Node 1's address (10.224.0.5) is in the block and not excepted.
    assert!(verdict(&plan, tcp(node(&plan, 1), pod(&plan, "db", 0), 5432)).is_allowed());
}

#[test]
fn namespace_selectors() {
    // db admits api pods only from namespaces labelled team=shop: shop's api passes,
    // and a podSelector alone (own namespace) does not admit `default`'s client.
    let yaml = THREE_TIER.replacen(
        "from: [{ podSelector: { matchLabels: { app: api } } }]",
        "from: [{ namespaceSelector: { matchLabels: { team: shop } }, podSelector: { matchLabels: { tier: backend } } }]",
        1,
    );
    let plan = three_tier(&yaml);
    assert!(verdict(&plan, tcp(pod(&plan, "api", 0), pod(&plan, "db", 1), 5432)).is_allowed());
    assert!(!verdict(&plan, tcp(pod(&plan, "web", 0), pod(&plan, "db", 1), 5432)).is_allowed());
    // By the namespace name label: everything from `default` reaches db.
    let yaml = THREE_TIER.replacen(
        "from: [{ podSelector: { matchLabels: { app: api } } }]",
        "from: [{ namespaceSelector: { matchLabels: { kubernetes.io/metadata.name: default } } }]",
        1,
    );
    let plan = three_tier(&yaml);
    assert!(verdict(
        &plan,
        tcp(pod(&plan, "client", 0), pod(&plan, "db", 1), 5432)
    )
    .is_allowed());
    assert!(!verdict(&plan, tcp(pod(&plan, "api", 0), pod(&plan, "db", 1), 5432)).is_allowed());
    // A podSelector alone selects only the policy's namespace: a client labelled
    // app=api in `default` does not pass db's policy of `shop`.
    let yaml = THREE_TIER.replacen("{ labels: { app: client } }", "{ labels: { app: api } }", 1);
    let plan = three_tier(&yaml);
    let impostor = &plan.nodes[0].pods[3];
    let flow = tcp(
        PolicyEndpoint::Pod {
            address: impostor.ip,
            namespace: &impostor.namespace,
            labels: &impostor.labels,
            node: &impostor.node,
        },
        pod(&plan, "db", 1),
        5432,
    );
    assert!(!verdict(&plan, flow).is_allowed());
}

#[test]
fn default_deny_policies() {
    // A policy with policyTypes [Ingress] and no rules denies all ingress to what it
    // selects; any other policy's rule can still allow.
    let deny_all = "  - metadata: { name: deny-all, namespace: shop }\n    spec:\n      podSelector: {}\n      policyTypes: [Ingress]\n";
    let yaml = format!("{THREE_TIER}{deny_all}");
    let plan = three_tier(&yaml);
    let denial = denied_by(
        &plan,
        tcp(pod(&plan, "client", 0), pod(&plan, "web", 1), 80),
    );
    assert_eq!(denial.isolated_by, vec!["shop/deny-all".to_owned()]);
    // api -> db is still allowed by db-from-api: rules of policies add up.
    assert_eq!(
        verdict(&plan, tcp(pod(&plan, "api", 0), pod(&plan, "db", 1), 5432)),
        PolicyVerdict::Allowed {
            egress: Allowance::Policy("shop/egress-in-cluster".into()),
            ingress: Allowance::Policy("shop/db-from-api".into()),
        }
    );
    // Empty rule ({}) allows everything; the empty `from` list is "from anywhere".
    let allow_all = "  - metadata: { name: allow-all, namespace: shop }\n    spec:\n      podSelector: { matchLabels: { app: db } }\n      ingress: [{}]\n";
    let yaml = format!("{THREE_TIER}{allow_all}");
    let plan = three_tier(&yaml);
    assert!(verdict(&plan, tcp(node(&plan, 1), pod(&plan, "db", 0), 9999)).is_allowed());
}
