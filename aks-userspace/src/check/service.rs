//! Service probes: does a ClusterIP reach its backends, and how are connections spread
//! over them? Every backend pod gets a listener on the service's targetPort (TCP or
//! UDP) that answers with the pod's name and the peer address it saw; a client inside
//! a pod (or node) namespace then connects to clusterIP:port a bounded number of times,
//! each time from a new source port, and counts who answered.
//!
//! Datapath-neutral on purpose: the iptables datapath answers through kube-proxy's
//! chains, the eBPF one will through its service maps, and the same probe measures both.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::Endpoint;
use crate::model::Protocol;
use crate::netns;
use crate::plan::ServicePlan;
use crate::state::ClusterState;

/// Connections per service `check --services` makes: enough that each of a handful of
/// backends answers with near certainty (3 backends: a backend misses all 60 with
/// probability (2/3)^60 ≈ 3e-11), few enough to stay under a second or two.
pub const DEFAULT_ATTEMPTS: usize = 60;

/// How long one attempt waits to connect and for the answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1000);

/// After this many failures in a row and no answer at all, the service is taken as
/// unreachable and the remaining attempts are skipped (keeps a broken datapath's check
/// short instead of waiting out every timeout).
const GIVE_UP_AFTER: usize = 3;

/// A backend the probe listens as: the pod's name and namespace, its address and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendListener {
    pub pod: String,
    pub namespace: String,
    pub address: Ipv4Addr,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendAnswers {
    pub pod: String,
    pub address: Ipv4Addr,
    pub answers: usize,
    /// Source addresses the backend saw (the client's own, or an address it was
    /// masqueraded to, e.g. for hairpin traffic).
    pub seen_sources: BTreeSet<Ipv4Addr>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceProbeResult {
    pub service: String,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub client: String,
    pub client_address: Ipv4Addr,
    pub attempts: usize,
    pub answered: usize,
    /// Every backend, in the service's order, with how often it answered.
    pub backends: Vec<BackendAnswers>,
    /// The first failure, if any attempt failed.
    pub error: Option<String>,
}

impl ServiceProbeResult {
    /// Whether every backend answered at least once.
    pub fn all_backends_answered(&self) -> bool {
        self.backends.iter().all(|b| b.answers > 0)
    }
}

/// Probes every service of `state` from its first pod, `attempts` connections each.
pub fn probe_services(state: &ClusterState, attempts: usize) -> Result<Vec<ServiceProbeResult>> {
    let Some((node, pod)) = state
        .nodes
        .iter()
        .find_map(|n| n.pods.first().map(|p| (n, p)))
    else {
        bail!("cluster {} has no pods to probe services from", state.name);
    };
    let client = Endpoint {
        label: pod.name.clone(),
        kind: super::EndpointKind::Pod {
            node: node.name.clone(),
        },
        namespace: pod.namespace.clone(),
        address: pod.address,
    };
    state
        .services
        .iter()
        .map(|service| {
            let backends = service
                .backends
                .iter()
                .map(|b| {
                    let namespace = state
                        .nodes
                        .iter()
                        .flat_map(|n| &n.pods)
                        .find(|p| p.name == b.pod)
                        .map(|p| p.namespace.clone())
                        .with_context(|| {
                            format!(
                                "backend {} of service {} is not a pod of the cluster",
                                b.pod, service.name
                            )
                        })?;
                    Ok(BackendListener {
                        pod: b.pod.clone(),
                        namespace,
                        address: b.ip,
                        port: b.port,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            probe_service(service, &backends, &client, attempts)
        })
        .collect()
}

/// Opens a listener in every backend's namespace, makes `attempts` connections to the
/// service from `client`'s namespace, and closes the listeners again.
pub fn probe_service(
    service: &ServicePlan,
    backends: &[BackendListener],
    client: &Endpoint,
    attempts: usize,
) -> Result<ServiceProbeResult> {
    let listeners = backends
        .iter()
        .map(|b| Listener::open(b, service.protocol))
        .collect::<Result<Vec<_>>>()?;
    let stop = AtomicBool::new(false);
    let outcomes = thread::scope(|scope| {
        for listener in &listeners {
            scope.spawn(|| listener.answer_until(&stop));
        }
        let outcomes = connect_repeatedly(service, client, attempts);
        stop.store(true, Ordering::Relaxed);
        outcomes
    })?;

    let mut by_pod: BTreeMap<String, (usize, BTreeSet<Ipv4Addr>)> = BTreeMap::new();
    let mut answered = 0;
    let mut error = None;
    for outcome in &outcomes {
        match outcome {
            Ok((pod, seen)) => {
                answered += 1;
                let entry = by_pod.entry(pod.clone()).or_default();
                entry.0 += 1;
                entry.1.insert(*seen);
            }
            Err(e) => {
                error.get_or_insert_with(|| e.clone());
            }
        }
    }
    Ok(ServiceProbeResult {
        service: service.name.clone(),
        cluster_ip: service.cluster_ip,
        port: service.port,
        protocol: service.protocol,
        client: client.label.clone(),
        client_address: client.address,
        attempts: outcomes.len(),
        answered,
        backends: backends
            .iter()
            .map(|b| {
                let (answers, seen_sources) = by_pod.remove(&b.pod).unwrap_or_default();
                BackendAnswers {
                    pod: b.pod.clone(),
                    address: b.address,
                    answers,
                    seen_sources,
                }
            })
            .collect(),
        error,
    })
}

/// One answer: which backend pod, and which source address it saw.
type Answer = std::result::Result<(String, Ipv4Addr), String>;

/// The attempts, each on a new socket (so a new source port and a new load-balancing
/// choice), from a thread inside the client's namespace.
fn connect_repeatedly(
    service: &ServicePlan,
    client: &Endpoint,
    attempts: usize,
) -> Result<Vec<Answer>> {
    let target = SocketAddr::from((service.cluster_ip, service.port));
    netns::run_in(&client.namespace, || {
        let mut outcomes = Vec::with_capacity(attempts);
        for _ in 0..attempts {
            let outcome = match service.protocol {
                Protocol::Tcp => ask_tcp(target),
                Protocol::Udp => ask_udp(target),
            }
            .and_then(|line| parse_answer(&line))
            .map_err(|e| format!("{:#}", e.root_cause()));
            outcomes.push(outcome);
            let failing = outcomes.iter().rev().take_while(|o| o.is_err()).count();
            if failing >= GIVE_UP_AFTER && failing == outcomes.len() {
                break;
            }
        }
        Ok(outcomes)
    })
    .with_context(|| format!("probing service {} from {}", service.name, client.label))
}

fn ask_tcp(target: SocketAddr) -> Result<String> {
    let stream = TcpStream::connect_timeout(&target, ATTEMPT_TIMEOUT)?;
    stream.set_read_timeout(Some(ATTEMPT_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .context("reading the backend's answer")?;
    Ok(line)
}

fn ask_udp(target: SocketAddr) -> Result<String> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    socket.connect(target)?;
    socket.set_read_timeout(Some(ATTEMPT_TIMEOUT))?;
    socket.send(b"who?\n")?;
    let mut buffer = [0u8; 256];
    let len = socket
        .recv(&mut buffer)
        .context("waiting for the backend's answer")?;
    Ok(String::from_utf8_lossy(&buffer[..len]).into_owned())
}

/// `<pod> <seen source>`, as the listeners write it.
fn parse_answer(line: &str) -> Result<(String, Ipv4Addr)> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next().map(str::parse::<Ipv4Addr>)) {
        (Some(pod), Some(Ok(seen))) => Ok((pod.to_owned(), seen)),
        _ => bail!("the backend answered {line:?}, not `<pod> <address>`"),
    }
}

/// A backend's listening socket, made inside its pod namespace.
enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

struct Listener {
    pod: String,
    socket: Socket,
}

impl Listener {
    fn open(backend: &BackendListener, protocol: Protocol) -> Result<Self> {
        let address = (Ipv4Addr::UNSPECIFIED, backend.port);
        let socket = netns::run_in(&backend.namespace, || {
            Ok(match protocol {
                Protocol::Tcp => {
                    let listener = TcpListener::bind(address)?;
                    listener.set_nonblocking(true)?;
                    Socket::Tcp(listener)
                }
                Protocol::Udp => {
                    let socket = UdpSocket::bind(address)?;
                    socket.set_read_timeout(Some(Duration::from_millis(20)))?;
                    Socket::Udp(socket)
                }
            })
        })
        .with_context(|| {
            format!(
                "listening on {protocol} port {} in backend {}",
                backend.port, backend.pod
            )
        })?;
        Ok(Self {
            pod: backend.pod.clone(),
            socket,
        })
    }

    /// Answers every connection or datagram with `<pod> <peer address>` until `stop`.
    fn answer_until(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            match &self.socket {
                Socket::Tcp(listener) => match listener.accept() {
                    Ok((mut stream, peer)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = writeln!(stream, "{} {}", self.pod, peer.ip());
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                },
                Socket::Udp(socket) => {
                    let mut buffer = [0u8; 64];
                    if let Ok((_, peer)) = socket.recv_from(&mut buffer) {
                        let answer = format!("{} {}\n", self.pod, peer.ip());
                        let _ = socket.send_to(answer.as_bytes(), peer);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_name_the_backend_and_the_address_it_saw() {
        assert_eq!(
            parse_answer("kn-0-pod1 10.244.0.1\n").expect("valid"),
            ("kn-0-pod1".to_owned(), Ipv4Addr::new(10, 244, 0, 1))
        );
        assert!(parse_answer("hello\n").is_err());
    }
}
