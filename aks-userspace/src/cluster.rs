//! A cluster's life on this machine: create it from a plan (record, namespaces, fabric,
//! datapath; all or nothing) and remove it again (idempotent, also after a killed `up`).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::cluster_lock::{self, ClusterLock};
use crate::datapath::iptables;
use crate::datapath::{self, Datapath};
use crate::fabric;
use crate::netns;
use crate::plan::Plan;
use crate::state::{ClusterState, Record};
use crate::topology::{self, layout};

/// A cluster this process created. The datapath value keeps what is not pinned alive.
pub struct RunningCluster {
    pub state: ClusterState,
    pub datapath: Box<dyn Datapath>,
    pub build_time: Duration,
    /// The owner lock, held for as long as this value lives (see `cluster_lock`).
    _owner: ClusterLock,
}

/// What Azure's fabric refuses, as `filter` rules in the vnet namespace:
/// - no inbound path from the internet to private addresses without a public IP or a
///   load balancer: connections the internet host starts are dropped, replies pass;
/// - a private pod CIDR (kubenet, Azure CNI Overlay) is known to no route outside the
///   cluster: kubenet's route table is associated with the node subnet only, and the
///   Overlay's pod ranges are never in the VNet's routes, so on-prem (over ExpressRoute)
///   has no route to pod addresses: its traffic to the pod CIDR is dropped.
/// - the node subnet's NSG rules (see `fabric::nsg`), stateful, after the above;
/// - egress per `outboundType` (`fabric::egress`): the load balancer's outbound rule
///   (per-node SNAT ports), a NAT gateway's SNAT, or none;
/// - the cluster's load balancer (`fabric::loadbalancer`), whose admitted flows come
///   first: a public frontend is the inbound path the first rule speaks of.
///
/// Only these need connection state: traffic that crosses the internet link, and the
/// flows NSG rules and load-balanced frontends apply to (each module says which).
/// Everything else (pod and node traffic inside the VNet, on-prem) is exempted from
/// conntrack in the `raw` table: Azure's fabric is offloaded hardware that costs a node
/// nothing, and a conntrack lookup and entry per forwarded packet here cost the host
/// more than a node's whole datapath did (see the README's benchmark section).
pub(crate) fn fabric_rules(plan: &Plan, probes: Option<&crate::probes::ProbeRecord>) -> String {
    let backends = fabric::egress::backend_nodes(plan);
    let (internet_link, _) = layout::link_for(plan.external_hosts.internet);
    let balancing = fabric::loadbalancer::rules(plan, probes);
    let tracked = fabric::nsg::raw_rules(&plan.nsg) + &fabric::loadbalancer::raw_rules(&balancing);
    let mut rules = format!(
        "*raw\n\
         -A PREROUTING -i internet -m comment --comment \"aksnet: the internet link keeps conntrack (no inbound without a public IP)\" -j RETURN\n\
         -A PREROUTING -d {internet_link} -m comment --comment \"aksnet: so does traffic toward it\" -j RETURN\n\
         {tracked}\
         -A PREROUTING -m comment --comment \"aksnet: the rest of the VNet fabric is stateless, as Azure's\" -j NOTRACK\n\
         COMMIT\n"
    );
    let nat = fabric::loadbalancer::nat_rules(&balancing)
        + &fabric::egress::nat_rules(&plan.outbound, &backends);
    // Always named, even empty: a reprogrammed fabric (see `reprogram_fabric`) must
    // lose the DNAT of a load balancer that was removed, or the SNAT of an egress.
    rules.push_str(&format!("*nat\n{nat}COMMIT\n"));
    rules.push_str("*filter\n");
    rules.push_str(&fabric::nsg::filter_chains(&plan.nsg));
    rules.push_str(&fabric::loadbalancer::filter_chains(&balancing));
    rules.push_str(&fabric::egress::filter_chains(&plan.outbound, &backends));
    let nsg_chain = (!plan.nsg.is_empty()).then_some(fabric::nsg::CHAIN);
    rules.push_str(&fabric::loadbalancer::filter_rules(&balancing, nsg_chain));
    rules.push_str(&fabric::firewall::admit_rules(plan));
    rules.push_str("-A FORWARD -i internet -m conntrack --ctstate NEW -m comment --comment \"aksnet: no inbound from the internet without a public IP\" -j DROP\n");
    if let Some(pod_cidr) = plan.pod_cidr {
        rules.push_str(&format!(
            "-A FORWARD -i onprem -d {pod_cidr} -m comment --comment \"aksnet: private pod addresses (kubenet, Overlay) are not routable from on-prem\" -j DROP\n"
        ));
    }
    rules.push_str(&fabric::nsg::filter_rules(&plan.nsg));
    rules.push_str(&fabric::egress::filter_rules(&plan.outbound, &backends));
    rules.push_str("COMMIT\n");
    rules
}

