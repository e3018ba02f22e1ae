//! `aksnet check [NAME] [--json] [--services | --frontends | --policies | --expect FILE]`.
//!
//! Exit status: 0 when every row matches what the cluster model expects, 1 when any row
//! does not (or the cluster is incomplete), 2 for bad input (an unknown cluster, a bad
//! `--expect` file; clap's usage errors are 2 as well).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use aks_userspace::check::{self, expect_file, NetworkModel};
use aks_userspace::state::ClusterState;
use aks_userspace::{model, plan};

/// Some row did not match its expectation, or the cluster is not whole.
pub const EXIT_MISMATCH: u8 = 1;
/// Bad input: the cluster named does not exist, the expectations file is invalid.
pub const EXIT_BAD_INPUT: u8 = 2;

/// What `check` probes.
pub enum Mode<'a> {
    Matrix,
    Services,
    Frontends,
    Policies,
    Expect(&'a Path),
}

pub fn run(name: Option<&str>, json: bool, mode: Mode) -> Result<ExitCode> {
    super::require_root("aksnet check")?;
    let state = match super::resolve_cluster(name) {
        Ok(state) => state,
        Err(err) => {
            eprintln!("error: {err:#}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    let assertions = match mode {
        Mode::Expect(file) => match read_expectations(file, &state)? {
            Ok(assertions) => Some(assertions),
            Err(code) => return Ok(code),
        },
        _ => None,
    };
    let missing = check::missing_namespaces(&state)?;
    if !missing.is_empty() {
        eprintln!(
            "error: cluster {} is incomplete: {} of its {} namespaces are missing ({}); its `aksnet up` did not finish or something removed them. Remove it with `aksnet down {}` and create it again",
            state.name,
            missing.len(),
            state.namespaces.len(),
            missing.join(", "),
            state.name
        );
        return Ok(ExitCode::from(EXIT_MISMATCH));
    }
    let model = match cluster_model(&state) {
        Ok(model) => model,
        Err(err) => {
            eprintln!("error: cluster {} is incomplete: {err:#}", state.name);
            return Ok(ExitCode::from(EXIT_MISMATCH));
        }
    };
    let passed = match (mode, assertions) {
        (Mode::Services, _) => services(&state, &model, json)?,
        (Mode::Frontends, _) => frontends(&state, &model, json)?,
        (Mode::Policies, _) => policies(&state, &model, json)?,
        (_, Some(checks)) => {
            let endpoints = check::cluster_endpoints(&state);
            report(&state, &check::run_checked(&endpoints, checks)?, json)?
        }
        _ => matrix(&state, &model, json)?,
    };
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_MISMATCH)
    })
}

/// The model the expectations come from: the cluster's description, planned again.
fn cluster_model(state: &ClusterState) -> Result<NetworkModel> {
    let description = ClusterState::load_description(&state.name)?;
    let cluster = model::validate(&description).context("validating its saved description")?;
    let plan = plan::plan(&cluster).context("planning its saved description")?;
    Ok(NetworkModel::from_plan(&plan))
}

/// Reads and resolves an expectations file; `Err(2)` with the message printed when it
/// is bad.
fn read_expectations(
    file: &Path,
    state: &ClusterState,
) -> Result<Result<Vec<(check::Probe, check::Expectation)>, ExitCode>> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("error: reading the expectations {}: {err}", file.display());
            return Ok(Err(ExitCode::from(EXIT_BAD_INPUT)));
        }
    };
    let endpoints = check::cluster_endpoints(state);
    match expect_file::parse(&text).and_then(|a| expect_file::resolve(&a, &endpoints)) {
        Ok(checks) => Ok(Ok(checks)),
        Err(err) => {
            eprintln!("error: {}: {err}", file.display());
            Ok(Err(ExitCode::from(EXIT_BAD_INPUT)))
        }
    }
}

