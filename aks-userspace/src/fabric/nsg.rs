//! The node subnet's NSG, enforced where Azure enforces it: in the fabric (the vnet
//! namespace), on packets leaving it towards a node (`-o node+`), statefully.
//!
//! Why here and not on the node: Azure applies NSG rules in its SDN, outside the VM, so
//! they hold the same whatever runs on the node (eBPF or iptables) and a node cannot
//! opt out. They are stateful: a flow allowed one way has its replies let through, so a
//! rule denying the internet's prefix stops connections the internet starts and never
//! the replies to connections a pod starts.
//!
//! Cost: the fabric is otherwise stateless (raw `NOTRACK`). Conntrack is kept only for
//! packets to or from a destination prefix some rule names (every packet when a rule's
//! destination is `*`): a packet can only meet a rule if its destination is in the
//! rule's prefix, and the first packet of the flow it may be a reply to came from there.
//! Without rules the fabric adds nothing: no chain, no jump, no conntrack.

use crate::cidr::Ipv4Cidr;
use crate::model::nsg::{Access, SecurityRule};

/// The chain holding the rules, in priority order; `inspect nsg` reads its counters.
pub const CHAIN: &str = "AKSNET-NSG";
/// Prefix of each rule's comment, followed by `<priority> <name>`.
pub const COMMENT_PREFIX: &str = "nsg";

/// The vnet namespace's `raw` PREROUTING lines that keep conntrack for the flows the
/// rules need, to be placed before the fabric's `NOTRACK`. Empty without rules.
pub fn raw_rules(rules: &[SecurityRule]) -> String {
    let mut out = String::new();
    for prefix in tracked_prefixes(rules) {
        let comment = "-m comment --comment \"aksnet: NSG rules are stateful\"";
        match prefix {
            None => out.push_str(&format!("-A PREROUTING {comment} -j RETURN\n")),
            Some(cidr) => {
                out.push_str(&format!("-A PREROUTING -d {cidr} {comment} -j RETURN\n"));
                out.push_str(&format!("-A PREROUTING -s {cidr} {comment} -j RETURN\n"));
            }
        }
    }
    out
}

/// The vnet namespace's `filter` chain declaration, placed before any rule. Empty
/// without rules.
pub fn filter_chains(rules: &[SecurityRule]) -> String {
    if rules.is_empty() {
        return String::new();
    }
    format!(":{CHAIN} - [0:0]\n")
}

/// The vnet namespace's `filter` lines: the jump to the NSG chain for packets towards a
/// node, appended after the fabric's own FORWARD rules (so an allow rule never opens
/// what the fabric refuses), and the chain. Empty without rules.
pub fn filter_rules(rules: &[SecurityRule]) -> String {
    if rules.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    out.push_str(&format!(
        "-A FORWARD -o node+ -m comment --comment \"aksnet: the node subnet's NSG (inbound)\" -j {CHAIN}\n"
    ));
    out.push_str(&format!(
        "-A {CHAIN} -m conntrack --ctstate ESTABLISHED,RELATED -m comment --comment \"aksnet: NSGs are stateful, replies pass\" -j ACCEPT\n"
    ));
    for rule in rules {
        out.push_str(&format!("-A {CHAIN} {}\n", rule_spec(rule)));
    }
    out
}

/// One rule as iptables match and target; the comment names it as Azure does.
fn rule_spec(rule: &SecurityRule) -> String {
    let mut spec = Vec::new();
    if let Some(protocol) = rule.protocol {
        spec.push(format!("-p {}", protocol_name(protocol)));
    }
    if let Some(source) = rule.source {
        spec.push(format!("-s {source}"));
    }
    if let Some(destination) = rule.destination {
        spec.push(format!("-d {destination}"));
    }
    // Validation allows narrowed ports only with Tcp or Udp, which `-p` names above.
    if rule.ports != (0, u16::MAX) {
        spec.push(format!("--dport {}:{}", rule.ports.0, rule.ports.1));
    }
    spec.push(format!(
        "-m comment --comment \"{COMMENT_PREFIX} {} {}\"",
        rule.priority, rule.name
    ));
    spec.push(
        match rule.access {
            Access::Allow => "-j ACCEPT",
            Access::Deny => "-j DROP",
        }
        .to_owned(),
    );
    spec.join(" ")
}

