//! How pods and nodes reach the internet: AKS's `outboundType`.
//!
//! - `loadBalancer` (AKS's default): the load balancer's outbound rule SNATs what the
//!   nodes send to the internet to its public outbound address, each node from its own
//!   block of `allocatedOutboundPorts` ports (`loadBalancerProfile`), flows idle for
//!   `idleTimeoutInMinutes` forgotten (load-balancer-standard.md). The default port count
//!   follows Azure's default port allocation table by backend pool size
//!   (load-balancer-outbound-connections.md, "Default port allocation table").
//! - `managedNATGateway`: the fabric SNATs everything the VNet sends to the internet to
//!   the NAT gateway's public address, from one pool of 64,512 ports (1024–65535).
//! - `none`: no egress: the fabric drops new flows towards the internet.
//! - `userDefinedRouting`: the node subnet's route table sends 0.0.0.0/0 to a firewall
//!   (an "Azure Firewall" in its own `AzureFirewallSubnet`, the last /26 of the VNet),
//!   which SNATs to its own public address (egress-udr.md, limit-egress-traffic.md).
//!   `firewall.natRules` are its DNAT rules, public address and port to a LoadBalancer
//!   service's frontend, the fix AKS documents for the asymmetric routing that breaks
//!   LoadBalancer inbound under such a route.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::PlanError;
use crate::cidr::Ipv4Cidr;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OutboundType {
    #[default]
    LoadBalancer,
    #[serde(rename = "managedNATGateway")]
    ManagedNatGateway,
    UserDefinedRouting,
    None,
}

impl std::fmt::Display for OutboundType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::LoadBalancer => "loadBalancer",
            Self::ManagedNatGateway => "managedNATGateway",
            Self::UserDefinedRouting => "userDefinedRouting",
            Self::None => "none",
        })
    }
}

impl std::str::FromStr for OutboundType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_norway::from_str(s).map_err(|_| {
            format!("{s:?} is not an outbound type; use loadBalancer, managedNATGateway, userDefinedRouting or none")
        })
    }
}

/// The NAT gateway's public address: in the public IP pool, below the frontends.
pub const NAT_GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 5);
/// The ports one public address gives a NAT gateway (Azure: 64,512 per address).
pub const NAT_GATEWAY_PORTS: (u16, u16) = (1024, 65535);
/// The load balancer's (one, managed) outbound public address: in the public IP pool,
/// below the NAT gateway's and the frontends.
pub const LOAD_BALANCER_OUTBOUND_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 4);
/// The first SNAT port of the outbound address: Azure keeps the first 1,024 of an
/// address's ports and gives 64,000 to SNAT (load-balancer-outbound-connections.md).
pub const SNAT_FIRST_PORT: u16 = 1024;
/// SNAT ports one public address provides.
pub const SNAT_PORTS_PER_IP: u32 = 64_000;
/// AKS's idle timeout of the outbound rule (load-balancer-standard.md, "Configure the
/// load balancer idle timeout"), and the range `az aks update --load-balancer-idle-timeout`
/// accepts.
pub const DEFAULT_IDLE_TIMEOUT_MINUTES: u32 = 30;
pub const IDLE_TIMEOUT_MINUTES: (u32, u32) = (4, 100);

/// The firewall's public address (userDefinedRouting).
pub const FIREWALL_PUBLIC_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 6);
/// Azure requires a /26 named `AzureFirewallSubnet` for the firewall.
pub const FIREWALL_SUBNET_PREFIX: u8 = 26;

/// Azure's default port allocation by backend pool size, for one frontend address:
/// (largest pool, ports per instance). Larger pools have no default allocation.
const DEFAULT_PORT_ALLOCATION: [(u64, u32); 6] = [
    (50, 1024),
    (100, 512),
    (200, 256),
    (400, 128),
    (800, 64),
    (1000, 32),
];

/// The ports per node AKS gives when `allocatedOutboundPorts` is 0 or left out.
pub fn default_allocated_ports(nodes: u64) -> Option<u32> {
    DEFAULT_PORT_ALLOCATION
        .iter()
        .find(|(pool, _)| nodes <= *pool)
        .map(|&(_, ports)| ports)
}

/// `loadBalancerProfile` as written (the AKS API's `networkProfile.loadBalancerProfile`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerProfileDescription {
    /// SNAT ports per node; 0 or absent: Azure's default allocation by node count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_outbound_ports: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_in_minutes: Option<u32>,
}

/// The load balancer's outbound rule, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboundRule {
    /// SNAT ports each node holds, from its own block.
    pub allocated_outbound_ports: u32,
    pub idle_timeout_in_minutes: u32,
}

