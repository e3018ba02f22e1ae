//! The cluster description exactly as a user writes it (YAML). Field names follow
//! `az aks create` and the AKS API. Optional fields stay `None` here; `validate` fills
//! in the AKS defaults, so a description round-trips unchanged through serde.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::cidr::Ipv4Cidr;

/// A cluster as described in YAML, before defaults and validation.
// Unknown fields are errors everywhere: a typo such as `maxPod` must not silently fall
// back to a default and plan a different cluster than the one intended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterDescription {
    /// Short name; prefixes every namespace and interface aksnet creates.
    #[serde(deserialize_with = "required_name")]
    pub name: String,
    pub network_plugin: NetworkPlugin,
    /// `overlay` with `networkPlugin: azure`: Azure CNI Overlay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_plugin_mode: Option<NetworkPluginMode>,
    pub datapath: Datapath,
    pub vnet: Vnet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<Ipv4Cidr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_cidr: Option<Ipv4Cidr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_service_ip: Option<Ipv4Addr>,
    /// Cluster-wide default for `nodePools[].maxPods`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pods: Option<u32>,
    pub node_pools: Vec<NodePoolDescription>,
    /// Pods aksnet really creates on each node (each one is a network namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods_per_node: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_masquerade_cidrs: Option<Vec<Ipv4Cidr>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceDescription>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_hosts: Option<ExternalHostsDescription>,
    /// Inbound NSG rules of the node subnet (enforced statefully in the fabric).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nsg: Vec<super::nsg::SecurityRuleDescription>,
    /// Conntrack and SNAT settings of the eBPF datapath.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conntrack: Option<super::conntrack::ConntrackDescription>,
    /// How the cluster reaches the internet: `loadBalancer` (the default),
    /// `managedNATGateway`, `userDefinedRouting` or `none`, as in AKS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_type: Option<super::outbound::OutboundType>,
    /// The network policy engine (`az aks create --network-policy`); default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<super::policy::NetworkPolicyEngine>,
    /// Namespace and labels of pod slot i on every node (see `model::policy`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_templates: Vec<super::policy::PodTemplateDescription>,
    /// Labels of Kubernetes namespaces, for namespaceSelector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<super::policy::NamespaceDescription>,
    /// Kubernetes NetworkPolicy objects (networking.k8s.io/v1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_policies: Vec<super::policy::NetworkPolicyDescription>,
    /// The load balancer's outbound rule (`allocatedOutboundPorts`,
    /// `idleTimeoutInMinutes`), as AKS's `networkProfile.loadBalancerProfile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_profile: Option<super::outbound::LoadBalancerProfileDescription>,
    /// userDefinedRouting: the firewall's DNAT rules (`natRules`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<super::outbound::FirewallDescription>,
}

/// `name: null` (also `name: ~` or `name:` with nothing after it) is a missing name, not
/// a cluster called "null" (a quoted `"null"` is a name, and fails validation as such).
fn required_name<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Option::<String>::deserialize(deserializer)?.ok_or_else(|| {
        serde::de::Error::custom("name is null; give the cluster a name, e.g. `name: demo`")
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkPlugin {
    /// Azure CNI: pods take addresses from the VNet.
    Azure,
    /// kubenet: pods take addresses from a private pod CIDR, one /24 per node.
    Kubenet,
}

/// `az aks create --network-plugin-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkPluginMode {
    /// Azure CNI Overlay: pods take addresses from the private `podCidr`, one /24 per
    /// node; the VNet carries only node addresses.
    Overlay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Datapath {
    /// BPF programs in the node namespaces, Cilium style.
    Ebpf,
    /// Bridge, kernel routing and iptables, kube-proxy style.
    Iptables,
}

/// The VNet the nodes (and, with Azure CNI, the pods) live in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Vnet {
    pub address_space: Ipv4Cidr,
    pub node_subnet: Ipv4Cidr,
    /// Azure CNI only: a separate subnet for pod addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_subnet: Option<Ipv4Cidr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OsType {
    Linux,
    Windows,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodePoolDescription {
    pub name: String,
    pub count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_type: Option<OsType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pods: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

/// A service; its backends are the first `backends` pods, round-robin over nodes. The
/// external fields are checked and allocated in `model::loadbalancer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceDescription {
    pub name: String,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Ipv4Addr,
    pub port: u32,
    /// Defaults to `port`, as in Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
    /// Defaults to TCP, as in Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    pub backends: u32,
    /// `ClusterIP` (the default), `NodePort` or `LoadBalancer`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub service_type: Option<super::loadbalancer::ServiceType>,
    /// NodePort/LoadBalancer: a port in 30000–32767; allocated when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u32>,
    /// NodePort/LoadBalancer: `Cluster` (the default) or `Local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<super::loadbalancer::ExternalTrafficPolicy>,
    /// LoadBalancer: the only client prefixes allowed (AKS writes them as NSG rules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancer_source_ranges: Vec<Ipv4Cidr>,
    /// LoadBalancer: a fixed public frontend address; allocated when left out.
    #[serde(
        default,
        rename = "loadBalancerIP",
        skip_serializing_if = "Option::is_none"
    )]
    pub load_balancer_ip: Option<Ipv4Addr>,
}

