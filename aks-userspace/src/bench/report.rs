//! What a benchmark run produced, and its three forms: the terminal table, JSON, CSV.
//! Every ratio reads "higher is better": a rate is divided by the reference's, a cost
//! divides the reference's (so 1.3× on CPU per GB means 1.3 times less CPU).

use std::fmt::Write as _;

use anyhow::Result;
use serde::Serialize;

use super::policy_sweep::PolicyPoint;
use super::sweep::SweepPoint;
use super::workloads::View;
use crate::table::Table;

/// What is measured, per cell and view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// TCP stream pod → pod on another node (iperf3).
    Stream,
    /// Request/response pod → pod on another node: node datapath twice, and the fabric.
    RrPodToPod,
    /// Request/response between two pods of one node: the node datapath alone.
    RrSameNode,
    /// Request/response node → node through the VNet: the fabric (and the nodes' uplink
    /// programs or rules).
    RrNodeToNode,
    /// New connections to the internet host (through SNAT), one at a time.
    ConnectSnat,
    /// The same from several client threads at once.
    ConnectSnatConcurrent,
    /// New connections to a ClusterIP, one at a time.
    ConnectService,
    /// The same from several client threads at once.
    ConnectServiceConcurrent,
}

impl Workload {
    pub const ALL: [Workload; 8] = [
        Self::Stream,
        Self::RrPodToPod,
        Self::RrSameNode,
        Self::RrNodeToNode,
        Self::ConnectSnat,
        Self::ConnectSnatConcurrent,
        Self::ConnectService,
        Self::ConnectServiceConcurrent,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Stream => "stream pod→pod",
            Self::RrPodToPod => "rr pod→pod (2 nodes)",
            Self::RrSameNode => "rr pod→pod (same node)",
            Self::RrNodeToNode => "rr node→node (fabric)",
            Self::ConnectSnat => "connect SNAT 1-by-1",
            Self::ConnectSnatConcurrent => "connect SNAT ×4",
            Self::ConnectService => "connect ClusterIP 1-by-1",
            Self::ConnectServiceConcurrent => "connect ClusterIP ×4",
        }
    }

    /// The name in JSON and on the command line (`--workloads`).
    pub fn key(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::RrPodToPod => "rr-pod-to-pod",
            Self::RrSameNode => "rr-same-node",
            Self::RrNodeToNode => "rr-node-to-node",
            Self::ConnectSnat => "connect-snat",
            Self::ConnectSnatConcurrent => "connect-snat-concurrent",
            Self::ConnectService => "connect-service",
            Self::ConnectServiceConcurrent => "connect-service-concurrent",
        }
    }

    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.key() == key)
    }

    pub fn unit(self) -> &'static str {
        match self {
            Self::Stream => "Gbit/s",
            Self::RrPodToPod | Self::RrSameNode | Self::RrNodeToNode => "trans/s",
            _ => "conn/s",
        }
    }

    /// What CPU time is reported per, and the factor from the workload's unit of work
    /// (bytes, transactions, connections) to it.
    pub fn cost_unit(self) -> (&'static str, f64) {
        match self {
            Self::Stream => ("CPU-s/GB", 1e9),
            Self::RrPodToPod | Self::RrSameNode | Self::RrNodeToNode => ("CPU-s/10k trans", 1e4),
            _ => ("CPU-s/10k conn", 1e4),
        }
    }

    pub fn is_request_response(self) -> bool {
        matches!(
            self,
            Self::RrPodToPod | Self::RrSameNode | Self::RrNodeToNode
        )
    }
}

/// The middle and the spread of the rounds' values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(samples: &[f64]) -> Option<Self> {
        let finite: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
        Some(Self {
            median: super::stats::median(&finite)?,
            min: finite.iter().copied().fold(f64::INFINITY, f64::min),
            max: finite.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }
}

