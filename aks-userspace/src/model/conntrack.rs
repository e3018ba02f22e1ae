//! Conntrack and SNAT settings of the eBPF datapath: map capacity, the NAT port range,
//! idle timeouts per flow state and how often `aksnet up` collects expired flows.
//!
//! Defaults follow Cilium where it has one: 6 h for established TCP, 10 s for closing
//! TCP (FIN/RST seen, or a SYN never answered), 60 s for UDP and ICMP. The capacity
//! default is sized from memory, as Cilium's `bpf-map-dynamic-size-ratio` does: 0.25 %
//! of the machine's memory, shared by the nodes (they all live on this machine), at
//! about 128 bytes per tracked flow, clamped to 2^14 ..= 2^20 flows per node.

use serde::{Deserialize, Serialize};

use super::PlanError;

pub const TCP_TIMEOUT_S: u32 = 21_600;
pub const TCP_CLOSING_TIMEOUT_S: u32 = 10;
pub const DATAGRAM_TIMEOUT_S: u32 = 60;
pub const GC_INTERVAL_S: u32 = 10;
/// Every unprivileged port, so the pod's own (ephemeral) port is kept whenever it is free,
/// as iptables MASQUERADE keeps it: the peer then sees tuples exactly as unique over time
/// as the pod's own port choice makes them. Random ports from a narrower range reuse
/// tuples the peer may still hold in TIME_WAIT, and the SYN that meets one is answered
/// with an ACK instead of a SYN-ACK, costing the client a retransmit. The price: a
/// connection the node itself opens to the same peer and port from the same local port
/// would collide with a pod's mapping (the node's stack does not see the NAT table).
pub const NAT_PORT_RANGE: (u16, u16) = (1_024, 65_535);

/// Fraction of memory the conntrack maps may take (Cilium's default ratio).
const MEMORY_RATIO: f64 = 0.0025;
/// Approximate kernel memory per tracked flow: the conntrack entry, two NAT entries,
/// and hash table overhead.
const BYTES_PER_FLOW: u64 = 128;
const MIN_ENTRIES: u32 = 1 << 14;
const MAX_ENTRIES: u32 = 1 << 20;

/// As written in the description; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConntrackDescription {
    /// Flows tracked per node (CONNTRACK capacity; NAT gets twice as many entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_entries: Option<u32>,
    /// SNAT ports, e.g. "10000-32767".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_port_range: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_timeout_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_closing_timeout_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_timeout_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc_interval_seconds: Option<u32>,
}

/// Resolved settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConntrackSettings {
    pub max_entries: u32,
    pub nat_port_min: u16,
    pub nat_port_max: u16,
    pub tcp_timeout_seconds: u32,
    pub tcp_closing_timeout_seconds: u32,
    /// UDP and ICMP.
    pub udp_timeout_seconds: u32,
    pub gc_interval_seconds: u32,
}

/// The default capacity for `nodes` nodes sharing `memory_bytes` of memory.
pub fn default_max_entries(memory_bytes: u64, nodes: u64) -> u32 {
    let budget = (memory_bytes as f64 * MEMORY_RATIO) as u64 / nodes.max(1);
    let entries = (budget / BYTES_PER_FLOW).min(u64::from(u32::MAX)) as u32;
    entries.clamp(MIN_ENTRIES, MAX_ENTRIES)
}

/// MemTotal of this machine, from /proc/meminfo (8 GiB if it cannot be read).
pub fn machine_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(8 << 30)
}

