//! Packets traced through the rendered rules (as kube-proxy's packet-flow tests do), and
//! the outcome compared with the policy evaluator for every pair of the three-tier app.

use std::net::Ipv4Addr;

use super::*;
use crate::cidr::Ipv4Cidr;
use crate::datapath::iptables::{proxy_options, render_node_for};
use crate::model::load;
use crate::plan::plan;
use crate::policy::testing::{flows, three_tier_with_except_and_end_port, THREE_TIER};
use crate::policy::{evaluate, PolicyEndpoint, PolicyFlow};

fn iptables_plan(yaml: &str) -> Plan {
    let yaml = yaml
        .replacen("datapath: ebpf", "datapath: iptables", 1)
        .replacen("networkPolicy: cilium", "networkPolicy: azure", 1);
    plan(&load(&yaml).expect("valid")).expect("plan")
}

#[derive(Clone, Copy)]
struct Packet {
    source: Ipv4Addr,
    destination: Ipv4Addr,
    protocol: Protocol,
    port: u16,
}

#[derive(Debug, PartialEq, Eq)]
enum Fate {
    Accept,
    Drop(String),
}

/// Splits a rule spec into words, keeping a quoted comment whole.
fn words(spec: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = spec.trim();
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').expect("closed quote");
            out.push(quoted[..end].to_owned());
            rest = quoted[end + 1..].trim_start();
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            out.push(rest[..end].to_owned());
            rest = rest[end..].trim_start();
        }
    }
    out
}

fn address_matches(value: &str, address: Ipv4Addr) -> bool {
    let cidr: Ipv4Cidr = value.parse().expect("a CIDR in the rule");
    cidr.contains(address)
}

/// Walks `chain` for a NEW packet: returns `Some(fate)` on ACCEPT/DROP, `None` when the
/// chain ends or RETURNs.
fn walk(filter: &Table, chain: &str, packet: Packet, mark: &mut u32, depth: usize) -> Option<Fate> {
    assert!(depth < 16, "chain loop at {chain}");
    for rule in filter.rules_of(chain) {
        let w = words(&rule.spec);
        let mut matched = true;
        let mut target = None;
        let mut comment = String::new();
        let mut i = 0;
        while i < w.len() {
            match w[i].as_str() {
                "-s" => matched &= address_matches(&w[i + 1], packet.source),
                "-d" => matched &= address_matches(&w[i + 1], packet.destination),
                "-p" => {
                    let proto = if w[i + 1] == "tcp" {
                        Protocol::Tcp
                    } else {
                        Protocol::Udp
                    };
                    matched &= proto == packet.protocol;
                }
                "--dport" => {
                    let (first, last) = match w[i + 1].split_once(':') {
                        Some((a, b)) => (
                            a.parse::<u16>().expect("port"),
                            b.parse::<u16>().expect("port"),
                        ),
                        None => {
                            let p = w[i + 1].parse::<u16>().expect("port");
                            (p, p)
                        }
                    };
                    matched &= (first..=last).contains(&packet.port);
                }
                "--ctstate" => matched = false, // a new connection is never ESTABLISHED
                "--mark" => {
                    let (value, mask) = w[i + 1].split_once('/').expect("value/mask");
                    let value =
                        u32::from_str_radix(value.trim_start_matches("0x"), 16).expect("hex");
                    let mask = u32::from_str_radix(mask.trim_start_matches("0x"), 16).expect("hex");
                    matched &= *mark & mask == value;
                }
                "--comment" => comment = w[i + 1].clone(),
                "-j" => target = Some(w[i + 1].clone()),
                "--set-xmark" => {
                    let (value, mask) = w[i + 1].split_once('/').expect("value/mask");
                    let value =
                        u32::from_str_radix(value.trim_start_matches("0x"), 16).expect("hex");
                    let mask = u32::from_str_radix(mask.trim_start_matches("0x"), 16).expect("hex");
                    if matched {
                        *mark = (*mark & !mask) ^ value;
                    }
                    i += 2;
                    continue;
                }
                "-m" => {}
                _ => {
                    i += 1;
                    continue;
                }
            }
            i += 2;
        }
        if !matched {
            continue;
        }
        match target.as_deref() {
            Some("ACCEPT") => return Some(Fate::Accept),
            Some("DROP") => return Some(Fate::Drop(comment)),
            Some("RETURN") => return None,
            Some("MARK") | None => {}
            Some(chain) => {
                if let Some(fate) = walk(filter, chain, packet, mark, depth + 1) {
                    return Some(fate);
                }
            }
        }
    }
    None
}

/// The packet through FORWARD of `node`'s rules (the default policy accepts).
fn forward(plan: &Plan, node: &str, packet: Packet) -> Fate {
    let ruleset = render_node_for(plan, node, proxy_options(plan, false));
    let filter = ruleset.table("filter").expect("a filter table");
    walk(filter, "FORWARD", packet, &mut 0, 0).unwrap_or(Fate::Accept)
}

