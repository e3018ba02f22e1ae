//! Driving whole clusters through the `aksnet` binary: descriptions written to temp
//! files, `up --keep`, `check --json`, and a guard that runs `down` whatever happens.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub const AKSNET: &str = env!("CARGO_BIN_EXE_aksnet");

/// A cluster name unique to this test process (names are at most 8 characters).
pub fn cluster_name(tag: &str) -> String {
    format!("{tag}{}", std::process::id() % 100_000)
}

/// A one-pool description; `extra` is appended verbatim (more YAML fields).
pub fn description_with(
    name: &str,
    plugin: &str,
    datapath: &str,
    nodes: u32,
    pods_per_node: u32,
    extra: &str,
) -> PathBuf {
    let max_pods = if plugin == "kubenet" { 110 } else { 30 };
    let yaml = format!(
        "name: {name}\nnetworkPlugin: {plugin}\ndatapath: {datapath}\nvnet:\n  addressSpace: 10.224.0.0/12\n  nodeSubnet: 10.224.0.0/24\nmaxPods: {max_pods}\nnodePools:\n  - {{ name: nodepool1, count: {nodes}, osType: Linux }}\npodsPerNode: {pods_per_node}\n{extra}"
    );
    let path = std::env::temp_dir().join(format!("aksnet-test-{name}-{plugin}-{datapath}.yaml"));
    std::fs::write(&path, yaml).expect("writing the test description");
    path
}

pub fn description(
    name: &str,
    plugin: &str,
    datapath: &str,
    nodes: u32,
    pods_per_node: u32,
) -> PathBuf {
    description_with(name, plugin, datapath, nodes, pods_per_node, "")
}

pub fn aksnet(args: &[&str]) -> Output {
    Command::new(AKSNET)
        .args(args)
        .output()
        .expect("running aksnet")
}

/// The arguments of `aksnet services add NAME --cluster CLUSTER --cluster-ip IP --port 80
/// --backends N`, then `more` (`--target-port`, `--type`, …).
pub fn services_add<'a>(
    cluster: &'a str,
    name: &'a str,
    cluster_ip: &'a str,
    backends: &'a str,
    more: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "services",
        "add",
        name,
        "--cluster",
        cluster,
        "--cluster-ip",
        cluster_ip,
        "--port",
        "80",
        "--backends",
        backends,
    ];
    args.extend_from_slice(more);
    args
}

/// `aksnet services add` of a LoadBalancer service on port 80 → 17001 with
/// `external_traffic_policy` (`Cluster` or `Local`); it must succeed.
pub fn add_load_balancer_service(
    cluster: &str,
    name: &str,
    cluster_ip: &str,
    backends: &str,
    external_traffic_policy: &str,
) -> Output {
    let more = [
        "--target-port",
        "17001",
        "--type",
        "LoadBalancer",
        "--external-traffic-policy",
        external_traffic_policy,
    ];
    aksnet_ok(&services_add(cluster, name, cluster_ip, backends, &more))
}