/// One workload of one cell in one view: every round's values and their summaries.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CellResult {
    pub workload: Workload,
    pub view: View,
    pub cell: String,
    pub unit: &'static str,
    pub rate_samples: Vec<f64>,
    pub rate: Option<Summary>,
    /// Request/response round trips: every round's p50 and p99, µs.
    pub p50_us: Option<Summary>,
    pub p99_us: Option<Summary>,
    pub cost_unit: &'static str,
    pub cost_samples: Vec<f64>,
    /// CPU seconds per `cost_unit`.
    pub cost: Option<Summary>,
    /// Mean nanoseconds per BPF program run (one packet at one hook) over the rounds.
    pub bpf_ns_per_run: Option<Summary>,
    /// The rate against kubenet/iptables' (higher is better): one ratio per round, of
    /// measurements taken side by side, and their median and spread.
    pub vs_kubenet_iptables: Option<Summary>,
    /// The rate against the limit cell's, the same way.
    pub vs_limit: Option<Summary>,
    /// kubenet/iptables' CPU cost divided by this cell's (higher is better), per round.
    pub cost_vs_kubenet_iptables: Option<Summary>,
    /// Why numbers are missing, or what went wrong in some round.
    pub note: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    /// The CPU the datapath-cost view pins every thread to.
    pub pinned_cpu: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub quick: bool,
    pub rounds: usize,
    pub duration_seconds: f64,
    /// Slices of each round (every cell in turn in each; stream uncut).
    pub slices: usize,
    pub max_connections_per_round: usize,
    pub concurrency: usize,
    pub sweep_services: Vec<usize>,
    pub sweep_connections_per_round: usize,
    /// Rule counts of the policy sweep.
    pub policy_rules: Vec<usize>,
    /// Whether the VNet fabric kept conntrack on forwarded traffic (`--fabric
    /// stateful`: the old fabric, for comparison) or not (the default).
    pub fabric: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BenchReport {
    /// UTC, `YYYY-MM-DD HH:MM UTC`.
    pub date: String,
    pub machine: Machine,
    pub settings: Settings,
    pub cells: Vec<String>,
    pub results: Vec<CellResult>,
    pub sweep: Vec<SweepPoint>,
    /// The policy sweep: first packet and connection rate against the rule count.
    pub policy: Vec<PolicyPoint>,
    pub elapsed_seconds: f64,
}

pub fn number(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else if value >= 0.1 {
        format!("{value:.2}")
    } else {
        format!("{value:.4}")
    }
}

/// A ratio's median over the rounds and its spread: `1.42× (1.38–1.47)`.
fn ratio(value: Option<Summary>) -> String {
    value.map_or_else(
        || "-".to_owned(),
        |r| format!("{:.2}× ({:.2}–{:.2})", r.median, r.min, r.max),
    )
}

/// A ratio's median alone.
fn ratio_median(value: Option<Summary>) -> String {
    value.map_or_else(|| "-".to_owned(), |r| format!("{:.2}×", r.median))
}

fn spread(s: Option<Summary>) -> String {
    s.map_or_else(
        || "-".to_owned(),
        |s| format!("{} ({}–{})", number(s.median), number(s.min), number(s.max)),
    )
}

/// A value, or `-` where there is none.
fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), number)
}

fn median(s: Option<Summary>) -> String {
    s.map_or_else(|| "-".to_owned(), |s| number(s.median))
}

/// A CSV field: six decimals, empty where there is no value.
fn fixed(v: Option<f64>) -> String {
    v.map_or_else(String::new, |v| format!("{v:.6}"))
}

fn fixed_median(s: Option<Summary>) -> String {
    fixed(s.map(|s| s.median))
}

/// One CSV record; the field names are the header. A kind leaves empty what it has no
/// value for.
#[derive(Default, Serialize)]
struct CsvRecord<'a> {
    kind: &'a str,
    workload: &'a str,
    view: &'a str,
    cell: &'a str,
    services: String,
    rules: String,
    unit: &'a str,
    median: String,
    min: String,
    max: String,
    vs_kubenet_iptables: String,
    vs_kubenet_iptables_min: String,
    vs_kubenet_iptables_max: String,
    vs_limit: String,
    p50_us: String,
    p99_us: String,
    cost_unit: &'a str,
    cost: String,
    cost_vs_kubenet_iptables: String,
    bpf_ns_per_run: String,
    program_one_more_ms: String,
    samples: String,
    note: &'a str,
}

impl CsvRecord<'_> {
    /// A record whose rate columns (median, min, max) are filled from `rate`.
    fn with_rate(rate: Option<Summary>) -> Self {
        Self {
            median: fixed_median(rate),
            min: fixed(rate.map(|s| s.min)),
            max: fixed(rate.map(|s| s.max)),
            ..Self::default()
        }
    }
}