/// Replaces the fabric's rules of a running cluster with those `plan` gives (the load
/// balancer's frontends after `aksnet services` changed a service, or the nodes in
/// rotation after the probe agent saw one change), atomically, table by table. The
/// load balancer keeps the nodes the probe record has in or out of rotation. Flows
/// already admitted keep their translation (the fabric's conntrack).
pub fn reprogram_fabric(plan: &Plan, vnet_namespace: &str) -> Result<()> {
    let probes = crate::probes::ProbeRecord::load(&plan.name)?;
    iptables::replace(vnet_namespace, &fabric_rules(plan, probes.as_ref()))
        .context("reprogramming the VNet fabric (the load balancer's frontends)")
}

/// The fabric as it was before it went stateless (every forwarded packet tracked): what
/// `aksnet bench --fabric stateful` measures the stateless one against. Applied to a
/// running cluster's vnet namespace, it empties the `raw` table the fabric filled.
pub fn make_fabric_stateful(vnet_namespace: &str) -> Result<()> {
    iptables::replace(vnet_namespace, "*raw\nCOMMIT\n")
        .context("removing the fabric's conntrack exemptions")
}

/// Creates the cluster of `plan`. Refuses if a cluster of that name exists: with another
/// network plugin it says so the way AKS does (the plugin cannot be changed in place).
/// A stale record (see [`ClusterState::is_stale`]) is removed first. Holds the cluster's
/// change lock while it builds, so a concurrent `up` of the name fails at once instead of
/// building into (or rolling back) this one; a stop signal between steps rolls back what
/// this call made and fails with [`crate::stop::Stopped`].
pub fn create(plan: &Plan) -> Result<RunningCluster> {
    create_described(plan, None)
}

