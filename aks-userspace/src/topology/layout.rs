//! From the address plan to namespaces: which namespace exists, which veth joins what,
//! which addresses and routes each holds. Pure: unit-tested without root.
//!
//! ```text
//!  pod ns ──veth── node ns ──veth── vnet ns ──veth── internet ns
//!  (eth0)  (lxcN)  (eth0)   (nodeN)   │    (internet)   (eth0)
//!                                     └──veth── onprem ns
//!                                      (onprem)  (eth0)
//! ```
//!
//! - The vnet namespace plays Azure's fabric: it owns the subnet gateway (`.1`) on every
//!   node link, answers ARP for the whole subnet (proxy ARP, as Azure's SDN answers every
//!   ARP), and routes pod addresses to nodes: kubenet's route table (node /24 → node IP)
//!   or, for Azure CNI, each pod IP → its node (the NIC's secondary addresses).
//! - Nodes forward. How pods attach depends on the datapath (see [`PodWiring`]):
//!   - `ebpf`: pods are routed, not bridged (Calico/Cilium style): a pod holds its
//!     address as /32 with a default route via a link-local gateway whose MAC is the host
//!     side of its veth, set as a permanent neighbour; the node routes the pod IP /32 to
//!     that veth. The eBPF datapath attaches to the host side (`lxcN`).
//!   - `iptables`: pods are bridged, as kubenet (bridge `cbr0`) and legacy Azure CNI
//!     (bridge `azure0`) do: the host sides (`lxcN`) are ports of the bridge.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::spec::{
    BridgeSpec, InterfaceSpec, Mac, NamespaceSpec, NeighbourSpec, RouteSpec, VethSpec,
};
use crate::cidr::Ipv4Cidr;
use crate::model::{Datapath, PodNetwork};
use crate::plan::{Node, Plan, Pod};

/// The gateway address every pod routes through (never on the wire as a source).
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The prefix every namespace of cluster `name` carries.
pub fn prefix(cluster: &str) -> String {
    format!("aks-{cluster}-")
}

/// The namespaces of a cluster, in build order, and what `up`, `check` and the datapaths
/// need to know about them.
#[derive(Clone, Debug)]
pub struct Layout {
    pub namespaces: Vec<NamespaceSpec>,
    pub nodes: Vec<NodeLayout>,
    pub vnet: String,
    pub internet: HostLayout,
    pub on_prem: HostLayout,
}

