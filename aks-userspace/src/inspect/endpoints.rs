//! `inspect endpoints`: the `ENDPOINTS` map of each node, with the pod each entry is for.

use std::net::Ipv4Addr;

use anyhow::Result;
use serde::Serialize;

use aks_ebpf_common::{Endpoint, ENDPOINTS_MAP};

use super::{ip, select_nodes, NodePins};
use crate::state::ClusterState;
use crate::topology::spec::format_mac;

/// One local pod as the datapath knows it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointRow {
    pub node: String,
    pub ip: Ipv4Addr,
    /// The pod the cluster record places at this address (absent if none does: a stale
    /// entry).
    pub pod: Option<String>,
    /// Host side of the pod's veth: index in the node namespace, and its name.
    pub host_ifindex: u32,
    pub host_interface: Option<String>,
    pub pod_mac: String,
    pub host_mac: String,
    pub flags: u32,
}

/// The endpoints of `node` (every node when `None`), sorted by node then address,
/// keeping only `only_ip` if given.
pub fn endpoints(
    state: &ClusterState,
    node: Option<&str>,
    only_ip: Option<Ipv4Addr>,
) -> Result<Vec<EndpointRow>> {
    let mut rows = Vec::new();
    for layout in select_nodes(state, node)? {
        let pins = NodePins::open(state, layout)?;
        let mut node_rows = Vec::new();
        for (key, endpoint) in pins.hash_entries::<u32, Endpoint>(ENDPOINTS_MAP)? {
            let address = ip(key);
            if only_ip.is_some_and(|wanted| wanted != address) {
                continue;
            }
            let pod = layout.pods.iter().find(|p| p.address == address);
            node_rows.push(EndpointRow {
                node: layout.name.clone(),
                ip: address,
                pod: pod.map(|p| p.name.clone()),
                host_ifindex: endpoint.host_ifindex,
                host_interface: pod.map(|p| p.host_interface.clone()),
                pod_mac: format_mac(&endpoint.pod_mac),
                host_mac: format_mac(&endpoint.host_mac),
                flags: endpoint.flags,
            });
        }
        node_rows.sort_by_key(|r| r.ip);
        rows.extend(node_rows);
    }
    Ok(rows)
}
