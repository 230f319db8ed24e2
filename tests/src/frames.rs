//! Hand-built Ethernet frames for feeding the data plane directly (BPF_PROG_TEST_RUN): IPv4
//! and IPv6 (with extension headers) carrying TCP, UDP, ICMP/ICMPv6 echo or any payload, ARP,
//! IPv6 neighbour discovery, other ethertypes, and truncated or inconsistent variants of them.
//! Every field the port programs look at can be set; everything else gets a sensible default
//! (correct IPv4 header checksum, correct TCP, UDP, ICMP and ICMPv6 checksums).
use std::net::{Ipv4Addr, Ipv6Addr};

/// An Ethernet MAC address.
pub type Mac = [u8; 6];

pub use iqd_common::wire::{
    ARPOP_REPLY, ARPOP_REQUEST, ARP_LEN, ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP,
    ETH_P_IPV6, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, ICMP_HLEN, IPPROTO_DSTOPTS,
    IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_ROUTING, IPPROTO_TCP,
    IPPROTO_UDP, IPV4_HLEN, IPV6_HLEN, ND_NEIGHBOR_ADVERT, ND_NEIGHBOR_SOLICIT, ND_REDIRECT,
    ND_ROUTER_ADVERT, ND_ROUTER_SOLICIT, TCP_ACK, TCP_HLEN, TCP_SYN, UDP_HLEN, VLAN_HLEN,
};

pub const BROADCAST: Mac = [0xff; 6];
/// The shortest Ethernet frame without FCS: what a NIC pads short frames to.
pub const ETH_ZLEN: usize = 60;
/// IEEE 802 local experimental ethertype 1.
pub const ETH_P_LOCAL_EXP: u16 = 0x88b5;

/// An Ethernet header followed by `payload`, no FCS.
pub fn ethernet(dst: Mac, src: Mac, ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ETH_HLEN + payload.len());
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&ether_type.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// `frame` with a VLAN tag (TPID `tpid`, 802.1Q or 802.1ad; TCI `tci`: priority, DEI and VLAN
/// id) inserted after its MACs, as a sender writes it inline. Tagging twice makes a double
/// tag (the outer one last).
pub fn vlan_tagged(frame: &[u8], tpid: u16, tci: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len() + VLAN_HLEN);
    out.extend_from_slice(&frame[..2 * 6]);
    out.extend_from_slice(&tpid.to_be_bytes());
    out.extend_from_slice(&tci.to_be_bytes());
    out.extend_from_slice(&frame[2 * 6..]);
    out
}

/// The first `len` bytes of `frame`.
pub fn truncated(frame: &[u8], len: usize) -> Vec<u8> {
    assert!(len <= frame.len(), "cannot truncate to more than the frame");
    frame[..len].to_vec()
}

/// `frame` followed by zeros up to `len` bytes (unchanged if it is that long already).
pub fn padded(frame: &[u8], len: usize) -> Vec<u8> {
    let mut frame = frame.to_vec();
    if frame.len() < len {
        frame.resize(len, 0);
    }
    frame
}

