//! The SVG picture of a run (plotters, SVG backend only): bars of each cell's medians
//! for request/response, connection rates and stream throughput, and the service
//! sweep's connection rate and first-packet latency against the service count.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::report::{BenchReport, Workload};
use super::workloads::View;

const WIDTH: u32 = 1500;
const HEIGHT: u32 = 900;

/// One colour per cell, in `CellKind::ALL` order (azure/ebpf, azure/iptables,
/// kubenet/ebpf, kubenet/iptables, limit).
const CELL_COLOURS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(127, 127, 127),
];

/// Writes the plot of `report` to `path` as SVG.
pub fn write_svg(report: &BenchReport, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    draw(report, &root).map_err(|e| anyhow!("drawing {}: {e}", path.display()))?;
    root.present()
        .map_err(|e| anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn draw(report: &BenchReport, root: &Area) -> DrawResult {
    root.fill(&WHITE)?;
    let title = format!(
        "aksnet bench {} ({} cores, kernel {}): medians of {} rounds",
        report.date, report.machine.cores, report.machine.kernel, report.settings.rounds
    );
    let root = root.titled(&title, ("sans-serif", 22))?;
    let panels = root.split_evenly((2, 3));
    let both = |w| [(w, View::User), (w, View::Datapath)];
    bars(
        report,
        &panels[0],
        &both(Workload::RrPodToPod),
        "request/response pod → pod (trans/s): user | pinned",
    )?;
    bars(
        report,
        &panels[1],
        &[
            (Workload::ConnectSnat, View::Datapath),
            (Workload::ConnectSnatConcurrent, View::Datapath),
        ],
        "new conn/s through SNAT, pinned: 1-by-1 | ×4",
    )?;
    bars(
        report,
        &panels[2],
        &[
            (Workload::ConnectService, View::Datapath),
            (Workload::ConnectServiceConcurrent, View::Datapath),
        ],
        "new conn/s to a ClusterIP, pinned: 1-by-1 | ×4",
    )?;
    bars(
        report,
        &panels[3],
        &both(Workload::Stream),
        "TCP stream pod → pod (Gbit/s): user | pinned",
    )?;
    sweep(report, &panels[4], SweepValue::ConnectRate)?;
    sweep(report, &panels[5], SweepValue::FirstPacket)?;
    Ok(())
}

/// Grouped bars: one group per cell (centred on its index), one bar per metric.
fn bars(
    report: &BenchReport,
    area: &Area,
    metrics: &[(Workload, View)],
    caption: &str,
) -> DrawResult {
    let cells = &report.cells;
    let value =
        |(workload, view): (Workload, View), cell: &str| report.median(workload, view, cell);
    let top = metrics
        .iter()
        .flat_map(|&m| cells.iter().filter_map(move |c| value(m, c)))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.15;
    let n = cells.len() as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5..n - 0.5, 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(cells.len())
        .x_label_formatter(&|x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                cells.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_label_style(("sans-serif", 11))
        .draw()?;
    let width = 0.8 / metrics.len() as f64;
    for (ci, cell) in cells.iter().enumerate() {
        let colour = CELL_COLOURS[ci % CELL_COLOURS.len()];
        for (mi, &metric) in metrics.iter().enumerate() {
            let Some(v) = value(metric, cell) else {
                continue;
            };
            let left = ci as f64 - 0.4 + mi as f64 * width;
            let style = if mi == 0 {
                colour.filled()
            } else {
                colour.mix(0.45).filled()
            };
            chart.draw_series(std::iter::once(Rectangle::new(
                [(left, 0.0), (left + width * 0.92, v)],
                style,
            )))?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SweepValue {
    FirstPacket,
    ConnectRate,
}

/// The service sweep against the service count (log scale): first-packet p50 and p99,
/// or the pinned connection rate to the last service (log scale too).
fn sweep(report: &BenchReport, area: &Area, what: SweepValue) -> DrawResult {
    let points: Vec<_> = report
        .sweep
        .iter()
        .filter(|p| p.first_packet_p50_us.is_some())
        .filter(|p| what != SweepValue::ConnectRate || p.connect_pinned.is_some())
        .collect();
    let caption = match what {
        SweepValue::FirstPacket => "service sweep: first-packet latency p50, p99 (µs)",
        SweepValue::ConnectRate => "service sweep: conn/s to the last service (pinned)",
    };
    let series = |p: &super::sweep::SweepPoint| -> Vec<f64> {
        match what {
            SweepValue::FirstPacket => [p.first_packet_p50_us, p.first_packet_p99_us]
                .into_iter()
                .flatten()
                .collect(),
            SweepValue::ConnectRate => p.connect_pinned.map(|s| s.median).into_iter().collect(),
        }
    };
    let max_services = points.iter().map(|p| p.services).max().unwrap_or(10) as f64;
    let min_services = points.iter().map(|p| p.services).min().unwrap_or(1) as f64;
    let values: Vec<f64> = points.iter().flat_map(|p| series(p)).collect();
    let top = values.iter().copied().fold(0.0f64, f64::max).max(1e-3);
    let bottom = values
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .min(top);
    let x_range = (min_services / 2.0).max(1.0)..max_services * 2.0;
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60);
    let cells: Vec<String> = {
        let mut cells: Vec<String> = points.iter().map(|p| p.cell.clone()).collect();
        cells.dedup();
        cells
    };
    let colour_of = |cell: &str| {
        report
            .cells
            .iter()
            .position(|c| c == cell)
            .map_or(BLACK, |i| CELL_COLOURS[i % CELL_COLOURS.len()])
    };
    match what {
        SweepValue::FirstPacket => {
            let mut chart = builder.build_cartesian_2d(x_range.log_scale(), 0.0..top * 1.2)?;
            chart.configure_mesh().x_desc("ClusterIP services").draw()?;
            for cell in &cells {
                let colour = colour_of(cell);
                let of = |f: fn(&super::sweep::SweepPoint) -> Option<f64>| {
                    points
                        .iter()
                        .filter(|p| &p.cell == cell)
                        .filter_map(|p| Some((p.services as f64, f(p)?)))
                        .collect::<Vec<_>>()
                };
                for (data, dashed, label) in [
                    (of(|p| p.first_packet_p50_us), false, "p50"),
                    (of(|p| p.first_packet_p99_us), true, "p99"),
                ] {
                    let style = if dashed {
                        colour.mix(0.5).stroke_width(2)
                    } else {
                        colour.stroke_width(2)
                    };
                    chart
                        .draw_series(LineSeries::new(data.clone(), style))?
                        .label(format!("{cell} {label}"))
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
                    chart.draw_series(
                        data.iter()
                            .map(|&(x, y)| Circle::new((x, y), 3, colour.filled())),
                    )?;
                }
            }
            chart
                .configure_series_labels()
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .draw()?;
        }
        SweepValue::ConnectRate => {
            let y_range = (bottom / 2.0).max(1e-3)..top * 2.0;
            let mut chart = builder.build_cartesian_2d(x_range.log_scale(), y_range.log_scale())?;
            chart.configure_mesh().x_desc("ClusterIP services").draw()?;
            for cell in &cells {
                let colour = colour_of(cell);
                let data: Vec<(f64, f64)> = points
                    .iter()
                    .filter(|p| &p.cell == cell)
                    .filter_map(|p| Some((p.services as f64, p.connect_pinned?.median)))
                    .collect();
                let style = colour.stroke_width(2);
                chart
                    .draw_series(LineSeries::new(data.clone(), style))?
                    .label(cell.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
                chart.draw_series(
                    data.iter()
                        .map(|&(x, y)| Circle::new((x, y), 3, colour.filled())),
                )?;
            }
            chart
                .configure_series_labels()
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .draw()?;
        }
    }
    Ok(())
}
