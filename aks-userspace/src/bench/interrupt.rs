//! Ctrl-C and SIGTERM during a benchmark: the handler only sets a flag; every workload
//! loop checks it and returns an error, so the cells' guards remove every cluster on
//! the way out instead of the process dying with clusters up.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Catches SIGINT and SIGTERM from now on (for the rest of the process).
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs a handler that only performs an atomic store.
        unsafe {
            libc::signal(signal, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Fails once Ctrl-C or SIGTERM has arrived.
pub fn check() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted (Ctrl-C or SIGTERM): stopping and removing the benchmark's cells");
    }
    Ok(())
}
