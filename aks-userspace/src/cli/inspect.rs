//! `aksnet inspect …`: `rules [NODE]` for the iptables datapath; `endpoints`, `routes`,
//! `nsg`, `stats` and `maps` from the pinned BPF maps; `conntrack` and `nat` from the
//! node's connection tracking; `attach` from the kernel's TC hooks. Each takes
//! `--cluster`, `--node` and `--json`.

use std::net::Ipv4Addr;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde::Serialize;

use aks_userspace::datapath::iptables_rules::{node_rules, NodeRules};
use aks_userspace::inspect::{self, FlowTuple};
use aks_userspace::state::ClusterState;
use aks_userspace::table::Table;

pub fn rules(node: Option<&str>, cluster: Option<&str>, json: bool) -> Result<ExitCode> {
    super::require_root("aksnet inspect rules")?;
    let state = super::resolve_cluster(cluster)?;
    let rules = node_rules(&state, node)?;
    super::print_json_or(json, &rules, || render(&rules))?;
    Ok(ExitCode::SUCCESS)
}

/// The ruleset as `iptables-save` shows it (without counters), then the rules per chain.
fn render(rules: &NodeRules) -> String {
    let mut out = format!(
        "node {} of cluster {} ({} datapath), namespace {}: {} rules\n\n",
        rules.node, rules.cluster, rules.datapath, rules.namespace, rules.total_rules
    );
    out.push_str(&rules.ruleset.to_restore());
    let mut table = Table::new(&["TABLE", "CHAIN", ">RULES"]);
    for chain in &rules.chains {
        table.row(vec![
            chain.table.clone(),
            chain.chain.clone(),
            chain.rules.to_string(),
        ]);
    }
    out.push('\n');
    out.push_str(&table.to_string());
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// Which nodes and how to print: the flags every map-reading `inspect` command takes.
pub struct Target<'a> {
    pub cluster: Option<&'a str>,
    pub node: Option<&'a str>,
    pub json: bool,
}

impl Target<'_> {
    fn state(&self, what: &str) -> Result<ClusterState> {
        super::require_root(what)?;
        super::resolve_cluster(self.cluster)
    }

    /// Prints `rows` as a JSON array, or as `table` under a one-line heading.
    fn print<T: Serialize>(&self, state: &ClusterState, rows: &[T], table: Table) -> Result<()> {
        super::print_cluster_rows(state, self.json, rows, table)
    }
}

pub fn endpoints(target: &Target, only_ip: Option<Ipv4Addr>) -> Result<ExitCode> {
    let state = target.state("aksnet inspect endpoints")?;
    let rows = inspect::endpoints(&state, target.node, only_ip)?;
    let mut table = Table::new(&[
        "NODE",
        "POD IP",
        "POD",
        "INTERFACE",
        ">IFINDEX",
        "POD MAC",
        "HOST MAC",
    ]);
    for r in &rows {
        table.row(vec![
            r.node.clone(),
            r.ip.to_string(),
            r.pod.clone().unwrap_or_else(|| "?".into()),
            r.host_interface.clone().unwrap_or_else(|| "?".into()),
            r.host_ifindex.to_string(),
            r.pod_mac.clone(),
            r.host_mac.clone(),
        ]);
    }
    target.print(&state, &rows, table)?;
    Ok(ExitCode::SUCCESS)
}

pub fn routes(target: &Target, lookup: Option<Ipv4Addr>) -> Result<ExitCode> {
    let state = target.state("aksnet inspect routes")?;
    let mut rows = inspect::routes(&state, target.node)?;
    if let Some(address) = lookup {
        rows = inspect::longest_prefix_match(&rows, address);
    }
    let mut table = Table::new(&["NODE", "PREFIX", "KIND", "NEXT HOP", "MASQUERADE", "VIA"]);
    for r in &rows {
        table.row(vec![
            r.node.clone(),
            r.prefix.to_string(),
            r.kind.clone(),
            r.next_hop.map_or_else(|| "-".into(), |h| h.to_string()),
            if r.masquerade { "yes" } else { "no" }.into(),
            if r.overlay { "overlay" } else { "-" }.into(),
        ]);
    }
    if let (Some(address), false) = (lookup, target.json) {
        println!("route each node's datapath takes to {address} (longest prefix match):");
    }
    target.print(&state, &rows, table)?;
    Ok(ExitCode::SUCCESS)
}