impl BenchReport {
    /// The human tables: every workload per view and cell, then the sweep.
    pub fn render(&self) -> String {
        let mut out = format!(
            "aksnet bench, {}: {}, {} cores, {:.0} GiB, kernel {}\n{} rounds of {}s per workload, view and cell; medians (min–max over rounds); each round {} slice(s) per cell, cells in turn; ratios are per round, side by side, then their median (min–max), higher-is-better; fabric {}; pinned view: every thread on CPU {}\n",
            self.date,
            self.machine.cpu_model,
            self.machine.cores,
            self.machine.memory_gib,
            self.machine.kernel,
            self.settings.rounds,
            self.settings.duration_seconds,
            self.settings.slices,
            self.settings.fabric,
            self.machine.pinned_cpu,
        );
        let mut table = Table::new(&[
            "WORKLOAD",
            "VIEW",
            "CELL",
            ">RATE (MIN–MAX)",
            "UNIT",
            ">VS K/IPT (MIN–MAX)",
            ">VS LIMIT",
            ">P50 µs",
            ">CPU COST",
            "COST UNIT",
            ">CPU VS K/IPT",
            ">BPF ns/run",
            "NOTE",
        ]);
        for r in &self.results {
            table.row(vec![
                r.workload.name().to_owned(),
                r.view.name().to_owned(),
                r.cell.clone(),
                spread(r.rate),
                r.unit.to_owned(),
                ratio(r.vs_kubenet_iptables),
                ratio_median(r.vs_limit),
                median(r.p50_us),
                spread(r.cost),
                r.cost_unit.to_owned(),
                ratio_median(r.cost_vs_kubenet_iptables),
                median(r.bpf_ns_per_run),
                r.note.clone().unwrap_or_default(),
            ]);
        }
        let _ = write!(out, "{table}");
        if !self.sweep.is_empty() {
            let mut sweep = Table::new(&[
                "SERVICE SWEEP",
                ">SERVICES",
                ">CONN/S USER",
                ">CONN/S PINNED (MIN–MAX)",
                ">FIRST PACKET P50 µs",
                ">P99 µs",
                ">PROGRAM ONE MORE ms",
                "NOTE",
            ]);
            for p in &self.sweep {
                sweep.row(vec![
                    p.cell.clone(),
                    p.services.to_string(),
                    median(p.connect_user),
                    spread(p.connect_pinned),
                    opt(p.first_packet_p50_us),
                    opt(p.first_packet_p99_us),
                    opt(p.program_one_more_ms),
                    p.note.clone().unwrap_or_default(),
                ]);
            }
            let _ = write!(out, "\n{sweep}");
        }
        if !self.policy.is_empty() {
            let mut policy = Table::new(&[
                "POLICY SWEEP",
                "ENGINE",
                ">RULES",
                ">CONN/S USER",
                ">CONN/S PINNED (MIN–MAX)",
                ">FIRST PACKET P50 µs",
                ">P99 µs",
            ]);
            for p in &self.policy {
                policy.row(vec![
                    p.cell.clone(),
                    p.engine.clone(),
                    p.rules.to_string(),
                    median(p.connect_user),
                    spread(p.connect_pinned),
                    opt(p.first_packet_p50_us),
                    opt(p.first_packet_p99_us),
                ]);
            }
            let _ = write!(out, "\n{policy}");
        }
        out
    }

    /// One record per cell result, per sweep point and per policy-sweep point, with a
    /// `kind` column telling which (a policy point's rule count is in `services`' place:
    /// `rules`).
    pub fn to_csv(&self) -> Result<Vec<u8>> {
        let mut csv = csv::Writer::from_writer(Vec::new());
        for r in &self.results {
            let samples: Vec<String> = r.rate_samples.iter().map(|s| format!("{s:.6}")).collect();
            csv.serialize(CsvRecord {
                kind: "cell",
                workload: r.workload.name(),
                view: r.view.name(),
                cell: &r.cell,
                unit: r.unit,
                vs_kubenet_iptables: fixed_median(r.vs_kubenet_iptables),
                vs_kubenet_iptables_min: fixed(r.vs_kubenet_iptables.map(|s| s.min)),
                vs_kubenet_iptables_max: fixed(r.vs_kubenet_iptables.map(|s| s.max)),
                vs_limit: fixed_median(r.vs_limit),
                p50_us: fixed_median(r.p50_us),
                p99_us: fixed_median(r.p99_us),
                cost_unit: r.cost_unit,
                cost: fixed_median(r.cost),
                cost_vs_kubenet_iptables: fixed_median(r.cost_vs_kubenet_iptables),
                bpf_ns_per_run: fixed_median(r.bpf_ns_per_run),
                samples: samples.join(" "),
                note: r.note.as_deref().unwrap_or(""),
                ..CsvRecord::with_rate(r.rate)
            })?;
        }
        for p in &self.sweep {
            csv.serialize(CsvRecord {
                kind: "sweep",
                workload: "connect ClusterIP 1-by-1",
                view: "pinned",
                cell: &p.cell,
                services: p.services.to_string(),
                unit: "conn/s",
                p50_us: fixed(p.first_packet_p50_us),
                p99_us: fixed(p.first_packet_p99_us),
                program_one_more_ms: fixed(p.program_one_more_ms),
                note: p.note.as_deref().unwrap_or(""),
                ..CsvRecord::with_rate(p.connect_pinned)
            })?;
        }
        for p in &self.policy {
            csv.serialize(CsvRecord {
                kind: "policy",
                workload: "connect pod to pod 1-by-1",
                view: "pinned",
                cell: &p.cell,
                rules: p.rules.to_string(),
                unit: "conn/s",
                p50_us: fixed(p.first_packet_p50_us),
                p99_us: fixed(p.first_packet_p99_us),
                note: &format!("engine {}", p.engine),
                ..CsvRecord::with_rate(p.connect_pinned)
            })?;
        }
        Ok(csv.into_inner().map_err(|e| e.into_error())?)
    }

