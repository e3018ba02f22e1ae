//! How full each subnet is, per subnet and per pool, and the warnings AKS operators care
//! about: no room for an upgrade surge, or more than 80 % in use.

use serde::Serialize;

use crate::cidr::Ipv4Cidr;
use crate::model::capacity::{self, SubnetDemand, AZURE_RESERVED_PER_SUBNET};
use crate::model::Cluster;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubnetUsage {
    /// Description field, e.g. `vnet.nodeSubnet`.
    pub subnet: String,
    pub cidr: Ipv4Cidr,
    pub addresses: u64,
    pub reserved_by_azure: u64,
    pub used_by_nodes: u64,
    /// Azure CNI assigns maxPods addresses to every node up front, created pods or not.
    pub reserved_for_pods: u64,
    pub free: u64,
    /// Used (nodes + pods) as a share of the addresses Azure lets you assign.
    pub utilisation_percent: f64,
    pub pools: Vec<PoolUsage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolUsage {
    pub pool: String,
    pub nodes: u64,
    pub max_pods: u64,
    pub addresses_per_node: u64,
    pub addresses: u64,
    /// Nodes this pool could still add before this subnet is full.
    pub more_nodes_fit: u64,
}

/// kubenet: per-node /24s of the pod CIDR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodCidrUsage {
    pub cidr: Ipv4Cidr,
    pub node_ranges: u64,
    pub used: u64,
    pub free: u64,
}

/// Something that works now but will bite later; printed, never fatal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

pub(super) fn usage(cluster: &Cluster) -> (Vec<SubnetUsage>, Option<PodCidrUsage>, Vec<Warning>) {
    let demands = capacity::subnet_demands(
        cluster.pod_network,
        &cluster.vnet,
        &cluster.node_pools,
        cluster.pods_per_node,
    );
    let mut warnings = Vec::new();
    for demand in &demands {
        warnings.extend(subnet_warnings(demand));
    }
    let pod_cidr_usage = cluster.pod_cidr.map(|cidr| {
        let node_ranges = capacity::kubenet_node_ranges(&cidr);
        let used = cluster.node_count();
        let surge = cluster.node_pools.len() as u64;
        if used + surge > node_ranges {
            warnings.push(Warning {
                field: "podCidr".into(),
                message: format!(
                    "{cidr} has {node_ranges} node /24s and {used} are used; an upgrade surges \
                     {surge} more node(s) (one per pool) and would not get a /24; use a larger \
                     podCidr"
                ),
            });
        }
        PodCidrUsage {
            cidr,
            node_ranges,
            used,
            free: node_ranges.saturating_sub(used),
        }
    });
    let subnets = demands.iter().map(subnet_usage).collect();
    (subnets, pod_cidr_usage, warnings)
}

fn subnet_usage(demand: &SubnetDemand) -> SubnetUsage {
    SubnetUsage {
        subnet: demand.field.to_string(),
        cidr: demand.cidr,
        addresses: demand.size(),
        reserved_by_azure: AZURE_RESERVED_PER_SUBNET,
        used_by_nodes: demand.node_addresses(),
        reserved_for_pods: demand.pod_addresses(),
        free: demand.free(),
        utilisation_percent: demand.utilisation_percent(),
        pools: demand
            .pools
            .iter()
            .map(|pool| PoolUsage {
                pool: pool.pool.clone(),
                nodes: pool.nodes,
                max_pods: pool.max_pods,
                addresses_per_node: pool.addresses_per_node(),
                addresses: pool.addresses(),
                more_nodes_fit: demand.more_nodes_fit(pool),
            })
            .collect(),
    }
}

fn subnet_warnings(demand: &SubnetDemand) -> Vec<Warning> {
    let mut warnings = Vec::new();
    if !demand.surge_fits() {
        let surge: u64 = demand.pools.iter().map(|p| p.addresses_per_node()).sum();
        warnings.push(Warning {
            field: demand.field.to_string(),
            message: format!(
                "{} has {} addresses and {} are needed; an upgrade surges one node per pool \
                 ({surge} more addresses) and would not fit; use a /{} or larger",
                demand.cidr,
                demand.size(),
                demand.required(),
                Ipv4Cidr::prefix_for(demand.required() + surge).unwrap_or(0)
            ),
        });
    }
    if demand.above_alert_threshold() {
        warnings.push(Warning {
            field: demand.field.to_string(),
            message: format!(
                "{} is {:.1} % used ({} of {} assignable addresses), above the 80 % at which to \
                 plan a larger subnet",
                demand.cidr,
                demand.utilisation_percent(),
                demand.used(),
                demand.assignable()
            ),
        });
    }
    warnings
}
