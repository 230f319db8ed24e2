//! One-to-many delivery: multicast groups and broadcasts, within the sender's segment.
//!
//! Registrations are learnt as qeth registers them with the adapter: from the IGMP (v1, v2,
//! v3) and MLD (v1, v2) reports and leaves an LPAR sends on its NIC. A report is consumed
//! here (never flooded); the group's member list in `IQD_GROUPS` gains or loses the sender's
//! port. Broadcast addresses (limited and directed) have member lists iqd writes.
//!
//! A frame to a group or broadcast address goes to every member but the sender, each copy
//! meeting the policy a unicast frame meets for that receiver: none to a stopped LPAR
//! (`lpar_stopped`), the sender's outbound and the receiver's inbound rules (no tracked
//! connection), both LPARs' bandwidths (metered per copy, then through the shapers as
//! unicast); each copy is traced as a delivery or a drop. Copies need a hook that can clone: tc
//! (`bpf_clone_redirect` per receiver); the XDP programs hand such frames up to the port's tc
//! hook, which runs this same code.
//!
//! A layer-2 NIC's frame to a group MAC (layer2.rs) is flooded the same way ([`flood`]) to
//! the segment's other layer-2 NICs: member lists iqd writes (`iqd_common::flood_key`), and
//! the receivers' security groups for IP frames only.
use core::{mem::MaybeUninit, ptr::addr_of_mut};

use aya_ebpf::{bindings::BPF_NOEXIST, cty::c_void, helpers::bpf_loop, EbpfContext};
use iqd_common::{
    drop_reason, flood_key, is_multicast, port_flags, route_flags, segment_of, sg_direction,
    wire::{
        ALLOW_NEW_SOURCES, CHANGE_TO_EXCLUDE, CHANGE_TO_INCLUDE, ETH_HLEN, IGMP_V1_REPORT,
        IGMP_V2_LEAVE, IGMP_V2_REPORT, IGMP_V3_REPORT, IPPROTO_ICMPV6, IPPROTO_IGMP, IPV6_HLEN,
        MLD_QUERY, MLD_V1_DONE, MLD_V1_REPORT, MLD_V2_REPORT, MODE_IS_EXCLUDE, MODE_IS_INCLUDE,
    },
    Addr, GroupKey, GroupMembers, PortInfo, RouteTarget, BROADCAST_MAC, MAX_FANOUT,
    MAX_REPORT_RECORDS,
};

use crate::{
    bandwidth, counters,
    frame::Frame,
    maps::{self, IQD_GROUPS, IQD_GROUP_SCRATCH},
    nd,
    parse::{self, EthHdr, Flow, FlowAddr, IcmpHdr, Ipv4Hdr, Ipv6Hdr},
    policy, secgroup, trace, DropReason, COUNTED, ONE_TO_MANY_ONLY, ONE_TO_MANY_REPORT,
    ONE_TO_MANY_V6,
};

/// What the subprograms of the fan-out return for "no drop" (drop reasons start at 0).
const PASSED: DropReason = u32::MAX - 1;

/// How far into a packet report records are read: bounds the verifier's view of the offset.
const MAX_REPORT_OFFSET: usize = 4096;

/// Whether the IPv4 packet (IPv6 with `V6`) at the network header goes to many: a group, the
/// limited broadcast, or an address with a member list in `segment` (a directed broadcast);
/// neighbour discovery excepted (nd.rs answers it). `ONE_TO_MANY_*` flags, 0 for a frame
/// forward.rs handles. Run before every IP frame's forwarding, so a unicast frame pays only
/// for a glance at its destination ([`may_be_one_to_many`]); the rest is a subprogram of its
/// own: forward.rs stays as it was for unicast, and the verifier's view of it too.
#[inline(always)]
pub fn classify<C: Frame, const V6: bool>(ctx: &C, segment: u32) -> u32 {
    if !may_be_one_to_many::<C, V6>(ctx) {
        return 0;
    }
    classify_frame::<C, V6>(ctx, segment)
}

/// Whether the destination of the IP packet at the network header can be one-to-many: IPv6
/// ff00::/8; IPv4 224.0.0.0/4 or 255.255.255.255 (first octet from 224 up), or a directed
/// broadcast. A directed broadcast has an `IQD_GROUPS` list only for a prefix up to /30, so its
/// two lowest bits are set: other unicast addresses (three in four) skip the map lookup.
#[inline(always)]
fn may_be_one_to_many<C: Frame, const V6: bool>(ctx: &C) -> bool {
    if V6 {
        match parse::ptr_at::<C, Ipv6Hdr>(ctx, ETH_HLEN) {
            // SAFETY: `ptr_at` checked the bounds.
            Ok(ip) => unsafe { (*ip).daddr[0] == 0xff },
            Err(_) => false,
        }
    } else {
        match parse::ptr_at::<C, Ipv4Hdr>(ctx, ETH_HLEN) {
            Ok(ip) => {
                // SAFETY: as above.
                let daddr = unsafe { (*ip).daddr };
                daddr[0] >= 224 || daddr[3] & 3 == 3
            }
            Err(_) => false,
        }
    }
}