/// Probes the standard matrix of `state`, prints it, and says whether every row passed.
pub fn matrix(state: &ClusterState, model: &NetworkModel, json: bool) -> Result<bool> {
    let (endpoints, checks) = check::expected_matrix(state, model);
    let rows = check::run_checked(&endpoints, checks)?;
    report(state, &rows, json)
}

/// Probes every pair the cluster's policies select; a cluster without policies has
/// nothing to show, which is said (and passes).
fn policies(state: &ClusterState, model: &NetworkModel, json: bool) -> Result<bool> {
    let (endpoints, checks) = check::policy_matrix(state, model);
    if checks.is_empty() && !json {
        println!(
            "cluster {}: network policy engine {}, {} policies: no pod is isolated, nothing to probe",
            state.name,
            model.policy.engine,
            model.policy.policies.len()
        );
        return Ok(true);
    }
    let rows = check::run_checked(&endpoints, checks)?;
    report(state, &rows, json)
}

fn report(state: &ClusterState, rows: &[check::CheckRow], json: bool) -> Result<bool> {
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.verdict.passed())
        .map(|r| r.observed.path.as_str())
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(rows).context("while encoding the results as JSON")?
        );
    } else {
        println!(
            "cluster {}: {}/{}",
            state.name, state.network_plugin, state.datapath
        );
        print!("{}", check::render_checked(rows));
        summary(rows.len(), &failed, "rows");
    }
    Ok(failed.is_empty())
}

fn summary(total: usize, failed: &[&str], what: &str) {
    if failed.is_empty() {
        println!("{total} of {total} {what} pass");
    } else {
        println!(
            "{} of {total} {what} FAIL: {}",
            failed.len(),
            failed.join("; ")
        );
    }
}

fn frontends(state: &ClusterState, model: &NetworkModel, json: bool) -> Result<bool> {
    let checks = check::check_frontends(state, model, check::DEFAULT_ATTEMPTS)?;
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.verdict.passed())
        .map(|c| format!("{} from {}", c.service, c.client))
        .collect();
    let table = Probed {
        per: "frontend and client",
        none: "no LoadBalancer services in the description",
        what: "frontend probes",
    };
    table.print(state, json, &checks, &failed, || {
        check::render_frontend_checks(&checks)
    })?;
    Ok(failed.is_empty())
}

fn services(state: &ClusterState, model: &NetworkModel, json: bool) -> Result<bool> {
    let checks = check::check_services(state, model, check::DEFAULT_ATTEMPTS)?;
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.verdict.passed())
        .map(|c| c.observed.service.clone())
        .collect();
    let table = Probed {
        per: "service",
        none: "no services in the description",
        what: "services",
    };
    table.print(state, json, &checks, &failed, || {
        check::render_service_checks(&checks)
    })?;
    Ok(failed.is_empty())
}

/// How a report of repeated probes (services, frontends) is worded.
struct Probed {
    /// What each batch of `DEFAULT_ATTEMPTS` connections is for.
    per: &'static str,
    /// Said when there is nothing to probe.
    none: &'static str,
    /// The rows, in the summary line.
    what: &'static str,
}

impl Probed {
    fn print<T: serde::Serialize>(
        &self,
        state: &ClusterState,
        json: bool,
        checks: &[T],
        failed: &[String],
        render: impl FnOnce() -> String,
    ) -> Result<()> {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(checks)
                    .context("while encoding the results as JSON")?
            );
            return Ok(());
        }
        println!(
            "cluster {}: {}/{}, {} connections per {}",
            state.name,
            state.network_plugin,
            state.datapath,
            check::DEFAULT_ATTEMPTS,
            self.per
        );
        if checks.is_empty() {
            println!("{}", self.none);
        } else {
            print!("{}", render());
            let failed: Vec<&str> = failed.iter().map(String::as_str).collect();
            summary(checks.len(), &failed, self.what);
        }
        Ok(())
    }
}
