//! Types shared by iqd's eBPF programs (`iqd-ebpf`) and its loader (`iqd-userspace`).
//!
//! Every map the data plane uses is named here with its key and value types, so that the kernel
//! and user sides cannot drift apart. All values are `#[repr(C)]` plain data; with the `user`
//! feature they implement `aya::Pod` so the loader can read and write them.
#![no_std]

/// Names of the maps, as the kernel and the pin directory know them.
pub mod map_names {
    /// [`crate::PortInfo`] per fabric-side port, keyed by the port's ifindex.
    pub const PORTS: &str = "IQD_PORTS";
    /// [`crate::RouteTarget`] per registered address, keyed by [`crate::RouteKey`].
    pub const ROUTES: &str = "IQD_ROUTES";
    /// Number of segments (CHPID and VLAN) in which an address is registered, keyed by the
    /// address ([`crate::Addr`]).
    pub const ADDRESSES: &str = "IQD_ADDRESSES";
    /// Redirect targets: fabric-side port ifindex to itself (a DEVMAP_HASH).
    pub const DEVMAP: &str = "IQD_DEVMAP";
    /// Per-CPU [`crate::NicCounters`] per fabric-side port, keyed by the port's ifindex.
    pub const COUNTERS: &str = "IQD_COUNTERS";
    /// Security-group rules: an LPM trie from [`crate::SgKey`] to [`crate::SgRanges`].
    pub const SG_RULES: &str = "IQD_SG_RULES";
    /// Tracked connections: an LRU hash from [`crate::CtKey`] to [`crate::CtEntry`].
    pub const CONNTRACK: &str = "IQD_CONNTRACK";
    /// Per-CPU connection-table statistics, indexed by [`crate::ct_stat`].
    pub const CT_STATS: &str = "IQD_CT_STATS";
    /// Data path `afxdp`: the switch's slot of a fabric-side port, keyed by the port's ifindex:
    /// where its sockets are in [`XSKMAP`] and its counters in [`SWITCH_COUNTERS`]. Written by
    /// the switch, which keeps a port's slot across restarts; a port without one, or whose slot
    /// has no socket, is served in the kernel.
    pub const XSK_SLOTS: &str = "IQD_XSK_SLOTS";
    /// Data path `afxdp`: the switch's AF_XDP sockets (an XSKMAP), at
    /// `slot * XSK_MAX_QUEUES + rx queue`.
    pub const XSKMAP: &str = "IQD_XSKMAP";
    /// Data path `afxdp`: per-CPU frame counts indexed by [`crate::xsk_stat`].
    pub const XSK_STATS: &str = "IQD_XSK_STATS";
    /// Data path `afxdp`: [`crate::NicCounters`] the switch keeps (frames it delivered, frames
    /// it had to drop), an mmapable array indexed by the port's slot (see [`XSK_SLOTS`]). Only
    /// the switch writes it, through a shared mapping.
    pub const SWITCH_COUNTERS: &str = "IQD_SWITCH_COUNTERS";
    /// The map layout the pins were written with: [`crate::LAYOUT_VERSION`] of the iqd that
    /// last brought the fabric up, at index 0 of a one-entry array. Never touched by a program.
    /// Pins from before it existed count as layout 1.
    pub const LAYOUT: &str = "IQD_LAYOUT";
    /// `iqd trace`: at index 0, non-zero while any port is traced; the one lookup a frame
    /// costs when nobody traces.
    pub const TRACE_ON: &str = "IQD_TRACE_ON";
    /// `iqd trace`: [`crate::TracePort`] of every traced port (a traceable LPAR's NIC on a
    /// CHPID being traced), keyed by the port's ifindex.
    pub const TRACE_PORTS: &str = "IQD_TRACE_PORTS";
    /// `iqd trace`: perf event arrays (one buffer per CPU) carrying [`crate::TraceEvent`]s and
    /// frame bytes to the trace using slot 0..[`crate::TRACE_SLOTS`].
    pub const TRACE_EVENTS_0: &str = "IQD_TRACE_EVENTS_0";
    pub const TRACE_EVENTS_1: &str = "IQD_TRACE_EVENTS_1";
    pub const TRACE_EVENTS_2: &str = "IQD_TRACE_EVENTS_2";
    pub const TRACE_EVENTS_3: &str = "IQD_TRACE_EVENTS_3";
    /// The event arrays by trace slot.
    pub const TRACE_EVENTS: [&str; crate::TRACE_SLOTS as usize] = [
        TRACE_EVENTS_0,
        TRACE_EVENTS_1,
        TRACE_EVENTS_2,
        TRACE_EVENTS_3,
    ];

    /// The routes of stopped LPARs' NICs, keyed and valued like [`ROUTES`] (out of it while
    /// the LPAR is stopped): a frame to one is dropped as `lpar_stopped`, not
    /// `no_destination`. Consulted only when [`ROUTES`] has no entry.
    pub const STOPPED: &str = "IQD_STOPPED";
    /// The bandwidth bucket slot of a port whose LPAR has a bandwidth, keyed by the port's
    /// ifindex: its LPAR's two [`crate::Bucket`]s are at `2 * slot` (send) and
    /// `2 * slot + 1` (receive) of [`BUCKETS`].
    pub const BW_PORTS: &str = "IQD_BW_PORTS";
    /// [`crate::Bucket`] per LPAR with a bandwidth and direction (see [`BW_PORTS`]), an array.
    pub const BUCKETS: &str = "IQD_BUCKETS";

    /// One-to-many delivery: the NICs a group or broadcast address of a segment reaches, a
    /// hash from [`crate::GroupKey`] to [`crate::GroupMembers`]. Multicast groups are learnt
    /// by the programs from the LPARs' IGMP and MLD reports; broadcast addresses (limited and
    /// directed) are written by iqd from the NICs' addresses.
    pub const GROUPS: &str = "IQD_GROUPS";
    /// A one-entry per-CPU [`crate::GroupMembers`] a program fills before inserting a new
    /// group (the value does not fit the program's stack).
    pub const GROUP_SCRATCH: &str = "IQD_GROUP_SCRATCH";

