//! From a description to a `Cluster`: fill in the AKS defaults, then check the rules AKS
//! enforces at `az aks create` time. The first broken rule is reported, alone, with the
//! field, the numbers and a fix.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use super::capacity::{self, SubnetDemand};
use super::cluster::{Cluster, ExternalHosts, NodePool, Service};
use super::defaults;
use super::description::{
    ClusterDescription, NetworkPlugin, NodePoolDescription, OnPremNetwork, OsType, PodNetwork,
    Protocol, ServiceDescription, Vnet,
};
use super::error::PlanError;
use crate::cidr::Ipv4Cidr;

/// AKS accepts maxPods from 10 to 250 per node.
pub const MAX_PODS_RANGE: std::ops::RangeInclusive<u32> = 10..=250;
/// Every pool must have room for this many pods over all its nodes (count × maxPods), so
/// that system pods always fit: maxPods 10 needs three nodes
/// (concepts-network-ip-address-planning.md, "Configuring maximum pods per node").
pub const MIN_PODS_PER_POOL: u64 = 30;
/// kubenet needs one route table entry per node, and an Azure route table holds 400.
pub const KUBENET_MAX_NODES: u64 = 400;
/// AKS limit of nodes in one pool.
pub const MAX_NODES_PER_POOL: u32 = 1000;
/// Namespaces and interfaces are named `aks-<name>-…` and Linux interface names hold 15
/// bytes, so the cluster name must leave room for the rest.
pub const MAX_CLUSTER_NAME_LEN: usize = 8;
/// AKS node pool name limits: Linux 12 characters, Windows 6 (Windows computer names are
/// 15 characters and AKS appends a 9-character suffix).
pub const MAX_LINUX_POOL_NAME_LEN: usize = 12;
pub const MAX_WINDOWS_POOL_NAME_LEN: usize = 6;

