//! `aksnet plan [FILE…] [--json]`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use aks_userspace::plan;

pub fn run(files: &[PathBuf], json: bool) -> Result<ExitCode> {
    let inputs: Vec<Option<&std::path::Path>> = if files.is_empty() {
        vec![None]
    } else {
        files.iter().map(|f| Some(f.as_path())).collect()
    };
    let mut plans = Vec::new();
    let mut exit = ExitCode::SUCCESS;
    for input in inputs {
        match super::load_plan(input)? {
            Ok(plan) => plans.push(plan),
            Err(code) => exit = code,
        }
    }
    if json {
        // One plan prints as an object, several as an array.
        let text = match plans.as_slice() {
            [one] => serde_json::to_string_pretty(one),
            many => serde_json::to_string_pretty(many),
        }
        .context("while encoding the plan as JSON")?;
        println!("{text}");
    } else {
        for (i, plan) in plans.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print!("{}", plan::render(plan));
        }
    }
    Ok(exit)
}
