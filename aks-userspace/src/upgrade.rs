//! `aksnet update NAME --network-plugin-mode overlay`: the in-place upgrade AKS offers
//! from kubenet or Azure CNI Node Subnet to Azure CNI Overlay (update-azure-cni.md). One
//! way; every node is "reimaged": its namespace and its pods' are removed and built again
//! from the Overlay plan, its datapath reloaded; the VNet's routes for it (kubenet's UDR)
//! go with its old link. One node at a time, with progress.
//!
//! Never half done: the namespaces keep their names, so the record lists the same set
//! before, during and after, and `down` removes everything whenever the process dies. A
//! failure or a stop signal (SIGINT, SIGTERM, SIGHUP) between nodes reimages the nodes
//! already upgraded back from the old plan, so the cluster is as it was; the record and
//! the saved description change only once every node is upgraded.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cidr::Ipv4Cidr;
use crate::cluster_lock::{self, ClusterLock};
use crate::datapath::OnStop;
use crate::model::{self, ClusterDescription, NetworkPlugin, NetworkPluginMode, PodNetwork};
use crate::netns;
use crate::plan::{self, Plan};
use crate::state::ClusterState;
use crate::topology::{self, layout, NamespaceSpec};

/// A request AKS refuses too, or a description the upgrade cannot plan: bad input.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// What an upgrade did.
#[derive(Debug)]
pub enum Outcome {
    Upgraded {
        from: PodNetwork,
        nodes: usize,
        took: Duration,
    },
    /// The cluster already runs Azure CNI Overlay: nothing to do.
    AlreadyOverlay,
}

/// One step of the upgrade, for progress output.
pub enum Progress<'a> {
    Reimaging {
        node: &'a str,
        index: usize,
        total: usize,
    },
    Reimaged {
        node: &'a str,
        took: Duration,
    },
    RollingBack {
        node: &'a str,
    },
}

/// Upgrades cluster `name` to Azure CNI Overlay. `pod_cidr`: the Overlay pod CIDR; AKS
/// requires it when coming from Node Subnet, and kubenet keeps its own.
pub fn to_overlay(
    name: &str,
    pod_cidr: Option<Ipv4Cidr>,
    mut progress: impl FnMut(Progress),
) -> Result<Outcome> {
    let _lock = change_lock(name)?;
    let state = ClusterState::require(name)?;
    if let Some(pid) = cluster_lock::owner_pid(name) {
        return Err(Refused(format!(
            "cluster {name:?} is owned by a running `aksnet up` (pid {pid}), which holds its datapath; stop it and run `aksnet up --keep`, then update"
        ))
        .into());
    }
    let old_description = ClusterState::load_description(name)?;
    let from = old_description.pod_network();
    let Some(new_description) = overlay_description(&old_description, pod_cidr)? else {
        return Ok(Outcome::AlreadyOverlay);
    };
    let old_plan = plan_of(&old_description).context("planning the cluster as it runs")?;
    let new_plan = plan_of(&new_description)
        .map_err(|e| Refused(format!("the cluster cannot run Azure CNI Overlay: {e:#}")))?;
    let old_layout = layout::layout(&old_plan);
    let new_layout = layout::layout(&new_plan);
    let names = |l: &layout::Layout| -> Vec<String> {
        l.namespaces.iter().map(|n| n.name.clone()).collect()
    };
    if names(&old_layout) != state.namespaces || names(&new_layout) != state.namespaces {
        bail!(
            "cluster {name:?}: its record does not match its saved description; remove it with `aksnet down {name}`"
        );
    }

    let started = Instant::now();
    let total = new_layout.nodes.len();
    for index in 0..total {
        let node = &new_layout.nodes[index].name;
        progress(Progress::Reimaging { node, index, total });
        let node_started = Instant::now();
        let step = crate::stop::check()
            .map_err(anyhow::Error::from)
            .and_then(|()| reimage(&new_plan, &new_layout, index, OnStop::Stop));
        if let Err(err) = step {
            // Back to the old plan, last upgraded node first (this one may be half made).
            for back in (0..=index).rev() {
                progress(Progress::RollingBack {
                    node: &old_layout.nodes[back].name,
                });
                // A rollback runs to its end, stop signal or not.
                if let Err(undo) = reimage(&old_plan, &old_layout, back, OnStop::Finish) {
                    return Err(err.context(format!(
                        "and rolling node {} back failed too ({undo:#}); remove the cluster with `aksnet down {name}`",
                        old_layout.nodes[back].name
                    )));
                }
            }
            return Err(err.context(format!(
                "upgrading cluster {name:?} to Azure CNI Overlay stopped at node {node}; every node is back on {}",
                from.title()
            )));
        }
        progress(Progress::Reimaged {
            node,
            took: node_started.elapsed(),
        });
    }

    let upgraded = ClusterState {
        network_plugin: new_plan.network_plugin,
        nodes: new_layout.nodes.clone(),
        non_masquerade_cidrs: new_plan
            .non_masquerade_cidrs
            .iter()
            .map(ToString::to_string)
            .collect(),
        services: new_plan.services.clone(),
        ..state
    };
    upgraded.save()?;
    ClusterState::save_description(name, &new_description)?;
    Ok(Outcome::Upgraded {
        from,
        nodes: total,
        took: started.elapsed(),
    })
}

