//! `aksnet`: emulate AKS networking in network namespaces and compare datapaths.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
        /// Once up, probe it and print the check matrix (as `aksnet check`).
        #[arg(long)]
        check: bool,
        /// Level of the datapath log records streamed while up runs (error, warn,
        /// info, debug, trace, off); debug shows every drop with its reason.
        #[arg(long, default_value = "info")]
        log_level: log::LevelFilter,
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
    /// Probe TCP connectivity between pods, nodes, on-prem and the internet, and show
    /// which source address each destination saw.
    Check {
        /// The cluster to probe; may be left out when exactly one exists.
        name: Option<String>,
        /// Print the results as JSON.
        #[arg(long)]
        json: bool,
        /// Probe the ClusterIP services instead: listeners in every backend, 60
        /// connections from the first pod, which backend answered each.
        #[arg(long)]
        services: bool,
    },
    /// Show what a running cluster has programmed.
    Inspect {
        #[command(subcommand)]
        what: Inspect,
    },
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
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Plan { files, json } => cli::plan::run(&files, json),
        Command::Up {
            file,
            keep,
            check,
            log_level,
        } => cli::up::run(file.as_deref(), keep, check, log_level),
        Command::Down { name, all } => cli::down::run(name.as_deref(), all),
        Command::Check {
            name,
            json,
            services,
        } => cli::check::run(name.as_deref(), json, services),
        Command::Inspect {
            what:
                Inspect::Rules {
                    node,
                    cluster,
                    json,
                },
        } => cli::inspect::rules(node.as_deref(), cluster.as_deref(), json),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
