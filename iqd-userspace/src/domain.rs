//! The fabric as iqd models it: CHPIDs, LPARs, their NICs and addresses, the data path, and the
//! security groups ([`security_groups`]). These are the types a validated fabric file becomes
//! (`config` parses and validates the file into them), that the rule compiler (`secgroup`)
//! compiles and that `up`, `status` and the switch act on. A leaf: it depends on no other
//! module of the crate.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Serialize, Serializer};

mod profiles;
pub use profiles::{Bandwidth, Profile, MAX_BANDWIDTH, MIN_BANDWIDTH, PROFILES};
mod security_groups;
pub use security_groups::{
    implicit_default, mapped, prefix_mask, prefix_mask128, Direction, Protocol, Remote, RemoteCidr,
    Rule, SecurityGroup, DEFAULT_GROUP,
};

/// A fabric: what a valid fabric file describes (read with `Fabric::load` or `Fabric::parse`,
/// in `config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fabric {
    pub name: String,
    pub max_nics_per_lpar: usize,
    /// How frames move between NICs.
    pub datapath: Datapath,
    pub chpids: Vec<Chpid>,
    pub lpars: Vec<Lpar>,
    /// Every security group: those the file writes, and `default` unless the file writes it.
    pub security_groups: Vec<SecurityGroup>,
}

/// How the fabric moves frames between NICs. The policy is the same on every path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Datapath {
    /// An XDP program on each port redirects frames through a DEVMAP.
    Xdp,
    /// A tc (tcx) ingress program on each port moves packets straight into the destination
    /// LPAR with `bpf_redirect_peer`, keeping GSO. The default: `cargo xtask bench` measured
    /// it at or above the Linux bridge where `xdp` trails it (docs/performance.md).
    #[default]
    Tc,
    /// An XDP program on each port hands frames to a userspace switch through AF_XDP sockets
    /// sharing one UMEM; the switch moves descriptors between ports. Without a running switch
    /// the program delivers in the kernel, as `Xdp` does.
    Afxdp,
}

impl Datapath {
    pub const ALL: [Datapath; 3] = [Datapath::Xdp, Datapath::Tc, Datapath::Afxdp];

    pub fn label(self) -> &'static str {
        match self {
            Datapath::Xdp => "xdp",
            Datapath::Tc => "tc",
            Datapath::Afxdp => "afxdp",
        }
    }
}

impl fmt::Display for Datapath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// An IQD channel path: one internal LAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chpid {
    #[serde(serialize_with = "serialize_chpid")]
    pub id: u8,
    pub mfs: Mfs,
    /// The LPAR allowed to trace this CHPID (`iqd trace --as`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analyzer: Option<String>,
}

/// Maximum frame size of a CHPID; the MTU is 8K less.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mfs {
    K16,
    K24,
    K40,
    K64,
}

/// A logical partition: one network namespace with up to `max_nics_per_lpar` NICs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lpar {
    pub name: String,
    pub netns: String,
    /// Whether `iqd trace` may capture this LPAR's frames.
    pub traceable: bool,
    pub nics: Vec<Nic>,
    /// The LPAR's built-in profile (`profile`), if it names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    /// The bandwidth the file sets (`bandwidth`), overriding the profile's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
}

impl Lpar {
    /// The bandwidth its NICs share: its own, else its profile's; `None`: not limited.
    pub fn effective_bandwidth(&self) -> Option<Bandwidth> {
        self.bandwidth.or(self.profile.map(|p| p.bandwidth))
    }
}

