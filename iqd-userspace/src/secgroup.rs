//! Security groups compiled for the data plane, and the same policy evaluated in plain Rust.
//!
//! Each NIC's groups are merged (union) and compiled into one rule-table entry per direction,
//! protocol class and remote prefix. An entry holds every range its NIC's rules allow for any
//! remote containing that prefix, so the kernel side needs one longest-prefix match and a binary
//! search. [`RuleTable::allows`] answers the same question from the compiled table and is what
//! the loader uses to find tracked connections that new rules no longer allow.
//!
//! The compiler knows how much the data plane's rule table holds, so the capacity check lives
//! here too ([`check_capacity`]); validation (`config`) calls it, so a fabric file whose groups
//! do not fit is refused before anything changes. Like `config`, this module builds on the
//! fabric's types (`crate::domain`) and on nothing else of the crate.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};

use iqd_common::{
    sg_direction, sg_proto,
    wire::{
        ICMPV6_ECHO_REQUEST, ICMP_ECHO_REQUEST, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP,
        IPPROTO_UDP,
    },
    CtEntry, CtKey, SgKey, SgRanges, MAX_SG_ENTRIES, MAX_SG_RANGES, SG_KEY_FIXED_BITS,
};

use crate::domain::{mapped, prefix_mask128, Direction, Fabric, Nic, Protocol, Remote, Rule};

/// An inclusive range of destination ports, or of `type << 8 | code` for ICMP.
pub type Range = (u16, u16);

const EVERYTHING: Range = (0, u16::MAX);

/// A remote address block as the data plane keys it: a 16-byte network address (IPv4
/// IPv4-mapped) and its prefix length in bits of those 16 bytes (an IPv4 /24 is /120).
type Prefix = (Ipv6Addr, u8);

/// Whether the block `(net, prefix)` holds `addr` (both as the data plane keys them).
fn holds((net, prefix): Prefix, addr: Ipv6Addr) -> bool {
    prefix_mask128(prefix) & (u128::from(net) ^ u128::from(addr)) == 0
}

/// IPv4 addresses as the data plane keys them: `::ffff:0:0/96`.
const IPV4_MAPPED: Prefix = (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96);

/// Whether a remote block can hold an address a frame of `class` carries: ICMPv4 frames carry
/// only IPv4 addresses and ICMPv6 frames only IPv6 ones, so entries for the other family
/// would never match. Leaving them out keeps the table small (a remote group's link-local
/// addresses, for instance, need no ICMPv4 entries).
fn fits_class(block: Prefix, class: u8) -> bool {
    let overlaps_v4 = holds((block.0, block.1.min(96)), IPV4_MAPPED.0);
    let v4_only = block.1 >= 96 && overlaps_v4;
    match class {
        sg_proto::ICMP => overlaps_v4,
        sg_proto::ICMPV6 => !v4_only,
        _ => true,
    }
}

/// The protocol classes a rule covers.
fn classes(protocol: Protocol) -> &'static [u8] {
    match protocol {
        Protocol::All => &[
            sg_proto::TCP,
            sg_proto::UDP,
            sg_proto::ICMP,
            sg_proto::ICMPV6,
            sg_proto::OTHER,
        ],
        Protocol::Tcp => &[sg_proto::TCP],
        Protocol::Udp => &[sg_proto::UDP],
        Protocol::Icmp => &[sg_proto::ICMP],
        Protocol::Icmpv6 => &[sg_proto::ICMPV6],
    }
}

/// The range a rule allows within one of its classes.
fn rule_range(rule: &Rule) -> Range {
    match rule.protocol {
        Protocol::Tcp | Protocol::Udp => rule.ports.unwrap_or((0, u16::MAX)),
        Protocol::Icmp | Protocol::Icmpv6 => match (rule.icmp_type, rule.icmp_code) {
            (Some(t), Some(c)) => {
                let v = (t as u16) << 8 | c as u16;
                (v, v)
            }
            (Some(t), None) => ((t as u16) << 8, (t as u16) << 8 | 0xff),
            _ => EVERYTHING,
        },
        Protocol::All => EVERYTHING,
    }
}

