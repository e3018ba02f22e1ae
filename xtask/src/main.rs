//! `cargo xtask setup | build | run | test | kernels`: the commands a new user needs.

mod cmd;
mod kernels;
mod setup;
mod tasks;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Developer tasks for aksnet")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what aksnet needs (apt packages, nightly rust-src, bpf-linker, bpffs).
    /// Idempotent: whatever is already in place is skipped.
    Setup {
        /// Only report what is missing; change nothing. Exits 1 if anything is missing.
        #[arg(long)]
        check: bool,
    },
    /// Build aksnet (and the eBPF object it embeds) in release.
    Build,
    /// Set up if needed, build, and run aksnet with ARGS (as root, via sudo if needed).
    /// Without ARGS it brings up the default cluster.
    Run {
        /// Arguments passed to aksnet, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up if needed, then: cargo fmt --check, clippy (host crates, then the eBPF crate),
    /// unit tests and the privileged tests (as root, via sudo if needed), then the kernel
    /// tests in VMs on Debian's 6.1 and 6.12 (`cargo xtask kernels`).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter), after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the kernel tests (BPF_PROG_TEST_RUN, TC attach modes, one cluster up/check/down)
    /// in QEMU VMs booting Debian's 6.1 and 6.12 kernels (virtme-ng, no network).
    Kernels {
        /// Only this kernel series (6.1 or 6.12).
        #[arg(long)]
        kernel: Option<String>,
        /// Extra arguments for each test binary (e.g. a test name filter), after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup { check } => setup::run(check),
        Task::Build => tasks::build(),
        Task::Run { args } => tasks::run(&args),
        Task::Test { args } => tasks::test(&args),
        Task::Kernels { kernel, args } => tasks::kernels(kernel.as_deref(), &args),
    }
}
