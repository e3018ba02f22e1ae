//! The rendered node ruleset: a golden file a reviewer can read (run with
//! `AKSNET_BLESS=1` to rewrite it after an intended change), and structural checks
//! that hold for any description.

use super::*;
use crate::plan::tests::plan_of;

/// kubenet, 2 nodes × 2 pods, a TCP service with 3 backends and a UDP one with 2.
const DESCRIPTION: &str = "\
name: golden
networkPlugin: kubenet
datapath: iptables
vnet:
  addressSpace: 10.224.0.0/12
  nodeSubnet: 10.224.0.0/24
nodePools:
  - { name: nodepool1, count: 2, osType: Linux }
podsPerNode: 2
services:
  - { name: web, clusterIP: 10.0.0.20, port: 80, targetPort: 8080, protocol: TCP, backends: 3 }
  - { name: dns, clusterIP: 10.0.0.53, port: 53, protocol: UDP, backends: 2 }
";

fn golden_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/datapath/iptables/golden")
        .join(format!("{name}.rules"))
}

/// Compares `actual` with the golden file `name`, or rewrites it under `AKSNET_BLESS=1`.
fn assert_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var("AKSNET_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("golden dir");
        std::fs::write(&path, actual).expect("writing the golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e} (AKSNET_BLESS=1 writes it)", path.display()));
    if expected != actual {
        panic!(
            "the rendered rules differ from {} (AKSNET_BLESS=1 rewrites it after an intended change):\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        );
    }
}

#[test]
fn kubenet_node_ruleset_matches_the_golden_file() {
    let plan = plan_of(DESCRIPTION);
    let payload = render_node(&plan, proxy_options(&plan, false)).to_restore();
    assert_golden("kubenet-services", &payload);
}

#[test]
fn without_br_netfilter_every_service_connection_is_masqueraded() {
    let plan = plan_of(DESCRIPTION);
    let ruleset = render_node(&plan, proxy_options(&plan, true));
    let nat = ruleset.table("nat").expect("nat");
    for service in &plan.services {
        let chain = service_chain(service);
        let first = nat.rules_of(&chain).next().expect("a first rule");
        assert!(
            !first.spec.contains("! -s") && first.spec.ends_with("-j KUBE-MARK-MASQ"),
            "{first:?}"
        );
    }
}

#[test]
fn chains_per_service_endpoints_per_backend_and_probabilities_1_over_n() {
    let plan = plan_of(DESCRIPTION);
    let ruleset = render_node(&plan, proxy_options(&plan, false));
    let nat = ruleset.table("nat").expect("a nat table");

    let to_services: Vec<&str> = nat
        .rules_of(SERVICES_CHAIN)
        .map(|r| r.spec.as_str())
        .collect();
    assert_eq!(
        to_services.len(),
        plan.services.len(),
        "one rule per service"
    );

    for service in &plan.services {
        let svc = service_chain(service);
        assert!(nat.chains.contains(&svc), "{svc} is declared");
        assert!(
            to_services
                .iter()
                .any(|r| r.contains(&format!("-d {}/32", service.cluster_ip))
                    && r.contains(&format!("--dport {}", service.port))
                    && r.ends_with(&format!("-j {svc}"))),
            "KUBE-SERVICES sends {} to {svc}",
            service.name
        );
        let jumps: Vec<&str> = nat
            .rules_of(&svc)
            .map(|r| r.spec.as_str())
            .filter(|r| r.contains("-j KUBE-SEP-"))
            .collect();
        let n = service.backends.len();
        assert_eq!(
            jumps.len(),
            n,
            "one KUBE-SEP per backend of {}",
            service.name
        );
        for (i, (jump, backend)) in jumps.iter().zip(&service.backends).enumerate() {
            let sep = endpoint_chain(service, backend);
            assert!(jump.ends_with(&format!("-j {sep}")));
            if i + 1 < n {
                let expected = format!("--probability {:.10}", 1.0 / (n - i) as f64);
                assert!(jump.contains(&expected), "{jump} lacks {expected}");
            } else {
                assert!(
                    !jump.contains("statistic"),
                    "the last backend takes the rest"
                );
            }
            let sep_rules: Vec<&str> = nat.rules_of(&sep).map(|r| r.spec.as_str()).collect();
            assert_eq!(sep_rules.len(), 2);
            assert!(sep_rules[0].starts_with(&format!("-s {}/32", backend.ip)));
            assert!(sep_rules[0].ends_with("-j KUBE-MARK-MASQ"), "hairpin first");
            assert!(sep_rules[1].ends_with(&format!(
                "DNAT --to-destination {}:{}",
                backend.ip, backend.port
            )));
        }
    }

    let masq: Vec<&str> = nat.rules_of(MASQ_CHAIN).map(|r| r.spec.as_str()).collect();
    assert_eq!(masq.len(), plan.non_masquerade_cidrs.len() + 1);
    assert!(
        masq.last().expect("rules").ends_with("-j MASQUERADE"),
        "MASQUERADE is last in ip-masq-agent's chain"
    );
    let postrouting: Vec<&str> = nat
        .rules_of("POSTROUTING")
        .map(|r| r.spec.as_str())
        .collect();
    assert!(postrouting[0].ends_with("-j KUBE-POSTROUTING"));
    assert!(postrouting[1].ends_with(&format!("-j {MASQ_CHAIN}")));
}

#[test]
fn rules_grow_with_services_as_on_a_real_node() {
    let rules = |services: usize, backends: usize| {
        let mut yaml = String::from(
            "name: grow\nnetworkPlugin: kubenet\ndatapath: iptables\nvnet:\n  addressSpace: 10.224.0.0/12\n  nodeSubnet: 10.224.0.0/24\nnodePools:\n  - { name: nodepool1, count: 2, osType: Linux }\npodsPerNode: 4\nservices:\n",
        );
        for s in 0..services {
            yaml.push_str(&format!(
                "  - {{ name: svc{s}, clusterIP: 10.0.{}.{}, port: 80, backends: {backends} }}\n",
                1 + s / 200,
                1 + s % 200
            ));
        }
        render_node(&plan_of(&yaml), proxy_options(&plan_of(&yaml), false)).rule_count()
    };
    let base = rules(1, 1);
    // Per service: 1 in KUBE-SERVICES, 1 cluster-CIDR masquerade, and per backend one
    // jump plus two rules in its KUBE-SEP chain.
    for (services, backends) in [(2, 1), (10, 3), (50, 8)] {
        assert_eq!(
            rules(services, backends) - base,
            services * (2 + 3 * backends) - (2 + 3),
            "{services} services × {backends} backends"
        );
    }
}

#[test]
fn azure_has_no_cluster_cidr_masquerade() {
    let yaml = DESCRIPTION
        .replace("networkPlugin: kubenet", "networkPlugin: azure")
        .replace("name: golden", "name: goldaz");
    let plan = plan_of(&yaml);
    let ruleset = render_node(&plan, proxy_options(&plan, false));
    let nat = ruleset.table("nat").expect("nat");
    for service in &plan.services {
        let chain = service_chain(service);
        assert!(nat
            .rules_of(&chain)
            .all(|r| !r.spec.contains("KUBE-MARK-MASQ")));
    }
}