/// The Internet checksum (RFC 1071) of `data`: the one's complement of the one's complement
/// sum of its 16-bit big-endian words, an odd last byte padded with zero.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut words = data.chunks_exact(2);
    for word in &mut words {
        sum += u32::from(u16::from_be_bytes([word[0], word[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether the IPv4 header of an Ethernet frame carries a valid checksum.
pub fn ipv4_header_checksum_ok(frame: &[u8]) -> bool {
    let Some(ihl) = frame.get(ETH_HLEN).map(|b| usize::from(b & 0x0f) * 4) else {
        return false;
    };
    match frame.get(ETH_HLEN..ETH_HLEN + ihl) {
        Some(header) if ihl >= IPV4_HLEN => internet_checksum(header) == 0,
        _ => false,
    }
}

/// The layer 4 part of an [`Ipv4Frame`], built when the frame is (its checksum covers the
/// IPv4 pseudo header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        src_port: u16,
        dst_port: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        data: Vec<u8>,
    },
    IcmpEcho {
        id: u16,
        seq: u16,
        data: Vec<u8>,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
        data: Vec<u8>,
    },
    /// Any ICMP message: type, code, and the four bytes after the checksum (identifier and
    /// sequence number for echo).
    Icmp {
        icmp_type: u8,
        code: u8,
        rest: [u8; 4],
        data: Vec<u8>,
    },
    /// Any bytes, with `protocol` in the IPv4 header.
    Raw {
        protocol: u8,
        data: Vec<u8>,
    },
}

impl L4 {
    fn protocol(&self) -> u8 {
        match self {
            L4::Tcp { .. } => IPPROTO_TCP,
            L4::IcmpEcho { .. } | L4::Icmp { .. } => IPPROTO_ICMP,
            L4::Udp { .. } => IPPROTO_UDP,
            L4::Raw { protocol, .. } => *protocol,
        }
    }

    fn header_len(&self) -> usize {
        match self {
            L4::Tcp { .. } => TCP_HLEN,
            L4::IcmpEcho { .. } | L4::Icmp { .. } => ICMP_HLEN,
            L4::Udp { .. } => UDP_HLEN,
            L4::Raw { .. } => 0,
        }
    }

    fn data_mut(&mut self) -> &mut Vec<u8> {
        match self {
            L4::Tcp { data, .. }
            | L4::IcmpEcho { data, .. }
            | L4::Udp { data, .. }
            | L4::Icmp { data, .. }
            | L4::Raw { data, .. } => data,
        }
    }

    /// The IPv6 next-header value: as IPv4's protocol, but ICMP is ICMPv6.
    fn protocol6(&self) -> u8 {
        match self {
            L4::IcmpEcho { .. } | L4::Icmp { .. } => IPPROTO_ICMPV6,
            other => other.protocol(),
        }
    }

    /// The layer 4 bytes under IPv6 from `src` to `dst`: checksums over the IPv6 pseudo
    /// header (RFC 8200), ICMP as ICMPv6 (an echo is an ICMPv6 echo request, type 128).
    fn build6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
        let mut seg = self.build(Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED);
        let check_at = match self {
            L4::Tcp { .. } => 16,
            L4::Udp { .. } => 6,
            L4::IcmpEcho { .. } => {
                seg[0] = ICMPV6_ECHO_REQUEST;
                2
            }
            L4::Icmp { .. } => 2,
            L4::Raw { .. } => return seg,
        };
        seg[check_at..check_at + 2].copy_from_slice(&[0, 0]);
        let check = match ipv6_checksum(src, dst, self.protocol6(), &seg) {
            0 if matches!(self, L4::Udp { .. }) => 0xffff,
            c => c,
        };
        seg[check_at..check_at + 2].copy_from_slice(&check.to_be_bytes());
        seg
    }

    fn build(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        match self {
            L4::Tcp {
                src_port,
                dst_port,
                seq,
                ack,
                flags,
                data,
            } => {
                let mut seg = Vec::with_capacity(TCP_HLEN + data.len());
                seg.extend_from_slice(&src_port.to_be_bytes());
                seg.extend_from_slice(&dst_port.to_be_bytes());
                seg.extend_from_slice(&seq.to_be_bytes());
                seg.extend_from_slice(&ack.to_be_bytes());
                seg.push(((TCP_HLEN / 4) as u8) << 4);
                seg.push(*flags);
                seg.extend_from_slice(&64240u16.to_be_bytes()); // window
                seg.extend_from_slice(&[0, 0]); // checksum, below
                seg.extend_from_slice(&[0, 0]); // urgent pointer
                seg.extend_from_slice(data);
                let mut pseudo = Vec::with_capacity(12 + seg.len());
                pseudo.extend_from_slice(&src.octets());
                pseudo.extend_from_slice(&dst.octets());
                pseudo.extend_from_slice(&[0, IPPROTO_TCP]);
                pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
                pseudo.extend_from_slice(&seg);
                let check = internet_checksum(&pseudo);
                seg[16..18].copy_from_slice(&check.to_be_bytes());
                seg
            }
            L4::IcmpEcho { id, seq, data } => {
                let mut msg = Vec::with_capacity(ICMP_HLEN + data.len());
                msg.extend_from_slice(&[8, 0, 0, 0]); // echo request, code 0, checksum
                msg.extend_from_slice(&id.to_be_bytes());
                msg.extend_from_slice(&seq.to_be_bytes());
                msg.extend_from_slice(data);
                let check = internet_checksum(&msg);
                msg[2..4].copy_from_slice(&check.to_be_bytes());
                msg
            }
            L4::Udp {
                src_port,
                dst_port,
                data,
            } => {
                let len = UDP_HLEN + data.len();
                let mut seg = Vec::with_capacity(len);
                seg.extend_from_slice(&src_port.to_be_bytes());
                seg.extend_from_slice(&dst_port.to_be_bytes());
                seg.extend_from_slice(&(len as u16).to_be_bytes());
                seg.extend_from_slice(&[0, 0]); // checksum, below
                seg.extend_from_slice(data);
                let mut pseudo = Vec::with_capacity(12 + len);
                pseudo.extend_from_slice(&src.octets());
                pseudo.extend_from_slice(&dst.octets());
                pseudo.extend_from_slice(&[0, IPPROTO_UDP]);
                pseudo.extend_from_slice(&(len as u16).to_be_bytes());
                pseudo.extend_from_slice(&seg);
                // 0 means "no checksum" in UDP: a computed 0 is sent as 0xffff.
                let check = match internet_checksum(&pseudo) {
                    0 => 0xffff,
                    c => c,
                };
                seg[6..8].copy_from_slice(&check.to_be_bytes());
                seg
            }
            L4::Icmp {
                icmp_type,
                code,
                rest,
                data,
            } => {
                let mut msg = Vec::with_capacity(ICMP_HLEN + data.len());
                msg.extend_from_slice(&[*icmp_type, *code, 0, 0]);
                msg.extend_from_slice(rest);
                msg.extend_from_slice(data);
                let check = internet_checksum(&msg);
                msg[2..4].copy_from_slice(&check.to_be_bytes());
                msg
            }
            L4::Raw { data, .. } => data.clone(),
        }
    }
}

/// An IPv4 packet in an Ethernet frame. The defaults make a well-formed frame; the public
/// fields (and the `with_*` methods) break it on purpose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4Frame {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    pub ether_type: u16,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    /// The version nibble (4).
    pub version: u8,
    /// Header length in 32-bit words: 5, or more with (zero-filled) options.
    pub ihl: u8,
    pub ttl: u8,
    pub id: u16,
    /// Flags and fragment offset: don't fragment (0x4000) unless changed.
    pub frag_off: u16,
    pub l4: L4,
    /// The total length field; `None` is the true length of header and payload.
    pub total_len: Option<u16>,
    /// The header checksum; `None` is the correct one.
    pub checksum: Option<u16>,
    /// Zero padding after the IPv4 packet, up to this many bytes of frame.
    pub pad_to: Option<usize>,
}

impl Ipv4Frame {
    /// A well-formed frame carrying `l4`.
    pub fn new(src_mac: Mac, dst_mac: Mac, src_ip: Ipv4Addr, dst_ip: Ipv4Addr, l4: L4) -> Self {
        Self {
            dst_mac,
            src_mac,
            ether_type: ETH_P_IP,
            src_ip,
            dst_ip,
            version: 4,
            ihl: 5,
            ttl: 64,
            id: 0x1234,
            frag_off: 0x4000,
            l4,
            total_len: None,
            checksum: None,
            pad_to: None,
        }
    }

    /// A TCP SYN from port 40000 to port 5201, no data.
    pub fn tcp(src_mac: Mac, dst_mac: Mac, src_ip: Ipv4Addr, dst_ip: Ipv4Addr) -> Self {
        let l4 = L4::Tcp {
            src_port: 40000,
            dst_port: 5201,
            seq: 0x0102_0304,
            ack: 0,
            flags: TCP_SYN,
            data: Vec::new(),
        };
        Self::new(src_mac, dst_mac, src_ip, dst_ip, l4)
    }

    /// An ICMP echo request (id 0x4242, sequence 1) carrying `data`.
    pub fn icmp_echo(
        src_mac: Mac,
        dst_mac: Mac,
        src_ip: Ipv4Addr,
        dst_ip: Ipv4Addr,
        data: &[u8],
    ) -> Self {
        let l4 = L4::IcmpEcho {
            id: 0x4242,
            seq: 1,
            data: data.to_vec(),
        };
        Self::new(src_mac, dst_mac, src_ip, dst_ip, l4)
    }

    /// Any payload under IPv4 protocol `protocol`.
    pub fn raw(
        src_mac: Mac,
        dst_mac: Mac,
        src_ip: Ipv4Addr,
        dst_ip: Ipv4Addr,
        protocol: u8,
        data: &[u8],
    ) -> Self {
        let l4 = L4::Raw {
            protocol,
            data: data.to_vec(),
        };
        Self::new(src_mac, dst_mac, src_ip, dst_ip, l4)
    }

    /// Grows or shrinks the layer 4 data so that the frame is exactly `len` bytes, with an IPv4
    /// total length that matches (no Ethernet padding).
    pub fn with_frame_len(mut self, len: usize) -> Self {
        let headers = ETH_HLEN + self.header_len() + self.l4.header_len();
        assert!(len >= headers, "a {len}-byte frame cannot hold the headers");
        let data = self.l4.data_mut();
        // A recognisable pattern rather than zeros.
        *data = (0..len - headers).map(|i| (i % 251) as u8).collect();
        self.pad_to = None;
        self
    }

    /// Pads the frame with zeros to `len` bytes after the IPv4 packet (the total length field
    /// keeps the packet's own length).
    pub fn with_padding_to(mut self, len: usize) -> Self {
        self.pad_to = Some(len);
        self
    }

    pub fn with_ihl(mut self, ihl: u8) -> Self {
        self.ihl = ihl;
        self
    }

    pub fn with_version(mut self, version: u8) -> Self {
        self.version = version;
        self
    }

    pub fn with_total_len(mut self, total_len: u16) -> Self {
        self.total_len = Some(total_len);
        self
    }

    /// Sets flags and fragment offset (`0x2000` more fragments, low 13 bits the offset in
    /// 8-byte units).
    pub fn with_frag_off(mut self, frag_off: u16) -> Self {
        self.frag_off = frag_off;
        self
    }

    pub fn with_ether_type(mut self, ether_type: u16) -> Self {
        self.ether_type = ether_type;
        self
    }

    /// Length of the IPv4 header this frame gets: `ihl` words, but at least the 20 fixed
    /// bytes (a too-small `ihl` is written as is, the fixed header is still all there).
    pub fn header_len(&self) -> usize {
        (usize::from(self.ihl) * 4).max(IPV4_HLEN)
    }

    /// The IPv4 header, with its checksum.
    pub fn ipv4_header(&self, payload_len: usize) -> Vec<u8> {
        let header_len = self.header_len();
        let total_len = self
            .total_len
            .unwrap_or_else(|| u16::try_from(header_len + payload_len).expect("packet too big"));
        let mut header = Vec::with_capacity(header_len);
        header.push((self.version << 4) | (self.ihl & 0x0f));
        header.push(0); // DSCP/ECN
        header.extend_from_slice(&total_len.to_be_bytes());
        header.extend_from_slice(&self.id.to_be_bytes());
        header.extend_from_slice(&self.frag_off.to_be_bytes());
        header.push(self.ttl);
        header.push(self.l4.protocol());
        header.extend_from_slice(&[0, 0]); // checksum, below
        header.extend_from_slice(&self.src_ip.octets());
        header.extend_from_slice(&self.dst_ip.octets());
        header.resize(header_len, 0); // options: end of list
        let check = self.checksum.unwrap_or_else(|| internet_checksum(&header));
        header[10..12].copy_from_slice(&check.to_be_bytes());
        header
    }

    pub fn build(&self) -> Vec<u8> {
        let payload = self.l4.build(self.src_ip, self.dst_ip);
        let mut packet = self.ipv4_header(payload.len());
        packet.extend_from_slice(&payload);
        let frame = ethernet(self.dst_mac, self.src_mac, self.ether_type, &packet);
        match self.pad_to {
            Some(len) => padded(&frame, len),
            None => frame,
        }
    }
}

/// An ARP packet for IPv4 over Ethernet (RFC 826) in an Ethernet frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArpFrame {
    pub eth_dst: Mac,
    pub eth_src: Mac,
    pub htype: u16,
    pub ptype: u16,
    pub hlen: u8,
    pub plen: u8,
    pub oper: u16,
    pub sha: Mac,
    pub spa: Ipv4Addr,
    pub tha: Mac,
    pub tpa: Ipv4Addr,
    /// Zero padding up to this many bytes of frame (Linux sends 42-byte ARP frames on veth;
    /// a physical NIC pads them to 60).
    pub pad_to: Option<usize>,
}

