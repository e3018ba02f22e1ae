//! `CONFIG`: one slot describing the node the programs run on.

/// Name of the map in the object and of its pin file.
pub const CONFIG_MAP: &str = "CONFIG";

/// `NodeConfig::pod_addressing`: pods hold VNet addresses (Azure CNI).
pub const POD_ADDRESSING_VNET: u32 = 0;
/// `NodeConfig::pod_addressing`: pods hold private addresses (kubenet): the VNet can
/// route them only inside the cluster (route table); elsewhere they need SNAT.
pub const POD_ADDRESSING_PRIVATE: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// The node's address in the node subnet (map form).
    pub node_ip: u32,
    /// Index of the uplink (`eth0` of the node namespace).
    pub uplink_ifindex: u32,
    /// `POD_ADDRESSING_*`.
    pub pod_addressing: u32,
    /// Number of rules in `NSG`, from slot 0 (first match wins).
    pub nsg_rules: u32,
    /// Source MAC of frames sent out of the uplink.
    pub uplink_mac: [u8; 6],
    /// Destination MAC of frames sent out of the uplink: the VNet gateway.
    pub gateway_mac: [u8; 6],
    /// Non-zero once userspace has written this slot.
    pub ready: u32,
    /// The port range SNAT allocates from (inclusive, host order).
    pub nat_port_min: u16,
    pub nat_port_max: u16,
}

const _: () = assert!(core::mem::size_of::<NodeConfig>() == 36);

#[cfg(feature = "user")]
// SAFETY: repr(C), no padding (4 × u32, 2 × [u8; 6], u32, 2 × u16 = 36 bytes); every bit pattern valid.
unsafe impl aya::Pod for NodeConfig {}
