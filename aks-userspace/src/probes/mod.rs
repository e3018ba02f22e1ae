//! Azure's load balancer health probes, for real: a per-cluster **probe agent** process
//! that lives as long as the cluster. It plays two parts:
//!
//! - kube-proxy's health servers inside each node namespace ([`health_server`]): the
//!   `healthCheckNodePort` of every `Local` LoadBalancer service (200 with a local
//!   endpoint, 503 without) and kube-proxy's healthz port;
//! - the load balancer's prober in the fabric (the vnet namespace, [`prober`]): an HTTP
//!   probe of every node of every frontend each interval; a node's state changes after
//!   `threshold` equal results in a row, and then the fabric's load-balancing rules are
//!   written again with only the nodes in rotation (`fabric::loadbalancer`).
//!
//! Why a process of its own: `up --keep` returns, and a cluster must be probed whether
//! or not a foreground command runs. `up` starts it (`aksnet` itself, with a hidden
//! subcommand) in its own session, with no terminal and no inherited descriptors. It
//! holds the cluster's `agent` lock for its whole life, so `down` finds it from
//! `/proc/locks` (never a recycled PID) and stops it with SIGTERM before it removes the
//! namespaces. It creates no namespace and no rule of its own: its sockets close when it
//! ends however it ends, and the only rules it writes are the fabric's, which live and
//! go with the vnet namespace. It ends by itself when the cluster's record is gone.

pub mod agent;
pub mod health_server;
pub mod prober;
pub mod record;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::cluster_lock::{self, ClusterLock};
use crate::state::ClusterState;

pub use record::{FrontendProbes, NodeProbe, ProbeRecord, ProbeState};

/// cloud-provider-azure's default probe interval (the
/// `azure-load-balancer-health-probe-interval` annotation: 5 s).
pub const AZURE_INTERVAL: Duration = Duration::from_secs(5);
/// cloud-provider-azure's default `numberOfProbes`/`probeThreshold` (the
/// `azure-load-balancer-health-probe-num-of-probe` annotation: 2).
pub const AZURE_THRESHOLD: u32 = 2;
/// kube-proxy's `--healthz-bind-address` port, probed for `Cluster` frontends.
pub const PROXY_HEALTHZ_PORT: u16 = 10256;
/// The path Azure's HTTP probe asks for (cloud-provider-azure's default request path).
pub const HEALTHZ_PATH: &str = "/healthz";

/// The hidden subcommand `up` starts the agent with.
pub const AGENT_SUBCOMMAND: &str = "probe-agent";

/// How often and how strictly the load balancer probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSettings {
    pub interval: Duration,
    /// Equal results in a row that change a node's state.
    pub threshold: u32,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        Self {
            interval: AZURE_INTERVAL,
            threshold: AZURE_THRESHOLD,
        }
    }
}

impl ProbeSettings {
    /// A probe that has not answered within the interval has failed (Azure waits no
    /// longer than the next probe either); at most 5 s.
    pub fn timeout(&self) -> Duration {
        self.interval.min(Duration::from_secs(5))
    }
}

/// How long `up` waits for a started agent to hold its lock, and `down` for one it
/// asked to stop to end.
const AGENT_WAIT: Duration = Duration::from_secs(10);

/// Starts the probe agent of the cluster `cluster` (just created; its change lock may
/// be held by the caller) and waits until it holds the agent lock. Returns its PID.
pub fn start(cluster: &str, settings: ProbeSettings) -> Result<u32> {
    ClusterLock::prepare_agent(cluster)?;
    let log = ClusterState::dir(cluster).join("agent.log");
    let log = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let exe = std::env::current_exe().context("finding the aksnet executable")?;
    let mut command = Command::new(exe);
    command
        .arg(AGENT_SUBCOMMAND)
        .arg(cluster)
        .arg("--interval-ms")
        .arg(settings.interval.as_millis().to_string())
        .arg("--threshold")
        .arg(settings.threshold.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // Its own session: a terminal's Ctrl-C or hang-up reaches `up`, which removes the
    // cluster and stops the agent in order; the agent never gets it first.
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut child = command.spawn().context("starting the probe agent")?;
    let pid = child.id();
    let deadline = Instant::now() + AGENT_WAIT;
    loop {
        if cluster_lock::agent_pid(cluster) == Some(pid) {
            return Ok(pid);
        }
        if let Some(status) = child.try_wait().context("waiting for the probe agent")? {
            bail!(
                "the probe agent ended at once ({status}); see {}",
                ClusterState::dir(cluster).join("agent.log").display()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the probe agent (pid {pid}) did not start within {} s",
                AGENT_WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the probe agent of `cluster` if one runs: SIGTERM to the process that holds
/// the agent lock (so it is ours), then waits for the lock to be free. Returns its PID.
pub fn stop(cluster: &str) -> Result<Option<u32>> {
    let Some(pid) = cluster_lock::agent_pid(cluster).filter(|&p| p != std::process::id()) else {
        return Ok(None);
    };
    nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGTERM)
        .with_context(|| format!("asking the probe agent of {cluster} (pid {pid}) to stop"))?;
    let deadline = Instant::now() + AGENT_WAIT;
    while cluster_lock::agent_alive(cluster) {
        if Instant::now() > deadline {
            bail!(
                "the probe agent of cluster {cluster} (pid {pid}) did not stop within {} s of SIGTERM; stop it, then run `aksnet down {cluster}` again",
                AGENT_WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Some(pid))
}