#[inline(never)]
fn classify_frame<C: Frame, const V6: bool>(ctx: &C, segment: u32) -> u32 {
    classify_inner::<C, V6>(ctx, segment).unwrap_or(0)
}

#[inline(always)]
fn classify_inner<C: Frame, const V6: bool>(ctx: &C, segment: u32) -> Result<u32, DropReason> {
    // A packet longer than its frame is forward.rs's to refuse (`malformed`). (Reading the
    // length through the context also keeps LLVM from passing this subprogram the packet
    // pointers instead of the context, which the verifier would refuse.)
    let frame_len = ctx.len();
    if V6 {
        let ip: *const Ipv6Hdr = parse::ptr_at(ctx, ETH_HLEN)?;
        // SAFETY: `ptr_at` checked the bounds.
        let ip = unsafe { &*ip };
        // A malformed header is forward.rs's to refuse.
        if ip.daddr[0] != 0xff || ip.version_tc_flow[0] >> 4 != 6 {
            return Ok(0);
        }
        let (l4_offset, end) = locate::<C, V6>(ctx)?;
        if end as u64 > frame_len {
            return Ok(0);
        }
        let l4 = parse::ipv6_l4(ctx, ip.next_header, ETH_HLEN + IPV6_HLEN, end)?;
        let mut flags = ONE_TO_MANY_V6;
        if l4.proto == IPPROTO_ICMPV6 && !l4.later_fragment {
            let icmp: *const IcmpHdr = parse::packet_ptr_at(ctx, l4_offset, end)?;
            // SAFETY: as above.
            let icmp_type = unsafe { (*icmp).icmp_type };
            if nd::is_nd(icmp_type) {
                return Ok(0);
            }
            if matches!(
                icmp_type,
                MLD_QUERY | MLD_V1_REPORT | MLD_V1_DONE | MLD_V2_REPORT
            ) {
                flags |= ONE_TO_MANY_REPORT;
            }
        }
        Ok(flags)
    } else {
        let ip: *const Ipv4Hdr = parse::ptr_at(ctx, ETH_HLEN)?;
        // SAFETY: as above.
        let ip = unsafe { &*ip };
        let ihl = (ip.version_ihl & 0x0f) as u64;
        let tot_len = u16::from_be_bytes(ip.tot_len) as u64;
        if ip.version_ihl >> 4 != 4
            || ihl < 5
            || tot_len < ihl * 4
            || tot_len + ETH_HLEN as u64 > frame_len
        {
            return Ok(0);
        }
        let daddr = FlowAddr::ipv4_mapped(ip.daddr);
        let one_to_many = daddr.is_ipv4_one_to_many() || {
            let key = GroupKey {
                segment,
                addr: daddr.bytes(),
            };
            // SAFETY: a map value, read once.
            unsafe { IQD_GROUPS.get(key) }.map_or(0, |m| m.count) > 0
        };
        if !one_to_many {
            return Ok(0);
        }
        Ok(if ip.protocol == IPPROTO_IGMP {
            ONE_TO_MANY_REPORT
        } else {
            ONE_TO_MANY_ONLY
        })
    }
}

/// The checks a unicast frame meets in forward.rs before its route: well-formed headers, the
/// sender's own source MAC and address. Returns where the transport header starts and the
/// packet ends.
#[inline(always)]
fn check_sender<C: Frame, const V6: bool>(
    ctx: &C,
    ifindex: u32,
    port: &PortInfo,
) -> Result<(usize, usize), DropReason> {
    let frame_len = ctx.len();
    let eth: *const EthHdr = parse::ptr_at(ctx, 0)?;
    // SAFETY: `ptr_at` checked the bounds.
    policy::check_source_mac(port, unsafe { &(*eth).src })?;
    let saddr = if V6 {
        let ip: *const Ipv6Hdr = parse::ptr_at(ctx, ETH_HLEN)?;
        // SAFETY: as above.
        let ip = unsafe { &*ip };
        let payload_len = u16::from_be_bytes(ip.payload_len) as u64;
        if ip.version_tc_flow[0] >> 4 != 6
            || payload_len + (ETH_HLEN + IPV6_HLEN) as u64 > frame_len
        {
            return Err(drop_reason::MALFORMED);
        }
        let saddr = FlowAddr::ipv6(&ip.saddr);
        if saddr.is_ipv4_mapped() {
            return Err(drop_reason::SPOOFED_SOURCE);
        }
        saddr
    } else {
        let ip: *const Ipv4Hdr = parse::ptr_at(ctx, ETH_HLEN)?;
        // SAFETY: as above.
        let ip = unsafe { &*ip };
        let ihl = (ip.version_ihl & 0x0f) as u64;
        let tot_len = u16::from_be_bytes(ip.tot_len) as u64;
        if ip.version_ihl >> 4 != 4
            || ihl < 5
            || tot_len < ihl * 4
            || tot_len + ETH_HLEN as u64 > frame_len
        {
            return Err(drop_reason::MALFORMED);
        }
        FlowAddr::ipv4_mapped(ip.saddr)
    };
    // A layer-2 NIC's stack probes and asks from the unspecified address (duplicate address
    // detection, DHCP) before it has one.
    if !(port.flags & port_flags::LAYER2 != 0 && saddr.is_unspecified()) {
        policy::check_source_ip(ifindex, port, &saddr.bytes())?;
    }
    locate::<C, V6>(ctx)
}

