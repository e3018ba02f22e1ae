//! The address plan of a validated cluster: which node and pod gets which address, what
//! the VNet routes where, which pods back which service. The namespace builder and the
//! datapath loaders consume this; `aksnet plan` prints it.

pub mod maps;
mod notes;
mod render;
mod usage;

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::cidr::Ipv4Cidr;
use crate::model::capacity::{self, FIRST_ASSIGNABLE_INDEX, KUBENET_NODE_POD_PREFIX};
use crate::model::{
    Cluster, Datapath, ExternalHosts, NetworkPlugin, OsType, PlanError, PodNetwork,
};

pub use maps::MapCapacities;
pub use render::{render, services_table};
pub use usage::{PodCidrUsage, PoolUsage, SubnetUsage, Warning};

/// Everything later stages need to build the cluster, derived only from the `Cluster`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub name: String,
    pub network_plugin: NetworkPlugin,
    /// Which AKS model: kubenet, Node Subnet, Pod Subnet or Overlay.
    pub pod_network: PodNetwork,
    pub datapath: Datapath,
    pub address_space: Ipv4Cidr,
    pub node_subnet: Ipv4Cidr,
    pub pod_subnet: Option<Ipv4Cidr>,
    pub pod_cidr: Option<Ipv4Cidr>,
    pub service_cidr: Ipv4Cidr,
    pub dns_service_ip: Ipv4Addr,
    /// Nodes in pool order, then index order.
    pub nodes: Vec<Node>,
    /// What the VNet (the vnet namespace) routes to nodes.
    pub route_table: Vec<RouteTableEntry>,
    pub services: Vec<ServicePlan>,
    pub external_hosts: ExternalHosts,
    /// Destinations a pod reaches with its own address; everything else is masqueraded
    /// to the node address (ip-masq-agent).
    pub non_masquerade_cidrs: Vec<Ipv4Cidr>,
    /// Inbound NSG rules in priority order.
    pub nsg: Vec<crate::model::nsg::SecurityRule>,
    /// NodePort and LoadBalancer services (node ports, frontends, policies).
    pub exposures: Vec<crate::model::loadbalancer::Exposure>,
    /// Egress to the internet (`outboundType`).
    pub outbound: crate::model::outbound::Outbound,
    /// Conntrack and SNAT settings (eBPF datapath).
    pub conntrack: crate::model::conntrack::ConntrackSettings,
    /// Network policy: engine, namespaces, policies (pod identities are on each pod).
    pub policy: crate::model::policy::PolicyModel,
    /// Sizes of the eBPF datapath's maps per node (the compiled ones unless the
    /// description needs more).
    pub maps: MapCapacities,
    pub subnet_usage: Vec<SubnetUsage>,
    pub pod_cidr_usage: Option<PodCidrUsage>,
    pub warnings: Vec<Warning>,
    /// Where today's AKS differs from the study chapter, for this model (sources named).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// `<pool>-<index in pool>`, e.g. `nodepool1-0`.
    pub name: String,
    pub pool: String,
    pub os_type: OsType,
    /// Position over the whole cluster (0-based); fixes this node's addresses.
    pub index: usize,
    /// Address of the node's NIC in the node subnet.
    pub ip: Ipv4Addr,
    pub max_pods: u32,
    /// kubenet and Overlay: this node's /24 of the pod CIDR (the bridge `cbr0` holds its
    /// .1 on the iptables datapath).
    pub pod_cidr: Option<Ipv4Cidr>,
    /// Address pods use as their default gateway: the bridge address (kubenet), or `None`
    /// for Azure CNI, where pods route via the node (the emulation picks a link address).
    pub pod_gateway: Option<Ipv4Addr>,
    /// Azure CNI: the addresses assigned to this node's NIC: `max_pods` of them up front
    /// (Node Subnet), or the batches of 16 its pods need (Pod Subnet).
    pub pod_block: Option<AddressBlock>,
    /// The pods aksnet creates on this node.
    pub pods: Vec<Pod>,
}

/// A run of consecutive addresses, first and last included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressBlock {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    /// `<node>-pod<slot>`, e.g. `nodepool1-0-pod1`.
    pub name: String,
    pub node: String,
    /// Position on its node (0-based).
    pub slot: u32,
    pub ip: Ipv4Addr,
    /// Kubernetes namespace, from the slot's pod template.
    pub namespace: String,
    /// Labels, from the slot's pod template.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: crate::model::policy::Labels,
}

