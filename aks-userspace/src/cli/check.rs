//! `aksnet check [NAME] [--json]`.

use std::process::ExitCode;

use anyhow::{Context, Result};

use aks_userspace::check;

pub fn run(name: Option<&str>, json: bool) -> Result<ExitCode> {
    super::require_root("aksnet check")?;
    let state = super::resolve_cluster(name)?;
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
