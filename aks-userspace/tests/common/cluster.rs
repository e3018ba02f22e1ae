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

/// The result of the probe with `path` ("pod -> internet", …).
pub fn probe<'a>(results: &'a [Value], path: &str) -> &'a Value {
    results
        .iter()
        .find(|r| r["path"] == path)
        .unwrap_or_else(|| panic!("no probe {path:?} in the check results"))
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
        !Path::new("/sys/fs/bpf/aksnet").join(name).exists(),
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

/// `aksnet up` running in the foreground (a child of the test), once it said the
/// cluster is up; stderr lines that contain `watch` arrive on `lines`.
pub struct ForegroundUp {
    pub child: std::process::Child,
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl ForegroundUp {
    pub fn start(file: &Path, extra: &[&str], watch: &'static str) -> Self {
        use std::io::{BufRead, BufReader};
        use std::process::Stdio;
        use std::sync::mpsc;
        let mut child = Command::new(AKSNET)
            .arg("up")
            .arg(file)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting aksnet up");
        let (ready_tx, ready) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains(" is up") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(watch) {
                    let _ = tx.send(line);
                }
            }
        });
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
