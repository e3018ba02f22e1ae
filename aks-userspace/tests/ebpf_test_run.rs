//! Privileged: the kernel programs run on crafted frames with BPF_PROG_TEST_RUN against
//! seeded maps. Each case asserts the verdict, the reason it was counted under, and the
//! bytes that come out: MACs of the next hop, the TTL one lower, and an IPv4 checksum
//! that a full recomputation here (not the datapath's incremental helper) agrees with.

mod common;

use std::net::Ipv4Addr;

use aks_ebpf_common::config::{POD_ADDRESSING_PRIVATE, POD_ADDRESSING_VNET};
use aks_ebpf_common::nsg::{NSG_ALLOW, NSG_DENY};
use aks_ebpf_common::{
    addr, Endpoint, NodeConfig, NsgRule, Reason, Route, RouteKind, ROUTE_MASQUERADE,
};
use aks_userspace::ebpf::{map_addr, NodeDatapath};
use aya::programs::{TestRun, TestRunOptions};
use common::{require_privileges, VethPair};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const NODE: [u8; 4] = [10, 224, 0, 4];
const LOCAL_POD: [u8; 4] = [10, 224, 0, 6];
const REMOTE_POD: [u8; 4] = [10, 224, 0, 36];
const ON_PREM: [u8; 4] = [192, 168, 100, 10];
const INTERNET: [u8; 4] = [203, 0, 113, 10];

const UPLINK_MAC: [u8; 6] = [0x02, 0x02, 0, 0, 0, 0];
const GATEWAY_MAC: [u8; 6] = [0x02, 0x01, 0, 0, 0, 0];
const POD_MAC: [u8; 6] = [0x02, 0x04, 0, 0, 0, 1];
const HOST_MAC: [u8; 6] = [0x02, 0x03, 0, 0, 0, 1];
const SENDER_MAC: [u8; 6] = [0x02, 0x09, 0, 0, 0, 9];

/// A crafted frame.
struct FrameSpec {
    ether_type: u16,
    ihl_words: u8,
    ttl: u8,
    protocol: u8,
    src: [u8; 4],
    dst: [u8; 4],
    /// Flags and fragment offset word.
    frags: u16,
    dst_port: u16,
}

impl FrameSpec {
    fn udp(src: [u8; 4], dst: [u8; 4]) -> Self {
        Self {
            ether_type: 0x0800,
            ihl_words: 5,
            ttl: 64,
            protocol: 17,
            src,
            dst,
            frags: 0x4000,
            dst_port: 8080,
        }
    }

