//! IP forwarding: on layer 3, by destination IPv4 or IPv6 address, to the NIC that registered
//! it in the same segment (CHPID and VLAN); on layer 2 (`L2`, layer2.rs), the IP frames of a
//! layer-2 NIC, to the NIC that registered their destination MAC. Decides only; the entry
//! point of each hook moves the frame. Each family checks its own header and finds its
//! transport header; from there on ([`deliver`]) the policy is one code for both families and
//! both modes, over 16-byte addresses (IPv4 mapped into IPv6).
use iqd_common::{
    drop_reason, segment_of, sg_direction,
    wire::{IPPROTO_ICMPV6, IPV6_HLEN, ND_NEIGHBOR_SOLICIT},
    PortInfo, RouteTarget,
};

use crate::{
    bandwidth, conntrack, counters,
    frame::Frame,
    layer2, maps, nd,
    parse::{self, copy_mac, EthHdr, Flow, IcmpHdr, Ipv4Hdr, Ipv6Hdr},
    policy, secgroup, DropReason, Verdict, COUNTED,
};

/// Forwards the IPv4 packet at `l3_offset` (from [`parse::l3`]) of a frame from port `ifindex`.
///
/// Each family's path is a BPF subprogram of its own (not inlined into the program): each
/// needs most of the 512-byte stack for its 16-byte address keys, and a frame is only ever on
/// one of them. The port's ifindex is read from the context again (BPF calls pass five
/// arguments).
#[inline(never)]
pub fn ipv4<C: Frame, const L2: bool>(
    ctx: &C,
    port: &PortInfo,
    eth: *mut EthHdr,
    l3_offset: usize,
    frame_len: u64,
) -> Result<Verdict, DropReason> {
    let ifindex = ctx.ingress_ifindex();
    let ip: *const Ipv4Hdr = parse::ptr_at(ctx, l3_offset)?;
    // SAFETY: both pointers came from `ptr_at`, which checked the bounds.
    let (eth, ip) = unsafe { (&mut *eth, &*ip) };

    let ihl = (ip.version_ihl & 0x0f) as u64;
    let tot_len = u16::from_be_bytes(ip.tot_len) as u64;
    if ip.version_ihl >> 4 != 4
        || ihl < 5
        || tot_len < ihl * 4
        || tot_len + l3_offset as u64 > frame_len
    {
        return Err(drop_reason::MALFORMED);
    }
    let l4_offset = l3_offset + ihl as usize * 4;
    // Parsed once here; a truncated transport header is reported where the security groups
    // need it (below), so the fabric's own checks keep their order.
    let flow = parse::flow(ctx, ip, l4_offset, l3_offset + tot_len as usize);
    deliver::<C, false, L2>(ctx, ifindex, port, eth, &flow, l3_offset, l4_offset)
}

/// What [`ipv6`] found: a packet for the policy's verdict, or a neighbour solicitation for
/// [`nd::solicitation`], which the caller runs (its own subprogram, for the stack).
pub enum Ipv6 {
    Verdict(Verdict),
    /// The solicitation's message at `l4_offset`, in a packet that ends at `end`.
    Solicitation {
        l4_offset: u16,
        end: u16,
    },
}

/// Forwards the IPv6 packet at `l3_offset` (from [`parse::l3`]) of a frame from port
/// `ifindex`, or, on layer 3, finds it is neighbour discovery (nd.rs): other than
/// solicitations `nd_ignored`. A layer-2 NIC's neighbour discovery is its own, forwarded like
/// any packet. A subprogram like [`ipv4`].
#[inline(never)]
pub fn ipv6<C: Frame, const L2: bool>(
    ctx: &C,
    port: &PortInfo,
    eth: *mut EthHdr,
    l3_offset: usize,
    frame_len: u64,
) -> Result<Ipv6, DropReason> {
    let ifindex = ctx.ingress_ifindex();
    let ip: *const Ipv6Hdr = parse::ptr_at(ctx, l3_offset)?;
    // SAFETY: both pointers came from `ptr_at`, which checked the bounds.
    let (eth, ip) = unsafe { (&mut *eth, &*ip) };

    let payload_len = u16::from_be_bytes(ip.payload_len) as u64;
    if ip.version_tc_flow[0] >> 4 != 6 || payload_len + (l3_offset + IPV6_HLEN) as u64 > frame_len {
        return Err(drop_reason::MALFORMED);
    }
    let end = l3_offset + IPV6_HLEN + payload_len as usize;
    let l4 = parse::ipv6_l4(ctx, ip.next_header, l3_offset + IPV6_HLEN, end)?;
    // Neighbour discovery is answered (solicitations) or ignored, never forwarded. A
    // truncated ICMPv6 header is not ND: it is reported where the security groups need it.
    if !L2 && l4.proto == IPPROTO_ICMPV6 && !l4.later_fragment {
        if let Ok(icmp) = parse::packet_ptr_at::<C, IcmpHdr>(ctx, l4.offset, end) {
            // SAFETY: `packet_ptr_at` checked the bounds.
            let icmp_type = unsafe { (*icmp).icmp_type };
            if nd::is_nd(icmp_type) {
                if icmp_type != ND_NEIGHBOR_SOLICIT {
                    return Err(drop_reason::ND_IGNORED);
                }
                // Both below 64 KiB + the headers: `end` is checked against the frame.
                return Ok(Ipv6::Solicitation {
                    l4_offset: l4.offset as u16,
                    end: end as u16,
                });
            }
        }
    }
    let flow = parse::flow6(ctx, ip, &l4, end);
    deliver::<C, true, L2>(ctx, ifindex, port, eth, &flow, l3_offset, l4.offset).map(Ipv6::Verdict)
}

