//! Running external commands with the command line shown and failures explained.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Runs `cmd` with inherited stdio, printing it first; fails naming the command and its
/// exit status.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {}", display(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its stdout, or `None` if it could not start or failed.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The command line as a shell user would type it.
pub fn display(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), v?.to_string_lossy())))
        .collect();
    parts.push(cmd.get_program().to_string_lossy().into_owned());
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Whether this process runs as root (uid 0).
pub fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|uid| uid.trim() == "0")
}

/// Whether `program` can be found on PATH.
pub fn on_path(program: &str) -> bool {
    output(Command::new("sh").args(["-c", &format!("command -v {program}")])).is_some()
}

/// Totals over the `test result:` lines of a `cargo test` run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TestTotals {
    pub passed: u64,
    pub failed: u64,
}

/// Runs `cargo test` (as `cmd`), echoing its stdout while adding up the passed and
/// failed counts of every test binary; fails like [`run`] if the tests fail.
pub fn run_counting_tests(cmd: &mut Command) -> Result<TestTotals> {
    eprintln!("+ {}", display(cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    let mut totals = TestTotals::default();
    let stdout = child.stdout.take().context("cargo test has no stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some((passed, failed)) = parse_test_result(&line) {
            totals.passed += passed;
            totals.failed += failed;
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!(
            "`{}` failed ({status}): {} passed, {} failed",
            display(cmd),
            totals.passed,
            totals.failed
        );
    }
    Ok(totals)
}

/// `test result: ok. 4 passed; 0 failed; 0 ignored; …` → (4, 0).
pub fn parse_test_result(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("test result: ")?;
    let count = |word: &str| -> Option<u64> {
        rest.split(';')
            .find_map(|part| {
                part.trim()
                    .trim_start_matches("ok. ")
                    .trim_start_matches("FAILED. ")
                    .strip_suffix(word)
            })
            .and_then(|n| n.trim().parse().ok())
    };
    Some((count(" passed")?, count(" failed")?))
}

#[cfg(test)]
mod tests {
    use super::parse_test_result;

    #[test]
    fn reads_cargo_test_result_lines() {
        assert_eq!(
            parse_test_result("test result: ok. 60 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s"),
            Some((60, 0))
        );
        assert_eq!(
            parse_test_result(
                "test result: FAILED. 5 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out"
            ),
            Some((5, 1))
        );
        assert_eq!(parse_test_result("running 6 tests"), None);
    }
}