/// An IGMP message (v1/v2: the group; v3 report: reserved bytes and the record count).
#[repr(C)]
struct Igmp {
    msg_type: u8,
    code: u8,
    check: [u8; 2],
    group: [u8; 4],
}

/// An IGMPv3 group record without its sources.
#[repr(C)]
struct IgmpRecord {
    record_type: u8,
    aux_len: u8,
    sources: [u8; 2],
    group: [u8; 4],
}

/// An MLDv1 message (v2 report: reserved bytes and the record count where the delay is).
#[repr(C)]
struct Mld {
    msg_type: u8,
    code: u8,
    check: [u8; 2],
    delay: [u8; 2],
    reserved: [u8; 2],
    group: Addr,
}

/// An MLDv2 group record without its sources.
#[repr(C)]
struct MldRecord {
    record_type: u8,
    aux_len: u8,
    sources: [u8; 2],
    group: Addr,
}

/// What a group record says of the sender's interest: `Some(true)` it listens, `Some(false)`
/// it stopped (an include of no source), `None` nothing the fabric tracks (blocked sources).
/// Source filters are not kept: a NIC that wants any source of a group gets all of them.
#[inline(always)]
fn record_interest(record_type: u8, sources: u16) -> Option<bool> {
    match record_type {
        MODE_IS_EXCLUDE | CHANGE_TO_EXCLUDE => Some(true),
        MODE_IS_INCLUDE | CHANGE_TO_INCLUDE | ALLOW_NEW_SOURCES => Some(sources > 0),
        _ => None,
    }
}

/// Learns the registrations of the IGMP (`V6` false) or MLD report of the packet, sent by port
/// `ifindex`. Anything else (queries, unknown types, truncated records) changes nothing. A
/// subprogram of its own, for the stack.
/// A refused report is counted here, on the sender (no reason leaves a subprogram: see
/// counters.rs).
#[inline(never)]
pub fn learn<C: Frame, const V6: bool>(ctx: &C, ifindex: u32) {
    if let Err(reason) = try_learn::<C, V6>(ctx, ifindex) {
        counters::dropped(ifindex, reason);
    }
}

#[inline(always)]
fn try_learn<C: Frame, const V6: bool>(ctx: &C, ifindex: u32) -> Result<(), DropReason> {
    let port = maps::port(ifindex).ok_or(drop_reason::NO_DESTINATION)?;
    let segment = segment_of(&port);
    let (offset, end) = check_sender::<C, V6>(ctx, ifindex, &port)?;
    learn_from::<C, V6>(ctx, ifindex, segment, offset, end);
    Ok(())
}

#[inline(always)]
fn learn_from<C: Frame, const V6: bool>(
    ctx: &C,
    ifindex: u32,
    segment: u32,
    offset: usize,
    end: usize,
) {
    if V6 {
        let Ok(mld) = parse::packet_ptr_at::<C, Mld>(ctx, offset, end) else {
            return;
        };
        // SAFETY: `packet_ptr_at` checked the bounds.
        let mld = unsafe { &*mld };
        match mld.msg_type {
            MLD_V1_REPORT => update(segment, &copy(&mld.group), ifindex, true),
            MLD_V1_DONE => update(segment, &copy(&mld.group), ifindex, false),
            MLD_V2_REPORT => {
                let records = u16::from_be_bytes(mld.reserved);
                let mut at = offset + 8;
                for i in 0..MAX_REPORT_RECORDS {
                    if i >= records as usize || at > MAX_REPORT_OFFSET {
                        break;
                    }
                    let Ok(record) = parse::packet_ptr_at::<C, MldRecord>(ctx, at, end) else {
                        break;
                    };
                    // SAFETY: as above.
                    let record = unsafe { &*record };
                    let sources = u16::from_be_bytes(record.sources);
                    if let Some(join) = record_interest(record.record_type, sources) {
                        update(segment, &copy(&record.group), ifindex, join);
                    }
                    at += 20 + sources as usize * 16 + record.aux_len as usize * 4;
                }
            }
            _ => {}
        }
    } else {
        let Ok(igmp) = parse::packet_ptr_at::<C, Igmp>(ctx, offset, end) else {
            return;
        };
        // SAFETY: `packet_ptr_at` checked the bounds.
        let igmp = unsafe { &*igmp };
        match igmp.msg_type {
            IGMP_V1_REPORT | IGMP_V2_REPORT => {
                update(segment, &iqd_common::ipv4_mapped(igmp.group), ifindex, true)
            }
            IGMP_V2_LEAVE => update(
                segment,
                &iqd_common::ipv4_mapped(igmp.group),
                ifindex,
                false,
            ),
            IGMP_V3_REPORT => {
                let records = u16::from_be_bytes([igmp.group[2], igmp.group[3]]);
                let mut at = offset + 8;
                for i in 0..MAX_REPORT_RECORDS {
                    if i >= records as usize || at > MAX_REPORT_OFFSET {
                        break;
                    }
                    let Ok(record) = parse::packet_ptr_at::<C, IgmpRecord>(ctx, at, end) else {
                        break;
                    };
                    // SAFETY: as above.
                    let record = unsafe { &*record };
                    let sources = u16::from_be_bytes(record.sources);
                    if let Some(join) = record_interest(record.record_type, sources) {
                        update(
                            segment,
                            &iqd_common::ipv4_mapped(record.group),
                            ifindex,
                            join,
                        );
                    }
                    at += 8 + sources as usize * 4 + record.aux_len as usize * 4;
                }
            }
            _ => {}
        }
    }
}

