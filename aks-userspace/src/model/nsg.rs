//! Network security group rules for the node subnet, as Azure writes them: a priority
//! (lower wins), allow or deny, protocol, source and destination prefixes, destination
//! ports. Only inbound rules: the fabric enforces them, statefully, on packets towards
//! a node (`fabric::nsg`).
//! No matching rule allows, as Azure's default rules do inside the VNet.

use serde::{Deserialize, Serialize};

use super::PlanError;
use crate::cidr::Ipv4Cidr;

/// Azure's range for user rule priorities.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<u32> = 100..=4096;
/// How many rules the datapath holds (`aks_ebpf_common::NSG_CAPACITY`).
pub const MAX_RULES: usize = 64;

/// A rule as written in the description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityRuleDescription {
    pub name: String,
    pub priority: u32,
    pub access: Access,
    /// `Tcp`, `Udp`, `Icmp` or `*`.
    pub protocol: String,
    /// A CIDR or `*`.
    #[serde(default = "any")]
    pub source_address_prefix: String,
    /// A CIDR or `*`.
    #[serde(default = "any")]
    pub destination_address_prefix: String,
    /// `80`, `8000-8080` or `*`.
    #[serde(default = "any")]
    pub destination_port_range: String,
}

fn any() -> String {
    "*".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    Allow,
    Deny,
}

/// A validated rule. `None` prefixes and protocol mean any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityRule {
    pub name: String,
    pub priority: u32,
    pub access: Access,
    /// IANA protocol number, `None` for any.
    pub protocol: Option<u8>,
    pub source: Option<Ipv4Cidr>,
    pub destination: Option<Ipv4Cidr>,
    /// Inclusive destination port range.
    pub ports: (u16, u16),
}

/// Validates `rules` and returns them in priority order (first match wins).
pub fn resolve(rules: &[SecurityRuleDescription]) -> Result<Vec<SecurityRule>, PlanError> {
    if rules.len() > MAX_RULES {
        return Err(PlanError::invalid(
            "nsg",
            format!(
                "{} rules, but the datapath holds at most {MAX_RULES}; merge rules",
                rules.len()
            ),
        ));
    }
    let mut resolved = Vec::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        let field = |f: &str| format!("nsg[{i}].{f}");
        if !PRIORITY_RANGE.contains(&rule.priority) {
            return Err(PlanError::invalid(
                field("priority"),
                format!(
                    "{} is outside Azure's range {}..={}; pick a priority in it (lower wins)",
                    rule.priority,
                    PRIORITY_RANGE.start(),
                    PRIORITY_RANGE.end()
                ),
            ));
        }
        if let Some(j) = rules[..i].iter().position(|r| r.priority == rule.priority) {
            return Err(PlanError::invalid(
                field("priority"),
                format!(
                    "{} is already used by nsg[{j}] ({}); priorities must be unique",
                    rule.priority, rules[j].name
                ),
            ));
        }
        if rules[..i].iter().any(|r| r.name == rule.name) {
            return Err(PlanError::invalid(
                field("name"),
                format!("{:?} is used twice; names must be unique", rule.name),
            ));
        }
        let protocol = match rule.protocol.to_ascii_lowercase().as_str() {
            "*" => None,
            "tcp" => Some(6),
            "udp" => Some(17),
            "icmp" => Some(1),
            other => {
                return Err(PlanError::invalid(
                    field("protocol"),
                    format!("{other:?} is not a protocol NSG rules know; use Tcp, Udp, Icmp or *"),
                ))
            }
        };
        let prefix = |value: &str, name: &str| -> Result<Option<Ipv4Cidr>, PlanError> {
            if value == "*" {
                return Ok(None);
            }
            value.parse::<Ipv4Cidr>().map(Some).map_err(|e| {
                PlanError::invalid(field(name), format!("{value:?}: {e}; use a CIDR or *"))
            })
        };
        let ports = parse_ports(&rule.destination_port_range).ok_or_else(|| {
            PlanError::invalid(
                field("destinationPortRange"),
                format!(
                    "{:?} is not a port range; use a port (80), a range (8000-8080) or *",
                    rule.destination_port_range
                ),
            )
        })?;
        if ports != (0, u16::MAX) && !matches!(protocol, Some(6) | Some(17)) {
            return Err(PlanError::invalid(
                field("destinationPortRange"),
                format!("{:?} narrows ports, which only Tcp and Udp have; set protocol Tcp or Udp, or the range to *", rule.destination_port_range),
            ));
        }
        resolved.push(SecurityRule {
            name: rule.name.clone(),
            priority: rule.priority,
            access: rule.access,
            protocol,
            source: prefix(&rule.source_address_prefix, "sourceAddressPrefix")?,
            destination: prefix(&rule.destination_address_prefix, "destinationAddressPrefix")?,
            ports,
        });
    }
    resolved.sort_by_key(|r| r.priority);
    Ok(resolved)
}