pub fn resolve(
    description: Option<&ConntrackDescription>,
    nodes: u64,
) -> Result<ConntrackSettings, PlanError> {
    let d = description.cloned().unwrap_or_default();
    let max_entries = match d.max_entries {
        Some(n) if !(16..=MAX_ENTRIES * 4).contains(&n) => {
            return Err(PlanError::invalid(
                "conntrack.maxEntries",
                format!(
                "{n} flows per node is outside 16..={}; leave it out for the memory-sized default",
                MAX_ENTRIES * 4
            ),
            ))
        }
        Some(n) => n,
        None => default_max_entries(machine_memory_bytes(), nodes),
    };
    let (nat_port_min, nat_port_max) = match &d.nat_port_range {
        None => NAT_PORT_RANGE,
        Some(range) => parse_range(range).ok_or_else(|| {
            PlanError::invalid(
                "conntrack.natPortRange",
                format!("{range:?} is not a port range; write it as \"10000-32767\" (1..=65535, low ≤ high)"),
            )
        })?,
    };
    let seconds = |value: Option<u32>, default: u32, field: &str| -> Result<u32, PlanError> {
        match value {
            Some(0) => Err(PlanError::invalid(
                format!("conntrack.{field}"),
                "0 seconds would expire every flow at once; use at least 1",
            )),
            Some(v) => Ok(v),
            None => Ok(default),
        }
    };
    Ok(ConntrackSettings {
        max_entries,
        nat_port_min,
        nat_port_max,
        tcp_timeout_seconds: seconds(d.tcp_timeout_seconds, TCP_TIMEOUT_S, "tcpTimeoutSeconds")?,
        tcp_closing_timeout_seconds: seconds(
            d.tcp_closing_timeout_seconds,
            TCP_CLOSING_TIMEOUT_S,
            "tcpClosingTimeoutSeconds",
        )?,
        udp_timeout_seconds: seconds(
            d.udp_timeout_seconds,
            DATAGRAM_TIMEOUT_S,
            "udpTimeoutSeconds",
        )?,
        gc_interval_seconds: seconds(d.gc_interval_seconds, GC_INTERVAL_S, "gcIntervalSeconds")?,
    })
}

fn parse_range(range: &str) -> Option<(u16, u16)> {
    let (lo, hi) = range.split_once('-')?;
    let (lo, hi): (u16, u16) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
    (lo >= 1 && lo <= hi).then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_a_quarter_percent_of_memory_per_node_clamped() {
        // 24 GiB, 2 nodes: 0.25 % = 64.4 MB, 32.2 MB each, / 128 B = 251,658 flows.
        assert_eq!(default_max_entries(24 << 30, 2), 251_658);
        assert_eq!(
            default_max_entries(1 << 30, 50),
            MIN_ENTRIES,
            "small machines get the floor"
        );
        assert_eq!(
            default_max_entries(1 << 40, 1),
            MAX_ENTRIES,
            "big ones the ceiling"
        );
    }

    #[test]
    fn settings_default_and_validate() {
        let s = resolve(None, 2).expect("defaults");
        assert_eq!((s.nat_port_min, s.nat_port_max), NAT_PORT_RANGE);
        assert_eq!(s.tcp_timeout_seconds, 21_600);
        let d = ConntrackDescription {
            nat_port_range: Some("40000-40000".into()),
            max_entries: Some(16),
            ..Default::default()
        };
        let s = resolve(Some(&d), 2).expect("one port is a valid range");
        assert_eq!(
            (s.nat_port_min, s.nat_port_max, s.max_entries),
            (40000, 40000, 16)
        );
        // Each refused value, and the field the error names.
        let refused = [
            (
                ConntrackDescription {
                    nat_port_range: Some("5000-4000".into()),
                    ..Default::default()
                },
                "conntrack.natPortRange",
            ),
            (
                ConntrackDescription {
                    udp_timeout_seconds: Some(0),
                    ..Default::default()
                },
                "conntrack.udpTimeoutSeconds",
            ),
            (
                ConntrackDescription {
                    max_entries: Some(15),
                    ..Default::default()
                },
                "conntrack.maxEntries",
            ),
        ];
        for (bad, field) in refused {
            assert_eq!(
                resolve(Some(&bad), 2).expect_err(field).field(),
                Some(field)
            );
        }
    }
}
