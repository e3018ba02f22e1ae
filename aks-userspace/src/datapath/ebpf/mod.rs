//! The eBPF datapath: one loaded object per node; `from_pod` on every pod veth,
//! `from_vnet` on the uplink (NSG rules are the fabric's); maps filled from the plan and
//! pinned with the links under `/sys/fs/bpf/aksnet/<cluster>/<node>/`.
//!
//! Submodules: the embedded object, loading and attaching it in a node's namespace
//! (`loader`, with `attach` for the TC attach modes), and reading and writing its maps (`conntrack`, `services`, `nodeports`, `stats`, `maps`).

mod attach;
mod conntrack;
mod loader;
mod logs;
mod maps;
mod nodeports;
mod object;
pub mod policy;
mod services;
mod stats;

pub use attach::{attach_ingress, TcAttachMode, TcAttachment};
pub use conntrack::{monotonic_now_ns, read_pinned_flows, GcReport, Timeouts};
pub use loader::NodeDatapath;
pub use logs::{NodeLog, NodeLogStream};
pub use maps::{map_addr, open_pinned};
pub use nodeports::NodePortMaps;
pub use object::object_bytes;
pub use services::{protocol_number, ServiceMaps};
pub use stats::{events_lost, read_pinned, ReasonTotals};

use aks_ebpf_common::{
    addr, Endpoint, NodeConfig, Route, RouteKind, ROUTE_MASQUERADE, ROUTE_OVERLAY,
};
use anyhow::{Context, Result};

use super::Datapath;
use crate::cidr::Ipv4Cidr;
use crate::model::{self, PodNetwork};
use crate::netns;
use crate::plan::Plan;
use crate::state::ClusterState;
use crate::topology::layout::{Layout, NodeLayout};

pub struct EbpfDatapath {
    nodes: Vec<NodeDatapath>,
    names: Vec<String>,
    timeouts: Timeouts,
    logs: Vec<NodeLogStream>,
    pods: usize,
    routes_per_node: usize,
    /// `POLICY` keys over all nodes, and how many identities `IPCACHE` maps to.
    policy_keys: usize,
    identities: usize,
}

impl EbpfDatapath {
    /// Loads and fills every node of `layout`. On failure (a stop included) the pin
    /// directories this call created are removed again, so nothing half-made is left
    /// under the BPF filesystem; directories of nodes pinned before (a rollback's other
    /// nodes) are kept.
    pub fn install(plan: &Plan, layout: &Layout, on_stop: super::OnStop) -> Result<Self> {
        let pin_root = ClusterState::pin_dir(&plan.name);
        let root_existed = pin_root.exists();
        let created: Vec<_> = layout
            .nodes
            .iter()
            .map(|node| pin_root.join(&node.name))
            .filter(|dir| !dir.exists())
            .collect();
        let installed = Self::install_nodes(plan, layout, on_stop, &pin_root);
        if installed.is_err() {
            for dir in &created {
                let _ = std::fs::remove_dir_all(dir);
            }
            if !root_existed {
                // Only if empty: another node's pins are never removed here.
                let _ = std::fs::remove_dir(&pin_root);
            }
        }
        installed
    }