    /// The rate median of `workload` in `view` for `cell`, if measured.
    pub fn median(&self, workload: Workload, view: View, cell: &str) -> Option<f64> {
        self.results
            .iter()
            .find(|r| r.workload == workload && r.view == view && r.cell == cell)
            .and_then(|r| r.rate)
            .map(|s| s.median)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_keep_the_spread_and_skip_what_was_not_measured() {
        let s = Summary::of(&[3.0, f64::NAN, 1.0, 2.0]).expect("three values");
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Summary::of(&[f64::NAN]), None);
    }

    #[test]
    fn cost_units_turn_work_into_the_reported_unit() {
        assert_eq!(Workload::Stream.cost_unit(), ("CPU-s/GB", 1e9));
        assert_eq!(Workload::ConnectSnat.cost_unit().1, 1e4);
        assert!(Workload::RrSameNode.is_request_response());
        assert!(!Workload::ConnectService.is_request_response());
    }

    #[test]
    fn workload_keys_are_their_json_names() {
        for w in Workload::ALL {
            assert_eq!(serde_json::to_value(w).expect("json"), w.key());
            assert_eq!(Workload::from_key(w.key()), Some(w));
        }
        assert_eq!(Workload::from_key("rr"), None);
    }

    #[test]
    fn every_csv_record_has_the_headers_fields_in_its_place() {
        let summary = Summary::of(&[10.0, 12.0, 11.0]);
        let report = BenchReport {
            date: "2026-12-08 00:00 UTC".to_owned(),
            machine: Machine {
                cpu_model: "cpu".to_owned(),
                cores: 2,
                memory_gib: 24.0,
                kernel: "6.18".to_owned(),
                pinned_cpu: 1,
            },
            settings: Settings {
                quick: true,
                rounds: 3,
                duration_seconds: 1.0,
                slices: 1,
                max_connections_per_round: 10,
                concurrency: 4,
                sweep_services: vec![10],
                sweep_connections_per_round: 10,
                policy_rules: vec![10],
                fabric: "forwarder".to_owned(),
            },
            cells: vec![],
            results: vec![],
            sweep: vec![SweepPoint {
                cell: "kubenet/ebpf".to_owned(),
                services: 10,
                connect_user: summary,
                connect_pinned: summary,
                first_packet_p50_us: Some(42.5),
                first_packet_p99_us: None,
                program_one_more_ms: Some(0.5),
                rounds: vec![],
                note: None,
            }],
            policy: vec![PolicyPoint {
                cell: "azure/ebpf".to_owned(),
                engine: "cilium".to_owned(),
                rules: 1000,
                connect_user: None,
                connect_pinned: summary,
                first_packet_p50_us: Some(40.0),
                first_packet_p99_us: Some(80.0),
                rounds: vec![],
            }],
            elapsed_seconds: 1.0,
        };
        let bytes = report.to_csv().expect("csv");
        let mut reader = csv::Reader::from_reader(bytes.as_slice());
        let headers = reader.headers().expect("a header").clone();
        assert_eq!(headers.len(), 23);
        assert_eq!(&headers[0], "kind");
        let records: Vec<csv::StringRecord> =
            reader.records().map(|r| r.expect("a record")).collect();
        let field = |record: &csv::StringRecord, name: &str| {
            let at = headers.iter().position(|h| h == name).expect(name);
            record[at].to_owned()
        };
        assert_eq!(records.len(), 2);
        let (sweep, policy) = (&records[0], &records[1]);
        assert_eq!(field(sweep, "kind"), "sweep");
        assert_eq!(field(sweep, "services"), "10");
        assert_eq!(field(sweep, "rules"), "");
        assert_eq!(field(sweep, "median"), "11.000000");
        assert_eq!(field(sweep, "min"), "10.000000");
        assert_eq!(field(sweep, "p99_us"), "");
        assert_eq!(field(sweep, "program_one_more_ms"), "0.500000");
        assert_eq!(field(policy, "kind"), "policy");
        assert_eq!(field(policy, "services"), "");
        assert_eq!(field(policy, "rules"), "1000");
        assert_eq!(field(policy, "max"), "12.000000");
        assert_eq!(field(policy, "note"), "engine cilium");
    }

    #[test]
    fn ratios_print_their_median_and_spread() {
        let s = Summary::of(&[1.5, 1.42, 1.38]);
        assert_eq!(ratio(s), "1.42× (1.38–1.50)");
        assert_eq!(ratio_median(s), "1.42×");
        assert_eq!(ratio(None), "-");
    }
}
