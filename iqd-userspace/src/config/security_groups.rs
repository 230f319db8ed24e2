//! Security groups in the fabric file: `[[security_group]]` tables with their rules, and the
//! NICs' `security_groups` lists. Semantics follow IBM Cloud VPC security groups: rules only
//! allow, a NIC's groups are merged, and a group named `default` exists without being written.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize, Serializer};
use toml::Spanned;

use super::{Checked, Problems, Source};

/// The group every NIC without `security_groups` gets, defined implicitly unless written.
pub const DEFAULT_GROUP: &str = "default";
/// Most rules one group may hold.
pub const MAX_RULES_PER_GROUP: usize = 250;
/// Most groups one NIC may list.
pub const MAX_GROUPS_PER_NIC: usize = 5;

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
    Icmp,
}

/// The other end a rule admits: the source of inbound and the destination of outbound traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Any,
    /// An address block; a single address is a /32.
    Cidr(RemoteCidr),
    /// The registered addresses of every NIC that has this group.
    Group(String),
}

/// An address block `a.b.c.d/n` (0 <= n <= 32) with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteCidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl RemoteCidr {
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        prefix_mask(self.prefix) & (u32::from(addr) ^ u32::from(self.addr)) == 0
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

// ---------------------------------------------------------------------------------------------
// As written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecurityGroup {
    name: Spanned<String>,
    #[serde(default)]
    rules: Option<Spanned<Vec<Spanned<RawRule>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    direction: Option<Spanned<String>>,
    protocol: Option<Spanned<String>>,
    port_min: Option<Spanned<i64>>,
    port_max: Option<Spanned<i64>>,
    #[serde(rename = "type")]
    icmp_type: Option<Spanned<i64>>,
    code: Option<Spanned<i64>>,
    remote: Option<Spanned<String>>,
    remote_group: Option<Spanned<String>>,
}

/// A group that passed the per-value checks.
pub(super) struct CheckedGroup {
    pub group: SecurityGroup,
    pub name_pos: usize,
    /// `remote_group` references with their positions, checked once all groups are known.
    pub references: Vec<(String, usize)>,
}

/// Group names as VPC has them: lower-case letters, digits and '-', starting with a letter.
fn is_group_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

pub(super) fn check_group_name(name: &Spanned<String>) -> Checked<String> {
    let s = name.get_ref();
    if is_group_name(s) {
        Ok(s.clone())
    } else {
        Err((
            name.span().start,
            format!(
                "invalid security group name {s:?}: must be 1-63 characters of a-z, 0-9 and '-', \
                 starting with a letter"
            ),
        ))
    }
}

pub(super) fn check_group(
    problems: &mut Problems,
    raw: &Spanned<RawSecurityGroup>,
) -> Option<CheckedGroup> {
    let raw = raw.get_ref();
    let name = problems.check(check_group_name(&raw.name));
    let label = raw.name.get_ref();
    let mut rules = Vec::new();
    let mut references = Vec::new();
    let mut all_ok = true;
    if let Some(list) = &raw.rules {
        if list.get_ref().len() > MAX_RULES_PER_GROUP {
            problems.add(
                list.span().start,
                format!(
                    "security group {label} has {} rules, more than the limit of \
                     {MAX_RULES_PER_GROUP} per group",
                    list.get_ref().len()
                ),
            );
            all_ok = false;
        }
        for (index, rule) in list.get_ref().iter().enumerate() {
            let context = format!("security group {label}, rule {}", index + 1);
            match check_rule(problems, &context, rule) {
                Some((rule, reference)) => {
                    references.extend(reference);
                    rules.push(rule);
                }
                None => all_ok = false,
            }
        }
    }
    let name = name?;
    if !all_ok {
        return None;
    }
    Some(CheckedGroup {
        group: SecurityGroup { name, rules },
        name_pos: raw.name.span().start,
        references,
    })
}

fn port(value: &Spanned<i64>, key: &str, context: &str) -> Checked<u16> {
    let v = *value.get_ref();
    u16::try_from(v).ok().filter(|p| *p >= 1).ok_or_else(|| {
        (
            value.span().start,
            format!("{context}: {key} = {v} is out of range: ports are 1-65535"),
        )
    })
}

fn icmp_field(value: &Spanned<i64>, key: &str, max: i64, context: &str) -> Checked<u8> {
    let v = *value.get_ref();
    if (0..=max).contains(&v) {
        Ok(v as u8)
    } else {
        Err((
            value.span().start,
            format!("{context}: ICMP {key} = {v} is out of range: must be 0-{max}"),
        ))
    }
}

