//! Privileged: the lifecycle guarantees of issue 19, end to end through the `aksnet`
//! binary. Stop signals at build, at run and at teardown (also with stdout and stderr
//! gone), races between commands on one cluster (two `up`, two `down`, concurrent
//! `services add`), records that were tampered with or truncated, `/run/netns` turned
//! into a shared mount by someone else's `ip netns add`, a pin root owned by another
//! user, and records that outlived a reboot.
//!
//! Tests that need a `/run` of their own (`down --all`, `ip netns add`, a foreign pin
//! root, a simulated reboot) run in a private mount namespace with a tmpfs on `/run` (and
//! a fresh bpffs where pins matter): the machine's `/run/netns`, `/run/aksnet` and
//! `/sys/fs/bpf/aksnet` never change, and everything such a test made goes away with its
//! mount namespace even if it fails.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use common::cluster::*;
use common::require_privileges;

fn signal(child: &std::process::Child, signal: Signal) {
    kill(Pid::from_raw(child.id() as i32), signal).expect("signalling our own child");
}

/// Waits for `child` at most `limit`, killing it (and failing) if it takes longer.
fn wait_at_most(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("waiting for aksnet") {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("aksnet did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `aksnet up FILE [extra]` with stdout and stderr on one pipe (as `2>&1 | tee` does);
/// the lines arrive on the receiver until the one saying the cluster is up, after which
/// the reader closes its end, as `tee` does when Ctrl-C ends it.
fn up_into_one_pipe(file: &Path, extra: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    // Close-on-exec, so the child holds only the write end it is given.
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("a pipe");
    let child = Command::new(AKSNET)
        .arg("up")
        .arg(file)
        .args(extra)
        .stdout(Stdio::from(write.try_clone().expect("dup of the pipe")))
        .stderr(Stdio::from(write))
        .spawn()
        .expect("starting aksnet up");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        let reader = BufReader::new(std::fs::File::from(read));
        for line in reader.lines().map_while(Result::ok) {
            let up = line.contains(" is up");
            let _ = tx.send(line);
            if up {
                return;
            }
        }
    });
    (child, lines)
}

fn wait_for_line(lines: &mpsc::Receiver<String>, what: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(what) => return,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    panic!("no line containing {what:?} within {limit:?}");
}

#[test]
fn ctrl_c_and_a_hangup_with_the_output_pipe_closed_still_remove_the_cluster() {
    let cluster = TestCluster::new("sp");
    let name = cluster.name.clone();
    let (mut up, lines) = up_into_one_pipe(&description(&name, "azure", "ebpf", 2, 2), &[]);
    wait_for_line(&lines, " is up", Duration::from_secs(120));
    // `tee` is gone: the read end of the pipe is closed, every write fails with EPIPE.
    std::thread::sleep(Duration::from_millis(400));
    signal(&up, Signal::SIGINT);
    // The terminal closes too, while the teardown runs.
    std::thread::sleep(Duration::from_millis(20));
    let _ = kill(Pid::from_raw(up.id() as i32), Signal::SIGHUP);
    let status = wait_at_most(&mut up, Duration::from_secs(60));
    assert!(
        status.success(),
        "up ends cleanly without its output: {status}"
    );
    assert_gone(&name);
}

#[test]
fn a_hangup_removes_a_running_cluster() {
    let cluster = TestCluster::new("hu");
    let name = cluster.name.clone();
    let mut up = ForegroundUp::start(&description(&name, "kubenet", "iptables", 1, 2), &[], "\0");
    signal(&up.child, Signal::SIGHUP);
    let status = wait_at_most(&mut up.child, Duration::from_secs(60));
    assert!(status.success(), "SIGHUP stops up like Ctrl-C: {status}");
    assert_gone(&name);
}

/// A 2 × 110-pod cluster takes seconds to build: a stop signal during the build must be
/// honoured within a step, not after the build, and leave nothing, also with --keep.
fn stop_during_a_build(tag: &str, stop: Signal, extra: &[&str]) {
    let cluster = TestCluster::new(tag);
    let name = cluster.name.clone();
    let file = description(&name, "kubenet", "iptables", 2, 110);
    let file = file.to_str().expect("utf-8 path");
    let mut up = spawn_aksnet([&["up", file][..], extra].concat());
    let stderr = up.stderr.take().expect("piped stderr");
    let (tx, lines) = mpsc::channel();
    forward_lines(stderr, tx, |_| true);
    wait_for_line(&lines, "building namespaces: ", Duration::from_secs(60));
    let built_some = namespaces_of(&name).len();
    assert!(
        built_some < 225,
        "the signal arrives during the build ({built_some} namespaces)"
    );
    let sent = Instant::now();
    signal(&up, stop);
    let status = wait_at_most(&mut up, Duration::from_secs(60));
    let took = sent.elapsed();
    eprintln!(
        "{stop} during the build ({built_some} namespaces made): up exited {took:?} after it"
    );
    // Until the child's stderr closes.
    let rest: Vec<String> = lines.iter().collect();
    eprintln!("{}", rest.join("\n"));
    assert_eq!(
        status.code(),
        Some(128 + stop as i32),
        "a build stopped by {stop} exits with 128 + its number"
    );
    assert!(
        rest.iter()
            .any(|l| l.contains("arrived while it was being built")),
        "up says why it stopped: {rest:?}"
    );
    assert!(
        took < Duration::from_secs(10),
        "{stop} honoured promptly: the process ended {took:?} after it"
    );
    assert_gone(&name);
}

cell_tests!(stop_during_a_build:
    sigterm_during_a_keep_build_stops_it_and_leaves_nothing("tb", Signal::SIGTERM, &["--keep"]),
    a_hangup_during_a_build_stops_it_and_leaves_nothing("hb", Signal::SIGHUP, &[]),
);

#[test]
fn two_ups_of_one_name_leave_the_winner_untouched() {
    let cluster = TestCluster::new("tu");
    let name = cluster.name.clone();
    let file = description(&name, "kubenet", "iptables", 2, 2);
    let start = || {
        spawn_aksnet([
            std::ffi::OsStr::new("up"),
            file.as_os_str(),
            "--keep".as_ref(),
        ])
    };
    let (a, b) = (start(), start());
    let outs: Vec<Output> = [a, b]
        .into_iter()
        .map(|c| c.wait_with_output().expect("waiting for up"))
        .collect();
    let won: Vec<&Output> = outs.iter().filter(|o| o.status.success()).collect();
    let lost: Vec<&Output> = outs.iter().filter(|o| !o.status.success()).collect();
    assert_eq!(won.len(), 1, "exactly one up wins: {outs:?}");
    let why = String::from_utf8_lossy(&lost[0].stderr);
    assert!(
        why.contains("already exists") || why.contains("by another aksnet command"),
        "the loser says why: {why}"
    );
    assert_eq!(
        namespaces_of(&name).len(),
        1 + 2 + 2 + 4,
        "the winner's cluster is whole"
    );
    let results = check(&name);
    assert_eq!(probe(&results, "pod -> pod, other node")["connected"], true);
    cluster.down();
}

#[test]
fn two_concurrent_downs_of_a_running_up_both_succeed() {
    let cluster = TestCluster::new("td");
    let name = cluster.name.clone();
    let mut up = ForegroundUp::start(&description(&name, "azure", "ebpf", 1, 2), &[], "\0");
    let down = vec!["down".to_owned(), name.clone()];
    aksnet_concurrently(&[down.clone(), down]);
    let status = wait_at_most(&mut up.child, Duration::from_secs(30));
    assert!(
        status.success(),
        "up removed its cluster when asked: {status}"
    );
    assert_gone(&name);
}

#[test]
fn concurrent_services_add_loses_no_update() {
    let cluster = TestCluster::up("cs", "azure", "ebpf", 2, 2);
    let name = cluster.name.clone();
    const ADDS: usize = 8;
    let adds: Vec<Vec<String>> = (0..ADDS)
        .map(|i| {
            let ip = format!("10.0.0.{}", 100 + i);
            let args = ["services", "add", &format!("svc{i}"), "--cluster-ip", &ip];
            let rest = ["--port", "80", "--backends", "2", "--cluster", &name];
            args.iter().chain(&rest).map(|a| a.to_string()).collect()
        })
        .collect();
    aksnet_concurrently(&adds);
    let listed = aksnet_ok(&["services", "list", "--cluster", &name, "--json"]);
    let services: serde_json::Value =
        serde_json::from_slice(&listed.stdout).expect("services list --json");
    let names: Vec<&str> = services
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    for i in 0..ADDS {
        assert!(
            names.contains(&format!("svc{i}").as_str()),
            "svc{i} recorded: {names:?}"
        );
    }
    assert_eq!(names.len(), ADDS, "{names:?}");
    // The description `services` plans from holds them all too.
    let saved = std::fs::read_to_string(
        Path::new("/run/aksnet")
            .join(&name)
            .join("description.yaml"),
    )
    .expect("the saved description");
    assert_eq!(saved.matches("clusterIP").count(), ADDS, "{saved}");
    cluster.down();
}

/// A namespace outside every cluster prefix, made the way aksnet makes them (not with
/// `ip netns add`, which would turn the machine's `/run/netns` into a shared mount).
struct DecoyNamespace(String);

impl DecoyNamespace {
    fn new(tag: &str) -> Self {
        let name = format!("lc-decoy-{tag}-{}", std::process::id());
        aks_userspace::netns::create(&name).expect("creating the decoy namespace");
        Self(name)
    }
}

impl Drop for DecoyNamespace {
    fn drop(&mut self) {
        let _ = aks_userspace::netns::delete(&self.0);
    }
}

fn edit_record(name: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let file = Path::new("/run/aksnet").join(name).join("state.json");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("the record")).expect("JSON");
    edit(&mut record);
    std::fs::write(&file, serde_json::to_vec(&record).expect("JSON")).expect("tampering");
}

