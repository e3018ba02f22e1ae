//! The human form of a plan: a few aligned tables, one per concern.

use std::fmt::Write;

use super::{Backend, Plan, RouteSource, ServicePlan};
use crate::model::PodNetwork;
use crate::table::Table;

/// The plan as text for a terminal (warnings are not included; the caller prints them).
pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_plan(&mut out, plan);
    out
}

fn write_plan(out: &mut String, plan: &Plan) -> std::fmt::Result {
    let plugin = match plan.pod_network {
        PodNetwork::AzureNodeSubnet | PodNetwork::AzurePodSubnet => {
            "azure (pods take VNet addresses)"
        }
        PodNetwork::AzureOverlay => {
            "azure, networkPluginMode overlay (pods take addresses from podCidr, one /24 per \
             node; the VNet has no pod routes)"
        }
        PodNetwork::Kubenet => "kubenet (pods take addresses from podCidr, one /24 per node)",
    };
    writeln!(
        out,
        "cluster {}: networkPlugin {plugin}, datapath {}",
        plan.name, plan.datapath
    )?;
    let mut ranges = Table::new(&["RANGE", "CIDR"]);
    ranges.row(vec![
        "vnet.addressSpace".into(),
        plan.address_space.to_string(),
    ]);
    ranges.row(vec!["vnet.nodeSubnet".into(), plan.node_subnet.to_string()]);
    if let Some(pod_subnet) = plan.pod_subnet {
        ranges.row(vec!["vnet.podSubnet".into(), pod_subnet.to_string()]);
    }
    if let Some(pod_cidr) = plan.pod_cidr {
        ranges.row(vec!["podCidr".into(), pod_cidr.to_string()]);
    }
    ranges.row(vec!["serviceCidr".into(), plan.service_cidr.to_string()]);
    ranges.row(vec!["dnsServiceIp".into(), plan.dns_service_ip.to_string()]);
    let non_masquerade: Vec<String> = plan
        .non_masquerade_cidrs
        .iter()
        .map(ToString::to_string)
        .collect();
    ranges.row(vec!["nonMasqueradeCidrs".into(), non_masquerade.join(", ")]);
    writeln!(out, "\n{ranges}")?;

    let pods_column = match plan.pod_cidr {
        None => "POD BLOCK",
        Some(_) => "POD CIDR",
    };
    let mut nodes = Table::new(&[
        "NODE",
        "POOL",
        "OS",
        "NODE IP",
        ">MAXPODS",
        pods_column,
        "PODS",
    ]);
    for node in &plan.nodes {
        let range = match (node.pod_cidr, node.pod_block) {
            (Some(cidr), _) => cidr.to_string(),
            (None, Some(block)) => format!("{}-{}", block.first, block.last),
            (None, None) => String::new(),
        };
        let pods: Vec<String> = node.pods.iter().map(|p| p.ip.to_string()).collect();
        nodes.row(vec![
            node.name.clone(),
            node.pool.clone(),
            node.os_type.to_string(),
            node.ip.to_string(),
            node.max_pods.to_string(),
            range,
            pods.join(", "),
        ]);
    }
    writeln!(out, "{nodes}")?;

    let routes_title = match plan.route_table.first().map(|r| r.source) {
        Some(RouteSource::UserDefinedRoute) => "VNET ROUTE TABLE (UDR, one per node)",
        Some(RouteSource::NicAddress) => "VNET ROUTES (pod addresses on node NICs)",
        None => "VNET ROUTES (none for pods: the overlay carries them between nodes)",
    };
    let mut routes = Table::new(&["DESTINATION", "NEXT HOP", "NODE"]);
    for route in &plan.route_table {
        routes.row(vec![
            route.destination.to_string(),
            route.next_hop.to_string(),
            route.node.clone(),
        ]);
    }
    writeln!(out, "{routes_title}\n{routes}")?;

    if !plan.services.is_empty() {
        let services = services_table(&plan.services, |b| format!("{} ({})", b.ip, b.node));
        writeln!(out, "{services}")?;
    }
    if !plan.exposures.is_empty() {
        writeln!(out, "{}", exposures_table(plan))?;
    }
    writeln!(out, "{}\n", egress_line(plan))?;

    let hosts = &plan.external_hosts;
    let mut external = Table::new(&["EXTERNAL HOST", "ADDRESS", "NETWORK"]);
    external.row(vec![
        "internet".into(),
        hosts.internet.to_string(),
        String::new(),
    ]);
    external.row(vec![
        "onPrem".into(),
        hosts.on_prem.host.to_string(),
        hosts.on_prem.cidr.to_string(),
    ]);
    writeln!(out, "{external}")?;
    write!(out, "{}", crate::policy::render::render(&plan.policy))?;

    let mut subnets = Table::new(&[
        "SUBNET",
        "CIDR",
        ">ADDRESSES",
        ">AZURE",
        ">NODES",
        ">PODS",
        ">FREE",
        ">USED",
    ]);
    let mut pools = Table::new(&[
        "SUBNET",
        "POOL",
        ">NODES",
        ">MAXPODS",
        ">ADDR/NODE",
        ">ADDRESSES",
        ">MORE NODES FIT",
    ]);
    for usage in &plan.subnet_usage {
        subnets.row(vec![
            usage.subnet.clone(),
            usage.cidr.to_string(),
            usage.addresses.to_string(),
            usage.reserved_by_azure.to_string(),
            usage.used_by_nodes.to_string(),
            usage.reserved_for_pods.to_string(),
            usage.free.to_string(),
            format!("{:.1}%", usage.utilisation_percent),
        ]);
        for pool in &usage.pools {
            pools.row(vec![
                usage.subnet.clone(),
                pool.pool.clone(),
                pool.nodes.to_string(),
                pool.max_pods.to_string(),
                pool.addresses_per_node.to_string(),
                pool.addresses.to_string(),
                pool.more_nodes_fit.to_string(),
            ]);
        }
    }
    writeln!(
        out,
        "SUBNET USAGE (PODS = pod addresses assigned to nodes: maxPods each up front with Node Subnet, batches of 16 with Pod Subnet)\n{subnets}"
    )?;
    write!(out, "{pools}")?;
    if let Some(usage) = &plan.pod_cidr_usage {
        let mut pod_cidr = Table::new(&["POD CIDR", ">NODE /24s", ">USED", ">FREE"]);
        pod_cidr.row(vec![
            usage.cidr.to_string(),
            usage.node_ranges.to_string(),
            usage.used.to_string(),
            usage.free.to_string(),
        ]);
        write!(out, "\n{pod_cidr}")?;
    }
    if !plan.notes.is_empty() {
        write!(out, "\nNOTES (AKS today)")?;
        for note in &plan.notes {
            write!(out, "\n- {note}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// NodePort and LoadBalancer services: what `plan` allocated and how traffic lands.
/// The ClusterIP services, a row each; `backend` says how a backend is named (its node
/// in a plan, its pod in a running cluster's list).
pub fn services_table(services: &[ServicePlan], backend: impl Fn(&Backend) -> String) -> Table {
    let mut table = Table::new(&[
        "SERVICE",
        "CLUSTER IP",
        ">PORT",
        ">TARGET",
        "PROTO",
        "BACKENDS",
    ]);
    for service in services {
        let backends: Vec<String> = service.backends.iter().map(&backend).collect();
        table.row(vec![
            service.name.clone(),
            service.cluster_ip.to_string(),
            service.port.to_string(),
            service.target_port.to_string(),
            service.protocol.to_string(),
            backends.join(", "),
        ]);
    }
    table
}

fn exposures_table(plan: &Plan) -> Table {
    let mut table = Table::new(&[
        "EXPOSED SERVICE",
        "TYPE",
        ">NODE PORT",
        "POLICY",
        ">HEALTH PORT",
        "FRONTEND",
        "SOURCE RANGES",
    ]);
    for e in &plan.exposures {
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let ranges: Vec<String> = e.source_ranges.iter().map(|c| c.to_string()).collect();
        table.row(vec![
            e.service.clone(),
            format!("{:?}", e.service_type),
            e.node_port.to_string(),
            format!("{:?}", e.external_traffic_policy),
            or_dash(e.health_check_node_port.map(|p| p.to_string())),
            or_dash(
                e.frontend
                    .map(|f| format!("{f}:{}", port_of(plan, &e.service))),
            ),
            if ranges.is_empty() {
                if e.frontend.is_some() {
                    "any".into()
                } else {
                    "-".into()
                }
            } else {
                ranges.join(", ")
            },
        ]);
    }
    table
}

fn port_of(plan: &Plan, service: &str) -> u16 {
    plan.services
        .iter()
        .find(|s| s.name == service)
        .map_or(0, |s| s.port)
}

/// `outboundType` and what the internet sees.
fn egress_line(plan: &Plan) -> String {
    use crate::model::outbound::{OutboundType, NAT_GATEWAY_PORTS};
    let what = match (plan.outbound.outbound_type, plan.outbound.public_ip) {
        (OutboundType::ManagedNatGateway, Some(ip)) => format!(
            "managedNATGateway: the internet sees {ip} (ports {}-{}, shared by the VNet)",
            NAT_GATEWAY_PORTS.0, NAT_GATEWAY_PORTS.1
        ),
        (OutboundType::None, _) => "none: no egress to the internet".to_owned(),
        (OutboundType::UserDefinedRouting, Some(ip)) => match &plan.outbound.firewall {
            Some(firewall) => format!(
                "userDefinedRouting: 0.0.0.0/0 goes to the firewall {} (AzureFirewallSubnet {}); the internet sees {ip}; {} NAT rules",
                firewall.private_ip,
                firewall.subnet,
                firewall.nat_rules.len()
            ),
            None => format!("userDefinedRouting: the internet sees {ip}"),
        },
        _ => match plan.outbound.load_balancer() {
            Some((ip, rule)) => format!(
                "loadBalancer: the internet sees {ip}, {} SNAT ports per node (ports {}-{} for the first), idle timeout {} min",
                rule.allocated_outbound_ports,
                rule.node_ports(0).0,
                rule.node_ports(0).1,
                rule.idle_timeout_in_minutes
            ),
            None => "loadBalancer: the internet sees the node address".to_owned(),
        },
    };
    format!("EGRESS (outboundType) {what}")
}
