//! Privileged: the kernel programs run on crafted frames with BPF_PROG_TEST_RUN against
//! seeded maps. Each case asserts the verdict, the one reason it was counted under, and
//! the bytes that come out: MACs of the next hop, the TTL one lower, and checksums that
//! an independent implementation (etherparse) verifies.
//!
//! One file per flow, as Cilium's `bpf/tests` keeps them: `frames` builds the packets,
//! `harness` loads and seeds the datapath, the rest each own one feature.

#[path = "../common/mod.rs"]
mod common;

mod events;
mod fabric;
mod frames;
mod harness;
mod icmp_errors;
mod nodeport;
mod policy;
mod refused;
mod routing;
mod services;
mod snat;
mod verifier;
