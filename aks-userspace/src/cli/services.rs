//! `aksnet services add|remove|list`: change a running cluster's services (ClusterIP,
//! NodePort, LoadBalancer).

use std::net::Ipv4Addr;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use aks_userspace::cidr::Ipv4Cidr;
use aks_userspace::cluster_lock::ClusterLock;
use aks_userspace::errln;
use aks_userspace::model::loadbalancer::{ExternalTrafficPolicy, ServiceType};
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
        /// ClusterIP, NodePort or LoadBalancer (a LoadBalancer gets a frontend on the
        /// fabric's load balancer, reprogrammed at once).
        #[arg(long = "type", default_value = "ClusterIP", value_parser = parse_type)]
        service_type: ServiceType,
        /// NodePort/LoadBalancer: the node port (30000-32767); allocated when left out.
        #[arg(long)]
        node_port: Option<u32>,
        /// NodePort/LoadBalancer: Cluster (default) or Local.
        #[arg(long, value_parser = parse_policy)]
        external_traffic_policy: Option<ExternalTrafficPolicy>,
        /// LoadBalancer: a fixed frontend address from the public IP pool.
        #[arg(long = "load-balancer-ip")]
        load_balancer_ip: Option<Ipv4Addr>,
        /// LoadBalancer: a client prefix allowed to reach the frontend (repeatable).
        #[arg(long = "load-balancer-source-range")]
        load_balancer_source_ranges: Vec<Ipv4Cidr>,
        /// The cluster; may be left out when exactly one exists.
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Remove a service (its node port and load balancer frontend with it).
    #[command(alias = "delete")]
    Remove {
        name: String,
        #[arg(long)]
        cluster: Option<String>,
    },
    /// List the services with their backends.
    List(super::ListArgs),
}

/// `value` as one of `choices` (any case), or an error that names `what` it must be
/// and the choices: `"x" is not a service type; use ClusterIP, NodePort or LoadBalancer`.
fn one_of<T: Copy>(value: &str, what: &str, choices: &[(&str, T)]) -> Result<T, String> {
    if let Some((_, chosen)) = choices.iter().find(|(n, _)| n.eq_ignore_ascii_case(value)) {
        return Ok(*chosen);
    }
    let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
    let (last, rest) = names.split_last().expect("at least one choice");
    Err(format!(
        "{value:?} is not {what}; use {} or {last}",
        rest.join(", ")
    ))
}

fn parse_type(value: &str) -> Result<ServiceType, String> {
    use ServiceType::*;
    let types = [
        ("ClusterIP", ClusterIP),
        ("NodePort", NodePort),
        ("LoadBalancer", LoadBalancer),
    ];
    one_of(value, "a service type", &types)
}

fn parse_policy(value: &str) -> Result<ExternalTrafficPolicy, String> {
    use ExternalTrafficPolicy::*;
    one_of(
        value,
        "an externalTrafficPolicy",
        &[("Cluster", Cluster), ("Local", Local)],
    )
}

fn parse_protocol(value: &str) -> Result<Protocol, String> {
    one_of(
        value,
        "a service protocol",
        &[("TCP", Protocol::Tcp), ("UDP", Protocol::Udp)],
    )
}

pub fn run(action: ServicesAction) -> Result<ExitCode> {
    super::require_root("aksnet services")?;
    let (cluster, change) = match action {
        ServicesAction::List(args) => return list(args.cluster.as_deref(), args.json),
        ServicesAction::Add {
            name,
            cluster_ip,
            port,
            target_port,
            protocol,
            backends,
            service_type,
            node_port,
            external_traffic_policy,
            load_balancer_ip,
            load_balancer_source_ranges,
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
                // Checked by planning, as the YAML's fields are (field, value, fix).
                service_type: Some(service_type),
                node_port,
                external_traffic_policy,
                load_balancer_source_ranges,
                load_balancer_ip,
            }),
        ),
        ServicesAction::Remove { name, cluster } => (cluster, ServiceChange::Remove(name)),
    };
    let name = super::resolve_cluster_name(cluster.as_deref())?;
    // Held until the change is programmed and recorded: a concurrent `services` or
    // `down` waits, and the record read below is the latest.
    let _lock = ClusterLock::existing(&name, ClusterLock::say_waiting(&name))?;
    let mut state = ClusterState::require(&name)?;
    let update = match services::apply(&mut state, change) {
        Ok(update) => update,
        Err(err) => {
            return match err.downcast_ref::<aks_userspace::model::PlanError>() {
                // The change itself is bad input (field, value, fix): exit 2, as `plan`.
                Some(invalid) => {
                    errln!("error: cluster {name}: {invalid}");
                    Ok(ExitCode::from(super::EXIT_INVALID_DESCRIPTION))
                }
                None => Err(err),
            };
        }
    };
    println!(
        "service {} {}; the cluster has {} services",
        update.service, update.programmed, update.services_now
    );
    Ok(ExitCode::SUCCESS)
}

fn list(cluster: Option<&str>, json: bool) -> Result<ExitCode> {
    let state = super::resolve_cluster(cluster)?;
    let mut table = Table::new(&[
        "SERVICE",
        "CLUSTER IP",
        "PORT",
        "TARGET",
        "PROTO",
        "TYPE",
        "NODE PORT",
        "FRONTEND",
        "BACKENDS",
    ]);
    for s in &state.services {
        let exposure = state.exposures.iter().find(|e| e.service == s.name);
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
            exposure.map_or_else(
                || "ClusterIP".to_owned(),
                |e| format!("{:?}/{:?}", e.service_type, e.external_traffic_policy),
            ),
            exposure.map_or_else(|| "-".to_owned(), |e| e.node_port.to_string()),
            exposure
                .and_then(|e| e.frontend)
                .map_or_else(|| "-".to_owned(), |f| f.to_string()),
            backends.join(", "),
        ]);
    }
    super::print_cluster_rows(&state, json, &state.services, table)?;
    Ok(ExitCode::SUCCESS)
}
