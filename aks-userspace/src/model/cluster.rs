//! The validated cluster: every default filled in, every AKS rule checked. This is what
//! the planner and, later, the namespace builder consume.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::description::{
    Datapath, NetworkPlugin, OnPremNetwork, OsType, PodNetwork, Protocol, Vnet,
};
use crate::cidr::Ipv4Cidr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    pub name: String,
    pub network_plugin: NetworkPlugin,
    /// Which AKS model the plugin, mode and subnets amount to.
    pub pod_network: PodNetwork,
    pub datapath: Datapath,
    pub vnet: Vnet,
    /// kubenet only: the private range each node's /24 is carved from.
    pub pod_cidr: Option<Ipv4Cidr>,
    pub service_cidr: Ipv4Cidr,
    pub dns_service_ip: Ipv4Addr,
    pub node_pools: Vec<NodePool>,
    pub pods_per_node: u32,
    pub non_masquerade_cidrs: Vec<Ipv4Cidr>,
    pub services: Vec<Service>,
    pub external_hosts: ExternalHosts,
    /// NSG rules in priority order.
    pub nsg: Vec<super::nsg::SecurityRule>,
    /// NodePort and LoadBalancer services: node ports, frontends, policies.
    pub exposures: Vec<super::loadbalancer::Exposure>,
    /// Egress to the internet (`outboundType`).
    pub outbound: super::outbound::Outbound,
    pub conntrack: super::conntrack::ConntrackSettings,
    /// Network policy: the engine, pod identities, the policies.
    pub policy: super::policy::PolicyModel,
}

impl Cluster {
    /// Nodes over all pools.
    pub fn node_count(&self) -> u64 {
        self.node_pools
            .iter()
            .map(|pool| u64::from(pool.count))
            .sum()
    }

    /// The subnet pod addresses come from with Azure CNI Node Subnet or Pod Subnet.
    /// `None` for kubenet and Overlay, whose pods are not VNet addresses.
    pub fn azure_pod_subnet(&self) -> Option<Ipv4Cidr> {
        match self.pod_network {
            PodNetwork::AzureNodeSubnet => Some(self.vnet.node_subnet),
            PodNetwork::AzurePodSubnet => self.vnet.pod_subnet,
            PodNetwork::Kubenet | PodNetwork::AzureOverlay => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePool {
    pub name: String,
    pub count: u32,
    pub os_type: OsType,
    /// The pool's own maxPods, or the cluster's, or the plugin default.
    pub max_pods: u32,
}

/// A ClusterIP service. In the model `backends` is how many pods serve it; the plan
/// resolves them to pods (`plan::ServicePlan`, the same type with a list of backends),
/// so the frontend is declared once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service<Backends = u32> {
    pub name: String,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub target_port: u16,
    pub protocol: Protocol,
    pub backends: Backends,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalHosts {
    pub internet: Ipv4Addr,
    pub on_prem: OnPremNetwork,
}
