//! `aksnet update NAME --outbound-type TYPE`: changing a running cluster's egress, as
//! `az aks update --outbound-type` does (egress-outboundtype.md, "Updating `outboundType`
//! after cluster creation"). Egress lives in the fabric only, so the change is one
//! replacement of the vnet namespace's rules and its idle timeout, and to or from
//! userDefinedRouting the firewall's namespace and route table made or removed; the nodes
//! are not touched. Flows the old type translated are removed from the fabric's
//! connection table: AKS warns the change is disruptive and changes the egress address.
//!
//! AKS's migration tables (managed VNet and bring-your-own VNet) allow every move between
//! `loadBalancer`, `managedNATGateway`, `userDefinedRouting` and `none` except between
//! `managedNATGateway` and `userDefinedRouting`, which neither table supports (a managed NAT
//! gateway needs a managed VNet, user-defined routing a custom one). The emulation has no
//! managed/custom VNet distinction, so it allows what either table allows.
//!
//! Never half done: under the cluster's change lock; when a step fails after the fabric
//! changed, the old rules, timeout, record and description are put back.

use anyhow::{Context, Result};

use crate::model::outbound::OutboundType;
use crate::model::{self, ClusterDescription};
use crate::plan::{self, Plan};
use crate::state::ClusterState;
use crate::topology::{self, layout};
use crate::upgrade::Refused;
use crate::{cluster, datapath::iptables, fabric, netns};

/// What a change did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Changed {
        from: OutboundType,
        to: OutboundType,
        /// What the internet sees now (none for `none`).
        public_ip: Option<std::net::Ipv4Addr>,
    },
    Unchanged,
}

/// Whether AKS supports moving from `from` to `to` (see the module doc); the reason when
/// it does not.
pub fn migration_refusal(from: OutboundType, to: OutboundType) -> Option<String> {
    use OutboundType::{ManagedNatGateway, UserDefinedRouting};
    match (from, to) {
        (ManagedNatGateway, UserDefinedRouting) | (UserDefinedRouting, ManagedNatGateway) => {
            Some(format!(
                "--outbound-type: AKS does not support migrating from {from} to {to} (egress-outboundtype.md, \"Supported Migration Paths\": a managed NAT gateway needs a managed VNet, userDefinedRouting a custom one); move through loadBalancer first, or create a new cluster"
            ))
        }
        _ => None,
    }
}

/// The description with `to` as its outbound type. A `loadBalancerProfile` goes when the
/// load balancer no longer carries egress (it configures only its outbound rule).
pub fn with_outbound_type(
    description: &ClusterDescription,
    to: OutboundType,
) -> ClusterDescription {
    let mut changed = description.clone();
    changed.outbound_type = Some(to);
    if to != OutboundType::LoadBalancer {
        changed.load_balancer_profile = None;
    }
    changed
}

/// Changes the outbound type of cluster `name` to `to`.
pub fn change(name: &str, to: OutboundType) -> Result<Outcome> {
    let _lock = crate::upgrade::change_lock(name)?;
    let state = ClusterState::require(name)?;
    let old_description = ClusterState::load_description(name)?;
    let from = old_description.outbound_type.unwrap_or_default();
    if from == to {
        return Ok(Outcome::Unchanged);
    }
    if let Some(refusal) = migration_refusal(from, to) {
        return Err(Refused(refusal).into());
    }
    let new_description = with_outbound_type(&old_description, to);
    let old_plan = plan_of(&old_description).context("planning the cluster as it runs")?;
    let new_plan = plan_of(&new_description)
        .map_err(|e| Refused(format!("the cluster cannot use outboundType {to}: {e:#}")))?;
    crate::stop::check()?;

    let firewall_ns = layout::firewall_namespace_name(&layout::prefix(name));
    let adds_firewall = new_plan.outbound.firewall.is_some();
    let removes_firewall = old_plan.outbound.firewall.is_some();
    let mut changed = ClusterState {
        outbound: new_plan.outbound.clone(),
        ..state.clone()
    };
    if adds_firewall {
        // Recorded before it exists, so `down` finds it whatever happens next.
        let mut recorded = state.clone();
        recorded.namespaces.push(firewall_ns.clone());
        recorded.save()?;
        changed.namespaces = recorded.namespaces;
    }
    if removes_firewall {
        changed.namespaces.retain(|n| n != &firewall_ns);
    }
    let done = (|| -> Result<()> {
        if adds_firewall {
            build_firewall(&new_plan, &firewall_ns)?;
        }
        if removes_firewall {
            fabric::firewall::uninstall(&old_plan, &state.vnet)?;
        }
        apply(&state.vnet, &new_plan)?;
        fabric::firewall::install(&new_plan, &state.vnet)?;
        forget_translated_flows(&state.vnet, &old_plan)?;
        if removes_firewall {
            // Still in the record until it is gone, so `down` would find it.
            netns::delete(&firewall_ns)?;
        }
        ClusterState::save_description(name, &new_description)?;
        changed.save()
    })();
    if let Err(err) = done {
        let undone = (|| -> Result<()> {
            if adds_firewall {
                netns::delete(&firewall_ns)?;
            }
            if removes_firewall {
                // Its rules may be gone; put them back, once (never twice).
                let _ = fabric::firewall::uninstall(&old_plan, &state.vnet);
                fabric::firewall::route_to_firewall(&old_plan, &state.vnet)?;
            }
            apply(&state.vnet, &old_plan)?;
            ClusterState::save_description(name, &old_description)?;
            state.save()
        })();
        return Err(match undone {
            Ok(()) => err.context(format!(
                "changing the outbound type of {name:?} failed; it is back on {from}"
            )),
            Err(undo) => err.context(format!(
                "and putting {from} back failed too ({undo:#}); remove the cluster with `aksnet down {name}`"
            )),
        });
    }
    Ok(Outcome::Changed {
        from,
        to,
        public_ip: new_plan.outbound.public_ip,
    })
}

