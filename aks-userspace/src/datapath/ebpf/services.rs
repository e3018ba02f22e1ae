//! Programming ClusterIP services into a node's `SERVICES`, `BACKENDS` and `REV_NAT`,
//! live: a service's backends and slots are written before its master slot (which
//! carries the count), and stale slots are removed after it, so the datapath never
//! sees a count pointing at a missing slot. Flows already running keep their backend
//! (`LB_FLOWS`), so backends that remain are not disturbed.
//!
//! Ids cost no scan, so adding one service takes the same few map updates at 10 or at
//! 10,000 services: a service's reverse-NAT id is found by probing `REV_NAT` from a hash
//! of its frontend (ids run up to the map's capacity, which `up` sizes from the
//! description), and its backends' ids are `rev_nat_id << 32 | slot`.

use std::net::Ipv4Addr;
use std::path::Path;

use aks_ebpf_common::lb::{
    backend_id, LbBackend, RevNat, ServiceKey, ServiceSlot, BACKENDS_MAP, REV_NAT_MAP, SERVICES_MAP,
};
use anyhow::{bail, Context, Result};
use aya::maps::{HashMap, Map, MapData};

use super::{map_addr, NodeDatapath};
use crate::model::Protocol;
use crate::plan::ServicePlan;

/// A node's service maps, opened on their own file descriptors, with id allocators
/// seeded from what the maps already hold.
pub struct ServiceMaps {
    services: HashMap<MapData, ServiceKey, ServiceSlot>,
    backends: HashMap<MapData, u64, LbBackend>,
    rev_nat: HashMap<MapData, u32, RevNat>,
    /// `REV_NAT`'s capacity: ids run from 1 to it.
    rev_nat_ids: u32,
}

pub fn protocol_number(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
    }
}

impl ServiceMaps {
    /// The pinned service maps under a node's pin directory (another process's datapath).
    pub fn open_pinned(dir: &Path) -> Result<Self> {
        let open = |name: &str| super::open_pinned(&dir.join(name));
        Self::from_data(open(SERVICES_MAP)?, open(BACKENDS_MAP)?, open(REV_NAT_MAP)?)
    }

    fn from_data(services: MapData, backends: MapData, rev_nat: MapData) -> Result<Self> {
        let services: HashMap<MapData, ServiceKey, ServiceSlot> =
            HashMap::try_from(Map::HashMap(services))?;
        let backends: HashMap<MapData, u64, LbBackend> = HashMap::try_from(Map::HashMap(backends))?;
        let rev_nat_ids = rev_nat.info()?.max_entries();
        let rev_nat: HashMap<MapData, u32, RevNat> = HashMap::try_from(Map::HashMap(rev_nat))?;
        Ok(Self {
            services,
            backends,
            rev_nat,
            rev_nat_ids,
        })
    }

    /// A free reverse-NAT id for a new frontend: linear probing from a hash of it.
    fn free_rev_nat_id(&self, vip: u32, port: u16, protocol: u8) -> Result<u32> {
        let ids = self.rev_nat_ids.max(1);
        // splitmix64's finaliser over the whole frontend: every input bit moves the
        // start, so neighbouring ClusterIPs (which differ only in the high bytes of the
        // map form) spread over the ids and probing stays short however full it gets.
        let mut z = u64::from(vip) << 24 | u64::from(port) << 8 | u64::from(protocol);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let start = ((z ^ (z >> 31)) % u64::from(ids)) as u32;
        for step in 0..ids {
            let id = start.wrapping_add(step) % ids + 1;
            if self.rev_nat.get(&id, 0).is_err() {
                return Ok(id);
            }
        }
        bail!("every reverse-NAT id is taken (REV_NAT holds {ids} services; the cluster was sized for fewer: recreate it with the services in its description)")
    }

