//! The check matrix as a table for people.

use super::ProbeResult;

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
