//! Privileged: `aksnet update NAME --network-plugin-mode overlay`, the in-place upgrade to
//! Azure CNI Overlay (update-azure-cni.md): from kubenet and from Node Subnet, on both
//! datapaths; the upgraded cluster passes its own `check`; AKS's refusals exit 2 and
//! change nothing; a stop signal mid-way rolls back; a killed upgrade leaves a cluster
//! `down` removes completely.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use aks_userspace::model::NetworkPlugin;
use aks_userspace::state::ClusterState;
use common::cluster::*;
use common::require_privileges;
use serde_json::Value;

fn vnet_routes(name: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-n", &format!("aks-{name}-vnet"), "route", "show"])
        .output()
        .expect("running ip route");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn pod_routes(name: &str) -> Vec<String> {
    vnet_routes(name)
        .into_iter()
        .filter(|r| r.starts_with("10.244."))
        .collect()
}

fn assert_every_row_passes(name: &str) -> Vec<Value> {
    let results = check(name);
    for row in &results {
        assert_eq!(row["verdict"], "pass", "{row}");
    }
    results
}

#[test]
fn kubenet_upgrades_to_overlay_node_by_node_and_passes_its_check() {
    require_privileges();
    for datapath in ["iptables", "ebpf"] {
        let name = cluster_name(&format!("uk{}", &datapath[..1]));
        let _down = Down(name.clone());
        up_keep(&description(&name, "kubenet", datapath, 2, 2));
        assert_eq!(pod_routes(&name).len(), 2, "kubenet: one UDR per node");

        let out = aksnet_ok(&["update", &name, "--network-plugin-mode", "overlay"]);
        let progress = String::from_utf8_lossy(&out.stderr);
        for line in [
            "reimaging node nodepool1-0 (1/2)",
            "node nodepool1-0 runs Azure CNI Overlay",
            "reimaging node nodepool1-1 (2/2)",
        ] {
            assert!(
                progress.contains(line),
                "{datapath}: no {line:?} in {progress}"
            );
        }
        assert!(
            String::from_utf8_lossy(&out.stdout)
                .contains("upgraded from kubenet to Azure CNI Overlay"),
            "{datapath}"
        );
        assert!(
            pod_routes(&name).is_empty(),
            "{datapath}: {:?}",
            vnet_routes(&name)
        );
        let state = ClusterState::require(&name).expect("the record");
        assert_eq!(state.network_plugin, NetworkPlugin::Azure);
        let results = assert_every_row_passes(&name);
        let cross = probe(&results, "pod -> pod, other node");
        assert_eq!(cross["seenSource"], cross["sourceAddress"], "{cross}");

        // One way, and idempotent: a second update has nothing to do.
        let again = aksnet_ok(&["update", &name, "--network-plugin-mode", "overlay"]);
        assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to do"));

        aksnet_ok(&["down", &name]);
        assert_gone(&name);
    }
}

#[test]
fn node_subnet_needs_a_pod_cidr_and_moves_pods_out_of_the_vnet() {
    require_privileges();
    let name = cluster_name("un");
    let _down = Down(name.clone());
    up_keep(&description(&name, "azure", "ebpf", 2, 2));
    let before = ClusterState::require(&name).expect("the record");

    let refused = aksnet(&["update", &name, "--network-plugin-mode", "overlay"]);
    assert_eq!(refused.status.code(), Some(2), "AKS requires --pod-cidr");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--pod-cidr: required"));
    assert_eq!(ClusterState::require(&name).expect("the record"), before);
    assert_every_row_passes(&name);

    aksnet_ok(&[
        "update",
        &name,
        "--network-plugin-mode",
        "overlay",
        "--pod-cidr",
        "10.244.0.0/16",
    ]);
    let after = ClusterState::require(&name).expect("the record");
    let pods: Vec<String> = after.nodes[1]
        .pods
        .iter()
        .map(|p| p.address.to_string())
        .collect();
    assert_eq!(pods, ["10.244.1.2", "10.244.1.3"], "pods left the VNet");
    assert!(vnet_routes(&name)
        .iter()
        .all(|r| !r.starts_with("10.224.0.3")));
    assert_every_row_passes(&name);
    aksnet_ok(&["down", &name]);
    assert_gone(&name);
}

/// Runs `aksnet update`, sends it `signal` once node 0 is upgraded, and returns how it
/// ended with the rest of its stderr.
fn interrupt_update_after_first_node(
    name: &str,
    signal: nix::sys::signal::Signal,
) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(AKSNET)
        .args(["update", name, "--network-plugin-mode", "overlay"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting aksnet update");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    let mut first_node_done = false;
    while !first_node_done && stderr.read_line(&mut line).unwrap_or(0) > 0 {
        first_node_done = line.starts_with("node nodepool1-0 runs Azure CNI Overlay");
        line.clear();
    }
    if first_node_done {
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signalling update");
    }
    let status = child.wait().expect("waiting for update");
    assert!(
        first_node_done,
        "update ended before upgrading node 0: {status}"
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).expect("reading stderr");
    (status, rest)
}

#[test]
fn a_stop_signal_mid_upgrade_rolls_back_and_a_kill_leaves_what_down_removes() {
    require_privileges();
    // Three nodes of 40 pods: reimaging one takes far longer than a signal takes to land.
    let name = cluster_name("us");
    let _down = Down(name.clone());
    up_keep(&description(&name, "kubenet", "iptables", 3, 40));
    let (status, rest) =
        interrupt_update_after_first_node(&name, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(status.code(), Some(143), "stopped by SIGTERM: {rest}");
    assert!(rest.contains("rolling node nodepool1-0 back"), "{rest}");
    assert!(rest.contains("every node is back on kubenet"), "{rest}");
    // As it was: kubenet, one UDR per node, every row as kubenet expects.
    assert_eq!(pod_routes(&name).len(), 3, "{:?}", vnet_routes(&name));
    assert_eq!(
        ClusterState::require(&name)
            .expect("the record")
            .network_plugin,
        NetworkPlugin::Kubenet
    );
    assert_every_row_passes(&name);

    // SIGKILL after the first node: no rollback is possible, but `down` removes it all.
    let (status, _) = interrupt_update_after_first_node(&name, nix::sys::signal::Signal::SIGKILL);
    assert_eq!(status.signal(), Some(9));
    aksnet_ok(&["down", &name]);
    assert_gone(&name);
}
