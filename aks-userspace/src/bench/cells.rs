//! The cells a benchmark compares: the six matrix clusters (Azure CNI with pods in the
//! node subnet, kubenet, Azure CNI Overlay, each on the eBPF or the iptables datapath) on
//! identical topologies, and the "limit": two namespaces joined by one veth pair, no
//! datapath at all. Each cell knows where its workloads run (client, server, internet
//! host, service) and removes itself when dropped, so an error or Ctrl-C anywhere leaves
//! nothing behind.

use std::fmt;
use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::cost::ClusterPrograms;
use crate::cluster::{self, RunningCluster};
use crate::model::{self, NetworkPlugin, NetworkPluginMode};
use crate::plan::{self, Plan};
use crate::topology::{self, InterfaceSpec, NamespaceSpec, VethSpec};

/// Nodes and pods of every cluster cell: two pods per node; the client is the first
/// node's first pod, the server the second node's first pod (pod → pod crosses the
/// VNet), and the first node's second pod is the same-node server.
pub const NODES: u32 = 2;
pub const PODS_PER_NODE: u32 = 2;

/// The ClusterIP service every cluster cell carries: backed by the first node's pod,
/// probed from the second node's pod (so the DNAT happens on the client's node).
pub const SERVICE_IP_BASE: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 0);
pub const SERVICE_PORT: u16 = 80;
pub const SERVICE_TARGET_PORT: u16 = 8080;

/// The benchmark's service CIDR when the default /16 is too small (more than
/// [`SERVICES_IN_DEFAULT_CIDR`] services), and the most services it takes.
const LARGE_SERVICE_CIDR: &str = "10.0.0.0/14";
const SERVICES_IN_DEFAULT_CIDR: usize = 60_000;
pub const MAX_SERVICES: usize = 200_000;

/// Addresses of the limit cell's veth pair (they exist only inside its two namespaces).
const LIMIT_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const LIMIT_SERVER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum CellKind {
    Cluster {
        plugin: NetworkPlugin,
        /// `networkPluginMode`: `Some(Overlay)` with `azure` is Azure CNI Overlay.
        mode: Option<NetworkPluginMode>,
        datapath: model::Datapath,
    },
    /// Two namespaces, one veth pair, no datapath: what the kernel does at best here.
    Limit,
}

impl CellKind {
    /// Every cell, in the order the table shows them (and each round measures them). The
    /// Overlay cells come after the four original ones, so those keep their places (and
    /// their colours in the plot) from earlier runs.
    pub const ALL: [CellKind; 7] = [
        Self::cluster(NetworkPlugin::Azure, model::Datapath::Ebpf),
        Self::cluster(NetworkPlugin::Azure, model::Datapath::Iptables),
        Self::cluster(NetworkPlugin::Kubenet, model::Datapath::Ebpf),
        Self::cluster(NetworkPlugin::Kubenet, model::Datapath::Iptables),
        Self::overlay(model::Datapath::Ebpf),
        Self::overlay(model::Datapath::Iptables),
        Self::Limit,
    ];

    /// The baseline every ratio is taken against (besides the limit).
    pub const BASELINE: CellKind = Self::cluster(NetworkPlugin::Kubenet, model::Datapath::Iptables);

    /// A cluster cell without a `networkPluginMode` (Azure CNI Node Subnet or kubenet).
    pub const fn cluster(plugin: NetworkPlugin, datapath: model::Datapath) -> Self {
        Self::Cluster {
            plugin,
            mode: None,
            datapath,
        }
    }

    /// An Azure CNI Overlay cell.
    pub const fn overlay(datapath: model::Datapath) -> Self {
        Self::Cluster {
            plugin: NetworkPlugin::Azure,
            mode: Some(NetworkPluginMode::Overlay),
            datapath,
        }
    }

