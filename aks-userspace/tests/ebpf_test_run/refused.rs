//! What the datapath refuses, each with the reason that says why: spoofed sources,
//! broken IPv4 headers, later fragments to a ClusterIP, VLAN tags, and L4 headers cut
//! short (one rule on every path).

use aks_ebpf_common::Reason;

use crate::frames::*;
use crate::harness::*;
use crate::services::VIP;

#[test]
fn a_pod_sending_with_another_source_is_dropped_before_it_claims_a_nat_entry() {
    let h = Harness::new();
    for (case, src) in [
        ("an address no pod holds", REMOTE_POD),
        ("another local pod's address", PEER_POD),
        ("an internet address", [198, 51, 100, 7]),
    ] {
        let frame = FrameSpec::tcp(src, INTERNET, 443).bytes();
        let (verdict, _) = h.run("from_pod", &frame, Reason::DropSpoofedSource);
        assert_eq!(verdict, TC_ACT_SHOT, "{case}");
    }
    assert!(
        h.datapath.flows().expect("CONNTRACK").is_empty(),
        "no spoofed flow got a NAT mapping"
    );
    let own = FrameSpec::tcp(LOCAL_POD, INTERNET, 443).bytes();
    h.run("from_pod", &own, Reason::RedirectedUplinkSnat);
}

#[test]
fn a_bad_ipv4_header_checksum_is_dropped_on_both_tc_programs() {
    let h = Harness::new();
    let mut to_internet = FrameSpec::udp(LOCAL_POD, INTERNET).bytes();
    to_internet[ETH_CHECKSUM_BYTE] ^= 0x5a;
    let (verdict, _) = h.run("from_pod", &to_internet, Reason::DropBadIpChecksum);
    assert_eq!(
        verdict, TC_ACT_SHOT,
        "not SNATed and forwarded still broken"
    );
    assert!(h.datapath.flows().expect("CONNTRACK").is_empty());
    let mut to_pod = FrameSpec::udp(ON_PREM, LOCAL_POD).bytes();
    to_pod[ETH_CHECKSUM_BYTE] ^= 0x5a;
    let (verdict, _) = h.run("from_vnet", &to_pod, Reason::DropBadIpChecksum);
    assert_eq!(verdict, TC_ACT_SHOT);
    let with_options = FrameSpec {
        options: vec![0; 8],
        ..FrameSpec::udp(LOCAL_POD, REMOTE_POD)
    }
    .bytes();
    let mut broken_option = with_options.clone();
    broken_option[14 + 20 + 5] ^= 1;
    let (verdict, _) = h.run("from_pod", &broken_option, Reason::DropBadIpChecksum);
    assert_eq!(verdict, TC_ACT_SHOT, "the options are covered too");
    h.run("from_pod", &with_options, Reason::RedirectedUplink);
}

/// The second byte of the IPv4 checksum field in an Ethernet frame.
const ETH_CHECKSUM_BYTE: usize = 14 + 11;

#[test]
fn an_ipv4_total_length_the_frame_does_not_hold_is_dropped() {
    let h = Harness::new();
    let frame = FrameSpec::udp(LOCAL_POD, INTERNET).bytes();
    let longer = with_ip_header(frame.clone(), |ip| ip.total_len += 100);
    let (verdict, _) = h.run("from_pod", &longer, Reason::DropBadIpLength);
    assert_eq!(verdict, TC_ACT_SHOT, "claims 100 bytes more than it has");
    let shorter_than_header = with_ip_header(frame.clone(), |ip| ip.total_len = 12);
    let (verdict, _) = h.run("from_pod", &shorter_than_header, Reason::DropBadIpLength);
    assert_eq!(verdict, TC_ACT_SHOT, "shorter than its own header");
    let to_pod = with_ip_header(FrameSpec::udp(ON_PREM, LOCAL_POD).bytes(), |ip| {
        ip.total_len += 1
    });
    let (verdict, _) = h.run("from_vnet", &to_pod, Reason::DropBadIpLength);
    assert_eq!(verdict, TC_ACT_SHOT);
    let mut padded = frame;
    padded.extend_from_slice(&[0; 6]);
    h.run("from_pod", &padded, Reason::RedirectedUplinkSnat);
}

#[test]
fn a_later_fragment_to_a_clusterip_is_dropped_as_such() {
    let h = Harness::with_service(&[REMOTE_POD]);
    let fragment = FrameSpec {
        more_fragments: true,
        fragment_offset: 185,
        ..FrameSpec::udp(LOCAL_POD, VIP)
    };
    let (verdict, _) = h.run("from_pod", &fragment.bytes(), Reason::DropFragmentToService);
    assert_eq!(
        verdict, TC_ACT_SHOT,
        "no ports, no backend: not a masquerade problem"
    );
    let elsewhere = FrameSpec {
        dst: INTERNET,
        ..fragment
    };
    h.run("from_pod", &elsewhere.bytes(), Reason::DropNeedsMasquerade);
}

#[test]
fn a_vlan_tagged_frame_is_dropped_everywhere() {
    let h = Harness::new();
    for (program, frame, verdict) in [
        (
            "from_pod",
            FrameSpec::tcp(LOCAL_POD, INTERNET, 443).bytes(),
            TC_ACT_SHOT,
        ),
        (
            "from_vnet",
            FrameSpec::tcp(ON_PREM, LOCAL_POD, 80).bytes(),
            TC_ACT_SHOT,
        ),
        (
            "nsg",
            FrameSpec::tcp(ON_PREM, LOCAL_POD, 80).bytes(),
            XDP_DROP,
        ),
    ] {
        let tagged = vlan_tagged(&frame, 100);
        let (got, _) = h.run(program, &tagged, Reason::DropVlanTagged);
        assert_eq!(got, verdict, "{program}: neither SNATed nor passed tagged");
    }
    assert!(h.datapath.flows().expect("CONNTRACK").is_empty());
}

#[test]
fn an_l4_header_cut_short_is_malformed_on_every_path() {
    let h = Harness::new();
    // The TCP header ends after 10 of its 20 bytes; the IPv4 header says so.
    let cut = |frame: Vec<u8>| cut_to(frame, 14 + 20 + 10);
    for (case, program, frame) in [
        (
            "from a pod, masqueraded",
            "from_pod",
            FrameSpec::tcp(LOCAL_POD, INTERNET, 443).bytes(),
        ),
        (
            "from a pod, not masqueraded",
            "from_pod",
            FrameSpec::tcp(LOCAL_POD, REMOTE_POD, 80).bytes(),
        ),
        (
            "from the VNet to a pod",
            "from_vnet",
            FrameSpec::tcp(ON_PREM, LOCAL_POD, 80).bytes(),
        ),
        (
            "from the VNet to the node (a reply?)",
            "from_vnet",
            FrameSpec::tcp(INTERNET, NODE, 0).ports(443, 20000).bytes(),
        ),
    ] {
        let (verdict, _) = h.run(program, &cut(frame), Reason::DropMalformed);
        assert_eq!(verdict, TC_ACT_SHOT, "{case}");
    }
}