/// One IQD NIC of an LPAR, attached to one CHPID, in one of its VLANs or in none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nic {
    #[serde(serialize_with = "serialize_chpid")]
    pub chpid: u8,
    /// The NIC's VLAN within its CHPID (1-4094); `None`: the CHPID's untagged segment. The
    /// fabric's property: the LPAR sees an untagged interface.
    pub vlan: Option<u16>,
    pub name: String,
    #[serde(serialize_with = "serialize_devno")]
    pub devno: u16,
    #[serde(serialize_with = "serialize_mac")]
    pub mac: [u8; 6],
    pub ipv4: Vec<Ipv4Cidr>,
    /// The NIC's IPv6 addresses as the file lists them (its link-local address is not listed:
    /// it follows from the MAC, [`Nic::link_local`]).
    pub ipv6: Vec<Ipv6Cidr>,
    /// Names of the NIC's security groups (`["default"]` unless the file lists them).
    pub security_groups: Vec<String>,
    /// Whether the NIC may send from addresses it did not register (and, on layer 2, from
    /// other MACs).
    pub allow_ip_spoofing: bool,
    /// A layer-2 NIC (qeth's `layer2` attribute): forwarded by MAC among the layer-2 NICs of
    /// its segment, any EtherType, ordinary ARP. Layer-3 NICs cannot reach it, nor it them.
    pub layer2: bool,
    /// Whether the NIC receives broadcasts (the VNIC characteristic of that name): the limited
    /// and directed IPv4 broadcasts on layer 3, the broadcast MAC on layer 2.
    pub rx_bcast: bool,
}

/// An IPv4 address with its prefix length, written `10.0.0.1/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// An IPv6 address with its prefix length, written `fd00:f0::1/64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Cidr {
    pub addr: Ipv6Addr,
    pub prefix: u8,
}

/// Why a string is not an `a.b.c.d/prefix` address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CidrError(String);

impl Mfs {
    /// All sizes, smallest first.
    pub const ALL: [Mfs; 4] = [Mfs::K16, Mfs::K24, Mfs::K40, Mfs::K64];

    /// The frame size in bytes.
    pub fn bytes(self) -> u32 {
        match self {
            Mfs::K16 => 16 * 1024,
            Mfs::K24 => 24 * 1024,
            Mfs::K40 => 40 * 1024,
            Mfs::K64 => 64 * 1024,
        }
    }

    /// The MTU of NICs on a CHPID with this MFS: the frame size less the 8K the hardware keeps
    /// for its own headers.
    pub fn mtu(self) -> u32 {
        self.bytes() - 8 * 1024
    }

    /// The spelling used in the fabric file, e.g. `16K`.
    pub fn label(self) -> &'static str {
        match self {
            Mfs::K16 => "16K",
            Mfs::K24 => "24K",
            Mfs::K40 => "40K",
            Mfs::K64 => "64K",
        }
    }

    /// The size written `label` (either case), e.g. `16K`.
    pub fn from_label(s: &str) -> Option<Mfs> {
        Mfs::ALL
            .into_iter()
            .find(|m| m.label().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Mfs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl Serialize for Mfs {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.label())
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    /// Parses `a.b.c.d/prefix`; the prefix is required and must be 1-32. Which addresses may
    /// be registered with a CHPID is checked by the fabric validation, not here.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| CidrError("missing /prefix (e.g. 10.0.0.1/24)".into()))?;
        let addr = addr
            .parse::<Ipv4Addr>()
            .map_err(|_| CidrError(format!("{addr:?} is not an IPv4 address")))?;
        // Digits only: u8::from_str would also take a leading '+'.
        let prefix = Some(prefix)
            .filter(|p| !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u8>().ok())
            .filter(|p| (1..=32).contains(p))
            .ok_or_else(|| CidrError(format!("prefix /{prefix} is not in 1..=32")))?;
        Ok(Ipv4Cidr { addr, prefix })
    }
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv6Cidr {
    type Err = CidrError;

    /// Parses `addr/prefix`; the prefix is required and must be 1-128. Which addresses may be
    /// registered with a CHPID is checked by the fabric validation, not here.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| CidrError("missing /prefix (e.g. fd00:f0::1/64)".into()))?;
        let addr = addr
            .parse::<Ipv6Addr>()
            .map_err(|_| CidrError(format!("{addr:?} is not an IPv6 address")))?;
        let prefix = Some(prefix)
            .filter(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u8>().ok())
            .filter(|p| (1..=128).contains(p))
            .ok_or_else(|| CidrError(format!("prefix /{prefix} is not in 1..=128")))?;
        Ok(Ipv6Cidr { addr, prefix })
    }
}

