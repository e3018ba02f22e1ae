//! `aksnet check [NAME] [--json] [--services]`.

use std::process::ExitCode;

use anyhow::{Context, Result};

use aks_userspace::check;

pub fn run(name: Option<&str>, json: bool, services: bool) -> Result<ExitCode> {
    super::require_root("aksnet check")?;
    let state = super::resolve_cluster(name)?;
    if services {
        let results = check::probe_services(&state, check::DEFAULT_ATTEMPTS)?;
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&results)
                    .context("while encoding the results as JSON")?
            );
        } else {
            println!(
                "cluster {}: {}/{}, {} connections per service",
                state.name,
                state.network_plugin,
                state.datapath,
                check::DEFAULT_ATTEMPTS
            );
            if results.is_empty() {
                println!("no services in the description");
            } else {
                print!("{}", check::render_service_table(&results));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (endpoints, probes) = check::cluster_matrix(&state);
    let results = check::run(&endpoints, &probes)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&results).context("while encoding the results as JSON")?
        );
    } else {
        println!(
            "cluster {}: {}/{}",
            state.name, state.network_plugin, state.datapath
        );
        print!("{}", check::render_table(&results));
    }
    Ok(ExitCode::SUCCESS)
}
