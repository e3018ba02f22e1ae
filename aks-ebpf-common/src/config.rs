//! `CONFIG`: one slot describing the node the programs run on.

/// Name of the map in the object and of its pin file.
pub const CONFIG_MAP: &str = "CONFIG";

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// The node's address in the node subnet (map form).
    pub node_ip: u32,
    /// Index of the uplink (`eth0` of the node namespace).
    pub uplink_ifindex: u32,
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
    /// The service CIDR (map form, network and netmask, see [`crate::addr`]): a later
    /// fragment into it cannot be load-balanced (no ports) and is dropped as such.
    pub service_net: u32,
    pub service_mask: u32,
}

const _: () = assert!(core::mem::size_of::<NodeConfig>() == 40);

impl NodeConfig {
    /// Whether `addr` (map form) lies in the service CIDR.
    #[inline(always)]
    pub fn is_service_address(&self, addr: u32) -> bool {
        self.service_mask != 0 && addr & self.service_mask == self.service_net
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), no padding (3 × u32, 2 × [u8; 6], u32, 2 × u16, 2 × u32 = 40 bytes);
// every bit pattern valid.
unsafe impl aya::Pod for NodeConfig {}