#[test]
fn down_removes_only_what_carries_the_prefix_of_a_tampered_record() {
    require_privileges();
    let decoy_dir = std::env::temp_dir().join(format!("lc-decoy-dir-{}", std::process::id()));
    std::fs::create_dir_all(&decoy_dir).expect("decoy dir");
    std::fs::write(decoy_dir.join("keep"), "not aksnet's").expect("decoy file");
    let decoy = DecoyNamespace::new("t");
    // A process that the record claims as its `up`: a reused PID.
    let mut bystander = Command::new("sleep").arg("60").spawn().expect("sleep");

    // 1. Extra namespaces (a decoy, a relative path) and a foreign PID in the record.
    let cluster = TestCluster::up("tn", "kubenet", "iptables", 1, 1);
    let name = cluster.name.clone();
    edit_record(&name, |r| {
        let list = r["namespaces"].as_array_mut().expect("namespaces");
        list.push(decoy.0.clone().into());
        list.push(format!("../../..{}", decoy_dir.display()).into());
        r["pid"] = bystander.id().into();
    });
    let out = aksnet_ok(&["down", &name]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("removed without its record"), "{said}");
    assert!(
        said.contains(&format!("aks-{name}-")),
        "down names the prefix: {said}"
    );
    assert_gone(&name);
    assert!(
        bystander.try_wait().expect("bystander").is_none(),
        "the recorded PID is not the owner and was not signalled"
    );

    // 2. A record whose name points elsewhere.
    let name = cluster_name("tr");
    let _down2 = Down(name.clone());
    up_keep(&description(&name, "kubenet", "iptables", 1, 1));
    edit_record(&name, |r| {
        r["name"] = format!("../../..{}", decoy_dir.display()).into();
    });
    let out = aksnet(&["check", &name]);
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        why.contains("cannot be used") && why.contains("aksnet down"),
        "{why}"
    );
    let out = aksnet_ok(&["down", &name]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed without its record"));
    assert_gone(&name);

    assert!(
        decoy_dir.join("keep").exists(),
        "the decoy directory survives"
    );
    assert!(
        aks_userspace::netns::is_live(&decoy.0),
        "the decoy namespace survives"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
    let _ = std::fs::remove_dir_all(&decoy_dir);
}

#[test]
fn a_refused_name_is_not_a_path() {
    require_privileges();
    let out = aksnet(&["down", "../../tmp"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing to remove"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn monitor_stops_with_an_error_when_its_cluster_is_removed() {
    let cluster = TestCluster::up("mo", "azure", "ebpf", 1, 1);
    let name = cluster.name.clone();
    let mut monitor = spawn_aksnet(["monitor", "--cluster", &name]);
    std::thread::sleep(Duration::from_millis(500));
    aksnet_ok(&["down", &name]);
    let status = wait_at_most(&mut monitor, Duration::from_secs(10));
    let mut said = String::new();
    std::io::Read::read_to_string(&mut monitor.stderr.take().expect("stderr"), &mut said)
        .expect("monitor's stderr");
    assert!(!status.success(), "monitor fails once its cluster is gone");
    assert!(said.contains("was removed"), "{said}");
}

/// Runs `script` (sh) in a private mount namespace with a tmpfs on `/run` (so
/// `/run/netns` and `/run/aksnet` start empty and belong to this test alone), with
/// `$A` the aksnet binary (scratch files go to the private `/run`). Also mounts a fresh bpffs on
/// `/sys/fs/bpf` when `own_bpffs`.
fn in_private_run(script: &str, own_bpffs: bool) -> Output {
    let setup = format!(
        "mount -t tmpfs aksnet-test /run && mkdir /run/netns{}",
        if own_bpffs {
            " && mount -t bpf bpf /sys/fs/bpf"
        } else {
            ""
        }
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!("set -u; {setup} || exit 99\n{script}"))
        .env("A", AKSNET)
        .output()
        .expect("running unshare (util-linux)");
    eprintln!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(
        out.status.code(),
        Some(99),
        "setting up the private /run failed"
    );
    out
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn down_all_goes_on_after_a_truncated_record() {
    require_privileges();
    let (a, b) = (cluster_name("ta"), cluster_name("tz"));
    let (fa, fb) = (
        description(&a, "azure", "ebpf", 1, 1),
        description(&b, "kubenet", "iptables", 1, 1),
    );
    // The eBPF cluster pins into the machine's bpffs; remove them should the test fail.
    struct Pins(String);
    impl Drop for Pins {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(Path::new("/sys/fs/bpf/aksnet").join(&self.0));
        }
    }
    let _pins = Pins(a.clone());
    let out = in_private_run(
        &format!(
            "$A up {} --keep >/dev/null && $A up {} --keep >/dev/null || exit 98
             head -c 100 /run/aksnet/{a}/state.json > /run/lc-trunc && cat /run/lc-trunc > /run/aksnet/{a}/state.json
             $A check {a} >/dev/null 2>/run/lc-check-err; echo \"check=$?\"; cat /run/lc-check-err
             $A down --all; echo \"down=$?\"
             echo \"netns:$(ls /run/netns | tr '\\n' ' ')\"
             echo \"records:$(ls /run/aksnet | tr '\\n' ' ')\"",
            fa.display(),
            fb.display()
        ),
        false,
    );
    let said = stdout_of(&out);
    assert!(
        said.contains("check=") && !said.contains("check=0"),
        "check fails on the truncated record"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("damaged or truncated")
            || String::from_utf8_lossy(&out.stderr).contains("damaged or truncated"),
        "check says what is wrong"
    );
    assert!(said.contains("down=0"), "down --all succeeds");
    assert!(
        said.contains(&format!("cluster {a} removed without its record")),
        "down says how it removed the truncated one"
    );
    assert!(
        said.contains(&format!("cluster {b} removed: 5 namespaces")),
        "and goes on"
    );
    assert!(
        said.contains("netns: \n") || said.contains("netns:\n"),
        "no namespace left"
    );
    assert!(
        said.contains("records:\n") || said.contains("records: \n"),
        "no record left"
    );
    assert!(
        !Path::new("/sys/fs/bpf/aksnet").join(&a).exists(),
        "the truncated cluster's pins are gone"
    );
}

#[test]
fn down_works_after_ip_netns_add_made_run_netns_a_shared_mount() {
    require_privileges();
    let name = cluster_name("sm");
    let file = description(&name, "kubenet", "iptables", 1, 1);
    let out = in_private_run(
        &format!(
            "$A up {} --keep >/dev/null || exit 98
             ip netns add lc-someone-else || exit 97
             echo \"mounts:$(findmnt -n -o PROPAGATION /run/netns | tr '\\n' ' ')\"
             $A down {name}; echo \"down=$?\"
             echo \"netns:$(ls /run/netns | tr '\\n' ' ')\"
             ip netns del lc-someone-else",
            file.display()
        ),
        false,
    );
    let said = stdout_of(&out);
    // The directory itself (private here) and iproute2's shared bind mount on top.
    assert!(
        said.contains("mounts:private shared \n"),
        "ip netns add stacked a shared bind mount on /run/netns"
    );
    assert!(said.contains("down=0"), "down succeeds");
    assert!(
        said.contains("netns:lc-someone-else \n"),
        "only the other namespace is left"
    );
}

#[test]
fn a_record_that_outlived_a_reboot_is_stale() {
    require_privileges();
    let name = cluster_name("st");
    let file = description(&name, "kubenet", "iptables", 1, 1);
    // A reboot where /run is kept: the namespaces are gone, their handle files and the
    // record are left. Unmounting every handle does the same to the kernel objects.
    let out = in_private_run(
        &format!(
            "$A up {f} --keep >/dev/null || exit 98
             for h in /run/netns/aks-{name}-*; do umount $h || exit 97; done
             $A up {f} --keep; echo \"up=$?\"
             $A down {name}; echo \"down=$?\"
             echo \"netns:$(ls /run/netns | tr '\\n' ' ')\"",
            f = file.display()
        ),
        false,
    );
    let said = stdout_of(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("removing a stale record"), "up says it: {err}");
    assert!(said.contains("up=0"), "up builds the cluster again");
    assert!(said.contains("down=0"));
    assert!(said.contains("netns:\n") || said.contains("netns: \n"));
}

#[test]
fn a_pin_root_owned_by_another_user_is_refused() {
    require_privileges();
    let name = cluster_name("pr");
    let file = description(&name, "azure", "ebpf", 1, 1);
    // A bpffs of this test's own, where another user created the pin root first.
    let out = in_private_run(
        &format!(
            "mkdir /sys/fs/bpf/aksnet && chown 65534 /sys/fs/bpf/aksnet || exit 98
             $A up {f} --keep; echo \"up=$?\"
             echo \"netns:$(ls /run/netns | tr '\\n' ' ')\"
             chown 0 /sys/fs/bpf/aksnet && chmod 0777 /sys/fs/bpf/aksnet
             $A up {f} --keep; echo \"writable=$?\"
             chmod 0755 /sys/fs/bpf/aksnet
             $A up {f} --keep >/dev/null; echo \"root=$?\"
             $A down {name} >/dev/null; echo \"down=$?\"",
            f = file.display()
        ),
        true,
    );
    let said = stdout_of(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("up=1"), "a foreign pin root is refused");
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert!(
        said.contains("netns:\n") || said.contains("netns: \n"),
        "nothing was built"
    );
    assert!(
        said.contains("writable=1"),
        "a world-writable pin root is refused"
    );
    assert!(err.contains("has mode 777"), "{err}");
    assert!(
        said.contains("root=0"),
        "a root-owned 0755 pin root is used"
    );
    assert!(said.contains("down=0"));
}
