//! The fabric as iqd models it: CHPIDs, LPARs, their NICs and addresses, the data path, and the
//! security groups ([`security_groups`]). These are the types a validated fabric file becomes
//! (`config` parses and validates the file into them), that the rule compiler (`secgroup`)
//! compiles and that `up`, `status` and the switch act on. A leaf: it depends on no other
//! module of the crate.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Serialize, Serializer};

mod security_groups;
pub use security_groups::{
    implicit_default, prefix_mask, Direction, Protocol, Remote, RemoteCidr, Rule, SecurityGroup,
    DEFAULT_GROUP,
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
    pub nics: Vec<Nic>,
}

/// One IQD NIC of an LPAR, attached to one CHPID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nic {
    #[serde(serialize_with = "serialize_chpid")]
    pub chpid: u8,
    pub name: String,
    #[serde(serialize_with = "serialize_devno")]
    pub devno: u16,
    #[serde(serialize_with = "serialize_mac")]
    pub mac: [u8; 6],
    pub ipv4: Vec<Ipv4Cidr>,
    /// Names of the NIC's security groups (`["default"]` unless the file lists them).
    pub security_groups: Vec<String>,
    /// Whether the NIC may send from addresses it did not register.
    pub allow_ip_spoofing: bool,
}

/// An IPv4 address with its prefix length, written `10.0.0.1/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
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
