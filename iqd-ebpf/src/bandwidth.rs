//! Shared bandwidth: an LPAR with a bandwidth has, per direction (what it sends, what it
//! receives), one shaper for all its NICs together, in the fabric namespace where nothing in
//! the LPAR reaches it: a veth pair whose in end has a TBF qdisc at the bandwidth. A frame the
//! policy lets through ([`admit`]) to or from such an LPAR goes through the sender's send
//! shaper, then the receiver's receive shaper, then to its NIC. Delaying, not dropping, is what
//! TCP needs: a policer that drops above the rate left a TCP stream at a few percent of it
//! (docs/architecture.md has the measurements).
//!
//! The qdisc is on the skb path only: `tc` moves the skb into the shaper with `bpf_redirect`;
//! `xdp` and `afxdp` pass the frame up (`XDP_PASS`) with its target in the XDP metadata, and
//! `iqd_shaped` on the port's tc ingress takes it from there. A meter on the way in (a GCRA in
//! virtual time, [`iqd_common::Bucket`]) models the shaper's queue and drops what would make it
//! longer than its burst (`bandwidth_exceeded`, counted on the sender), so what does not slow
//! down (many senders at once, raw frames) is refused at the fabric rather than queued without
//! end; a socket's own send buffer usually holds its sender back first.
use aya_ebpf::{
    bindings::TC_ACT_REDIRECT,
    helpers::{bpf_ktime_get_ns, bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
};
use iqd_common::{
    bw_direction, drop_reason, port_flags, route_flags, shaper_mark, Bucket, PortInfo, RouteTarget,
};

use crate::{
    counters,
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

/// Whether the sender's or the receiver's LPAR has a bandwidth: the one test every frame pays;
/// [`admit`] runs only when it holds.
#[inline(always)]
pub fn limited(port: &PortInfo, target: &RouteTarget) -> bool {
    port.flags & port_flags::BANDWIDTH != 0 || target.flags & route_flags::BANDWIDTH != 0
}

/// Whether the frame `ctx` from the NIC behind port `ifindex` (`port`) to `target` goes through
/// a shaper (the sender's or the receiver's LPAR has a bandwidth), or exceeds one of the
/// bandwidths. It counts as it goes on the wire: a GSO packet's `headers` (bytes up to its
/// payload) once per segment. Called only where [`limited`] holds.
#[inline(always)]
pub fn admit<C: Frame>(
    ctx: &C,
    ifindex: u32,
    port: &PortInfo,
    target: &RouteTarget,
    headers: u32,
) -> Result<bool, DropReason> {
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
        return Ok(false);
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
    // same instant may each admit a frame the other does not see; the shaper still holds the
    // rate, the meter only bounds its queue.
    unsafe {
        if let Some(b) = send {
            core::ptr::write_volatile(&mut (*b).next_ns, send_next);
        }
        if let Some(b) = receive {
            core::ptr::write_volatile(&mut (*b).next_ns, receive_next);
        }
    }
    Ok(true)
}

/// Where a shaped frame goes next.
enum Hop {
    /// Into the shaper whose in end is `ifindex`, marked `mark`.
    Shaper { ifindex: u32, mark: u32 },
    /// To its NIC.
    Deliver,
}

/// The shaper of direction `direction` of the LPAR behind port `ifindex`, counting `bytes`
/// into it.
#[inline(always)]
fn shaper(ifindex: u32, direction: u32, bytes: u64) -> Option<u32> {
    let b = bucket(ifindex, direction)?;
    // SAFETY: as in `advance`; statistics.
    unsafe {
        let shaper = core::ptr::read_volatile(&(*b).shaper);
        if shaper == 0 {
            return None;
        }
        (*b).shaped_packets += 1;
        (*b).shaped_bytes += bytes;
        Some(shaper)
    }
}

/// The next hop of a frame from port `sender` (0 once it left its send shaper) to port
/// `target`, that has been through the shapers in `done` (`shaper_mark` bits).
#[inline(always)]
fn next_hop(sender: u32, target: u32, done: u32, bytes: u64) -> Hop {
    if done == 0 && sender != 0 {
        if let Some(ifindex) = shaper(sender, bw_direction::SEND, bytes) {
            return Hop::Shaper {
                ifindex,
                mark: target | shaper_mark::SEND,
            };
        }
    }
    if done & shaper_mark::RECEIVE == 0 {
        if let Some(ifindex) = shaper(target, bw_direction::RECEIVE, bytes) {
            return Hop::Shaper {
                ifindex,
                mark: target | shaper_mark::RECEIVE,
            };
        }
    }
    Hop::Deliver
}

/// Sends a copy of a one-to-many frame (mcast.rs, tc) from port `sender` to port `target` as
/// [`steer`] sends a unicast frame on: into its first shaper, marked as `steer` marks it, for
/// `iqd_shaped` to move on; or, with no shaper built, straight to its NIC. Called only where
/// [`admit`] said it is shaped.
#[inline(always)]
pub fn replicate<C: Frame>(ctx: &C, sender: u32, target: u32) -> Result<(), DropReason> {
    let (packets, bytes) = (ctx.segments(), ctx.len());
    match next_hop(sender, target, 0, bytes) {
        Hop::Shaper { ifindex, mark } => {
            if !ctx.replicate(ifindex, mark) {
                return Err(drop_reason::REDIRECT_FAILED);
            }
        }
        Hop::Deliver => {
            if !ctx.replicate(target, 0) {
                return Err(drop_reason::REDIRECT_FAILED);
            }
            counters::delivered(target, packets, bytes);
        }
    }
    Ok(())
}

/// Moves a shaped frame on (tc): into its next shaper, or into the LPAR of port `target`.
/// `sender` is the port it came from (0 if it is already past its send shaper); `done` the
/// `shaper_mark` bits of the shaper it comes out of.
#[inline(always)]
pub fn steer(ctx: &TcContext, sender: u32, target: u32, done: u32) -> Result<i32, DropReason> {
    let (packets, bytes) = (ctx.segments(), Frame::len(ctx));
    match next_hop(sender, target, done, bytes) {
        Hop::Shaper { ifindex, mark } => {
            ctx.set_mark(mark);
            // SAFETY: the helper only records the target for after the program returns.
            if unsafe { bpf_redirect(ifindex, 0) } != TC_ACT_REDIRECT as i64 {
                return Err(drop_reason::REDIRECT_FAILED);
            }
            Ok(TC_ACT_REDIRECT)
        }
        Hop::Deliver => {
            // SAFETY: as above.
            if unsafe { bpf_redirect_peer(target, 0) } != TC_ACT_REDIRECT as i64 {
                return Err(drop_reason::REDIRECT_FAILED);
            }
            counters::delivered(target, packets, bytes);
            Ok(TC_ACT_REDIRECT)
        }
    }
}