    fn tcp(src: [u8; 4], dst: [u8; 4], dst_port: u16) -> Self {
        Self {
            protocol: 6,
            dst_port,
            ..Self::udp(src, dst)
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&UPLINK_MAC);
        f.extend_from_slice(&SENDER_MAC);
        f.extend_from_slice(&self.ether_type.to_be_bytes());
        let ihl = usize::from(self.ihl_words) * 4;
        let l4 = if self.protocol == 6 { 20 } else { 8 };
        let mut ip = vec![0u8; ihl.max(20)];
        ip[0] = 0x40 | self.ihl_words;
        ip[2..4].copy_from_slice(&((ihl + l4 + 16) as u16).to_be_bytes());
        ip[6..8].copy_from_slice(&self.frags.to_be_bytes());
        ip[8] = self.ttl;
        ip[9] = self.protocol;
        ip[12..16].copy_from_slice(&self.src);
        ip[16..20].copy_from_slice(&self.dst);
        let check = ipv4_checksum(&ip[..ihl.max(20)]);
        ip[10..12].copy_from_slice(&check.to_be_bytes());
        f.extend_from_slice(&ip);
        let mut l4_header = vec![0u8; l4];
        l4_header[0..2].copy_from_slice(&40000u16.to_be_bytes());
        l4_header[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        f.extend_from_slice(&l4_header);
        f.extend_from_slice(&[0xab; 16]);
        f
    }
}

/// The IPv4 header checksum summed from scratch over `header` (its checksum field
/// zeroed first), independent of the datapath's incremental update.
fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut zeroed = header.to_vec();
    zeroed[10] = 0;
    zeroed[11] = 0;
    let mut sum: u32 = zeroed
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Checks an output frame: MACs, TTL, and a correct header checksum.
fn assert_routed(out: &[u8], dst_mac: [u8; 6], src_mac: [u8; 6], ttl: u8, case: &str) {
    assert_eq!(&out[0..6], &dst_mac, "{case}: destination MAC");
    assert_eq!(&out[6..12], &src_mac, "{case}: source MAC");
    assert_eq!(out[14 + 8], ttl, "{case}: TTL");
    let ihl = usize::from(out[14] & 0x0f) * 4;
    let header = &out[14..14 + ihl];
    let stored = u16::from_be_bytes([header[10], header[11]]);
    assert_eq!(stored, ipv4_checksum(header), "{case}: IPv4 checksum");
}

struct Harness {
    datapath: NodeDatapath,
    _pair: VethPair,
}

impl Harness {
    /// A loaded datapath with one local pod and the routes of an Azure CNI node.
    fn new(pod_addressing: u32) -> Self {
        require_privileges();
        let pair = VethPair::create("run");
        let mut datapath = NodeDatapath::load(&pair.b, None).expect("loading the eBPF object");
        datapath
            .set_config(NodeConfig {
                node_ip: addr::ipv4(NODE),
                uplink_ifindex: 77,
                pod_addressing,
                uplink_mac: UPLINK_MAC,
                gateway_mac: GATEWAY_MAC,
                ..Default::default()
            })
            .expect("CONFIG");
        datapath
            .upsert_endpoint(
                Ipv4Addr::from(LOCAL_POD),
                Endpoint {
                    host_ifindex: 55,
                    flags: 0,
                    pod_mac: POD_MAC,
                    host_mac: HOST_MAC,
                },
            )
            .expect("ENDPOINTS");
        let route = |kind: RouteKind, flags| Route {
            kind: kind as u32,
            next_hop: 0,
            flags,
        };
        for (net, len, r) in [
            (
                [0, 0, 0, 0],
                0,
                route(RouteKind::External, ROUTE_MASQUERADE),
            ),
            ([10, 224, 0, 0], 12, route(RouteKind::Vnet, 0)),
            ([192, 168, 100, 0], 24, route(RouteKind::OnPrem, 0)),
        ] {
            datapath
                .upsert_route(Ipv4Addr::from(net), len, r)
                .expect("ROUTES");
        }
        Self {
            datapath,
            _pair: pair,
        }
    }

    /// Runs `program` on `frame`; returns the verdict and the frame as it came out, and
    /// asserts the packet was counted exactly once, under `reason`.
    fn run(&self, program: &str, frame: &[u8], reason: Reason) -> (u32, Vec<u8>) {
        let before = self.datapath.stats().expect("STATS").get(reason).packets;
        let mut out = vec![0u8; frame.len() + 64];
        let result = if program == "nsg" {
            self.datapath
                .nsg_program()
                .expect("nsg")
                .test_run(TestRunOptions {
                    data_in: Some(frame),
                    data_out: Some(&mut out),
                    ..Default::default()
                })
        } else {
            self.datapath
                .classifier(program)
                .expect("classifier")
                .test_run(TestRunOptions {
                    data_in: Some(frame),
                    data_out: Some(&mut out),
                    ..Default::default()
                })
        }
        .unwrap_or_else(|e| panic!("test_run of {program}: {e:?}"));
        out.truncate(result.data_size_out as usize);
        let after = self.datapath.stats().expect("STATS").get(reason).packets;
        assert_eq!(
            after,
            before + 1,
            "{program}: counted under {}",
            reason.name()
        );
        (result.return_value, out)
    }
}

#[test]
fn from_pod_delivers_local_pods_to_their_peer_with_the_pod_macs() {
    let h = Harness::new(POD_ADDRESSING_VNET);
    let frame = FrameSpec::udp(REMOTE_POD, LOCAL_POD).bytes();
    let (verdict, out) = h.run("from_pod", &frame, Reason::RedirectedPeer);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_routed(&out, POD_MAC, HOST_MAC, 63, "local pod");
    assert_eq!(
        &out[14 + 12..14 + 20],
        &frame[14 + 12..14 + 20],
        "addresses untouched: no NAT"
    );
}

#[test]
fn from_pod_sends_everything_else_to_the_vnet_gateway() {
    let h = Harness::new(POD_ADDRESSING_VNET);
    for (case, dst) in [
        ("remote pod", REMOTE_POD),
        ("on-prem", ON_PREM),
        ("internet (Azure CNI: VNet-routable source)", INTERNET),
    ] {
        let frame = FrameSpec::udp(LOCAL_POD, dst).bytes();
        let (verdict, out) = h.run("from_pod", &frame, Reason::RedirectedUplink);
        assert_eq!(verdict, TC_ACT_REDIRECT, "{case}");
        assert_routed(&out, GATEWAY_MAC, UPLINK_MAC, 63, case);
    }
}

#[test]
fn from_pod_passes_traffic_for_the_node_and_non_ipv4() {
    let h = Harness::new(POD_ADDRESSING_VNET);
    let frame = FrameSpec::udp(LOCAL_POD, NODE).bytes();
    let (verdict, out) = h.run("from_pod", &frame, Reason::PassedToStack);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, frame, "a frame for the node's stack is not rewritten");
    let arp = FrameSpec {
        ether_type: 0x0806,
        ..FrameSpec::udp(LOCAL_POD, NODE)
    }
    .bytes();
    let (verdict, out) = h.run("from_pod", &arp, Reason::PassedNonIpv4);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, arp);
}

