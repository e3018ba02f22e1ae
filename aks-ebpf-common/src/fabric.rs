//! `FABRIC_ROUTES`: the VNet's route table as the fabric forwarder (`fabric`, TC ingress
//! on the vnet namespace's node links) applies it. An LPM trie keyed by IPv4 prefix (map
//! form, see [`crate::addr`]); a hit names the node link the destination lives behind.
//!
//! Only VNet-internal destinations are here (node addresses, Azure CNI pod addresses,
//! kubenet's UDR /24s): a miss hands the packet to the vnet namespace's stack, whose
//! routes and iptables rules (internet, on-prem, load balancer, NAT gateway, NSG) apply
//! as before.

/// Name of the map in the object and of its pin file.
pub const FABRIC_ROUTES_MAP: &str = "FABRIC_ROUTES";
/// Capacity: a node /32 per node, a pod /32 per Azure CNI pod or a /24 per kubenet node.
/// `aksnet up` sizes it from the plan; this is the object's default.
pub const FABRIC_ROUTES_CAPACITY: u32 = 4096;

/// Source ports (TCP, UDP) the forwarder never takes: Kubernetes' NodePort range
/// (`--service-node-port-range`'s default, `model::loadbalancer::NODE_PORT_RANGE`).
/// A node's reply from a node port may belong to a flow the fabric's load balancer
/// translated (DNAT to the node port): its conntrack entry must see the reply to
/// translate it back, so such packets take the stack.
pub const FABRIC_TRACKED_SOURCE_PORTS: (u16, u16) = (30000, 32767);

/// Where a VNet destination lives: the vnet namespace's end of a node link.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FabricHop {
    /// Index of the vnet namespace's end of the link (`nodeN`): the target of
    /// `bpf_redirect_peer`, which lands the frame in the node's uplink.
    pub ifindex: u32,
    /// That end's MAC (the subnet gateway's on this link): the frame's new source.
    pub gateway_mac: [u8; 6],
    /// The node uplink's MAC: the frame's new destination.
    pub node_mac: [u8; 6],
}

const _: () = assert!(core::mem::size_of::<FabricHop>() == 16);
const _: () = assert!(core::mem::align_of::<FabricHop>() == 4);

#[cfg(feature = "user")]
// SAFETY: repr(C), no padding (asserted size 16 = 4 + 6 + 6), every bit pattern valid.
unsafe impl aya::Pod for FabricHop {}

/// Whether a TCP or UDP packet from `source_port` must take the stack (see
/// [`FABRIC_TRACKED_SOURCE_PORTS`]).
#[inline(always)]
pub const fn is_tracked_source_port(source_port: u16) -> bool {
    source_port >= FABRIC_TRACKED_SOURCE_PORTS.0 && source_port <= FABRIC_TRACKED_SOURCE_PORTS.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ports_are_tracked_ephemeral_ports_are_not() {
        assert!(is_tracked_source_port(30000));
        assert!(is_tracked_source_port(32767));
        assert!(!is_tracked_source_port(29999));
        assert!(!is_tracked_source_port(32768));
        assert!(!is_tracked_source_port(5201));
    }
}
