//! Privileged: `aksnet inspect` and `aksnet monitor` against running clusters. Traffic
//! is driven first (`check`, a connection the NSG denies), then the JSON output must show
//! what that traffic must have left behind: the pods, the routes it took, counters that
//! grew, the drop as an event within a second, and on iptables the translated flows.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aks_userspace::netns;
use aks_userspace::state::ClusterState;
use aks_userspace::topology::spec::format_mac;
use common::cluster::*;
use common::require_privileges;
use serde_json::Value;

const NODE0: &str = "nodepool1-0";
const DENIED_PORT: u16 = 17002;

/// stderr of a command that must fail.
fn failure(args: &[&str]) -> String {
    let out = aksnet(args);
    assert!(
        !out.status.success(),
        "`aksnet {}` should fail, printed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn counter(stats: &Value, node: &str, reason: &str) -> u64 {
    stats
        .as_array()
        .expect("stats rows")
        .iter()
        .find(|r| r["node"] == node && r["reason"] == reason)
        .unwrap_or_else(|| panic!("no {reason} row for {node}: {stats}"))["packets"]
        .as_u64()
        .expect("a packet count")
}

/// One SYN from the on-prem host to `pod:port`; the NSG drops it, so the connect
/// times out (quickly: nothing will answer).
fn syn_from_on_prem(state: &ClusterState, pod: Ipv4Addr, port: u16) {
    let target = SocketAddr::from((pod, port));
    let _ = netns::run_in(&state.on_prem.namespace, || {
        Ok(TcpStream::connect_timeout(
            &target,
            Duration::from_millis(300),
        ))
    });
}

#[test]
fn ebpf_maps_counters_and_a_denied_syn_read_back() {
    require_privileges();
    let name = cluster_name("ie");
    let _down = Down(name.clone());
    let nsg = format!(
        "nsg:\n  - {{ name: deny-{DENIED_PORT}, priority: 100, access: Deny, protocol: Tcp, destinationAddressPrefix: 10.224.0.0/24, destinationPortRange: \"{DENIED_PORT}\" }}\n"
    );
    up_keep(&description_with(&name, "azure", "ebpf", 2, 2, &nsg));
    let state = ClusterState::require(&name).expect("cluster state");
    let cluster = ["--cluster", name.as_str()];

    // Endpoints: every pod of every node, with the addresses and MACs of the layout.
    let endpoints = json(&[&["inspect", "endpoints", "--json"][..], &cluster].concat());
    let rows = endpoints.as_array().expect("endpoint rows");
    let pods: Vec<_> = state
        .nodes
        .iter()
        .flat_map(|n| n.pods.iter().map(move |p| (n, p)))
        .collect();
    assert_eq!(rows.len(), pods.len(), "{endpoints}");
    for (node, pod) in &pods {
        let row = rows
            .iter()
            .find(|r| r["ip"] == pod.address.to_string())
            .unwrap_or_else(|| panic!("pod {} missing: {endpoints}", pod.address));
        assert_eq!(row["node"], node.name.as_str());
        assert_eq!(row["pod"], pod.name.as_str());
        assert_eq!(row["hostInterface"], pod.host_interface.as_str());
        assert_eq!(row["podMac"], format_mac(&pod.mac));
        assert_eq!(row["hostMac"], format_mac(&pod.host_mac));
    }
    let one = json(
        &[
            &[
                "inspect",
                "endpoints",
                "--json",
                "--ip",
                &pods[0].1.address.to_string(),
            ][..],
            &cluster,
        ]
        .concat(),
    );
    assert_eq!(one.as_array().map(Vec::len), Some(1), "--ip filters: {one}");

    // Routes: node 0 reaches node 1's pod through node 1; the internet is masqueraded.
    let remote_pod = state.nodes[1].pods[0].address.to_string();
    let route_to = |ip: &str| {
        let args = ["inspect", "routes", "--json", "--node", NODE0, "--ip", ip];
        json(&[&args[..], &cluster].concat())
    };
    let route = route_to(&remote_pod);
    assert_eq!(route[0]["kind"], "remote-pods", "{route}");
    assert_eq!(route[0]["prefix"], format!("{remote_pod}/32"));
    assert_eq!(route[0]["nextHop"], state.nodes[1].address.to_string());
    let route = route_to("203.0.113.10");
    assert_eq!(route[0]["kind"], "external", "{route}");
    assert_eq!(route[0]["masquerade"], true);

    // Counters: the check matrix delivers into pods of node 0 through the BPF path.
    let stats_args = [&["inspect", "stats", "--json"][..], &cluster].concat();
    let before = json(&stats_args);
    check(&name);
    let after = json(&stats_args);
    let grew =
        |node: &str, reason: &str| counter(&after, node, reason) - counter(&before, node, reason);
    assert!(grew(NODE0, "redirected-peer") >= 8, "{after}");
    assert!(grew("total", "redirected-peer") >= grew(NODE0, "redirected-peer"));
    assert_eq!(
        grew(NODE0, "drop-needs-masquerade"),
        0,
        "Azure CNI needs no SNAT"
    );
    let names: Vec<&str> = after
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["node"] == NODE0)
        .map(|r| r["reason"].as_str().expect("name"))
        .collect();
    let every: Vec<&str> = aks_ebpf_common::Reason::ALL
        .iter()
        .map(|r| r.name())
        .collect();
    assert_eq!(names, every, "every reason by name, in map order");

    // Maps: ENDPOINTS holds the node's pods; EVENTS is pinned for monitor.
    let maps = json(
        &[
            &["inspect", "maps", "--json", "--node", NODE0][..],
            &cluster,
        ]
        .concat(),
    );
    let map = |name: &str| {
        maps.as_array()
            .expect("map rows")
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no map {name}: {maps}"))
            .clone()
    };
    assert_eq!(map("ENDPOINTS")["entries"], 2);
    assert_eq!(map("ENDPOINTS")["mapType"], "hash");
    assert_eq!(map("ROUTES")["mapType"], "lpm_trie");
    assert_eq!(map("NSG")["entries"], 1);
    assert_eq!(map("EVENTS")["mapType"], "ringbuf");
    // Every hash-like map is counted: a map added without a count shows here.
    for m in maps.as_array().expect("map rows") {
        if ["hash", "lru_hash", "lpm_trie"].contains(&m["mapType"].as_str().unwrap_or("")) {
            assert!(
                m["entries"].is_u64(),
                "{} has no entry count: {m}",
                m["name"]
            );
        }
    }

    // Monitor: a SYN the NSG denies shows as a drop event within a second.
    let mut monitor = Command::new(AKSNET)
        .args(["monitor", "--cluster", &name, "--node", NODE0, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting aksnet monitor");
    let (tx, rx) = mpsc::channel();
    let stdout = monitor.stdout.take().expect("stdout");
    let events = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = events.send(line);
        }
    });
    let stderr = monitor.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("monitoring") {
                let _ = tx.send(line);
            }
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(10));
    let pod = state.nodes[0].pods[0].address;
    let denied_before = counter(&json(&stats_args), NODE0, "drop-nsg-denied");
    let sent = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| syn_from_on_prem(&state, pod, DENIED_PORT));
        let event = loop {
            let left = Duration::from_secs(1).saturating_sub(sent.elapsed());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with('{') => break Some(line),
                Ok(_) => continue,
                Err(_) => break None,
            }
        };
        // Stop the monitor this test started (by its PID, through the Child handle).
        let _ = monitor.kill();
        let _ = monitor.wait();
        assert!(ready.is_ok(), "monitor never said it was monitoring");
        let event: Value = serde_json::from_str(&event.expect("a drop event within a second"))
            .expect("one JSON object per line");
        assert_eq!(event["reason"], "drop-nsg-denied", "{event}");
        assert_eq!(event["verdict"], "dropped");
        assert_eq!(event["program"], "nsg");
        assert_eq!(event["interface"], "eth0");
        assert_eq!(event["protocol"], "tcp");
        assert_eq!(event["src"], state.on_prem.address.to_string());
        assert_eq!(event["dst"], pod.to_string());
        assert_eq!(event["dport"], DENIED_PORT);
    });
    let denied = json(
        &[
            &[
                "inspect",
                "stats",
                "--json",
                "--node",
                NODE0,
                "--reason",
                "drop-nsg-denied",
            ][..],
            &cluster,
        ]
        .concat(),
    );
    assert!(
        counter(&denied, NODE0, "drop-nsg-denied") > denied_before,
        "{denied}"
    );
    assert_eq!(denied.as_array().map(Vec::len), Some(1), "--reason filters");

    // Bad input: each message names the thing and the way out.
    let err = failure(
        &[
            &["inspect", "endpoints", "--node", "nodepool9-9"][..],
            &cluster,
        ]
        .concat(),
    );
    assert!(
        err.contains("no node \"nodepool9-9\"") && err.contains(NODE0),
        "{err}"
    );
    let err = failure(&["inspect", "stats", "--cluster", "nosuch1"]);
    assert!(
        err.contains("no cluster named \"nosuch1\"") && err.contains("aksnet up"),
        "{err}"
    );
    // The eBPF datapath's own conntrack: the check's probe to the internet, masqueraded.
    let flows = json(&[&["inspect", "nat", "--json"][..], &cluster].concat());
    let to_internet = flows
        .as_array()
        .expect("rows")
        .iter()
        .find(|f| f["original"]["dst"] == "203.0.113.10")
        .unwrap_or_else(|| panic!("the masqueraded probe is listed: {flows}"));
    assert_eq!(to_internet["nat"], "snat");
    let err = failure(&[&["inspect", "stats", "--reason", "dropped"][..], &cluster].concat());
    assert!(
        err.contains("drop-nsg-denied"),
        "the reasons are listed: {err}"
    );

    aksnet_ok(&["down", &name]);
    assert_gone(&name);
}

