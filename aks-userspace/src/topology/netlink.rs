//! Applying a [`NamespaceSpec`] over rtnetlink from a thread inside the namespace: one
//! netlink connection per namespace, no `ip` processes.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use anyhow::{Context, Result};
use rtnetlink::packet_route::link::{InfoBridgePort, InfoData, InfoVeth, LinkMessage};
use rtnetlink::packet_route::neighbour::{NeighbourFlags, NeighbourState};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan,
    RouteMessageBuilder,
};

use super::spec::{format_mac, BridgeSpec, NamespaceSpec, VethSpec, VxlanSpec};
use crate::netns;

/// Configures the namespace `spec.name` as `spec` says. The namespace and the namespaces
/// of veth peers must already exist.
pub fn apply(spec: &NamespaceSpec) -> Result<()> {
    netns::run_in(&spec.name, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .context("starting a tokio runtime for netlink")?;
        runtime.block_on(apply_inside(spec))
    })
    .with_context(|| format!("configuring namespace {}", spec.name))
}

async fn apply_inside(spec: &NamespaceSpec) -> Result<()> {
    let (connection, handle, _) =
        rtnetlink::new_connection().context("opening a netlink socket")?;
    let connection = tokio::spawn(connection);
    let result = configure(&handle, spec).await;
    connection.abort();
    result
}

async fn configure(handle: &Handle, spec: &NamespaceSpec) -> Result<()> {
    set_sysctl(
        "net/ipv4/ip_forward",
        if spec.forwarding { "1" } else { "0" },
    )?;
    set_up(handle, "lo").await?;
    for veth in &spec.veths {
        add_veth(handle, veth).await?;
    }
    for bridge in &spec.bridges {
        add_bridge(handle, bridge).await?;
    }
    for tunnel in &spec.tunnels {
        add_vxlan(handle, tunnel).await?;
    }
    for iface in &spec.interfaces {
        let index = if_index(&iface.name)?;
        for (address, prefix_len) in &iface.addresses {
            handle
                .address()
                .add(index, IpAddr::V4(*address), *prefix_len)
                .execute()
                .await
                .with_context(|| format!("adding {address}/{prefix_len} to {}", iface.name))?;
        }
        if iface.proxy_arp {
            set_sysctl(&format!("net/ipv4/conf/{}/proxy_arp", iface.name), "1")?;
            // The kernel delays proxy replies to broadcast requests by up to 0.8 s
            // (`proxy_delay`); Azure's fabric answers at once, and a path through two
            // proxies would otherwise take seconds to resolve on its first packet.
            set_sysctl(&format!("net/ipv4/neigh/{}/proxy_delay", iface.name), "0")?;
        }
        set_up(handle, &iface.name).await?;
    }
    for route in &spec.routes {
        let mut message = RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .destination_prefix(route.destination, route.prefix_len)
            .output_interface(if_index(&route.device)?);
        if let Some(gateway) = route.gateway {
            message = message.gateway(gateway).onlink();
        }
        handle
            .route()
            .add(message.build())
            .execute()
            .await
            .with_context(|| {
                format!(
                    "adding route {}/{} via {:?} dev {}",
                    route.destination, route.prefix_len, route.gateway, route.device
                )
            })?;
    }
    for neighbour in &spec.neighbours {
        handle
            .neighbours()
            .add(if_index(&neighbour.device)?, IpAddr::V4(neighbour.address))
            .link_layer_address(&neighbour.mac)
            .state(NeighbourState::Permanent)
            .execute()
            .await
            .with_context(|| {
                format!(
                    "adding neighbour {} lladdr {} dev {}",
                    neighbour.address,
                    format_mac(&neighbour.mac),
                    neighbour.device
                )
            })?;
    }
    Ok(())
}

