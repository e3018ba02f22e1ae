//! Privileged: the whole pipeline from Rust eBPF source to counters read back.
//! The object built by build.rs is loaded with aya, `from_pod` is attached to TC ingress
//! of a veth inside a test namespace, real frames are sent from the peer namespace, and
//! `STATS` must count exactly what was sent.

mod common;

use std::net::UdpSocket;

use aks_ebpf_common::{Endpoint, NodeConfig, Reason};
use aks_userspace::datapath::ebpf::{map_addr, NodeDatapath};
use aks_userspace::netns;
use common::{netns_list, require_privileges, send_raw, VethPair};

const DATAGRAMS: u64 = 10;
const PAYLOAD: usize = 100;
/// Ethernet (14) + IPv4 (20) + UDP (8) + payload: what TC ingress sees as skb->len.
const UDP_FRAME_LEN: u64 = (14 + 20 + 8 + PAYLOAD) as u64;

#[test]
fn from_pod_counts_real_frames_by_reason() {
    require_privileges();
    let pair = VethPair::create("stats");
    let (a, b) = (pair.a.clone(), pair.b.clone());

    let mut datapath = NodeDatapath::load(&b, None).expect("loading the eBPF object");
    // b plays the node: IPv4 for its address goes to its stack.
    datapath
        .set_config(NodeConfig {
            node_ip: map_addr(VethPair::B_IP.parse().expect("address")),
            ..Default::default()
        })
        .expect("writing CONFIG");
    // a plays the pod on b's end of the veth: its frames carry its own address.
    datapath
        .upsert_endpoint(
            VethPair::A_IP.parse().expect("address"),
            Endpoint {
                host_ifindex: netns::interface_index(&b, &pair.b_if).expect("ifindex"),
                host_mac: VethPair::B_MAC,
                ..Default::default()
            },
        )
        .expect("writing ENDPOINTS");
    datapath
        .attach_from_pod(&pair.b_if)
        .expect("attaching from_pod in namespace b");

    // Ten UDP datagrams a -> b. The first one triggers ARP, counted as non-IPv4.
    netns::run_in(&a, || {
        let socket = UdpSocket::bind((VethPair::A_IP, 0))?;
        for _ in 0..DATAGRAMS {
            socket.send_to(&[0x5a; PAYLOAD], (VethPair::B_IP, 9))?;
        }
        Ok(())
    })
    .expect("sending UDP from namespace a");

    // Two malformed IPv4 frames, written raw: one cut short inside the IPv4 header, one
    // with a header length of 4 words (below the minimum of 5).
    let truncated = ipv4_frame(0x45, 10);
    let bad_ihl = ipv4_frame(0x44, 20);
    netns::run_in(&a, || {
        send_raw(&pair.a_if, VethPair::B_MAC, &truncated)?;
        send_raw(&pair.a_if, VethPair::B_MAC, &bad_ihl)
    })
    .expect("sending raw frames from namespace a");

    // Frames cross the veth synchronously on send, but allow the softirq to finish.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let stats = datapath.stats().expect("reading STATS");
    for (reason, counter) in stats.iter() {
        eprintln!(
            "{:>20}: {} packets, {} bytes",
            reason.name(),
            counter.packets,
            counter.bytes
        );
    }

    let to_stack = stats.get(Reason::PassedToStack);
    assert_eq!(
        to_stack.packets, DATAGRAMS,
        "every UDP datagram to b's address goes to b's stack"
    );
    assert_eq!(
        to_stack.bytes,
        DATAGRAMS * UDP_FRAME_LEN,
        "bytes are counted from the Ethernet header"
    );
    assert!(
        stats.get(Reason::PassedNonIpv4).packets >= 1,
        "the ARP request that preceded the first datagram must be counted as non-IPv4"
    );
    let malformed = stats.get(Reason::DropMalformed);
    assert_eq!(
        malformed.packets, 2,
        "both malformed frames are dropped and counted"
    );
    assert_eq!(malformed.bytes, (truncated.len() + bad_ihl.len()) as u64);

    drop(datapath);
    drop(pair);
    let left: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| *n == a || *n == b)
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

/// An Ethernet frame to b's MAC with EtherType IPv4, whose first IPv4 byte is
/// `version_ihl`, carrying `ip_len` bytes after the Ethernet header.
fn ipv4_frame(version_ihl: u8, ip_len: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + ip_len);
    frame.extend_from_slice(&VethPair::B_MAC);
    frame.extend_from_slice(&[0x02, 0xaa, 0, 0, 0, 0x01]);
    frame.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0u8; ip_len];
    ip[0] = version_ihl;
    frame.extend_from_slice(&ip);
    frame
}
