//! `aksnet inspect rules`: the ruleset a node of a running cluster really holds, read
//! back from the kernel with `iptables-save` inside the node namespace, and its rule
//! counts per chain.

use anyhow::Result;
use serde::Serialize;

use super::restore;
use super::ruleset::{ChainCount, Ruleset};
use crate::state::ClusterState;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRules {
    pub cluster: String,
    pub node: String,
    pub namespace: String,
    pub datapath: crate::model::Datapath,
    pub total_rules: usize,
    pub chains: Vec<ChainCount>,
    pub ruleset: Ruleset,
}

/// The rules of `node` (the first node when `None`) in the cluster of `state`. An
/// unknown node is an error that lists the cluster's nodes.
pub fn node_rules(state: &ClusterState, node: Option<&str>) -> Result<NodeRules> {
    let found = match node {
        Some(name) => state.nodes.iter().find(|n| n.name == name),
        None => state.nodes.first(),
    };
    let Some(found) = found else {
        return Err(state.no_such_node(node.unwrap_or_default()));
    };
    let saved = restore::save(&found.namespace)?;
    let ruleset = Ruleset::parse(&saved)?;
    Ok(NodeRules {
        cluster: state.name.clone(),
        node: found.name.clone(),
        namespace: found.namespace.clone(),
        datapath: state.datapath,
        total_rules: ruleset.rule_count(),
        chains: ruleset.chain_counts(),
        ruleset,
    })
}
