//! Privileged: `outboundType` on whole clusters. `loadBalancer` (the default): the
//! internet sees the load balancer's outbound address, each node from its own port
//! block, and a node whose ports to a destination are all in use gets no new flow there
//! while its open ones go on. `managedNATGateway`: the internet sees the NAT gateway's
//! public address, on either datapath (the fabric SNATs after the node's masquerade);
//! `none`: nothing reaches the internet. `check` judges every row against the model
//! (exit 0), and the rows asserted here show the model said so.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use aks_userspace::netns;
use aks_userspace::state::ClusterState;
use common::cluster::*;
use common::require_privileges;

const NAT_GATEWAY: &str = "198.51.100.5";
const LB_OUTBOUND: &str = "198.51.100.4";
const FIREWALL: &str = "198.51.100.6";

fn egress(plugin: &str, datapath: &str, outbound: &str, tag: &str) -> serde_json::Value {
    let cluster = TestCluster::new(tag);
    let name = cluster.name.clone();
    let extra = format!("outboundType: {outbound}\n");
    up_keep(&description_with(&name, plugin, datapath, 2, 1, &extra));
    let results = check(&name);
    let row = probe(&results, "pod -> internet").clone();
    // The NAT gateway's pool, per node, from the fabric's connection table: the probe
    // from the first node's pod holds one port (its flow lingers in TIME_WAIT).
    let egress = json(&["inspect", "egress", "--cluster", &name, "--json"]);
    let rows = egress.as_array().expect("egress rows");
    match outbound {
        "managedNATGateway" => {
            let first = rows
                .iter()
                .find(|r| r["node"] == "nodepool1-0")
                .unwrap_or_else(|| panic!("the first node holds a port: {egress}"));
            assert_eq!(first["publicIp"], NAT_GATEWAY);
            assert!(
                first["portsInUse"].as_u64().expect("a count") >= 1,
                "{egress}"
            );
            assert_eq!(first["pool"], 64_512);
        }
        "loadBalancer" => {
            // Every node is listed with its own block of 1,024 ports (two nodes: Azure's
            // default allocation), the probe's flow on the first node's.
            let ranges: Vec<&str> = rows
                .iter()
                .map(|r| r["portRange"].as_str().expect("a range"))
                .collect();
            assert_eq!(ranges, ["1024-2047", "2048-3071"], "{egress}");
            for row in rows {
                assert_eq!(row["publicIp"], LB_OUTBOUND, "{row}");
                assert_eq!(row["pool"], 1024, "{row}");
                assert_eq!(row["exhaustedDrops"], 0, "{row}");
            }
            assert!(rows[0]["flows"].as_u64().expect("a count") >= 1, "{egress}");
        }
        _ => assert!(rows.is_empty(), "no SNAT, no rows: {egress}"),
    }
    // Egress rules touch only the internet: on-prem is reached as before.
    assert_eq!(probe(&results, "pod -> on-prem")["connected"], true);
    cluster.down();
    row
}

#[test]
fn nat_gateway_is_what_the_internet_sees_on_ebpf() {
    let row = egress("azure", "ebpf", "managedNATGateway", "oa");
    assert_eq!(row["connected"], true, "{row}");
    assert_eq!(row["seenSource"], NAT_GATEWAY, "{row}");
}

#[test]
fn nat_gateway_is_what_the_internet_sees_on_iptables() {
    let row = egress("kubenet", "iptables", "managedNATGateway", "ob");
    assert_eq!(row["connected"], true, "{row}");
    assert_eq!(row["seenSource"], NAT_GATEWAY, "{row}");
}

#[test]
fn the_load_balancer_is_what_the_internet_sees_on_both_datapaths() {
    for (plugin, datapath, tag) in [("azure", "ebpf", "of"), ("kubenet", "iptables", "og")] {
        let row = egress(plugin, datapath, "loadBalancer", tag);
        assert_eq!(row["connected"], true, "{plugin}/{datapath}: {row}");
        assert_eq!(row["seenSource"], LB_OUTBOUND, "{plugin}/{datapath}: {row}");
    }
}

