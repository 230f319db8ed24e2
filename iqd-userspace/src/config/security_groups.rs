//! Security groups in the fabric file: `[[security_group]]` tables with their rules, and the
//! NICs' `security_groups` lists. Semantics follow IBM Cloud VPC security groups: rules only
//! allow, a NIC's groups are merged, and a group named `default` exists without being written.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;
use toml::Spanned;

use super::{Checked, Problems, Source};
use crate::domain::{
    prefix_mask, prefix_mask128, Direction, Protocol, Remote, RemoteCidr, Rule, SecurityGroup,
    DEFAULT_GROUP,
};

/// Most rules one group may hold.
pub const MAX_RULES_PER_GROUP: usize = 250;
/// Most groups one NIC may list.
pub const MAX_GROUPS_PER_NIC: usize = 5;

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

/// Parses a remote: an IPv4 address or block `a.b.c.d[/n]`, or an IPv6 address or block
/// `x::y[/n]`. A block must not have host bits set.
pub fn parse_remote(s: &str) -> Result<RemoteCidr, String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv4 or IPv6 address"))?;
    let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => Some(p)
            .filter(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u8>().ok())
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("prefix /{p} is not in 0..={max}"))?,
    };
    let network = match addr {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & prefix_mask(prefix))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & prefix_mask128(prefix))),
    };
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
            "icmpv6" => Some(Protocol::Icmpv6),
            other => {
                problems.add(
                    p.span().start,
                    format!(
                        "{context}: invalid protocol {other:?}: must be \"all\", \"tcp\", \"udp\", \
                         \"icmp\" or \"icmpv6\""
                    ),
                );
                None
            }
        },
        None => {
            problems.add(
                pos,
                format!(
                    "{context}: missing protocol (\"all\", \"tcp\", \"udp\", \"icmp\" or \"icmpv6\")"
                ),
            );
            None
        }
    };

    // Ports: only with tcp/udp, both or neither, min <= max.
    let mut ports = None;
    let port_keys = raw.port_min.as_ref().or(raw.port_max.as_ref());
    match (protocol, port_keys) {
        (Some(p @ (Protocol::All | Protocol::Icmp | Protocol::Icmpv6)), Some(key)) => problems.add(
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
            format!("{context}: type and code apply only to icmp and icmpv6, not to {p}"),
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{ConfigError, Fabric};
    use super::*;
    use crate::domain::implicit_default;

    const FILE: &str = "sg.toml";

    /// A fabric with two LPARs; `{groups}` is replaced by security-group tables (from line 3 on) and `{nic}` by extra keys of LP01's NIC.
    const TEMPLATE: &str = r#"[fabric]
name = "sg"
{groups}
[[chpid]]
id = "F0"
[[lpar]]
name = "LP01"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.1/24"]
{nic}
[[lpar]]
name = "LP02"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.2/24"]
security_groups = ["web"]
"#;

    const WEB: &str = r#"[[security_group]]
name = "web"
rules = [{ direction = "inbound", protocol = "tcp", port_min = 80, port_max = 443 }]"#;

    fn file(groups: &str, nic: &str) -> String {
        TEMPLATE.replace("{groups}", groups).replace("{nic}", nic)
    }

    fn parse(text: &str) -> Result<Fabric, ConfigError> {
        Fabric::parse(text, Path::new(FILE))
    }

    #[track_caller]
    fn parse_ok(text: &str) -> Fabric {
        parse(text).unwrap_or_else(|e| panic!("unexpected error: {e}\n{text}"))
    }

    /// Asserts `text` is refused on the line marked `# <-` with a message containing `needle`.
    #[track_caller]
    fn refused(text: &str, needle: &str) {
        let line = text
            .lines()
            .position(|l| l.contains("# <-"))
            .expect("test text marks a line")
            + 1;
        let msg = match parse(text) {
            Ok(_) => panic!("accepted, expected an error containing {needle:?}:\n{text}"),
            Err(e) => e.to_string(),
        };
        let prefix = format!("{FILE}:{line}:");
        assert!(
            msg.starts_with(&prefix),
            "{msg:?} should start with {prefix:?}"
        );
        assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
    }

    fn group_with_rule(rule: &str) -> String {
        format!("[[security_group]]\nname = \"web\"\nrules = [\n  {rule},  # <-\n]")
    }

    #[test]
    fn the_contract_example_parses() {
        let groups = r#"[[security_group]]
name = "web"
rules = [
  { direction = "inbound",  protocol = "tcp", port_min = 80, port_max = 443, remote = "10.0.0.0/24" },
  { direction = "inbound",  protocol = "icmp", type = 8 },
  { direction = "inbound",  protocol = "icmp", type = 3, code = 4 },
  { direction = "inbound",  protocol = "all", remote_group = "db" },
  { direction = "outbound", protocol = "all" },
  { direction = "outbound", protocol = "udp", remote = "10.0.0.7" },
]
[[security_group]]
name = "db"
rules = []
[[security_group]]
name = "ssh"
"#;
        let fabric = parse_ok(&file(
            groups,
            "security_groups = [\"web\", \"ssh\"]\nallow_ip_spoofing = true",
        ));
        let web = fabric.security_group("web").expect("web");
        assert_eq!(web.rules.len(), 6);
        assert_eq!(
            web.rules[0],
            Rule {
                direction: Direction::Inbound,
                protocol: Protocol::Tcp,
                ports: Some((80, 443)),
                icmp_type: None,
                icmp_code: None,
                remote: Remote::Cidr(RemoteCidr {
                    addr: Ipv4Addr::new(10, 0, 0, 0).into(),
                    prefix: 24
                }),
            }
        );
        assert_eq!(web.rules[1].icmp_type, Some(8));
        assert_eq!(web.rules[1].icmp_code, None);
        assert_eq!(
            (web.rules[2].icmp_type, web.rules[2].icmp_code),
            (Some(3), Some(4))
        );
        assert_eq!(web.rules[3].remote, Remote::Group("db".into()));
        assert_eq!(web.rules[4].remote, Remote::Any);
        assert_eq!(
            web.rules[5].remote,
            Remote::Cidr(RemoteCidr {
                addr: Ipv4Addr::new(10, 0, 0, 7).into(),
                prefix: 32
            })
        );
        assert!(fabric.security_group("db").expect("db").rules.is_empty());
        assert!(fabric.security_group("ssh").expect("ssh").rules.is_empty());
        let lp01 = &fabric.lpars[0].nics[0];
        assert_eq!(lp01.security_groups, ["web", "ssh"]);
        assert!(lp01.allow_ip_spoofing);
        assert!(!fabric.lpars[1].nics[0].allow_ip_spoofing);
        // Not written, so the implicit default is there too.
        assert_eq!(
            fabric.security_group(DEFAULT_GROUP),
            Some(&implicit_default())
        );
    }

    #[test]
    fn nics_without_groups_get_the_implicit_default() {
        let fabric = parse_ok(&file(WEB, ""));
        assert_eq!(fabric.lpars[0].nics[0].security_groups, [DEFAULT_GROUP]);
        let default = fabric.security_group(DEFAULT_GROUP).expect("default");
        assert_eq!(default.rules.len(), 2);
        assert_eq!(default.rules[0].direction, Direction::Inbound);
        assert_eq!(default.rules[0].remote, Remote::Group(DEFAULT_GROUP.into()));
        assert_eq!(default.rules[1].direction, Direction::Outbound);
        assert_eq!(default.rules[1].remote, Remote::Any);
    }

    #[test]
    fn a_written_default_replaces_the_implicit_one() {
        let groups = format!(
            "{WEB}\n[[security_group]]\nname = \"default\"\nrules = [{{ direction = \"outbound\", protocol = \"tcp\" }}]"
        );
        let fabric = parse_ok(&file(&groups, ""));
        let defaults: Vec<_> = fabric
            .security_groups
            .iter()
            .filter(|g| g.name == DEFAULT_GROUP)
            .collect();
        assert_eq!(defaults.len(), 1);
        assert_eq!(defaults[0].rules.len(), 1);
        assert_eq!(defaults[0].rules[0].protocol, Protocol::Tcp);
    }

    #[test]
    fn a_group_may_name_itself_and_default_may_be_named() {
        let groups = r#"[[security_group]]
name = "web"
rules = [
  { direction = "inbound", protocol = "all", remote_group = "web" },
  { direction = "inbound", protocol = "all", remote_group = "default" },
]"#;
        parse_ok(&file(groups, ""));
    }

    #[test]
    fn bad_rule_values_are_refused_where_they_are() {
        for (rule, needle) in [
            (
                r#"{ direction = "in", protocol = "tcp" }"#,
                "invalid direction \"in\"",
            ),
            (r#"{ protocol = "tcp" }"#, "missing direction"),
            (r#"{ direction = "inbound" }"#, "missing protocol"),
            (
                r#"{ direction = "inbound", protocol = "sctp" }"#,
                "invalid protocol \"sctp\"",
            ),
            (
                r#"{ direction = "inbound", protocol = "tcp", port_min = 0, port_max = 80 }"#,
                "port_min = 0 is out of range: ports are 1-65535",
            ),
            (
                r#"{ direction = "inbound", protocol = "udp", port_min = 1, port_max = 65536 }"#,
                "port_max = 65536 is out of range",
            ),
            (
                r#"{ direction = "inbound", protocol = "tcp", port_min = 443, port_max = 80 }"#,
                "port_min = 443 is above port_max = 80",
            ),
            (
                r#"{ direction = "inbound", protocol = "tcp", port_min = 80 }"#,
                "port_min without port_max",
            ),
            (
                r#"{ direction = "inbound", protocol = "tcp", port_max = 80 }"#,
                "port_max without port_min",
            ),
            (
                r#"{ direction = "inbound", protocol = "all", port_min = 80, port_max = 80 }"#,
                "apply only to tcp and udp, not to all",
            ),
            (
                r#"{ direction = "inbound", protocol = "icmp", port_min = 80, port_max = 80 }"#,
                "apply only to tcp and udp, not to icmp",
            ),
            (
                r#"{ direction = "inbound", protocol = "tcp", type = 8 }"#,
                "type and code apply only to icmp and icmpv6, not to tcp",
            ),
            (
                r#"{ direction = "inbound", protocol = "icmpv6", port_min = 80, port_max = 80 }"#,
                "apply only to tcp and udp, not to icmpv6",
            ),
            (
                r#"{ direction = "inbound", protocol = "icmpv6", code = 0 }"#,
                "code without type",
            ),
            (
                r#"{ direction = "inbound", protocol = "icmpv6", type = 255 }"#,
                "ICMP type = 255 is out of range: must be 0-254",
            ),
            (
                r#"{ direction = "inbound", protocol = "all", remote = "fd00::/129" }"#,
                "prefix /129 is not in 0..=128",
            ),
            (
                r#"{ direction = "inbound", protocol = "all", remote = "fd00:::1" }"#,
                "\"fd00:::1\" is not an IPv4 or IPv6 address",
            ),
            (
                r#"{ direction = "inbound", protocol = "all", remote = "fd00:f0::1/64" }"#,
                "has host bits set: the block is fd00:f0::/64",
            ),
            (
                r#"{ direction = "inbound", protocol = "all", code = 0 }"#,
                "type and code apply only to icmp and icmpv6, not to all",
            ),
            (
                r#"{ direction = "inbound", protocol = "icmp", code = 0 }"#,
                "code without type",
            ),
            (
                r#"{ direction = "inbound", protocol = "icmp", type = 255 }"#,
                "ICMP type = 255 is out of range: must be 0-254",
            ),
            (
                r#"{ direction = "inbound", protocol = "icmp", type = 3, code = 256 }"#,
                "ICMP code = 256 is out of range",
            ),
            (
                r#"{ direction = "inbound", protocol = "all", remote = "10.0.0.0/33" }"#,
                "prefix /33 is not in 0..=32",
            ),
            (
                r#"{ direction = "inbound", protocol = "all", remote = "10.0.0.300" }"#,
                "\"10.0.0.300\" is not an IPv4 or IPv6 address",
            ),
            (
                r#"{ direction = "inbound", protocol = "all", remote = "10.0.0.1/24" }"#,
                "has host bits set: the block is 10.0.0.0/24",
            ),
            (
                r#"{ direction = "inbound", protocol = "all", remote = "10.0.0.0/24", remote_group = "web" }"#,
                "remote and remote_group are exclusive",
            ),
            (
                r#"{ direction = "inbound", protocol = "all", remote_group = "nope" }"#,
                "remote_group \"nope\" is not defined (defined: default, web)",
            ),
            (
                r#"{ direction = "inbound", protocol = "all", remote_group = "Web" }"#,
                "invalid security group name \"Web\"",
            ),
            (
                r#"{ direction = "inbound", protocol = "all", ports = 80 }"#,
                "unknown field `ports`",
            ),
        ] {
            refused(&file(&group_with_rule(rule), ""), needle);
        }
    }

    #[test]
    fn the_rule_context_names_the_group_and_the_rule() {
        let groups = r#"[[security_group]]
name = "web"
rules = [
  { direction = "inbound", protocol = "all" },
  { direction = "sideways", protocol = "all" },  # <-
]"#;
        refused(
            &file(groups, ""),
            "security group web, rule 2: invalid direction",
        );
    }

    #[test]
    fn group_names_and_references_are_checked() {
        refused(
            &file("[[security_group]]\nname = \"2fast\"  # <-", ""),
            "invalid security group name \"2fast\": must be 1-63 characters",
        );
        refused(
            &file(
                &format!("{WEB}\n[[security_group]]\nname = \"web\"  # <-"),
                "",
            ),
            "duplicate security group web, first defined at line 4",
        );
        refused(
            &file(WEB, "security_groups = [\"web\", \"ssh\"]  # <-"),
            "NIC LP01/hsi0: security group \"ssh\" is not defined (defined: default, web)",
        );
        refused(
            &file(WEB, "security_groups = [\"web\", \"web\"]  # <-"),
            "NIC LP01/hsi0 lists security group web twice",
        );
        refused(
            &file(WEB, "security_groups = []  # <-"),
            "NIC LP01/hsi0 has an empty security_groups list",
        );
        refused(
            &file(WEB, "allow_ip_spoofing = \"yes\"  # <-"),
            "invalid type",
        );
    }

    #[test]
    fn limits_are_refused_with_the_numbers() {
        let mut groups = format!("{WEB}\n");
        for name in ["a", "b", "c", "d", "e", "f"] {
            groups.push_str(&format!("[[security_group]]\nname = \"{name}\"\n"));
        }
        refused(
            &file(
                &groups,
                "security_groups = [\"a\", \"b\", \"c\", \"d\", \"e\", \"f\"]  # <-",
            ),
            "lists 6 security groups, more than the limit of 5 per NIC",
        );
        parse_ok(&file(
            &groups,
            "security_groups = [\"a\", \"b\", \"c\", \"d\", \"e\"]",
        ));

        let rules = |n: usize| {
            (0..n)
                .map(|i| {
                    format!(
                        "{{ direction = \"inbound\", protocol = \"tcp\", port_min = {p}, port_max = {p} }}",
                        p = i + 1
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let at_limit = format!(
            "{WEB}\n[[security_group]]\nname = \"big\"\nrules = [{}]",
            rules(250)
        );
        let fabric = parse_ok(&file(&at_limit, "security_groups = [\"big\"]"));
        assert_eq!(fabric.security_group("big").expect("big").rules.len(), 250);
        let over = format!(
            "{WEB}\n[[security_group]]\nname = \"big\"\nrules = [{}]  # <-",
            rules(251)
        );
        refused(
            &file(&over, ""),
            "security group big has 251 rules, more than the limit of 250 per group",
        );
    }

    #[test]
    fn remotes_parse_as_blocks() {
        assert_eq!(
            parse_remote("0.0.0.0/0"),
            Ok(RemoteCidr {
                addr: Ipv4Addr::UNSPECIFIED.into(),
                prefix: 0
            })
        );
        let v6 = parse_remote("fd00:f0::/64").expect("IPv6 block");
        assert!(v6.contains("fd00:f0::9".parse::<Ipv6Addr>().unwrap()));
        assert!(!v6.contains("fd00:f1::9".parse::<Ipv6Addr>().unwrap()));
        assert!(
            !v6.contains(Ipv4Addr::new(10, 0, 0, 1)),
            "no IPv4 in an IPv6 block"
        );
        assert!(
            !parse_remote("0.0.0.0/0")
                .expect("any IPv4")
                .contains("fd00::1".parse::<Ipv6Addr>().unwrap()),
            "0.0.0.0/0 is IPv4 only"
        );
        assert_eq!(parse_remote("fd00::1").expect("one address").prefix, 128);
        assert!(parse_remote("::/0")
            .expect("any IPv6")
            .contains("fe80::1".parse::<Ipv6Addr>().unwrap()));
        let block = parse_remote("10.1.0.0/16").expect("block");
        assert!(block.contains(Ipv4Addr::new(10, 1, 255, 3)));
        assert!(!block.contains(Ipv4Addr::new(10, 2, 0, 0)));
        assert!(parse_remote("0.0.0.0/0")
            .expect("any")
            .contains(Ipv4Addr::BROADCAST));
        assert!(parse_remote("10.0.0.0/+8").is_err());
        assert!(parse_remote("10.0.0.0/").is_err());
        assert_eq!(prefix_mask(0), 0);
        assert_eq!(prefix_mask(24), 0xffff_ff00);
        assert_eq!(prefix_mask(32), u32::MAX);
    }
}
