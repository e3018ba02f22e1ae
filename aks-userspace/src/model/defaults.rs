//! AKS defaults for the fields a description may leave out.

use std::net::Ipv4Addr;

use super::description::PodNetwork;
use crate::cidr::Ipv4Cidr;

/// `az aks create --pod-cidr` default (kubenet and Overlay).
pub const POD_CIDR: Ipv4Cidr = cidr(10, 244, 0, 0, 16);
/// `az aks create --service-cidr` default.
pub const SERVICE_CIDR: Ipv4Cidr = cidr(10, 0, 0, 0, 16);
/// Pods aksnet creates per node when the description does not say: each is a network
/// namespace with a veth, so keep the default small.
pub const PODS_PER_NODE: u32 = 2;
/// TEST-NET-3 (RFC 5737): never routed on the real internet, so nothing can leak.
pub const INTERNET_HOST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const ON_PREM_CIDR: Ipv4Cidr = cidr(192, 168, 100, 0, 24);
pub const ON_PREM_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 10);

/// `--max-pods` default of each model (concepts-network-ip-address-planning.md, "Maximum
/// pods per node"): 30 for Node Subnet (every pod costs a node subnet address, reserved up
/// front), 110 for Pod Subnet and kubenet (the Kubernetes default), 250 for Overlay (pods
/// cost no VNet address and each node has a /24).
pub fn max_pods(network: PodNetwork) -> u32 {
    match network {
        PodNetwork::AzureOverlay => 250,
        PodNetwork::AzureNodeSubnet => 30,
        PodNetwork::AzurePodSubnet | PodNetwork::Kubenet => 110,
    }
}

/// `--dns-service-ip` default: the 10th address of the service CIDR (10.0.0.10 for the
/// default 10.0.0.0/16). `None` only for a service CIDR smaller than 11 addresses, which
/// validation reports.
pub fn dns_service_ip(service_cidr: &Ipv4Cidr) -> Option<Ipv4Addr> {
    service_cidr.nth(10)
}

/// The ip-masq-agent `nonMasqueradeCIDRs` AKS configures when the description gives none.
/// Traffic to these keeps the pod address; everything else leaves with the node address.
///
/// - kubenet: the pod CIDR only. Pod → pod across nodes keeps pod addresses (the UDRs carry
///   each node's /24); traffic to VNet resources is NATed to the node's primary address
///   (configure-kubenet.md). The study chapter also kept VNet destinations unmasqueraded;
///   AKS does not.
/// - Azure CNI Node Subnet: the VNet address space only. Systems in the VNet see the pod
///   address, systems outside it (on-prem included) the node address
///   (concepts-network-legacy-cni.md). The chapter kept on-prem unmasqueraded too.
/// - Azure CNI Pod Subnet (dynamic allocation): no ip-masq-agent; the pod address is the
///   source toward every destination, inside the VNet or not (concepts-network-legacy-cni.md
///   FAQ, concepts-network-azure-cni-pod-subnet.md). The emulation lists the VNet and
///   on-prem; the internet is still masqueraded on the node, where Azure's outbound load
///   balancer would do it.
pub fn non_masquerade_cidrs(
    network: PodNetwork,
    address_space: Ipv4Cidr,
    pod_cidr: Option<Ipv4Cidr>,
    on_prem: Ipv4Cidr,
) -> Vec<Ipv4Cidr> {
    match network {
        // Overlay: pod → pod keeps pod addresses, anything outside the pod CIDR leaves
        // with the node address (concepts-network-azure-cni-overlay.md).
        PodNetwork::Kubenet | PodNetwork::AzureOverlay => pod_cidr.into_iter().collect(),
        PodNetwork::AzureNodeSubnet => vec![address_space],
        PodNetwork::AzurePodSubnet => vec![address_space, on_prem],
    }
}

/// Ranges AKS refuses for the service CIDR, the pod CIDR and the VNet address space
/// (configure-kubenet.md and concepts-network-legacy-cni.md, "Prerequisites"): link-local,
/// two ranges the platform uses itself, and TEST-NET-1.
pub const RESERVED_RANGES: [Ipv4Cidr; 4] = [
    cidr(169, 254, 0, 0, 16),
    cidr(172, 30, 0, 0, 16),
    cidr(172, 31, 0, 0, 16),
    cidr(192, 0, 2, 0, 24),
];

/// The service CIDR must be smaller than a /12 (concepts-network-ip-address-planning.md),
/// so its prefix must be at least this long.
pub const SERVICE_CIDR_MIN_PREFIX: u8 = 13;

const fn cidr(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Cidr {
    match Ipv4Cidr::new_const(Ipv4Addr::new(a, b, c, d), prefix) {
        Some(block) => block,
        None => panic!("default CIDR has host bits set"),
    }
}
