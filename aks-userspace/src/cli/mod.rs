//! One module per `aksnet` subcommand; each turns its arguments into library calls and
//! output, and returns the exit code.

pub mod bench;
mod bench_snat;
pub mod check;
pub mod down;
pub mod inspect;
pub mod monitor;
pub mod plan;
pub mod policy;
pub mod services;
pub mod up;
pub mod update;

use std::path::Path;
use std::process::ExitCode;

use std::io::Write as _;

use anyhow::{bail, Context, Result};
use serde::Serialize;

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
        Some(path) => match read_description(path) {
            Ok(yaml) => (path.display().to_string(), yaml),
            Err(why) => {
                aks_userspace::errln!("error: {}: {why}", path.display());
                return Ok(Err(ExitCode::from(EXIT_INVALID_DESCRIPTION)));
            }
        },
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

/// The largest description read: a 1,000-node cluster with 10,000 services is about
/// 1 MiB of YAML; a bigger file is a mistake (`plan /dev/zero`), not a cluster.
pub const MAX_DESCRIPTION_BYTES: u64 = 4 << 20;

/// Reads a description file: a regular file (or a pipe) of UTF-8 text of at most
/// `MAX_DESCRIPTION_BYTES`. Anything else is bad input, said in one sentence.
fn read_description(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            "no such file; give the path of a cluster description (YAML)".to_owned()
        }
        _ => format!("cannot be opened: {e}"),
    })?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err("is a directory, not a cluster description; name a YAML file".to_owned());
    }
    let mut bytes = Vec::new();
    file.take(MAX_DESCRIPTION_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read: {e}"))?;
    if bytes.len() as u64 > MAX_DESCRIPTION_BYTES {
        return Err(format!(
            "larger than {} MiB, the most a cluster description can be; is it the right file?",
            MAX_DESCRIPTION_BYTES >> 20
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "is not UTF-8 text (invalid byte at offset {}); save the description as UTF-8",
            e.utf8_error().valid_up_to()
        )
    })
}

fn report_invalid(source: &str, err: &PlanError) -> ExitCode {
    eprintln!("error: {source}: {err}");
    ExitCode::from(EXIT_INVALID_DESCRIPTION)
}

/// The flags of a `list`: which cluster, and JSON or a table.
#[derive(clap::Args)]
pub struct ListArgs {
    /// The cluster; may be left out when exactly one exists.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
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

/// Prints `value` as pretty JSON (`--json`), or the text `render` builds. A closed
/// stdout (`aksnet check | head`, the terminal of an `up --check` gone) is not an error
/// worth a panic: the write is tried and its failure ignored, as `outln!` does.
pub fn print_json_or<T: Serialize + ?Sized>(
    json: bool,
    value: &T,
    render: impl FnOnce() -> String,
) -> Result<()> {
    let text = if json {
        let mut text =
            serde_json::to_string_pretty(value).context("while encoding the output as JSON")?;
        text.push('\n');
        text
    } else {
        render()
    };
    let _ = std::io::stdout().write_all(text.as_bytes());
    Ok(())
}

/// Prints `rows` as JSON, or `table` under a `cluster NAME: PLUGIN/DATAPATH` heading
/// (`(none)` for an empty table).
pub fn print_cluster_rows<T: Serialize>(
    state: &ClusterState,
    json: bool,
    rows: &[T],
    table: aks_userspace::table::Table,
) -> Result<()> {
    print_json_or(json, rows, || {
        let heading = format!(
            "cluster {}: {}/{}\n",
            state.name, state.network_plugin, state.datapath
        );
        if table.is_empty() {
            heading + "(none)\n"
        } else {
            heading + &table.to_string()
        }
    })
}

/// Fails with a clear message unless running as root.
pub fn require_root(what: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("{what} needs root (network namespaces, BPF): run it with sudo, or through `cargo xtask run -- …`");
    }
    Ok(())
}
