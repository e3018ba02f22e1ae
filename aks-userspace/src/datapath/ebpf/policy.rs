//! Network policy for the eBPF datapath, Cilium style, computed from the same model the
//! evaluator judges: identities for what the rules can tell apart, `IPCACHE` mapping
//! every relevant prefix to one, and per node the `POLICY` keys of its pods and their
//! `ENDPOINTS` isolation flags. Pure functions; `NodeDatapath::set_policy` writes them.
//!
//! An identity is a class of addresses every peer of every policy treats alike: pods by
//! namespace and labels, and every address by the set of ipBlocks (minus their
//! `except`) that hold it. `IPCACHE` holds 0.0.0.0/0, every ipBlock `cidr` and `except`,
//! and every pod and node /32; prefixes nest, so the longest prefix holding an address
//! decides exactly which ipBlocks hold it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use aks_ebpf_common::policy::{
    PolicyKey, DIRECTION_EGRESS, DIRECTION_INGRESS, ENDPOINT_EGRESS_ISOLATED,
    ENDPOINT_INGRESS_ISOLATED, IDENTITY_ANY, IPCACHE_CAPACITY, POLICY_CAPACITY,
};
use anyhow::{bail, Result};

use super::maps::map_addr;
use crate::cidr::Ipv4Cidr;
use crate::model::policy::{Labels, Peer, PolicyType, PortRange};
use crate::model::Protocol;
use crate::plan::Plan;
use crate::policy::{isolating, peer_matches, PolicyEndpoint};

/// The first identity handed to a class (0 is "any", 1 "unknown"; Cilium keeps its
/// reserved identities low too).
pub const FIRST_IDENTITY: u32 = 256;
/// The widest port range expanded into keys (one key per port).
pub const MAX_RANGE_PORTS: u32 = 4096;

/// What an address is, as far as selectors can tell.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Holder {
    Pod {
        namespace: String,
        labels: Labels,
    },
    /// A node, a host outside, or any address no pod holds.
    Other,
}

/// An identity's meaning: its holder and which ipBlocks hold it (indices, ascending:
/// sparse, since an address usually sits in few of many blocks).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Class {
    holder: Holder,
    blocks: Vec<usize>,
}

/// Identities and the `IPCACHE` entries of a cluster.
#[derive(Clone, Debug)]
pub struct Identities {
    /// Each distinct ipBlock (cidr, except) → its index.
    blocks: BTreeMap<(Ipv4Cidr, Vec<Ipv4Cidr>), usize>,
    /// Per ipBlock index, the identities it holds.
    by_block: Vec<Vec<u32>>,
    classes: BTreeMap<Class, u32>,
    /// Prefix → identity, in prefix order.
    pub ipcache: Vec<(Ipv4Cidr, u32)>,
}

/// The identities of `plan`'s cluster (the same on every node).
pub fn identities(plan: &Plan) -> Result<Identities> {
    let mut blocks: Vec<(Ipv4Cidr, Vec<Ipv4Cidr>)> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for policy in &plan.policy.policies {
        for rules in [&policy.ingress, &policy.egress].into_iter().flatten() {
            for peer in rules.iter().flat_map(|r| &r.peers) {
                if let Peer::IpBlock { cidr, except } = peer {
                    if seen.insert((*cidr, except.clone())) {
                        blocks.push((*cidr, except.clone()));
                    }
                }
            }
        }
    }
    let mut prefixes: BTreeMap<Ipv4Cidr, Holder> = BTreeMap::new();
    let everything = Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0)?;
    prefixes.insert(everything, Holder::Other);
    for (cidr, except) in &blocks {
        for prefix in std::iter::once(cidr).chain(except) {
            prefixes.insert(*prefix, Holder::Other);
        }
    }
    for node in &plan.nodes {
        prefixes.insert(Ipv4Cidr::new(node.ip, 32)?, Holder::Other);
    }
    for pod in plan.pods() {
        prefixes.insert(
            Ipv4Cidr::new(pod.ip, 32)?,
            Holder::Pod {
                namespace: pod.namespace.clone(),
                labels: pod.labels.clone(),
            },
        );
    }
    if prefixes.len() > IPCACHE_CAPACITY as usize {
        bail!(
            "network policy needs {} IPCACHE prefixes but the map holds {IPCACHE_CAPACITY}; use fewer ipBlocks or pods",
            prefixes.len()
        );
    }
    // Which blocks hold each prefix: only prefixes inside a block's cidr can be held,
    // and in prefix order they are one range of the map.
    let mut held: BTreeMap<Ipv4Cidr, Vec<usize>> = BTreeMap::new();
    for (b, (cidr, except)) in blocks.iter().enumerate() {
        let last = Ipv4Cidr::new(cidr.last(), 32)?;
        for prefix in prefixes.range(*cidr..=last).map(|(p, _)| p) {
            if cidr.contains_cidr(prefix) && !except.iter().any(|e| e.contains_cidr(prefix)) {
                held.entry(*prefix).or_default().push(b);
            }
        }
    }
    let mut classes: BTreeMap<Class, u32> = BTreeMap::new();
    let mut ipcache = Vec::with_capacity(prefixes.len());
    for (prefix, holder) in prefixes {
        let class = Class {
            holder,
            blocks: held.remove(&prefix).unwrap_or_default(),
        };
        let next = FIRST_IDENTITY + classes.len() as u32;
        let identity = *classes.entry(class).or_insert(next);
        ipcache.push((prefix, identity));
    }
    let mut by_block = vec![Vec::new(); blocks.len()];
    for (class, &identity) in &classes {
        for &b in &class.blocks {
            by_block[b].push(identity);
        }
    }
    Ok(Identities {
        blocks: blocks
            .into_iter()
            .enumerate()
            .map(|(i, b)| (b, i))
            .collect(),
        by_block,
        classes,
        ipcache,
    })
}

