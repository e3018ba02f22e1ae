//! The fabric's side: Azure's load balancer probing every node of every frontend with
//! an HTTP `GET` (200 is success, anything else or no answer is failure, as Azure's
//! HTTP probe counts), and deciding from consecutive results whether a node is in
//! rotation: `threshold` failures in a row take it out, `threshold` successes in a row
//! put it back (Azure's `probeThreshold`).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::model::loadbalancer::{ExternalTrafficPolicy, ServiceType};
use crate::state::ClusterState;

use super::record::{FrontendProbes, NodeProbe, ProbeRecord, ProbeState};
use super::{HEALTHZ_PATH, PROXY_HEALTHZ_PORT};

/// One probe to send: a frontend's probe of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub frontend: usize,
    pub node: usize,
    pub address: SocketAddr,
}

/// The frontends `state` has, with their probe port: the `healthCheckNodePort` with
/// `Local` (kube-proxy answers it from the node's local endpoints), kube-proxy's own
/// healthz port with `Cluster` (cloud-provider-azure's shared probe mode; see the
/// README for why not the node port).
pub fn frontends(state: &ClusterState) -> Vec<FrontendProbes> {
    state
        .exposures
        .iter()
        .filter(|e| e.service_type == ServiceType::LoadBalancer)
        .filter_map(|e| {
            let service = state.services.iter().find(|s| s.name == e.service)?;
            let probe_port = match e.external_traffic_policy {
                ExternalTrafficPolicy::Local => e.health_check_node_port?,
                ExternalTrafficPolicy::Cluster => PROXY_HEALTHZ_PORT,
            };
            Some(FrontendProbes {
                service: e.service.clone(),
                frontend: e.frontend?,
                port: service.port,
                policy: e.external_traffic_policy,
                probe_port,
                path: HEALTHZ_PATH.to_owned(),
                nodes: state
                    .nodes
                    .iter()
                    .map(|n| NodeProbe::new(&n.name, n.address))
                    .collect(),
            })
        })
        .collect()
}

/// Carries what `previous` knew about each (frontend, node) into `fresh`, for the
/// frontends that are still probed the same way.
pub fn carry_over(fresh: &mut [FrontendProbes], previous: &[FrontendProbes]) {
    for frontend in fresh {
        let Some(old) = previous.iter().find(|p| {
            (p.service.as_str(), p.probe_port, p.frontend)
                == (
                    frontend.service.as_str(),
                    frontend.probe_port,
                    frontend.frontend,
                )
        }) else {
            continue;
        };
        for node in &mut frontend.nodes {
            if let Some(known) = old
                .nodes
                .iter()
                .find(|n| n.node == node.node && n.address == node.address)
            {
                *node = known.clone();
            }
        }
    }
}

/// Every probe of a round.
pub fn targets(frontends: &[FrontendProbes]) -> Vec<Target> {
    frontends
        .iter()
        .enumerate()
        .flat_map(|(f, frontend)| {
            frontend
                .nodes
                .iter()
                .enumerate()
                .map(move |(n, node)| Target {
                    frontend: f,
                    node: n,
                    address: SocketAddr::from((node.address, frontend.probe_port)),
                })
        })
        .collect()
}

/// Sends one HTTP probe and returns (success, what was seen).
pub fn probe(address: SocketAddr, timeout: Duration) -> (bool, String) {
    match http_status(address, timeout) {
        Ok(200) => (true, "200".to_owned()),
        Ok(code) => (false, code.to_string()),
        Err(e) => (
            false,
            match e.kind() {
                std::io::ErrorKind::ConnectionRefused => "refused".to_owned(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                    "timeout".to_owned()
                }
                _ => format!("error: {e}"),
            },
        ),
    }
}

