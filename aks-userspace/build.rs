//! Builds the eBPF object (aks-ebpf) with aya-build: nightly, `-Z build-std=core`,
//! `bpfel-unknown-none`, linked by bpf-linker. `src/datapath/ebpf/object.rs` embeds the result.
//!
//! There is no fallback object: without bpf-linker or nightly's rust-src the build fails
//! and says how to install them.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

const SETUP_HINT: &str =
    "run `cargo xtask setup` (it installs rust-src for nightly and builds bpf-linker)";

fn main() -> Result<()> {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?);
    let workspace = manifest_dir
        .parent()
        .context("aks-userspace has no parent directory")?;
    let ebpf_dir = workspace.join("aks-ebpf");
    // aya-build watches the eBPF crate; the shared types change the object too.
    println!(
        "cargo::rerun-if-changed={}",
        workspace.join("aks-ebpf-common").display()
    );
    println!("cargo::rerun-if-env-changed=PATH");

    require_bpf_linker()?;
    require_nightly_rust_src()?;

    let ebpf_dir = ebpf_dir
        .to_str()
        .context("the workspace path is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "aks-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the eBPF object (aks-ebpf) failed; the compiler output is above as warnings")
}

fn require_bpf_linker() -> Result<()> {
    let on_path = env::var_os("PATH")
        .map(|paths| env::split_paths(&paths).any(|dir| is_executable(&dir.join("bpf-linker"))))
        .unwrap_or(false);
    if !on_path {
        bail!(
            "bpf-linker was not found on PATH; {SETUP_HINT} and make sure ~/.cargo/bin is on PATH"
        );
    }
    Ok(())
}

fn require_nightly_rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .env_remove("RUSTC")
        .output()
        .context("running `rustup run nightly rustc --print sysroot`")?;
    if !out.status.success() {
        bail!("the nightly toolchain is not usable (`rustup run nightly rustc` failed); install it with `rustup toolchain install nightly`, then {SETUP_HINT}");
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let core = sysroot.join("lib/rustlib/src/rust/library/core");
    if !core.is_dir() {
        bail!(
            "nightly's rust-src is missing ({} does not exist); {SETUP_HINT}",
            core.display()
        );
    }
    Ok(())
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
