//! Loading the eBPF object for one node and attaching its programs inside the node's
//! network namespace.

use std::path::{Path, PathBuf};

use aks_ebpf_common::conntrack::{nat_capacity, CONNTRACK_DEFAULT_CAPACITY};
use aks_ebpf_common::lb::{BACKENDS_MAP, REV_NAT_MAP, SERVICES_MAP};
use aks_ebpf_common::{Program, CONNTRACK_MAP, ENDPOINTS_MAP, NAT_MAP, ROUTES_MAP, STATS_MAP};
use anyhow::{Context, Result};
use aya::maps::{Map, PerCpuArray};
use aya::programs::links::FdLink;
use aya::programs::{SchedClassifier, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};

use super::attach::{self, TcAttachMode, TcAttachment};
use super::{object_bytes, ReasonTotals};
use crate::netns;
use crate::plan::MapCapacities;

/// TC ingress on the host side of every pod veth.
const FROM_POD: &str = Program::FromPod.name();
/// TC ingress on the node uplink.
const FROM_VNET: &str = Program::FromVnet.name();
/// XDP on the node uplink.
const NSG: &str = Program::Nsg.name();

/// The datapath of one node: the loaded object and its attachments.
///
/// Without a pin directory, programs stay attached exactly as long as this value lives
/// (links are owned by it). With one, every map and link is pinned there, so they
/// outlive the process (`aksnet up --keep`, a killed `up`) and other processes can read
/// the maps; removing the directory detaches and frees them. On kernels without TCX the
/// TC programs hang from netlink filters instead, which the interfaces keep until the
/// node's namespace is deleted (see [`attach`](super::attach)).
pub struct NodeDatapath {
    pub(super) ebpf: Ebpf,
    namespace: String,
    pin_dir: Option<PathBuf>,
    /// How TC programs are attached, asked of the kernel at the first TC attach.
    tc_mode: Option<TcAttachMode>,
    /// TC attachments that live as long as this value (no pin directory).
    owned: Vec<TcAttachment>,
}

impl NodeDatapath {
    /// Loads the embedded object (maps created, programs verified) for the node whose
    /// network namespace is `namespace`, pinning its maps under `pin_dir` if given.
    /// Nothing is attached yet.
    pub fn load(namespace: &str, pin_dir: Option<&Path>) -> Result<Self> {
        Self::load_with_capacity(namespace, pin_dir, CONNTRACK_DEFAULT_CAPACITY)
    }

    /// As [`load`](Self::load), with room for `conntrack_capacity` masqueraded flows
    /// (`CONNTRACK`; `NAT` gets two entries per flow).
    pub fn load_with_capacity(
        namespace: &str,
        pin_dir: Option<&Path>,
        conntrack_capacity: u32,
    ) -> Result<Self> {
        Self::load_sized(
            namespace,
            pin_dir,
            conntrack_capacity,
            &MapCapacities::default(),
        )
    }

