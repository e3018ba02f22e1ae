//! ClusterIP load balancing (kube-proxy replacement), Cilium style: `SERVICES` holds
//! one master slot per frontend (VIP, port, protocol) with the backend count and a
//! reverse-NAT id, and one slot per backend naming a `BACKENDS` entry; `REV_NAT` maps the
//! id back to the frontend for replies. A new flow picks a random slot; `LB_FLOWS`
//! keeps the choice so every packet of the flow reaches the same backend, and
//! `LB_REPLIES` finds the frontend for the backend's replies.

pub const SERVICES_MAP: &str = "SERVICES";
pub const BACKENDS_MAP: &str = "BACKENDS";
pub const REV_NAT_MAP: &str = "REV_NAT";
pub const LB_FLOWS_MAP: &str = "LB_FLOWS";
pub const LB_REPLIES_MAP: &str = "LB_REPLIES";

/// Compiled-in capacities: frontends × (1 + backends) slots, 10,000 services with a few
/// backends each. `aksnet up` sizes the maps from the cluster description at load time
/// (see `plan::maps` in aks-userspace).
pub const SERVICES_CAPACITY: u32 = 65_536;
pub const BACKENDS_CAPACITY: u32 = 65_536;
pub const REV_NAT_CAPACITY: u32 = 16_384;
/// Load-balanced flows per node (affinity) and their reply keys.
pub const LB_FLOWS_CAPACITY: u32 = 65_536;

/// The source address a pod's packets to itself through a ClusterIP get (hairpin): a
/// pod cannot accept a packet from its own address on its interface, so the datapath
/// SNATs it to this link-local address, as Cilium uses a loopback address.
pub const HAIRPIN_SOURCE: [u8; 4] = [169, 254, 42, 1];

/// Key of `SERVICES`: the frontend and a slot (0 = master).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    /// ClusterIP, map form (see [`crate::addr`]).
    pub vip: u32,
    /// Port, host order.
    pub port: u16,
    pub slot: u16,
    pub protocol: u8,
    pub _pad: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<ServiceKey>() == 12);

impl ServiceKey {
    pub const fn new(vip: u32, port: u16, protocol: u8, slot: u16) -> Self {
        Self {
            vip,
            port,
            slot,
            protocol,
            _pad: [0; 3],
        }
    }
}

/// Value of `SERVICES`: the master slot carries `count` and `rev_nat_id`; backend slots
/// carry `backend_id` (the frontend's reverse-NAT id in the upper 32 bits, the slot in
/// the lower: one id per frontend and slot, for any number of frontends).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceSlot {
    pub backend_id: u64,
    pub rev_nat_id: u32,
    pub count: u16,
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<ServiceSlot>() == 16);

/// The `BACKENDS` key of a frontend's backend slot.
pub const fn backend_id(rev_nat_id: u32, slot: u16) -> u64 {
    (rev_nat_id as u64) << 32 | slot as u64
}

/// Value of `BACKENDS` (key: backend id, `u64`, see [`backend_id`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbBackend {
    /// Pod address, map form.
    pub addr: u32,
    /// targetPort, host order.
    pub port: u16,
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<LbBackend>() == 8);

/// Value of `REV_NAT` (key: reverse-NAT id, `u32`): the frontend replies come from.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevNat {
    pub vip: u32,
    pub port: u16,
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<RevNat>() == 8);

/// Value of `LB_FLOWS` (key: the client's flow to the frontend, a `FlowKey`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbFlow {
    pub backend_addr: u32,
    pub backend_port: u16,
    pub _pad0: u16,
    pub rev_nat_id: u32,
    /// TCP flags the client sent so far, ORed (the GC expires closed flows sooner).
    pub tcp_flags: u8,
    pub _pad: [u8; 3],
    /// `bpf_ktime_get_ns()` of the last packet (for the GC).
    pub last_seen_ns: u64,
}

const _: () = assert!(core::mem::size_of::<LbFlow>() == 24);

impl LbFlow {
    /// The key of `LB_REPLIES` for the flow `client_flow` was given this backend: the
    /// backend answers whoever it saw, the client or (a pod reaching itself) the
    /// hairpin address.
    pub fn reply_key(&self, client_flow: &crate::FlowKey) -> crate::FlowKey {
        let client = if self.backend_addr == client_flow.src {
            u32::from_ne_bytes(HAIRPIN_SOURCE)
        } else {
            client_flow.src
        };
        crate::FlowKey::new(
            self.backend_addr,
            client,
            self.backend_port,
            client_flow.src_port,
            client_flow.protocol,
        )
    }

    /// Which GC timeout applies (TCP after FIN/RST closes sooner).
    pub fn timeout_class(&self, protocol: u8) -> crate::conntrack::CtTimeout {
        use crate::conntrack::{CtTimeout, PROTO_TCP, TCP_FIN, TCP_RST};
        if protocol != PROTO_TCP {
            CtTimeout::Datagram
        } else if self.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
            CtTimeout::TcpClosing
        } else {
            CtTimeout::TcpEstablished
        }
    }
}

/// Value of `LB_REPLIES` (key: the backend's reply flow as it leaves the backend, a
/// `FlowKey`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbReply {
    pub rev_nat_id: u32,
    /// The client's address: a hairpin reply (to `HAIRPIN_SOURCE`) goes back to it.
    pub client: u32,
    /// `bpf_ktime_get_ns()` of the last packet (for the GC).
    pub last_seen_ns: u64,
}

const _: () = assert!(core::mem::size_of::<LbReply>() == 16);

// SAFETY (all): repr(C), explicit padding, sizes asserted; every bit pattern valid.
crate::names::plain_data!(ServiceKey, ServiceSlot, LbBackend, RevNat, LbFlow, LbReply);
