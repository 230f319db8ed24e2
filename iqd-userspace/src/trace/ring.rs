//! The trace's perf buffers, one per CPU, opened with a wakeup watermark.
//!
//! aya's perf buffers ask the kernel to wake the reader after every record, which raises an
//! interrupt work item per record: on this machine about 13 µs per traced frame inside the
//! program. `iqd trace` drains on a timer anyway, so its buffers are opened with a watermark
//! instead (a wakeup per quarter buffer) and read here: `perf_event_open`, `mmap` and the
//! ring's head and tail, as perf_event_open(2) describes them.
use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::atomic::{fence, AtomicU64, Ordering},
};

use aya::maps::MapData;

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_BPF_OUTPUT: u64 = 10;
const PERF_SAMPLE_RAW: u64 = 1 << 10;
/// `perf_event_attr.watermark`: wake up by bytes (`wakeup_watermark`), not by events.
const ATTR_WATERMARK: u64 = 1 << 14;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_SAMPLE: u32 = 9;
/// Offsets of `data_head` and `data_tail` in `struct perf_event_mmap_page`.
const DATA_HEAD: usize = 1024;
const DATA_TAIL: usize = 1032;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;

/// `struct perf_event_attr` as of PERF_ATTR_SIZE_VER0 (64 bytes), all the trace needs.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_watermark: u32,
    bp_type: u32,
    config1: u64,
}

#[repr(C)]
struct MapUpdateAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// What a buffer held: records' raw bytes, and how many the kernel could not write.
pub enum Record<'a> {
    Sample(&'a [u8]),
    Lost(u64),
}

/// One CPU's buffer, registered at its CPU's index of the perf event array.
pub struct PerfRing {
    fd: OwnedFd,
    base: *mut u8,
    /// Bytes of the data area (a power of two), after the header page.
    size: usize,
    page: usize,
    scratch: Vec<u8>,
}

impl PerfRing {
    /// Opens CPU `cpu`'s buffer of `pages` pages (a power of two) and puts it into `map` at
    /// index `cpu`.
    pub fn open(map: &MapData, cpu: u32, pages: usize) -> io::Result<Self> {
        let page = 4096usize;
        let size = page * pages;
        let attr = PerfEventAttr {
            kind: PERF_TYPE_SOFTWARE,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            config: PERF_COUNT_SW_BPF_OUTPUT,
            sample_period: 1,
            sample_type: PERF_SAMPLE_RAW,
            flags: ATTR_WATERMARK,
            wakeup_watermark: (size / 4) as u32,
            ..Default::default()
        };
        // SAFETY: a valid attr for the call; the kernel returns a new fd or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
                -1 as libc::pid_t,
                cpu as libc::c_int,
                -1 as libc::c_int,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: maps the header page and the data area of the event's buffer.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page + size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ring = PerfRing {
            fd,
            base: base.cast(),
            size,
            page,
            scratch: Vec::new(),
        };
        let value = ring.fd.as_raw_fd() as u32;
        let update = MapUpdateAttr {
            map_fd: map.fd().as_fd().as_raw_fd() as u32,
            _pad: 0,
            key: &cpu as *const u32 as u64,
            value: &value as *const u32 as u64,
            flags: 0,
        };
        // SAFETY: `update` points at a key and value that outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_UPDATE_ELEM,
                &update as *const MapUpdateAttr,
                std::mem::size_of::<MapUpdateAttr>(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ring)
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: offsets within the mapped, 8-aligned header page.
        unsafe { &*(self.base.add(offset) as *const AtomicU64) }
    }

    /// Hands every record written so far to `f`, then frees their space.
    pub fn drain(&mut self, mut f: impl FnMut(Record<'_>)) {
        let head = self.word(DATA_HEAD).load(Ordering::Acquire);
        let mut tail = self.word(DATA_TAIL).load(Ordering::Relaxed);
        // SAFETY: the data area follows the header page.
        let data = unsafe { std::slice::from_raw_parts(self.base.add(self.page), self.size) };
        while tail < head {
            let at = (tail as usize) & (self.size - 1);
            // A record's header (8 bytes, aligned) never wraps.
            let kind = u32::from_ne_bytes(data[at..at + 4].try_into().unwrap_or_default());
            let len = u16::from_ne_bytes(data[at + 6..at + 8].try_into().unwrap_or_default());
            if len < 8 {
                break;
            }
            self.scratch.clear();
            for i in 8..len as usize {
                self.scratch.push(data[(at + i) & (self.size - 1)]);
            }
            match kind {
                PERF_RECORD_SAMPLE if self.scratch.len() >= 4 => {
                    let raw = u32::from_ne_bytes(self.scratch[0..4].try_into().unwrap_or_default());
                    let end = (4 + raw as usize).min(self.scratch.len());
                    f(Record::Sample(&self.scratch[4..end]));
                }
                PERF_RECORD_LOST if self.scratch.len() >= 16 => {
                    let lost =
                        u64::from_ne_bytes(self.scratch[8..16].try_into().unwrap_or_default());
                    f(Record::Lost(lost));
                }
                _ => {}
            }
            tail += u64::from(len);
        }
        fence(Ordering::Release);
        self.word(DATA_TAIL).store(tail, Ordering::Release);
    }
}

impl Drop for PerfRing {
    fn drop(&mut self) {
        // SAFETY: unmaps what `open` mapped; the fd closes after.
        unsafe { libc::munmap(self.base.cast(), self.page + self.size) };
    }
}
