//! Privileged: the TC programs are attached in whichever way this kernel offers (TCX
//! links from 6.6, netlink filters on a clsact qdisc below), stay attached after
//! `up --keep` exits, and are gone with everything else after `down`.
//!
//! `cargo xtask kernels` runs this binary inside VMs on Debian's 6.1 (netlink) and 6.12
//! (TCX) kernels; on the host it runs with the rest of the suite.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use aks_ebpf_common::STATS_MAP;
use aks_userspace::datapath::ebpf::{NodeDatapath, TcAttachMode};
use aks_userspace::state::ClusterState;
use aya::maps::MapData;
use aya::programs::{loaded_programs, SchedClassifier, TcAttachType};
use common::cluster::{
    aksnet_ok, assert_gone, check, cluster_name, description_with, probe, up_keep, Down,
};
use common::require_privileges;

/// The programs loaded in the kernel that use `map_id`: (id, name).
fn programs_using(map_id: u32) -> BTreeSet<(u32, String)> {
    loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| {
            p.map_ids()
                .ok()
                .flatten()
                .is_some_and(|ids| ids.contains(&map_id))
        })
        .map(|p| (p.id(), p.name_as_str().unwrap_or("?").to_owned()))
        .collect()
}

fn loaded_ids() -> BTreeSet<u32> {
    loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect()
}

