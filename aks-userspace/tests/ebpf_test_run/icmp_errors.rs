//! ICMP errors about masqueraded flows reach the pod, translated back: the outer
//! destination and the quoted source address and port are the pod's again, and every
//! checksum verifies (outer IPv4, ICMP over the changed quote, quoted IPv4, quoted L4
//! where quoted), so path-MTU discovery and failed connects work through SNAT.

use aks_ebpf_common::Reason;
use etherparse::{icmpv4::DestUnreachableHeader, icmpv4::TimeExceededCode, Icmpv4Type};

use crate::frames::*;
use crate::harness::*;
use crate::snat::assert_snat;

/// A router between the node and the internet.
const ROUTER: [u8; 4] = [203, 0, 113, 1];
const ICMP_AT: usize = 14 + 20;
const QUOTE_AT: usize = ICMP_AT + 8;

/// Masquerades `frame` and returns the IPv4 packet as it left the node, and as the pod
/// sent it once one hop further on (TTL one lower): the quote before and after.
fn masquerade(h: &Harness, frame: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (_, left) = h.run_uncounted("from_pod", frame);
    assert_eq!(endpoint_of(&left, true).0, NODE, "masqueraded");
    let pod_view = with_ip_header(frame.to_vec(), |ip| ip.time_to_live -= 1);
    (left[14..].to_vec(), pod_view[14..].to_vec())
}

/// Runs an error through `from_vnet` and checks it arrives in the pod, translated, with
/// `expected_quote` (as long as the error quotes) quoted.
fn assert_delivered(h: &Harness, error: &[u8], expected_quote: &[u8], case: &str) {
    let out = h.redirected("from_vnet", error, Reason::RedirectedPeerIcmpError);
    assert_routed(&out, POD_MAC, HOST_MAC, 63, case);
    assert_eq!(
        &out[30..34],
        &LOCAL_POD,
        "{case}: outer destination is the pod"
    );
    assert_eq!(
        &out[26..30],
        &error[26..30],
        "{case}: from its sender still"
    );
    assert_eq!(
        &out[ICMP_AT..ICMP_AT + 2],
        &error[ICMP_AT..ICMP_AT + 2],
        "{case}: type and code kept"
    );
    assert_eq!(
        &out[ICMP_AT + 4..QUOTE_AT],
        &error[ICMP_AT + 4..QUOTE_AT],
        "{case}: the rest of the ICMP header (next-hop MTU) kept"
    );
    assert_eq!(
        &out[QUOTE_AT..],
        expected_quote,
        "{case}: the quote is the pod's packet again"
    );
}

#[test]
fn a_frag_needed_for_a_masqueraded_tcp_flow_reaches_the_pod() {
    let h = Harness::new();
    let syn = FrameSpec::tcp(LOCAL_POD, INTERNET, 443).bytes();
    let (left, pod_view) = masquerade(&h, &syn);
    let error = frag_needed(ROUTER, NODE, 1280, &left);
    assert_delivered(
        &h,
        &error,
        &pod_view,
        "frag needed, whole TCP segment quoted",
    );
    // RFC 792 quoting: the IPv4 header and 8 bytes (the TCP checksum not among them).
    let error = frag_needed(ROUTER, NODE, 1280, &left[..28]);
    assert_delivered(&h, &error, &pod_view[..28], "frag needed, 8 bytes quoted");
}

#[test]
fn a_port_unreachable_for_a_masqueraded_udp_flow_reaches_the_pod() {
    let h = Harness::new();
    let dns = FrameSpec::udp(LOCAL_POD, INTERNET).ports(41000, 53).bytes();
    let (left, pod_view) = masquerade(&h, &dns);
    let error = icmp_error(
        INTERNET,
        NODE,
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port),
        &left[..28],
    );
    assert_delivered(&h, &error, &pod_view[..28], "port unreachable");
}

#[test]
fn a_time_exceeded_for_a_masqueraded_ping_reaches_the_pod() {
    let h = Harness::new();
    let ping = FrameSpec::icmp_echo(LOCAL_POD, INTERNET, 8, 0x7777).bytes();
    let id = assert_snat(&h, &ping, "echo request");
    let (left, pod_view) = {
        // The same request again: the flow's mapping, the identifier it left with.
        let (left, pod_view) = masquerade(&h, &ping);
        assert_eq!(endpoint_of(&[&[0u8; 14][..], &left].concat(), true).1, id);
        (left, pod_view)
    };
    let error = icmp_error(
        ROUTER,
        NODE,
        Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit),
        &left,
    );
    assert_delivered(&h, &error, &pod_view, "time exceeded");
}

#[test]
fn an_icmp_error_about_no_masqueraded_flow_is_the_nodes_own() {
    let h = Harness::new();
    let syn = FrameSpec::tcp(LOCAL_POD, INTERNET, 443).bytes();
    let (left, _) = masquerade(&h, &syn);
    let mut other = left.clone();
    other[20] ^= 0x01; // another source port: no NAT mapping
    let error = frag_needed(ROUTER, NODE, 1280, &other[..28]);
    let (verdict, out) = h.run("from_vnet", &error, Reason::PassedToStack);
    assert_eq!((verdict, out), (TC_ACT_OK, error), "untouched");
    let quoting_a_stranger = frag_needed(ROUTER, NODE, 1280, &syn[14..42]);
    h.run("from_vnet", &quoting_a_stranger, Reason::PassedToStack);
}