/// Check `description` against the AKS rules and return it with every default filled in.
pub fn validate(description: &ClusterDescription) -> Result<Cluster, PlanError> {
    let plugin = description.network_plugin;
    let network = description.pod_network();
    check_cluster_name(&description.name)?;
    check_plugin_mode(description)?;
    check_vnet(plugin, &description.vnet)?;
    check_not_reserved("vnet.addressSpace", description.vnet.address_space)?;
    let address_space = description.vnet.address_space;

    let pod_cidr = match (network.private_pod_cidr(), description.pod_cidr) {
        (true, cidr) => Some(cidr.unwrap_or(defaults::POD_CIDR)),
        (false, None) => None,
        (false, Some(cidr)) => {
            return Err(PlanError::invalid(
                "podCidr",
                format!(
                    "{cidr} is set but {} gives pods VNet addresses and ignores it; remove \
                     podCidr, or set networkPluginMode: overlay (Azure CNI Overlay) or \
                     networkPlugin: kubenet",
                    network.title()
                ),
            ))
        }
    };
    if let Some(pod_cidr) = pod_cidr {
        check_not_reserved("podCidr", pod_cidr)?;
        if pod_cidr.overlaps(&address_space) {
            return Err(PlanError::invalid(
                "podCidr",
                format!(
                    "{pod_cidr} overlaps vnet.addressSpace {address_space}; {} pod \
                     addresses must not be VNet addresses, choose a range outside it \
                     (the AKS default is {})",
                    network.title(),
                    defaults::POD_CIDR
                ),
            ));
        }
    }

    let service_cidr = description.service_cidr.unwrap_or(defaults::SERVICE_CIDR);
    check_service_cidr(service_cidr, &description.vnet, pod_cidr)?;
    let dns_service_ip = match description.dns_service_ip {
        Some(ip) => ip,
        None => defaults::dns_service_ip(&service_cidr).ok_or_else(|| {
            PlanError::invalid(
                "serviceCidr",
                format!(
                    "{service_cidr} has {} addresses, too few for the default dnsServiceIp \
                     (its 10th address); use a /28 or larger",
                    service_cidr.size()
                ),
            )
        })?,
    };
    check_dns_service_ip(dns_service_ip, service_cidr)?;

    if let Some(max_pods) = description.max_pods {
        check_max_pods("maxPods", max_pods)?;
    }
    let cluster_max_pods = description
        .max_pods
        .unwrap_or_else(|| defaults::max_pods(network));
    let node_pools = resolve_node_pools(plugin, &description.node_pools, cluster_max_pods)?;
    let node_count: u64 = node_pools.iter().map(|p| u64::from(p.count)).sum();

    if let Some(pod_cidr) = pod_cidr {
        check_pod_cidr_scale(network, node_count, pod_cidr)?;
    }
    let pods_per_node = description.pods_per_node.unwrap_or(defaults::PODS_PER_NODE);
    for demand in capacity::subnet_demands(network, &description.vnet, &node_pools, pods_per_node) {
        check_subnet_fits(network, &demand)?;
    }
    check_pods_per_node(pods_per_node, &node_pools)?;

    let external_hosts = resolve_external_hosts(description, service_cidr, pod_cidr)?;
    let mut non_masquerade_cidrs = description.non_masquerade_cidrs.clone().unwrap_or_else(|| {
        defaults::non_masquerade_cidrs(
            network,
            address_space,
            pod_cidr,
            external_hosts.on_prem.cidr,
        )
    });
    // Overlay: AKS's reconciled ip-masq-agent configuration always holds the pod CIDR; a
    // custom list adds to it (update-azure-cni.md). Pod addresses never leave the overlay.
    if let (PodNetwork::AzureOverlay, Some(pods)) = (network, pod_cidr) {
        if !non_masquerade_cidrs.iter().any(|c| c.contains_cidr(&pods)) {
            non_masquerade_cidrs.insert(0, pods);
        }
    }

    let services = resolve_services(
        &description.services,
        service_cidr,
        dns_service_ip,
        node_count * u64::from(pods_per_node),
    )?;

    let cluster = Cluster {
        name: description.name.clone(),
        network_plugin: plugin,
        pod_network: network,
        datapath: description.datapath,
        vnet: description.vnet.clone(),
        pod_cidr,
        service_cidr,
        dns_service_ip,
        node_pools,
        pods_per_node,
        non_masquerade_cidrs,
        services,
        external_hosts,
        nsg: super::nsg::resolve(&description.nsg)?,
        exposures: super::loadbalancer::resolve(&description.services)?,
        outbound: super::outbound::resolve(
            description.outbound_type,
            description.load_balancer_profile.as_ref(),
            description.firewall.as_ref(),
            node_count,
            &super::outbound::VnetRanges {
                address_space: description.vnet.address_space,
                subnets: std::iter::once(description.vnet.node_subnet)
                    .chain(description.vnet.pod_subnet)
                    .collect(),
            },
        )?,
        conntrack: super::conntrack::resolve(description.conntrack.as_ref(), node_count)?,
        policy: super::policy::resolve(
            &super::policy::PolicyDescription {
                engine: description.network_policy,
                pod_templates: &description.pod_templates,
                namespaces: &description.namespaces,
                policies: &description.network_policies,
            },
            plugin,
            description.datapath,
            pods_per_node,
        )?,
    };
    super::outbound::check_nat_rules(&cluster.outbound, |service| {
        cluster.exposures.iter().any(|e| {
            e.service == service && e.service_type == super::loadbalancer::ServiceType::LoadBalancer
        })
    })?;
    Ok(cluster)
}

pub fn check_cluster_name(name: &str) -> Result<(), PlanError> {
    let well_formed = name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    // Only ASCII is allowed, so bytes and characters agree once it is well formed; the
    // message counts characters, which is what the user sees.
    if !well_formed || name.len() > MAX_CLUSTER_NAME_LEN {
        return Err(PlanError::invalid(
            "name",
            format!(
                "`{name}` ({} characters) cannot prefix interface names: namespaces and \
                 veths are named `aks-<name>-…` and Linux interface names hold 15 bytes; use \
                 at most {MAX_CLUSTER_NAME_LEN} characters, only ASCII lowercase letters, \
                 digits and dashes, starting with a letter and not ending with a dash \
                 (e.g. `demo`)",
                name.chars().count()
            ),
        ));
    }
    Ok(())
}

