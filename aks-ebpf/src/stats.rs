//! The `STATS` map: per-CPU packet and byte counters, one slot per [`Reason`].

use aks_ebpf_common::{Reason, ReasonCounter};
use aya_ebpf::{btf_maps::PerCpuArray, macros::btf_map};

/// Declared as a BTF map so `bpftool map dump` shows the counter fields by name.
#[btf_map]
static STATS: PerCpuArray<ReasonCounter, { Reason::COUNT as usize }> = PerCpuArray::new();

/// Adds one packet of `len` bytes to `reason`'s slot on this CPU. Per-CPU slots need no
/// atomics: nothing else writes this CPU's copy while the program runs.
#[inline(always)]
pub fn count(reason: Reason, len: u32) {
    if let Some(slot) = STATS.get_ptr_mut(reason.index()) {
        // SAFETY: the map returned a valid pointer to this CPU's slot.
        unsafe {
            (*slot).packets += 1;
            (*slot).bytes += u64::from(len);
        }
    }
}