    pub const ALL: [&str; 24] = [
        PORTS,
        ROUTES,
        ADDRESSES,
        DEVMAP,
        COUNTERS,
        SG_RULES,
        CONNTRACK,
        CT_STATS,
        XSK_SLOTS,
        XSKMAP,
        XSK_STATS,
        SWITCH_COUNTERS,
        LAYOUT,
        TRACE_ON,
        TRACE_PORTS,
        TRACE_EVENTS_0,
        TRACE_EVENTS_1,
        TRACE_EVENTS_2,
        TRACE_EVENTS_3,
        STOPPED,
        BW_PORTS,
        BUCKETS,
        GROUPS,
        GROUP_SCRATCH,
    ];
}

/// `iqd trace`: traces of one fabric that may run at once (on different CHPIDs), each with
/// its own event array.
pub const TRACE_SLOTS: u32 = 4;
/// `iqd trace`: the most bytes of a frame a trace keeps (a perf sample holds < 64 KiB).
pub const TRACE_MAX_SNAPLEN: u32 = 65_000;

/// A traced port: which trace gets its frames, how much of each, and whether drops too.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracePort {
    /// The trace's slot: which of [`map_names::TRACE_EVENTS`] it reads.
    pub slot: u32,
    /// Bytes of each frame to keep, at most [`TRACE_MAX_SNAPLEN`].
    pub snaplen: u32,
    /// [`trace_flags::DROPS`]: dropped frames too.
    pub flags: u32,
    pub _pad: u32,
}

/// What a [`TraceEvent`] saw, and [`TracePort::flags`].
pub mod trace_flags {
    /// Event: the fabric delivered the frame to this port's LPAR (otherwise the LPAR sent it).
    pub const RECEIVED: u32 = 1;
    /// Event: the fabric dropped the frame (its reason in [`super::TraceEvent::reason`]).
    /// Port: record dropped frames too (`iqd trace --drops`).
    pub const DROPS: u32 = 2;
}

/// One traced frame, followed in the perf sample by its first `cap_len` bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceEvent {
    /// CLOCK_MONOTONIC (bpf_ktime_get_ns).
    pub ts_ns: u64,
    /// The port whose NIC sent or received it.
    pub ifindex: u32,
    /// [`trace_flags`].
    pub flags: u32,
    /// A [`drop_reason`] when [`trace_flags::DROPS`] is set.
    pub reason: u32,
    /// The frame's length (a GSO packet: all its segments).
    pub orig_len: u32,
    pub cap_len: u32,
    /// A dropped copy of a one-to-many frame: the port of the receiver it was for; 0
    /// otherwise.
    pub peer: u32,
}

/// Set (to anything) when building a test-only iqd whose map layout differs from the real
/// one: layout 1 with half the connection table. The upgrade test brings a fabric up with it
/// and upgrades it in place with the real iqd. Cargo rebuilds when the variable changes.
const TEST_LAYOUT_SKEW: bool = option_env!("IQD_TEST_LAYOUT_SKEW").is_some();

/// The version of the map layout (the maps' types, key and value sizes, capacities and flags)
/// this build pins, recorded in [`map_names::LAYOUT`]. Raised whenever a map definition
/// changes, so that `iqd up` knows it upgrades a fabric in place. Layout 1: the pins of iqd
/// before versioning.
/// Layout 2: connections keyed by segment (20-byte key). Layout 3: every address in a key is
/// 16 bytes, IPv4 mapped into IPv6 ([`Addr`]). Layout 4: the `vlan_tagged` drop reason; ports
/// carry their VLAN beside the CHPID, and route keys their segment, both in the bytes the CHPID
/// had (an untagged NIC's are unchanged); drop reasons `lpar_stopped` and `bandwidth_exceeded`
/// (longer [`NicCounters`]), the lifecycle and bandwidth maps. Layout 5: the `layer_mismatch`
/// drop reason (longer [`NicCounters`]); layer-2 keys in ROUTES, STOPPED and GROUPS.
pub const LAYOUT_VERSION: u32 = if TEST_LAYOUT_SKEW { 1 } else { 5 };

/// Names of the programs in the eBPF object.
pub mod program_names {
    /// The XDP program on the fabric side of every NIC (data path `xdp`).
    pub const PORT: &str = "iqd_port";
    /// The pass-through XDP program on the LPAR side of every NIC on data paths `xdp` and
    /// `afxdp` (gives the veth the NAPI context that frames sent back with XDP_TX need).
    pub const NIC: &str = "iqd_nic";
    /// The tc ingress program on the fabric side of every NIC (data path `tc`).
    pub const TC: &str = "iqd_tc";
    /// The XDP program on the fabric side of every NIC that hands delivered frames to the
    /// userspace switch through AF_XDP (data path `afxdp`).
    pub const XSK: &str = "iqd_xsk";
    /// The tc program that moves frames on through an LPAR's bandwidth shapers: on the out
    /// end of every shaper, and (data paths `xdp`, `afxdp`) on every port, for the frames its
    /// XDP program passes up to be shaped.
    pub const SHAPED: &str = "iqd_shaped";

    /// Every program of the eBPF object (docs/architecture.md lists them; a test compares).
    pub const ALL: [&str; 5] = [PORT, NIC, TC, XSK, SHAPED];
}

/// What frames on the fabric look like: header lengths, offsets and protocol numbers, defined
/// once for the programs, iqd and its tests (names as in the Linux headers where they have one).
/// Lengths are in bytes.
pub mod wire {
    /// Length of a MAC address.
    pub const ETH_ALEN: usize = 6;
    /// Length of an Ethernet header without VLAN tag: destination MAC, source MAC, EtherType.
    /// Where the network header starts; the programs learn the offset of each frame from their
    /// parser (a tagged frame never gets that far: the fabric drops it as `vlan_tagged`).
    pub const ETH_HLEN: usize = 14;
    /// Length of an 802.1Q or 802.1ad tag (TPID and TCI) inserted before the EtherType.
    pub const VLAN_HLEN: usize = 4;

    /// EtherTypes.
    pub const ETH_P_IP: u16 = 0x0800;
    pub const ETH_P_ARP: u16 = 0x0806;
    pub const ETH_P_8021Q: u16 = 0x8100;
    pub const ETH_P_IPV6: u16 = 0x86dd;
    pub const ETH_P_8021AD: u16 = 0x88a8;