/// As [`create`], also keeping `description` beside the record (what `aksnet services`
/// changes and plans again), written under the same lock as the record.
pub fn create_described(
    plan: &Plan,
    description: Option<&crate::model::ClusterDescription>,
) -> Result<RunningCluster> {
    crate::model::check_cluster_name(&plan.name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let change = ClusterLock::create(&plan.name)?;
    match ClusterState::read(&plan.name) {
        Record::Missing => {
            if let Err(err) = create_checks(plan) {
                // Only the lock file was made: leave no empty record behind.
                let _ = ClusterState::remove(&plan.name);
                return Err(err);
            }
        }
        Record::Untrusted(why) => bail!(
            "cluster {:?} has a record that cannot be used ({why}); remove what is left of it with `aksnet down {}`",
            plan.name,
            plan.name
        ),
        Record::Valid(existing) if existing.is_stale() => {
            crate::errln!(
                "cluster {}: removing a stale record (its `aksnet up` pid {} is gone and none of its {} namespaces exists, as after a reboot where /run is kept)",
                plan.name,
                existing.pid,
                existing.namespaces.len()
            );
            crate::probes::stop(&plan.name)?;
            remove_recorded(&existing)?;
            // The record directory went, with the lock in it: start again.
            drop(change);
            return create_described(plan, description);
        }
        Record::Valid(existing) => {
            if existing.network_plugin != plan.network_plugin {
                bail!(
                    "networkPlugin: cluster {:?} already runs {} and the network plugin of an existing cluster cannot be changed in place (AKS refuses it too); remove it with `aksnet down {}` and create it again with {}",
                    plan.name, existing.network_plugin, plan.name, plan.network_plugin
                );
            }
            if existing.network_policy != plan.policy.engine {
                bail!(
                    "networkPolicy: cluster {:?} already runs network policy engine {} and AKS chooses the engine at creation (it cannot be changed in place); remove it with `aksnet down {}` and create it again with networkPolicy: {}",
                    plan.name, existing.network_policy, plan.name, plan.policy.engine
                );
            }
            let owner = match cluster_lock::owner_pid(&plan.name) {
                Some(pid) => format!("its `aksnet up` (pid {pid}) is running"),
                None => format!(
                    "it was left by `aksnet up` pid {} which is gone",
                    existing.pid
                ),
            };
            bail!(
                "cluster {:?} already exists ({owner}); use it (`aksnet check {}`) or remove it with `aksnet down {}`",
                plan.name, plan.name, plan.name
            );
        }
    }
    let owner = ClusterLock::owner(&plan.name)?;

    let started = Instant::now();
    let layout = layout::layout(plan);
    let state = ClusterState {
        name: plan.name.clone(),
        network_plugin: plan.network_plugin,
        datapath: plan.datapath,
        pid: std::process::id(),
        namespaces: layout.namespaces.iter().map(|n| n.name.clone()).collect(),
        vnet: layout.vnet.clone(),
        nodes: layout.nodes.clone(),
        internet: layout.internet.clone(),
        on_prem: layout.on_prem.clone(),
        non_masquerade_cidrs: plan
            .non_masquerade_cidrs
            .iter()
            .map(|c| c.to_string())
            .collect(),
        services: plan.services.clone(),
        exposures: plan.exposures.clone(),
        outbound: plan.outbound.clone(),
        conntrack: Some(plan.conntrack.clone()),
        network_policy: plan.policy.engine,
    };
    // Recorded before anything exists, so `down` can always find what to remove.
    state.save()?;
    if let Some(description) = description {
        if let Err(err) = ClusterState::save_description(&plan.name, description) {
            drop(owner);
            let _ = remove_recorded(&state);
            return Err(err);
        }
    }
    let built = (|| -> Result<Box<dyn Datapath>> {
        topology::build(&layout.namespaces)?;
        crate::stop::check()?;
        iptables::restore(&layout.vnet, &fabric_rules(plan, None))
            .context("programming the VNet fabric")?;
        fabric::egress::apply_idle_timeout(&layout.vnet, &plan.outbound)?;
        fabric::firewall::install(plan, &layout.vnet)?;
        crate::errln!(
            "loading the {} datapath: {} nodes, {} services",
            plan.datapath,
            layout.nodes.len(),
            plan.services.len()
        );
        fabric::forwarder::install(plan, &layout).context("loading the VNet fabric's forwarder")?;
        let datapath = datapath::install(plan, &layout, datapath::OnStop::Stop)?;
        crate::stop::check()?;
        Ok(datapath)
    })();
    match built {
        Ok(datapath) => Ok(RunningCluster {
            state,
            datapath,
            build_time: started.elapsed(),
            _owner: owner,
        }),
        Err(err) => {
            // Everything under this prefix is this call's: the lock is held, and there
            // was neither a record nor a namespace of the name before.
            drop(owner);
            let removed = remove_recorded(&state);
            drop(change);
            if let Err(cleanup) = removed {
                return Err(err.context(format!(
                    "and removing the half-made cluster failed too: {cleanup:#}"
                )));
            }
            Err(err.context(format!(
                "creating cluster {:?} failed; nothing was left behind",
                plan.name
            )))
        }
    }
}

/// What must hold before anything of a new cluster is made.
fn create_checks(plan: &Plan) -> Result<()> {
    let prefix = layout::prefix(&plan.name);
    let strays = netns::list_with_prefix(&prefix)?;
    if !strays.is_empty() {
        bail!(
            "namespaces named {prefix}* exist but no cluster {:?} is recorded: {}; remove them with `ip netns del` (they were not made by a recorded aksnet cluster)",
            plan.name,
            strays.join(", ")
        );
    }
    // Every cluster pins: the fabric's forwarder (`fabric::forwarder`), and the eBPF
    // datapath's maps and links.
    crate::state::prepare_pin_root(Path::new(crate::state::PIN_ROOT))?;
    Ok(())
}

/// What `remove` found and removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removal {
    pub namespaces: usize,
    pub pins_removed: bool,
    pub existed: bool,
    /// The cluster's running `up` removed it when asked to stop (SIGTERM).
    pub removed_by_owner: Option<u32>,
    /// Why the record was not trusted, when what carries the prefix was removed instead.
    pub untrusted_record: Option<String>,
    /// The cluster's probe agent, stopped first (SIGTERM).
    pub probe_agent: Option<u32>,
}

/// How long `down` waits for a running `up` it asked to stop.
const OWNER_STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Removes cluster `name` completely: namespaces (and every interface in them), pinned
/// BPF objects, the record. Idempotent: a cluster that is not there is not an error.
/// If an `aksnet up` owns it (holds its owner lock), that process is asked to stop
/// (SIGTERM) and removes it itself.
pub fn remove(name: &str) -> Result<Removal> {
    remove_waiting(name, |_| {})
}

