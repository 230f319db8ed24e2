//! Layer 3 forwarding: by destination IPv4 address, to the NIC that registered it on the same
//! CHPID. Decides only; the entry point of each hook moves the frame.
use iqd_common::{drop_reason, ipv4_mapped, segment_of, sg_direction, PortInfo};

use crate::{
    conntrack, counters,
    frame::Frame,
    maps,
    parse::{self, copy_mac, EthHdr, Ipv4Hdr},
    policy, secgroup, DropReason, Verdict, COUNTED,
};

/// Forwards the IPv4 packet at `l3_offset` (from [`parse::l3`]) of a frame from port `ifindex`.
#[inline(always)]
pub fn ipv4<C: Frame>(
    ctx: &C,
    ifindex: u32,
    port: &PortInfo,
    eth: *mut EthHdr,
    l3_offset: usize,
    frame_len: u64,
) -> Result<Verdict, DropReason> {
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
    // A GSO packet (tc only) stands for segments of `gso_size` payload each: the frame size
    // holds for every segment on the wire.
    let gso_size = ctx.gso_size();
    if gso_size != 0 {
        let l4_len = flow.as_ref().map_err(|reason| *reason)?.l4_len;
        let segment_len = (l4_offset as u32 + l4_len + gso_size) as u64;
        policy::check_frame_size(port, l3_offset, segment_len)?;
    }

    policy::check_source_mac(port, &eth.src)?;
    let saddr = ipv4_mapped(ip.saddr);
    let daddr = ipv4_mapped(ip.daddr);
    policy::check_source_ip(ifindex, port, &saddr)?;

    let target = match maps::route(port.chpid, &daddr) {
        // An LPAR's stack delivers its own addresses locally; a frame to itself is as wrong as
        // an ARP request for itself (see arp.rs), and is refused the same way.
        Some(target) if target.ifindex == ifindex => return Err(drop_reason::NO_DESTINATION),
        Some(target) => target,
        None => return Err(policy::unreachable_reason(&daddr)),
    };
    // Security groups: a tracked connection passes either way; anything else needs the
    // sender's outbound and the receiver's inbound rules.
    let flow = flow?;
    let segment = segment_of(port);
    if !conntrack::track(&flow, segment, ifindex, target.ifindex) {
        if !secgroup::allows(ifindex, sg_direction::OUTBOUND, &flow, &flow.daddr) {
            return Err(drop_reason::SG_DENIED_OUTBOUND);
        }
        if !secgroup::allows(target.ifindex, sg_direction::INBOUND, &flow, &flow.saddr) {
            // Counted on the NIC whose rules denied it.
            counters::dropped(target.ifindex, drop_reason::SG_DENIED_INBOUND);
            return Err(COUNTED);
        }
        conntrack::open(&flow, segment, ifindex, target.ifindex);
    }
    // Layer 3 mode delivers by address: the frame goes to the NIC's MAC whatever the sender's
    // neighbour cache said.
    copy_mac(&mut eth.dst, &target.mac);
    Ok(Verdict::Deliver {
        ifindex: target.ifindex,
    })
}