/// Where a packet meets policy: the source pod's node, then the destination pod's.
fn trace(plan: &Plan, packet: Packet) -> Fate {
    let node_of = |a: Ipv4Addr| plan.pods().find(|p| p.ip == a).map(|p| p.node.clone());
    let mut nodes: Vec<String> = [node_of(packet.source), node_of(packet.destination)]
        .into_iter()
        .flatten()
        .collect();
    nodes.dedup();
    for node in nodes {
        if let fate @ Fate::Drop(_) = forward(plan, &node, packet) {
            return fate;
        }
    }
    Fate::Accept
}

#[test]
fn rendered_rules_agree_with_the_evaluator_on_every_pair() {
    let plan = iptables_plan(THREE_TIER);
    let mut addresses: Vec<Ipv4Addr> = plan.pods().map(|p| p.ip).collect();
    addresses.extend([
        plan.external_hosts.internet,
        plan.external_hosts.on_prem.host,
    ]);
    let ports = [
        (Protocol::Tcp, 5432),
        (Protocol::Tcp, 8080),
        (Protocol::Tcp, 17001),
        (Protocol::Udp, 5432),
    ];
    let (mut allowed, mut denied) = (0, 0);
    for (source, destination, protocol, port) in flows(&addresses, &ports) {
        let packet = Packet {
            source,
            destination,
            protocol,
            port,
        };
        let verdict = evaluate(
            &plan.policy,
            &PolicyFlow {
                source: PolicyEndpoint::in_plan(&plan, source),
                destination: PolicyEndpoint::in_plan(&plan, destination),
                protocol,
                port,
            },
        );
        let fate = trace(&plan, packet);
        assert_eq!(
            verdict.is_allowed(),
            fate == Fate::Accept,
            "{source} -> {destination} {protocol}/{port}: evaluator {verdict:?}, rules {fate:?}"
        );
        if let (crate::policy::PolicyVerdict::Denied(denial), Fate::Drop(comment)) =
            (&verdict, &fate)
        {
            for name in &denial.isolated_by {
                assert!(comment.contains(name.as_str()), "{comment} names {name}");
            }
        }
        if fate == Fate::Accept {
            allowed += 1
        } else {
            denied += 1
        }
    }
    assert!(
        allowed > 20 && denied > 20,
        "both outcomes exercised: {allowed} allowed, {denied} denied"
    );
}

#[test]
fn except_and_end_port_render_as_matches() {
    let yaml = three_tier_with_except_and_end_port();
    let plan = iptables_plan(&yaml);
    let ruleset = render_node_for(&plan, "nodepool1-0", proxy_options(&plan, false));
    let payload = ruleset.to_restore();
    assert!(
        payload.contains("-s 10.224.0.36/30 -m comment --comment \"shop/db-from-api\" -j RETURN"),
        "{payload}"
    );
    assert!(
        payload.contains("-s 10.224.0.0/24 -p tcp -m tcp --dport 5432:5434"),
        "{payload}"
    );
    let pod = |node: usize, slot: usize| plan.nodes[node].pods[slot].ip;
    let packet = |source, port| Packet {
        source,
        destination: pod(0, 2),
        protocol: Protocol::Tcp,
        port,
    };
    assert_eq!(
        forward(&plan, "nodepool1-0", packet(pod(0, 3), 5434)),
        Fate::Accept
    );
    assert!(matches!(
        forward(&plan, "nodepool1-0", packet(pod(0, 3), 5435)),
        Fate::Drop(_)
    ));
    assert!(
        matches!(
            forward(&plan, "nodepool1-0", packet(pod(1, 1), 5432)),
            Fate::Drop(_)
        ),
        "excepted"
    );
}

#[test]
fn policy_comes_first_and_only_with_an_engine() {
    let tiers = iptables_plan(THREE_TIER);
    let ruleset = render_node_for(&tiers, "nodepool1-0", proxy_options(&tiers, false));
    let filter = ruleset.table("filter").expect("filter");
    let first = filter.rules_of("FORWARD").next().expect("a FORWARD rule");
    assert!(
        first.spec.ends_with(POLICY_CHAIN),
        "policy before kube-proxy: {}",
        first.spec
    );
    assert!(filter
        .rules_of("INPUT")
        .any(|r| r.spec.ends_with(POLICY_CHAIN)));
    // Node 0 holds ingress chains only for its own db and api pods.
    let ingress_hooks: Vec<_> = filter.rules_of("AKSNET-NETPOL-INGRESS").collect();
    assert_eq!(ingress_hooks.len(), 2, "{ingress_hooks:?}");

    let plain =
        plan(&load(include_str!("../../../../../examples/azure-iptables.yaml")).expect("valid"))
            .expect("plan");
    let ruleset = render_node_for(&plain, "nodepool1-0", proxy_options(&plain, false));
    assert!(!ruleset.to_restore().contains("NETPOL"));
}
