//! The policy part of `aksnet plan`: the engine, what each pod slot is, and each policy
//! in one line per direction.

use std::fmt::Write;

use crate::model::policy::{
    NamespaceScope, NetworkPolicy, Peer, PolicyModel, PolicyRule, PolicyType,
};
use crate::table::Table;

/// Empty when the cluster has no engine and no pod templates.
pub fn render(model: &PolicyModel) -> String {
    let mut out = String::new();
    if !model.enforced() && model.pod_templates.is_empty() {
        return out;
    }
    // Writing to a String cannot fail.
    let _ = write_policy(&mut out, model);
    out
}

fn write_policy(out: &mut String, model: &PolicyModel) -> std::fmt::Result {
    if !model.pod_templates.is_empty() {
        let mut slots = Table::new(&[">SLOT", "NAMESPACE", "LABELS"]);
        for (slot, identity) in model.pod_templates.iter().enumerate() {
            let labels: Vec<String> = identity
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            slots.row(vec![
                slot.to_string(),
                identity.namespace.clone(),
                labels.join(","),
            ]);
        }
        writeln!(out, "POD TEMPLATES (slot i of every node)\n{slots}")?;
    }
    writeln!(out, "NETWORK POLICY ENGINE {}", model.engine)?;
    if model.policies.is_empty() {
        return Ok(());
    }
    let mut policies = Table::new(&["POLICY", "PODS", "DIRECTION", "ALLOWS"]);
    for policy in &model.policies {
        for direction in [PolicyType::Ingress, PolicyType::Egress] {
            if let Some(rules) = policy.rules(direction) {
                policies.row(vec![
                    policy.qualified_name(),
                    policy.pod_selector.to_string(),
                    format!("{direction:?}"),
                    describe_rules(policy, rules),
                ]);
            }
        }
    }
    writeln!(out, "{policies}")
}

/// `nothing (default deny)`, or the rules separated by `; `.
fn describe_rules(policy: &NetworkPolicy, rules: &[PolicyRule]) -> String {
    if rules.is_empty() {
        return "nothing (default deny)".into();
    }
    rules
        .iter()
        .map(|rule| {
            let peers = if rule.peers.is_empty() {
                "anyone".to_owned()
            } else {
                rule.peers
                    .iter()
                    .map(|peer| describe_peer(policy, peer))
                    .collect::<Vec<_>>()
                    .join(" or ")
            };
            let ports = if rule.ports.is_empty() {
                "any port".to_owned()
            } else {
                rule.ports
                    .iter()
                    .map(|p| match (p.first, p.last) {
                        (0, u16::MAX) => format!("{} any", p.protocol),
                        (first, last) if first == last => format!("{} {first}", p.protocol),
                        (first, last) => format!("{} {first}-{last}", p.protocol),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!("{peers} on {ports}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn describe_peer(policy: &NetworkPolicy, peer: &Peer) -> String {
    match peer {
        Peer::IpBlock { cidr, except } if except.is_empty() => cidr.to_string(),
        Peer::IpBlock { cidr, except } => {
            let except: Vec<String> = except.iter().map(ToString::to_string).collect();
            format!("{cidr} except {}", except.join(","))
        }
        Peer::Pods { pods, namespaces } => match namespaces {
            NamespaceScope::Own(own) if *own == policy.namespace => format!("pods {pods}"),
            NamespaceScope::Own(own) => format!("pods {pods} in {own}"),
            NamespaceScope::Selected(selector) => {
                format!("pods {pods} in namespaces {selector}")
            }
        },
    }
}
