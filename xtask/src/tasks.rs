//! `build`, `run` and `test`: thin wrappers around cargo that make sure the environment is
//! set up first and that privileged binaries run as root.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Result};

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
    cmd::run(aksnet.args(args))
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
