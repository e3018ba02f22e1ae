//! `userDefinedRouting`: the firewall ("Azure Firewall") and the route table that makes
//! it the next hop of 0.0.0.0/0 for the node subnet (egress-udr.md,
//! limit-egress-traffic.md).
//!
//! - **Route table**: in the vnet namespace, traffic arriving from a node link goes by
//!   the main table when it is for the VNet, on-prem or (kubenet, Overlay) the pod CIDR,
//!   as Azure's more specific system and UDR routes win, and otherwise to the firewall's
//!   private address (policy routing: `ip rule iif nodeN`, table [`ROUTE_TABLE`]).
//! - **The firewall** (its own namespace, one leg in `AzureFirewallSubnet`): stateful;
//!   a packet of no session it knows is dropped (conntrack `INVALID`), new flows from the
//!   VNet to the internet are allowed and leave SNATed to its public address, its NAT
//!   rules DNAT its public address to a LoadBalancer frontend and SNAT to its private
//!   address (as Azure Firewall does with DNAT traffic), everything else is denied. Each
//!   rule counts what it decided; its connection table is its flow log (`inspect
//!   firewall`).
//! - **Asymmetric routing**, as limit-egress-traffic.md describes it: a client reaching a
//!   LoadBalancer frontend comes in through the load balancer's public address, but the
//!   node's reply follows 0.0.0.0/0 to the firewall, which never saw the session and
//!   drops it. A NAT rule on the firewall (`firewall.natRules`) is the documented fix:
//!   clients use the firewall's public address, and replies come back to the firewall.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::datapath::iptables;
use crate::model::outbound::{Firewall, FIREWALL_PUBLIC_IP};
use crate::netns;
use crate::plan::Plan;
use crate::topology::layout::{self, FIREWALL_LINK};

/// The vnet namespace's routing table for the node subnet's 0.0.0.0/0.
pub const ROUTE_TABLE: u32 = 100;
/// `ip rule` preferences: the more specific routes first, then the firewall.
const PREF_SPECIFIC: u32 = 100;
const PREF_FIREWALL: u32 = 110;

/// Comments of the firewall's rules, as `inspect firewall` names them.
pub const COMMENT_PREFIX: &str = "aksnet firewall: ";

/// `ip -batch` lines for the vnet namespace: the route table of the node subnet.
pub fn route_table_commands(plan: &Plan, firewall: &Firewall) -> String {
    let mut specific = vec![plan.address_space, plan.external_hosts.on_prem.cidr];
    specific.extend(plan.pod_cidr);
    let mut out = format!(
        "route add default via {} dev {FIREWALL_LINK} table {ROUTE_TABLE}\n",
        firewall.private_ip
    );
    for node in &plan.nodes {
        let link = format!("node{}", node.index);
        for cidr in &specific {
            out.push_str(&format!(
                "rule add pref {PREF_SPECIFIC} iif {link} to {cidr} lookup main\n"
            ));
        }
        out.push_str(&format!(
            "rule add pref {PREF_FIREWALL} iif {link} lookup {ROUTE_TABLE}\n"
        ));
    }
    out
}

/// `filter` lines for the fabric's FORWARD, before its "no inbound from the internet":
/// the firewall's public address takes new flows (the firewall itself decides).
pub fn admit_rules(plan: &Plan) -> String {
    match plan.outbound.firewall {
        Some(_) => format!(
            "-A FORWARD -i internet -d {FIREWALL_PUBLIC_IP}/32 -m conntrack --ctstate NEW -m comment --comment \"aksnet: the firewall's public address\" -j ACCEPT\n"
        ),
        None => String::new(),
    }
}

/// The firewall's own rules (`iptables-restore` payload for its namespace).
pub fn firewall_rules(plan: &Plan, firewall: &Firewall) -> String {
    let vnet = plan.address_space;
    let private = firewall.private_ip;
    let mut nat = String::new();
    for rule in &firewall.nat_rules {
        let Some((frontend, port, protocol)) = frontend_of(plan, &rule.service) else {
            continue;
        };
        nat.push_str(&format!(
            "-A PREROUTING -d {FIREWALL_PUBLIC_IP}/32 -p {protocol} --dport {port} -m comment --comment \"{COMMENT_PREFIX}NAT rule {} to {} {frontend}:{port}\" -j DNAT --to-destination {frontend}:{port}\n",
            rule.name, rule.service
        ));
    }
    format!(
        "*nat\n\
         {nat}\
         -A POSTROUTING -m conntrack --ctstate DNAT -m comment --comment \"{COMMENT_PREFIX}DNAT traffic leaves from the private address\" -j SNAT --to-source {private}\n\
         -A POSTROUTING ! -d {vnet} -m comment --comment \"{COMMENT_PREFIX}egress leaves from the public address\" -j SNAT --to-source {FIREWALL_PUBLIC_IP}\n\
         COMMIT\n\
         *filter\n\
         -A FORWARD -m conntrack --ctstate INVALID -m comment --comment \"{COMMENT_PREFIX}no session for this packet (asymmetric route)\" -j DROP\n\
         -A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A FORWARD -m conntrack --ctstate DNAT -m comment --comment \"{COMMENT_PREFIX}NAT rule allows\" -j ACCEPT\n\
         -A FORWARD -s {vnet} ! -d {vnet} -m comment --comment \"{COMMENT_PREFIX}network rule allows the VNet to the internet\" -j ACCEPT\n\
         -A FORWARD -m comment --comment \"{COMMENT_PREFIX}default deny\" -j DROP\n\
         COMMIT\n"
    )
}

