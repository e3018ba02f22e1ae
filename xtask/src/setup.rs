//! `cargo xtask setup`: everything aksnet needs on a fresh Debian machine, installed
//! idempotently. Each step first checks whether its piece is in place and says so.

use std::env;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd;

/// Debian packages the project uses: iproute2 for namespaces and veths, iptables/nftables
/// and conntrack for the iptables datapath, iperf3/sockperf for `aksnet bench`, bpftool to
/// read pinned maps by hand.
const APT_PACKAGES: &[&str] = &[
    "iproute2",
    "iptables",
    "nftables",
    "conntrack",
    "iperf3",
    "sockperf",
    "bpftool",
];

/// The toolchain that builds the eBPF crate (`-Z build-std` needs nightly).
const NIGHTLY: &str = "nightly";

/// One piece of the environment: how to tell it is there and how to put it there.
struct Step {
    name: &'static str,
    present: fn() -> Result<bool>,
    install: fn() -> Result<()>,
}

const STEPS: &[Step] = &[
    Step {
        name: "apt packages",
        present: apt_present,
        install: apt_install,
    },
    Step {
        name: "rust-src for the nightly toolchain",
        present: rust_src_present,
        install: rust_src_install,
    },
    Step {
        name: "bpf-linker (built against nightly's LLVM)",
        present: bpf_linker_present,
        install: bpf_linker_install,
    },
    Step {
        name: "bpffs mounted at /sys/fs/bpf",
        present: bpffs_present,
        install: bpffs_mount,
    },
];

/// `cargo xtask setup [--check]`.
pub fn run(check_only: bool) -> Result<()> {
    let total = STEPS.len();
    let mut missing = Vec::new();
    for (i, step) in STEPS.iter().enumerate() {
        let present = (step.present)().with_context(|| format!("while checking {}", step.name))?;
        if present {
            eprintln!(
                "[{}/{total}] {}: already in place, skipped",
                i + 1,
                step.name
            );
            continue;
        }
        if check_only {
            eprintln!("[{}/{total}] {}: MISSING", i + 1, step.name);
            missing.push(step.name);
            continue;
        }
        eprintln!("[{}/{total}] {}: installing", i + 1, step.name);
        (step.install)().with_context(|| format!("while installing {}", step.name))?;
        if !(step.present)()? {
            bail!(
                "{} still missing after installing it; see the output above",
                step.name
            );
        }
        eprintln!("[{}/{total}] {}: done", i + 1, step.name);
    }
    if !missing.is_empty() {
        bail!("missing: {}; run `cargo xtask setup`", missing.join(", "));
    }
    Ok(())
}

/// True when every step's piece is in place (used by `run` and `test` to decide whether
/// to run setup first).
pub fn complete() -> Result<bool> {
    for step in STEPS {
        if !(step.present)()? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Runs `program args…` as root: directly when we are root, through sudo otherwise.
fn as_root(program: &str, args: &[&str]) -> Command {
    if cmd::is_root() {
        let mut c = Command::new(program);
        c.args(args);
        c
    } else {
        let mut c = Command::new("sudo");
        c.arg(program).args(args);
        c
    }
}

fn require_root_or_sudo(what: &str) -> Result<()> {
    if !cmd::is_root() && !cmd::on_path("sudo") {
        bail!("{what} needs root: run `cargo xtask setup` as root, or install sudo");
    }
    Ok(())
}

fn missing_apt_packages() -> Vec<&'static str> {
    APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| {
            let status = cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]));
            status.is_none_or(|s| s.trim() != "install ok installed")
        })
        .collect()
}

fn apt_present() -> Result<bool> {
    Ok(missing_apt_packages().is_empty())
}

fn apt_install() -> Result<()> {
    require_root_or_sudo("installing apt packages")?;
    let missing = missing_apt_packages();
    eprintln!("    missing packages: {}", missing.join(" "));
    cmd::run(&mut as_root("apt-get", &["update"]))?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(&missing);
    // iperf3 asks (through debconf) whether to start a daemon; answer with the default.
    cmd::run(as_root("apt-get", &args).env("DEBIAN_FRONTEND", "noninteractive"))
}

