//! The record of a running cluster, `/run/aksnet/<cluster>/state.json`: written by `up`
//! before anything is created, read by `check`, `down` and `inspect` from other
//! processes, removed last by `down`. Because it lists every namespace before the first
//! one exists, a cluster whose `up` was killed at any point can still be removed.

use std::fs;
use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::model::{Datapath, NetworkPlugin};
use crate::plan::ServicePlan;
use crate::topology::layout::{HostLayout, NodeLayout};

/// Where cluster records live (tmpfs: gone after a reboot, like the namespaces).
pub const STATE_ROOT: &str = "/run/aksnet";

/// Where a cluster's BPF objects are pinned.
pub const PIN_ROOT: &str = "/sys/fs/bpf/aksnet";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterState {
    pub name: String,
    pub network_plugin: NetworkPlugin,
    pub datapath: Datapath,
    /// The `aksnet up` process that owns the cluster (it may be gone).
    pub pid: u32,
    /// Every namespace of the cluster, in build order.
    pub namespaces: Vec<String>,
    pub vnet: String,
    pub nodes: Vec<NodeLayout>,
    pub internet: HostLayout,
    pub on_prem: HostLayout,
    pub non_masquerade_cidrs: Vec<String>,
    /// Conntrack settings of the eBPF datapath (timeouts for `inspect conntrack`).
    #[serde(default)]
    pub conntrack: Option<crate::model::conntrack::ConntrackSettings>,
    /// The ClusterIP services and their backends (`check --services` probes them).
    /// Absent in records written before services were recorded.
    #[serde(default)]
    pub services: Vec<ServicePlan>,
}

impl ClusterState {
    pub fn dir(cluster: &str) -> PathBuf {
        PathBuf::from(STATE_ROOT).join(cluster)
    }

    fn file(cluster: &str) -> PathBuf {
        Self::dir(cluster).join("state.json")
    }

    /// The directory the cluster's BPF maps and links are pinned under.
    pub fn pin_dir(cluster: &str) -> PathBuf {
        PathBuf::from(PIN_ROOT).join(cluster)
    }

    /// Writes the record atomically (temporary file, then rename).
    pub fn save(&self) -> Result<()> {
        let dir = Self::dir(&self.name);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join("state.json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, Self::file(&self.name))
            .with_context(|| format!("saving the state of {}", self.name))
    }

    /// The record of `cluster`, or `None` if there is no such cluster.
    pub fn load(cluster: &str) -> Result<Option<Self>> {
        let file = Self::file(cluster);
        match fs::read(&file) {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("reading {}", file.display()))?,
            )),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
        }
    }

    /// The record of `cluster`, or an error that lists the clusters there are.
    pub fn require(cluster: &str) -> Result<Self> {
        match Self::load(cluster)? {
            Some(state) => Ok(state),
            None => {
                let known = Self::list()?;
                let known = if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                };
                anyhow::bail!("no cluster named {cluster:?} (clusters running: {known}); start one with `aksnet up`")
            }
        }
    }

    /// Removes the record (the last step of `down`).
    pub fn remove(cluster: &str) -> Result<()> {
        match fs::remove_dir_all(Self::dir(cluster)) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", Self::dir(cluster).display()))
            }
            _ => Ok(()),
        }
    }

    /// Names of every cluster with a record.
    pub fn list() -> Result<Vec<String>> {
        let entries = match fs::read_dir(STATE_ROOT) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).context(format!("reading {STATE_ROOT}")),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Whether the `up` process recorded here is still alive.
    pub fn owner_alive(&self) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        self.pid != 0 && unsafe { libc::kill(self.pid as i32, 0) } == 0
    }

    /// The address the node named `node` has, for reading what a peer saw.
    pub fn node_address(&self, node: &str) -> Option<Ipv4Addr> {
        self.nodes
            .iter()
            .find(|n| n.name == node)
            .map(|n| n.address)
    }
}

impl ClusterState {
    fn description_file(cluster: &str) -> PathBuf {
        Self::dir(cluster).join("description.yaml")
    }

    /// Keeps the description the cluster was made from, so `aksnet services` can change
    /// it and plan it again.
    pub fn save_description(
        cluster: &str,
        description: &crate::model::ClusterDescription,
    ) -> Result<()> {
        let file = Self::description_file(cluster);
        fs::write(&file, crate::model::to_yaml(description))
            .with_context(|| format!("writing {}", file.display()))
    }

    /// The description saved by `save_description`.
    pub fn load_description(cluster: &str) -> Result<crate::model::ClusterDescription> {
        let file = Self::description_file(cluster);
        let yaml = fs::read_to_string(&file).with_context(|| {
            format!(
                "reading {} (was cluster {cluster} made by `aksnet up`?)",
                file.display()
            )
        })?;
        crate::model::parse(&yaml).with_context(|| format!("parsing {}", file.display()))
    }
}
