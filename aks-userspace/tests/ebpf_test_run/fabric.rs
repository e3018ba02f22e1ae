//! The fabric forwarder (`fabric`, TC ingress on the vnet namespace's node links): VNet
//! traffic between node links is routed in the program; everything it must not or
//! cannot route (the internet, a TTL about to expire, fragments, options, a node port's
//! reply the load balancer may have translated, a bad header, a hop back out of the
//! link it came in on) goes to the stack untouched.

use aks_ebpf_common::{FabricHop, Reason};
use aks_userspace::cidr::Ipv4Cidr;
use aks_userspace::fabric::forwarder::FabricProgram;
use aya::programs::{TestRun, TestRunOptions};

use crate::common::require_privileges;
use crate::frames::*;
use crate::harness::{assert_counted_once, TC_ACT_OK, TC_ACT_REDIRECT, TEST_RUN_IFINDEX};

const NODE_A: [u8; 4] = [10, 224, 0, 4];
const NODE_B: [u8; 4] = [10, 224, 0, 5];
const POD_B: [u8; 4] = [10, 224, 0, 36];
const KUBENET_POD_B: [u8; 4] = [10, 244, 1, 2];
/// The vnet namespace's end of node B's link, and the MACs on it.
const LINK_B: u32 = 3;
const GATEWAY_B_MAC: [u8; 6] = [0x02, 0x01, 0, 1, 0, 0];
const NODE_B_MAC: [u8; 6] = [0x02, 0x02, 0, 1, 0, 0];

struct Fabric {
    program: FabricProgram,
}

impl Fabric {
    /// A forwarder whose table holds node B (its address, one Azure CNI pod, a kubenet
    /// /24) and node A's address behind the test run's own device.
    fn new() -> Self {
        require_privileges();
        let mut program = FabricProgram::load(64).expect("loading the fabric program");
        let b = FabricHop {
            ifindex: LINK_B,
            gateway_mac: GATEWAY_B_MAC,
            node_mac: NODE_B_MAC,
        };
        let a = FabricHop {
            ifindex: TEST_RUN_IFINDEX,
            gateway_mac: GATEWAY_MAC,
            node_mac: UPLINK_MAC,
        };
        for (prefix, hop) in [
            ("10.224.0.5/32", b),
            ("10.224.0.36/32", b),
            ("10.244.1.0/24", b),
            ("10.224.0.4/32", a),
        ] {
            let prefix: Ipv4Cidr = prefix.parse().expect("a prefix");
            program.upsert_route(prefix, hop).expect("FABRIC_ROUTES");
        }
        Self { program }
    }

    /// Runs `fabric` on `frame`; asserts it was counted once, under `reason`.
    fn run(&self, frame: &[u8], reason: Reason) -> (u32, Vec<u8>) {
        let before = self.program.stats().expect("STATS");
        let mut out = vec![0u8; frame.len() + 64];
        let result = self
            .program
            .classifier()
            .expect("fabric")
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("test_run of fabric: {e:?}"));
        out.truncate(result.data_size_out as usize);
        let after = self.program.stats().expect("STATS");
        assert_counted_once("fabric", &before, &after, reason);
        (result.return_value, out)
    }

    fn passes(&self, frame: &[u8], case: &str) {
        let (verdict, out) = self.run(frame, Reason::FabricPassed);
        assert_eq!(verdict, TC_ACT_OK, "{case}: handed to the stack");
        assert_eq!(out, frame, "{case}: untouched");
    }
}

#[test]
fn vnet_traffic_between_node_links_is_routed_in_the_program() {
    let f = Fabric::new();
    for (case, frame) in [
        ("node to node", FrameSpec::tcp(NODE_A, NODE_B, 5201).bytes()),
        (
            "pod to an Azure CNI pod",
            FrameSpec::udp(NODE_A, POD_B).bytes(),
        ),
        (
            "pod to a kubenet pod (UDR /24)",
            FrameSpec::udp(NODE_A, KUBENET_POD_B).bytes(),
        ),
        (
            "ping across nodes",
            FrameSpec::icmp_echo(NODE_A, POD_B, 8, 7).bytes(),
        ),
    ] {
        let (verdict, out) = f.run(&frame, Reason::FabricForwarded);
        assert_eq!(verdict, TC_ACT_REDIRECT, "{case}: redirected");
        assert_routed(&out, NODE_B_MAC, GATEWAY_B_MAC, 63, case);
        assert_eq!(out[14..].len(), frame[14..].len(), "{case}: length");
        assert_eq!(
            &out[14 + 12..14 + 20],
            &frame[14 + 12..14 + 20],
            "{case}: addresses kept"
        );
    }
}

#[test]
fn everything_else_takes_the_stack_untouched() {
    let f = Fabric::new();
    f.passes(&FrameSpec::udp(NODE_A, INTERNET).bytes(), "to the internet");
    f.passes(&FrameSpec::udp(NODE_A, ON_PREM).bytes(), "to on-prem");
    f.passes(
        &FrameSpec::udp(NODE_B, NODE_A).bytes(),
        "back out of the link it came in on",
    );
    let mut last_hop = FrameSpec::udp(NODE_A, POD_B);
    last_hop.ttl = 1;
    f.passes(
        &last_hop.bytes(),
        "TTL about to expire (the stack sends time exceeded)",
    );
    f.passes(
        &FrameSpec::tcp(NODE_A, POD_B, 40000)
            .ports(30080, 40000)
            .bytes(),
        "a reply from a node port (the load balancer's conntrack must see it)",
    );
    let mut fragment = FrameSpec::udp(NODE_A, POD_B);
    fragment.more_fragments = true;
    f.passes(&fragment.bytes(), "a first fragment");
    let mut later = FrameSpec::udp(NODE_A, POD_B);
    later.fragment_offset = 4;
    f.passes(&later.bytes(), "a later fragment");
    let mut options = FrameSpec::udp(NODE_A, POD_B);
    options.options = vec![1, 1, 1, 0];
    f.passes(&options.bytes(), "IPv4 options");
    let mut bad = FrameSpec::udp(NODE_A, POD_B).bytes();
    bad[14 + 10] ^= 0xff;
    f.passes(&bad, "a bad header checksum (the stack drops it)");
    f.passes(
        &vlan_tagged(&FrameSpec::udp(NODE_A, POD_B).bytes(), 5),
        "a VLAN tag",
    );
    let arp = ethernet(
        GATEWAY_B_MAC,
        SENDER_MAC,
        0x0806,
        &FrameSpec::udp(NODE_A, POD_B).packet(),
    );
    let (verdict, out) = f.run(&arp, Reason::PassedNonIpv4);
    assert_eq!(
        (verdict, out),
        (TC_ACT_OK, arp),
        "ARP: untouched, to the stack"
    );
}