/// `networkPluginMode: overlay` is a mode of Azure CNI, and its pods never take VNet
/// addresses, so a pod subnet contradicts it.
fn check_plugin_mode(description: &ClusterDescription) -> Result<(), PlanError> {
    let Some(mode) = description.network_plugin_mode else {
        return Ok(());
    };
    if description.network_plugin == NetworkPlugin::Kubenet {
        return Err(PlanError::invalid(
            "networkPluginMode",
            format!(
                "{mode} is a mode of Azure CNI, not of kubenet; set networkPlugin: azure for \
                 Azure CNI Overlay, or remove networkPluginMode"
            ),
        ));
    }
    if let Some(pod_subnet) = description.vnet.pod_subnet {
        return Err(PlanError::invalid(
            "vnet.podSubnet",
            format!(
                "{pod_subnet} is set but Azure CNI Overlay pods take addresses from podCidr, \
                 not from the VNet; remove vnet.podSubnet, or remove networkPluginMode for \
                 Azure CNI Pod Subnet"
            ),
        ));
    }
    Ok(())
}

fn check_vnet(plugin: NetworkPlugin, vnet: &Vnet) -> Result<(), PlanError> {
    let space = vnet.address_space;
    if !space.contains_cidr(&vnet.node_subnet) {
        return Err(PlanError::invalid(
            "vnet.nodeSubnet",
            format!(
                "{} is not inside vnet.addressSpace {space}; pick a subnet of {space} or widen \
                 the address space",
                vnet.node_subnet
            ),
        ));
    }
    if let Some(pod_subnet) = vnet.pod_subnet {
        if plugin == NetworkPlugin::Kubenet {
            return Err(PlanError::invalid(
                "vnet.podSubnet",
                format!(
                    "{pod_subnet} is set but kubenet pods take addresses from podCidr, not from \
                     the VNet; remove vnet.podSubnet or set networkPlugin: azure"
                ),
            ));
        }
        if !space.contains_cidr(&pod_subnet) {
            return Err(PlanError::invalid(
                "vnet.podSubnet",
                format!(
                    "{pod_subnet} is not inside vnet.addressSpace {space}; pick a subnet of \
                     {space} or widen the address space"
                ),
            ));
        }
        if pod_subnet.overlaps(&vnet.node_subnet) {
            return Err(PlanError::invalid(
                "vnet.podSubnet",
                format!(
                    "{pod_subnet} overlaps vnet.nodeSubnet {}; subnets of one VNet must not \
                     overlap, pick another range of {space}",
                    vnet.node_subnet
                ),
            ));
        }
    }
    Ok(())
}

fn check_service_cidr(
    service_cidr: Ipv4Cidr,
    vnet: &Vnet,
    pod_cidr: Option<Ipv4Cidr>,
) -> Result<(), PlanError> {
    check_not_reserved("serviceCidr", service_cidr)?;
    if service_cidr.prefix() < defaults::SERVICE_CIDR_MIN_PREFIX {
        return Err(PlanError::invalid(
            "serviceCidr",
            format!(
                "{service_cidr} has {} addresses but AKS wants a service CIDR smaller than a \
                 /12; use a /{} or longer prefix (the AKS default is {})",
                service_cidr.size(),
                defaults::SERVICE_CIDR_MIN_PREFIX,
                defaults::SERVICE_CIDR
            ),
        ));
    }
    // The node subnet and pod subnet lie inside the address space (checked before), so an
    // overlap with them is reported as one with the address space they belong to.
    let taken = [
        ("vnet.addressSpace", Some(vnet.address_space)),
        ("podCidr", pod_cidr),
    ];
    for (field, cidr) in taken {
        if let Some(cidr) = cidr.filter(|c| c.overlaps(&service_cidr)) {
            return Err(PlanError::invalid(
                "serviceCidr",
                format!(
                    "{service_cidr} overlaps {field} {cidr}; ClusterIPs are virtual and must not \
                     shadow real addresses, choose a range outside both (the AKS default is {})",
                    defaults::SERVICE_CIDR
                ),
            ));
        }
    }
    Ok(())
}

