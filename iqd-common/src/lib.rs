//! Types shared by iqd's XDP programs (`iqd-ebpf`) and its loader (`iqd-userspace`).
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
    /// Number of CHPIDs on which an IPv4 address is registered, keyed by the address.
    pub const ADDRESSES: &str = "IQD_ADDRESSES";
    /// Redirect targets: fabric-side port ifindex to itself (a DEVMAP_HASH).
    pub const DEVMAP: &str = "IQD_DEVMAP";
    /// Per-CPU [`crate::NicCounters`] per fabric-side port, keyed by the port's ifindex.
    pub const COUNTERS: &str = "IQD_COUNTERS";

    pub const ALL: [&str; 5] = [PORTS, ROUTES, ADDRESSES, DEVMAP, COUNTERS];
}

/// Names of the programs in the eBPF object.
pub mod program_names {
    /// The program on the fabric side of every NIC.
    pub const PORT: &str = "iqd_port";
    /// The pass-through program on the LPAR side of every NIC (gives the veth the NAPI context
    /// that frames sent back with XDP_TX need).
    pub const NIC: &str = "iqd_nic";
}

/// Capacity of the per-port maps: NICs in one fabric.
pub const MAX_PORTS: u32 = 4096;
/// Capacity of the address maps: registered IPv4 addresses in one fabric.
pub const MAX_ROUTES: u32 = 65536;
/// Length of an Ethernet header without VLAN tag.
pub const ETH_HLEN: u32 = 14;

/// What the data plane knows about a fabric-side port (one NIC).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortInfo {
    /// The IQD CHPID the NIC is on.
    pub chpid: u32,
    /// The CHPID's MTU (its MFS minus 8K): the largest IP packet the fabric carries.
    pub mtu: u32,
    /// The NIC's own MAC, the only source MAC it may send from.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Key of [`map_names::ROUTES`]: an address registered on a CHPID.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RouteKey {
    pub chpid: u32,
    /// IPv4 address in network byte order, exactly as it appears in the frame.
    pub addr: u32,
}

/// Value of [`map_names::ROUTES`]: the NIC that registered the address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteTarget {
    /// Fabric-side port ifindex of the NIC (also its DEVMAP key).
    pub ifindex: u32,
    /// The NIC's MAC, written as destination into forwarded frames and ARP replies.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Why the fabric dropped a frame. The index into [`NicCounters::drops`].
pub mod drop_reason {
    /// Truncated or inconsistent Ethernet, IPv4 or ARP header.
    pub const MALFORMED: u32 = 0;
    /// Neither IPv4 nor ARP (IPv6, VLAN-tagged, other ethertypes): layer 3 mode carries IPv4.
    pub const NON_IP: u32 = 1;
    /// Source MAC or source IPv4 address is not the sending NIC's own.
    pub const SPOOFED_SOURCE: u32 = 2;
    /// The destination is registered, but only on another CHPID.
    pub const NOT_MEMBER: u32 = 3;
    /// No NIC registered the destination address (includes unanswered ARP requests).
    pub const NO_DESTINATION: u32 = 4;
    /// The frame is longer than the CHPID's MTU plus the Ethernet header.
    pub const MFS_EXCEEDED: u32 = 5;
    /// The destination port could not take the frame (missing from the DEVMAP).
    pub const REDIRECT_FAILED: u32 = 6;
    /// ARP other than a request (replies, RARP): the fabric answers ARP itself.
    pub const ARP_IGNORED: u32 = 7;

    /// Number of reasons; the length of [`super::NicCounters::drops`].
    pub const COUNT: usize = 8;
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
    ];
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
}
