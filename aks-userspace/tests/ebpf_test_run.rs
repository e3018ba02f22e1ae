//! Privileged: `from_pod` run on crafted frames with BPF_PROG_TEST_RUN. Each frame's
//! verdict and the reason it was counted under are asserted one frame at a time.

mod common;

use aks_ebpf_common::Reason;
use aks_userspace::ebpf::NodeDatapath;
use aya::programs::{TestRun, TestRunOptions};
use common::{require_privileges, VethPair};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

fn frame(ether_type: [u8; 2], l3: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    f.extend_from_slice(&ether_type);
    f.extend_from_slice(l3);
    f
}

fn ipv4_header(version_ihl: u8) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0] = version_ihl;
    h[2..4].copy_from_slice(&20u16.to_be_bytes());
    h[8] = 64; // TTL
    h[9] = 17; // UDP
    h[12..16].copy_from_slice(&[10, 250, 0, 1]);
    h[16..20].copy_from_slice(&[10, 250, 0, 2]);
    h
}

#[test]
fn from_pod_verdicts_on_crafted_frames() {
    require_privileges();
    // The datapath belongs to a node namespace even though nothing is attached here.
    let pair = VethPair::create("run");
    let datapath = NodeDatapath::load(&pair.b, None).expect("loading the eBPF object");
    let program = datapath.from_pod_program().expect("from_pod");

    // A frame cut short inside its IPv4 header cannot be fed through BPF_PROG_TEST_RUN
    // (the kernel answers EINVAL for it); tests/ebpf_stats.rs sends one for real instead.
    let cases: [(&str, Vec<u8>, u32, Reason); 3] = [
        (
            "valid IPv4",
            frame([0x08, 0x00], &ipv4_header(0x45)),
            TC_ACT_OK,
            Reason::PassedIpv4,
        ),
        (
            "ARP",
            frame([0x08, 0x06], &[0u8; 28]),
            TC_ACT_OK,
            Reason::PassedNonIpv4,
        ),
        (
            "IPv4 with IHL 4",
            frame([0x08, 0x00], &ipv4_header(0x44)),
            TC_ACT_SHOT,
            Reason::DropMalformed,
        ),
    ];
    for (name, input, verdict, reason) in cases {
        let before = datapath.stats().expect("reading STATS").get(reason);
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(&input),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("test_run on {name}: {e:?}"));
        assert_eq!(result.return_value, verdict, "verdict for {name}");
        let after = datapath.stats().expect("reading STATS").get(reason);
        assert_eq!(
            after.packets,
            before.packets + 1,
            "{name} must be counted under {}",
            reason.name()
        );
        assert_eq!(
            after.bytes,
            before.bytes + input.len() as u64,
            "{name} bytes under {}",
            reason.name()
        );
    }
}
