//! `inspect firewall`: the userDefinedRouting firewall's log, read from its namespace:
//! each of its rules with the packets it decided (`iptables-save -c`: NAT rules, egress
//! SNAT, sessions allowed, packets of unknown sessions dropped, the default deny), and
//! the flows it holds (its connection table, `conntrack`: every session it allowed, with
//! its translation, until the kernel forgets it).

use anyhow::Result;
use serde::Serialize;

use super::conntrack_tool;
use super::flow::Flow;
use crate::datapath::iptables;
use crate::fabric::firewall::COMMENT_PREFIX;
use crate::state::ClusterState;
use crate::topology::layout;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FirewallRuleRow {
    /// `nat` or `filter`.
    pub table: String,
    /// What the rule does, from its comment.
    pub rule: String,
    /// `DROP`, `ACCEPT`, `DNAT`, `SNAT`.
    pub action: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FirewallLog {
    pub namespace: String,
    pub rules: Vec<FirewallRuleRow>,
    pub flows: Vec<Flow>,
}

/// The firewall of `state`, or `None` when its outbound type has none.
pub fn firewall(state: &ClusterState) -> Result<Option<FirewallLog>> {
    if state.outbound.firewall.is_none() {
        return Ok(None);
    }
    let namespace = layout::firewall_namespace_name(&layout::prefix(&state.name));
    let mut rules = Vec::new();
    for table in ["nat", "filter"] {
        let saved = iptables::save_with_counters(&namespace, table)?;
        rules.extend(saved.lines().filter_map(|l| parse_rule(table, l)));
    }
    let flows = conntrack_tool::read(&namespace, "firewall")?;
    Ok(Some(FirewallLog {
        namespace,
        rules,
        flows,
    }))
}

/// One commented rule of `iptables-save -c`.
fn parse_rule(table: &str, line: &str) -> Option<FirewallRuleRow> {
    let (counters, spec) = line.strip_prefix('[')?.split_once("] ")?;
    let (packets, bytes) = counters.split_once(':')?;
    let (_, comment) = spec.split_once(&format!("--comment \"{COMMENT_PREFIX}"))?;
    let (rule, after) = comment.split_once('"')?;
    let action = after.split_once("-j ")?.1.split_whitespace().next()?;
    Some(FirewallRuleRow {
        table: table.to_owned(),
        rule: rule.to_owned(),
        action: action.to_owned(),
        packets: packets.parse().ok()?,
        bytes: bytes.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commented_rules_are_read_with_their_counters() {
        let line = "[14:840] -A FORWARD -m conntrack --ctstate INVALID -m comment --comment \"aksnet firewall: no session for this packet (asymmetric route)\" -j DROP";
        let row = parse_rule("filter", line).expect("a rule");
        assert_eq!(row.rule, "no session for this packet (asymmetric route)");
        assert_eq!(
            (row.action.as_str(), row.packets, row.bytes),
            ("DROP", 14, 840)
        );
        assert!(parse_rule(
            "filter",
            "[32:1713] -A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
        )
        .is_none());
    }
}