fn direction_code(direction: Direction) -> u8 {
    match direction {
        Direction::Inbound => sg_direction::INBOUND,
        Direction::Outbound => sg_direction::OUTBOUND,
    }
}

/// The addresses of every NIC in `segment` that is a member of `group` (IPv4, IPv6 and
/// link-local), as the data plane keys them. Only that segment's: a NIC's traffic never leaves
/// its segment, and another segment's member may hold an address a non-member has here.
fn members(fabric: &Fabric, group: &str, segment: u32) -> Vec<Ipv6Addr> {
    let mut addrs: Vec<Ipv6Addr> = fabric
        .lpars
        .iter()
        .flat_map(|l| l.nics.iter())
        .filter(|n| n.segment() == segment)
        .filter(|n| n.security_groups.iter().any(|g| g == group))
        .flat_map(|n| n.addresses().into_iter().map(mapped))
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

/// The fewest address blocks that hold exactly `addrs` (sorted, distinct): two sibling blocks
/// (`x/n` and `x + 2^(128-n)/n`, the first aligned to `n - 1`) merge into one, repeatedly.
fn aggregate(addrs: Vec<Ipv6Addr>) -> Vec<Prefix> {
    let mut blocks: Vec<(u128, u8)> = Vec::with_capacity(addrs.len());
    for addr in addrs {
        blocks.push((u128::from(addr), 128));
        while let [.., (a, n), (b, m)] = blocks[..] {
            let size = 1u128 << (128 - u32::from(n));
            let aligned = n > 0 && a & ((size << 1) - 1) == 0;
            if n != m || !aligned || a.checked_add(size) != Some(b) {
                break;
            }
            blocks.truncate(blocks.len() - 2);
            blocks.push((a, n - 1));
        }
    }
    blocks
        .into_iter()
        .map(|(a, n)| (Ipv6Addr::from(a), n))
        .collect()
}

/// Sorts and merges overlapping or adjacent ranges.
pub fn merge(mut ranges: Vec<Range>) -> Vec<Range> {
    ranges.sort();
    let mut out: Vec<Range> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if lo as u32 <= last.1 as u32 + 1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// One rule-table entry before encoding: whose, which way, which protocol, which remotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryKey {
    pub ifindex: u32,
    pub direction: u8,
    pub class: u8,
    /// The remote block's network address, IPv4 IPv4-mapped.
    pub remote: Ipv6Addr,
    /// Its prefix length in bits of the 16-byte address.
    pub prefix: u8,
}

impl EntryKey {
    /// The LPM-trie key: prefix length in bits and data.
    pub fn encode(&self) -> (u32, SgKey) {
        (
            SG_KEY_FIXED_BITS + self.prefix as u32,
            SgKey::new(
                self.ifindex,
                self.direction,
                self.class,
                self.remote.octets(),
            ),
        )
    }

    fn covers(&self, addr: Ipv6Addr) -> bool {
        holds((self.remote, self.prefix), addr)
    }
}

/// Every NIC's compiled rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleTable {
    pub entries: BTreeMap<EntryKey, Vec<Range>>,
}

/// A rule-table entry needs more ranges than the data plane holds.
#[derive(Debug, thiserror::Error)]
#[error("NIC {nic}: its security groups allow {count} separate {what} ranges for one remote; at most {max} fit")]
pub struct TooManyRanges {
    pub nic: String,
    pub count: usize,
    pub what: &'static str,
    pub max: usize,
}

impl RuleTable {
    /// Compiles the rules of every NIC in `fabric`; `port_of` gives a NIC's fabric-side ifindex
    /// (NICs it has none for are left out).
    pub fn compile(
        fabric: &Fabric,
        mut port_of: impl FnMut(&Nic) -> Option<u32>,
    ) -> Result<RuleTable, TooManyRanges> {
        let mut table = RuleTable::default();
        for lpar in &fabric.lpars {
            for nic in &lpar.nics {
                let Some(ifindex) = port_of(nic) else {
                    continue;
                };
                table.add_nic(fabric, nic, ifindex, &format!("{}/{}", lpar.name, nic.name))?;
            }
        }
        Ok(table)
    }