/// The internet host's server for the exhaustion test: answers each connection with
/// `<address> <port>` it saw, then echoes lines until the client closes.
fn echo_server(namespace: &str, port: u16, connections: usize) {
    let listener = netns::run_in(namespace, || {
        Ok(TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))?)
    })
    .expect("listening on the internet host");
    std::thread::spawn(move || {
        for _ in 0..connections {
            let Ok((mut stream, peer)) = listener.accept() else {
                return;
            };
            std::thread::spawn(move || {
                writeln!(stream, "{} {}", peer.ip(), peer.port())?;
                let mut lines = BufReader::new(stream.try_clone()?).lines();
                while let Some(Ok(line)) = lines.next() {
                    writeln!(stream, "{line}")?;
                }
                Ok::<(), std::io::Error>(())
            });
        }
    });
}

/// A connection from `namespace` to `target`, and the `<address> <port>` the server saw.
fn connect(
    namespace: &str,
    target: SocketAddr,
    timeout: Duration,
) -> std::io::Result<(TcpStream, String)> {
    netns::run_in(namespace, || {
        let stream = TcpStream::connect_timeout(&target, timeout)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut seen = String::new();
        BufReader::new(stream.try_clone()?).read_line(&mut seen)?;
        Ok((stream, seen.trim().to_owned()))
    })
    .map_err(|e| std::io::Error::other(format!("{e:#}")))
}