    /// As [`load_with_capacity`](Self::load_with_capacity), with the endpoint, route and
    /// service maps sized as `maps` says (the plan derives them from the description).
    pub fn load_sized(
        namespace: &str,
        pin_dir: Option<&Path>,
        conntrack_capacity: u32,
        maps: &MapCapacities,
    ) -> Result<Self> {
        raise_memlock_rlimit();
        // aya-log's level lives in the object: records above it are never produced.
        let log_level = log::max_level() as u8;
        let mut ebpf = EbpfLoader::new()
            .override_global(aya_log::LEVEL, &log_level, true)
            .map_max_entries(CONNTRACK_MAP, conntrack_capacity)
            .map_max_entries(NAT_MAP, nat_capacity(conntrack_capacity))
            .map_max_entries(ENDPOINTS_MAP, maps.endpoints)
            .map_max_entries(ROUTES_MAP, maps.routes)
            .map_max_entries(SERVICES_MAP, maps.services)
            .map_max_entries(BACKENDS_MAP, maps.backends)
            .map_max_entries(REV_NAT_MAP, maps.rev_nat)
            .load(object_bytes())
            .context("loading the aksnet eBPF object")?;
        for name in [FROM_POD, FROM_VNET] {
            let program: &mut SchedClassifier = ebpf
                .program_mut(name)
                .with_context(|| format!("the eBPF object has no program {name}"))?
                .try_into()
                .with_context(|| format!("{name} is not a TC classifier"))?;
            program
                .load()
                .with_context(|| format!("the verifier rejected {name}"))?;
        }
        let nsg: &mut Xdp = ebpf
            .program_mut(NSG)
            .with_context(|| format!("the eBPF object has no program {NSG}"))?
            .try_into()
            .with_context(|| format!("{NSG} is not an XDP program"))?;
        nsg.load()
            .with_context(|| format!("the verifier rejected {NSG}"))?;
        if let Some(dir) = pin_dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating pin directory {}", dir.display()))?;
            // Global-data maps (.rodata, .bss) are internal, and bpffs refuses dots.
            for (name, map) in ebpf.maps().filter(|(name, _)| !name.starts_with('.')) {
                let path = dir.join(name);
                map.pin(&path)
                    .with_context(|| format!("pinning map {name} at {}", path.display()))?;
            }
        }
        Ok(Self {
            ebpf,
            namespace: namespace.to_owned(),
            pin_dir: pin_dir.map(Path::to_path_buf),
            tc_mode: None,
            owned: Vec::new(),
        })
    }

    /// Attaches `from_pod` to TC ingress of `interface`, the host side of a pod's veth in
    /// this node's namespace.
    pub fn attach_from_pod(&mut self, interface: &str) -> Result<()> {
        self.attach_tc(FROM_POD, interface)
    }

    /// Attaches `from_vnet` (TC ingress) to the node's uplink.
    pub fn attach_uplink(&mut self, interface: &str) -> Result<()> {
        self.attach_tc(FROM_VNET, interface)
    }

    /// Attaches `from_vnet` (TC ingress) to the node's Overlay tunnel device: what the
    /// tunnel decapsulates is delivered into pods, and replies from service backends on
    /// other nodes are translated back, as on the uplink.
    pub fn attach_overlay(&mut self, interface: &str) -> Result<()> {
        self.attach_tc(FROM_VNET, interface)
    }

    /// Attaches `nsg` (XDP) to the node's uplink.
    ///
    /// Only worth it with rules to enforce: any native XDP program on a veth moves its
    /// receive path off the fast skb path (measured here: 5.7 Gbit/s pod to pod across
    /// nodes with an empty `nsg` attached against 17.6 without it).
    pub fn attach_nsg(&mut self, interface: &str) -> Result<()> {
        let ebpf = &mut self.ebpf;
        let pin_dir = &self.pin_dir;
        netns::run_in(&self.namespace, move || {
            let nsg: &mut Xdp = ebpf.program_mut(NSG).context("nsg vanished")?.try_into()?;
            // Native XDP: veth supports it, and it runs before an skb is built.
            let link_id = nsg
                .attach(interface, XdpMode::default())
                .with_context(|| format!("attaching {NSG} (XDP) to {interface}"))?;
            if let Some(dir) = pin_dir {
                let link: FdLink = nsg.take_link(link_id)?.try_into()?;
                pin_link(link, &dir.join(format!("{NSG}_{interface}")))?;
            }
            Ok(())
        })
        .with_context(|| format!("in network namespace {}", self.namespace))
    }

    /// How this node's TC programs are attached; `None` before the first TC attach.
    pub fn tc_attach_mode(&self) -> Option<TcAttachMode> {
        self.tc_mode
    }

    fn attach_tc(&mut self, program: &str, interface: &str) -> Result<()> {
        let ebpf = &mut self.ebpf;
        let known_mode = self.tc_mode;
        let (mode, attachment) = netns::run_in(&self.namespace, move || {
            let mode = match known_mode {
                Some(mode) => mode,
                None => TcAttachMode::probe(interface)?,
            };
            let classifier: &mut SchedClassifier = ebpf
                .program_mut(program)
                .with_context(|| format!("{program} vanished from the loaded object"))?
                .try_into()?;
            let attachment = attach::attach_ingress(classifier, interface, mode)
                .with_context(|| format!("attaching {program}"))?;
            Ok((mode, attachment))
        })
        .with_context(|| format!("in network namespace {}", self.namespace))?;
        if self.tc_mode.is_none() {
            log::debug!("TC programs in {} attach as {mode}", self.namespace);
        }
        self.tc_mode = Some(mode);
        match (&self.pin_dir, attachment) {
            (Some(dir), TcAttachment::Link(link)) => {
                pin_link(link, &dir.join(format!("{program}_{interface}")))
            }
            // A netlink filter needs no pin to stay: the interface holds it (and its
            // program) until `down` deletes the namespace. Forgetting the value keeps
            // its drop from deleting the filter; it holds no fd, so nothing leaks.
            (Some(_), TcAttachment::Filter(filter)) => {
                std::mem::forget(filter);
                Ok(())
            }
            (None, attachment) => {
                self.owned.push(attachment);
                Ok(())
            }
        }
    }

    /// The `STATS` counters, summed over CPUs.
    pub fn stats(&self) -> Result<ReasonTotals> {
        let stats: PerCpuArray<_, _> = PerCpuArray::try_from(self.map(STATS_MAP)?)?;
        ReasonTotals::read(&stats)
    }

    pub(super) fn map(&self, name: &str) -> Result<&Map> {
        self.ebpf
            .map(name)
            .with_context(|| format!("the eBPF object has no map {name}"))
    }

    pub(super) fn map_mut(&mut self, name: &str) -> Result<&mut Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("the eBPF object has no map {name}"))
    }

    /// A program, for `BPF_PROG_TEST_RUN` on crafted frames: `from_pod` or `from_vnet`.
    pub fn classifier(&self, name: &str) -> Result<&SchedClassifier> {
        Ok(self
            .ebpf
            .program(name)
            .with_context(|| format!("the eBPF object has no program {name}"))?
            .try_into()?)
    }

    /// The `nsg` XDP program, for `BPF_PROG_TEST_RUN`.
    pub fn nsg_program(&self) -> Result<&Xdp> {
        Ok(self
            .ebpf
            .program(NSG)
            .with_context(|| format!("the eBPF object has no program {NSG}"))?
            .try_into()?)
    }
}