/// Creates the firewall's namespace and its link from the vnet namespace (built as a
/// new cluster of `plan` would have it).
fn build_firewall(plan: &Plan, firewall_ns: &str) -> Result<()> {
    let layout = layout::layout(plan);
    let spec = layout
        .namespaces
        .iter()
        .find(|n| n.name == firewall_ns)
        .context("the plan has no firewall namespace")?;
    let vnet = layout
        .namespaces
        .iter()
        .find(|n| n.name == layout.vnet)
        .context("the layout has no vnet namespace")?;
    let side = crate::upgrade::vnet_side(vnet, firewall_ns);
    topology::rebuild(std::slice::from_ref(spec), &[side])
        .context("building the firewall's namespace")
}

fn plan_of(description: &ClusterDescription) -> Result<Plan> {
    let cluster = model::validate(description)?;
    Ok(plan::plan(&cluster)?)
}

/// Replaces the fabric's rules with `plan`'s (every table) and sets its idle timeout.
fn apply(vnet: &str, plan: &Plan) -> Result<()> {
    // The load balancer keeps the nodes its probes have in or out of rotation.
    let probes = crate::probes::ProbeRecord::load(&plan.name)?;
    iptables::replace(vnet, &cluster::fabric_rules(plan, probes.as_ref()))
        .context("reprogramming the VNet fabric")?;
    fabric::egress::apply_idle_timeout(vnet, &plan.outbound)
}

/// Removes the fabric's flows translated to the old type's public address, so no flow
/// keeps leaving by the old path.
fn forget_translated_flows(vnet: &str, old: &Plan) -> Result<()> {
    let Some(address) = old.outbound.public_ip else {
        return Ok(());
    };
    crate::inspect::delete_flows_to(vnet, address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use OutboundType::*;

    #[test]
    fn only_nat_gateway_and_udr_cannot_swap() {
        let all = [LoadBalancer, ManagedNatGateway, UserDefinedRouting, None];
        for from in all {
            for to in all {
                let refused = migration_refusal(from, to).is_some();
                let expected = matches!(
                    (from, to),
                    (ManagedNatGateway, UserDefinedRouting)
                        | (UserDefinedRouting, ManagedNatGateway)
                );
                assert_eq!(refused, expected, "{from} -> {to}");
            }
        }
        let why = migration_refusal(ManagedNatGateway, UserDefinedRouting).expect("refused");
        assert!(why.starts_with("--outbound-type:") && why.contains("managedNATGateway"));
    }

    #[test]
    fn the_profile_goes_with_the_load_balancer() {
        let description = model::parse(
            "name: up\nnetworkPlugin: azure\ndatapath: ebpf\nvnet:\n  addressSpace: 10.224.0.0/12\n  nodeSubnet: 10.224.0.0/24\nnodePools:\n  - { name: nodepool1, count: 2 }\nloadBalancerProfile: { allocatedOutboundPorts: 8 }\n",
        )
        .expect("test description");
        let nat = with_outbound_type(&description, ManagedNatGateway);
        assert_eq!(nat.load_balancer_profile, Option::None);
        assert!(model::validate(&nat).is_ok());
        let kept = with_outbound_type(&description, LoadBalancer);
        assert!(kept.load_balancer_profile.is_some());
    }
}
