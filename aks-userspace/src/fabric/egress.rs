//! The cluster's egress to the internet in the fabric, per `outboundType`
//! (`model::outbound`):
//!
//! - `loadBalancer`: the load balancer's outbound rule. What a node sends to the internet
//!   (its pods already masqueraded to it) is SNATed to the outbound public address from
//!   the node's own block of `allocatedOutboundPorts` ports. A node may hold that many
//!   flows to one destination address at once ([`SNAT_PORTS_CHAIN_PREFIX`] counts them
//!   with `connlimit`); a new flow past that is dropped and counted, as Azure fails new
//!   outbound flows of an exhausted backend instance while its existing ones go on. Idle
//!   TCP flows are forgotten after `idleTimeoutInMinutes` (the fabric's conntrack
//!   timeout), which gives their ports back. Two limits of the kernel's NAT show: it
//!   looks for a free port by probing at most 128 ports from a random offset (then 64,
//!   32, 16), so a nearly full block larger than 128 ports can fail a flow before the
//!   budget is reached, dropped uncounted (conntrack's `insert_failed`); and a closed
//!   flow holds its port for the fabric's TIME_WAIT (120 s), so churn to one destination
//!   runs out of ports too. (Sub-blocks of 128 behind `connlimit --connlimit-upto` made a
//!   first burst exact but failed churn after 128 flows, `connlimit` counting no closed
//!   flow: not kept.)
//! - `managedNATGateway`: everything leaving towards the internet is SNATed to the NAT
//!   gateway's public address from one shared port pool.
//! - `none`: new flows towards the internet are dropped.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};

use crate::model::outbound::{Outbound, OutboundType, NAT_GATEWAY_PORTS};
use crate::netns;

/// The `filter` chain of the node at index i is `AKSNET-SNAT-<i>`: its port budget.
pub const SNAT_PORTS_CHAIN_PREFIX: &str = "AKSNET-SNAT-";
/// The comment of the rule that drops a node's new flows once its ports are in use.
pub const EXHAUSTED_COMMENT: &str = "aksnet: SNAT ports exhausted";

/// Azure NAT gateway's TCP idle timeout (nat-gateway-resource.md: 4 minutes by default).
const NAT_GATEWAY_IDLE_TIMEOUT_S: u32 = 4 * 60;
/// The kernel's own default for established TCP (5 days), where nothing idles flows out.
const KERNEL_TCP_ESTABLISHED_S: u32 = 432_000;
const TCP_ESTABLISHED_SYSCTL: &str = "net/netfilter/nf_conntrack_tcp_timeout_established";

/// A node the load balancer's outbound rule serves: name and address, in plan order
/// (the order gives each its port block).
pub type BackendNode = (String, Ipv4Addr);

/// The nodes of `plan`, in order.
pub fn backend_nodes(plan: &crate::plan::Plan) -> Vec<BackendNode> {
    plan.nodes.iter().map(|n| (n.name.clone(), n.ip)).collect()
}

fn chain(index: usize) -> String {
    format!("{SNAT_PORTS_CHAIN_PREFIX}{index}")
}

/// `nat` lines (POSTROUTING): the NAT gateway's or the load balancer's SNAT; TCP and
/// UDP from the ports, anything else (ICMP) to the address alone.
pub fn nat_rules(outbound: &Outbound, nodes: &[BackendNode]) -> String {
    let mut out = String::new();
    if let Some((ip, rule)) = outbound.load_balancer() {
        for (index, (name, address)) in nodes.iter().enumerate() {
            let (lo, hi) = rule.node_ports(index);
            let comment = format!(
                "-m comment --comment \"aksnet: load balancer outbound rule, {name} ({} ports)\"",
                rule.allocated_outbound_ports
            );
            snat_lines(
                &mut out,
                &format!("-s {address}/32 {comment}"),
                ip,
                (lo, hi),
            );
        }
        return out;
    }
    let (OutboundType::ManagedNatGateway, Some(ip)) = (outbound.outbound_type, outbound.public_ip)
    else {
        return out;
    };
    let (lo, hi) = NAT_GATEWAY_PORTS;
    let ports = u32::from(hi) - u32::from(lo) + 1;
    let comment = format!("-m comment --comment \"aksnet: managed NAT gateway ({ports} ports)\"");
    snat_lines(&mut out, &comment, ip, (lo, hi));
    out
}

fn snat_lines(out: &mut String, matches: &str, ip: Ipv4Addr, (lo, hi): (u16, u16)) {
    for protocol in ["tcp", "udp"] {
        out.push_str(&format!(
            "-A POSTROUTING -o internet -p {protocol} {matches} -j SNAT --to-source {ip}:{lo}-{hi}\n"
        ));
    }
    out.push_str(&format!(
        "-A POSTROUTING -o internet {matches} -j SNAT --to-source {ip}\n"
    ));
}

/// `filter` chain declarations (placed before any rule): one port budget per node.
pub fn filter_chains(outbound: &Outbound, nodes: &[BackendNode]) -> String {
    if outbound.load_balancer().is_none() {
        return String::new();
    }
    (0..nodes.len())
        .map(|i| format!(":{} - [0:0]\n", chain(i)))
        .collect()
}