    fn install_nodes(
        plan: &Plan,
        layout: &Layout,
        on_stop: super::OnStop,
        pin_root: &std::path::Path,
    ) -> Result<Self> {
        let mut nodes = Vec::with_capacity(layout.nodes.len());
        let mut logs = Vec::with_capacity(layout.nodes.len());
        let seconds = |s: u32| u64::from(s) * 1_000_000_000;
        let timeouts = Timeouts {
            tcp_established_ns: seconds(plan.conntrack.tcp_timeout_seconds),
            tcp_closing_ns: seconds(plan.conntrack.tcp_closing_timeout_seconds),
            datagram_ns: seconds(plan.conntrack.udp_timeout_seconds),
        };
        let mut pods = 0;
        let mut routes_per_node = 0;
        // Identities are the same on every node; with no policies only 0.0.0.0/0 and the
        // pod and node addresses, and no pod is isolated.
        let identities = policy::identities(plan)?;
        let mut policy_keys = 0;
        for node in &layout.nodes {
            // A stop signal is honoured between steps (see `stop`): loading and filling
            // the maps of every node takes seconds with thousands of services.
            on_stop.check()?;
            let mut datapath = NodeDatapath::load_sized(
                &node.namespace,
                Some(&pin_root.join(&node.name)),
                plan.conntrack.max_entries,
                &plan.maps,
            )
            .with_context(|| format!("loading the eBPF datapath for node {}", node.name))?;
            logs.push(datapath.take_log_stream(&node.name)?);
            datapath.set_config(node_config(plan, node)?)?;
            let routes = node_routes(plan, node);
            routes_per_node = routes.len();
            for (cidr, route) in routes {
                datapath.upsert_route(cidr.network(), cidr.prefix(), route)?;
            }
            let node_policy = policy::node_policy(plan, &identities, &node.name)?;
            datapath.set_policy(&identities.ipcache, &node_policy.keys)?;
            policy_keys += node_policy.keys.len();
            for pod in &node.pods {
                let host_ifindex = netns::interface_index(&node.namespace, &pod.host_interface)?;
                let flags = node_policy
                    .endpoint_flags
                    .iter()
                    .find(|(ip, _)| *ip == pod.address)
                    .map_or(0, |(_, flags)| *flags);
                datapath.upsert_endpoint(
                    pod.address,
                    Endpoint {
                        host_ifindex,
                        flags,
                        pod_mac: pod.mac,
                        host_mac: pod.host_mac,
                    },
                )?;
            }
            let mut services = datapath.service_maps()?;
            for service in &plan.services {
                on_stop.check()?;
                services.upsert(service).with_context(|| {
                    format!("programming service {} on node {}", service.name, node.name)
                })?;
            }
            let mut node_ports = datapath.node_port_maps(&node.name)?;
            for exposure in &plan.exposures {
                on_stop.check()?;
                let Some(service) = plan.services.iter().find(|s| s.name == exposure.service)
                else {
                    continue;
                };
                node_ports.upsert(exposure, service).with_context(|| {
                    format!(
                        "programming the node port of service {} on node {}",
                        service.name, node.name
                    )
                })?;
            }
            // Maps first, programs second: no packet ever meets a half-filled datapath.
            datapath
                .attach_uplink(&node.uplink)
                .with_context(|| format!("attaching to the uplink of node {}", node.name))?;
            if plan.pod_network == PodNetwork::AzureOverlay {
                datapath
                    .attach_overlay(crate::topology::overlay::OVERLAY_DEVICE)
                    .with_context(|| format!("attaching to the overlay of node {}", node.name))?;
                accept_own_source_on_uplink(&node.namespace, &node.uplink)
                    .with_context(|| format!("preparing the uplink of node {}", node.name))?;
            }
            // NSG rules are the fabric's (`fabric::nsg`), enforced statefully outside
            // the node as Azure does: nothing on the node filters by NSG rule.
            for pod in &node.pods {
                datapath
                    .attach_from_pod(&pod.host_interface)
                    .with_context(|| {
                        format!("attaching to pod {} on node {}", pod.name, node.name)
                    })?;
                pods += 1;
            }
            nodes.push(datapath);
        }
        Ok(Self {
            nodes,
            names: layout.nodes.iter().map(|n| n.name.clone()).collect(),
            timeouts,
            logs,
            pods,
            routes_per_node,
            policy_keys,
            identities: identities
                .ipcache
                .iter()
                .map(|(_, id)| *id)
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
        })
    }
}

impl EbpfDatapath {
    /// How the TC programs are attached: the same on every node, since the kernel decides.
    fn tc_attach_mode(&self) -> String {
        self.nodes
            .iter()
            .find_map(NodeDatapath::tc_attach_mode)
            .map_or_else(
                || "nothing".to_owned(),
                |mode: TcAttachMode| mode.to_string(),
            )
    }
}

impl Datapath for EbpfDatapath {
    fn kind(&self) -> model::Datapath {
        model::Datapath::Ebpf
    }

    fn summary(&self) -> String {
        format!(
            "ebpf: {} nodes, from_pod on {} pod veths, from_vnet on each uplink (TC attached as {}), {} routes per node, network policy: {} POLICY keys over {} identities",
            self.nodes.len(),
            self.pods,
            self.tc_attach_mode(),
            self.routes_per_node,
            self.policy_keys,
            self.identities
        )
    }

