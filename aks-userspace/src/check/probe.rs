//! Listeners in destination namespaces, connections from source namespaces.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::netns;

/// The TCP port the check listeners use in every destination namespace.
pub const CHECK_PORT: u16 = 17001;

/// How long a probe waits to connect and for the destination's answer.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

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
    /// Short human name, e.g. `pod nodepool1-0/0`.
    pub label: String,
    #[serde(flatten)]
    pub kind: EndpointKind,
    pub namespace: String,
    pub address: Ipv4Addr,
}

/// One probe: indices into the endpoint list, and the TCP port to connect to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub source: usize,
    pub destination: usize,
    /// Why this probe is in the matrix, e.g. "pod to pod, other node".
    pub path: &'static str,
    /// Usually [`CHECK_PORT`]; another port tests port-specific rules (NSG).
    pub port: u16,
}

impl Probe {
    /// A probe to the standard check port.
    pub fn new(source: usize, destination: usize, path: &'static str) -> Self {
        Self {
            source,
            destination,
            path,
            port: CHECK_PORT,
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
    pub port: u16,
    pub connected: bool,
    /// The peer address the destination's listener saw on the accepted connection.
    pub seen_source: Option<Ipv4Addr>,
    /// The endpoint that owns `seen_source`, if any (e.g. the source's node after SNAT).
    pub seen_as: Option<String>,
    /// Why the probe failed, when it did.
    pub error: Option<String>,
}

/// Runs `probes` over `endpoints`: opens one listener per distinct destination and port,
/// connects from each source in turn, and closes the listeners again.
pub fn run(endpoints: &[Endpoint], probes: &[Probe]) -> Result<Vec<ProbeResult>> {
    let stop = AtomicBool::new(false);
    let mut listeners = BTreeMap::new();
    for probe in probes {
        let destination = &endpoints[probe.destination];
        let key = (destination.namespace.clone(), probe.port);
        if listeners.contains_key(&key) {
            continue;
        }
        let port = probe.port;
        let listener = netns::run_in(&destination.namespace, || {
            let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
                .with_context(|| format!("listening on port {port}"))?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .with_context(|| format!("starting the check listener of {}", destination.label))?;
        listeners.insert(key, listener);
    }

    thread::scope(|scope| {
        for listener in listeners.values() {
            scope.spawn(|| answer_until(listener, &stop));
        }
        let results = probes
            .iter()
            .map(|probe| probe_one(endpoints, probe))
            .collect::<Vec<_>>();
        stop.store(true, Ordering::Relaxed);
        Ok(results)
    })
}

/// Accepts connections and writes each peer's address back, until `stop` is set.
fn answer_until(listener: &TcpListener, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                let _ = stream.set_nonblocking(false);
                let _ = writeln!(stream, "{}", peer.ip());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(2));
            }
            Err(_) => thread::sleep(Duration::from_millis(2)),
        }
    }
}

fn probe_one(endpoints: &[Endpoint], probe: &Probe) -> ProbeResult {
    let source = &endpoints[probe.source];
    let destination = &endpoints[probe.destination];
    let target = SocketAddr::new(IpAddr::V4(destination.address), probe.port);
    let outcome = netns::run_in(&source.namespace, || {
        let stream = TcpStream::connect_timeout(&target, PROBE_TIMEOUT)?;
        stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
        Ok(stream)
    })
    .and_then(|stream| {
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .context("reading the destination's answer")?;
        line.trim()
            .parse::<Ipv4Addr>()
            .with_context(|| format!("the destination answered {line:?}, not an address"))
    });
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
        path: probe.path.to_owned(),
        source: source.label.clone(),
        source_address: source.address,
        destination: destination.label.clone(),
        destination_address: destination.address,
        port: probe.port,
        connected,
        seen_source,
        seen_as,
        error,
    }
}