/// The policy every IP packet meets once its headers are checked: the frame size of a GSO
/// packet's segments, source MAC and address, the target (layer 3: the route of the
/// destination address, and the destination MAC is rewritten; layer 2, `L2`: the NIC of the
/// destination MAC), security groups and connection tracking, bandwidth. `flow` is the
/// transport header's parse, whose truncation counts only where the security groups need it.
#[inline(always)]
fn deliver<C: Frame, const V6: bool, const L2: bool>(
    ctx: &C,
    ifindex: u32,
    port: &PortInfo,
    eth: &mut EthHdr,
    flow: &Flow,
    l3_offset: usize,
    l4_offset: usize,
) -> Result<Verdict, DropReason> {
    let (saddr, daddr) = (&flow.saddr.bytes(), &flow.daddr.bytes());
    // A GSO packet (tc only) stands for segments of `gso_size` payload each: the frame size
    // holds for every segment on the wire.
    let gso_size = ctx.gso_size();
    if gso_size != 0 {
        let l4_len = flow.parsed()?.l4_len;
        let segment_len = (l4_offset as u32 + l4_len + gso_size) as u64;
        policy::check_frame_size(port, l3_offset, segment_len)?;
    }

    policy::check_source_mac(port, &eth.src)?;
    // An IPv4-mapped IPv6 source is nobody's, even with `allow_ip_spoofing`: it would pass
    // for the IPv4 address in every map.
    if V6 && flow.saddr.is_ipv4_mapped() {
        return Err(drop_reason::SPOOFED_SOURCE);
    }
    policy::check_source_ip(ifindex, port, saddr)?;

    let target = if L2 {
        layer2::unicast_target(ifindex, port, &eth.dst)?
    } else {
        // IPv6 multicast (ff00::/8) is mcast.rs's; IPv4's finds no route. An IPv4-mapped
        // destination is no IPv6 NIC's.
        if V6 && (flow.daddr.is_multicast() || flow.daddr.is_ipv4_mapped()) {
            return Err(drop_reason::NO_DESTINATION);
        }
        match maps::route(segment_of(port), daddr) {
            // An LPAR's stack delivers its own addresses locally; a frame to itself is as wrong
            // as an ARP request for itself (see arp.rs), and is refused the same way.
            Some(target) if target.ifindex == ifindex => return Err(drop_reason::NO_DESTINATION),
            Some(target) => {
                policy::check_same_layer(port, &target)?;
                target
            }
            // Out of the routes while its LPAR is stopped (`iqd lpar stop`), or elsewhere.
            None => return Err(policy::unreachable_reason(segment_of(port), daddr)),
        }
    };
    // Security groups: a tracked connection passes either way; anything else needs the
    // sender's outbound and the receiver's inbound rules.
    let flow = flow.parsed()?;
    let mut key = conntrack::key(flow, segment_of(port));
    if !conntrack::track(&mut key, flow, ifindex, target.ifindex) {
        match secgroup::allows(ifindex, target.ifindex, flow) {
            Ok(()) => {}
            Err(sg_direction::OUTBOUND) => return Err(drop_reason::SG_DENIED_OUTBOUND),
            Err(_) => {
                // Counted on the NIC whose rules denied it.
                counters::dropped(target.ifindex, drop_reason::SG_DENIED_INBOUND);
                return Err(COUNTED);
            }
        }
        conntrack::open(&key, flow, ifindex, target.ifindex);
    }
    // Layer 3 mode delivers by address: the frame goes to the NIC's MAC whatever the sender's
    // neighbour cache said.
    if !L2 {
        copy_mac(&mut eth.dst, &target.mac);
    }
    // The LPARs' bandwidths (a GSO packet's headers count once per segment).
    to_target(ctx, ifindex, port, &target, l4_offset as u32 + flow.l4_len)
}

/// A frame the policy lets through to `target`: delivered, or through the bandwidth shapers
/// if either LPAR has a bandwidth (`headers`: the bytes a GSO packet's segments each repeat).
#[inline(always)]
pub fn to_target<C: Frame>(
    ctx: &C,
    ifindex: u32,
    port: &PortInfo,
    target: &RouteTarget,
    headers: u32,
) -> Result<Verdict, DropReason> {
    let shaped = if bandwidth::limited(port, target) {
        bandwidth::admit(ctx, ifindex, port, target, headers)?
    } else {
        false
    };
    Ok(if shaped {
        Verdict::Shape {
            ifindex: target.ifindex,
        }
    } else {
        Verdict::Deliver {
            ifindex: target.ifindex,
        }
    })
}
