//! `inspect probes`: the load balancer's health probe of each frontend, per node, as the
//! cluster's probe agent last recorded it (`probes::ProbeRecord`).

use std::net::Ipv4Addr;

use anyhow::Result;
use serde::Serialize;

use crate::model::loadbalancer::ExternalTrafficPolicy;
use crate::probes::{NodeProbe, ProbeRecord};
use crate::state::ClusterState;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeRow {
    pub service: String,
    pub frontend: Ipv4Addr,
    pub port: u16,
    pub policy: ExternalTrafficPolicy,
    /// `HTTP <port><path>`: what the probe asks each node.
    pub probe: String,
    /// The node and its probes' state, as the agent recorded them.
    #[serde(flatten)]
    pub node: NodeProbe,
    /// How long ago the last probe was sent, when this row was read.
    pub last_probe_age_ms: Option<u64>,
}

/// What the probe record holds, as rows.
pub struct RecordedProbes {
    pub rows: Vec<ProbeRow>,
    /// The agent's interval (ms) and threshold, once it has written a record.
    pub settings: Option<(u64, u32)>,
}

/// The probe rows of `state`'s cluster (of `node` only, when given).
pub fn probes(state: &ClusterState, node: Option<&str>) -> Result<RecordedProbes> {
    if let Some(node) = node {
        super::select_nodes(state, Some(node))?;
    }
    let Some(record) = ProbeRecord::load(&state.name)? else {
        return Ok(RecordedProbes {
            rows: Vec::new(),
            settings: None,
        });
    };
    let now = crate::probes::prober::now_ms();
    let rows = record
        .frontends
        .iter()
        .flat_map(|f| {
            f.nodes
                .iter()
                .filter(|n| node.is_none_or(|want| n.node == want))
                .map(move |n| ProbeRow {
                    service: f.service.clone(),
                    frontend: f.frontend,
                    port: f.port,
                    policy: f.policy,
                    probe: format!("HTTP {}{}", f.probe_port, f.path),
                    node: n.clone(),
                    last_probe_age_ms: n.last_probe_unix_ms.map(|t| now.saturating_sub(t)),
                })
        })
        .collect();
    Ok(RecordedProbes {
        rows,
        settings: Some((record.interval_ms, record.threshold)),
    })
}