pub fn aksnet_ok(args: &[&str]) -> Output {
    let out = aksnet(args);
    assert!(
        out.status.success(),
        "`aksnet {}` failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Starts `aksnet args` with its stdout and stderr piped to the test.
pub fn spawn_aksnet<S: AsRef<std::ffi::OsStr>>(
    args: impl IntoIterator<Item = S>,
) -> std::process::Child {
    use std::process::Stdio;
    Command::new(AKSNET)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting aksnet")
}

/// Runs `aksnet` once per argument list, all at the same time, and asserts that each
/// run succeeded.
pub fn aksnet_concurrently(runs: &[Vec<String>]) {
    let children: Vec<_> = runs.iter().map(spawn_aksnet).collect();
    for (child, args) in children.into_iter().zip(runs) {
        let out = child.wait_with_output().expect("waiting for aksnet");
        assert!(
            out.status.success(),
            "each `aksnet {}` succeeds: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The JSON `aksnet args` prints (it must succeed).
pub fn json(args: &[&str]) -> Value {
    let out = aksnet_ok(args);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("`aksnet {}` prints JSON: {e}", args.join(" ")))
}

pub fn up_keep(file: &Path) -> Output {
    aksnet_ok(&["up", file.to_str().expect("utf-8 path"), "--keep"])
}

/// `check --json` results.
pub fn check(name: &str) -> Vec<Value> {
    let out = aksnet_ok(&["check", name, "--json"]);
    let results: Value = serde_json::from_slice(&out.stdout).expect("check --json prints JSON");
    let results = results
        .as_array()
        .expect("an array of probe results")
        .clone();
    for r in &results {
        eprintln!("{r}");
    }
    results
}

/// `check --json` of cluster `name`, every row of which must pass (match what the
/// model expects).
pub fn check_passing(name: &str) -> Vec<Value> {
    let results = check(name);
    assert_all_pass(&results);
    results
}

/// Every row (of `check`, `check --frontends` …) matched what the model expects.
pub fn assert_all_pass(rows: &[Value]) {
    for row in rows {
        assert_eq!(row["verdict"], "pass", "{row}");
    }
}

/// The row of a JSON array whose `key` is `value` (a map, a rule …).
pub fn row_where(rows: &Value, key: &str, value: &str) -> Value {
    rows.as_array()
        .expect("an array of rows")
        .iter()
        .find(|r| r[key] == value)
        .unwrap_or_else(|| panic!("no row with {key} {value:?}: {rows}"))
        .clone()
}

/// The result of the probe with `path` ("pod -> internet", …).
pub fn probe<'a>(results: &'a [Value], path: &str) -> &'a Value {
    results
        .iter()
        .find(|r| r["path"] == path)
        .unwrap_or_else(|| panic!("no probe {path:?} in the check results"))
}

/// Where the eBPF datapath pins node `node`'s maps and links of cluster `name`.
pub fn node_pins(name: &str, node: &str) -> PathBuf {
    aks_userspace::state::ClusterState::pin_dir(name).join(node)
}

pub fn namespaces_of(name: &str) -> Vec<String> {
    aks_userspace::netns::list_with_prefix(&format!("aks-{name}-")).expect("listing namespaces")
}

/// Nothing of cluster `name` may remain: namespaces, record, pins.
pub fn assert_gone(name: &str) {
    let left = namespaces_of(name);
    assert!(
        left.is_empty(),
        "namespaces of {name} left behind: {left:?}"
    );
    assert!(
        !Path::new("/run/aksnet").join(name).exists(),
        "state of {name} left behind"
    );
    assert!(
        !aks_userspace::state::ClusterState::pin_dir(name).exists(),
        "pins of {name} left behind"
    );
}

/// Removes the cluster even when an assertion fails midway.
pub struct Down(pub String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = aksnet(&["down", &self.0]);
    }
}

/// One test's cluster: the privilege check, a name unique to this process, and `down`
/// when the test ends, whether it passed or panicked. [`TestCluster::down`] is the
/// checked end: `down` must succeed and leave nothing behind.
pub struct TestCluster {
    pub name: String,
    /// Set once [`TestCluster::down`] removed it: nothing left to remove on drop.
    removed: bool,
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if !self.removed {
            let _ = aksnet(&["down", &self.name]);
        }
    }
}

impl TestCluster {
    /// A name for a cluster the test brings up itself (foreground `up`, its own file).
    pub fn new(tag: &str) -> Self {
        super::require_privileges();
        Self {
            name: cluster_name(tag),
            removed: false,
        }
    }

    /// `up --keep` of a one-pool description.
    pub fn up(tag: &str, plugin: &str, datapath: &str, nodes: u32, pods_per_node: u32) -> Self {
        Self::up_with(tag, plugin, datapath, nodes, pods_per_node, "")
    }

    /// `up --keep` of a one-pool description with `extra` YAML fields.
    pub fn up_with(
        tag: &str,
        plugin: &str,
        datapath: &str,
        nodes: u32,
        pods_per_node: u32,
        extra: &str,
    ) -> Self {
        let cluster = Self::new(tag);
        up_keep(&description_with(
            &cluster.name,
            plugin,
            datapath,
            nodes,
            pods_per_node,
            extra,
        ));
        cluster
    }

