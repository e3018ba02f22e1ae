//! `aksnet policy apply FILE | delete NAME | list`: change a running cluster's network
//! policies. Exit status: 0 done, 1 failed, 2 bad input (a file that is not a
//! NetworkPolicy, a policy the cluster's rules refuse, an unknown policy).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;

use aks_userspace::cluster_lock::ClusterLock;
use aks_userspace::model::{self, PlanError};
use aks_userspace::policies::{self, PolicyChange};
use aks_userspace::state::ClusterState;

/// Bad input: the file, the policy or the name.
const EXIT_BAD_INPUT: u8 = 2;

#[derive(Subcommand)]
pub enum PolicyAction {
    /// Add NetworkPolicy objects from FILE (one object, or a YAML list), replacing those
    /// with the same namespace and name.
    Apply {
        file: PathBuf,
        /// The cluster; may be left out when exactly one exists.
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Delete a network policy.
    Delete {
        name: String,
        /// Its Kubernetes namespace.
        #[arg(long, short = 'n', default_value = "default")]
        namespace: String,
        #[arg(long)]
        cluster: Option<String>,
    },
    /// List the policies with the pods they select and what they allow.
    List(super::ListArgs),
}

pub fn run(action: PolicyAction) -> Result<ExitCode> {
    super::require_root("aksnet policy")?;
    let (cluster, change) = match action {
        PolicyAction::List(args) => return list(args.cluster.as_deref(), args.json),
        PolicyAction::Apply { file, cluster } => {
            let text = match super::read_description(&file) {
                Ok(text) => text,
                Err(why) => {
                    eprintln!("error: {}: {why}", file.display());
                    return Ok(ExitCode::from(EXIT_BAD_INPUT));
                }
            };
            match policies::parse(&text) {
                Ok(list) => (cluster, PolicyChange::Apply(list)),
                Err(err) => {
                    eprintln!("error: {}: {err}", file.display());
                    return Ok(ExitCode::from(EXIT_BAD_INPUT));
                }
            }
        }
        PolicyAction::Delete {
            name,
            namespace,
            cluster,
        } => (cluster, PolicyChange::Delete { namespace, name }),
    };
    let name = super::resolve_cluster_name(cluster.as_deref())?;
    // Held until the maps or rules are programmed and the description saved.
    let _lock = ClusterLock::existing(&name, ClusterLock::say_waiting(&name))?;
    let state = ClusterState::require(&name)?;
    let update = match policies::apply(&state, change) {
        Ok(update) => update,
        Err(err)
            if err.downcast_ref::<PlanError>().is_some()
                || err.to_string().contains("has no network policy") =>
        {
            eprintln!("error: cluster {name}: {err:#}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
        Err(err) => return Err(err),
    };
    println!(
        "{} {}; the cluster has {} policies",
        update.policies.join(", "),
        update.programmed,
        update.policies_now
    );
    Ok(ExitCode::SUCCESS)
}

fn list(cluster: Option<&str>, json: bool) -> Result<ExitCode> {
    let state = super::resolve_cluster(cluster)?;
    let description = ClusterState::load_description(&state.name)?;
    let cluster = model::validate(&description).context("validating the saved description")?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&cluster.policy)
                .context("while encoding the policies as JSON")?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "cluster {}: {}/{}",
        state.name, state.network_plugin, state.datapath
    );
    print!("{}", aks_userspace::policy::render::render(&cluster.policy));
    Ok(ExitCode::SUCCESS)
}
