//! `aksnet bench --snat-exhaustion`: builds one cluster per cell with the load balancer's
//! outbound rule, runs the rounds (`bench::snat`), prints the table, removes the
//! clusters whatever happened.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use aks_userspace::bench::{interrupt, snat};
use aks_userspace::{cluster, model, plan, state::ClusterState};

/// Removes the clusters it holds when dropped (a failed or interrupted run included).
struct Clusters(Vec<String>);

impl Drop for Clusters {
    fn drop(&mut self) {
        for name in &self.0 {
            if let Err(err) = cluster::remove(name) {
                eprintln!("bench: removing cluster {name}: {err:#}");
            }
        }
    }
}

pub fn run(
    prefix: &str,
    ports: u32,
    rounds: Option<usize>,
    json: Option<&Path>,
) -> Result<ExitCode> {
    let rounds = rounds.unwrap_or(3);
    anyhow::ensure!(rounds >= 1, "--rounds {rounds}: give at least 1");
    interrupt::install()?;
    let mut made = Clusters(Vec::new());
    let mut running = Vec::new();
    let mut cells = Vec::new();
    for (i, cell) in snat::CELLS.into_iter().enumerate() {
        let name = format!("{prefix}s{i}");
        let description = model::parse(&snat::description(&name, cell, ports))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let cluster = model::validate(&description)
            .map_err(|e| anyhow::anyhow!("--snat-ports {ports}: {e}"))?;
        let plan = plan::plan(&cluster).map_err(|e| anyhow::anyhow!("{e}"))?;
        eprintln!("bench: building {} ({}/{})", name, cell.0, cell.1);
        running.push(cluster::create(&plan).with_context(|| format!("building {name}"))?);
        made.0.push(name.clone());
        cells.push((
            format!("{}/{}", cell.0, cell.1),
            ClusterState::require(&name)?,
        ));
    }
    let results = snat::run(&cells, ports, rounds, &|line| eprintln!("bench: {line}"))?;
    drop(running);
    print!("{}", snat::render(&results));
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    let failed = results.iter().any(|r| !r.exhausted);
    drop(made);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
