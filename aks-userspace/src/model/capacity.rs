//! Address arithmetic of AKS subnets: what each node pool costs in which subnet. Shared by
//! validation (does it fit?) and the planner's usage report (how full is it?).

use super::cluster::NodePool;
use super::description::{PodNetwork, Vnet};
use crate::cidr::Ipv4Cidr;

/// Azure keeps the first four addresses of every subnet (network, gateway, two for DNS)
/// and the last one (broadcast); no VM or pod can have them.
pub const AZURE_RESERVED_PER_SUBNET: u64 = 5;

/// Index of the first address Azure hands out in a subnet (.4 of a /24).
pub const FIRST_ASSIGNABLE_INDEX: u64 = 4;

/// Azure CNI Pod Subnet (dynamic allocation) hands pod addresses to a node in batches of
/// this many: one at startup, another whenever fewer than
/// [`POD_SUBNET_BATCH_LOW_WATER`] are unallocated (concepts-network-azure-cni-pod-subnet.md).
pub const POD_SUBNET_BATCH: u64 = 16;
pub const POD_SUBNET_BATCH_LOW_WATER: u64 = 8;

/// Batches a Pod Subnet node holds while running `pods` pods: at least one, and enough
/// that at least 8 addresses stay unallocated.
pub fn pod_subnet_batches(pods: u64) -> u64 {
    (pods + POD_SUBNET_BATCH_LOW_WATER)
        .div_ceil(POD_SUBNET_BATCH)
        .max(1)
}

/// The prefix of each node's pod range with kubenet.
pub const KUBENET_NODE_POD_PREFIX: u8 = 24;

/// What one node pool takes from one subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolDemand {
    pub pool: String,
    pub nodes: u64,
    pub max_pods: u64,
    /// 1 where the node's NIC lives in this subnet, else 0.
    pub node_addresses_per_node: u64,
    /// Node Subnet: maxPods addresses are assigned to each node's NIC up front, used or
    /// not; that is why the subnet must hold nodes × (maxPods + 1). Pod Subnet: the
    /// batches of 16 the node's running pods need. 0 elsewhere.
    pub pod_addresses_per_node: u64,
    /// How `pod_addresses_per_node` came about, for messages: `30 maxPods`, `1 batch of 16`.
    pub pod_basis: String,
}

impl PoolDemand {
    pub fn addresses_per_node(&self) -> u64 {
        self.node_addresses_per_node + self.pod_addresses_per_node
    }

    pub fn addresses(&self) -> u64 {
        self.nodes * self.addresses_per_node()
    }
}

/// Everything the node pools take from one VNet subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetDemand {
    /// Description field of the subnet, e.g. `vnet.nodeSubnet`.
    pub field: &'static str,
    pub cidr: Ipv4Cidr,
    pub pools: Vec<PoolDemand>,
}

impl SubnetDemand {
    pub fn size(&self) -> u64 {
        self.cidr.size()
    }

    /// Addresses left after Azure's five.
    pub fn assignable(&self) -> u64 {
        self.size().saturating_sub(AZURE_RESERVED_PER_SUBNET)
    }

    pub fn node_addresses(&self) -> u64 {
        self.pools
            .iter()
            .map(|p| p.nodes * p.node_addresses_per_node)
            .sum()
    }

    pub fn pod_addresses(&self) -> u64 {
        self.pools
            .iter()
            .map(|p| p.nodes * p.pod_addresses_per_node)
            .sum()
    }

    /// Addresses the pools take, Azure's five not included.
    pub fn used(&self) -> u64 {
        self.node_addresses() + self.pod_addresses()
    }

    /// Addresses the subnet must have: what the pools take plus Azure's five.
    pub fn required(&self) -> u64 {
        self.used() + AZURE_RESERVED_PER_SUBNET
    }

    pub fn fits(&self) -> bool {
        self.required() <= self.size()
    }

    pub fn free(&self) -> u64 {
        self.assignable().saturating_sub(self.used())
    }

    /// Whether an upgrade still fits: AKS surges one extra node per pool (the default
    /// max-surge) and that node needs its addresses before an old one is removed.
    pub fn surge_fits(&self) -> bool {
        let surge: u64 = self.pools.iter().map(PoolDemand::addresses_per_node).sum();
        self.required() + surge <= self.size()
    }

    /// Share of the assignable addresses in use, in percent.
    pub fn utilisation_percent(&self) -> f64 {
        match self.assignable() {
            0 => 100.0,
            assignable => self.used() as f64 * 100.0 / assignable as f64,
        }
    }

    /// More than 80 % of the assignable addresses taken: the threshold at which AKS
    /// guidance says to alert, since scale-out and upgrades need room.
    pub fn above_alert_threshold(&self) -> bool {
        self.used() * 100 > self.assignable() * 80
    }

    /// How many more nodes of `pool` fit in what is left.
    pub fn more_nodes_fit(&self, pool: &PoolDemand) -> u64 {
        match pool.addresses_per_node() {
            0 => 0,
            per_node => self.free() / per_node,
        }
    }

