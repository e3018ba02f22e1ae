//! The locks of one cluster name, both `flock`s on files in its record directory
//! (`/run/aksnet/<cluster>/`):
//!
//! - `lock`, the change lock: held while a cluster is created or removed (`up`, `down`)
//!   and while it is changed (`services add|remove`), so two commands never change one
//!   cluster at once, and a losing `up` never sees a half-made cluster as its own.
//! - `owner`, held by a running `aksnet up` for as long as it lives. The kernel drops it
//!   when that process ends however it ends, so it says whether the owner lives; and
//!   `/proc/locks` says which process holds it, so `down` signals that process and never
//!   a recycled PID.
//!
//! - `agent`, held by the cluster's load balancer probe agent (`crate::probes`) for as
//!   long as it lives: `down` stops the process that holds it, found the same way.
//!
//! `down` deletes the directory with its lock files while holding the change lock: a
//! process that was waiting then holds a lock on a deleted file. Every acquisition
//! therefore checks that the file it locked is still the one at the path, and starts
//! over when it is not.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::state::ClusterState;

/// How long a command waits for another one that changes the same cluster.
pub const WAIT_FOR_CHANGE: Duration = Duration::from_secs(120);

const POLL: Duration = Duration::from_millis(50);

/// A held lock; released when dropped (or when the process ends).
pub struct ClusterLock {
    _held: Flock<File>,
}

/// What came of trying to take a lock.
enum Attempt {
    Held(ClusterLock),
    Busy,
    /// The record directory does not exist (and was not to be created).
    NoRecord,
}

fn lock_file(cluster: &str, which: &str) -> PathBuf {
    ClusterState::dir(cluster).join(which)
}

