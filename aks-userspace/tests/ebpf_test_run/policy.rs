//! Network policy: the local pod isolated both ways; `IPCACHE` gives the remote pod
//! identity 400, the internet 500, everything else 300; the pod's `POLICY` keys say what
//! it allows. Denials are counted under the policy reasons; an allowed connection's
//! later packets and replies pass without keys.

use std::net::Ipv4Addr;

use aks_ebpf_common::policy::{
    PolicyKey, DIRECTION_EGRESS, DIRECTION_INGRESS, ENDPOINT_EGRESS_ISOLATED,
    ENDPOINT_INGRESS_ISOLATED, IDENTITY_ANY,
};
use aks_ebpf_common::{addr, Endpoint, Reason};
use aks_userspace::cidr::Ipv4Cidr;

use crate::frames::*;
use crate::harness::*;

/// `keys`: the local pod's allowed (identity, port, protocol, direction).
pub fn policy_harness(keys: &[(u32, u16, u8, u8)]) -> Harness {
    let mut h = Harness::new();
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
                host_ifindex: TEST_RUN_IFINDEX,
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
    let h = policy_harness(&[
        (400, 8080, 6, DIRECTION_EGRESS),
        (400, 5432, 6, DIRECTION_INGRESS),
    ]);
    // Egress to the remote pod on 8080: allowed, sent to the VNet.
    let allowed = FrameSpec::tcp(LOCAL_POD, REMOTE_POD, 8080).bytes();
    h.redirected("from_pod", &allowed, Reason::RedirectedUplink);
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
    let out = h.redirected("from_vnet", &ingress, Reason::RedirectedPeer);
    assert_routed(&out, POD_MAC, HOST_MAC, 63, "allowed ingress");
    let closed = FrameSpec::tcp(REMOTE_POD, LOCAL_POD, 5433).bytes();
    let (verdict, _) = h.run("from_vnet", &closed, Reason::DropPolicyIngress);
    assert_eq!(verdict, TC_ACT_SHOT);
}

#[test]
fn policy_lets_established_flows_and_their_replies_through() {
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
    h.redirected("from_vnet", &reply, Reason::RedirectedPeer);
    // The flow's later packets pass too; a new flow from another port does not.
    h.run("from_pod", &open, Reason::RedirectedUplink);
    let other = FrameSpec::tcp(REMOTE_POD, LOCAL_POD, 40000)
        .ports(8081, 40000)
        .bytes();
    h.run("from_vnet", &other, Reason::DropPolicyIngress);
}

#[test]
fn policy_wildcards_match_any_port_protocol_and_peer() {
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
