//! AKS defaults for the fields a description may leave out.

use std::net::Ipv4Addr;

use super::description::NetworkPlugin;
use crate::cidr::Ipv4Cidr;

/// `az aks create --pod-cidr` default (kubenet).
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

/// `--max-pods` default: 30 for Azure CNI (every pod costs a VNet address), 110 for kubenet
/// (the Kubernetes default; pods come from the private pod CIDR).
pub fn max_pods(plugin: NetworkPlugin) -> u32 {
    match plugin {
        NetworkPlugin::Azure => 30,
        NetworkPlugin::Kubenet => 110,
    }
}

/// `--dns-service-ip` default: the 10th address of the service CIDR (10.0.0.10 for the
/// default 10.0.0.0/16). `None` only for a service CIDR smaller than 11 addresses, which
/// validation reports.
pub fn dns_service_ip(service_cidr: &Ipv4Cidr) -> Option<Ipv4Addr> {
    service_cidr.nth(10)
}

/// The ip-masq-agent `nonMasqueradeCIDRs` AKS configures when the description gives none.
///
/// - kubenet: the pod CIDR and the VNet address space. Pod-to-pod traffic keeps pod
///   addresses (the route table carries each node's /24), traffic to VNet addresses keeps
///   them too; everything else, on-prem included, leaves with the node address, since
///   on-prem networks only learn the VNet's routes, not the private pod CIDR.
/// - Azure CNI: the VNet address space and the on-prem network. Pod addresses are VNet
///   addresses, which ExpressRoute advertises, so pods reach on-prem with their own
///   address ("direct pod connectivity"); only traffic to the internet is masqueraded
///   (Azure does it in its load balancer; the emulation does it on the node).
pub fn non_masquerade_cidrs(
    plugin: NetworkPlugin,
    address_space: Ipv4Cidr,
    pod_cidr: Option<Ipv4Cidr>,
    on_prem: Ipv4Cidr,
) -> Vec<Ipv4Cidr> {
    match plugin {
        NetworkPlugin::Kubenet => pod_cidr.into_iter().chain([address_space]).collect(),
        NetworkPlugin::Azure => vec![address_space, on_prem],
    }
}

const fn cidr(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Cidr {
    match Ipv4Cidr::new_const(Ipv4Addr::new(a, b, c, d), prefix) {
        Some(block) => block,
        None => panic!("default CIDR has host bits set"),
    }
}