impl OutboundRule {
    /// The ports of the node at `index` (in plan order): consecutive blocks from
    /// [`SNAT_FIRST_PORT`], as Azure preallocates a block per backend instance.
    pub fn node_ports(&self, index: usize) -> (u16, u16) {
        let first = u32::from(SNAT_FIRST_PORT) + index as u32 * self.allocated_outbound_ports;
        let last = first + self.allocated_outbound_ports - 1;
        (
            u16::try_from(first).unwrap_or(u16::MAX),
            u16::try_from(last).unwrap_or(u16::MAX),
        )
    }
}

/// `firewall` as written: the firewall's DNAT rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FirewallDescription {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nat_rules: Vec<FirewallNatRule>,
}

/// A DNAT rule of the firewall: its public address, at the service's port, to the
/// frontend of LoadBalancer service `service` (as `az network firewall nat-rule create
/// --translated-address <service IP>` in limit-egress-traffic.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FirewallNatRule {
    pub name: String,
    pub service: String,
}

/// The firewall of `userDefinedRouting`, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Firewall {
    /// `AzureFirewallSubnet`: the last /26 of the VNet's address space.
    pub subnet: Ipv4Cidr,
    /// Its private address: the next hop of 0.0.0.0/0 (the subnet's first host Azure
    /// hands out, .4).
    pub private_ip: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nat_rules: Vec<FirewallNatRule>,
}

/// The resolved egress of a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outbound {
    #[serde(rename = "outboundType")]
    pub outbound_type: OutboundType,
    /// managedNATGateway and loadBalancer: the address the internet sees (none in records
    /// of loadBalancer clusters made before the load balancer SNATed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<Ipv4Addr>,
    /// loadBalancer: ports per node and idle timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_rule: Option<OutboundRule>,
    /// userDefinedRouting: the firewall.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<Firewall>,
}

impl Outbound {
    /// The load balancer's outbound address and rule, when it SNATs.
    pub fn load_balancer(&self) -> Option<(Ipv4Addr, OutboundRule)> {
        match (self.outbound_type, self.public_ip, self.outbound_rule) {
            (OutboundType::LoadBalancer, Some(ip), Some(rule)) => Some((ip, rule)),
            _ => None,
        }
    }
}

/// What the VNet looks like, for the firewall's subnet.
pub struct VnetRanges {
    pub address_space: Ipv4Cidr,
    /// The node subnet, the pod subnet: what the firewall's subnet must not overlap.
    pub subnets: Vec<Ipv4Cidr>,
}

pub fn resolve(
    outbound_type: Option<OutboundType>,
    profile: Option<&LoadBalancerProfileDescription>,
    firewall: Option<&FirewallDescription>,
    nodes: u64,
    vnet: &VnetRanges,
) -> Result<Outbound, PlanError> {
    let outbound_type = outbound_type.unwrap_or_default();
    if profile.is_some() && outbound_type != OutboundType::LoadBalancer {
        return Err(PlanError::invalid(
            "loadBalancerProfile",
            format!("configures the load balancer's outbound rule, which outboundType {outbound_type} does not use; drop it or use outboundType loadBalancer"),
        ));
    }
    if firewall.is_some() && outbound_type != OutboundType::UserDefinedRouting {
        return Err(PlanError::invalid(
            "firewall",
            format!("configures the firewall of outboundType userDefinedRouting, not {outbound_type}; drop it or use outboundType userDefinedRouting"),
        ));
    }
    let none = Outbound {
        outbound_type,
        ..Outbound::default()
    };
    match outbound_type {
        OutboundType::UserDefinedRouting => Ok(Outbound {
            public_ip: Some(FIREWALL_PUBLIC_IP),
            firewall: Some(resolve_firewall(
                firewall.cloned().unwrap_or_default(),
                vnet,
            )?),
            ..none
        }),
        OutboundType::ManagedNatGateway => Ok(Outbound {
            public_ip: Some(NAT_GATEWAY_IP),
            ..none
        }),
        OutboundType::LoadBalancer => Ok(Outbound {
            public_ip: Some(LOAD_BALANCER_OUTBOUND_IP),
            outbound_rule: Some(outbound_rule(profile.copied().unwrap_or_default(), nodes)?),
            ..none
        }),
        OutboundType::None => Ok(none),
    }
}

/// Every firewall NAT rule must name a LoadBalancer service (`is_load_balancer`), as its
/// translated address is that service's frontend.
pub fn check_nat_rules(
    outbound: &Outbound,
    is_load_balancer: impl Fn(&str) -> bool,
) -> Result<(), PlanError> {
    let rules = outbound.firewall.iter().flat_map(|f| &f.nat_rules);
    for (i, rule) in rules.enumerate() {
        if !is_load_balancer(&rule.service) {
            return Err(PlanError::invalid(
                format!("firewall.natRules[{i}].service"),
                format!("{:?} is not a LoadBalancer service; a NAT rule translates the firewall's public address to a LoadBalancer frontend", rule.service),
            ));
        }
    }
    Ok(())
}