    /// `down`, which must succeed and leave no namespace, record or pin behind.
    pub fn down(mut self) {
        aksnet_ok(&["down", &self.name]);
        assert_gone(&self.name);
        self.removed = true;
    }
}

/// Asserts that every probe in `paths` connected and that its peer saw the source as
/// the node `node` (masqueraded); `why` says which rule of the model that is.
pub fn assert_connected_as(results: &[Value], paths: &[&str], node: &str, why: &str) {
    for path in paths {
        let r = probe(results, path);
        assert_eq!(r["connected"], true, "{path}: {r}");
        assert_eq!(r["seenAs"], node, "{path}: {why}: {r}");
    }
}

/// The probes that stay inside the cluster's own addresses: pod to pod on one node and
/// across nodes, and a node to another node's pod. No model NATs them.
pub const INSIDE_THE_CLUSTER: [&str; 3] = [
    "pod -> pod, same node",
    "pod -> pod, other node",
    "node -> pod, other node",
];

/// Asserts that every probe in `paths` connected and that its peer saw the pod's own
/// address (no NAT on the way); `why` says which rule of the model that is.
pub fn assert_connected_unnatted(results: &[Value], paths: &[&str], why: &str) {
    for path in paths {
        let r = probe(results, path);
        assert_eq!(r["connected"], true, "{path}: {r}");
        assert_eq!(r["seenSource"], r["sourceAddress"], "{path}: {why}: {r}");
    }
}

/// Sends every line of `reader` that `keep` accepts to `to`, from a thread of its own:
/// a child's stdout or stderr, read while the test goes on.
pub fn forward_lines<R: std::io::Read + Send + 'static>(
    reader: R,
    to: std::sync::mpsc::Sender<String>,
    keep: impl Fn(&str) -> bool + Send + 'static,
) {
    use std::io::{BufRead, BufReader};
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if keep(&line) {
                let _ = to.send(line);
            }
        }
    });
}

/// `aksnet up` running in the foreground (a child of the test), once it said the
/// cluster is up; stderr lines that contain `watch` arrive on `lines`.
pub struct ForegroundUp {
    pub child: std::process::Child,
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl ForegroundUp {
    pub fn start(file: &Path, extra: &[&str], watch: &'static str) -> Self {
        use std::sync::mpsc;
        let up = [std::ffi::OsStr::new("up"), file.as_os_str()];
        let mut child = spawn_aksnet(up.into_iter().chain(extra.iter().map(std::ffi::OsStr::new)));
        let (ready_tx, ready) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        forward_lines(stdout, ready_tx, |line| line.contains(" is up"));
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        forward_lines(stderr, tx, move |line| line.contains(watch));
        if ready
            .recv_timeout(std::time::Duration::from_secs(60))
            .is_err()
        {
            let _ = child.kill();
            let _ = child.wait();
            panic!("aksnet up did not report the cluster up within 60 s");
        }
        Self { child, lines }
    }

    /// Ctrl-C, as a user would stop it; asserts a clean exit.
    pub fn interrupt(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .expect("SIGINT to the child this test started");
        let status = self.child.wait().expect("reaping aksnet up");
        assert!(status.success(), "up exits cleanly on Ctrl-C: {status}");
    }
}

/// The packets counted under `reason` anywhere in `inspect stats --json` output (summed
/// over nodes and programs, whatever the nesting).
pub fn find_packets(value: &Value, reason: &str) -> u64 {
    match value {
        Value::Array(items) => items.iter().map(|v| find_packets(v, reason)).sum(),
        Value::Object(map) => {
            if map.values().any(|v| v == reason) {
                map.get("packets").and_then(|p| p.as_u64()).unwrap_or(0)
            } else {
                map.values().map(|v| find_packets(v, reason)).sum()
            }
        }
        _ => 0,
    }
}
