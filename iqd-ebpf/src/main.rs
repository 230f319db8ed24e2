//! iqd's data plane: the programs on the fabric side of every NIC.
//!
//! A frame an LPAR sends on its NIC arrives at its port. The program parses it once, applies the
//! CHPID's rules (no VLAN tag, frame size, anti-spoofing, membership), answers ARP and IPv6
//! neighbour solicitations itself and forwards IPv4 and IPv6 by destination address to the NIC
//! that registered it, in the same segment (CHPID and VLAN) only, where both
//! NICs' security groups (or a tracked connection) allow it. Every frame that is not delivered is
//! dropped and counted under a reason (see `iqd_common::drop_reason`).
//!
//! The decision is the same code for every data path ([`decide`], over [`frame::Frame`]); only
//! the last step differs:
//! - `iqd_port` (XDP, data path `xdp`): XDP_REDIRECT through the DEVMAP, XDP_TX for replies;
//! - `iqd_tc` (tc ingress, data path `tc`): `bpf_redirect_peer` straight into the destination
//!   LPAR's `hsiN`, keeping the packet whole (GSO, no copy); `bpf_redirect` back out of the port
//!   for replies;
//! - `iqd_xsk` (XDP, data path `afxdp`): XDP_REDIRECT to the userspace switch's AF_XDP socket
//!   with the destination in the frame's metadata, or, with no switch socket, the `xdp` path's
//!   DEVMAP redirect; XDP_TX for replies.
#![no_std]
#![no_main]

mod arp;
mod bandwidth;
mod conntrack;
mod counters;
mod forward;
mod frame;
mod layer2;
mod maps;
mod mcast;
mod nd;
mod parse;
mod policy;
mod secgroup;
mod trace;
mod vlan;
mod xsk;

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_STOLEN},
    helpers::{bpf_redirect, bpf_redirect_peer, bpf_xdp_adjust_meta},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
    EbpfContext,
};
use iqd_common::{
    drop_reason, port_flags, segment_of, shaper_mark,
    wire::{ETH_HLEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, IPV4_MAX_HLEN, TCP_MAX_HLEN},
    xsk_stat,
};

use crate::frame::Frame;

/// A drop reason from `iqd_common::drop_reason`.
pub type DropReason = u32;

/// A drop already counted where it belongs (on another NIC than the sender).
pub const COUNTED: DropReason = u32::MAX;

/// What to do with a frame the fabric accepts.
pub enum Verdict {
    /// Deliver it to the NIC behind this fabric-side port (its MAC is already written).
    Deliver { ifindex: u32 },
    /// The same, through the sender's or the receiver's bandwidth shaper first (bandwidth.rs).
    /// A variant of its own rather than a flag: the verdict stays small enough to be returned
    /// in a register by the subprograms that decide it.
    Shape { ifindex: u32 },
    /// Send it back to the sender: the frame was turned into an ARP reply or a neighbour
    /// advertisement in place.
    Reply,
    /// An IPv4 or IPv6 ([`ONE_TO_MANY_V6`]) packet to a group or broadcast address: an IGMP
    /// or MLD message ([`ONE_TO_MANY_REPORT`]) to learn from and consume, or a frame for
    /// mcast.rs to fan out, which parses its headers again. One word of flags, like the other
    /// variants' payload: the verdict is returned in a register, and bytes the compiler may
    /// leave undefined there can come from a pointer, which the verifier refuses.
    OneToMany { flags: u32 },
}

/// [`Verdict::OneToMany`] flags (never 0: [`mcast::classify`]'s "not one-to-many").
pub const ONE_TO_MANY_ONLY: u32 = 4;
pub const ONE_TO_MANY_V6: u32 = 1 | ONE_TO_MANY_ONLY;
pub const ONE_TO_MANY_REPORT: u32 = 2 | ONE_TO_MANY_ONLY;
/// A layer-2 NIC's frame to a group MAC, flooded to the segment's layer-2 NICs (layer2.rs);
/// with [`ONE_TO_MANY_V6`] an IPv6 packet, with [`ONE_TO_MANY_V4`] an IPv4 packet.
pub const ONE_TO_MANY_LAYER2: u32 = 8 | ONE_TO_MANY_ONLY;
pub const ONE_TO_MANY_V4: u32 = 16 | ONE_TO_MANY_ONLY;

