//! Frame parsing: the one place that touches packet memory, always bounds-checked, and the one
//! place that knows where a frame's network header starts ([`l3`]).
use core::mem;

use iqd_common::{
    drop_reason,
    wire::{
        ARP_LEN, ETH_HLEN, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, ICMP_ECHO_REPLY,
        ICMP_ECHO_REQUEST, ICMP_HLEN, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS,
        IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_ROUTING, IPPROTO_TCP, IPPROTO_UDP, IPV4_HLEN,
        IPV6_FRAG_HLEN, IPV6_HLEN, MAX_IPV6_EXT_HEADERS, ND_MSG_LEN, ND_OPT_LL_ADDR_LEN, TCP_HLEN,
        UDP_HLEN,
    },
    Addr,
};

use crate::{frame::Frame, vlan, DropReason};

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

/// The frame's Ethernet header, and what network header follows it where: right after the
/// Ethernet header, as a frame with a VLAN tag (inline or in the packet's metadata) is refused
/// here (`vlan_tagged`, vlan.rs). Every later parse step takes its offsets from here.
#[inline(always)]
pub fn l3<C: Frame>(ctx: &C) -> Result<(*mut EthHdr, L3), DropReason> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: `ptr_at` checked the bounds.
    let ether_type = u16::from_be_bytes(unsafe { (*eth).ether_type });
    vlan::check_untagged(ctx, ether_type)?;
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

#[repr(C)]
pub struct Ipv6Hdr {
    /// Version (4 bits), traffic class (8), flow label (20).
    pub version_tc_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub next_header: u8,
    pub hop_limit: u8,
    pub saddr: Addr,
    pub daddr: Addr,
}

/// The start of a hop-by-hop, routing or destination options header: what follows it and its
/// length in 8-byte units, not counting the first 8 bytes.
#[repr(C)]
pub struct Ipv6ExtHdr {
    pub next_header: u8,
    pub len: u8,
}

#[repr(C)]
pub struct Ipv6FragHdr {
    pub next_header: u8,
    pub reserved: u8,
    /// Offset in 8-byte units (13 bits), 2 reserved bits, more-fragments flag.
    pub frag_off: [u8; 2],
    pub id: [u8; 4],
}

/// A neighbour solicitation or advertisement without options (RFC 4861).
#[repr(C)]
pub struct NdMsg {
    pub icmp_type: u8,
    pub code: u8,
    pub check: [u8; 2],
    /// Advertisements: router, solicited, override flags; then reserved.
    pub flags: u8,
    pub reserved: [u8; 3],
    pub target: Addr,
}

/// A neighbour advertisement as the fabric sends it, from the IPv6 header on: with a target
/// link-layer address option.
#[repr(C)]
pub struct NaPacket {
    pub ip: Ipv6Hdr,
    pub na: NdMsg,
    pub opt_type: u8,
    /// In 8-byte units: 1.
    pub opt_len: u8,
    pub opt_mac: [u8; 6],
}

/// Where an IPv6 packet's transport header is, past its extension headers.
pub struct Ipv6L4 {
    /// The transport protocol (the last next-header value).
    pub proto: u8,
    /// Offset of the transport header in the frame.
    pub offset: usize,
    /// A fragment header with a non-zero offset: no transport header follows.
    pub later_fragment: bool,
}

/// Walks the extension headers of an IPv6 packet whose first next-header value is `first`,
/// from `offset` (right after the fixed header) to the transport header, which must start
/// before `end` (the end of the packet). At most `MAX_IPV6_EXT_HEADERS` headers; more, or one
/// that is truncated (cut by the packet's end or not in the linear part), is `malformed`. A
/// later fragment stops the walk at its fragment header.
#[inline(always)]
pub fn ipv6_l4<C: Frame>(
    ctx: &C,
    first: u8,
    offset: usize,
    end: usize,
) -> Result<Ipv6L4, DropReason> {
    let mut proto = first;
    let mut offset = offset;
    // Bounded, and the offset grows by at most 2 KiB a step: the verifier sees both.
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match proto {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let ext: *const Ipv6ExtHdr = packet_ptr_at(ctx, offset, end)?;
                // SAFETY: `packet_ptr_at` checked the bounds.
                let ext = unsafe { &*ext };
                proto = ext.next_header;
                offset += (ext.len as usize + 1) * 8;
                if offset > end {
                    return Err(drop_reason::MALFORMED);
                }
            }
            IPPROTO_FRAGMENT => {
                let frag: *const Ipv6FragHdr = packet_ptr_at(ctx, offset, end)?;
                // SAFETY: as above.
                let frag = unsafe { &*frag };
                proto = frag.next_header;
                offset += IPV6_FRAG_HLEN;
                if u16::from_be_bytes(frag.frag_off) & 0xfff8 != 0 {
                    return Ok(Ipv6L4 {
                        proto,
                        offset,
                        later_fragment: true,
                    });
                }
            }
            _ => {
                return Ok(Ipv6L4 {
                    proto,
                    offset,
                    later_fragment: false,
                })
            }
        }
    }
    match proto {
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT => {
            Err(drop_reason::MALFORMED)
        }
        _ => Ok(Ipv6L4 {
            proto,
            offset,
            later_fragment: false,
        }),
    }
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