    /// A short tag for names: `ae`, `ai`, `ke`, `ki`, `oe`, `oi`, `lim`.
    fn tag(self) -> &'static str {
        use model::Datapath::{Ebpf, Iptables};
        use NetworkPlugin::{Azure, Kubenet};
        let Some((plugin, mode, datapath)) = self.network() else {
            return "lim";
        };
        match (mode, plugin, datapath) {
            (Some(NetworkPluginMode::Overlay), _, Ebpf) => "oe",
            (Some(NetworkPluginMode::Overlay), _, Iptables) => "oi",
            (None, Azure, Ebpf) => "ae",
            (None, Azure, Iptables) => "ai",
            (None, Kubenet, Ebpf) => "ke",
            (None, Kubenet, Iptables) => "ki",
        }
    }

    /// The plan of this cell's cluster named `name`, with `services` ClusterIP services
    /// (see `cluster_description`); the limit is no cluster.
    pub fn plan(self, name: &str, services: usize) -> Result<Plan> {
        let Some((plugin, mode, datapath)) = self.network() else {
            bail!("the {self} cell is no cluster and has no plan");
        };
        plan_for(&cluster_description(name, plugin, mode, datapath, services))
    }

    /// The description (YAML) of this cell's cluster named `name` with `services`
    /// ClusterIP services, for a benchmark that adds to it (the policy sweep).
    pub fn description(self, name: &str, services: usize) -> Result<String> {
        let Some((plugin, mode, datapath)) = self.network() else {
            bail!("the {self} cell is no cluster and has no description");
        };
        Ok(cluster_description(name, plugin, mode, datapath, services))
    }

    /// A cluster cell's plugin, plugin mode and datapath.
    fn network(self) -> Option<(NetworkPlugin, Option<NetworkPluginMode>, model::Datapath)> {
        match self {
            Self::Cluster {
                plugin,
                mode,
                datapath,
            } => Some((plugin, mode, datapath)),
            Self::Limit => None,
        }
    }

    pub fn datapath(self) -> Option<model::Datapath> {
        match self {
            Self::Cluster { datapath, .. } => Some(datapath),
            Self::Limit => None,
        }
    }
}

impl fmt::Display for CellKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cluster {
                plugin,
                mode: None,
                datapath,
            } => write!(f, "{plugin}/{datapath}"),
            Self::Cluster {
                plugin,
                mode: Some(mode),
                datapath,
            } => write!(f, "{plugin}-{mode}/{datapath}"),
            Self::Limit => f.write_str("limit"),
        }
    }
}

/// A namespace and the address a workload uses in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub namespace: String,
    pub address: Ipv4Addr,
}

/// Where a ClusterIP workload connects from and to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceTarget {
    pub client: Place,
    pub backend: Place,
    pub backend_port: u16,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
}

/// A cell that exists: its places, and what removes it again.
pub struct Cell {
    pub kind: CellKind,
    /// The cluster name (or, for the limit, the namespace prefix's stem).
    pub name: String,
    /// Pod on the first node (limit: namespace a).
    pub client: Place,
    /// Pod on the second node (limit: namespace b).
    pub server: Place,
    /// The first node's second pod (limit: namespace b).
    pub same_node_server: Place,
    /// The two nodes themselves, for node → node through the VNet (limit: a, b).
    pub node_client: Place,
    pub node_server: Place,
    /// The internet host, reached through SNAT (limit: namespace b, no NAT).
    pub internet: Place,
    /// The cell's service, where the datapath serves ClusterIPs.
    pub service: Option<ServiceTarget>,
    pub running: Option<RunningCluster>,
    /// The cell's BPF programs, whose run time the benchmark reads.
    pub programs: Option<ClusterPrograms>,
    limit_namespaces: Vec<String>,
}

impl Cell {
    /// Builds the cell `kind` named `{prefix}{tag}`.
    pub fn create(kind: CellKind, prefix: &str) -> Result<Self> {
        let name = format!("{prefix}{}", kind.tag());
        match kind {
            CellKind::Cluster { .. } => {
                let plan = kind.plan(&name, 1)?;
                // Both datapaths answer ClusterIPs; the limit cell has none.
                let service = service_target(&plan, plan.services.len() - 1)?;
                Self::from_plan(kind, &plan, Some(service))
            }
            CellKind::Limit => create_limit(&name),
        }
    }

