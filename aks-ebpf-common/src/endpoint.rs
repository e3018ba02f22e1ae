//! `ENDPOINTS`: the pods of this node (Cilium's `lxc` map). Key: pod IPv4 address in map
//! form (see [`crate::addr`]). A hit means "deliver into this pod's namespace".

/// Name of the map in the object and of its pin file.
pub const ENDPOINTS_MAP: &str = "ENDPOINTS";
/// Capacity: AKS allows at most 250 pods per node.
pub const ENDPOINTS_CAPACITY: u32 = 256;

/// A local pod: where its veth is and which MACs a frame delivered to it carries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// Index of the host side of the pod's veth (`lxcN`) in the node namespace; the
    /// target of `bpf_redirect_peer`, which lands the frame in the pod's `eth0`.
    pub host_ifindex: u32,
    /// Reserved for endpoint flags; zero today.
    pub flags: u32,
    /// The pod's `eth0` MAC: destination of frames delivered to it.
    pub pod_mac: [u8; 6],
    /// The host side's MAC (the pod's gateway): source of frames delivered to it.
    pub host_mac: [u8; 6],
}

const _: () = assert!(core::mem::size_of::<Endpoint>() == 20);
const _: () = assert!(core::mem::align_of::<Endpoint>() == 4);

#[cfg(feature = "user")]
// SAFETY: repr(C), no padding (asserted size 20 = 4 + 4 + 6 + 6), every bit pattern valid.
unsafe impl aya::Pod for Endpoint {}
