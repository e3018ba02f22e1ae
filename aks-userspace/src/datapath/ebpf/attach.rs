//! How a TC classifier is attached: a TCX link (Linux 6.6 and later) or, on kernels
//! without TCX (Debian 12's 6.1), a netlink `cls_bpf` filter on a `clsact` qdisc.
//!
//! The mode is found by asking the kernel, not by reading its version: a
//! `BPF_PROG_QUERY` for TCX ingress programs is answered on kernels that have TCX and
//! refused with `EINVAL` (unknown attach type) on those that do not. Distributions
//! backport, so a version number would be a guess.
//!
//! The two modes live differently:
//! - a TCX link is a BPF object: it lives while an fd or a pin holds it, so `up` pins it
//!   beside the maps and `down` detaches it by removing the pin directory;
//! - a netlink filter belongs to the interface: once made it stays (and holds its
//!   program) until it is deleted or the interface goes, which is exactly the cluster's
//!   lifetime, since `down` deletes the namespace the interface lives in. Nothing is
//!   pinned for it, so nothing is left in bpffs either.

use std::fmt;

use anyhow::{Context, Result};
use aya::programs::links::{FdLink, LinkOrder};
use aya::programs::tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcError};
use aya::programs::{ProgramError, SchedClassifier, TcAttachType};
use serde::Serialize;

/// How TC classifiers are attached on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TcAttachMode {
    /// A TCX link (`BPF_LINK_CREATE` with `BPF_TCX_INGRESS`), pinned in bpffs.
    Tcx,
    /// A `cls_bpf` filter in direct-action mode on the interface's `clsact` qdisc, made
    /// over netlink; the kernel keeps it until the interface is deleted.
    Netlink,
}

impl TcAttachMode {
    /// Asks the kernel, inside the current network namespace, whether it has TCX, by
    /// querying the TCX ingress programs of `interface`.
    pub fn probe(interface: &str) -> Result<Self> {
        match SchedClassifier::query_tcx(interface, TcAttachType::Ingress) {
            Ok(_) => Ok(Self::Tcx),
            Err(ProgramError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::EINVAL) =>
            {
                Ok(Self::Netlink)
            }
            Err(e) => Err(e).with_context(|| {
                format!("asking the kernel whether it has TCX (BPF_PROG_QUERY on {interface})")
            }),
        }
    }
}

impl fmt::Display for TcAttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcx => "tcx",
            Self::Netlink => "netlink (clsact qdisc)",
        })
    }
}

/// One TC attachment, taken out of the program so its owner decides how long it lives.
pub enum TcAttachment {
    /// A TCX link: pinned, it outlives this process; dropped, it detaches.
    Link(FdLink),
    /// A netlink filter. Dropping the value deletes the filter, over netlink in the
    /// *current* namespace, so it must be dropped inside the namespace it was made in
    /// (or forgotten, to leave the filter to the kernel).
    Filter(SchedClassifierLink),
}

/// Attaches `classifier` to TC ingress of `interface` (in the current namespace) in
/// `mode`, and hands the attachment to the caller.
pub fn attach_ingress(
    classifier: &mut SchedClassifier,
    interface: &str,
    mode: TcAttachMode,
) -> Result<TcAttachment> {
    let options = match mode {
        TcAttachMode::Tcx => TcAttachOptions::TcxOrder(LinkOrder::default()),
        TcAttachMode::Netlink => {
            add_clsact(interface)?;
            TcAttachOptions::Netlink(NlOptions::default())
        }
    };
    let link_id = classifier
        .attach_with_options(interface, TcAttachType::Ingress, options)
        .with_context(|| format!("attaching to TC ingress of {interface} ({mode})"))?;
    let link = classifier.take_link(link_id)?;
    Ok(match mode {
        TcAttachMode::Tcx => TcAttachment::Link(link.try_into()?),
        TcAttachMode::Netlink => TcAttachment::Filter(link),
    })
}

/// Adds the `clsact` qdisc that netlink TC filters hang from; one that is already there
/// (a second program on the same interface) is fine.
fn add_clsact(interface: &str) -> Result<()> {
    match tc::qdisc_add_clsact(interface) {
        Ok(()) => Ok(()),
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("adding a clsact qdisc to {interface}")),
    }
}
