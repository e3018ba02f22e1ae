//! `cargo xtask setup`: everything aksnet needs on a fresh Debian machine, installed
//! idempotently. Each step first checks whether its piece is in place and says so.

use std::env;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd;
use crate::kernels;

/// Debian packages the project uses: iproute2 for namespaces and veths, iptables/nftables
/// and conntrack for the iptables datapath, iperf3/sockperf for `aksnet bench`, bpftool to
/// read pinned maps by hand, kmod to load br_netfilter.
const APT_PACKAGES: &[&str] = &[
    "iproute2",
    "iptables",
    "nftables",
    "conntrack",
    "iperf3",
    "sockperf",
    "bpftool",
    "kmod",
];

/// What `cargo xtask kernels` boots its VMs with, besides the kernels themselves
/// ([`kernels::GUEST_KERNELS`]): QEMU, the static busybox virtme-ng builds its initramfs
/// from, and venv for the Python environment vng is installed in.
const VM_APT_PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "python3-venv"];

/// Debian's kernel packages depend on an initramfs generator. Where none is installed,
/// the smallest is added (the VMs do not use its output: vng builds its own initramfs);
/// `initramfs-tools` would bring in systemd and udev. One already there is kept.
const INITRAMFS_TOOLS: &[&str] = &["initramfs-tools", "dracut", "tiny-initramfs"];
const SMALLEST_INITRAMFS_TOOL: &str = "tiny-initramfs";

/// virtme-ng from PyPI, at the version tested here.
const VIRTME_NG: &str = "virtme-ng==1.42";

/// Where the iptables datapath finds br_netfilter: the sysctl exists once the module is
/// loaded (or built in).
const BRIDGE_NF_SYSCTL: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

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
    Step {
        name: "br_netfilter (bridged pod traffic through iptables)",
        present: br_netfilter_present,
        install: br_netfilter_load,
    },
    Step {
        name: "QEMU and Debian's 6.1 and 6.12 kernels (for `cargo xtask kernels`)",
        present: vm_packages_present,
        install: vm_packages_install,
    },
    Step {
        name: "virtme-ng (vng), from PyPI",
        present: vng_present,
        install: vng_install,
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

fn apt_installed(package: &str) -> bool {
    let status = cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]));
    status.is_some_and(|s| s.trim() == "install ok installed")
}

fn missing_apt_packages() -> Vec<&'static str> {
    APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| !apt_installed(pkg))
        .collect()
}

fn apt_present() -> Result<bool> {
    Ok(missing_apt_packages().is_empty())
}

fn apt_install() -> Result<()> {
    apt_get_install(&missing_apt_packages())
}

fn apt_get_install(packages: &[&str]) -> Result<()> {
    require_root_or_sudo("installing apt packages")?;
    eprintln!("    missing packages: {}", packages.join(" "));
    cmd::run(&mut as_root("apt-get", &["update"]))?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(packages);
    // iperf3 asks (through debconf) whether to start a daemon; answer with the default.
    cmd::run(as_root("apt-get", &args).env("DEBIAN_FRONTEND", "noninteractive"))
}

fn br_netfilter_present() -> Result<bool> {
    Ok(Path::new(BRIDGE_NF_SYSCTL).exists())
}

/// Loads the module (Debian builds it as one; other kernels build it in). Loading a
/// module adds no rule anywhere: the iptables datapath turns it on per node namespace.
fn br_netfilter_load() -> Result<()> {
    require_root_or_sudo("loading br_netfilter")?;
    cmd::run(&mut as_root("modprobe", &["br_netfilter"])).context(
        "this kernel offers no br_netfilter (CONFIG_BRIDGE_NETFILTER): the iptables datapath \
         then masquerades all service traffic; use a kernel with it, or the ebpf datapath",
    )
}

/// The tools' packages that are not installed yet (the kernels are looked at apart: their
/// package names change with every Debian point release).
fn missing_vm_tools() -> Vec<&'static str> {
    let mut missing: Vec<&'static str> = VM_APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| !apt_installed(pkg))
        .collect();
    if !INITRAMFS_TOOLS.iter().any(|pkg| apt_installed(pkg)) {
        missing.push(SMALLEST_INITRAMFS_TOOL);
    }
    missing
}

