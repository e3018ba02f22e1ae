//! What one network namespace should contain, independent of why: the layout module
//! derives these from the cluster plan, the builder applies them over netlink.

use std::net::Ipv4Addr;

/// A locally administered Ethernet address.
pub type Mac = [u8; 6];

/// One namespace: its name (carrying the cluster prefix), whether it forwards IPv4, the
/// veth pairs created from inside it, the bridges it holds, and the configuration of its
/// own interfaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceSpec {
    pub name: String,
    /// `net.ipv4.ip_forward`: routers (VNet, nodes) forward, hosts and pods do not.
    pub forwarding: bool,
    /// Veth pairs created from this namespace; each peer is moved into its namespace at
    /// creation, so no interface ever exists in the root namespace.
    pub veths: Vec<VethSpec>,
    /// Linux bridges created after the veths, with their ports enslaved; their addresses
    /// and state come from `interfaces` like any other interface's.
    pub bridges: Vec<BridgeSpec>,
    /// VXLAN tunnel endpoints created after the bridges (the Overlay between nodes).
    pub tunnels: Vec<VxlanSpec>,
    /// Interfaces of this namespace to configure (own veth ends and peers moved here).
    pub interfaces: Vec<InterfaceSpec>,
    pub routes: Vec<RouteSpec>,
    /// Static neighbour entries (e.g. a pod's gateway MAC), so no ARP trick is needed.
    pub neighbours: Vec<NeighbourSpec>,
}

impl NamespaceSpec {
    pub fn new(name: impl Into<String>, forwarding: bool) -> Self {
        Self {
            name: name.into(),
            forwarding,
            veths: Vec::new(),
            bridges: Vec::new(),
            tunnels: Vec::new(),
            interfaces: Vec::new(),
            routes: Vec::new(),
            neighbours: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VethSpec {
    pub name: String,
    pub mac: Mac,
    pub peer_namespace: String,
    pub peer_name: String,
    pub peer_mac: Mac,
}

/// A Linux bridge (kubenet's `cbr0`, legacy Azure CNI's `azure0`) and the interfaces of
/// its namespace that become its ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeSpec {
    pub name: String,
    /// Set explicitly so the bridge does not take (and change with) a port's MAC.
    pub mac: Mac,
    pub ports: Vec<String>,
    /// Hairpin mode on every port (`IFLA_BRPORT_MODE`), as the bridge CNI plugin sets
    /// with `hairpinMode: true`: a frame may leave by the port it came in on, so a pod
    /// can reach itself through a service address.
    pub hairpin: bool,
}

/// A VXLAN device over an underlay interface of its namespace, with one forwarding entry
/// per peer endpoint (tunnel MAC → peer underlay address), so no flooding or learning is
/// needed. Its addresses and state come from `interfaces`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub mac: Mac,
    pub vni: u32,
    /// UDP destination port of the encapsulation.
    pub port: u16,
    /// Source address of the outer header: the node address.
    pub local: Ipv4Addr,
    /// The interface the outer packets leave by (the node uplink).
    pub underlay: String,
    pub peers: Vec<TunnelPeer>,
}

/// Another endpoint of a tunnel: frames for `mac` are sent to `remote`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelPeer {
    pub mac: Mac,
    pub remote: Ipv4Addr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceSpec {
    pub name: String,
    /// Addresses with their prefix length.
    pub addresses: Vec<(Ipv4Addr, u8)>,
    /// Answer ARP for addresses routed elsewhere (the VNet router answers for every
    /// address in the subnet, as Azure's fabric does).
    pub proxy_arp: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub destination: Ipv4Addr,
    pub prefix_len: u8,
    /// Next hop, added `onlink`; `None` for a directly connected destination.
    pub gateway: Option<Ipv4Addr>,
    pub device: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighbourSpec {
    pub address: Ipv4Addr,
    pub mac: Mac,
    pub device: String,
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &Mac) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}
