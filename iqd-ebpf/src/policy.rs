//! The CHPID's rules that apply to every frame, before it is forwarded or answered.
use iqd_common::{drop_reason, port_flags, route_flags, segment_of, Addr, PortInfo, RouteTarget};

use crate::{maps, parse::mac_eq, DropReason};

/// The CHPID's frame size holds even if the LPAR raised its own interface's MTU: what follows
/// the link-layer headers (the network header is at `l3_offset`) may be at most the MTU.
#[inline(always)]
pub fn check_frame_size(
    port: &PortInfo,
    l3_offset: usize,
    frame_len: u64,
) -> Result<(), DropReason> {
    if frame_len > port.mtu as u64 + l3_offset as u64 {
        return Err(drop_reason::MFS_EXCEEDED);
    }
    Ok(())
}

/// A NIC may send only from its own MAC; a layer-2 NIC allowed to spoof
/// (`allow_ip_spoofing`) from any.
#[inline(always)]
pub fn check_source_mac(port: &PortInfo, src: &[u8; 6]) -> Result<(), DropReason> {
    const LAYER2_SPOOFING: u8 = port_flags::LAYER2 | port_flags::ALLOW_IP_SPOOFING;
    if port.flags & LAYER2_SPOOFING == LAYER2_SPOOFING {
        return Ok(());
    }
    if !mac_eq(&port.mac, src) {
        return Err(drop_reason::SPOOFED_SOURCE);
    }
    Ok(())
}

/// A NIC may send only from an address it registered in its segment, unless it is allowed to
/// spoof (`allow_ip_spoofing`).
#[inline(always)]
pub fn check_source_ip(ifindex: u32, port: &PortInfo, saddr: &Addr) -> Result<(), DropReason> {
    if port.flags & port_flags::ALLOW_IP_SPOOFING != 0 {
        return Ok(());
    }
    match maps::route(segment_of(port), saddr) {
        Some(owner) if owner.ifindex == ifindex => Ok(()),
        _ => Err(drop_reason::SPOOFED_SOURCE),
    }
}

/// A layer-2 NIC and a layer-3 NIC of one CHPID cannot reach each other, as on the machine:
/// the sender's port and the target it found must be of the same mode.
#[inline(always)]
pub fn check_same_layer(port: &PortInfo, target: &RouteTarget) -> Result<(), DropReason> {
    let sender_l2 = port.flags & port_flags::LAYER2 != 0;
    let target_l2 = target.flags & route_flags::LAYER2 != 0;
    if sender_l2 != target_l2 {
        return Err(drop_reason::LAYER_MISMATCH);
    }
    Ok(())
}

/// Why a destination that no running NIC in `segment` registered cannot be reached: its LPAR
/// is stopped (`iqd lpar stop`: its addresses are out of the routes), it is registered only in
/// other segments, or nowhere. The same for a frame, an ARP request and a solicitation.
#[inline(always)]
pub fn unreachable_reason(segment: u32, daddr: &Addr) -> DropReason {
    if maps::stopped(segment, daddr) {
        drop_reason::LPAR_STOPPED
    } else if maps::registered_anywhere(daddr) {
        drop_reason::NOT_MEMBER
    } else {
        drop_reason::NO_DESTINATION
    }
}
