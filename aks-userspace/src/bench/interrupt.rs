//! Ctrl-C, SIGTERM and SIGHUP during a benchmark ([`crate::stop`] catches them): every
//! workload loop checks and returns an error, so the cells' guards remove every cluster
//! on the way out instead of the process dying with clusters up.

use anyhow::{bail, Result};

/// Catches the stop signals from now on (for the rest of the process).
pub fn install() -> Result<()> {
    crate::stop::install()
}

/// Fails once a stop signal has arrived.
pub fn check() -> Result<()> {
    if let Some(signal) = crate::stop::requested() {
        bail!("interrupted ({signal}): stopping and removing the benchmark's cells");
    }
    Ok(())
}
