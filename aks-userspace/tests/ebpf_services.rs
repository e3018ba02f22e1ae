//! Privileged: ClusterIP services on the eBPF datapath, both plugins. Connections spread
//! over every backend; a backend removed while a flow runs gets no new flows while the
//! established flow to a remaining backend goes on (and `inspect nat` shows it translated
//! to that backend); 10,000 services load and answer.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aks_userspace::netns;
use aks_userspace::state::ClusterState;
use common::cluster::*;
use common::require_privileges;

const TARGET_PORT: u16 = 8080;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 20);

/// Listeners on the target port in every pod: each connection is answered, line by
/// line, with the pod's name, until the client closes it.
struct Backends {
    stop: &'static AtomicBool,
}

impl Backends {
    fn start(state: &ClusterState) -> Self {
        let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
        for pod in state.nodes.iter().flat_map(|n| &n.pods) {
            let listener = netns::run_in(&pod.namespace, || {
                let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, TARGET_PORT))?;
                l.set_nonblocking(true)?;
                Ok(l)
            })
            .expect("listening in a pod");
            let name = pod.name.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let name = name.clone();
                            std::thread::spawn(move || {
                                let _ = stream.set_nonblocking(false);
                                let mut writer = stream.try_clone().expect("clone");
                                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                                    if line.is_empty() || writeln!(writer, "{name}").is_err() {
                                        break;
                                    }
                                }
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            });
        }
        Self { stop }
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A connection from `client_ns` to the service, and the first backend that answered.
fn connect(client_ns: &str, vip: Ipv4Addr) -> (TcpStream, String) {
    let stream = netns::run_in(client_ns, || {
        let s = TcpStream::connect_timeout(&SocketAddr::from((vip, 80)), Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        Ok(s)
    })
    .expect("connecting to the ClusterIP");
    let backend = ask(&stream);
    (stream, backend)
}

fn ask(stream: &TcpStream) -> String {
    let mut writer = stream.try_clone().expect("clone");
    writeln!(writer, "who").expect("asking");
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .expect("an answer");
    line.trim().to_owned()
}

fn spread(client_ns: &str, vip: Ipv4Addr, connections: usize) -> BTreeMap<String, usize> {
    let mut answers = BTreeMap::new();
    for _ in 0..connections {
        let (_, backend) = connect(client_ns, vip);
        *answers.entry(backend).or_insert(0) += 1;
    }
    answers
}

fn web(backends: u32) -> String {
    format!("services:\n  - {{ name: web, clusterIP: {VIP}, port: 80, targetPort: {TARGET_PORT}, protocol: TCP, backends: {backends} }}\n")
}

/// `inspect nat` on the client's node shows the held flow to the ClusterIP translated
/// to the backend that answered it (read from `LB_FLOWS`). The client is the first pod of
/// the first node.
fn assert_nat_shows_service_flow(state: &ClusterState, held: &TcpStream, backend: &str) {
    let backend_ip = state
        .nodes
        .iter()
        .flat_map(|n| &n.pods)
        .find(|p| p.name == backend)
        .unwrap_or_else(|| panic!("no pod {backend}"))
        .address;
    let sport = held.local_addr().expect("the client's address").port();
    let node = &state.nodes[0].name;
    let flows = json(&[
        "inspect",
        "nat",
        "--json",
        "--cluster",
        &state.name,
        "--node",
        node,
    ]);
    let flow = flows
        .as_array()
        .expect("flow rows")
        .iter()
        .find(|f| f["original"]["sport"] == sport && f["original"]["dst"] == VIP.to_string())
        .unwrap_or_else(|| panic!("no flow from port {sport} to {VIP} on {node}: {flows}"));
    // A pod that reached itself also has its source translated (hairpin).
    let hairpin = backend_ip == state.nodes[0].pods[0].address;
    let nat = if hairpin { "snat+dnat" } else { "dnat" };
    assert_eq!(flow["nat"], nat, "{flow}");
    assert_eq!(flow["original"]["dport"], 80, "{flow}");
    assert_eq!(flow["reply"]["src"], backend_ip.to_string(), "{flow}");
    assert_eq!(flow["reply"]["sport"], TARGET_PORT, "{flow}");
    assert_eq!(flow["state"], "OPEN", "{flow}");
}

#[test]
fn connections_spread_and_a_removed_backend_gets_no_new_flows() {
    require_privileges();
    for plugin in ["kubenet", "azure"] {
        let cluster = TestCluster::up_with(
            if plugin == "kubenet" { "vk" } else { "va" },
            plugin,
            "ebpf",
            2,
            2,
            &web(3),
        );
        let name = cluster.name.clone();
        let state = ClusterState::require(&name).expect("state");
        let _backends = Backends::start(&state);
        let client = state.nodes[0].pods[0].namespace.clone();
        let planned: Vec<String> = state.services[0]
            .backends
            .iter()
            .map(|b| b.pod.clone())
            .collect();

        let answers = spread(&client, VIP, 60);
        eprintln!("{plugin}: 60 connections to {VIP}:80 answered by {answers:?}");
        for backend in &planned {
            assert!(
                answers.contains_key(backend),
                "{plugin}: backend {backend} got no connection: {answers:?}"
            );
        }

        // Hold a flow to a backend that stays, then drop the last backend.
        let removed = planned[2].clone();
        let (held, held_backend) = (0..50)
            .map(|_| connect(&client, VIP))
            .find(|(_, b)| *b != removed)
            .expect("a flow to a remaining backend");
        assert_nat_shows_service_flow(&state, &held, &held_backend);
        let vip = VIP.to_string();
        aksnet_ok(&services_add(
            &name,
            "web",
            &vip,
            "2",
            &["--target-port", "8080"],
        ));
        assert_eq!(
            ask(&held),
            held_backend,
            "{plugin}: the established flow keeps its backend"
        );
        let after = spread(&client, VIP, 60);
        eprintln!("{plugin}: after removing {removed}: {after:?}");
        assert!(
            !after.contains_key(&removed),
            "{plugin}: the removed backend got new flows: {after:?}"
        );
        assert_eq!(
            after.values().sum::<usize>(),
            60,
            "{plugin}: every new flow answered"
        );
        drop(held);
        cluster.down();
    }
}

#[test]
fn ten_thousand_services_load_and_the_last_one_answers() {
    let cluster = TestCluster::new("vt");
    let name = cluster.name.clone();
    let mut services = String::from("services:\n");
    let mut last = VIP;
    for i in 0..10_000u32 {
        last = Ipv4Addr::new(10, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8);
        services.push_str(&format!("  - {{ name: s{i}, clusterIP: {last}, port: 80, targetPort: {TARGET_PORT}, backends: 1 }}\n"));
    }
    up_keep(&description_with(&name, "azure", "ebpf", 1, 2, &services));
    let state = ClusterState::require(&name).expect("state");
    assert_eq!(state.services.len(), 10_000);
    let _backends = Backends::start(&state);
    let client = state.nodes[0].pods[0].namespace.clone();
    let (_, backend) = connect(&client, last);
    assert!(
        backend.starts_with("nodepool1-0-pod"),
        "the 10,000th service answers: {backend}"
    );
    let more = ["--target-port", "8080"];
    let out = aksnet_ok(&services_add(&name, "extra", "10.0.200.1", "1", &more));
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(text.contains("the cluster has 10001 services"), "{text}");
    let (_, backend) = connect(&client, Ipv4Addr::new(10, 0, 200, 1));
    assert!(
        backend.starts_with("nodepool1-0-pod"),
        "the added service answers: {backend}"
    );
    cluster.down();
}