/// An address as the maps key it ([`Addr`]: IPv4 mapped into IPv6), held as four words: an
/// IPv4 packet's is built with four stores and copied into a key with four more. As a byte
/// array it would take a call to a byte-at-a-time `memset` and sixteen stores per copy (the
/// BPF target has neither unaligned word access nor an inline `memset` for bytes).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct FlowAddr([u32; 4]);

/// The third word of an IPv4-mapped address (`::ffff:0:0/96`).
const MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

impl FlowAddr {
    /// The IPv4-mapped form of an IPv4 address (`iqd_common::ipv4_mapped`).
    #[inline(always)]
    pub fn ipv4_mapped(octets: [u8; 4]) -> Self {
        FlowAddr([0, 0, MAPPED_WORD, u32::from_ne_bytes(octets)])
    }

    /// An IPv6 address as it is in the packet.
    #[inline(always)]
    pub fn ipv6(addr: &Addr) -> Self {
        // SAFETY: any 16 bytes are four words; the read makes no alignment assumption.
        FlowAddr(unsafe { core::ptr::read_unaligned(addr as *const Addr as *const [u32; 4]) })
    }

    /// The address's bytes, as keys hold them.
    #[inline(always)]
    pub fn bytes(&self) -> Addr {
        // SAFETY: four words are any 16 bytes, in memory order.
        unsafe { mem::transmute::<[u32; 4], Addr>(self.0) }
    }

    /// Whether an IPv6 address is IPv4-mapped: the form the maps key IPv4 addresses by. It never
    /// appears in an IPv6 packet on the wire (RFC 4291), and one that does must not pass for the
    /// IPv4 address: as a source it is `spoofed_source`, as a destination (or solicitation
    /// target) `no_destination`.
    #[inline(always)]
    pub fn is_ipv4_mapped(&self) -> bool {
        self.0[0] == 0 && self.0[1] == 0 && self.0[2] == MAPPED_WORD
    }

    /// Whether the address is unspecified (`::`, or `0.0.0.0` mapped): the source of a
    /// duplicate address probe or a DHCP request, which claims no address.
    #[inline(always)]
    pub fn is_unspecified(&self) -> bool {
        self.0[0] == 0
            && self.0[1] == 0
            && (self.0[2] == 0 || self.0[2] == MAPPED_WORD)
            && self.0[3] == 0
    }

    /// Whether an IPv4 address (mapped) is a group (224.0.0.0/4) or the limited broadcast
    /// (255.255.255.255): one-to-many without a lookup.
    #[inline(always)]
    pub fn is_ipv4_one_to_many(&self) -> bool {
        self.0[3] == u32::MAX || self.0[3].to_ne_bytes()[0] & 0xf0 == 0xe0
    }

    /// Whether an IPv6 address is multicast (`ff00::/8`).
    #[inline(always)]
    pub fn is_multicast(&self) -> bool {
        self.0[0].to_ne_bytes()[0] == 0xff
    }
}

/// What security groups and connection tracking need of an IP frame.
#[repr(C)]
pub struct Flow {
    /// Source and destination address.
    pub saddr: FlowAddr,
    pub daddr: FlowAddr,
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
    /// The transport header does not fit in the packet or the linear part: `malformed` where
    /// the policy needs it (GSO frame size, security groups), so the fabric's own checks keep
    /// their order.
    pub truncated: bool,
}

impl Flow {
    /// No flow: what a frame that is not IP carries where a flow is expected (its rules are
    /// not looked up).
    #[inline(always)]
    pub fn empty() -> Flow {
        Flow {
            saddr: FlowAddr([0; 4]),
            daddr: FlowAddr([0; 4]),
            proto: 0,
            class: 0,
            sport: 0,
            dport: 0,
            rule_value: 0,
            tcp_flags: 0,
            l4_len: 0,
            opens: false,
            tracked: false,
            truncated: false,
        }
    }

    /// The flow, or `malformed` if its transport header is truncated.
    #[inline(always)]
    pub fn parsed(&self) -> Result<&Flow, DropReason> {
        if self.truncated {
            Err(drop_reason::MALFORMED)
        } else {
            Ok(self)
        }
    }
}

/// Parses the transport header of an IPv4 packet at `offset` (the IPv4 header length past the
/// network header), which must lie within the IPv4 packet, before `end` (its total length past
/// the network header): what follows the packet is padding, not a header.
#[inline(always)]
pub fn flow<C: Frame>(ctx: &C, ip: &Ipv4Hdr, offset: usize, end: usize) -> Flow {
    let later_fragment = u16::from_be_bytes(ip.frag_off) & 0x1fff != 0;
    transport::<C, false>(
        ctx,
        FlowAddr::ipv4_mapped(ip.saddr),
        FlowAddr::ipv4_mapped(ip.daddr),
        ip.protocol,
        later_fragment,
        offset,
        end,
    )
}

