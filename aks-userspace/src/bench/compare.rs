//! `aksnet bench --compare BEFORE.json AFTER.json`: how far every ratio moved between
//! two runs. Two runs of the same binary on the same machine tell whether `--rounds` is
//! enough for the ratios to hold (the bench's claim is ±5 % run to run); a run before
//! and after a change tells what the change did, beside that noise.
//!
//! The reports are read as JSON values, not as [`super::report::BenchReport`], so a
//! report written by an older binary (with fewer cells or workloads) still compares:
//! rows are paired by workload, view and cell, and what only one run has is counted,
//! not compared.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use super::cells::CellKind;
use super::report::Workload;
use crate::table::Table;

/// The ratios of a cell result that are compared, by their JSON field: what each is
/// called in the table.
const RATIOS: [(&str, &str); 3] = [
    ("vsKubenetIptables", "rate vs k/ipt"),
    ("costVsKubenetIptables", "CPU vs k/ipt"),
    ("vsLimit", "rate vs limit"),
];

/// One ratio of one row in both runs (medians of the per-round ratios).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RatioChange {
    pub workload: String,
    pub view: String,
    pub cell: String,
    pub ratio: &'static str,
    pub before: f64,
    pub after: f64,
    /// `after / before - 1`, in percent.
    pub change_percent: f64,
}

/// Every ratio both reports have, and how many rows only one of them has.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    pub before_date: String,
    pub after_date: String,
    pub changes: Vec<RatioChange>,
    /// Rows (workload, view, cell) measured in only one of the two runs.
    pub unpaired_rows: usize,
}

impl Comparison {
    /// The ratios that moved by more than `tolerance_percent` either way.
    pub fn beyond(&self, tolerance_percent: f64) -> Vec<&RatioChange> {
        self.changes
            .iter()
            .filter(|c| c.change_percent.abs() > tolerance_percent)
            .collect()
    }

    /// The table, then one line: how many ratios, how many beyond the tolerance, and
    /// the largest change.
    pub fn render(&self, tolerance_percent: f64) -> String {
        let mut table = Table::new(&[
            "WORKLOAD", "VIEW", "CELL", "RATIO", ">BEFORE", ">AFTER", ">CHANGE",
        ]);
        for c in &self.changes {
            table.row(vec![
                c.workload.clone(),
                c.view.clone(),
                c.cell.clone(),
                c.ratio.to_owned(),
                format!("{:.2}×", c.before),
                format!("{:.2}×", c.after),
                format!("{:+.1} %", c.change_percent),
            ]);
        }
        let mut out = format!(
            "before: {}, after: {}\n{table}",
            self.before_date, self.after_date
        );
        let beyond = self.beyond(tolerance_percent).len();
        let largest = self
            .changes
            .iter()
            .max_by(|a, b| a.change_percent.abs().total_cmp(&b.change_percent.abs()));
        out.push_str(&format!(
            "{} ratios compared, {} within ±{tolerance_percent} %, {beyond} beyond",
            self.changes.len(),
            self.changes.len() - beyond,
        ));
        if let Some(c) = largest {
            out.push_str(&format!(
                "; largest change {:+.1} % ({} {} {} {})",
                c.change_percent, c.workload, c.view, c.cell, c.ratio
            ));
        }
        if self.unpaired_rows > 0 {
            out.push_str(&format!(
                "; {} rows measured in one run only",
                self.unpaired_rows
            ));
        }
        out.push('\n');
        out
    }
}

/// Pairs the cell results of two `aksnet bench --json` reports.
pub fn compare(before: &Value, after: &Value) -> Result<Comparison> {
    let (before_rows, after_rows) = (rows(before, "before")?, rows(after, "after")?);
    let mut changes = Vec::new();
    let mut paired = 0;
    for b in &before_rows {
        let Some(a) = after_rows.iter().find(|a| a.key == b.key) else {
            continue;
        };
        paired += 1;
        let (workload, view, cell) = &b.key;
        for (field, ratio) in RATIOS {
            // A cell against itself is 1 by definition: not a ratio worth comparing.
            let reference = match field {
                "vsLimit" => CellKind::Limit,
                _ => CellKind::BASELINE,
            };
            let self_ratio = *cell == reference.to_string();
            let (Some(before), Some(after)) = (median(b.value, field), median(a.value, field))
            else {
                continue;
            };
            if self_ratio || before <= 0.0 {
                continue;
            }
            changes.push(RatioChange {
                workload: display_workload(workload),
                view: view.clone(),
                cell: cell.clone(),
                ratio,
                before,
                after,
                change_percent: (after / before - 1.0) * 100.0,
            });
        }
    }
    Ok(Comparison {
        before_date: date(before),
        after_date: date(after),
        changes,
        unpaired_rows: before_rows.len() + after_rows.len() - 2 * paired,
    })
}