    fn add_nic(
        &mut self,
        fabric: &Fabric,
        nic: &Nic,
        ifindex: u32,
        label: &str,
    ) -> Result<(), TooManyRanges> {
        // (direction, class) -> remote prefixes with the range each rule allows
        let mut raw: BTreeMap<(u8, u8), Vec<(Prefix, Range)>> = BTreeMap::new();
        let rules = nic
            .security_groups
            .iter()
            .filter_map(|g| fabric.security_group(g))
            .flat_map(|g| g.rules.iter());
        for rule in rules {
            let remotes: Vec<Prefix> = match &rule.remote {
                // `::/0`: every address of both families.
                Remote::Any => vec![(Ipv6Addr::UNSPECIFIED, 0)],
                Remote::Cidr(cidr) => vec![cidr.mapped()],
                // The members as the fewest blocks that hold exactly them: a group of N NICs
                // with consecutive addresses costs a few entries, not N.
                Remote::Group(group) => aggregate(members(fabric, group, nic.segment())),
            };
            let range = rule_range(rule);
            for &class in classes(rule.protocol) {
                let list = raw
                    .entry((direction_code(rule.direction), class))
                    .or_default();
                list.extend(
                    remotes
                        .iter()
                        .filter(|r| fits_class(**r, class))
                        .map(|r| (*r, range)),
                );
            }
        }
        for ((direction, class), list) in raw {
            let prefixes: BTreeSet<Prefix> = list.iter().map(|(p, _)| *p).collect();
            for (remote, prefix) in prefixes {
                let key = EntryKey {
                    ifindex,
                    direction,
                    class,
                    remote,
                    prefix,
                };
                // Everything allowed for this prefix or any shorter one containing it: the
                // longest match must answer for all of them.
                let ranges = merge(
                    list.iter()
                        .filter(|(block, _)| block.1 <= prefix && holds(*block, remote))
                        .map(|(_, range)| *range)
                        .collect(),
                );
                if ranges.len() > MAX_SG_RANGES {
                    return Err(TooManyRanges {
                        nic: label.to_string(),
                        count: ranges.len(),
                        what: if class == sg_proto::ICMP || class == sg_proto::ICMPV6 {
                            "ICMP type/code"
                        } else {
                            "port"
                        },
                        max: MAX_SG_RANGES,
                    });
                }
                self.entries.insert(key, ranges);
            }
        }
        Ok(())
    }

    /// Whether the NIC behind `ifindex` allows traffic of `class` with `value` (destination
    /// port, or ICMP `type << 8 | code`) to or from `remote` in `direction`: the answer the
    /// data plane gives, computed from the same table.
    pub fn allows(
        &self,
        ifindex: u32,
        direction: u8,
        class: u8,
        remote: impl Into<IpAddr>,
        value: u16,
    ) -> bool {
        let remote = mapped(remote.into());
        let lo = EntryKey {
            ifindex,
            direction,
            class,
            remote: Ipv6Addr::UNSPECIFIED,
            prefix: 0,
        };
        let hi = EntryKey {
            remote: Ipv6Addr::from(u128::MAX),
            prefix: 128,
            ..lo
        };
        self.entries
            .range(lo..=hi)
            .filter(|(k, _)| k.covers(remote))
            .max_by_key(|(k, _)| k.prefix)
            .is_some_and(|(_, ranges)| ranges.iter().any(|(a, b)| *a <= value && value <= *b))
    }

    /// The entries encoded for the map.
    pub fn encoded(&self) -> Vec<((u32, SgKey), SgRanges)> {
        self.entries
            .iter()
            .map(|(key, ranges)| {
                let mut value = SgRanges {
                    count: ranges.len() as u32,
                    ..Default::default()
                };
                for (slot, (lo, hi)) in value.ranges.iter_mut().zip(ranges) {
                    *slot = (*lo as u32) << 16 | *hi as u32;
                }
                (key.encode(), value)
            })
            .collect()
    }
}