/// The scan of a member list for a port.
#[repr(C)]
struct Find {
    members: *const GroupMembers,
    ifindex: u32,
    /// Its index, or `MAX_FANOUT`.
    found: u32,
}

/// One step of the scan: 1 ends it (found, or past the members).
extern "C" fn find_member(index: u64, find: *mut c_void) -> i64 {
    // SAFETY: `update` passes its `Find` to every step.
    let find = unsafe { &mut *(find as *mut Find) };
    let i = index as usize;
    if i >= MAX_FANOUT {
        return 1;
    }
    // SAFETY: a map value.
    let (count, member) = unsafe { ((*find.members).count as usize, (*find.members).ifindex[i]) };
    if i >= count {
        return 1;
    }
    if member == find.ifindex {
        find.found = i as u32;
        return 1;
    }
    0
}

/// A group address out of the packet, onto the stack (subprograms take no packet pointers).
#[inline(always)]
fn copy(group: &Addr) -> Addr {
    FlowAddr::ipv6(group).bytes()
}

/// Adds (`join`) or removes port `ifindex` as a member of `group` in `segment`. Only
/// multicast groups: the other member lists (broadcasts) are iqd's. A group with
/// `MAX_FANOUT` members takes no more (documented bound).
/// A subprogram of its own: verified once per call rather than inside every step of a
/// report's record loop.
#[inline(never)]
fn update(segment: u32, group: &Addr, ifindex: u32, join: bool) {
    if !is_multicast(group) {
        return;
    }
    let key = GroupKey {
        segment,
        addr: *group,
    };
    if let Some(members) = IQD_GROUPS.get_ptr_mut(key) {
        // SAFETY: a map value; a concurrent update of the same group by another CPU can at
        // worst lose one of the two changes (the next report repeats it).
        let members = unsafe { &mut *members };
        let mut find = Find {
            members,
            ifindex,
            found: MAX_FANOUT as u32,
        };
        // bpf_loop: the scan is verified once, not once per possible member count.
        // SAFETY: the callback gets back the pointer to `find`, which outlives the call.
        unsafe {
            bpf_loop(
                MAX_FANOUT as u32,
                find_member as *mut c_void,
                &mut find as *mut Find as *mut c_void,
                0,
            )
        };
        let count = members.count as usize;
        let i = find.found as usize;
        if i < MAX_FANOUT && i < count {
            if !join {
                let last = count - 1;
                if last < MAX_FANOUT {
                    members.ifindex[i] = members.ifindex[last];
                }
                members.count = last as u32;
                if last == 0 {
                    let _ = IQD_GROUPS.remove(key);
                }
            }
            return;
        }
        if join && count < MAX_FANOUT {
            members.ifindex[count] = ifindex;
            members.count = count as u32 + 1;
        }
        return;
    }
    if !join {
        return;
    }
    let Some(scratch) = IQD_GROUP_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot; programs do not nest on a CPU.
    let scratch = unsafe { &mut *scratch };
    scratch.count = 1;
    scratch.ifindex[0] = ifindex;
    let _ = IQD_GROUPS.insert(key, scratch, BPF_NOEXIST as u64);
}

