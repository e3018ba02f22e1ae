//! How pods and nodes reach the internet: AKS's `outboundType`.
//!
//! - `loadBalancer` (AKS's default): egress is SNATed to the load balancer's public
//!   address with allocated ports per node. The emulation still masquerades to the node
//!   address (on the node) and SNATs no further; per-node SNAT ports are not built yet.
//! - `managedNATGateway`: the fabric SNATs everything the VNet sends to the internet to
//!   the NAT gateway's public address, from one pool of 64,512 ports (1024–65535).
//! - `none`: no egress: the fabric drops new flows towards the internet.
//! - `userDefinedRouting` (a firewall as the next hop of 0.0.0.0/0) is refused until
//!   the firewall namespace exists.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::PlanError;

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

/// The NAT gateway's public address: in the public IP pool, below the frontends.
pub const NAT_GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 5);
/// The ports one public address gives a NAT gateway (Azure: 64,512 per address).
pub const NAT_GATEWAY_PORTS: (u16, u16) = (1024, 65535);

/// The resolved egress of a cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outbound {
    #[serde(rename = "outboundType")]
    pub outbound_type: OutboundType,
    /// managedNATGateway: the address the internet sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<Ipv4Addr>,
}

pub fn resolve(outbound_type: Option<OutboundType>) -> Result<Outbound, PlanError> {
    let outbound_type = outbound_type.unwrap_or_default();
    match outbound_type {
        OutboundType::UserDefinedRouting => Err(PlanError::invalid(
            "outboundType",
            "userDefinedRouting needs a firewall as the next hop of 0.0.0.0/0, which this emulation does not build yet; use loadBalancer, managedNATGateway or none".to_owned(),
        )),
        OutboundType::ManagedNatGateway => Ok(Outbound {
            outbound_type,
            public_ip: Some(NAT_GATEWAY_IP),
        }),
        OutboundType::LoadBalancer | OutboundType::None => Ok(Outbound {
            outbound_type,
            public_ip: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_load_balancer_and_udr_is_refused_by_field() {
        assert_eq!(
            resolve(None).expect("default").outbound_type,
            OutboundType::LoadBalancer
        );
        let nat = resolve(Some(OutboundType::ManagedNatGateway)).expect("nat gateway");
        assert_eq!(nat.public_ip, Some(NAT_GATEWAY_IP));
        let udr = resolve(Some(OutboundType::UserDefinedRouting)).expect_err("not built");
        assert_eq!(udr.field(), Some("outboundType"));
    }

    #[test]
    fn yaml_spells_the_aks_names() {
        let parsed: OutboundType =
            serde_norway::from_str("managedNATGateway").expect("AKS spelling");
        assert_eq!(parsed, OutboundType::ManagedNatGateway);
        let none: OutboundType = serde_norway::from_str("none").expect("none");
        assert_eq!(none, OutboundType::None);
    }
}
