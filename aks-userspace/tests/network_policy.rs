//! Privileged, end to end through the `aksnet` binary: the three-tier app of
//! examples/three-tier.yaml (web may reach api:8080, api may reach db:5432, nothing else
//! reaches db, only api reaches the internet) on a real cluster. Every pair
//! `check --policies` probes is judged here against the app's rules written out
//! independently of the policy evaluator, so an evaluator bug cannot hide a datapath
//! that agrees with it.

mod common;

use std::path::PathBuf;

use common::cluster::{aksnet, aksnet_ok, up_keep, TestCluster};
use serde_json::Value;

/// The example under a unique name on `datapath` with `engine` (Azure CNI Overlay when
/// `overlay`).
fn three_tier(name: &str, datapath: &str, engine: &str, overlay: bool) -> PathBuf {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/three-tier.yaml");
    let yaml = std::fs::read_to_string(path).expect("reading the example");
    let yaml = yaml
        .replacen("name: tiers", &format!("name: {name}"), 1)
        .replacen("datapath: ebpf", &format!("datapath: {datapath}"), 1)
        .replacen(
            "networkPolicy: cilium",
            &format!("networkPolicy: {engine}"),
            1,
        );
    let yaml = if overlay {
        let with_mode = "networkPlugin: azure\nnetworkPluginMode: overlay";
        assert!(
            yaml.contains("networkPlugin: azure\n"),
            "the example is Azure CNI"
        );
        yaml.replacen("networkPlugin: azure", with_mode, 1)
    } else {
        yaml
    };
    let out = std::env::temp_dir().join(format!("aksnet-policy-{name}.yaml"));
    std::fs::write(&out, yaml).expect("writing the description");
    out
}

/// What an endpoint label of the three-tier cluster is: a pod's app (by slot), a node,
/// or a host outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role<'a> {
    Web,
    Api,
    Db,
    Client,
    Node(&'a str),
    OnPrem,
    Internet,
}

fn role(label: &str) -> Role<'_> {
    match label {
        "on-prem" => Role::OnPrem,
        "internet" => Role::Internet,
        pod if pod.contains("-pod") => match pod.rsplit("-pod").next() {
            Some("0") => Role::Web,
            Some("1") => Role::Api,
            Some("2") => Role::Db,
            Some("3") => Role::Client,
            other => panic!("no slot {other:?} in the three-tier app"),
        },
        node => Role::Node(node),
    }
}

/// The app's rules, written from the issue, not from the evaluator.
fn should_connect(source: &str, destination: &str, port: u64) -> bool {
    let in_shop = |r: Role| matches!(r, Role::Web | Role::Api | Role::Db);
    let (from, to) = (role(source), role(destination));
    let own_node =
        |pod: &str| matches!(from, Role::Node(node) if pod.starts_with(&format!("{node}-")));
    // Egress: shop pods reach pods only, and api also the internet.
    let egress_ok = match (from, to) {
        (f, Role::Internet) if in_shop(f) => f == Role::Api,
        (f, Role::OnPrem | Role::Node(_)) if in_shop(f) => false,
        _ => true,
    };
    // Ingress: db only from api on 5432, api only from web on 8080; a pod's own node
    // always reaches it; the internet reaches no pod at all (no public IP).
    let ingress_ok = match to {
        Role::Db => (from == Role::Api && port == 5432) || own_node(destination),
        Role::Api => (from == Role::Web && port == 8080) || own_node(destination),
        _ => from != Role::Internet,
    };
    egress_ok && ingress_ok
}

/// `aksnet monitor --json` of the whole cluster, started by this test.
struct DropMonitor {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl DropMonitor {
    fn start(name: &str) -> Self {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut child = Command::new(common::cluster::AKSNET)
            .args(["monitor", "--cluster", name, "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting aksnet monitor");
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let events = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = events.send(line);
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.starts_with("monitoring") {
                    let _ = tx.send(line);
                }
            }
        });
        let ready = lines.recv_timeout(std::time::Duration::from_secs(10));
        assert!(
            ready.is_ok_and(|l| l.starts_with("monitoring")),
            "monitor never said it was monitoring"
        );
        Self { child, lines }
    }

    /// Stops the monitor (the child this test started) and returns its events.
    fn stop(mut self) -> Vec<Value> {
        // Events polled every few milliseconds: give the last ones time to arrive.
        std::thread::sleep(std::time::Duration::from_millis(500));
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.lines
            .try_iter()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(&l).expect("one JSON object per line"))
            .collect()
    }
}