#[test]
fn iptables_conntrack_shows_masquerade_and_maps_are_missing() {
    require_privileges();
    let name = cluster_name("ii");
    let _down = Down(name.clone());
    up_keep(&description(&name, "kubenet", "iptables", 1, 1));
    let state = ClusterState::require(&name).expect("cluster state");
    check(&name);
    let cluster = ["--cluster", name.as_str()];
    let flows = json(&[&["inspect", "nat", "--json", "--node", NODE0][..], &cluster].concat());
    let pod = state.nodes[0].pods[0].address.to_string();
    let internet = state.internet.address.to_string();
    let to_internet = flows
        .as_array()
        .expect("flow rows")
        .iter()
        .find(|f| f["original"]["src"] == pod && f["original"]["dst"] == internet)
        .unwrap_or_else(|| panic!("no pod -> internet flow: {flows}"));
    assert_eq!(to_internet["nat"], "snat");
    assert_eq!(to_internet["protocol"], "tcp");
    assert_eq!(
        to_internet["reply"]["dst"],
        state.nodes[0].address.to_string(),
        "the internet answers the node address: {to_internet}"
    );

    let err = failure(&[&["inspect", "maps"][..], &cluster].concat());
    assert!(
        err.contains("iptables datapath") && err.contains("inspect rules"),
        "{err}"
    );
    let err = failure(&[&["monitor"][..], &cluster].concat());
    assert!(err.contains("iptables datapath"), "{err}");

    aksnet_ok(&["down", &name]);
    assert_gone(&name);
}