/// Parses a remote `a.b.c.d` or `a.b.c.d/n`.
pub fn parse_remote(s: &str) -> Result<RemoteCidr, String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
    let prefix = match prefix {
        None => 32,
        Some(p) => Some(p)
            .filter(|p| !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u8>().ok())
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("prefix /{p} is not in 0..=32"))?,
    };
    let network = Ipv4Addr::from(u32::from(addr) & prefix_mask(prefix));
    if network != addr {
        return Err(format!(
            "{addr}/{prefix} has host bits set: the block is {network}/{prefix}"
        ));
    }
    Ok(RemoteCidr { addr, prefix })
}

/// Checks one rule; also returns the group it names in `remote_group`, if any.
fn check_rule(
    problems: &mut Problems,
    context: &str,
    raw: &Spanned<RawRule>,
) -> Option<(Rule, Option<(String, usize)>)> {
    let pos = raw.span().start;
    let raw = raw.get_ref();
    let before = problems.0.len();
    let direction = match &raw.direction {
        Some(d) => match d.get_ref().as_str() {
            "inbound" => Some(Direction::Inbound),
            "outbound" => Some(Direction::Outbound),
            other => {
                problems.add(
                    d.span().start,
                    format!(
                        "{context}: invalid direction {other:?}: must be \"inbound\" or \"outbound\""
                    ),
                );
                None
            }
        },
        None => {
            problems.add(
                pos,
                format!("{context}: missing direction (\"inbound\" or \"outbound\")"),
            );
            None
        }
    };
    let protocol = match &raw.protocol {
        Some(p) => match p.get_ref().as_str() {
            "all" => Some(Protocol::All),
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "icmp" => Some(Protocol::Icmp),
            other => {
                problems.add(
                    p.span().start,
                    format!(
                        "{context}: invalid protocol {other:?}: must be \"all\", \"tcp\", \"udp\" \
                         or \"icmp\""
                    ),
                );
                None
            }
        },
        None => {
            problems.add(
                pos,
                format!("{context}: missing protocol (\"all\", \"tcp\", \"udp\" or \"icmp\")"),
            );
            None
        }
    };

    // Ports: only with tcp/udp, both or neither, min <= max.
    let mut ports = None;
    let port_keys = raw.port_min.as_ref().or(raw.port_max.as_ref());
    match (protocol, port_keys) {
        (Some(p @ (Protocol::All | Protocol::Icmp)), Some(key)) => problems.add(
            key.span().start,
            format!("{context}: port_min and port_max apply only to tcp and udp, not to {p}"),
        ),
        (_, Some(_)) => match (&raw.port_min, &raw.port_max) {
            (Some(min), Some(max)) => {
                let lo = problems.check(port(min, "port_min", context));
                let hi = problems.check(port(max, "port_max", context));
                if let (Some(lo), Some(hi)) = (lo, hi) {
                    if lo > hi {
                        problems.add(
                            min.span().start,
                            format!("{context}: port_min = {lo} is above port_max = {hi}"),
                        );
                    } else {
                        ports = Some((lo, hi));
                    }
                }
            }
            (Some(only), None) | (None, Some(only)) => {
                let (set, unset) = if raw.port_min.is_some() {
                    ("port_min", "port_max")
                } else {
                    ("port_max", "port_min")
                };
                problems.add(
                    only.span().start,
                    format!(
                        "{context}: {set} without {unset}: give both (equal for a single port) \
                         or neither (every port)"
                    ),
                );
            }
            (None, None) => {}
        },
        _ => {}
    }

    // ICMP type and code: only with icmp; code only with a type.
    let icmp_key = raw.icmp_type.as_ref().or(raw.code.as_ref());
    let (mut icmp_type, mut icmp_code) = (None, None);
    match (protocol, icmp_key) {
        (Some(p @ (Protocol::All | Protocol::Tcp | Protocol::Udp)), Some(key)) => problems.add(
            key.span().start,
            format!("{context}: type and code apply only to icmp, not to {p}"),
        ),
        (_, Some(_)) => {
            if let Some(t) = &raw.icmp_type {
                icmp_type = problems.check(icmp_field(t, "type", 254, context));
            }
            match (&raw.code, &raw.icmp_type) {
                (Some(c), Some(_)) => {
                    icmp_code = problems.check(icmp_field(c, "code", 255, context))
                }
                (Some(c), None) => problems.add(
                    c.span().start,
                    format!("{context}: code without type: an ICMP code needs its type"),
                ),
                _ => {}
            }
        }
        _ => {}
    }

    // The remote: an address block or a group, at most one.
    let mut remote = Remote::Any;
    let mut reference = None;
    match (&raw.remote, &raw.remote_group) {
        (Some(_), Some(group)) => problems.add(
            group.span().start,
            format!("{context}: remote and remote_group are exclusive: give at most one"),
        ),
        (Some(r), None) => match parse_remote(r.get_ref()) {
            Ok(cidr) => remote = Remote::Cidr(cidr),
            Err(e) => problems.add(
                r.span().start,
                format!("{context}: invalid remote {:?}: {e}", r.get_ref()),
            ),
        },
        (None, Some(g)) => match check_group_name(g) {
            Ok(name) => {
                reference = Some((name.clone(), g.span().start));
                remote = Remote::Group(name);
            }
            Err((at, message)) => problems.add(at, format!("{context}: remote_group: {message}")),
        },
        (None, None) => {}
    }

    if problems.0.len() != before {
        return None;
    }
    Some((
        Rule {
            direction: direction?,
            protocol: protocol?,
            ports,
            icmp_type,
            icmp_code,
            remote,
        },
        reference,
    ))
}

