//! `cargo xtask kernels`: the kernel-facing tests on the kernels people's test boxes run,
//! each booted in a VM.
//!
//! Debian's own kernels (installed by `cargo xtask setup`) boot under QEMU through
//! virtme-ng (`vng`), which shares this machine's root filesystem with the guest, so the
//! test binaries built here run there unchanged. The guest gets no network device: aksnet
//! makes its own namespaces and needs nothing outside them.
//!
//! QEMU runs without KVM: on these machines `/dev/kvm` accepts only PVM guest kernels,
//! and software emulation boots any kernel (about 16 s to a shell).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::cmd::{self, TestTotals};
use crate::setup;

/// A Debian kernel series the tests run on. Debian bumps a kernel's ABI number (and with it
/// the package name and `uname -r`) with every point release and drops the old package
/// from the archive, so the exact package is looked up when it is installed and the
/// release is read from `/boot` when it is booted, never written down here.
pub struct GuestKernel {
    /// What the README and the progress lines call it.
    pub series: &'static str,
    /// `uname -r` of this series is `<release_prefix><digits><release_suffix>`, e.g.
    /// `6.1.0-` `56` `-amd64`; Debian's package is `linux-image-<release>-unsigned`.
    pub release_prefix: &'static str,
    pub release_suffix: &'static str,
}

impl GuestKernel {
    /// The ABI/patch number of `release` when it belongs to this series (digits only
    /// between prefix and suffix, which leaves out `-cloud-amd64`, `-rt-amd64` and the
    /// like).
    fn number_of(&self, release: &str) -> Option<u64> {
        let middle = release
            .strip_prefix(self.release_prefix)?
            .strip_suffix(self.release_suffix)?;
        if middle.is_empty() || !middle.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        middle.parse().ok()
    }

    /// The newest release of this series among `releases`.
    fn newest<'a>(&self, releases: impl Iterator<Item = &'a str>) -> Option<&'a str> {
        releases
            .filter_map(|r| Some((self.number_of(r)?, r)))
            .max()
            .map(|(_, r)| r)
    }

    /// The newest installed kernel of this series: `/boot/vmlinuz-<release>` with its
    /// modules in `/lib/modules/<release>`.
    pub fn installed_release(&self) -> Option<String> {
        let names: Vec<String> = fs::read_dir("/boot")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| n.strip_prefix("vmlinuz-").map(str::to_owned))
            .filter(|r| Path::new("/lib/modules").join(r).is_dir())
            .collect();
        self.newest(names.iter().map(String::as_str))
            .map(str::to_owned)
    }

    /// The package of this series' newest release in `package_names` (apt's list).
    pub fn newest_package(&self, package_names: &[String]) -> Option<String> {
        let releases = package_names
            .iter()
            .filter_map(|p| p.strip_prefix("linux-image-")?.strip_suffix("-unsigned"));
        self.newest(releases)
            .map(|r| format!("linux-image-{r}-unsigned"))
    }
}

/// Debian 12's kernels: 6.1 (bookworm's own, no TCX) and 6.12 (bookworm-backports'
/// successor in the archive, with TCX). The host's kernel is the third tested one.
pub const GUEST_KERNELS: &[GuestKernel] = &[
    GuestKernel {
        series: "6.1",
        release_prefix: "6.1.0-",
        release_suffix: "-amd64",
    },
    GuestKernel {
        series: "6.12",
        release_prefix: "6.12.",
        release_suffix: "+deb12-amd64",
    },
];

/// The test binaries that exercise the kernel (verifier, maps, attach modes, a whole
/// cluster), as cargo `--test` patterns: the `BPF_PROG_TEST_RUN` tests (one binary or
/// several, however they are split) and the attach test with its cluster up/check/down.
pub const GUEST_TESTS: &[&str] = &["ebpf_test_run*", "tc_attach*"];

