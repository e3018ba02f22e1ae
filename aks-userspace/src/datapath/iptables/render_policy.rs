//! Network policy on the iptables datapath, as Azure NPM and Calico's iptables mode
//! enforce it: in the `filter` table of each node, for that node's pods only (egress
//! where the source pod lives, ingress where the destination pod lives).
//!
//! ```text
//! FORWARD, INPUT ─→ AKSNET-NETPOL: ESTABLISHED,RELATED → ACCEPT (replies, as conntrack
//!                   │                tracks every allowed connection)
//!                   ├→ AKSNET-NETPOL-EGRESS:  -s <local pod> → NP-POD-E-<pod>
//!                   └→ AKSNET-NETPOL-INGRESS: -d <local pod> → NP-POD-I-<pod>
//! NP-POD-?-<pod>:   clear the allow mark; for each policy isolating the pod:
//!                   → NP-?-<policy>, RETURN if it set the mark; finally DROP, commented
//!                   with the policies whose default deny it is (its counter counts them)
//! NP-?-<policy>:    one rule per (peer address, port range), setting the allow mark
//! NP-B-<block>:     an ipBlock with `except`: RETURN for each except, then mark
//! ```
//!
//! Selectors become the addresses of the pods they select, one rule each, where NPM
//! keeps them in ipsets (`ipset` is not installed on these machines; the rules are the
//! same matches, linear instead of hashed, which `bench` can show). Chains are named
//! from a hash of the policy or pod, as kube-proxy names its chains.

use super::chain_name::short_hash;
use super::ruleset::{Ruleset, Table};
use crate::model::policy::{NetworkPolicy, Peer, PolicyType, PortRange};
use crate::model::Protocol;
use crate::plan::Plan;
use crate::policy::{peer_matches, PolicyEndpoint};

/// Hooked first in FORWARD and INPUT.
pub const POLICY_CHAIN: &str = "AKSNET-NETPOL";
const EGRESS_CHAIN: &str = "AKSNET-NETPOL-EGRESS";
const INGRESS_CHAIN: &str = "AKSNET-NETPOL-INGRESS";
/// The bit a policy chain sets when one of its rules allows the packet; clear of
/// kube-proxy's 0x4000 (masquerade) and 0x8000 (drop).
pub const ALLOW_MARK: &str = "0x20000/0x20000";

/// Adds the rules enforcing `plan`'s policies for the pods of `node`. Nothing when the
/// cluster has no engine or no policies.
pub fn add_policies(ruleset: &mut Ruleset, plan: &Plan, node: &str) {
    let model = &plan.policy;
    if !model.enforced() || model.policies.is_empty() {
        return;
    }
    let Some(node) = plan.node(node) else { return };
    let filter = ruleset.table_mut("filter");
    for chain in [POLICY_CHAIN, EGRESS_CHAIN, INGRESS_CHAIN] {
        filter.chain(chain);
    }
    for hook in ["FORWARD", "INPUT"] {
        filter.rule(
            hook,
            format!("-m comment --comment \"aksnet network policy\" -j {POLICY_CHAIN}"),
        );
    }
    filter.rule(
        POLICY_CHAIN,
        "-m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"replies of allowed connections\" -j ACCEPT",
    );
    filter.rule(POLICY_CHAIN, format!("-j {EGRESS_CHAIN}"));
    filter.rule(POLICY_CHAIN, format!("-j {INGRESS_CHAIN}"));

    let mut rendered: Vec<String> = Vec::new();
    for pod in &node.pods {
        for direction in [PolicyType::Egress, PolicyType::Ingress] {
            let isolating: Vec<&NetworkPolicy> =
                crate::policy::isolating(model, &pod.namespace, &pod.labels, direction).collect();
            if isolating.is_empty() {
                continue;
            }
            let (hook, flag) = match direction {
                PolicyType::Egress => (EGRESS_CHAIN, "-s"),
                PolicyType::Ingress => (INGRESS_CHAIN, "-d"),
            };
            let pod_chain = format!("NP-POD-{}-{}", letter(direction), short_hash(&pod.name));
            filter.chain(&pod_chain);
            filter.rule(
                hook,
                format!(
                    "{flag} {}/32 -m comment --comment \"{}\" -j {pod_chain}",
                    pod.ip, pod.name
                ),
            );
            filter.rule(&pod_chain, "-j MARK --set-xmark 0x0/0x20000");
            for policy in &isolating {
                let chain = policy_chain(policy, direction);
                if !rendered.contains(&chain) {
                    add_policy_chain(filter, plan, policy, direction, &chain);
                    rendered.push(chain.clone());
                }
                filter.rule(&pod_chain, format!("-j {chain}"));
                filter.rule(&pod_chain, format!("-m mark --mark {ALLOW_MARK} -j RETURN"));
            }
            let names: Vec<String> = isolating.iter().map(|p| p.qualified_name()).collect();
            filter.rule(
                &pod_chain,
                format!(
                    "-m comment --comment \"default deny ({}) by {}\" -j DROP",
                    direction_name(direction),
                    names.join(",")
                ),
            );
        }
    }
}