    /// Builds a cluster cell from `plan` (the service sweep builds its own plans).
    pub fn from_plan(kind: CellKind, plan: &Plan, service: Option<ServiceTarget>) -> Result<Self> {
        let pod = |node: usize, index: usize| -> Result<Place> {
            let p = plan
                .nodes
                .get(node)
                .and_then(|n| n.pods.get(index))
                .with_context(|| {
                    format!("cluster {} has no pod {index} on node {node}", plan.name)
                })?;
            Ok(Place {
                namespace: format!("{}{}", topology::layout::prefix(&plan.name), p.name),
                address: p.ip,
            })
        };
        let (client, server, same_node_server) = (pod(0, 0)?, pod(1, 0)?, pod(0, 1)?);
        let running = cluster::create(plan)?;
        let node = |i: usize| -> Result<Place> {
            let n = running
                .state
                .nodes
                .get(i)
                .with_context(|| format!("cluster {} has no node {i}", plan.name))?;
            Ok(Place {
                namespace: n.namespace.clone(),
                address: n.address,
            })
        };
        let (node_client, node_server) = (node(0)?, node(1)?);
        let programs = match kind.datapath() {
            Some(model::Datapath::Ebpf) => {
                let nodes: Vec<String> =
                    running.state.nodes.iter().map(|n| n.name.clone()).collect();
                Some(ClusterPrograms::of(&plan.name, &nodes)?)
            }
            _ => None,
        };
        let internet = Place {
            namespace: running.state.internet.namespace.clone(),
            address: running.state.internet.address,
        };
        anyhow::ensure!(
            running.state.nodes[0].pods[0].namespace == client.namespace,
            "the layout names pod namespaces differently than the benchmark expects"
        );
        Ok(Self {
            kind,
            name: plan.name.clone(),
            client,
            server,
            same_node_server,
            node_client,
            node_server,
            internet,
            service,
            running: Some(running),
            programs,
            limit_namespaces: Vec::new(),
        })
    }

    /// Removes the cell now (dropping it does the same, ignoring errors).
    pub fn remove(mut self) -> Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        if let Some(running) = self.running.take() {
            drop(running);
            cluster::remove(&self.name)
                .with_context(|| format!("removing benchmark cluster {}", self.name))?;
        }
        if !self.limit_namespaces.is_empty() {
            topology::teardown(&std::mem::take(&mut self.limit_namespaces))
                .with_context(|| format!("removing the limit cell {}", self.name))?;
        }
        Ok(())
    }
}

impl Drop for Cell {
    fn drop(&mut self) {
        if let Err(err) = self.teardown() {
            eprintln!("warning: {err:#}");
        }
    }
}

/// The description of a benchmark cluster: 2 nodes × 2 pods, and `services` ClusterIP
/// services (port 80 → 8080, one backend: the first node's pod). The last one is the
/// one the workloads use, so on iptables it is the last rule of `KUBE-SERVICES`. Every
/// model has the same VNet and node subnet; maxPods is each model's AKS default.
fn cluster_description(
    name: &str,
    plugin: NetworkPlugin,
    mode: Option<NetworkPluginMode>,
    datapath: model::Datapath,
    services: usize,
) -> String {
    let (max_pods, mode_fields) = match (plugin, mode) {
        // Overlay pods come from the private podCidr (AKS's default range), one /24 per
        // node, and never from the VNet.
        (_, Some(mode)) => (
            250,
            format!("networkPluginMode: {mode}\npodCidr: 10.244.0.0/16\n"),
        ),
        (NetworkPlugin::Azure, None) => (30, String::new()),
        (NetworkPlugin::Kubenet, None) => (110, String::new()),
    };
    let mut yaml = format!(
        "name: {name}\nnetworkPlugin: {plugin}\n{mode_fields}datapath: {datapath}\nvnet:\n  addressSpace: 10.224.0.0/12\n  nodeSubnet: 10.224.0.0/24\nmaxPods: {max_pods}\nnodePools:\n  - {{ name: nodepool1, count: {NODES}, osType: Linux }}\npodsPerNode: {PODS_PER_NODE}\n"
    );
    // Egress by NAT gateway (64,512 ports shared), not the default load balancer: its
    // 1,024 ports per node to one destination run out within the first thousand of the
    // connection workloads' flows to the internet host (see README, "Egress").
    yaml.push_str("outboundType: managedNATGateway\n");
    if services > SERVICES_IN_DEFAULT_CIDR {
        yaml.push_str(&format!("serviceCidr: {LARGE_SERVICE_CIDR}\n"));
    }
    if services > 0 {
        yaml.push_str("services:\n");
        for i in 0..services {
            yaml.push_str(&format!(
                "  - {{ name: svc-{i}, clusterIP: {}, port: {SERVICE_PORT}, targetPort: {SERVICE_TARGET_PORT}, backends: 1 }}\n",
                service_ip(i)
            ));
        }
    }
    yaml
}

