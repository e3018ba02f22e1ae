//! Privileged: masquerade on the eBPF datapath, whole clusters. Peers see the node
//! address where AKS would show it, replies come back, thousands of concurrent flows
//! each get their own mapping, and the GC in `up` removes closed flows.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use aks_userspace::datapath::ebpf::read_pinned_flows;
use aks_userspace::netns;
use aks_userspace::state::ClusterState;
use common::cluster::*;
use common::require_privileges;

fn flows(cluster: &str, node: &str) -> usize {
    let path = Path::new("/sys/fs/bpf/aksnet")
        .join(cluster)
        .join(node)
        .join("CONNTRACK");
    read_pinned_flows(&path)
        .expect("reading pinned CONNTRACK")
        .len()
}

#[test]
fn azure_cni_node_subnet_masquerades_outside_the_vnet() {
    require_privileges();
    let name = cluster_name("sa");
    let _down = Down(name.clone());
    up_keep(&description(&name, "azure", "ebpf", 2, 1));
    let results = check(&name);
    // The internet sees the load balancer's outbound address (outboundType
    // loadBalancer), which SNATs what the node sends: the node's own masquerade is what
    // on-prem sees.
    let internet = probe(&results, "pod -> internet");
    assert_eq!(internet["connected"], true, "{internet}");
    assert_eq!(internet["seenSource"], "198.51.100.4", "{internet}");
    // Outside the VNet, on-prem too, sees the node (concepts-network-legacy-cni.md).
    let on_prem = probe(&results, "pod -> on-prem");
    assert_eq!(on_prem["connected"], true, "{on_prem}");
    assert_eq!(on_prem["seenAs"], "nodepool1-0", "{on_prem}");
    for path in ["pod -> pod, other node", "pod -> node, other node"] {
        let r = probe(&results, path);
        assert_eq!(r["connected"], true, "{path}: {r}");
        assert_eq!(
            r["seenSource"], r["sourceAddress"],
            "{path}: the VNet sees the pod"
        );
    }
    aksnet_ok(&["down", &name]);
    assert_gone(&name);
}

#[test]
fn an_empty_non_masquerade_list_masquerades_pod_to_pod_across_nodes() {
    require_privileges();
    let name = cluster_name("sn");
    let _down = Down(name.clone());
    up_keep(&description_with(
        &name,
        "kubenet",
        "ebpf",
        2,
        1,
        "nonMasqueradeCidrs: []\n",
    ));
    let results = check(&name);
    let cross = probe(&results, "pod -> pod, other node");
    assert_eq!(
        cross["connected"], true,
        "replies find their way back: {cross}"
    );
    assert_eq!(
        cross["seenAs"], "nodepool1-0",
        "the study-notes variant: the peer pod sees the node"
    );
    aksnet_ok(&["down", &name]);
    assert_gone(&name);
}

const FLOWS: usize = 3000;
const SERVER_PORT: u16 = 18000;

/// Lifts the open-file limit for this test process: it holds both ends of every flow.
fn raise_open_files(limit: u64) {
    use nix::sys::resource::{setrlimit, Resource};
    setrlimit(Resource::RLIMIT_NOFILE, limit, limit)
        .unwrap_or_else(|e| panic!("raising RLIMIT_NOFILE to {limit}: {e}"));
}