    /// Length of an IPv4 address.
    pub const IPV4_ALEN: usize = 4;
    /// Length of an IPv4 header without options (IHL 5), and with the most options (IHL 15).
    pub const IPV4_HLEN: usize = 20;
    pub const IPV4_MAX_HLEN: usize = 60;
    /// Length of the fixed IPv6 header.
    pub const IPV6_HLEN: usize = 40;
    /// Length of an IPv6 address.
    pub const IPV6_ALEN: usize = 16;
    /// IPv6 extension headers (next-header values) the fabric walks to the transport header.
    pub const IPPROTO_HOPOPTS: u8 = 0;
    pub const IPPROTO_ROUTING: u8 = 43;
    pub const IPPROTO_FRAGMENT: u8 = 44;
    pub const IPPROTO_DSTOPTS: u8 = 60;
    /// Length of an IPv6 fragment header (every other extension header is (len + 1) * 8).
    pub const IPV6_FRAG_HLEN: usize = 8;
    /// Most extension headers a frame may carry before its transport header; more: `malformed`.
    pub const MAX_IPV6_EXT_HEADERS: usize = 6;

    /// IP protocol numbers.
    pub const IPPROTO_ICMP: u8 = 1;
    pub const IPPROTO_IGMP: u8 = 2;
    pub const IPPROTO_TCP: u8 = 6;
    pub const IPPROTO_UDP: u8 = 17;
    pub const IPPROTO_ICMPV6: u8 = 58;

    /// Length of a TCP header without options, and with the most options.
    pub const TCP_HLEN: usize = 20;
    pub const TCP_MAX_HLEN: usize = 60;
    /// TCP flags (the 14th byte of the header).
    pub const TCP_FIN: u8 = 0x01;
    pub const TCP_SYN: u8 = 0x02;
    pub const TCP_RST: u8 = 0x04;
    pub const TCP_PSH: u8 = 0x08;
    pub const TCP_ACK: u8 = 0x10;
    /// Length of a UDP header.
    pub const UDP_HLEN: usize = 8;
    /// Length of an ICMP header as echo request and reply have it (type, code, checksum,
    /// identifier, sequence number); every ICMP message has at least these 8 bytes.
    pub const ICMP_HLEN: usize = 8;
    /// ICMP types.
    pub const ICMP_ECHO_REPLY: u8 = 0;
    pub const ICMP_ECHO_REQUEST: u8 = 8;
    /// ICMPv6 types (RFC 4443, RFC 4861).
    pub const ICMPV6_ECHO_REQUEST: u8 = 128;
    pub const ICMPV6_ECHO_REPLY: u8 = 129;
    pub const ND_ROUTER_SOLICIT: u8 = 133;
    pub const ND_ROUTER_ADVERT: u8 = 134;
    pub const ND_NEIGHBOR_SOLICIT: u8 = 135;
    pub const ND_NEIGHBOR_ADVERT: u8 = 136;
    pub const ND_REDIRECT: u8 = 137;
    /// Length of a neighbour solicitation or advertisement without options (type, code,
    /// checksum, flags/reserved, target address).
    pub const ND_MSG_LEN: usize = 24;
    /// Neighbour discovery option types, and the length of a link-layer address option for
    /// Ethernet (type, length in 8-byte units = 1, MAC).
    pub const ND_OPT_SOURCE_LL_ADDR: u8 = 1;
    pub const ND_OPT_TARGET_LL_ADDR: u8 = 2;
    pub const ND_OPT_LL_ADDR_LEN: usize = 8;
    /// Neighbour advertisement flags (first byte after the checksum).
    pub const ND_NA_FLAG_ROUTER: u8 = 0x80;
    pub const ND_NA_FLAG_SOLICITED: u8 = 0x40;
    pub const ND_NA_FLAG_OVERRIDE: u8 = 0x20;
    /// Hop limit of every neighbour discovery message (RFC 4861: receivers check it).
    pub const ND_HOP_LIMIT: u8 = 255;

    /// IGMP message types (RFC 2236, RFC 3376).
    pub const IGMP_QUERY: u8 = 0x11;
    pub const IGMP_V1_REPORT: u8 = 0x12;
    pub const IGMP_V2_REPORT: u8 = 0x16;
    pub const IGMP_V2_LEAVE: u8 = 0x17;
    pub const IGMP_V3_REPORT: u8 = 0x22;
    /// MLD message types (ICMPv6; RFC 2710, RFC 3810).
    pub const MLD_QUERY: u8 = 130;
    pub const MLD_V1_REPORT: u8 = 131;
    pub const MLD_V1_DONE: u8 = 132;
    pub const MLD_V2_REPORT: u8 = 143;
    /// Group record types of IGMPv3 and MLDv2 reports.
    pub const MODE_IS_INCLUDE: u8 = 1;
    pub const MODE_IS_EXCLUDE: u8 = 2;
    pub const CHANGE_TO_INCLUDE: u8 = 3;
    pub const CHANGE_TO_EXCLUDE: u8 = 4;
    pub const ALLOW_NEW_SOURCES: u8 = 5;

    /// Length of an ARP packet for IPv4 over Ethernet (RFC 826).
    pub const ARP_LEN: usize = 28;
    /// ARP hardware type Ethernet.
    pub const ARPHRD_ETHER: u16 = 1;
    /// ARP operations.
    pub const ARPOP_REQUEST: u16 = 1;
    pub const ARPOP_REPLY: u16 = 2;
}

/// Capacity of the per-port maps: NICs in one fabric.
pub const MAX_PORTS: u32 = 4096;
/// Capacity of the address maps: registered addresses (IPv4 and IPv6) in one fabric.
pub const MAX_ROUTES: u32 = 65536;
/// Data path `afxdp`: rx queues per port the switch may serve (XSKMAP entries per slot).
pub const XSK_MAX_QUEUES: u32 = 4;
/// Data path `afxdp`: bytes of XDP metadata `iqd_xsk` puts before a frame it hands to the
/// switch: the destination port's ifindex, a native-endian `u32` right before the frame.
pub const XSK_META_LEN: u32 = 4;

/// Data path `afxdp`: indices of [`map_names::XSK_STATS`].
pub mod xsk_stat {
    /// Frames `iqd_xsk` handed to the switch.
    pub const TO_SWITCH: u32 = 0;
    /// Frames `iqd_xsk` delivered in the kernel because the sending or the receiving port
    /// had no switch socket (the switch is not running, or not yet).
    pub const FALLBACK: u32 = 1;
    pub const COUNT: u32 = 2;
}

