//! Security groups compiled for the data plane, and the same policy evaluated in plain Rust.
//!
//! Each NIC's groups are merged (union) and compiled into one rule-table entry per direction,
//! protocol class and remote prefix. An entry holds every range its NIC's rules allow for any
//! remote containing that prefix, so the kernel side needs one longest-prefix match and a binary
//! search. [`RuleTable::allows`] answers the same question from the compiled table and is what
//! the loader uses to find tracked connections that new rules no longer allow.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use iqd_common::{
    sg_direction, sg_proto, CtEntry, CtKey, SgKey, SgRanges, MAX_SG_RANGES, SG_KEY_FIXED_BITS,
};

use crate::config::{Direction, Fabric, Nic, Protocol, Remote, RemoteCidr, Rule};

/// An inclusive range of destination ports, or of `type << 8 | code` for ICMP.
pub type Range = (u16, u16);

const EVERYTHING: Range = (0, u16::MAX);

/// A remote address block: network address and prefix length.
type Prefix = (Ipv4Addr, u8);

/// The protocol classes a rule covers.
fn classes(protocol: Protocol) -> &'static [u8] {
    match protocol {
        Protocol::All => &[
            sg_proto::TCP,
            sg_proto::UDP,
            sg_proto::ICMP,
            sg_proto::OTHER,
        ],
        Protocol::Tcp => &[sg_proto::TCP],
        Protocol::Udp => &[sg_proto::UDP],
        Protocol::Icmp => &[sg_proto::ICMP],
    }
}

/// The range a rule allows within one of its classes.
fn rule_range(rule: &Rule) -> Range {
    match rule.protocol {
        Protocol::Tcp | Protocol::Udp => rule.ports.unwrap_or((0, u16::MAX)),
        Protocol::Icmp => match (rule.icmp_type, rule.icmp_code) {
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

/// The addresses of every NIC that is a member of `group`.
fn members(fabric: &Fabric, group: &str) -> Vec<Ipv4Addr> {
    let mut addrs: Vec<Ipv4Addr> = fabric
        .lpars
        .iter()
        .flat_map(|l| l.nics.iter())
        .filter(|n| n.security_groups.iter().any(|g| g == group))
        .flat_map(|n| n.ipv4.iter().map(|c| c.addr))
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
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
    pub remote: Ipv4Addr,
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

    fn covers(&self, addr: Ipv4Addr) -> bool {
        RemoteCidr {
            addr: self.remote,
            prefix: self.prefix,
        }
        .contains(addr)
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
        port_of: impl Fn(&Nic) -> Option<u32>,
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
                Remote::Any => vec![(Ipv4Addr::UNSPECIFIED, 0)],
                Remote::Cidr(cidr) => vec![(cidr.addr, cidr.prefix)],
                Remote::Group(group) => members(fabric, group)
                    .into_iter()
                    .map(|a| (a, 32))
                    .collect(),
            };
            let range = rule_range(rule);
            for &class in classes(rule.protocol) {
                let list = raw
                    .entry((direction_code(rule.direction), class))
                    .or_default();
                list.extend(remotes.iter().map(|r| (*r, range)));
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
                        .filter(|((r, p), _)| {
                            *p <= prefix
                                && RemoteCidr {
                                    addr: *r,
                                    prefix: *p,
                                }
                                .contains(remote)
                        })
                        .map(|(_, range)| *range)
                        .collect(),
                );
                if ranges.len() > MAX_SG_RANGES {
                    return Err(TooManyRanges {
                        nic: label.to_string(),
                        count: ranges.len(),
                        what: if class == sg_proto::ICMP {
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
        remote: Ipv4Addr,
        value: u16,
    ) -> bool {
        let lo = EntryKey {
            ifindex,
            direction,
            class,
            remote: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
        };
        let hi = EntryKey {
            remote: Ipv4Addr::BROADCAST,
            prefix: 32,
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

/// Whether the rules in `table` still allow a tracked connection: the opener's outbound and
/// the peer's inbound rules, for the connection's first frame.
pub fn connection_allowed(table: &RuleTable, key: &CtKey, entry: &CtEntry) -> bool {
    let class = class_of(key.proto);
    let value = match class {
        // Only echo requests open ICMP connections.
        sg_proto::ICMP => 8 << 8,
        sg_proto::TCP | sg_proto::UDP => key.dport,
        _ => 0,
    };
    let (saddr, daddr) = (Ipv4Addr::from(key.saddr), Ipv4Addr::from(key.daddr));
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
        1 => sg_proto::ICMP,
        6 => sg_proto::TCP,
        17 => sg_proto::UDP,
        _ => sg_proto::OTHER,
    }
}
