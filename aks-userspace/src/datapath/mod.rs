//! The datapaths `up` loads into the node namespaces. Both implement [`Datapath`], so
//! `up`, `check` and `bench` never care which one runs.
//!
//! Today both forward with the node's kernel routing (set up by the topology):
//! - `ebpf` attaches `from_pod` to every pod veth and counts packets by reason; BPF
//!   routing, SNAT and services replace kernel routing in the following issues.
//! - `iptables` programs ip-masq-agent's MASQUERADE chain; the bridge and kube-proxy's
//!   service chains follow.

mod ebpf;
mod iptables;

use anyhow::Result;

use crate::model;
use crate::plan::Plan;
use crate::topology::layout::Layout;

pub use ebpf::EbpfDatapath;
pub use iptables::{render_masquerade, IptablesDatapath};

/// The iptables datapath's renderers and ruleset model, for `inspect rules` and tests.
pub mod iptables_rules {
    pub use super::iptables::{
        endpoint_chain, proxy_options, render_node, service_chain, ChainCount, ProxyOptions,
        Ruleset, MASQ_CHAIN, MASQ_MARK, SERVICES_CHAIN,
    };
}

/// A datapath installed in every node of a cluster. Dropping it leaves what it pinned
/// or programmed in place; removing the cluster's namespaces and pins removes it.
pub trait Datapath {
    fn kind(&self) -> model::Datapath;
    /// One line for the `up` summary: what was installed where.
    fn summary(&self) -> String;
}

/// Installs the datapath `plan` asks for into the namespaces of `layout`.
pub fn install(plan: &Plan, layout: &Layout) -> Result<Box<dyn Datapath>> {
    Ok(match plan.datapath {
        model::Datapath::Ebpf => Box::new(EbpfDatapath::install(plan, layout)?),
        model::Datapath::Iptables => Box::new(IptablesDatapath::install(plan, layout)?),
    })
}
