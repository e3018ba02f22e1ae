//! An iptables ruleset as `iptables-restore` reads it and `iptables-save` writes it:
//! tables, the chains declared in each, and rules in order. The renderers build one,
//! `apply` writes it as a single payload, `inspect rules` parses what the kernel holds
//! back into one to count rules per chain.

use anyhow::{bail, Result};
use serde::Serialize;

/// The chains the kernel creates in every table; they are never declared.
const BUILTIN_CHAINS: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Ruleset {
    pub tables: Vec<Table>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Table {
    /// `nat`, `filter`, …
    pub name: String,
    /// Chains in declaration order: built-in ones as the kernel lists them (only when
    /// read back), then the user chains.
    pub chains: Vec<String>,
    pub rules: Vec<Rule>,
}

/// One `-A CHAIN …` line: the chain and everything after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub chain: String,
    pub spec: String,
}

/// Rules in one chain, for `inspect rules`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainCount {
    pub table: String,
    pub chain: String,
    pub rules: usize,
}

impl Table {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            chains: Vec::new(),
            rules: Vec::new(),
        }
    }

    /// Declares a user chain once (later declarations of the same chain are ignored).
    pub fn chain(&mut self, name: &str) {
        if !BUILTIN_CHAINS.contains(&name) && !self.chains.iter().any(|c| c == name) {
            self.chains.push(name.to_owned());
        }
    }

    /// Appends `-A chain spec`.
    pub fn rule(&mut self, chain: &str, spec: impl Into<String>) {
        self.rules.push(Rule {
            chain: chain.to_owned(),
            spec: spec.into(),
        });
    }

    /// The rules of `chain`, in order.
    pub fn rules_of<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules.iter().filter(move |r| r.chain == chain)
    }
}

impl Ruleset {
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// The table `name`, added if it is not there yet.
    pub fn table_mut(&mut self, name: &str) -> &mut Table {
        let index = match self.tables.iter().position(|t| t.name == name) {
            Some(index) => index,
            None => {
                self.tables.push(Table::new(name));
                self.tables.len() - 1
            }
        };
        &mut self.tables[index]
    }

    /// The `iptables-restore` payload: per table, the user chains declared, the rules in
    /// order, and `COMMIT`. Meant for `--noflush`: built-in chains keep what they hold and
    /// get these rules appended.
    pub fn to_restore(&self) -> String {
        let mut out = String::new();
        for table in &self.tables {
            out.push_str(&format!("*{}\n", table.name));
            for chain in &table.chains {
                if !BUILTIN_CHAINS.contains(&chain.as_str()) {
                    out.push_str(&format!(":{chain} - [0:0]\n"));
                }
            }
            for rule in &table.rules {
                out.push_str(&format!("-A {} {}\n", rule.chain, rule.spec));
            }
            out.push_str("COMMIT\n");
        }
        out
    }

    /// Reads `iptables-save` output (or a restore payload). Every chain a table declares
    /// is kept, built-in ones included, so empty chains show up with 0 rules.
    pub fn parse(text: &str) -> Result<Self> {
        let mut ruleset = Ruleset::default();
        let mut current: Option<Table> = None;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                if let Some(open) = current.take() {
                    bail!(
                        "line {}: table {} starts before table {} was committed",
                        number + 1,
                        name,
                        open.name
                    );
                }
                current = Some(Table::new(name));
                continue;
            }
            let Some(table) = current.as_mut() else {
                bail!("line {}: {line:?} is outside any table", number + 1);
            };
            if line == "COMMIT" {
                ruleset.tables.extend(current.take());
            } else if let Some(declaration) = line.strip_prefix(':') {
                let chain = declaration.split_whitespace().next().unwrap_or_default();
                table.chains.push(chain.to_owned());
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
                table.rule(chain, spec);
            } else {
                bail!(
                    "line {}: expected a table, a chain or a rule, found {line:?}",
                    number + 1
                );
            }
        }
        if let Some(open) = current {
            bail!("table {} is not committed", open.name);
        }
        Ok(ruleset)
    }

    /// Rules per chain, table by table, chains in declaration order (then any chain
    /// that only appears in rules).
    pub fn chain_counts(&self) -> Vec<ChainCount> {
        let mut counts = Vec::new();
        for table in &self.tables {
            let mut chains: Vec<&str> = table.chains.iter().map(String::as_str).collect();
            for rule in &table.rules {
                if !chains.contains(&rule.chain.as_str()) {
                    chains.push(&rule.chain);
                }
            }
            for chain in chains {
                counts.push(ChainCount {
                    table: table.name.clone(),
                    chain: chain.to_owned(),
                    rules: table.rules_of(chain).count(),
                });
            }
        }
        counts
    }

    /// Every rule of every table.
    pub fn rule_count(&self) -> usize {
        self.tables.iter().map(|t| t.rules.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_ruleset_parses_back_to_itself() {
        let mut ruleset = Ruleset::default();
        let nat = ruleset.table_mut("nat");
        nat.chain("KUBE-SERVICES");
        nat.chain("KUBE-SERVICES");
        nat.rule("PREROUTING", "-j KUBE-SERVICES");
        nat.rule("KUBE-SERVICES", "-d 10.0.0.1/32 -j RETURN");
        ruleset.table_mut("filter").chain("KUBE-FORWARD");
        let text = ruleset.to_restore();
        assert_eq!(
            text,
            "*nat\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -j KUBE-SERVICES\n-A KUBE-SERVICES -d 10.0.0.1/32 -j RETURN\nCOMMIT\n*filter\n:KUBE-FORWARD - [0:0]\nCOMMIT\n"
        );
        assert_eq!(Ruleset::parse(&text).expect("parses"), ruleset);
    }

    #[test]
    fn iptables_save_output_counts_rules_per_chain_including_empty_ones() {
        let saved = "# Generated by iptables-save v1.8.9\n*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-MARK-MASQ - [0:0]\n-A POSTROUTING -j KUBE-POSTROUTING\n-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\nCOMMIT\n# Completed\n";
        let counts = Ruleset::parse(saved).expect("parses").chain_counts();
        let summary: Vec<(&str, usize)> =
            counts.iter().map(|c| (c.chain.as_str(), c.rules)).collect();
        assert_eq!(
            summary,
            [("PREROUTING", 0), ("POSTROUTING", 1), ("KUBE-MARK-MASQ", 1)]
        );
    }

    #[test]
    fn malformed_input_is_an_error_with_its_line() {
        let err = Ruleset::parse("*nat\n-A X -j Y\n").expect_err("uncommitted");
        assert!(err.to_string().contains("not committed"), "{err}");
        let err = Ruleset::parse("-A X -j Y\n").expect_err("outside a table");
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