    /// How many of the requested nodes fit, filling the pools in order.
    pub fn nodes_that_fit(&self) -> u64 {
        let mut left = self.assignable();
        let mut fitted = 0;
        for pool in &self.pools {
            let per_node = pool.addresses_per_node();
            // A pool that takes nothing from this subnet always fits.
            let n = left
                .checked_div(per_node)
                .map_or(pool.nodes, |room| pool.nodes.min(room));
            fitted += n;
            left -= n * per_node;
            if n < pool.nodes {
                break;
            }
        }
        fitted
    }
}

/// What each pool takes from each VNet subnet under the given model, with
/// `pods_per_node` pods running on every node. Overlay and kubenet pods are not VNet
/// addresses, so only the nodes count. Node Subnet reserves maxPods per node up front;
/// Pod Subnet allocates batches of 16 as pods start.
pub fn subnet_demands(
    network: PodNetwork,
    vnet: &Vnet,
    pools: &[NodePool],
    pods_per_node: u32,
) -> Vec<SubnetDemand> {
    let batches = pod_subnet_batches(u64::from(pods_per_node));
    let demand = |pool: &NodePool, node: u64, pods: bool| {
        let (pod_addresses_per_node, pod_basis) = match (pods, network) {
            (false, _) => (0, String::new()),
            (true, PodNetwork::AzurePodSubnet) => (
                batches * POD_SUBNET_BATCH,
                format!(
                    "{batches} batch{} of {POD_SUBNET_BATCH}",
                    if batches == 1 { "" } else { "es" }
                ),
            ),
            (true, _) => (
                u64::from(pool.max_pods),
                format!("{} maxPods", pool.max_pods),
            ),
        };
        PoolDemand {
            pool: pool.name.clone(),
            nodes: u64::from(pool.count),
            max_pods: u64::from(pool.max_pods),
            node_addresses_per_node: node,
            pod_addresses_per_node,
            pod_basis,
        }
    };
    let pod_subnet = match network {
        PodNetwork::AzurePodSubnet => vnet.pod_subnet,
        _ => None,
    };
    // With Node Subnet, pods share the node subnet.
    let pods_in_node_subnet = network == PodNetwork::AzureNodeSubnet;
    let mut demands = vec![SubnetDemand {
        field: "vnet.nodeSubnet",
        cidr: vnet.node_subnet,
        pools: pools
            .iter()
            .map(|p| demand(p, 1, pods_in_node_subnet))
            .collect(),
    }];
    if let Some(cidr) = pod_subnet {
        demands.push(SubnetDemand {
            field: "vnet.podSubnet",
            cidr,
            pools: pools.iter().map(|p| demand(p, 0, true)).collect(),
        });
    }
    demands
}

