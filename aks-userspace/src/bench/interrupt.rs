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

/// Catches SIGINT and SIGTERM from now on (for the rest of the process), also where
/// the shell started the process with SIGINT ignored (a background job).
pub fn install() -> Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with an empty mask and a handler that only performs
        // an atomic store; SA_RESTART so interrupted system calls resume.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(anyhow::Error::from(std::io::Error::last_os_error())
                .context(format!("catching signal {signal}")));
        }
    }
    Ok(())
}

/// Fails once Ctrl-C or SIGTERM has arrived.
pub fn check() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted (Ctrl-C or SIGTERM): stopping and removing the benchmark's cells");
    }
    Ok(())
}
