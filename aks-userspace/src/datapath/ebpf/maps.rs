//! Writing the datapath's maps from userspace: the node's configuration, its pods, the
//! routes; and opening a map another process pinned.

use std::net::Ipv4Addr;
use std::path::Path;

use aks_ebpf_common::policy::{PolicyKey, IPCACHE_MAP, POLICY_MAP};
use aks_ebpf_common::{addr, Endpoint, NodeConfig, Route, CONFIG_MAP, ENDPOINTS_MAP, ROUTES_MAP};
use anyhow::{Context, Result};
use aya::maps::lpm_trie::Key;
use aya::maps::{Array, HashMap, LpmTrie, MapData};

use super::NodeDatapath;
use crate::cidr::Ipv4Cidr;

/// The map another process (`aksnet up`) pinned at `path`, e.g.
/// `/sys/fs/bpf/aksnet/<cluster>/<node>/STATS`.
pub fn open_pinned(path: &Path) -> Result<MapData> {
    MapData::from_pin(path).with_context(|| {
        format!(
            "opening pinned map {} (is the cluster up with the eBPF datapath?)",
            path.display()
        )
    })
}

/// An address in map form (network byte order, as in the packet).
pub fn map_addr(ip: Ipv4Addr) -> u32 {
    addr::ipv4(ip.octets())
}

impl NodeDatapath {
    /// Writes the node's configuration (marking it ready).
    pub fn set_config(&mut self, mut config: NodeConfig) -> Result<()> {
        config.ready = 1;
        let mut map: Array<_, NodeConfig> = Array::try_from(self.map_mut(CONFIG_MAP)?)?;
        map.set(0, config, 0).context("writing CONFIG")?;
        Ok(())
    }

    /// The node's configuration as the datapath sees it.
    pub fn config(&self) -> Result<NodeConfig> {
        let map: Array<_, NodeConfig> = Array::try_from(self.map(CONFIG_MAP)?)?;
        Ok(map.get(&0, 0)?)
    }

    /// Adds or replaces the local pod holding `pod_ip`.
    pub fn upsert_endpoint(&mut self, pod_ip: Ipv4Addr, endpoint: Endpoint) -> Result<()> {
        let mut map: HashMap<_, u32, Endpoint> = HashMap::try_from(self.map_mut(ENDPOINTS_MAP)?)?;
        map.insert(map_addr(pod_ip), endpoint, 0)
            .with_context(|| format!("writing ENDPOINTS[{pod_ip}]"))?;
        Ok(())
    }

    /// Adds or replaces the route to `network/prefix_len`.
    pub fn upsert_route(&mut self, network: Ipv4Addr, prefix_len: u8, route: Route) -> Result<()> {
        let mut map: LpmTrie<_, u32, Route> = LpmTrie::try_from(self.map_mut(ROUTES_MAP)?)?;
        let key = Key::new(u32::from(prefix_len), map_addr(network));
        map.insert(&key, route, 0)
            .with_context(|| format!("writing ROUTES[{network}/{prefix_len}]"))?;
        Ok(())
    }

    /// Writes the identities of every prefix (`IPCACHE`) and this node's allowed keys
    /// (`POLICY`). Keys are added, never removed here: `up` starts from empty maps.
    pub fn set_policy(&mut self, ipcache: &[(Ipv4Cidr, u32)], keys: &[PolicyKey]) -> Result<()> {
        let mut map: LpmTrie<_, u32, u32> = LpmTrie::try_from(self.map_mut(IPCACHE_MAP)?)?;
        for (prefix, identity) in ipcache {
            let key = Key::new(u32::from(prefix.prefix()), map_addr(prefix.network()));
            map.insert(&key, identity, 0)
                .with_context(|| format!("writing IPCACHE[{prefix}]"))?;
        }
        let mut map: HashMap<_, PolicyKey, u32> = HashMap::try_from(self.map_mut(POLICY_MAP)?)?;
        for key in keys {
            map.insert(key, 1, 0)
                .with_context(|| format!("writing POLICY[{key:?}]"))?;
        }
        Ok(())
    }
}
