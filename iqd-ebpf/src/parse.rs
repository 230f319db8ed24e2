//! Frame parsing: the one place that touches packet memory, always bounds-checked, and the one
//! place that knows where a frame's network header starts ([`l3`]).
use core::mem;

use iqd_common::{
    drop_reason, ipv4_mapped,
    wire::{
        ARP_LEN, ETH_HLEN, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_HLEN, IPPROTO_ICMP,
        IPPROTO_TCP, IPPROTO_UDP, IPV4_HLEN, TCP_HLEN, UDP_HLEN,
    },
    Addr,
};

use crate::{frame::Frame, DropReason};

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ether_type: [u8; 2],
}

/// Where a frame's network header is.
pub struct L3 {
    /// Its EtherType.
    pub ether_type: u16,
    /// Its offset from the start of the frame.
    pub offset: usize,
}

/// The frame's Ethernet header, and what network header follows it where. Today always right
/// after the Ethernet header; this is where VLAN tags will move it, and every later parse step
/// takes its offsets from here.
#[inline(always)]
pub fn l3<C: Frame>(ctx: &C) -> Result<(*mut EthHdr, L3), DropReason> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: `ptr_at` checked the bounds.
    let ether_type = u16::from_be_bytes(unsafe { (*eth).ether_type });
    Ok((
        eth,
        L3 {
            ether_type,
            offset: ETH_HLEN,
        },
    ))
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

/// A TCP header without options (the 20 bytes every segment has).
#[repr(C)]
pub struct TcpHdr {
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub seq: [u8; 4],
    pub ack: [u8; 4],
    pub data_offset: u8,
    pub flags: u8,
    pub window: [u8; 2],
    pub check: [u8; 2],
    pub urg_ptr: [u8; 2],
}

#[repr(C)]
pub struct UdpHdr {
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub len: [u8; 2],
    pub check: [u8; 2],
}

/// An ICMP header with the echo identifier (meaningful for echo request and reply only).
#[repr(C)]
pub struct IcmpHdr {
    pub icmp_type: u8,
    pub code: u8,
    pub check: [u8; 2],
    pub id: [u8; 2],
    pub seq: [u8; 2],
}

/// The rule value of an ICMP packet's later fragment, which has no type or code: type 255 lies
/// in no rule's range (rules name types 0-254), so only rules without a type allow it, as port 0
/// lies in no port range (ports are 1-65535) for TCP and UDP.
pub const ICMP_NO_TYPE: u16 = 0xffff;

/// What security groups and connection tracking need of an IP frame.
pub struct Flow {
    /// Source and destination address, IPv4 mapped into IPv6 (`iqd_common::Addr`).
    pub saddr: Addr,
    pub daddr: Addr,
    /// IP protocol number.
    pub proto: u8,
    /// Rule-table protocol class (`iqd_common::sg_proto`).
    pub class: u8,
    pub sport: u16,
    pub dport: u16,
    /// What rules match besides the remote: destination port (TCP, UDP) or
    /// `type << 8 | code` (ICMP); 0 for other protocols and for later TCP and UDP fragments,
    /// [`ICMP_NO_TYPE`] for later ICMP fragments.
    pub rule_value: u16,
    pub tcp_flags: u8,
    /// Length of the transport header (TCP with options, UDP, ICMP), 0 when not parsed.
    pub l4_len: u32,
    /// Whether the frame can open a tracked connection (not ICMP other than echo request).
    pub opens: bool,
    /// Whether the frame can belong to a tracked connection.
    pub tracked: bool,
}

