//! What a benchmark run produced, and its three forms: the terminal table, JSON, CSV.
//! Every ratio reads "higher is better": a rate is divided by the reference's, a
//! latency divides the reference's (so 1.3× on p99 means 1.3 times lower latency).

use std::fmt::Write as _;

use serde::Serialize;

use super::sweep::SweepPoint;
use crate::table::Table;

/// What is measured, per cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// TCP stream pod → pod on another node (iperf3).
    Stream,
    /// TCP request/response: transactions per second.
    RrRate,
    /// TCP request/response: round-trip latency p50.
    RrP50,
    /// TCP request/response: round-trip latency p99.
    RrP99,
    /// New connections per second to the internet host (through SNAT).
    ConnectInternet,
    /// New connections per second to a ClusterIP.
    ConnectService,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Self::Stream,
        Self::RrRate,
        Self::RrP50,
        Self::RrP99,
        Self::ConnectInternet,
        Self::ConnectService,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Stream => "stream pod→pod",
            Self::RrRate => "request/response",
            Self::RrP50 => "rr latency p50",
            Self::RrP99 => "rr latency p99",
            Self::ConnectInternet => "connect internet (SNAT)",
            Self::ConnectService => "connect ClusterIP",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Self::Stream => "Gbit/s",
            Self::RrRate => "trans/s",
            Self::RrP50 | Self::RrP99 => "µs",
            Self::ConnectInternet | Self::ConnectService => "conn/s",
        }
    }

    pub fn higher_is_better(self) -> bool {
        !matches!(self, Self::RrP50 | Self::RrP99)
    }

    /// "higher is better" ratio of `value` against `reference`.
    pub fn ratio(self, value: f64, reference: f64) -> Option<f64> {
        let ratio = if self.higher_is_better() {
            value / reference
        } else {
            reference / value
        };
        ratio.is_finite().then_some(ratio)
    }
}

/// One metric of one cell: the value of every round and their median.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CellResult {
    pub metric: Metric,
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub cell: String,
    pub samples: Vec<f64>,
    pub median: Option<f64>,
    /// Median against kubenet/iptables' median, higher is better.
    pub vs_kubenet_iptables: Option<f64>,
    /// Median against the limit cell's median, higher is better.
    pub vs_limit: Option<f64>,
    /// Why numbers are missing, or what went wrong in some round.
    pub note: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub quick: bool,
    pub rounds: usize,
    pub duration_seconds: f64,
    pub max_connections_per_round: usize,
    pub sweep_services: Vec<usize>,
    pub sweep_connections_per_round: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BenchReport {
    /// UTC, as `date -u` prints it.
    pub date: String,
    pub machine: Machine,
    pub settings: Settings,
    pub cells: Vec<String>,
    pub results: Vec<CellResult>,
    pub sweep: Vec<SweepPoint>,
    pub elapsed_seconds: f64,
}

fn number(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}×"))
}

impl BenchReport {
    /// The human tables: every metric per cell, then the sweep.
    pub fn render(&self) -> String {
        let mut out = format!(
            "aksnet bench, {}: {} cores, {:.0} GiB, kernel {}; {} rounds of {}s per cell, medians; ratios higher-is-better\n",
            self.date,
            self.machine.cores,
            self.machine.memory_gib,
            self.machine.kernel,
            self.settings.rounds,
            self.settings.duration_seconds
        );
        let mut table = Table::new(&[
            "WORKLOAD",
            "CELL",
            ">MEDIAN",
            "UNIT",
            ">VS KUBENET/IPTABLES",
            ">VS LIMIT",
            "NOTE",
        ]);
        for r in &self.results {
            table.row(vec![
                r.metric.name().to_owned(),
                r.cell.clone(),
                r.median.map_or_else(|| "-".to_owned(), number),
                r.unit.to_owned(),
                ratio(r.vs_kubenet_iptables),
                ratio(r.vs_limit),
                r.note.clone().unwrap_or_default(),
            ]);
        }
        let _ = write!(out, "{table}");
        if !self.sweep.is_empty() {
            let mut sweep = Table::new(&[
                "SERVICE SWEEP",
                ">SERVICES",
                ">FIRST PACKET P50 µs",
                ">P99 µs",
                ">PROGRAM ONE MORE ms",
                "NOTE",
            ]);
            let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), number);
            for p in &self.sweep {
                sweep.row(vec![
                    p.cell.clone(),
                    p.services.to_string(),
                    opt(p.first_packet_p50_us),
                    opt(p.first_packet_p99_us),
                    opt(p.program_one_more_ms),
                    p.note.clone().unwrap_or_default(),
                ]);
            }
            let _ = write!(out, "\n{sweep}");
        }
        out
    }

    /// One line per cell result and per sweep point, with a `kind` column telling which.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "kind,workload,cell,services,unit,median,vs_kubenet_iptables,vs_limit,p50_us,p99_us,program_one_more_ms,samples,note\n",
        );
        let opt = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v:.6}"));
        let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        for r in &self.results {
            let samples: Vec<String> = r.samples.iter().map(|s| format!("{s:.6}")).collect();
            let _ = writeln!(
                out,
                "cell,{},{},,{},{},{},{},,,,{},{}",
                quote(r.metric.name()),
                r.cell,
                r.unit,
                opt(r.median),
                opt(r.vs_kubenet_iptables),
                opt(r.vs_limit),
                quote(&samples.join(" ")),
                quote(r.note.as_deref().unwrap_or(""))
            );
        }
        for p in &self.sweep {
            let _ = writeln!(
                out,
                "sweep,service sweep,{},{},µs,,,,{},{},{},,{}",
                p.cell,
                p.services,
                opt(p.first_packet_p50_us),
                opt(p.first_packet_p99_us),
                opt(p.program_one_more_ms),
                quote(p.note.as_deref().unwrap_or(""))
            );
        }
        out
    }

    /// The median of `metric` for `cell`, if measured.
    pub fn median(&self, metric: Metric, cell: &str) -> Option<f64> {
        self.results
            .iter()
            .find(|r| r.metric == metric && r.cell == cell)
            .and_then(|r| r.median)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_read_higher_is_better() {
        assert_eq!(Metric::Stream.ratio(12.0, 10.0), Some(1.2));
        assert_eq!(Metric::RrP99.ratio(50.0, 100.0), Some(2.0));
        assert_eq!(Metric::Stream.ratio(1.0, 0.0), None);
    }
}
