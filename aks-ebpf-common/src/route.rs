//! `ROUTES`: what the node knows about destinations beyond its own pods (the ipcache /
//! UDR view). An LPM trie keyed by IPv4 prefix (data in map form, see [`crate::addr`]).

/// Name of the map in the object and of its pin file.
pub const ROUTES_MAP: &str = "ROUTES";
/// Capacity: local pods, every remote node's pod range or pods, the VNet, on-prem,
/// the non-masquerade CIDRs and the default route.
pub const ROUTES_CAPACITY: u32 = 4096;

crate::names::named_enum! {
    /// What a destination is. Append-only numbering (map ABI).
    pub enum RouteKind: u32, from from_u32 {
        /// A pod of this node (also in `ENDPOINTS`).
        LocalPod = 0 => "local-pod",
        /// Pods of another node: a pod /32 (Azure CNI) or a node's pod /24 (kubenet).
        RemotePods = 1 => "remote-pods",
        /// Elsewhere in the VNet (nodes, other subnets).
        Vnet = 2 => "vnet",
        /// The on-prem network behind ExpressRoute.
        OnPrem = 3 => "on-prem",
        /// Anything else: the internet.
        External = 4 => "external",
    }
}

/// `Route::flags`: traffic from a pod to this destination leaves with the node address
/// (the destination is outside every non-masquerade CIDR).
pub const ROUTE_MASQUERADE: u32 = 1;
/// `Route::flags`: the destination is another node's pods behind the Azure CNI Overlay;
/// the node's kernel routes it into its tunnel device, the VNet has no route for it.
pub const ROUTE_OVERLAY: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// A [`RouteKind`] as `u32`.
    pub kind: u32,
    /// The node serving a `RemotePods` destination (map form), else zero. Informational:
    /// every packet leaves through the VNet gateway, whose routes pick the node.
    pub next_hop: u32,
    /// `ROUTE_*` bits.
    pub flags: u32,
}

const _: () = assert!(core::mem::size_of::<Route>() == 12);

#[cfg(feature = "user")]
// SAFETY: repr(C), three u32, no padding; every bit pattern valid.
unsafe impl aya::Pod for Route {}