/// Most receivers one frame to a group or broadcast address reaches (the members a group can
/// have in a segment): the bound of the data path's fan-out loop.
pub const MAX_FANOUT: usize = 64;
/// Capacity of [`map_names::GROUPS`]: groups and broadcast addresses over all segments.
pub const MAX_GROUPS: u32 = 16384;
/// Most group records of one IGMPv3 or MLDv2 report the programs read (later ones are
/// ignored; Linux sends one record per report for a socket's join or leave).
pub const MAX_REPORT_RECORDS: usize = 8;

/// Key of [`map_names::GROUPS`]: a group (or broadcast) address in a segment, as a route
/// key is, or a layer-2 flood list ([`flood_key`]).
pub type GroupKey = RouteKey;

impl RouteKey {
    /// Whether the key is in a segment's layer-2 space ([`LAYER2_KEYS`]).
    pub const fn is_layer2(&self) -> bool {
        self.segment & LAYER2_KEYS != 0
    }

    /// Whether a [`map_names::GROUPS`] key is a multicast group the programs learn (every
    /// other list is iqd's).
    pub const fn is_learnt_group(&self) -> bool {
        !self.is_layer2() && is_multicast(&self.addr)
    }
}

/// Value of [`map_names::GROUPS`]: the fabric-side ports (ifindexes) of the member NICs, the
/// first `count` of `ifindex`, in no order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupMembers {
    pub count: u32,
    pub _pad: u32,
    pub ifindex: [u32; MAX_FANOUT],
}

impl Default for GroupMembers {
    fn default() -> Self {
        GroupMembers {
            count: 0,
            _pad: 0,
            ifindex: [0; MAX_FANOUT],
        }
    }
}

impl GroupMembers {
    /// The members, at most [`MAX_FANOUT`].
    pub fn members(&self) -> &[u32] {
        let count = (self.count as usize).min(MAX_FANOUT);
        &self.ifindex[..count]
    }

    /// A member list of the first [`MAX_FANOUT`] of `ports`.
    pub fn of(ports: &[u32]) -> Self {
        let mut members = GroupMembers::default();
        for (slot, port) in members.ifindex.iter_mut().zip(ports) {
            *slot = *port;
            members.count += 1;
        }
        members
    }
}

/// Whether an address (as keys hold it) is a multicast group: IPv4 224.0.0.0/4 or IPv6
/// ff00::/8. The programs learn these from reports; every other [`GroupKey`] is iqd's.
pub const fn is_multicast(addr: &Addr) -> bool {
    let mapped = addr[0] == 0
        && addr[1] == 0
        && addr[2] == 0
        && addr[3] == 0
        && addr[4] == 0
        && addr[5] == 0
        && addr[6] == 0
        && addr[7] == 0
        && addr[8] == 0
        && addr[9] == 0
        && addr[10] == 0xff
        && addr[11] == 0xff;
    if mapped {
        addr[12] & 0xf0 == 0xe0
    } else {
        addr[0] == 0xff
    }
}

/// What the data plane knows about a fabric-side port (one NIC).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortInfo {
    /// The IQD CHPID the NIC is on.
    pub chpid: u16,
    /// The NIC's VLAN within its CHPID (1-4094), or [`NO_VLAN`]: the CHPID's untagged
    /// segment. The fabric's property: frames carry no tag (see [`segment_of`]).
    pub vlan: u16,
    /// The CHPID's MTU (its MFS minus 8K): the largest IP packet the fabric carries.
    pub mtu: u32,
    /// The NIC's own MAC, the only source MAC it may send from.
    pub mac: [u8; 6],
    /// [`port_flags`].
    pub flags: u8,
    pub _pad: u8,
}

/// Bits of [`PortInfo::flags`].
pub mod port_flags {
    /// The NIC may send from addresses it did not register (`allow_ip_spoofing`).
    pub const ALLOW_IP_SPOOFING: u8 = 1;
    /// The NIC's LPAR has a bandwidth: what it sends is metered (see [`crate::Bucket`]).
    pub const BANDWIDTH: u8 = 2;
    /// A layer-2 NIC (`layer2 = true`): its frames are forwarded by destination MAC among the
    /// layer-2 NICs of its segment, whatever their EtherType (see [`crate::mac_key`]).
    pub const LAYER2: u8 = 4;
    /// The NIC's LPAR is stopped (`iqd lpar stop`): copies of one-to-many frames to it are
    /// dropped as `lpar_stopped` (unicast learns it from the routes: its addresses move to
    /// [`crate::map_names::STOPPED`]).
    pub const STOPPED: u8 = 8;
}

impl PortInfo {
    pub const fn new(chpid: u8, mtu: u32, mac: [u8; 6]) -> Self {
        PortInfo {
            chpid: chpid as u16,
            vlan: NO_VLAN,
            mtu,
            mac,
            flags: 0,
            _pad: 0,
        }
    }

    pub const fn with_flags(mut self, flags: u8) -> Self {
        self.flags = flags;
        self
    }

    /// The port of a NIC in VLAN `vlan` of its CHPID ([`NO_VLAN`]: untagged).
    pub const fn with_vlan(mut self, vlan: u16) -> Self {
        self.vlan = vlan;
        self
    }
}

/// [`PortInfo::vlan`] of a NIC in no VLAN: the CHPID's untagged segment.
pub const NO_VLAN: u16 = 0;
/// The VLAN ids a NIC may be given (802.1Q: 0 means "no VLAN" and 4095 is reserved).
pub const VLAN_MIN: u16 = 1;
pub const VLAN_MAX: u16 = 4094;

/// An address as every map key holds it: 16 bytes in network order, an IPv6 address as is and
/// an IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`), so one policy code and one set of maps
/// serve both families.
pub type Addr = [u8; 16];

/// The IPv4-mapped IPv6 address of IPv4 address `octets` (`::ffff:a.b.c.d`).
#[inline(always)]
pub const fn ipv4_mapped(octets: [u8; 4]) -> Addr {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
    ]
}

/// An address as the data plane keys it (IPv4 mapped, IPv6 as is).
pub const fn addr_of(ip: core::net::IpAddr) -> Addr {
    match ip {
        core::net::IpAddr::V4(v4) => ipv4_mapped(v4.octets()),
        core::net::IpAddr::V6(v6) => v6.octets(),
    }
}