/// The frontend, port and protocol of LoadBalancer service `service`.
fn frontend_of(plan: &Plan, service: &str) -> Option<(std::net::Ipv4Addr, u16, &'static str)> {
    let exposure = plan.exposures.iter().find(|e| e.service == service)?;
    let planned = plan.services.iter().find(|s| s.name == service)?;
    let protocol = match planned.protocol {
        crate::model::Protocol::Tcp => "tcp",
        crate::model::Protocol::Udp => "udp",
    };
    Some((exposure.frontend?, planned.port, protocol))
}

/// Programs the route table (vnet namespace) and the firewall (its namespace, built by
/// the topology) of `plan`; nothing when the outbound type has no firewall.
pub fn install(plan: &Plan, vnet_namespace: &str) -> Result<()> {
    let Some(firewall) = &plan.outbound.firewall else {
        return Ok(());
    };
    let namespace = layout::firewall_namespace_name(&layout::prefix(&plan.name));
    netns::run_in(&namespace, || {
        // One-armed: it forwards out of the link it received on; no redirects for that.
        for key in ["all", "default", "eth0"] {
            let path = format!("/proc/sys/net/ipv4/conf/{key}/send_redirects");
            std::fs::write(&path, "0").with_context(|| format!("writing 0 to {path}"))?;
        }
        Ok(())
    })?;
    iptables::replace(&namespace, &firewall_rules(plan, firewall))
        .context("programming the firewall")?;
    route_to_firewall(plan, vnet_namespace)
}

/// Adds the route table's rules and routes to the vnet namespace.
pub fn route_to_firewall(plan: &Plan, vnet_namespace: &str) -> Result<()> {
    let Some(firewall) = &plan.outbound.firewall else {
        return Ok(());
    };
    ip_batch(vnet_namespace, &route_table_commands(plan, firewall))
        .context("routing 0.0.0.0/0 of the node subnet to the firewall")
}

/// Removes the route table's rules from the vnet namespace (its route goes with the
/// firewall's link, when the firewall's namespace is removed).
pub fn uninstall(plan: &Plan, vnet_namespace: &str) -> Result<()> {
    let Some(firewall) = &plan.outbound.firewall else {
        return Ok(());
    };
    let commands: String = route_table_commands(plan, firewall)
        .lines()
        .filter(|l| l.starts_with("rule add"))
        .map(|l| format!("{}\n", l.replacen("rule add", "rule del", 1)))
        .collect();
    ip_batch(vnet_namespace, &commands)
}

fn ip_batch(namespace: &str, commands: &str) -> Result<()> {
    netns::run_in(namespace, || {
        let mut child = Command::new("ip")
            .args(["-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting ip (iproute2)")?;
        child
            .stdin
            .take()
            .context("ip's stdin")?
            .write_all(commands.as_bytes())
            .context("writing to ip -batch")?;
        let out = child.wait_with_output().context("waiting for ip")?;
        if !out.status.success() {
            bail!(
                "ip -batch failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::plan_of;

    const UDR: &str = "name: fw\nnetworkPlugin: kubenet\ndatapath: iptables\nvnet:\n  addressSpace: 10.224.0.0/12\n  nodeSubnet: 10.224.0.0/24\nnodePools:\n  - { name: nodepool1, count: 2 }\nservices:\n  - { name: web, clusterIP: 10.0.0.20, port: 80, targetPort: 17001, backends: 1, type: LoadBalancer }\noutboundType: userDefinedRouting\nfirewall:\n  natRules:\n    - { name: inboundrule, service: web }\n";

    #[test]
    fn node_links_send_0_0_0_0_to_the_firewall_after_the_specific_routes() {
        let plan = plan_of(UDR);
        let firewall = plan.outbound.firewall.clone().expect("a firewall");
        let commands = route_table_commands(&plan, &firewall);
        assert!(
            commands.starts_with("route add default via 10.239.255.196 dev firewall table 100\n"),
            "{commands}"
        );
        assert!(
            commands.contains("rule add pref 100 iif node1 to 10.244.0.0/16 lookup main\n"),
            "{commands}"
        );
        assert!(commands.contains("rule add pref 110 iif node0 lookup 100\n"));
        // 2 nodes × (VNet, on-prem, pod CIDR, firewall) + the route.
        assert_eq!(commands.lines().count(), 9);
        assert!(admit_rules(&plan).contains("-d 198.51.100.6/32"));
    }

    #[test]
    fn the_firewall_dnats_its_public_address_and_drops_unknown_sessions() {
        let plan = plan_of(UDR);
        let firewall = plan.outbound.firewall.clone().expect("a firewall");
        let rules = firewall_rules(&plan, &firewall);
        let frontend = plan.exposures[0].frontend.expect("a frontend");
        assert!(rules.contains(&format!(
            "-A PREROUTING -d 198.51.100.6/32 -p tcp --dport 80 -m comment --comment \"aksnet firewall: NAT rule inboundrule to web {frontend}:80\" -j DNAT --to-destination {frontend}:80\n"
        )), "{rules}");
        assert!(rules.contains("--ctstate INVALID -m comment --comment \"aksnet firewall: no session for this packet (asymmetric route)\" -j DROP"));
        assert!(rules.contains("-j SNAT --to-source 198.51.100.6\n"));
    }
}
