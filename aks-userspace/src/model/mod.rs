//! The cluster description: its YAML form, the AKS defaults, and the AKS rules it must
//! satisfy. `load` is the whole path from text to a validated `Cluster`.

pub mod capacity;
mod cluster;
pub mod conntrack;
pub mod defaults;
mod description;
mod error;
pub mod loadbalancer;
pub mod nsg;
pub mod outbound;
pub mod policy;
mod validate;

pub use cluster::{Cluster, ExternalHosts, NodePool, Service};
pub use description::{
    ClusterDescription, Datapath, ExternalHostsDescription, NetworkPlugin, NetworkPluginMode,
    NodePoolDescription, OnPremNetwork, OsType, PodNetwork, Protocol, ServiceDescription, Vnet,
};
pub use error::PlanError;
pub use validate::{check_cluster_name, validate};

/// The cluster aksnet builds when no description is given: small, because every node and
/// pod becomes a network namespace.
pub const DEFAULT_DESCRIPTION: &str = include_str!("default.yaml");

/// Parse a description; unknown fields and bad YAML fail with their line and column.
pub fn parse(yaml: &str) -> Result<ClusterDescription, PlanError> {
    Ok(serde_norway::from_str(yaml)?)
}

/// Parse and validate a description.
pub fn load(yaml: &str) -> Result<Cluster, PlanError> {
    validate(&parse(yaml)?)
}

/// The description as YAML, the inverse of `parse`.
pub fn to_yaml(description: &ClusterDescription) -> String {
    // Serializing plain structs of strings and numbers cannot fail.
    serde_norway::to_string(description).unwrap_or_default()
}

#[cfg(test)]
mod tests;
