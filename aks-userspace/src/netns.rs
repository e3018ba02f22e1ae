//! Running code inside a named network namespace (`/run/netns/<name>`, as `ip netns`
//! makes them) without moving the calling thread: the work runs on a dedicated thread
//! that joins the namespace and ends with it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::thread;

use anyhow::{Context, Result};

/// Where `ip netns` keeps its namespace handles.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// The handle file of the named namespace.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_RUN_DIR).join(name)
}

/// Runs `work` on a new (scoped) thread that has joined the network namespace `name`, and
/// returns its result. Sockets, netlink handles and BPF attachments made by `work` belong
/// to that namespace; the caller's thread never changes namespace. `work` may borrow from
/// the caller.
pub fn run_in<T, F>(name: &str, work: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> Result<T> + Send,
{
    let handle_path = path(name);
    let handle = File::open(&handle_path).with_context(|| {
        format!(
            "opening network namespace {name:?} at {}: does it exist (`ip netns list`)?",
            handle_path.display()
        )
    })?;
    thread::scope(|scope| {
        thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn_scoped(scope, move || -> Result<T> {
                // SAFETY: setns on a valid namespace fd affects only this thread, which exists
                // solely to run `work` and then ends.
                let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(std::io::Error::last_os_error()).with_context(|| {
                        format!("joining network namespace {name:?} (needs CAP_SYS_ADMIN)")
                    });
                }
                work()
            })
            .context("spawning a thread to enter a network namespace")?
            .join()
            .map_err(|panic| {
                anyhow::anyhow!("the thread inside network namespace {name:?} panicked: {panic:?}")
            })?
    })
}
