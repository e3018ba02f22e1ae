//! Azure's fabric (the SDN between NICs), as the vnet namespace plays it: what it
//! enforces beyond routing, the same for every matrix cell because Azure enforces it
//! outside the node, whatever datapath the node runs.

pub mod egress;
pub mod firewall;
pub mod forwarder;
pub mod loadbalancer;
pub mod nsg;
