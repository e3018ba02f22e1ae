use super::*;
use crate::model::{load, parse, PlanError};

use crate::policy::testing::THREE_TIER;

/// The three-tier example with `from` replaced by `to` (one occurrence).
fn three_tier_with(from: &str, to: &str) -> String {
    assert!(THREE_TIER.contains(from), "the example has {from:?}");
    THREE_TIER.replacen(from, to, 1)
}

fn field_of(yaml: &str) -> String {
    match load(yaml) {
        Err(PlanError::Invalid { field, .. }) => field,
        other => panic!("expected a rule violation, got {other:?}"),
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn three_tier_example_resolves() {
    let cluster = load(THREE_TIER).expect("the example is valid");
    let policy = &cluster.policy;
    assert_eq!(policy.engine, NetworkPolicyEngine::Cilium);
    assert_eq!(policy.policies.len(), 4);
    let db = &policy.policies[0];
    assert_eq!(db.qualified_name(), "shop/db-from-api");
    assert!(
        db.egress.is_none(),
        "policyTypes [Ingress] does not isolate egress"
    );
    let rules = db.ingress.as_ref().expect("ingress");
    assert_eq!(
        rules[0].ports,
        vec![PortRange {
            protocol: Protocol::Tcp,
            first: 5432,
            last: 5432
        }]
    );
    assert_eq!(
        policy.pod_identity(2).labels,
        labels(&[("app", "db"), ("tier", "data")])
    );
    assert_eq!(policy.pod_identity(3).namespace, "default");
    // Slots past the templates are plain pods of `default`.
    assert_eq!(policy.pod_identity(9), PodIdentity::default());
    // Every namespace carries its name label; shop keeps its own labels too.
    assert_eq!(
        policy.namespace_labels("shop"),
        labels(&[(NAMESPACE_NAME_LABEL, "shop"), ("team", "shop")])
    );
    assert_eq!(
        policy.namespace_labels("default"),
        labels(&[(NAMESPACE_NAME_LABEL, "default")])
    );
}

#[test]
fn pods_in_the_plan_carry_their_identity() {
    let plan = crate::plan::plan(&load(THREE_TIER).expect("valid")).expect("plan");
    let api: Vec<_> = plan
        .pods()
        .filter(|p| p.labels.get("app").map(String::as_str) == Some("api"))
        .collect();
    assert_eq!(api.len(), 2, "one api pod per node");
    assert!(api.iter().all(|p| p.slot == 1 && p.namespace == "shop"));
}

#[test]
fn policy_types_default_as_in_kubernetes() {
    // No policyTypes and no egress rules: Ingress only.
    let yaml = three_tier_with("      policyTypes: [Ingress]\n", "");
    let cluster = load(&yaml).expect("valid");
    let db = &cluster.policy.policies[0];
    assert!(db.ingress.is_some() && db.egress.is_none());
    // No policyTypes but egress rules: both, so ingress is default deny.
    let yaml = three_tier_with("      policyTypes: [Egress]\n", "");
    let cluster = load(&yaml).expect("valid");
    let egress = &cluster.policy.policies[2];
    assert_eq!(
        egress.ingress.as_deref(),
        Some(&[][..]),
        "ingress default deny"
    );
    assert_eq!(egress.egress.as_ref().map(Vec::len), Some(1));
}

#[test]
fn end_port_makes_a_range_and_must_follow_port() {
    let yaml = three_tier_with(
        "{ protocol: TCP, port: 5432 }",
        "{ port: 5432, endPort: 5440 }",
    );
    let cluster = load(&yaml).expect("valid");
    let range = cluster.policy.policies[0]
        .ingress
        .as_ref()
        .expect("ingress")[0]
        .ports[0];
    assert_eq!(
        (range.protocol, range.first, range.last),
        (Protocol::Tcp, 5432, 5440)
    );
    assert!(range.matches(Protocol::Tcp, 5440));
    assert!(!range.matches(Protocol::Tcp, 5441));
    assert!(!range.matches(Protocol::Udp, 5432));

    let below = three_tier_with(
        "{ protocol: TCP, port: 5432 }",
        "{ port: 5432, endPort: 5000 }",
    );
    assert_eq!(
        field_of(&below),
        "networkPolicies[0].spec.ingress[0].ports[0].endPort"
    );
    let alone = three_tier_with("{ protocol: TCP, port: 5432 }", "{ endPort: 5000 }");
    assert_eq!(
        field_of(&alone),
        "networkPolicies[0].spec.ingress[0].ports[0].endPort"
    );
    let named = three_tier_with("{ protocol: TCP, port: 5432 }", "{ port: postgres }");
    assert_eq!(
        field_of(&named),
        "networkPolicies[0].spec.ingress[0].ports[0].port"
    );
    let zero = three_tier_with("{ protocol: TCP, port: 5432 }", "{ port: 0 }");
    assert_eq!(
        field_of(&zero),
        "networkPolicies[0].spec.ingress[0].ports[0].port"
    );
}

#[test]
fn except_must_be_inside_the_block() {
    let outside = three_tier_with("192.168.0.0/16]", "192.168.0.0/16, 0.0.0.0/0]");
    assert_eq!(
        field_of(&outside),
        "networkPolicies[3].spec.egress[0].to[0].ipBlock.except[3]"
    );
    let mixed = three_tier_with(
        "            - ipBlock:\n",
        "            - podSelector: {}\n              ipBlock:\n",
    );
    assert_eq!(
        field_of(&mixed),
        "networkPolicies[3].spec.egress[0].to[0].ipBlock"
    );
}

#[test]
fn aks_engine_rules() {
    use Datapath::{Ebpf, Iptables};
    use NetworkPlugin::{Azure, Kubenet};
    use NetworkPolicyEngine as E;
    let allowed = [
        (E::None, Azure, Ebpf),
        (E::None, Kubenet, Iptables),
        (E::Cilium, Azure, Ebpf),
        (E::Azure, Azure, Iptables),
        (E::Calico, Azure, Iptables),
        (E::Calico, Azure, Ebpf),
        (E::Calico, Kubenet, Iptables),
        (E::Calico, Kubenet, Ebpf),
    ];
    for (engine, plugin, datapath) in allowed {
        assert!(
            check_engine(engine, plugin, datapath).is_ok(),
            "{engine} with {plugin}/{datapath} is allowed"
        );
    }
    let refused = [
        (E::Azure, Kubenet, Iptables, "kubenet"),
        (E::Azure, Kubenet, Ebpf, "kubenet"),
        (E::Azure, Azure, Ebpf, "Cilium"),
        (E::Cilium, Kubenet, Ebpf, "only with Azure CNI"),
        (E::Cilium, Azure, Iptables, "eBPF"),
    ];
    for (engine, plugin, datapath, says) in refused {
        let err = check_engine(engine, plugin, datapath).expect_err("refused");
        assert_eq!(err.field(), Some("networkPolicy"));
        assert!(err.to_string().contains(says), "{err}");
    }
    // Through the whole description: kubenet with azure is refused by field.
    let yaml = three_tier_with("networkPolicy: cilium", "networkPolicy: azure").replacen(
        "networkPlugin: azure",
        "networkPlugin: kubenet",
        1,
    );
    assert_eq!(field_of(&yaml), "networkPolicy");
}

#[test]
fn policies_without_an_engine_are_refused() {
    let yaml = three_tier_with("networkPolicy: cilium\n", "");
    assert_eq!(field_of(&yaml), "networkPolicies");
    let err = load(&yaml).expect_err("no engine").to_string();
    assert!(
        err.contains("networkPolicy: cilium"),
        "suggests the engine: {err}"
    );
}

#[test]
fn unknown_fields_fail_with_line_and_column() {
    let yaml = three_tier_with(
        "      podSelector: { matchLabels: { app: db } }",
        "      podSelector: { matchLabel: { app: db } }",
    );
    match parse(&yaml) {
        Err(PlanError::Syntax {
            message,
            line,
            column,
        }) => {
            assert!(message.contains("matchLabel"), "{message}");
            assert!(line.is_some() && column.is_some(), "{message}");
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    let sctp = three_tier_with(
        "{ protocol: TCP, port: 5432 }",
        "{ protocol: SCTP, port: 5432 }",
    );
    assert!(matches!(parse(&sctp), Err(PlanError::Syntax { .. })));
    let engine = three_tier_with("networkPolicy: cilium", "networkPolicy: antrea");
    assert!(matches!(parse(&engine), Err(PlanError::Syntax { .. })));
}

#[test]
fn selectors_are_checked() {
    let no_values = three_tier_with(
        "podSelector: { matchLabels: { app: db } }",
        "podSelector: { matchExpressions: [{ key: app, operator: In }] }",
    );
    assert_eq!(
        field_of(&no_values),
        "networkPolicies[0].spec.podSelector.matchExpressions[0].values"
    );
    let values = three_tier_with(
        "podSelector: { matchLabels: { app: db } }",
        "podSelector: { matchExpressions: [{ key: app, operator: Exists, values: [db] }] }",
    );
    assert_eq!(
        field_of(&values),
        "networkPolicies[0].spec.podSelector.matchExpressions[0].values"
    );
    let bad_label = three_tier_with("{ app: client }", "{ app: -client }");
    assert_eq!(field_of(&bad_label), "podTemplates[3].labels.app");
    let bad_namespace = three_tier_with(
        "{ namespace: shop, labels: { app: web",
        "{ namespace: Shop, labels: { app: web",
    );
    assert_eq!(field_of(&bad_namespace), "podTemplates[0].namespace");
}

#[test]
fn templates_names_and_namespaces_are_checked() {
    let too_many = three_tier_with("podsPerNode: 4", "podsPerNode: 3");
    assert_eq!(field_of(&too_many), "podTemplates");
    let twice = three_tier_with("name: api-from-web", "name: db-from-api");
    assert_eq!(field_of(&twice), "networkPolicies[1].metadata.name");
    // The same name in another namespace is another policy.
    let other_namespace = three_tier_with(
        "name: api-from-web, namespace: shop",
        "name: db-from-api, namespace: default",
    );
    assert!(load(&other_namespace).is_ok());
    let wrong_name_label = three_tier_with(
        "{ name: shop, labels: { team: shop } }",
        "{ name: shop, labels: { kubernetes.io/metadata.name: other } }",
    );
    assert_eq!(field_of(&wrong_name_label), "namespaces[0].labels");
    let kind = three_tier_with(
        "  - metadata: { name: db-from-api",
        "  - kind: Service\n    metadata: { name: db-from-api",
    );
    assert_eq!(field_of(&kind), "networkPolicies[0].kind");
    let ignored_rules = three_tier_with(
        "      policyTypes: [Ingress]\n",
        "      policyTypes: [Egress]\n",
    );
    assert_eq!(field_of(&ignored_rules), "networkPolicies[0].spec.ingress");
}

#[test]
fn label_selector_semantics() {
    let pod = labels(&[("app", "web"), ("tier", "frontend")]);
    let selector = |match_labels: &[(&str, &str)], requirements: Vec<Requirement>| LabelSelector {
        match_labels: labels(match_labels),
        requirements,
    };
    let requirement = |key: &str, operator, values: &[&str]| Requirement {
        key: key.into(),
        operator,
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    };
    assert!(LabelSelector::default().matches(&pod), "empty selects all");
    assert!(LabelSelector::default().matches(&Labels::new()));
    assert!(selector(&[("app", "web")], vec![]).matches(&pod));
    assert!(!selector(&[("app", "web"), ("tier", "x")], vec![]).matches(&pod));
    use SelectorOperator::*;
    assert!(selector(&[], vec![requirement("app", In, &["api", "web"])]).matches(&pod));
    assert!(!selector(&[], vec![requirement("app", In, &["api"])]).matches(&pod));
    assert!(!selector(&[], vec![requirement("app", NotIn, &["web"])]).matches(&pod));
    assert!(
        selector(&[], vec![requirement("zone", NotIn, &["a"])]).matches(&pod),
        "NotIn matches a pod without the key"
    );
    assert!(selector(&[], vec![requirement("tier", Exists, &[])]).matches(&pod));
    assert!(!selector(&[], vec![requirement("tier", DoesNotExist, &[])]).matches(&pod));
    // matchLabels and expressions are ANDed.
    assert!(!selector(
        &[("app", "web")],
        vec![requirement("tier", DoesNotExist, &[])]
    )
    .matches(&pod));
    assert_eq!(
        selector(
            &[("app", "web")],
            vec![requirement("tier", In, &["a", "b"])]
        )
        .to_string(),
        "app=web,tier in (a,b)"
    );
}