/// The change lock of existing cluster `name`, saying on stderr when another command
/// holds it and this one waits; no cluster of that name is [`Refused`].
pub(crate) fn change_lock(name: &str) -> Result<ClusterLock> {
    ClusterLock::existing(name, |holder| {
        crate::errln!(
            "cluster {name}: waiting for another aksnet command{} that is changing it",
            holder.map_or_else(String::new, |pid| format!(" (pid {pid})"))
        )
    })?
    .ok_or_else(|| Refused(format!("there is no cluster {name:?}; see `aksnet up`")).into())
}

/// The description after the upgrade, or `None` when it already is Overlay. Refuses what
/// AKS refuses: Pod Subnet (dynamic allocation) clusters, a Node Subnet cluster without a
/// pod CIDR, a kubenet cluster with another pod CIDR than its own. Every pool keeps its
/// maxPods (the Overlay default of 250 applies to new pools only).
pub fn overlay_description(
    description: &ClusterDescription,
    pod_cidr: Option<Ipv4Cidr>,
) -> Result<Option<ClusterDescription>, Refused> {
    let running = model::validate(description)
        .map_err(|e| Refused(format!("the saved description no longer validates: {e}")))?;
    if running.policy.engine == model::policy::NetworkPolicyEngine::Azure {
        return Err(Refused(
            "networkPolicy: the cluster runs Azure Network Policy Manager, which AKS requires to be removed before the update to Overlay (update-azure-cni.md); recreate the cluster with networkPolicy: calico or cilium (the engine cannot be changed in place)".into(),
        ));
    }
    let pod_cidr = match running.pod_network {
        PodNetwork::AzureOverlay => return Ok(None),
        PodNetwork::AzurePodSubnet => {
            return Err(Refused(
                "networkPluginMode: an Azure CNI Pod Subnet cluster (dynamic IP allocation) cannot be updated to Overlay, AKS refuses it too (update-azure-cni.md); create an Overlay cluster instead".into(),
            ))
        }
        PodNetwork::Kubenet => {
            let own = running.pod_cidr.unwrap_or(model::defaults::POD_CIDR);
            if let Some(other) = pod_cidr.filter(|c| *c != own) {
                return Err(Refused(format!(
                    "--pod-cidr: {other} differs from the kubenet pod CIDR {own}, which the upgrade keeps; leave --pod-cidr out"
                )));
            }
            own
        }
        PodNetwork::AzureNodeSubnet => pod_cidr.ok_or_else(|| {
            Refused(format!(
                "--pod-cidr: required when updating Azure CNI Node Subnet to Overlay, as AKS requires it: pods move out of the VNet into a private range, e.g. --pod-cidr {}",
                model::defaults::POD_CIDR
            ))
        })?,
    };
    let mut upgraded = description.clone();
    // A list that is the old model's default is AKS's reconciled configuration, which the
    // upgrade replaces with Overlay's; a custom one stays (Overlay adds the pod CIDR).
    let old_default = model::defaults::non_masquerade_cidrs(
        running.pod_network,
        running.vnet.address_space,
        running.pod_cidr,
        running.external_hosts.on_prem.cidr,
    );
    if description.non_masquerade_cidrs.as_ref() == Some(&old_default) {
        upgraded.non_masquerade_cidrs = None;
    }
    upgraded.network_plugin = NetworkPlugin::Azure;
    upgraded.network_plugin_mode = Some(NetworkPluginMode::Overlay);
    upgraded.pod_cidr = Some(pod_cidr);
    for (pool, running) in upgraded.node_pools.iter_mut().zip(&running.node_pools) {
        pool.max_pods = Some(running.max_pods);
    }
    Ok(Some(upgraded))
}