    /// Adds `service`, or replaces its backends if its frontend exists.
    pub fn upsert(&mut self, service: &ServicePlan) -> Result<()> {
        let (vip, port, protocol) = (
            map_addr(service.cluster_ip),
            service.port,
            protocol_number(service.protocol),
        );
        if service.backends.len() >= usize::from(u16::MAX) {
            bail!(
                "service {} has {} backends; at most {} fit a frontend",
                service.name,
                service.backends.len(),
                u16::MAX - 1
            );
        }
        let master_key = ServiceKey::new(vip, port, protocol, 0);
        let old = self.services.get(&master_key, 0).ok();
        let rev_nat_id = match old {
            Some(master) => master.rev_nat_id,
            None => self.free_rev_nat_id(vip, port, protocol)?,
        };
        self.rev_nat
            .insert(rev_nat_id, RevNat { vip, port, _pad: 0 }, 0)
            .with_context(|| format!("writing REV_NAT for service {}", service.name))?;
        let count = service.backends.len() as u16;
        for (i, backend) in service.backends.iter().enumerate() {
            let id = backend_id(rev_nat_id, i as u16 + 1);
            let value = LbBackend {
                addr: map_addr(backend.ip),
                port: backend.port,
                _pad: 0,
            };
            self.backends
                .insert(id, value, 0)
                .with_context(|| format!("writing BACKENDS for service {}", service.name))?;
            let slot = ServiceSlot {
                backend_id: id,
                rev_nat_id,
                count: 0,
                _pad: 0,
            };
            self.services
                .insert(ServiceKey::new(vip, port, protocol, i as u16 + 1), slot, 0)
                .with_context(|| {
                    format!(
                        "writing SERVICES slot {} of service {}",
                        i + 1,
                        service.name
                    )
                })?;
        }
        // The master last: from here on new flows see the new backends.
        let master = ServiceSlot {
            backend_id: 0,
            rev_nat_id,
            count,
            _pad: 0,
        };
        self.services
            .insert(master_key, master, 0)
            .with_context(|| format!("writing the SERVICES entry of service {}", service.name))?;
        let old_count = old.map_or(0, |m| m.count);
        for slot in count + 1..=old_count {
            let _ = self
                .services
                .remove(&ServiceKey::new(vip, port, protocol, slot));
            let _ = self.backends.remove(&backend_id(rev_nat_id, slot));
        }
        Ok(())
    }

    /// Removes the frontend `cluster_ip:port/protocol` with its slots, backends and
    /// reverse-NAT entry. `false` if there was none.
    pub fn remove(&mut self, cluster_ip: Ipv4Addr, port: u16, protocol: Protocol) -> Result<bool> {
        let (vip, protocol) = (map_addr(cluster_ip), protocol_number(protocol));
        let master_key = ServiceKey::new(vip, port, protocol, 0);
        let Ok(master) = self.services.get(&master_key, 0) else {
            return Ok(false);
        };
        // The master first: new flows stop finding the service at once.
        self.services
            .remove(&master_key)
            .context("removing the SERVICES entry")?;
        for slot in 1..=master.count {
            let _ = self
                .services
                .remove(&ServiceKey::new(vip, port, protocol, slot));
            let _ = self.backends.remove(&backend_id(master.rev_nat_id, slot));
        }
        let _ = self.rev_nat.remove(&master.rev_nat_id);
        Ok(true)
    }
}

impl NodeDatapath {
    /// This datapath's service maps on fresh file descriptors (no pins needed).
    pub fn service_maps(&self) -> Result<ServiceMaps> {
        let reopen = |name: &str| -> Result<MapData> {
            let id = match self.map(name)? {
                Map::HashMap(data) => data.info()?.id(),
                _ => bail!("{name} is not a hash map"),
            };
            Ok(MapData::from_id(id)?)
        };
        ServiceMaps::from_data(
            reopen(SERVICES_MAP)?,
            reopen(BACKENDS_MAP)?,
            reopen(REV_NAT_MAP)?,
        )
    }
}
