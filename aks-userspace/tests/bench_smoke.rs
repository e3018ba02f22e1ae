//! Privileged smoke test: `aksnet bench --quick` through the binary completes, every
//! cell produces numbers in every workload and view, with their CPU cost and (on eBPF)
//! the BPF programs' run time (not asserted: their size; performance is measured, never
//! asserted in timed tests), and nothing of the benchmark is left behind, the kernel's
//! BPF statistics switch included.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use common::cluster::AKSNET;
use common::require_privileges;

#[test]
fn quick_bench_measures_every_cell_and_leaves_nothing_behind() {
    require_privileges();
    // Its own prefix (≤ 3 characters), so parallel tests and other clusters never clash.
    let prefix = format!("q{}", std::process::id() % 100);
    let json = std::env::temp_dir().join(format!("aksnet-bench-smoke-{prefix}.json"));
    let csv = std::env::temp_dir().join(format!("aksnet-bench-smoke-{prefix}.csv"));
    let svg = std::env::temp_dir().join(format!("aksnet-bench-smoke-{prefix}.svg"));
    let stats_before = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .expect("reading kernel.bpf_stats_enabled");
    let out = Command::new(AKSNET)
        .args(["bench", "--quick", "--prefix", &prefix, "--json"])
        .arg(&json)
        .arg("--csv")
        .arg(&csv)
        .arg("--plot")
        .arg(&svg)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running aksnet bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "aksnet bench --quick failed ({}):\n{stdout}{stderr}",
        out.status
    );
    assert!(
        stderr.contains("round 2/2"),
        "progress names the rounds:\n{stderr}"
    );

    let report: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON was written"))
            .expect("--json writes JSON");
    let cells: Vec<&str> = report["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        cells,
        [
            "azure/ebpf",
            "azure/iptables",
            "kubenet/ebpf",
            "kubenet/iptables",
            "azure-overlay/ebpf",
            "azure-overlay/iptables",
            "limit"
        ]
    );
    let results = report["results"].as_array().expect("results");
    let workloads = [
        "stream",
        "rr-pod-to-pod",
        "rr-same-node",
        "rr-node-to-node",
        "connect-snat",
        "connect-snat-concurrent",
        "connect-service",
        "connect-service-concurrent",
    ];
    for cell in &cells {
        for workload in workloads {
            for view in ["user", "pinned"] {
                let r = results
                    .iter()
                    .find(|r| r["cell"] == *cell && r["workload"] == workload && r["view"] == view)
                    .unwrap_or_else(|| panic!("no {workload} ({view}) result for {cell}"));
                if workload.starts_with("connect-service") && *cell == "limit" {
                    // The limit has no datapath, so no ClusterIP: a reason instead.
                    assert!(r["rate"].is_null() && r["note"].is_string(), "{r}");
                    continue;
                }
                let rate = r["rate"]["median"].as_f64();
                assert!(
                    rate.is_some_and(|m| m > 0.0),
                    "{cell} {workload} ({view}) has no rate: {r}"
                );
                assert!(
                    r["cost"]["median"].as_f64().is_some_and(|c| c > 0.0),
                    "{cell} {workload} ({view}) has no CPU cost: {r}"
                );
                // Every cell's ratio is against the same baseline, the new cells' too:
                // one per round, their median within their spread.
                let ratio = &r["vsKubenetIptables"];
                assert!(
                    ratio["median"].as_f64().is_some_and(|q| q > 0.0),
                    "{cell} {workload} ({view}) has no ratio to kubenet/iptables: {r}"
                );
                assert!(
                    ratio["min"].as_f64() <= ratio["median"].as_f64()
                        && ratio["median"].as_f64() <= ratio["max"].as_f64(),
                    "ratio min ≤ median ≤ max: {r}"
                );
                if *cell == "kubenet/iptables" {
                    assert_eq!(ratio["median"].as_f64(), Some(1.0), "{r}");
                }
                let spread = &r["rate"];
                assert!(
                    spread["min"].as_f64() <= spread["median"].as_f64()
                        && spread["median"].as_f64() <= spread["max"].as_f64(),
                    "min ≤ median ≤ max: {r}"
                );
                if workload.starts_with("rr-") {
                    assert!(r["p50Us"]["median"].as_f64().is_some(), "{r}");
                }
                // The BPF programs' own cost where there are BPF programs, only there.
                let bpf = r["bpfNsPerRun"]["median"].as_f64();
                if cell.ends_with("/ebpf") {
                    assert!(bpf.is_some_and(|ns| ns > 0.0), "{cell}: {r}");
                } else {
                    assert!(bpf.is_none(), "{cell}: {r}");
                }
            }
        }
    }
    assert!(
        report["machine"]["cpuModel"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "the CPU model is in the report"
    );
    let sweep = report["sweep"].as_array().expect("sweep");
    for datapath in ["kubenet/iptables", "kubenet/ebpf"] {
        let measured: Vec<&Value> = sweep.iter().filter(|p| p["cell"] == datapath).collect();
        assert_eq!(measured.len(), 2, "quick sweeps 10 and 1,000 services");
        for p in measured {
            assert!(p["firstPacketP50Us"].as_f64().is_some(), "{p}");
            assert!(p["programOneMoreMs"].as_f64().is_some(), "{p}");
            assert!(
                p["connectPinned"]["median"]
                    .as_f64()
                    .is_some_and(|r| r > 0.0),
                "{p}"
            );
            assert!(
                p["connectUser"]["median"].as_f64().is_some_and(|r| r > 0.0),
                "{p}"
            );
        }
    }
    let policy = report["policy"].as_array().expect("policy sweep");
    for (cell, engine) in [("azure/iptables", "azure"), ("azure/ebpf", "cilium")] {
        let measured: Vec<&Value> = policy.iter().filter(|p| p["cell"] == cell).collect();
        let rules: Vec<u64> = measured
            .iter()
            .filter_map(|p| p["rules"].as_u64())
            .collect();
        assert_eq!(
            rules,
            [10, 1_000],
            "quick sweeps 10 and 1,000 policy rules on {cell}"
        );
        for p in measured {
            assert_eq!(p["engine"], engine, "{p}");
            assert!(
                p["firstPacketP50Us"].as_f64().is_some_and(|us| us > 0.0),
                "{p}"
            );
            for view in ["connectUser", "connectPinned"] {
                assert!(p[view]["median"].as_f64().is_some_and(|r| r > 0.0), "{p}");
            }
        }
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .expect("reading kernel.bpf_stats_enabled")
            .trim(),
        stats_before.trim(),
        "kernel.bpf_stats_enabled is back to what it was"
    );
    let csv_text = std::fs::read_to_string(&csv).expect("the CSV was written");
    assert!(
        csv_text.starts_with("kind,workload,view,cell,"),
        "{csv_text}"
    );
    let svg_text = std::fs::read_to_string(&svg).expect("the plot was written");
    assert!(svg_text.contains("<svg"), "an SVG");

    // `--compare` of the report with itself: every ratio paired, none moved, exit 0; the
    // CSV in its place is not a report, exit 2.
    let compare = |after: &Path| {
        Command::new(AKSNET)
            .args(["bench", "--compare"])
            .arg(&json)
            .arg(after)
            .output()
            .expect("running aksnet bench --compare")
    };
    let same = compare(&json);
    let said = String::from_utf8_lossy(&same.stdout);
    assert_eq!(same.status.code(), Some(0), "{said}");
    assert!(said.contains(" 0 beyond; largest change +0.0 %"), "{said}");
    let not_a_report = compare(&csv);
    assert_eq!(
        not_a_report.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&not_a_report.stderr)
    );

    let left = aks_userspace::netns::list_with_prefix(&format!("aks-{prefix}"))
        .expect("listing namespaces");
    assert!(left.is_empty(), "bench namespaces left behind: {left:?}");
    let records: Vec<String> = aks_userspace::state::ClusterState::list()
        .expect("listing clusters")
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(
        records.is_empty(),
        "bench cluster records left: {records:?}"
    );
    let pins = Path::new("/sys/fs/bpf/aksnet");
    if let Ok(entries) = std::fs::read_dir(pins) {
        let pinned: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(&prefix))
            .collect();
        assert!(pinned.is_empty(), "bench pins left: {pinned:?}");
    }
    for file in [json, csv, svg] {
        let _ = std::fs::remove_file(file);
    }
}
