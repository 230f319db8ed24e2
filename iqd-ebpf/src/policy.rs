//! The CHPID's rules that apply to every frame, before it is forwarded or answered.
use iqd_common::{drop_reason, port_flags, segment_of, Addr, PortInfo};

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

/// A NIC may send only from its own MAC.
#[inline(always)]
pub fn check_source_mac(port: &PortInfo, src: &[u8; 6]) -> Result<(), DropReason> {
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

/// Why a destination that no NIC in this segment registered cannot be reached.
#[inline(always)]
pub fn unreachable_reason(daddr: &Addr) -> DropReason {
    if maps::registered_anywhere(daddr) {
        drop_reason::NOT_MEMBER
    } else {
        drop_reason::NO_DESTINATION
    }
}