/// The clusterIP of the `i`-th benchmark service: 10.0.1.0 onwards (clear of the
/// network address, `kubernetes` and the DNS service at the start of 10.0.0.0/16).
pub fn service_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(SERVICE_IP_BASE) + i as u32)
}

pub(super) fn plan_for(yaml: &str) -> Result<Plan> {
    let cluster = model::load(yaml).context("the benchmark's cluster description is invalid")?;
    plan::plan(&cluster).context("planning the benchmark cluster")
}

/// The `index`-th service of `plan`, probed from the second node's pod.
pub fn service_target(plan: &Plan, index: usize) -> Result<ServiceTarget> {
    let service = plan
        .services
        .get(index)
        .with_context(|| format!("cluster {} has no service {index}", plan.name))?;
    let backend = service
        .backends
        .first()
        .with_context(|| format!("service {} has no backend", service.name))?;
    let prefix = topology::layout::prefix(&plan.name);
    let client = plan
        .nodes
        .get(1)
        .and_then(|n| n.pods.first())
        .with_context(|| format!("cluster {} has no pod on its second node", plan.name))?;
    Ok(ServiceTarget {
        client: Place {
            namespace: format!("{prefix}{}", client.name),
            address: client.ip,
        },
        backend: Place {
            namespace: format!("{prefix}{}", backend.pod),
            address: backend.ip,
        },
        backend_port: backend.port,
        cluster_ip: service.cluster_ip,
        port: service.port,
    })
}

