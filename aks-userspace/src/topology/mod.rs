//! The emulated cluster on this machine: network namespaces, veths, addresses, routes.
//! `spec` says what a namespace holds, `netlink` applies it, `build` creates and removes
//! a whole set of namespaces with progress and rollback.

mod build;
pub mod layout;
mod netlink;
pub mod overlay;
pub mod spec;

pub use build::{build, rebuild, teardown};
pub use spec::{
    BridgeSpec, InterfaceSpec, Mac, NamespaceSpec, NeighbourSpec, RouteSpec, TunnelPeer, VethSpec,
    VxlanSpec,
};
