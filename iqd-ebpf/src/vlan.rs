//! VLANs: a NIC's VLAN is the fabric's property (its port's segment, `iqd_common::segment_of`),
//! never the frame's. An LPAR sees an untagged interface, and a frame it sends with an 802.1Q or
//! 802.1ad tag is dropped as `vlan_tagged`: it must not tag its way into another segment, nor
//! hand a tag to the receiver. XDP sees a tag inline (the outer one of a double tag included);
//! at tc ingress the kernel has already moved the outer tag into the packet's metadata, where
//! an inner tag of a double-tagged frame leaves the inline EtherType a tag again.
use iqd_common::{
    drop_reason,
    wire::{ETH_P_8021AD, ETH_P_8021Q},
};

use crate::{frame::Frame, DropReason};

/// Refuses a frame whose EtherType (after the MACs) is a VLAN tag, or whose tag the kernel
/// keeps in its metadata.
#[inline(always)]
pub fn check_untagged<C: Frame>(ctx: &C, ether_type: u16) -> Result<(), DropReason> {
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD || ctx.vlan_tag_in_metadata() {
        return Err(drop_reason::VLAN_TAGGED);
    }
    Ok(())
}
