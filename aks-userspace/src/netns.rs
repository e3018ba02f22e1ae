//! Running code inside a named network namespace (`/run/netns/<name>`, as `ip netns`
//! makes them) without moving the calling thread: the work runs on a dedicated thread
//! that joins the namespace and ends with it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::thread;

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

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
                // Affects only this thread, which exists solely to run `work` and then ends.
                setns(&handle, CloneFlags::CLONE_NEWNET).with_context(|| {
                    format!("joining network namespace {name:?} (needs CAP_SYS_ADMIN)")
                })?;
                work()
            })
            .context("spawning a thread to enter a network namespace")?
            .join()
            .map_err(|panic| {
                anyhow::anyhow!("the thread inside network namespace {name:?} panicked: {panic:?}")
            })?
    })
}

/// Runs `program` with `args` inside namespace `name` (the child inherits the namespace
/// of the thread that starts it) and returns what it printed. `install` says how to get
/// the program when it cannot be started; a non-zero exit is an error with its stderr.
pub fn output_of(name: &str, program: &str, args: &[&str], install: &str) -> Result<String> {
    run_in(name, || {
        let out = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("starting {program} ({install})"))?;
        if !out.status.success() {
            bail!(
                "{program} {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8(out.stdout)
            .with_context(|| format!("{program} printed something that is not UTF-8"))
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
                // Affects only this thread, which ends right after.
                unshare(CloneFlags::CLONE_NEWNET)
                    .context("unshare(CLONE_NEWNET) (needs CAP_SYS_ADMIN)")?;
                let source = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
                mount(
                    Some(source.as_str()),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .context("bind-mounting the new namespace")?;
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
    // EINVAL means it was not mounted (a half-made handle, or one left from before a
    // reboot), which unlinking below cleans up as well.
    match umount2(&target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) => {}
        Err(e) => return Err(e).with_context(|| format!("unmounting {}", target.display())),
    }
    match std::fs::remove_file(&target) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(Errno::EBUSY as i32) => {
            unlink_under_stacked_mounts(&target)?;
            Ok(true)
        }
        Err(e) => Err(e).with_context(|| format!("removing {}", target.display())),
    }
}

/// `ip netns add` makes `/run/netns` a shared mount the first time it runs, by
/// bind-mounting the directory onto itself (recursively) when it is not a mount point.
/// A handle made before that is then mounted twice, and the lower mount, hidden under
/// the new `/run/netns`, makes unlinking fail with EBUSY for ever. The kernel refuses to
/// unlink a mount point only in the caller's own mount namespace and detaches the mounts
/// of other namespaces when the file goes, so: in a private copy of the mount namespace
/// (a thread of its own), peel the mounts off the handle, and `/run/netns` off the
/// directory where that uncovers the handle's lower mount, until the unlink succeeds.
/// Nothing changes in the machine's mount namespace but the handle's disappearance.
fn unlink_under_stacked_mounts(target: &Path) -> Result<()> {
    let target = target.to_path_buf();
    thread::scope(|scope| {
        scope
            .spawn(|| -> Result<()> {
                unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_FS)
                    .context("unshare(CLONE_NEWNS) to reach a handle under a stacked mount")?;
                // Private, so that nothing done here propagates back.
                mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None::<&str>,
                )
                .context("making the private mount namespace private")?;
                for _ in 0..16 {
                    match std::fs::remove_file(&target) {
                        Ok(()) => return Ok(()),
                        Err(e) if e.raw_os_error() == Some(Errno::EBUSY as i32) => {}
                        Err(e) => {
                            return Err(e).with_context(|| format!("removing {}", target.display()))
                        }
                    }
                    if umount2(&target, MntFlags::MNT_DETACH).is_err() {
                        umount2(NETNS_RUN_DIR, MntFlags::MNT_DETACH)
                            .with_context(|| format!("uncovering {}", target.display()))?;
                    }
                }
                anyhow::bail!("{} stays busy under stacked mounts", target.display())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the unmounting thread panicked"))?
    })
    .with_context(|| {
        format!(
            "removing {} (EBUSY: it is still mounted under a later bind mount of {NETNS_RUN_DIR})",
            target.display()
        )
    })
}

/// Whether the named namespace exists: its handle is a mounted namespace, not a plain
/// file left where `/run` outlived a reboot.
pub fn is_live(name: &str) -> bool {
    const NSFS_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0x6e73_6673);
    nix::sys::statfs::statfs(&path(name)).is_ok_and(|fs| fs.filesystem_type() == NSFS_MAGIC)
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
        nix::net::if_::if_nametoindex(name)
            .with_context(|| format!("no interface {name} in namespace {namespace}"))
    })
}