impl ArpFrame {
    /// "Who has `target_ip`? Tell `sender_ip`", broadcast, as Linux sends it.
    pub fn request(sender_mac: Mac, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Self {
        Self {
            eth_dst: BROADCAST,
            eth_src: sender_mac,
            htype: 1,
            ptype: ETH_P_IP,
            hlen: 6,
            plen: 4,
            oper: ARPOP_REQUEST,
            sha: sender_mac,
            spa: sender_ip,
            tha: [0; 6],
            tpa: target_ip,
            pad_to: None,
        }
    }

    /// "`sender_ip` is at `sender_mac`", unicast to the asker.
    pub fn reply(
        sender_mac: Mac,
        sender_ip: Ipv4Addr,
        target_mac: Mac,
        target_ip: Ipv4Addr,
    ) -> Self {
        Self {
            eth_dst: target_mac,
            eth_src: sender_mac,
            htype: 1,
            ptype: ETH_P_IP,
            hlen: 6,
            plen: 4,
            oper: ARPOP_REPLY,
            sha: sender_mac,
            spa: sender_ip,
            tha: target_mac,
            tpa: target_ip,
            pad_to: None,
        }
    }

    pub fn with_padding_to(mut self, len: usize) -> Self {
        self.pad_to = Some(len);
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let mut arp = Vec::with_capacity(ARP_LEN);
        arp.extend_from_slice(&self.htype.to_be_bytes());
        arp.extend_from_slice(&self.ptype.to_be_bytes());
        arp.push(self.hlen);
        arp.push(self.plen);
        arp.extend_from_slice(&self.oper.to_be_bytes());
        arp.extend_from_slice(&self.sha);
        arp.extend_from_slice(&self.spa.octets());
        arp.extend_from_slice(&self.tha);
        arp.extend_from_slice(&self.tpa.octets());
        let frame = ethernet(self.eth_dst, self.eth_src, ETH_P_ARP, &arp);
        match self.pad_to {
            Some(len) => padded(&frame, len),
            None => frame,
        }
    }
}

/// The upper-layer checksum of `data` (its checksum field zero) under IPv6 from `src` to `dst`
/// with next header `next_header`: over the pseudo header of RFC 8200 section 8.1.
pub fn ipv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, data: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40 + data.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(data.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, next_header]);
    pseudo.extend_from_slice(data);
    internet_checksum(&pseudo)
}

