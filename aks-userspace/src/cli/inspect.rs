//! `aksnet inspect rules [NODE] [--cluster NAME] [--json]`.

use std::process::ExitCode;

use anyhow::{Context, Result};

use aks_userspace::datapath::iptables_rules::{node_rules, NodeRules};
use aks_userspace::table::Table;

pub fn rules(node: Option<&str>, cluster: Option<&str>, json: bool) -> Result<ExitCode> {
    super::require_root("aksnet inspect rules")?;
    let state = super::resolve_cluster(cluster)?;
    let rules = node_rules(&state, node)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rules).context("while encoding the rules as JSON")?
        );
    } else {
        print!("{}", render(&rules));
    }
    Ok(ExitCode::SUCCESS)
}

/// The ruleset as `iptables-save` shows it (without counters), then the rules per chain.
fn render(rules: &NodeRules) -> String {
    let mut out = format!(
        "node {} of cluster {} ({} datapath), namespace {}: {} rules\n\n",
        rules.node, rules.cluster, rules.datapath, rules.namespace, rules.total_rules
    );
    out.push_str(&rules.ruleset.to_restore());
    let mut table = Table::new(&["TABLE", "CHAIN", ">RULES"]);
    for chain in &rules.chains {
        table.row(vec![
            chain.table.clone(),
            chain.chain.clone(),
            chain.rules.to_string(),
        ]);
    }
    out.push('\n');
    out.push_str(&table.to_string());
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}
