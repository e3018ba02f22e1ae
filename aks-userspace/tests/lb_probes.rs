//! Privileged: the fabric's load balancer probes nodes for real. `up` starts the
//! cluster's probe agent: kube-proxy's health servers answer in each node namespace
//! (`healthCheckNodePort` 200/503 from the node's local endpoints for `Local`,
//! kube-proxy's healthz for `Cluster`) and the prober in the vnet namespace sends HTTP
//! probes and takes nodes out of rotation and back. Both datapaths: with `Local`,
//! removing a node's only endpoint takes it out within interval × threshold and new
//! flows stop going there; giving it back puts it back; with `Cluster` every node stays
//! in rotation; the probes are counted at the node; `down` stops the agent, and a killed
//! agent leaves nothing behind.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use aks_userspace::check::{self, Endpoint, EndpointKind, ServiceProbeResult};
use aks_userspace::state::ClusterState;
use common::cluster::*;
use serde_json::Value;

/// `web-local` has a backend on each of the two nodes; `web` one, on the first.
const SERVICES: &str = "services:\n  - { name: web-local, clusterIP: 10.0.0.21, port: 80, targetPort: 17001, backends: 2, type: LoadBalancer, externalTrafficPolicy: Local }\n  - { name: web, clusterIP: 10.0.0.20, port: 80, targetPort: 17001, backends: 1, type: LoadBalancer }\n";

const INTERVAL_MS: u64 = 500;
const THRESHOLD: u64 = 2;
const ATTEMPTS: usize = 30;
/// A shared, busy machine: scheduling slack on top of interval × threshold.
const SLACK: Duration = Duration::from_millis(1500);

fn probe_rows(name: &str) -> Vec<Value> {
    json(&["inspect", "probes", "--cluster", name, "--json"])
        .as_array()
        .expect("probe rows")
        .clone()
}

fn row<'a>(rows: &'a [Value], service: &str, node: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["service"] == service && r["node"] == node)
        .unwrap_or_else(|| panic!("a probe row of {service} on {node}: {rows:?}"))
}

