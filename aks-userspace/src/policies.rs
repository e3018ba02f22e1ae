//! Changing the network policies of a running cluster (`aksnet policy apply|delete`),
//! on either datapath: the saved description is changed and planned again (every rule
//! still holds, the engine among them), then the eBPF datapath's pinned maps are moved
//! from the old model to the new one entry by entry (only what differs), or every node's
//! iptables ruleset is replaced in one restore. Connections already allowed stay allowed
//! until they end, as with Cilium's and the kernel's conntrack.

use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::datapath::ebpf::policy::{identities, node_policy, MapChanges, PinnedPolicyMaps};
use crate::datapath::iptables_rules::reprogram_nodes;
use crate::live_change::Programmed;
use crate::model::policy::{NetworkPolicyDescription, DEFAULT_NAMESPACE};
use crate::model::{self, Datapath};
use crate::plan::{self, Plan};
use crate::state::ClusterState;

/// `policy delete` of a policy the cluster does not have (bad input).
#[derive(Debug, thiserror::Error)]
#[error("cluster {cluster} has no network policy {policy}; its policies are: {known}")]
pub struct UnknownPolicy {
    pub cluster: String,
    pub policy: String,
    pub known: String,
}

/// What to change.
pub enum PolicyChange {
    /// Add these policies, or replace those with the same namespace and name.
    Apply(Vec<NetworkPolicyDescription>),
    /// Delete the policy `name` of `namespace`.
    Delete { namespace: String, name: String },
}

/// What was done.
#[derive(Debug)]
pub struct PolicyUpdate {
    /// `namespace/name` of every policy changed.
    pub policies: Vec<String>,
    pub policies_now: usize,
    pub programmed: Programmed,
}

fn qualified(policy: &NetworkPolicyDescription) -> (String, String) {
    (
        policy
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
        policy.metadata.name.clone(),
    )
}

/// Reads policies from YAML: one NetworkPolicy object, or a list of them. Errors carry
/// the line and column, as the description's do.
pub fn parse(yaml: &str) -> Result<Vec<NetworkPolicyDescription>, model::PlanError> {
    let is_list = yaml
        .lines()
        .map(str::trim_start)
        .find(|l| !l.is_empty() && !l.starts_with('#') && *l != "---")
        .is_some_and(|l| l.starts_with('-') || l.starts_with('['));
    if is_list {
        Ok(serde_norway::from_str(yaml)?)
    } else {
        Ok(vec![serde_norway::from_str(yaml)?])
    }
}

/// Applies `change` to the running cluster `state`.
pub fn apply(state: &ClusterState, change: PolicyChange) -> Result<PolicyUpdate> {
    let old_description = ClusterState::load_description(&state.name)?;
    let old_plan = plan_of(&old_description)?;
    let mut description = old_description.clone();
    let changed = match change {
        PolicyChange::Apply(policies) => {
            if policies.is_empty() {
                bail!("the file holds no NetworkPolicy; nothing to apply");
            }
            let mut names = Vec::new();
            for policy in policies {
                let id = qualified(&policy);
                match description
                    .network_policies
                    .iter()
                    .position(|p| qualified(p) == id)
                {
                    Some(i) => description.network_policies[i] = policy,
                    None => description.network_policies.push(policy),
                }
                names.push(format!("{}/{}", id.0, id.1));
            }
            names
        }
        PolicyChange::Delete { namespace, name } => {
            let id = (namespace, name);
            let Some(i) = description
                .network_policies
                .iter()
                .position(|p| qualified(p) == id)
            else {
                let known: Vec<String> = description
                    .network_policies
                    .iter()
                    .map(|p| {
                        let (ns, n) = qualified(p);
                        format!("{ns}/{n}")
                    })
                    .collect();
                return Err(UnknownPolicy {
                    cluster: state.name.clone(),
                    policy: format!("{}/{}", id.0, id.1),
                    known: if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    },
                }
                .into());
            };
            description.network_policies.remove(i);
            vec![format!("{}/{}", id.0, id.1)]
        }
    };
    let plan = plan_of(&description)?;
    let started = Instant::now();
    let how = program(state, &old_plan, &plan)?;
    let took = started.elapsed();
    ClusterState::save_description(&state.name, &description)?;
    Ok(PolicyUpdate {
        policies: changed,
        policies_now: plan.policy.policies.len(),
        programmed: Programmed {
            nodes: state.nodes.len(),
            how,
            took,
        },
    })
}

/// Validates and plans; a rule the change breaks stays a [`model::PlanError`] inside
/// the `anyhow::Error`, so the command can tell bad input (exit 2) from a failure.
fn plan_of(description: &model::ClusterDescription) -> Result<Plan> {
    let cluster = model::validate(description).map_err(anyhow::Error::new)?;
    plan::plan(&cluster).map_err(anyhow::Error::new)
}

fn program(state: &ClusterState, old: &Plan, new: &Plan) -> Result<String> {
    match state.datapath {
        Datapath::Ebpf => {
            let (old_ids, new_ids) = (identities(old)?, identities(new)?);
            let mut total = MapChanges::default();
            for node in &state.nodes {
                let dir = ClusterState::pin_dir(&state.name).join(&node.name);
                let mut maps = PinnedPolicyMaps::open_pinned(&dir)?;
                let before = node_policy(old, &old_ids, &node.name)?;
                let after = node_policy(new, &new_ids, &node.name)?;
                let changes = maps
                    .update((&old_ids, &before), (&new_ids, &after))
                    .with_context(|| format!("updating the policy maps of node {}", node.name))?;
                total.written += changes.written;
                total.deleted += changes.deleted;
            }
            Ok(format!(
                "{} map entries written and {} deleted over all nodes",
                total.written, total.deleted
            ))
        }
        Datapath::Iptables => reprogram_nodes(new, &state.nodes),
    }
}
