//! `aksnet down [NAME|--all]`.

use std::process::ExitCode;

use anyhow::Result;

use aks_userspace::cluster;
use aks_userspace::state::ClusterState;

pub fn run(name: Option<&str>, all: bool) -> Result<ExitCode> {
    super::require_root("aksnet down")?;
    let names = match (name, all) {
        (Some(name), _) => vec![name.to_owned()],
        (None, true) => ClusterState::list()?,
        (None, false) => {
            let clusters = ClusterState::list()?;
            if clusters.len() > 1 {
                anyhow::bail!(
                    "several clusters exist ({}); name one, or use --all",
                    clusters.join(", ")
                );
            }
            clusters
        }
    };
    if names.is_empty() {
        println!("no clusters to remove");
    }
    for name in names {
        let removal = cluster::remove(&name)?;
        if let Some(pid) = removal.removed_by_owner {
            println!(
                "cluster {name} removed by its `aksnet up` (pid {pid}), which was asked to stop"
            );
        } else if removal.existed {
            println!(
                "cluster {name} removed: {} namespaces{}",
                removal.namespaces,
                if removal.pins_removed {
                    ", pinned BPF objects"
                } else {
                    ""
                }
            );
        } else {
            println!("cluster {name}: nothing to remove");
        }
    }
    Ok(ExitCode::SUCCESS)
}
