//! The fabric forwarder: the `fabric` TC program on the vnet namespace's end of every
//! node link, and `FABRIC_ROUTES`, the VNet route table it applies (see aks-ebpf's
//! `fabric`). The same in every cell, whatever datapath the nodes run: it stands for
//! Azure's SDN, which routes VNet traffic in hardware at no cost to a node.
//!
//! What the table holds, from the plan: each node's address (`/32`), and the plan's
//! route table (Azure CNI pod addresses, kubenet's UDR `/24`s; empty with Overlay, whose
//! node-to-node tunnel traffic is between node addresses). Everything the table misses
//! (internet, on-prem, load balancer frontends) takes the vnet namespace's kernel
//! routing and iptables rules as before. NSG rules need every packet towards a node
//! to meet the stateful NSG chain, so with rules the table stays empty and the
//! forwarder passes everything.
//!
//! Pins: `/sys/fs/bpf/aksnet/<cluster>/_fabric/` (a name no node can have): the map,
//! the counters, the program (to attach to a rebuilt link) and, with TCX, the links.
//! `down` removes it with the rest of the cluster's pins.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use aks_ebpf_common::{FabricHop, Program, FABRIC_ROUTES_CAPACITY, FABRIC_ROUTES_MAP, STATS_MAP};
use anyhow::{Context, Result};
use aya::maps::lpm_trie::Key;
use aya::maps::{LpmTrie, MapData};
use aya::programs::SchedClassifier;
use aya::{Ebpf, EbpfLoader};

use crate::cidr::Ipv4Cidr;
use crate::datapath::ebpf::{attach_ingress, map_addr, object_bytes, TcAttachMode, TcAttachment};
use crate::netns;
use crate::plan::Plan;
use crate::state::ClusterState;
use crate::topology::layout::{self, Layout};

/// The program's name in the object.
const PROGRAM: &str = Program::Fabric.name();
/// Pin directory name under the cluster's: node names never start with `_`.
const PIN_DIR: &str = "_fabric";
/// The program's pin file, from which a rebuilt link is attached.
const PROGRAM_PIN: &str = "program";

/// The forwarder's pin directory of cluster `name`.
pub fn pin_dir(cluster: &str) -> PathBuf {
    ClusterState::pin_dir(cluster).join(PIN_DIR)
}

/// The vnet namespace's end of node `index`'s link.
pub fn node_link(index: usize) -> String {
    layout::vnet_node_link(index)
}

/// One route of the table: a prefix and the node link it lives behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FabricRoute {
    pub prefix: Ipv4Cidr,
    /// Index of the node (in plan order) whose link serves the prefix.
    pub node: usize,
}

/// The table `plan` gives: every node's address, then the plan's route table. Empty
/// when the node subnet has NSG rules (see the module's doc).
pub fn routes(plan: &Plan) -> Vec<FabricRoute> {
    if !plan.nsg.is_empty() {
        return Vec::new();
    }
    let mut routes: Vec<FabricRoute> = plan
        .nodes
        .iter()
        .enumerate()
        .map(|(node, n)| FabricRoute {
            prefix: Ipv4Cidr::new(n.ip, 32).expect("a /32 is a valid prefix"),
            node,
        })
        .collect();
    for entry in &plan.route_table {
        if let Some(node) = plan.nodes.iter().position(|n| n.name == entry.node) {
            routes.push(FabricRoute {
                prefix: entry.destination,
                node,
            });
        }
    }
    routes
}

/// The loaded object of the forwarder: `fabric` verified, `FABRIC_ROUTES` created (not
/// attached, not pinned). `install` makes one per cluster; tests run it on frames.
pub struct FabricProgram {
    ebpf: Ebpf,
}

