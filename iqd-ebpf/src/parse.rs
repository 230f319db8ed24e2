//! Frame parsing: the one place that touches packet memory, always bounds-checked.
use core::mem;

use aya_ebpf::{helpers::bpf_xdp_get_buff_len, programs::XdpContext};
use iqd_common::drop_reason;

use crate::DropReason;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ether_type: [u8; 2],
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag_off: [u8; 2],
    pub ttl: u8,
    pub protocol: u8,
    pub check: [u8; 2],
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
}

/// ARP for IPv4 over Ethernet (RFC 826).
#[repr(C)]
pub struct ArpHdr {
    pub htype: [u8; 2],
    pub ptype: [u8; 2],
    pub hlen: u8,
    pub plen: u8,
    pub oper: [u8; 2],
    pub sha: [u8; 6],
    pub spa: [u8; 4],
    pub tha: [u8; 6],
    pub tpa: [u8; 4],
}

/// A pointer to a `T` at `offset` in the frame's linear part, or `malformed` if the frame is
/// shorter. Headers always sit in the linear part, also for multi-buffer frames.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, DropReason> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + mem::size_of::<T>() > end {
        return Err(drop_reason::MALFORMED);
    }
    Ok((start + offset) as *mut T)
}

/// Length of the whole frame, all fragments included.
#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> u64 {
    // SAFETY: the helper only reads the context it is given.
    unsafe { bpf_xdp_get_buff_len(ctx.ctx) }
}

#[inline(always)]
pub fn ether_type(eth: *const EthHdr) -> u16 {
    // SAFETY: `eth` came from `ptr_at`, which checked the bounds.
    u16::from_be_bytes(unsafe { (*eth).ether_type })
}

#[inline(always)]
pub fn mac_eq(a: &[u8; 6], b: &[u8; 6]) -> bool {
    // Byte by byte: the BPF target has no memcmp.
    a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] && a[5] == b[5]
}

#[inline(always)]
pub fn copy_mac(dst: &mut [u8; 6], src: &[u8; 6]) {
    dst[0] = src[0];
    dst[1] = src[1];
    dst[2] = src[2];
    dst[3] = src[3];
    dst[4] = src[4];
    dst[5] = src[5];
}