    fn collect_garbage(&mut self) -> Result<Vec<(String, GcReport)>> {
        let now = monotonic_now_ns();
        let mut reports = Vec::with_capacity(self.nodes.len());
        for (node, name) in self.nodes.iter_mut().zip(&self.names) {
            let report = node
                .collect_garbage(&self.timeouts, now)
                .with_context(|| format!("collecting expired flows on node {name}"))?;
            reports.push((name.clone(), report));
        }
        Ok(reports)
    }

    fn flush_logs(&mut self) {
        for stream in &mut self.logs {
            stream.flush();
        }
    }
}

/// A node port flow to a backend behind the Overlay is SNATed to the node address in
/// `from_vnet` (uplink ingress) and then routed into the tunnel by the node's kernel,
/// which refuses a packet arriving with one of its own addresses as the source unless
/// the interface accepts it (`accept_local`). Set in the node's namespace only.
fn accept_own_source_on_uplink(namespace: &str, uplink: &str) -> Result<()> {
    let key = format!("/proc/sys/net/ipv4/conf/{uplink}/accept_local");
    netns::run_in(namespace, || {
        std::fs::write(&key, "1").with_context(|| format!("writing 1 to {key}"))
    })
}

fn node_config(plan: &Plan, node: &NodeLayout) -> Result<NodeConfig> {
    Ok(NodeConfig {
        node_ip: map_addr(node.address),
        uplink_ifindex: netns::interface_index(&node.namespace, &node.uplink)?,
        uplink_mac: node.uplink_mac,
        gateway_mac: node.gateway_mac,
        ready: 1,
        nat_port_min: plan.conntrack.nat_port_min,
        nat_port_max: plan.conntrack.nat_port_max,
        service_net: map_addr(plan.service_cidr.network()),
        service_mask: addr::netmask(u32::from(plan.service_cidr.prefix())),
    })
}

/// The node's `ROUTES`: its own pods, other nodes' pods (the fabric's routes), the VNet,
/// on-prem, the non-masquerade CIDRs and the default route. Each carries the
/// masquerade flag: set unless a non-masquerade CIDR covers the whole destination.
fn node_routes(plan: &Plan, node: &NodeLayout) -> Vec<(Ipv4Cidr, Route)> {
    let masquerade = |cidr: &Ipv4Cidr| {
        if plan
            .non_masquerade_cidrs
            .iter()
            .any(|n| n.contains_cidr(cidr))
        {
            0
        } else {
            ROUTE_MASQUERADE
        }
    };
    let route = |cidr: Ipv4Cidr, kind: RouteKind, next_hop: u32| {
        let flags = masquerade(&cidr);
        (
            cidr,
            Route {
                kind: kind as u32,
                next_hop,
                flags,
            },
        )
    };
    let host = |ip| Ipv4Cidr::new(ip, 32).expect("a /32 is always valid");
    let mut routes = Vec::new();
    // Broad first, specific last: later inserts of the same prefix replace earlier ones.
    routes.push(route(
        Ipv4Cidr::new(std::net::Ipv4Addr::UNSPECIFIED, 0).expect("0/0"),
        RouteKind::External,
        0,
    ));
    for cidr in &plan.non_masquerade_cidrs {
        routes.push(route(*cidr, RouteKind::Vnet, 0));
    }
    routes.push(route(plan.address_space, RouteKind::Vnet, 0));
    routes.push(route(
        plan.external_hosts.on_prem.cidr,
        RouteKind::OnPrem,
        0,
    ));
    for entry in plan.route_table.iter().filter(|e| e.node != node.name) {
        routes.push(route(
            entry.destination,
            RouteKind::RemotePods,
            map_addr(entry.next_hop),
        ));
    }
    // Overlay: the VNet has no pod routes; other nodes' pod /24s go through the tunnel.
    if plan.pod_network == PodNetwork::AzureOverlay {
        for other in plan.nodes.iter().filter(|n| n.name != node.name) {
            if let Some(pods) = other.pod_cidr {
                let (cidr, mut overlay) = route(pods, RouteKind::RemotePods, map_addr(other.ip));
                overlay.flags |= ROUTE_OVERLAY;
                routes.push((cidr, overlay));
            }
        }
    }
    for pod in &node.pods {
        routes.push(route(host(pod.address), RouteKind::LocalPod, 0));
    }
    routes
}