/// Whether the fabric's security groups fit the data plane's rule table; the message says by
/// how much they do not. Checked when the file is validated, before anything changes.
pub fn check_capacity(fabric: &Fabric) -> Result<(), String> {
    let mut next = 0u32;
    let table = RuleTable::compile(fabric, |_| {
        next += 1;
        Some(next)
    })
    .map_err(|e| e.to_string())?;
    if table.entries.len() > MAX_SG_ENTRIES as usize {
        return Err(format!(
            "the security groups compile to {} rule-table entries (one per NIC, direction, \
             protocol and remote prefix; remote groups count each member address), more than \
             the {MAX_SG_ENTRIES} the data plane holds: use fewer distinct remotes or wider blocks",
            table.entries.len()
        ));
    }
    Ok(())
}

/// Whether the rules in `table` still allow a tracked connection: the opener's outbound and
/// the peer's inbound rules, for the connection's first frame.
pub fn connection_allowed(table: &RuleTable, key: &CtKey, entry: &CtEntry) -> bool {
    let class = class_of(key.proto);
    let value = match class {
        // Only echo requests open ICMP and ICMPv6 connections.
        sg_proto::ICMP => (ICMP_ECHO_REQUEST as u16) << 8,
        sg_proto::ICMPV6 => (ICMPV6_ECHO_REQUEST as u16) << 8,
        sg_proto::TCP | sg_proto::UDP => key.dport,
        _ => 0,
    };
    let (saddr, daddr) = (Ipv6Addr::from(key.saddr), Ipv6Addr::from(key.daddr));
    table.allows(
        entry.origin_ifindex,
        sg_direction::OUTBOUND,
        class,
        daddr,
        value,
    ) && table.allows(
        entry.reply_ifindex,
        sg_direction::INBOUND,
        class,
        saddr,
        value,
    )
}