impl FabricProgram {
    /// Loads the embedded object with room for `capacity` routes and verifies `fabric`.
    pub fn load(capacity: u32) -> Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(FABRIC_ROUTES_MAP, capacity)
            .load(object_bytes())
            .context("loading the aksnet eBPF object for the fabric")?;
        let program: &mut SchedClassifier = ebpf
            .program_mut(PROGRAM)
            .with_context(|| format!("the eBPF object has no program {PROGRAM}"))?
            .try_into()
            .with_context(|| format!("{PROGRAM} is not a TC classifier"))?;
        program
            .load()
            .with_context(|| format!("the verifier rejected {PROGRAM}"))?;
        Ok(Self { ebpf })
    }

    /// The `fabric` classifier (for `BPF_PROG_TEST_RUN`, and to attach).
    pub fn classifier(&self) -> Result<&SchedClassifier> {
        Ok(self
            .ebpf
            .program(PROGRAM)
            .with_context(|| format!("the eBPF object has no program {PROGRAM}"))?
            .try_into()?)
    }

    /// Writes one route of the table.
    pub fn upsert_route(&mut self, prefix: Ipv4Cidr, hop: FabricHop) -> Result<()> {
        let map = self
            .ebpf
            .map_mut(FABRIC_ROUTES_MAP)
            .with_context(|| format!("the eBPF object has no map {FABRIC_ROUTES_MAP}"))?;
        let mut table: LpmTrie<&mut MapData, u32, FabricHop> = LpmTrie::try_from(map)?;
        table
            .insert(
                &Key::new(u32::from(prefix.prefix()), map_addr(prefix.network())),
                hop,
                0,
            )
            .with_context(|| format!("writing {prefix} to {FABRIC_ROUTES_MAP}"))?;
        Ok(())
    }

    /// The `STATS` counters, summed over CPUs.
    pub fn stats(&self) -> Result<crate::datapath::ebpf::ReasonTotals> {
        let map = self
            .ebpf
            .map(STATS_MAP)
            .with_context(|| format!("the eBPF object has no map {STATS_MAP}"))?;
        let stats: aya::maps::PerCpuArray<&MapData, aks_ebpf_common::ReasonCounter> =
            aya::maps::PerCpuArray::try_from(map)?;
        crate::datapath::ebpf::ReasonTotals::read(&stats)
    }
}

/// Loads the forwarder for the cluster of `plan` into its vnet namespace: fills the
/// table, pins it, then attaches the program to every node link (maps first, so no
/// packet meets a half-filled table).
pub fn install(plan: &Plan, layout: &Layout) -> Result<()> {
    let dir = pin_dir(&plan.name);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating pin directory {}", dir.display()))?;
    // Room for the table as planned (`update` only ever shrinks it).
    let capacity = u32::try_from(plan.nodes.len() + plan.route_table.len())
        .unwrap_or(u32::MAX)
        .max(FABRIC_ROUTES_CAPACITY);
    let mut loaded = FabricProgram::load(capacity)?;
    let ebpf = &mut loaded.ebpf;
    for name in [FABRIC_ROUTES_MAP, STATS_MAP] {
        let map = ebpf
            .map(name)
            .with_context(|| format!("the eBPF object has no map {name}"))?;
        map.pin(dir.join(name))
            .with_context(|| format!("pinning map {name}"))?;
    }
    sync(plan, layout)?;
    let program: &mut SchedClassifier = ebpf
        .program_mut(PROGRAM)
        .context("the fabric program vanished from the loaded object")?
        .try_into()?;
    program
        .pin(dir.join(PROGRAM_PIN))
        .with_context(|| format!("pinning {PROGRAM}"))?;
    let mut mode = None;
    for index in 0..layout.nodes.len() {
        mode = Some(attach(
            program,
            &layout.vnet,
            &node_link(index),
            &dir,
            mode,
        )?);
    }
    Ok(())
}

