//! A cluster's life on this machine: create it from a plan (record, namespaces, fabric,
//! datapath; all or nothing) and remove it again (idempotent, also after a killed `up`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::datapath::{self, Datapath};
use crate::plan::Plan;
use crate::state::ClusterState;
use crate::topology::{self, layout};
use crate::{iptables, netns};

/// A cluster this process created. The datapath value keeps what is not pinned alive.
pub struct RunningCluster {
    pub state: ClusterState,
    pub datapath: Box<dyn Datapath>,
    pub build_time: Duration,
}

/// What Azure's fabric refuses, as `filter` rules in the vnet namespace:
/// - no inbound path from the internet to private addresses without a public IP or a
///   load balancer: connections the internet host starts are dropped, replies pass;
/// - kubenet's route table is associated with the node subnet only, so on-prem (over
///   ExpressRoute) has no route to pod addresses: its traffic to the pod CIDR is dropped.
///
/// Only the first needs connection state, and only for traffic that crosses the internet
/// link. Everything else (pod and node traffic inside the VNet, on-prem) is exempted
/// from conntrack in the `raw` table: Azure's fabric is offloaded hardware that costs a
/// node nothing, and a conntrack lookup and entry per forwarded packet here cost the host
/// more than a node's whole datapath did (see the README's benchmark section).
fn fabric_rules(plan: &Plan) -> String {
    let (internet_link, _) = layout::link_for(plan.external_hosts.internet);
    let mut rules = format!(
        "*raw\n\
         -A PREROUTING -i internet -m comment --comment \"aksnet: the internet link keeps conntrack (no inbound without a public IP)\" -j RETURN\n\
         -A PREROUTING -d {internet_link} -m comment --comment \"aksnet: so does traffic toward it\" -j RETURN\n\
         -A PREROUTING -m comment --comment \"aksnet: the rest of the VNet fabric is stateless, as Azure's\" -j NOTRACK\n\
         COMMIT\n*filter\n"
    );
    rules.push_str("-A FORWARD -i internet -m conntrack --ctstate NEW -m comment --comment \"aksnet: no inbound from the internet without a public IP\" -j DROP\n");
    if let Some(pod_cidr) = plan.pod_cidr {
        rules.push_str(&format!(
            "-A FORWARD -i onprem -d {pod_cidr} -m comment --comment \"aksnet: kubenet pod addresses are not routable from on-prem\" -j DROP\n"
        ));
    }
    rules.push_str("COMMIT\n");
    rules
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
pub fn create(plan: &Plan) -> Result<RunningCluster> {
    if let Some(existing) = ClusterState::load(&plan.name)? {
        if existing.network_plugin != plan.network_plugin {
            bail!(
                "networkPlugin: cluster {:?} already runs {} and the network plugin of an existing cluster cannot be changed in place (AKS refuses it too); remove it with `aksnet down {}` and create it again with {}",
                plan.name, existing.network_plugin, plan.name, plan.network_plugin
            );
        }
        let owner = if existing.owner_alive() {
            format!("its `aksnet up` (pid {}) is running", existing.pid)
        } else {
            format!(
                "it was left by `aksnet up` pid {} which is gone",
                existing.pid
            )
        };
        bail!(
            "cluster {:?} already exists ({owner}); use it (`aksnet check {}`) or remove it with `aksnet down {}`",
            plan.name, plan.name, plan.name
        );
    }
    let prefix = layout::prefix(&plan.name);
    let strays = netns::list_with_prefix(&prefix)?;
    if !strays.is_empty() {
        bail!(
            "namespaces named {prefix}* exist but no cluster {:?} is recorded: {}; remove them with `ip netns del` (they were not made by a recorded aksnet cluster)",
            plan.name,
            strays.join(", ")
        );
    }

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
        conntrack: Some(plan.conntrack.clone()),
    };
    // Recorded before anything exists, so `down` can always find what to remove.
    state.save()?;
    let built = (|| -> Result<Box<dyn Datapath>> {
        topology::build(&layout.namespaces)?;
        iptables::restore(&layout.vnet, &fabric_rules(plan))
            .context("programming the VNet fabric")?;
        datapath::install(plan, &layout)
    })();
    match built {
        Ok(datapath) => Ok(RunningCluster {
            state,
            datapath,
            build_time: started.elapsed(),
        }),
        Err(err) => {
            if let Err(cleanup) = remove_recorded(&state) {
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

/// What `remove` found and removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removal {
    pub namespaces: usize,
    pub pins_removed: bool,
    pub existed: bool,
    /// The cluster's running `up` removed it when asked to stop (SIGTERM).
    pub removed_by_owner: Option<u32>,
}

/// Removes cluster `name` completely: namespaces (and every interface in them), pinned
/// BPF objects, the record. Idempotent: a cluster that is not there is not an error.
/// If the `up` that owns it is still running, it is asked to stop (SIGTERM) first.
pub fn remove(name: &str) -> Result<Removal> {
    let Some(state) = ClusterState::load(name)? else {
        return Ok(Removal::default());
    };
    if state.owner_alive() && state.pid != std::process::id() {
        // SAFETY: sending SIGTERM to the recorded owner of this cluster.
        unsafe { libc::kill(state.pid as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while state.owner_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if ClusterState::load(name)?.is_none() {
            return Ok(Removal {
                existed: true,
                removed_by_owner: Some(state.pid),
                ..Removal::default()
            });
        }
    }
    remove_recorded(&state)
}

fn remove_recorded(state: &ClusterState) -> Result<Removal> {
    let namespaces = topology::teardown(&state.namespaces)?;
    let pin_dir = ClusterState::pin_dir(&state.name);
    let pins_removed = match std::fs::remove_dir_all(&pin_dir) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            return Err(e)
                .with_context(|| format!("removing pinned BPF objects in {}", pin_dir.display()))
        }
    };
    ClusterState::remove(&state.name)?;
    Ok(Removal {
        namespaces,
        pins_removed,
        existed: true,
        removed_by_owner: None,
    })
}