/// The rule-table class of an IP protocol number.
pub fn class_of(proto: u8) -> u8 {
    match proto {
        IPPROTO_ICMP => sg_proto::ICMP,
        IPPROTO_ICMPV6 => sg_proto::ICMPV6,
        IPPROTO_TCP => sg_proto::TCP,
        IPPROTO_UDP => sg_proto::UDP,
        _ => sg_proto::OTHER,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Three NICs on CHPID F0: A (10.0.0.1, groups `{a}`), B (10.0.0.2, `{b}`) and C
    /// (10.0.0.3, default group). Ports are numbered 1, 2, 3 in that order.
    fn fabric(groups: &str, a: &str, b: &str) -> Fabric {
        let text = format!(
            r#"[fabric]
name = "t"
{groups}
[[chpid]]
id = "F0"
[[lpar]]
name = "A"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.1/24"]
security_groups = {a}
[[lpar]]
name = "B"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.2/24"]
security_groups = {b}
[[lpar]]
name = "C"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.3/24"]
"#
        );
        Fabric::parse(&text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn table(fabric: &Fabric) -> RuleTable {
        let mut next = 0;
        RuleTable::compile(fabric, |_| {
            next += 1;
            Some(next)
        })
        .expect("compiles")
    }

    const IN: u8 = sg_direction::INBOUND;
    const OUT: u8 = sg_direction::OUTBOUND;

    fn ip(last: u8) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(10, 0, 0, last)
    }

    #[test]
    fn members_aggregate_into_the_fewest_blocks_holding_exactly_them() {
        let v4 = |n: u8| std::net::Ipv4Addr::new(10, 0, 0, n).to_ipv6_mapped();
        let blocks = |ns: &[u8]| aggregate(ns.iter().map(|n| v4(*n)).collect());
        assert_eq!(blocks(&[1]), [(v4(1), 128)]);
        assert_eq!(blocks(&[1, 2, 3]), [(v4(1), 128), (v4(2), 127)]);
        assert_eq!(blocks(&[0, 1, 2, 3]), [(v4(0), 126)]);
        // 1..=85: nine blocks instead of 85 entries.
        let all: Vec<u8> = (1..=85).collect();
        let got = blocks(&all);
        assert_eq!(got.len(), 9);
        for n in 0..=255u8 {
            let held = got.iter().any(|b| holds(*b, v4(n)));
            assert_eq!(held, (1..=85).contains(&n), "10.0.0.{n}");
        }
        // Not aligned: 1 and 2 are not siblings.
        assert_eq!(blocks(&[1, 2]), [(v4(1), 128), (v4(2), 128)]);
    }

    #[test]
    fn ranges_merge_when_they_overlap_or_touch() {
        assert_eq!(
            merge(vec![(80, 80), (81, 90), (5, 6), (85, 100)]),
            [(5, 6), (80, 100)]
        );
        assert_eq!(merge(vec![(1, 1), (3, 3)]), [(1, 1), (3, 3)]);
        assert_eq!(merge(vec![(0, u16::MAX), (7, 7)]), [(0, u16::MAX)]);
        assert!(merge(vec![]).is_empty());
    }

    #[test]
    fn longer_prefixes_also_hold_what_shorter_ones_allow() {
        let f = fabric(
            r#"[[security_group]]
name = "web"
rules = [
  { direction = "inbound", protocol = "tcp", port_min = 80, port_max = 80, remote = "10.0.0.0/24" },
  { direction = "inbound", protocol = "tcp", port_min = 22, port_max = 22, remote = "10.0.0.3" },
]"#,
            r#"["web"]"#,
            r#"["web"]"#,
        );
        let t = table(&f);
        let tcp = sg_proto::TCP;
        assert!(t.allows(1, IN, tcp, ip(3), 22));
        assert!(
            t.allows(1, IN, tcp, ip(3), 80),
            "the /24's port is merged into the /32"
        );
        assert!(t.allows(1, IN, tcp, ip(2), 80));
        assert!(!t.allows(1, IN, tcp, ip(2), 22), "22 only from 10.0.0.3");
        assert!(
            !t.allows(1, IN, tcp, std::net::Ipv4Addr::new(10, 0, 1, 3), 80),
            "outside the /24"
        );
        assert!(
            !t.allows(1, IN, sg_proto::UDP, ip(3), 80),
            "tcp rules allow no udp"
        );
        assert!(
            !t.allows(1, OUT, tcp, ip(3), 80),
            "web has no outbound rule"
        );
        let entry = t
            .entries
            .iter()
            .find(|(k, _)| k.ifindex == 1 && k.prefix == 128)
            .expect("the /32 entry");
        assert_eq!(entry.1, &vec![(22, 22), (80, 80)]);
    }

    #[test]
    fn groups_are_merged_and_remote_groups_are_their_members() {
        let f = fabric(
            r#"[[security_group]]
name = "db"
rules = [{ direction = "inbound", protocol = "tcp", port_min = 5432, port_max = 5432, remote_group = "app" }]
[[security_group]]
name = "app"
rules = [{ direction = "outbound", protocol = "all" }]
[[security_group]]
name = "ping"
rules = [{ direction = "inbound", protocol = "icmp", type = 8 }]"#,
            r#"["app"]"#,
            r#"["db", "ping"]"#,
        );
        let t = table(&f);
        assert!(t.allows(2, IN, sg_proto::TCP, ip(1), 5432), "A is in app");
        assert!(!t.allows(2, IN, sg_proto::TCP, ip(3), 5432), "C is not");
        assert!(
            t.allows(2, IN, sg_proto::ICMP, ip(3), 8 << 8),
            "ping is merged in"
        );
        assert!(
            t.allows(2, IN, sg_proto::ICMP, ip(3), 8 << 8 | 5),
            "any code of type 8"
        );
        assert!(!t.allows(2, IN, sg_proto::ICMP, ip(3), 13 << 8));
        assert!(
            t.allows(1, OUT, sg_proto::OTHER, ip(2), 0),
            "all covers other protocols"
        );
        // C has the implicit default: inbound from default's members (only C), all outbound.
        assert!(t.allows(3, OUT, sg_proto::UDP, ip(1), 53));
        assert!(t.allows(3, IN, sg_proto::UDP, ip(3), 53));
        assert!(!t.allows(3, IN, sg_proto::UDP, ip(1), 53));
    }

    #[test]
    fn remote_groups_hold_only_the_members_of_the_rule_owners_segment() {
        // A (10.0.0.1, app) and B (db) in VLAN 100 of F0; D holds 10.0.0.1 too, in the
        // untagged segment of F0, and E (10.0.0.9, app) is in VLAN 200.
        let text = r#"[fabric]
name = "t"
[[security_group]]
name = "db"
rules = [{ direction = "inbound", protocol = "tcp", port_min = 5432, port_max = 5432, remote_group = "app" }]
[[security_group]]
name = "app"
rules = [{ direction = "outbound", protocol = "all" }]
[[chpid]]
id = "F0"
[[lpar]]
name = "A"
[[lpar.nic]]
chpid = "F0"
vlan = 100
ipv4 = ["10.0.0.1/24"]
security_groups = ["app"]
[[lpar]]
name = "B"
[[lpar.nic]]
chpid = "F0"
vlan = 100
ipv4 = ["10.0.0.2/24"]
security_groups = ["db"]
[[lpar]]
name = "D"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.1/24"]
security_groups = ["db"]
[[lpar]]
name = "E"
[[lpar.nic]]
chpid = "F0"
vlan = 200
ipv4 = ["10.0.0.9/24"]
security_groups = ["app"]
"#;
        let f = Fabric::parse(text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"));
        let t = table(&f);
        // B (port 2) takes 5432 from A, the app member of its segment, not from E (VLAN 200).
        assert!(t.allows(2, IN, sg_proto::TCP, ip(1), 5432));
        assert!(!t.allows(2, IN, sg_proto::TCP, ip(9), 5432));
        // D (port 3, untagged) has no app member in its segment: 10.0.0.1 there is D itself,
        // not A, and E's address is another segment's.
        assert!(!t.allows(3, IN, sg_proto::TCP, ip(1), 5432));
        assert!(!t.allows(3, IN, sg_proto::TCP, ip(9), 5432));
    }

    #[test]
    fn encoding_packs_ranges_and_prefixes() {
        let f = fabric(
            r#"[[security_group]]
name = "web"
rules = [{ direction = "inbound", protocol = "udp", port_min = 5000, port_max = 5001, remote = "10.0.0.0/16" }]"#,
            r#"["web"]"#,
            r#"["web"]"#,
        );
        let encoded = table(&f).encoded();
        let ((bits, key), ranges) = encoded
            .iter()
            .find(|((_, k), _)| k.ifindex_be == 1u32.to_be_bytes() && k.direction == IN)
            .expect("A's inbound entry");
        assert_eq!(*bits, SG_KEY_FIXED_BITS + 96 + 16);
        assert_eq!(key.proto, sg_proto::UDP);
        assert_eq!(key.remote, iqd_common::ipv4_mapped([10, 0, 0, 0]));
        assert_eq!(ranges.count, 1);
        assert_eq!(ranges.ranges[0], 5000 << 16 | 5001);
    }

    #[test]
    fn tracked_connections_are_rechecked_against_new_rules() {
        let open = fabric(
            r#"[[security_group]]
name = "srv"
rules = [{ direction = "inbound", protocol = "tcp", port_min = 5201, port_max = 5201 }]"#,
            r#"["default"]"#,
            r#"["srv"]"#,
        );
        let shut = fabric(
            r#"[[security_group]]
name = "srv"
rules = [{ direction = "inbound", protocol = "tcp", port_min = 22, port_max = 22 }]"#,
            r#"["default"]"#,
            r#"["srv"]"#,
        );
        let key = CtKey::new(
            0xf0,
            iqd_common::ipv4_mapped([10, 0, 0, 1]),
            iqd_common::ipv4_mapped([10, 0, 0, 2]),
            40000,
            5201,
            6,
        );
        let entry = CtEntry {
            origin_ifindex: 1,
            reply_ifindex: 2,
            ..Default::default()
        };
        assert!(connection_allowed(&table(&open), &key, &entry));
        assert!(!connection_allowed(&table(&shut), &key, &entry));
    }

    /// A (fd00:f0::1, groups `{a}`), B (fd00:f0::2, `{b}`) and C (fd00:f0::3, default), each
    /// also with an IPv4 address: dual stack. Ports 1, 2, 3.
    fn dual_stack(groups: &str, a: &str, b: &str) -> Fabric {
        let text = format!(
            r#"[fabric]
name = "t"
{groups}
[[chpid]]
id = "F0"
[[lpar]]
name = "A"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.1/24"]
ipv6 = ["fd00:f0::1/64"]
security_groups = {a}
[[lpar]]
name = "B"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.2/24"]
ipv6 = ["fd00:f0::2/64"]
security_groups = {b}
[[lpar]]
name = "C"
[[lpar.nic]]
chpid = "F0"
ipv6 = ["fd00:f0::3/64"]
"#
        );
        Fabric::parse(&text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().expect("IPv6 address")
    }

    #[test]
    fn ipv6_remotes_icmpv6_and_both_families_without_a_remote() {
        let f = dual_stack(
            r#"[[security_group]]
name = "web"
rules = [
  { direction = "inbound", protocol = "tcp", port_min = 443, port_max = 443 },
  { direction = "inbound", protocol = "tcp", port_min = 22, port_max = 22, remote = "fd00:f0::/126" },
  { direction = "inbound", protocol = "udp", port_min = 53, port_max = 53, remote = "10.0.0.0/24" },
  { direction = "inbound", protocol = "icmpv6", type = 128 },
  { direction = "inbound", protocol = "icmp", type = 8 },
]"#,
            r#"["default"]"#,
            r#"["web"]"#,
        );
        let t = table(&f);
        let (tcp, udp) = (sg_proto::TCP, sg_proto::UDP);
        // No remote: both families.
        assert!(t.allows(2, IN, tcp, ip(1), 443));
        assert!(t.allows(2, IN, tcp, v6("fd00:f0::1"), 443));
        assert!(t.allows(2, IN, tcp, v6("fe80::1"), 443));
        // An IPv6 block holds only its IPv6 addresses.
        assert!(t.allows(2, IN, tcp, v6("fd00:f0::3"), 22));
        assert!(
            !t.allows(2, IN, tcp, v6("fd00:f0::4"), 22),
            "outside the /126"
        );
        assert!(
            !t.allows(2, IN, tcp, ip(3), 22),
            "an IPv6 block holds no IPv4"
        );
        // An IPv4 block only IPv4.
        assert!(t.allows(2, IN, udp, ip(3), 53));
        assert!(!t.allows(2, IN, udp, v6("fd00:f0::3"), 53));
        // icmpv6 and icmp are separate classes.
        assert!(t.allows(2, IN, sg_proto::ICMPV6, v6("fd00:f0::1"), 128 << 8));
        assert!(!t.allows(2, IN, sg_proto::ICMPV6, v6("fd00:f0::1"), 8 << 8));
        assert!(t.allows(2, IN, sg_proto::ICMP, ip(1), 8 << 8));
        assert!(!t.allows(2, IN, sg_proto::ICMP, ip(1), 128 << 8));
        // ICMP entries only for IPv4 remotes, ICMPv6 entries only for IPv6 ones.
        for k in t.entries.keys() {
            let v4 = k.prefix >= 96 && k.remote.to_ipv4_mapped().is_some();
            assert!(!(k.class == sg_proto::ICMP && !v4 && k.prefix > 0), "{k:?}");
            assert!(!(k.class == sg_proto::ICMPV6 && v4), "{k:?}");
        }
    }

    #[test]
    fn remote_groups_and_the_default_group_cover_ipv6_and_link_local() {
        let f = dual_stack(
            r#"[[security_group]]
name = "db"
rules = [{ direction = "inbound", protocol = "tcp", port_min = 5432, port_max = 5432, remote_group = "app" }]
[[security_group]]
name = "app"
rules = [{ direction = "outbound", protocol = "all" }]"#,
            r#"["app"]"#,
            r#"["db"]"#,
        );
        let t = table(&f);
        let a_ll = f.lpars[0].nics[0].link_local();
        assert!(t.allows(2, IN, sg_proto::TCP, ip(1), 5432));
        assert!(t.allows(2, IN, sg_proto::TCP, v6("fd00:f0::1"), 5432));
        assert!(t.allows(2, IN, sg_proto::TCP, a_ll, 5432), "A's link-local");
        assert!(!t.allows(2, IN, sg_proto::TCP, v6("fd00:f0::3"), 5432));
        // C has the implicit default: inbound from its members (C only), every family.
        let c_ll = f.lpars[2].nics[0].link_local();
        assert!(t.allows(3, IN, sg_proto::ICMPV6, c_ll, 128 << 8));
        assert!(t.allows(3, IN, sg_proto::UDP, v6("fd00:f0::3"), 53));
        assert!(!t.allows(3, IN, sg_proto::UDP, v6("fd00:f0::1"), 53));
        assert!(t.allows(3, OUT, sg_proto::ICMPV6, v6("fd00:f0::1"), 128 << 8));
        assert!(t.allows(3, OUT, sg_proto::TCP, ip(1), 80));
    }

    #[test]
    fn ipv6_connections_are_rechecked_against_new_rules() {
        let rules = |proto: &str| {
            format!(
                r#"[[security_group]]
name = "srv"
rules = [{{ direction = "inbound", protocol = "{proto}" }}]"#
            )
        };
        let key = CtKey::new(
            0xf0,
            v6("fd00:f0::1").octets(),
            v6("fd00:f0::2").octets(),
            7,
            7,
            IPPROTO_ICMPV6,
        );
        let entry = CtEntry {
            origin_ifindex: 1,
            reply_ifindex: 2,
            ..Default::default()
        };
        let open = dual_stack(&rules("icmpv6"), r#"["default"]"#, r#"["srv"]"#);
        let shut = dual_stack(&rules("icmp"), r#"["default"]"#, r#"["srv"]"#);
        assert!(connection_allowed(&table(&open), &key, &entry));
        assert!(!connection_allowed(&table(&shut), &key, &entry));
    }

    #[test]
    fn the_rule_table_capacity_is_checked_at_validation() {
        // 5 groups of 250 single-address rules each on 20 NICs: 1250 prefixes per NIC, 4
        // classes each (protocol "all") = 100,000 entries, over the 65,536 the map holds.
        let mut groups = String::new();
        for g in 0..5 {
            groups.push_str(&format!("[[security_group]]\nname = \"g{g}\"\nrules = [\n"));
            for r in 0..250 {
                groups.push_str(&format!(
                    "{{ direction = \"inbound\", protocol = \"all\", remote = \"172.16.{g}.{r}\" }},\n"
                ));
            }
            groups.push_str("]\n");
        }
        let mut text = format!("[fabric]\nname = \"big\"\n{groups}[[chpid]]\nid = \"F0\"\n");
        for n in 0..20 {
            text.push_str(&format!(
                "[[lpar]]\nname = \"L{n}\"\n[[lpar.nic]]\nchpid = \"F0\"\nipv4 = [\"10.0.0.{}/24\"]\n\
                 security_groups = [\"g0\", \"g1\", \"g2\", \"g3\", \"g4\"]\n",
                n + 1
            ));
        }
        let err = Fabric::parse(&text, Path::new("big.toml")).expect_err("too big");
        let msg = err.to_string();
        assert!(
            msg.contains("compile to 100000 rule-table entries") && msg.contains("65536"),
            "{msg}"
        );
    }
}