/// Attaches the pinned program of cluster `cluster` to node link `index` again (the
/// link was rebuilt, as `aksnet update` does to every node). Nothing to do for a cluster
/// without the forwarder.
pub fn reattach(cluster: &str, vnet_namespace: &str, index: usize) -> Result<()> {
    let dir = pin_dir(cluster);
    let pin = dir.join(PROGRAM_PIN);
    if !pin.exists() {
        return Ok(());
    }
    let mut program = SchedClassifier::from_pin(&pin)
        .with_context(|| format!("opening the fabric program pinned at {}", pin.display()))?;
    let link = node_link(index);
    // A TCX link pinned for the old interface went with it; its pin is stale.
    let stale = dir.join(format!("{PROGRAM}_{link}"));
    if stale.exists() {
        std::fs::remove_file(&stale)
            .with_context(|| format!("removing the stale link pin {}", stale.display()))?;
    }
    attach(&mut program, vnet_namespace, &link, &dir, None).map(|_| ())
}

fn attach(
    program: &mut SchedClassifier,
    vnet_namespace: &str,
    link: &str,
    dir: &Path,
    known: Option<TcAttachMode>,
) -> Result<TcAttachMode> {
    let (mode, attachment) = netns::run_in(vnet_namespace, || {
        let mode = match known {
            Some(mode) => mode,
            None => TcAttachMode::probe(link)?,
        };
        Ok((mode, attach_ingress(program, link, mode)?))
    })
    .with_context(|| format!("attaching {PROGRAM} to {link} in {vnet_namespace}"))?;
    match attachment {
        TcAttachment::Link(fd_link) => {
            let path = dir.join(format!("{PROGRAM}_{link}"));
            fd_link
                .pin(&path)
                .with_context(|| format!("pinning a link at {}", path.display()))?;
        }
        // The interface holds a netlink filter until the namespace goes (see `attach`).
        TcAttachment::Filter(filter) => std::mem::forget(filter),
    }
    Ok(mode)
}

/// Makes the pinned table of the cluster of `plan` what `plan` says, in place: routes
/// written first, stale ones removed after, so a route that stays never disappears.
/// Node links that do not exist (being rebuilt) get no routes. Nothing to do for a
/// cluster without the forwarder.
pub fn sync(plan: &Plan, layout: &Layout) -> Result<()> {
    sync_except(plan, layout, None)
}

/// As [`sync`], without the routes over node `index`'s link: before the link is deleted
/// (`aksnet update` rebuilds every node), so no packet is sent to a vanished interface.
pub fn unroute_node(plan: &Plan, layout: &Layout, index: usize) -> Result<()> {
    sync_except(plan, layout, Some(index))
}

fn sync_except(plan: &Plan, layout: &Layout, skip: Option<usize>) -> Result<()> {
    let path = pin_dir(&plan.name).join(FABRIC_ROUTES_MAP);
    if !path.exists() {
        return Ok(());
    }
    let mut hops = BTreeMap::new();
    for (index, node) in layout.nodes.iter().enumerate() {
        if skip == Some(index) {
            continue;
        }
        if let Ok(ifindex) = netns::interface_index(&layout.vnet, &node_link(index)) {
            hops.insert(
                index,
                FabricHop {
                    ifindex,
                    gateway_mac: node.gateway_mac,
                    node_mac: node.uplink_mac,
                },
            );
        }
    }
    let wanted: BTreeMap<(u32, u8), FabricHop> = routes(plan)
        .into_iter()
        .filter_map(|r| {
            hops.get(&r.node)
                .map(|hop| ((map_addr(r.prefix.network()), r.prefix.prefix()), *hop))
        })
        .collect();
    let data = MapData::from_pin(&path)
        .with_context(|| format!("opening the fabric's table at {}", path.display()))?;
    let mut table: LpmTrie<MapData, u32, FabricHop> =
        LpmTrie::try_from(aya::maps::Map::LpmTrie(data))?;
    let present: Vec<Key<u32>> = table.keys().collect::<Result<_, _>>()?;
    for ((network, prefix_len), hop) in &wanted {
        table
            .insert(&Key::new(u32::from(*prefix_len), *network), hop, 0)
            .with_context(|| format!("writing a route to {FABRIC_ROUTES_MAP}"))?;
    }
    for key in present {
        let prefix_len = u8::try_from(key.prefix_len()).unwrap_or(u8::MAX);
        if !wanted.contains_key(&(key.data(), prefix_len)) {
            table
                .remove(&key)
                .with_context(|| format!("removing a stale route from {FABRIC_ROUTES_MAP}"))?;
        }
    }
    Ok(())
}