/// As [`remove`]; `waiting` is called (with the holder's PID when known) when another
/// command holds the cluster's change lock and this call waits for it.
pub fn remove_waiting(name: &str, mut waiting: impl FnMut(Option<u32>)) -> Result<Removal> {
    crate::model::check_cluster_name(name)
        .map_err(|e| anyhow::anyhow!("refusing to remove {name:?}: {e}"))?;
    let mut signalled = None;
    loop {
        if let Some(pid) = cluster_lock::owner_pid(name).filter(|&p| p != std::process::id()) {
            if signalled.is_none() {
                nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGTERM).with_context(
                    || format!("asking the `aksnet up` of {name} (pid {pid}) to stop"),
                )?;
                signalled = Some(pid);
            }
            let deadline = Instant::now() + OWNER_STOP_TIMEOUT;
            while cluster_lock::owner_alive(name) {
                if Instant::now() > deadline {
                    bail!(
                        "the `aksnet up` of cluster {name} (pid {pid}) did not stop within {} s of SIGTERM; stop it, then run `aksnet down {name}` again",
                        OWNER_STOP_TIMEOUT.as_secs()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let Some(_change) = ClusterLock::existing(name, &mut waiting)? else {
            return Ok(Removal {
                existed: signalled.is_some(),
                removed_by_owner: signalled,
                ..Removal::default()
            });
        };
        if cluster_lock::owner_pid(name).is_some_and(|p| p != std::process::id()) {
            // An `up` took the name between the check above and the lock: ask it too.
            continue;
        }
        // The probe agent has sockets in the node namespaces (which would keep them
        // alive past `ip netns del`) and writes the fabric: it goes first. It never waits
        // for the change lock held here.
        let probe_agent = crate::probes::stop(name)?;
        let removal = match ClusterState::read(name) {
            Record::Valid(state) => remove_recorded(&state),
            Record::Missing => remove_by_prefix(name, "it has no state.json".to_owned()),
            Record::Untrusted(why) => remove_by_prefix(name, why),
        };
        return removal.map(|r| Removal { probe_agent, ..r });
    }
}

/// Removes what the (checked) record lists, the pins and the record.
fn remove_recorded(state: &ClusterState) -> Result<Removal> {
    let namespaces = topology::teardown(&state.namespaces)?;
    let pins_removed = remove_pins(&state.name)?;
    ClusterState::remove(&state.name)?;
    Ok(Removal {
        namespaces,
        pins_removed,
        existed: true,
        ..Removal::default()
    })
}

/// Without a record to trust, removes every namespace named `aks-<name>-…` (except those
/// of another recorded cluster whose longer name shares the prefix, `a` and `a-b`), the
/// pins and the record directory: only what carries the cluster's own name.
fn remove_by_prefix(name: &str, why: String) -> Result<Removal> {
    let prefix = layout::prefix(name);
    let longer: Vec<String> = ClusterState::list()?
        .iter()
        .filter(|other| other.as_str() != name)
        .map(|other| layout::prefix(other))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    let owned: Vec<String> = netns::list_with_prefix(&prefix)?
        .into_iter()
        .filter(|ns| crate::state::is_namespace_of(ns, &prefix))
        .filter(|ns| !longer.iter().any(|p| ns.starts_with(p)))
        .collect();
    let namespaces = topology::teardown(&owned)?;
    let pins_removed = remove_pins(name)?;
    ClusterState::remove(name)?;
    Ok(Removal {
        namespaces,
        pins_removed,
        existed: true,
        untrusted_record: Some(why),
        ..Removal::default()
    })
}

fn remove_pins(name: &str) -> Result<bool> {
    let pin_dir = ClusterState::pin_dir(name);
    if !pin_dir.exists() {
        return Ok(false);
    }
    crate::state::check_pin_root(Path::new(crate::state::PIN_ROOT))
        .context("leaving the pinned BPF objects in place")?;
    match std::fs::remove_dir_all(&pin_dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => {
            Err(e).with_context(|| format!("removing pinned BPF objects in {}", pin_dir.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::plan_of;

    #[test]
    fn on_prem_is_refused_the_private_pod_cidr_of_kubenet_and_overlay_only() {
        let node_subnet = crate::model::DEFAULT_DESCRIPTION;
        let rule = |yaml: &str| {
            fabric_rules(&plan_of(yaml), None)
                .lines()
                .find(|l| l.starts_with("-A FORWARD -i onprem"))
                .map(str::to_owned)
        };
        assert_eq!(rule(node_subnet), None, "Azure CNI pods are VNet addresses");
        let overlay =
            format!("{node_subnet}\nnetworkPluginMode: overlay\npodCidr: 10.244.0.0/16\n");
        let refused = rule(&overlay).expect("Overlay pods are unroutable from on-prem");
        assert!(
            refused.contains("-d 10.244.0.0/16") && refused.contains("Overlay"),
            "{refused}"
        );
    }
}