/// An IPv6 extension header of an [`Ipv6Frame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtHeader {
    /// Hop-by-hop options, `len` 8-byte units after the first 8 bytes (Pad1 options).
    HopByHop { len: u8 },
    /// A routing header (type 0, no segments left), `len` as above.
    Routing { len: u8 },
    /// Destination options, `len` as above.
    DestOpts { len: u8 },
    /// A fragment header: `offset` in 8-byte units, more fragments or not.
    Fragment { offset: u16, more: bool },
}

impl ExtHeader {
    /// Its next-header value (what announces it).
    pub fn number(&self) -> u8 {
        match self {
            ExtHeader::HopByHop { .. } => IPPROTO_HOPOPTS,
            ExtHeader::Routing { .. } => IPPROTO_ROUTING,
            ExtHeader::DestOpts { .. } => IPPROTO_DSTOPTS,
            ExtHeader::Fragment { .. } => IPPROTO_FRAGMENT,
        }
    }

    fn build(&self, next_header: u8) -> Vec<u8> {
        match *self {
            ExtHeader::HopByHop { len }
            | ExtHeader::Routing { len }
            | ExtHeader::DestOpts { len } => {
                let mut header = vec![0u8; (usize::from(len) + 1) * 8];
                header[0] = next_header;
                header[1] = len;
                header
            }
            ExtHeader::Fragment { offset, more } => {
                let mut header = vec![next_header, 0];
                header.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
                header.extend_from_slice(&0x0bad_cafe_u32.to_be_bytes());
                header
            }
        }
    }
}

