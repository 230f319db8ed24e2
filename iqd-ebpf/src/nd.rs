//! IPv6 neighbour discovery in layer 3 mode, the counterpart of ARP (arp.rs): the fabric knows
//! every registered address and answers neighbour solicitations itself with an advertisement
//! sent back out of the asking NIC's port. No ND frame crosses the fabric; the rest of ND
//! (router solicitations and advertisements, advertisements, redirects) is dropped as
//! `nd_ignored`.
use iqd_common::{
    drop_reason, segment_of,
    wire::{
        IPPROTO_ICMPV6, IPV6_HLEN, ND_HOP_LIMIT, ND_MSG_LEN, ND_NA_FLAG_OVERRIDE,
        ND_NA_FLAG_SOLICITED, ND_NEIGHBOR_ADVERT, ND_OPT_LL_ADDR_LEN, ND_OPT_TARGET_LL_ADDR,
        ND_REDIRECT, ND_ROUTER_SOLICIT,
    },
    Addr, PortInfo,
};

use crate::{
    frame::Frame,
    maps,
    parse::{self, copy_mac, EthHdr, FlowAddr, Ipv6Hdr, NaPacket, NdMsg},
    policy, DropReason, Verdict,
};

/// The all-nodes multicast address ff02::1, where an advertisement answering a solicitation
/// from the unspecified address (duplicate address detection) goes, and its Ethernet address.
const ALL_NODES: Addr = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// Length of the advertisement's ICMPv6 message: the message and a target link-layer address
/// option.
const NA_LEN: usize = ND_MSG_LEN + ND_OPT_LL_ADDR_LEN;

/// Whether ICMPv6 type `icmp_type` is neighbour discovery (RFC 4861: 133 to 137).
#[inline(always)]
pub fn is_nd(icmp_type: u8) -> bool {
    (ND_ROUTER_SOLICIT..=ND_REDIRECT).contains(&icmp_type)
}

/// Answers the neighbour solicitation at `l4_offset` of the IPv6 packet at `l3_offset` that
/// ends at `end` (found by `forward::ipv6`), from port `port`, with an advertisement in
/// place. A subprogram of its own, for the stack (see `forward::ipv4`).
#[inline(never)]
pub fn solicitation<C: Frame>(
    ctx: &C,
    port: &PortInfo,
    l3_offset: usize,
    l4_offset: usize,
    end: usize,
) -> Result<Verdict, DropReason> {
    let ifindex = ctx.ingress_ifindex();
    let ns: *const NdMsg = parse::packet_ptr_at(ctx, l4_offset, end)?;
    let ip: *const Ipv6Hdr = parse::ptr_at(ctx, l3_offset)?;
    let eth: *const EthHdr = parse::ptr_at(ctx, 0)?;
    // SAFETY: the pointers came from `ptr_at`, which checked the bounds.
    let (ns, ip, eth) = unsafe { (&*ns, &*ip, &*eth) };
    policy::check_source_mac(port, &eth.src)?;
    let saddr = &ip.saddr;
    // The unspecified source is duplicate address detection (RFC 4862) and claims nothing.
    let unspecified = is_unspecified(saddr);
    if FlowAddr::ipv6(saddr).is_ipv4_mapped() {
        return Err(drop_reason::SPOOFED_SOURCE);
    }
    if !unspecified {
        policy::check_source_ip(ifindex, port, saddr)?;
    }
    let target_addr = &ns.target;
    if FlowAddr::ipv6(target_addr).is_ipv4_mapped() {
        return Err(drop_reason::NO_DESTINATION);
    }
    let target = match maps::route(segment_of(port), target_addr) {
        // The asker's own address: answering would report a conflict with itself.
        Some(target) if target.ifindex == ifindex => return Err(drop_reason::NO_DESTINATION),
        Some(target) => {
            policy::check_same_layer(port, &target)?;
            target
        }
        None => return Err(policy::unreachable_reason(segment_of(port), target_addr)),
    };
    let flags = if unspecified {
        ND_NA_FLAG_OVERRIDE
    } else {
        ND_NA_FLAG_SOLICITED | ND_NA_FLAG_OVERRIDE
    };

    // The advertisement is built where the solicitation was, from the network header on,
    // moving bytes inside the frame rather than through the stack (16-byte addresses held
    // in registers would not fit it): its target goes where the advertisement's target is
    // (already there without extension headers), the asker's address becomes the
    // destination, the target the source. Then the frame is cut or grown to the
    // advertisement's length, which keeps those first bytes.
    let na_target = l3_offset + IPV6_HLEN + TARGET_OFFSET;
    let ns_target = l4_offset + TARGET_OFFSET;
    if ns_target != na_target {
        // Forwards: the solicitation's target lies further on (extension headers are
        // multiples of 8 bytes), so a byte is never read after it was overwritten.
        move_addr(ctx, ns_target, na_target)?;
    }
    let saddr_at = l3_offset + SADDR_OFFSET;
    let daddr_at = l3_offset + DADDR_OFFSET;
    if unspecified {
        let daddr: *mut Addr = parse::ptr_at(ctx, daddr_at)?;
        // SAFETY: `ptr_at` checked the bounds.
        unsafe { *daddr = ALL_NODES };
    } else {
        move_addr(ctx, saddr_at, daddr_at)?;
    }
    move_addr(ctx, na_target, saddr_at)?;

    if !ctx.resize((l3_offset + IPV6_HLEN + NA_LEN) as u32) {
        return Err(drop_reason::REDIRECT_FAILED);
    }
    let eth: *mut EthHdr = parse::ptr_at(ctx, 0)?;
    let na: *mut NaPacket = parse::ptr_at(ctx, l3_offset)?;
    // SAFETY: as above, after the resize.
    let (eth, na) = unsafe { (&mut *eth, &mut *na) };
    if unspecified {
        copy_mac(&mut eth.dst, &ALL_NODES_MAC);
    } else {
        let asker = eth.src;
        copy_mac(&mut eth.dst, &asker);
    }
    copy_mac(&mut eth.src, &target.mac);
    na.ip.version_tc_flow = [0x60, 0, 0, 0];
    na.ip.payload_len = (NA_LEN as u16).to_be_bytes();
    na.ip.next_header = IPPROTO_ICMPV6;
    na.ip.hop_limit = ND_HOP_LIMIT;
    na.na.icmp_type = ND_NEIGHBOR_ADVERT;
    na.na.code = 0;
    na.na.check = [0, 0];
    na.na.flags = flags;
    na.na.reserved = [0; 3];
    na.opt_type = ND_OPT_TARGET_LL_ADDR;
    na.opt_len = 1;
    copy_mac(&mut na.opt_mac, &target.mac);
    na.na.check = checksum(na).to_be_bytes();
    Ok(Verdict::Reply)
}

