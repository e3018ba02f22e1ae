//! `build`, `run` and `test`: thin wrappers around cargo that make sure the environment is
//! set up first and that privileged binaries run as root.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{cmd, kernels, setup};

/// The userspace package; its build script builds and embeds the eBPF object.
pub(crate) const USERSPACE: &str = "aks-userspace";

/// Cargo runs test and `cargo run` binaries through this runner when set; `sudo -E` keeps
/// the environment (CI, RUST_LOG, …) so tests behave the same under sudo.
const RUNNER_ENV: &str = "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER";

pub(crate) fn workspace_root() -> PathBuf {
    // xtask lives one level below the workspace root.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

/// cargo through rustup's proxy (not `$CARGO`, which is one toolchain's binary), so that
/// `+nightly` works for the eBPF crate's clippy pass.
pub(crate) fn cargo() -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(workspace_root());
    c
}

pub(crate) fn ensure_setup() -> Result<()> {
    if !setup::complete()? {
        eprintln!("some prerequisites are missing; running `cargo xtask setup` first");
        setup::run(false)?;
    }
    Ok(())
}

/// How privileged binaries are started: directly as root, or through `sudo -E`.
fn root_runner() -> Result<Option<&'static str>> {
    if cmd::is_root() {
        return Ok(None);
    }
    if !cmd::on_path("sudo") {
        bail!("aksnet needs root (network namespaces, BPF): run this as root, or install sudo");
    }
    eprintln!("not root: running privileged binaries through `sudo -E` (you may be asked for your password)");
    Ok(Some("sudo -E"))
}

pub fn build() -> Result<()> {
    if !setup::complete()? {
        eprintln!("note: `cargo xtask setup --check` reports missing prerequisites; the eBPF build will say which");
    }
    cmd::run(cargo().args(["build", "--release", "--package", USERSPACE]))
}

pub fn run(args: &[String]) -> Result<()> {
    ensure_setup()?;
    cmd::run(cargo().args(["build", "--release", "--package", USERSPACE]))?;
    let binary = workspace_root().join("target/release/aksnet");
    let mut aksnet = match root_runner()? {
        None => Command::new(&binary),
        Some(_) => {
            let mut c = Command::new("sudo");
            c.arg("-E").arg(&binary);
            c
        }
    };
    if args.is_empty() {
        // The main job: bring up the default cluster, show its check matrix, stream the
        // datapath's logs; Ctrl-C removes it.
        aksnet.args(["up", "--check"]);
    }
    aksnet.args(args);
    let code = run_forwarding_stop_signals(&mut aksnet)?;
    if code != 0 {
        // aksnet said why; its exit status is the answer a script gets.
        std::process::exit(code);
    }
    Ok(())
}

/// The stop signal xtask received last (0: none), forwarded by `run_forwarding_stop_signals`.
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop_signal(signal: nix::libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP_SIGNAL.store(signal, Ordering::Relaxed);
}

/// From now on Ctrl-C, SIGTERM and SIGHUP no longer end xtask: they are recorded for
/// [`take_stop_signal`], so xtask can stop its children first.
pub(crate) fn catch_stop_signals() -> Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only performs an atomic store.
        unsafe { sigaction(signal, &action) }.with_context(|| format!("catching {signal}"))?;
    }
    Ok(())
}

/// The stop signal received since the last call, if any.
pub(crate) fn take_stop_signal() -> Option<nix::sys::signal::Signal> {
    nix::sys::signal::Signal::try_from(STOP_SIGNAL.swap(0, Ordering::Relaxed)).ok()
}

/// Runs `command` and waits for it, also when xtask itself is asked to stop: Ctrl-C,
/// SIGTERM and SIGHUP (the terminal closed) are passed on to the child, which removes
/// its cluster, and xtask exits only after it (with its exit code). Dying at once would
/// hand the terminal back to the shell, whose exit then hangs up on aksnet half-way
/// through its teardown.
fn run_forwarding_stop_signals(command: &mut Command) -> Result<i32> {
    use nix::sys::signal::kill;
    eprintln!("+ {}", cmd::display(command));
    catch_stop_signals()?;
    let mut child = command
        .spawn()
        .with_context(|| format!("could not start `{}`", cmd::display(command)))?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    loop {
        if let Some(status) = child.try_wait().context("waiting for aksnet")? {
            return Ok(status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(1));
        }
        if let Some(signal) = take_stop_signal() {
            // The child may have had it from the terminal too; a second one is harmless.
            let _ = kill(pid, signal);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `cargo xtask kernels`: the guest tests alone, with their own closing line.
pub fn kernels(series: Option<&str>, filter: &[String]) -> Result<()> {
    ensure_setup()?;
    let runs = kernels::run(series, filter)?;
    println!(
        "tests: {} passed, {} failed",
        runs.totals.passed, runs.totals.failed
    );
    runs.into_result()
}

pub fn test(extra: &[String]) -> Result<()> {
    ensure_setup()?;
    let total = 6;
    eprintln!("[1/{total}] formatting");
    cmd::run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    eprintln!("[2/{total}] clippy, host crates");
    cmd::run(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    eprintln!("[3/{total}] clippy, eBPF crate (its own pass: nightly, bpfel-unknown-none)");
    cmd::run(cargo().args([
        "+nightly",
        "clippy",
        "--package",
        "aks-ebpf",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))?;
    eprintln!("[4/{total}] building tests");
    cmd::run(cargo().args(["test", "--no-run"]))?;
    eprintln!("[5/{total}] unit tests and privileged tests");
    let mut test = cargo();
    test.arg("test");
    if let Some(runner) = root_runner()? {
        test.env(RUNNER_ENV, runner);
    }
    if !extra.is_empty() {
        test.arg("--").args(extra);
    }
    let mut totals = cmd::run_counting_tests(&mut test)?;
    eprintln!(
        "[6/{total}] kernel tests in VMs on Linux {}",
        kernels::GUEST_KERNELS
            .iter()
            .map(|k| k.series)
            .collect::<Vec<_>>()
            .join(" and ")
    );
    let guests = kernels::run(None, extra)?;
    totals.passed += guests.totals.passed;
    totals.failed += guests.totals.failed;
    // One closing line over every test binary, host and guests (cargo's own last line is
    // often a doc-test binary with nothing in it).
    println!("tests: {} passed, {} failed", totals.passed, totals.failed);
    guests.into_result()?;
    if totals.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_signal_reaches_the_child_and_xtask_waits_for_it() {
        use nix::sys::signal::{kill, Signal};
        // The child takes its time to clean up after SIGTERM, then exits 7.
        let mut child = Command::new("sh");
        child.args([
            "-c",
            "trap 'sleep 0.3; exit 7' TERM; while :; do sleep 0.05; done",
        ]);
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            kill(nix::unistd::getpid(), Signal::SIGTERM).expect("SIGTERM to this test");
        });
        let started = std::time::Instant::now();
        let code = run_forwarding_stop_signals(&mut child).expect("running the child");
        assert_eq!(code, 7, "xtask survived SIGTERM, passed it on, and waited");
        assert!(started.elapsed() >= Duration::from_millis(600));
    }
}
