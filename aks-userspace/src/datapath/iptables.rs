//! The iptables datapath: what ip-masq-agent programs on an AKS node, rendered from the
//! plan and applied with one `iptables-restore` per node.

use std::fmt::Write;

use anyhow::{Context, Result};

use super::Datapath;
use crate::cidr::Ipv4Cidr;
use crate::iptables;
use crate::model;
use crate::plan::Plan;
use crate::topology::layout::Layout;

/// ip-masq-agent's chain name.
const MASQ_CHAIN: &str = "IP-MASQ-AGENT";

pub struct IptablesDatapath {
    nodes: usize,
    rules_per_node: usize,
}

/// The `nat` table payload of ip-masq-agent: traffic to a non-local destination goes to
/// `IP-MASQ-AGENT`, which returns for each non-masquerade CIDR and masquerades the rest.
pub fn render_masquerade(non_masquerade: &[Ipv4Cidr]) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "*nat");
    let _ = writeln!(out, ":{MASQ_CHAIN} - [0:0]");
    let _ = writeln!(
        out,
        "-A POSTROUTING -m comment --comment \"ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain\" -m addrtype ! --dst-type LOCAL -j {MASQ_CHAIN}"
    );
    for cidr in non_masquerade {
        let _ = writeln!(
            out,
            "-A {MASQ_CHAIN} -d {cidr} -m comment --comment \"ip-masq-agent: local traffic is not subject to MASQUERADE\" -j RETURN"
        );
    }
    let _ = writeln!(
        out,
        "-A {MASQ_CHAIN} -m comment --comment \"ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)\" -j MASQUERADE"
    );
    let _ = writeln!(out, "COMMIT");
    out
}

impl IptablesDatapath {
    pub fn install(plan: &Plan, layout: &Layout) -> Result<Self> {
        let payload = render_masquerade(&plan.non_masquerade_cidrs);
        for node in &layout.nodes {
            iptables::restore(&node.namespace, &payload)
                .with_context(|| format!("programming ip-masq-agent on node {}", node.name))?;
        }
        Ok(Self {
            nodes: layout.nodes.len(),
            rules_per_node: payload.lines().filter(|l| l.starts_with("-A")).count(),
        })
    }
}

impl Datapath for IptablesDatapath {
    fn kind(&self) -> model::Datapath {
        model::Datapath::Iptables
    }

    fn summary(&self) -> String {
        format!(
            "iptables: ip-masq-agent ({} rules) in {} nodes (kernel routing forwards)",
            self.rules_per_node, self.nodes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masquerade_returns_for_each_exception_and_masquerades_last() {
        let cidrs: Vec<Ipv4Cidr> = ["10.244.0.0/16", "10.224.0.0/12"]
            .iter()
            .map(|c| c.parse().expect("cidr"))
            .collect();
        let payload = render_masquerade(&cidrs);
        let rules: Vec<&str> = payload
            .lines()
            .filter(|l| l.starts_with("-A IP-MASQ-AGENT"))
            .collect();
        assert_eq!(rules.len(), 3);
        assert!(rules[0].contains("-d 10.244.0.0/16") && rules[0].ends_with("-j RETURN"));
        assert!(rules[1].contains("-d 10.224.0.0/12") && rules[1].ends_with("-j RETURN"));
        assert!(
            rules[2].ends_with("-j MASQUERADE"),
            "MASQUERADE must be last"
        );
        assert!(payload.starts_with("*nat\n") && payload.ends_with("COMMIT\n"));
    }
}
