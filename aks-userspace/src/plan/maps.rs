//! How large the eBPF datapath's maps of each node must be for this cluster, derived
//! from the description: `aksnet up` creates them at these sizes, so whatever `plan`
//! accepts fits (17,000 services once passed `plan` and failed in `up` at 16,384). Each
//! is the compiled-in default or, when the cluster needs more, its need with a quarter
//! of headroom (for `aksnet services add`) rounded up to a power of two. Beyond the
//! limits below `plan` refuses, naming the limit: hash maps are preallocated, so every
//! entry costs kernel memory whether used or not.

use serde::Serialize;

use aks_ebpf_common::lb::{BACKENDS_CAPACITY, REV_NAT_CAPACITY, SERVICES_CAPACITY};
use aks_ebpf_common::{ENDPOINTS_CAPACITY, ROUTES_CAPACITY};

use super::{Node, RouteTableEntry, ServicePlan};
use crate::cidr::Ipv4Cidr;
use crate::model::PlanError;

/// Most entries any of these maps gets per node (about 100 bytes each, preallocated).
pub const MAX_MAP_ENTRIES: u32 = 1 << 22;

/// Entries per node of each map the description sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MapCapacities {
    /// `ENDPOINTS`: the node's pods.
    pub endpoints: u32,
    /// `ROUTES`: the fixed routes, every other node's pod range (kubenet, overlay) or
    /// pod (Azure CNI), and the node's own pods.
    pub routes: u32,
    /// `SERVICES`: a master slot per service and one slot per backend.
    pub services: u32,
    /// `BACKENDS`: one per service and backend.
    pub backends: u32,
    /// `REV_NAT`: one per service.
    pub rev_nat: u32,
}

impl Default for MapCapacities {
    /// The compiled-in sizes.
    fn default() -> Self {
        Self {
            endpoints: ENDPOINTS_CAPACITY,
            routes: ROUTES_CAPACITY,
            services: SERVICES_CAPACITY,
            backends: BACKENDS_CAPACITY,
            rev_nat: REV_NAT_CAPACITY,
        }
    }
}

/// The sizes `nodes`, `route_table`, `services` and the non-masquerade CIDRs need; an
/// error naming the field and the limit where one is exceeded.
pub fn capacities(
    nodes: &[Node],
    route_table: &[RouteTableEntry],
    services: &[ServicePlan],
    non_masquerade_cidrs: &[Ipv4Cidr],
) -> Result<MapCapacities, PlanError> {
    let pods_per_node = nodes.iter().map(|n| n.pods.len()).max().unwrap_or(0);
    // As the eBPF loader fills ROUTES: default, VNet, on-prem, each non-masquerade CIDR,
    // the route table (other nodes' entries), with an overlay each other node's pod
    // range, the node's own pods.
    let routes = 3 + non_masquerade_cidrs.len() + route_table.len() + nodes.len() + pods_per_node;
    let backends: usize = services.iter().map(|s| s.backends.len()).sum();
    let defaults = MapCapacities::default();
    let size = |field: &str, what: &str, need: usize, default: u32| {
        let need = u64::try_from(need).unwrap_or(u64::MAX);
        let sized = need
            .saturating_add(need / 4)
            .checked_next_power_of_two()
            .unwrap_or(u64::MAX);
        if need > u64::from(MAX_MAP_ENTRIES) {
            return Err(PlanError::invalid(
                field,
                format!(
                    "{need} {what} per node; the eBPF datapath's maps hold at most {MAX_MAP_ENTRIES} (preallocated kernel memory); use fewer"
                ),
            ));
        }
        Ok(u32::try_from(sized.min(u64::from(MAX_MAP_ENTRIES)))
            .unwrap_or(MAX_MAP_ENTRIES)
            .max(default))
    };
    Ok(MapCapacities {
        endpoints: size("podsPerNode", "pods", pods_per_node, defaults.endpoints)?,
        routes: size("nodePools", "routes", routes, defaults.routes)?,
        services: size(
            "services",
            "service slots (one per service and per backend)",
            services.len() + backends,
            defaults.services,
        )?,
        backends: size("services", "service backends", backends, defaults.backends)?,
        rev_nat: size("services", "services", services.len(), defaults.rev_nat)?,
    })
}

