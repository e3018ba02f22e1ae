//! Privileged smoke test: `aksnet bench --quick` through the binary completes, every
//! cell produces numbers (not asserted: their size; performance is measured, never
//! asserted in timed tests), and nothing of the benchmark is left behind.

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
            "limit"
        ]
    );
    let results = report["results"].as_array().expect("results");
    for cell in &cells {
        for metric in ["stream", "rr-rate", "rr-p50", "rr-p99", "connect-internet"] {
            let r = results
                .iter()
                .find(|r| r["cell"] == *cell && r["metric"] == metric)
                .unwrap_or_else(|| panic!("no {metric} result for {cell}"));
            let median = r["median"].as_f64();
            assert!(
                median.is_some_and(|m| m > 0.0),
                "{cell} {metric} has no number: {r}"
            );
        }
        // ClusterIP workloads: numbers where the datapath serves them, a reason elsewhere.
        let service = results
            .iter()
            .find(|r| r["cell"] == *cell && r["metric"] == "connect-service")
            .expect("a connect-service result per cell");
        assert!(
            service["median"].as_f64().is_some_and(|m| m > 0.0) || service["note"].is_string(),
            "{cell}: a ClusterIP rate or a reason: {service}"
        );
        if cell.ends_with("/iptables") {
            assert!(service["median"].as_f64().is_some(), "{cell}: {service}");
        }
    }
    let sweep = report["sweep"].as_array().expect("sweep");
    let measured: Vec<&Value> = sweep
        .iter()
        .filter(|p| p["cell"] == "kubenet/iptables")
        .collect();
    assert_eq!(measured.len(), 2, "quick sweeps 10 and 1,000 services");
    for p in measured {
        assert!(p["firstPacketP50Us"].as_f64().is_some(), "{p}");
        assert!(p["programOneMoreMs"].as_f64().is_some(), "{p}");
    }
    let csv_text = std::fs::read_to_string(&csv).expect("the CSV was written");
    assert!(csv_text.starts_with("kind,workload,cell,"), "{csv_text}");
    let svg_text = std::fs::read_to_string(&svg).expect("the plot was written");
    assert!(svg_text.contains("<svg"), "an SVG");

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