#[test]
fn tc_programs_outlive_up_keep_in_the_kernels_attach_mode_and_go_with_down() {
    require_privileges();
    let name = cluster_name("ta");
    let _down = Down(name.clone());
    // One NSG rule (on a port no probe uses) so the nsg XDP program is attached too: an
    // XDP link (5.9 and later), pinned in both TC modes.
    let nsg = "nsg:\n  - { name: deny-17002, priority: 100, access: Deny, protocol: Tcp, destinationAddressPrefix: 10.224.0.0/24, destinationPortRange: \"17002\" }\n";
    let out = up_keep(&description_with(&name, "azure", "ebpf", 2, 2, nsg));
    let stdout = String::from_utf8_lossy(&out.stdout);

    let state = ClusterState::load(&name)
        .expect("reading the record")
        .expect("up --keep leaves a record");
    let first = &state.nodes[0];
    let mode = aks_userspace::netns::run_in(&first.namespace, || TcAttachMode::probe("lo"))
        .expect("probing the attach mode");
    eprintln!("kernel {}: TC attach mode {mode}", kernel_release());
    assert!(
        stdout.contains(&format!("TC attached as {mode}")),
        "up names the attach mode ({mode}) in its summary:\n{stdout}"
    );

    // `up --keep` has exited: whatever holds the programs now is the kernel's (pins or
    // filters), and each node's from_pod and from_vnet must still be there.
    let mut ours = BTreeSet::new();
    for node in &state.nodes {
        let dir = ClusterState::pin_dir(&name).join(&node.name);
        let link_pins = [
            format!("from_vnet_{}", node.uplink),
            format!("from_pod_{}", node.pods[0].host_interface),
        ];
        for pin in &link_pins {
            let pinned = dir.join(pin).exists();
            match mode {
                TcAttachMode::Tcx => assert!(pinned, "a TCX link is pinned at {pin}"),
                // A netlink filter is no BPF object: nothing to pin, nothing left in bpffs.
                TcAttachMode::Netlink => assert!(!pinned, "nothing is pinned for a filter: {pin}"),
            }
        }
        let xdp_pin = dir.join(format!("nsg_{}", node.uplink));
        assert!(
            xdp_pin.exists(),
            "the nsg XDP link is pinned at {}",
            xdp_pin.display()
        );
        let stats = MapData::from_pin(dir.join(STATS_MAP)).expect("opening the pinned STATS");
        let map_id = stats.info().expect("STATS info").id();
        let programs = programs_using(map_id);
        let names: BTreeSet<&str> = programs.iter().map(|(_, n)| n.as_str()).collect();
        for wanted in ["from_pod", "from_vnet", "nsg"] {
            assert!(
                names.contains(wanted),
                "{wanted} of node {} still loaded after up --keep exited: {programs:?}",
                node.name
            );
        }
        ours.extend(programs.into_iter().map(|(id, _)| id));
    }

    // `inspect attach` reads the hooks back from the kernel: one row per interface, in
    // the probed mode, naming exactly these programs.
    let out = aksnet_ok(&["inspect", "attach", "--cluster", &name, "--json"]);
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("inspect attach --json prints JSON");
    let interfaces: usize = state.nodes.iter().map(|n| 1 + n.pods.len()).sum();
    assert_eq!(
        rows.len(),
        interfaces,
        "one program per interface: {rows:?}"
    );
    let mode_name = serde_json::to_value(mode).expect("mode as JSON");
    for row in &rows {
        assert_eq!(row["mode"], mode_name, "{row}");
        let expected = if row["pod"].is_null() {
            "from_vnet"
        } else {
            "from_pod"
        };
        assert_eq!(row["program"], expected, "{row}");
        let id = row["programId"].as_u64().expect("a program id") as u32;
        assert!(
            ours.contains(&id),
            "{row}: not one of the cluster's programs {ours:?}"
        );
    }

    // Loaded is not attached: packets must cross both programs, with the addresses
    // `check` expects of Azure CNI (pods keep theirs inside the VNet).
    let results = check(&name);
    for path in [
        "pod -> pod, same node",
        "pod -> pod, other node",
        "pod -> on-prem",
    ] {
        let r = probe(&results, path);
        assert_eq!(r["connected"], true, "{path}: {r}");
        assert_eq!(r["verdict"], "pass", "{path}: {r}");
    }
    let across = probe(&results, "pod -> pod, other node");
    assert_eq!(across["seenSource"], across["sourceAddress"], "{across}");

    aksnet_ok(&["down", &name]);
    assert_gone(&name);
    // The kernel frees a namespace (and with it interfaces, qdiscs and filters) after
    // `down` returns; the programs must follow within seconds.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: Vec<u32> = ours.intersection(&loaded_ids()).copied().collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "programs of {name} still loaded 20 s after down: ids {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// Names of the TC ingress programs on `interface` in `namespace`, asked of the kernel
/// the way `mode` attaches them.
fn ingress_programs(namespace: &str, interface: &str, mode: TcAttachMode) -> Vec<String> {
    match mode {
        TcAttachMode::Tcx => aks_userspace::netns::run_in(namespace, || {
            let (_, programs) = SchedClassifier::query_tcx(interface, TcAttachType::Ingress)?;
            Ok(programs
                .iter()
                .map(|p| p.name_as_str().unwrap_or("?").to_owned())
                .collect())
        })
        .expect("querying TCX programs"),
        TcAttachMode::Netlink => {
            // iproute2 prints a cls_bpf filter as `… bpf name from_pod direct-action …`
            // (older versions: `… bpf from_pod direct-action …`).
            let out = Command::new("ip")
                .args([
                    "netns", "exec", namespace, "tc", "filter", "show", "dev", interface, "ingress",
                ])
                .output()
                .expect("running tc");
            assert!(
                out.status.success(),
                "tc filter show: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            ["from_pod", "from_vnet"]
                .into_iter()
                .filter(|name| text.split_whitespace().any(|w| w == *name))
                .map(str::to_owned)
                .collect()
        }
    }
}

#[test]
fn attachments_without_pins_last_as_long_as_the_loaded_object() {
    require_privileges();
    let pair = common::VethPair::create("tcx");
    let mode =
        aks_userspace::netns::run_in(&pair.a, || TcAttachMode::probe(&pair.a_if)).expect("probing");
    let mut datapath = NodeDatapath::load(&pair.a, None).expect("loading the object");
    datapath
        .attach_from_pod(&pair.a_if)
        .expect("attaching in the probed mode");
    assert_eq!(datapath.tc_attach_mode(), Some(mode));
    // A second program on the same interface: in netlink mode the clsact qdisc is
    // already there, which must not fail.
    datapath
        .attach_uplink(&pair.a_if)
        .expect("a second TC program on the same interface");
    let mut attached = ingress_programs(&pair.a, &pair.a_if, mode);
    attached.sort();
    assert_eq!(attached, ["from_pod", "from_vnet"], "{mode}");

    drop(datapath);
    let left = ingress_programs(&pair.a, &pair.a_if, mode);
    assert!(
        left.is_empty(),
        "{mode}: dropping the object detaches: {left:?}"
    );
}
