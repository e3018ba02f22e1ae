//! aksnet: emulate AKS networking (Azure CNI and kubenet, each on an eBPF or an iptables
//! datapath) inside network namespaces on one Linux box.

pub mod bench;
pub mod check;
pub mod cidr;
pub mod cluster;
pub mod cluster_lock;
pub mod datapath;
pub mod egress_update;
pub mod fabric;
pub mod inspect;
pub mod live_change;
pub mod model;
pub mod monitor;
pub mod netns;
pub mod plan;
pub mod policies;
pub mod policy;
pub mod probes;
pub mod services;
pub mod state;
pub mod stop;
pub mod table;
pub mod topology;
pub mod upgrade;
