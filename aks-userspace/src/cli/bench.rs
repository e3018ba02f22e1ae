//! `aksnet bench`: run the benchmark, print the table, write JSON, CSV and the plot.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};

use aks_userspace::bench::{self, interrupt, BenchOptions};

/// What the command line asked for.
pub struct BenchArgs {
    pub quick: bool,
    pub rounds: Option<usize>,
    pub duration: Option<f64>,
    pub sweep: Option<Vec<usize>>,
    pub prefix: String,
    pub json: Option<PathBuf>,
    pub csv: Option<PathBuf>,
    pub plot: Option<PathBuf>,
}

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    super::require_root("aksnet bench")?;
    let mut options = if args.quick {
        BenchOptions::quick(&args.prefix)
    } else {
        BenchOptions::full(&args.prefix)
    };
    if let Some(rounds) = args.rounds {
        options.rounds = rounds;
    }
    if let Some(seconds) = args.duration {
        anyhow::ensure!(
            seconds.is_finite() && seconds > 0.0,
            "--duration {seconds}: give seconds, e.g. 3 or 0.5"
        );
        options.duration = Duration::from_secs_f64(seconds);
    }
    if let Some(sweep) = args.sweep {
        options.sweep_services = sweep;
    }
    options.validate()?;
    // From here Ctrl-C and SIGTERM end the run through the cells' guards.
    interrupt::install()?;
    eprintln!(
        "aksnet bench: {} cells × {} rounds × {:.1}s per workload{}; clusters named {}*",
        bench::cells::CellKind::ALL.len(),
        options.rounds,
        options.duration.as_secs_f64(),
        if options.sweep_services.is_empty() {
            String::new()
        } else {
            format!(", service sweep {:?}", options.sweep_services)
        },
        options.prefix
    );
    let report = bench::run(&options, &|line| eprintln!("bench: {line}"))?;
    print!("{}", report.render());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.csv {
        std::fs::write(path, report.to_csv())
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.plot {
        bench::plot::write_svg(&report, path)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
