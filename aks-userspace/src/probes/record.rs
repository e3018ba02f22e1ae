//! `/run/aksnet/<cluster>/probes.json`: what the probe agent last saw, per frontend and
//! node. Written by the agent after every round (atomically), read by `inspect probes`
//! and by whoever writes the fabric's load balancer (`fabric::loadbalancer::rules`), so a
//! fabric reprogrammed for another reason (`aksnet services`) keeps the probed state.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::model::loadbalancer::ExternalTrafficPolicy;
use crate::state::ClusterState;

/// A node's standing with one frontend, as Azure's load balancer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProbeState {
    /// Not probed often enough yet to decide; the fabric keeps what the plan says.
    Unknown,
    /// In rotation: new flows may go to the node.
    Up,
    /// Out of rotation: no new flows; established ones go on.
    Down,
}

/// One node as the probe of one frontend sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeProbe {
    pub node: String,
    pub address: Ipv4Addr,
    pub state: ProbeState,
    /// The last answer: `200`, `503`, `refused`, `timeout`, … (none before the first).
    pub last_result: Option<String>,
    /// When the last probe was sent, milliseconds since the Unix epoch.
    pub last_probe_unix_ms: Option<u64>,
    /// When `state` last changed (milliseconds since the Unix epoch).
    pub changed_unix_ms: Option<u64>,
    pub probes: u64,
    pub successes: u64,
    pub failures: u64,
    /// Same-result probes in a row (what the threshold counts).
    pub consecutive: u32,
}

impl NodeProbe {
    /// A node not probed yet.
    pub fn new(node: &str, address: Ipv4Addr) -> Self {
        Self {
            node: node.to_owned(),
            address,
            state: ProbeState::Unknown,
            last_result: None,
            last_probe_unix_ms: None,
            changed_unix_ms: None,
            probes: 0,
            successes: 0,
            failures: 0,
            consecutive: 0,
        }
    }
}

/// The probe of one load-balancing rule, and its nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FrontendProbes {
    pub service: String,
    pub frontend: Ipv4Addr,
    pub port: u16,
    pub policy: ExternalTrafficPolicy,
    /// The node port probed: the `healthCheckNodePort` (Local) or kube-proxy's healthz
    /// port (Cluster).
    pub probe_port: u16,
    pub path: String,
    pub nodes: Vec<NodeProbe>,
}

/// The whole record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeRecord {
    pub agent_pid: u32,
    pub interval_ms: u64,
    pub threshold: u32,
    pub frontends: Vec<FrontendProbes>,
}

impl ProbeRecord {
    fn file(cluster: &str) -> PathBuf {
        ClusterState::dir(cluster).join("probes.json")
    }

    /// The record of `cluster`; `None` before the agent's first round (or without one).
    pub fn load(cluster: &str) -> Result<Option<Self>> {
        let file = Self::file(cluster);
        match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("reading {}", file.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
        }
    }

    /// Writes the record atomically; fails (writing nothing) once the record directory
    /// is gone, so an agent never recreates a removed cluster's directory.
    pub fn save(&self, cluster: &str) -> Result<()> {
        crate::state::write_atomically(&Self::file(cluster), &serde_json::to_vec_pretty(self)?)
    }

    /// Whether the probe of `service` (probed at `probe_port`) has decided that `node`
    /// is in rotation; `None` while undecided or not probed.
    pub fn in_rotation(&self, service: &str, probe_port: u16, node: &str) -> Option<bool> {
        let frontend = self
            .frontends
            .iter()
            .find(|f| f.service == service && f.probe_port == probe_port)?;
        match frontend.nodes.iter().find(|n| n.node == node)?.state {
            ProbeState::Up => Some(true),
            ProbeState::Down => Some(false),
            ProbeState::Unknown => None,
        }
    }
}
