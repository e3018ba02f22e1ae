//! NodePort and LoadBalancer services on the eBPF datapath (kube-proxy replacement for
//! traffic from outside the cluster), Cilium style. The fabric's load balancer DNATs a
//! frontend to `nodeIP:nodePort` and keeps the client's address; `from_vnet` takes it
//! from there:
//!
//! - `NODEPORTS` holds, per node port and protocol, a master slot (slot 0: how many
//!   backends this node may pick and the `externalTrafficPolicy`) and one slot per
//!   backend. With `Local` a node lists only its own backends (none: the flow is
//!   dropped, as kube-proxy's KUBE-EXTERNAL-SERVICES drops it); with `Cluster` all.
//! - `NODEPORT_FLOWS` keeps the backend (and SNAT port) each client flow was given, so
//!   a flow sticks to it.
//! - `NODEPORT_REPLIES` finds, from a reply as it reaches this node, the client and
//!   node port it goes back to: from a local backend straight (the client's address was
//!   kept), or from a backend on another node to `nodeIP:snatPort` (SNATed for
//!   `Cluster`, so the reply comes back through this node and leaves as the fabric
//!   expects it).
//!
//! Both flow maps are LRU (as Cilium's own connection tables): the oldest flows make
//! room for new ones, so no garbage collector is needed; a claimed SNAT port is free
//! again once its reply entry is evicted.

pub const NODEPORTS_MAP: &str = "NODEPORTS";
pub const NODEPORT_FLOWS_MAP: &str = "NODEPORT_FLOWS";
pub const NODEPORT_REPLIES_MAP: &str = "NODEPORT_REPLIES";

/// Node port slots: NodePort services × (1 + backends).
pub const NODEPORTS_CAPACITY: u32 = 16_384;
/// Flows from outside per node (and as many reply keys).
pub const NODEPORT_FLOWS_CAPACITY: u32 = 65_536;

/// Master slot flag: `externalTrafficPolicy: Local` (only this node's backends are
/// listed, and the client's address is kept).
pub const NODEPORT_LOCAL: u16 = 1;

/// Key of `NODEPORTS`: the node port and a slot (0 = master).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodePortKey {
    /// Node port, host order.
    pub port: u16,
    pub slot: u16,
    pub protocol: u8,
    pub _pad: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<NodePortKey>() == 8);

impl NodePortKey {
    pub const fn new(port: u16, protocol: u8, slot: u16) -> Self {
        Self {
            port,
            slot,
            protocol,
            _pad: [0; 3],
        }
    }
}

/// Value of `NODEPORTS`. Master slot: `count` backend slots follow, `flags` holds
/// [`NODEPORT_LOCAL`]. Backend slot: the backend's pod address (map form) and
/// targetPort (host order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodePortSlot {
    pub backend_addr: u32,
    pub backend_port: u16,
    pub count: u16,
    pub flags: u16,
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<NodePortSlot>() == 12);

/// Value of `NODEPORT_FLOWS` (key: the client's flow to `nodeIP:nodePort`, a
/// `FlowKey`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodePortFlow {
    pub backend_addr: u32,
    pub backend_port: u16,
    /// The node-address port the flow was SNATed to; 0 when it was not (a local
    /// backend: the client's address is kept).
    pub snat_port: u16,
}

const _: () = assert!(core::mem::size_of::<NodePortFlow>() == 8);

impl NodePortFlow {
    /// The key of `NODEPORT_REPLIES` for `client_flow` given this backend (and node
    /// address, for a SNATed flow): the backend answers whoever it saw.
    pub const fn reply_key(&self, client_flow: &crate::FlowKey) -> crate::FlowKey {
        if self.snat_port == 0 {
            crate::FlowKey::new(
                self.backend_addr,
                client_flow.src,
                self.backend_port,
                client_flow.src_port,
                client_flow.protocol,
            )
        } else {
            crate::FlowKey::new(
                self.backend_addr,
                client_flow.dst,
                self.backend_port,
                self.snat_port,
                client_flow.protocol,
            )
        }
    }
}

/// Value of `NODEPORT_REPLIES` (key: a backend's reply as it reaches this node): the
/// reply leaves as `nodeIP:node_port → client:client_port`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodePortReply {
    pub client_addr: u32,
    pub client_port: u16,
    pub node_port: u16,
    /// [`REPLY_OPENING`] while the flow's TCP handshake through the node port is under
    /// way.
    pub flags: u16,
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<NodePortReply>() == 12);

/// `NodePortReply::flags`: a client's SYN went through the node port and the backend
/// has not yet sent anything past its SYN-ACK. Only then is a SYN-ACK on the reply
/// tuple this flow's; one without it answers a connection that reached the backend by
/// another path and reuses the tuple of a closed node port flow.
pub const REPLY_OPENING: u16 = 1;

// SAFETY (all): repr(C), explicit padding, sizes asserted; every bit pattern valid.
crate::names::plain_data!(NodePortKey, NodePortSlot, NodePortFlow, NodePortReply);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FlowKey;

    #[test]
    fn reply_keys_follow_the_translation() {
        let client = FlowKey::new(1, 2, 40000, 30080, 6);
        let local = NodePortFlow {
            backend_addr: 9,
            backend_port: 8080,
            snat_port: 0,
        };
        // A local backend answers the client itself.
        assert_eq!(local.reply_key(&client), FlowKey::new(9, 1, 8080, 40000, 6));
        let remote = NodePortFlow {
            snat_port: 41000,
            ..local
        };
        // A remote backend answers the node address and the SNAT port.
        assert_eq!(
            remote.reply_key(&client),
            FlowKey::new(9, 2, 8080, 41000, 6)
        );
    }
}