/// Creates the veth pair with both MACs set and the peer placed straight into its
/// namespace.
async fn add_veth(handle: &Handle, veth: &VethSpec) -> Result<()> {
    let peer_ns = File::open(netns::path(&veth.peer_namespace)).with_context(|| {
        format!(
            "opening namespace {} for veth peer {}",
            veth.peer_namespace, veth.peer_name
        )
    })?;
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(veth.peer_name.clone())
        .address(veth.peer_mac.to_vec())
        .setns_by_fd(peer_ns.as_raw_fd())
        .build();
    let message = LinkVeth::new(&veth.name, &veth.peer_name)
        .address(veth.mac.to_vec())
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    handle.link().add(message).execute().await.with_context(|| {
        format!(
            "creating veth {} with peer {} in {}",
            veth.name, veth.peer_name, veth.peer_namespace
        )
    })
}

/// Creates the link `message` describes (a `kind` named `name`); returns its index.
async fn add_link(handle: &Handle, message: LinkMessage, name: &str, kind: &str) -> Result<u32> {
    handle
        .link()
        .add(message)
        .execute()
        .await
        .with_context(|| format!("creating {kind} {name}"))?;
    if_index(name)
}

/// Creates the bridge and enslaves its ports (hairpin mode on each if asked). The
/// bridge's addresses and state are configured with the other interfaces.
async fn add_bridge(handle: &Handle, bridge: &BridgeSpec) -> Result<()> {
    let message = LinkMessageBuilder::<LinkBridge>::new(&bridge.name)
        .address(bridge.mac.to_vec())
        .build();
    let bridge_index = add_link(handle, message, &bridge.name, "bridge").await?;
    for port in &bridge.ports {
        let port_index = if_index(port)?;
        let enslave = LinkUnspec::new_with_index(port_index)
            .controller(bridge_index)
            .build();
        handle
            .link()
            .set(enslave)
            .execute()
            .await
            .with_context(|| format!("adding {port} to bridge {}", bridge.name))?;
        if bridge.hairpin {
            let hairpin = LinkBridgePort::new(port_index)
                .append_info_data(InfoBridgePort::HairpinMode(true))
                .build();
            // Port options travel in IFLA_LINKINFO, which only RTM_NEWLINK reads
            // (RTM_SETLINK ignores it silently): `change` sends a NEWLINK for it.
            handle
                .link()
                .change(hairpin)
                .execute()
                .await
                .with_context(|| {
                    format!("setting hairpin mode on port {port} of {}", bridge.name)
                })?;
        }
    }
    Ok(())
}

/// Creates the VXLAN device (learning off: every peer is known) and its forwarding
/// entries, `bridge fdb append MAC dev NAME dst REMOTE self permanent` in `ip` terms.
async fn add_vxlan(handle: &Handle, tunnel: &VxlanSpec) -> Result<()> {
    let message = LinkVxlan::new(&tunnel.name, tunnel.vni)
        .dev(if_index(&tunnel.underlay)?)
        .local(tunnel.local)
        .port(tunnel.port)
        .learning(false)
        .address(tunnel.mac.to_vec())
        .build();
    let index = add_link(handle, message, &tunnel.name, "VXLAN device").await?;
    for peer in &tunnel.peers {
        handle
            .neighbours()
            .add_bridge(index, &peer.mac)
            .destination(IpAddr::V4(peer.remote))
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .execute()
            .await
            .with_context(|| {
                format!(
                    "adding forwarding entry {} dst {} on {}",
                    format_mac(&peer.mac),
                    peer.remote,
                    tunnel.name
                )
            })?;
    }
    Ok(())
}

async fn set_up(handle: &Handle, name: &str) -> Result<()> {
    let message = LinkUnspec::new_with_index(if_index(name)?).up().build();
    handle
        .link()
        .set(message)
        .execute()
        .await
        .with_context(|| format!("setting {name} up"))
}

/// The index of `name` in the calling thread's namespace.
fn if_index(name: &str) -> Result<u32> {
    nix::net::if_::if_nametoindex(name)
        .with_context(|| format!("no interface {name} in this namespace"))
}

/// Writes a sysctl of the calling thread's network namespace (`/proc/sys/net` is
/// resolved against the namespace of the thread that opens it).
fn set_sysctl(key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).with_context(|| format!("writing {value} to {path}"))
}