fn plan_of(description: &ClusterDescription) -> Result<Plan> {
    let cluster = model::validate(description)?;
    Ok(plan::plan(&cluster)?)
}

/// Removes node `index` and its pods and builds them again as `layout` says, with the
/// VNet's link to the node, then loads the node's datapath.
fn reimage(plan: &Plan, layout: &layout::Layout, index: usize, on_stop: OnStop) -> Result<()> {
    let node = &layout.nodes[index];
    let ours: HashSet<&str> = std::iter::once(node.namespace.as_str())
        .chain(node.pods.iter().map(|p| p.namespace.as_str()))
        .collect();
    let vnet = layout
        .namespaces
        .iter()
        .find(|spec| spec.name == layout.vnet)
        .context("the layout has no vnet namespace")?;
    let vnet_side = vnet_side(vnet, &node.namespace);
    // Pods first, then the node: its uplink veth, and the VNet's routes over it, go too,
    // once the kernel has cleaned the namespace up (asynchronously).
    for namespace in node.pods.iter().map(|p| &p.namespace) {
        netns::delete(namespace)?;
    }
    netns::delete(&node.namespace)?;
    for link in &vnet_side.veths {
        wait_until_gone(&layout.vnet, &link.name)?;
    }
    // The forwarder's routes over the link go before the link does.
    crate::fabric::forwarder::unroute_node(plan, layout, index)
        .with_context(|| format!("unrouting node {} in the fabric's forwarder", node.name))?;
    let pins = ClusterState::pin_dir(&plan.name).join(&node.name);
    if pins.exists() {
        std::fs::remove_dir_all(&pins)
            .with_context(|| format!("removing the pins of node {}", node.name))?;
    }
    let fresh: Vec<NamespaceSpec> = layout
        .namespaces
        .iter()
        .filter(|spec| ours.contains(spec.name.as_str()))
        .cloned()
        .collect();
    topology::rebuild(&fresh, &[vnet_side])
        .with_context(|| format!("rebuilding node {}", node.name))?;
    let one_node = layout::Layout {
        namespaces: fresh,
        nodes: vec![node.clone()],
        vnet: layout.vnet.clone(),
        internet: layout.internet.clone(),
        on_prem: layout.on_prem.clone(),
    };
    crate::datapath::install(plan, &one_node, on_stop)
        .with_context(|| format!("loading the datapath of node {}", node.name))?;
    crate::fabric::forwarder::reattach(&plan.name, &layout.vnet, index)
        .and_then(|()| crate::fabric::forwarder::sync(plan, layout))
        .with_context(|| format!("routing node {} in the fabric's forwarder", node.name))?;
    Ok(())
}