/// Offsets in the IPv6 header of its source and destination address, and in a neighbour
/// solicitation or advertisement of its target address.
const SADDR_OFFSET: usize = 8;
const DADDR_OFFSET: usize = 24;
const TARGET_OFFSET: usize = 8;

/// Copies the 16-byte address at frame offset `from` to `to`, byte by byte from the first.
#[inline(always)]
fn move_addr<C: Frame>(ctx: &C, from: usize, to: usize) -> Result<(), DropReason> {
    let src: *const Addr = parse::ptr_at(ctx, from)?;
    let dst: *mut Addr = parse::ptr_at(ctx, to)?;
    for i in 0..16 {
        // SAFETY: `ptr_at` checked both bounds; the copy runs forwards, as its callers need.
        unsafe { (*dst)[i] = (*src)[i] };
    }
    Ok(())
}

#[inline(always)]
fn is_unspecified(addr: &Addr) -> bool {
    let mut any = 0u8;
    for byte in addr {
        any |= byte;
    }
    any == 0
}

/// The ICMPv6 checksum (RFC 4443, over the RFC 8200 pseudo-header) of the advertisement `na`,
/// whose checksum field is zero: its addresses, upper-layer length and next header, then the
/// message, summed as 16-bit big-endian words.
#[inline(always)]
fn checksum(na: &NaPacket) -> u16 {
    let mut sum = NA_LEN as u32 + IPPROTO_ICMPV6 as u32;
    for i in 0..8 {
        sum += (na.ip.saddr[2 * i] as u32) << 8 | na.ip.saddr[2 * i + 1] as u32;
        sum += (na.ip.daddr[2 * i] as u32) << 8 | na.ip.daddr[2 * i + 1] as u32;
        sum += (na.na.target[2 * i] as u32) << 8 | na.na.target[2 * i + 1] as u32;
    }
    sum += (na.na.icmp_type as u32) << 8 | na.na.code as u32;
    sum += (na.na.flags as u32) << 8 | na.na.reserved[0] as u32;
    sum += (na.na.reserved[1] as u32) << 8 | na.na.reserved[2] as u32;
    sum += (na.opt_type as u32) << 8 | na.opt_len as u32;
    for i in 0..3 {
        sum += (na.opt_mac[2 * i] as u32) << 8 | na.opt_mac[2 * i + 1] as u32;
    }
    // At most 34 words of 16 bits: two folds leave 16 bits.
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