#[test]
fn from_pod_handles_options_fragments_ttl_and_malformed_headers() {
    let h = Harness::new(POD_ADDRESSING_VNET);
    let options = FrameSpec {
        ihl_words: 6,
        ..FrameSpec::udp(LOCAL_POD, REMOTE_POD)
    };
    let (verdict, out) = h.run("from_pod", &options.bytes(), Reason::RedirectedUplink);
    assert_eq!(
        verdict, TC_ACT_REDIRECT,
        "IP options are routed like any packet"
    );
    assert_routed(&out, GATEWAY_MAC, UPLINK_MAC, 63, "IP options");

    let fragment = FrameSpec {
        frags: 0x2000 | 100, // more fragments, offset 100 × 8
        ..FrameSpec::udp(LOCAL_POD, REMOTE_POD)
    };
    let (verdict, out) = h.run("from_pod", &fragment.bytes(), Reason::RedirectedUplink);
    assert_eq!(
        verdict, TC_ACT_REDIRECT,
        "fragments are routed (routing needs no L4 header)"
    );
    assert_routed(&out, GATEWAY_MAC, UPLINK_MAC, 63, "fragment");

    let last_hop = FrameSpec {
        ttl: 1,
        ..FrameSpec::udp(LOCAL_POD, REMOTE_POD)
    };
    let (verdict, _) = h.run("from_pod", &last_hop.bytes(), Reason::DropTtlExceeded);
    assert_eq!(verdict, TC_ACT_SHOT);

    let short_ihl = FrameSpec {
        ihl_words: 4,
        ..FrameSpec::udp(LOCAL_POD, REMOTE_POD)
    };
    let (verdict, _) = h.run("from_pod", &short_ihl.bytes(), Reason::DropMalformed);
    assert_eq!(verdict, TC_ACT_SHOT);

    let mut too_long_ihl = FrameSpec::udp(LOCAL_POD, REMOTE_POD).bytes();
    too_long_ihl.truncate(14 + 40);
    too_long_ihl[14] = 0x4f; // claims a 60-byte header in a 40-byte packet
    let (verdict, _) = h.run("from_pod", &too_long_ihl, Reason::DropMalformed);
    assert_eq!(verdict, TC_ACT_SHOT);
}

