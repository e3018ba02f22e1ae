//! `inspect nsg`: the NSG rules each node's XDP program enforces, in priority order.

use anyhow::{Context, Result};
use serde::Serialize;

use aks_ebpf_common::nsg::{NSG_ALLOW, NSG_DENY};
use aks_ebpf_common::{addr, NsgRule, NSG_MAP};
use aya::maps::{Array, MapData};

use super::{ip, protocol_name, select_nodes, NodePins};
use crate::state::ClusterState;

/// One rule; `order` is its position (0 is evaluated first; the first match decides).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NsgRow {
    pub node: String,
    pub order: u32,
    /// `allow` or `deny`.
    pub action: String,
    pub protocol: String,
    /// `a.b.c.d/len`, or `*` for any.
    pub source: String,
    pub destination: String,
    /// `lo-hi`, one port, or `*`.
    pub ports: String,
}

/// The rules in force on `node` (every node when `None`): the first `nsg_rules` slots
/// of `NSG`, as `CONFIG` says; slots beyond are unused.
pub fn nsg_rules(state: &ClusterState, node: Option<&str>) -> Result<Vec<NsgRow>> {
    let mut rows = Vec::new();
    for layout in select_nodes(state, node)? {
        let pins = NodePins::open(state, layout)?;
        let in_force = pins.config()?.nsg_rules;
        let map = pins.map(NSG_MAP)?;
        let rules: Array<&MapData, NsgRule> = Array::try_from(&map)?;
        for order in 0..in_force.min(rules.len()) {
            let rule = rules
                .get(&order, 0)
                .with_context(|| format!("reading {NSG_MAP}[{order}] of node {}", layout.name))?;
            rows.push(row(&layout.name, order, &rule));
        }
    }
    Ok(rows)
}

fn row(node: &str, order: u32, rule: &NsgRule) -> NsgRow {
    NsgRow {
        node: node.to_owned(),
        order,
        action: match rule.action {
            NSG_ALLOW => "allow".to_owned(),
            NSG_DENY => "deny".to_owned(),
            other => format!("action {other}"),
        },
        protocol: protocol_name(rule.protocol),
        source: prefix(rule.src_addr, rule.src_mask),
        destination: prefix(rule.dst_addr, rule.dst_mask),
        ports: match (rule.port_lo, rule.port_hi) {
            (0, u16::MAX) => "*".to_owned(),
            (lo, hi) if lo == hi => lo.to_string(),
            (lo, hi) => format!("{lo}-{hi}"),
        },
    }
}

/// An address and mask in map form as `a.b.c.d/len` (`*` for the empty mask).
fn prefix(address: u32, mask: u32) -> String {
    if mask == 0 {
        return "*".to_owned();
    }
    // Masks come from prefix lengths, so the ones are contiguous from the top.
    let len = u32::from_be_bytes(addr::octets(mask)).leading_ones();
    format!("{}/{len}", ip(address))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aks_ebpf_common::addr::{ipv4, netmask};

    #[test]
    fn a_deny_rule_reads_back_in_azure_terms() {
        let rule = NsgRule {
            dst_addr: ipv4([10, 224, 0, 0]),
            dst_mask: netmask(24),
            port_lo: 17002,
            port_hi: 17002,
            protocol: 6,
            action: NSG_DENY,
            ..Default::default()
        };
        let row = row("n0", 0, &rule);
        assert_eq!(row.action, "deny");
        assert_eq!(row.protocol, "tcp");
        assert_eq!(row.source, "*");
        assert_eq!(row.destination, "10.224.0.0/24");
        assert_eq!(row.ports, "17002");
    }
}