/// Delivers a copy of the one-to-many IP packet at the frame's network header (IPv4 or, with
/// `V6`, IPv6) from port `ifindex` to every other member of its segment's list for its
/// destination, each copy after that receiver's policy. Counts the sent frame, each delivery,
/// and each receiver's drop. `no_destination` when no other NIC is a member. A subprogram of
/// its own, for the stack.
/// Drops are counted here (no reason leaves a subprogram: see counters.rs). Whether the frame
/// went to the receivers' policy at all (`false`: dropped as a whole).
#[inline(never)]
pub fn fan_out<C: Frame + EbpfContext, const V6: bool>(ctx: &C, ifindex: u32) -> bool {
    let mut fan = MaybeUninit::<FanOut<C>>::uninit();
    let mut reason = sender_checked::<C, V6>(ctx, ifindex);
    if reason == PASSED {
        reason = prepare::<C, V6>(ctx, ifindex, fan.as_mut_ptr());
    }
    copy_to_all(ctx, ifindex, &mut fan, reason)
}

/// Once [`prepare`] (or [`flood_prepare`]) gave `reason`: the copies, one per member, if it
/// passed the frame, and the count (and trace) of a drop of the whole frame. Whether the frame
/// went to the receivers' policy at all.
#[inline(always)]
fn copy_to_all<'a, C: Frame + EbpfContext>(
    ctx: &'a C,
    ifindex: u32,
    fan: &mut MaybeUninit<FanOut<'a, C>>,
    mut reason: DropReason,
) -> bool {
    if reason == PASSED {
        // SAFETY: the frame passed: every other field was written.
        let fan = unsafe {
            addr_of_mut!((*fan.as_mut_ptr()).ctx).write(ctx);
            fan.assume_init_mut()
        };
        // bpf_loop: the per-receiver step (two rule lookups, meters, a copy) is verified
        // once, not once per possible receiver.
        // SAFETY: the callback gets back the pointer to `fan`, which outlives the call.
        unsafe {
            bpf_loop(
                MAX_FANOUT as u32,
                copy_to::<C> as *mut c_void,
                fan as *mut FanOut<C> as *mut c_void,
                0,
            )
        };
        if fan.receivers == 0 {
            reason = drop_reason::NO_DESTINATION;
        }
    }
    if reason == PASSED {
        return true;
    }
    if reason != COUNTED {
        counters::dropped(ifindex, reason);
    }
    trace::dropped(ctx, ifindex, reason);
    false
}

/// Once the sender is checked: finds the frame's receivers, checks a GSO packet's segment
/// size, writes the group's MAC as its destination; then fills `fan` for the loop.
/// [`PASSED`], or the reason to drop the frame whole (`fan` then unwritten); the caller writes
/// `fan.ctx`. A subprogram of its own: the parse's stack is not under the loop's steps (the
/// verifier adds a callback's frame to its caller's, and all to the program's 512 bytes).
#[inline(never)]
fn prepare<'a, C: Frame + EbpfContext, const V6: bool>(
    ctx: &'a C,
    ifindex: u32,
    fan: *mut FanOut<'a, C>,
) -> DropReason {
    match try_prepare::<C, V6>(ctx, ifindex, fan) {
        Ok(()) => PASSED,
        Err(reason) => reason,
    }
}

#[inline(always)]
fn try_prepare<'a, C: Frame + EbpfContext, const V6: bool>(
    ctx: &'a C,
    ifindex: u32,
    fan: *mut FanOut<'a, C>,
) -> Result<(), DropReason> {
    let port = maps::port(ifindex).ok_or(drop_reason::NO_DESTINATION)?;
    let segment = segment_of(&port);
    // The sender was checked (`sender_checked`).
    let (l4_offset, end) = locate::<C, V6>(ctx)?;
    let flow = flow_of::<C, V6>(ctx, l4_offset, end)?;
    let headers = check_segment_size(ctx, &port, l4_offset, flow.parsed()?)?;
    let key = GroupKey {
        segment,
        addr: flow.daddr.bytes(),
    };
    let members = IQD_GROUPS.get_ptr(key).ok_or(drop_reason::NO_DESTINATION)?;
    // The Ethernet destination is the group's (a NOARP sender addresses a broadcast to its
    // own MAC): the receivers' stacks take the copies as multicast or broadcast.
    set_group_mac::<C, V6>(ctx, &flow.daddr)?;
    fill(fan, members, flow, 1, ifindex, &port, headers);
    Ok(())
}

/// Writes every field of the caller's uninitialised `FanOut` but `ctx` (a pointer to a
/// frame's stack cannot be stored into its caller's; the caller writes it): the member list,
/// the flow with whether its `rules` apply, the sender (port `ifindex`, `port`) and the bytes
/// up to the payload.
#[inline(always)]
fn fill<C>(
    fan: *mut FanOut<'_, C>,
    members: *const GroupMembers,
    flow: Flow,
    rules: u8,
    ifindex: u32,
    port: &PortInfo,
    headers: u32,
) {
    // SAFETY: `fan` points at the caller's `FanOut`, written field by field without reading.
    unsafe {
        addr_of_mut!((*fan).members).write(members);
        addr_of_mut!((*fan).flow).write(flow);
        addr_of_mut!((*fan).rules).write(rules);
        addr_of_mut!((*fan).sender_limited).write(port.flags & port_flags::BANDWIDTH);
        addr_of_mut!((*fan).ifindex).write(ifindex);
        addr_of_mut!((*fan).headers).write(headers);
        addr_of_mut!((*fan).receivers).write(0);
        addr_of_mut!((*fan).sent_traced).write(0);
    }
}

