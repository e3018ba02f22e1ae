//! The check as tables for people.

use super::{verdict, CheckRow, ProbeResult, ServiceCheck, ServiceProbeResult, CHECK_PORT};
use crate::table::Table;

fn finish(table: Table) -> String {
    let mut out = table.to_string();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// The destination, with the port and protocol when they are not the check's default.
fn destination(r: &ProbeResult) -> String {
    let mut text = format!("{} {}", r.destination, r.destination_address);
    if r.port != CHECK_PORT || r.protocol != crate::model::Protocol::Tcp {
        text.push_str(&format!(":{}/{}", r.port, r.protocol));
    }
    text
}

/// One line per probe: path, source, destination, what the model expects, what was
/// observed, and the verdict.
pub fn render_checked(rows: &[CheckRow]) -> String {
    let mut table = Table::new(&[
        "PATH",
        "SOURCE",
        "DESTINATION",
        "EXPECTED",
        "OBSERVED",
        "VERDICT",
    ]);
    for row in rows {
        let r = &row.observed;
        table.row(vec![
            r.path.clone(),
            format!("{} {}", r.source, r.source_address),
            destination(r),
            row.expected.to_string(),
            verdict::observed(r),
            row.verdict.to_string(),
        ]);
    }
    finish(table)
}

/// One line per probe, without expectations (probes run outside a cluster, in tests).
pub fn render_table(results: &[ProbeResult]) -> String {
    let mut table = Table::new(&["PATH", "SOURCE", "DESTINATION", "OBSERVED"]);
    for r in results {
        table.row(vec![
            r.path.clone(),
            format!("{} {}", r.source, r.source_address),
            destination(r),
            verdict::observed(r),
        ]);
    }
    finish(table)
}

/// One line per service backend: the service, the client, how many of the connections
/// the backend answered, the source addresses it saw, what it should see, the verdict;
/// then a line for a service whose connections were not all answered.
pub fn render_service_checks(checks: &[ServiceCheck]) -> String {
    let mut table = Table::new(&[
        "SERVICE",
        "CLIENT",
        "BACKEND",
        ">ANSWERS",
        ">SHARE",
        "BACKEND SAW",
        "EXPECTED",
        "VERDICT",
    ]);
    for check in checks {
        let r = &check.observed;
        let (service, client) = service_and_client(r);
        for (b, judged) in r.backends.iter().zip(&check.backend_checks) {
            let saw: Vec<String> = b.seen_sources.iter().map(|a| a.to_string()).collect();
            table.row(vec![
                service.clone(),
                client.clone(),
                format!("{} {}", b.pod, b.address),
                format!("{}/{}", b.answers, r.attempts),
                share(b.answers, r.attempts),
                if saw.is_empty() {
                    "-".to_owned()
                } else {
                    saw.join(", ")
                },
                judged.expected.to_string(),
                judged.verdict.to_string(),
            ]);
        }
        if r.answered < r.attempts {
            table.row(vec![
                service,
                client,
                "(all backends)".into(),
                format!("{}/{}", r.answered, r.attempts),
                share(r.answered, r.attempts),
                "-".into(),
                "every connection answered".into(),
                check.verdict.to_string(),
            ]);
        }
    }
    finish(table)
}

/// `check --frontends`: one row per frontend and client.
pub fn render_frontend_checks(checks: &[super::FrontendCheck]) -> String {
    let mut table = Table::new(&[
        "FRONTEND",
        "POLICY",
        "CLIENT",
        ">ANSWERS",
        "BACKEND SAW",
        "EXPECTED",
        "VERDICT",
    ]);
    for c in checks {
        let saw: Vec<String> = c.seen_sources.iter().map(|a| a.to_string()).collect();
        table.row(vec![
            format!("{} {}", c.service, c.frontend),
            format!("{:?}", c.policy),
            format!("{} {}", c.client, c.client_address),
            format!("{}/{}", c.answered, c.attempts),
            if saw.is_empty() {
                "-".into()
            } else {
                saw.join(", ")
            },
            c.expected.to_string(),
            c.verdict.to_string(),
        ]);
    }
    finish(table)
}

fn service_and_client(r: &ServiceProbeResult) -> (String, String) {
    (
        format!("{} {}:{}/{}", r.service, r.cluster_ip, r.port, r.protocol),
        format!("{} {}", r.client, r.client_address),
    )
}

fn share(part: usize, whole: usize) -> String {
    if whole == 0 {
        "-".to_owned()
    } else {
        format!("{:.0}%", 100.0 * part as f64 / whole as f64)
    }
}