/// Waits until `link` is gone from `namespace`: a deleted namespace's veths go when the
/// kernel's cleanup of it has run, shortly after the last reference went.
fn wait_until_gone(namespace: &str, link: &str) -> Result<()> {
    const LIMIT: Duration = Duration::from_secs(10);
    let started = Instant::now();
    while netns::interface_index(namespace, link).is_ok() {
        if started.elapsed() > LIMIT {
            bail!(
                "{link} in {namespace} still exists {} s after its peer's namespace was deleted",
                LIMIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The part of the vnet namespace's spec that serves `node_namespace`: the veth into it,
/// its address, and the routes and neighbours over it (kubenet's UDR for the node's pod
/// /24 with the old plan; only the node's host route with Overlay). Also serves the
/// firewall's namespace (`egress_update`).
pub(crate) fn vnet_side(vnet: &NamespaceSpec, node_namespace: &str) -> NamespaceSpec {
    let mut side = NamespaceSpec::new(&vnet.name, vnet.forwarding);
    side.veths = vnet
        .veths
        .iter()
        .filter(|v| v.peer_namespace == node_namespace)
        .cloned()
        .collect();
    let links: HashSet<&str> = side.veths.iter().map(|v| v.name.as_str()).collect();
    // What of `items` sits on one of those links (`device` names its link).
    fn on_links<T: Clone>(items: &[T], links: &HashSet<&str>, device: fn(&T) -> &str) -> Vec<T> {
        items
            .iter()
            .filter(|item| links.contains(device(item)))
            .cloned()
            .collect()
    }
    side.interfaces = on_links(&vnet.interfaces, &links, |i| &i.name);
    side.routes = on_links(&vnet.routes, &links, |r| &r.device);
    side.neighbours = on_links(&vnet.neighbours, &links, |n| &n.device);
    side
}

#[cfg(test)]
mod tests {
    use super::*;

    fn description(plugin: &str, extra: &str) -> ClusterDescription {
        model::parse(&format!(
            "name: up\nnetworkPlugin: {plugin}\ndatapath: ebpf\nvnet:\n  addressSpace: 10.224.0.0/12\n  nodeSubnet: 10.224.0.0/24\n{extra}nodePools:\n  - {{ name: nodepool1, count: 2 }}\n"
        ))
        .expect("test description")
    }

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().expect("test CIDR")
    }

    #[test]
    fn kubenet_keeps_its_pod_cidr_and_pools_keep_their_max_pods() {
        let kubenet = description("kubenet", "podCidr: 10.250.0.0/16\n");
        let upgraded = overlay_description(&kubenet, None)
            .expect("kubenet upgrades")
            .expect("a change");
        assert_eq!(upgraded.pod_network(), PodNetwork::AzureOverlay);
        assert_eq!(upgraded.pod_cidr, Some(cidr("10.250.0.0/16")));
        assert_eq!(
            upgraded.node_pools[0].max_pods,
            Some(110),
            "not Overlay's 250"
        );
        let err = overlay_description(&kubenet, Some(cidr("10.244.0.0/16")))
            .expect_err("another pod CIDR");
        assert!(
            err.0.starts_with("--pod-cidr: 10.244.0.0/16 differs"),
            "{err}"
        );
        // The same pod CIDR spelled out is fine.
        assert!(overlay_description(&kubenet, Some(cidr("10.250.0.0/16"))).is_ok());
    }

    #[test]
    fn azure_npm_blocks_the_update() {
        let npm = description("azure", "networkPolicy: azure\n");
        // `description` fixes datapath: ebpf; NPM needs iptables.
        let npm = ClusterDescription {
            datapath: model::Datapath::Iptables,
            ..npm
        };
        let err = overlay_description(&npm, Some(cidr("10.244.0.0/16"))).expect_err("NPM");
        assert!(err.0.starts_with("networkPolicy:"), "{err}");
    }

    #[test]
    fn node_subnet_needs_a_pod_cidr_pod_subnet_is_refused_overlay_is_a_no_op() {
        let node_subnet = description("azure", "");
        let err = overlay_description(&node_subnet, None).expect_err("no pod CIDR");
        assert!(err.0.starts_with("--pod-cidr: required"), "{err}");
        let upgraded = overlay_description(&node_subnet, Some(cidr("10.244.0.0/16")))
            .expect("with a pod CIDR")
            .expect("a change");
        assert_eq!(upgraded.node_pools[0].max_pods, Some(30));
        // A spelled-out default list is replaced by Overlay's; a custom one is kept.
        let mut spelled = node_subnet.clone();
        spelled.non_masquerade_cidrs = Some(vec![cidr("10.224.0.0/12")]);
        let upgraded = overlay_description(&spelled, Some(cidr("10.244.0.0/16")))
            .expect("with a pod CIDR")
            .expect("a change");
        assert_eq!(upgraded.non_masquerade_cidrs, None);
        let mut custom = node_subnet.clone();
        custom.non_masquerade_cidrs = Some(vec![cidr("10.224.0.0/12"), cidr("192.168.100.0/24")]);
        let upgraded = overlay_description(&custom, Some(cidr("10.244.0.0/16")))
            .expect("with a pod CIDR")
            .expect("a change");
        assert_eq!(upgraded.non_masquerade_cidrs, custom.non_masquerade_cidrs);
        assert_eq!(
            model::validate(&upgraded)
                .expect("valid")
                .non_masquerade_cidrs,
            [
                cidr("10.244.0.0/16"),
                cidr("10.224.0.0/12"),
                cidr("192.168.100.0/24")
            ],
            "Overlay always keeps the pod CIDR"
        );
        // The result must still validate: a pod CIDR inside the VNet does not.
        let inside = overlay_description(&node_subnet, Some(cidr("10.225.0.0/16")))
            .expect("refused later, by validation")
            .expect("a change");
        assert!(model::validate(&inside).is_err());

        let mut pod_subnet = description("azure", "");
        pod_subnet.vnet.pod_subnet = Some(cidr("10.225.0.0/16"));
        let err = overlay_description(&pod_subnet, None).expect_err("Pod Subnet");
        assert!(err.0.contains("Pod Subnet"), "{err}");

        let overlay = description("azure", "networkPluginMode: overlay\n");
        assert!(overlay_description(&overlay, None)
            .expect("no refusal")
            .is_none());
    }
}
