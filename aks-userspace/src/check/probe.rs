//! Listeners in destination namespaces, connections from source namespaces.
//!
//! A probe waits at most its own timeout: short for probes the model expects to be
//! blocked ([`BLOCKED_TIMEOUT`]), longer for those it expects to connect
//! ([`REACHABLE_TIMEOUT`]). A TCP reset or an ICMP error (port, host or network
//! unreachable) is an answer and ends the probe at once.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use super::listener::{self, Listener};
use crate::model::Protocol;
use crate::netns;

/// The port the check listeners use in every destination namespace.
pub const CHECK_PORT: u16 = 17001;

/// How long a probe expected to connect waits to connect and for the answer: generous,
/// so a busy machine does not turn a working path into a failure.
pub const REACHABLE_TIMEOUT: Duration = Duration::from_millis(2000);

/// How long a probe expected to be blocked waits. Every hop is a veth on this machine
/// (a round trip takes well under a millisecond), so an answer that has not come in
/// this time is not coming; a blocked probe that does connect answers within it.
pub const BLOCKED_TIMEOUT: Duration = Duration::from_millis(300);

/// What kind of place an endpoint is; the report uses it to say what an address seen by
/// a destination means ("the pod's own address", "its node's address").
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum EndpointKind {
    Pod { node: String },
    Node { name: String },
    OnPrem,
    Internet,
}

/// A place probes start from or go to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Short human name, e.g. `nodepool1-0-pod0`, `on-prem`.
    pub label: String,
    #[serde(flatten)]
    pub kind: EndpointKind,
    pub namespace: String,
    pub address: Ipv4Addr,
}

/// One probe: indices into the endpoint list, protocol and port, and how long to wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub source: usize,
    pub destination: usize,
    /// Why this probe is in the matrix, e.g. "pod -> pod, other node".
    pub path: String,
    /// Usually [`CHECK_PORT`]; another port tests port-specific rules (NSG).
    pub port: u16,
    pub protocol: Protocol,
    /// How long to wait to connect and for the answer.
    pub timeout: Duration,
}

impl Probe {
    /// A TCP probe to the standard check port, waiting [`REACHABLE_TIMEOUT`].
    pub fn new(source: usize, destination: usize, path: impl Into<String>) -> Self {
        Self {
            source,
            destination,
            path: path.into(),
            port: CHECK_PORT,
            protocol: Protocol::Tcp,
            timeout: REACHABLE_TIMEOUT,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    pub path: String,
    pub source: String,
    pub source_address: Ipv4Addr,
    pub destination: String,
    pub destination_address: Ipv4Addr,
    pub protocol: Protocol,
    pub port: u16,
    /// Whether the destination answered (TCP: connected and answered).
    pub connected: bool,
    /// The peer address the destination's listener saw.
    pub seen_source: Option<Ipv4Addr>,
    /// The endpoint that owns `seen_source`, if any (e.g. the source's node after SNAT).
    pub seen_as: Option<String>,
    /// Why the probe failed, when it did.
    pub error: Option<String>,
    /// How long the probe took, in milliseconds.
    pub elapsed_ms: u64,
}

/// Runs `probes` over `endpoints`: opens one listener per distinct destination, protocol
/// and port, probes from each source in turn, and closes the listeners again.
pub fn run(endpoints: &[Endpoint], probes: &[Probe]) -> Result<Vec<ProbeResult>> {
    let mut wanted = BTreeMap::new();
    for probe in probes {
        let destination = &endpoints[probe.destination];
        let protocol = match probe.protocol {
            Protocol::Tcp => 0,
            Protocol::Udp => 1,
        };
        wanted
            .entry((destination.namespace.clone(), probe.port, protocol))
            .or_insert((destination, probe.protocol));
    }
    let listeners = wanted
        .into_iter()
        .map(|((namespace, port, _), (destination, protocol))| {
            Listener::open(&namespace, port, protocol, &destination.label)
                .with_context(|| format!("starting the check listener of {}", destination.label))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(listener::serve(&listeners, || {
        probes
            .iter()
            .map(|probe| probe_one(endpoints, probe))
            .collect()
    }))
}

fn probe_one(endpoints: &[Endpoint], probe: &Probe) -> ProbeResult {
    let source = &endpoints[probe.source];
    let destination = &endpoints[probe.destination];
    let target = SocketAddr::new(IpAddr::V4(destination.address), probe.port);
    let started = Instant::now();
    let outcome = netns::run_in(&source.namespace, || {
        let line = match probe.protocol {
            Protocol::Tcp => ask_tcp(target, probe.timeout),
            Protocol::Udp => ask_udp(target, probe.timeout),
        };
        line.map_err(|e| anyhow::anyhow!(describe_error(&e, probe.timeout)))
    })
    .and_then(|line| listener::parse_answer(&line).map(|(_, seen)| seen));
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let (connected, seen_source, error) = match outcome {
        Ok(seen) => (true, Some(seen), None),
        Err(e) => (false, None, Some(format!("{:#}", e.root_cause()))),
    };
    let seen_as = seen_source.and_then(|seen| {
        endpoints
            .iter()
            .find(|e| e.address == seen)
            .map(|e| e.label.clone())
    });
    ProbeResult {
        path: probe.path.clone(),
        source: source.label.clone(),
        source_address: source.address,
        destination: destination.label.clone(),
        destination_address: destination.address,
        protocol: probe.protocol,
        port: probe.port,
        connected,
        seen_source,
        seen_as,
        error,
        elapsed_ms,
    }
}

/// Connects and reads the listener's one-line answer.
pub(super) fn ask_tcp(target: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let stream = TcpStream::connect_timeout(&target, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line)
}

/// Sends one datagram from a connected socket (so ICMP errors come back as errors) and
/// waits for the answer.
pub(super) fn ask_udp(target: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    socket.connect(target)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.send(b"who?\n")?;
    let mut buffer = [0u8; 256];
    let len = socket.recv(&mut buffer)?;
    Ok(String::from_utf8_lossy(&buffer[..len]).into_owned())
}

/// A failed probe in words: what answered (a reset, an ICMP error) or that nothing did.
pub(super) fn describe_error(error: &std::io::Error, timeout: Duration) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => {
            format!("no answer within {} ms", timeout.as_millis())
        }
        ErrorKind::ConnectionRefused => "refused (TCP reset or ICMP port unreachable)".into(),
        ErrorKind::HostUnreachable => "host unreachable (ICMP)".into(),
        ErrorKind::NetworkUnreachable => "network unreachable (ICMP)".into(),
        ErrorKind::UnexpectedEof => "closed without an answer".into(),
        _ => error.to_string(),
    }
}