/// The network address is not an address and the first one is the `kubernetes` API
/// service, so neither can be the DNS service.
fn check_dns_service_ip(ip: Ipv4Addr, service_cidr: Ipv4Cidr) -> Result<(), PlanError> {
    if !service_cidr.contains(ip) {
        return Err(PlanError::invalid(
            "dnsServiceIp",
            format!(
                "{ip} is not inside serviceCidr {service_cidr}; use an address of it such as {}",
                defaults::dns_service_ip(&service_cidr).unwrap_or(service_cidr.network())
            ),
        ));
    }
    if reserved_service_address(service_cidr, ip) {
        return Err(PlanError::invalid(
            "dnsServiceIp",
            format!(
                "{ip} is the network address or the `kubernetes` service address of \
                 serviceCidr {service_cidr}; use another one such as the 10th"
            ),
        ));
    }
    Ok(())
}

/// AKS refuses the reserved ranges for the service CIDR, the pod CIDR and the VNet.
fn check_not_reserved(field: &str, block: Ipv4Cidr) -> Result<(), PlanError> {
    if let Some(reserved) = defaults::RESERVED_RANGES
        .iter()
        .find(|reserved| reserved.overlaps(&block))
    {
        let all: Vec<String> = defaults::RESERVED_RANGES
            .iter()
            .map(ToString::to_string)
            .collect();
        return Err(PlanError::invalid(
            field,
            format!(
                "{block} overlaps {reserved}, which AKS reserves; keep clear of {}",
                all.join(", ")
            ),
        ));
    }
    Ok(())
}

fn reserved_service_address(service_cidr: Ipv4Cidr, ip: Ipv4Addr) -> bool {
    Some(ip) == service_cidr.nth(0) || Some(ip) == service_cidr.nth(1)
}

fn check_max_pods(field: &str, max_pods: u32) -> Result<(), PlanError> {
    if !MAX_PODS_RANGE.contains(&max_pods) {
        return Err(PlanError::invalid(
            field,
            format!(
                "{max_pods} is outside what AKS accepts; set it between {} and {}",
                MAX_PODS_RANGE.start(),
                MAX_PODS_RANGE.end()
            ),
        ));
    }
    Ok(())
}