/// The guest kernel series with no installed release.
fn missing_guest_kernels() -> Vec<&'static kernels::GuestKernel> {
    kernels::GUEST_KERNELS
        .iter()
        .filter(|k| k.installed_release().is_none())
        .collect()
}

fn vm_packages_present() -> Result<bool> {
    Ok(missing_vm_tools().is_empty() && missing_guest_kernels().is_empty())
}

/// Debian's current package for each missing guest kernel series, from apt's package
/// list (so after `apt-get update`).
fn guest_kernel_packages(series: &[&kernels::GuestKernel]) -> Result<Vec<String>> {
    if series.is_empty() {
        return Ok(Vec::new());
    }
    cmd::run(&mut as_root("apt-get", &["update"]))?;
    let listed = Command::new("apt-cache")
        .args(["pkgnames", "linux-image-"])
        .output()
        .context("running apt-cache pkgnames")?;
    let names: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    series
        .iter()
        .map(|k| {
            k.newest_package(&names).with_context(|| {
                format!(
                    "apt knows no linux-image-{}N{}-unsigned package for Linux {}: is this \
                     Debian 12 (bookworm) with its main archive in sources.list?",
                    k.release_prefix, k.release_suffix, k.series
                )
            })
        })
        .collect()
}

/// Signs that this machine boots through a boot loader that Debian's kernel packages
/// update (GRUB, systemd-boot, extlinux).
const BOOT_LOADER_SIGNS: &[&str] = &[
    "/etc/kernel/postinst.d/zz-update-grub",
    "/boot/grub/grub.cfg",
    "/etc/kernel/postinst.d/zz-systemd-boot",
    "/boot/loader/entries",
    "/boot/extlinux",
];

/// Consent to install the guest kernels on a machine with a boot loader.
const ALLOW_KERNEL_INSTALL: &str = "AKSNET_ALLOW_KERNEL_INSTALL";

/// Installing a kernel package adds `/boot/vmlinuz-*`, `/boot/initrd.img-*` and
/// `/lib/modules/*`. On a machine booted from outside (a Firecracker or cloud VM given
/// its kernel, like CI's) nothing about its boot changes. With a boot loader the package
/// hooks add the kernel to its menu, and GRUB would boot the newest one (6.12) by
/// default from then on: that is the user's decision, so setup stops and says so.
fn vm_packages_install() -> Result<()> {
    let kernels = guest_kernel_packages(&missing_guest_kernels())?;
    let boot_loader = BOOT_LOADER_SIGNS.iter().find(|p| Path::new(p).exists());
    if let (Some(sign), false) = (boot_loader, kernels.is_empty()) {
        if env::var(ALLOW_KERNEL_INSTALL).as_deref() != Ok("1") {
            bail!(
                "this machine boots through a boot loader ({sign} exists): installing {} \
                 would add them to its menu, and GRUB boots the newest kernel by default. \
                 Install them yourself keeping your default (GRUB_DEFAULT in \
                 /etc/default/grub), or run `{ALLOW_KERNEL_INSTALL}=1 cargo xtask setup` \
                 to let setup install them",
                kernels.join(" ")
            );
        }
    }
    let mut missing: Vec<&str> = missing_vm_tools();
    missing.extend(kernels.iter().map(String::as_str));
    apt_get_install(&missing)
}

fn virtme_ng_venv() -> Result<PathBuf> {
    let home = env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".local/share/aksnet/virtme-ng"))
}

/// `vng` from the virtme-ng environment, with that environment's `bin/` first on PATH
/// (vng starts `virtme-run` from there).
pub fn vng() -> Result<Command> {
    let bin = virtme_ng_venv()?.join("bin");
    let vng = bin.join("vng");
    if !vng.exists() {
        bail!("{} is missing: run `cargo xtask setup`", vng.display());
    }
    let path = env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin];
    dirs.extend(env::split_paths(&path));
    let mut c = Command::new(vng);
    c.env("PATH", env::join_paths(dirs).context("joining PATH")?);
    Ok(c)
}

fn vng_present() -> Result<bool> {
    Ok(vng().is_ok_and(|mut c| cmd::output(c.arg("--version")).is_some()))
}

/// A virtual environment of its own, so neither the system's Python (externally
/// managed on Debian) nor a user's is changed.
fn vng_install() -> Result<()> {
    let venv = virtme_ng_venv()?;
    cmd::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    cmd::run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", VIRTME_NG]))
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
