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
            report(
                &state,
                &model,
                &check::run_checked(&endpoints, checks)?,
                json,
            )?
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
    report(state, model, &rows, json)
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
    report(state, model, &rows, json)
}

fn report(
    state: &ClusterState,
    model: &NetworkModel,
    rows: &[check::CheckRow],
    json: bool,
) -> Result<bool> {
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.verdict.passed())
        .map(|r| r.observed.path.as_str())
        .collect();
    super::print_json_or(json, rows, || {
        format!(
            "{}\n{}{}",
            heading(&state.name, model),
            check::render_checked(rows),
            summary(rows.len(), &failed, "rows")
        )
    })?;
    Ok(failed.is_empty())
}

/// `cluster NAME: MODEL/DATAPATH`, naming the AKS model (Overlay, Pod Subnet …), not
/// only the plugin: "azure" alone is three different networks.
fn heading(name: &str, model: &NetworkModel) -> String {
    format!(
        "cluster {name}: {}/{}",
        model.pod_network.title(),
        model.datapath
    )
}

fn summary(total: usize, failed: &[&str], what: &str) -> String {
    if failed.is_empty() {
        format!("{total} of {total} {what} pass\n")
    } else {
        format!(
            "{} of {total} {what} FAIL: {}\n",
            failed.len(),
            failed.join("; ")
        )
    }
}

fn frontends(state: &ClusterState, model: &NetworkModel, json: bool) -> Result<bool> {
    let checks = check::check_frontends(state, model, check::DEFAULT_ATTEMPTS)?;
    FRONTEND_PROBES.report(
        (state, model, json),
        &checks,
        |c| (!c.verdict.passed()).then(|| format!("{} from {}", c.service, c.client)),
        || check::render_frontend_checks(&checks),
    )
}

fn services(state: &ClusterState, model: &NetworkModel, json: bool) -> Result<bool> {
    let checks = check::check_services(state, model, check::DEFAULT_ATTEMPTS)?;
    SERVICE_PROBES.report(
        (state, model, json),
        &checks,
        |c| (!c.verdict.passed()).then(|| c.observed.service.clone()),
        || check::render_service_checks(&checks),
    )
}

const FRONTEND_PROBES: Probed = Probed {
    per: "frontend and client",
    none: "no LoadBalancer services in the description",
    what: "frontend probes",
};

const SERVICE_PROBES: Probed = Probed {
    per: "service",
    none: "no services in the description",
    what: "services",
};

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
    /// Prints `checks` (JSON, or a table `render` builds with a summary) and says whether
    /// all passed; `failure` names a check that failed, `None` for one that passed.
    fn report<T: serde::Serialize>(
        &self,
        (state, model, json): (&ClusterState, &NetworkModel, bool),
        checks: &[T],
        failure: impl Fn(&T) -> Option<String>,
        render: impl FnOnce() -> String,
    ) -> Result<bool> {
        let failed: Vec<String> = checks.iter().filter_map(failure).collect();
        super::print_json_or(json, checks, || {
            let heading = format!(
                "{}, {} connections per {}\n",
                heading(&state.name, model),
                check::DEFAULT_ATTEMPTS,
                self.per
            );
            if checks.is_empty() {
                format!("{heading}{}\n", self.none)
            } else {
                let failed: Vec<&str> = failed.iter().map(String::as_str).collect();
                heading + &render() + &summary(checks.len(), &failed, self.what)
            }
        })?;
        Ok(failed.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_of(yaml: &str) -> NetworkModel {
        let cluster = model::load(yaml).expect("a valid description");
        NetworkModel::from_plan(&plan::plan(&cluster).expect("plannable"))
    }

    const NODE_SUBNET: &str = "name: h\nnetworkPlugin: azure\ndatapath: ebpf\nvnet:\n  addressSpace: 10.224.0.0/12\n  nodeSubnet: 10.224.0.0/24\nnodePools:\n  - { name: np, count: 1, osType: Linux }\npodsPerNode: 1\n";

    #[test]
    fn the_heading_names_the_azure_cni_model_not_only_the_plugin() {
        assert_eq!(
            heading("h", &model_of(NODE_SUBNET)),
            "cluster h: Azure CNI Node Subnet/ebpf"
        );
        let overlay = format!("{NODE_SUBNET}networkPluginMode: overlay\npodCidr: 10.244.0.0/16\n");
        assert_eq!(
            heading("h", &model_of(&overlay)),
            "cluster h: Azure CNI Overlay/ebpf"
        );
        let pod_subnet = NODE_SUBNET.replace(
            "  nodeSubnet: 10.224.0.0/24\n",
            "  nodeSubnet: 10.224.0.0/24\n  podSubnet: 10.225.0.0/24\n",
        );
        assert_eq!(
            heading("h", &model_of(&pod_subnet)),
            "cluster h: Azure CNI Pod Subnet/ebpf"
        );
        let kubenet = NODE_SUBNET.replace("networkPlugin: azure", "networkPlugin: kubenet");
        assert_eq!(heading("h", &model_of(&kubenet)), "cluster h: kubenet/ebpf");
    }
}
