//! Privileged: `aksnet bench --frontends` builds its two clusters, measures a connection
//! rate through each LoadBalancer frontend (Cluster and Local, eBPF and iptables),
//! reports it as a table and JSON, and removes its clusters.

mod common;

use common::cluster::*;
use common::require_privileges;

#[test]
fn the_frontend_bench_measures_every_datapath_and_policy_and_cleans_up() {
    require_privileges();
    let prefix = "nfb";
    let json_path = std::env::temp_dir().join("aksnet-test-bench-frontends.json");
    let out = aksnet_ok(&[
        "bench",
        "--frontends",
        "--rounds",
        "1",
        "--duration",
        "0.3",
        "--prefix",
        prefix,
        "--json",
        json_path.to_str().expect("utf-8 path"),
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("internet → LB"), "{table}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_path).expect("the JSON report")).expect("JSON");
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 4, "2 datapaths x 2 policies: {report}");
    for datapath in ["ebpf", "iptables"] {
        for policy in ["Cluster", "Local"] {
            let row = results
                .iter()
                .find(|r| r["datapath"] == datapath && r["policy"] == policy)
                .unwrap_or_else(|| panic!("{datapath} {policy}: {report}"));
            let rate = row["rate"]["median"].as_f64().unwrap_or(0.0);
            assert!(rate > 0.0, "{datapath} {policy} measured a rate: {row}");
            assert_eq!(row["failures"], 0, "{datapath} {policy}: {row}");
        }
    }
    for tag in ["fe", "fi"] {
        assert_gone(&format!("{prefix}{tag}"));
    }
}