pub fn probes(target: &Target) -> Result<ExitCode> {
    let state = target.state("aksnet inspect probes")?;
    let inspect::RecordedProbes { rows, settings } = inspect::probes(&state, target.node)?;
    if !target.json {
        let agent = aks_userspace::cluster_lock::agent_pid(&state.name).map_or_else(
            || "no probe agent runs".to_owned(),
            |pid| format!("probe agent pid {pid}"),
        );
        match settings {
            Some((interval, threshold)) => println!(
                "{agent}: every {interval} ms, {threshold} equal results in a row change a node's state"
            ),
            None => println!("{agent}: no probe recorded yet"),
        }
    }
    let now = aks_userspace::probes::prober::now_ms();
    let mut table = Table::new(&[
        "SERVICE", "FRONTEND", "POLICY", "PROBE", "NODE", "STATE", "LAST", ">AGO", ">CHANGED",
        ">PROBES", ">OK", ">FAILED",
    ]);
    let ago = |at: Option<u64>| {
        at.map_or_else(
            || "-".to_owned(),
            |t| format!("{:.1}s", now.saturating_sub(t) as f64 / 1000.0),
        )
    };
    for r in &rows {
        let n = &r.node;
        table.row(vec![
            r.service.clone(),
            format!("{}:{}", r.frontend, r.port),
            format!("{:?}", r.policy),
            r.probe.clone(),
            format!("{} ({})", n.node, n.address),
            format!("{:?}", n.state).to_lowercase(),
            n.last_result.clone().unwrap_or_else(|| "-".into()),
            ago(n.last_probe_unix_ms),
            ago(n.changed_unix_ms),
            n.probes.to_string(),
            n.successes.to_string(),
            n.failures.to_string(),
        ]);
    }
    target.print(&state, &rows, table)?;
    Ok(ExitCode::SUCCESS)
}

pub fn nsg(target: &Target) -> Result<ExitCode> {
    let state = target.state("aksnet inspect nsg")?;
    let rows = inspect::nsg_rules(&state)?;
    let mut table = Table::new(&[
        ">PRIORITY",
        "NAME",
        "ACTION",
        "PROTOCOL",
        "SOURCE",
        "DESTINATION",
        "PORTS",
        ">PACKETS",
        ">BYTES",
    ]);
    for r in &rows {
        table.row(vec![
            r.priority.to_string(),
            r.name.clone(),
            r.action.clone(),
            r.protocol.clone(),
            r.source.clone(),
            r.destination.clone(),
            r.ports.clone(),
            r.packets.to_string(),
            r.bytes.to_string(),
        ]);
    }
    target.print(&state, &rows, table)?;
    Ok(ExitCode::SUCCESS)
}

pub fn fabric(cluster: Option<&str>, json: bool) -> Result<ExitCode> {
    use aks_userspace::fabric::forwarder;
    super::require_root("aksnet inspect fabric")?;
    let state = super::resolve_cluster(cluster)?;
    let routes = forwarder::read(&state)?;
    let counters = forwarder::counters(&state.name)?;
    if json {
        let doc = serde_json::json!({ "routes": routes, "counters": counters });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).context("while encoding the fabric as JSON")?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "cluster {}: the VNet fabric's forwarder in {} ({} routes)",
        state.name,
        state.vnet,
        routes.len()
    );
    let mut table = Table::new(&["PREFIX", "LINK", ">IFINDEX", "GATEWAY MAC", "NODE MAC"]);
    for r in &routes {
        table.row(vec![
            r.prefix.to_string(),
            r.link.clone().unwrap_or_else(|| "?".into()),
            r.ifindex.to_string(),
            r.gateway_mac.clone(),
            r.node_mac.clone(),
        ]);
    }
    if table.is_empty() {
        println!("(no routes: every packet takes the iptables fabric; NSG rules keep it so)");
    } else {
        print!("{table}");
    }
    println!(
        "forwarded {} packets, passed to the stack {} (+{} not IPv4), redirect failures {}",
        counters.forwarded_packets,
        counters.passed_packets,
        counters.passed_non_ipv4_packets,
        counters.redirect_failed_packets
    );
    Ok(ExitCode::SUCCESS)
}

