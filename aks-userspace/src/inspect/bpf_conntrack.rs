//! The eBPF datapath's flows, in the same shape as the kernel's conntrack entries of the
//! iptables datapath: masqueraded and inbound flows from a node's pinned `CONNTRACK`,
//! load-balanced flows to a ClusterIP (DNAT to their backend) from its `LB_FLOWS`.

use aks_ebpf_common::conntrack::{
    CtTimeout, CT_INBOUND, CT_REPLY_SEEN, PROTO_TCP, TCP_FIN, TCP_RST,
};
use aks_ebpf_common::lb::{LbFlow, LB_FLOWS_MAP};
use aks_ebpf_common::{CtEntry, FlowKey, CONNTRACK_MAP};
use anyhow::Result;

use super::flow::{Flow, FlowTuple};
use super::{ip, protocol_name, NodePins};
use crate::datapath::ebpf::monotonic_now_ns;
use crate::model::conntrack::ConntrackSettings;

/// The flows of `CONNTRACK`, then those of `LB_FLOWS`.
pub fn read(pins: &NodePins, settings: Option<&ConntrackSettings>) -> Result<Vec<Flow>> {
    let node = &pins.node.name;
    let now = monotonic_now_ns();
    let mut flows = Vec::new();
    for (key, entry) in pins.hash_entries::<FlowKey, CtEntry>(CONNTRACK_MAP)? {
        flows.push(flow(node, &key, &entry, now, settings));
    }
    for (key, entry) in pins.hash_entries::<FlowKey, LbFlow>(LB_FLOWS_MAP)? {
        flows.push(service_flow(node, &key, &entry, now, settings));
    }
    Ok(flows)
}

/// Seconds left before the GC takes a flow of timeout class `class` idle since `last_seen_ns`.
fn seconds_left(
    settings: Option<&ConntrackSettings>,
    class: CtTimeout,
    last_seen_ns: u64,
    now: u64,
) -> u64 {
    let idle_secs = now.saturating_sub(last_seen_ns) / 1_000_000_000;
    let timeout = settings.map_or(0, |s| match class {
        CtTimeout::TcpEstablished => s.tcp_timeout_seconds,
        CtTimeout::TcpClosing => s.tcp_closing_timeout_seconds,
        CtTimeout::Datagram => s.udp_timeout_seconds,
    });
    u64::from(timeout).saturating_sub(idle_secs)
}

/// A client's flow to a ClusterIP, keyed as the client sent it: the reply comes from the
/// backend, to the client (or, for a pod reaching itself, to the hairpin address). The
/// entry records only the client's TCP flags, so an open flow shows as `OPEN` (replies
/// are not tracked here).
fn service_flow(
    node: &str,
    key: &FlowKey,
    entry: &LbFlow,
    now: u64,
    settings: Option<&ConntrackSettings>,
) -> Flow {
    let p = key.protocol;
    let reply = entry.reply_key(key);
    let state = (p == PROTO_TCP).then(|| tcp_state(entry.tcp_flags, "OPEN"));
    Flow::new(
        node,
        &protocol_name(p),
        state,
        seconds_left(settings, entry.timeout_class(p), entry.last_seen_ns, now),
        tuple(key.src, key.dst, key.src_port, key.dst_port, p),
        tuple(reply.src, reply.dst, reply.src_port, reply.dst_port, p),
        vec!["SERVICE".to_owned()],
    )
}

/// The state TCP `flags` seen so far show: `CLOSE` after a RST, `FIN_WAIT` after a FIN,
/// `open` before either.
fn tcp_state(flags: u8, open: &str) -> String {
    if flags & TCP_RST != 0 {
        "CLOSE"
    } else if flags & TCP_FIN != 0 {
        "FIN_WAIT"
    } else {
        open
    }
    .to_owned()
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
        let replied = entry.flags & CT_REPLY_SEEN != 0;
        tcp_state(
            entry.tcp_flags,
            if replied { "ESTABLISHED" } else { "SYN_SENT" },
        )
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
        seconds_left(settings, entry.timeout_class(p), entry.last_seen_ns, now),
        original,
        reply,
        flags,
    )
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use aks_ebpf_common::addr::ipv4;
    use aks_ebpf_common::conntrack::TCP_SYN;

    use super::*;

    fn to_service(client: [u8; 4], backend: [u8; 4]) -> Flow {
        let key = FlowKey::new(ipv4(client), ipv4([10, 0, 0, 20]), 40000, 80, PROTO_TCP);
        let entry = LbFlow {
            backend_addr: ipv4(backend),
            backend_port: 8080,
            tcp_flags: TCP_SYN,
            ..Default::default()
        };
        service_flow("n0", &key, &entry, 0, None)
    }

    #[test]
    fn a_service_flow_is_destination_natted_to_its_backend() {
        let flow = to_service([10, 244, 0, 2], [10, 244, 1, 3]);
        assert_eq!(flow.nat.as_deref(), Some("dnat"));
        assert_eq!(flow.original.dst, Ipv4Addr::new(10, 0, 0, 20));
        assert_eq!(flow.original.dport, Some(80));
        assert_eq!(flow.reply.src, Ipv4Addr::new(10, 244, 1, 3));
        assert_eq!(flow.reply.sport, Some(8080));
        assert_eq!(flow.reply.dst, Ipv4Addr::new(10, 244, 0, 2));
        assert_eq!(flow.state.as_deref(), Some("OPEN"));
        assert_eq!(flow.flags, ["SERVICE"]);
    }

    #[test]
    fn a_pod_reaching_itself_through_a_service_is_also_source_natted() {
        let flow = to_service([10, 244, 0, 2], [10, 244, 0, 2]);
        assert_eq!(flow.nat.as_deref(), Some("snat+dnat"));
        assert_eq!(flow.reply.dst, Ipv4Addr::new(169, 254, 42, 1));
    }
}
