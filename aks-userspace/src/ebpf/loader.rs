//! Loading the eBPF object for one node and attaching its programs inside the node's
//! network namespace.

use aks_ebpf_common::{ReasonCounter, STATS_MAP};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

use aya::maps::PerCpuArray;
use aya::programs::links::FdLink;
use aya::programs::{tc::TcAttachType, SchedClassifier};
use aya::Ebpf;

use super::{object_bytes, ReasonTotals};
use crate::netns;

/// The program on the host side of every pod veth.
const FROM_POD: &str = "from_pod";

/// The datapath of one node: the loaded object and its attachments.
///
/// Without a pin directory, programs stay attached exactly as long as this value lives
/// (TCX links are owned by it). With one, `STATS` and every link are pinned there, so
/// they outlive the process (`aksnet up --keep`, a killed `up`) and other processes can
/// read the maps; removing the directory detaches and frees them.
pub struct NodeDatapath {
    ebpf: Ebpf,
    namespace: String,
    pin_dir: Option<PathBuf>,
}

impl NodeDatapath {
    /// Loads the embedded object (maps created, programs verified) for the node whose
    /// network namespace is `namespace`, pinning its maps under `pin_dir` if given.
    /// Nothing is attached yet.
    pub fn load(namespace: &str, pin_dir: Option<&Path>) -> Result<Self> {
        raise_memlock_rlimit();
        let mut ebpf = Ebpf::load(object_bytes()).context("loading the aksnet eBPF object")?;
        let from_pod: &mut SchedClassifier = ebpf
            .program_mut(FROM_POD)
            .with_context(|| format!("the eBPF object has no program {FROM_POD}"))?
            .try_into()
            .with_context(|| format!("{FROM_POD} is not a TC classifier"))?;
        from_pod
            .load()
            .with_context(|| format!("the verifier rejected {FROM_POD}"))?;
        if let Some(dir) = pin_dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating pin directory {}", dir.display()))?;
            let stats: PerCpuArray<_, ReasonCounter> = PerCpuArray::try_from(
                ebpf.map(STATS_MAP)
                    .with_context(|| format!("the eBPF object has no map {STATS_MAP}"))?,
            )?;
            let path = dir.join(STATS_MAP);
            stats
                .pin(&path)
                .with_context(|| format!("pinning {STATS_MAP} at {}", path.display()))?;
        }
        Ok(Self {
            ebpf,
            namespace: namespace.to_owned(),
            pin_dir: pin_dir.map(Path::to_path_buf),
        })
    }

    /// Attaches `from_pod` to TC ingress (TCX on kernels ≥ 6.6) of `interface`, the host
    /// side of a pod's veth in this node's namespace.
    pub fn attach_from_pod(&mut self, interface: &str) -> Result<()> {
        let ebpf = &mut self.ebpf;
        let pin_dir = &self.pin_dir;
        netns::run_in(&self.namespace, move || {
            let from_pod: &mut SchedClassifier = ebpf
                .program_mut(FROM_POD)
                .context("from_pod vanished from the loaded object")?
                .try_into()?;
            let link_id = from_pod
                .attach(interface, TcAttachType::Ingress)
                .with_context(|| format!("attaching {FROM_POD} to TC ingress of {interface}"))?;
            if let Some(dir) = pin_dir {
                let link: FdLink = from_pod.take_link(link_id)?.try_into()?;
                let path = dir.join(format!("{FROM_POD}_{interface}"));
                link.pin(&path).with_context(|| {
                    format!("pinning the {FROM_POD} link at {}", path.display())
                })?;
            }
            Ok(())
        })
        .with_context(|| format!("in network namespace {}", self.namespace))
    }

    /// The `STATS` counters, summed over CPUs.
    pub fn stats(&self) -> Result<ReasonTotals> {
        let map = self
            .ebpf
            .map(STATS_MAP)
            .with_context(|| format!("the eBPF object has no map {STATS_MAP}"))?;
        let stats: PerCpuArray<_, ReasonCounter> = PerCpuArray::try_from(map)?;
        ReasonTotals::read(&stats)
    }

    /// The `from_pod` program, for `BPF_PROG_TEST_RUN` on crafted frames.
    pub fn from_pod_program(&self) -> Result<&SchedClassifier> {
        Ok(self
            .ebpf
            .program(FROM_POD)
            .with_context(|| format!("the eBPF object has no program {FROM_POD}"))?
            .try_into()?)
    }
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it as aya-template does.
/// On newer kernels (memcg accounting) this is harmless, and failure is not fatal: the
/// load reports EPERM itself if the limit really is the problem.
fn raise_memlock_rlimit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid pointer to an initialised struct.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    if rc != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}
