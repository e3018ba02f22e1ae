//! Privileged: Azure CNI Overlay on both datapaths. Pods take podCidr addresses, the
//! vnet namespace never holds a pod route, pod → pod across nodes keeps pod addresses
//! through the nodes' tunnel, everything outside podCidr is SNATed to the node, and
//! on-prem cannot open connections to pods (concepts-network-azure-cni-overlay.md).

mod common;

use std::process::Command;

use aks_userspace::cidr::Ipv4Cidr;
use aks_userspace::state::ClusterState;
use common::cluster::*;
use serde_json::Value;

const POD_CIDR: &str = "10.244.0.0/16";

fn routes(namespace: &str) -> Vec<Value> {
    let out = Command::new("ip")
        .args(["-n", namespace, "-j", "route", "show"])
        .output()
        .expect("running ip route");
    assert!(out.status.success(), "ip -n {namespace} route show failed");
    serde_json::from_slice(&out.stdout).expect("ip -j prints JSON")
}

/// The destination of an `ip -j route` entry as a CIDR (`default` is 0.0.0.0/0).
fn destination(route: &Value) -> Ipv4Cidr {
    let dst = route["dst"].as_str().expect("a route destination");
    match dst {
        "default" => "0.0.0.0/0".parse().expect("0/0"),
        host if !host.contains('/') => format!("{host}/32").parse().expect("a host route"),
        cidr => cidr.parse().expect("a CIDR route"),
    }
}

fn overlay_cluster(datapath: &str, tag: &str) {
    let cluster = TestCluster::up_with(tag, "azure",
        datapath,
        2,
        2,
        "networkPluginMode: overlay\nservices:\n  - { name: web, clusterIP: 10.0.0.20, port: 80, targetPort: 8080, backends: 4 }\n");
    let name = cluster.name.clone();
    let state = ClusterState::load(&name)
        .expect("reading the cluster record")
        .expect("the cluster is recorded");
    let pod_cidr: Ipv4Cidr = POD_CIDR.parse().expect("pod CIDR");

    // Pod addresses: node i's pods from the i-th /24 of podCidr, not VNet addresses.
    for (i, node) in state.nodes.iter().enumerate() {
        let node_range = pod_cidr.subnet(24, i as u64).expect("a node /24");
        for pod in &node.pods {
            assert!(
                node_range.contains(pod.address),
                "{datapath}: pod {} at {} is outside {node_range}",
                pod.name,
                pod.address
            );
        }
    }

    // The VNet never learns a pod route; each node routes the other node's /24 into its
    // tunnel.
    let vnet_routes = routes(&state.vnet);
    assert!(!vnet_routes.is_empty(), "the vnet namespace has routes");
    for route in &vnet_routes {
        let dst = destination(route);
        assert!(
            !dst.overlaps(&pod_cidr),
            "{datapath}: the VNet holds a pod route: {route}"
        );
    }
    let node0 = &state.nodes[0];
    let node1 = &state.nodes[1];
    let node0_routes = routes(&node0.namespace);
    let tunnelled = node0_routes
        .iter()
        .find(|r| r["dst"] == "10.244.1.0/24")
        .unwrap_or_else(|| panic!("{datapath}: node 0 has no route to node 1's pods"));
    assert_eq!(tunnelled["dev"], "ovl0", "{tunnelled}");
    let back = routes(&node1.namespace);
    assert!(
        back.iter()
            .any(|r| r["dst"] == "10.244.0.0/24" && r["dev"] == "ovl0"),
        "{datapath}: node 1 routes node 0's pods into its tunnel: {back:?}"
    );

    if datapath == "ebpf" {
        // The datapath's own view: node 1's pods are an overlay route, unmasqueraded.
        let out = aksnet_ok(&[
            "inspect",
            "routes",
            "--cluster",
            &name,
            "--json",
            "--node",
            "nodepool1-0",
            "--ip",
            "10.244.1.2",
        ]);
        let picked: Value = serde_json::from_slice(&out.stdout).expect("inspect prints JSON");
        let route = &picked[0];
        assert_eq!(route["prefix"], "10.244.1.0/24", "{picked}");
        assert_eq!(route["kind"], "remote-pods", "{route}");
        assert_eq!(route["overlay"], true, "{route}");
        assert_eq!(route["masquerade"], false, "{route}");
    }

    // Every row as the check module's Overlay rules expect it.
    let results = check_passing(&name);
    let cross = probe(&results, "pod -> pod, other node");
    assert_eq!(cross["connected"], true, "{datapath}: {cross}");
    assert_eq!(
        cross["seenSource"], cross["sourceAddress"],
        "{datapath}: pod → pod across nodes keeps the pod address"
    );
    for path in ["pod -> node, other node", "pod -> on-prem"] {
        let r = probe(&results, path);
        assert_eq!(r["connected"], true, "{datapath} {path}: {r}");
        assert_eq!(
            r["seenSource"],
            node0.address.to_string(),
            "{datapath} {path}: outside podCidr the pod is SNATed to its node: {r}"
        );
    }
    // The internet: the node's address, SNATed again by the load balancer's outbound rule.
    let r = probe(&results, "pod -> internet");
    assert_eq!(r["connected"], true, "{datapath}: {r}");
    assert_eq!(r["seenSource"], "198.51.100.4", "{datapath}: {r}");
    for path in ["on-prem -> pod", "internet -> pod"] {
        assert_eq!(
            probe(&results, path)["connected"],
            false,
            "{datapath} {path}: nothing outside the cluster reaches Overlay pods"
        );
    }
    // The node reaches a pod on another node through the overlay, from its tunnel address.
    let node_to_pod = probe(&results, "node -> pod, other node");
    assert_eq!(node_to_pod["connected"], true, "{node_to_pod}");
    assert_eq!(node_to_pod["seenSource"], "10.244.0.0", "{node_to_pod}");

    // A ClusterIP service with backends on both nodes: every backend answers, across
    // the overlay too.
    let out = aksnet_ok(&["check", &name, "--services", "--json"]);
    let services: Value = serde_json::from_slice(&out.stdout).expect("check prints JSON");
    let web = &services.as_array().expect("service results")[0];
    assert_eq!(web["answered"], web["attempts"], "{datapath}: {web}");
    for backend in web["backends"].as_array().expect("backends") {
        assert!(
            backend["answers"].as_u64().expect("a count") > 0,
            "{datapath}: backend {} never answered: {web}",
            backend["pod"]
        );
    }

    assert_df_datagrams_fit_the_tunnel(&state, datapath);

    cluster.down();
}