/// Set when a stop signal ended a guest: no further kernel is booted.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// A guest that has not finished after this long is stopped and counted as failed.
const GUEST_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// What the guests ran: the counts over all kernels, and what went wrong on which.
#[derive(Default)]
pub struct GuestRuns {
    pub totals: TestTotals,
    pub failures: Vec<String>,
}

impl GuestRuns {
    /// An error naming every kernel whose run failed, if any did.
    pub fn into_result(self) -> Result<()> {
        if self.failures.is_empty() {
            return Ok(());
        }
        bail!("kernel tests failed:\n{}", self.failures.join("\n"))
    }
}

/// Runs the guest tests on `series` (every kernel when `None`), with `filter` passed to
/// each test binary. Every kernel is tried even when one fails; the counts come from the
/// guests' own test output.
pub fn run(series: Option<&str>, filter: &[String]) -> Result<GuestRuns> {
    let kernels: Vec<&GuestKernel> = match series {
        None => GUEST_KERNELS.iter().collect(),
        Some(s) => {
            let found: Vec<_> = GUEST_KERNELS.iter().filter(|k| k.series == s).collect();
            if found.is_empty() {
                let known: Vec<&str> = GUEST_KERNELS.iter().map(|k| k.series).collect();
                bail!(
                    "no guest kernel {s:?}; the tested ones are {}",
                    known.join(", ")
                );
            }
            found
        }
    };
    let binaries = build_test_binaries()?;
    let mut runs = GuestRuns::default();
    for kernel in kernels {
        let Some(release) = kernel.installed_release() else {
            runs.failures.push(format!(
                "Linux {}: no /boot/vmlinuz-{}N{} with its modules is installed: \
                 `cargo xtask setup` installs Debian's newest of that series",
                kernel.series, kernel.release_prefix, kernel.release_suffix
            ));
            continue;
        };
        let (totals, outcome) = run_in_guest(kernel, &release, &binaries, filter);
        runs.totals.passed += totals.passed;
        runs.totals.failed += totals.failed;
        if let Err(e) = outcome {
            runs.failures
                .push(format!("Linux {} ({release}): {e:#}", kernel.series));
        }
        if INTERRUPTED.load(Ordering::Relaxed) {
            runs.failures
                .push("interrupted: the remaining kernels were not booted".to_owned());
            break;
        }
    }
    Ok(runs)
}