/// One route of a running cluster's table, as `aksnet inspect fabric` shows it.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FabricRouteRow {
    pub prefix: Ipv4Cidr,
    /// The vnet namespace's end of the link (`nodeN`), if it still exists.
    pub link: Option<String>,
    pub ifindex: u32,
    pub gateway_mac: String,
    pub node_mac: String,
}

/// The pinned table of cluster `state`, most specific first.
pub fn read(state: &ClusterState) -> Result<Vec<FabricRouteRow>> {
    let path = pin_dir(&state.name).join(FABRIC_ROUTES_MAP);
    let data = MapData::from_pin(&path).with_context(|| {
        format!(
            "opening {} (cluster {} has no fabric forwarder: made by an older aksnet, or its bench ran with --fabric stateless/stateful)",
            path.display(),
            state.name
        )
    })?;
    let table: LpmTrie<MapData, u32, FabricHop> = LpmTrie::try_from(aya::maps::Map::LpmTrie(data))?;
    let links: Vec<(u32, String)> = (0..state.nodes.len())
        .filter_map(|i| {
            netns::interface_index(&state.vnet, &node_link(i))
                .ok()
                .map(|ifindex| (ifindex, node_link(i)))
        })
        .collect();
    let mut rows = Vec::new();
    for entry in table.iter() {
        let (key, hop) = entry.with_context(|| format!("reading {FABRIC_ROUTES_MAP}"))?;
        let prefix_len = u8::try_from(key.prefix_len()).unwrap_or(u8::MAX);
        let network = Ipv4Addr::from(key.data().to_ne_bytes());
        let prefix = Ipv4Cidr::new(network, prefix_len).with_context(|| {
            format!("{FABRIC_ROUTES_MAP} holds an invalid prefix {network}/{prefix_len}")
        })?;
        rows.push(FabricRouteRow {
            prefix,
            link: links
                .iter()
                .find(|(i, _)| *i == hop.ifindex)
                .map(|(_, name)| name.clone()),
            ifindex: hop.ifindex,
            gateway_mac: crate::topology::spec::format_mac(&hop.gateway_mac),
            node_mac: crate::topology::spec::format_mac(&hop.node_mac),
        });
    }
    rows.sort_by_key(|r| (std::cmp::Reverse(r.prefix.prefix()), r.prefix.network()));
    Ok(rows)
}

/// What the forwarder did with the packets it saw, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FabricCounters {
    /// Routed from one node link to another by the program.
    pub forwarded_packets: u64,
    /// Handed to the vnet namespace's stack (and its iptables fabric).
    pub passed_packets: u64,
    /// Not IPv4 (ARP above all): handed to the stack too.
    pub passed_non_ipv4_packets: u64,
    /// The redirect failed (the target link vanished): dropped.
    pub redirect_failed_packets: u64,
}

/// The forwarder's counters of cluster `cluster`.
pub fn counters(cluster: &str) -> Result<FabricCounters> {
    use aks_ebpf_common::Reason;
    let totals = crate::datapath::ebpf::read_pinned(&pin_dir(cluster).join(STATS_MAP))?;
    Ok(FabricCounters {
        forwarded_packets: totals.get(Reason::FabricForwarded).packets,
        passed_packets: totals.get(Reason::FabricPassed).packets,
        passed_non_ipv4_packets: totals.get(Reason::PassedNonIpv4).packets,
        redirect_failed_packets: totals.get(Reason::DropRedirectFailed).packets,
    })
}