#[test]
fn kubenet_drops_what_needs_masquerade_until_snat_exists() {
    let h = Harness::new(POD_ADDRESSING_PRIVATE);
    let (verdict, _) = h.run(
        "from_pod",
        &FrameSpec::udp(LOCAL_POD, INTERNET).bytes(),
        Reason::DropNeedsMasquerade,
    );
    assert_eq!(
        verdict, TC_ACT_SHOT,
        "a private pod source must not reach the internet un-NATed"
    );
    let (verdict, _) = h.run(
        "from_pod",
        &FrameSpec::udp(LOCAL_POD, REMOTE_POD).bytes(),
        Reason::RedirectedUplink,
    );
    assert_eq!(
        verdict, TC_ACT_REDIRECT,
        "inside the non-masquerade CIDRs pod addresses travel as they are"
    );
}

#[test]
fn without_config_the_datapath_drops_and_counts() {
    require_privileges();
    let pair = VethPair::create("cfg");
    let datapath = NodeDatapath::load(&pair.b, None).expect("loading");
    let h = Harness {
        datapath,
        _pair: pair,
    };
    let (verdict, _) = h.run(
        "from_pod",
        &FrameSpec::udp(LOCAL_POD, REMOTE_POD).bytes(),
        Reason::DropNoConfig,
    );
    assert_eq!(verdict, TC_ACT_SHOT);
}

#[test]
fn from_vnet_delivers_local_pods_and_passes_the_rest() {
    let h = Harness::new(POD_ADDRESSING_VNET);
    let (verdict, out) = h.run(
        "from_vnet",
        &FrameSpec::tcp(ON_PREM, LOCAL_POD, 80).bytes(),
        Reason::RedirectedPeer,
    );
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_routed(&out, POD_MAC, HOST_MAC, 63, "from the VNet to a local pod");
    let frame = FrameSpec::tcp(ON_PREM, NODE, 22).bytes();
    let (verdict, out) = h.run("from_vnet", &frame, Reason::PassedToStack);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, frame);
}

#[test]
fn nsg_first_match_wins_and_no_match_allows() {
    let mut h = Harness::new(POD_ADDRESSING_VNET);
    let tcp_8080 = |action, src: Option<([u8; 4], u32)>| {
        let (src_addr, src_mask) = src.map_or((0, 0), |(a, p)| {
            (addr::ipv4(a) & addr::netmask(p), addr::netmask(p))
        });
        NsgRule {
            src_addr,
            src_mask,
            dst_addr: map_addr(Ipv4Addr::new(10, 224, 0, 0)),
            dst_mask: addr::netmask(24),
            port_lo: 8080,
            port_hi: 8080,
            protocol: 6,
            action,
            _pad: [0; 2],
        }
    };
    h.datapath
        .set_nsg_rules(&[
            tcp_8080(NSG_ALLOW, Some((ON_PREM, 24))),
            tcp_8080(NSG_DENY, None),
        ])
        .expect("NSG");
    let (verdict, _) = h.run(
        "nsg",
        &FrameSpec::tcp(ON_PREM, LOCAL_POD, 8080).bytes(),
        Reason::NsgAllowed,
    );
    assert_eq!(
        verdict, XDP_PASS,
        "the higher-priority allow for on-prem matches first"
    );
    let (verdict, _) = h.run(
        "nsg",
        &FrameSpec::tcp(INTERNET, LOCAL_POD, 8080).bytes(),
        Reason::DropNsgDenied,
    );
    assert_eq!(verdict, XDP_DROP, "everyone else is denied port 8080");
    let (verdict, _) = h.run(
        "nsg",
        &FrameSpec::tcp(INTERNET, LOCAL_POD, 8081).bytes(),
        Reason::NsgAllowed,
    );
    assert_eq!(verdict, XDP_PASS, "another port matches no rule: allowed");
    let (verdict, _) = h.run(
        "nsg",
        &FrameSpec::udp(INTERNET, LOCAL_POD).bytes(),
        Reason::NsgAllowed,
    );
    assert_eq!(verdict, XDP_PASS, "UDP to 8080 matches no TCP rule");
    let mut cut = FrameSpec::tcp(INTERNET, LOCAL_POD, 8080).bytes();
    cut.truncate(14 + 20 + 2);
    let (verdict, _) = h.run("nsg", &cut, Reason::DropMalformed);
    assert_eq!(
        verdict, XDP_DROP,
        "a TCP header cut before its ports is malformed"
    );
}