/// An IPv6 packet in an Ethernet frame. The defaults make a well-formed frame; the public
/// fields (and the `with_*` methods) break it on purpose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv6Frame {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    pub src_ip: Ipv6Addr,
    pub dst_ip: Ipv6Addr,
    /// The version nibble (6).
    pub version: u8,
    pub hop_limit: u8,
    /// Extension headers, in order, before the layer 4 part.
    pub ext: Vec<ExtHeader>,
    pub l4: L4,
    /// The payload length field; `None` is the true length of extension headers and layer 4.
    pub payload_len: Option<u16>,
    /// Zero padding after the IPv6 packet, up to this many bytes of frame.
    pub pad_to: Option<usize>,
}

impl Ipv6Frame {
    /// A well-formed frame carrying `l4`.
    pub fn new(src_mac: Mac, dst_mac: Mac, src_ip: Ipv6Addr, dst_ip: Ipv6Addr, l4: L4) -> Self {
        Self {
            dst_mac,
            src_mac,
            src_ip,
            dst_ip,
            version: 6,
            hop_limit: 64,
            ext: Vec::new(),
            l4,
            payload_len: None,
            pad_to: None,
        }
    }

    /// A TCP SYN from port 40000 to port 5201, no data.
    pub fn tcp(src_mac: Mac, dst_mac: Mac, src_ip: Ipv6Addr, dst_ip: Ipv6Addr) -> Self {
        let l4 = L4::Tcp {
            src_port: 40000,
            dst_port: 5201,
            seq: 0x0102_0304,
            ack: 0,
            flags: TCP_SYN,
            data: Vec::new(),
        };
        Self::new(src_mac, dst_mac, src_ip, dst_ip, l4)
    }

    /// An ICMPv6 echo request (id 0x4242, sequence 1) carrying `data`.
    pub fn echo_request(
        src_mac: Mac,
        dst_mac: Mac,
        src_ip: Ipv6Addr,
        dst_ip: Ipv6Addr,
        data: &[u8],
    ) -> Self {
        let l4 = L4::IcmpEcho {
            id: 0x4242,
            seq: 1,
            data: data.to_vec(),
        };
        Self::new(src_mac, dst_mac, src_ip, dst_ip, l4)
    }

    /// An ICMPv6 echo reply (id 0x4242, sequence 1) carrying `data`.
    pub fn echo_reply(
        src_mac: Mac,
        dst_mac: Mac,
        src_ip: Ipv6Addr,
        dst_ip: Ipv6Addr,
        data: &[u8],
    ) -> Self {
        Self::icmpv6(
            src_mac,
            dst_mac,
            src_ip,
            dst_ip,
            ICMPV6_ECHO_REPLY,
            [0x42, 0x42, 0, 1],
            data,
        )
    }

    /// Any ICMPv6 message: type, the four bytes after the checksum, and `data` (code 0).
    pub fn icmpv6(
        src_mac: Mac,
        dst_mac: Mac,
        src_ip: Ipv6Addr,
        dst_ip: Ipv6Addr,
        icmp_type: u8,
        rest: [u8; 4],
        data: &[u8],
    ) -> Self {
        let l4 = L4::Icmp {
            icmp_type,
            code: 0,
            rest,
            data: data.to_vec(),
        };
        Self::new(src_mac, dst_mac, src_ip, dst_ip, l4)
    }

    /// Any payload under next header `next_header`.
    pub fn raw(
        src_mac: Mac,
        dst_mac: Mac,
        src_ip: Ipv6Addr,
        dst_ip: Ipv6Addr,
        next_header: u8,
        data: &[u8],
    ) -> Self {
        let l4 = L4::Raw {
            protocol: next_header,
            data: data.to_vec(),
        };
        Self::new(src_mac, dst_mac, src_ip, dst_ip, l4)
    }

    /// A neighbour solicitation from `src_ip` (`::` for duplicate address detection) for
    /// `target`, to its solicited-node group, with a source link-layer address option (the
    /// sender's MAC) unless `src_ip` is unspecified. Hop limit 255.
    pub fn neighbor_solicitation(src_mac: Mac, src_ip: Ipv6Addr, target: Ipv6Addr) -> Self {
        let group = solicited_node(target);
        let mut data = target.octets().to_vec();
        if !src_ip.is_unspecified() {
            data.extend_from_slice(&[1, 1]);
            data.extend_from_slice(&src_mac);
        }
        Self::icmpv6(
            src_mac,
            multicast_mac(group),
            src_ip,
            group,
            ND_NEIGHBOR_SOLICIT,
            [0; 4],
            &data,
        )
        .with_hop_limit(255)
    }