/// Parses the transport header of an IPv6 packet found by [`ipv6_l4`], before `end` (the
/// end of the packet).
#[inline(always)]
pub fn flow6<C: Frame>(ctx: &C, ip: &Ipv6Hdr, l4: &Ipv6L4, end: usize) -> Flow {
    transport::<C, true>(
        ctx,
        FlowAddr::ipv6(&ip.saddr),
        FlowAddr::ipv6(&ip.daddr),
        l4.proto,
        l4.later_fragment,
        l4.offset,
        end,
    )
}

/// The flow of a packet of IP protocol `proto` between `saddr` and `daddr` whose transport
/// header is at `offset`, before `end`. `V6`: ICMP is ICMPv6 (its own rule class and echo
/// types); IPv4's ICMP is then just another protocol, and the other way round. Later fragments
/// carry no transport header: they match only rules without a port range or ICMP type, and
/// are not tracked.
#[inline(always)]
fn transport<C: Frame, const V6: bool>(
    ctx: &C,
    saddr: FlowAddr,
    daddr: FlowAddr,
    proto: u8,
    later_fragment: bool,
    offset: usize,
    end: usize,
) -> Flow {
    let (icmp_proto, icmp_class, echo_request, echo_reply) = if V6 {
        (
            IPPROTO_ICMPV6,
            iqd_common::sg_proto::ICMPV6,
            ICMPV6_ECHO_REQUEST,
            ICMPV6_ECHO_REPLY,
        )
    } else {
        (
            IPPROTO_ICMP,
            iqd_common::sg_proto::ICMP,
            ICMP_ECHO_REQUEST,
            ICMP_ECHO_REPLY,
        )
    };
    let mut flow = Flow {
        saddr,
        daddr,
        proto,
        class: iqd_common::sg_proto::OTHER,
        sport: 0,
        dport: 0,
        rule_value: 0,
        tcp_flags: 0,
        l4_len: 0,
        opens: true,
        tracked: true,
        truncated: false,
    };
    match proto {
        IPPROTO_TCP => flow.class = iqd_common::sg_proto::TCP,
        IPPROTO_UDP => flow.class = iqd_common::sg_proto::UDP,
        p if p == icmp_proto => flow.class = icmp_class,
        _ => return flow,
    }
    if later_fragment {
        if proto == icmp_proto {
            flow.rule_value = ICMP_NO_TYPE;
        }
        flow.opens = false;
        flow.tracked = false;
        return flow;
    }
    match proto {
        IPPROTO_TCP => {
            let Ok(tcp) = packet_ptr_at::<C, TcpHdr>(ctx, offset, end) else {
                flow.truncated = true;
                return flow;
            };
            // SAFETY: `ptr_at` checked the bounds.
            let tcp = unsafe { &*tcp };
            flow.sport = u16::from_be_bytes(tcp.sport);
            flow.dport = u16::from_be_bytes(tcp.dport);
            flow.rule_value = flow.dport;
            flow.tcp_flags = tcp.flags;
            flow.l4_len = ((tcp.data_offset >> 4) as u32) * 4;
        }
        IPPROTO_UDP => {
            let Ok(udp) = packet_ptr_at::<C, UdpHdr>(ctx, offset, end) else {
                flow.truncated = true;
                return flow;
            };
            // SAFETY: `ptr_at` checked the bounds.
            let udp = unsafe { &*udp };
            flow.sport = u16::from_be_bytes(udp.sport);
            flow.dport = u16::from_be_bytes(udp.dport);
            flow.rule_value = flow.dport;
            flow.l4_len = UDP_HLEN as u32;
        }
        _ => {
            let Ok(icmp) = packet_ptr_at::<C, IcmpHdr>(ctx, offset, end) else {
                flow.truncated = true;
                return flow;
            };
            // SAFETY: `ptr_at` checked the bounds.
            let icmp = unsafe { &*icmp };
            flow.rule_value = (icmp.icmp_type as u16) << 8 | icmp.code as u16;
            flow.l4_len = ICMP_HLEN as u32;
            if icmp.icmp_type == echo_request || icmp.icmp_type == echo_reply {
                // The identifier stands for both ports, so a reply's key reverses a request's.
                let id = u16::from_be_bytes(icmp.id);
                flow.sport = id;
                flow.dport = id;
                flow.opens = icmp.icmp_type == echo_request;
            } else {
                flow.opens = false;
                flow.tracked = false;
            }
        }
    }
    flow
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
const _: () = assert!(mem::size_of::<Ipv6Hdr>() == IPV6_HLEN);
const _: () = assert!(mem::size_of::<Ipv6FragHdr>() == IPV6_FRAG_HLEN);
const _: () = assert!(mem::size_of::<NdMsg>() == ND_MSG_LEN);
const _: () = assert!(mem::size_of::<NaPacket>() == IPV6_HLEN + ND_MSG_LEN + ND_OPT_LL_ADDR_LEN);

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

/// Like [`ptr_at`], for a header that must also end at or before `end` (the end of the IP
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