/// More namespaces than this make `up` and `down` take minutes (each is a bind mount, a
/// veth pair and a few netlink round trips).
pub const MANY_NAMESPACES: usize = 10_000;

/// Namespaces `up` creates for these nodes: the vnet, the internet and on-prem hosts,
/// one per node and one per pod.
pub fn namespaces(nodes: &[Node]) -> usize {
    3 + nodes.len() + nodes.iter().map(|n| n.pods.len()).sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::plan;

    fn plan_of(yaml: &str) -> Result<super::super::Plan, PlanError> {
        plan(&crate::model::load(yaml).expect("valid"))
    }

    fn with_services(n: usize) -> String {
        let mut yaml = String::from(
            "name: maps\nnetworkPlugin: kubenet\ndatapath: ebpf\nserviceCidr: 10.0.0.0/14\nvnet:\n  addressSpace: 10.224.0.0/12\n  nodeSubnet: 10.224.0.0/24\nnodePools:\n  - { name: np, count: 2, osType: Linux }\npodsPerNode: 1\nservices:\n",
        );
        for i in 0..n {
            let ip = std::net::Ipv4Addr::from(
                u32::from(std::net::Ipv4Addr::new(10, 0, 1, 0)) + i as u32,
            );
            yaml.push_str(&format!(
                "  - {{ name: s{i}, clusterIP: {ip}, port: 80, targetPort: 8080, backends: 1 }}\n"
            ));
        }
        yaml
    }

    #[test]
    fn small_clusters_keep_the_compiled_sizes() {
        let plan = plan_of(&with_services(3)).expect("plans");
        assert_eq!(plan.maps, MapCapacities::default());
    }

    #[test]
    fn maps_grow_with_the_services_of_the_description() {
        let plan = plan_of(&with_services(17_000)).expect("plans");
        assert_eq!(plan.maps.rev_nat, 32_768, "17,000 × 1.25 rounded up");
        assert_eq!(plan.maps.services, 65_536, "34,000 slots fit the default");
        assert!(plan.maps.rev_nat as usize >= plan.services.len());
    }

    #[test]
    fn a_need_beyond_the_limit_names_field_and_limit() {
        // More routes than the limit cannot come from a valid description; the sizing
        // is asked directly.
        let any = crate::cidr::Ipv4Cidr::new(std::net::Ipv4Addr::UNSPECIFIED, 0).expect("0/0");
        let cidrs = vec![any; MAX_MAP_ENTRIES as usize];
        let text = capacities(&[], &[], &[], &cidrs)
            .expect_err("too many routes")
            .to_string();
        assert!(text.contains("nodePools"), "{text}");
        assert!(text.contains(&MAX_MAP_ENTRIES.to_string()), "{text}");
    }

    #[test]
    fn more_than_ten_thousand_namespaces_plan_with_a_warning() {
        let yaml = |pods: u32| {
            format!(
                "name: many\nnetworkPlugin: kubenet\ndatapath: ebpf\nvnet:\n  addressSpace: 10.224.0.0/12\n  nodeSubnet: 10.224.0.0/24\nnodePools:\n  - {{ name: np, count: 100, osType: Linux }}\npodsPerNode: {pods}\n"
            )
        };
        let warned = |plan: &super::super::Plan| {
            plan.warnings
                .iter()
                .any(|w| w.message.contains("network namespaces"))
        };
        // 100 nodes × 99 pods + 100 nodes + 3 = 10,003 namespaces.
        let many = plan_of(&yaml(99)).expect("plans");
        assert_eq!(namespaces(&many.nodes), 10_003);
        assert!(warned(&many), "{:?}", many.warnings);
        let fewer = plan_of(&yaml(98)).expect("plans");
        assert_eq!(namespaces(&fewer.nodes), 9_903);
        assert!(!warned(&fewer), "{:?}", fewer.warnings);
    }
}