/// The firewall's subnet (the last /26 of the address space) and address.
fn resolve_firewall(
    description: FirewallDescription,
    vnet: &VnetRanges,
) -> Result<Firewall, PlanError> {
    let count = vnet.address_space.subnet_count(FIREWALL_SUBNET_PREFIX);
    let subnet = count
        .checked_sub(1)
        .and_then(|last| vnet.address_space.subnet(FIREWALL_SUBNET_PREFIX, last))
        .ok_or_else(|| {
            PlanError::invalid(
                "vnet.addressSpace",
                format!("{} has no room for the firewall's /26 (AzureFirewallSubnet); use a larger address space", vnet.address_space),
            )
        })?;
    if let Some(taken) = vnet.subnets.iter().find(|s| s.overlaps(&subnet)) {
        return Err(PlanError::invalid(
            "vnet.addressSpace",
            format!("the firewall's subnet (AzureFirewallSubnet) is the last /26 of the address space, {subnet}, and {taken} overlaps it; leave the end of the address space free"),
        ));
    }
    let private_ip = subnet.nth(4).ok_or_else(|| {
        PlanError::invalid(
            "vnet.addressSpace",
            format!("{subnet} has no .4 for the firewall"),
        )
    })?;
    Ok(Firewall {
        subnet,
        private_ip,
        nat_rules: description.nat_rules,
    })
}

/// Checks `profile` as AKS does: ports a multiple of 8, at most 64,000, and enough for
/// every node from the one outbound address; an idle timeout AKS accepts.
fn outbound_rule(
    profile: LoadBalancerProfileDescription,
    nodes: u64,
) -> Result<OutboundRule, PlanError> {
    let field = "loadBalancerProfile.allocatedOutboundPorts";
    let ports = match profile.allocated_outbound_ports.filter(|&p| p != 0) {
        Some(ports) => ports,
        None => default_allocated_ports(nodes).ok_or_else(|| {
            PlanError::invalid(
                field,
                format!("Azure's default port allocation stops at 1,000 nodes and the cluster has {nodes}; set the ports per node so that nodes × ports ≤ {SNAT_PORTS_PER_IP}"),
            )
        })?,
    };
    if ports % 8 != 0 || ports > SNAT_PORTS_PER_IP {
        return Err(PlanError::invalid(
            field,
            format!("{ports}: AKS needs a multiple of 8 from 8 to {SNAT_PORTS_PER_IP} (or 0 for the default allocation), e.g. {}", (ports / 8).max(1) * 8),
        ));
    }
    let needed = nodes * u64::from(ports);
    if needed > u64::from(SNAT_PORTS_PER_IP) {
        return Err(PlanError::invalid(
            field,
            format!(
                "{nodes} nodes × {ports} ports = {needed}, more than the {SNAT_PORTS_PER_IP} SNAT ports of the one outbound address (64,000 / ports per node × addresses ≥ nodes, load-balancer-standard.md); use at most {} ports per node",
                u64::from(SNAT_PORTS_PER_IP) / nodes.max(1) / 8 * 8
            ),
        ));
    }
    let timeout = profile
        .idle_timeout_in_minutes
        .unwrap_or(DEFAULT_IDLE_TIMEOUT_MINUTES);
    let (lo, hi) = IDLE_TIMEOUT_MINUTES;
    if !(lo..=hi).contains(&timeout) {
        return Err(PlanError::invalid(
            "loadBalancerProfile.idleTimeoutInMinutes",
            format!("{timeout}: AKS accepts {lo} to {hi} minutes (default {DEFAULT_IDLE_TIMEOUT_MINUTES})"),
        ));
    }
    Ok(OutboundRule {
        allocated_outbound_ports: ports,
        idle_timeout_in_minutes: timeout,
    })
}