fn rows(out: &std::process::Output) -> Vec<Value> {
    let value: Value = serde_json::from_slice(&out.stdout).expect("check --json prints JSON");
    value.as_array().expect("an array of rows").clone()
}

fn three_tier_is_enforced(datapath: &str, engine: &str, tag: &str, overlay: bool) {
    let cluster = TestCluster::new(tag);
    let name = cluster.name.clone();
    up_keep(&three_tier(&name, datapath, engine, overlay));

    // eBPF: every denial also streams to `monitor --type drop`, with its policy named.
    let monitor = (datapath == "ebpf").then(|| DropMonitor::start(&name));
    let out = aksnet(&["check", &name, "--policies", "--json"]);
    if let Some(monitor) = monitor {
        let events = monitor.stop();
        let named = |reason: &str, policy: &str, port: u64| {
            events.iter().any(|e| {
                e["reason"] == reason
                    && e["policy"] == policy
                    && e["dport"] == port
                    && e["verdict"] == "dropped"
            })
        };
        assert!(
            named(
                "drop-policy-ingress",
                "default deny by shop/db-from-api",
                5432
            ),
            "a denied connection to db shows in monitor with its policy: {events:?}"
        );
        assert!(
            named(
                "drop-policy-egress",
                "default deny by shop/egress-in-cluster",
                17001
            ),
            "web -> internet shows as an egress drop: {events:?}"
        );
    }
    let rows = rows(&out);
    let (mut connected, mut blocked) = (0, 0);
    let mut wrong = Vec::new();
    for row in &rows {
        let (source, destination) = (
            row["source"].as_str().expect("source"),
            row["destination"].as_str().expect("destination"),
        );
        let port = row["port"].as_u64().expect("port");
        let expected = should_connect(source, destination, port);
        let seen = row["connected"] == true;
        eprintln!(
            "{source} -> {destination}:{port} connected={seen} expected={expected} ({})",
            row["expected"]
        );
        if seen != expected {
            wrong.push(format!("{source} -> {destination}:{port}: connected={seen}, the app's rules say {expected}"));
        }
        if seen {
            connected += 1
        } else {
            blocked += 1
        }
    }
    assert!(
        wrong.is_empty(),
        "{datapath}/{engine}: {} pairs wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // The rows must include each of the app's rules, both ways.
    let has = |from: Role, to: Role, port: u64, connects: bool| {
        rows.iter().any(|r| {
            role(r["source"].as_str().unwrap_or_default()) == from
                && role(r["destination"].as_str().unwrap_or_default()) == to
                && r["port"] == port
                && (r["connected"] == true) == connects
        })
    };
    assert!(
        has(Role::Web, Role::Api, 8080, true),
        "web -> api:8080 probed and connected"
    );
    assert!(
        has(Role::Api, Role::Db, 5432, true),
        "api -> db:5432 probed and connected"
    );
    assert!(
        has(Role::Web, Role::Db, 5432, false),
        "web -> db:5432 probed and blocked"
    );
    assert!(
        has(Role::Client, Role::Db, 5432, false),
        "client -> db:5432 probed and blocked"
    );
    assert!(
        has(Role::Api, Role::Internet, 17001, true),
        "api -> internet connected"
    );
    assert!(
        has(Role::Web, Role::Internet, 17001, false),
        "web -> internet blocked"
    );
    assert!(
        connected >= 10 && blocked >= 10,
        "{connected} connected, {blocked} blocked"
    );
    // And check agrees: its own verdicts (from the evaluator) pass, exit 0.
    assert_eq!(
        out.status.code(),
        Some(0),
        "check --policies passes:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The standard matrix with policy expectations passes too (web -> api on the check
    // port is now blocked, and check expects it).
    let matrix = aksnet(&["check", &name]);
    assert_eq!(
        matrix.status.code(),
        Some(0),
        "the standard matrix passes:\n{}",
        String::from_utf8_lossy(&matrix.stdout)
    );
    cluster.down();
}

cell_tests!(three_tier_is_enforced:
    three_tier_on_iptables_with_azure_npm("iptables", "azure", "npi", false),
    three_tier_on_iptables_with_calico("iptables", "calico", "npc", false),
    three_tier_on_ebpf_with_cilium("ebpf", "cilium", "npe", false),
    three_tier_on_ebpf_with_calico("ebpf", "calico", "npk", false),
    three_tier_on_ebpf_overlay_with_cilium("ebpf", "cilium", "npo", true),
    three_tier_on_iptables_overlay_with_calico("iptables", "calico", "npq", true),
);

/// `check --expect` with these rows; whether every row passed.
fn expect_rows(name: &str, tag: &str, rows: &str) -> bool {
    let file = std::env::temp_dir().join(format!("aksnet-policy-expect-{name}-{tag}.yaml"));
    std::fs::write(&file, rows).expect("writing the expectations");
    let out = aksnet(&["check", name, "--expect", file.to_str().expect("utf-8")]);
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    out.status.code() == Some(0)
}

/// `policy delete` opens db to everyone, `policy apply` closes it again, on a running
/// cluster; bad input exits 2 and changes nothing.
fn live_policy_changes(datapath: &str, engine: &str, tag: &str) {
    let cluster = TestCluster::new(tag);
    let name = cluster.name.clone();
    up_keep(&three_tier(&name, datapath, engine, false));
    // web (slot 0) to db (slot 2) across nodes, api (slot 1) to db.
    let web_to_db = |expect: &str| {
        format!(
            "- {{ from: nodepool1-0-pod0, to: nodepool1-1-pod2, port: 5432, expect: {expect} }}\n- {{ from: nodepool1-0-pod1, to: nodepool1-1-pod2, port: 5432, expect: reachable }}\n"
        )
    };
    assert!(
        expect_rows(&name, "before", &web_to_db("blocked")),
        "db starts closed to web"
    );

    let out = aksnet_ok(&[
        "policy",
        "delete",
        "db-from-api",
        "--namespace",
        "shop",
        "--cluster",
        &name,
    ]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.contains("shop/db-from-api programmed on 2 nodes"),
        "{said}"
    );
    if datapath == "ebpf" {
        assert!(said.contains("map entries written"), "{said}");
    } else {
        assert!(said.contains("iptables-restore"), "{said}");
    }
    assert!(
        expect_rows(&name, "deleted", &web_to_db("reachable")),
        "db open once its policy is gone"
    );

    let policy = std::env::temp_dir().join(format!("aksnet-policy-db-{name}.yaml"));
    std::fs::write(
        &policy,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: { name: db-from-api, namespace: shop }\nspec:\n  podSelector: { matchLabels: { app: db } }\n  policyTypes: [Ingress]\n  ingress:\n    - from: [{ podSelector: { matchLabels: { app: api } } }]\n      ports: [{ protocol: TCP, port: 5432 }]\n",
    )
    .expect("writing the policy");
    aksnet_ok(&[
        "policy",
        "apply",
        policy.to_str().expect("utf-8"),
        "--cluster",
        &name,
    ]);
    assert!(
        expect_rows(&name, "applied", &web_to_db("blocked")),
        "db closed again by apply"
    );

    let list: Value = serde_json::from_slice(
        &aksnet_ok(&["policy", "list", "--cluster", &name, "--json"]).stdout,
    )
    .expect("policy list --json prints JSON");
    assert_eq!(list["policies"].as_array().map(Vec::len), Some(4), "{list}");

    // Bad input: exit 2, nothing changed.
    let unknown = aksnet(&["policy", "delete", "nope", "-n", "shop", "--cluster", &name]);
    assert_eq!(
        unknown.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    let bad = std::env::temp_dir().join(format!("aksnet-policy-bad-{name}.yaml"));
    std::fs::write(
        &bad,
        "metadata: { name: x, namespace: shop }\nspec:\n  podSelector: {}\n  ingres: []\n",
    )
    .expect("writing");
    let out = aksnet(&[
        "policy",
        "apply",
        bad.to_str().expect("utf-8"),
        "--cluster",
        &name,
    ]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("ingres") && err.contains("line"),
        "unknown field with its line: {err}"
    );
    assert!(
        expect_rows(&name, "after-bad", &web_to_db("blocked")),
        "still closed"
    );
    cluster.down();
}

cell_tests!(live_policy_changes:
    live_policy_changes_on_ebpf("ebpf", "cilium", "npl"),
    live_policy_changes_on_iptables("iptables", "azure", "npj"),
);

/// Policy beside the features that came after it: an NSG rule in the fabric (on-prem to port 17001 in the
/// node subnet, not the NodePorts), a NAT gateway for egress, and
/// two LoadBalancer services whose backend (the first node's first pod) a policy admits
/// from the internet only, on its target port.
const COEXISTING: &str = "outboundType: managedNATGateway\npodTemplates:\n  - { labels: { app: shop } }\n  - { labels: { app: client } }\nnetworkPolicies:\n  - metadata: { name: shop-from-internet }\n    spec:\n      podSelector: { matchLabels: { app: shop } }\n      policyTypes: [Ingress]\n      ingress:\n        - from: [{ ipBlock: { cidr: 203.0.113.0/24 } }]\n          ports: [{ protocol: TCP, port: 17001 }]\nservices:\n  - { name: web, clusterIP: 10.0.0.20, port: 80, targetPort: 17001, backends: 1, type: LoadBalancer }\n  - { name: web-local, clusterIP: 10.0.0.21, port: 80, targetPort: 17001, backends: 1, type: LoadBalancer, externalTrafficPolicy: Local }\nnsg:\n  - { name: deny-onprem-17001, priority: 100, access: Deny, protocol: Tcp, sourceAddressPrefix: 192.168.100.0/24, destinationAddressPrefix: 10.224.0.0/24, destinationPortRange: \"17001\" }\n";

fn policy_coexists_with_load_balancers_nsg_and_nat_gateway(
    datapath: &str,
    engine: &str,
    tag: &str,
) {
    let cluster = TestCluster::new(tag);
    let name = cluster.name.clone();
    let yaml = format!(
        "name: {name}\nnetworkPlugin: azure\ndatapath: {datapath}\nnetworkPolicy: {engine}\nvnet:\n  addressSpace: 10.224.0.0/12\n  nodeSubnet: 10.224.0.0/24\nnodePools:\n  - {{ name: nodepool1, count: 2, osType: Linux }}\npodsPerNode: 2\n{COEXISTING}"
    );
    let file = std::env::temp_dir().join(format!("aksnet-policy-{name}.yaml"));
    std::fs::write(&file, yaml).expect("writing the description");
    up_keep(&file);

    // The matrix (NSG and NAT gateway rows included) and the policy view agree with the
    // model.
    aksnet_ok(&["check", &name]);
    aksnet_ok(&["check", &name, "--policies"]);
    // The frontends: each row's verdict is its own; here the outcomes the policy makes.
    let out = aksnet(&["check", &name, "--frontends", "--json"]);
    let rows: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    eprintln!("{rows:#}");
    assert_eq!(out.status.code(), Some(0), "check --frontends passes");
    let row = |service: &str, client: &str| -> &Value {
        rows.as_array()
            .expect("rows")
            .iter()
            .find(|r| r["service"] == service && r["client"] == client)
            .unwrap_or_else(|| panic!("no row {service} from {client}"))
    };
    let answered = |r: &Value| r["answered"].as_u64().expect("answered");
    let attempts = |r: &Value| r["attempts"].as_u64().expect("attempts");
    // Local keeps the client's address, which the policy admits: every connection.
    let local = row("web-local", "internet");
    assert_eq!(answered(local), attempts(local), "{local}");
    // Cluster: through the backend's own node the policy sees the client (admitted),
    // through the other node that node's address (denied): some answered, not all.
    let any_node = row("web", "internet");
    assert_eq!(any_node["expected"]["outcome"], "partly", "{any_node}");
    assert!(
        answered(any_node) > 0 && answered(any_node) < attempts(any_node),
        "{any_node}"
    );
    // On-prem is not admitted by the policy, whatever the path.
    for service in ["web", "web-local"] {
        let r = row(service, "on-prem");
        assert_eq!(answered(r), 0, "{r}");
        assert!(
            r["expected"]["reason"]
                .as_str()
                .is_some_and(|why| why.contains("default/shop-from-internet")),
            "{r}"
        );
    }
    cluster.down();
}

cell_tests!(policy_coexists_with_load_balancers_nsg_and_nat_gateway:
    policy_coexists_with_load_balancers_nsg_and_nat_gateway_on_iptables("iptables", "azure", "npb"),
    policy_coexists_with_load_balancers_nsg_and_nat_gateway_on_ebpf("ebpf", "cilium", "npf"),
);