fn resolve_node_pools(
    plugin: NetworkPlugin,
    pools: &[NodePoolDescription],
    cluster_max_pods: u32,
) -> Result<Vec<NodePool>, PlanError> {
    if pools.is_empty() {
        return Err(PlanError::invalid(
            "nodePools",
            "no node pool; add one, e.g. `- { name: nodepool1, count: 2 }`",
        ));
    }
    let mut names = HashSet::new();
    let mut resolved = Vec::with_capacity(pools.len());
    for (i, pool) in pools.iter().enumerate() {
        let field = |f: &str| format!("nodePools[{i}].{f}");
        let os_type = pool.os_type.unwrap_or(OsType::Linux);
        let name_limit = match os_type {
            OsType::Linux => MAX_LINUX_POOL_NAME_LEN,
            OsType::Windows => MAX_WINDOWS_POOL_NAME_LEN,
        };
        let name = &pool.name;
        let well_formed = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !well_formed || name.len() > name_limit {
            return Err(PlanError::invalid(
                field("name"),
                format!(
                    "`{name}` ({} characters) is not a valid {os_type} pool name; AKS wants \
                     lowercase letters and digits, starting with a letter, at most {name_limit} \
                     characters",
                    name.len()
                ),
            ));
        }
        if !names.insert(name.as_str()) {
            return Err(PlanError::invalid(
                field("name"),
                format!("`{name}` is used by an earlier pool; give every pool its own name"),
            ));
        }
        if i == 0 && os_type == OsType::Windows {
            return Err(PlanError::invalid(
                field("osType"),
                "the first pool is the system pool and AKS requires it to be Linux; put a Linux \
                 pool first",
            ));
        }
        if os_type == OsType::Windows && plugin == NetworkPlugin::Kubenet {
            return Err(PlanError::invalid(
                field("osType"),
                format!(
                    "pool `{name}` is Windows but kubenet does not support Windows nodes; use \
                     networkPlugin: azure or make the pool Linux"
                ),
            ));
        }
        if !(1..=MAX_NODES_PER_POOL).contains(&pool.count) {
            return Err(PlanError::invalid(
                field("count"),
                format!(
                    "{} nodes in pool `{name}`; set count between 1 and {MAX_NODES_PER_POOL}",
                    pool.count
                ),
            ));
        }
        if let Some(max_pods) = pool.max_pods {
            check_max_pods(&field("maxPods"), max_pods)?;
        }
        let max_pods = pool.max_pods.unwrap_or(cluster_max_pods);
        let room = u64::from(pool.count) * u64::from(max_pods);
        if room < MIN_PODS_PER_POOL {
            let nodes_needed = MIN_PODS_PER_POOL.div_ceil(u64::from(max_pods));
            let max_pods_needed = MIN_PODS_PER_POOL.div_ceil(u64::from(pool.count));
            // Every default is at least 30, so a short pool took maxPods from a field.
            let max_pods_field = match pool.max_pods {
                Some(_) => field("maxPods"),
                None => "maxPods".to_string(),
            };
            return Err(PlanError::invalid(
                max_pods_field,
                format!(
                    "pool `{name}` has room for {room} pods (count {} × maxPods {max_pods}) \
                     but AKS wants room for at least {MIN_PODS_PER_POOL} in every pool, for \
                     system pods; use count {nodes_needed} or more, or maxPods \
                     {max_pods_needed} or more",
                    pool.count
                ),
            ));
        }
        resolved.push(NodePool {
            name: name.clone(),
            count: pool.count,
            os_type,
            max_pods,
        });
    }
    Ok(resolved)
}

/// kubenet and Overlay give each node a /24 of the pod CIDR; kubenet also needs a route
/// table entry per node, Overlay none (the VNet never learns pod routes).
fn check_pod_cidr_scale(
    network: PodNetwork,
    node_count: u64,
    pod_cidr: Ipv4Cidr,
) -> Result<(), PlanError> {
    if network == PodNetwork::Kubenet && node_count > KUBENET_MAX_NODES {
        return Err(PlanError::invalid(
            "nodePools",
            format!(
                "{node_count} nodes, but kubenet needs one route table entry per node and an \
                 Azure route table holds {KUBENET_MAX_NODES}; use at most {KUBENET_MAX_NODES} \
                 nodes, or Azure CNI Overlay (networkPlugin: azure, networkPluginMode: \
                 overlay), which needs no route table"
            ),
        ));
    }
    let ranges = capacity::kubenet_node_ranges(&pod_cidr);
    if node_count > ranges {
        let needed = node_count * 256;
        let suggestion = Ipv4Cidr::prefix_for(needed)
            .map_or(String::new(), |p| format!("use a /{p} or larger, or "));
        return Err(PlanError::invalid(
            "podCidr",
            format!(
                "{pod_cidr} holds {ranges} node /24s but {} gives each of the {node_count} \
                 nodes its own /24; {suggestion}fewer nodes",
                network.title()
            ),
        ));
    }
    Ok(())
}

