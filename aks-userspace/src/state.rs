//! The record of a running cluster, `/run/aksnet/<cluster>/state.json`: written by `up`
//! before anything is created, read by `check`, `down` and `inspect` from other
//! processes, removed last by `down`. Because it lists every namespace before the first
//! one exists, a cluster whose `up` was killed at any point can still be removed.

use std::fs;
use std::io::{ErrorKind, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::model::{Datapath, NetworkPlugin};
use crate::plan::ServicePlan;
use crate::topology::layout::{HostLayout, NodeLayout};

/// Where cluster records live (a tmpfs on most systems, gone after a reboot like the
/// namespaces; where it is not, `ClusterState::is_stale` recognises what is left).
pub const STATE_ROOT: &str = "/run/aksnet";

/// Where a cluster's BPF objects are pinned.
pub const PIN_ROOT: &str = "/sys/fs/bpf/aksnet";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterState {
    pub name: String,
    pub network_plugin: NetworkPlugin,
    pub datapath: Datapath,
    /// The `aksnet up` process that made the cluster (it may be gone, and the PID reused:
    /// `cluster_lock::owner_pid` says who really owns it).
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
    /// NodePort and LoadBalancer services: node ports, frontends, policies.
    #[serde(default)]
    pub exposures: Vec<crate::model::loadbalancer::Exposure>,
    /// Egress to the internet (`outboundType`); `loadBalancer` in older records.
    #[serde(default)]
    pub outbound: crate::model::outbound::Outbound,
    /// The network policy engine, fixed at creation as in AKS. Absent in records written
    /// before policies: none.
    #[serde(default)]
    pub network_policy: crate::model::policy::NetworkPolicyEngine,
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

    /// Writes the record atomically (a temporary file of this process, then rename).
    pub fn save(&self) -> Result<()> {
        let dir = Self::dir(&self.name);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write_atomically(&Self::file(&self.name), &serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("saving the state of {}", self.name))
    }

    /// The record of `cluster`, or `None` if there is no such cluster. A record that
    /// cannot be read, or that does not describe the cluster of its directory, is an
    /// error that says `down` still removes it.
    pub fn load(cluster: &str) -> Result<Option<Self>> {
        match Self::read(cluster) {
            Record::Missing => Ok(None),
            Record::Valid(state) => Ok(Some(*state)),
            Record::Untrusted(why) => bail!(
                "the record of cluster {cluster:?} cannot be used: {why}; `aksnet down {cluster}` removes what carries the cluster's prefix"
            ),
        }
    }

    /// The record of `cluster`, checked: its name is its directory's, and it lists only
    /// namespaces that carry the cluster's prefix. `down` trusts nothing else.
    pub fn read(cluster: &str) -> Record {
        if let Err(err) = crate::model::check_cluster_name(cluster) {
            return Record::Untrusted(format!("{cluster:?} is not a cluster name ({err})"));
        }
        let file = Self::file(cluster);
        let bytes = match fs::read(&file) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Record::Missing,
            Err(e) => return Record::Untrusted(format!("reading {}: {e}", file.display())),
        };
        let state: Self = match serde_json::from_slice(&bytes) {
            Ok(state) => state,
            Err(e) => {
                return Record::Untrusted(format!(
                    "{} is damaged or truncated ({e})",
                    file.display()
                ))
            }
        };
        if state.name != cluster {
            return Record::Untrusted(format!(
                "{} names cluster {:?}, not {cluster:?}",
                file.display(),
                state.name
            ));
        }
        let prefix = crate::topology::layout::prefix(cluster);
        if let Some(foreign) = state
            .namespaces
            .iter()
            .find(|ns| !is_namespace_of(ns, &prefix))
        {
            return Record::Untrusted(format!(
                "{} lists namespace {foreign:?}, which is not named {prefix}…",
                file.display()
            ));
        }
        Record::Valid(Box::new(state))
    }

    /// The error for a node name this cluster does not have, listing the ones it has.
    pub fn no_such_node(&self, name: &str) -> anyhow::Error {
        let known: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        anyhow::anyhow!(
            "cluster {} has no node {name:?}; its nodes are: {} (pass one with --node)",
            self.name,
            crate::table::listing(&known)
        )
    }

    /// The record of `cluster`, or an error that lists the clusters there are.
    pub fn require(cluster: &str) -> Result<Self> {
        match Self::load(cluster)? {
            Some(state) => Ok(state),
            None => {
                let known = crate::table::listing(&Self::list()?);
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

    /// Names of every cluster with a record (directories named as clusters are).
    pub fn list() -> Result<Vec<String>> {
        let entries = match fs::read_dir(STATE_ROOT) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).context(format!("reading {STATE_ROOT}")),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| crate::model::check_cluster_name(name).is_ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Whether the `aksnet up` that made the cluster still runs (it holds the owner lock,
    /// so a PID reused by another process does not count).
    pub fn owner_alive(&self) -> bool {
        crate::cluster_lock::owner_alive(&self.name)
    }

    /// A record left from before a reboot (where `/run` is not a tmpfs): its `up` is
    /// gone and none of its namespaces exists any more.
    pub fn is_stale(&self) -> bool {
        !self.owner_alive() && !self.namespaces.iter().any(|ns| crate::netns::is_live(ns))
    }

    /// The address the node named `node` has, for reading what a peer saw.
    pub fn node_address(&self, node: &str) -> Option<Ipv4Addr> {
        self.nodes
            .iter()
            .find(|n| n.name == node)
            .map(|n| n.address)
    }
}

/// What is in a cluster's record directory.
#[derive(Debug)]
pub enum Record {
    Missing,
    Valid(Box<ClusterState>),
    /// Unreadable, truncated or tampered with: only the cluster's name is to be trusted.
    Untrusted(String),
}

/// Whether `namespace` is one `up` makes for the cluster of `prefix`: that prefix, then a
/// plain name (no path).
pub fn is_namespace_of(namespace: &str, prefix: &str) -> bool {
    namespace.strip_prefix(prefix).is_some_and(|rest| {
        !rest.is_empty() && rest != "." && rest != ".." && !rest.contains(['/', '\0'])
    })
}

/// Writes `bytes` to `path` so that readers see the old or the new content, never a
/// part: a temporary file unique to this process and call, then a rename over `path`.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("record");
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .with_context(|| format!("writing {}", tmp.display()))
        .and_then(|()| {
            fs::rename(&tmp, path).with_context(|| format!("renaming it to {}", path.display()))
        });
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Refuses a pin root that someone other than root could have made or can change:
/// `/sys/fs/bpf` is world-writable on many systems, so whoever creates `aksnet` there
/// first would own the pins and could hide them from `down`. A missing root is fine
/// (aksnet creates it, owned by root, mode 0755).
pub fn check_pin_root(root: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(root) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", root.display())),
    };
    let fix = format!(
        "check what is in it, remove it (`rm -r {}`) and let aksnet create it again",
        root.display()
    );
    if !meta.is_dir() {
        bail!(
            "the pin root {} is not a directory (a symlink or a file): refusing to use it; {fix}",
            root.display()
        );
    }
    if meta.uid() != 0 {
        bail!(
            "the pin root {} is owned by uid {}, not root: that user could replace or hide pinned maps and links; {fix}",
            root.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "the pin root {} has mode {:o}: writable by users other than root, who could replace or hide pinned maps and links; {fix} (or `chmod go-w {}`)",
            root.display(),
            meta.mode() & 0o7777,
            root.display()
        );
    }
    Ok(())
}

/// Creates the pin root (root-owned, mode 0755) if missing, and checks it.
pub fn prepare_pin_root(root: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o755).create(root) {
        Err(e) if e.kind() != ErrorKind::AlreadyExists => {
            return Err(e).with_context(|| format!("creating {}", root.display()))
        }
        _ => {}
    }
    check_pin_root(root)
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
        write_atomically(&file, crate::model::to_yaml(description).as_bytes())
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