fn try_lock(path: &Path, create: bool) -> Result<Attempt> {
    loop {
        if create {
            let dir = path.parent().unwrap_or(Path::new("/"));
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound && !create => return Ok(Attempt::NoRecord),
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        let held = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(held) => held,
            Err((_, Errno::EWOULDBLOCK)) => return Ok(Attempt::Busy),
            Err((_, errno)) => {
                return Err(errno).with_context(|| format!("locking {}", path.display()))
            }
        };
        // Still the file at the path? `down` may have removed the directory meanwhile.
        let locked = held
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?;
        match std::fs::metadata(path) {
            Ok(now) if (now.dev(), now.ino()) == (locked.dev(), locked.ino()) => {
                return Ok(Attempt::Held(ClusterLock { _held: held }))
            }
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if create {
                    continue;
                }
                return Ok(Attempt::NoRecord);
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

impl ClusterLock {
    /// Takes the change lock of `cluster`, creating its record directory (for `up`).
    /// Fails at once, naming the holder, if another command holds it: a second `up` of a
    /// name must not wait for the first to finish and then find its cluster.
    pub fn create(cluster: &str) -> Result<Self> {
        match try_lock(&lock_file(cluster, "lock"), true)? {
            Attempt::Held(lock) => Ok(lock),
            _ => bail!(
                "cluster {cluster:?} is being created, changed or removed by another aksnet command{}; wait for it, or `aksnet down {cluster}`",
                holder_text(cluster, "lock")
            ),
        }
    }

    /// The usual `waiting` callback of [`existing`](Self::existing): one line on stderr
    /// naming the command (pid) that holds the cluster.
    pub fn say_waiting(cluster: &str) -> impl FnOnce(Option<u32>) + '_ {
        move |holder| {
            crate::errln!(
                "cluster {cluster}: waiting for another aksnet command{} that is changing it",
                holder.map_or_else(String::new, |pid| format!(" (pid {pid})"))
            )
        }
    }

    /// Takes the change lock of an existing cluster, waiting up to `WAIT_FOR_CHANGE`
    /// while another command holds it (`waiting` is called once, when it has to wait).
    /// `None` when there is no record (the cluster was never made, or was removed while
    /// waiting).
    pub fn existing(cluster: &str, waiting: impl FnOnce(Option<u32>)) -> Result<Option<Self>> {
        let path = lock_file(cluster, "lock");
        let deadline = Instant::now() + WAIT_FOR_CHANGE;
        let mut waiting = Some(waiting);
        loop {
            match try_lock(&path, false)? {
                Attempt::Held(lock) => return Ok(Some(lock)),
                Attempt::NoRecord => {
                    // A record directory without a lock file is a record written before
                    // records had locks, or a half-written one: lock it now.
                    if ClusterState::dir(cluster).is_dir() {
                        match try_lock(&path, true)? {
                            Attempt::Held(lock) => return Ok(Some(lock)),
                            _ => continue,
                        }
                    }
                    return Ok(None);
                }
                Attempt::Busy => {
                    if let Some(waiting) = waiting.take() {
                        waiting(lock_holder(&path));
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "cluster {cluster:?} is still locked by another aksnet command{} after {} s; try again later",
                            holder_text(cluster, "lock"),
                            WAIT_FOR_CHANGE.as_secs()
                        );
                    }
                    std::thread::sleep(POLL);
                }
            }
        }
    }

    /// Takes the owner lock of `cluster` for the life of this `up` process. The record
    /// directory exists (the change lock is held).
    pub fn owner(cluster: &str) -> Result<Self> {
        match try_lock(&lock_file(cluster, "owner"), true)? {
            Attempt::Held(lock) => Ok(lock),
            _ => bail!(
                "cluster {cluster:?} is owned by a running `aksnet up`{}",
                holder_text(cluster, "owner")
            ),
        }
    }

    /// Takes the change lock of `cluster` if it is free right now; `None` when another
    /// command holds it or there is no record. For work that retries later rather than
    /// wait (the probe agent must never keep `down` waiting).
    pub fn try_change(cluster: &str) -> Result<Option<Self>> {
        match try_lock(&lock_file(cluster, "lock"), false)? {
            Attempt::Held(lock) => Ok(Some(lock)),
            Attempt::Busy | Attempt::NoRecord => Ok(None),
        }
    }

    /// Creates the (unlocked) agent lock file of a cluster being made, so the agent it
    /// starts can lock it without ever creating the record directory itself.
    pub fn prepare_agent(cluster: &str) -> Result<()> {
        let path = lock_file(cluster, "agent");
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(())
    }

    /// Takes the agent lock of `cluster` for the life of its probe agent. Fails when
    /// another agent holds it or the cluster's record is gone.
    pub fn agent(cluster: &str) -> Result<Self> {
        match try_lock(&lock_file(cluster, "agent"), false)? {
            Attempt::Held(lock) => Ok(lock),
            Attempt::Busy => bail!(
                "cluster {cluster:?} already has a probe agent{}",
                holder_text(cluster, "agent")
            ),
            Attempt::NoRecord => bail!("cluster {cluster:?} has no record (removed?)"),
        }
    }
}

/// The probe agent of `cluster` right now: the process holding its agent lock (so never
/// a recycled PID).
pub fn agent_pid(cluster: &str) -> Option<u32> {
    lock_holder(&lock_file(cluster, "agent"))
}

/// Whether a live probe agent holds the agent lock of `cluster`. Read from
/// `/proc/locks`, never by trying the lock: a process that took it even for a moment
/// would be listed as its holder, and a concurrent `down` would signal it (two
/// concurrent `down`s did exactly that to each other).
pub fn agent_alive(cluster: &str) -> bool {
    agent_pid(cluster).is_some()
}

/// The process whose `aksnet up` owns `cluster` right now, if one does. This is the
/// process that holds the owner lock, read from `/proc/locks`: it is that `up` even if
/// the recorded PID was reused by another process since.
pub fn owner_pid(cluster: &str) -> Option<u32> {
    lock_holder(&lock_file(cluster, "owner"))
}

/// Whether a live `aksnet up` owns `cluster`; read from `/proc/locks` for the reason
/// [`agent_alive`] gives.
pub fn owner_alive(cluster: &str) -> bool {
    owner_pid(cluster).is_some()
}

fn holder_text(cluster: &str, which: &str) -> String {
    match lock_holder(&lock_file(cluster, which)) {
        Some(pid) => format!(" (pid {pid})"),
        None => String::new(),
    }
}

/// The PID that holds a `flock` on `path`, from `/proc/locks`.
fn lock_holder(path: &Path) -> Option<u32> {
    let meta = std::fs::metadata(path).ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    holder_in(&locks, meta.dev(), meta.ino())
}

/// Parses `/proc/locks` lines such as `1: FLOCK  ADVISORY  WRITE 4242 fe:00:382079 0 EOF`
/// (device as hex major:minor); lines of waiters (`1: -> FLOCK …`) do not hold the lock.
fn holder_in(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let want = format!(
        "{:02x}:{:02x}:{ino}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, _, pid, file, ..] if *file == want => pid.parse().ok(),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_read_from_proc_locks() {
        let dev = nix::sys::stat::makedev(0xfe, 0);
        let locks = "1: POSIX  ADVISORY  WRITE 17547 fe:00:379054 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 4242 fe:00:382079 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 5151 fe:00:382079 0 EOF\n";
        assert_eq!(holder_in(locks, dev, 382079), Some(4242));
        assert_eq!(
            holder_in(locks, dev, 379054),
            None,
            "POSIX locks are not ours"
        );
        assert_eq!(holder_in(locks, dev, 1), None);
    }

    #[test]
    fn a_lock_is_exclusive_and_its_holder_is_this_process() {
        let dir = std::env::temp_dir().join(format!("aksnet-lock-test-{}", std::process::id()));
        let path = dir.join("lock");
        let Attempt::Held(first) = try_lock(&path, true).expect("locking") else {
            panic!("a fresh lock is free");
        };
        assert!(matches!(try_lock(&path, false), Ok(Attempt::Busy)));
        assert_eq!(lock_holder(&path), Some(std::process::id()));
        drop(first);
        assert!(matches!(try_lock(&path, false), Ok(Attempt::Held(_))));
        std::fs::remove_dir_all(&dir).expect("removing the test directory");
        assert!(matches!(try_lock(&path, false), Ok(Attempt::NoRecord)));
    }
}