/// The fabric's decision on a frame from the NIC behind port `ifindex`; counts what it sent.
#[inline(always)]
fn decide<C: Frame>(ctx: &C, ifindex: u32) -> Result<Verdict, DropReason> {
    // A port the loader has not described yet carries nothing.
    let port = maps::port(ifindex).ok_or(drop_reason::NO_DESTINATION)?;
    let (packets, frame_len) = (ctx.segments(), ctx.len());
    let verdict = decide_port(ctx, ifindex, &port, frame_len);
    // A one-to-many frame is counted where it is fanned out (mcast.rs), or learnt from.
    match verdict {
        Ok(Verdict::OneToMany { flags }) if flags & ONE_TO_MANY_REPORT != ONE_TO_MANY_REPORT => {}
        _ => counters::sent(ifindex, packets, frame_len),
    }
    verdict
}

/// [`decide`] without the counting.
#[inline(always)]
fn decide_port<C: Frame>(
    ctx: &C,
    ifindex: u32,
    port: &iqd_common::PortInfo,
    frame_len: u64,
) -> Result<Verdict, DropReason> {
    let (eth, l3) = parse::l3(ctx)?;
    // A GSO packet is checked per segment once its headers are parsed (forward.rs).
    if ctx.gso_size() == 0 {
        policy::check_frame_size(port, l3.offset, frame_len)?;
    }
    // A layer-2 NIC's frames go by MAC, whatever they carry.
    if port.flags & port_flags::LAYER2 != 0 {
        return layer2::forward(ctx, port, eth, &l3, frame_len);
    }
    // Groups and broadcasts first (mcast.rs); the rest is unicast, or ND for IPv6.
    let one_to_many = match l3.ether_type {
        ETH_P_IP => mcast::classify::<C, false>(ctx, segment_of(port)),
        ETH_P_IPV6 => mcast::classify::<C, true>(ctx, segment_of(port)),
        _ => 0,
    };
    if one_to_many != 0 {
        return Ok(Verdict::OneToMany { flags: one_to_many });
    }
    match l3.ether_type {
        ETH_P_IP => forward::ipv4::<C, false>(ctx, port, eth, l3.offset, frame_len),
        ETH_P_IPV6 => match forward::ipv6::<C, false>(ctx, port, eth, l3.offset, frame_len)? {
            forward::Ipv6::Verdict(verdict) => Ok(verdict),
            forward::Ipv6::Solicitation { l4_offset, end } => {
                nd::solicitation(ctx, port, l3.offset, l4_offset as usize, end as usize)
            }
        },
        ETH_P_ARP => arp::answer(ctx, ifindex, port, eth, l3.offset),
        _ => Err(drop_reason::NON_IP),
    }
}

/// A program's verdict: its action, or `drop` after counting the reason on port `ifindex`
/// (and tracing the frame, if its port is traced with drops).
#[inline(always)]
fn finish<C: Frame + EbpfContext, A>(
    ctx: &C,
    ifindex: u32,
    result: Result<A, DropReason>,
    drop: A,
) -> A {
    result.unwrap_or_else(|reason| {
        counters::dropped(ifindex, reason);
        trace::dropped(ctx, ifindex, reason);
        drop
    })
}

// Multi-buffer ("frags") so CHPID MTUs of up to 56K work on veth.
#[xdp(frags)]
pub fn iqd_port(ctx: XdpContext) -> u32 {
    let ifindex = Frame::ingress_ifindex(&ctx);
    finish(&ctx, ifindex, try_port(&ctx, ifindex), xdp_action::XDP_DROP)
}

