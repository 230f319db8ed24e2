//! `iqd trace`, the Network Traffic Analyzer: copies of the frames of traced ports to the
//! trace's perf event array, taken at the fabric's decision (the same point on every data
//! path). A frame delivered from one traced NIC to another is recorded once on each: as sent
//! on the sender's, as received on the receiver's; frames to or from a NIC that is not traced
//! are not recorded at all. A dropped frame (with `--drops`) is recorded on the sender's NIC
//! with its reason.
//!
//! With no trace running this costs one array lookup (`IQD_TRACE_ON`) per frame. Ports of
//! LPARs that are not traceable are never in `IQD_TRACE_PORTS`, so nothing of theirs is copied.
use aya_ebpf::{helpers::bpf_ktime_get_ns, EbpfContext};
use iqd_common::{trace_flags, TraceEvent, TracePort, TRACE_MAX_SNAPLEN};

use crate::{
    frame::Frame,
    maps::{
        IQD_TRACE_EVENTS_0, IQD_TRACE_EVENTS_1, IQD_TRACE_EVENTS_2, IQD_TRACE_EVENTS_3,
        IQD_TRACE_ON, IQD_TRACE_PORTS,
    },
    DropReason, COUNTED,
};

#[inline(always)]
fn active() -> bool {
    matches!(IQD_TRACE_ON.get(0), Some(on) if *on != 0)
}

/// The frame (already rewritten for delivery) goes from the NIC behind `from` to the one
/// behind `to`.
#[inline(always)]
pub fn delivered<C: Frame + EbpfContext>(ctx: &C, from: u32, to: u32) {
    if active() {
        delivered_traced(ctx, from, to);
    }
}

/// A copy of a one-to-many frame from the NIC behind `from` goes to the one behind `to`:
/// recorded as received on the receiver's NIC, and as sent on the sender's with the first
/// copy recorded only (`sent`: not yet), as the sender sent one frame. Whether the sender's
/// record is made now or was before.
#[inline(always)]
pub fn delivered_copy<C: Frame + EbpfContext>(ctx: &C, from: u32, to: u32, sent: bool) -> bool {
    if active() {
        return delivered_copy_traced(ctx, from, to, sent);
    }
    sent
}

/// A copy of a one-to-many frame from the NIC behind `from` to the one behind `to` was
/// dropped for `reason` (`COUNTED`: the receiver's security groups refused it): recorded on
/// the sender's NIC, naming the receiver's port, if both are traced.
#[inline(always)]
pub fn dropped_copy<C: Frame + EbpfContext>(ctx: &C, from: u32, to: u32, reason: DropReason) {
    if active() {
        let reason = if reason == COUNTED {
            iqd_common::drop_reason::SG_DENIED_INBOUND
        } else {
            reason
        };
        dropped_copy_traced(ctx, from, to, reason);
    }
}

/// The fabric answers the NIC behind `port` (an ARP reply or neighbour advertisement made
/// of its request in place).
#[inline(always)]
pub fn replied<C: Frame + EbpfContext>(ctx: &C, port: u32) {
    if active() {
        record_on(ctx, port, trace_flags::RECEIVED, 0);
    }
}

/// The frame from the NIC behind `from` was dropped for `reason` (`COUNTED`: the receiver's
/// security groups refused it).
#[inline(always)]
pub fn dropped<C: Frame + EbpfContext>(ctx: &C, from: u32, reason: DropReason) {
    if active() {
        let reason = if reason == COUNTED {
            iqd_common::drop_reason::SG_DENIED_INBOUND
        } else {
            reason
        };
        record_on(ctx, from, trace_flags::DROPS, reason);
    }
}

// The work of a running trace is a subprogram of its own: the program's hot path keeps only
// the gate and a call it does not take, so its registers and stack stay as without traces.
#[inline(never)]
fn delivered_traced<C: Frame + EbpfContext>(ctx: &C, from: u32, to: u32) {
    // Only between traced ports: a frame to or from an LPAR that is not traceable is never
    // copied, on either side.
    if let (Some(sender), Some(receiver)) = (traced(from), traced(to)) {
        record(ctx, &sender, from, 0, 0, 0);
        if to != from {
            record(ctx, &receiver, to, trace_flags::RECEIVED, 0, 0);
        }
    }
}

#[inline(never)]
fn delivered_copy_traced<C: Frame + EbpfContext>(ctx: &C, from: u32, to: u32, sent: bool) -> bool {
    if let (Some(sender), Some(receiver)) = (traced(from), traced(to)) {
        if !sent {
            record(ctx, &sender, from, 0, 0, 0);
        }
        record(ctx, &receiver, to, trace_flags::RECEIVED, 0, 0);
        return true;
    }
    sent
}

#[inline(never)]
fn dropped_copy_traced<C: Frame + EbpfContext>(ctx: &C, from: u32, to: u32, reason: DropReason) {
    // Only between traced ports, as a delivered copy: nothing of a receiver that is not
    // traceable shows.
    if let (Some(port), Some(_)) = (traced(from), traced(to)) {
        record(ctx, &port, from, trace_flags::DROPS, reason, to);
    }
}

#[inline(never)]
fn record_on<C: Frame + EbpfContext>(ctx: &C, ifindex: u32, flags: u32, reason: DropReason) {
    if let Some(port) = traced(ifindex) {
        record(ctx, &port, ifindex, flags, reason, 0);
    }
}

#[inline(always)]
fn traced(ifindex: u32) -> Option<TracePort> {
    // SAFETY: plain data; a concurrent update yields another valid entry.
    unsafe { IQD_TRACE_PORTS.get(ifindex).copied() }
}

#[inline(always)]
fn record<C: Frame + EbpfContext>(
    ctx: &C,
    port: &TracePort,
    ifindex: u32,
    flags: u32,
    reason: DropReason,
    peer: u32,
) {
    if flags & trace_flags::DROPS != 0 && port.flags & trace_flags::DROPS == 0 {
        return;
    }
    let len = Frame::len(ctx);
    let mut cap = port.snaplen.min(TRACE_MAX_SNAPLEN) as u64;
    if cap > len {
        cap = len;
    }
    let event = TraceEvent {
        // SAFETY: reads a clock.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        ifindex,
        flags,
        reason,
        orig_len: len as u32,
        cap_len: cap as u32,
        peer,
    };
    // The helper copies `cap` bytes of the frame after the event (the upper half of its
    // flags); a full buffer loses the sample, which the reader is told of (PERF_RECORD_LOST).
    let cap = cap as u32;
    match port.slot {
        0 => IQD_TRACE_EVENTS_0.output(ctx, event, cap),
        1 => IQD_TRACE_EVENTS_1.output(ctx, event, cap),
        2 => IQD_TRACE_EVENTS_2.output(ctx, event, cap),
        _ => IQD_TRACE_EVENTS_3.output(ctx, event, cap),
    }
}
