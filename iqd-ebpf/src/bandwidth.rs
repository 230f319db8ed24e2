//! Shared bandwidth: an LPAR with a bandwidth has one meter per direction (what it sends, what
//! it receives) for all its NICs together, in the fabric where nothing in the LPAR reaches it.
//! Every frame the fabric delivers between NICs passes here, on every data path, once the
//! policy has let it through. A meter is a GCRA in virtual time ([`iqd_common::Bucket`]):
//! a frame that would take it more than its burst ahead of now is dropped and counted
//! (`bandwidth_exceeded`, on the sender). Dropping, not delaying: no data path can hold a frame
//! back (tc's `bpf_redirect_peer` passes no qdisc; see docs/architecture.md for what was
//! measured).
use aya_ebpf::helpers::bpf_ktime_get_ns;
use iqd_common::{
    bw_direction, drop_reason, port_flags, route_flags, Bucket, PortInfo, RouteTarget,
};

use crate::{
    frame::Frame,
    maps::{IQD_BUCKETS, IQD_BW_PORTS},
    DropReason,
};

/// The meter of direction `direction` of the LPAR behind port `ifindex`.
#[inline(always)]
fn bucket(ifindex: u32, direction: u32) -> Option<*mut Bucket> {
    // SAFETY: plain data; a concurrent update yields another valid slot.
    let slot = unsafe { IQD_BW_PORTS.get(ifindex) }.copied()?;
    IQD_BUCKETS.get_ptr_mut(2 * slot + direction)
}

/// Where the meter `bucket` stands once it admits `bytes` more at `now`; `None` if that
/// exceeds its burst.
#[inline(always)]
fn advance(bucket: *mut Bucket, now: u64, bytes: u64) -> Option<u64> {
    // SAFETY: a map value pointer; volatile so each read is one load of the shared slot.
    let (rate, burst, next) = unsafe {
        (
            core::ptr::read_volatile(&(*bucket).rate),
            core::ptr::read_volatile(&(*bucket).burst_ns),
            core::ptr::read_volatile(&(*bucket).next_ns),
        )
    };
    if rate == 0 {
        return Some(next);
    }
    let start = if next > now { next } else { now };
    let next = start + bytes * 1_000_000_000 / rate;
    if next - now > burst {
        None
    } else {
        Some(next)
    }
}

#[inline(always)]
fn count_drop(bucket: *mut Bucket, bytes: u64) {
    // SAFETY: as in `advance`. Two CPUs may race here; these are statistics.
    unsafe {
        (*bucket).dropped_packets += 1;
        (*bucket).dropped_bytes += bytes;
    }
}

/// Admits the frame `ctx` from the NIC behind port `ifindex` (`port`) to `target`, or finds
/// that the sender's or the receiver's bandwidth does not allow it. It counts as it goes on
/// the wire: a GSO packet's `headers` (bytes up to its payload) once per segment. Costs an
/// LPAR without a bandwidth nothing but two flag tests.
#[inline(always)]
pub fn admit<C: Frame>(
    ctx: &C,
    ifindex: u32,
    port: &PortInfo,
    target: &RouteTarget,
    headers: u32,
) -> Result<(), DropReason> {
    let send = if port.flags & port_flags::BANDWIDTH != 0 {
        bucket(ifindex, bw_direction::SEND)
    } else {
        None
    };
    let receive = if target.flags & route_flags::BANDWIDTH != 0 {
        bucket(target.ifindex, bw_direction::RECEIVE)
    } else {
        None
    };
    if send.is_none() && receive.is_none() {
        return Ok(());
    }
    let bytes = ctx.len() + (ctx.segments() as u64 - 1) * headers as u64;
    // SAFETY: no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // Both meters must admit the frame before either is moved.
    let mut send_next = 0;
    if let Some(b) = send {
        match advance(b, now, bytes) {
            Some(next) => send_next = next,
            None => {
                count_drop(b, bytes);
                return Err(drop_reason::BANDWIDTH_EXCEEDED);
            }
        }
    }
    let mut receive_next = 0;
    if let Some(b) = receive {
        match advance(b, now, bytes) {
            Some(next) => receive_next = next,
            None => {
                count_drop(b, bytes);
                return Err(drop_reason::BANDWIDTH_EXCEEDED);
            }
        }
    }
    // SAFETY: as in `advance`. Not atomic with the reads: two CPUs metering one LPAR at the
    // same instant may each admit a frame the other does not see (measured: well inside the
    // bounds, docs/architecture.md).
    unsafe {
        if let Some(b) = send {
            core::ptr::write_volatile(&mut (*b).next_ns, send_next);
        }
        if let Some(b) = receive {
            core::ptr::write_volatile(&mut (*b).next_ns, receive_next);
        }
    }
    Ok(())
}
