//! Privileged: what the eBPF datapath refuses on a real cluster, each under the reason
//! that says why: a pod sending with an address that is not its own (it would claim a
//! NAT entry per spoofed source), and a pod's VLAN-tagged frame (the tag reaches TC in
//! the packet's metadata; translated, the frame would leave still tagged).

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;

use aks_ebpf_common::Reason;
use aks_userspace::datapath::ebpf::{read_pinned, read_pinned_flows};
use aks_userspace::netns;
use aks_userspace::state::ClusterState;
use common::cluster::*;
use common::{ip, require_privileges, send_raw};
use etherparse::{PacketBuilder, VlanId};

/// An address no pod holds, outside every range of the cluster.
const SPOOFED: Ipv4Addr = Ipv4Addr::new(10, 99, 1, 5);

#[test]
fn spoofed_sources_and_vlan_tags_from_a_pod_are_dropped_and_counted() {
    require_privileges();
    let name = cluster_name("rf");
    let _down = Down(name.clone());
    up_keep(&description(&name, "kubenet", "ebpf", 1, 1));
    let state = ClusterState::require(&name).expect("state");
    let node = &state.nodes[0];
    let pod = node.pods[0].namespace.clone();
    let internet = state.internet.address;
    let pins = Path::new("/sys/fs/bpf/aksnet").join(&name).join(&node.name);
    let count = |reason: Reason| {
        read_pinned(&pins.join("STATS"))
            .expect("pinned STATS")
            .get(reason)
            .packets
    };

    // A second address on the pod's eth0, used as the source toward the internet.
    ip(&[
        "-n",
        &pod,
        "addr",
        "add",
        &format!("{SPOOFED}/32"),
        "dev",
        "eth0",
    ]);
    let spoofed_before = count(Reason::DropSpoofedSource);
    netns::run_in(&pod, || {
        let socket = UdpSocket::bind((SPOOFED, 0))?;
        for _ in 0..3 {
            socket.send_to(&[0x5a; 32], (internet, 9))?;
        }
        Ok(())
    })
    .expect("sending from the spoofed address");
    assert_eq!(
        count(Reason::DropSpoofedSource) - spoofed_before,
        3,
        "every spoofed datagram dropped and counted"
    );
    let flows = read_pinned_flows(&pins.join("CONNTRACK")).expect("pinned CONNTRACK");
    assert!(
        flows
            .iter()
            .all(|(flow, _)| flow.src != aks_userspace::datapath::ebpf::map_addr(SPOOFED)),
        "no NAT entry for the spoofed source: {flows:?}"
    );

    // Tagged frames from the pod, written raw: the node's stack moves the tag into the
    // packet's metadata before TC sees the frame, as a VLAN device on a veth does.
    let pod_layout = &node.pods[0];
    let builder = PacketBuilder::ethernet2(pod_layout.mac, pod_layout.host_mac)
        .single_vlan(VlanId::try_new(100).expect("a VLAN id"))
        .ipv4(pod_layout.address.octets(), internet.octets(), 64)
        .udp(40000, 9);
    let mut tagged = Vec::new();
    builder
        .write(&mut tagged, &[0x5a; 32])
        .expect("a tagged frame");
    let (tagged_before, snat_before) = (
        count(Reason::DropVlanTagged),
        count(Reason::RedirectedUplinkSnat),
    );
    netns::run_in(&pod, || {
        for _ in 0..3 {
            send_raw("eth0", pod_layout.host_mac, &tagged)?;
        }
        Ok(())
    })
    .expect("sending tagged frames from the pod");
    assert_eq!(
        count(Reason::DropVlanTagged) - tagged_before,
        3,
        "every tagged frame dropped and counted"
    );
    assert_eq!(
        count(Reason::RedirectedUplinkSnat),
        snat_before,
        "nothing tagged was masqueraded"
    );
    aksnet_ok(&["down", &name]);
    assert_gone(&name);
}