/// Floods the frame of the layer-2 NIC behind port `ifindex` to a group MAC (layer2.rs, which
/// checked its source MAC): a copy to every other layer-2 NIC of its segment, for the
/// broadcast MAC only those that take broadcasts. An IP frame's sender is checked and each
/// copy meets the receiver's policy as in [`fan_out`] (stopped LPARs, bandwidths); the security
/// groups apply to IP frames only, other EtherTypes meet no rules. Counts as [`fan_out`] does;
/// `no_destination` with no other receiver. A subprogram of its own, for the stack.
/// `KIND`: what the frame carries ([`FLOOD_IPV4`], [`FLOOD_IPV6`], [`FLOOD_OTHER`]), one
/// subprogram each, so that each holds one family's parse on its stack.
#[inline(never)]
pub fn flood<C: Frame + EbpfContext, const KIND: u32>(ctx: &C, ifindex: u32) -> bool {
    let mut fan = MaybeUninit::<FanOut<C>>::uninit();
    let mut reason = match KIND {
        FLOOD_IPV4 => sender_checked::<C, false>(ctx, ifindex),
        FLOOD_IPV6 => sender_checked::<C, true>(ctx, ifindex),
        _ => {
            counters::sent(ifindex, ctx.segments(), ctx.len());
            PASSED
        }
    };
    if reason == PASSED {
        reason = flood_prepare::<C, KIND>(ctx, ifindex, fan.as_mut_ptr());
    }
    copy_to_all(ctx, ifindex, &mut fan, reason)
}

/// [`flood`]'s kinds of frames.
pub const FLOOD_IPV4: u32 = 0;
pub const FLOOD_IPV6: u32 = 1;
pub const FLOOD_OTHER: u32 = 2;

/// [`prepare`] for [`flood`]: the frame keeps its destination MAC; an IP frame's flow (its
/// sender checked before) for the rules, a GSO packet's segment size; the flood list.
#[inline(never)]
fn flood_prepare<'a, C: Frame + EbpfContext, const KIND: u32>(
    ctx: &'a C,
    ifindex: u32,
    fan: *mut FanOut<'a, C>,
) -> DropReason {
    match try_flood_prepare::<C, KIND>(ctx, ifindex, fan) {
        Ok(()) => PASSED,
        Err(reason) => reason,
    }
}

#[inline(always)]
fn try_flood_prepare<'a, C: Frame + EbpfContext, const KIND: u32>(
    ctx: &'a C,
    ifindex: u32,
    fan: *mut FanOut<'a, C>,
) -> Result<(), DropReason> {
    let port = maps::port(ifindex).ok_or(drop_reason::NO_DESTINATION)?;
    let eth: *const EthHdr = parse::ptr_at(ctx, 0)?;
    // SAFETY: `ptr_at` checked the bounds.
    let dst = unsafe { (*eth).dst };
    let (flow, headers, rules) = match KIND {
        FLOOD_IPV4 => flood_flow::<C, false>(ctx, &port)?,
        FLOOD_IPV6 => flood_flow::<C, true>(ctx, &port)?,
        _ => (Flow::empty(), ETH_HLEN as u32, 0),
    };
    let key = flood_key(segment_of(&port), parse::mac_eq(&dst, &BROADCAST_MAC));
    let members = IQD_GROUPS.get_ptr(key).ok_or(drop_reason::NO_DESTINATION)?;
    fill(fan, members, flow, rules, ifindex, &port, headers);
    Ok(())
}

/// The flow of a layer-2 NIC's IPv4 (IPv6 with `V6`) frame to a group MAC, the bytes up to
/// its payload (a GSO packet's segments checked against the frame size), and 1: the rules
/// apply.
#[inline(always)]
fn flood_flow<C: Frame, const V6: bool>(
    ctx: &C,
    port: &PortInfo,
) -> Result<(Flow, u32, u8), DropReason> {
    let (l4_offset, end) = locate::<C, V6>(ctx)?;
    let flow = flow_of::<C, V6>(ctx, l4_offset, end)?;
    let headers = check_segment_size(ctx, port, l4_offset, flow.parsed()?)?;
    Ok((flow, headers, 1))
}

/// Counts the sent frame and checks it as a unicast frame's sender is checked
/// ([`check_sender`]): [`PASSED`], or the drop reason. A subprogram of its own, called before
/// [`prepare`] rather than from it: the verifier adds the stacks of nested calls.
#[inline(never)]
fn sender_checked<C: Frame, const V6: bool>(ctx: &C, ifindex: u32) -> DropReason {
    counters::sent(ifindex, ctx.segments(), ctx.len());
    let Some(port) = maps::port(ifindex) else {
        return drop_reason::NO_DESTINATION;
    };
    match check_sender::<C, V6>(ctx, ifindex, &port) {
        Ok(_) => PASSED,
        Err(reason) => reason,
    }
}