impl Identities {
    /// The identities whose class `peer` matches.
    fn matching(&self, plan: &Plan, peer: &Peer) -> Vec<u32> {
        match peer {
            Peer::IpBlock { cidr, except } => self
                .blocks
                .get(&(*cidr, except.clone()))
                .map(|&b| self.by_block[b].clone())
                .unwrap_or_default(),
            Peer::Pods { .. } => self
                .classes
                .iter()
                .filter_map(|(class, &identity)| match &class.holder {
                    Holder::Pod { namespace, labels } => peer_matches(
                        &plan.policy,
                        peer,
                        &PolicyEndpoint::Pod {
                            address: Ipv4Addr::UNSPECIFIED,
                            namespace,
                            labels,
                            node: "",
                        },
                    )
                    .then_some(identity),
                    Holder::Other => None,
                })
                .collect(),
        }
    }
}

/// What one node's maps hold for policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodePolicy {
    /// Each local pod's `ENDPOINTS` flags (zero when no policy selects it).
    pub endpoint_flags: Vec<(Ipv4Addr, u32)>,
    pub keys: Vec<PolicyKey>,
}

/// The `POLICY` keys and endpoint flags of node `node`.
pub fn node_policy(plan: &Plan, identities: &Identities, node: &str) -> Result<NodePolicy> {
    let mut out = NodePolicy::default();
    let model = &plan.policy;
    let Some(node) = plan.node(node) else {
        return Ok(out);
    };
    for pod in &node.pods {
        let mut flags = 0;
        for (direction, flag, code) in [
            (
                PolicyType::Ingress,
                ENDPOINT_INGRESS_ISOLATED,
                DIRECTION_INGRESS,
            ),
            (
                PolicyType::Egress,
                ENDPOINT_EGRESS_ISOLATED,
                DIRECTION_EGRESS,
            ),
        ] {
            for policy in isolating(model, &pod.namespace, &pod.labels, direction) {
                flags |= flag;
                for rule in policy.rules(direction).unwrap_or_default() {
                    let peers: Vec<u32> = if rule.peers.is_empty() {
                        vec![IDENTITY_ANY]
                    } else {
                        let mut ids: Vec<u32> = rule
                            .peers
                            .iter()
                            .flat_map(|peer| identities.matching(plan, peer))
                            .collect();
                        ids.sort_unstable();
                        ids.dedup();
                        ids
                    };
                    let ports = port_keys(&rule.ports, &policy.qualified_name())?;
                    for &identity in &peers {
                        for &(protocol, dst_port) in &ports {
                            out.keys.push(PolicyKey {
                                endpoint: map_addr(pod.ip),
                                identity,
                                dst_port,
                                protocol,
                                direction: code,
                            });
                        }
                    }
                }
            }
        }
        out.endpoint_flags.push((pod.ip, flags));
    }
    out.keys.sort_unstable();
    out.keys.dedup();
    if out.keys.len() > POLICY_CAPACITY as usize {
        bail!(
            "node {}: network policy needs {} POLICY keys but the map holds {POLICY_CAPACITY}; narrow port ranges or merge rules",
            node.name,
            out.keys.len()
        );
    }
    Ok(out)
}