/// Overlay pods take the tunnel's MTU: the largest datagram a pod may send with DF set
/// crosses to a pod on another node whole, and one byte more never leaves the pod (at
/// 1500 it would, and die at the tunnel).
fn assert_df_datagrams_fit_the_tunnel(state: &ClusterState, datapath: &str) {
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;

    use aks_userspace::netns;
    use aks_userspace::topology::overlay::POD_MTU;
    use common::{path_mtu, set_dont_fragment};

    const PORT: u16 = 17100;
    let largest = POD_MTU as usize - 20 - 8;
    let receiver = &state.nodes[1].pods[0];
    let to = SocketAddr::from((receiver.address, PORT));
    let (ready_tx, ready) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let received = s.spawn(|| {
            netns::run_in(&receiver.namespace, || {
                let socket = UdpSocket::bind(("0.0.0.0", PORT))?;
                socket.set_read_timeout(Some(Duration::from_secs(5)))?;
                let _ = ready_tx.send(());
                let mut buf = [0u8; 2048];
                Ok(socket.recv(&mut buf)?)
            })
        });
        ready
            .recv_timeout(Duration::from_secs(5))
            .expect("the receiver is bound");
        let (mtu, too_big) = netns::run_in(&state.nodes[0].pods[0].namespace, || {
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            set_dont_fragment(&socket);
            socket.connect(to)?;
            let mtu = path_mtu(&socket);
            socket.send(&vec![0u8; largest])?;
            Ok((mtu, socket.send(&vec![0u8; largest + 1])))
        })
        .expect("sending from the pod");
        assert_eq!(
            mtu, POD_MTU,
            "{datapath}: the pod's path MTU is the tunnel's"
        );
        assert_eq!(
            too_big.map_err(|e| e.raw_os_error()),
            Err(Some(libc::EMSGSIZE)),
            "{datapath}: a DF datagram larger than the tunnel is refused in the pod"
        );
        let got = received
            .join()
            .expect("the receiver thread")
            .expect("a datagram across the overlay within 5 s");
        assert_eq!(
            got, largest,
            "{datapath}: the largest DF datagram arrives whole"
        );
    });
}

cell_tests!(overlay_cluster:
    overlay_on_ebpf_keeps_pod_routes_out_of_the_vnet("ebpf", "oe"),
    overlay_on_iptables_keeps_pod_routes_out_of_the_vnet("iptables", "oi"),
);
