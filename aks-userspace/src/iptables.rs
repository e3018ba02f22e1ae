//! Applying an `iptables-restore` payload inside a namespace, atomically, as kube-proxy
//! does: one payload, one restore, never rule by rule.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::netns;

/// Runs `iptables-restore --noflush` with `payload` inside `namespace`. The child
/// process inherits the namespace of the thread that starts it.
pub fn restore(namespace: &str, payload: &str) -> Result<()> {
    netns::run_in(namespace, || {
        let mut child = Command::new("iptables-restore")
            .arg("--noflush")
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