fn parse_ports(range: &str) -> Option<(u16, u16)> {
    if range == "*" {
        return Some((0, u16::MAX));
    }
    let (lo, hi) = match range.split_once('-') {
        Some((lo, hi)) => (lo.trim().parse().ok()?, hi.trim().parse().ok()?),
        None => {
            let port = range.trim().parse().ok()?;
            (port, port)
        }
    };
    (lo >= 1 && lo <= hi).then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, priority: u32, protocol: &str, ports: &str) -> SecurityRuleDescription {
        SecurityRuleDescription {
            name: name.into(),
            priority,
            access: Access::Deny,
            protocol: protocol.into(),
            source_address_prefix: "*".into(),
            destination_address_prefix: "10.224.0.0/24".into(),
            destination_port_range: ports.into(),
        }
    }

    #[test]
    fn rules_come_back_in_priority_order() {
        let rules =
            resolve(&[rule("b", 200, "Tcp", "80"), rule("a", 100, "Udp", "53-54")]).expect("valid");
        assert_eq!(rules[0].name, "a");
        assert_eq!(rules[0].ports, (53, 54));
        assert_eq!(rules[1].protocol, Some(6));
    }

    #[test]
    fn priority_bounds_are_azures() {
        assert!(resolve(&[rule("a", 100, "Tcp", "80")]).is_ok());
        assert!(resolve(&[rule("a", 4096, "Tcp", "80")]).is_ok());
        let err = resolve(&[rule("a", 99, "Tcp", "80")]).expect_err("below 100");
        assert_eq!(err.field(), Some("nsg[0].priority"));
        assert!(resolve(&[rule("a", 4097, "Tcp", "80")]).is_err());
    }

    #[test]
    fn bad_rules_name_the_field() {
        let dup = resolve(&[rule("a", 100, "Tcp", "80"), rule("b", 100, "Tcp", "81")])
            .expect_err("duplicate");
        assert_eq!(dup.field(), Some("nsg[1].priority"));
        let proto = resolve(&[rule("a", 100, "Sctp", "80")]).expect_err("protocol");
        assert_eq!(proto.field(), Some("nsg[0].protocol"));
        let ports = resolve(&[rule("a", 100, "Tcp", "90-80")]).expect_err("reversed range");
        assert_eq!(ports.field(), Some("nsg[0].destinationPortRange"));
        let icmp_port = resolve(&[rule("a", 100, "Icmp", "80")]).expect_err("icmp has no ports");
        assert_eq!(icmp_port.field(), Some("nsg[0].destinationPortRange"));
        let too_many: Vec<_> = (0..65)
            .map(|i| rule(&format!("r{i}"), 100 + i, "Tcp", "80"))
            .collect();
        assert_eq!(
            resolve(&too_many).expect_err("65 rules").field(),
            Some("nsg")
        );
    }
}
