//! Everything that crosses the kernel/userspace boundary: map names, capacities, key and
//! value layouts and the reason codes the datapath counts packets under.
//!
//! Every type here is `#[repr(C)]`, `Copy`, has no implicit padding and carries a size
//! assertion, so the kernel programs and `aksnet` agree on the bytes. With the `user`
//! feature the value types implement `aya::Pod`.
#![no_std]

pub mod stats;

pub use stats::{Reason, ReasonCounter, STATS_MAP};
