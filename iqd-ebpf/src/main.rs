//! iqd's data plane: the XDP program on the fabric side of every NIC.
//!
//! A frame an LPAR sends on its NIC arrives here. The program parses it once, applies the
//! CHPID's rules (frame size, anti-spoofing, membership), answers ARP itself and forwards IPv4
//! by destination address to the NIC that registered it, on the same CHPID only, where both
//! NICs' security groups (or a tracked connection) allow it. Every frame that is not delivered is
//! dropped and counted under a reason (see `iqd_common::drop_reason`).
#![no_std]
#![no_main]

mod arp;
mod conntrack;
mod counters;
mod forward;
mod maps;
mod parse;
mod policy;
mod secgroup;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use iqd_common::drop_reason;

use crate::parse::{EthHdr, ETH_P_ARP, ETH_P_IP};

/// A drop reason from `iqd_common::drop_reason`.
pub type DropReason = u32;

/// A drop already counted where it belongs (on another NIC than the sender).
pub const COUNTED: DropReason = u32::MAX;

// Multi-buffer ("frags") so CHPID MTUs of up to 56K work on veth.
#[xdp(frags)]
pub fn iqd_port(ctx: XdpContext) -> u32 {
    match try_port(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            counters::dropped(ctx.ingress_ifindex() as u32, reason);
            xdp_action::XDP_DROP
        }
    }
}

fn try_port(ctx: &XdpContext) -> Result<u32, DropReason> {
    let ifindex = ctx.ingress_ifindex() as u32;
    // A port the loader has not described yet carries nothing.
    let port = maps::port(ifindex).ok_or(drop_reason::NO_DESTINATION)?;
    let frame_len = parse::frame_len(ctx);
    counters::sent(ifindex, frame_len);

    let eth: *mut EthHdr = parse::ptr_at(ctx, 0)?;
    policy::check_frame_size(&port, frame_len)?;
    match parse::ether_type(eth) {
        ETH_P_IP => forward::ipv4(ctx, ifindex, &port, eth, frame_len),
        ETH_P_ARP => arp::answer(ctx, ifindex, &port, eth),
        _ => Err(drop_reason::NON_IP),
    }
}

/// On the LPAR side of every NIC: passes every frame up. A veth delivers frames that the
/// fabric sends back with XDP_TX (ARP replies) only when the receiving side runs XDP.
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
