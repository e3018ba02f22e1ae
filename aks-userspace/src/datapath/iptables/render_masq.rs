//! ip-masq-agent's chain: what it programs on an AKS node, from the cluster's
//! non-masquerade CIDRs.

use super::ruleset::Ruleset;
use crate::cidr::Ipv4Cidr;

/// ip-masq-agent's chain name.
pub const MASQ_CHAIN: &str = "IP-MASQ-AGENT";

/// Adds ip-masq-agent's rules to the `nat` table: traffic to a non-local destination
/// goes to `IP-MASQ-AGENT`, which returns for each non-masquerade CIDR and masquerades
/// the rest (so MASQUERADE must stay last).
pub fn add_masquerade(ruleset: &mut Ruleset, non_masquerade: &[Ipv4Cidr]) {
    let nat = ruleset.table_mut("nat");
    nat.chain(MASQ_CHAIN);
    nat.rule(
        "POSTROUTING",
        format!("-m comment --comment \"ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain\" -m addrtype ! --dst-type LOCAL -j {MASQ_CHAIN}"),
    );
    for cidr in non_masquerade {
        nat.rule(
            MASQ_CHAIN,
            format!("-d {cidr} -m comment --comment \"ip-masq-agent: local traffic is not subject to MASQUERADE\" -j RETURN"),
        );
    }
    nat.rule(
        MASQ_CHAIN,
        "-m comment --comment \"ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)\" -j MASQUERADE",
    );
}

/// ip-masq-agent's rules alone, as an `iptables-restore` payload.
pub fn render_masquerade(non_masquerade: &[Ipv4Cidr]) -> String {
    let mut ruleset = Ruleset::default();
    add_masquerade(&mut ruleset, non_masquerade);
    ruleset.to_restore()
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