fn protocol_name(protocol: u8) -> String {
    match protocol {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        other => other.to_string(),
    }
}

/// The destination prefixes of the rules, without repeats; one `None` (everything)
/// when any rule's destination is `*`.
fn tracked_prefixes(rules: &[SecurityRule]) -> Vec<Option<Ipv4Cidr>> {
    if rules.is_empty() {
        return Vec::new();
    }
    if rules.iter().any(|r| r.destination.is_none()) {
        return vec![None];
    }
    let mut prefixes: Vec<Option<Ipv4Cidr>> = Vec::new();
    for rule in rules {
        if !prefixes.contains(&rule.destination) {
            prefixes.push(rule.destination);
        }
    }
    prefixes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, priority: u32, destination: Option<&str>) -> SecurityRule {
        SecurityRule {
            name: name.into(),
            priority,
            access: Access::Deny,
            protocol: Some(6),
            source: Some("192.168.100.0/24".parse().expect("cidr")),
            destination: destination.map(|d| d.parse().expect("cidr")),
            ports: (17001, 17001),
        }
    }

    #[test]
    fn no_rules_cost_nothing() {
        assert_eq!(raw_rules(&[]), "");
        assert_eq!(filter_chains(&[]), "");
        assert_eq!(filter_rules(&[]), "");
    }

    #[test]
    fn replies_pass_before_any_rule_and_rules_keep_priority_order() {
        let rules = [
            rule("deny-onprem", 100, Some("10.224.0.0/24")),
            SecurityRule {
                access: Access::Allow,
                protocol: None,
                source: None,
                ports: (0, u16::MAX),
                ..rule("allow-all", 200, Some("10.224.0.0/24"))
            },
        ];
        assert_eq!(filter_chains(&rules), ":AKSNET-NSG - [0:0]\n");
        let filter = format!("{}{}", filter_chains(&rules), filter_rules(&rules));
        let lines: Vec<&str> = filter.lines().collect();
        assert_eq!(lines[0], ":AKSNET-NSG - [0:0]");
        assert!(
            lines[1].starts_with("-A FORWARD -o node+ ") && lines[1].ends_with("-j AKSNET-NSG")
        );
        assert!(
            lines[2].contains("--ctstate ESTABLISHED,RELATED") && lines[2].ends_with("-j ACCEPT")
        );
        assert_eq!(
            lines[3],
            "-A AKSNET-NSG -p tcp -s 192.168.100.0/24 -d 10.224.0.0/24 --dport 17001:17001 -m comment --comment \"nsg 100 deny-onprem\" -j DROP"
        );
        assert_eq!(
            lines[4],
            "-A AKSNET-NSG -d 10.224.0.0/24 -m comment --comment \"nsg 200 allow-all\" -j ACCEPT"
        );
    }

    #[test]
    fn conntrack_is_kept_only_for_the_rules_destinations() {
        let one = raw_rules(&[
            rule("a", 100, Some("10.224.0.0/24")),
            rule("b", 110, Some("10.224.0.0/24")),
        ]);
        assert_eq!(one.lines().count(), 2, "one prefix, both directions: {one}");
        assert!(one.contains("-d 10.224.0.0/24") && one.contains("-s 10.224.0.0/24"));
        let any = raw_rules(&[rule("a", 100, Some("10.224.0.0/24")), rule("b", 110, None)]);
        assert_eq!(any.lines().count(), 1, "{any}");
        assert!(!any.contains("-d ") && any.ends_with("-j RETURN\n"));
    }
}
