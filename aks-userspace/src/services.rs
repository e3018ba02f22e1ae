//! Changing the services of a running cluster (`aksnet services add|remove`), for
//! either datapath: the saved description is changed and planned again (so every AKS
//! rule still holds), then the eBPF datapath's pinned service and node port maps are
//! updated in place on every node, or the iptables datapath's whole ruleset is replaced
//! atomically on every node, as kube-proxy does. When a NodePort or LoadBalancer
//! service is involved, the fabric's load balancer (frontends, rules, the nodes the
//! health probe admits) is reprogrammed too, as the cloud provider updates Azure's.
//! Established flows to backends that remain go on.

use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::datapath::ebpf::{NodePortMaps, ServiceMaps};
use crate::datapath::iptables_rules::reprogram_nodes;
use crate::live_change::Programmed;
use crate::model::loadbalancer::Exposure;
use crate::model::{self, Datapath, ServiceDescription};
use crate::plan::{self, Plan, ServicePlan};
use crate::state::ClusterState;

/// What to change.
pub enum ServiceChange {
    /// Add the service, or replace the one with that name (e.g. other backends).
    Upsert(ServiceDescription),
    Remove(String),
}

/// What was done.
#[derive(Debug)]
pub struct ServiceUpdate {
    pub service: String,
    pub services_now: usize,
    pub programmed: Programmed,
}

/// Applies `change` to the running cluster `state`.
pub fn apply(state: &mut ClusterState, change: ServiceChange) -> Result<ServiceUpdate> {
    let mut description = ClusterState::load_description(&state.name)?;
    let (name, old) = match &change {
        ServiceChange::Upsert(service) => {
            let old = description
                .services
                .iter()
                .position(|s| s.name == service.name);
            (service.name.clone(), old)
        }
        ServiceChange::Remove(name) => {
            let Some(i) = description.services.iter().position(|s| &s.name == name) else {
                let known: Vec<&str> = description
                    .services
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect();
                bail!(
                    "cluster {} has no service {name:?}; its services are: {}",
                    state.name,
                    crate::table::listing(&known)
                );
            };
            (name.clone(), Some(i))
        }
    };
    let previous = old.and_then(|i| {
        state
            .services
            .iter()
            .find(|s| s.name == description.services[i].name)
            .cloned()
    });
    match change {
        ServiceChange::Upsert(service) => match old {
            Some(i) => description.services[i] = service,
            None => description.services.push(service),
        },
        ServiceChange::Remove(_) => {
            if let Some(i) = old {
                description.services.remove(i);
            }
        }
    }
    // Kept typed: the command exits 2 on a change that does not plan (bad input).
    let cluster = model::validate(&description)?;
    let plan = plan::plan(&cluster)?;
    let started = Instant::now();
    let now = plan.services.iter().find(|s| s.name == name);
    let mut how = program(state, &plan, previous.as_ref(), now)?;
    let exposed_before = state.exposures.iter().find(|e| e.service == name).cloned();
    let exposed_now = plan.exposures.iter().find(|e| e.service == name);
    if exposed_before.is_some() || exposed_now.is_some() {
        if state.datapath == Datapath::Ebpf {
            program_node_ports(
                state,
                previous.as_ref(),
                exposed_before.as_ref(),
                now,
                exposed_now,
            )?;
        }
        crate::cluster::reprogram_fabric(&plan, &state.vnet)?;
        how.push_str(", the node ports and the fabric's load balancer");
    }
    let took = started.elapsed();
    ClusterState::save_description(&state.name, &description)?;
    state.services = plan.services.clone();
    state.exposures = plan.exposures.clone();
    state.save()?;
    Ok(ServiceUpdate {
        service: name,
        services_now: plan.services.len(),
        programmed: Programmed {
            nodes: state.nodes.len(),
            how,
            took,
        },
    })
}

fn program(
    state: &ClusterState,
    plan: &Plan,
    previous: Option<&ServicePlan>,
    now: Option<&ServicePlan>,
) -> Result<String> {
    match state.datapath {
        Datapath::Ebpf => {
            for node in &state.nodes {
                let dir = ClusterState::pin_dir(&state.name).join(&node.name);
                let mut maps = ServiceMaps::open_pinned(&dir)?;
                // A frontend that moved (other IP, port or protocol) loses its old entry.
                if let Some(old) = previous {
                    let moved = now.is_none_or(|n| {
                        (n.cluster_ip, n.port, n.protocol)
                            != (old.cluster_ip, old.port, old.protocol)
                    });
                    if moved {
                        maps.remove(old.cluster_ip, old.port, old.protocol)?;
                    }
                }
                if let Some(service) = now {
                    maps.upsert(service).with_context(|| {
                        format!("programming service {} on node {}", service.name, node.name)
                    })?;
                }
            }
            Ok("BPF map updates on each node".to_owned())
        }
        Datapath::Iptables => reprogram_nodes(plan, &state.nodes),
    }
}

/// The node port of a NodePort or LoadBalancer service on every node of the eBPF
/// datapath: the old one removed if it moved (or the service is no longer exposed),
/// the new one written.
fn program_node_ports(
    state: &ClusterState,
    previous: Option<&ServicePlan>,
    exposed_before: Option<&Exposure>,
    now: Option<&ServicePlan>,
    exposed_now: Option<&Exposure>,
) -> Result<()> {
    for node in &state.nodes {
        let dir = ClusterState::pin_dir(&state.name).join(&node.name);
        let mut maps = NodePortMaps::open_pinned(&dir, &node.name)?;
        if let (Some(old), Some(old_service)) = (exposed_before, previous) {
            let kept = exposed_now.zip(now).is_some_and(|(e, s)| {
                (e.node_port, s.protocol) == (old.node_port, old_service.protocol)
            });
            if !kept {
                maps.remove(old.node_port, old_service.protocol)?;
            }
        }
        if let (Some(exposure), Some(service)) = (exposed_now, now) {
            maps.upsert(exposure, service).with_context(|| {
                format!(
                    "programming the node port of service {} on node {}",
                    service.name, node.name
                )
            })?;
        }
    }
    Ok(())
}
