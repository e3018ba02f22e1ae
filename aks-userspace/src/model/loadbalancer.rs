//! How a service is reached from outside the cluster, as Kubernetes and AKS spell it:
//! `type` (ClusterIP, NodePort, LoadBalancer), `nodePort`, `externalTrafficPolicy`,
//! `loadBalancerIP` and `loadBalancerSourceRanges`.
//!
//! Allocation follows Kubernetes' rules, made deterministic so `plan` can show it:
//! node ports come from 30000–32767 (`--service-node-port-range`'s default), the lowest
//! free port first, after every port a service asks for by name is taken; a
//! `LoadBalancer` with `externalTrafficPolicy: Local` also gets a `healthCheckNodePort`
//! (the port Azure's load balancer probes, answered only by nodes with a local backend).
//! Frontend addresses come from [`PUBLIC_IP_POOL`], the emulation's stand-in for the
//! public IPs Azure gives a cluster's load balancer.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use super::description::ServiceDescription;
use super::PlanError;
use crate::cidr::Ipv4Cidr;

/// Kubernetes' default `--service-node-port-range`.
pub const NODE_PORT_RANGE: RangeInclusive<u16> = 30000..=32767;
/// Public frontend addresses (TEST-NET-2, never routed on the internet): the emulated
/// region's public IPs, reachable from the internet host through the fabric.
pub const PUBLIC_IP_POOL: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 51, 100, 0), 24);
/// The first address handed out (lower ones stay free for the fabric's own use).
const FIRST_FRONTEND_HOST: u64 = 10;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExternalTrafficPolicy {
    /// Any node forwards to any backend; the backend sees a node address (SNAT).
    #[default]
    Cluster,
    /// Only nodes with a local backend take traffic; the backend sees the client.
    Local,
}

/// A service reachable from outside: through every node's `node_port`, and for a
/// `LoadBalancer` through `frontend` on the emulated Azure Load Balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exposure {
    /// The service's name (its `services[]` entry).
    pub service: String,
    #[serde(rename = "type")]
    pub service_type: ServiceType,
    pub node_port: u16,
    pub external_traffic_policy: ExternalTrafficPolicy,
    /// LoadBalancer with `Local`: the port the load balancer's health probe asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_node_port: Option<u16>,
    /// LoadBalancer: the public frontend address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend: Option<Ipv4Addr>,
    /// LoadBalancer: the only clients allowed (none listed: everyone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_ranges: Vec<Ipv4Cidr>,
}

/// The public IP pool as a CIDR.
pub fn public_ip_pool() -> Ipv4Cidr {
    Ipv4Cidr::new(PUBLIC_IP_POOL.0, PUBLIC_IP_POOL.1).expect("a valid constant prefix")
}

/// Validates the external fields of `services` and allocates node ports and frontends.
/// Returns one entry per NodePort or LoadBalancer service, in description order.
pub fn resolve(services: &[ServiceDescription]) -> Result<Vec<Exposure>, PlanError> {
    let pool = public_ip_pool();
    let mut taken_ports = BTreeSet::new();
    let mut taken_frontends = BTreeSet::new();
    // First pass: what each service asks for by name, so allocation never takes it.
    for (i, service) in services.iter().enumerate() {
        let field = |f: &str| format!("services[{i}].{f}");
        let service_type = service.service_type.unwrap_or_default();
        let external = service_type != ServiceType::ClusterIP;
        let balanced = service_type == ServiceType::LoadBalancer;
        let only = |name: &str, allowed: bool, needs: &str| {
            if allowed {
                Ok(())
            } else {
                Err(PlanError::invalid(
                    field(name),
                    format!("is set on a {service_type:?} service; it needs type {needs} (or remove it)"),
                ))
            }
        };
        if service.node_port.is_some() {
            only("nodePort", external, "NodePort or LoadBalancer")?;
        }
        if service.external_traffic_policy.is_some() {
            only(
                "externalTrafficPolicy",
                external,
                "NodePort or LoadBalancer",
            )?;
        }
        if service.load_balancer_ip.is_some() {
            only("loadBalancerIP", balanced, "LoadBalancer")?;
        }
        if !service.load_balancer_source_ranges.is_empty() {
            only("loadBalancerSourceRanges", balanced, "LoadBalancer")?;
        }
        if let Some(port) = service.node_port {
            let port = u16::try_from(port)
                .ok()
                .filter(|p| NODE_PORT_RANGE.contains(p))
                .ok_or_else(|| {
                    PlanError::invalid(
                        field("nodePort"),
                        format!(
                            "{port} is outside the node port range {}-{}; pick a port in it or leave nodePort out to get one",
                            NODE_PORT_RANGE.start(),
                            NODE_PORT_RANGE.end()
                        ),
                    )
                })?;
            if !taken_ports.insert(port) {
                return Err(PlanError::invalid(
                    field("nodePort"),
                    format!(
                        "{port} is already used by an earlier service; every service needs its own"
                    ),
                ));
            }
        }
        if let Some(ip) = service.load_balancer_ip {
            if !pool.contains(ip) {
                return Err(PlanError::invalid(
                    field("loadBalancerIP"),
                    format!("{ip} is not in the cluster's public IP pool {pool}; use an address of it or leave loadBalancerIP out to get one"),
                ));
            }
            if ip == pool.network() || ip == pool.last() {
                return Err(PlanError::invalid(
                    field("loadBalancerIP"),
                    format!("{ip} is the network or broadcast address of {pool}; use another"),
                ));
            }
            if !taken_frontends.insert(ip) {
                return Err(PlanError::invalid(
                    field("loadBalancerIP"),
                    format!("{ip} is already the frontend of an earlier service; every LoadBalancer service needs its own"),
                ));
            }
        }
    }
    // Second pass: allocate what was left out, lowest free first.
    let mut free_port = NODE_PORT_RANGE.filter(|p| !taken_ports.contains(p));
    let mut free_frontend = (FIRST_FRONTEND_HOST..pool.size().saturating_sub(1))
        .filter_map(|k| pool.nth(k))
        .filter(|ip| !taken_frontends.contains(ip));
    let mut exposures = Vec::new();
    for (i, service) in services.iter().enumerate() {
        let service_type = service.service_type.unwrap_or_default();
        if service_type == ServiceType::ClusterIP {
            continue;
        }
        let exhausted = |what: &str| {
            PlanError::invalid(
                format!("services[{i}]"),
                format!(
                    "no free {what} is left for {}; remove services or set them by hand",
                    service.name
                ),
            )
        };
        let node_port = match service.node_port {
            Some(port) => port as u16, // checked above
            None => free_port.next().ok_or_else(|| exhausted("node port"))?,
        };
        let policy = service.external_traffic_policy.unwrap_or_default();
        let balanced = service_type == ServiceType::LoadBalancer;
        let health_check_node_port = if balanced && policy == ExternalTrafficPolicy::Local {
            Some(
                free_port
                    .next()
                    .ok_or_else(|| exhausted("health check node port"))?,
            )
        } else {
            None
        };
        let frontend = if balanced {
            Some(match service.load_balancer_ip {
                Some(ip) => ip,
                None => free_frontend
                    .next()
                    .ok_or_else(|| exhausted("public frontend address"))?,
            })
        } else {
            None
        };
        exposures.push(Exposure {
            service: service.name.clone(),
            service_type,
            node_port,
            external_traffic_policy: policy,
            health_check_node_port,
            frontend,
            source_ranges: service.load_balancer_source_ranges.clone(),
        });
    }
    Ok(exposures)
}

#[cfg(test)]
mod tests;
