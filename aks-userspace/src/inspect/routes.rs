//! `inspect routes`: the `ROUTES` LPM trie of each node, and which route an address takes.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use serde::Serialize;

use aks_ebpf_common::{Route, RouteKind, ROUTES_MAP, ROUTE_MASQUERADE, ROUTE_OVERLAY};
use aya::maps::lpm_trie::Key;
use aya::maps::{LpmTrie, MapData};

use super::{ip, select_nodes, NodePins};
use crate::cidr::Ipv4Cidr;
use crate::state::ClusterState;

/// One prefix of a node's route view.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteRow {
    pub node: String,
    pub prefix: Ipv4Cidr,
    /// The [`RouteKind`] by name (`local-pod`, `remote-pods`, …), or the raw number if
    /// this build does not know it.
    pub kind: String,
    /// The node serving a `remote-pods` prefix.
    pub next_hop: Option<Ipv4Addr>,
    /// Pod traffic to this prefix leaves with the node address.
    pub masquerade: bool,
    /// Azure CNI Overlay: the prefix is reached through the node's tunnel device.
    pub overlay: bool,
}

/// The routes of `node` (every node when `None`), most specific first.
pub fn routes(state: &ClusterState, node: Option<&str>) -> Result<Vec<RouteRow>> {
    let mut rows = Vec::new();
    for layout in select_nodes(state, node)? {
        let pins = NodePins::open(state, layout)?;
        let map = pins.map(ROUTES_MAP)?;
        let trie: LpmTrie<&MapData, u32, Route> = LpmTrie::try_from(&map)?;
        let mut node_rows = Vec::new();
        for entry in trie.iter() {
            let (key, route) =
                entry.with_context(|| format!("reading {ROUTES_MAP} of node {}", layout.name))?;
            node_rows.push(row(&layout.name, &key, &route)?);
        }
        node_rows.sort_by_key(|r| (std::cmp::Reverse(r.prefix.prefix()), r.prefix.network()));
        rows.extend(node_rows);
    }
    Ok(rows)
}

fn row(node: &str, key: &Key<u32>, route: &Route) -> Result<RouteRow> {
    let prefix_len = u8::try_from(key.prefix_len()).unwrap_or(u8::MAX);
    let prefix = Ipv4Cidr::new(ip(key.data()), prefix_len).with_context(|| {
        format!(
            "{ROUTES_MAP} of node {node} holds an invalid prefix {}/{}",
            ip(key.data()),
            key.prefix_len()
        )
    })?;
    Ok(RouteRow {
        node: node.to_owned(),
        prefix,
        kind: RouteKind::from_u32(route.kind)
            .map_or_else(|| route.kind.to_string(), |k| k.name().to_owned()),
        next_hop: (route.next_hop != 0).then(|| ip(route.next_hop)),
        masquerade: route.flags & ROUTE_MASQUERADE != 0,
        overlay: route.flags & ROUTE_OVERLAY != 0,
    })
}

/// For each node in `rows`, the route the trie picks for `address`: the longest prefix
/// that contains it, as the kernel's LPM lookup does. Nodes without a covering route
/// are left out (the datapath treats that as the internet).
pub fn longest_prefix_match(rows: &[RouteRow], address: Ipv4Addr) -> Vec<RouteRow> {
    let mut picked: Vec<RouteRow> = Vec::new();
    for row in rows.iter().filter(|r| r.prefix.contains(address)) {
        match picked.iter_mut().find(|p| p.node == row.node) {
            Some(best) if best.prefix.prefix() < row.prefix.prefix() => *best = row.clone(),
            Some(_) => {}
            None => picked.push(row.clone()),
        }
    }
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(node: &str, cidr: &str, kind: &str) -> RouteRow {
        RouteRow {
            node: node.to_owned(),
            prefix: cidr.parse().expect("test CIDR"),
            kind: kind.to_owned(),
            next_hop: None,
            masquerade: false,
            overlay: false,
        }
    }

    #[test]
    fn the_longest_covering_prefix_wins_per_node() {
        let rows = [
            route("n0", "0.0.0.0/0", "external"),
            route("n0", "10.224.0.0/12", "vnet"),
            route("n0", "10.244.1.0/24", "remote-pods"),
            route("n1", "0.0.0.0/0", "external"),
        ];
        let picked = longest_prefix_match(&rows, Ipv4Addr::new(10, 244, 1, 7));
        assert_eq!(picked.len(), 2);
        assert_eq!(picked[0].kind, "remote-pods");
        assert_eq!(picked[1].kind, "external");
        let picked = longest_prefix_match(&rows, Ipv4Addr::new(10, 225, 0, 1));
        assert_eq!(picked[0].kind, "vnet");
    }
}