fn try_port(ctx: &XdpContext, ifindex: u32) -> Result<u32, DropReason> {
    match decide(ctx, ifindex)? {
        Verdict::Deliver { ifindex: target } => {
            trace::delivered(ctx, ifindex, target);
            redirect_in_kernel(ctx, target)
        }
        Verdict::Shape { ifindex: target } => {
            trace::delivered(ctx, ifindex, target);
            pass_to_shaper(ctx, target)
        }
        Verdict::Reply => reply(ctx, ifindex),
        verdict @ Verdict::OneToMany { .. } => one_to_many_xdp(ctx, ifindex, verdict),
    }
}

/// XDP cannot copy a frame: reports are learnt here, other one-to-many frames go up to the
/// port's tc hook (`iqd_tc`, attached on every data path), which fans them out.
#[inline(always)]
fn one_to_many_xdp(ctx: &XdpContext, ifindex: u32, verdict: Verdict) -> Result<u32, DropReason> {
    if let Verdict::OneToMany { flags } = verdict {
        if flags & ONE_TO_MANY_REPORT == ONE_TO_MANY_REPORT {
            learn(ctx, ifindex, flags & ONE_TO_MANY_V6 == ONE_TO_MANY_V6);
            return Ok(xdp_action::XDP_DROP);
        }
    }
    Ok(xdp_action::XDP_PASS)
}

/// Learns the registrations of an IGMP (IPv4) or MLD (`v6`) message.
#[inline(always)]
fn learn<C: Frame>(ctx: &C, ifindex: u32, v6: bool) {
    if v6 {
        mcast::learn::<C, true>(ctx, ifindex)
    } else {
        mcast::learn::<C, false>(ctx, ifindex)
    }
}

/// Passes a frame that goes through a shaper up into the fabric namespace's stack, with its
/// target port in the XDP metadata, for `iqd_shaped` on the port's tc ingress: the shapers'
/// qdiscs are on the skb path.
#[inline(always)]
fn pass_to_shaper(ctx: &XdpContext, target: u32) -> Result<u32, DropReason> {
    maps::deliverable(target)?;
    // SAFETY: the helper only moves the metadata start within the frame's headroom.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -(SHAPED_META_LEN as i32)) } != 0 {
        return Err(drop_reason::REDIRECT_FAILED);
    }
    let meta = ctx.metadata();
    if meta + SHAPED_META_LEN > ctx.data() {
        return Err(drop_reason::REDIRECT_FAILED);
    }
    // SAFETY: the four bytes lie between data_meta and data, checked just above.
    unsafe { core::ptr::write_unaligned(meta as *mut u32, target) };
    Ok(xdp_action::XDP_PASS)
}

/// Bytes of XDP metadata `pass_to_shaper` writes: the target port's ifindex.
const SHAPED_META_LEN: usize = 4;

/// Delivers through the DEVMAP to the NIC behind port `target`.
#[inline(always)]
fn redirect_in_kernel(ctx: &XdpContext, target: u32) -> Result<u32, DropReason> {
    match maps::IQD_DEVMAP.redirect(target, 0) {
        Ok(action) if action == xdp_action::XDP_REDIRECT => {
            counters::delivered(target, 1, Frame::len(ctx));
            Ok(action)
        }
        _ => Err(drop_reason::REDIRECT_FAILED),
    }
}

/// Sends an ARP reply or neighbour advertisement back out of the port `ifindex` it was asked
/// on.
#[inline(always)]
fn reply(ctx: &XdpContext, ifindex: u32) -> Result<u32, DropReason> {
    trace::replied(ctx, ifindex);
    counters::delivered(ifindex, 1, Frame::len(ctx));
    Ok(xdp_action::XDP_TX)
}