fn letter(direction: PolicyType) -> char {
    match direction {
        PolicyType::Egress => 'E',
        PolicyType::Ingress => 'I',
    }
}

fn direction_name(direction: PolicyType) -> &'static str {
    match direction {
        PolicyType::Egress => "egress",
        PolicyType::Ingress => "ingress",
    }
}

/// `NP-E-<hash>` / `NP-I-<hash>` of `namespace/name`.
pub fn policy_chain(policy: &NetworkPolicy, direction: PolicyType) -> String {
    format!(
        "NP-{}-{}",
        letter(direction),
        short_hash(&policy.qualified_name())
    )
}

/// A policy's rules for one direction: every (peer, port) pair marks.
fn add_policy_chain(
    filter: &mut Table,
    plan: &Plan,
    policy: &NetworkPolicy,
    direction: PolicyType,
    chain: &str,
) {
    filter.chain(chain);
    let flag = match direction {
        PolicyType::Egress => "-d",
        PolicyType::Ingress => "-s",
    };
    let comment = format!("-m comment --comment \"{}\"", policy.qualified_name());
    let mark = format!("-j MARK --set-xmark {ALLOW_MARK}");
    for (r, rule) in policy
        .rules(direction)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let ports: Vec<String> = if rule.ports.is_empty() {
            vec![String::new()]
        } else {
            rule.ports.iter().map(port_match).collect()
        };
        if rule.peers.is_empty() {
            for port in &ports {
                filter.rule(chain, join(&[port, &comment, &mark]));
            }
            continue;
        }
        for (p, peer) in rule.peers.iter().enumerate() {
            match peer {
                Peer::IpBlock { cidr, except } if except.is_empty() => {
                    for port in &ports {
                        filter.rule(
                            chain,
                            join(&[&format!("{flag} {cidr}"), port, &comment, &mark]),
                        );
                    }
                }
                Peer::IpBlock { cidr, except } => {
                    let block = format!(
                        "NP-B-{}",
                        short_hash(&format!(
                            "{}:{direction:?}:{r}:{p}",
                            policy.qualified_name()
                        ))
                    );
                    filter.chain(&block);
                    for excepted in except {
                        filter.rule(&block, format!("{flag} {excepted} {comment} -j RETURN"));
                    }
                    for port in &ports {
                        filter.rule(
                            &block,
                            join(&[&format!("{flag} {cidr}"), port, &comment, &mark]),
                        );
                    }
                    filter.rule(chain, format!("{comment} -j {block}"));
                }
                Peer::Pods { .. } => {
                    // The selected pods' addresses: what NPM's ipset for the selector holds.
                    for pod in plan.pods() {
                        let endpoint = PolicyEndpoint::Pod {
                            address: pod.ip,
                            namespace: &pod.namespace,
                            labels: &pod.labels,
                            node: &pod.node,
                        };
                        if peer_matches(&plan.policy, peer, &endpoint) {
                            for port in &ports {
                                filter.rule(
                                    chain,
                                    join(&[
                                        &format!("{flag} {}/32", pod.ip),
                                        port,
                                        &comment,
                                        &mark,
                                    ]),
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `-p tcp -m tcp --dport 80`, a range as `first:last`, every port as `-p tcp`.
fn port_match(range: &PortRange) -> String {
    let protocol = match range.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    match (range.first, range.last) {
        (0, u16::MAX) => format!("-p {protocol}"),
        (first, last) if first == last => format!("-p {protocol} -m {protocol} --dport {first}"),
        (first, last) => format!("-p {protocol} -m {protocol} --dport {first}:{last}"),
    }
}

fn join(parts: &[&str]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests;