    /// The neighbour advertisement the fabric answers a solicitation with: from `target`
    /// (NIC `target_mac`) to `dst_ip` (the solicitation's source, or all-nodes `ff02::1` for
    /// `::`, then without the solicited flag), override flag, target link-layer address
    /// option. Hop limit 255.
    pub fn neighbor_advertisement(
        target_mac: Mac,
        target: Ipv6Addr,
        dst_mac: Mac,
        dst_ip: Ipv6Addr,
    ) -> Self {
        let (dst_ip, dst_mac, flags) = if dst_ip.is_unspecified() {
            (ALL_NODES, multicast_mac(ALL_NODES), 0x20)
        } else {
            (dst_ip, dst_mac, 0x60)
        };
        let mut data = target.octets().to_vec();
        data.extend_from_slice(&[2, 1]);
        data.extend_from_slice(&target_mac);
        Self::icmpv6(
            target_mac,
            dst_mac,
            target,
            dst_ip,
            ND_NEIGHBOR_ADVERT,
            [flags, 0, 0, 0],
            &data,
        )
        .with_hop_limit(255)
    }

    pub fn with_ext(mut self, header: ExtHeader) -> Self {
        self.ext.push(header);
        self
    }

    pub fn with_version(mut self, version: u8) -> Self {
        self.version = version;
        self
    }

    pub fn with_hop_limit(mut self, hop_limit: u8) -> Self {
        self.hop_limit = hop_limit;
        self
    }

    pub fn with_payload_len(mut self, payload_len: u16) -> Self {
        self.payload_len = Some(payload_len);
        self
    }

    /// Pads the frame with zeros to `len` bytes after the IPv6 packet.
    pub fn with_padding_to(mut self, len: usize) -> Self {
        self.pad_to = Some(len);
        self
    }

    /// Grows or shrinks the layer 4 data so that the frame is exactly `len` bytes, with a
    /// payload length that matches.
    pub fn with_frame_len(mut self, len: usize) -> Self {
        let ext: usize = self.ext.iter().map(|h| h.build(0).len()).sum();
        let headers = ETH_HLEN + IPV6_HLEN + ext + self.l4.header_len();
        assert!(len >= headers, "a {len}-byte frame cannot hold the headers");
        *self.l4.data_mut() = (0..len - headers).map(|i| (i % 251) as u8).collect();
        self.pad_to = None;
        self
    }

    /// The IPv6 packet: header, extension headers, layer 4.
    pub fn packet(&self) -> Vec<u8> {
        let l4 = self.l4.build6(self.src_ip, self.dst_ip);
        let mut ext = Vec::new();
        for (i, header) in self.ext.iter().enumerate() {
            let next = self
                .ext
                .get(i + 1)
                .map_or(self.l4.protocol6(), ExtHeader::number);
            ext.extend_from_slice(&header.build(next));
        }
        let first = self
            .ext
            .first()
            .map_or(self.l4.protocol6(), ExtHeader::number);
        let payload_len = self
            .payload_len
            .unwrap_or_else(|| u16::try_from(ext.len() + l4.len()).expect("packet too big"));
        let mut packet = Vec::with_capacity(IPV6_HLEN + ext.len() + l4.len());
        packet.extend_from_slice(&[self.version << 4, 0, 0, 0]);
        packet.extend_from_slice(&payload_len.to_be_bytes());
        packet.push(first);
        packet.push(self.hop_limit);
        packet.extend_from_slice(&self.src_ip.octets());
        packet.extend_from_slice(&self.dst_ip.octets());
        packet.extend_from_slice(&ext);
        packet.extend_from_slice(&l4);
        packet
    }

    pub fn build(&self) -> Vec<u8> {
        let frame = ethernet(self.dst_mac, self.src_mac, ETH_P_IPV6, &self.packet());
        match self.pad_to {
            Some(len) => padded(&frame, len),
            None => frame,
        }
    }
}

/// The all-nodes multicast group.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The solicited-node multicast group of `addr` (RFC 4291): ff02::1:ffXX:XXXX.
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

/// The Ethernet address of IPv6 multicast group `group` (RFC 2464): 33:33 and its last 32 bits.
pub fn multicast_mac(group: Ipv6Addr) -> Mac {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// The link-local address (fe80::/64) a Linux interface with `mac` gets: modified EUI-64.
pub fn link_local(mac: Mac) -> Ipv6Addr {
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ])
}

