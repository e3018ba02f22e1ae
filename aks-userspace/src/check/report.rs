//! The check matrix as a table for people.

use super::{ProbeResult, ServiceProbeResult};
use crate::table::Table;

/// One line per probe: path, source, destination, whether TCP connected, and what the
/// destination saw as the source address (and whose address that is).
pub fn render_table(results: &[ProbeResult]) -> String {
    let header = ["PATH", "SOURCE", "DESTINATION", "TCP", "DESTINATION SAW"];
    let rows: Vec<[String; 5]> = results
        .iter()
        .map(|r| {
            let saw = match (&r.seen_source, &r.seen_as) {
                (Some(ip), Some(who)) if *ip == r.source_address => format!("{ip} (source itself)"),
                (Some(ip), Some(who)) => format!("{ip} ({who})"),
                (Some(ip), None) => ip.to_string(),
                (None, _) => "-".to_owned(),
            };
            [
                r.path.clone(),
                format!("{} {}", r.source, r.source_address),
                format!("{} {}", r.destination, r.destination_address),
                if r.connected {
                    "ok".to_owned()
                } else {
                    format!("FAIL ({})", r.error.as_deref().unwrap_or("no answer"))
                },
                saw,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(&header.map(str::to_owned));
    for row in &rows {
        line(row);
    }
    out
}

/// One line per service backend: the service, the client, and how many of the
/// connections each backend answered (and which source address it saw).
pub fn render_service_table(results: &[ServiceProbeResult]) -> String {
    let mut table = Table::new(&[
        "SERVICE",
        "CLIENT",
        "BACKEND",
        ">ANSWERS",
        ">SHARE",
        "BACKEND SAW",
    ]);
    for r in results {
        let service = format!("{} {}:{}/{}", r.service, r.cluster_ip, r.port, r.protocol);
        let client = format!("{} {}", r.client, r.client_address);
        for b in &r.backends {
            let share = if r.attempts == 0 {
                "-".to_owned()
            } else {
                format!("{:.0}%", 100.0 * b.answers as f64 / r.attempts as f64)
            };
            let saw: Vec<String> = b.seen_sources.iter().map(|a| a.to_string()).collect();
            table.row(vec![
                service.clone(),
                client.clone(),
                format!("{} {}", b.pod, b.address),
                format!("{}/{}", b.answers, r.attempts),
                share,
                if saw.is_empty() {
                    "-".to_owned()
                } else {
                    saw.join(", ")
                },
            ]);
        }
        if let Some(error) = &r.error {
            table.row(vec![
                service,
                client,
                format!("FAIL ({error})"),
                format!("{}/{}", r.attempts - r.answered, r.attempts),
                String::new(),
                String::new(),
            ]);
        }
    }
    let mut out = table.to_string();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}