/// `resolve` in the default VNet (10.224.0.0/12, node subnet 10.224.0.0/24), no firewall
/// rules: what unit tests of other modules need.
#[cfg(test)]
pub(crate) fn resolve_in_default_vnet(
    outbound_type: Option<OutboundType>,
    profile: Option<&LoadBalancerProfileDescription>,
    nodes: u64,
) -> Result<Outbound, PlanError> {
    resolve(outbound_type, profile, None, nodes, &tests::vnet())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn vnet() -> VnetRanges {
        VnetRanges {
            address_space: "10.224.0.0/12".parse().expect("cidr"),
            subnets: vec!["10.224.0.0/24".parse().expect("cidr")],
        }
    }

    use super::resolve_in_default_vnet as resolve;

    fn profile(ports: Option<u32>, timeout: Option<u32>) -> LoadBalancerProfileDescription {
        LoadBalancerProfileDescription {
            allocated_outbound_ports: ports,
            idle_timeout_in_minutes: timeout,
        }
    }

    #[test]
    fn the_default_is_load_balancer_and_udr_has_a_firewall_at_the_end_of_the_vnet() {
        let lb = resolve(None, None, 2).expect("default");
        assert_eq!(lb.outbound_type, OutboundType::LoadBalancer);
        assert_eq!(
            lb.load_balancer(),
            Some((
                LOAD_BALANCER_OUTBOUND_IP,
                OutboundRule {
                    allocated_outbound_ports: 1024,
                    idle_timeout_in_minutes: 30
                }
            ))
        );
        let nat = resolve(Some(OutboundType::ManagedNatGateway), None, 2).expect("nat gateway");
        assert_eq!(nat.public_ip, Some(NAT_GATEWAY_IP));
        assert_eq!(nat.load_balancer(), None);
        let udr = resolve(Some(OutboundType::UserDefinedRouting), None, 2).expect("a firewall");
        let firewall = udr.firewall.expect("a firewall");
        assert_eq!(firewall.subnet.to_string(), "10.239.255.192/26");
        assert_eq!(firewall.private_ip, Ipv4Addr::new(10, 239, 255, 196));
        assert_eq!(udr.public_ip, Some(FIREWALL_PUBLIC_IP));
        let crowded = VnetRanges {
            address_space: "10.224.0.0/24".parse().expect("cidr"),
            subnets: vec!["10.224.0.0/24".parse().expect("cidr")],
        };
        let err = super::resolve(
            Some(OutboundType::UserDefinedRouting),
            None,
            None,
            2,
            &crowded,
        )
        .expect_err("no room");
        assert_eq!(err.field(), Some("vnet.addressSpace"));
        let stray = FirewallDescription::default();
        let err = super::resolve(None, None, Some(&stray), 2, &vnet()).expect_err("no firewall");
        assert_eq!(err.field(), Some("firewall"));
    }

    #[test]
    fn default_ports_follow_azures_table_by_node_count() {
        let ports = |n| default_allocated_ports(n);
        assert_eq!(
            [1, 50, 51, 100, 101, 200, 201, 400, 401, 800, 801, 1000].map(ports),
            [1024, 1024, 512, 512, 256, 256, 128, 128, 64, 64, 32, 32].map(Some)
        );
        assert_eq!(ports(1001), None);
        // AKS's own example: 48 nodes have 1,024 ports each; 52 have 512.
        let rule = |n| resolve(None, None, n).expect("valid").outbound_rule;
        assert_eq!(rule(48).map(|r| r.allocated_outbound_ports), Some(1024));
        assert_eq!(rule(52).map(|r| r.allocated_outbound_ports), Some(512));
    }

    #[test]
    fn allocated_ports_and_idle_timeout_are_checked_as_aks_does() {
        let ok = resolve(None, Some(&profile(Some(8), Some(4))), 3).expect("valid");
        let rule = ok.outbound_rule.expect("a rule");
        assert_eq!(rule.node_ports(0), (1024, 1031));
        assert_eq!(rule.node_ports(2), (1040, 1047));
        let err = |p: LoadBalancerProfileDescription, nodes| {
            resolve(None, Some(&p), nodes)
                .expect_err("refused")
                .field()
                .map(str::to_owned)
        };
        let ports_field = Some("loadBalancerProfile.allocatedOutboundPorts".to_owned());
        assert_eq!(
            err(profile(Some(12), None), 1),
            ports_field,
            "not a multiple of 8"
        );
        assert_eq!(
            err(profile(Some(4000), None), 17),
            ports_field,
            "17 × 4000 > 64000"
        );
        assert!(resolve(None, Some(&profile(Some(4000), None)), 16).is_ok());
        assert_eq!(
            err(profile(None, Some(3)), 1),
            Some("loadBalancerProfile.idleTimeoutInMinutes".to_owned())
        );
        let nat = resolve(
            Some(OutboundType::ManagedNatGateway),
            Some(&profile(Some(8), None)),
            1,
        )
        .expect_err("no load balancer");
        assert_eq!(nat.field(), Some("loadBalancerProfile"));
        // 0 means the default allocation, as in AKS.
        let zero = resolve(None, Some(&profile(Some(0), None)), 60).expect("valid");
        assert_eq!(
            zero.outbound_rule.map(|r| r.allocated_outbound_ports),
            Some(512)
        );
    }

    #[test]
    fn yaml_spells_the_aks_names() {
        let parsed: OutboundType =
            serde_norway::from_str("managedNATGateway").expect("AKS spelling");
        assert_eq!(parsed, OutboundType::ManagedNatGateway);
        let none: OutboundType = serde_norway::from_str("none").expect("none");
        assert_eq!(none, OutboundType::None);
        assert_eq!("loadBalancer".parse(), Ok(OutboundType::LoadBalancer));
        assert!("natGateway".parse::<OutboundType>().is_err());
    }
}
