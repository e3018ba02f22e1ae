//! Routing without translation: local delivery, the VNet and on-prem through the
//! gateway, what the node's stack keeps, and the hop's TTL.

use aks_ebpf_common::Reason;

use crate::frames::*;
use crate::harness::*;

#[test]
fn from_pod_delivers_local_pods_to_their_peer_with_the_pod_macs() {
    let h = Harness::new();
    let frame = FrameSpec::udp(LOCAL_POD, PEER_POD).bytes();
    let out = h.redirected("from_pod", &frame, Reason::RedirectedPeer);
    assert_routed(&out, PEER_POD_MAC, PEER_HOST_MAC, 63, "local pod");
    assert_eq!(
        &out[14 + 12..14 + 20],
        &frame[14 + 12..14 + 20],
        "addresses untouched: no NAT"
    );
}

#[test]
fn from_pod_sends_the_vnet_and_on_prem_to_the_gateway_untranslated() {
    let h = Harness::new();
    for (case, dst) in [
        ("remote pod", REMOTE_POD),
        ("on-prem (non-masquerade)", ON_PREM),
    ] {
        let frame = FrameSpec::tcp(LOCAL_POD, dst, 80).bytes();
        let out = h.redirected("from_pod", &frame, Reason::RedirectedUplink);
        assert_routed(&out, GATEWAY_MAC, UPLINK_MAC, 63, case);
        assert_eq!(&out[26..34], &frame[26..34], "{case}: addresses untouched");
        assert_eq!(&out[34..38], &frame[34..38], "{case}: ports untouched");
    }
}

#[test]
fn from_pod_passes_traffic_for_the_node_and_non_ipv4() {
    let h = Harness::new();
    let frame = FrameSpec::udp(LOCAL_POD, NODE).bytes();
    let (verdict, out) = h.run("from_pod", &frame, Reason::PassedToStack);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, frame, "a frame for the node's stack is not rewritten");
    let arp = ethernet(
        UPLINK_MAC,
        SENDER_MAC,
        0x0806,
        &FrameSpec::udp(LOCAL_POD, NODE).packet(),
    );
    let (verdict, out) = h.run("from_pod", &arp, Reason::PassedNonIpv4);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, arp);
}

#[test]
fn from_pod_handles_options_fragments_ttl_and_malformed_headers() {
    let h = Harness::new();
    let options = FrameSpec {
        options: vec![0; 4],
        ..FrameSpec::udp(LOCAL_POD, REMOTE_POD)
    };
    let (verdict, out) = h.run("from_pod", &options.bytes(), Reason::RedirectedUplink);
    assert_eq!(
        verdict, TC_ACT_REDIRECT,
        "IP options are routed like any packet"
    );
    assert_routed(&out, GATEWAY_MAC, UPLINK_MAC, 63, "IP options");

    let fragment = FrameSpec {
        more_fragments: true,
        fragment_offset: 100,
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

    let mut short_ihl = FrameSpec::udp(LOCAL_POD, REMOTE_POD).bytes();
    short_ihl[14] = 0x44; // a 16-byte IPv4 header: below the minimum
    let (verdict, _) = h.run("from_pod", &short_ihl, Reason::DropMalformed);
    assert_eq!(verdict, TC_ACT_SHOT);

    let mut too_long_ihl = FrameSpec::udp(LOCAL_POD, REMOTE_POD).bytes();
    too_long_ihl.truncate(14 + 40);
    too_long_ihl[14] = 0x4f; // claims a 60-byte header in a 40-byte packet
    let (verdict, _) = h.run("from_pod", &too_long_ihl, Reason::DropMalformed);
    assert_eq!(verdict, TC_ACT_SHOT);
}

#[test]
fn without_config_the_datapath_drops_and_counts() {
    let h = Harness::unconfigured();
    let (verdict, _) = h.run(
        "from_pod",
        &FrameSpec::udp(LOCAL_POD, REMOTE_POD).bytes(),
        Reason::DropNoConfig,
    );
    assert_eq!(verdict, TC_ACT_SHOT);
}

#[test]
fn from_vnet_delivers_local_pods_and_passes_the_rest() {
    let h = Harness::new();
    let out = h.redirected(
        "from_vnet",
        &FrameSpec::tcp(ON_PREM, LOCAL_POD, 80).bytes(),
        Reason::RedirectedPeer,
    );
    assert_routed(&out, POD_MAC, HOST_MAC, 63, "from the VNet to a local pod");
    let frame = FrameSpec::tcp(ON_PREM, NODE, 22).bytes();
    let (verdict, out) = h.run("from_vnet", &frame, Reason::PassedToStack);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, frame);
}

/// Azure CNI Overlay: another node's pod range carries `ROUTE_OVERLAY`; `from_pod` hands
/// such packets to the node's kernel, which routes them into the tunnel device, untouched
/// (no MAC rewrite, no TTL decrement, no NAT: the kernel forwards and decrements).
#[test]
fn from_pod_hands_overlay_destinations_to_the_kernel_untouched() {
    use std::net::Ipv4Addr;

    use aks_ebpf_common::{Route, RouteKind, ROUTE_OVERLAY};
    use aks_userspace::datapath::ebpf::map_addr;

    let mut h = Harness::new();
    let overlay = Route {
        kind: RouteKind::RemotePods as u32,
        next_hop: map_addr(Ipv4Addr::new(10, 224, 0, 5)),
        flags: ROUTE_OVERLAY,
    };
    h.datapath
        .upsert_route(Ipv4Addr::new(10, 244, 1, 0), 24, overlay)
        .expect("ROUTES");
    let frame = FrameSpec::tcp(LOCAL_POD, [10, 244, 1, 7], 80).bytes();
    // Counted as a hand-off to the overlay, not as traffic for the node itself.
    let (verdict, out) = h.run("from_pod", &frame, Reason::ToOverlay);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(
        out, frame,
        "the overlay path leaves the frame to the kernel"
    );
    // A destination next to the overlay range is still routed by the program itself.
    let frame = FrameSpec::tcp(LOCAL_POD, REMOTE_POD, 80).bytes();
    h.redirected("from_pod", &frame, Reason::RedirectedUplink);
}
