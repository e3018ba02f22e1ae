//! `inspect attach`: which program sits on TC ingress of each interface of a node, and
//! in which mode it was attached, as the kernel reports it now (not as `up` recorded it).
//!
//! TCX programs are listed with `BPF_PROG_QUERY`; netlink filters with iproute2's
//! `tc -j filter show` (aya does not expose a filter dump).

use std::process::Command;

use anyhow::{bail, Context, Result};
use aya::programs::{SchedClassifier, TcAttachType};
use serde::Serialize;
use serde_json::Value;

use super::{select_nodes, NodePins};
use crate::datapath::ebpf::TcAttachMode;
use crate::netns;
use crate::state::ClusterState;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentRow {
    pub node: String,
    pub interface: String,
    /// The pod behind a pod veth; `None` for the uplink.
    pub pod: Option<String>,
    pub mode: TcAttachMode,
    /// The program's name as the kernel knows it (`from_pod`, `from_vnet`).
    pub program: String,
    /// The kernel's id of the program (`bpftool prog show id N`).
    pub program_id: u32,
}

/// The TC ingress programs on the uplink and every pod veth of `node` (every node when
/// `None`). An interface with no program shows no row.
pub fn attachments(state: &ClusterState, node: Option<&str>) -> Result<Vec<AttachmentRow>> {
    let mut rows = Vec::new();
    for layout in select_nodes(state, node)? {
        // Only an eBPF cluster has programs; this also says so for an iptables one.
        NodePins::open(state, layout)?;
        let namespace = &layout.namespace;
        let mode = netns::run_in(namespace, || TcAttachMode::probe(&layout.uplink))
            .with_context(|| format!("on node {}", layout.name))?;
        let interfaces = std::iter::once((layout.uplink.as_str(), None)).chain(
            layout
                .pods
                .iter()
                .map(|p| (p.host_interface.as_str(), Some(p.name.clone()))),
        );
        for (interface, pod) in interfaces {
            let programs = match mode {
                TcAttachMode::Tcx => tcx_programs(namespace, interface)?,
                TcAttachMode::Netlink => netlink_filters(namespace, interface)?,
            };
            rows.extend(
                programs
                    .into_iter()
                    .map(|(program, program_id)| AttachmentRow {
                        node: layout.name.clone(),
                        interface: interface.to_owned(),
                        pod: pod.clone(),
                        mode,
                        program,
                        program_id,
                    }),
            );
        }
    }
    Ok(rows)
}

fn tcx_programs(namespace: &str, interface: &str) -> Result<Vec<(String, u32)>> {
    netns::run_in(namespace, || {
        let (_, programs) = SchedClassifier::query_tcx(interface, TcAttachType::Ingress)
            .with_context(|| format!("listing TCX programs on {interface}"))?;
        Ok(programs
            .iter()
            .map(|p| (p.name_as_str().unwrap_or("?").to_owned(), p.id()))
            .collect())
    })
}

fn netlink_filters(namespace: &str, interface: &str) -> Result<Vec<(String, u32)>> {
    let out = Command::new("tc")
        .args([
            "-j", "-n", namespace, "filter", "show", "dev", interface, "ingress",
        ])
        .output()
        .context("running tc (iproute2; `cargo xtask setup` installs it)")?;
    if !out.status.success() {
        bail!(
            "`tc -n {namespace} filter show dev {interface} ingress` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_bpf_filters(&out.stdout)
        .with_context(|| format!("reading tc's filters of {interface} in {namespace}"))
}

/// The (program name, id) of each `bpf` filter in `tc -j filter show` output. tc lists
/// a chain header per priority (no `options`) before its filters; those are skipped.
fn parse_bpf_filters(json: &[u8]) -> Result<Vec<(String, u32)>> {
    // An interface without a clsact qdisc prints nothing at all.
    if json.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let filters: Vec<Value> = serde_json::from_slice(json).context("tc printed no JSON array")?;
    let mut programs = Vec::new();
    for filter in filters {
        if filter["kind"] != "bpf" {
            continue;
        }
        let prog = &filter["options"]["prog"];
        let (Some(name), Some(id)) = (prog["name"].as_str(), prog["id"].as_u64()) else {
            continue;
        };
        programs.push((name.to_owned(), u32::try_from(id).context("program id")?));
    }
    Ok(programs)
}

#[cfg(test)]
mod tests {
    use super::parse_bpf_filters;

    #[test]
    fn reads_program_names_and_ids_from_tc_json() {
        // As iproute2 6.1 prints one cls_bpf filter (direct action) on clsact ingress.
        let json = br#"[{"protocol":"all","pref":49152,"kind":"bpf","chain":0},{"protocol":"all","pref":49152,"kind":"bpf","chain":0,"options":{"handle":"0x1","bpf_name":"from_vnet","direct-action":true,"not_in_hw":true,"prog":{"id":42,"name":"from_vnet","tag":"0123456789abcdef","jited":1}}}]"#;
        assert_eq!(
            parse_bpf_filters(json).expect("parses"),
            vec![("from_vnet".to_owned(), 42)]
        );
        assert_eq!(parse_bpf_filters(b"\n").expect("empty"), vec![]);
        assert!(parse_bpf_filters(b"not json").is_err());
    }
}