/// The IPv4 address an [`Addr`] maps, if it is IPv4-mapped; how iqd shows keys.
pub fn ip_of(addr: Addr) -> core::net::IpAddr {
    let v6 = core::net::Ipv6Addr::from(addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => core::net::IpAddr::V4(v4),
        None => core::net::IpAddr::V6(v6),
    }
}

/// Key of [`map_names::ROUTES`]: an address registered in a segment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RouteKey {
    /// The segment of the NIC that registered it (see [`segment_of`]).
    pub segment: u32,
    /// The address (see [`Addr`]), in network byte order as in the frame.
    pub addr: Addr,
}

impl RouteKey {
    pub const fn new(segment: u32, ip: core::net::IpAddr) -> Self {
        RouteKey {
            segment,
            addr: addr_of(ip),
        }
    }
}

/// Value of [`map_names::ROUTES`]: the NIC that registered the address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteTarget {
    /// Fabric-side port ifindex of the NIC (also its DEVMAP key).
    pub ifindex: u32,
    /// The NIC's MAC, written as destination into forwarded frames and ARP replies.
    pub mac: [u8; 6],
    /// [`route_flags`].
    pub flags: u8,
    pub _pad: u8,
}

/// Bits of [`RouteTarget::flags`].
pub mod route_flags {
    /// The NIC's LPAR has a bandwidth: what it receives is metered (see [`crate::Bucket`]).
    pub const BANDWIDTH: u8 = 1;
    /// The NIC is a layer-2 NIC: layer-3 NICs cannot reach it, nor it them
    /// (`layer_mismatch`).
    pub const LAYER2: u8 = 2;
}

impl RouteTarget {
    pub const fn new(ifindex: u32, mac: [u8; 6]) -> Self {
        RouteTarget {
            ifindex,
            mac,
            flags: 0,
            _pad: 0,
        }
    }

    pub const fn with_flags(mut self, flags: u8) -> Self {
        self.flags = flags;
        self
    }
}

/// An LPAR's bandwidth in one direction, shared by all its NICs. Its frames are delayed by the
/// LPAR's shaper for that direction (a veth pair in the fabric namespace with a TBF qdisc on
/// `shaper`, the in end), and metered on the way in: the meter models the shaper's queue in
/// virtual time (GCRA). Each admitted frame moves `next_ns` on by its transmission time at
/// `rate`; a frame that would move it more than `burst_ns` past now (a queue that long) exceeds
/// the bandwidth and is dropped (`bandwidth_exceeded`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Bytes per second; 0: not metered.
    pub rate: u64,
    /// The longest queue the meter admits, in ns at `rate`.
    pub burst_ns: u64,
    /// `bpf_ktime_get_ns` at which the admitted bytes have drained.
    pub next_ns: u64,
    /// Frames and bytes sent through the shaper (delayed as far as the bandwidth needs).
    pub shaped_packets: u64,
    pub shaped_bytes: u64,
    /// Frames and bytes dropped for exceeding the bandwidth.
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
    /// Ifindex (in the fabric namespace) of the shaper's in end; 0: none yet.
    pub shaper: u32,
    pub _pad: u32,
}

/// The `skb->mark` of a frame on its way through a shaper: the target port's ifindex and the
/// shaper it is in. Only iqd's own programs put frames into a shaper, and a mark does not
/// cross into an LPAR's namespace.
pub mod shaper_mark {
    /// The frame is in its sender's send shaper.
    pub const SEND: u32 = 1 << 30;
    /// The frame is in its receiver's receive shaper.
    pub const RECEIVE: u32 = 2 << 30;
    /// The bits of the target port's ifindex.
    pub const TARGET: u32 = (1 << 30) - 1;
}

/// Send and receive buckets of one LPAR in [`map_names::BUCKETS`].
pub mod bw_direction {
    pub const SEND: u32 = 0;
    pub const RECEIVE: u32 = 1;
}

/// Capacity of [`map_names::BUCKETS`]: two per LPAR.
pub const MAX_BUCKETS: u32 = 2 * MAX_PORTS;

/// Why the fabric dropped a frame. The index into [`NicCounters::drops`].
pub mod drop_reason {
    /// Truncated or inconsistent Ethernet, IPv4 or ARP header.
    pub const MALFORMED: u32 = 0;
    /// Neither IPv4, IPv6 nor ARP (other ethertypes): layer 3 mode carries IP. VLAN-tagged
    /// frames are [`VLAN_TAGGED`].
    pub const NON_IP: u32 = 1;
    /// Source MAC or source IPv4 address is not the sending NIC's own.
    pub const SPOOFED_SOURCE: u32 = 2;
    /// The destination is registered, but only in another segment (another CHPID, or another
    /// VLAN of this one).
    pub const NOT_MEMBER: u32 = 3;
    /// No NIC registered the destination address (includes unanswered ARP requests).
    pub const NO_DESTINATION: u32 = 4;
    /// The frame is longer than the CHPID's MTU plus the Ethernet header.
    pub const MFS_EXCEEDED: u32 = 5;
    /// The destination port could not take the frame (missing from the DEVMAP).
    pub const REDIRECT_FAILED: u32 = 6;
    /// ARP other than a request (replies, RARP): the fabric answers ARP itself.
    pub const ARP_IGNORED: u32 = 7;
    /// The sending NIC's security groups allow no such outbound traffic. Counted on the sender.
    pub const SG_DENIED_OUTBOUND: u32 = 8;
    /// The receiving NIC's security groups allow no such inbound traffic. Counted on the
    /// receiver, whose rules denied it.
    pub const SG_DENIED_INBOUND: u32 = 9;
    /// Data path `afxdp`: the switch could not take the frame or the destination could not
    /// (a full AF_XDP ring), HiperSockets' "busy" condition. Counted on the sender by the
    /// switch.
    pub const TARGET_BUSY: u32 = 10;
    /// IPv6 neighbour discovery the fabric does not answer (router solicitations and
    /// advertisements, neighbour advertisements, redirects): the fabric answers neighbour
    /// solicitations itself.
    pub const ND_IGNORED: u32 = 11;
    /// The frame carries an 802.1Q or 802.1ad VLAN tag, inline or (tc) in the packet's
    /// metadata: a NIC's VLAN is the fabric's property, and an LPAR cannot tag its way into
    /// another segment.
    pub const VLAN_TAGGED: u32 = 12;
    /// The destination NIC's LPAR is stopped (`iqd lpar stop`). Counted on the sender.
    pub const LPAR_STOPPED: u32 = 13;
    /// The sending or the receiving LPAR's bandwidth is exceeded. Counted on the sender.
    pub const BANDWIDTH_EXCEEDED: u32 = 14;
    /// The destination (address, or MAC) is a NIC of the other mode on the same CHPID: a
    /// layer-3 NIC's frame to a layer-2 NIC, or the reverse. As on the machine, the two
    /// cannot reach each other. Counted on the sender.
    pub const LAYER_MISMATCH: u32 = 15;