/// Checks a NIC's `security_groups` list on its own: names, count and repeats.
pub(super) fn check_nic_groups(
    problems: &mut Problems,
    label: &str,
    list: &Spanned<Vec<Spanned<String>>>,
) -> Option<Vec<(String, usize)>> {
    let before = problems.0.len();
    let names = list.get_ref();
    if names.is_empty() {
        problems.add(
            list.span().start,
            format!(
                "NIC {label} has an empty security_groups list: it would allow no traffic at all; \
                 leave the key out for the \"default\" group"
            ),
        );
    }
    if names.len() > MAX_GROUPS_PER_NIC {
        problems.add(
            list.span().start,
            format!(
                "NIC {label} lists {} security groups, more than the limit of \
                 {MAX_GROUPS_PER_NIC} per NIC",
                names.len()
            ),
        );
    }
    let mut seen: HashMap<&str, ()> = HashMap::new();
    let mut out = Vec::new();
    for name in names {
        match check_group_name(name) {
            Ok(n) => {
                if seen.insert(name.get_ref(), ()).is_some() {
                    problems.add(
                        name.span().start,
                        format!("NIC {label} lists security group {n} twice"),
                    );
                }
                out.push((n, name.span().start));
            }
            Err((at, message)) => problems.add(at, message),
        }
    }
    (problems.0.len() == before).then_some(out)
}

/// Stage 3: unique group names, and every name a NIC or a `remote_group` uses is defined.
pub(super) fn check_references<'a>(
    src: &Source<'_>,
    problems: &mut Problems,
    groups: &[CheckedGroup],
    nic_lists: impl Iterator<Item = (&'a str, &'a [(String, usize)])>,
) {
    let mut defined: HashMap<&str, usize> = HashMap::new();
    for g in groups {
        if let Some(&first) = defined.get(g.group.name.as_str()) {
            problems.add(
                g.name_pos,
                format!(
                    "duplicate security group {}, first defined at line {}",
                    g.group.name,
                    src.line(first)
                ),
            );
        } else {
            defined.insert(&g.group.name, g.name_pos);
        }
    }
    let known = |name: &str| name == DEFAULT_GROUP || defined.contains_key(name);
    let names = || {
        let mut all: Vec<&str> = defined.keys().copied().collect();
        if !defined.contains_key(DEFAULT_GROUP) {
            all.push(DEFAULT_GROUP);
        }
        all.sort();
        all.join(", ")
    };
    for g in groups {
        for (name, pos) in &g.references {
            if !known(name) {
                problems.add(
                    *pos,
                    format!(
                        "security group {}: remote_group {name:?} is not defined (defined: {})",
                        g.group.name,
                        names()
                    ),
                );
            }
        }
    }
    for (label, list) in nic_lists {
        for (name, pos) in list {
            if !known(name) {
                problems.add(
                    *pos,
                    format!(
                        "NIC {label}: security group {name:?} is not defined (defined: {})",
                        names()
                    ),
                );
            }
        }
    }
}
