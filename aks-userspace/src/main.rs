//! `aksnet`: emulate AKS networking in network namespaces and compare datapaths.

use std::path::PathBuf;
use std::process::ExitCode;

use aks_userspace::model::{self, PlanError};
use aks_userspace::plan;
use anyhow::Context;
use clap::{Parser, Subcommand};

/// Emulate Azure Kubernetes Service networking (Azure CNI and kubenet, on an eBPF or an
/// iptables datapath) inside network namespaces on this machine.
#[derive(Parser)]
#[command(name = "aksnet", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a cluster description and print its IP plan (no root needed).
    ///
    /// Exits with 2 when the description breaks an AKS rule, naming the field, the
    /// numbers and a fix.
    Plan {
        /// Cluster description (YAML). Without it, the built-in default cluster:
        /// Azure CNI, eBPF, 2 nodes with 2 pods each.
        file: Option<PathBuf>,
        /// Print the plan as JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

/// Exit code for a description that cannot be planned (clap uses 2 for bad usage too).
const EXIT_INVALID_DESCRIPTION: u8 = 2;

fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Plan { file, json } => run_plan(file, json),
    }
}

fn run_plan(file: Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    let (source, yaml) = match &file {
        Some(path) => (
            path.display().to_string(),
            std::fs::read_to_string(path).with_context(|| {
                format!("while reading the cluster description {}", path.display())
            })?,
        ),
        None => (
            "built-in default".to_string(),
            model::DEFAULT_DESCRIPTION.to_string(),
        ),
    };
    let plan = match model::load(&yaml).and_then(|cluster| plan::plan(&cluster)) {
        Ok(plan) => plan,
        Err(err) => return Ok(report_invalid(&source, &err)),
    };
    for warning in &plan.warnings {
        eprintln!("warning: {warning}");
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan).context("while encoding the plan as JSON")?
        );
    } else {
        print!("{}", plan::render(&plan));
    }
    Ok(ExitCode::SUCCESS)
}

fn report_invalid(source: &str, err: &PlanError) -> ExitCode {
    eprintln!("error: {source}: {err}");
    ExitCode::from(EXIT_INVALID_DESCRIPTION)
}