/// Detaches and removes the forwarder of a running cluster, leaving the iptables-only
/// fabric (what `aksnet bench --fabric stateless|stateful` measures). TCX links go with
/// their pins; netlink filters are deleted on each node link.
pub fn remove(cluster: &str, vnet_namespace: &str, nodes: usize) -> Result<()> {
    let dir = pin_dir(cluster);
    for index in 0..nodes {
        let link = node_link(index);
        netns::run_in(vnet_namespace, || {
            if TcAttachMode::probe(&link)? == TcAttachMode::Netlink {
                aya::programs::tc::qdisc_detach_program(
                    &link,
                    aya::programs::TcAttachType::Ingress,
                    PROGRAM,
                )
                .with_context(|| format!("detaching {PROGRAM} from {link}"))?;
            }
            Ok(())
        })?;
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aks_ebpf_common::fabric::FABRIC_TRACKED_SOURCE_PORTS;

    fn plan(yaml: &str) -> Plan {
        let description = crate::model::parse(yaml).expect("a description");
        let cluster = crate::model::validate(&description).expect("a valid cluster");
        crate::plan::plan(&cluster).expect("a plan")
    }

    fn table(plan: &Plan) -> Vec<(String, usize)> {
        routes(plan)
            .iter()
            .map(|r| (r.prefix.to_string(), r.node))
            .collect()
    }

    #[test]
    fn the_table_is_the_vnets_route_table_for_each_model() {
        let base = "datapath: ebpf\nvnet:\n  addressSpace: 10.224.0.0/12\n  nodeSubnet: 10.224.0.0/24\nnodePools:\n  - { name: nodepool1, count: 2 }\n";
        let kubenet = plan(&format!("name: k\nnetworkPlugin: kubenet\n{base}"));
        assert_eq!(
            table(&kubenet),
            [
                ("10.224.0.4/32".to_owned(), 0),
                ("10.224.0.5/32".to_owned(), 1),
                ("10.244.0.0/24".to_owned(), 0),
                ("10.244.1.0/24".to_owned(), 1),
            ]
        );
        let azure = plan(&format!("name: a\nnetworkPlugin: azure\n{base}"));
        let rows = table(&azure);
        assert_eq!(rows.len(), 2 + azure.route_table.len());
        for entry in &azure.route_table {
            assert_eq!(
                entry.destination.prefix(),
                32,
                "Azure CNI routes pod addresses"
            );
            assert!(rows.contains(&(
                entry.destination.to_string(),
                rows_node(&azure, &entry.node)
            )));
        }
    }

    fn rows_node(plan: &Plan, name: &str) -> usize {
        plan.nodes
            .iter()
            .position(|n| n.name == name)
            .expect("a planned node")
    }

    #[test]
    fn nsg_rules_leave_the_table_empty() {
        let base = "name: n\nnetworkPlugin: kubenet\ndatapath: ebpf\nvnet:\n  addressSpace: 10.224.0.0/12\n  nodeSubnet: 10.224.0.0/24\nnodePools:\n  - { name: nodepool1, count: 2 }\n";
        assert_eq!(routes(&plan(base)).len(), 4);
        let with_rules = plan(&format!(
            "{base}nsg:\n  - {{ name: deny-web, priority: 100, access: Deny, protocol: Tcp, destinationPortRange: '80' }}\n"
        ));
        assert_eq!(with_rules.nsg.len(), 1);
        assert!(routes(&with_rules).is_empty());
    }

    #[test]
    fn the_tracked_source_ports_are_the_node_port_range() {
        let range = crate::model::loadbalancer::NODE_PORT_RANGE;
        assert_eq!(FABRIC_TRACKED_SOURCE_PORTS, (*range.start(), *range.end()));
    }
}
