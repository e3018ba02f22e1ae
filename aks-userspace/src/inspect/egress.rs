//! `inspect egress`: how the cluster's egress ports are used per node, read from the
//! fabric (the vnet namespace): its connection table (`conntrack`) for the flows the load
//! balancer's outbound rule or the NAT gateway translated, grouped by the node they came
//! from (its address after the node's own masquerade), and, for the load balancer, the
//! counter of the rule that drops a node's new flows once its ports are in use.
//!
//! Ports are per destination, as Azure's are: a node with `allocatedOutboundPorts` N can
//! hold N flows to one destination at once, so `busiest` (the most flows to one
//! destination address) is what runs out, not the distinct ports in use.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use anyhow::Result;
use serde::Serialize;

use super::conntrack_tool;
use super::flow::Flow;
use crate::datapath::iptables;
use crate::fabric::egress::{EXHAUSTED_COMMENT, SNAT_PORTS_CHAIN_PREFIX};
use crate::model::outbound::{OutboundType, NAT_GATEWAY_PORTS};
use crate::state::ClusterState;
use crate::topology::layout::NodeLayout;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressRow {
    /// The node, or the source address when it is no node's.
    pub node: String,
    pub public_ip: Ipv4Addr,
    /// The ports this node's flows take, `lo-hi` (the NAT gateway's are shared).
    pub port_range: String,
    /// Flows translated for this node.
    pub flows: usize,
    /// Distinct public (protocol, port) held by those flows.
    pub ports_in_use: usize,
    /// The most flows to one destination address: what `pool` limits on the load balancer.
    pub busiest: usize,
    /// Ports per destination: the load balancer's `allocatedOutboundPorts`, or the NAT
    /// gateway's pool all nodes share.
    pub pool: u32,
    /// Load balancer: packets of new flows dropped because this node's ports to their
    /// destination were all in use (a retransmitted SYN counts again); none for the NAT
    /// gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exhausted_drops: Option<u64>,
}

/// Egress port use per node; empty when no outbound type translates (`none`, or a
/// record from before the load balancer SNATed).
pub fn egress(state: &ClusterState) -> Result<Vec<EgressRow>> {
    let outbound = &state.outbound;
    if let Some((public_ip, rule)) = outbound.load_balancer() {
        let flows = conntrack_tool::read(&state.vnet, "fabric")?;
        let drops = exhausted_drops(&iptables::save_with_counters(&state.vnet, "filter")?);
        let mut rows = rows(
            &state.nodes,
            public_ip,
            &flows,
            rule.allocated_outbound_ports,
        );
        for (index, node) in state.nodes.iter().enumerate() {
            let (lo, hi) = rule.node_ports(index);
            let drops = drops.get(&index).copied().unwrap_or(0);
            match rows.iter_mut().find(|r| r.node == node.name) {
                Some(row) => {
                    row.port_range = format!("{lo}-{hi}");
                    row.exhausted_drops = Some(drops);
                }
                None => rows.push(EgressRow {
                    node: node.name.clone(),
                    public_ip,
                    port_range: format!("{lo}-{hi}"),
                    flows: 0,
                    ports_in_use: 0,
                    busiest: 0,
                    pool: rule.allocated_outbound_ports,
                    exhausted_drops: Some(drops),
                }),
            }
        }
        let order = |r: &EgressRow| state.nodes.iter().position(|n| n.name == r.node);
        rows.sort_by_key(|r| (order(r).is_none(), order(r), r.node.clone()));
        return Ok(rows);
    }
    let (OutboundType::ManagedNatGateway, Some(public_ip)) =
        (outbound.outbound_type, outbound.public_ip)
    else {
        return Ok(Vec::new());
    };
    let flows = conntrack_tool::read(&state.vnet, "fabric")?;
    let pool = u32::from(NAT_GATEWAY_PORTS.1) - u32::from(NAT_GATEWAY_PORTS.0) + 1;
    Ok(rows(&state.nodes, public_ip, &flows, pool))
}

/// Flows the egress translated that still count against a node's ports: every one but
/// TCP flows already closed (TIME_WAIT, CLOSE), which the budget no longer counts.
pub fn open_flows(state: &ClusterState) -> Result<usize> {
    let Some(public_ip) = state.outbound.public_ip else {
        return Ok(0);
    };
    let flows = conntrack_tool::read(&state.vnet, "fabric")?;
    Ok(flows
        .iter()
        .filter(|f| f.reply.dst == public_ip)
        .filter(|f| !matches!(f.state.as_deref(), Some("TIME_WAIT" | "CLOSE")))
        .count())
}

/// A public port handed out: protocol and port (none for ICMP).
type PublicPort = (String, Option<u16>);

