//! The iptables datapath: what kubenet / legacy Azure CNI, ip-masq-agent and kube-proxy
//! (iptables mode) program on an AKS node, rendered from the plan into one ruleset and
//! applied with one `iptables-restore` per node. The bridge the pods hang off (`cbr0`,
//! `azure0`) is built by the topology; the kernel routes and tracks connections.
//!
//! - `render_masq`: ip-masq-agent's `IP-MASQ-AGENT` chain.
//! - `render_services`: kube-proxy's `KUBE-SERVICES` → `KUBE-SVC-*` → `KUBE-SEP-*`.
//! - `render_nodeports`: `KUBE-NODEPORTS` → `KUBE-EXT-*` → `KUBE-SVC-*` / `KUBE-SVL-*`.
//! - `render_policy`: network policy (NPM / Calico style), per node, hooked first.
//! - `chain_name`: chain names derived from the service, as kube-proxy derives them.
//! - `ruleset`: the tables/chains/rules model, its restore payload and its parser.
//! - `inspect`: a running node's rules read back (`aksnet inspect rules`).
//! - `restore`: `iptables-restore` / `iptables-save` run inside a namespace (also used
//!   for the vnet fabric's rules).

mod chain_name;
mod inspect;
mod render_masq;
mod render_nodeports;
pub mod render_policy;
mod render_services;
mod restore;
pub mod ruleset;

use anyhow::{Context, Result};

use super::Datapath;
use crate::model;
use crate::netns;
use crate::plan::Plan;
use crate::topology::layout::{Layout, NodeLayout};

pub use chain_name::{endpoint_chain, service_chain};
pub use inspect::{node_rules, NodeRules};
pub use render_masq::{render_masquerade, MASQ_CHAIN};
pub use render_services::{ProxyOptions, MASQ_MARK, SERVICES_CHAIN};
pub use restore::{replace, restore, save, save_with_counters};
pub use ruleset::{ChainCount, Ruleset};

/// The sysctl that sends bridged IPv4 through iptables (and conntrack). It exists only
/// where the br_netfilter module is loaded, and is per network namespace.
const BRIDGE_NF_CALL_IPTABLES: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

pub struct IptablesDatapath {
    nodes: usize,
    rules_per_node: usize,
    services: usize,
    masquerade_all: bool,
}

/// kube-proxy's options for the cluster of `plan`: kubenet runs it with the pod CIDR as
/// `--cluster-cidr`.
pub fn proxy_options(plan: &Plan, masquerade_all: bool) -> ProxyOptions {
    ProxyOptions {
        // kube-proxy's --cluster-cidr: the private pod CIDR of kubenet and Overlay.
        cluster_cidr: plan.pod_cidr,
        masquerade_all,
    }
}

/// Everything one node of `plan` holds: kube-proxy's service chains, then ip-masq-agent
/// (so `KUBE-POSTROUTING` comes before `IP-MASQ-AGENT` in POSTROUTING, as on a node
/// where kube-proxy starts first). ClusterIP rules are the same on every node.
pub fn render_node(plan: &Plan, options: ProxyOptions) -> Ruleset {
    let mut ruleset = Ruleset::default();
    render_services::add_services(&mut ruleset, &plan.services, options);
    render_masq::add_masquerade(&mut ruleset, &plan.non_masquerade_cidrs);
    ruleset
}

/// Everything node `node` holds: its network policy rules (hooked before kube-proxy's
/// forwarding rules, which would accept service traffic first), kube-proxy's service
/// chains with the NodePort chains of this node (with `externalTrafficPolicy: Local`
/// they differ per node: each lists its own backends), then ip-masq-agent.
pub fn render_node_for(plan: &Plan, node: &str, options: ProxyOptions) -> Ruleset {
    let mut ruleset = Ruleset::default();
    render_policy::add_policies(&mut ruleset, plan, node);
    render_services::add_services(&mut ruleset, &plan.services, options);
    render_nodeports::add_node_ports(
        &mut ruleset,
        &plan.services,
        &plan.exposures,
        node,
        options.cluster_cidr,
    );
    render_masq::add_masquerade(&mut ruleset, &plan.non_masquerade_cidrs);
    ruleset
}

