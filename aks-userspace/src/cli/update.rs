//! `aksnet update NAME --network-plugin-mode overlay`: upgrade a running kubenet or Node
//! Subnet cluster to Azure CNI Overlay in place, one node at a time.
//! `aksnet update NAME --outbound-type TYPE`: change its egress.

use std::process::ExitCode;

use anyhow::Result;

use aks_userspace::cidr::Ipv4Cidr;
use aks_userspace::egress_update;
use aks_userspace::model::outbound::OutboundType;
use aks_userspace::stop::{self, Stopped};
use aks_userspace::upgrade::{self, Outcome, Progress, Refused};
use aks_userspace::{errln, outln};

pub fn run(name: Option<&str>, pod_cidr: Option<Ipv4Cidr>) -> Result<ExitCode> {
    super::require_root("aksnet update")?;
    let name = super::resolve_cluster_name(name)?;
    // A stop signal between nodes rolls the upgraded nodes back instead of ending here.
    stop::install()?;
    let result = upgrade::to_overlay(&name, pod_cidr, |step| match step {
        Progress::Reimaging { node, index, total } => {
            errln!("reimaging node {node} ({}/{total})", index + 1)
        }
        Progress::Reimaged { node, took } => {
            errln!(
                "node {node} runs Azure CNI Overlay ({:.2} s)",
                took.as_secs_f64()
            )
        }
        Progress::RollingBack { node } => errln!("rolling node {node} back"),
    });
    match result {
        Ok(Outcome::AlreadyOverlay) => {
            outln!("cluster {name} already runs Azure CNI Overlay; nothing to do");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Outcome::Upgraded { from, nodes, took }) => {
            outln!(
                "cluster {name} upgraded from {} to Azure CNI Overlay: {nodes} nodes reimaged in {:.2} s; the VNet holds no pod route any more (`aksnet check {name}`)",
                from.title(),
                took.as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => Ok(failed(&err)),
    }
}

pub fn run_outbound(name: Option<&str>, to: OutboundType) -> Result<ExitCode> {
    super::require_root("aksnet update")?;
    let name = super::resolve_cluster_name(name)?;
    stop::install()?;
    match egress_update::change(&name, to) {
        Ok(egress_update::Outcome::Unchanged) => {
            outln!("cluster {name} already uses outboundType {to}; nothing to do");
            Ok(ExitCode::SUCCESS)
        }
        Ok(egress_update::Outcome::Changed {
            from,
            to,
            public_ip,
        }) => {
            let sees =
                public_ip.map_or_else(|| "nothing: no egress".to_owned(), |ip| format!("{ip}"));
            outln!(
                "cluster {name}: outboundType {from} -> {to}; the internet now sees {sees} (`aksnet inspect egress --cluster {name}`, `aksnet check {name}`)"
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => Ok(failed(&err)),
    }
}

/// Prints `err` and chooses the exit status: 2 for what AKS refuses too, the signal's
/// status after a stop signal, 1 otherwise.
fn failed(err: &anyhow::Error) -> ExitCode {
    errln!("error: {err:#}");
    if err.downcast_ref::<Refused>().is_some() {
        return ExitCode::from(super::EXIT_INVALID_DESCRIPTION);
    }
    match err.chain().find_map(|e| e.downcast_ref::<Stopped>()) {
        Some(stopped) => ExitCode::from(stopped.exit_code()),
        None => ExitCode::FAILURE,
    }
}
