//! Privileged, end to end through the `aksnet` binary: clusters brought up, probed with
//! `check --json`, and brought down, with nothing left behind (also after SIGKILL).

mod common;

use std::path::Path;

use common::cluster::*;

#[test]
fn kubenet_iptables_hides_pods_behind_the_node_outside_the_vnet() {
    let cluster = TestCluster::up("ki", "kubenet", "iptables", 2, 2);
    let name = cluster.name.clone();
    let results = check(&name);

    let cross = probe(&results, "pod -> pod, other node");
    assert_eq!(cross["connected"], true);
    assert_eq!(
        cross["seenSource"], cross["sourceAddress"],
        "inside the non-masquerade CIDRs pods keep their address"
    );
    assert_connected_as(
        &results,
        &["pod -> on-prem"],
        "nodepool1-0",
        "kubenet SNATs to the node address",
    );
    // The internet: the node's address, SNATed again by the load balancer's outbound rule.
    let r = probe(&results, "pod -> internet");
    assert_eq!(r["connected"], true, "{r}");
    assert_eq!(r["seenSource"], "198.51.100.4", "{r}");
    assert_eq!(
        probe(&results, "on-prem -> pod")["connected"],
        false,
        "kubenet pod addresses are not routable from on-prem"
    );
    assert_eq!(probe(&results, "on-prem -> node")["connected"], true);
    assert_eq!(
        probe(&results, "internet -> node")["connected"],
        false,
        "no inbound from the internet"
    );

    cluster.down();
}

#[test]
fn down_removes_a_cluster_whose_up_was_killed() {
    let cluster = TestCluster::new("kk");
    let name = cluster.name.clone();
    let mut up = ForegroundUp::start(&description(&name, "kubenet", "ebpf", 2, 2), &[], "\0");
    up.child.kill().expect("SIGKILL to our own aksnet up");
    up.child.wait().expect("reaping aksnet up");
    assert_eq!(
        namespaces_of(&name).len(),
        1 + 2 + 2 + 4,
        "a killed up cannot clean up after itself"
    );
    assert!(
        Path::new("/sys/fs/bpf/aksnet").join(&name).exists(),
        "its pins survive it"
    );

    let out = aksnet_ok(&["down", &name]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("9 namespaces"),
        "down reports what it removed"
    );
    assert_gone(&name);
}

#[test]
fn ctrl_c_on_up_removes_the_cluster() {
    let cluster = TestCluster::new("ci");
    let name = cluster.name.clone();
    let up = ForegroundUp::start(&description(&name, "azure", "ebpf", 1, 2), &[], "\0");
    assert_eq!(namespaces_of(&name).len(), 1 + 2 + 1 + 2);
    up.interrupt();
    assert_gone(&name);
}

#[test]
fn the_network_plugin_cannot_be_changed_in_place() {
    let cluster = TestCluster::up("pc", "azure", "iptables", 1, 1);
    let name = cluster.name.clone();
    let before = namespaces_of(&name);
    let out = aksnet(&[
        "up",
        description(&name, "kubenet", "iptables", 1, 1)
            .to_str()
            .expect("utf-8"),
        "--keep",
    ]);
    assert!(
        !out.status.success(),
        "switching azure -> kubenet in place must fail"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("networkPlugin") && stderr.contains("cannot be changed in place"),
        "the refusal names the field and the rule: {stderr}"
    );
    assert_eq!(
        namespaces_of(&name),
        before,
        "the running cluster is untouched"
    );
    cluster.down();
}

#[test]
fn two_nodes_of_110_pods_build_with_progress() {
    let cluster = TestCluster::new("big");
    let name = cluster.name.clone();
    let out = up_keep(&description(&name, "kubenet", "iptables", 2, 110));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let progress = stderr
        .lines()
        .filter(|l| l.starts_with("building namespaces:"))
        .count();
    assert!(
        progress >= 10,
        "progress shown while building 225 namespaces:\n{stderr}"
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(namespaces_of(&name).len(), 1 + 2 + 2 + 220);
    cluster.down();
}
