//! Masquerade: the rewrite and its checksums, one mapping per flow, replies translated
//! back, and the limits (ports, table size, what cannot be translated) counted.

use aks_ebpf_common::Reason;

use crate::frames::*;
use crate::harness::*;

/// SNATs `frame` (a pod's packet to the internet) and checks the rewrite; returns the
/// NAT port chosen.
pub fn assert_snat(h: &Harness, frame: &[u8], case: &str) -> u16 {
    let out = h.redirected("from_pod", frame, Reason::RedirectedUplinkSnat);
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
    port
}

#[test]
fn snat_rewrites_tcp_udp_and_icmp_echo_with_valid_checksums() {
    let h = Harness::new();
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
        udp_checksum_field(&out),
        [0, 0],
        "a UDP checksum of 0 (none) stays 0"
    );
}

#[test]
fn the_same_flow_keeps_its_mapping_and_replies_are_translated_back() {
    let h = Harness::new();
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
    let out = h.redirected("from_vnet", &reply, Reason::RedirectedPeerRevSnat);
    assert_routed(&out, POD_MAC, HOST_MAC, 63, "reply");
    assert_endpoints(
        &out,
        (INTERNET, 443),
        (LOCAL_POD, 40000),
        "back to the pod's address and port; the peer untouched",
    );
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
    assert_checksums(&out, "echo reply");

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
    let mut h = Harness::new();
    let mut config = h.datapath.config().expect("CONFIG");
    (config.nat_port_min, config.nat_port_max) = (40000, 40000);
    h.datapath.set_config(config).expect("one NAT port");
    let first = FrameSpec::tcp(LOCAL_POD, INTERNET, 443)
        .ports(1111, 443)
        .bytes();
    let out = h.redirected("from_pod", &first, Reason::RedirectedUplinkSnat);
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
    let h = Harness::new();
    let fragment = FrameSpec {
        more_fragments: true,
        fragment_offset: 100,
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
fn replies_to_flows_opened_from_outside_leave_untranslated() {
    let h = Harness::new();
    // A connection the internet host (outside the non-masquerade CIDRs) opens to the
    // pod, as through a load balancer.
    let inbound = FrameSpec::tcp(INTERNET, LOCAL_POD, 8080)
        .ports(51000, 8080)
        .bytes();
    h.redirected("from_vnet", &inbound, Reason::RedirectedPeer);
    let reply = FrameSpec::tcp(LOCAL_POD, INTERNET, 0)
        .ports(8080, 51000)
        .bytes();
    let out = h.redirected("from_pod", &reply, Reason::RedirectedUplink);
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
    let h = Harness::with_capacity(2);
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
