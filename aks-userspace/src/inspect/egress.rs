//! `inspect egress`: how much of the NAT gateway's port pool each node holds, read from
//! the fabric's connection table (the vnet namespace, `conntrack`): every flow the NAT
//! gateway translated, grouped by the node it came from (its address after the node's
//! own masquerade), counting the distinct public ports it holds.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use anyhow::Result;
use serde::Serialize;

use super::conntrack_tool;
use super::flow::Flow;
use crate::model::outbound::{OutboundType, NAT_GATEWAY_PORTS};
use crate::state::ClusterState;
use crate::topology::layout::NodeLayout;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressRow {
    /// The node, or the source address when it is no node's.
    pub node: String,
    pub public_ip: Ipv4Addr,
    /// Flows the NAT gateway translated for this node.
    pub flows: usize,
    /// Distinct public (address, protocol, port) held by those flows.
    pub ports_in_use: usize,
    /// The pool all nodes share.
    pub pool: u32,
}

/// The NAT gateway's port use per node; empty for other outbound types.
pub fn egress(state: &ClusterState) -> Result<Vec<EgressRow>> {
    let (OutboundType::ManagedNatGateway, Some(public_ip)) =
        (state.outbound.outbound_type, state.outbound.public_ip)
    else {
        return Ok(Vec::new());
    };
    let flows = conntrack_tool::read(&state.vnet, "fabric")?;
    Ok(rows(&state.nodes, public_ip, &flows))
}

/// A public port the gateway handed out: protocol and port (none for ICMP).
type PublicPort = (String, Option<u16>);

fn rows(nodes: &[NodeLayout], public_ip: Ipv4Addr, flows: &[Flow]) -> Vec<EgressRow> {
    let pool = u32::from(NAT_GATEWAY_PORTS.1) - u32::from(NAT_GATEWAY_PORTS.0) + 1;
    let mut by_source: BTreeMap<Ipv4Addr, (usize, BTreeSet<PublicPort>)> = BTreeMap::new();
    for flow in flows.iter().filter(|f| f.reply.dst == public_ip) {
        let entry = by_source.entry(flow.original.src).or_default();
        entry.0 += 1;
        entry.1.insert((flow.protocol.clone(), flow.reply.dport));
    }
    by_source
        .into_iter()
        .map(|(source, (flows, ports))| EgressRow {
            node: nodes
                .iter()
                .find(|n| n.address == source)
                .map_or_else(|| source.to_string(), |n| n.name.clone()),
            public_ip,
            flows,
            ports_in_use: ports.len(),
            pool,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::conntrack_tool::parse_line;
    use super::*;

    #[test]
    fn flows_through_the_nat_gateway_are_counted_per_source() {
        let lines = [
            "ipv4 2 tcp 6 117 TIME_WAIT src=10.224.0.4 dst=203.0.113.10 sport=40000 dport=17001 src=203.0.113.10 dst=198.51.100.5 sport=17001 dport=1024 [ASSURED] mark=0 use=1",
            "ipv4 2 tcp 6 117 TIME_WAIT src=10.224.0.4 dst=203.0.113.10 sport=40001 dport=17001 src=203.0.113.10 dst=198.51.100.5 sport=17001 dport=1025 [ASSURED] mark=0 use=1",
            "ipv4 2 udp 17 29 src=10.224.0.4 dst=203.0.113.10 sport=40002 dport=17001 src=203.0.113.10 dst=198.51.100.5 sport=17001 dport=1024 mark=0 use=1",
            "ipv4 2 tcp 6 117 TIME_WAIT src=10.224.0.9 dst=203.0.113.10 sport=40000 dport=17001 src=203.0.113.10 dst=198.51.100.5 sport=17001 dport=1026 [ASSURED] mark=0 use=1",
            // Not translated by the gateway: on-prem traffic.
            "ipv4 2 tcp 6 117 TIME_WAIT src=10.224.0.4 dst=192.168.100.10 sport=40003 dport=17001 src=192.168.100.10 dst=10.224.0.4 sport=17001 dport=40003 [ASSURED] mark=0 use=1",
        ];
        let flows: Vec<Flow> = lines
            .iter()
            .map(|l| parse_line("fabric", l).expect("a conntrack line"))
            .collect();
        let rows = rows(&[], Ipv4Addr::new(198, 51, 100, 5), &flows);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].node, "10.224.0.4");
        assert_eq!(
            (rows[0].flows, rows[0].ports_in_use),
            (3, 3),
            "tcp 1024, tcp 1025, udp 1024"
        );
        assert_eq!((rows[1].flows, rows[1].ports_in_use), (1, 1));
        assert_eq!(rows[0].pool, 64_512);
    }
}