struct Row<'a> {
    key: (String, String, String),
    value: &'a Value,
}

fn rows<'a>(report: &'a Value, which: &str) -> Result<Vec<Row<'a>>> {
    let Some(results) = report.get("results").and_then(Value::as_array) else {
        bail!("the {which} file has no `results` array: is it an `aksnet bench --json` report?");
    };
    results
        .iter()
        .map(|r| {
            let text = |field: &str| {
                r.get(field)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .with_context(|| format!("a {which} result has no `{field}`: {r}"))
            };
            Ok(Row {
                key: (text("workload")?, text("view")?, text("cell")?),
                value: r,
            })
        })
        .collect()
}

fn median(result: &Value, field: &str) -> Option<f64> {
    result.get(field)?.get("median")?.as_f64()
}

fn date(report: &Value) -> String {
    report
        .get("date")
        .and_then(Value::as_str)
        .unwrap_or("undated")
        .to_owned()
}

/// The table's name of a workload (`rr pod→pod (2 nodes)`), or its key when this
/// binary does not know it.
fn display_workload(key: &str) -> String {
    Workload::from_key(key).map_or_else(|| key.to_owned(), |w| w.name().to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn result(cell: &str, vs_reference: f64, cost: f64, vs_limit: f64) -> Value {
        json!({
            "workload": "rr-pod-to-pod",
            "view": "pinned",
            "cell": cell,
            "vsKubenetIptables": { "median": vs_reference, "min": 0.0, "max": 9.0 },
            "costVsKubenetIptables": { "median": cost, "min": 0.0, "max": 9.0 },
            "vsLimit": { "median": vs_limit, "min": 0.0, "max": 9.0 },
        })
    }

    #[test]
    fn ratios_are_paired_by_row_and_the_reference_rows_are_left_out() {
        let before = json!({ "date": "A", "results": [
            result("azure/ebpf", 1.50, 1.40, 0.80),
            result("kubenet/iptables", 1.0, 1.0, 0.60),
            result("limit", 2.0, 2.0, 1.0),
            result("azure/iptables", 1.0, 1.0, 0.5),
        ]});
        let after = json!({ "date": "B", "results": [
            result("azure/ebpf", 1.44, 1.48, 0.80),
            result("kubenet/iptables", 1.0, 1.0, 0.64),
            result("limit", 2.0, 2.0, 1.0),
        ]});
        let comparison = compare(&before, &after).expect("comparable");
        let found = |cell: &str, ratio: &str| {
            comparison
                .changes
                .iter()
                .find(|c| c.cell == cell && c.ratio == ratio)
                .map(|c| (c.change_percent * 10.0).round() / 10.0)
        };
        assert_eq!(found("azure/ebpf", "rate vs k/ipt"), Some(-4.0));
        assert_eq!(found("azure/ebpf", "CPU vs k/ipt"), Some(5.7));
        assert_eq!(found("azure/ebpf", "rate vs limit"), Some(0.0));
        // The reference against itself, the limit against itself: not ratios.
        assert_eq!(found("kubenet/iptables", "rate vs k/ipt"), None);
        assert_eq!(found("kubenet/iptables", "rate vs limit"), Some(6.7));
        assert_eq!(found("limit", "rate vs limit"), None);
        assert_eq!(found("limit", "rate vs k/ipt"), Some(0.0));
        assert_eq!(comparison.changes.len(), 6);
        assert_eq!(comparison.unpaired_rows, 1, "azure/iptables ran once");
        let beyond: Vec<_> = comparison.beyond(4.5).iter().map(|c| c.ratio).collect();
        assert_eq!(beyond, ["CPU vs k/ipt", "rate vs limit"]);
        let text = comparison.render(5.0);
        assert!(
            text.contains("6 ratios compared, 4 within ±5 %, 2 beyond"),
            "{text}"
        );
        assert!(text.contains("rr pod→pod (2 nodes)"), "{text}");
        assert!(text.contains("1 rows measured in one run only"), "{text}");
    }

    #[test]
    fn a_file_that_is_not_a_report_is_named() {
        let err =
            compare(&json!({ "date": "A" }), &json!({ "results": [] })).expect_err("no results");
        assert!(
            err.to_string().contains("before file has no `results`"),
            "{err}"
        );
    }
}