/// The frame size holds for each segment of a GSO packet (tc) as forward.rs checks it for
/// unicast: `gso_size` payload behind the headers. Returns the bytes up to the payload, which
/// the bandwidth meters count once per segment.
#[inline(always)]
fn check_segment_size<C: Frame>(
    ctx: &C,
    port: &PortInfo,
    l4_offset: usize,
    flow: &Flow,
) -> Result<u32, DropReason> {
    let headers = l4_offset as u32 + flow.l4_len;
    let gso_size = ctx.gso_size();
    if gso_size != 0 {
        policy::check_frame_size(port, ETH_HLEN, (headers + gso_size) as u64)?;
    }
    Ok(headers)
}

/// What the fan-out loop's steps share.
#[repr(C)]
struct FanOut<'a, C> {
    ctx: &'a C,
    members: *const GroupMembers,
    flow: Flow,
    ifindex: u32,
    /// 1: the security groups apply (an IP frame); 0: `flow` is empty.
    rules: u8,
    /// Bytes up to the payload (a GSO packet's count once per segment, for the meters).
    headers: u32,
    /// 1 once a member other than the sender is met. A flag, not a count: the verifier
    /// checks the loop's steps until their states repeat, which a count never does.
    receivers: u8,
    /// 1 once the trace recorded the frame as sent (once, whatever the receivers).
    sent_traced: u8,
    /// The sender's LPAR has a bandwidth (`port_flags::BANDWIDTH`, else 0): its port is read
    /// again where a copy is metered rather than kept here, for the stack.
    sender_limited: u8,
}

/// One step of the fan-out: the `index`th member gets a copy if the policy allows it, or the
/// drop is counted (and traced) for it. 1 ends the loop (no more members).
extern "C" fn copy_to<C: Frame + EbpfContext>(index: u64, fan: *mut c_void) -> i64 {
    // SAFETY: `fan_out` passes its `FanOut` to every step.
    let fan = unsafe { &mut *(fan as *mut FanOut<C>) };
    let i = index as usize;
    if i >= MAX_FANOUT {
        return 1;
    }
    // SAFETY: a map value, read afresh each step (the list may change meanwhile).
    let (count, target) = unsafe { ((*fan.members).count as usize, (*fan.members).ifindex[i]) };
    if i >= count {
        return 1;
    }
    let ifindex = fan.ifindex;
    if target == ifindex {
        return 0;
    }
    fan.receivers = 1;
    match deliver_copy(fan, target) {
        Ok(()) => {
            let sent = fan.sent_traced != 0;
            if trace::delivered_copy(fan.ctx, ifindex, target, sent) {
                fan.sent_traced = 1;
            }
        }
        Err(reason) => {
            // `COUNTED`: on the receiver, whose rules denied it.
            if reason != COUNTED {
                counters::dropped(ifindex, reason);
            }
            trace::dropped_copy(fan.ctx, ifindex, target, reason);
        }
    }
    0
}

/// The policy a unicast frame meets for its receiver (forward.rs `deliver`), for the copy to
/// port `target`, which then goes: a stopped LPAR (`lpar_stopped`), the sender's outbound and
/// the receiver's inbound rules (no tracked connection is opened or used), both LPARs'
/// bandwidths (metered per copy, then shaped as unicast is), delivery.
#[inline(always)]
fn deliver_copy<C: Frame + EbpfContext>(fan: &FanOut<C>, target: u32) -> Result<(), DropReason> {
    let receiver = maps::port(target).ok_or(drop_reason::REDIRECT_FAILED)?;
    // A stopped LPAR keeps its registrations (its sockets stay joined): it receives again
    // once started.
    if receiver.flags & port_flags::STOPPED != 0 {
        return Err(drop_reason::LPAR_STOPPED);
    }
    // Each a subprogram of its own, one after the other: the step's stack holds one of them
    // at a time (the loop's callback adds its frame to the program's and fan_out's).
    if fan.rules != 0 {
        match rules(fan.ifindex, target, &fan.flow) {
            PASSED => {}
            reason => return Err(reason),
        }
    }
    match send_copy(fan, target, receiver.flags, &receiver.mac) {
        PASSED => Ok(()),
        reason => Err(reason),
    }
}

/// The sender's (`from`) outbound and the receiver's (`to`) inbound rules for `flow`:
/// [`PASSED`] if they allow it, else the drop reason (`COUNTED`: counted on the receiver, whose rules
/// denied it).
#[inline(never)]
fn rules(from: u32, to: u32, flow: &Flow) -> DropReason {
    match secgroup::allows(from, to, flow) {
        Ok(()) => PASSED,
        Err(sg_direction::OUTBOUND) => drop_reason::SG_DENIED_OUTBOUND,
        Err(_) => {
            counters::dropped(to, drop_reason::SG_DENIED_INBOUND);
            COUNTED
        }
    }
}

