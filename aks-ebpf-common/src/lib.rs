//! Everything that crosses the kernel/userspace boundary: map names, capacities, key and
//! value layouts and the reason codes the datapath counts packets under.
//!
//! Every type here is `#[repr(C)]`, `Copy`, has no implicit padding and carries a size
//! assertion, so the kernel programs and `aksnet` agree on the bytes. With the `user`
//! feature the value types implement `aya::Pod`. Byte order: addresses are stored as
//! they sit in the packet (see [`addr`]); ports and counters in host order.
#![no_std]

pub mod addr;
pub mod checksum;
pub mod config;
pub mod conntrack;
pub mod endpoint;
pub mod event;
pub mod fabric;
pub mod lb;
mod names;
pub mod nodeport;
pub mod policy;
pub mod route;
pub mod stats;
pub mod wire;

pub use config::{NodeConfig, CONFIG_MAP};
pub use conntrack::{CtEntry, FlowKey, NatTarget, CONNTRACK_MAP, NAT_MAP};
pub use endpoint::{Endpoint, ENDPOINTS_CAPACITY, ENDPOINTS_MAP};
pub use event::{DatapathEvent, Program, EVENTS_LOST_MAP, EVENTS_MAP, MONITOR_MAP, MONITOR_TRACE};
pub use fabric::{FabricHop, FABRIC_ROUTES_CAPACITY, FABRIC_ROUTES_MAP};
pub use route::{Route, RouteKind, ROUTES_CAPACITY, ROUTES_MAP, ROUTE_MASQUERADE, ROUTE_OVERLAY};
pub use stats::{Reason, ReasonCounter, STATS_MAP};

/// Every map the kernel object declares, by name (each one's pin file too).
pub const MAPS: [&str; 21] = [
    CONFIG_MAP,
    ENDPOINTS_MAP,
    ROUTES_MAP,
    FABRIC_ROUTES_MAP,
    CONNTRACK_MAP,
    NAT_MAP,
    lb::SERVICES_MAP,
    lb::BACKENDS_MAP,
    lb::REV_NAT_MAP,
    lb::LB_FLOWS_MAP,
    lb::LB_REPLIES_MAP,
    nodeport::NODEPORTS_MAP,
    nodeport::NODEPORT_FLOWS_MAP,
    nodeport::NODEPORT_REPLIES_MAP,
    STATS_MAP,
    EVENTS_MAP,
    MONITOR_MAP,
    EVENTS_LOST_MAP,
    policy::IPCACHE_MAP,
    policy::POLICY_MAP,
    policy::POLICY_CT_MAP,
];
