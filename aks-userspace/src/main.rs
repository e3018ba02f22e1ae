//! `aksnet`: emulate AKS networking in network namespaces and compare datapaths.

mod cli;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use aks_userspace::monitor::EventKind;

/// Emulate Azure Kubernetes Service networking (Azure CNI and kubenet, on an eBPF or an
/// iptables datapath) inside network namespaces on this machine.
#[derive(Parser)]
#[command(name = "aksnet", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate cluster descriptions and print their IP plans (no root needed).
    ///
    /// Exits with 2 when a description breaks an AKS rule, naming the field, the
    /// numbers and a fix.
    Plan {
        /// Cluster descriptions (YAML). Without any, the built-in default cluster:
        /// Azure CNI, eBPF, 2 nodes with 2 pods each.
        files: Vec<PathBuf>,
        /// Print the plans as JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Build a cluster in network namespaces, load its datapath, and stay in the
    /// foreground until Ctrl-C (or SIGTERM), then remove it.
    Up {
        /// Cluster description (YAML); without it, the built-in default cluster.
        file: Option<PathBuf>,
        /// Leave the cluster running and exit once it is up (`aksnet down` removes it).
        #[arg(long)]
        keep: bool,
        /// Once up, probe it and print the check matrix (as `aksnet check`). When a row
        /// fails, the cluster is removed (left running with --keep) and up exits with 1.
        #[arg(long)]
        check: bool,
        /// Level of the datapath log records streamed while up runs (error, warn,
        /// info, debug, trace, off); debug shows every drop with its reason.
        #[arg(long, default_value = "info")]
        log_level: log::LevelFilter,
        /// How often the load balancer's health probe asks each node, in milliseconds
        /// (cloud-provider-azure's default: 5000; Azure's minimum is 5000, shorter is
        /// allowed here for tests).
        #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..=300_000))]
        probe_interval_ms: u64,
        /// Equal probe results in a row that take a node out of rotation or put it back
        /// (Azure's probeThreshold; cloud-provider-azure's default: 2).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
        probe_threshold: u32,
    },
    /// The cluster's load balancer probe agent, started by `up` (not for direct use).
    #[command(name = "probe-agent", hide = true)]
    ProbeAgent {
        name: String,
        #[arg(long, value_parser = clap::value_parser!(u64).range(100..=300_000))]
        interval_ms: u64,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
        threshold: u32,
    },
    /// Remove a cluster completely: namespaces, interfaces, pinned BPF objects, its record.
    /// Works on clusters whose `up` was killed, and does nothing if there is nothing left.
    Down {
        /// The cluster to remove; may be left out when exactly one exists.
        name: Option<String>,
        /// Remove every cluster.
        #[arg(long, conflicts_with = "name")]
        all: bool,
    },
    /// Change a running cluster in place, as `az aks update` does: upgrade kubenet or
    /// Azure CNI Node Subnet to Azure CNI Overlay (`--network-plugin-mode overlay`: one
    /// way, every node reimaged one at a time, a failure or Ctrl-C rolls the upgraded
    /// nodes back), or change its egress (`--outbound-type`: the fabric's rules are
    /// replaced, the flows of the old egress forgotten).
    ///
    /// Exits with 2 when AKS would refuse (a Pod Subnet cluster, Node Subnet without
    /// --pod-cidr, another pod CIDR for kubenet; managedNATGateway to or from
    /// userDefinedRouting).
    #[command(group(clap::ArgGroup::new("change").required(true).args(["network_plugin_mode", "outbound_type"])))]
    Update {
        /// The cluster; may be left out when exactly one exists.
        name: Option<String>,
        /// The target mode; only `overlay` exists (other plugin changes need a new
        /// cluster, as in AKS).
        #[arg(long = "network-plugin-mode", value_enum)]
        network_plugin_mode: Option<PluginModeArg>,
        /// The Overlay pod CIDR: required from Node Subnet; kubenet keeps its own.
        #[arg(long = "pod-cidr", requires = "network_plugin_mode")]
        pod_cidr: Option<aks_userspace::cidr::Ipv4Cidr>,
        /// The new outbound type: loadBalancer, managedNATGateway, userDefinedRouting or
        /// none (the AKS names).
        #[arg(long = "outbound-type", conflicts_with = "network_plugin_mode")]
        outbound_type: Option<aks_userspace::model::outbound::OutboundType>,
    },
    /// Add, change or remove services (ClusterIP, NodePort, LoadBalancer) of a running
    /// cluster, on either datapath; prints how long programming the datapath took.
    Services {
        #[command(subcommand)]
        action: cli::services::ServicesAction,
    },
    /// Apply, delete or list Kubernetes NetworkPolicies of a running cluster: O(changed
    /// keys) map updates on eBPF, one iptables-restore per node on iptables.
    Policy {
        #[command(subcommand)]
        action: cli::policy::PolicyAction,
    },
    /// Probe connectivity between pods, nodes, on-prem and the internet, and compare
    /// each row with what AKS would do (reachable or blocked and why, the source address
    /// the destination should see).
    ///
    /// Exits with 0 when every row matches, 1 when any row does not (or the cluster is
    /// incomplete), 2 for bad input (unknown cluster, bad --expect file).
    Check {
        /// The cluster to probe; may be left out when exactly one exists.
        name: Option<String>,
        /// Print the rows as JSON: observed, expected and verdict per row.
        #[arg(long)]
        json: bool,
        /// Probe the ClusterIP services instead: listeners in every backend, 60
        /// connections from the first pod, which backend answered each and what it saw.
        #[arg(long, conflicts_with = "expect")]
        services: bool,
        /// Probe the LoadBalancer frontends instead: 60 connections from the internet
        /// and the on-prem host each, who answered and what the backend saw, judged by
        /// externalTrafficPolicy and loadBalancerSourceRanges.
        #[arg(long, conflicts_with_all = ["expect", "services"])]
        frontends: bool,
        /// Probe the network policies instead: every pair of pod slots a policy selects
        /// (on one node and across nodes) on the ports the policies name, and isolated
        /// pods to and from outside; each row names the policy that allows or denies it.
        #[arg(long, conflicts_with_all = ["expect", "services", "frontends"])]
        policies: bool,
        /// Check your own assertions instead of the standard matrix: a YAML list of
        /// `{ from, to, port, protocol, expect: reachable|blocked, source: pod|node|ADDRESS }`.
        #[arg(long, value_name = "FILE")]
        expect: Option<PathBuf>,
    },
    /// Show what a running cluster has programmed: its BPF maps (read from their pins,
    /// no running `up` needed), its iptables rules, its tracked connections.
    Inspect {
        #[command(subcommand)]
        what: Inspect,
    },
    /// Stream the datapath's verdicts as they happen (eBPF datapath): every drop, or
    /// with `--type trace` every packet, with node, program, reason, interface and
    /// 5-tuple. Ctrl-C stops.
    Monitor {
        #[command(flatten)]
        target: TargetArgs,
        /// `drop`: dropped packets only (always reported, costs nothing extra);
        /// `trace`: every verdict (turns tracing on in the datapath while monitoring).
        #[arg(long = "type", value_enum, default_value = "drop")]
        kind: MonitorType,
    },
    /// Compare the datapaths: every matrix cell and the limit (two namespaces, one
    /// veth) on identical topologies, workloads in alternation, medians and ratios; then
    /// a ClusterIP service sweep. Builds and removes its own clusters.
    Bench(cli::bench::BenchArgs),
}

