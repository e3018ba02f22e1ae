//! The maps computed from the three-tier app agree with the evaluator: for every pair of
//! addresses, looking up the peer's identity (longest prefix) and the endpoint's keys as
//! the datapath does gives the evaluator's verdict.

use super::*;
use crate::model::load;
use crate::plan::plan;
use crate::policy::testing::{flows, THREE_TIER};
use crate::policy::{evaluate, PolicyFlow};
use aks_ebpf_common::policy::lookup_keys;

fn three_tier(yaml: &str) -> Plan {
    plan(&load(yaml).expect("valid")).expect("plan")
}

/// The identity of `address`: the longest prefix holding it, as `IPCACHE` answers.
fn identity_of(identities: &Identities, address: Ipv4Addr) -> u32 {
    identities
        .ipcache
        .iter()
        .filter(|(prefix, _)| prefix.contains(address))
        .max_by_key(|(prefix, _)| prefix.prefix())
        .map(|(_, id)| *id)
        .expect("0.0.0.0/0 holds everything")
}

/// What the datapath decides for a new connection, with the maps of every node.
fn datapath_allows(
    plan: &Plan,
    identities: &Identities,
    source: Ipv4Addr,
    destination: Ipv4Addr,
    protocol: u8,
    port: u16,
) -> bool {
    let policies: Vec<NodePolicy> = plan
        .nodes
        .iter()
        .map(|n| node_policy(plan, identities, &n.name).expect("node policy"))
        .collect();
    let side = |endpoint: Ipv4Addr, peer: Ipv4Addr, flag: u32, direction: u8| -> bool {
        for node in &policies {
            if let Some((_, flags)) = node.endpoint_flags.iter().find(|(ip, _)| *ip == endpoint) {
                if flags & flag == 0 {
                    return true;
                }
                let keys = lookup_keys(
                    map_addr(endpoint),
                    identity_of(identities, peer),
                    port,
                    protocol,
                    direction,
                );
                return keys.iter().any(|k| node.keys.binary_search(k).is_ok());
            }
        }
        true // not a pod
    };
    side(
        source,
        destination,
        ENDPOINT_EGRESS_ISOLATED,
        DIRECTION_EGRESS,
    ) && side(
        destination,
        source,
        ENDPOINT_INGRESS_ISOLATED,
        DIRECTION_INGRESS,
    )
}

fn agree_on_every_pair(plan: &Plan) -> (usize, usize) {
    let identities = identities(plan).expect("identities");
    let mut addresses: Vec<Ipv4Addr> = plan.pods().map(|p| p.ip).collect();
    addresses.extend([
        plan.external_hosts.internet,
        plan.external_hosts.on_prem.host,
        Ipv4Addr::new(10, 1, 2, 3),
    ]);
    let ports = [
        (Protocol::Tcp, 5432),
        (Protocol::Tcp, 5434),
        (Protocol::Tcp, 8080),
        (Protocol::Udp, 5432),
    ];
    let (mut allowed, mut denied) = (0, 0);
    for (source, destination, protocol, port) in flows(&addresses, &ports) {
        let expected = evaluate(
            &plan.policy,
            &PolicyFlow {
                source: PolicyEndpoint::in_plan(plan, source),
                destination: PolicyEndpoint::in_plan(plan, destination),
                protocol,
                port,
            },
        )
        .is_allowed();
        let number = if protocol == Protocol::Tcp { 6 } else { 17 };
        let got = datapath_allows(plan, &identities, source, destination, number, port);
        assert_eq!(got, expected, "{source} -> {destination} {protocol}/{port}");
        if got {
            allowed += 1
        } else {
            denied += 1
        }
    }
    (allowed, denied)
}

#[test]
fn maps_agree_with_the_evaluator_on_the_three_tier_app() {
    let (allowed, denied) = agree_on_every_pair(&three_tier(THREE_TIER));
    assert!(
        allowed > 20 && denied > 20,
        "{allowed} allowed, {denied} denied"
    );
}

#[test]
fn maps_agree_with_except_end_port_and_namespace_selectors() {
    let yaml = THREE_TIER
        .replacen("{ protocol: TCP, port: 5432 }", "{ port: 5432, endPort: 5434 }", 1)
        .replacen(
            "from: [{ podSelector: { matchLabels: { app: api } } }]",
            "from: [{ ipBlock: { cidr: 10.224.0.0/24, except: [10.224.0.36/30] } }, { namespaceSelector: { matchLabels: { kubernetes.io/metadata.name: default } } }]",
            1,
        );
    let (allowed, denied) = agree_on_every_pair(&three_tier(&yaml));
    assert!(
        allowed > 20 && denied > 20,
        "{allowed} allowed, {denied} denied"
    );
}

#[test]
fn identities_tell_apart_only_what_rules_can() {
    let plan = three_tier(THREE_TIER);
    let identities = identities(&plan).expect("identities");
    let pod = |node: usize, slot: usize| plan.nodes[node].pods[slot].ip;
    // The two db pods share an identity (same namespace and labels), web and db do not.
    assert_eq!(
        identity_of(&identities, pod(0, 2)),
        identity_of(&identities, pod(1, 2))
    );
    assert_ne!(
        identity_of(&identities, pod(0, 0)),
        identity_of(&identities, pod(0, 2))
    );
    // The internet is inside api's ipBlock, on-prem in its except: two identities.
    let internet = identity_of(&identities, plan.external_hosts.internet);
    let on_prem = identity_of(&identities, plan.external_hosts.on_prem.host);
    assert_ne!(internet, on_prem);
    assert!(internet >= FIRST_IDENTITY && on_prem >= FIRST_IDENTITY);
    // Ranges wider than the key budget are refused with the policy named.
    let wide = PortRange {
        protocol: Protocol::Tcp,
        first: 1000,
        last: 9000,
    };
    let err = port_keys(&[wide], "shop/x").expect_err("too wide");
    assert!(err.to_string().contains("shop/x"), "{err}");
    assert_eq!(port_keys(&[], "p").expect("any"), vec![(0, 0)]);
}