    /// Number of reasons; the length of [`super::NicCounters::drops`].
    pub const COUNT: usize = 16;
    /// Names as shown by `iqd stats`, indexed by reason.
    pub const NAMES: [&str; COUNT] = [
        "malformed",
        "non_ip",
        "spoofed_source",
        "not_member",
        "no_destination",
        "mfs_exceeded",
        "redirect_failed",
        "arp_ignored",
        "sg_denied_outbound",
        "sg_denied_inbound",
        "target_busy",
        "nd_ignored",
        "vlan_tagged",
        "lpar_stopped",
        "bandwidth_exceeded",
        "layer_mismatch",
    ];
}

/// Direction of a security-group rule, as seen from the NIC that owns it.
pub mod sg_direction {
    /// Traffic the NIC receives.
    pub const INBOUND: u8 = 0;
    /// Traffic the NIC sends.
    pub const OUTBOUND: u8 = 1;
}

/// Protocol classes of the rule table. TCP, UDP, ICMP and ICMPv6 carry their IP protocol number; every
/// other IP protocol shares [`sg_proto::OTHER`] (only `protocol = "all"` rules allow it).
pub mod sg_proto {
    use crate::wire;

    pub const ICMP: u8 = wire::IPPROTO_ICMP;
    pub const TCP: u8 = wire::IPPROTO_TCP;
    pub const UDP: u8 = wire::IPPROTO_UDP;
    pub const ICMPV6: u8 = wire::IPPROTO_ICMPV6;
    pub const OTHER: u8 = 255;
}

/// Bits of [`SgKey`] before the remote address: ifindex (32), direction (8), protocol (8).
/// An entry's LPM prefix length is this plus the remote's prefix as a 128-bit [`Addr`]:
/// `96 + n` for an IPv4 CIDR `/n` (mapped), `n` for an IPv6 CIDR; a rule without remote is
/// `::/0` and matches both families.
pub const SG_KEY_FIXED_BITS: u32 = 48;
/// Bits of an [`Addr`] before an IPv4-mapped address's own bits.
pub const IPV4_MAPPED_PREFIX_BITS: u32 = 96;
/// Most port (or ICMP type/code) ranges one rule-table entry holds: every rule of five groups
/// of 250, should none of them merge.
pub const MAX_SG_RANGES: usize = 1250;
/// Capacity of the rule table (entries are per NIC, direction, protocol and remote prefix).
pub const MAX_SG_ENTRIES: u32 = 65536;
/// Capacity of the connection table; the least recently used entry makes room when full.
pub const MAX_CONNTRACK: u32 = if TEST_LAYOUT_SKEW { 131_072 } else { 262_144 };

/// The data of an LPM-trie key of [`map_names::SG_RULES`]. Matched on the first
/// `SG_KEY_FIXED_BITS + prefix length of the remote` bits (the remote as a 128-bit [`Addr`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SgKey {
    /// Fabric-side port ifindex of the NIC owning the rules, big-endian (prefix-matched).
    pub ifindex_be: [u8; 4],
    pub direction: u8,
    pub proto: u8,
    /// The remote address (source of inbound, destination of outbound traffic), an [`Addr`].
    pub remote: Addr,
}

impl SgKey {
    pub const fn new(ifindex: u32, direction: u8, proto: u8, remote: Addr) -> Self {
        SgKey {
            ifindex_be: ifindex.to_be_bytes(),
            direction,
            proto,
            remote,
        }
    }
}

/// What a rule-table entry allows: sorted, disjoint, inclusive ranges of the destination port
/// (TCP, UDP) or of `type << 8 | code` (ICMP, ICMPv6), each packed as `low << 16 | high`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SgRanges {
    pub count: u32,
    pub ranges: [u32; MAX_SG_RANGES],
}

impl Default for SgRanges {
    fn default() -> Self {
        SgRanges {
            count: 0,
            ranges: [0; MAX_SG_RANGES],
        }
    }
}

/// A tracked connection, keyed as its first frame was: the segment it runs in, source and
/// destination address ([`Addr`]) and port (ICMP and ICMPv6 echo: the identifier as both ports),
/// and the IP protocol.
/// Tenants may reuse one address plan on different CHPIDs or VLANs, so the tuple alone does not
/// name a connection: the segment does too.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    /// The segment of both NICs (see [`segment_of`]).
    pub segment: u32,
    pub saddr: Addr,
    pub daddr: Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    // Two fields, not `[u8; 3]`: the programs zero them with two stores (a byte array of
    // three is zeroed by a call to a byte-at-a-time memset).
    pub _pad: u8,
    pub _pad2: u16,
}

impl CtKey {
    #[inline(always)]
    pub const fn new(
        segment: u32,
        saddr: Addr,
        daddr: Addr,
        sport: u16,
        dport: u16,
        proto: u8,
    ) -> Self {
        CtKey {
            segment,
            saddr,
            daddr,
            sport,
            dport,
            proto,
            _pad: 0,
            _pad2: 0,
        }
    }
}

/// The segment a port's NIC belongs to, the scope of its addresses and connections: its CHPID
/// and VLAN, `chpid | vlan << 16`. The untagged NICs of a CHPID form a segment of their own
/// whose number is the CHPID (as before VLANs existed).
pub const fn segment_of(port: &PortInfo) -> u32 {
    port.chpid as u32 | (port.vlan as u32) << 16
}