/// `filter` lines (FORWARD): the load balancer's port budgets, or `none`'s drop.
pub fn filter_rules(outbound: &Outbound, nodes: &[BackendNode]) -> String {
    if outbound.outbound_type == OutboundType::None {
        return "-A FORWARD -o internet -m conntrack --ctstate NEW -m comment --comment \"aksnet: outboundType none, no egress\" -j DROP\n".to_owned();
    }
    let Some((_, rule)) = outbound.load_balancer() else {
        return String::new();
    };
    let mut out = String::new();
    for (index, (name, address)) in nodes.iter().enumerate() {
        let chain = chain(index);
        out.push_str(&format!(
            "-A FORWARD -o internet -s {address}/32 -m conntrack --ctstate NEW -m comment --comment \"aksnet: new outbound flows of {name}\" -j {chain}\n"
        ));
        // Per protocol, as the kernel's NAT hands out TCP and UDP ports independently.
        for protocol in ["tcp", "udp"] {
            out.push_str(&format!(
                "-A {chain} -p {protocol} -m connlimit --connlimit-above {} --connlimit-mask 32 --connlimit-daddr -m comment --comment \"{EXHAUSTED_COMMENT}\" -j DROP\n",
                rule.allocated_outbound_ports
            ));
        }
    }
    out
}

/// Sets the fabric's idle timeout for established TCP flows: the load balancer's
/// `idleTimeoutInMinutes`, the NAT gateway's 4 minutes, or the kernel's default. It
/// applies to every flow the fabric tracks (those crossing the internet link and the
/// load-balanced ones); the rest of the fabric keeps no state.
pub fn apply_idle_timeout(vnet_namespace: &str, outbound: &Outbound) -> Result<()> {
    let seconds = idle_timeout_seconds(outbound);
    netns::run_in(vnet_namespace, || {
        let path = format!("/proc/sys/{TCP_ESTABLISHED_SYSCTL}");
        std::fs::write(&path, seconds.to_string())
            .with_context(|| format!("writing {seconds} to {path}"))
    })
    .context("setting the fabric's idle timeout")
}

pub fn idle_timeout_seconds(outbound: &Outbound) -> u32 {
    match (outbound.outbound_type, outbound.load_balancer()) {
        (_, Some((_, rule))) => rule.idle_timeout_in_minutes * 60,
        (OutboundType::ManagedNatGateway, _) => NAT_GATEWAY_IDLE_TIMEOUT_S,
        _ => KERNEL_TCP_ESTABLISHED_S,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::outbound::{
        resolve_in_default_vnet as resolve, LoadBalancerProfileDescription,
    };

    fn nodes() -> Vec<BackendNode> {
        vec![
            ("np-0".into(), Ipv4Addr::new(10, 224, 0, 4)),
            ("np-1".into(), Ipv4Addr::new(10, 224, 0, 5)),
        ]
    }

    #[test]
    fn the_nat_gateway_shares_one_pool_and_none_drops() {
        let nat = resolve(Some(OutboundType::ManagedNatGateway), None, 2).expect("nat");
        let rules = nat_rules(&nat, &nodes());
        assert!(rules.contains(
            "-p tcp -m comment --comment \"aksnet: managed NAT gateway (64512 ports)\" -j SNAT --to-source 198.51.100.5:1024-65535\n"
        ));
        assert_eq!(rules.lines().count(), 3, "tcp, udp, the rest: {rules}");
        assert!(filter_rules(&nat, &nodes()).is_empty());
        assert!(filter_chains(&nat, &nodes()).is_empty());
        assert_eq!(idle_timeout_seconds(&nat), 240);
        let none = resolve(Some(OutboundType::None), None, 2).expect("none");
        assert!(nat_rules(&none, &nodes()).is_empty());
        assert!(filter_rules(&none, &nodes()).contains("-o internet -m conntrack --ctstate NEW"));
    }

    #[test]
    fn the_load_balancer_gives_each_node_its_own_ports_and_budget() {
        let profile = LoadBalancerProfileDescription {
            allocated_outbound_ports: Some(8),
            idle_timeout_in_minutes: Some(4),
        };
        let lb = resolve(None, Some(&profile), 2).expect("lb");
        let nat = nat_rules(&lb, &nodes());
        assert!(nat.contains("-A POSTROUTING -o internet -p tcp -s 10.224.0.4/32 -m comment --comment \"aksnet: load balancer outbound rule, np-0 (8 ports)\" -j SNAT --to-source 198.51.100.4:1024-1031\n"), "{nat}");
        assert!(nat.contains("-p udp -s 10.224.0.5/32 -m comment --comment \"aksnet: load balancer outbound rule, np-1 (8 ports)\" -j SNAT --to-source 198.51.100.4:1032-1039\n"), "{nat}");
        assert_eq!(nat.lines().count(), 6);
        assert_eq!(
            filter_chains(&lb, &nodes()),
            ":AKSNET-SNAT-0 - [0:0]\n:AKSNET-SNAT-1 - [0:0]\n"
        );
        let filter = filter_rules(&lb, &nodes());
        assert!(filter.contains("-A FORWARD -o internet -s 10.224.0.5/32 -m conntrack --ctstate NEW -m comment --comment \"aksnet: new outbound flows of np-1\" -j AKSNET-SNAT-1\n"));
        assert!(filter.contains("-A AKSNET-SNAT-0 -p tcp -m connlimit --connlimit-above 8 --connlimit-mask 32 --connlimit-daddr -m comment --comment \"aksnet: SNAT ports exhausted\" -j DROP\n"));
        assert_eq!(idle_timeout_seconds(&lb), 240);
        let default = resolve(None, None, 2).expect("default");
        assert_eq!(idle_timeout_seconds(&default), 1800);
    }
}