/// Same-node pods talk over the bridge; policy sees those frames only through
/// br_netfilter, so without it policies cannot be enforced and `up` refuses.
fn require_bridge_netfilter(plan: &Plan, bridge_netfilter: bool, node: &str) -> Result<()> {
    if !bridge_netfilter && plan.policy.enforced() && !plan.policy.policies.is_empty() {
        anyhow::bail!(
            "node {node}: {BRIDGE_NF_CALL_IPTABLES} is missing (br_netfilter is not loaded), so iptables cannot see traffic between pods of one node and network policies would not be enforced there; load br_netfilter (modprobe br_netfilter) or use datapath: ebpf"
        );
    }
    Ok(())
}

/// Turns bridged traffic through iptables in `namespace` if br_netfilter is there, and
/// says whether it is.
///
/// Why it matters: a client pod and a backend on the same bridge talk at L2 after
/// DNAT, so the backend's reply only gets its source rewritten back to the ClusterIP
/// if bridged frames pass conntrack. Without br_netfilter the rules fall back to
/// kube-proxy's `--masquerade-all`: every service connection is masqueraded to the node,
/// so replies come back through the node's IP stack. No kernel module is loaded here.
fn enable_bridge_netfilter(namespace: &str) -> Result<bool> {
    netns::run_in(namespace, || {
        match std::fs::write(BRIDGE_NF_CALL_IPTABLES, "1") {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("writing 1 to {BRIDGE_NF_CALL_IPTABLES}")),
        }
    })
}

/// Replaces every node's whole ruleset with the one `plan` renders (services or
/// policies added, changed or removed), one atomic restore per node, as kube-proxy
/// syncs. Says what programming meant.
pub fn reprogram_nodes(plan: &Plan, nodes: &[NodeLayout]) -> Result<String> {
    let mut rules = 0;
    for node in nodes {
        rules = reprogram_node(plan, &node.name, &node.namespace)
            .with_context(|| format!("reprogramming the rules of node {}", node.name))?;
    }
    Ok(format!("iptables-restore of {rules} rules on each node"))
}

/// Replaces one node's ruleset as one atomic restore. Returns the number of rules.
fn reprogram_node(plan: &Plan, node: &str, namespace: &str) -> Result<usize> {
    let bridge_netfilter = enable_bridge_netfilter(namespace)?;
    require_bridge_netfilter(plan, bridge_netfilter, node)?;
    let ruleset = render_node_for(plan, node, proxy_options(plan, !bridge_netfilter));
    restore::replace(namespace, &ruleset.to_restore())?;
    Ok(ruleset.rule_count())
}

impl IptablesDatapath {
    pub fn install(plan: &Plan, layout: &Layout, on_stop: super::OnStop) -> Result<Self> {
        let mut rules_per_node = 0;
        let mut masquerade_all = false;
        for node in &layout.nodes {
            on_stop.check()?;
            let bridge_netfilter = enable_bridge_netfilter(&node.namespace)
                .with_context(|| format!("checking br_netfilter on node {}", node.name))?;
            masquerade_all |= !bridge_netfilter;
            require_bridge_netfilter(plan, bridge_netfilter, &node.name)?;
            let ruleset = render_node_for(plan, &node.name, proxy_options(plan, !bridge_netfilter));
            rules_per_node = ruleset.rule_count();
            restore::restore(&node.namespace, &ruleset.to_restore()).with_context(|| {
                format!(
                    "programming network policy, kube-proxy and ip-masq-agent on node {}",
                    node.name
                )
            })?;
        }
        Ok(Self {
            nodes: layout.nodes.len(),
            rules_per_node,
            services: plan.services.len(),
            masquerade_all,
        })
    }
}

impl Datapath for IptablesDatapath {
    fn kind(&self) -> model::Datapath {
        model::Datapath::Iptables
    }

    fn summary(&self) -> String {
        format!(
            "iptables: kube-proxy ({} services) and ip-masq-agent, {} rules per node in {} nodes; pods bridged, kernel routing and conntrack{}",
            self.services,
            self.rules_per_node,
            self.nodes,
            if self.masquerade_all {
                " (no br_netfilter module: service traffic masqueraded; `modprobe br_netfilter` or `cargo xtask setup` loads it, then `aksnet down` and `up` again)"
            } else {
                ""
            }
        )
    }
}

#[cfg(test)]
mod tests;