pub fn egress(target: &Target) -> Result<ExitCode> {
    let state = target.state("aksnet inspect egress")?;
    let rows = inspect::egress(&state)?;
    if rows.is_empty() && !target.json {
        println!(
            "cluster {}: outboundType {}: no SNAT at the load balancer or a NAT gateway",
            state.name, state.outbound.outbound_type
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        "NODE",
        "PUBLIC IP",
        "PORTS",
        ">FLOWS",
        ">PORTS IN USE",
        ">BUSIEST",
        ">POOL",
        ">EXHAUSTED DROPS",
    ]);
    for r in &rows {
        table.row(vec![
            r.node.clone(),
            r.public_ip.to_string(),
            r.port_range.clone(),
            r.flows.to_string(),
            r.ports_in_use.to_string(),
            r.busiest.to_string(),
            r.pool.to_string(),
            r.exhausted_drops
                .map_or_else(|| "-".to_owned(), |d| d.to_string()),
        ]);
    }
    target.print(&state, &rows, table)?;
    Ok(ExitCode::SUCCESS)
}

pub fn firewall(target: &Target) -> Result<ExitCode> {
    let state = target.state("aksnet inspect firewall")?;
    let Some(log) = inspect::firewall(&state)? else {
        if target.json {
            println!("null");
        } else {
            println!(
                "cluster {}: outboundType {} has no firewall (userDefinedRouting has)",
                state.name, state.outbound.outbound_type
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    if target.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&log).context("while encoding the firewall log")?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut rules = Table::new(&["TABLE", "RULE", "ACTION", ">PACKETS", ">BYTES"]);
    for r in &log.rules {
        rules.row(vec![
            r.table.clone(),
            r.rule.clone(),
            r.action.clone(),
            r.packets.to_string(),
            r.bytes.to_string(),
        ]);
    }
    let mut flows = Table::new(&["PROTO", "STATE", "ORIGINAL", "REPLY", "NAT", ">EXPIRES S"]);
    let tuple = |t: &FlowTuple| {
        let port = |p: Option<u16>| p.map_or_else(String::new, |p| format!(":{p}"));
        format!("{}{} -> {}{}", t.src, port(t.sport), t.dst, port(t.dport))
    };
    for f in &log.flows {
        flows.row(vec![
            f.protocol.clone(),
            f.state.clone().unwrap_or_else(|| "-".into()),
            tuple(&f.original),
            tuple(&f.reply),
            f.nat.clone().unwrap_or_else(|| "-".into()),
            f.timeout_secs.to_string(),
        ]);
    }
    println!(
        "cluster {}: firewall {} ({} flows)",
        state.name,
        log.namespace,
        log.flows.len()
    );
    print!("{rules}");
    if !log.flows.is_empty() {
        println!();
        print!("{flows}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn stats(target: &Target, reason: Option<&str>, drops: bool) -> Result<ExitCode> {
    let state = target.state("aksnet inspect stats")?;
    let only = reason.map(inspect::reason_by_name).transpose()?;
    let rows = inspect::stats(&state, target.node, |r| {
        only.is_none_or(|o| o == r) && (!drops || r.is_drop())
    })?;
    // Lost events are no reason: listed only when every reason is.
    let lost = if only.is_none() && !drops {
        inspect::events_lost(&state, target.node)?
    } else {
        Vec::new()
    };
    let mut table = Table::new(&["NODE", "REASON", ">PACKETS", ">BYTES"]);
    for r in &rows {
        table.row(vec![
            r.node.clone(),
            r.reason.to_owned(),
            r.packets.to_string(),
            r.bytes.to_string(),
        ]);
    }
    for l in &lost {
        table.row(vec![
            l.node.clone(),
            "(monitor events lost)".to_owned(),
            l.monitor_events_lost.to_string(),
            "-".to_owned(),
        ]);
    }
    let lines: Vec<inspect::StatsLine> = rows
        .into_iter()
        .map(inspect::StatsLine::Reason)
        .chain(lost.into_iter().map(inspect::StatsLine::EventsLost))
        .collect();
    target.print(&state, &lines, table)?;
    Ok(ExitCode::SUCCESS)
}

pub fn maps(target: &Target) -> Result<ExitCode> {
    let state = target.state("aksnet inspect maps")?;
    let rows = inspect::maps(&state, target.node)?;
    let mut table = Table::new(&[
        "NODE",
        "MAP",
        "TYPE",
        ">KEY",
        ">VALUE",
        ">CAPACITY",
        ">ENTRIES",
        ">PRESSURE",
    ]);
    for r in &rows {
        table.row(vec![
            r.node.clone(),
            r.name.clone(),
            r.map_type.clone(),
            r.key_size.to_string(),
            r.value_size.to_string(),
            r.capacity.to_string(),
            r.entries.map_or_else(|| "-".into(), |n| n.to_string()),
            r.pressure_percent
                .map_or_else(|| "-".into(), |p| format!("{p:.1}%")),
        ]);
    }
    target.print(&state, &rows, table)?;
    Ok(ExitCode::SUCCESS)
}

/// `inspect attach`: the TC programs on each interface and how they are attached.
pub fn attachments(target: &Target) -> Result<ExitCode> {
    let state = target.state("aksnet inspect attach")?;
    let rows = inspect::attachments(&state, target.node)?;
    let mut table = Table::new(&["NODE", "INTERFACE", "POD", "PROGRAM", ">ID", "MODE"]);
    for r in &rows {
        table.row(vec![
            r.node.clone(),
            r.interface.clone(),
            r.pod.clone().unwrap_or_else(|| "-".into()),
            r.program.clone(),
            r.program_id.to_string(),
            r.mode.to_string(),
        ]);
    }
    target.print(&state, &rows, table)?;
    Ok(ExitCode::SUCCESS)
}

/// `inspect conntrack` (every flow) and `inspect nat` (translated flows only).
pub fn flows(target: &Target, translated_only: bool) -> Result<ExitCode> {
    let what = if translated_only { "nat" } else { "conntrack" };
    let state = target.state(&format!("aksnet inspect {what}"))?;
    let rows = if translated_only {
        inspect::nat(&state, target.node)?
    } else {
        inspect::conntrack(&state, target.node)?
    };
    let mut table = Table::new(&[
        "NODE", "PROTO", "STATE", ">TIMEOUT", "ORIGINAL", "REPLY", "NAT", "FLAGS",
    ]);
    for r in &rows {
        table.row(vec![
            r.node.clone(),
            r.protocol.clone(),
            r.state.clone().unwrap_or_else(|| "-".into()),
            format!("{}s", r.timeout_secs),
            tuple(&r.original),
            tuple(&r.reply),
            r.nat.clone().unwrap_or_else(|| "-".into()),
            r.flags.join(","),
        ]);
    }
    target.print(&state, &rows, table)?;
    Ok(ExitCode::SUCCESS)
}

/// `src:sport -> dst:dport` (addresses alone without ports).
fn tuple(t: &FlowTuple) -> String {
    match (t.sport, t.dport) {
        (Some(s), Some(d)) => format!("{}:{s} -> {}:{d}", t.src, t.dst),
        _ => format!("{} -> {}", t.src, t.dst),
    }
}
