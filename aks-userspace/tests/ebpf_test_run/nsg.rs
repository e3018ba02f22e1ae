//! The NSG at the uplink (XDP): first match wins, no match allows.

use std::net::Ipv4Addr;

use aks_ebpf_common::nsg::{NSG_ALLOW, NSG_DENY};
use aks_ebpf_common::{addr, NsgRule, Reason};
use aks_userspace::datapath::ebpf::map_addr;

use crate::frames::*;
use crate::harness::*;

#[test]
fn nsg_first_match_wins_and_no_match_allows() {
    let mut h = Harness::new();
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
