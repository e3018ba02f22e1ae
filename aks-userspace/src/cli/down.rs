//! `aksnet down [NAME|--all]`.

use std::process::ExitCode;

use anyhow::Result;

use aks_userspace::cluster::{self, Removal};
use aks_userspace::state::ClusterState;
use aks_userspace::topology::layout;
use aks_userspace::{errln, outln};

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
        outln!("no clusters to remove");
    }
    // With --all, one cluster that cannot be removed does not stop the others.
    let mut failed = 0;
    for name in &names {
        let removal = cluster::remove_waiting(name, |holder| {
            errln!(
                "cluster {name}: waiting for another aksnet command{} that is changing it",
                holder.map_or_else(String::new, |pid| format!(" (pid {pid})"))
            )
        });
        match removal {
            Ok(removal) => report(name, &removal),
            Err(err) => {
                errln!("error: cluster {name}: {err:#}");
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn report(name: &str, removal: &Removal) {
    let pins = if removal.pins_removed {
        ", pinned BPF objects"
    } else {
        ""
    };
    if let Some(pid) = removal.removed_by_owner {
        outln!("cluster {name} removed by its `aksnet up` (pid {pid}), which was asked to stop");
    } else if let Some(why) = &removal.untrusted_record {
        outln!(
            "cluster {name} removed without its record ({why}): what carries the prefix {}: {} namespaces{pins}",
            layout::prefix(name),
            removal.namespaces
        );
    } else if removal.existed {
        let agent = removal
            .probe_agent
            .map_or_else(String::new, |pid| format!(", its probe agent (pid {pid})"));
        outln!(
            "cluster {name} removed: {} namespaces{pins}{agent}",
            removal.namespaces
        );
    } else {
        outln!("cluster {name}: nothing to remove");
    }
}