fn rust_src_present() -> Result<bool> {
    let installed = cmd::output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]));
    Ok(installed.is_some_and(|list| list.lines().any(|l| l.starts_with("rust-src"))))
}

fn rust_src_install() -> Result<()> {
    cmd::run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

fn cargo_home() -> Result<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(home));
    }
    let home = env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}

fn bpf_linker_present() -> Result<bool> {
    let path = cargo_home()?.join("bin").join("bpf-linker");
    Ok(cmd::output(Command::new(path).arg("--version")).is_some())
}

/// The nightly toolchain's real libLLVM: `lib/libLLVM.so.<ver>-rust-<rustver>-nightly`.
/// The `libLLVM-<major>-rust-….so` beside it is a linker script, not a library.
struct NightlyLlvm {
    lib_dir: PathBuf,
    file_name: String,
    major: u32,
}

fn nightly_llvm() -> Result<NightlyLlvm> {
    let sysroot = cmd::output(Command::new("rustc").arg(format!("+{NIGHTLY}")).args(["--print", "sysroot"]))
        .context("`rustc +nightly --print sysroot` failed: is the nightly toolchain installed? (`rustup toolchain install nightly`)")?;
    let lib_dir = PathBuf::from(sysroot.trim()).join("lib");
    let mut candidates: Vec<String> = fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("libLLVM.so."))
        .collect();
    candidates.sort();
    let file_name = match candidates.as_slice() {
        [one] => one.clone(),
        [] => bail!(
            "no libLLVM.so.* in {}: this nightly does not ship a shared LLVM, so bpf-linker cannot link against it",
            lib_dir.display()
        ),
        many => bail!("several libLLVM.so.* in {}: {}", lib_dir.display(), many.join(", ")),
    };
    // "libLLVM.so.22.1-rust-1.97.0-nightly" -> 22
    let major = file_name
        .trim_start_matches("libLLVM.so.")
        .split(['.', '-'])
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("cannot read the LLVM major version from {file_name}"))?;
    Ok(NightlyLlvm {
        lib_dir,
        file_name,
        major,
    })
}

/// Builds bpf-linker against nightly's own libLLVM, as the README's "What `cargo xtask
/// setup` installs" describes: a prefix whose `lib/` holds `libLLVM.so` and the versioned
/// name, both symlinks to the real library.
fn bpf_linker_install() -> Result<()> {
    let llvm = nightly_llvm()?;
    let real = llvm.lib_dir.join(&llvm.file_name);
    let prefix = cargo_home()?.join("aksnet-llvm-prefix");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    for link in ["libLLVM.so", llvm.file_name.as_str()] {
        replace_symlink(&real, &prefix_lib.join(link))?;
    }
    eprintln!(
        "    LLVM {} from {} (prefix {}); building bpf-linker takes about 4 minutes on 2 cores",
        llvm.major,
        real.display(),
        prefix.display()
    );
    // The rpath lets bpf-linker find nightly's libLLVM when started outside rustup too.
    let rustflags = format!("-C link-arg=-Wl,-rpath,{}", llvm.lib_dir.display());
    cmd::run(
        Command::new("cargo")
            .arg(format!("+{NIGHTLY}"))
            .args([
                "install",
                "bpf-linker",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{}", llvm.major))
            .env("LLVM_PREFIX", &prefix)
            .env("RUSTFLAGS", rustflags),
    )
}

fn replace_symlink(target: &Path, link: &Path) -> Result<()> {
    if link.symlink_metadata().is_ok() {
        fs::remove_file(link).with_context(|| format!("removing old {}", link.display()))?;
    }
    symlink(target, link)
        .with_context(|| format!("linking {} -> {}", link.display(), target.display()))
}

fn bpffs_present() -> Result<bool> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    Ok(mounts.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&"/sys/fs/bpf") && fields.get(2) == Some(&"bpf")
    }))
}

fn bpffs_mount() -> Result<()> {
    require_root_or_sudo("mounting bpffs")?;
    cmd::run(&mut as_root("mount", &["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}