/// The bit that puts a key of [`map_names::ROUTES`], [`map_names::STOPPED`] or
/// [`map_names::GROUPS`] in a segment's layer-2 space: its `addr` holds a MAC ([`mac_key`]),
/// not an address. Segment numbers from [`segment_of`] never have it (a VLAN id fits in 12
/// bits).
pub const LAYER2_KEYS: u32 = 1 << 31;

/// The key under which a NIC's MAC is registered in its segment (ROUTES, STOPPED): the
/// segment with [`LAYER2_KEYS`], the MAC in the first six bytes of `addr`, zeros after. Every
/// NIC's MAC is registered, so a layer-2 NIC's frame to a layer-3 NIC's MAC is told from an
/// unknown one.
pub const fn mac_key(segment: u32, mac: [u8; 6]) -> RouteKey {
    let mut addr = [0u8; 16];
    let mut i = 0;
    while i < 6 {
        addr[i] = mac[i];
        i += 1;
    }
    RouteKey {
        segment: segment | LAYER2_KEYS,
        addr,
    }
}

/// The broadcast MAC.
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];
/// Stands for every multicast MAC in [`flood_key`].
pub const MULTICAST_MAC: [u8; 6] = [0x01, 0, 0, 0, 0, 0];

/// The [`map_names::GROUPS`] list a layer-2 NIC's frame to a group MAC is flooded to: for the
/// broadcast MAC, the segment's layer-2 NICs that take broadcasts (`rx_bcast`); for any other
/// group MAC, every layer-2 NIC of the segment. iqd writes both.
pub const fn flood_key(segment: u32, broadcast: bool) -> GroupKey {
    mac_key(
        segment,
        if broadcast {
            BROADCAST_MAC
        } else {
            MULTICAST_MAC
        },
    )
}

/// The CHPID and VLAN ([`NO_VLAN`]: untagged) of a segment from [`segment_of`].
/// A layer-2 key's segment ([`LAYER2_KEYS`]) gives the same.
pub const fn segment_parts(segment: u32) -> (u8, u16) {
    (segment as u8, ((segment & !LAYER2_KEYS) >> 16) as u16)
}

/// What the data plane remembers of a connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    /// Fabric-side port of the NIC that opened the connection, and of its peer.
    pub origin_ifindex: u32,
    pub reply_ifindex: u32,
    /// `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC_COARSE) of the first and of the latest frame.
    pub created_ns: u64,
    pub last_seen_ns: u64,
    /// Frames in the opening and in the reply direction.
    pub origin_packets: u64,
    pub reply_packets: u64,
    /// [`ct_flags`].
    pub flags: u32,
    pub _pad: u32,
}

/// Bits of [`CtEntry::flags`].
pub mod ct_flags {
    /// A frame went the reply way.
    pub const REPLIED: u32 = 1;
    /// TCP FIN seen (either way).
    pub const FIN: u32 = 2;
    /// TCP RST seen (either way).
    pub const RST: u32 = 4;
}

/// Idle time after which a tracked connection no longer lets frames through unchecked.
pub mod ct_timeout {
    pub const TCP_NS: u64 = 3600 * 1_000_000_000;
    /// After FIN or RST.
    pub const TCP_CLOSING_NS: u64 = 10 * 1_000_000_000;
    pub const UDP_NS: u64 = 120 * 1_000_000_000;
    pub const ICMP_NS: u64 = 30 * 1_000_000_000;

    /// The idle timeout of a connection of IP protocol `proto` whose entry has
    /// [`super::ct_flags`] `flags`.
    pub const fn of(proto: u8, flags: u32) -> u64 {
        use crate::wire::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP};
        match proto {
            IPPROTO_TCP if flags & (super::ct_flags::FIN | super::ct_flags::RST) != 0 => {
                TCP_CLOSING_NS
            }
            IPPROTO_TCP => TCP_NS,
            IPPROTO_ICMP | IPPROTO_ICMPV6 => ICMP_NS,
            _ => UDP_NS,
        }
    }
}

/// Indices of [`map_names::CT_STATS`].
pub mod ct_stat {
    /// Connections the data plane added to the table.
    pub const CREATED: u32 = 0;
    /// Entries iqd removed because new rules no longer allow them.
    pub const REVOKED: u32 = 1;
    pub const COUNT: u32 = 2;
}

/// Traffic of one NIC, from the LPAR's point of view (like `ip -s link` inside it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NicCounters {
    /// Frames the LPAR sent into the fabric (delivered or not).
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames the fabric delivered to the LPAR (forwarded frames and ARP replies).
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames sent by this NIC and dropped, by [`drop_reason`].
    pub drops: [u64; drop_reason::COUNT],
}