impl Drop for NodeDatapath {
    /// Detaches the owned netlink filters inside the node's namespace (aya deletes a
    /// filter in the namespace of the calling thread). If the namespace is gone, so are
    /// its interfaces and their filters: nothing is left to detach, and nothing may be
    /// deleted by interface index in another namespace.
    fn drop(&mut self) {
        if !self
            .owned
            .iter()
            .any(|a| matches!(a, TcAttachment::Filter(_)))
        {
            return;
        }
        let mut owned = std::mem::take(&mut self.owned);
        let detached = netns::run_in(&self.namespace, || {
            owned.clear();
            Ok(())
        });
        if let Err(e) = detached {
            log::debug!("not detaching TC filters in {}: {e:#}", self.namespace);
            for attachment in owned {
                std::mem::forget(attachment);
            }
        }
    }
}

fn pin_link(link: FdLink, path: &Path) -> Result<()> {
    link.pin(path)
        .with_context(|| format!("pinning a link at {}", path.display()))?;
    Ok(())
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it as aya-template does.
/// On newer kernels (memcg accounting) this is harmless, and failure is not fatal: the
/// load reports EPERM itself if the limit really is the problem.
fn raise_memlock_rlimit() {
    use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
    if let Err(err) = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY) {
        log::debug!("could not raise RLIMIT_MEMLOCK: {err}");
    }
}
