//! ARP in layer 3 mode: the fabric knows every registered address and answers requests itself
//! (sent back out of the asking NIC's port). ARP never crosses the fabric.
use iqd_common::{
    drop_reason, segment_of,
    wire::{ARPHRD_ETHER, ARPOP_REPLY, ARPOP_REQUEST, ETH_ALEN, ETH_P_IP, IPV4_ALEN},
    PortInfo,
};

use crate::{
    frame::Frame,
    maps,
    parse::{self, copy_mac, ArpHdr, EthHdr, FlowAddr},
    policy, DropReason, Verdict,
};

/// Answers the ARP packet at `l3_offset` (from [`parse::l3`]) of a frame from port `ifindex`.
#[inline(always)]
pub fn answer<C: Frame>(
    ctx: &C,
    ifindex: u32,
    port: &PortInfo,
    eth: *mut EthHdr,
    l3_offset: usize,
) -> Result<Verdict, DropReason> {
    let arp: *mut ArpHdr = parse::ptr_at(ctx, l3_offset)?;
    // SAFETY: both pointers came from `ptr_at`, which checked the bounds.
    let (eth, arp) = unsafe { (&mut *eth, &mut *arp) };

    if u16::from_be_bytes(arp.htype) != ARPHRD_ETHER
        || u16::from_be_bytes(arp.ptype) != ETH_P_IP
        || arp.hlen as usize != ETH_ALEN
        || arp.plen as usize != IPV4_ALEN
    {
        return Err(drop_reason::MALFORMED);
    }
    if u16::from_be_bytes(arp.oper) != ARPOP_REQUEST {
        return Err(drop_reason::ARP_IGNORED);
    }
    policy::check_source_mac(port, &eth.src)?;
    policy::check_source_mac(port, &arp.sha)?;
    // 0.0.0.0 is an address probe (RFC 5227) and claims nothing.
    if u32::from_ne_bytes(arp.spa) != 0 {
        policy::check_source_ip(ifindex, port, &FlowAddr::ipv4_mapped(arp.spa).bytes())?;
    }

    let tpa = arp.tpa;
    let target = match maps::route(segment_of(port), &FlowAddr::ipv4_mapped(tpa).bytes()) {
        // The asker's own address: answering would report a conflict with itself.
        Some(target) if target.ifindex == ifindex => return Err(drop_reason::NO_DESTINATION),
        Some(target) => {
            policy::check_same_layer(port, &target)?;
            target
        }
        None => return Err(unanswered(segment_of(port), tpa)),
    };

    // Turn the request into the reply in place.
    copy_mac(&mut eth.dst, &arp.sha);
    copy_mac(&mut eth.src, &target.mac);
    arp.oper = ARPOP_REPLY.to_be_bytes();
    let asker_mac = arp.sha;
    copy_mac(&mut arp.tha, &asker_mac);
    arp.tpa = arp.spa;
    copy_mac(&mut arp.sha, &target.mac);
    arp.spa = tpa;

    Ok(Verdict::Reply)
}

/// Why a request for `tpa`, registered by no running NIC of `segment`, goes unanswered
/// (`policy::unreachable_reason`). A subprogram of its own: its map keys stay off the stack of
/// the program, which the forwarding subprograms share.
#[inline(never)]
fn unanswered(segment: u32, tpa: [u8; 4]) -> DropReason {
    policy::unreachable_reason(segment, &FlowAddr::ipv4_mapped(tpa).bytes())
}