/// The cluster, node and output format a command reads.
#[derive(Args)]
struct TargetArgs {
    /// The cluster; may be left out when exactly one exists.
    #[arg(long)]
    cluster: Option<String>,
    /// Only this node (e.g. nodepool1-0); every node when left out.
    #[arg(long)]
    node: Option<String>,
    /// Print JSON (an array; one object per line for `monitor`).
    #[arg(long)]
    json: bool,
}

impl TargetArgs {
    fn target(&self) -> cli::inspect::Target<'_> {
        cli::inspect::Target {
            cluster: self.cluster.as_deref(),
            node: self.node.as_deref(),
            json: self.json,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum MonitorType {
    Drop,
    Trace,
}

#[derive(Subcommand)]
enum Inspect {
    /// The iptables ruleset of a node, read back with `iptables-save` inside the node
    /// namespace, with the number of rules per chain.
    Rules {
        /// The node (e.g. nodepool1-0); the cluster's first node when left out.
        node: Option<String>,
        /// The cluster; may be left out when exactly one exists.
        #[arg(long)]
        cluster: Option<String>,
        /// Print the ruleset and the counts as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The local pods of each node (`ENDPOINTS`): address, pod, veth, MACs.
    Endpoints {
        #[command(flatten)]
        target: TargetArgs,
        /// Only the pod with this address.
        #[arg(long)]
        ip: Option<Ipv4Addr>,
    },
    /// What each node knows about destinations (`ROUTES`): prefix, kind, next hop,
    /// masquerade flag, most specific first.
    Routes {
        #[command(flatten)]
        target: TargetArgs,
        /// Only the route each node takes to this address (longest prefix match).
        #[arg(long)]
        ip: Option<Ipv4Addr>,
    },
    /// The VNet fabric's BPF forwarder (vnet namespace): its route table
    /// (`FABRIC_ROUTES`: prefix, node link, MACs) and its counters.
    Fabric {
        /// The cluster; may be left out when exactly one exists.
        #[arg(long)]
        cluster: Option<String>,
        /// Print JSON: `{"routes": [...], "counters": {...}}`.
        #[arg(long)]
        json: bool,
    },
    /// Egress SNAT per node: the load balancer's outbound rule (each node's port block,
    /// flows, the most to one destination, new flows dropped once its ports are in use)
    /// or the NAT gateway's shared pool, from the fabric (empty for `none`).
    Egress {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// userDefinedRouting: the firewall's log, each rule with the packets it decided
    /// (NAT rules, egress SNAT, packets of unknown sessions dropped: asymmetric routing)
    /// and the sessions in its connection table (--node is ignored).
    Firewall {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// The node subnet's NSG rules as the fabric enforces them (stateful), in evaluation
    /// order, with the packets of new flows each rule decided (any datapath; --node is ignored).
    Nsg {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// The load balancer's health probe of each frontend, per node, as the cluster's
    /// probe agent last saw it: state (up, down, unknown), last answer, when, counts.
    Probes {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Packets and bytes per reason per node (`STATS`), and their totals.
    Stats {
        #[command(flatten)]
        target: TargetArgs,
        /// Only this reason (e.g. drop-nsg-denied).
        #[arg(long, conflicts_with = "drops")]
        reason: Option<String>,
        /// Only the drop reasons.
        #[arg(long)]
        drops: bool,
    },
    /// Every pinned map of each node: type, capacity, entries, pressure.
    Maps {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// The TC ingress program on each node's uplink and pod veths, with how the kernel
    /// holds it: a TCX link (6.6 and later) or a netlink filter on a clsact qdisc.
    Attach {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// The connections each node tracks, original and reply tuples (iptables datapath:
    /// the kernel's conntrack table).
    Conntrack {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// The translated connections (SNAT to the node, DNAT to a service backend).
    Nat {
        #[command(flatten)]
        target: TargetArgs,
    },
}

fn inspect(what: Inspect) -> anyhow::Result<ExitCode> {
    match what {
        Inspect::Rules {
            node,
            cluster,
            json,
        } => cli::inspect::rules(node.as_deref(), cluster.as_deref(), json),
        Inspect::Endpoints { target, ip } => cli::inspect::endpoints(&target.target(), ip),
        Inspect::Routes { target, ip } => cli::inspect::routes(&target.target(), ip),
        Inspect::Fabric { cluster, json } => cli::inspect::fabric(cluster.as_deref(), json),
        Inspect::Nsg { target } => cli::inspect::nsg(&target.target()),
        Inspect::Probes { target } => cli::inspect::probes(&target.target()),
        Inspect::Egress { target } => cli::inspect::egress(&target.target()),
        Inspect::Firewall { target } => cli::inspect::firewall(&target.target()),
        Inspect::Stats {
            target,
            reason,
            drops,
        } => cli::inspect::stats(&target.target(), reason.as_deref(), drops),
        Inspect::Maps { target } => cli::inspect::maps(&target.target()),
        Inspect::Attach { target } => cli::inspect::attachments(&target.target()),
        Inspect::Conntrack { target } => cli::inspect::flows(&target.target(), false),
        Inspect::Nat { target } => cli::inspect::flows(&target.target(), true),
    }
}

/// `--network-plugin-mode` values.
#[derive(Clone, Copy, ValueEnum)]
enum PluginModeArg {
    Overlay,
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Plan { files, json } => cli::plan::run(&files, json),
        Command::Up {
            file,
            keep,
            check,
            log_level,
            probe_interval_ms,
            probe_threshold,
        } => cli::up::run(
            file.as_deref(),
            keep,
            check,
            log_level,
            aks_userspace::probes::ProbeSettings {
                interval: std::time::Duration::from_millis(probe_interval_ms),
                threshold: probe_threshold,
            },
        ),
        Command::ProbeAgent {
            name,
            interval_ms,
            threshold,
        } => aks_userspace::probes::agent::run(
            &name,
            aks_userspace::probes::ProbeSettings {
                interval: std::time::Duration::from_millis(interval_ms),
                threshold,
            },
        )
        .map(|()| ExitCode::SUCCESS),
        Command::Down { name, all } => cli::down::run(name.as_deref(), all),
        Command::Services { action } => cli::services::run(action),
        Command::Policy { action } => cli::policy::run(action),
        Command::Update {
            name,
            outbound_type: Some(outbound_type),
            ..
        } => cli::update::run_outbound(name.as_deref(), outbound_type),
        Command::Update {
            name,
            network_plugin_mode: _,
            pod_cidr,
            outbound_type: None,
        } => cli::update::run(name.as_deref(), pod_cidr),
        Command::Check {
            name,
            json,
            services,
            frontends,
            policies,
            expect,
        } => {
            let mode = match (&expect, services, frontends, policies) {
                (Some(file), ..) => cli::check::Mode::Expect(file),
                (None, true, ..) => cli::check::Mode::Services,
                (None, false, true, _) => cli::check::Mode::Frontends,
                (None, false, false, true) => cli::check::Mode::Policies,
                (None, false, false, false) => cli::check::Mode::Matrix,
            };
            cli::check::run(name.as_deref(), json, mode)
        }
        Command::Inspect { what } => inspect(what),
        Command::Monitor { target, kind } => cli::monitor::run(
            target.cluster.as_deref(),
            target.node.as_deref(),
            match kind {
                MonitorType::Drop => EventKind::Drop,
                MonitorType::Trace => EventKind::Trace,
            },
            target.json,
        ),
        Command::Bench(args) => cli::bench::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            aks_userspace::errln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
