//! Security groups: named sets of allow rules, with the semantics of IBM Cloud VPC security
//! groups: rules only allow, a NIC's groups are merged, and a group named `default` exists
//! without being written.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use serde::{Serialize, Serializer};

/// The group every NIC without `security_groups` gets, defined implicitly unless written.
pub const DEFAULT_GROUP: &str = "default";

/// A named set of allow rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityGroup {
    pub name: String,
    pub rules: Vec<Rule>,
}

/// One allow rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub direction: Direction,
    pub protocol: Protocol,
    /// Destination port range (inclusive), TCP and UDP only; `None` allows every port.
    pub ports: Option<(u16, u16)>,
    /// ICMP type and code; `None` allows every type (or every code of the type).
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub remote: Remote,
}

/// Which way a rule applies, seen from the NIC that has the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    All,
    Tcp,
    Udp,
    /// ICMPv4.
    Icmp,
    /// ICMPv6.
    Icmpv6,
}

/// The other end a rule admits: the source of inbound and the destination of outbound traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Any,
    /// An address block; a single address is a /32 (IPv4) or /128 (IPv6).
    Cidr(RemoteCidr),
    /// The registered addresses of every NIC that has this group.
    Group(String),
}

/// An address block with no host bits set: `a.b.c.d/n` (0 <= n <= 32) or an IPv6 block
/// `x::/n` (0 <= n <= 128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteCidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl RemoteCidr {
    /// Whether `addr` lies in the block. An IPv4 block holds no IPv6 address and the other
    /// way round (compared as IPv4-mapped addresses, as the data plane keys them).
    pub fn contains(&self, addr: impl Into<IpAddr>) -> bool {
        let (net, prefix) = self.mapped();
        prefix_mask128(prefix) & (u128::from(mapped(addr.into())) ^ u128::from(net)) == 0
    }

    /// The block as the data plane keys it: IPv4 blocks IPv4-mapped (`::ffff:a.b.c.d`, prefix
    /// + 96), IPv6 blocks as they are.
    pub fn mapped(&self) -> (Ipv6Addr, u8) {
        match self.addr {
            IpAddr::V4(a) => (a.to_ipv6_mapped(), self.prefix.min(32) + 96),
            IpAddr::V6(a) => (a, self.prefix.min(128)),
        }
    }
}

/// An address as the data plane keys it: IPv4 addresses IPv4-mapped, IPv6 as they are.
pub fn mapped(addr: IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// The netmask of a 128-bit prefix length.
pub fn prefix_mask128(prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => u128::MAX << (128 - u32::from(p.min(128))),
    }
}

/// The netmask of a prefix length, as a host-order `u32`.
pub fn prefix_mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

impl fmt::Display for RemoteCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        })
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::All => "all",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Icmpv6 => "icmpv6",
        })
    }
}

impl Serialize for Remote {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Remote::Any => serializer.serialize_str("any"),
            Remote::Cidr(cidr) => serializer.collect_str(cidr),
            Remote::Group(group) => serializer.collect_str(&format_args!("group:{group}")),
        }
    }
}

/// The `default` group as it is when the file does not write one: inbound from its own
/// members, all outbound.
pub fn implicit_default() -> SecurityGroup {
    SecurityGroup {
        name: DEFAULT_GROUP.to_string(),
        rules: vec![
            Rule {
                direction: Direction::Inbound,
                protocol: Protocol::All,
                ports: None,
                icmp_type: None,
                icmp_code: None,
                remote: Remote::Group(DEFAULT_GROUP.to_string()),
            },
            Rule {
                direction: Direction::Outbound,
                protocol: Protocol::All,
                ports: None,
                icmp_type: None,
                icmp_code: None,
                remote: Remote::Any,
            },
        ],
    }
}