/// How the VNet knows a route: a user-defined route (kubenet) or the SDN's own knowledge
/// of the addresses assigned to each NIC (Azure CNI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RouteSource {
    /// kubenet: AKS writes one UDR per node: node /24 → node IP.
    UserDefinedRoute,
    /// Azure CNI: pod addresses are secondary addresses of the node NIC.
    NicAddress,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteTableEntry {
    pub destination: Ipv4Cidr,
    pub next_hop: Ipv4Addr,
    pub node: String,
    pub source: RouteSource,
}

/// A service with its backends resolved to pods.
pub type ServicePlan = crate::model::Service<Vec<Backend>>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    pub pod: String,
    pub node: String,
    pub ip: Ipv4Addr,
    pub port: u16,
}

impl Plan {
    /// Every pod of the cluster, node by node.
    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.nodes.iter().flat_map(|node| node.pods.iter())
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|node| node.name == name)
    }
}

/// Lay out the addresses of `cluster`. Validation has already shown that everything
/// fits; an address that does not exist still becomes an error rather than a panic.
pub fn plan(cluster: &Cluster) -> Result<Plan, PlanError> {
    let nodes = place_nodes(cluster)?;
    let route_table = match cluster.pod_network {
        // The point of Overlay: the VNet never learns a pod route.
        PodNetwork::AzureOverlay => Vec::new(),
        _ => route_table(&nodes),
    };
    let services = place_services(cluster, &nodes);
    let (subnet_usage, pod_cidr_usage, mut warnings) = usage::usage(cluster);
    let maps = match maps::capacities(
        &nodes,
        &route_table,
        &services,
        &cluster.non_masquerade_cidrs,
    ) {
        Ok(maps) => maps,
        Err(err) if cluster.datapath == Datapath::Ebpf => return Err(err),
        // The iptables datapath has no maps to size.
        Err(_) => MapCapacities::default(),
    };
    let namespaces = maps::namespaces(&nodes);
    if namespaces > maps::MANY_NAMESPACES {
        warnings.push(Warning {
            field: "podsPerNode".into(),
            message: format!(
                "{namespaces} network namespaces (one per pod and node); above {} `up` and `down` take minutes",
                maps::MANY_NAMESPACES
            ),
        });
    }
    Ok(Plan {
        name: cluster.name.clone(),
        network_plugin: cluster.network_plugin,
        pod_network: cluster.pod_network,
        datapath: cluster.datapath,
        address_space: cluster.vnet.address_space,
        node_subnet: cluster.vnet.node_subnet,
        pod_subnet: cluster.vnet.pod_subnet,
        pod_cidr: cluster.pod_cidr,
        service_cidr: cluster.service_cidr,
        dns_service_ip: cluster.dns_service_ip,
        nodes,
        route_table,
        services,
        external_hosts: cluster.external_hosts.clone(),
        non_masquerade_cidrs: cluster.non_masquerade_cidrs.clone(),
        nsg: cluster.nsg.clone(),
        exposures: cluster.exposures.clone(),
        outbound: cluster.outbound.clone(),
        conntrack: cluster.conntrack.clone(),
        policy: cluster.policy.clone(),
        maps,
        subnet_usage,
        pod_cidr_usage,
        warnings,
        notes: notes::notes(cluster),
    })
}

fn out_of_range(field: &str, cidr: Ipv4Cidr, what: &str) -> PlanError {
    PlanError::invalid(field, format!("{cidr} has no room for {what}"))
}

