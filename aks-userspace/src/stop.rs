//! Requests to stop (SIGINT from Ctrl-C, SIGTERM from `aksnet down` or a service
//! manager, SIGHUP when the terminal goes away), caught for the rest of the process once
//! `install` ran. The handler only records the signal; long work (building namespaces,
//! benchmark loops, `up`'s serving loop) checks it between steps and stops there, so a
//! stop is honoured within one step and everything made so far is removed on the way out.

use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context, Result};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: nix::libc::c_int) {
    // Only an atomic store: async-signal-safe.
    RECEIVED.store(signal, Ordering::Relaxed);
}

/// The signals that ask aksnet to stop.
pub const STOP_SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// Catches the stop signals from now on, also where the shell started the process with
/// SIGINT ignored (a background job).
pub fn install() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in STOP_SIGNALS {
        // SAFETY: the handler only performs an atomic store.
        unsafe { sigaction(signal, &action) }.with_context(|| format!("catching {signal}"))?;
    }
    Ok(())
}

/// The stop signal received, if one was.
pub fn requested() -> Option<Signal> {
    match RECEIVED.load(Ordering::Relaxed) {
        0 => None,
        n => Signal::try_from(n).ok(),
    }
}

/// A stop signal arrived while work was under way.
#[derive(Debug, thiserror::Error)]
#[error("stopped by {0} before the work was done")]
pub struct Stopped(pub Signal);

impl Stopped {
    /// The exit status shells use for a process ended by this signal (128 + number).
    pub fn exit_code(&self) -> u8 {
        128u8.saturating_add(self.0 as u8)
    }
}

/// Fails with [`Stopped`] once a stop signal has arrived.
pub fn check() -> Result<(), Stopped> {
    requested().map_or(Ok(()), |signal| Err(Stopped(signal)))
}

/// Prints a line on stdout, or nothing when stdout is gone (a closed pipe, a terminal
/// that hung up): what aksnet does after a signal must not depend on its output.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// As [`outln!`], on stderr.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