/// Waits (up to `limit`) until `done` holds for the probe rows; returns how long it took.
fn wait_rows(name: &str, limit: Duration, what: &str, done: impl Fn(&[Value]) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let rows = probe_rows(name);
        if done(&rows) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{what}: not within {limit:?}: {rows:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (up to `limit`) until the fabric's DNAT rules of `service` name exactly the
/// nodes in `nodes`; returns how long it took.
fn wait_rotation(vnet: &str, service: &str, nodes: &[&str], limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let rules = run(&[
            "ip", "netns", "exec", vnet, "iptables", "-w", "-t", "nat", "-S",
        ]);
        let now: BTreeSet<String> = rules
            .lines()
            .filter_map(|l| l.split(&format!("\"{service} -> ")).nth(1))
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_owned)
            .collect();
        let want: BTreeSet<String> = nodes.iter().map(|n| (*n).to_owned()).collect();
        if now == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "the load balancer still sends {service} to {now:?}, not {want:?}, after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("running a tool");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// SYNs counted by the test's rule in `namespace`'s INPUT (see `count_syns`).
fn counted(namespace: &str, port: u16) -> u64 {
    let comment = format!("aksnet-test-probes-{port}");
    run(&[
        "ip", "netns", "exec", namespace, "iptables", "-w", "-L", "INPUT", "-v", "-x", "-n",
    ])
    .lines()
    .find(|l| l.contains(&comment))
    .and_then(|l| l.split_whitespace().next()?.parse().ok())
    .unwrap_or_else(|| panic!("the counting rule in {namespace}"))
}

/// A rule without a target in the node's INPUT: counts the SYNs to `port`.
fn count_syns(namespace: &str, port: u16) {
    let port = port.to_string();
    let comment = format!("aksnet-test-probes-{port}");
    run(&[
        "ip",
        "netns",
        "exec",
        namespace,
        "iptables",
        "-w",
        "-I",
        "INPUT",
        "1",
        "-p",
        "tcp",
        "--dport",
        &port,
        "--syn",
        "-m",
        "comment",
        "--comment",
        &comment,
    ]);
}

fn internet(state: &ClusterState) -> Endpoint {
    Endpoint {
        label: "internet".into(),
        kind: EndpointKind::Internet,
        namespace: state.internet.namespace.clone(),
        address: state.internet.address,
    }
}

/// `ATTEMPTS` connections from the internet host to `service`'s frontend.
fn connect(state: &ClusterState, service: &str) -> ServiceProbeResult {
    let plan = state
        .services
        .iter()
        .find(|s| s.name == service)
        .unwrap_or_else(|| panic!("service {service} recorded"));
    let frontend = state
        .exposures
        .iter()
        .find(|e| e.service == service)
        .and_then(|e| e.frontend)
        .expect("a frontend");
    let backends = check::backend_listeners(state, plan).expect("backend pods");
    let result = check::probe_service_at(
        plan,
        SocketAddr::from((frontend, plan.port)),
        &backends,
        &internet(state),
        ATTEMPTS,
        check::FRONTEND_ATTEMPT_TIMEOUT,
    )
    .expect("connecting through the frontend");
    eprintln!(
        "{service}: {} of {} answered, by {:?}",
        result.answered,
        result.attempts,
        result
            .backends
            .iter()
            .map(|b| (b.pod.as_str(), b.answers))
            .collect::<Vec<_>>()
    );
    result
}

/// The nodes whose backends answered.
fn answering_nodes(state: &ClusterState, result: &ServiceProbeResult) -> BTreeSet<String> {
    result
        .backends
        .iter()
        .filter(|b| b.answers > 0)
        .filter_map(|b| {
            state
                .nodes
                .iter()
                .find(|n| n.pods.iter().any(|p| p.name == b.pod))
                .map(|n| n.name.clone())
        })
        .collect()
}

fn set_local_backends(name: &str, backends: &str) {
    add_load_balancer_service(name, "web-local", "10.0.0.21", backends, "Local");
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.contains("probe-agent"))
}

fn probes_follow_local_endpoints(datapath: &str, tag: &str) {
    let cluster = TestCluster::new(tag);
    let name = cluster.name.clone();
    let file = description_with(&name, "azure", datapath, 2, 1, SERVICES);
    let interval = INTERVAL_MS.to_string();
    let threshold = THRESHOLD.to_string();
    aksnet_ok(&[
        "up",
        file.to_str().expect("utf-8 path"),
        "--keep",
        "--probe-interval-ms",
        &interval,
        "--probe-threshold",
        &threshold,
    ]);
    let state = ClusterState::require(&name).expect("cluster state");
    let agent = aks_userspace::cluster_lock::agent_pid(&name).expect("a probe agent runs");
    assert!(alive(agent), "pid {agent} is the probe agent");
    let (n0, n1) = (state.nodes[0].name.clone(), state.nodes[1].name.clone());
    let decision = Duration::from_millis(INTERVAL_MS * (THRESHOLD + 1)) + SLACK;

    // Every node has a backend of web-local, and every node's proxy answers for web.
    wait_rows(&name, decision, "every node in rotation", |rows| {
        rows.len() == 4 && rows.iter().all(|r| r["state"] == "up")
    });
    let rows = probe_rows(&name);
    let local = row(&rows, "web-local", &n1);
    let hc_port = state
        .exposures
        .iter()
        .find(|e| e.service == "web-local")
        .and_then(|e| e.health_check_node_port)
        .expect("a healthCheckNodePort");
    assert_eq!(local["probe"], format!("HTTP {hc_port}/healthz"));
    assert_eq!(local["lastResult"], "200");
    assert_eq!(row(&rows, "web", &n1)["probe"], "HTTP 10256/healthz");
    let both = connect(&state, "web-local");
    assert_eq!(both.answered, ATTEMPTS, "{both:?}");
    assert_eq!(
        answering_nodes(&state, &both),
        BTreeSet::from([n0.clone(), n1.clone()]),
        "both nodes carry new flows"
    );

    // The probes are packets: counted at node 1 as the agent counts them.
    let node1 = &state.nodes[1].namespace;
    count_syns(node1, hc_port);
    let before = row(&probe_rows(&name), "web-local", &n1)["probes"]
        .as_u64()
        .expect("a count");
    let at_node_before = counted(node1, hc_port);
    std::thread::sleep(Duration::from_millis(INTERVAL_MS * 6));
    let at_node = counted(node1, hc_port) - at_node_before;
    let after = row(&probe_rows(&name), "web-local", &n1)["probes"]
        .as_u64()
        .expect("a count");
    eprintln!(
        "in {} ms: {at_node} probe SYNs counted at {n1}, the agent counted {} probes",
        INTERVAL_MS * 6,
        after - before
    );
    assert!(
        (4..=8).contains(&at_node),
        "about one probe per {INTERVAL_MS} ms reaches the node: {at_node} in 6 intervals"
    );
    assert!(
        at_node.abs_diff(after - before) <= 1,
        "each probe the agent counts is a packet at the node ({at_node} vs {})",
        after - before
    );

    // Node 1's endpoint goes: its healthCheckNodePort answers 503, the probe takes it
    // out, new flows only go to node 0. `Cluster` keeps both nodes.
    set_local_backends(&name, "1");
    let state = ClusterState::require(&name).expect("cluster state");
    let out_after = wait_rows(&name, decision, "node 1 out of rotation", |rows| {
        row(rows, "web-local", &n1)["state"] == "down"
    });
    let rules_after = wait_rotation(&state.vnet, "web-local", &[&n0], decision);
    eprintln!(
        "node 1 out of rotation {} ms after its endpoint went, its DNAT rule gone {} ms after (bound {} ms)",
        out_after.as_millis(),
        (out_after + rules_after).as_millis(),
        decision.as_millis()
    );
    let rows = probe_rows(&name);
    assert_eq!(row(&rows, "web-local", &n1)["lastResult"], "503");
    assert_eq!(row(&rows, "web-local", &n0)["state"], "up");
    let only = connect(&state, "web-local");
    assert_eq!(
        only.answered, ATTEMPTS,
        "no new flow goes to node 1 (it would be dropped there): {only:?}"
    );
    assert_eq!(answering_nodes(&state, &only), BTreeSet::from([n0.clone()]));
    assert!(rows
        .iter()
        .filter(|r| r["service"] == "web")
        .all(|r| r["state"] == "up"));
    wait_rotation(&state.vnet, "web", &[&n0, &n1], decision);

    // The endpoint comes back: so does the node.
    set_local_backends(&name, "2");
    let state = ClusterState::require(&name).expect("cluster state");
    let back_after = wait_rows(&name, decision, "node 1 back in rotation", |rows| {
        row(rows, "web-local", &n1)["state"] == "up"
    });
    wait_rotation(&state.vnet, "web-local", &[&n0, &n1], decision);
    eprintln!(
        "node 1 back in rotation {} ms after its endpoint came back",
        back_after.as_millis()
    );
    let again = connect(&state, "web-local");
    assert_eq!(again.answered, ATTEMPTS, "{again:?}");
    assert_eq!(
        answering_nodes(&state, &again),
        BTreeSet::from([n0.clone(), n1.clone()])
    );

    // `down` stops the agent (by the PID holding its lock) and leaves nothing.
    let out = aksnet_ok(&["down", &name]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("its probe agent (pid {agent})")),
        "down says it stopped the agent: {said}"
    );
    assert_gone(&name);
    assert!(!alive(agent), "the probe agent {agent} was stopped by down");
}

