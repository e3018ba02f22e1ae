//! ClusterIP load balancing: DNAT on the first packet, the flow's backend kept, the
//! reply's source put back, hairpin, a service without backends, and the GC.

use std::net::Ipv4Addr;

use aks_ebpf_common::{lb::HAIRPIN_SOURCE, Reason};

use crate::frames::*;
use crate::harness::*;

pub const VIP: [u8; 4] = [10, 0, 0, 20];

pub fn web_service(backends: &[[u8; 4]]) -> aks_userspace::plan::ServicePlan {
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
    pub fn with_service(backends: &[[u8; 4]]) -> Self {
        let h = Harness::new();
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
    let out = h.redirected("from_pod", &syn, Reason::ServiceDnat);
    assert_routed(
        &out,
        GATEWAY_MAC,
        UPLINK_MAC,
        63,
        "DNAT to a remote backend",
    );
    assert_endpoints(
        &out,
        (LOCAL_POD, 40000),
        (REMOTE_POD, 8080),
        "to the backend's targetPort; the client keeps its address",
    );

    let reply = FrameSpec::tcp(REMOTE_POD, LOCAL_POD, 0)
        .ports(8080, 40000)
        .bytes();
    let out = h.redirected("from_vnet", &reply, Reason::ServiceRevDnat);
    assert_routed(&out, POD_MAC, HOST_MAC, 63, "reply into the client");
    assert_endpoints(
        &out,
        (VIP, 80),
        (LOCAL_POD, 40000),
        "the reply comes from the ClusterIP",
    );
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
    let out = h.redirected("from_pod", &syn, Reason::ServiceDnat);
    assert_routed(&out, POD_MAC, HOST_MAC, 63, "hairpin");
    assert_endpoints(
        &out,
        (HAIRPIN_SOURCE, 40000),
        (LOCAL_POD, 8080),
        "a pod cannot take a packet from itself",
    );
    let reply = FrameSpec::tcp(LOCAL_POD, HAIRPIN_SOURCE, 0)
        .ports(8080, 40000)
        .bytes();
    let out = h.redirected("from_pod", &reply, Reason::ServiceRevDnat);
    assert_endpoints(
        &out,
        (VIP, 80),
        (LOCAL_POD, 40000),
        "back to the pod's own address",
    );
    assert_checksums(&out, "hairpin reply");
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
    assert_endpoints(
        &out,
        (VIP, 80),
        (LOCAL_POD, 40000),
        "from the ClusterIP; to the client",
    );
    let tcp = 14 + 20;
    assert_eq!(out[tcp + 13], 0x14, "RST+ACK");
    assert_eq!(
        u32::from_be_bytes(out[tcp + 8..tcp + 12].try_into().expect("4")),
        1,
        "acks the SYN"
    );
    assert_checksums(&out, "reset");
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
    let out = h.redirected("from_vnet", &reply, Reason::RedirectedPeer);
    assert_eq!(
        endpoint_of(&out, true),
        (REMOTE_POD, 8080),
        "its reply key went with it: no translation"
    );
}
