//! Data path `afxdp`: handing a delivered frame to the userspace switch.
//!
//! The policy has already decided where the frame goes; this only moves it. The frame is
//! redirected to the AF_XDP socket the switch bound to the port and rx queue it arrived on,
//! with the destination port's ifindex in the frame's XDP metadata (the kernel copies the
//! metadata into the UMEM with the frame), so the switch sends it on without a lookup of its
//! own. When the switch serves neither that socket nor the destination's, the caller delivers
//! in the kernel instead, exactly as the `xdp` path does.
use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_meta, programs::XdpContext};
use iqd_common::{XSK_MAX_QUEUES, XSK_META_LEN};

use crate::maps::{IQD_XSKMAP, IQD_XSK_SLOTS, IQD_XSK_STATS};

/// The XSKMAP index of the switch's socket for port `ifindex`, rx queue `queue`, if it has one.
#[inline(always)]
fn socket(ifindex: u32, queue: u32) -> Option<u32> {
    if queue >= XSK_MAX_QUEUES {
        return None;
    }
    // SAFETY: plain data; a concurrent update yields another valid slot.
    let slot = unsafe { IQD_XSK_SLOTS.get(ifindex) }.copied()?;
    let index = slot.checked_mul(XSK_MAX_QUEUES)?.checked_add(queue)?;
    // A lookup finds only sockets that are bound and alive: the kernel removes a socket from
    // the map when it is closed (the switch exited or died).
    IQD_XSKMAP.get(index).map(|_| index)
}

/// Sends the frame from port `ingress` to the switch, marked for port `target`. `None` (the
/// frame as it was) when either port has no socket.
#[inline(always)]
pub fn to_switch(ctx: &XdpContext, ingress: u32, target: u32) -> Option<u32> {
    let index = socket(ingress, ctx.rx_queue_index())?;
    // The switch transmits from the destination's queue-0 socket.
    socket(target, 0)?;
    // SAFETY: the helper only moves the metadata start within the frame's headroom.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -(XSK_META_LEN as i32)) } != 0 {
        return None;
    }
    let meta = ctx.metadata();
    if meta + XSK_META_LEN as usize > ctx.data() {
        unset_meta(ctx);
        return None;
    }
    // SAFETY: the four bytes lie between data_meta and data, checked just above.
    unsafe { core::ptr::write_unaligned(meta as *mut u32, target) };
    match IQD_XSKMAP.redirect(index, 0) {
        Ok(action) if action == xdp_action::XDP_REDIRECT => Some(action),
        _ => {
            unset_meta(ctx);
            None
        }
    }
}

#[inline(always)]
fn unset_meta(ctx: &XdpContext) {
    // SAFETY: as above, giving back exactly what was taken.
    unsafe { bpf_xdp_adjust_meta(ctx.ctx, XSK_META_LEN as i32) };
}

/// Counts one frame under `xsk_stat` index `stat`.
#[inline(always)]
pub fn count(stat: u32) {
    if let Some(value) = IQD_XSK_STATS.get_ptr_mut(stat) {
        // SAFETY: this CPU's slot of a per-CPU array; XDP does not nest on a CPU.
        unsafe { *value += 1 };
    }
}
