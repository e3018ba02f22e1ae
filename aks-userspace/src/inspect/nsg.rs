//! `inspect nsg`: the node subnet's NSG rules as the fabric enforces them (the vnet
//! namespace's `AKSNET-NSG` chain, see `fabric::nsg`), in evaluation order, with how
//! many packets of new flows each rule decided.

use anyhow::Result;
use serde::Serialize;

use crate::datapath::iptables;
use crate::fabric::nsg::{CHAIN, COMMENT_PREFIX};
use crate::state::ClusterState;

/// One rule; the first match decides, replies of allowed flows never reach a rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NsgRow {
    pub priority: u32,
    pub name: String,
    /// `allow` or `deny`.
    pub action: String,
    /// `tcp`, `udp`, `icmp` or `*`.
    pub protocol: String,
    /// `a.b.c.d/len`, or `*` for any.
    pub source: String,
    pub destination: String,
    /// `lo-hi`, one port, or `*`.
    pub ports: String,
    /// Packets (of flows not yet established) the rule matched, and their bytes.
    pub packets: u64,
    pub bytes: u64,
}

/// The rules in force in `state`'s fabric; none when the description has no NSG.
pub fn nsg_rules(state: &ClusterState) -> Result<Vec<NsgRow>> {
    let saved = iptables::save_with_counters(&state.vnet, "filter")?;
    Ok(saved.lines().filter_map(parse_rule).collect())
}

/// One `iptables-save -c` line of the NSG chain, when it is a rule (not the reply pass).
fn parse_rule(line: &str) -> Option<NsgRow> {
    let (counters, spec) = line.strip_prefix('[')?.split_once("] ")?;
    let (packets, bytes) = counters.split_once(':')?;
    let spec = spec.strip_prefix(&format!("-A {CHAIN} "))?;
    let (before, comment) = spec.split_once("--comment \"")?;
    let (comment, after) = comment.split_once('"')?;
    let (priority, name) = comment
        .strip_prefix(COMMENT_PREFIX)?
        .trim_start()
        .split_once(' ')?;
    let tokens: Vec<&str> = before.split_whitespace().collect();
    let value = |flag: &str| {
        tokens
            .windows(2)
            .find(|w| w[0] == flag)
            .map(|w| w[1].to_owned())
    };
    let any = || "*".to_owned();
    Some(NsgRow {
        priority: priority.parse().ok()?,
        name: name.to_owned(),
        action: match after.split_whitespace().last()? {
            "ACCEPT" => "allow".to_owned(),
            "DROP" => "deny".to_owned(),
            other => other.to_lowercase(),
        },
        protocol: value("-p").unwrap_or_else(any),
        source: value("-s").unwrap_or_else(any),
        destination: value("-d").unwrap_or_else(any),
        ports: value("--dport")
            .map(|p| p.replace(':', "-"))
            .unwrap_or_else(any),
        packets: packets.parse().ok()?,
        bytes: bytes.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_rule_reads_back_in_azure_terms() {
        let row = parse_rule("[3:180] -A AKSNET-NSG -s 192.168.100.0/24 -d 10.224.0.0/24 -p tcp -m tcp --dport 17002 -m comment --comment \"nsg 100 deny-17002\" -j DROP")
            .expect("a rule");
        assert_eq!(
            row,
            NsgRow {
                priority: 100,
                name: "deny-17002".into(),
                action: "deny".into(),
                protocol: "tcp".into(),
                source: "192.168.100.0/24".into(),
                destination: "10.224.0.0/24".into(),
                ports: "17002".into(),
                packets: 3,
                bytes: 180,
            }
        );
        let range = parse_rule("[0:0] -A AKSNET-NSG -p udp -m udp --dport 53:54 -m comment --comment \"nsg 4096 allow-dns\" -j ACCEPT").expect("a rule");
        assert_eq!(
            (range.ports.as_str(), range.action.as_str()),
            ("53-54", "allow")
        );
        assert_eq!(range.source, "*");
    }

    #[test]
    fn the_reply_pass_and_other_chains_are_not_rules() {
        assert!(parse_rule("[9:900] -A AKSNET-NSG -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"aksnet: NSGs are stateful, replies pass\" -j ACCEPT").is_none());
        assert!(parse_rule("[1:60] -A FORWARD -o node+ -m comment --comment \"aksnet: the node subnet's NSG (inbound)\" -j AKSNET-NSG").is_none());
    }
}
