//! Creating a set of namespaces from their specs, all or nothing, with progress.

use std::io::{IsTerminal, Write};

use anyhow::{Context, Result};

use super::{netlink, NamespaceSpec};
use crate::netns;

/// Creates every namespace in `specs` (in order: a namespace that creates veths must come
/// before nothing, but peers must exist, so all namespaces are created first), then
/// configures each. On any failure everything made so far is removed again and the
/// error is returned: nothing half-made is left behind. A stop signal (see
/// [`crate::stop`]) ends the build after the current namespace, the same way.
pub fn build(specs: &[NamespaceSpec]) -> Result<()> {
    let mut progress = Progress::new("building namespaces", specs.len() * 2);
    let mut created: Vec<&str> = Vec::with_capacity(specs.len());
    let result = (|| -> Result<()> {
        for spec in specs {
            crate::stop::check()?;
            netns::create(&spec.name)?;
            created.push(&spec.name);
            progress.step();
        }
        for spec in specs {
            crate::stop::check()?;
            netlink::apply(spec)?;
            progress.step();
        }
        Ok(())
    })();
    progress.finish();
    if let Err(err) = result {
        let names: Vec<String> = created.iter().map(|n| n.to_string()).collect();
        if let Err(cleanup) = teardown(&names) {
            return Err(err.context(format!("and cleaning up after it failed too: {cleanup:#}")));
        }
        return Err(err);
    }
    Ok(())
}

/// Rebuilds part of a running cluster: creates the `fresh` namespaces (which must not
/// exist), applies the `partial` specs to namespaces that exist (new veths, addresses and
/// routes only), then configures the fresh ones. On failure the fresh namespaces are
/// removed again; what a partial spec added lived on veths into them, so it goes too.
pub fn rebuild(fresh: &[NamespaceSpec], partial: &[NamespaceSpec]) -> Result<()> {
    let mut created: Vec<String> = Vec::with_capacity(fresh.len());
    let result = (|| -> Result<()> {
        for spec in fresh {
            netns::create(&spec.name)?;
            created.push(spec.name.clone());
        }
        for spec in partial.iter().chain(fresh) {
            netlink::apply(spec)?;
        }
        Ok(())
    })();
    if let Err(err) = result {
        if let Err(cleanup) = teardown(&created) {
            return Err(err.context(format!("and cleaning up after it failed too: {cleanup:#}")));
        }
        return Err(err);
    }
    Ok(())
}

/// Deletes the named namespaces (their interfaces go with them). Missing ones are fine:
/// teardown is idempotent. Returns how many existed.
pub fn teardown(names: &[String]) -> Result<usize> {
    let mut removed = 0;
    let mut first_error = None;
    for name in names.iter().rev() {
        match netns::delete(name) {
            Ok(true) => removed += 1,
            Ok(false) => {}
            Err(e) => {
                // Keep going: remove as much as possible, then report the first failure.
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e).context("removing namespaces"),
        None => Ok(removed),
    }
}

/// A one-line progress counter on stderr: rewritten in place on a terminal, a line per
/// tenth otherwise (so CI logs stay short).
struct Progress {
    what: &'static str,
    done: usize,
    total: usize,
    tty: bool,
    started: std::time::Instant,
}

impl Progress {
    fn new(what: &'static str, total: usize) -> Self {
        Self {
            what,
            done: 0,
            total,
            tty: std::io::stderr().is_terminal(),
            started: std::time::Instant::now(),
        }
    }

    fn step(&mut self) {
        self.done += 1;
        // Written without the panicking print macros: a terminal that hung up or a
        // closed pipe must not stop a build (or its rollback) half-way.
        let mut stderr = std::io::stderr();
        if self.tty {
            let _ = write!(stderr, "\r{}: {}/{}", self.what, self.done, self.total);
            let _ = stderr.flush();
        } else if self.done * 10 / self.total != (self.done - 1) * 10 / self.total {
            // Crossed a tenth of the work.
            let _ = writeln!(stderr, "{}: {}/{}", self.what, self.done, self.total);
        }
    }

    fn finish(&self) {
        if self.tty {
            crate::errln!();
        }
        crate::errln!(
            "{}: {} steps in {:.2}s",
            self.what,
            self.done,
            self.started.elapsed().as_secs_f64()
        );
    }
}
