//! `inspect conntrack` and `inspect nat`: the flows a node tracks and how they were
//! translated, in one shape for both datapaths ([`Flow`]). The iptables datapath's flows
//! come from the kernel (`conntrack_tool`); the eBPF datapath's from its pinned
//! `CONNTRACK` and `LB_FLOWS` (`bpf_conntrack`).

use anyhow::Result;

use super::flow::Flow;
use super::{bpf_conntrack, conntrack_tool, select_nodes, NodePins};
use crate::model::Datapath;
use crate::state::ClusterState;

/// The flows of `node` (every node when `None`).
pub fn conntrack(state: &ClusterState, node: Option<&str>) -> Result<Vec<Flow>> {
    let nodes = select_nodes(state, node)?;
    match state.datapath {
        Datapath::Iptables => {
            let mut flows = Vec::new();
            for layout in nodes {
                flows.extend(conntrack_tool::read(&layout.namespace, &layout.name)?);
            }
            Ok(flows)
        }
        Datapath::Ebpf => {
            let mut flows = Vec::new();
            for layout in nodes {
                let pins = NodePins::open(state, layout)?;
                flows.extend(bpf_conntrack::read(&pins, state.conntrack.as_ref())?);
            }
            Ok(flows)
        }
    }
}

/// The translated flows of `node` (every node when `None`): SNAT to the node address,
/// service DNAT to a backend.
pub fn nat(state: &ClusterState, node: Option<&str>) -> Result<Vec<Flow>> {
    Ok(conntrack(state, node)?
        .into_iter()
        .filter(|f| f.nat.is_some())
        .collect())
}