/// One node namespace and the host sides of its pods' veths.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeLayout {
    pub name: String,
    pub namespace: String,
    pub address: Ipv4Addr,
    /// The node's link to the VNet.
    pub uplink: String,
    pub uplink_mac: Mac,
    /// The MAC of the VNet gateway on this node's link.
    pub gateway_mac: Mac,
    pub pods: Vec<PodLayout>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodLayout {
    pub name: String,
    pub namespace: String,
    pub address: Ipv4Addr,
    /// The pod's `eth0` MAC.
    pub mac: Mac,
    /// Host side of the pod's veth, in the node namespace.
    pub host_interface: String,
    /// Its MAC: the pod's gateway MAC.
    pub host_mac: Mac,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostLayout {
    pub namespace: String,
    pub address: Ipv4Addr,
}

/// Interface names inside namespaces are local to their namespace (which carries the
/// cluster prefix), so they stay short and well under the 15-byte limit.
const UPLINK: &str = "eth0";
const POD_IF: &str = "eth0";

/// MACs: locally administered (0x02), then role, node index (2 bytes), pod slot (2 bytes),
/// so every address on every segment is distinct and readable in `ip link`.
fn mac(role: u8, node: usize, slot: usize) -> Mac {
    let [n1, n0] = (node as u16).to_be_bytes();
    let [s1, s0] = (slot as u16).to_be_bytes();
    [0x02, role, n1, n0, s1, s0]
}
const ROLE_VNET_SIDE: u8 = 0x01;
const ROLE_NODE_UPLINK: u8 = 0x02;
const ROLE_POD_HOST_SIDE: u8 = 0x03;
const ROLE_POD: u8 = 0x04;
const ROLE_EXTERNAL: u8 = 0x05;
const ROLE_BRIDGE: u8 = 0x06;
const ROLE_TUNNEL: u8 = 0x07;
const ROLE_FIREWALL: u8 = 0x08;

/// The vnet namespace's link to the firewall (userDefinedRouting).
pub const FIREWALL_LINK: &str = "firewall";

/// kubenet's bridge (the name kubelet's kubenet gave it).
pub const KUBENET_BRIDGE: &str = "cbr0";
/// Legacy Azure CNI's bridge (bridge mode of azure-vnet).
pub const AZURE_BRIDGE: &str = "azure0";

/// How the pods of a node attach to it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PodWiring {
    /// The eBPF datapath: /32 pods behind a link-local gateway, one node route per pod.
    Routed,
    /// The iptables datapath: pod veths are ports of a bridge.
    Bridged(BridgeWiring),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct BridgeWiring {
    bridge: &'static str,
    /// kubenet: the node's pod /24 gateway (`.1/24`), so the bridge is the pods' router
    /// and the /24 is connected. Legacy Azure CNI: none (see [`pod_wiring`]).
    bridge_address: Option<(Ipv4Addr, u8)>,
    /// Prefix length of the pods' own address.
    pod_prefix: u8,
    /// The pods' default gateway.
    pod_gateway: Ipv4Addr,
    /// Legacy Azure CNI: the bridge answers ARP for every address routed elsewhere.
    proxy_arp: bool,
    /// Legacy Azure CNI: the node routes each pod /32 to the bridge (the pods' subnet is
    /// the VNet's, connected on the uplink).
    pod_routes: bool,
}

/// The wiring of `node`'s pods for the plan's datapath and network plugin.
///
/// Legacy Azure CNI in bridge mode enslaves the node NIC to `azure0`, so pods sit on the
/// VNet's L2 segment and Azure's fabric (which answers every ARP with one MAC) routes
/// them. Bridging the uplink here would carry pod traffic past the node's IP stack, and
/// ip-masq-agent's MASQUERADE would then depend on br_netfilter. The emulation keeps the
/// uplink out of the bridge and gives the node the fabric's role instead: pods hold their
/// VNet address with the subnet's prefix and the subnet gateway (`.1`) as their default
/// route, exactly as Azure CNI configures them; `azure0` has no address of its own and
/// answers their ARP for every address routed elsewhere (proxy ARP, as the fabric does),
/// and the node routes each pod /32 to `azure0`. So pod traffic that leaves the node is
/// routed by the node, and MASQUERADE applies whether br_netfilter exists or not.
fn pod_wiring(plan: &Plan, node: &Node) -> PodWiring {
    match (plan.datapath, plan.pod_network.private_pod_cidr()) {
        (Datapath::Ebpf, _) => PodWiring::Routed,
        // Overlay pods sit on the kubenet-style bridge: a /24 per node, the bridge .1.
        (Datapath::Iptables, true) => {
            let pod_cidr = node.pod_cidr.expect("a planned kubenet node has a pod /24");
            let gateway = node
                .pod_gateway
                .expect("a planned kubenet node has a pod gateway");
            PodWiring::Bridged(BridgeWiring {
                bridge: KUBENET_BRIDGE,
                bridge_address: Some((gateway, pod_cidr.prefix())),
                pod_prefix: pod_cidr.prefix(),
                pod_gateway: gateway,
                proxy_arp: false,
                pod_routes: false,
            })
        }
        (Datapath::Iptables, false) => {
            let subnet = plan.pod_subnet.unwrap_or(plan.node_subnet);
            PodWiring::Bridged(BridgeWiring {
                bridge: AZURE_BRIDGE,
                bridge_address: None,
                pod_prefix: subnet.prefix(),
                pod_gateway: subnet.nth(1).expect("a validated pod subnet has a .1"),
                proxy_arp: true,
                pod_routes: true,
            })
        }
    }
}

/// A /24 around a lone host address (the internet host gets a TEST-NET /24 link) and a
/// gateway on it that is not the host itself.
pub(crate) fn link_for(host: Ipv4Addr) -> (Ipv4Cidr, Ipv4Addr) {
    let [a, b, c, d] = host.octets();
    let cidr =
        Ipv4Cidr::new(Ipv4Addr::new(a, b, c, 0), 24).expect("a /24 network address is valid");
    let gateway = if d == 1 {
        Ipv4Addr::new(a, b, c, 254)
    } else {
        Ipv4Addr::new(a, b, c, 1)
    };
    (cidr, gateway)
}

fn default_route(gateway: Ipv4Addr, device: &str) -> RouteSpec {
    RouteSpec {
        destination: Ipv4Addr::UNSPECIFIED,
        prefix_len: 0,
        gateway: Some(gateway),
        device: device.into(),
    }
}

fn host_route(address: Ipv4Addr, device: &str) -> RouteSpec {
    RouteSpec {
        destination: address,
        prefix_len: 32,
        gateway: None,
        device: device.into(),
    }
}

/// Lays out the namespaces of `plan`: the VNet, the external hosts, then per node the
/// node namespace and its pods' namespaces.
pub fn layout(plan: &Plan) -> Layout {
    let prefix = prefix(&plan.name);
    let vnet_name = format!("{prefix}vnet");
    let subnet_gateway = plan
        .node_subnet
        .nth(1)
        .expect("a validated node subnet has a .1");

    let mut vnet = NamespaceSpec::new(&vnet_name, true);
    let mut node_namespaces = Vec::new();
    let mut pod_namespaces = Vec::new();
    let mut nodes = Vec::new();
    for (i, node) in plan.nodes.iter().enumerate() {
        let node_ns = format!("{prefix}{}", node.name);
        link_vnet_to_node(&mut vnet, i, &node_ns, node.ip, subnet_gateway);
        let (spec, mut pods, node_layout) =
            node_namespace(plan, &prefix, i, node, &node_ns, subnet_gateway);
        node_namespaces.push(spec);
        pod_namespaces.append(&mut pods);
        nodes.push(node_layout);
    }
    route_pods_to_nodes(&mut vnet, plan);
    let (mut externals, internet, on_prem) = external_hosts(&mut vnet, plan, &prefix);
    if let Some(firewall) = &plan.outbound.firewall {
        externals.push(firewall_namespace(&mut vnet, firewall, &prefix));
    }

    let mut namespaces = vec![vnet];
    namespaces.append(&mut externals);
    namespaces.append(&mut node_namespaces);
    namespaces.append(&mut pod_namespaces);
    Layout {
        namespaces,
        nodes,
        vnet: vnet_name,
        internet,
        on_prem,
    }
}

/// The name of the vnet namespace's end of node `index`'s link.
pub fn vnet_node_link(index: usize) -> String {
    format!("node{index}")
}

/// The VNet's side of node `index`'s link: the subnet gateway, answering ARP for the
/// subnet, and the route to the node.
fn link_vnet_to_node(
    vnet: &mut NamespaceSpec,
    index: usize,
    node_ns: &str,
    node_ip: Ipv4Addr,
    subnet_gateway: Ipv4Addr,
) {
    let vnet_if = vnet_node_link(index);
    let macs = (
        mac(ROLE_VNET_SIDE, index, 0),
        mac(ROLE_NODE_UPLINK, index, 0),
    );
    vnet_link(vnet, &vnet_if, macs, node_ns, (subnet_gateway, 32), true);
    vnet.routes.push(host_route(node_ip, &vnet_if));
}

/// A veth `name` from the VNet to the `eth0` of `peer_ns` (MACs: VNet end, peer end); the
/// VNet end holds `address`.
fn vnet_link(
    vnet: &mut NamespaceSpec,
    name: &str,
    (mac, peer_mac): (Mac, Mac),
    peer_ns: &str,
    address: (Ipv4Addr, u8),
    proxy_arp: bool,
) {
    vnet.veths.push(VethSpec {
        name: name.into(),
        mac,
        peer_namespace: peer_ns.into(),
        peer_name: UPLINK.into(),
        peer_mac,
        mtu: None,
    });
    vnet.interfaces.push(InterfaceSpec {
        name: name.into(),
        addresses: vec![address],
        proxy_arp,
    });
}

/// The VNet routes pod addresses to nodes: kubenet's UDRs or Azure CNI's NIC addresses.
fn route_pods_to_nodes(vnet: &mut NamespaceSpec, plan: &Plan) {
    for entry in &plan.route_table {
        let index = plan
            .nodes
            .iter()
            .position(|n| n.name == entry.node)
            .expect("route table entries name planned nodes");
        vnet.routes.push(RouteSpec {
            destination: entry.destination.network(),
            prefix_len: entry.destination.prefix(),
            gateway: Some(entry.next_hop),
            device: vnet_node_link(index),
        });
    }
}

/// The internet and on-prem host namespaces, each on its own link from the VNet.
fn external_hosts(
    vnet: &mut NamespaceSpec,
    plan: &Plan,
    prefix: &str,
) -> (Vec<NamespaceSpec>, HostLayout, HostLayout) {
    let internet_ip = plan.external_hosts.internet;
    let (internet_link, internet_gw) = link_for(internet_ip);
    let on_prem = &plan.external_hosts.on_prem;
    let on_prem_gw = on_prem
        .cidr
        .nth(1)
        .expect("a validated on-prem CIDR has a .1");
    let mut externals = Vec::new();
    for (k, (name, link, gateway, host)) in [
        ("internet", internet_link, internet_gw, internet_ip),
        ("onprem", on_prem.cidr, on_prem_gw, on_prem.host),
    ]
    .into_iter()
    .enumerate()
    {
        let ns = format!("{prefix}{name}");
        let macs = (mac(ROLE_EXTERNAL, k, 1), mac(ROLE_EXTERNAL, k, 2));
        vnet_link(vnet, name, macs, &ns, (gateway, link.prefix()), false);
        let mut spec = NamespaceSpec::new(&ns, false);
        spec.interfaces.push(InterfaceSpec {
            name: UPLINK.into(),
            addresses: vec![(host, link.prefix())],
            proxy_arp: false,
        });
        spec.routes.push(default_route(gateway, UPLINK));
        externals.push(spec);
    }
    let internet = HostLayout {
        namespace: format!("{prefix}internet"),
        address: internet_ip,
    };
    let on_prem = HostLayout {
        namespace: format!("{prefix}onprem"),
        address: on_prem.host,
    };
    (externals, internet, on_prem)
}

/// The firewall's namespace (`<prefix>firewall`): one leg in its subnet, default route
/// to the VNet; the VNet routes the firewall's public address to it. Which traffic the
/// VNet sends it (the route table's 0.0.0.0/0) is the fabric's (`fabric::firewall`).
pub fn firewall_namespace(
    vnet: &mut NamespaceSpec,
    firewall: &crate::model::outbound::Firewall,
    prefix: &str,
) -> NamespaceSpec {
    let ns = firewall_namespace_name(prefix);
    let gateway = firewall
        .subnet
        .nth(1)
        .expect("a resolved firewall subnet has a .1");
    let macs = (mac(ROLE_FIREWALL, 0, 1), mac(ROLE_FIREWALL, 0, 2));
    vnet_link(
        vnet,
        FIREWALL_LINK,
        macs,
        &ns,
        (gateway, firewall.subnet.prefix()),
        false,
    );
    vnet.routes.push(RouteSpec {
        destination: crate::model::outbound::FIREWALL_PUBLIC_IP,
        prefix_len: 32,
        gateway: Some(firewall.private_ip),
        device: FIREWALL_LINK.into(),
    });
    let mut spec = NamespaceSpec::new(&ns, true);
    spec.interfaces.push(InterfaceSpec {
        name: UPLINK.into(),
        addresses: vec![(firewall.private_ip, firewall.subnet.prefix())],
        proxy_arp: false,
    });
    spec.routes.push(default_route(gateway, UPLINK));
    spec
}

/// The firewall's namespace name for cluster prefix `prefix`.
pub fn firewall_namespace_name(prefix: &str) -> String {
    format!("{prefix}firewall")
}

/// Node `index`'s namespace (uplink, default route to the VNet, its pods' veths and, on
/// the iptables datapath, their bridge), its pods' namespaces, and its layout.
fn node_namespace(
    plan: &Plan,
    prefix: &str,
    index: usize,
    node: &Node,
    node_ns: &str,
    subnet_gateway: Ipv4Addr,
) -> (NamespaceSpec, Vec<NamespaceSpec>, NodeLayout) {
    let mut spec = NamespaceSpec::new(node_ns, true);
    spec.interfaces.push(InterfaceSpec {
        name: UPLINK.into(),
        addresses: vec![(node.ip, plan.node_subnet.prefix())],
        proxy_arp: false,
    });
    spec.routes.push(default_route(subnet_gateway, UPLINK));

    let wiring = pod_wiring(plan, node);
    let mut bridge = match &wiring {
        PodWiring::Routed => None,
        PodWiring::Bridged(bridged) => Some(BridgeSpec {
            name: bridged.bridge.into(),
            mac: mac(ROLE_BRIDGE, index, 0),
            ports: Vec::new(),
            hairpin: true,
        }),
    };
    let mut pod_namespaces = Vec::new();
    let mut pods = Vec::new();
    for pod in &node.pods {
        let (pod_spec, pod_layout) =
            pod_namespace(&wiring, &mut spec, bridge.as_mut(), prefix, index, pod);
        pod_namespaces.push(pod_spec);
        pods.push(pod_layout);
    }
    if let (Some(bridge), PodWiring::Bridged(bridged)) = (bridge, &wiring) {
        // Configured after the veths are its ports, so it comes up with them.
        spec.interfaces.push(InterfaceSpec {
            name: bridge.name.clone(),
            addresses: bridged.bridge_address.into_iter().collect(),
            proxy_arp: bridged.proxy_arp,
        });
        spec.bridges.push(bridge);
    }
    if plan.pod_network == PodNetwork::AzureOverlay {
        super::overlay::add_endpoint(
            plan,
            index,
            UPLINK,
            |node| mac(ROLE_TUNNEL, node, 0),
            &mut spec,
        );
    }
    let layout = NodeLayout {
        name: node.name.clone(),
        namespace: node_ns.to_owned(),
        address: node.ip,
        uplink: UPLINK.into(),
        uplink_mac: mac(ROLE_NODE_UPLINK, index, 0),
        gateway_mac: mac(ROLE_VNET_SIDE, index, 0),
        pods,
    };
    (spec, pod_namespaces, layout)
}

/// A pod's namespace and its veth to the node (`node_spec`), wired as `wiring` says.
fn pod_namespace(
    wiring: &PodWiring,
    node_spec: &mut NamespaceSpec,
    bridge: Option<&mut BridgeSpec>,
    prefix: &str,
    node_index: usize,
    pod: &Pod,
) -> (NamespaceSpec, PodLayout) {
    let slot = pod.slot as usize;
    let pod_ns = format!("{prefix}{}", pod.name);
    let host_if = format!("lxc{slot}");
    let host_mac = mac(ROLE_POD_HOST_SIDE, node_index, slot);
    let pod_mac = mac(ROLE_POD, node_index, slot);
    node_spec.veths.push(VethSpec {
        name: host_if.clone(),
        mac: host_mac,
        peer_namespace: pod_ns.clone(),
        peer_name: POD_IF.into(),
        peer_mac: pod_mac,
        mtu: None,
    });
    node_spec.interfaces.push(InterfaceSpec {
        name: host_if.clone(),
        addresses: Vec::new(),
        proxy_arp: false,
    });

    let mut pod_spec = NamespaceSpec::new(&pod_ns, false);
    match wiring {
        PodWiring::Routed => {
            node_spec.routes.push(host_route(pod.ip, &host_if));
            pod_spec.interfaces.push(InterfaceSpec {
                name: POD_IF.into(),
                addresses: vec![(pod.ip, 32)],
                proxy_arp: false,
            });
            pod_spec.routes.push(default_route(POD_GATEWAY, POD_IF));
            pod_spec.neighbours.push(NeighbourSpec {
                address: POD_GATEWAY,
                mac: host_mac,
                device: POD_IF.into(),
            });
        }
        PodWiring::Bridged(bridged) => {
            if let Some(bridge) = bridge {
                bridge.ports.push(host_if.clone());
            }
            if bridged.pod_routes {
                node_spec.routes.push(host_route(pod.ip, bridged.bridge));
            }
            pod_spec.interfaces.push(InterfaceSpec {
                name: POD_IF.into(),
                addresses: vec![(pod.ip, bridged.pod_prefix)],
                proxy_arp: false,
            });
            pod_spec
                .routes
                .push(default_route(bridged.pod_gateway, POD_IF));
        }
    }
    let layout = PodLayout {
        name: pod.name.clone(),
        namespace: pod_ns,
        address: pod.ip,
        mac: pod_mac,
        host_interface: host_if,
        host_mac,
    };
    (pod_spec, layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model;
    use crate::plan::tests::plan_of;

    #[test]
    fn default_cluster_has_vnet_hosts_nodes_and_pods_all_prefixed() {
        let plan = plan_of(model::DEFAULT_DESCRIPTION);
        let layout = layout(&plan);
        let pods: usize = plan.nodes.iter().map(|n| n.pods.len()).sum();
        assert_eq!(layout.namespaces.len(), 1 + 2 + plan.nodes.len() + pods);
        let prefix = prefix(&plan.name);
        for ns in &layout.namespaces {
            assert!(
                ns.name.starts_with(&prefix),
                "{} lacks the cluster prefix",
                ns.name
            );
            for veth in &ns.veths {
                assert!(veth.name.len() <= 15 && veth.peer_name.len() <= 15);
            }
        }
        assert_eq!(
            layout.namespaces[0].name, layout.vnet,
            "the vnet is built first"
        );
    }

    #[test]
    fn every_mac_is_unique() {
        let plan = plan_of(model::DEFAULT_DESCRIPTION);
        let layout = layout(&plan);
        let mut macs: Vec<Mac> = layout
            .namespaces
            .iter()
            .flat_map(|ns| ns.veths.iter().flat_map(|v| [v.mac, v.peer_mac]))
            .collect();
        let before = macs.len();
        macs.sort();
        macs.dedup();
        assert_eq!(macs.len(), before);
    }

    #[test]
    fn vnet_routes_follow_the_plan_route_table() {
        for example in ["azure-ebpf", "kubenet-ebpf"] {
            let yaml = std::fs::read_to_string(format!(
                "{}/../examples/{example}.yaml",
                env!("CARGO_MANIFEST_DIR")
            ))
            .expect("example");
            let plan = plan_of(&yaml);
            let layout = layout(&plan);
            let vnet = &layout.namespaces[0];
            for entry in &plan.route_table {
                assert!(
                    vnet.routes
                        .iter()
                        .any(|r| r.destination == entry.destination.network()
                            && r.prefix_len == entry.destination.prefix()
                            && r.gateway == Some(entry.next_hop)),
                    "{example}: vnet lacks {entry:?}"
                );
            }
        }
    }

    #[test]
    fn pods_route_via_their_host_veth() {
        let plan = plan_of(model::DEFAULT_DESCRIPTION);
        let layout = layout(&plan);
        let node = &layout.nodes[0];
        let node_spec = layout
            .namespaces
            .iter()
            .find(|n| n.name == node.namespace)
            .expect("node ns");
        for pod in &node.pods {
            let pod_spec = layout
                .namespaces
                .iter()
                .find(|n| n.name == pod.namespace)
                .expect("pod ns");
            let host_veth = node_spec
                .veths
                .iter()
                .find(|v| v.name == pod.host_interface)
                .expect("veth");
            assert_eq!(
                pod_spec.neighbours[0].mac, host_veth.mac,
                "the pod's gateway MAC is its host veth"
            );
            assert!(node_spec.routes.iter().any(|r| r.destination == pod.address
                && r.prefix_len == 32
                && r.device == pod.host_interface));
        }
    }

    fn example(name: &str) -> Plan {
        let yaml = std::fs::read_to_string(format!(
            "{}/../examples/{name}.yaml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("example");
        plan_of(&yaml)
    }

    fn namespace<'a>(layout: &'a Layout, name: &str) -> &'a NamespaceSpec {
        layout
            .namespaces
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no namespace {name}"))
    }

    #[test]
    fn ebpf_pods_are_routed_without_bridges() {
        for example_name in ["azure-ebpf", "kubenet-ebpf"] {
            let layout = layout(&example(example_name));
            assert!(
                layout.namespaces.iter().all(|n| n.bridges.is_empty()),
                "{example_name}: the eBPF datapath keeps the routed wiring"
            );
        }
    }

    #[test]
    fn kubenet_iptables_bridges_pods_on_cbr0_with_the_node_gateway() {
        let plan = example("kubenet-iptables");
        let layout = layout(&plan);
        for (node_plan, node) in plan.nodes.iter().zip(&layout.nodes) {
            let node_spec = namespace(&layout, &node.namespace);
            let gateway = node_plan.pod_gateway.expect("kubenet gateway");
            let [bridge] = node_spec.bridges.as_slice() else {
                panic!("one bridge per node, got {:?}", node_spec.bridges);
            };
            assert_eq!(bridge.name, KUBENET_BRIDGE);
            assert!(bridge.hairpin);
            let ports: Vec<&str> = node
                .pods
                .iter()
                .map(|p| p.host_interface.as_str())
                .collect();
            assert_eq!(bridge.ports, ports, "every pod veth is a port of cbr0");
            let cbr0 = node_spec
                .interfaces
                .iter()
                .find(|i| i.name == KUBENET_BRIDGE)
                .expect("cbr0 is configured");
            assert_eq!(cbr0.addresses, vec![(gateway, 24)]);
            assert!(
                node_spec.routes.iter().all(|r| r.prefix_len != 32),
                "the pod /24 is connected on cbr0; no per-pod routes"
            );
            for pod in &node.pods {
                let pod_spec = namespace(&layout, &pod.namespace);
                assert_eq!(pod_spec.interfaces[0].addresses, vec![(pod.address, 24)]);
                assert_eq!(pod_spec.routes[0].gateway, Some(gateway));
                assert!(pod_spec.neighbours.is_empty());
            }
        }
    }

    #[test]
    fn azure_iptables_bridges_pods_on_azure0_with_vnet_addresses() {
        let plan = example("azure-iptables");
        let layout = layout(&plan);
        let subnet_gateway = plan.node_subnet.nth(1).expect(".1");
        for node in &layout.nodes {
            let node_spec = namespace(&layout, &node.namespace);
            let [bridge] = node_spec.bridges.as_slice() else {
                panic!("one bridge per node");
            };
            assert_eq!(bridge.name, AZURE_BRIDGE);
            let azure0 = node_spec
                .interfaces
                .iter()
                .find(|i| i.name == AZURE_BRIDGE)
                .expect("azure0 is configured");
            assert!(azure0.addresses.is_empty() && azure0.proxy_arp);
            for pod in &node.pods {
                assert!(node_spec.routes.iter().any(|r| r.destination == pod.address
                    && r.prefix_len == 32
                    && r.device == AZURE_BRIDGE));
                let pod_spec = namespace(&layout, &pod.namespace);
                assert_eq!(
                    pod_spec.interfaces[0].addresses,
                    vec![(pod.address, plan.node_subnet.prefix())],
                    "Azure CNI pods hold their VNet address with the subnet's prefix"
                );
                assert_eq!(pod_spec.routes[0].gateway, Some(subnet_gateway));
            }
        }
    }
}