impl NicCounters {
    /// Adds another CPU's share.
    pub fn accumulate(&mut self, other: &NicCounters) {
        self.tx_packets += other.tx_packets;
        self.tx_bytes += other.tx_bytes;
        self.rx_packets += other.rx_packets;
        self.rx_bytes += other.rx_bytes;
        for (sum, add) in self.drops.iter_mut().zip(other.drops.iter()) {
            *sum += *add;
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are #[repr(C)] plain integers and byte arrays with explicit padding.
    unsafe impl aya::Pod for super::PortInfo {}
    unsafe impl aya::Pod for super::RouteKey {}
    unsafe impl aya::Pod for super::RouteTarget {}
    unsafe impl aya::Pod for super::NicCounters {}
    unsafe impl aya::Pod for super::SgKey {}
    unsafe impl aya::Pod for super::SgRanges {}
    unsafe impl aya::Pod for super::CtKey {}
    unsafe impl aya::Pod for super::CtEntry {}
    unsafe impl aya::Pod for super::GroupMembers {}
    unsafe impl aya::Pod for super::TracePort {}
    unsafe impl aya::Pod for super::Bucket {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::mem::size_of;
    use core::net::{Ipv4Addr, Ipv6Addr};

    fn bytes_of<T>(value: &T) -> &[u8] {
        // SAFETY: the types are repr(C) plain data without uninitialised padding.
        unsafe { core::slice::from_raw_parts(value as *const T as *const u8, size_of::<T>()) }
    }

    #[test]
    fn layouts_match_what_the_kernel_side_reads() {
        assert_eq!(size_of::<PortInfo>(), 16);
        assert_eq!(size_of::<RouteKey>(), 20);
        assert_eq!(size_of::<RouteTarget>(), 12);
        assert_eq!(size_of::<NicCounters>(), 8 * (4 + drop_reason::COUNT));
        // The LPM key data is matched bit by bit: no padding may sit inside it.
        assert_eq!(size_of::<SgKey>(), 22);
        assert_eq!(size_of::<SgRanges>(), 4 + 4 * MAX_SG_RANGES);
        assert_eq!(size_of::<CtKey>(), 44);
        assert_eq!(size_of::<CtEntry>(), 48);
        assert_eq!(size_of::<Bucket>(), 64);
    }

    #[test]
    fn route_keys_hold_the_address_in_frame_byte_order() {
        let key = RouteKey::new(0xf0, Ipv4Addr::new(10, 0, 0, 1).into());
        assert_eq!(key.segment, segment_of(&PortInfo::new(0xf0, 0, [0; 6])));
        let mut expected = std::vec::Vec::new();
        expected.extend_from_slice(&0xf0u32.to_ne_bytes());
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1]);
        assert_eq!(bytes_of(&key), expected.as_slice());
        let v6: Ipv6Addr = "fd00:f0::1".parse().unwrap();
        let key = RouteKey::new(0xf0, v6.into());
        assert_eq!(&bytes_of(&key)[4..], &v6.octets());
        assert_eq!(
            ipv4_mapped([192, 168, 1, 2]),
            Ipv4Addr::new(192, 168, 1, 2).to_ipv6_mapped().octets()
        );
        assert_eq!(ip_of(addr_of(v6.into())), core::net::IpAddr::V6(v6));
        assert_eq!(
            ip_of(ipv4_mapped([10, 0, 0, 1])),
            core::net::IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))
        );
    }

    #[test]
    fn port_and_route_values_carry_the_mac_verbatim() {
        let mac = [0x02, 0, 0, 0xf0, 0x70, 0x03];
        let port = PortInfo::new(0xf1, 16384 - 8192, mac);
        assert_eq!(&bytes_of(&port)[8..14], &mac);
        assert_eq!(port.chpid, 0xf1);
        assert_eq!(port.mtu, 8192);
        let target = RouteTarget::new(42, mac);
        assert_eq!(&bytes_of(&target)[0..4], &42u32.to_ne_bytes());
        assert_eq!(&bytes_of(&target)[4..10], &mac);
        assert_eq!(&bytes_of(&target)[10..12], &[0, 0]);
        let flagged = port.with_flags(port_flags::ALLOW_IP_SPOOFING);
        assert_eq!(bytes_of(&flagged)[14], 1);
    }

    #[test]
    fn a_segment_is_the_chpid_and_the_vlan() {
        let untagged = PortInfo::new(0xf0, 8192, [2, 0, 0, 0xf0, 0x70, 0]);
        // Untagged: the CHPID alone, as ports, routes and connections were keyed before VLANs
        // (the bytes of the old 32-bit CHPID field read the same on little-endian machines).
        assert_eq!(segment_of(&untagged), 0xf0);
        assert_eq!(&bytes_of(&untagged)[0..4], &[0xf0, 0, 0, 0]);
        let v100 = untagged.with_vlan(100);
        let v200 = untagged.with_vlan(200);
        assert_ne!(segment_of(&v100), segment_of(&untagged));
        assert_ne!(segment_of(&v100), segment_of(&v200));
        assert_ne!(
            segment_of(&v100),
            segment_of(&PortInfo::new(0xf1, 0, [0; 6]).with_vlan(100))
        );
        assert_eq!(segment_parts(segment_of(&v100)), (0xf0, 100));
        assert_eq!(segment_parts(segment_of(&untagged)), (0xf0, NO_VLAN));
        assert_eq!(
            segment_parts(segment_of(
                &PortInfo::new(0xff, 0, [0; 6]).with_vlan(VLAN_MAX)
            )),
            (0xff, VLAN_MAX)
        );
        assert_eq!(bytes_of(&v100)[2..4], 100u16.to_ne_bytes());
    }

    #[test]
    fn drop_reason_names_are_indexed_by_reason_and_unique() {
        use drop_reason::*;
        for (reason, name) in [
            (MALFORMED, "malformed"),
            (NON_IP, "non_ip"),
            (SPOOFED_SOURCE, "spoofed_source"),
            (NOT_MEMBER, "not_member"),
            (NO_DESTINATION, "no_destination"),
            (MFS_EXCEEDED, "mfs_exceeded"),
            (REDIRECT_FAILED, "redirect_failed"),
            (ARP_IGNORED, "arp_ignored"),
            (SG_DENIED_OUTBOUND, "sg_denied_outbound"),
            (SG_DENIED_INBOUND, "sg_denied_inbound"),
            (TARGET_BUSY, "target_busy"),
            (ND_IGNORED, "nd_ignored"),
            (VLAN_TAGGED, "vlan_tagged"),
            (LPAR_STOPPED, "lpar_stopped"),
            (BANDWIDTH_EXCEEDED, "bandwidth_exceeded"),
        ] {
            assert_eq!(NAMES[reason as usize], name);
        }
        let mut names = NAMES.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), COUNT);
    }

    #[test]
    fn rule_keys_put_the_ifindex_first_in_network_order() {
        let key = SgKey::new(
            0x0102_0304,
            sg_direction::OUTBOUND,
            sg_proto::TCP,
            ipv4_mapped([10, 0, 0, 1]),
        );
        assert_eq!(
            bytes_of(&key),
            &[1, 2, 3, 4, 1, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1]
        );
    }

    #[test]
    fn counters_accumulate_per_cpu_shares() {
        let mut total = NicCounters::default();
        let mut cpu = NicCounters {
            tx_packets: 2,
            tx_bytes: 200,
            rx_packets: 1,
            rx_bytes: 100,
            ..Default::default()
        };
        cpu.drops[drop_reason::MFS_EXCEEDED as usize] = 3;
        total.accumulate(&cpu);
        total.accumulate(&cpu);
        assert_eq!(total.tx_packets, 4);
        assert_eq!(total.tx_bytes, 400);
        assert_eq!(total.rx_packets, 2);
        assert_eq!(total.rx_bytes, 200);
        assert_eq!(total.drops[drop_reason::MFS_EXCEEDED as usize], 6);
        assert_eq!(total.drops.iter().sum::<u64>(), 6);
    }
}