fn http_status(address: SocketAddr, timeout: Duration) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let host: Ipv4Addr = match address {
        SocketAddr::V4(v4) => *v4.ip(),
        SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    write!(
        stream,
        "GET {HEALTHZ_PATH} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: Load Balancer Agent\r\nConnection: close\r\n\r\n",
        address.port()
    )?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..])? {
            0 => break,
            n => read += n,
        }
    }
    parse_status(&head[..read]).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP status line")
    })
}

/// The status code of an `HTTP/1.x NNN` status line.
fn parse_status(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head.get(..12)?).ok()?;
    let (version, code) = text.split_at(9);
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    code.trim().parse().ok()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Records one result; returns whether the node's state changed.
pub fn record(node: &mut NodeProbe, success: bool, seen: String, threshold: u32, at: u64) -> bool {
    let previous_success = node.last_result.as_deref().map(|r| r == "200");
    node.probes += 1;
    if success {
        node.successes += 1;
    } else {
        node.failures += 1;
    }
    node.consecutive = if previous_success == Some(success) {
        node.consecutive.saturating_add(1)
    } else {
        1
    };
    node.last_result = Some(seen);
    node.last_probe_unix_ms = Some(at);
    let decided = match (success, node.state) {
        (true, ProbeState::Up) | (false, ProbeState::Down) => None,
        _ if node.consecutive >= threshold => Some(if success {
            ProbeState::Up
        } else {
            ProbeState::Down
        }),
        _ => None,
    };
    match decided {
        Some(state) => {
            node.state = state;
            node.changed_unix_ms = Some(at);
            true
        }
        None => false,
    }
}

/// The nodes of each frontend that get new flows: those in rotation, and where the
/// probe has not decided, those kube-proxy would answer for (as
/// `fabric::loadbalancer` writes them). A change means the fabric must be written.
pub fn rotation(record: &ProbeRecord, state: &ClusterState) -> Vec<(String, Vec<String>)> {
    record
        .frontends
        .iter()
        .map(|f| {
            let expected = |node: &str| match f.policy {
                ExternalTrafficPolicy::Cluster => true,
                ExternalTrafficPolicy::Local => state
                    .services
                    .iter()
                    .find(|s| s.name == f.service)
                    .is_some_and(|s| s.backends.iter().any(|b| b.node == node)),
            };
            let nodes = f
                .nodes
                .iter()
                .filter(|n| match n.state {
                    ProbeState::Up => true,
                    ProbeState::Down => false,
                    ProbeState::Unknown => expected(&n.node),
                })
                .map(|n| n.node.clone())
                .collect();
            (f.service.clone(), nodes)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeProbe {
        NodeProbe::new("n0", Ipv4Addr::new(10, 224, 0, 4))
    }

    #[test]
    fn threshold_results_in_a_row_decide_the_state() {
        let mut n = node();
        assert!(!record(&mut n, true, "200".into(), 2, 1));
        assert_eq!(n.state, ProbeState::Unknown);
        assert!(record(&mut n, true, "200".into(), 2, 2));
        assert_eq!((n.state, n.changed_unix_ms), (ProbeState::Up, Some(2)));
        // One failure is not enough; a success in between starts the count again.
        assert!(!record(&mut n, false, "503".into(), 2, 3));
        assert!(!record(&mut n, true, "200".into(), 2, 4));
        assert!(!record(&mut n, false, "503".into(), 2, 5));
        assert_eq!(n.state, ProbeState::Up);
        assert!(record(&mut n, false, "timeout".into(), 2, 6));
        assert_eq!(n.state, ProbeState::Down);
        assert_eq!((n.probes, n.successes, n.failures), (6, 3, 3));
        assert_eq!(n.last_result.as_deref(), Some("timeout"));
    }

    #[test]
    fn a_threshold_of_one_follows_every_result() {
        let mut n = node();
        assert!(record(&mut n, false, "refused".into(), 1, 1));
        assert_eq!(n.state, ProbeState::Down);
        assert!(record(&mut n, true, "200".into(), 1, 2));
        assert_eq!(n.state, ProbeState::Up);
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status(b"HTTP/1.1"), None);
    }
}
