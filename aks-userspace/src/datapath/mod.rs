//! The datapaths `up` loads into the node namespaces. Both implement [`Datapath`], so
//! `up`, `check` and `bench` never care which one runs.
//!
//! - `ebpf` attaches `from_pod` to every pod veth and `from_vnet` to the uplink (NSG
//!   rules are the fabric's): routing (an LPM trie), ClusterIP services, masquerade (SNAT) and its
//!   own conntrack run in the programs, every packet counted by reason; the maps are
//!   pinned so `inspect` and `services` reach them from another process.
//! - `iptables` is the baseline: pods bridged (`cbr0` / `azure0`, built by the
//!   topology), kube-proxy's service chains and ip-masq-agent's MASQUERADE in one
//!   `iptables-restore` per node, kernel routing and conntrack.

pub mod ebpf;
pub mod iptables;

use anyhow::Result;

use crate::model;
use crate::plan::Plan;
use crate::topology::layout::Layout;

pub use ebpf::EbpfDatapath;
pub use iptables::{render_masquerade, IptablesDatapath};

/// The iptables datapath's renderers and ruleset model, for `inspect rules` and tests.
pub mod iptables_rules {
    pub use super::iptables::reprogram_nodes;
    pub use super::iptables::{
        endpoint_chain, node_rules, proxy_options, render_node, service_chain, ChainCount,
        NodeRules, ProxyOptions, Ruleset, MASQ_CHAIN, MASQ_MARK, SERVICES_CHAIN,
    };
}

/// A datapath installed in every node of a cluster. Dropping it leaves what it pinned
/// or programmed in place; removing the cluster's namespaces and pins removes it.
pub trait Datapath {
    fn kind(&self) -> model::Datapath;
    /// One line for the `up` summary: what was installed where.
    fn summary(&self) -> String;
    /// Prints the log records the datapath produced since the last call (`up` calls
    /// this a few times a second while it runs).
    fn flush_logs(&mut self) {}
    /// Expires idle flows from the datapath's own conntrack, per node. The iptables
    /// datapath leaves that to the kernel's conntrack.
    fn collect_garbage(&mut self) -> Result<Vec<(String, ebpf::GcReport)>> {
        Ok(Vec::new())
    }
}

/// What an install does when a stop signal (see [`crate::stop`]) has arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnStop {
    /// Fails with [`crate::stop::Stopped`] before the next node or service: building a
    /// cluster, whose caller removes what was made.
    Stop,
    /// Goes on to the end: rolling a node back, where half a rollback would leave a
    /// node of neither plan.
    Finish,
}

impl OnStop {
    /// Between two steps of an install.
    pub(crate) fn check(self) -> Result<()> {
        match self {
            OnStop::Stop => Ok(crate::stop::check()?),
            OnStop::Finish => Ok(()),
        }
    }
}

/// Installs the datapath `plan` asks for into the namespaces of `layout`.
pub fn install(plan: &Plan, layout: &Layout, on_stop: OnStop) -> Result<Box<dyn Datapath>> {
    Ok(match plan.datapath {
        model::Datapath::Ebpf => Box::new(EbpfDatapath::install(plan, layout, on_stop)?),
        model::Datapath::Iptables => Box::new(IptablesDatapath::install(plan, layout, on_stop)?),
    })
}