/// (protocol, port) pairs of a rule's ports: (0, 0) for every protocol, port 0 for
/// every port of one, one pair per port of a range.
fn port_keys(ports: &[PortRange], policy: &str) -> Result<Vec<(u8, u16)>> {
    if ports.is_empty() {
        return Ok(vec![(0, 0)]);
    }
    let mut out = Vec::new();
    for range in ports {
        let protocol = match range.protocol {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        };
        if (range.first, range.last) == (0, u16::MAX) {
            out.push((protocol, 0));
            continue;
        }
        let width = u32::from(range.last) - u32::from(range.first) + 1;
        if width > MAX_RANGE_PORTS {
            bail!(
                "policy {policy}: port range {}-{} has {width} ports and the eBPF datapath keeps one key per port (at most {MAX_RANGE_PORTS}); narrow the range",
                range.first,
                range.last
            );
        }
        out.extend((range.first..=range.last).map(|port| (protocol, port)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

/// The pinned policy maps of one node of a running cluster, for live policy changes:
/// only what differs between the old and the new model is written or deleted.
pub struct PinnedPolicyMaps {
    ipcache: aya::maps::LpmTrie<aya::maps::MapData, u32, u32>,
    policy: aya::maps::HashMap<aya::maps::MapData, PolicyKey, u32>,
    endpoints: aya::maps::HashMap<aya::maps::MapData, u32, aks_ebpf_common::Endpoint>,
}

/// How many map entries a live change wrote and deleted on one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapChanges {
    pub written: usize,
    pub deleted: usize,
}

impl PinnedPolicyMaps {
    /// The maps pinned under a node's pin directory.
    pub fn open_pinned(dir: &std::path::Path) -> Result<Self> {
        use aks_ebpf_common::policy::{IPCACHE_MAP, POLICY_MAP};
        use aks_ebpf_common::ENDPOINTS_MAP;
        use aya::maps::Map;
        let open = |name: &str| super::open_pinned(&dir.join(name));
        Ok(Self {
            ipcache: aya::maps::LpmTrie::try_from(Map::LpmTrie(open(IPCACHE_MAP)?))?,
            policy: aya::maps::HashMap::try_from(Map::HashMap(open(POLICY_MAP)?))?,
            endpoints: aya::maps::HashMap::try_from(Map::HashMap(open(ENDPOINTS_MAP)?))?,
        })
    }

    /// Moves the node's maps from `old` to `new` (identities and node policy of the same
    /// cluster before and after the change): new and changed entries first, then stale
    /// ones removed, so no packet meets a pod isolated with its keys missing.
    pub fn update(
        &mut self,
        old: (&Identities, &NodePolicy),
        new: (&Identities, &NodePolicy),
    ) -> Result<MapChanges> {
        use anyhow::Context as _;
        use aya::maps::lpm_trie::Key;
        let mut changes = MapChanges::default();
        let old_ipcache: BTreeMap<Ipv4Cidr, u32> = old.0.ipcache.iter().copied().collect();
        let new_ipcache: BTreeMap<Ipv4Cidr, u32> = new.0.ipcache.iter().copied().collect();
        let key = |p: &Ipv4Cidr| Key::new(u32::from(p.prefix()), map_addr(p.network()));
        for (prefix, identity) in &new_ipcache {
            if old_ipcache.get(prefix) != Some(identity) {
                self.ipcache
                    .insert(&key(prefix), identity, 0)
                    .with_context(|| format!("writing IPCACHE[{prefix}]"))?;
                changes.written += 1;
            }
        }
        let old_keys: std::collections::BTreeSet<&PolicyKey> = old.1.keys.iter().collect();
        let new_keys: std::collections::BTreeSet<&PolicyKey> = new.1.keys.iter().collect();
        for k in new_keys.difference(&old_keys) {
            self.policy
                .insert(*k, 1, 0)
                .with_context(|| format!("writing POLICY[{k:?}]"))?;
            changes.written += 1;
        }
        for (pod, flags) in &new.1.endpoint_flags {
            let old_flags = old
                .1
                .endpoint_flags
                .iter()
                .find(|(p, _)| p == pod)
                .map(|(_, f)| *f);
            if old_flags == Some(*flags) {
                continue;
            }
            let mut endpoint = self
                .endpoints
                .get(&map_addr(*pod), 0)
                .with_context(|| format!("reading ENDPOINTS[{pod}]"))?;
            endpoint.flags = *flags;
            self.endpoints
                .insert(map_addr(*pod), endpoint, 0)
                .with_context(|| format!("writing ENDPOINTS[{pod}]"))?;
            changes.written += 1;
        }
        for k in old_keys.difference(&new_keys) {
            self.policy
                .remove(*k)
                .with_context(|| format!("deleting POLICY[{k:?}]"))?;
            changes.deleted += 1;
        }
        for prefix in old_ipcache.keys().filter(|p| !new_ipcache.contains_key(p)) {
            self.ipcache
                .remove(&key(prefix))
                .with_context(|| format!("deleting IPCACHE[{prefix}]"))?;
            changes.deleted += 1;
        }
        Ok(changes)
    }
}
