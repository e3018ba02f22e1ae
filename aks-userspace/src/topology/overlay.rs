//! Azure CNI Overlay between node namespaces. Azure carries pod traffic of the private
//! pod CIDR in a routing domain of its own, so the VNet never holds a pod route
//! (concepts-network-azure-cni-overlay.md). Here the vnet namespace plays the VNet and
//! must stay free of pod routes too, so the nodes carry that domain themselves: a VXLAN
//! device per node over its uplink, one static forwarding entry per other node, and a
//! route for each other node's pod /24 through it. On the wire of the vnet namespace only
//! node address → node address UDP is seen.
//!
//! Each tunnel device holds the network address of its node's pod /24 as a /32 (as
//! flannel does), so a node's own packets to remote pods leave with a pod CIDR source and
//! the replies come back through the overlay, unmasqueraded.

use super::spec::{NamespaceSpec, NeighbourSpec, RouteSpec, TunnelPeer, VxlanSpec};
use super::InterfaceSpec;
use crate::plan::Plan;

/// The tunnel device in every Overlay node namespace.
pub const OVERLAY_DEVICE: &str = "ovl0";
/// VXLAN network identifier of the cluster's overlay.
pub const OVERLAY_VNI: u32 = 1;
/// The IANA VXLAN port.
pub const OVERLAY_PORT: u16 = 4789;

/// Adds the overlay endpoint of node `index` of `plan` to its namespace `spec`:
/// the device, its address, and a route plus a static neighbour for each other node's
/// pod /24. `tunnel_mac(i)` is node i's device MAC.
pub(super) fn add_endpoint(
    plan: &Plan,
    index: usize,
    uplink: &str,
    tunnel_mac: impl Fn(usize) -> super::Mac,
    spec: &mut NamespaceSpec,
) {
    let node = &plan.nodes[index];
    let mut peers = Vec::new();
    for (other_index, other) in plan.nodes.iter().enumerate() {
        let Some(other_pods) = other.pod_cidr else {
            continue;
        };
        if other_index == index {
            continue;
        }
        let endpoint = other_pods.network();
        peers.push(TunnelPeer {
            mac: tunnel_mac(other_index),
            remote: other.ip,
        });
        spec.neighbours.push(NeighbourSpec {
            address: endpoint,
            mac: tunnel_mac(other_index),
            device: OVERLAY_DEVICE.into(),
        });
        spec.routes.push(RouteSpec {
            destination: endpoint,
            prefix_len: other_pods.prefix(),
            gateway: Some(endpoint),
            device: OVERLAY_DEVICE.into(),
        });
    }
    spec.tunnels.push(VxlanSpec {
        name: OVERLAY_DEVICE.into(),
        mac: tunnel_mac(index),
        vni: OVERLAY_VNI,
        port: OVERLAY_PORT,
        local: node.ip,
        underlay: uplink.into(),
        peers,
    });
    spec.interfaces.push(InterfaceSpec {
        name: OVERLAY_DEVICE.into(),
        addresses: node
            .pod_cidr
            .map(|pods| (pods.network(), 32))
            .into_iter()
            .collect(),
        proxy_arp: false,
    });
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::topology::layout::{layout, Layout};
    use crate::{model, plan};

    fn example(name: &str) -> Layout {
        let yaml = std::fs::read_to_string(format!(
            "{}/../examples/{name}.yaml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("example");
        let plan = plan::plan(&model::load(&yaml).expect("valid")).expect("plannable");
        layout(&plan)
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("test address")
    }

    fn namespace<'a>(layout: &'a Layout, suffix: &str) -> &'a NamespaceSpec {
        layout
            .namespaces
            .iter()
            .find(|ns| ns.name.ends_with(suffix))
            .unwrap_or_else(|| panic!("no namespace {suffix}"))
    }

    #[test]
    fn each_node_tunnels_the_other_nodes_pod_ranges_and_the_vnet_routes_no_pods() {
        for example_name in ["azure-overlay-ebpf", "azure-overlay-iptables"] {
            let layout = example(example_name);
            let node0 = namespace(&layout, "-nodepool1-0");
            let [tunnel] = node0.tunnels.as_slice() else {
                panic!(
                    "{example_name}: one tunnel per node, got {:?}",
                    node0.tunnels
                );
            };
            assert_eq!(tunnel.name, OVERLAY_DEVICE);
            assert_eq!(tunnel.local, ip("10.224.0.4"));
            assert_eq!(tunnel.underlay, "eth0");
            let remotes: Vec<Ipv4Addr> = tunnel.peers.iter().map(|p| p.remote).collect();
            assert_eq!(remotes, [ip("10.224.0.5"), ip("10.224.0.6")]);
            // The peers' MACs are the MACs of their own tunnel devices.
            let node1 = namespace(&layout, "-nodepool1-1");
            assert_eq!(tunnel.peers[0].mac, node1.tunnels[0].mac);
            assert_ne!(tunnel.mac, node1.tunnels[0].mac);

            let ovl = node0
                .interfaces
                .iter()
                .find(|i| i.name == OVERLAY_DEVICE)
                .expect("the tunnel device is configured");
            assert_eq!(ovl.addresses, [(ip("10.244.0.0"), 32)]);
            let via_tunnel: Vec<(Ipv4Addr, u8, Option<Ipv4Addr>)> = node0
                .routes
                .iter()
                .filter(|r| r.device == OVERLAY_DEVICE)
                .map(|r| (r.destination, r.prefix_len, r.gateway))
                .collect();
            assert_eq!(
                via_tunnel,
                [
                    (ip("10.244.1.0"), 24, Some(ip("10.244.1.0"))),
                    (ip("10.244.2.0"), 24, Some(ip("10.244.2.0")))
                ]
            );
            assert!(node0.neighbours.iter().any(|n| n.device == OVERLAY_DEVICE
                && n.address == ip("10.244.1.0")
                && n.mac == node1.tunnels[0].mac));

            let pod_cidr: crate::cidr::Ipv4Cidr = "10.244.0.0/16".parse().expect("cidr");
            let vnet = namespace(&layout, "-vnet");
            for route in &vnet.routes {
                assert!(
                    !pod_cidr.contains(route.destination),
                    "{example_name}: the VNet routes a pod range: {route:?}"
                );
            }
        }
    }

    #[test]
    fn overlay_iptables_bridges_pods_on_cbr0_and_other_models_have_no_tunnel() {
        let layout = example("azure-overlay-iptables");
        let node0 = namespace(&layout, "-nodepool1-0");
        assert_eq!(
            node0.bridges[0].name,
            crate::topology::layout::KUBENET_BRIDGE
        );
        let cbr0 = node0
            .interfaces
            .iter()
            .find(|i| i.name == "cbr0")
            .expect("cbr0");
        assert_eq!(cbr0.addresses, [(ip("10.244.0.1"), 24)]);
        for other in ["kubenet-ebpf", "azure-ebpf", "azure-iptables"] {
            let layout = example(other);
            assert!(
                layout.namespaces.iter().all(|ns| ns.tunnels.is_empty()),
                "{other} has no overlay"
            );
        }
    }
}
