//! The node's side: kube-proxy's health servers, one listening socket per node and port
//! inside the node's namespace. `healthCheckNodePort` (one per `Local` LoadBalancer
//! service) answers 200 while the node has a local endpoint of the service and 503 when
//! it has none, with kube-proxy's JSON body; kube-proxy's healthz port answers 200 while
//! the node's proxy runs. Endpoints are the cluster's recorded ones (what `aksnet
//! services` changes), as kube-proxy counts the EndpointSlices it watches.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::netns;
use crate::state::ClusterState;

use super::PROXY_HEALTHZ_PORT;

/// What one (node, port) answers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// kube-proxy's own healthz.
    Proxy,
    /// A service's `healthCheckNodePort`, with the node's local endpoints of it.
    Service {
        name: String,
        local_endpoints: usize,
    },
}

type Answers = BTreeMap<(String, u16), Answer>;

struct Server {
    listener: Arc<TcpListener>,
    thread: Option<JoinHandle<()>>,
    /// The namespace's inode when the socket was opened: a node namespace made again
    /// (`aksnet update` reimages nodes) needs a new socket.
    namespace_inode: u64,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Makes the blocked `accept` return at once.
        let _ =
            nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The health servers of one cluster.
#[derive(Default)]
pub struct HealthServers {
    servers: BTreeMap<(String, u16), Server>,
    answers: Arc<RwLock<Answers>>,
}

fn namespace_inode(namespace: &str) -> Option<u64> {
    std::fs::metadata(netns::path(namespace))
        .ok()
        .map(|m| m.ino())
}

impl HealthServers {
    /// Opens and closes servers so each node serves what `state` asks now; returns the
    /// errors of sockets that could not be opened (retried on the next call).
    pub fn sync(&mut self, state: &ClusterState) -> Vec<String> {
        let mut wanted = Answers::new();
        for node in &state.nodes {
            wanted.insert((node.namespace.clone(), PROXY_HEALTHZ_PORT), Answer::Proxy);
            for exposure in &state.exposures {
                let Some(port) = exposure.health_check_node_port else {
                    continue;
                };
                let local_endpoints = state
                    .services
                    .iter()
                    .find(|s| s.name == exposure.service)
                    .map_or(0, |s| {
                        s.backends.iter().filter(|b| b.node == node.name).count()
                    });
                wanted.insert(
                    (node.namespace.clone(), port),
                    Answer::Service {
                        name: exposure.service.clone(),
                        local_endpoints,
                    },
                );
            }
        }
        // Answers first, so a server opened below answers right from its first request.
        match self.answers.write() {
            Ok(mut answers) => *answers = wanted.clone(),
            Err(poisoned) => *poisoned.into_inner() = wanted.clone(),
        }
        self.servers.retain(|key, server| {
            wanted.contains_key(key) && namespace_inode(&key.0) == Some(server.namespace_inode)
        });
        let mut errors = Vec::new();
        for key in wanted.keys() {
            if self.servers.contains_key(key) {
                continue;
            }
            match self.open(&key.0, key.1) {
                Ok(server) => {
                    self.servers.insert(key.clone(), server);
                }
                Err(e) => errors.push(format!("{}:{}: {e:#}", key.0, key.1)),
            }
        }
        errors
    }

    /// Closes the sockets of namespaces that were deleted (or made again) since they
    /// were opened: a socket keeps its namespace, and with it the node's veths, alive,
    /// which `aksnet update` (reimaging a node) waits for to go. Cheap: one `stat` per
    /// node and port; the agent calls it many times a second.
    pub fn close_gone(&mut self) {
        self.servers
            .retain(|key, server| namespace_inode(&key.0) == Some(server.namespace_inode));
    }

    fn open(&self, namespace: &str, port: u16) -> Result<Server> {
        let namespace_inode = namespace_inode(namespace)
            .with_context(|| format!("namespace {namespace} is not there"))?;
        let listener = netns::run_in(namespace, || {
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
                .with_context(|| format!("listening on port {port}"))
        })?;
        let listener = Arc::new(listener);
        let answers = Arc::clone(&self.answers);
        let key = (namespace.to_owned(), port);
        let accepting = Arc::clone(&listener);
        let thread = std::thread::Builder::new()
            .name(format!("health-{port}"))
            .spawn(move || {
                // Ends when `Server::drop` shuts the socket down.
                while let Ok((stream, _)) = accepting.accept() {
                    let answer = answers.read().ok().and_then(|a| a.get(&key).cloned());
                    let _ = respond(stream, answer.as_ref());
                }
            })
            .context("starting a health server thread")?;
        Ok(Server {
            listener,
            thread: Some(thread),
            namespace_inode,
        })
    }
}

/// Reads the request head and answers it as kube-proxy's health server does.
fn respond(mut stream: TcpStream, answer: Option<&Answer>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.set_write_timeout(Some(Duration::from_secs(1)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 512];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 4096 {
        match stream.read(&mut buf)? {
            0 => break,
            n => request.extend_from_slice(&buf[..n]),
        }
    }
    let (status, body) = match answer {
        Some(Answer::Proxy) => (
            "200 OK",
            format!(
                "{{\"lastUpdated\": \"{0}\", \"currentTime\": \"{0}\"}}",
                super::prober::now_ms()
            ),
        ),
        Some(Answer::Service {
            name,
            local_endpoints,
        }) => (
            if *local_endpoints > 0 {
                "200 OK"
            } else {
                "503 Service Unavailable"
            },
            format!(
                "{{\"service\": {{\"namespace\": \"default\", \"name\": \"{name}\"}}, \"localEndpoints\": {local_endpoints}, \"serviceProxyHealthy\": true}}"
            ),
        ),
        None => ("404 Not Found", String::new()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