fn create_limit(name: &str) -> Result<Cell> {
    let prefix = topology::layout::prefix(name);
    let a = format!("{prefix}a");
    let b = format!("{prefix}b");
    let strays = crate::netns::list_with_prefix(&prefix)?;
    if !strays.is_empty() {
        bail!(
            "namespaces named {prefix}* exist already ({}): an earlier benchmark was killed? remove them with `ip netns del`",
            strays.join(", ")
        );
    }
    let iface = |address| InterfaceSpec {
        name: "eth0".into(),
        addresses: vec![(address, 30)],
        proxy_arp: false,
    };
    let mut client = NamespaceSpec::new(&a, false);
    client.veths = vec![VethSpec {
        name: "eth0".into(),
        mac: [0x02, 0x99, 0, 0, 0, 1],
        peer_namespace: b.clone(),
        peer_name: "eth0".into(),
        peer_mac: [0x02, 0x99, 0, 0, 0, 2],
        mtu: None,
    }];
    client.interfaces = vec![iface(LIMIT_CLIENT)];
    let mut server = NamespaceSpec::new(&b, false);
    server.interfaces = vec![iface(LIMIT_SERVER)];
    topology::build(&[client, server]).context("building the limit cell")?;
    let server = Place {
        namespace: b.clone(),
        address: LIMIT_SERVER,
    };
    let client = Place {
        namespace: a.clone(),
        address: LIMIT_CLIENT,
    };
    // Every path of the limit cell is its one veth pair: the least any path costs.
    Ok(Cell {
        kind: CellKind::Limit,
        name: name.to_owned(),
        node_client: client.clone(),
        client,
        internet: server.clone(),
        same_node_server: server.clone(),
        node_server: server.clone(),
        server,
        service: None,
        running: None,
        programs: None,
        limit_namespaces: vec![a, b],
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;
    use crate::cidr::Ipv4Cidr;

    fn plan_of(kind: CellKind) -> Plan {
        kind.plan("bnx", 1).expect("plans")
    }

    #[test]
    fn every_cluster_cell_plans_the_same_topology() {
        let clusters: Vec<CellKind> = CellKind::ALL
            .into_iter()
            .filter(|k| *k != CellKind::Limit)
            .collect();
        assert_eq!(clusters.len(), 6, "three pod networks × two datapaths");
        for kind in clusters {
            let plan = plan_of(kind);
            assert_eq!(plan.nodes.len(), NODES as usize, "{kind}");
            assert!(plan.nodes.iter().all(|n| n.pods.len() == 2), "{kind}");
            let target = service_target(&plan, 0).expect("a service");
            assert_eq!(target.backend.address, plan.nodes[0].pods[0].ip);
            assert_eq!(target.client.address, plan.nodes[1].pods[0].ip);
        }
    }

    #[test]
    fn overlay_cells_take_pods_from_the_pod_cidr_on_the_baselines_nodes() {
        let pod_cidr = Ipv4Cidr::from_str("10.244.0.0/16").expect("a CIDR");
        let node_subnet = Ipv4Cidr::from_str("10.224.0.0/24").expect("a CIDR");
        let baseline = plan_of(CellKind::BASELINE);
        for datapath in [model::Datapath::Ebpf, model::Datapath::Iptables] {
            let kind = CellKind::overlay(datapath);
            assert!(CellKind::ALL.contains(&kind), "{kind} is measured");
            let plan = plan_of(kind);
            assert_eq!(plan.pod_network, model::PodNetwork::AzureOverlay, "{kind}");
            assert_eq!(plan.nodes.len(), baseline.nodes.len(), "{kind}");
            for (node, base) in plan.nodes.iter().zip(&baseline.nodes) {
                assert!(node_subnet.contains(node.ip), "{kind}: node {}", node.ip);
                assert_eq!(node.ip, base.ip, "{kind}: the same node addresses");
                assert_eq!(node.pods.len(), base.pods.len(), "{kind}");
                for pod in &node.pods {
                    assert!(pod_cidr.contains(pod.ip), "{kind}: pod {}", pod.ip);
                }
            }
            // Each node its own /24 of podCidr.
            let third = |n: usize| plan.nodes[n].pods[0].ip.octets()[2];
            assert_ne!(third(0), third(1), "{kind}");
        }
    }

    #[test]
    fn every_cell_has_its_own_tag_and_name() {
        let tags: std::collections::BTreeSet<&str> =
            CellKind::ALL.iter().map(|k| k.tag()).collect();
        assert_eq!(tags.len(), CellKind::ALL.len());
        assert_eq!(
            CellKind::overlay(model::Datapath::Ebpf).to_string(),
            "azure-overlay/ebpf"
        );
        assert_eq!(
            CellKind::overlay(model::Datapath::Iptables).to_string(),
            "azure-overlay/iptables"
        );
    }

    #[test]
    fn ten_thousand_services_fit_the_default_service_cidr() {
        let yaml = cluster_description(
            "bnx",
            NetworkPlugin::Kubenet,
            None,
            model::Datapath::Iptables,
            10_000,
        );
        let plan = plan_for(&yaml).expect("plans");
        assert_eq!(plan.services.len(), 10_000);
        assert_eq!(
            plan.services.last().map(|s| s.cluster_ip),
            Some(Ipv4Addr::new(10, 0, 40, 15))
        );
    }
}