// Multi-buffer like `iqd_port`: the switch's sockets take frames of many UMEM chunks.
#[xdp(frags)]
pub fn iqd_xsk(ctx: XdpContext) -> u32 {
    let ifindex = Frame::ingress_ifindex(&ctx);
    finish(&ctx, ifindex, try_xsk(&ctx, ifindex), xdp_action::XDP_DROP)
}

fn try_xsk(ctx: &XdpContext, ifindex: u32) -> Result<u32, DropReason> {
    match decide(ctx, ifindex)? {
        Verdict::Shape { ifindex: target } => {
            trace::delivered(ctx, ifindex, target);
            pass_to_shaper(ctx, target)
        }
        Verdict::Deliver { ifindex: target } => {
            maps::deliverable(target)?;
            // Traced here, where the fabric decides, whichever way the frame then goes.
            trace::delivered(ctx, ifindex, target);
            // The switch counts the delivery (or its drop) itself, once it has sent the frame.
            if let Some(action) = xsk::to_switch(ctx, ifindex, target) {
                xsk::count(xsk_stat::TO_SWITCH);
                return Ok(action);
            }
            xsk::count(xsk_stat::FALLBACK);
            redirect_in_kernel(ctx, target)
        }
        Verdict::Reply => reply(ctx, ifindex),
        verdict @ Verdict::OneToMany { .. } => one_to_many_xdp(ctx, ifindex, verdict),
    }
}

/// Headers the policy may read: Ethernet, IPv4 with options, TCP with options (IPv6 without
/// extension headers and TCP with options, or a neighbour solicitation, fit too).
const HEADROOM: u32 = (ETH_HLEN + IPV4_MAX_HLEN + TCP_MAX_HLEN) as u32;

#[classifier]
pub fn iqd_tc(ctx: TcContext) -> i32 {
    let ifindex = Frame::ingress_ifindex(&ctx);
    finish(&ctx, ifindex, try_tc(&ctx, ifindex), TC_ACT_SHOT)
}

fn try_tc(ctx: &TcContext, ifindex: u32) -> Result<i32, DropReason> {
    // On `xdp` and `afxdp` this program runs on every port for one-to-many frames (below);
    // a frame the XDP program already decided and passed up for a shaper carries its target
    // in the metadata: it goes on to the shaper, not through the policy (and the meters) again.
    if let Some(target) = xdp_shaped_target(ctx) {
        return bandwidth::steer(ctx, ifindex, target, 0);
    }
    // Headers sit in the linear part of what a veth hands over; pull them in where they do
    // not (a no-op otherwise), so parsing sees what the XDP path would.
    let len = ctx.len();
    let linear = (ctx.data_end() - ctx.data()) as u32;
    if linear < HEADROOM && linear < len {
        let _ = ctx.pull_data(if len < HEADROOM { len } else { HEADROOM });
    }
    let (packets, bytes) = (ctx.segments(), Frame::len(ctx));
    match decide(ctx, ifindex)? {
        Verdict::Shape { ifindex: target } => {
            maps::deliverable(target)?;
            trace::delivered(ctx, ifindex, target);
            bandwidth::steer(ctx, ifindex, target, 0)
        }
        Verdict::Deliver { ifindex: target } => {
            maps::deliverable(target)?;
            trace::delivered(ctx, ifindex, target);
            // SAFETY: the helper only records the target for after the program returns.
            if unsafe { bpf_redirect_peer(target, 0) } != TC_ACT_REDIRECT as i64 {
                return Err(drop_reason::REDIRECT_FAILED);
            }
            counters::delivered(target, packets, bytes);
            Ok(TC_ACT_REDIRECT)
        }
        Verdict::Reply => {
            trace::replied(ctx, ifindex);
            // SAFETY: as above; out of the port the request came in on, to the asker.
            if unsafe { bpf_redirect(ifindex, 0) } != TC_ACT_REDIRECT as i64 {
                return Err(drop_reason::REDIRECT_FAILED);
            }
            // A neighbour advertisement may be longer or shorter than its solicitation.
            counters::delivered(ifindex, 1, Frame::len(ctx));
            Ok(TC_ACT_REDIRECT)
        }
        Verdict::OneToMany { flags } => {
            let v6 = flags & ONE_TO_MANY_V6 == ONE_TO_MANY_V6;
            let fanned_out = if flags & ONE_TO_MANY_REPORT == ONE_TO_MANY_REPORT {
                learn(ctx, ifindex, v6);
                true
            } else if flags & ONE_TO_MANY_LAYER2 == ONE_TO_MANY_LAYER2 {
                if v6 {
                    mcast::flood::<_, { mcast::FLOOD_IPV6 }>(ctx, ifindex)
                } else if flags & ONE_TO_MANY_V4 == ONE_TO_MANY_V4 {
                    mcast::flood::<_, { mcast::FLOOD_IPV4 }>(ctx, ifindex)
                } else {
                    mcast::flood::<_, { mcast::FLOOD_OTHER }>(ctx, ifindex)
                }
            } else if v6 {
                mcast::fan_out::<_, true>(ctx, ifindex)
            } else {
                mcast::fan_out::<_, false>(ctx, ifindex)
            };
            if !fanned_out {
                // Dropped whole, and counted (mcast.rs).
                return Ok(TC_ACT_SHOT);
            }
            // Consumed: learnt from, or copied to every receiver (mcast.rs counted any drop).
            Ok(TC_ACT_STOLEN)
        }
    }
}