fn check_subnet_fits(network: PodNetwork, demand: &SubnetDemand) -> Result<(), PlanError> {
    if demand.fits() {
        return Ok(());
    }
    let terms: Vec<String> = demand
        .pools
        .iter()
        .map(|p| {
            let per_node = match (p.node_addresses_per_node, p.pod_addresses_per_node) {
                (1, 0) => "1 address".to_string(),
                (0, _) => p.pod_basis.clone(),
                (_, _) => format!("({} + 1)", p.pod_basis),
            };
            format!("{} nodes × {per_node} ({})", p.nodes, p.pool)
        })
        .collect();
    let what = match network {
        PodNetwork::AzureNodeSubnet | PodNetwork::AzurePodSubnet => "Azure CNI",
        PodNetwork::AzureOverlay => "Azure CNI Overlay",
        PodNetwork::Kubenet => "kubenet",
    };
    let mut fixes = Vec::new();
    if let Some(prefix) = Ipv4Cidr::prefix_for(demand.required()) {
        fixes.push(format!("use a /{prefix} or larger"));
    }
    fixes.push("fewer nodes".to_string());
    if let [pool] = demand.pools.as_slice() {
        // The largest maxPods that fits this pool, if AKS would accept it (Node Subnet:
        // maxPods is what each node takes).
        if network == PodNetwork::AzureNodeSubnet && pool.pod_addresses_per_node > 0 {
            let per_node = demand.assignable() / pool.nodes;
            let max_pods = per_node.saturating_sub(pool.node_addresses_per_node);
            if max_pods >= u64::from(*MAX_PODS_RANGE.start()) {
                fixes.push(format!("maxPods {max_pods} or lower"));
            }
        }
    }
    Err(PlanError::invalid(
        demand.field,
        format!(
            "{} has {} addresses but {what} needs {}: {} + {} reserved by Azure; only {} of the \
             {} nodes fit. Fix: {}",
            demand.cidr,
            demand.size(),
            demand.required(),
            terms.join(" + "),
            capacity::AZURE_RESERVED_PER_SUBNET,
            demand.nodes_that_fit(),
            demand.pools.iter().map(|p| p.nodes).sum::<u64>(),
            fixes.join(", or ")
        ),
    ))
}

fn check_pods_per_node(pods_per_node: u32, pools: &[NodePool]) -> Result<(), PlanError> {
    if pods_per_node == 0 {
        return Err(PlanError::invalid(
            "podsPerNode",
            "0 pods per node: every node needs at least one pod (the pods are what the \
             datapath connects, probes run from and services route to); use 1 or more",
        ));
    }
    if let Some(pool) = pools.iter().find(|p| pods_per_node > p.max_pods) {
        return Err(PlanError::invalid(
            "podsPerNode",
            format!(
                "{pods_per_node} pods per node, but pool `{}` allows maxPods {}; lower \
                 podsPerNode or raise that pool's maxPods",
                pool.name, pool.max_pods
            ),
        ));
    }
    Ok(())
}

fn resolve_external_hosts(
    description: &ClusterDescription,
    service_cidr: Ipv4Cidr,
    pod_cidr: Option<Ipv4Cidr>,
) -> Result<ExternalHosts, PlanError> {
    let given = description.external_hosts.as_ref();
    let internet = given
        .and_then(|h| h.internet)
        .unwrap_or(defaults::INTERNET_HOST);
    let on_prem = given
        .and_then(|h| h.on_prem.clone())
        .unwrap_or(OnPremNetwork {
            cidr: defaults::ON_PREM_CIDR,
            host: defaults::ON_PREM_HOST,
        });
    let cluster_ranges = [
        ("vnet.addressSpace", Some(description.vnet.address_space)),
        ("podCidr", pod_cidr),
        ("serviceCidr", Some(service_cidr)),
    ];
    for (field, cidr) in cluster_ranges {
        let Some(cidr) = cidr else { continue };
        if cidr.overlaps(&on_prem.cidr) {
            return Err(PlanError::invalid(
                "externalHosts.onPrem.cidr",
                format!(
                    "{} overlaps {field} {cidr}; an ExpressRoute network must not share \
                     addresses with the cluster, choose another range",
                    on_prem.cidr
                ),
            ));
        }
        if cidr.contains(internet) {
            return Err(PlanError::invalid(
                "externalHosts.internet",
                format!(
                    "{internet} is inside {field} {cidr}; the internet host must be outside the \
                     cluster, e.g. {}",
                    defaults::INTERNET_HOST
                ),
            ));
        }
    }
    if on_prem.cidr.contains(internet) {
        return Err(PlanError::invalid(
            "externalHosts.internet",
            format!(
                "{internet} is inside externalHosts.onPrem.cidr {}; pick an address outside it",
                on_prem.cidr
            ),
        ));
    }
    let host = on_prem.host;
    let usable_host = on_prem.cidr.contains(host)
        && (on_prem.cidr.size() <= 2
            || (host != on_prem.cidr.network() && host != on_prem.cidr.last()));
    if !usable_host {
        return Err(PlanError::invalid(
            "externalHosts.onPrem.host",
            format!(
                "{host} is not a host address of externalHosts.onPrem.cidr {}; use one such as {}",
                on_prem.cidr,
                on_prem.cidr.nth(10).unwrap_or(on_prem.cidr.network())
            ),
        ));
    }
    Ok(ExternalHosts { internet, on_prem })
}

