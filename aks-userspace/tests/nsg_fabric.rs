//! Privileged: the node subnet's NSG is enforced in the fabric, statefully, the same on
//! every matrix cell. A deny rule stops new inbound connections on its port only, and a
//! rule denying the internet's prefix leaves the replies of `pod -> internet` alone (as
//! Azure's stateful NSG does); `check` agrees with the model on every row, and
//! `inspect nsg` counts the packets each rule decided.

mod common;

use aks_userspace::check::{self, Probe};
use aks_userspace::state::ClusterState;
use common::cluster::*;
use common::require_privileges;
use serde_json::Value;

/// Deny on-prem → the node subnet on 17001 (the check port) and on 30000-65535 (where
/// the replies to `pod -> on-prem` land: they must still pass), and everything the
/// internet starts (its replies must still pass).
const RULES: &str = "nsg:\n  - { name: deny-onprem-17001, priority: 100, access: Deny, protocol: Tcp, sourceAddressPrefix: 192.168.100.0/24, destinationAddressPrefix: 10.224.0.0/24, destinationPortRange: \"17001\" }\n  - { name: deny-internet, priority: 110, access: Deny, protocol: \"*\", sourceAddressPrefix: 203.0.113.0/24 }\n  - { name: deny-onprem-high, priority: 120, access: Deny, protocol: Tcp, sourceAddressPrefix: 192.168.100.0/24, destinationAddressPrefix: 10.224.0.0/24, destinationPortRange: \"30000-65535\" }\n";

fn nsg_is_stateful_and_enforced_in_the_fabric(plugin: &str, datapath: &str, tag: &str) {
    require_privileges();
    let name = cluster_name(tag);
    let _down = Down(name.clone());
    up_keep(&description_with(&name, plugin, datapath, 2, 1, RULES));

    // `check` exits 0 only when every row matches the model, NSG rows included.
    let results = check(&name);
    let on_prem_node = probe(&results, "on-prem -> node");
    assert_eq!(on_prem_node["connected"], false, "denied: {on_prem_node}");
    let internet = probe(&results, "pod -> internet");
    assert_eq!(
        internet["connected"], true,
        "replies from a denied prefix pass: {internet}"
    );
    let on_prem = probe(&results, "pod -> on-prem");
    assert_eq!(
        on_prem["connected"], true,
        "replies landing on denied ports pass: {on_prem}"
    );
    let state = ClusterState::require(&name).expect("cluster state");
    // The node's address, SNATed by the load balancer's outbound rule (outboundType
    // loadBalancer) on the way out; the replies from the denied prefix still pass.
    assert_eq!(internet["seenSource"], "198.51.100.4", "{internet}");

    // The rule is port-specific: on-prem reaches the same node on another port.
    let (endpoints, _) = check::cluster_matrix(&state);
    let find = |label: &str| {
        endpoints
            .iter()
            .position(|e| e.label == label)
            .unwrap_or_else(|| panic!("no endpoint {label}"))
    };
    let open = Probe {
        port: 17002,
        ..Probe::new(
            find("on-prem"),
            find("nodepool1-0"),
            "on-prem -> node, 17002",
        )
    };
    let results = check::run(&endpoints, &[open]).expect("probe");
    print!("{}", check::render_table(&results));
    assert!(
        results[0].connected,
        "port 17002 is not denied: {:?}",
        results[0].error
    );

    // The fabric counted the SYNs the deny rule dropped, and nothing for the internet's
    // rule or the high ports: replies never reach a rule.
    let rows = json(&["inspect", "nsg", "--cluster", &name, "--json"]);
    let row = |rule: &str| -> Value {
        rows.as_array()
            .expect("rows")
            .iter()
            .find(|r| r["name"] == rule)
            .unwrap_or_else(|| panic!("no rule {rule}: {rows}"))
            .clone()
    };
    let onprem = row("deny-onprem-17001");
    assert_eq!(onprem["action"], "deny");
    assert_eq!(onprem["ports"], "17001");
    assert!(onprem["packets"].as_u64().expect("packets") > 0, "{rows}");
    let from_internet = row("deny-internet");
    assert_eq!(from_internet["source"], "203.0.113.0/24");
    assert_eq!(from_internet["packets"], 0, "{rows}");
    assert_eq!(row("deny-onprem-high")["packets"], 0, "{rows}");

    aksnet_ok(&["down", &name]);
    assert_gone(&name);
}

#[test]
fn azure_cni_ebpf() {
    nsg_is_stateful_and_enforced_in_the_fabric("azure", "ebpf", "na");
}

#[test]
fn azure_cni_iptables() {
    nsg_is_stateful_and_enforced_in_the_fabric("azure", "iptables", "nb");
}

#[test]
fn kubenet_ebpf() {
    nsg_is_stateful_and_enforced_in_the_fabric("kubenet", "ebpf", "nc");
}

#[test]
fn kubenet_iptables() {
    nsg_is_stateful_and_enforced_in_the_fabric("kubenet", "iptables", "nd");
}
