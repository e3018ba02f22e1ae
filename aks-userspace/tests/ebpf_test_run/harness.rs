//! A loaded datapath with seeded maps, and one call that runs a program on a frame and
//! asserts the reason the packet was counted under.

use std::net::Ipv4Addr;

use aks_ebpf_common::conntrack::CONNTRACK_DEFAULT_CAPACITY;
use aks_ebpf_common::{addr, Endpoint, NodeConfig, Reason, Route, RouteKind, ROUTE_MASQUERADE};
use aks_userspace::datapath::ebpf::{NodeDatapath, ReasonTotals};
use aya::programs::{TestRun, TestRunOptions};

use crate::common::{require_privileges, VethPair};
use crate::frames::*;

pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;

pub const NAT_PORTS: (u16, u16) = (10000, 32767);
/// The service CIDR of the test node.
pub const SERVICE_CIDR: ([u8; 4], u32) = ([10, 0, 0, 0], 16);

/// BPF_PROG_TEST_RUN runs TC programs on an skb of the loopback device: the "veth" the
/// test frames arrive on. `LOCAL_POD`'s endpoint is on it, so its frames are its own.
pub const TEST_RUN_IFINDEX: u32 = 1;

/// Loads the object for `namespace`. BPF_PROG_LOAD gives up with EAGAIN when a signal
/// reaches the thread while the verifier runs (the tests run side by side and spawn
/// `ip`); like libbpf, try again, a bounded number of times.
fn load(namespace: &str, flows: u32) -> NodeDatapath {
    let mut attempt = 1;
    loop {
        match NodeDatapath::load_with_capacity(namespace, None, flows) {
            Ok(datapath) => return datapath,
            Err(e) if attempt < 5 && format!("{e:#}").contains("os error 11") => attempt += 1,
            Err(e) => panic!("loading the eBPF object (attempt {attempt}): {e:?}"),
        }
    }
}

pub struct Harness {
    pub datapath: NodeDatapath,
    _pair: VethPair,
}

impl Harness {
    /// A loaded datapath with two local pods (`LOCAL_POD` on the test run's device,
    /// `PEER_POD` on another veth) and the routes of an Azure CNI node.
    pub fn new() -> Self {
        Self::with_capacity(1024)
    }

    /// As `new`, with room for `flows` masqueraded flows.
    pub fn with_capacity(flows: u32) -> Self {
        require_privileges();
        let pair = VethPair::create("run");
        let datapath = load(&pair.b, flows);
        let mut h = Self {
            datapath,
            _pair: pair,
        };
        h.seed();
        h
    }

    /// A loaded datapath whose `CONFIG` was never written.
    pub fn unconfigured() -> Self {
        require_privileges();
        let pair = VethPair::create("cfg");
        let datapath = load(&pair.b, CONNTRACK_DEFAULT_CAPACITY);
        Self {
            datapath,
            _pair: pair,
        }
    }

    fn seed(&mut self) {
        let datapath = &mut self.datapath;
        datapath
            .set_config(NodeConfig {
                node_ip: addr::ipv4(NODE),
                uplink_ifindex: 77,
                uplink_mac: UPLINK_MAC,
                gateway_mac: GATEWAY_MAC,
                nat_port_min: NAT_PORTS.0,
                nat_port_max: NAT_PORTS.1,
                service_net: addr::ipv4(SERVICE_CIDR.0),
                service_mask: addr::netmask(SERVICE_CIDR.1),
                ..Default::default()
            })
            .expect("CONFIG");
        for (pod, host_ifindex, pod_mac, host_mac) in [
            (LOCAL_POD, TEST_RUN_IFINDEX, POD_MAC, HOST_MAC),
            (PEER_POD, 55, PEER_POD_MAC, PEER_HOST_MAC),
        ] {
            datapath
                .upsert_endpoint(
                    Ipv4Addr::from(pod),
                    Endpoint {
                        host_ifindex,
                        flags: 0,
                        pod_mac,
                        host_mac,
                    },
                )
                .expect("ENDPOINTS");
        }
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
    }

    /// Runs `program` on `frame`; returns the verdict and the frame as it came out, and
    /// asserts the packet was counted exactly once, under `reason`.
    pub fn run(&self, program: &str, frame: &[u8], reason: Reason) -> (u32, Vec<u8>) {
        let before = self.datapath.stats().expect("STATS");
        let (verdict, out) = self.run_uncounted(program, frame);
        let after = self.datapath.stats().expect("STATS");
        assert_counted_once(program, &before, &after, reason);
        (verdict, out)
    }

    /// Runs `program` on `frame` as [`Harness::run`] does and asserts it was redirected;
    /// returns the frame as it left.
    pub fn redirected(&self, program: &str, frame: &[u8], reason: Reason) -> Vec<u8> {
        let (verdict, out) = self.run(program, frame, reason);
        assert_eq!(verdict, TC_ACT_REDIRECT, "{program}: {reason:?} redirects");
        out
    }

    /// Runs `program` on `frame`, without looking at the counters.
    pub fn run_uncounted(&self, program: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; frame.len() + 64];
        let options = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        };
        let result = self
            .datapath
            .classifier(program)
            .expect("classifier")
            .test_run(options)
            .unwrap_or_else(|e| panic!("test_run of {program}: {e:?}"));
        out.truncate(result.data_size_out as usize);
        (result.return_value, out)
    }
}

/// Asserts that between `before` and `after` exactly one reason's packet count moved,
/// `reason`'s: the packet was counted once, under the reason it should have been.
pub fn assert_counted_once(
    program: &str,
    before: &ReasonTotals,
    after: &ReasonTotals,
    reason: Reason,
) {
    let counted: Vec<&str> = after
        .iter()
        .zip(before.iter())
        .filter(|((_, a), (_, b))| a.packets != b.packets)
        .map(|((r, _), _)| r.name())
        .collect();
    assert_eq!(
        counted,
        [reason.name()],
        "{program}: counted once, under {}",
        reason.name()
    );
}
