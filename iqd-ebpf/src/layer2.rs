//! Layer-2 NICs (`layer2 = true`, as qeth's layer2 attribute): a layer-2 NIC's frame goes by
//! its destination MAC to the layer-2 NIC of the segment that registered it (no learning),
//! whatever its EtherType; ARP is the LPARs' own, not answered by the fabric. A frame to a group
//! MAC is flooded (mcast.rs) to the segment's other layer-2 NICs (a broadcast only to those
//! that take broadcasts, `rx_bcast`). IP frames meet the policy layer-3 frames meet
//! (forward.rs: anti-spoofing, security groups, connection tracking); every frame the frame
//! size and the bandwidths. Layer-2 and layer-3 NICs of one CHPID cannot reach each other
//! (`layer_mismatch`).
use iqd_common::{
    drop_reason, segment_of,
    wire::{ETH_P_IP, ETH_P_IPV6},
    PortInfo, RouteTarget,
};

use crate::{
    forward,
    frame::Frame,
    maps,
    parse::{self, EthHdr, L3},
    policy, DropReason, Verdict, ONE_TO_MANY_LAYER2, ONE_TO_MANY_V4, ONE_TO_MANY_V6,
};

/// The decision on a frame from the layer-2 NIC behind port `port`, whose network header
/// `l3` describes (from [`crate::parse::l3`]).
#[inline(always)]
pub fn forward<C: Frame>(
    ctx: &C,
    port: &PortInfo,
    eth: *mut EthHdr,
    l3: &L3,
    frame_len: u64,
) -> Result<Verdict, DropReason> {
    // SAFETY: `parse::l3` checked the bounds.
    policy::check_source_mac(port, unsafe { &(*eth).src })?;
    // The group bit: broadcast and multicast are flooded (mcast.rs), IP by family.
    // SAFETY: as above.
    if unsafe { (*eth).dst[0] } & 1 != 0 {
        let family = match l3.ether_type {
            ETH_P_IP => ONE_TO_MANY_V4,
            ETH_P_IPV6 => ONE_TO_MANY_V6,
            _ => 0,
        };
        return Ok(Verdict::OneToMany {
            flags: ONE_TO_MANY_LAYER2 | family,
        });
    }
    match l3.ether_type {
        ETH_P_IP => forward::ipv4::<C, true>(ctx, port, eth, l3.offset, frame_len),
        ETH_P_IPV6 => match forward::ipv6::<C, true>(ctx, port, eth, l3.offset, frame_len)? {
            forward::Ipv6::Verdict(verdict) => Ok(verdict),
            // Layer 2 leaves neighbour discovery to the LPARs (forward.rs never returns it).
            forward::Ipv6::Solicitation { .. } => Err(drop_reason::ND_IGNORED),
        },
        _ => other(ctx, port),
    }
}

/// Forwards a frame of another EtherType than IP: to the NIC of its destination MAC, with
/// no rules but the bandwidths. A subprogram of its own: the program's own stack stays as
/// small as the IP paths it calls need.
#[inline(never)]
fn other<C: Frame>(ctx: &C, port: &PortInfo) -> Result<Verdict, DropReason> {
    let ifindex = ctx.ingress_ifindex();
    let eth: *const EthHdr = parse::ptr_at(ctx, 0)?;
    // SAFETY: `ptr_at` checked the bounds.
    let dst = unsafe { (*eth).dst };
    let target = unicast_target(ifindex, port, &dst)?;
    forward::to_target(ctx, ifindex, port, &target, 0)
}

/// The layer-2 NIC that registered destination MAC `dst` in the segment of port `ifindex`
/// (`port`). Unknown unicast is `no_destination` (MACs are registered, never learnt); a
/// layer-3 NIC's MAC `layer_mismatch`; a stopped LPAR's `lpar_stopped`.
#[inline(always)]
pub fn unicast_target(
    ifindex: u32,
    port: &PortInfo,
    dst: &[u8; 6],
) -> Result<RouteTarget, DropReason> {
    let segment = segment_of(port);
    match maps::mac_route(segment, dst) {
        // The LPAR's own MAC: its stack delivers that locally.
        Some(target) if target.ifindex == ifindex => Err(drop_reason::NO_DESTINATION),
        Some(target) => {
            policy::check_same_layer(port, &target)?;
            Ok(target)
        }
        None if maps::mac_stopped(segment, dst) => Err(drop_reason::LPAR_STOPPED),
        None => Err(drop_reason::NO_DESTINATION),
    }
}
