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

/// Creates the named network namespace the way `ip netns add` does: a fresh namespace
/// made by a short-lived thread with `unshare(CLONE_NEWNET)`, kept alive by a bind mount
/// of that thread's namespace onto `/run/netns/<name>`. Fails if the name exists.
pub fn create(name: &str) -> Result<()> {
    std::fs::create_dir_all(NETNS_RUN_DIR).with_context(|| format!("creating {NETNS_RUN_DIR}"))?;
    let target = path(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&target)
        .with_context(|| {
            format!(
                "creating {} (does namespace {name:?} already exist?)",
                target.display()
            )
        })?;
    let bound = thread::scope(|scope| {
        scope
            .spawn(|| -> Result<()> {
                // SAFETY: unshare affects only this thread, which ends right after.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error())
                        .context("unshare(CLONE_NEWNET) (needs CAP_SYS_ADMIN)");
                }
                // SAFETY: gettid has no preconditions.
                let tid = unsafe { libc::gettid() };
                let source = std::ffi::CString::new(format!("/proc/self/task/{tid}/ns/net"))?;
                let dest = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())?;
                // SAFETY: valid NUL-terminated paths; a bind mount with no data.
                let rc = unsafe {
                    libc::mount(
                        source.as_ptr(),
                        dest.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    )
                };
                if rc != 0 {
                    return Err(std::io::Error::last_os_error())
                        .context("bind-mounting the new namespace");
                }
                Ok(())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the namespace-creating thread panicked"))?
    });
    if let Err(err) = bound {
        let _ = std::fs::remove_file(&target);
        return Err(err).with_context(|| format!("creating network namespace {name:?}"));
    }
    Ok(())
}

/// Removes the named network namespace (unmount and unlink, as `ip netns del`). The
/// kernel destroys it, with every interface in it, once nothing else holds it. Returns
/// `false` if it did not exist.
pub fn delete(name: &str) -> Result<bool> {
    let target = path(name);
    if target.symlink_metadata().is_err() {
        return Ok(false);
    }
    let dest = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())?;
    // SAFETY: valid NUL-terminated path. EINVAL means it was not mounted (a half-made
    // handle), which unlinking below cleans up as well.
    let rc = unsafe { libc::umount2(dest.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(err).with_context(|| format!("unmounting {}", target.display()));
        }
    }
    std::fs::remove_file(&target).with_context(|| format!("removing {}", target.display()))?;
    Ok(true)
}

/// Names of every namespace under `/run/netns` that starts with `prefix`.
pub fn list_with_prefix(prefix: &str) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(NETNS_RUN_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).context(format!("reading {NETNS_RUN_DIR}")),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    Ok(names)
}

/// The index of interface `name` inside namespace `namespace`.
pub fn interface_index(namespace: &str, name: &str) -> Result<u32> {
    run_in(namespace, || {
        let c_name = std::ffi::CString::new(name)?;
        // SAFETY: valid NUL-terminated string; resolved in this thread's namespace.
        let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
        anyhow::ensure!(index != 0, "no interface {name} in namespace {namespace}");
        Ok(index)
    })
}