/// kubenet and Overlay: how many per-node /24s the pod CIDR has (0 if it is smaller than a /24).
pub fn kubenet_node_ranges(pod_cidr: &Ipv4Cidr) -> u64 {
    pod_cidr.subnet_count(KUBENET_NODE_POD_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::description::OsType;

    fn pool(name: &str, count: u32, max_pods: u32) -> NodePool {
        NodePool {
            name: name.into(),
            count,
            os_type: OsType::Linux,
            max_pods,
        }
    }

    fn vnet(node_subnet: &str, pod_subnet: Option<&str>) -> Vnet {
        Vnet {
            address_space: "10.0.0.0/8".parse().expect("test CIDR"),
            node_subnet: node_subnet.parse().expect("test CIDR"),
            pod_subnet: pod_subnet.map(|s| s.parse().expect("test CIDR")),
        }
    }

    fn azure_node_subnet(subnet: &str, pools: &[NodePool]) -> SubnetDemand {
        subnet_demands(PodNetwork::AzureNodeSubnet, &vnet(subnet, None), pools, 2).remove(0)
    }

    #[test]
    fn azure_cni_slash_24_holds_256_minus_5_minus_nodes_pods() {
        // One node at maxPods M takes M + 1; the largest M a /24 allows for N nodes is the
        // one where N × (M + 1) = 251, i.e. pods = 256 - 5 - N.
        for nodes in 1..=5u64 {
            let pods = 256 - 5 - nodes;
            let d = SubnetDemand {
                field: "vnet.nodeSubnet",
                cidr: "10.224.0.0/24".parse().expect("test CIDR"),
                pools: vec![PoolDemand {
                    pool: "p".into(),
                    nodes,
                    max_pods: 0,
                    node_addresses_per_node: 1,
                    pod_addresses_per_node: 0,
                    pod_basis: String::new(),
                }],
            };
            assert_eq!(d.assignable() - d.node_addresses(), pods);
        }
        // And through the real formula: 8 nodes × 31 = 248 ≤ 251, 9 × 31 = 279 > 251.
        assert!(azure_node_subnet("10.224.0.0/24", &[pool("p", 8, 30)]).fits());
        let nine = azure_node_subnet("10.224.0.0/24", &[pool("p", 9, 30)]);
        assert!(!nine.fits());
        assert_eq!(nine.nodes_that_fit(), 8);
    }

    #[test]
    fn azure_cni_slash_16_holds_500_nodes_of_30_pods() {
        let d = azure_node_subnet("10.224.0.0/16", &[pool("p", 500, 30)]);
        assert_eq!(d.pod_addresses(), 15_000);
        assert_eq!(d.required(), 500 * 31 + 5);
        assert!(d.fits());
        assert!(d.surge_fits());
    }

    #[test]
    fn azure_cni_slash_20_holds_16_nodes_of_250_pods_not_17() {
        let sixteen = azure_node_subnet("10.224.0.0/20", &[pool("p", 16, 250)]);
        assert_eq!(sixteen.required(), 4021);
        assert!(sixteen.fits());
        assert!(!sixteen.surge_fits(), "4021 + 251 > 4096");
        let seventeen = azure_node_subnet("10.224.0.0/20", &[pool("p", 17, 250)]);
        assert_eq!(seventeen.required(), 4272);
        assert!(!seventeen.fits());
        assert_eq!(seventeen.nodes_that_fit(), 16);
    }

    #[test]
    fn kubenet_spends_only_node_addresses() {
        let pools = [pool("p", 3, 110)];
        let d = subnet_demands(PodNetwork::Kubenet, &vnet("10.224.0.0/24", None), &pools, 2);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].used(), 3);
        assert_eq!(d[0].pod_addresses(), 0);
        assert_eq!(d[0].free(), 248);
        // A /24 takes 251 kubenet nodes, not one more.
        let full = subnet_demands(
            PodNetwork::Kubenet,
            &vnet("10.224.0.0/24", None),
            &[pool("p", 251, 110)],
            2,
        );
        assert!(full[0].fits());
        let over = subnet_demands(
            PodNetwork::Kubenet,
            &vnet("10.224.0.0/24", None),
            &[pool("p", 252, 110)],
            2,
        );
        assert!(!over[0].fits());
    }

    #[test]
    fn pod_subnet_splits_the_demand_and_takes_batches_of_16() {
        let pools = [pool("p", 4, 30)];
        let d = subnet_demands(
            PodNetwork::AzurePodSubnet,
            &vnet("10.224.0.0/28", Some("10.225.0.0/26")),
            &pools,
            2,
        );
        assert_eq!(d[0].required(), 4 + 5);
        assert_eq!(d[1].field, "vnet.podSubnet");
        // Not maxPods up front: one batch of 16 per node for 2 pods.
        assert_eq!(d[1].required(), 4 * 16 + 5);
        assert_eq!(d[1].pools[0].pod_basis, "1 batch of 16");
        assert!(d[0].fits() && !d[1].fits(), "69 > 64");
        let five = [pool("p", 5, 30)];
        let d = subnet_demands(
            PodNetwork::AzurePodSubnet,
            &vnet("10.224.0.0/28", Some("10.225.0.0/25")),
            &five,
            9,
        );
        assert!(d[0].fits(), "5 + 5 ≤ 16");
        assert_eq!(d[1].pools[0].pod_basis, "2 batches of 16");
        assert!(!d[1].fits(), "5 × 32 + 5 > 128");
    }

    #[test]
    fn a_node_requests_another_batch_below_8_free_addresses() {
        for (pods, batches) in [(0, 1), (1, 1), (8, 1), (9, 2), (24, 2), (25, 3), (110, 8)] {
            assert_eq!(pod_subnet_batches(pods), batches, "{pods} pods");
        }
    }

    #[test]
    fn alert_threshold_is_strictly_above_80_percent() {
        // 251 assignable: 200 used is 79.7 %, 201 used is 80.08 %.
        let at = |nodes| {
            subnet_demands(
                PodNetwork::Kubenet,
                &vnet("10.224.0.0/24", None),
                &[pool("p", nodes, 110)],
                2,
            )
            .remove(0)
        };
        assert!(!at(200).above_alert_threshold());
        assert!(at(201).above_alert_threshold());
        // Exactly 80 % cannot happen: 2^k - 5 is never a multiple of 5.
    }

    #[test]
    fn more_nodes_fit_counts_whole_nodes() {
        let d = azure_node_subnet("10.224.0.0/24", &[pool("p", 2, 30)]);
        assert_eq!(d.free(), 251 - 62);
        assert_eq!(d.more_nodes_fit(&d.pools[0]), (251 - 62) / 31);
    }

    #[test]
    fn kubenet_node_ranges_of_pod_cidr() {
        let cidr = |s: &str| s.parse::<Ipv4Cidr>().expect("test CIDR");
        assert_eq!(kubenet_node_ranges(&cidr("10.244.0.0/16")), 256);
        assert_eq!(kubenet_node_ranges(&cidr("10.244.0.0/24")), 1);
        assert_eq!(kubenet_node_ranges(&cidr("10.244.0.0/25")), 0);
    }
}
