//! IPv6 neighbour discovery in layer 3 mode, the counterpart of ARP (arp.rs): the fabric knows
//! every registered address and answers neighbour solicitations itself with an advertisement
//! sent back out of the asking NIC's port. No ND frame crosses the fabric; the rest of ND
//! (router solicitations and advertisements, advertisements, redirects) is dropped as
//! `nd_ignored`.
use iqd_common::{
    drop_reason,
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
    parse::{self, copy_mac, EthHdr, Ipv6Hdr, NaPacket, NdMsg},
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
    if policy::is_ipv4_mapped(saddr) {
        return Err(drop_reason::SPOOFED_SOURCE);
    }
    if !unspecified {
        policy::check_source_ip(ifindex, port, saddr)?;
    }
    let target_addr = ns.target;
    if policy::is_ipv4_mapped(&target_addr) {
        return Err(drop_reason::NO_DESTINATION);
    }
    let target = match maps::route(port.chpid, &target_addr) {
        // The asker's own address: answering would report a conflict with itself.
        Some(target) if target.ifindex == ifindex => return Err(drop_reason::NO_DESTINATION),
        Some(target) => target,
        None => return Err(policy::unreachable_reason(&target_addr)),
    };
    let asker_mac = eth.src;
    let (dst, dst_mac, flags) = if unspecified {
        (ALL_NODES, ALL_NODES_MAC, ND_NA_FLAG_OVERRIDE)
    } else {
        (
            *saddr,
            asker_mac,
            ND_NA_FLAG_SOLICITED | ND_NA_FLAG_OVERRIDE,
        )
    };

    // The advertisement replaces the solicitation from the network header on, whatever
    // extension headers or options that had.
    if !ctx.resize((l3_offset + IPV6_HLEN + NA_LEN) as u32) {
        return Err(drop_reason::REDIRECT_FAILED);
    }
    let eth: *mut EthHdr = parse::ptr_at(ctx, 0)?;
    let na: *mut NaPacket = parse::ptr_at(ctx, l3_offset)?;
    // SAFETY: as above, after the resize.
    let (eth, na) = unsafe { (&mut *eth, &mut *na) };
    copy_mac(&mut eth.dst, &dst_mac);
    copy_mac(&mut eth.src, &target.mac);
    na.ip.version_tc_flow = [0x60, 0, 0, 0];
    na.ip.payload_len = (NA_LEN as u16).to_be_bytes();
    na.ip.next_header = IPPROTO_ICMPV6;
    na.ip.hop_limit = ND_HOP_LIMIT;
    na.ip.saddr = target_addr;
    na.ip.daddr = dst;
    na.na.icmp_type = ND_NEIGHBOR_ADVERT;
    na.na.code = 0;
    na.na.flags = flags;
    na.na.reserved = [0; 3];
    na.na.target = target_addr;
    na.opt_type = ND_OPT_TARGET_LL_ADDR;
    na.opt_len = 1;
    copy_mac(&mut na.opt_mac, &target.mac);
    na.na.check = checksum(&target_addr, &dst, flags, &target.mac).to_be_bytes();
    Ok(Verdict::Reply)
}

#[inline(always)]
fn is_unspecified(addr: &Addr) -> bool {
    let mut any = 0u8;
    for byte in addr {
        any |= byte;
    }
    any == 0
}

/// Sum of the 16-bit big-endian words of an address.
#[inline(always)]
fn sum_addr(addr: &Addr) -> u32 {
    let mut sum = 0u32;
    for i in 0..8 {
        sum += (addr[2 * i] as u32) << 8 | addr[2 * i + 1] as u32;
    }
    sum
}

/// The ICMPv6 checksum (RFC 4443, over the RFC 8200 pseudo-header) of the advertisement from
/// `target` (also its target address) to `dst` with `flags` and the option carrying `mac`:
/// computed from the values, not read back from the frame.
#[inline(always)]
fn checksum(target: &Addr, dst: &Addr, flags: u8, mac: &[u8; 6]) -> u16 {
    let mut sum = 2 * sum_addr(target) + sum_addr(dst);
    // Pseudo-header: upper-layer length and next header.
    sum += NA_LEN as u32 + IPPROTO_ICMPV6 as u32;
    // Type and code, flags and reserved, the option's type and length, the MAC.
    sum += (ND_NEIGHBOR_ADVERT as u32) << 8;
    sum += (flags as u32) << 8;
    sum += (ND_OPT_TARGET_LL_ADDR as u32) << 8 | 1;
    sum += (mac[0] as u32) << 8 | mac[1] as u32;
    sum += (mac[2] as u32) << 8 | mac[3] as u32;
    sum += (mac[4] as u32) << 8 | mac[5] as u32;
    // At most 25 words of 16 bits: two folds leave 16 bits.
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
