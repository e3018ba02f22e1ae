//! `aksnet inspect`: what a running cluster's datapath holds, read from another process.
//!
//! The eBPF side reads the maps `up` pinned under `/sys/fs/bpf/aksnet/<cluster>/<node>/`
//! (no running `up` needed), one file per map kind; the iptables side asks the kernel
//! inside the node namespace (`conntrack`). Every reader returns serde-serializable rows
//! with a `node` column, so the CLI prints them as tables or JSON alike.

mod attachments;
mod bpf_conntrack;
mod conntrack;
mod conntrack_tool;
mod egress;
mod endpoints;
mod firewall;
mod flow;
mod maps;
mod nsg;
mod probes;
mod routes;
mod stats;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use aks_ebpf_common::addr;
use aks_ebpf_common::{NodeConfig, CONFIG_MAP};
use aya::maps::{Array, HashMap, Map, MapData};
use aya::Pod;

use crate::datapath::ebpf::open_pinned;
use crate::model::Datapath;
use crate::state::ClusterState;
use crate::topology::layout::NodeLayout;

pub use attachments::{attachments, AttachmentRow};
pub use conntrack::{conntrack, nat};
pub use conntrack_tool::delete_flows_to;
pub use egress::{egress, open_flows, EgressRow};
pub use endpoints::{endpoints, EndpointRow};
pub use firewall::{firewall, FirewallLog, FirewallRuleRow};
pub use flow::{Flow, FlowTuple};
pub use maps::{maps, MapRow};
pub use nsg::{nsg_rules, NsgRow};
pub use probes::{probes, ProbeRow, RecordedProbes};
pub use routes::{longest_prefix_match, routes, RouteRow};
pub use stats::{reason_by_name, stats, StatsRow, TOTAL};

/// The nodes a command looks at: the one named, or every node of the cluster. An
/// unknown name is an error listing the nodes there are.
pub fn select_nodes<'a>(
    state: &'a ClusterState,
    node: Option<&str>,
) -> Result<Vec<&'a NodeLayout>> {
    let Some(name) = node else {
        return Ok(state.nodes.iter().collect());
    };
    match state.nodes.iter().find(|n| n.name == name) {
        Some(found) => Ok(vec![found]),
        None => {
            let known: Vec<&str> = state.nodes.iter().map(|n| n.name.as_str()).collect();
            bail!(
                "cluster {} has no node {name:?}; its nodes are: {} (pass one with --node)",
                state.name,
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )
        }
    }
}

/// The pinned maps of one node of an eBPF cluster.
pub struct NodePins<'a> {
    pub state: &'a ClusterState,
    pub node: &'a NodeLayout,
    pub dir: PathBuf,
}

impl<'a> NodePins<'a> {
    /// The pin directory of `node`, after checking the cluster runs the eBPF datapath
    /// and the directory is there.
    pub fn open(state: &'a ClusterState, node: &'a NodeLayout) -> Result<Self> {
        if state.datapath != Datapath::Ebpf {
            bail!(
                "cluster {} runs the {} datapath, which has no BPF maps; `aksnet inspect rules --cluster {0}` shows its iptables rules and `aksnet inspect conntrack --cluster {0}` its connections",
                state.name,
                state.datapath
            );
        }
        let dir = ClusterState::pin_dir(&state.name).join(&node.name);
        if !dir.is_dir() {
            bail!(
                "no pinned maps for node {} of cluster {} at {}: the datapath is not loaded (was `up` killed before it loaded?); `aksnet down {1}` then `aksnet up` rebuilds it",
                node.name,
                state.name,
                dir.display()
            );
        }
        Ok(Self { state, node, dir })
    }

    /// The pinned map `name` of this node.
    pub fn map(&self, name: &str) -> Result<Map> {
        let path = self.dir.join(name);
        let data = open_pinned(&path).with_context(|| {
            format!(
                "node {} of cluster {} (is this aksnet's version of the datapath? `aksnet down {}` and `up` again pins every map)",
                self.node.name,
                self.state.name,
                self.state.name
            )
        })?;
        Map::from_map_data(data).with_context(|| format!("reading the type of {}", path.display()))
    }

    /// Every entry of the pinned hash map `name`.
    pub fn hash_entries<K: Pod, V: Pod>(&self, name: &str) -> Result<Vec<(K, V)>> {
        let map = self.map(name)?;
        let hash: HashMap<&MapData, K, V> = HashMap::try_from(&map)?;
        hash.iter()
            .map(|entry| {
                entry.with_context(|| format!("reading {name} of node {}", self.node.name))
            })
            .collect()
    }

    /// The node's `CONFIG` slot.
    pub fn config(&self) -> Result<NodeConfig> {
        let map = self.map(CONFIG_MAP)?;
        let config: Array<&MapData, NodeConfig> = Array::try_from(&map)?;
        config
            .get(&0, 0)
            .with_context(|| format!("reading {CONFIG_MAP} of node {}", self.node.name))
    }
}

/// An address in map form as an `Ipv4Addr`.
pub fn ip(map_form: u32) -> Ipv4Addr {
    Ipv4Addr::from(addr::octets(map_form))
}

/// An IANA protocol number by name.
pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        0 => "any".to_owned(),
        1 => "icmp".to_owned(),
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::spec::format_mac;

    #[test]
    fn addresses_and_macs_print_in_human_form() {
        assert_eq!(
            ip(addr::ipv4([10, 224, 0, 4])),
            Ipv4Addr::new(10, 224, 0, 4)
        );
        assert_eq!(
            format_mac(&[0x02, 0xaa, 0, 0, 0x0b, 0xff]),
            "02:aa:00:00:0b:ff"
        );
        assert_eq!(protocol_name(6), "tcp");
        assert_eq!(protocol_name(0), "any");
        assert_eq!(protocol_name(47), "47");
    }
}
