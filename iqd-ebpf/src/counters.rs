//! Per-NIC counters, per CPU so the hot path never contends on a cache line.
use iqd_common::NicCounters;

use crate::{maps::IQD_COUNTERS, DropReason};

#[inline(always)]
fn with(ifindex: u32, f: impl FnOnce(&mut NicCounters)) {
    if let Some(counters) = IQD_COUNTERS.get_ptr_mut(ifindex) {
        // SAFETY: the pointer is this CPU's slot of a per-CPU entry; XDP does not nest on a CPU.
        f(unsafe { &mut *counters });
    }
}

/// The LPAR sent `packets` frames (more than one: a GSO packet) of `len` bytes in all into the
/// fabric.
#[inline(always)]
pub fn sent(ifindex: u32, packets: u32, len: u64) {
    with(ifindex, |c| {
        c.tx_packets += packets as u64;
        c.tx_bytes += len;
    });
}

/// The fabric delivered `packets` frames of `len` bytes in all to the LPAR behind `ifindex`.
#[inline(always)]
pub fn delivered(ifindex: u32, packets: u32, len: u64) {
    with(ifindex, |c| {
        c.rx_packets += packets as u64;
        c.rx_bytes += len;
    });
}

/// A frame sent by the LPAR behind `ifindex` was dropped.
#[inline(always)]
pub fn dropped(ifindex: u32, reason: DropReason) {
    // Through memory: a reason that comes out of a packed `Result` is otherwise checked in one
    // register and used from another the compiler derived separately.
    // SAFETY: reads a local.
    let index = unsafe { core::ptr::read_volatile(&reason) } as usize;
    // The bound is checked right where the slot is addressed: checked before the map lookup,
    // the compiler may check one copy of the index and address with another, which the
    // verifier cannot follow. Read back as one 64-bit value (volatile: not rematerialised
    // from the 32-bit reason), the check and the address use the same register.
    with(ifindex, |c| {
        // SAFETY: reads a local.
        let index = unsafe { core::ptr::read_volatile(&index) };
        if let Some(slot) = c.drops.get_mut(index) {
            *slot += 1;
        }
    });
}