#[derive(Default)]
struct NodeUse {
    flows: usize,
    ports: BTreeSet<PublicPort>,
    per_destination: BTreeMap<Ipv4Addr, usize>,
}

fn rows(nodes: &[NodeLayout], public_ip: Ipv4Addr, flows: &[Flow], pool: u32) -> Vec<EgressRow> {
    let mut by_source: BTreeMap<Ipv4Addr, NodeUse> = BTreeMap::new();
    for flow in flows.iter().filter(|f| f.reply.dst == public_ip) {
        let entry = by_source.entry(flow.original.src).or_default();
        entry.flows += 1;
        entry
            .ports
            .insert((flow.protocol.clone(), flow.reply.dport));
        *entry.per_destination.entry(flow.original.dst).or_default() += 1;
    }
    let (lo, hi) = NAT_GATEWAY_PORTS;
    by_source
        .into_iter()
        .map(|(source, used)| EgressRow {
            node: nodes
                .iter()
                .find(|n| n.address == source)
                .map_or_else(|| source.to_string(), |n| n.name.clone()),
            public_ip,
            port_range: format!("{lo}-{hi}"),
            flows: used.flows,
            ports_in_use: used.ports.len(),
            busiest: used.per_destination.values().copied().max().unwrap_or(0),
            pool,
            exhausted_drops: None,
        })
        .collect()
}

/// Packets each node's exhaustion rules dropped, by node index, from `iptables-save -c`.
fn exhausted_drops(saved: &str) -> BTreeMap<usize, u64> {
    let mut drops = BTreeMap::new();
    for line in saved.lines().filter(|l| l.contains(EXHAUSTED_COMMENT)) {
        let parsed = (|| {
            let (counters, spec) = line.strip_prefix('[')?.split_once("] ")?;
            let packets: u64 = counters.split_once(':')?.0.parse().ok()?;
            let index: usize = spec
                .strip_prefix("-A ")?
                .strip_prefix(SNAT_PORTS_CHAIN_PREFIX)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((index, packets))
        })();
        if let Some((index, packets)) = parsed {
            *drops.entry(index).or_default() += packets;
        }
    }
    drops
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
            "ipv4 2 udp 17 29 src=10.224.0.4 dst=203.0.113.11 sport=40002 dport=17001 src=203.0.113.11 dst=198.51.100.5 sport=17001 dport=1024 mark=0 use=1",
            "ipv4 2 tcp 6 117 TIME_WAIT src=10.224.0.9 dst=203.0.113.10 sport=40000 dport=17001 src=203.0.113.10 dst=198.51.100.5 sport=17001 dport=1026 [ASSURED] mark=0 use=1",
            // Not translated by the gateway: on-prem traffic.
            "ipv4 2 tcp 6 117 TIME_WAIT src=10.224.0.4 dst=192.168.100.10 sport=40003 dport=17001 src=192.168.100.10 dst=10.224.0.4 sport=17001 dport=40003 [ASSURED] mark=0 use=1",
        ];
        let flows: Vec<Flow> = lines
            .iter()
            .map(|l| parse_line("fabric", l).expect("a conntrack line"))
            .collect();
        let rows = rows(&[], Ipv4Addr::new(198, 51, 100, 5), &flows, 64_512);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].node, "10.224.0.4");
        assert_eq!(
            (rows[0].flows, rows[0].ports_in_use, rows[0].busiest),
            (3, 3, 2),
            "tcp 1024, tcp 1025, udp 1024; two flows to 203.0.113.10"
        );
        assert_eq!((rows[1].flows, rows[1].ports_in_use), (1, 1));
        assert_eq!(rows[0].pool, 64_512);
        assert_eq!(rows[0].exhausted_drops, None);
    }

    #[test]
    fn exhaustion_drops_are_read_per_node_chain() {
        let saved = "\
[0:0] -A FORWARD -s 10.224.0.4/32 -o internet -m conntrack --ctstate NEW -j AKSNET-SNAT-0
[3:180] -A AKSNET-SNAT-0 -p tcp -m connlimit --connlimit-above 8 --connlimit-mask 32 --connlimit-daddr -m comment --comment \"aksnet: SNAT ports exhausted\" -j DROP
[1:60] -A AKSNET-SNAT-0 -p udp -m connlimit --connlimit-above 8 --connlimit-mask 32 --connlimit-daddr -m comment --comment \"aksnet: SNAT ports exhausted\" -j DROP
[0:0] -A AKSNET-SNAT-1 -p tcp -m connlimit --connlimit-above 8 --connlimit-mask 32 --connlimit-daddr -m comment --comment \"aksnet: SNAT ports exhausted\" -j DROP
";
        let drops = exhausted_drops(saved);
        assert_eq!(drops.get(&0), Some(&4));
        assert_eq!(drops.get(&1), Some(&0));
    }
}