impl Serialize for Ipv6Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The link-local address Linux gives an interface with this MAC: `fe80::/64` with the
/// modified EUI-64 interface identifier (universal/local bit flipped, `ff:fe` in the middle).
pub fn link_local(mac: &[u8; 6]) -> Ipv6Addr {
    let [a, b, c, d, e, f] = *mac;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        a ^ 0x02,
        b,
        c,
        0xff,
        0xfe,
        d,
        e,
        f,
    ])
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Nic {
    /// The CCW bus IDs of the read, write and data devices, as `chzdev`/`znetconf` write them.
    pub fn device_triple(&self) -> String {
        let d = u32::from(self.devno);
        format!("0.0.{:04x},0.0.{:04x},0.0.{:04x}", d, d + 1, d + 2)
    }

    /// The NIC's link-local address (from its MAC, as the kernel forms it on `hsiN`).
    pub fn link_local(&self) -> Ipv6Addr {
        link_local(&self.mac)
    }

    /// The NIC's segment (CHPID and VLAN), as the data plane computes it from its port: the
    /// scope of its addresses, connections and remote-group memberships.
    pub fn segment(&self) -> u32 {
        iqd_common::segment_of(
            &iqd_common::PortInfo::new(self.chpid, 0, self.mac)
                .with_vlan(self.vlan.unwrap_or(iqd_common::NO_VLAN)),
        )
    }

    /// The NIC's segment in words: `CHPID F0`, or `CHPID F0 VLAN 100`.
    pub fn segment_label(&self) -> String {
        segment_label(self.chpid, self.vlan)
    }

    /// Every address the NIC registers in its segment: its IPv4 and IPv6 addresses and its
    /// link-local address.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.ipv4
            .iter()
            .map(|c| IpAddr::V4(c.addr))
            .chain(self.ipv6.iter().map(|c| IpAddr::V6(c.addr)))
            .chain(std::iter::once(IpAddr::V6(self.link_local())))
            .collect()
    }
}

impl Fabric {
    /// The fabric's own network namespace, `iqd-<name>`.
    pub fn netns_name(&self) -> String {
        fabric_netns(&self.name)
    }

    /// The CHPID with this id, if the fabric defines it.
    pub fn chpid(&self, id: u8) -> Option<&Chpid> {
        self.chpids.iter().find(|c| c.id == id)
    }

    /// The security group with this name (the implicit `default` included).
    pub fn security_group(&self, name: &str) -> Option<&SecurityGroup> {
        self.security_groups.iter().find(|g| g.name == name)
    }
}

/// A CHPID as written in the fabric file and by the hardware tools: two upper-case hex digits.
pub fn chpid_label(id: u8) -> String {
    format!("{id:02X}")
}

/// A segment in words: `CHPID F0` (untagged), or `CHPID F0 VLAN 100`.
pub fn segment_label(chpid: u8, vlan: Option<u16>) -> String {
    match vlan {
        Some(vlan) => format!("CHPID {} VLAN {vlan}", chpid_label(chpid)),
        None => format!("CHPID {}", chpid_label(chpid)),
    }
}

/// A MAC address in the usual lower-case colon form.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

fn serialize_chpid<S: Serializer>(id: &u8, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&chpid_label(*id))
}

fn serialize_devno<S: Serializer>(devno: &u16, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format!("{devno:04x}"))
}

fn serialize_mac<S: Serializer>(mac: &[u8; 6], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_mac(mac))
}

/// The network namespace of the fabric named `fabric_name`, `iqd-<name>`.
pub fn fabric_netns(fabric_name: &str) -> String {
    format!("iqd-{fabric_name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_is_eui64_of_mac() {
        assert_eq!(
            link_local(&[0x02, 0x00, 0x00, 0xf0, 0x70, 0x00]),
            "fe80::ff:fef0:7000".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            link_local(&[0x00, 0x11, 0x22, 0x33, 0x44, 0x55]),
            "fe80::211:22ff:fe33:4455".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn ipv6_cidr_parse() {
        let c: Ipv6Cidr = "fd00:f0::1/64".parse().unwrap();
        assert_eq!(c.to_string(), "fd00:f0::1/64");
        assert_eq!(c.prefix, 64);
        for bad in [
            "fd00::1",
            "fd00::1/0",
            "fd00::1/129",
            "fd00::1/+6",
            "10.0.0.1/24",
            "x/64",
        ] {
            assert!(bad.parse::<Ipv6Cidr>().is_err(), "{bad} accepted");
        }
    }
}