#[test]
fn thousands_of_concurrent_flows_through_snat_all_complete() {
    require_privileges();
    raise_open_files(4 * FLOWS as u64 + 256);
    let name = cluster_name("sc");
    let _down = Down(name.clone());
    // Every flow goes to one destination: the load balancer's outbound rule must give
    // the node more than FLOWS ports to it (its default 1,024 would refuse the rest).
    let ports = "loadBalancerProfile: { allocatedOutboundPorts: 64000 }\n";
    up_keep(&description_with(&name, "kubenet", "ebpf", 1, 1, ports));
    let state = ClusterState::require(&name).expect("state");
    let pod = state.nodes[0].pods[0].namespace.clone();
    let internet = state.internet.clone();

    // The internet host answers each connection with the address it saw, and keeps it.
    let listener = netns::run_in(&internet.namespace, || {
        Ok(TcpListener::bind((Ipv4Addr::UNSPECIFIED, SERVER_PORT))?)
    })
    .expect("listening on the internet host");
    let server = std::thread::spawn(move || {
        let mut held = Vec::with_capacity(FLOWS);
        for _ in 0..FLOWS {
            let (mut stream, peer) = listener.accept().expect("accept");
            stream
                .write_all(format!("{}\n", peer.ip()).as_bytes())
                .expect("answer");
            held.push(stream);
        }
        held
    });

    // Open every flow and keep it open: all of them are alive at the same time.
    let target = (internet.address, SERVER_PORT);
    let clients = netns::run_in(&pod, || {
        let mut clients = Vec::with_capacity(FLOWS);
        for _ in 0..FLOWS {
            let stream = TcpStream::connect_timeout(&target.into(), Duration::from_secs(5))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            clients.push(stream);
        }
        Ok(clients)
    })
    .expect("connecting from the pod");
    // The node's masquerade, then the load balancer's outbound rule.
    let outbound_ip = "198.51.100.4";
    let mut answered = 0;
    for stream in &clients {
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .expect("reading the answer");
        assert_eq!(
            line.trim(),
            outbound_ip,
            "the internet host sees the outbound address"
        );
        answered += 1;
    }
    let held = server.join().expect("server thread");
    assert_eq!(
        (answered, held.len()),
        (FLOWS, FLOWS),
        "every flow completed"
    );
    assert_eq!(
        flows(&name, "nodepool1-0"),
        FLOWS,
        "one conntrack entry per concurrent flow"
    );
    drop(clients);
    drop(held);
    aksnet_ok(&["down", &name]);
    assert_gone(&name);
}

#[test]
fn the_gc_in_up_removes_closed_flows() {
    require_privileges();
    let name = cluster_name("sg");
    let _down = Down(name.clone());
    let settings = "conntrack: { tcpClosingTimeoutSeconds: 1, gcIntervalSeconds: 1 }\n";
    let file = description_with(&name, "kubenet", "ebpf", 1, 1, settings);
    let up = ForegroundUp::start(&file, &[], "conntrack gc");

    // Five short connections to the internet host, each closed after its answer.
    let state = ClusterState::require(&name).expect("state");
    let (pod, internet) = (
        state.nodes[0].pods[0].namespace.clone(),
        state.internet.clone(),
    );
    let listener = netns::run_in(&internet.namespace, || {
        Ok(TcpListener::bind((Ipv4Addr::UNSPECIFIED, SERVER_PORT))?)
    })
    .expect("listening");
    let server = std::thread::spawn(move || {
        for _ in 0..5 {
            let (mut s, _) = listener.accept().expect("accept");
            s.write_all(b"bye\n").expect("answer");
        }
    });
    netns::run_in(&pod, || {
        for _ in 0..5 {
            let mut s = TcpStream::connect_timeout(
                &(internet.address, SERVER_PORT).into(),
                Duration::from_secs(5),
            )?;
            let mut buf = String::new();
            s.read_to_string(&mut buf)?;
        }
        Ok(())
    })
    .expect("short connections");
    server.join().expect("server");
    assert!(
        flows(&name, "nodepool1-0") >= 5,
        "the closed flows are tracked until the GC runs"
    );

    let line = up
        .lines
        .recv_timeout(Duration::from_secs(10))
        .expect("a GC report within 10 s");
    assert!(line.contains("expired"), "{line}");
    // A pass may run while some flows are younger than 1 s; the next one takes them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while flows(&name, "nodepool1-0") > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        flows(&name, "nodepool1-0"),
        0,
        "closed flows are gone after their 1 s timeout"
    );
    up.interrupt();
    assert_gone(&name);
}
