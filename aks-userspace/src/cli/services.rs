//! `aksnet services add|remove|list`: change a running cluster's ClusterIP services.

use std::net::Ipv4Addr;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;

use aks_userspace::cluster_lock::ClusterLock;
use aks_userspace::model::{Protocol, ServiceDescription};
use aks_userspace::services::{self, ServiceChange};
use aks_userspace::state::ClusterState;
use aks_userspace::table::Table;

#[derive(Subcommand)]
pub enum ServicesAction {
    /// Add a service, or replace the one with that name (other backends, port, …).
    Add {
        /// Service name.
        name: String,
        /// ClusterIP, inside the cluster's serviceCidr.
        #[arg(long = "cluster-ip")]
        cluster_ip: Ipv4Addr,
        #[arg(long)]
        port: u32,
        /// Defaults to --port.
        #[arg(long)]
        target_port: Option<u32>,
        /// TCP or UDP.
        #[arg(long, default_value = "TCP", value_parser = parse_protocol)]
        protocol: Protocol,
        /// How many pods back it (spread across nodes, as the planner places them).
        #[arg(long)]
        backends: u32,
        /// The cluster; may be left out when exactly one exists.
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Remove a service.
    Remove {
        name: String,
        #[arg(long)]
        cluster: Option<String>,
    },
    /// List the services with their backends.
    List {
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn parse_protocol(value: &str) -> Result<Protocol, String> {
    match value.to_ascii_uppercase().as_str() {
        "TCP" => Ok(Protocol::Tcp),
        "UDP" => Ok(Protocol::Udp),
        other => Err(format!(
            "{other:?} is not a service protocol; use TCP or UDP"
        )),
    }
}

pub fn run(action: ServicesAction) -> Result<ExitCode> {
    super::require_root("aksnet services")?;
    let (cluster, change) = match action {
        ServicesAction::List { cluster, json } => return list(cluster.as_deref(), json),
        ServicesAction::Add {
            name,
            cluster_ip,
            port,
            target_port,
            protocol,
            backends,
            cluster,
        } => (
            cluster,
            ServiceChange::Upsert(ServiceDescription {
                name,
                cluster_ip,
                port,
                target_port,
                protocol: Some(protocol),
                backends,
                // `services add` makes ClusterIP services; external access is described
                // in the cluster's YAML.
                service_type: None,
                node_port: None,
                external_traffic_policy: None,
                load_balancer_source_ranges: Vec::new(),
                load_balancer_ip: None,
            }),
        ),
        ServicesAction::Remove { name, cluster } => (cluster, ServiceChange::Remove(name)),
    };
    let name = super::resolve_cluster_name(cluster.as_deref())?;
    // Held until the change is programmed and recorded: a concurrent `services` or
    // `down` waits, and the record read below is the latest.
    let _lock = ClusterLock::existing(&name, ClusterLock::say_waiting(&name))?;
    let mut state = ClusterState::require(&name)?;
    let update = services::apply(&mut state, change)?;
    println!(
        "service {} programmed on {} nodes in {:.3} ms ({}); the cluster has {} services",
        update.service,
        update.nodes,
        update.programming.as_secs_f64() * 1000.0,
        update.how,
        update.services_now
    );
    Ok(ExitCode::SUCCESS)
}

fn list(cluster: Option<&str>, json: bool) -> Result<ExitCode> {
    let state = super::resolve_cluster(cluster)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&state.services)
                .context("while encoding the services as JSON")?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(&[
        "SERVICE",
        "CLUSTER IP",
        "PORT",
        "TARGET",
        "PROTO",
        "BACKENDS",
    ]);
    for s in &state.services {
        let backends: Vec<String> = s
            .backends
            .iter()
            .map(|b| format!("{} ({})", b.ip, b.pod))
            .collect();
        table.row(vec![
            s.name.clone(),
            s.cluster_ip.to_string(),
            s.port.to_string(),
            s.target_port.to_string(),
            format!("{:?}", s.protocol).to_uppercase(),
            backends.join(", "),
        ]);
    }
    println!(
        "cluster {}: {}/{}",
        state.name, state.network_plugin, state.datapath
    );
    print!("{table}");
    Ok(ExitCode::SUCCESS)
}
