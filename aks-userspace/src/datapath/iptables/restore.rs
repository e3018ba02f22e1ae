//! Applying an `iptables-restore` payload inside a namespace, atomically, as kube-proxy
//! does: one payload, one restore, never rule by rule; and reading a namespace's rules
//! back with `iptables-save`.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::netns;

/// Runs `iptables-restore --noflush` with `payload` inside `namespace`: adds to what
/// the tables hold. The child process inherits the namespace of the thread that starts it.
pub fn restore(namespace: &str, payload: &str) -> Result<()> {
    run_restore(namespace, payload, true)
}

/// Runs `iptables-restore` with `payload` inside `namespace`, replacing every table the
/// payload names: how a node's whole ruleset is reprogrammed (services added or
/// removed) without duplicating the jumps in the built-in chains.
pub fn replace(namespace: &str, payload: &str) -> Result<()> {
    run_restore(namespace, payload, false)
}

fn run_restore(namespace: &str, payload: &str, noflush: bool) -> Result<()> {
    netns::run_in(namespace, || {
        let mut child = Command::new("iptables-restore")
            .args(noflush.then_some("--noflush"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting iptables-restore (is iptables installed? `cargo xtask setup` installs it)")?;
        child
            .stdin
            .take()
            .context("iptables-restore has no stdin")?
            .write_all(payload.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "iptables-restore failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    })
    .with_context(|| format!("applying iptables rules in {namespace}"))
}

/// The rules `namespace` holds, as `iptables-save` prints them (without counters).
pub fn save(namespace: &str) -> Result<String> {
    run_save(namespace, &[])
}

/// The rules of `table` in `namespace` with each rule's `[packets:bytes]` in front.
pub fn save_with_counters(namespace: &str, table: &str) -> Result<String> {
    run_save(namespace, &["-c", "-t", table])
}

fn run_save(namespace: &str, args: &[&str]) -> Result<String> {
    netns::output_of(
        namespace,
        "iptables-save",
        args,
        "is iptables installed? `cargo xtask setup` installs it",
    )
    .with_context(|| format!("reading iptables rules in {namespace}"))
}