/// Meters the copy to port `target` (whose port has `flags` and `mac`) against both LPARs'
/// bandwidths and sends it, through the shapers where one applies: [`PASSED`], or the drop
/// reason.
#[inline(never)]
fn send_copy<C: Frame + EbpfContext>(
    fan: &FanOut<C>,
    target: u32,
    flags: u8,
    mac: &[u8; 6],
) -> DropReason {
    let to = RouteTarget::new(target, *mac).with_flags(if flags & port_flags::BANDWIDTH != 0 {
        route_flags::BANDWIDTH
    } else {
        0
    });
    let shaped = if fan.sender_limited != 0 || to.flags & route_flags::BANDWIDTH != 0 {
        let Some(port) = maps::port(fan.ifindex) else {
            return drop_reason::REDIRECT_FAILED;
        };
        match bandwidth::admit(fan.ctx, fan.ifindex, &port, &to, fan.headers) {
            Ok(shaped) => shaped,
            Err(reason) => return reason,
        }
    } else {
        false
    };
    if maps::deliverable(target).is_err() {
        return drop_reason::REDIRECT_FAILED;
    }
    if shaped {
        return match bandwidth::replicate(fan.ctx, fan.ifindex, target) {
            Ok(()) => PASSED,
            Err(reason) => reason,
        };
    }
    if !fan.ctx.replicate(target, 0) {
        return drop_reason::REDIRECT_FAILED;
    }
    counters::delivered(target, fan.ctx.segments(), fan.ctx.len());
    PASSED
}

/// Where the transport header of the IP packet at the network header starts, and where the
/// packet ends; its headers were checked by forward.rs.
#[inline(always)]
fn locate<C: Frame, const V6: bool>(ctx: &C) -> Result<(usize, usize), DropReason> {
    if V6 {
        let ip: *const Ipv6Hdr = parse::ptr_at(ctx, ETH_HLEN)?;
        // SAFETY: `ptr_at` checked the bounds.
        let ip = unsafe { &*ip };
        let end = ETH_HLEN + IPV6_HLEN + u16::from_be_bytes(ip.payload_len) as usize;
        let l4 = parse::ipv6_l4(ctx, ip.next_header, ETH_HLEN + IPV6_HLEN, end)?;
        Ok((l4.offset, end))
    } else {
        let ip: *const Ipv4Hdr = parse::ptr_at(ctx, ETH_HLEN)?;
        // SAFETY: as above.
        let ip = unsafe { &*ip };
        let end = ETH_HLEN + u16::from_be_bytes(ip.tot_len) as usize;
        Ok((ETH_HLEN + (ip.version_ihl & 0x0f) as usize * 4, end))
    }
}

/// The flow of the IP packet at the network header, parsed again (the caller's parse lived
/// in a subprogram that has returned).
#[inline(always)]
fn flow_of<C: Frame, const V6: bool>(
    ctx: &C,
    l4_offset: usize,
    end: usize,
) -> Result<Flow, DropReason> {
    if V6 {
        let ip: *const Ipv6Hdr = parse::ptr_at(ctx, ETH_HLEN)?;
        // SAFETY: `ptr_at` checked the bounds.
        let ip = unsafe { &*ip };
        let l4 = parse::ipv6_l4(ctx, ip.next_header, ETH_HLEN + IPV6_HLEN, end)?;
        if l4.offset != l4_offset {
            return Err(drop_reason::MALFORMED);
        }
        Ok(parse::flow6(ctx, ip, &l4, end))
    } else {
        let ip: *const Ipv4Hdr = parse::ptr_at(ctx, ETH_HLEN)?;
        // SAFETY: as above.
        Ok(parse::flow(ctx, unsafe { &*ip }, l4_offset, end))
    }
}

/// Writes the Ethernet address of `daddr` as the frame's destination: IPv4 multicast
/// `01:00:5e` and the group's low 23 bits, IPv4 broadcast `ff:ff:ff:ff:ff:ff`, IPv6
/// `33:33` and the group's low 32 bits.
#[inline(always)]
fn set_group_mac<C: Frame, const V6: bool>(ctx: &C, daddr: &FlowAddr) -> Result<(), DropReason> {
    let eth: *mut EthHdr = parse::ptr_at(ctx, 0)?;
    // SAFETY: `ptr_at` checked the bounds.
    let eth = unsafe { &mut *eth };
    let a = daddr.bytes();
    let mac = if V6 {
        [0x33, 0x33, a[12], a[13], a[14], a[15]]
    } else if a[12] & 0xf0 == 0xe0 {
        [0x01, 0x00, 0x5e, a[13] & 0x7f, a[14], a[15]]
    } else {
        [0xff; 6]
    };
    parse::copy_mac(&mut eth.dst, &mac);
    Ok(())
}