/// Node IPs: the node subnet from its first assignable address (.4), in node order.
/// Azure CNI pods: after all node IPs (or from the pod subnet's .4), each node owns a
/// block of maxPods addresses in node order, so adding pods never moves another node's
/// addresses. kubenet pods: node i gets the i-th /24 of the pod CIDR, .1 for the bridge,
/// pods from .2.
fn place_nodes(cluster: &Cluster) -> Result<Vec<Node>, PlanError> {
    let node_subnet = cluster.vnet.node_subnet;
    let node_count = cluster.node_count();
    let (pod_range, mut next_pod_index) = match cluster.azure_pod_subnet() {
        Some(subnet) if cluster.vnet.pod_subnet.is_some() => (Some(subnet), FIRST_ASSIGNABLE_INDEX),
        Some(subnet) => (Some(subnet), FIRST_ASSIGNABLE_INDEX + node_count),
        None => (None, 0),
    };
    // Node Subnet reserves maxPods per node up front; Pod Subnet hands out batches of 16
    // as pods start, so a node holds only the batches its pods need.
    let pod_batches = capacity::pod_subnet_batches(u64::from(cluster.pods_per_node));
    let block_size = |pool: &crate::model::NodePool| match cluster.pod_network {
        PodNetwork::AzurePodSubnet => pod_batches * capacity::POD_SUBNET_BATCH,
        _ => u64::from(pool.max_pods),
    };
    let mut nodes = Vec::new();
    for pool in &cluster.node_pools {
        for in_pool in 0..pool.count {
            let index = nodes.len();
            let name = format!("{}-{in_pool}", pool.name);
            let ip = node_subnet
                .nth(FIRST_ASSIGNABLE_INDEX + index as u64)
                .ok_or_else(|| out_of_range("vnet.nodeSubnet", node_subnet, &name))?;
            let pod_ip = |slot: u32| -> Result<Ipv4Addr, PlanError> {
                match (pod_range, cluster.pod_cidr) {
                    (Some(range), _) => range
                        .nth(next_pod_index + u64::from(slot))
                        .ok_or_else(|| out_of_range("vnet", range, &format!("pods of {name}"))),
                    (None, Some(pod_cidr)) => pod_cidr
                        .subnet(KUBENET_NODE_POD_PREFIX, index as u64)
                        .and_then(|block| block.nth(2 + u64::from(slot)))
                        .ok_or_else(|| {
                            out_of_range("podCidr", pod_cidr, &format!("pods of {name}"))
                        }),
                    (None, None) => Err(PlanError::invalid("podCidr", "kubenet needs a pod CIDR")),
                }
            };
            let pods = (0..cluster.pods_per_node)
                .map(|slot| {
                    let identity = cluster.policy.pod_identity(slot);
                    Ok(Pod {
                        name: format!("{name}-pod{slot}"),
                        node: name.clone(),
                        slot,
                        ip: pod_ip(slot)?,
                        namespace: identity.namespace,
                        labels: identity.labels,
                    })
                })
                .collect::<Result<Vec<_>, PlanError>>()?;
            let node_pod_cidr = match pod_range {
                Some(_) => None,
                None => cluster
                    .pod_cidr
                    .and_then(|c| c.subnet(KUBENET_NODE_POD_PREFIX, index as u64)),
            };
            let pod_block = match pod_range {
                Some(range) => {
                    let last = next_pod_index + block_size(pool) - 1;
                    Some(AddressBlock {
                        first: range
                            .nth(next_pod_index)
                            .ok_or_else(|| out_of_range("vnet", range, &name))?,
                        last: range
                            .nth(last)
                            .ok_or_else(|| out_of_range("vnet", range, &name))?,
                    })
                }
                None => None,
            };
            if pod_range.is_some() {
                next_pod_index += block_size(pool);
            }
            nodes.push(Node {
                name,
                pool: pool.name.clone(),
                os_type: pool.os_type,
                index,
                ip,
                max_pods: pool.max_pods,
                pod_cidr: node_pod_cidr,
                pod_gateway: node_pod_cidr.and_then(|c| c.nth(1)),
                pod_block,
                pods,
            });
        }
    }
    Ok(nodes)
}

/// kubenet: one UDR per node for its pod /24. Azure CNI: one /32 per created pod, the
/// addresses the SDN knows live on that node's NIC (it knows the whole maxPods block;
/// the emulation only needs the pods that exist).
fn route_table(nodes: &[Node]) -> Vec<RouteTableEntry> {
    let mut routes = Vec::new();
    for node in nodes {
        match node.pod_cidr {
            Some(destination) => routes.push(RouteTableEntry {
                destination,
                next_hop: node.ip,
                node: node.name.clone(),
                source: RouteSource::UserDefinedRoute,
            }),
            None => routes.extend(node.pods.iter().filter_map(|pod| {
                Some(RouteTableEntry {
                    destination: Ipv4Cidr::new(pod.ip, 32).ok()?,
                    next_hop: node.ip,
                    node: node.name.clone(),
                    source: RouteSource::NicAddress,
                })
            })),
        }
    }
    routes
}

/// Backend b of every service is pod slot b / nodes on node b % nodes: round-robin
/// across nodes first, so even a 2-backend service spans two nodes and the cross-node
/// path is always exercised.
fn place_services(cluster: &Cluster, nodes: &[Node]) -> Vec<ServicePlan> {
    cluster
        .services
        .iter()
        .map(|service| ServicePlan {
            name: service.name.clone(),
            cluster_ip: service.cluster_ip,
            port: service.port,
            target_port: service.target_port,
            protocol: service.protocol,
            backends: (0..service.backends as usize)
                .filter_map(|b| {
                    let node = nodes.get(b % nodes.len().max(1))?;
                    let pod = node.pods.get(b / nodes.len().max(1))?;
                    Some(Backend {
                        pod: pod.name.clone(),
                        node: node.name.clone(),
                        ip: pod.ip,
                        port: service.target_port,
                    })
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;