/// The rule of `inspect firewall --json` whose name `matches`, and its packet count.
fn firewall_rule(log: &serde_json::Value, matches: impl Fn(&str) -> bool) -> u64 {
    let rule = log["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["rule"].as_str().is_some_and(&matches))
        .unwrap_or_else(|| panic!("the rule is listed: {log}"));
    rule["packets"].as_u64().expect("a count")
}

fn port_of(seen: &str) -> u16 {
    let (address, port) = seen.split_once(' ').expect("`<address> <port>`");
    assert_eq!(address, LB_OUTBOUND, "{seen}");
    port.parse().expect("a port")
}

fn exhaustion(plugin: &str, datapath: &str, tag: &str) {
    const PORTS: usize = 8;
    const SERVER_PORT: u16 = 18100;
    let cluster = TestCluster::new(tag);
    let name = cluster.name.clone();
    let profile = format!("loadBalancerProfile: {{ allocatedOutboundPorts: {PORTS} }}\n");
    up_keep(&description_with(&name, plugin, datapath, 2, 1, &profile));
    let state = ClusterState::require(&name).expect("state");
    let internet = &state.internet;
    let target = SocketAddr::from((internet.address, SERVER_PORT));
    echo_server(&internet.namespace, SERVER_PORT, PORTS + 1);
    let first_pod = &state.nodes[0].pods[0].namespace;

    // The first node's 8 ports to this destination, each from its own block 1024-1031.
    let mut open = Vec::new();
    for i in 0..PORTS {
        let (stream, seen) = connect(first_pod, target, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("{plugin}/{datapath}: flow {i} of {PORTS}: {e}"));
        let port = port_of(&seen);
        assert!((1024..=1031).contains(&port), "{plugin}/{datapath}: {seen}");
        open.push(stream);
    }
    // The ninth finds every port in use: its SYN is dropped (no answer, no reset).
    let refused = connect(first_pod, target, Duration::from_millis(700));
    assert!(
        refused.is_err(),
        "{plugin}/{datapath}: a ninth flow got through: {:?}",
        refused.map(|(_, seen)| seen)
    );
    // The open flows go on.
    for (i, stream) in open.iter_mut().enumerate() {
        writeln!(stream, "still here {i}").expect("writing on an open flow");
        let mut echo = String::new();
        BufReader::new(&*stream)
            .read_line(&mut echo)
            .unwrap_or_else(|e| panic!("{plugin}/{datapath}: open flow {i} broke: {e}"));
        assert_eq!(echo.trim(), format!("still here {i}"));
    }
    // The other node has its own block.
    let other_pod = &state.nodes[1].pods[0].namespace;
    let (_other, seen) = connect(other_pod, target, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("{plugin}/{datapath}: the second node: {e}"));
    assert!((1032..=1039).contains(&port_of(&seen)), "{seen}");

    let egress = json(&["inspect", "egress", "--cluster", &name, "--json"]);
    let rows = egress.as_array().expect("egress rows");
    assert_eq!(rows[0]["node"], "nodepool1-0", "{egress}");
    assert_eq!(rows[0]["busiest"], PORTS, "{egress}");
    assert_eq!(rows[0]["pool"], PORTS, "{egress}");
    assert!(
        rows[0]["exhaustedDrops"].as_u64().expect("a count") >= 1,
        "the refused SYN is counted: {egress}"
    );
    assert_eq!(rows[1]["portRange"], "1032-1039", "{egress}");
    assert_eq!(rows[1]["exhaustedDrops"], 0, "{egress}");
    drop(open);
    cluster.down();
}

cell_tests!(exhaustion:
    exhausted_snat_ports_refuse_new_flows_on_ebpf("azure", "ebpf", "ox"),
    exhausted_snat_ports_refuse_new_flows_on_iptables("kubenet", "iptables", "oy"),
);

#[test]
fn none_has_no_egress() {
    for (plugin, datapath, tag) in [("azure", "ebpf", "oc"), ("kubenet", "iptables", "od")] {
        let row = egress(plugin, datapath, "none", tag);
        assert_eq!(row["connected"], false, "{plugin}/{datapath}: {row}");
    }
}

/// userDefinedRouting: egress goes through the firewall, which SNATs to its public
/// address and logs the flow.
fn through_the_firewall(plugin: &str, datapath: &str, tag: &str) {
    let cluster = TestCluster::new(tag);
    let name = cluster.name.clone();
    let extra = "outboundType: userDefinedRouting\n";
    up_keep(&description_with(&name, plugin, datapath, 2, 1, extra));
    let results = check(&name);
    let row = probe(&results, "pod -> internet");
    assert_eq!(row["seenSource"], FIREWALL, "{plugin}/{datapath}: {row}");
    assert_eq!(probe(&results, "pod -> on-prem")["connected"], true);
    assert_eq!(probe(&results, "pod -> pod, other node")["connected"], true);
    let log = json(&["inspect", "firewall", "--cluster", &name, "--json"]);
    let flows = log["flows"].as_array().expect("flows");
    assert!(
        flows
            .iter()
            .any(|f| f["original"]["src"] == "10.224.0.4" && f["reply"]["dst"] == FIREWALL),
        "the probe's flow is in the firewall's log: {log}"
    );
    let allowed = firewall_rule(&log, |r| {
        r == "network rule allows the VNet to the internet"
    });
    assert!(allowed >= 1, "{log}");
    // Only the internet goes through it: nothing of the VNet or on-prem.
    assert!(
        flows.iter().all(|f| f["original"]["dst"] == "203.0.113.10"),
        "{log}"
    );
    cluster.down();
}

cell_tests!(through_the_firewall:
    udr_egress_goes_through_the_firewall_on_ebpf("azure", "ebpf", "ow"),
    udr_egress_goes_through_the_firewall_on_iptables("kubenet", "iptables", "oz"),
);

/// limit-egress-traffic.md: with 0.0.0.0/0 through the firewall, a LoadBalancer frontend
/// reached from the internet gets no answer (the reply goes to the firewall, which drops
/// a session it never saw); the firewall's NAT rule to the frontend is the fix.
fn asymmetric_routing(plugin: &str, datapath: &str, tag: &str) {
    let cluster = TestCluster::new(tag);
    let name = cluster.name.clone();
    let extra = "services:\n  - { name: web, clusterIP: 10.0.0.20, port: 80, targetPort: 17001, backends: 1, type: LoadBalancer }\noutboundType: userDefinedRouting\nfirewall:\n  natRules:\n    - { name: inboundrule, service: web }\n";
    up_keep(&description_with(&name, plugin, datapath, 2, 1, extra));
    // check --frontends expects the internet blocked (asymmetric routing), on-prem served.
    let out = aksnet(&["check", &name, "--frontends", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let internet = rows
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["client"] == "internet")
        .unwrap_or_else(|| panic!("an internet row: {text}"));
    assert_eq!(internet["answered"], 0, "{internet}");
    assert!(
        internet["expected"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("asymmetric routing")),
        "{internet}"
    );
    let log = json(&["inspect", "firewall", "--cluster", &name, "--json"]);
    let dropped = firewall_rule(&log, |r| {
        r == "no session for this packet (asymmetric route)"
    });
    assert!(dropped >= 1, "the firewall dropped the replies: {log}");

    // The fix: the firewall's public address, DNATed to the frontend.
    let state = ClusterState::require(&name).expect("state");
    // The service's one backend is the first pod of the first node.
    let backend = &state.nodes[0].pods[0];
    echo_server(&backend.namespace, 17001, 1);
    let target = SocketAddr::from((Ipv4Addr::new(198, 51, 100, 6), 80));
    let (_stream, seen) = connect(&state.internet.namespace, target, Duration::from_secs(2))
        .expect("the firewall's NAT rule reaches the service");
    assert!(!seen.is_empty(), "the backend answered");
    let log = json(&["inspect", "firewall", "--cluster", &name, "--json"]);
    let nat = firewall_rule(&log, |r| r.starts_with("NAT rule inboundrule to web"));
    assert_eq!(nat, 1, "{log}");
    cluster.down();
}

cell_tests!(asymmetric_routing:
    udr_breaks_load_balancer_inbound_until_a_firewall_nat_rule_on_iptables("kubenet", "iptables", "oa2"),
    udr_breaks_load_balancer_inbound_until_a_firewall_nat_rule_on_ebpf("azure", "ebpf", "ob2"),
);

/// `update --outbound-type` on a running cluster: each move AKS supports changes what the
/// internet sees and `check` passes after it; the one it does not support is refused
/// (exit 2) and changes nothing.
fn change_in_place(plugin: &str, datapath: &str, tag: &str) {
    let cluster = TestCluster::new(tag);
    let name = cluster.name.clone();
    up_keep(&description(&name, plugin, datapath, 2, 1));
    let seen = |what: &str| {
        let results = check(&name);
        let row = probe(&results, "pod -> internet").clone();
        assert_eq!(
            probe(&results, "pod -> on-prem")["connected"],
            true,
            "{plugin}/{datapath} after {what}"
        );
        row
    };
    assert_eq!(seen("up")["seenSource"], LB_OUTBOUND);
    let firewall = format!("aks-{name}-firewall");
    for (to, expected) in [
        ("managedNATGateway", Some(NAT_GATEWAY)),
        ("none", None),
        ("userDefinedRouting", Some(FIREWALL)),
        ("loadBalancer", Some(LB_OUTBOUND)),
        ("managedNATGateway", Some(NAT_GATEWAY)),
    ] {
        let out = aksnet_ok(&["update", &name, "--outbound-type", to]);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains(&format!("-> {to}")), "{said}");
        let row = seen(to);
        match expected {
            Some(address) => assert_eq!(row["seenSource"], address, "{to}: {row}"),
            None => assert_eq!(row["connected"], false, "{to}: {row}"),
        }
        let state = json(&["inspect", "egress", "--cluster", &name, "--json"]);
        let rows = state.as_array().expect("rows");
        let translated = matches!(to, "managedNATGateway" | "loadBalancer");
        assert_eq!(!rows.is_empty(), translated, "{to}: {state}");
        // The firewall's namespace exists exactly while userDefinedRouting is in force.
        assert_eq!(
            namespaces_of(&name).contains(&firewall),
            to == "userDefinedRouting",
            "{to}"
        );
    }
    // Not supported by AKS in either VNet kind: refused, the NAT gateway stays.
    let out = aksnet(&["update", &name, "--outbound-type", "userDefinedRouting"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--outbound-type") && err.contains("does not support migrating"),
        "{err}"
    );
    assert_eq!(seen("the refusal")["seenSource"], NAT_GATEWAY);
    // The same type again is nothing to do.
    let out = aksnet_ok(&["update", &name, "--outbound-type", "managedNATGateway"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to do"));
    cluster.down();
}

cell_tests!(change_in_place:
    outbound_type_changes_in_place_on_iptables("kubenet", "iptables", "ou"),
    outbound_type_changes_in_place_on_ebpf("azure", "ebpf", "ov"),
);

/// `bench --snat-exhaustion`: each cell's pod opens exactly its node's ports to one
/// destination, then is refused; the clusters are gone afterwards.
#[test]
fn the_snat_exhaustion_bench_opens_exactly_the_budget() {
    require_privileges();
    let prefix = format!("q{}", std::process::id() % 100);
    let out = aksnet_ok(&[
        "bench",
        "--snat-exhaustion",
        "--rounds",
        "2",
        "--snat-ports",
        "64",
        "--prefix",
        &prefix,
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    for cell in ["kubenet/iptables", "azure/ebpf"] {
        let row = table
            .lines()
            .find(|l| l.starts_with(cell))
            .unwrap_or_else(|| panic!("a row for {cell}: {table}"));
        let words: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(words[1..3], ["64", "64-64"], "{row}");
        assert_eq!(words.last(), Some(&"yes"), "{row}");
    }
    for i in 0..2 {
        assert_gone(&format!("{prefix}s{i}"));
    }
}
