//! The switch's per-port counters, kept in the fabric's pinned `IQD_SWITCH_COUNTERS` array
//! map, which the switch maps into its memory and updates with atomic adds. Counting costs no
//! system call, `iqd stats` sees every frame the moment it is counted, and the counts survive
//! the switch (the map is pinned).
//!
//! Entry `slot` is the `NicCounters` of the port with that slot in `IQD_XSK_SLOTS`.
use std::{
    io,
    mem::{self, offset_of},
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
    ptr::{self, NonNull},
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;
use iqd_common::{map_names, NicCounters, MAX_PORTS};

/// The mapped array.
pub struct SwitchCounters {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is only ever accessed through atomics.
unsafe impl Send for SwitchCounters {}
// SAFETY: as above.
unsafe impl Sync for SwitchCounters {}

const STRIDE: usize = mem::size_of::<NicCounters>();
const RX_PACKETS: usize = offset_of!(NicCounters, rx_packets);
const RX_BYTES: usize = offset_of!(NicCounters, rx_bytes);
const DROPS: usize = offset_of!(NicCounters, drops);

impl SwitchCounters {
    /// Maps the array pinned in `pin_dir`.
    pub fn open(pin_dir: &Path) -> io::Result<Self> {
        let path = pin_dir.join(map_names::SWITCH_COUNTERS);
        let map = MapData::from_pin(&path).map_err(io::Error::other)?;
        // SAFETY: plain syscall.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let len = (MAX_PORTS as usize * STRIDE).div_ceil(page) * page;
        // SAFETY: maps the array's values, which the kernel lays out from offset 0 with
        // `STRIDE` bytes per entry (a multiple of 8). The mapping keeps the map alive after
        // its descriptor closes.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            base: NonNull::new(base.cast()).ok_or_else(io::Error::last_os_error)?,
            len,
        })
    }

    fn cell(&self, slot: u32, offset: usize) -> Option<&AtomicU64> {
        let at = (slot as usize).checked_mul(STRIDE)?.checked_add(offset)?;
        if slot >= MAX_PORTS || at + 8 > self.len {
            return None;
        }
        // SAFETY: in bounds (checked) and 8-byte aligned (page-aligned base, stride and
        // offsets multiples of 8); the memory is shared only through atomics.
        Some(unsafe { &*self.base.as_ptr().add(at).cast::<AtomicU64>() })
    }

    /// The switch delivered a frame of `bytes` bytes to the NIC of the port in `slot`.
    pub fn delivered(&self, slot: u32, bytes: u64) {
        if let (Some(packets), Some(total)) =
            (self.cell(slot, RX_PACKETS), self.cell(slot, RX_BYTES))
        {
            packets.fetch_add(1, Ordering::Relaxed);
            total.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// `n` frames the NIC of the port in `slot` sent were dropped for `reason`.
    pub fn dropped(&self, slot: u32, reason: u32, n: u64) {
        if (reason as usize) < iqd_common::drop_reason::COUNT {
            if let Some(cell) = self.cell(slot, DROPS + 8 * reason as usize) {
                cell.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Starts the counters of a slot given to a port anew at zero.
    pub fn zero(&self, slot: u32) {
        for offset in (0..STRIDE).step_by(8) {
            if let Some(cell) = self.cell(slot, offset) {
                cell.store(0, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for SwitchCounters {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `open` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
