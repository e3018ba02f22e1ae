//! `aksnet check` judges every row against what AKS would do: each matrix cell passes
//! its own check (exit 0), a datapath broken on purpose fails with the row named (exit
//! 1), `--expect` checks the user's assertions, bad input exits 2, and a half-built
//! cluster is reported as such.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use common::cluster::{aksnet, aksnet_ok, TestCluster};
use common::require_privileges;
use serde_json::Value;

/// An example description under a unique cluster name.
fn example(file: &str, name: &str) -> PathBuf {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/");
    let yaml = std::fs::read_to_string(format!("{path}{file}")).expect("reading the example");
    let renamed: String = yaml
        .lines()
        .map(|l| {
            if l.starts_with("name: ") {
                format!("name: {name}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let out = std::env::temp_dir().join(format!("aksnet-check-{name}.yaml"));
    std::fs::write(&out, renamed).expect("writing the description");
    out
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("aksnet exited, not killed")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn rows(out: &Output) -> Vec<Value> {
    let value: Value = serde_json::from_slice(&out.stdout).expect("check --json prints JSON");
    value.as_array().expect("an array of rows").clone()
}

/// The example cell passes its own matrix and services check, every row carrying an
/// expectation and a verdict, in well under 5 s.
fn cell_passes_its_own_check(file: &str, tag: &str) {
    let cluster = TestCluster::new(tag);
    let name = cluster.name.clone();
    // `up --check` (what `cargo xtask run` runs) judges the matrix as it comes up.
    let file = example(file, &name);
    let out = aksnet_ok(&[
        "up",
        file.to_str().expect("utf-8 path"),
        "--keep",
        "--check",
    ]);
    let up = String::from_utf8_lossy(&out.stdout);
    assert!(
        up.contains("VERDICT") && up.contains("10 of 10 rows pass"),
        "{up}"
    );

    let started = Instant::now();
    let out = aksnet(&["check", &name]);
    let took = started.elapsed();
    print!("{}", text(&out));
    assert_eq!(code(&out), 0, "every row passes:\n{}", text(&out));
    assert!(took < Duration::from_secs(5), "check took {took:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("EXPECTED") && table.contains("VERDICT"),
        "{table}"
    );
    assert!(table.contains("10 of 10 rows pass"), "{table}");

    let out = aksnet_ok(&["check", &name, "--json"]);
    let rows = rows(&out);
    assert_eq!(rows.len(), 10);
    for row in &rows {
        assert_eq!(row["verdict"], "pass", "{row}");
        assert!(row["expected"]["outcome"].is_string(), "{row}");
    }
    let blocked: Vec<&str> = rows
        .iter()
        .filter(|r| r["expected"]["outcome"] == "blocked")
        .filter_map(|r| r["path"].as_str())
        .collect();
    assert!(blocked.contains(&"internet -> pod"), "{blocked:?}");

    let out = aksnet(&["check", &name, "--services"]);
    print!("{}", text(&out));
    assert_eq!(code(&out), 0, "every service passes:\n{}", text(&out));
    cluster.down();
}

cell_tests!(cell_passes_its_own_check:
    azure_ebpf_passes_its_own_check("azure-ebpf.yaml", "cae"),
    azure_iptables_passes_its_own_check("azure-iptables.yaml", "cai"),
    kubenet_ebpf_passes_its_own_check("kubenet-ebpf.yaml", "cke"),
    kubenet_iptables_passes_its_own_check("kubenet-iptables.yaml", "cki"),
);

#[test]
fn a_deleted_vnet_route_fails_the_rows_that_need_it() {
    let cluster = TestCluster::up("crt", "kubenet", "ebpf", 2, 1);
    let name = cluster.name.clone();
    // The UDR that carries nodepool1-1's pod /24: on AKS a route table without it breaks
    // pod traffic to that node.
    common::ip(&[
        "-n",
        &format!("aks-{name}-vnet"),
        "route",
        "del",
        "10.244.1.0/24",
    ]);
    // The VNet's route table lives in two places: the vnet namespace's kernel routes and
    // the fabric forwarder's copy (`FABRIC_ROUTES`, an LPM key: prefix length, then the
    // address). A route removed from one only still forwards through the other.
    let fabric_routes = format!("/sys/fs/bpf/aksnet/{name}/_fabric/FABRIC_ROUTES");
    let deleted = std::process::Command::new("bpftool")
        .args(["map", "delete", "pinned", &fabric_routes])
        .args(["key", "24", "0", "0", "0", "10", "244", "1", "0"])
        .status()
        .expect("running bpftool");
    assert!(
        deleted.success(),
        "deleting 10.244.1.0/24 from {fabric_routes}"
    );

    let out = aksnet(&["check", &name]);
    print!("{}", text(&out));
    assert_eq!(code(&out), 1, "a row fails:\n{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("rows FAIL: pod -> pod, other node; node -> pod, other node"),
        "the failing rows are named:\n{stdout}"
    );
    let out = aksnet(&["check", &name, "--json"]);
    assert_eq!(code(&out), 1);
    for row in rows(&out) {
        let broken =
            row["path"] == "pod -> pod, other node" || row["path"] == "node -> pod, other node";
        let want = if broken { "fail" } else { "pass" };
        assert_eq!(row["verdict"], want, "{row}");
        if broken {
            assert!(
                row["mismatch"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("expected reachable")),
                "{row}"
            );
        }
    }
    aksnet_ok(&["down", &name]);
}

#[test]
fn expectations_from_a_file_pass_fail_or_are_refused() {
    let cluster = TestCluster::up("cex", "azure", "ebpf", 2, 1);
    let name = cluster.name.clone();
    let file = |tag: &str, yaml: &str| {
        let path = std::env::temp_dir().join(format!("aksnet-expect-{name}-{tag}.yaml"));
        std::fs::write(&path, yaml).expect("writing expectations");
        path.to_string_lossy().into_owned()
    };

    let good = file(
        "good",
        "- { from: nodepool1-0-pod0, to: on-prem, expect: reachable, source: node }\n\
         - { from: nodepool1-0-pod0, to: internet, expect: reachable, source: 198.51.100.4 }\n\
         - { from: nodepool1-0-pod0, to: nodepool1-1-pod0, expect: reachable, source: pod }\n\
         - { from: on-prem, to: nodepool1-1, port: 8080, protocol: UDP, expect: reachable, source: 192.168.100.10 }\n\
         - { from: internet, to: nodepool1-0-pod0, expect: blocked }\n",
    );
    let out = aksnet(&["check", &name, "--expect", &good]);
    print!("{}", text(&out));
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("5 of 5 rows pass"));

    let wrong = file(
        "wrong",
        "- { from: nodepool1-0-pod0, to: internet, expect: reachable, source: pod }\n\
         - { from: internet, to: nodepool1-0, expect: reachable }\n",
    );
    let out = aksnet(&["check", &name, "--expect", &wrong, "--json"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let rows = rows(&out);
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row["verdict"], "fail", "{row}");
    }
    assert!(
        rows[0]["mismatch"]
            .as_str()
            .is_some_and(|m| m.contains("saw reachable as 198.51.100.4")),
        "{}",
        rows[0]
    );

    // A bad file is refused with exit 2; what it says is returned.
    let refused = |tag: &str, yaml: &str| {
        let out = aksnet(&["check", &name, "--expect", &file(tag, yaml)]);
        assert_eq!(code(&out), 2, "{}", text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused(
        "bad",
        "- from: nodepool1-0-pod0\n  to: internet\n  expect: reachable\n  sorce: node\n",
    );
    assert!(
        err.contains("unknown field `sorce`") && err.contains("line 4 column 3"),
        "{err}"
    );

    let err = refused(
        "unknown",
        "- { from: nodepool1-7-pod0, to: internet, expect: blocked }\n",
    );
    assert!(
        err.contains("no endpoint named \"nodepool1-7-pod0\"")
            && err.contains("nodepool1-0-pod0, nodepool1-1-pod0"),
        "{err}"
    );
    aksnet_ok(&["down", &name]);
}

#[test]
fn bad_input_exits_2() {
    require_privileges();
    let out = aksnet(&["check", "nosuchcl"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("no cluster named \"nosuchcl\""));
    let out = aksnet(&["check", "--no-such-flag"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
}

#[test]
fn a_half_built_cluster_is_not_reported_healthy() {
    let cluster = TestCluster::up("chb", "azure", "ebpf", 2, 1);
    let name = cluster.name.clone();
    let pod_ns = format!("aks-{name}-nodepool1-1-pod0");
    common::ip(&["netns", "del", &pod_ns]);
    let out = aksnet(&["check", &name]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is incomplete") && err.contains(&pod_ns),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "no matrix is printed");
    cluster.down();
}

#[test]
fn a_detached_program_fails_the_masquerade_row() {
    let cluster = TestCluster::up("cdt", "azure", "ebpf", 2, 1);
    let name = cluster.name.clone();
    // `up --keep` has exited: the pin is the last reference to the TC link of the first
    // pod's veth, so removing it detaches `from_pod` there. The node's kernel still
    // forwards the pod's packets, but nothing masquerades them any more.
    let link = format!("/sys/fs/bpf/aksnet/{name}/nodepool1-0/from_pod_lxc0");
    std::fs::remove_file(&link).expect("removing the pinned link");
    // The kernel frees a link whose last reference was its pin a little later, not at
    // the unlink: wait (bounded) until it no longer reports a program on that veth, so
    // every probe below meets the detached datapath.
    wait_until_detached(&name, "nodepool1-0", "lxc0");

    let out = aksnet(&["check", &name, "--json"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let failed: Vec<Value> = rows(&out)
        .into_iter()
        .filter(|r| r["verdict"] == "fail")
        .collect();
    // Node Subnet masquerades everything outside the VNet: on-prem and the internet
    // (where the load balancer's outbound rule then SNATs the node, not a pod address).
    let paths: Vec<&Value> = failed.iter().map(|r| &r["path"]).collect();
    assert_eq!(paths, ["pod -> on-prem", "pod -> internet"], "{failed:?}");
    for (row, expected) in failed
        .iter()
        .zip(["(node nodepool1-0)", "(load balancer outbound)"])
    {
        assert!(
            row["mismatch"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("{expected}, saw reachable as"))
                    && m.ends_with("(itself)")),
            "{row}"
        );
    }
    cluster.down();
}

/// Waits until `inspect attach` (read from the kernel) shows no program on `interface`
/// of `node`; panics after 10 s.
fn wait_until_detached(cluster: &str, node: &str, interface: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = aksnet_ok(&["inspect", "attach", "--cluster", cluster, "--json"]);
        let rows: Vec<Value> =
            serde_json::from_slice(&out.stdout).expect("inspect attach --json prints JSON");
        let attached = rows
            .iter()
            .any(|r| r["node"] == node && r["interface"] == interface);
        if !attached {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{node}/{interface} still has a program 10 s after its link's pin was removed: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