/// Parses the transport header at `offset` (the IPv4 header length past the network header),
/// which must lie within the IPv4 packet, before `end` (its total length past the network
/// header): what follows the packet is padding, not a header. Later fragments carry no
/// transport header: they match only rules without a port range or ICMP type, and are not
/// tracked.
#[inline(always)]
pub fn flow<C: Frame>(
    ctx: &C,
    ip: &Ipv4Hdr,
    offset: usize,
    end: usize,
) -> Result<Flow, DropReason> {
    let mut flow = Flow {
        saddr: ipv4_mapped(ip.saddr),
        daddr: ipv4_mapped(ip.daddr),
        proto: ip.protocol,
        class: iqd_common::sg_proto::OTHER,
        sport: 0,
        dport: 0,
        rule_value: 0,
        tcp_flags: 0,
        l4_len: 0,
        opens: true,
        tracked: true,
    };
    let later_fragment = u16::from_be_bytes(ip.frag_off) & 0x1fff != 0;
    match ip.protocol {
        IPPROTO_TCP => flow.class = iqd_common::sg_proto::TCP,
        IPPROTO_UDP => flow.class = iqd_common::sg_proto::UDP,
        IPPROTO_ICMP => flow.class = iqd_common::sg_proto::ICMP,
        _ => return Ok(flow),
    }
    if later_fragment {
        if ip.protocol == IPPROTO_ICMP {
            flow.rule_value = ICMP_NO_TYPE;
        }
        flow.opens = false;
        flow.tracked = false;
        return Ok(flow);
    }
    match ip.protocol {
        IPPROTO_TCP => {
            let tcp: *const TcpHdr = packet_ptr_at(ctx, offset, end)?;
            // SAFETY: `ptr_at` checked the bounds.
            let tcp = unsafe { &*tcp };
            flow.sport = u16::from_be_bytes(tcp.sport);
            flow.dport = u16::from_be_bytes(tcp.dport);
            flow.rule_value = flow.dport;
            flow.tcp_flags = tcp.flags;
            flow.l4_len = ((tcp.data_offset >> 4) as u32) * 4;
        }
        IPPROTO_UDP => {
            let udp: *const UdpHdr = packet_ptr_at(ctx, offset, end)?;
            // SAFETY: `ptr_at` checked the bounds.
            let udp = unsafe { &*udp };
            flow.sport = u16::from_be_bytes(udp.sport);
            flow.dport = u16::from_be_bytes(udp.dport);
            flow.rule_value = flow.dport;
            flow.l4_len = UDP_HLEN as u32;
        }
        _ => {
            let icmp: *const IcmpHdr = packet_ptr_at(ctx, offset, end)?;
            // SAFETY: `ptr_at` checked the bounds.
            let icmp = unsafe { &*icmp };
            flow.rule_value = (icmp.icmp_type as u16) << 8 | icmp.code as u16;
            flow.l4_len = ICMP_HLEN as u32;
            match icmp.icmp_type {
                ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY => {
                    // The identifier stands for both ports, so a reply's key reverses a
                    // request's.
                    let id = u16::from_be_bytes(icmp.id);
                    flow.sport = id;
                    flow.dport = id;
                    flow.opens = icmp.icmp_type == ICMP_ECHO_REQUEST;
                }
                _ => {
                    flow.opens = false;
                    flow.tracked = false;
                }
            }
        }
    }
    Ok(flow)
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

// The headers as declared are as long as the wire says.
const _: () = assert!(mem::size_of::<EthHdr>() == ETH_HLEN);
const _: () = assert!(mem::size_of::<Ipv4Hdr>() == IPV4_HLEN);
const _: () = assert!(mem::size_of::<TcpHdr>() == TCP_HLEN);
const _: () = assert!(mem::size_of::<UdpHdr>() == UDP_HLEN);
const _: () = assert!(mem::size_of::<IcmpHdr>() == ICMP_HLEN);
const _: () = assert!(mem::size_of::<ArpHdr>() == ARP_LEN);

/// A pointer to a `T` at `offset` in the frame's linear part, or `malformed` if the frame is
/// shorter. Headers always sit in the linear part, also for multi-buffer frames.
#[inline(always)]
pub fn ptr_at<C: Frame, T>(ctx: &C, offset: usize) -> Result<*mut T, DropReason> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + mem::size_of::<T>() > end {
        return Err(drop_reason::MALFORMED);
    }
    Ok((start + offset) as *mut T)
}

/// Like [`ptr_at`], for a header that must also end at or before `end` (the end of the IPv4
/// packet within the frame).
#[inline(always)]
pub fn packet_ptr_at<C: Frame, T>(
    ctx: &C,
    offset: usize,
    end: usize,
) -> Result<*mut T, DropReason> {
    if offset + mem::size_of::<T>() > end {
        return Err(drop_reason::MALFORMED);
    }
    ptr_at(ctx, offset)
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