/// Builds the guest tests (and the `aksnet` binary they drive) and returns the paths of
/// the test executables, one or more per pattern.
fn build_test_binaries() -> Result<Vec<PathBuf>> {
    let mut build = crate::tasks::cargo();
    build.args([
        "test",
        "--no-run",
        "--package",
        crate::tasks::USERSPACE,
        "--message-format=json-render-diagnostics",
    ]);
    for pattern in GUEST_TESTS {
        build.args(["--test", pattern]);
    }
    eprintln!("+ {}", cmd::display(&build));
    let out = build
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{}`", cmd::display(&build)))?;
    if !out.status.success() {
        bail!("`{}` failed ({})", cmd::display(&build), out.status);
    }
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact" && message["profile"]["test"] == true {
            if let Some(exe) = message["executable"].as_str() {
                binaries.push(PathBuf::from(exe));
            }
        }
    }
    for pattern in GUEST_TESTS {
        let prefix = pattern.trim_end_matches('*');
        let matched = binaries.iter().any(|b| {
            b.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        });
        if !matched {
            bail!("no test binary matches {pattern:?}; the guest tests are named in xtask/src/kernels.rs (GUEST_TESTS)");
        }
    }
    binaries.sort();
    Ok(binaries)
}

/// What the guest writes where the host can read it after the VM is gone.
struct GuestDir {
    dir: PathBuf,
}

impl GuestDir {
    fn script(&self) -> PathBuf {
        self.dir.join("run.sh")
    }
    fn tests_log(&self) -> PathBuf {
        self.dir.join("tests.log")
    }
    fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    fn exit_status(&self, i: usize) -> PathBuf {
        self.dir.join(format!("exit.{i}"))
    }
    fn finished(&self) -> PathBuf {
        self.dir.join("finished")
    }
}

/// The guest's script: mount bpffs, run each test binary (output into `tests.log` and
/// onto the console, exit status into `exit.<i>`), then mark the run finished. vng's own
/// exit status does not carry the script's, so everything comes back through files.
fn guest_script(out: &GuestDir, binaries: &[PathBuf], filter: &[String]) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let dir = quote(&out.dir.to_string_lossy());
    let filter: Vec<String> = filter.iter().map(|f| quote(f)).collect();
    let mut script = format!(
        "#!/bin/sh\n\
         # Written by `cargo xtask kernels`; runs as root inside the VM.\n\
         out={dir}\n\
         mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || exit 1\n\
         echo \"guest: Linux $(uname -r); interfaces: $(ls /sys/class/net | tr '\\n' ' ')\"\n"
    );
    for (i, binary) in binaries.iter().enumerate() {
        let binary = quote(&binary.to_string_lossy());
        script.push_str(&format!(
            "echo \"guest: running {binary}\"\n\
             {{ {binary} {filter}; echo $? > \"$out/exit.{i}\"; }} 2>&1 | tee -a \"$out/tests.log\"\n",
            filter = filter.join(" ")
        ));
    }
    script.push_str("echo done > \"$out/finished\"\n");
    script
}

/// Boots `kernel` and runs `binaries` in it: the counts read from the guest's output, and
/// whether the run as a whole passed.
fn run_in_guest(
    kernel: &GuestKernel,
    release: &str,
    binaries: &[PathBuf],
    filter: &[String],
) -> (TestTotals, Result<()>) {
    let out = GuestDir {
        dir: crate::tasks::workspace_root()
            .join("target/kernels")
            .join(release),
    };
    let started = Instant::now();
    let booted = boot(kernel, release, &out, binaries, filter);
    let totals = read_totals(&out);
    eprintln!(
        "Linux {}: {} passed, {} failed in {:.0} s (logs in {})",
        kernel.series,
        totals.passed,
        totals.failed,
        started.elapsed().as_secs_f64(),
        out.dir.display()
    );
    let outcome = booted.and_then(|console| judge(&out, binaries, &totals, &console));
    (totals, outcome)
}

/// Counts over the `test result:` lines the guest wrote.
fn read_totals(out: &GuestDir) -> TestTotals {
    let log = fs::read_to_string(out.tests_log()).unwrap_or_default();
    let mut totals = TestTotals::default();
    for (passed, failed) in log.lines().filter_map(cmd::parse_test_result) {
        totals.passed += passed;
        totals.failed += failed;
    }
    totals
}

/// Writes the guest's script, boots the kernel and runs it; returns how vng ended.
fn boot(
    kernel: &GuestKernel,
    release: &str,
    out: &GuestDir,
    binaries: &[PathBuf],
    filter: &[String],
) -> Result<String> {
    let image = PathBuf::from(format!("/boot/vmlinuz-{release}"));
    if !image.exists() {
        bail!(
            "{} is missing: `cargo xtask setup` installs it",
            image.display()
        );
    }
    if out.dir.exists() {
        fs::remove_dir_all(&out.dir).with_context(|| format!("clearing {}", out.dir.display()))?;
    }
    fs::create_dir_all(&out.dir).with_context(|| format!("creating {}", out.dir.display()))?;
    fs::write(out.script(), guest_script(out, binaries, filter))
        .with_context(|| format!("writing {}", out.script().display()))?;

    eprintln!(
        "booting Linux {} ({}) under QEMU without KVM; {} test binaries",
        kernel.series,
        release,
        binaries.len()
    );
    let mut vng = setup::vng()?;
    vng.args(["--verbose", "--disable-kvm", "--run"])
        .arg(&image)
        // One vCPU: under QEMU's software emulation a second vCPU can run an int3 that
        // the kernel's live code patching (text_poke_bp, e.g. a static key flipped by
        // conntrack's first hash) has already taken back, and the guest oopses
        // ("Oops: int3" in hash_conntrack_raw, seen on 6.12 with --cpus 2).
        .args(["--user", "root", "--cpus", "1", "--memory", "3G"])
        // 9p straight away: vng would first try virtiofsd, which is not there, for seconds.
        .arg("--force-9p")
        // Kernel messages at error level and above only: the console carries the tests.
        .args(["--append", "loglevel=3"])
        .arg("--rwdir")
        .arg(&out.dir)
        .arg("--exec")
        .arg(format!("sh {}", out.script().display()));
    run_console(&mut vng, &out.console_log())
}

/// Whether the guest finished, every binary exited 0 and its tests passed.
fn judge(out: &GuestDir, binaries: &[PathBuf], totals: &TestTotals, console: &str) -> Result<()> {
    if !out.finished().exists() {
        bail!(
            "the guest did not finish its tests ({console}); the last console lines:\n{}",
            tail(&out.console_log(), 30)
        );
    }
    let mut failed_binaries = Vec::new();
    for (i, binary) in binaries.iter().enumerate() {
        let status = fs::read_to_string(out.exit_status(i)).unwrap_or_default();
        if status.trim() != "0" {
            failed_binaries.push(format!(
                "{} (exit {})",
                binary.display(),
                if status.trim().is_empty() {
                    "none recorded"
                } else {
                    status.trim()
                }
            ));
        }
    }
    if !failed_binaries.is_empty() || totals.failed > 0 {
        bail!(
            "{} passed, {} failed; failing binaries: {}",
            totals.passed,
            totals.failed,
            failed_binaries.join(", ")
        );
    }
    if totals.passed == 0 {
        bail!(
            "no test ran in the guest; see {}",
            out.tests_log().display()
        );
    }
    Ok(())
}

/// Runs vng with its output through a pipe (written to a file directly, it is cut
/// short), echoing every line and keeping a copy in `log`. Stops the VM after
/// [`GUEST_TIMEOUT`]. Returns how it ended, for messages.
fn run_console(vng: &mut Command, log: &Path) -> Result<String> {
    use std::os::unix::process::CommandExt;
    eprintln!("+ {}", cmd::display(vng));
    // Its own process group, so that a timeout or Ctrl-C stops QEMU with vng (the
    // terminal's Ctrl-C reaches xtask alone, which then stops the group).
    crate::tasks::catch_stop_signals()?;
    let mut child = vng
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("could not start `{}`", cmd::display(vng)))?;
    let (tx, lines) = mpsc::channel::<String>();
    let mut readers = Vec::new();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let mut file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let deadline = Instant::now() + GUEST_TIMEOUT;
    let mut stopped: Option<String> = None;
    loop {
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                println!("  | {line}");
                writeln!(file, "{line}")?;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if stopped.is_some() {
            continue;
        }
        let why = match crate::tasks::take_stop_signal() {
            Some(signal) => {
                INTERRUPTED.store(true, Ordering::Relaxed);
                Some(format!("stopped on {signal}"))
            }
            None if Instant::now() > deadline => Some(format!(
                "stopped after running past {} s",
                GUEST_TIMEOUT.as_secs()
            )),
            None => None,
        };
        if let Some(why) = why {
            eprintln!("the guest is {why}; stopping QEMU");
            // The process group of the vng this function started (QEMU is in it).
            let group = nix::unistd::Pid::from_raw(child.id() as i32);
            if let Err(e) = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL) {
                eprintln!("stopping the guest: {e}");
            }
            stopped = Some(why);
        }
    }
    for reader in readers {
        let _ = reader.join();
    }
    let status = child.wait().context("waiting for vng")?;
    Ok(stopped.unwrap_or_else(|| format!("vng exited with {status}")))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest_dir(tag: &str) -> GuestDir {
        let dir = std::env::temp_dir().join(format!("xtask-kernels-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temp dir");
        GuestDir { dir }
    }

    fn passed(n: u64) -> TestTotals {
        TestTotals {
            passed: n,
            failed: 0,
        }
    }

    #[test]
    fn the_newest_package_of_each_series_is_chosen_and_variants_are_not() {
        let names: Vec<String> = [
            "linux-image-6.1.0-9-amd64-unsigned",
            "linux-image-6.1.0-56-amd64-unsigned",
            "linux-image-6.1.0-57-cloud-amd64-unsigned",
            "linux-image-6.1.0-58-rt-amd64-unsigned",
            "linux-image-6.1.0-60-amd64",
            "linux-image-6.12.9+deb12-amd64-unsigned",
            "linux-image-6.12.117+deb12-amd64-unsigned",
            "linux-image-6.12.118+deb12-cloud-amd64-unsigned",
            "linux-image-amd64",
        ]
        .map(str::to_owned)
        .to_vec();
        let [six_one, six_twelve] = GUEST_KERNELS else {
            panic!("two guest kernels")
        };
        assert_eq!(
            six_one.newest_package(&names).as_deref(),
            Some("linux-image-6.1.0-56-amd64-unsigned")
        );
        assert_eq!(
            six_twelve.newest_package(&names).as_deref(),
            Some("linux-image-6.12.117+deb12-amd64-unsigned")
        );
        assert_eq!(six_one.newest_package(&names[5..]), None);
    }

    #[test]
    fn a_guest_that_did_not_finish_fails_with_its_console() {
        let out = guest_dir("unfinished");
        fs::write(out.console_log(), "Kernel panic - not syncing: VFS\n").expect("console");
        let bins = [PathBuf::from("/t/ebpf_test_run-1")];
        let err = judge(&out, &bins, &passed(0), "vng exited with exit status: 0")
            .expect_err("an unfinished guest fails");
        let text = format!("{err:#}");
        assert!(text.contains("did not finish"), "{text}");
        assert!(text.contains("Kernel panic"), "{text}");
        let _ = fs::remove_dir_all(&out.dir);
    }

    #[test]
    fn a_failing_or_silent_binary_fails_the_guest() {
        let out = guest_dir("exits");
        fs::write(out.finished(), "done\n").expect("finished");
        let bins = [PathBuf::from("/t/a"), PathBuf::from("/t/b")];
        fs::write(out.exit_status(0), "0\n").expect("exit 0");
        // b recorded no exit status at all.
        let err = judge(&out, &bins, &passed(3), "").expect_err("b has no status");
        assert!(
            format!("{err:#}").contains("/t/b (exit none recorded)"),
            "{err:#}"
        );
        fs::write(out.exit_status(1), "101\n").expect("exit 101");
        let err = judge(&out, &bins, &passed(3), "").expect_err("b failed");
        assert!(format!("{err:#}").contains("/t/b (exit 101)"), "{err:#}");
        fs::write(out.exit_status(1), "0\n").expect("exit 0");
        assert!(judge(&out, &bins, &passed(0), "").is_err(), "no test ran");
        judge(&out, &bins, &passed(3), "").expect("all passed");
        let _ = fs::remove_dir_all(&out.dir);
    }

    #[test]
    fn the_guest_script_quotes_paths_and_records_each_exit_status() {
        let out = GuestDir {
            dir: PathBuf::from("/w/target/kernels/6.1"),
        };
        let script = guest_script(&out, &[PathBuf::from("/w/it's")], &["name".to_owned()]);
        assert!(
            script.contains(r"'/w/it'\''s' 'name'; echo $? > "),
            "{script}"
        );
        assert!(script.contains("exit.0"), "{script}");
        assert!(
            script.ends_with("echo done > \"$out/finished\"\n"),
            "{script}"
        );
    }
}
