//! Privileged: the topology builder and `check` proven on a small network with
//! hand-set kernel routes, before any datapath relies on them.
//!
//!   client 10.1.0.2 ── 10.1.0.1 router 10.2.0.1 ── 10.2.0.2 server
//!   island 10.3.0.2 (no link to anyone)

mod common;

use std::net::Ipv4Addr;
use std::process::Command;

use aks_userspace::check::{self, Endpoint, EndpointKind, Probe};
use aks_userspace::netns;
use aks_userspace::topology::{self, InterfaceSpec, NamespaceSpec, RouteSpec, VethSpec};
use common::require_privileges;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

fn iface(name: &str, address: &str, prefix_len: u8) -> InterfaceSpec {
    InterfaceSpec {
        name: name.into(),
        addresses: vec![(ip(address), prefix_len)],
        proxy_arp: false,
    }
}

fn default_via(gateway: &str) -> RouteSpec {
    RouteSpec {
        destination: Ipv4Addr::UNSPECIFIED,
        prefix_len: 0,
        gateway: Some(ip(gateway)),
        device: "eth0".into(),
    }
}

struct Names {
    client: String,
    router: String,
    server: String,
    island: String,
}

fn specs(prefix: &str) -> (Names, Vec<NamespaceSpec>) {
    let names = Names {
        client: format!("{prefix}client"),
        router: format!("{prefix}router"),
        server: format!("{prefix}server"),
        island: format!("{prefix}island"),
    };
    let mut router = NamespaceSpec::new(&names.router, true);
    // The router's veth `to-<peer>` to `eth0` of namespace `peer`; `n` numbers the MACs.
    let veth = |peer: &str, namespace: &str, n: u8| VethSpec {
        name: format!("to-{peer}"),
        mac: [2, 0, 0, 0, n, 1],
        peer_namespace: namespace.to_owned(),
        peer_name: "eth0".into(),
        peer_mac: [2, 0, 0, 0, n, 2],
        mtu: None,
    };
    router.veths = vec![
        veth("client", &names.client, 1),
        veth("server", &names.server, 2),
    ];
    router.interfaces = vec![
        iface("to-client", "10.1.0.1", 24),
        iface("to-server", "10.2.0.1", 24),
    ];
    let mut client = NamespaceSpec::new(&names.client, false);
    client.interfaces = vec![iface("eth0", "10.1.0.2", 24)];
    client.routes = vec![default_via("10.1.0.1")];
    let mut server = NamespaceSpec::new(&names.server, false);
    server.interfaces = vec![iface("eth0", "10.2.0.2", 24)];
    server.routes = vec![default_via("10.2.0.1")];
    let island = NamespaceSpec::new(&names.island, false);
    // The router comes first: it creates the veths whose peers land in the others, but
    // all namespaces exist before any is configured.
    (names, vec![router, client, server, island])
}

fn endpoint(label: &str, kind: EndpointKind, namespace: &str, address: &str) -> Endpoint {
    Endpoint {
        label: label.into(),
        kind,
        namespace: namespace.into(),
        address: ip(address),
    }
}

#[test]
fn check_reports_reachability_and_the_source_address_seen() {
    require_privileges();
    let prefix = format!("aks-test-chk{}-", std::process::id());
    let (names, specs) = specs(&prefix);
    topology::build(&specs).expect("building the test topology");
    let all: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let guard = Teardown(all.clone());

    let endpoints = vec![
        endpoint("client", EndpointKind::Internet, &names.client, "10.1.0.2"),
        endpoint(
            "router",
            EndpointKind::Node {
                name: "router".into(),
            },
            &names.router,
            "10.2.0.1",
        ),
        endpoint("server", EndpointKind::OnPrem, &names.server, "10.2.0.2"),
        endpoint("island", EndpointKind::OnPrem, &names.island, "10.3.0.2"),
    ];
    let to_server = Probe::new(0, 2, "routed");
    let to_island = Probe::new(0, 3, "no route");

    let results = check::run(&endpoints, &[to_server.clone(), to_island]).expect("running probes");
    print!("{}", check::render_table(&results));
    assert!(
        results[0].connected,
        "client reaches server through the router: {:?}",
        results[0].error
    );
    assert_eq!(
        results[0].seen_source,
        Some(ip("10.1.0.2")),
        "no NAT: the server sees the client"
    );
    assert_eq!(results[0].seen_as.as_deref(), Some("client"));
    assert!(
        !results[1].connected,
        "the island has no link, so the probe must fail"
    );
    assert_eq!(results[1].seen_source, None);
    assert!(results[1].error.is_some(), "a failed probe says why");

    // Masquerade on the router's server-facing side: the server must now see the router.
    let status = Command::new("ip")
        .args([
            "netns",
            "exec",
            &names.router,
            "iptables",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
        ])
        .args(["-o", "to-server", "-j", "MASQUERADE"])
        .status()
        .expect("running iptables in the router namespace");
    assert!(
        status.success(),
        "adding MASQUERADE in the test router failed"
    );
    let results = check::run(&endpoints, &[to_server]).expect("running probes");
    print!("{}", check::render_table(&results));
    assert!(results[0].connected);
    assert_eq!(
        results[0].seen_source,
        Some(ip("10.2.0.1")),
        "after SNAT the server sees the router"
    );
    assert_eq!(results[0].seen_as.as_deref(), Some("router"));

    drop(guard);
    let left = netns::list_with_prefix(&prefix).expect("listing namespaces");
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

#[test]
fn a_failed_build_leaves_nothing_behind() {
    require_privileges();
    let prefix = format!("aks-test-bad{}-", std::process::id());
    let (_, mut specs) = specs(&prefix);
    // A route through an interface that does not exist: configuration fails midway.
    specs[1].routes.push(RouteSpec {
        destination: ip("10.9.0.0"),
        prefix_len: 16,
        gateway: None,
        device: "nonexistent0".into(),
    });
    let err = topology::build(&specs).expect_err("the build must fail");
    assert!(
        format!("{err:#}").contains("nonexistent0"),
        "the error names the culprit: {err:#}"
    );
    let left = netns::list_with_prefix(&prefix).expect("listing namespaces");
    assert!(
        left.is_empty(),
        "a failed build left namespaces behind: {left:?}"
    );
}

struct Teardown(Vec<String>);

impl Drop for Teardown {
    fn drop(&mut self) {
        let _ = topology::teardown(&self.0);
    }
}
