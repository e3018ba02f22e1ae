//! The eBPF datapath's flows, from a node's pinned `CONNTRACK`, in the same shape as the
//! kernel's conntrack entries of the iptables datapath.

use aks_ebpf_common::conntrack::{
    CtTimeout, CT_INBOUND, CT_REPLY_SEEN, PROTO_TCP, TCP_FIN, TCP_RST,
};
use aks_ebpf_common::{CtEntry, FlowKey, CONNTRACK_MAP};
use anyhow::{Context, Result};
use aya::maps::{HashMap, MapData};

use super::conntrack::{Flow, FlowTuple};
use super::{ip, protocol_name, NodePins};
use crate::datapath::ebpf::monotonic_now_ns;
use crate::model::conntrack::ConntrackSettings;

pub fn read(pins: &NodePins, settings: Option<&ConntrackSettings>) -> Result<Vec<Flow>> {
    let map = pins.map(CONNTRACK_MAP)?;
    let conntrack: HashMap<&MapData, FlowKey, CtEntry> = HashMap::try_from(&map)?;
    let now = monotonic_now_ns();
    let mut flows = Vec::new();
    for item in conntrack.iter() {
        let (key, entry) =
            item.with_context(|| format!("reading {CONNTRACK_MAP} of node {}", pins.node.name))?;
        flows.push(flow(&pins.node.name, &key, &entry, now, settings));
    }
    Ok(flows)
}

fn tuple(src: u32, dst: u32, sport: u16, dport: u16, protocol: u8) -> FlowTuple {
    let ports = matches!(protocol, 6 | 17);
    FlowTuple {
        src: ip(src),
        dst: ip(dst),
        sport: ports.then_some(sport),
        dport: ports.then_some(dport),
    }
}

fn flow(
    node: &str,
    key: &FlowKey,
    entry: &CtEntry,
    now: u64,
    settings: Option<&ConntrackSettings>,
) -> Flow {
    let p = key.protocol;
    let (original, reply) = if entry.flags & CT_INBOUND != 0 {
        // Keyed by the pod's reply direction; the peer opened the flow.
        (
            tuple(key.dst, key.src, key.dst_port, key.src_port, p),
            tuple(key.src, key.dst, key.src_port, key.dst_port, p),
        )
    } else {
        (
            tuple(key.src, key.dst, key.src_port, key.dst_port, p),
            tuple(key.dst, entry.nat_addr, key.dst_port, entry.nat_port, p),
        )
    };
    let state = (p == PROTO_TCP).then(|| {
        if entry.tcp_flags & TCP_RST != 0 {
            "CLOSE"
        } else if entry.tcp_flags & TCP_FIN != 0 {
            "FIN_WAIT"
        } else if entry.flags & CT_REPLY_SEEN != 0 {
            "ESTABLISHED"
        } else {
            "SYN_SENT"
        }
        .to_owned()
    });
    let idle_secs = now.saturating_sub(entry.last_seen_ns) / 1_000_000_000;
    let timeout = settings.map_or(0, |s| match entry.timeout_class(p) {
        CtTimeout::TcpEstablished => s.tcp_timeout_seconds,
        CtTimeout::TcpClosing => s.tcp_closing_timeout_seconds,
        CtTimeout::Datagram => s.udp_timeout_seconds,
    });
    let mut flags = Vec::new();
    if entry.flags & CT_REPLY_SEEN != 0 {
        flags.push("REPLIED".to_owned());
    }
    if entry.flags & CT_INBOUND != 0 {
        flags.push("INBOUND".to_owned());
    }
    Flow::new(
        node,
        &protocol_name(p),
        state,
        u64::from(timeout).saturating_sub(idle_secs),
        original,
        reply,
        flags,
    )
}
