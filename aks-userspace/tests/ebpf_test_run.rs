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
use aks_userspace::datapath::ebpf::{map_addr, NodeDatapath};
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
const NAT_PORTS: (u16, u16) = (10000, 32767);

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
    /// TCP/UDP ports; for ICMP echo `src_port` is the identifier.
    src_port: u16,
    dst_port: u16,
    /// ICMP type (8 echo request, 0 echo reply).
    icmp_type: u8,
    /// Leave the UDP checksum 0 ("none").
    no_udp_checksum: bool,
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
            src_port: 40000,
            dst_port: 8080,
            icmp_type: 0,
            no_udp_checksum: false,
        }
    }

    fn icmp_echo(src: [u8; 4], dst: [u8; 4], icmp_type: u8, id: u16) -> Self {
        Self {
            protocol: 1,
            icmp_type,
            src_port: id,
            dst_port: 0,
            ..Self::udp(src, dst)
        }
    }

    fn ports(self, src_port: u16, dst_port: u16) -> Self {
        Self {
            src_port,
            dst_port,
            ..self
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
        ip[2..4].copy_from_slice(&((ihl.max(20) + l4 + 16) as u16).to_be_bytes());
        ip[6..8].copy_from_slice(&self.frags.to_be_bytes());
        ip[8] = self.ttl;
        ip[9] = self.protocol;
        ip[12..16].copy_from_slice(&self.src);
        ip[16..20].copy_from_slice(&self.dst);
        let check = ipv4_checksum(&ip[..ihl.max(20)]);
        ip[10..12].copy_from_slice(&check.to_be_bytes());
        f.extend_from_slice(&ip);
        let mut segment = vec![0u8; l4];
        if self.protocol == 1 {
            segment[0] = self.icmp_type;
            segment[4..6].copy_from_slice(&self.src_port.to_be_bytes());
            segment[6..8].copy_from_slice(&1u16.to_be_bytes());
        } else {
            segment[0..2].copy_from_slice(&self.src_port.to_be_bytes());
            segment[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        }
        if self.protocol == 6 {
            segment[12] = 5 << 4; // data offset: 5 words
            segment[13] = 0x02; // SYN
        }
        if self.protocol == 17 {
            segment[4..6].copy_from_slice(&((l4 + 16) as u16).to_be_bytes());
        }
        segment.extend_from_slice(&[0xab; 16]);
        let checksum_at = match self.protocol {
            6 => Some(16),
            17 if !self.no_udp_checksum => Some(6),
            1 => Some(2),
            _ => None,
        };
        if let Some(at) = checksum_at {
            let sum = l4_sum(self.protocol, self.src, self.dst, &segment);
            segment[at..at + 2].copy_from_slice(&(!sum).to_be_bytes());
        }
        if self.ihl_words >= 5 {
            f.extend_from_slice(&segment);
        } else {
            f.extend_from_slice(&segment[..l4]);
        }
        f
    }
}

/// One's complement sum of `data` (folded, not inverted).
fn ones_complement_sum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The sum an L4 checksum covers: for TCP and UDP the pseudo-header and the segment,
/// for ICMP the message alone. Summed from scratch here, independent of the datapath.
fn l4_sum(protocol: u8, src: [u8; 4], dst: [u8; 4], segment: &[u8]) -> u16 {
    let mut data = Vec::new();
    if protocol != 1 {
        data.extend_from_slice(&src);
        data.extend_from_slice(&dst);
        data.extend_from_slice(&[0, protocol]);
        data.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    }
    data.extend_from_slice(segment);
    ones_complement_sum(&data)
}

/// Whether the L4 checksum of an output frame verifies (sums to 0xffff with itself).
fn assert_l4_checksum(out: &[u8], case: &str) {
    let ihl = usize::from(out[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([out[16], out[17]]));
    let protocol = out[14 + 9];
    let src: [u8; 4] = out[26..30].try_into().expect("4 bytes");
    let dst: [u8; 4] = out[30..34].try_into().expect("4 bytes");
    let segment = &out[14 + ihl..14 + total];
    assert_eq!(
        l4_sum(protocol, src, dst, segment),
        0xffff,
        "{case}: L4 checksum"
    );
}

/// Source (or destination) address and port of an output frame.
fn endpoint_of(out: &[u8], source: bool) -> ([u8; 4], u16) {
    let ihl = usize::from(out[14] & 0x0f) * 4;
    let l4 = 14 + ihl;
    let (addr_at, port_at) = if source { (26, l4) } else { (30, l4 + 2) };
    let port_at = if out[14 + 9] == 1 { l4 + 4 } else { port_at };
    (
        out[addr_at..addr_at + 4].try_into().expect("4 bytes"),
        u16::from_be_bytes([out[port_at], out[port_at + 1]]),
    )
}

/// The IPv4 header checksum summed from scratch over `header` (its checksum field
/// zeroed first), independent of the datapath's incremental update.
fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut zeroed = header.to_vec();
    zeroed[10] = 0;
    zeroed[11] = 0;
    !ones_complement_sum(&zeroed)
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
        Self::with_capacity(pod_addressing, 1024)
    }

    /// As `new`, with room for `flows` masqueraded flows.
    fn with_capacity(pod_addressing: u32, flows: u32) -> Self {
        require_privileges();
        let pair = VethPair::create("run");
        let mut datapath = NodeDatapath::load_with_capacity(&pair.b, None, flows)
            .expect("loading the eBPF object");
        datapath
            .set_config(NodeConfig {
                node_ip: addr::ipv4(NODE),
                uplink_ifindex: 77,
                pod_addressing,
                uplink_mac: UPLINK_MAC,
                gateway_mac: GATEWAY_MAC,
                nat_port_min: NAT_PORTS.0,
                nat_port_max: NAT_PORTS.1,
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
fn from_pod_sends_the_vnet_and_on_prem_to_the_gateway_untranslated() {
    let h = Harness::new(POD_ADDRESSING_VNET);
    for (case, dst) in [
        ("remote pod", REMOTE_POD),
        ("on-prem (non-masquerade)", ON_PREM),
    ] {
        let frame = FrameSpec::tcp(LOCAL_POD, dst, 80).bytes();
        let (verdict, out) = h.run("from_pod", &frame, Reason::RedirectedUplink);
        assert_eq!(verdict, TC_ACT_REDIRECT, "{case}");
        assert_routed(&out, GATEWAY_MAC, UPLINK_MAC, 63, case);
        assert_eq!(&out[26..34], &frame[26..34], "{case}: addresses untouched");
        assert_eq!(&out[34..38], &frame[34..38], "{case}: ports untouched");
        assert_l4_checksum(&out, case);
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

/// SNATs `frame` (a pod's packet to the internet) and checks the rewrite; returns the
/// NAT port chosen.
fn assert_snat(h: &Harness, frame: &[u8], case: &str) -> u16 {
    let (verdict, out) = h.run("from_pod", frame, Reason::RedirectedUplinkSnat);
    assert_eq!(verdict, TC_ACT_REDIRECT, "{case}");
    assert_routed(&out, GATEWAY_MAC, UPLINK_MAC, 63, case);
    let (src, port) = endpoint_of(&out, true);
    assert_eq!(src, NODE, "{case}: the source is now the node");
    assert!(
        (NAT_PORTS.0..=NAT_PORTS.1).contains(&port),
        "{case}: port {port} from the NAT range"
    );
    // (For ICMP the "port" read at both ends is the one identifier, rewritten.)
    let (dst, dst_port) = endpoint_of(&out, false);
    assert_eq!(
        dst,
        endpoint_of(frame, false).0,
        "{case}: destination address untouched"
    );
    if out[14 + 9] != 1 {
        assert_eq!(
            dst_port,
            endpoint_of(frame, false).1,
            "{case}: destination port untouched"
        );
    }
    assert_l4_checksum(&out, case);
    port
}

#[test]
fn snat_rewrites_tcp_udp_and_icmp_echo_with_valid_checksums() {
    for addressing in [POD_ADDRESSING_PRIVATE, POD_ADDRESSING_VNET] {
        let h = Harness::new(addressing);
        assert_snat(
            &h,
            &FrameSpec::tcp(LOCAL_POD, INTERNET, 443).bytes(),
            "TCP SYN",
        );
        assert_snat(&h, &FrameSpec::udp(LOCAL_POD, INTERNET).bytes(), "UDP");
        assert_snat(
            &h,
            &FrameSpec::icmp_echo(LOCAL_POD, INTERNET, 8, 0x1234).bytes(),
            "ICMP echo",
        );
        let kept = assert_snat(
            &h,
            &FrameSpec::tcp(LOCAL_POD, INTERNET, 443)
                .ports(20000, 443)
                .bytes(),
            "in-range port",
        );
        assert_eq!(kept, 20000, "a free original port inside the range is kept");
        let no_checksum = FrameSpec {
            no_udp_checksum: true,
            ..FrameSpec::udp(LOCAL_POD, INTERNET).ports(41000, 53)
        };
        let (_, out) = h.run(
            "from_pod",
            &no_checksum.bytes(),
            Reason::RedirectedUplinkSnat,
        );
        assert_eq!(
            &out[14 + 20 + 6..14 + 20 + 8],
            &[0, 0],
            "a UDP checksum of 0 (none) stays 0"
        );
    }
}

#[test]
fn the_same_flow_keeps_its_mapping_and_replies_are_translated_back() {
    let h = Harness::new(POD_ADDRESSING_PRIVATE);
    let syn = FrameSpec::tcp(LOCAL_POD, INTERNET, 443).bytes();
    let port = assert_snat(&h, &syn, "first packet");
    assert_eq!(
        assert_snat(&h, &syn, "second packet"),
        port,
        "one mapping per flow"
    );
    let flows = h.datapath.flows().expect("CONNTRACK");
    assert_eq!(flows.len(), 1, "one conntrack entry");
    assert_eq!((flows[0].1.nat_port, flows[0].1.packets), (port, 2));

    let reply = FrameSpec::tcp(INTERNET, NODE, 0).ports(443, port).bytes();
    let (verdict, out) = h.run("from_vnet", &reply, Reason::RedirectedPeerRevSnat);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_routed(&out, POD_MAC, HOST_MAC, 63, "reply");
    assert_eq!(
        endpoint_of(&out, false),
        (LOCAL_POD, 40000),
        "back to the pod's address and port"
    );
    assert_eq!(
        endpoint_of(&out, true),
        (INTERNET, 443),
        "the peer untouched"
    );
    assert_l4_checksum(&out, "reply");
    assert_ne!(
        h.datapath.flows().expect("CONNTRACK")[0].1.flags,
        0,
        "the reply marks the flow"
    );

    let ping = FrameSpec::icmp_echo(LOCAL_POD, INTERNET, 8, 0x4242).bytes();
    let id = assert_snat(&h, &ping, "echo request");
    let pong = FrameSpec::icmp_echo(INTERNET, NODE, 0, id).bytes();
    let (_, out) = h.run("from_vnet", &pong, Reason::RedirectedPeerRevSnat);
    assert_eq!(
        endpoint_of(&out, false),
        (LOCAL_POD, 0x4242),
        "the echo reply gets its identifier back"
    );
    assert_l4_checksum(&out, "echo reply");

    let stranger = FrameSpec::tcp(INTERNET, NODE, 0)
        .ports(443, port.wrapping_add(1))
        .bytes();
    let (verdict, out) = h.run("from_vnet", &stranger, Reason::PassedToStack);
    assert_eq!(
        (verdict, out),
        (TC_ACT_OK, stranger),
        "no mapping: the node's own traffic"
    );
}

#[test]
fn port_exhaustion_is_counted_not_silent() {
    let mut h = Harness::new(POD_ADDRESSING_PRIVATE);
    let mut config = h.datapath.config().expect("CONFIG");
    (config.nat_port_min, config.nat_port_max) = (40000, 40000);
    h.datapath.set_config(config).expect("one NAT port");
    let first = FrameSpec::tcp(LOCAL_POD, INTERNET, 443)
        .ports(1111, 443)
        .bytes();
    let (verdict, out) = h.run("from_pod", &first, Reason::RedirectedUplinkSnat);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(endpoint_of(&out, true), (NODE, 40000));
    let second = FrameSpec::tcp(LOCAL_POD, INTERNET, 443)
        .ports(2222, 443)
        .bytes();
    let (verdict, _) = h.run("from_pod", &second, Reason::DropNatNoPort);
    assert_eq!(
        verdict, TC_ACT_SHOT,
        "the only port toward 203.0.113.10:443 is taken"
    );
    let elsewhere = FrameSpec::tcp(LOCAL_POD, INTERNET, 80)
        .ports(2222, 80)
        .bytes();
    let (verdict, _) = h.run("from_pod", &elsewhere, Reason::RedirectedUplinkSnat);
    assert_eq!(
        verdict, TC_ACT_REDIRECT,
        "the same port is free toward another peer port"
    );
    assert_eq!(
        h.datapath.flows().expect("CONNTRACK").len(),
        2,
        "the failed flow left no entry"
    );
}

#[test]
fn what_snat_cannot_translate_is_dropped_and_counted() {
    let h = Harness::new(POD_ADDRESSING_PRIVATE);
    let fragment = FrameSpec {
        frags: 0x2000 | 100,
        ..FrameSpec::udp(LOCAL_POD, INTERNET)
    };
    let (verdict, _) = h.run("from_pod", &fragment.bytes(), Reason::DropNeedsMasquerade);
    assert_eq!(
        verdict, TC_ACT_SHOT,
        "a later fragment has no ports to translate"
    );
    let unreachable = FrameSpec::icmp_echo(LOCAL_POD, INTERNET, 3, 0).bytes();
    let (verdict, _) = h.run("from_pod", &unreachable, Reason::DropNeedsMasquerade);
    assert_eq!(
        verdict, TC_ACT_SHOT,
        "ICMP other than echo is not translated"
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

#[test]
fn replies_to_flows_opened_from_outside_leave_untranslated() {
    let h = Harness::new(POD_ADDRESSING_VNET);
    // A connection the internet host (outside the non-masquerade CIDRs) opens to the
    // pod, as through a load balancer.
    let inbound = FrameSpec::tcp(INTERNET, LOCAL_POD, 8080)
        .ports(51000, 8080)
        .bytes();
    let (verdict, _) = h.run("from_vnet", &inbound, Reason::RedirectedPeer);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let reply = FrameSpec::tcp(LOCAL_POD, INTERNET, 0)
        .ports(8080, 51000)
        .bytes();
    let (verdict, out) = h.run("from_pod", &reply, Reason::RedirectedUplink);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(
        endpoint_of(&out, true),
        (LOCAL_POD, 8080),
        "the reply keeps the pod's address"
    );
    let fresh = FrameSpec::tcp(LOCAL_POD, INTERNET, 0)
        .ports(8080, 51001)
        .bytes();
    assert_snat(
        &h,
        &fresh,
        "a new flow of the pod's own is still masqueraded",
    );
}

#[test]
fn a_full_conntrack_drops_new_flows_and_keeps_existing_ones() {
    let h = Harness::with_capacity(POD_ADDRESSING_PRIVATE, 2);
    let flow = |port| {
        FrameSpec::tcp(LOCAL_POD, INTERNET, 443)
            .ports(port, 443)
            .bytes()
    };
    let first = assert_snat(&h, &flow(1001), "first flow");
    let second = assert_snat(&h, &flow(1002), "second flow");
    let (verdict, _) = h.run("from_pod", &flow(1003), Reason::DropConntrackFull);
    assert_eq!(verdict, TC_ACT_SHOT, "no room for a third flow");
    assert_eq!(
        assert_snat(&h, &flow(1001), "first flow again"),
        first,
        "existing flows keep their mapping"
    );
    assert_eq!(assert_snat(&h, &flow(1002), "second flow again"), second);
    assert_eq!(
        h.datapath.flows().expect("CONNTRACK").len(),
        2,
        "the refused flow left nothing"
    );
}

const VIP: [u8; 4] = [10, 0, 0, 20];
const HAIRPIN: [u8; 4] = [169, 254, 42, 1];

fn web_service(backends: &[[u8; 4]]) -> aks_userspace::plan::ServicePlan {
    aks_userspace::plan::ServicePlan {
        name: "web".into(),
        cluster_ip: Ipv4Addr::from(VIP),
        port: 80,
        target_port: 8080,
        protocol: aks_userspace::model::Protocol::Tcp,
        backends: backends
            .iter()
            .enumerate()
            .map(|(i, ip)| aks_userspace::plan::Backend {
                pod: format!("pod{i}"),
                node: "n".into(),
                ip: Ipv4Addr::from(*ip),
                port: 8080,
            })
            .collect(),
    }
}

impl Harness {
    fn with_service(backends: &[[u8; 4]]) -> Self {
        let h = Harness::new(POD_ADDRESSING_VNET);
        let mut maps = h.datapath.service_maps().expect("service maps");
        maps.upsert(&web_service(backends))
            .expect("programming the service");
        h
    }
}

#[test]
fn a_clusterip_is_dnated_on_the_first_packet_and_the_reply_gets_it_back() {
    let h = Harness::with_service(&[REMOTE_POD]);
    let syn = FrameSpec::tcp(LOCAL_POD, VIP, 80).bytes();
    let (verdict, out) = h.run("from_pod", &syn, Reason::ServiceDnat);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_routed(
        &out,
        GATEWAY_MAC,
        UPLINK_MAC,
        63,
        "DNAT to a remote backend",
    );
    assert_eq!(
        endpoint_of(&out, false),
        (REMOTE_POD, 8080),
        "to the backend's targetPort"
    );
    assert_eq!(
        endpoint_of(&out, true),
        (LOCAL_POD, 40000),
        "the client keeps its address"
    );
    assert_l4_checksum(&out, "DNAT");

    let reply = FrameSpec::tcp(REMOTE_POD, LOCAL_POD, 0)
        .ports(8080, 40000)
        .bytes();
    let (verdict, out) = h.run("from_vnet", &reply, Reason::ServiceRevDnat);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_routed(&out, POD_MAC, HOST_MAC, 63, "reply into the client");
    assert_eq!(
        endpoint_of(&out, true),
        (VIP, 80),
        "the reply comes from the ClusterIP"
    );
    assert_eq!(endpoint_of(&out, false), (LOCAL_POD, 40000));
    assert_l4_checksum(&out, "reverse DNAT");
}

#[test]
fn every_packet_of_a_flow_keeps_its_backend() {
    let h = Harness::with_service(&[REMOTE_POD, [10, 224, 0, 37], [10, 224, 0, 38]]);
    let flow = FrameSpec::tcp(LOCAL_POD, VIP, 80).ports(45000, 80).bytes();
    let (_, first) = h.run("from_pod", &flow, Reason::ServiceDnat);
    let backend = endpoint_of(&first, false);
    for _ in 0..20 {
        let (_, out) = h.run("from_pod", &flow, Reason::ServiceDnat);
        assert_eq!(
            endpoint_of(&out, false),
            backend,
            "conntrack keeps the flow on one backend"
        );
    }
    let mut chosen = std::collections::BTreeSet::new();
    for port in 0..60 {
        let other = FrameSpec::tcp(LOCAL_POD, VIP, 80)
            .ports(46000 + port, 80)
            .bytes();
        let (_, out) = h.run("from_pod", &other, Reason::ServiceDnat);
        chosen.insert(endpoint_of(&out, false).0);
    }
    assert_eq!(
        chosen.len(),
        3,
        "new flows spread over every backend: {chosen:?}"
    );
}

#[test]
fn a_pod_reaching_itself_through_its_service_is_hairpinned() {
    let h = Harness::with_service(&[LOCAL_POD]);
    let syn = FrameSpec::tcp(LOCAL_POD, VIP, 80).bytes();
    let (verdict, out) = h.run("from_pod", &syn, Reason::ServiceDnat);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_routed(&out, POD_MAC, HOST_MAC, 63, "hairpin");
    assert_eq!(endpoint_of(&out, false), (LOCAL_POD, 8080));
    assert_eq!(
        endpoint_of(&out, true),
        (HAIRPIN, 40000),
        "a pod cannot take a packet from itself"
    );
    assert_l4_checksum(&out, "hairpin DNAT");
    let reply = FrameSpec::tcp(LOCAL_POD, HAIRPIN, 0)
        .ports(8080, 40000)
        .bytes();
    let (verdict, out) = h.run("from_pod", &reply, Reason::ServiceRevDnat);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(endpoint_of(&out, true), (VIP, 80));
    assert_eq!(
        endpoint_of(&out, false),
        (LOCAL_POD, 40000),
        "back to the pod's own address"
    );
    assert_l4_checksum(&out, "hairpin reply");
}

#[test]
fn a_service_without_backends_resets_tcp_at_once_and_drops_udp() {
    let h = Harness::with_service(&[]);
    let syn = FrameSpec::tcp(LOCAL_POD, VIP, 80).bytes();
    let (verdict, out) = h.run("from_pod", &syn, Reason::RejectServiceNoBackend);
    assert_eq!(
        verdict, TC_ACT_REDIRECT,
        "the reset goes straight back into the client"
    );
    assert_eq!(&out[0..6], &SENDER_MAC, "addressed to the client's MAC");
    assert_eq!(endpoint_of(&out, true), (VIP, 80), "from the ClusterIP");
    assert_eq!(
        endpoint_of(&out, false),
        (LOCAL_POD, 40000),
        "to the client"
    );
    let tcp = 14 + 20;
    assert_eq!(out[tcp + 13], 0x14, "RST+ACK");
    assert_eq!(
        u32::from_be_bytes(out[tcp + 8..tcp + 12].try_into().expect("4")),
        1,
        "acks the SYN"
    );
    assert_l4_checksum(&out, "reset");
    let dns = aks_userspace::plan::ServicePlan {
        name: "dns".into(),
        port: 53,
        protocol: aks_userspace::model::Protocol::Udp,
        ..web_service(&[])
    };
    h.datapath
        .service_maps()
        .expect("maps")
        .upsert(&dns)
        .expect("UDP service");
    let udp = FrameSpec::udp(LOCAL_POD, VIP).ports(40000, 53).bytes();
    let (verdict, _) = h.run("from_pod", &udp, Reason::DropServiceNoBackend);
    assert_eq!(verdict, TC_ACT_SHOT);
}

#[test]
fn the_gc_expires_idle_service_and_snat_flows_with_their_reply_keys() {
    use aks_userspace::datapath::ebpf::{monotonic_now_ns, Timeouts};
    let mut h = Harness::with_service(&[REMOTE_POD]);
    h.run(
        "from_pod",
        &FrameSpec::tcp(LOCAL_POD, VIP, 80).bytes(),
        Reason::ServiceDnat,
    );
    h.run(
        "from_pod",
        &FrameSpec::tcp(LOCAL_POD, INTERNET, 443).bytes(),
        Reason::RedirectedUplinkSnat,
    );
    let timeouts = Timeouts {
        tcp_established_ns: 60_000_000_000,
        tcp_closing_ns: 1_000_000_000,
        datagram_ns: 1_000_000_000,
    };
    let now = monotonic_now_ns();
    let report = h.datapath.collect_garbage(&timeouts, now).expect("gc");
    assert_eq!(
        (report.expired, report.flows),
        (0, 1),
        "a fresh SNAT flow stays"
    );
    assert_eq!(
        (report.service_flows_expired, report.service_flows),
        (0, 1),
        "a fresh service flow stays"
    );
    // Past every timeout here (60 s): both flows are idle for longer.
    let later = h
        .datapath
        .collect_garbage(&timeouts, now + 61_000_000_000)
        .expect("gc");
    assert_eq!(
        (later.expired, later.flows, later.nat_entries),
        (1, 0, 0),
        "the SNAT flow and both NAT entries go"
    );
    assert_eq!(
        (later.service_flows_expired, later.service_flows),
        (1, 0),
        "the service flow goes"
    );
    let reply = FrameSpec::tcp(REMOTE_POD, LOCAL_POD, 0)
        .ports(8080, 40000)
        .bytes();
    let (verdict, out) = h.run("from_vnet", &reply, Reason::RedirectedPeer);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(
        endpoint_of(&out, true),
        (REMOTE_POD, 8080),
        "its reply key went with it: no translation"
    );
}

/// The local pod isolated both ways; `IPCACHE` gives the remote pod identity 400, the
/// internet 500, everything else 300; `keys` are the pod's allowed (identity, port,
/// protocol, direction).
fn policy_harness(keys: &[(u32, u16, u8, u8)]) -> Harness {
    use aks_ebpf_common::policy::{PolicyKey, ENDPOINT_EGRESS_ISOLATED, ENDPOINT_INGRESS_ISOLATED};
    use aks_userspace::cidr::Ipv4Cidr;
    let mut h = Harness::new(POD_ADDRESSING_VNET);
    let cidr = |a: [u8; 4], len| Ipv4Cidr::new(Ipv4Addr::from(a), len).expect("cidr");
    let ipcache = [
        (cidr([0, 0, 0, 0], 0), 300),
        (cidr(REMOTE_POD, 32), 400),
        (cidr(INTERNET, 32), 500),
    ];
    let keys: Vec<PolicyKey> = keys
        .iter()
        .map(|&(identity, dst_port, protocol, direction)| PolicyKey {
            endpoint: addr::ipv4(LOCAL_POD),
            identity,
            dst_port,
            protocol,
            direction,
        })
        .collect();
    h.datapath
        .set_policy(&ipcache, &keys)
        .expect("IPCACHE and POLICY");
    h.datapath
        .upsert_endpoint(
            Ipv4Addr::from(LOCAL_POD),
            Endpoint {
                host_ifindex: 55,
                flags: ENDPOINT_EGRESS_ISOLATED | ENDPOINT_INGRESS_ISOLATED,
                pod_mac: POD_MAC,
                host_mac: HOST_MAC,
            },
        )
        .expect("ENDPOINTS");
    h
}

#[test]
fn policy_allows_what_a_key_names_and_drops_the_rest_by_direction() {
    use aks_ebpf_common::policy::{DIRECTION_EGRESS, DIRECTION_INGRESS};
    let h = policy_harness(&[
        (400, 8080, 6, DIRECTION_EGRESS),
        (400, 5432, 6, DIRECTION_INGRESS),
    ]);
    // Egress to the remote pod on 8080: allowed, sent to the VNet.
    let allowed = FrameSpec::tcp(LOCAL_POD, REMOTE_POD, 8080).bytes();
    let (verdict, _) = h.run("from_pod", &allowed, Reason::RedirectedUplink);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    // Another port, another identity: default deny of egress, counted as such.
    for (dst, port) in [(REMOTE_POD, 9090), (INTERNET, 8080), (ON_PREM, 8080)] {
        let denied = FrameSpec::tcp(LOCAL_POD, dst, port).bytes();
        let (verdict, _) = h.run("from_pod", &denied, Reason::DropPolicyEgress);
        assert_eq!(verdict, TC_ACT_SHOT, "to {dst:?}:{port}");
    }
    // UDP to the allowed port is another protocol: denied.
    let udp = FrameSpec::udp(LOCAL_POD, REMOTE_POD).bytes();
    let (verdict, _) = h.run("from_pod", &udp, Reason::DropPolicyEgress);
    assert_eq!(verdict, TC_ACT_SHOT);
    // Ingress from the remote pod: 5432 is allowed, 5433 is not.
    let ingress = FrameSpec::tcp(REMOTE_POD, LOCAL_POD, 5432).bytes();
    let (verdict, out) = h.run("from_vnet", &ingress, Reason::RedirectedPeer);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_routed(&out, POD_MAC, HOST_MAC, 63, "allowed ingress");
    let closed = FrameSpec::tcp(REMOTE_POD, LOCAL_POD, 5433).bytes();
    let (verdict, _) = h.run("from_vnet", &closed, Reason::DropPolicyIngress);
    assert_eq!(verdict, TC_ACT_SHOT);
}

#[test]
fn policy_lets_established_flows_and_their_replies_through() {
    use aks_ebpf_common::policy::DIRECTION_EGRESS;
    let h = policy_harness(&[(400, 8080, 6, DIRECTION_EGRESS)]);
    // Before the pod opened anything, the remote pod's packet to it is denied ingress.
    let reply = FrameSpec::tcp(REMOTE_POD, LOCAL_POD, 40000)
        .ports(8080, 40000)
        .bytes();
    h.run("from_vnet", &reply, Reason::DropPolicyIngress);
    // The pod opens the connection (allowed egress) ...
    let open = FrameSpec::tcp(LOCAL_POD, REMOTE_POD, 8080).bytes();
    h.run("from_pod", &open, Reason::RedirectedUplink);
    // ... and now the reply is part of it: delivered, though no ingress key allows it.
    let (verdict, _) = h.run("from_vnet", &reply, Reason::RedirectedPeer);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    // The flow's later packets pass too; a new flow from another port does not.
    h.run("from_pod", &open, Reason::RedirectedUplink);
    let other = FrameSpec::tcp(REMOTE_POD, LOCAL_POD, 40000)
        .ports(8081, 40000)
        .bytes();
    h.run("from_vnet", &other, Reason::DropPolicyIngress);
}

#[test]
fn policy_wildcards_match_any_port_protocol_and_peer() {
    use aks_ebpf_common::policy::{DIRECTION_EGRESS, DIRECTION_INGRESS, IDENTITY_ANY};
    // Egress: the internet on every TCP port; ingress: anyone on anything.
    let h = policy_harness(&[
        (500, 0, 6, DIRECTION_EGRESS),
        (IDENTITY_ANY, 0, 0, DIRECTION_INGRESS),
    ]);
    let to_internet = FrameSpec::tcp(LOCAL_POD, INTERNET, 443).bytes();
    h.run("from_pod", &to_internet, Reason::RedirectedUplinkSnat);
    let udp_out = FrameSpec::udp(LOCAL_POD, INTERNET).bytes();
    h.run("from_pod", &udp_out, Reason::DropPolicyEgress);
    for port in [1, 5432, 65535] {
        let inbound = FrameSpec::tcp(REMOTE_POD, LOCAL_POD, port).bytes();
        h.run("from_vnet", &inbound, Reason::RedirectedPeer);
    }
    let udp_in = FrameSpec::udp(ON_PREM, LOCAL_POD).bytes();
    h.run("from_vnet", &udp_in, Reason::RedirectedPeer);
}

/// Azure CNI Overlay: another node's pod range carries `ROUTE_OVERLAY`; `from_pod` hands
/// such packets to the node's kernel, which routes them into the tunnel device, untouched
/// (no MAC rewrite, no TTL decrement, no NAT: the kernel forwards and decrements).
#[test]
fn from_pod_hands_overlay_destinations_to_the_kernel_untouched() {
    let mut h = Harness::new(POD_ADDRESSING_PRIVATE);
    let overlay = Route {
        kind: RouteKind::RemotePods as u32,
        next_hop: map_addr(Ipv4Addr::new(10, 224, 0, 5)),
        flags: aks_ebpf_common::ROUTE_OVERLAY,
    };
    h.datapath
        .upsert_route(Ipv4Addr::new(10, 244, 1, 0), 24, overlay)
        .expect("ROUTES");
    let frame = FrameSpec::tcp(LOCAL_POD, [10, 244, 1, 7], 80).bytes();
    let (verdict, out) = h.run("from_pod", &frame, Reason::PassedToStack);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(
        out, frame,
        "the overlay path leaves the frame to the kernel"
    );
    // A destination next to the overlay range is still routed by the program itself.
    let frame = FrameSpec::tcp(LOCAL_POD, REMOTE_POD, 80).bytes();
    let (verdict, _) = h.run("from_pod", &frame, Reason::RedirectedUplink);
    assert_eq!(verdict, TC_ACT_REDIRECT);
}
