//! Connection tracking: once security groups allow a connection's first frame, the frames of
//! both directions pass without a rule lookup until the connection goes idle. The loader removes
//! entries that changed rules no longer allow.
//!
//! Connections are keyed by segment as well as by 5-tuple: two CHPIDs, or two VLANs of one, may
//! use one address plan, and a frame of one must never find, refresh or replace a connection of
//! the other.
use aya_ebpf::{
    bindings::{BPF_EXIST, BPF_NOEXIST},
    helpers::bpf_ktime_get_coarse_ns,
};
use iqd_common::{
    ct_flags, ct_stat, ct_timeout,
    wire::{TCP_FIN, TCP_RST},
    CtEntry, CtKey,
};

use crate::{
    maps::{IQD_CONNTRACK, IQD_CT_STATS},
    parse::Flow,
};

/// The key of the connection `flow` would open in `segment`. One key serves a frame's
/// lookups both ways and its insertion ([`track`], [`open`]): with 16-byte addresses, a copy
/// per lookup would not fit the stack.
#[inline(always)]
pub fn key(flow: &Flow, segment: u32) -> CtKey {
    CtKey::new(
        segment,
        flow.saddr.bytes(),
        flow.daddr.bytes(),
        flow.sport,
        flow.dport,
        flow.proto,
    )
}

/// Turns `key` the other way (the reply direction's key, or back).
#[inline(always)]
fn reverse(key: &mut CtKey) {
    core::mem::swap(&mut key.saddr, &mut key.daddr);
    core::mem::swap(&mut key.sport, &mut key.dport);
}

#[inline(always)]
fn tcp_flags(flow: &Flow) -> u32 {
    let mut flags = 0;
    if flow.tcp_flags & TCP_FIN != 0 {
        flags |= ct_flags::FIN;
    }
    if flow.tcp_flags & TCP_RST != 0 {
        flags |= ct_flags::RST;
    }
    flags
}

/// Whether `flow` (whose [`key`] is `key`), going from port `from` to port `to`, belongs to a
/// live tracked connection (either way); refreshes the connection if so. Leaves `key` as it
/// found it.
// Keys and entries are passed to the map helpers by reference, not moved: each move would be
// another 44- or 48-byte copy on a stack that has no room for it.
#[allow(clippy::needless_borrows_for_generic_args)]
#[inline(always)]
pub fn track(key: &mut CtKey, flow: &Flow, from: u32, to: u32) -> bool {
    if !flow.tracked {
        return false;
    }
    // SAFETY: the helper has no preconditions. The coarse clock (a tick's resolution, no
    // clock source read) is plenty for timeouts of seconds, and cheaper per frame.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if let Some(entry) = IQD_CONNTRACK.get_ptr_mut(&*key) {
        // SAFETY: map values stay valid while the program runs; races only lose counts.
        let entry = unsafe { &mut *entry };
        if entry.origin_ifindex == from && entry.reply_ifindex == to && live(entry, flow.proto, now)
        {
            entry.origin_packets += 1;
            entry.flags |= tcp_flags(flow);
            entry.last_seen_ns = now;
            return true;
        }
    }
    reverse(key);
    let found = IQD_CONNTRACK.get_ptr_mut(&*key);
    reverse(key);
    if let Some(entry) = found {
        // SAFETY: as above.
        let entry = unsafe { &mut *entry };
        if entry.origin_ifindex == to && entry.reply_ifindex == from && live(entry, flow.proto, now)
        {
            entry.reply_packets += 1;
            entry.flags |= ct_flags::REPLIED | tcp_flags(flow);
            entry.last_seen_ns = now;
            return true;
        }
    }
    false
}

#[inline(always)]
fn live(entry: &CtEntry, proto: u8, now: u64) -> bool {
    // Another CPU may have refreshed the entry after this one read the clock: a `last_seen`
    // ahead of `now` is as live as it gets (a wrapping difference would call it expired).
    let last_seen = entry.last_seen_ns;
    last_seen >= now || now - last_seen <= ct_timeout::of(proto, entry.flags)
}

/// Starts tracking the connection `flow` (whose [`key`] is `key`) opens from port `from` to
/// port `to`.
#[allow(clippy::needless_borrows_for_generic_args)] // as in `track`
#[inline(always)]
pub fn open(key: &CtKey, flow: &Flow, from: u32, to: u32) {
    if !flow.opens {
        return;
    }
    // SAFETY: the helper has no preconditions; the clock of `track`.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let entry = CtEntry {
        origin_ifindex: from,
        reply_ifindex: to,
        created_ns: now,
        last_seen_ns: now,
        origin_packets: 1,
        reply_packets: 0,
        flags: tcp_flags(flow),
        _pad: 0,
    };
    if IQD_CONNTRACK
        .insert(key, &entry, BPF_NOEXIST as u64)
        .is_ok()
    {
        if let Some(created) = IQD_CT_STATS.get_ptr_mut(ct_stat::CREATED) {
            // SAFETY: this CPU's slot of a per-CPU array.
            unsafe { *created += 1 };
        }
        return;
    }
    // The tuple is taken in this segment. Only an expired entry gives way to the new
    // connection; a live one (a NIC allowed to spoof reusing a peer's tuple, say) stays.
    let Some(old) = IQD_CONNTRACK.get_ptr(key) else {
        return;
    };
    // SAFETY: map values stay valid while the program runs.
    if live(unsafe { &*old }, flow.proto, now) {
        return;
    }
    // Not counted as created: `iqd stats` derives evictions from created - revoked - entries,
    // and the expired entry it replaces was counted when it was created.
    let _ = IQD_CONNTRACK.insert(key, &entry, BPF_EXIST as u64);
}