/// An IPv6 packet with no next header (59) and `payload`, from link-local `fe80::1` to the
/// all-nodes group.
pub fn ipv6(src_mac: Mac, dst_mac: Mac, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(40 + payload.len());
    packet.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, traffic class, flow label
    packet.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    packet.push(59); // no next header
    packet.push(255); // hop limit
    let mut src = [0u8; 16];
    src[..2].copy_from_slice(&[0xfe, 0x80]);
    src[15] = 1;
    let mut dst = [0u8; 16];
    dst[..2].copy_from_slice(&[0xff, 0x02]);
    dst[15] = 1;
    packet.extend_from_slice(&src);
    packet.extend_from_slice(&dst);
    packet.extend_from_slice(payload);
    ethernet(dst_mac, src_mac, ETH_P_IPV6, &packet)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = [0x02, 0, 0, 0, 0, 0x0a];
    const B: Mac = [0x02, 0, 0, 0, 0, 0x0b];
    const IP_A: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
    const IP_B: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);

    #[test]
    fn checksum_of_a_known_header() {
        // The classic example: 192.168.0.1 -> 192.168.0.199, UDP, total length 0x73.
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(&header), 0xb861);
        assert_eq!(internet_checksum(&[0xff]), !0xff00);
    }

    #[test]
    fn tcp_frame_layout() {
        let frame = Ipv4Frame::tcp(A, B, IP_A, IP_B).build();
        assert_eq!(frame.len(), ETH_HLEN + IPV4_HLEN + TCP_HLEN);
        assert_eq!(&frame[..6], &B);
        assert_eq!(&frame[6..12], &A);
        assert_eq!(&frame[12..14], &[0x08, 0x00]);
        assert_eq!(frame[14], 0x45);
        assert_eq!(&frame[16..18], &40u16.to_be_bytes());
        assert_eq!(frame[23], IPPROTO_TCP);
        assert_eq!(&frame[26..30], &IP_A.octets());
        assert_eq!(&frame[30..34], &IP_B.octets());
        assert!(ipv4_header_checksum_ok(&frame));
        // The TCP checksum over pseudo header and segment sums to zero.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&frame[26..34]);
        pseudo.extend_from_slice(&[0, IPPROTO_TCP, 0, TCP_HLEN as u8]);
        pseudo.extend_from_slice(&frame[34..]);
        assert_eq!(internet_checksum(&pseudo), 0);
    }

    #[test]
    fn icmp_frame_checksums() {
        let frame = Ipv4Frame::icmp_echo(A, B, IP_A, IP_B, b"ping").build();
        assert_eq!(frame.len(), ETH_HLEN + IPV4_HLEN + ICMP_HLEN + 4);
        assert_eq!(frame[23], IPPROTO_ICMP);
        assert!(ipv4_header_checksum_ok(&frame));
        assert_eq!(internet_checksum(&frame[34..]), 0);
        assert_eq!(frame[34], 8);
    }

    #[test]
    fn sizes_and_padding() {
        let frame = Ipv4Frame::tcp(A, B, IP_A, IP_B)
            .with_frame_len(1600)
            .build();
        assert_eq!(frame.len(), 1600);
        assert_eq!(&frame[16..18], &1586u16.to_be_bytes());
        assert!(ipv4_header_checksum_ok(&frame));

        let frame = Ipv4Frame::tcp(A, B, IP_A, IP_B)
            .with_padding_to(ETH_ZLEN)
            .build();
        assert_eq!(frame.len(), ETH_ZLEN);
        assert_eq!(&frame[16..18], &40u16.to_be_bytes());
        assert!(frame[54..].iter().all(|b| *b == 0));

        let frame = Ipv4Frame::tcp(A, B, IP_A, IP_B).with_ihl(6).build();
        assert_eq!(frame.len(), ETH_HLEN + 24 + TCP_HLEN);
        assert_eq!(frame[14], 0x46);
        assert!(ipv4_header_checksum_ok(&frame));

        let frame = Ipv4Frame::tcp(A, B, IP_A, IP_B).with_ihl(4).build();
        assert_eq!(frame[14], 0x44);
        assert_eq!(frame.len(), ETH_HLEN + IPV4_HLEN + TCP_HLEN);
    }

    #[test]
    fn udp_and_icmp_checksums() {
        let udp = L4::Udp {
            src_port: 53,
            dst_port: 4000,
            data: b"odd".to_vec(),
        };
        let frame = Ipv4Frame::new(A, B, IP_A, IP_B, udp).build();
        assert_eq!(frame.len(), ETH_HLEN + IPV4_HLEN + UDP_HLEN + 3);
        assert_eq!(frame[23], IPPROTO_UDP);
        assert_eq!(&frame[38..40], &11u16.to_be_bytes());
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&frame[26..34]);
        pseudo.extend_from_slice(&[0, IPPROTO_UDP, 0, 11]);
        pseudo.extend_from_slice(&frame[34..]);
        assert_eq!(internet_checksum(&pseudo), 0);

        let icmp = L4::Icmp {
            icmp_type: 3,
            code: 1,
            rest: [0; 4],
            data: vec![0x45; 28],
        };
        let frame = Ipv4Frame::new(A, B, IP_A, IP_B, icmp)
            .with_frag_off(0x2000)
            .build();
        assert_eq!((frame[34], frame[35]), (3, 1));
        assert_eq!(internet_checksum(&frame[34..]), 0);
        assert_eq!(&frame[20..22], &[0x20, 0x00]);
        assert!(ipv4_header_checksum_ok(&frame));
    }

    #[test]
    fn arp_layout() {
        let frame = ArpFrame::request(A, IP_A, IP_B).build();
        assert_eq!(frame.len(), ETH_HLEN + ARP_LEN);
        assert_eq!(&frame[..6], &BROADCAST);
        assert_eq!(&frame[12..14], &[0x08, 0x06]);
        assert_eq!(&frame[14..22], &[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]);
        assert_eq!(&frame[22..28], &A);
        assert_eq!(&frame[28..32], &IP_A.octets());
        assert_eq!(&frame[32..38], &[0; 6]);
        assert_eq!(&frame[38..42], &IP_B.octets());
        let reply = ArpFrame::reply(B, IP_B, A, IP_A).with_padding_to(ETH_ZLEN);
        let frame = reply.build();
        assert_eq!(frame.len(), ETH_ZLEN);
        assert_eq!(&frame[20..22], &[0x00, 0x02]);
        assert_eq!(&frame[..6], &A);
    }

    const V6_A: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xf0, 0, 0, 0, 0, 0, 0xa);
    const V6_B: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xf0, 0, 0, 0, 0, 0, 0xb);

    #[test]
    fn ipv6_frames_with_extension_headers() {
        let frame = Ipv6Frame::tcp(A, B, V6_A, V6_B).build();
        assert_eq!(frame.len(), ETH_HLEN + IPV6_HLEN + TCP_HLEN);
        assert_eq!(&frame[12..14], &[0x86, 0xdd]);
        assert_eq!(frame[14], 0x60);
        assert_eq!(&frame[18..20], &(TCP_HLEN as u16).to_be_bytes());
        assert_eq!(frame[20], IPPROTO_TCP);
        assert_eq!(&frame[22..38], &V6_A.octets());
        assert_eq!(&frame[38..54], &V6_B.octets());
        let check = ipv6_checksum(V6_A, V6_B, IPPROTO_TCP, &frame[54..]);
        assert_eq!(check, 0, "a correct checksum sums to zero");

        let frame = Ipv6Frame::echo_request(A, B, V6_A, V6_B, b"ping")
            .with_ext(ExtHeader::HopByHop { len: 0 })
            .with_ext(ExtHeader::DestOpts { len: 1 })
            .with_ext(ExtHeader::Fragment {
                offset: 0,
                more: true,
            })
            .build();
        assert_eq!(frame[20], IPPROTO_HOPOPTS);
        assert_eq!(frame[54], IPPROTO_DSTOPTS);
        assert_eq!((frame[62], frame[63]), (IPPROTO_FRAGMENT, 1));
        assert_eq!(frame[78], IPPROTO_ICMPV6);
        assert_eq!(&frame[80..82], &[0x00, 0x01], "offset 0, more fragments");
        assert_eq!(frame[86], ICMPV6_ECHO_REQUEST);
        assert_eq!(ipv6_checksum(V6_A, V6_B, IPPROTO_ICMPV6, &frame[86..]), 0);
        assert_eq!(
            usize::from(u16::from_be_bytes([frame[18], frame[19]])),
            frame.len() - ETH_HLEN - IPV6_HLEN
        );

        let frame = Ipv6Frame::tcp(A, B, V6_A, V6_B)
            .with_frame_len(1514)
            .build();
        assert_eq!(frame.len(), 1514);
        assert_eq!(&frame[18..20], &1460u16.to_be_bytes());
    }

    #[test]
    fn neighbour_discovery_frames() {
        let ns = Ipv6Frame::neighbor_solicitation(A, V6_A, V6_B).build();
        assert_eq!(&ns[..6], &[0x33, 0x33, 0xff, 0, 0, 0x0b]);
        assert_eq!(&ns[38..54], &solicited_node(V6_B).octets());
        assert_eq!(ns[21], 255, "hop limit");
        assert_eq!(ns[54], ND_NEIGHBOR_SOLICIT);
        assert_eq!(&ns[62..78], &V6_B.octets());
        assert_eq!(&ns[78..86], &[1, 1, A[0], A[1], A[2], A[3], A[4], A[5]]);
        assert_eq!(ns.len(), ETH_HLEN + IPV6_HLEN + 32);
        let dad = Ipv6Frame::neighbor_solicitation(A, Ipv6Addr::UNSPECIFIED, V6_B).build();
        assert_eq!(dad.len(), ETH_HLEN + IPV6_HLEN + 24, "no option from ::");

        let na = Ipv6Frame::neighbor_advertisement(B, V6_B, A, V6_A).build();
        assert_eq!(na.len(), ETH_HLEN + IPV6_HLEN + 32);
        assert_eq!((&na[..6], &na[6..12]), (&A[..], &B[..]));
        assert_eq!((na[54], na[58]), (ND_NEIGHBOR_ADVERT, 0x60));
        assert_eq!(&na[86 - 8..86], &[2, 1, B[0], B[1], B[2], B[3], B[4], B[5]]);
        assert_eq!(ipv6_checksum(V6_B, V6_A, IPPROTO_ICMPV6, &na[54..]), 0);
        assert_eq!(
            link_local([0x02, 0x49, 0x51, 0x44, 0x00, 0x0a]),
            "fe80::49:51ff:fe44:a".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn other_frames() {
        let frame = ipv6(A, B, &[1, 2, 3]);
        assert_eq!(frame.len(), ETH_HLEN + 40 + 3);
        assert_eq!(&frame[12..14], &[0x86, 0xdd]);
        assert_eq!(frame[14] >> 4, 6);
        assert_eq!(truncated(&frame, 13).len(), 13);
        let frame = ethernet(B, A, ETH_P_LOCAL_EXP, b"hello");
        assert_eq!(&frame[12..], &[0x88, 0xb5, b'h', b'e', b'l', b'l', b'o']);
    }
}
