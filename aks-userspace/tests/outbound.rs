//! Privileged: `outboundType` on whole clusters. `managedNATGateway`: the internet sees
//! the NAT gateway's public address, on either datapath (the fabric SNATs after the
//! node's masquerade); `none`: nothing reaches the internet. `check` judges every row
//! against the model (exit 0), and the rows asserted here show the model said so.

mod common;

use common::cluster::*;

const NAT_GATEWAY: &str = "198.51.100.5";

fn egress(plugin: &str, datapath: &str, outbound: &str, tag: &str) -> serde_json::Value {
    let cluster = TestCluster::new(tag);
    let name = cluster.name.clone();
    let extra = format!("outboundType: {outbound}\n");
    up_keep(&description_with(&name, plugin, datapath, 2, 1, &extra));
    let results = check(&name);
    let row = probe(&results, "pod -> internet").clone();
    // The NAT gateway's pool, per node, from the fabric's connection table: the probe
    // from the first node's pod holds one port (its flow lingers in TIME_WAIT).
    let egress = json(&["inspect", "egress", "--cluster", &name, "--json"]);
    let rows = egress.as_array().expect("egress rows");
    if outbound == "managedNATGateway" {
        let first = rows
            .iter()
            .find(|r| r["node"] == "nodepool1-0")
            .unwrap_or_else(|| panic!("the first node holds a port: {egress}"));
        assert_eq!(first["publicIp"], NAT_GATEWAY);
        assert!(
            first["portsInUse"].as_u64().expect("a count") >= 1,
            "{egress}"
        );
        assert_eq!(first["pool"], 64_512);
    } else {
        assert!(rows.is_empty(), "no NAT gateway, no rows: {egress}");
    }
    // Egress rules touch only the internet: on-prem is reached as before.
    assert_eq!(probe(&results, "pod -> on-prem")["connected"], true);
    cluster.down();
    row
}

#[test]
fn nat_gateway_is_what_the_internet_sees_on_ebpf() {
    let row = egress("azure", "ebpf", "managedNATGateway", "oa");
    assert_eq!(row["connected"], true, "{row}");
    assert_eq!(row["seenSource"], NAT_GATEWAY, "{row}");
}

#[test]
fn nat_gateway_is_what_the_internet_sees_on_iptables() {
    let row = egress("kubenet", "iptables", "managedNATGateway", "ob");
    assert_eq!(row["connected"], true, "{row}");
    assert_eq!(row["seenSource"], NAT_GATEWAY, "{row}");
}

#[test]
fn none_has_no_egress() {
    for (plugin, datapath, tag) in [("azure", "ebpf", "oc"), ("kubenet", "iptables", "od")] {
        let row = egress(plugin, datapath, "none", tag);
        assert_eq!(row["connected"], false, "{plugin}/{datapath}: {row}");
    }
}

#[test]
fn user_defined_routing_is_refused_naming_the_field() {
    let name = cluster_name("oe");
    let file = description_with(
        &name,
        "azure",
        "iptables",
        1,
        1,
        "outboundType: userDefinedRouting\n",
    );
    let out = aksnet(&["plan", file.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("outboundType") && err.contains("userDefinedRouting"),
        "{err}"
    );
}
