//! One module per `aksnet` subcommand; each turns its arguments into library calls and
//! output, and returns the exit code.

pub mod bench;
pub mod check;
pub mod down;
pub mod inspect;
pub mod monitor;
pub mod plan;
pub mod services;
pub mod up;

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use aks_userspace::model::{self, PlanError};
use aks_userspace::plan::{self as planner, Plan};
use aks_userspace::state::ClusterState;

/// Exit code for a description that cannot be planned (clap uses 2 for bad usage too).
pub const EXIT_INVALID_DESCRIPTION: u8 = 2;

/// Reads, validates and plans a description (the built-in default without a file).
/// `Err(code)` when the description is invalid: the message is already printed.
pub fn load_plan(file: Option<&Path>) -> Result<Result<Plan, ExitCode>> {
    Ok(load_description_and_plan(file)?.map(|(_, plan)| plan))
}

/// As [`load_plan`], also returning the description as written.
pub fn load_description_and_plan(
    file: Option<&Path>,
) -> Result<Result<(model::ClusterDescription, Plan), ExitCode>> {
    let (source, yaml) = match file {
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
    let planned = model::parse(&yaml).and_then(|description| {
        let plan = model::validate(&description).and_then(|cluster| planner::plan(&cluster))?;
        Ok((description, plan))
    });
    match planned {
        Ok((description, plan)) => {
            for warning in &plan.warnings {
                eprintln!("warning: {source}: {warning}");
            }
            Ok(Ok((description, plan)))
        }
        Err(err) => Ok(Err(report_invalid(&source, &err))),
    }
}

fn report_invalid(source: &str, err: &PlanError) -> ExitCode {
    eprintln!("error: {source}: {err}");
    ExitCode::from(EXIT_INVALID_DESCRIPTION)
}

/// The cluster a command means: the one named, or the only one there is.
pub fn resolve_cluster(name: Option<&str>) -> Result<ClusterState> {
    ClusterState::require(&resolve_cluster_name(name)?)
}

/// The name of the cluster a command means (see [`resolve_cluster`]).
pub fn resolve_cluster_name(name: Option<&str>) -> Result<String> {
    if let Some(name) = name {
        return Ok(name.to_owned());
    }
    let clusters = ClusterState::list()?;
    match clusters.as_slice() {
        [only] => Ok(only.clone()),
        [] => bail!("no cluster is running; start one with `aksnet up`"),
        many => bail!(
            "several clusters are running ({}); name one",
            many.join(", ")
        ),
    }
}

/// Fails with a clear message unless running as root.
pub fn require_root(what: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("{what} needs root (network namespaces, BPF): run it with sudo, or through `cargo xtask run -- …`");
    }
    Ok(())
}