/// Hosts outside the cluster that pods talk to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalHostsDescription {
    /// A server "on the internet", reached through SNAT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internet: Option<Ipv4Addr>,
    /// A network reached over "ExpressRoute", without NAT from the VNet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_prem: Option<OnPremNetwork>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OnPremNetwork {
    pub cidr: Ipv4Cidr,
    pub host: Ipv4Addr,
}

// Display uses the YAML spelling, so messages and tables show what the user writes.
macro_rules! display_as_yaml {
    ($($type:ty { $($variant:ident => $text:literal),+ })+) => {$(
        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(match self { $(Self::$variant => $text),+ })
            }
        }
    )+};
}

/// The four ways AKS gives pods their addresses today, derived from `networkPlugin`,
/// `networkPluginMode` and `vnet.podSubnet` (concepts-network-cni-overview.md). Defaults and
/// rules that differ between them (maxPods, ip-masq-agent, address demand) key on this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PodNetwork {
    /// kubenet: a /24 of the private pod CIDR per node, one UDR per node.
    Kubenet,
    /// Azure CNI Node Subnet (legacy "Azure CNI"): pods take node subnet addresses,
    /// maxPods of them reserved per node up front.
    AzureNodeSubnet,
    /// Azure CNI Pod Subnet: pods take addresses of a separate VNet subnet.
    AzurePodSubnet,
    /// Azure CNI Overlay: a /24 of the private pod CIDR per node, no VNet routes for pods;
    /// the default for new clusters (concepts-network-azure-cni-overlay.md).
    AzureOverlay,
}

impl PodNetwork {
    /// The AKS name of the model, as the docs spell it.
    pub fn title(self) -> &'static str {
        match self {
            PodNetwork::Kubenet => "kubenet",
            PodNetwork::AzureNodeSubnet => "Azure CNI Node Subnet",
            PodNetwork::AzurePodSubnet => "Azure CNI Pod Subnet",
            PodNetwork::AzureOverlay => "Azure CNI Overlay",
        }
    }

    /// Pods take addresses from the private `podCidr`, a /24 per node (kubenet, Overlay).
    pub fn private_pod_cidr(self) -> bool {
        matches!(self, PodNetwork::Kubenet | PodNetwork::AzureOverlay)
    }
}

impl ClusterDescription {
    /// Which of the AKS models this description asks for.
    /// Validation refuses the combinations that name two models (overlay with kubenet or
    /// with a pod subnet).
    pub fn pod_network(&self) -> PodNetwork {
        match (
            self.network_plugin,
            self.network_plugin_mode,
            self.vnet.pod_subnet,
        ) {
            (NetworkPlugin::Kubenet, _, _) => PodNetwork::Kubenet,
            (NetworkPlugin::Azure, Some(NetworkPluginMode::Overlay), _) => PodNetwork::AzureOverlay,
            (NetworkPlugin::Azure, None, None) => PodNetwork::AzureNodeSubnet,
            (NetworkPlugin::Azure, None, Some(_)) => PodNetwork::AzurePodSubnet,
        }
    }
}

display_as_yaml! {
    NetworkPlugin { Azure => "azure", Kubenet => "kubenet" }
    Datapath { Ebpf => "ebpf", Iptables => "iptables" }
    NetworkPluginMode { Overlay => "overlay" }
    OsType { Linux => "Linux", Windows => "Windows" }
    Protocol { Tcp => "TCP", Udp => "UDP" }
}