fn resolve_services(
    services: &[ServiceDescription],
    service_cidr: Ipv4Cidr,
    dns_service_ip: Ipv4Addr,
    pods: u64,
) -> Result<Vec<Service>, PlanError> {
    let mut names = HashSet::new();
    let mut cluster_ips = HashSet::from([dns_service_ip]);
    let mut resolved = Vec::with_capacity(services.len());
    for (i, service) in services.iter().enumerate() {
        let field = |f: &str| format!("services[{i}].{f}");
        let name = &service.name;
        let dns_label = name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && !name.ends_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !dns_label {
            return Err(PlanError::invalid(
                field("name"),
                format!(
                    "`{name}` is not a DNS label; use at most 63 lowercase letters, digits and \
                     dashes, starting with a letter"
                ),
            ));
        }
        if !names.insert(name.as_str()) {
            return Err(PlanError::invalid(
                field("name"),
                format!("`{name}` is used by an earlier service; give each its own name"),
            ));
        }
        let ip = service.cluster_ip;
        if !service_cidr.contains(ip) {
            return Err(PlanError::invalid(
                field("clusterIP"),
                format!("{ip} is not inside serviceCidr {service_cidr}; use an address of it"),
            ));
        }
        if reserved_service_address(service_cidr, ip) {
            return Err(PlanError::invalid(
                field("clusterIP"),
                format!(
                    "{ip} is the network address or the `kubernetes` service address of \
                     serviceCidr {service_cidr}; use another"
                ),
            ));
        }
        if !cluster_ips.insert(ip) {
            return Err(PlanError::invalid(
                field("clusterIP"),
                format!(
                    "{ip} is already taken (by dnsServiceIp or an earlier service); every \
                     service needs its own clusterIP"
                ),
            ));
        }
        let port = check_port(&field("port"), service.port)?;
        let target_port = check_port(
            &field("targetPort"),
            service.target_port.unwrap_or(service.port),
        )?;
        let backends = u64::from(service.backends);
        if backends == 0 || backends > pods {
            return Err(PlanError::invalid(
                field("backends"),
                format!(
                    "{backends} backends, but the cluster has {pods} pods (nodes × podsPerNode); \
                     use between 1 and {pods}, or raise podsPerNode"
                ),
            ));
        }
        resolved.push(Service {
            name: name.clone(),
            cluster_ip: ip,
            port,
            target_port,
            protocol: service.protocol.unwrap_or(Protocol::Tcp),
            backends: service.backends,
        });
    }
    Ok(resolved)
}

fn check_port(field: &str, port: u32) -> Result<u16, PlanError> {
    match u16::try_from(port) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(PlanError::invalid(
            field,
            format!("{port} is not a port; use 1 to 65535"),
        )),
    }
}