cell_tests!(probes_follow_local_endpoints:
    probes_follow_local_endpoints_ebpf("ebpf", "pe"),
    probes_follow_local_endpoints_iptables("iptables", "pi"),
);

/// A killed agent leaves no namespace, rule or process behind: the cluster is removed
/// by `down` as usual (its fabric keeps the last rotation meanwhile).
#[test]
fn a_killed_agent_leaves_nothing_behind() {
    let cluster = TestCluster::new("pk");
    let name = cluster.name.clone();
    let file = description_with(&name, "azure", "iptables", 2, 1, SERVICES);
    aksnet_ok(&[
        "up",
        file.to_str().expect("utf-8 path"),
        "--keep",
        "--probe-interval-ms",
        "300",
    ]);
    let agent = aks_userspace::cluster_lock::agent_pid(&name).expect("a probe agent runs");
    assert!(alive(agent));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("killing the agent");
    let started = Instant::now();
    while alive(agent) || aks_userspace::cluster_lock::agent_alive(&name) {
        assert!(started.elapsed() < Duration::from_secs(5), "the agent ends");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(aks_userspace::cluster_lock::agent_pid(&name), None);
    let out = aksnet_ok(&["inspect", "probes", "--cluster", &name]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no probe agent runs"),
        "inspect says so"
    );
    cluster.down();
}
