//! Programming NodePort and LoadBalancer services into a node's `NODEPORTS`, live: the
//! backend slots are written before the master slot (which carries the count), stale
//! slots removed after it, so the datapath never sees a count pointing at a missing
//! slot. With `externalTrafficPolicy: Local` a node lists only the backends it hosts;
//! with `Cluster` every backend. Flows already running keep their backend
//! (`NODEPORT_FLOWS`).

use std::path::Path;

use aks_ebpf_common::nodeport::{NodePortKey, NodePortSlot, NODEPORTS_MAP, NODEPORT_LOCAL};
use anyhow::{bail, Context, Result};
use aya::maps::{HashMap, Map, MapData};

use super::{map_addr, protocol_number, NodeDatapath};
use crate::model::loadbalancer::{Exposure, ExternalTrafficPolicy};
use crate::model::Protocol;
use crate::plan::ServicePlan;

/// A node's `NODEPORTS`, opened on its own file descriptor.
pub struct NodePortMaps {
    node: String,
    slots: HashMap<MapData, NodePortKey, NodePortSlot>,
}

/// The backends node `node` may pick for `exposure`, as (address, port) pairs.
fn eligible<'a>(
    exposure: &Exposure,
    service: &'a ServicePlan,
    node: &'a str,
) -> impl Iterator<Item = &'a crate::plan::Backend> {
    let local_only = exposure.external_traffic_policy == ExternalTrafficPolicy::Local;
    service
        .backends
        .iter()
        .filter(move |b| !local_only || b.node == node)
}

impl NodePortMaps {
    /// The pinned map under a node's pin directory (another process's datapath).
    pub fn open_pinned(dir: &Path, node: &str) -> Result<Self> {
        let data = super::open_pinned(&dir.join(NODEPORTS_MAP))?;
        Self::from_data(data, node)
    }

    fn from_data(data: MapData, node: &str) -> Result<Self> {
        Ok(Self {
            node: node.to_owned(),
            slots: HashMap::try_from(Map::HashMap(data))?,
        })
    }

    /// Adds the node port of `exposure` (backends from `service`), or replaces its
    /// backends.
    pub fn upsert(&mut self, exposure: &Exposure, service: &ServicePlan) -> Result<()> {
        let (port, protocol) = (exposure.node_port, protocol_number(service.protocol));
        let master_key = NodePortKey::new(port, protocol, 0);
        let old_count = self.slots.get(&master_key, 0).map_or(0, |m| m.count);
        let backends: Vec<_> = eligible(exposure, service, &self.node).collect();
        if backends.len() >= usize::from(u16::MAX) {
            bail!(
                "service {} has {} backends; at most {} fit a node port",
                service.name,
                backends.len(),
                u16::MAX - 1
            );
        }
        for (i, backend) in backends.iter().enumerate() {
            let slot = NodePortSlot {
                backend_addr: map_addr(backend.ip),
                backend_port: backend.port,
                ..NodePortSlot::default()
            };
            self.slots
                .insert(NodePortKey::new(port, protocol, i as u16 + 1), slot, 0)
                .with_context(|| {
                    format!(
                        "writing NODEPORTS slot {} of service {} on node {}",
                        i + 1,
                        service.name,
                        self.node
                    )
                })?;
        }
        let count = backends.len() as u16;
        let flags = match exposure.external_traffic_policy {
            ExternalTrafficPolicy::Local => NODEPORT_LOCAL,
            ExternalTrafficPolicy::Cluster => 0,
        };
        // The master last: from here on new flows see the new backends.
        let master = NodePortSlot {
            count,
            flags,
            ..NodePortSlot::default()
        };
        self.slots.insert(master_key, master, 0).with_context(|| {
            format!(
                "writing the NODEPORTS entry of service {} on node {}",
                service.name, self.node
            )
        })?;
        for slot in count + 1..=old_count {
            let _ = self.slots.remove(&NodePortKey::new(port, protocol, slot));
        }
        Ok(())
    }

    /// Removes node port `port/protocol` with its slots. `false` if there was none.
    pub fn remove(&mut self, port: u16, protocol: Protocol) -> Result<bool> {
        let protocol = protocol_number(protocol);
        let master_key = NodePortKey::new(port, protocol, 0);
        let Ok(master) = self.slots.get(&master_key, 0) else {
            return Ok(false);
        };
        // The master first: new flows stop finding the node port at once.
        self.slots
            .remove(&master_key)
            .context("removing the NODEPORTS entry")?;
        for slot in 1..=master.count {
            let _ = self.slots.remove(&NodePortKey::new(port, protocol, slot));
        }
        Ok(true)
    }
}

impl NodeDatapath {
    /// This datapath's `NODEPORTS` on a fresh file descriptor, for node `node`.
    pub fn node_port_maps(&self, node: &str) -> Result<NodePortMaps> {
        let id = match self.map(NODEPORTS_MAP)? {
            Map::HashMap(data) => data.info()?.id(),
            _ => bail!("{NODEPORTS_MAP} is not a hash map"),
        };
        NodePortMaps::from_data(MapData::from_id(id)?, node)
    }
}