/// Moves frames on through the LPARs' bandwidth shapers (bandwidth.rs): on the out end of a
/// shaper, the frame's mark says its target and which shaper it leaves; on a port (data paths
/// `xdp`, `afxdp`), the XDP program passed it up with its target in the metadata.
#[classifier]
pub fn iqd_shaped(ctx: TcContext) -> i32 {
    let ifindex = Frame::ingress_ifindex(&ctx);
    match try_shaped(&ctx, ifindex) {
        Ok(action) => action,
        Err((port, reason)) => {
            counters::dropped(port, reason);
            TC_ACT_SHOT
        }
    }
}

/// A drop is counted on the sending port where it is known, else on the target.
fn try_shaped(ctx: &TcContext, ifindex: u32) -> Result<i32, (u32, DropReason)> {
    // SAFETY: the context is the skb's; reading its mark.
    let mark = unsafe { (*ctx.skb.skb).mark };
    if mark & !shaper_mark::TARGET != 0 {
        let target = mark & shaper_mark::TARGET;
        return bandwidth::steer(ctx, 0, target, mark & !shaper_mark::TARGET)
            .map_err(|reason| (target, reason));
    }
    let target = xdp_shaped_target(ctx).ok_or((ifindex, drop_reason::REDIRECT_FAILED))?;
    bandwidth::steer(ctx, ifindex, target, 0).map_err(|reason| (ifindex, reason))
}

/// The target port `pass_to_shaper` left in the XDP metadata of a frame it passed up, if the
/// frame has such metadata (frames from tc, or passed up for one-to-many delivery, have none).
#[inline(always)]
fn xdp_shaped_target(ctx: &TcContext) -> Option<u32> {
    // SAFETY: the context is the skb's; data_meta..data is the metadata XDP left.
    let (meta, data) = unsafe {
        (
            (*ctx.skb.skb).data_meta as usize,
            (*ctx.skb.skb).data as usize,
        )
    };
    if meta + SHAPED_META_LEN > data {
        return None;
    }
    // SAFETY: the four bytes lie between data_meta and data, checked just above.
    Some(unsafe { core::ptr::read_unaligned(meta as *const u32) })
}

/// On the LPAR side of every NIC (data path `xdp`): passes every frame up. A veth delivers
/// frames that the fabric sends back with XDP_TX (ARP replies) only when the receiving side
/// runs XDP.
#[xdp(frags)]
pub fn iqd_nic(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
