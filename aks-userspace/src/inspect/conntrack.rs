//! `inspect conntrack` and `inspect nat`: the flows a node tracks and how they were
//! translated, in one shape for both datapaths. The iptables datapath's flows come from
//! the kernel (`conntrack_tool`); the eBPF datapath's from its pinned `CONNTRACK`
//! (`bpf_conntrack`).

use std::net::Ipv4Addr;

use anyhow::Result;
use serde::Serialize;

use super::{bpf_conntrack, conntrack_tool, select_nodes, NodePins};
use crate::model::Datapath;
use crate::state::ClusterState;

/// One direction of a flow. Ports are absent for protocols without them (ICMP).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowTuple {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

/// A tracked flow: what the sender sent (`original`) and what the answer must look like
/// (`reply`). When the reply is not the original mirrored, the flow was translated.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Flow {
    pub node: String,
    pub protocol: String,
    /// TCP state (`ESTABLISHED`, `TIME_WAIT`, …); absent for UDP and ICMP.
    pub state: Option<String>,
    /// Seconds until the entry expires.
    pub timeout_secs: u64,
    pub original: FlowTuple,
    pub reply: FlowTuple,
    /// `ASSURED`, `UNREPLIED`, …
    pub flags: Vec<String>,
    /// `snat`, `dnat` or `snat+dnat`; absent for untranslated flows.
    pub nat: Option<String>,
}

impl Flow {
    pub fn new(
        node: &str,
        protocol: &str,
        state: Option<String>,
        timeout_secs: u64,
        original: FlowTuple,
        reply: FlowTuple,
        flags: Vec<String>,
    ) -> Self {
        // The reply goes to whoever the source became, from whoever the destination became.
        let snat = reply.dst != original.src || reply.dport != original.sport;
        let dnat = reply.src != original.dst || reply.sport != original.dport;
        let nat = match (snat, dnat) {
            (true, true) => Some("snat+dnat"),
            (true, false) => Some("snat"),
            (false, true) => Some("dnat"),
            (false, false) => None,
        };
        Flow {
            node: node.to_owned(),
            protocol: protocol.to_owned(),
            state,
            timeout_secs,
            original,
            reply,
            flags,
            nat: nat.map(str::to_owned),
        }
    }
}

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
