//! The security-group rule sets of the `iqd-sg<N>` and `bridge-nft<N>` systems: five groups of
//! N rules on every NIC, written once as an iqd fabric file and once as nftables rule sets.
//!
//! The filler rules are realistic but never match the measured traffic: every one has a remote
//! /24 of its own in 172.16.0.0/12 (the endpoints are in 10.0.0.0/24) and a TCP or UDP port range
//! of its own, so that no two rules merge. The rules that allow the measured traffic come last in
//! the last group, where a linear scan meets them only after every other rule.
//!
//! This file uses only `std`: the integration tests include it with `#[path]` to check the
//! fabric file with iqd's own parser.

use std::fmt::Write as _;

/// Security groups per NIC: iqd's limit.
pub const GROUPS: usize = 5;
/// The rule counts per group the benchmark measures.
pub const RULE_COUNTS: [usize; 3] = [0, 50, 250];
/// The data path of the `iqd-sg<N>` systems: iqd's default, so that they measure what a fabric
/// gets without a `datapath` key (the integration tests check that it still is the default).
pub const DATAPATH: &str = "tc";
/// The endpoints' network, the remote of every allow rule.
pub const BENCH_NET: &str = "10.0.0.0/24";
/// iperf3 (TCP and UDP).
pub const IPERF_PORT: u16 = 5201;
/// sockperf's server.
pub const SOCKPERF_PORT: u16 = 11111;
/// The connect/request/response/close server.
pub const CRR_PORT: u16 = 11112;
/// Filler rule k allows the ports FILLER_PORT + 16k to FILLER_PORT + 16k + 7.
pub const FILLER_PORT: u16 = 20000;
/// A port no rule allows: the benchmark checks that a connection to it is dropped.
pub const DENIED_PORT: u16 = 11113;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    /// ICMP echo request (type 8), any code.
    IcmpEcho,
}

/// One allow rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub direction: Direction,
    pub protocol: Protocol,
    /// Destination ports, inclusive (TCP and UDP).
    pub ports: (u16, u16),
    /// The address at the other end: the source of inbound, the destination of outbound traffic.
    pub remote: String,
}

/// The rules that allow the measured traffic, both ways: iperf3 over TCP and UDP, sockperf and
/// the connection-rate server over TCP, and ICMP echo.
pub fn allow_rules() -> Vec<Rule> {
    let mut rules = Vec::new();
    for direction in [Direction::Inbound, Direction::Outbound] {
        for (protocol, ports) in [
            (Protocol::Tcp, (IPERF_PORT, IPERF_PORT)),
            (Protocol::Udp, (IPERF_PORT, IPERF_PORT)),
            (Protocol::Tcp, (SOCKPERF_PORT, CRR_PORT)),
            (Protocol::IcmpEcho, (0, 0)),
        ] {
            rules.push(Rule {
                direction,
                protocol,
                ports,
                remote: BENCH_NET.into(),
            });
        }
    }
    rules
}

/// Filler rule `k` (0-based, unique across all groups): alternately inbound and outbound, two
/// in three TCP and the rest UDP, an 8-port range starting at 20000 + 16k and the remote
/// 172.(16 + k / 256).(k % 256).0/24.
pub fn filler_rule(k: usize) -> Rule {
    assert!(k < 4096, "filler rule {k}: only 4096 /24s in 172.16.0.0/12");
    let port = FILLER_PORT as u32 + 16 * k as u32;
    assert!(port + 7 <= u16::MAX as u32, "filler rule {k}: out of ports");
    Rule {
        direction: if k.is_multiple_of(2) {
            Direction::Inbound
        } else {
            Direction::Outbound
        },
        protocol: if (k / 2) % 3 == 2 {
            Protocol::Udp
        } else {
            Protocol::Tcp
        },
        ports: (port as u16, port as u16 + 7),
        remote: format!("172.{}.{}.0/24", 16 + k / 256, k % 256),
    }
}

/// The five groups of a NIC with `n` rules per group. With `n` = 0, the first four groups are
/// empty and the last holds only the allow rules; otherwise every group has exactly `n` rules,
/// the allow rules being the last ones of the last group.
pub fn groups(n: usize) -> Vec<Vec<Rule>> {
    let allow = allow_rules();
    assert!(
        n == 0 || n >= allow.len(),
        "{n} rules per group cannot hold the {} allow rules",
        allow.len()
    );
    let mut next = 0;
    let mut filler = |count: usize| {
        let rules: Vec<Rule> = (next..next + count).map(filler_rule).collect();
        next += count;
        rules
    };
    let mut out: Vec<Vec<Rule>> = (0..GROUPS - 1).map(|_| filler(n)).collect();
    let mut last = filler(n.saturating_sub(allow.len()));
    last.extend(allow);
    out.push(last);
    out
}

/// The name of group `g` (0-based).
pub fn group_name(g: usize) -> String {
    format!("bench{}", g + 1)
}

/// The benchmark's iqd fabric file: one CHPID `F0` of `mfs` and one LPAR per namespace in
/// `netns`, LPAR i with NIC address 10.0.0.(i+1)/24, and with `groups`, those groups on every
/// NIC.
// The benchmark itself builds with `fabric_file_with`; tests/tests/bench_smoke.rs checks this
// one with iqd's parser.
#[allow(dead_code)]
pub fn fabric_file(
    fabric: &str,
    mfs: &str,
    datapath: &str,
    netns: &[&str],
    groups: Option<&[Vec<Rule>]>,
) -> String {
    fabric_file_with(fabric, mfs, datapath, netns, groups, false)
}

/// [`fabric_file`], and with `ipv6` every NIC also gets the IPv6 address fd00:f0::(i+1)/64
/// (hexadecimal, as the benchmark's endpoints have it).
pub fn fabric_file_with(
    fabric: &str,
    mfs: &str,
    datapath: &str,
    netns: &[&str],
    groups: Option<&[Vec<Rule>]>,
    ipv6: bool,
) -> String {
    let mut toml = format!(
        "[fabric]\nname = \"{fabric}\"\ndatapath = \"{datapath}\"\n\n[[chpid]]\nid = \"F0\"\n\
         mfs = \"{mfs}\"\n\n"
    );
    if let Some(groups) = groups {
        toml.push_str(&fabric_groups(groups));
    }
    for (i, ns) in netns.iter().enumerate() {
        let _ = writeln!(
            toml,
            "[[lpar]]\nname = \"L{i}\"\nnetns = \"{ns}\"\n\n[[lpar.nic]]\nchpid = \"F0\"\n\
             ipv4 = [\"10.0.{}.{}/24\"]",
            i / 250,
            i % 250 + 1
        );
        if ipv6 {
            let _ = writeln!(toml, "ipv6 = [\"fd00:f0::{:x}/64\"]", i + 1);
        }
        if let Some(groups) = groups {
            toml.push_str(&nic_groups(groups));
            toml.push('\n');
        }
        toml.push('\n');
    }
    toml
}

/// The `[[security_group]]` tables of an iqd fabric file.
pub fn fabric_groups(groups: &[Vec<Rule>]) -> String {
    let mut toml = String::new();
    for (g, rules) in groups.iter().enumerate() {
        let _ = writeln!(toml, "[[security_group]]\nname = \"{}\"", group_name(g));
        if rules.is_empty() {
            toml.push_str("rules = []\n\n");
            continue;
        }
        toml.push_str("rules = [\n");
        for rule in rules {
            let direction = match rule.direction {
                Direction::Inbound => "inbound",
                Direction::Outbound => "outbound",
            };
            let what = match rule.protocol {
                Protocol::Tcp | Protocol::Udp => format!(
                    "protocol = \"{}\", port_min = {}, port_max = {}",
                    if rule.protocol == Protocol::Tcp {
                        "tcp"
                    } else {
                        "udp"
                    },
                    rule.ports.0,
                    rule.ports.1
                ),
                Protocol::IcmpEcho => "protocol = \"icmp\", type = 8".into(),
            };
            let _ = writeln!(
                toml,
                "  {{ direction = \"{direction}\", {what}, remote = \"{}\" }},",
                rule.remote
            );
        }
        toml.push_str("]\n\n");
    }
    toml
}

/// The `security_groups` line of a `[[lpar.nic]]` table.
pub fn nic_groups(groups: &[Vec<Rule>]) -> String {
    let names: Vec<String> = (0..groups.len())
        .map(|g| format!("\"{}\"", group_name(g)))
        .collect();
    format!("security_groups = [{}]", names.join(", "))
}

/// The nftables rule set of one endpoint namespace: a table `iqdbench` (family `inet`) whose
/// `input` chain holds the inbound rules and whose `output` chain the outbound ones, in group
/// order, each after `ct state established,related accept`, with policy drop. Loopback stays
/// open, as it is not part of the fabric.
pub fn nft_ruleset(groups: &[Vec<Rule>]) -> String {
    let mut nft = String::from("table inet iqdbench {\n");
    for (chain, direction, iface, remote) in [
        ("input", Direction::Inbound, "iifname", "ip saddr"),
        ("output", Direction::Outbound, "oifname", "ip daddr"),
    ] {
        let _ = writeln!(
            nft,
            "\tchain {chain} {{\n\t\ttype filter hook {chain} priority filter; policy drop;\n\
             \t\tct state established,related accept\n\t\t{iface} \"lo\" accept"
        );
        for rule in groups.iter().flatten().filter(|r| r.direction == direction) {
            let what = match rule.protocol {
                Protocol::Tcp | Protocol::Udp => {
                    let proto = if rule.protocol == Protocol::Tcp {
                        "tcp"
                    } else {
                        "udp"
                    };
                    if rule.ports.0 == rule.ports.1 {
                        format!("{proto} dport {}", rule.ports.0)
                    } else {
                        format!("{proto} dport {}-{}", rule.ports.0, rule.ports.1)
                    }
                }
                Protocol::IcmpEcho => "icmp type echo-request".into(),
            };
            let _ = writeln!(nft, "\t\t{remote} {} {what} accept", rule.remote);
        }
        nft.push_str("\t}\n");
    }
    nft.push_str("}\n");
    nft
}

/// The allow rules in an nftables rule set from [`nft_ruleset`]: its lines that end in
/// `accept`, less the conntrack and loopback ones.
#[cfg(test)]
pub fn nft_allow_rules(ruleset: &str) -> usize {
    ruleset
        .lines()
        .map(str::trim)
        .filter(|l| l.ends_with(" accept") && !l.starts_with("ct state") && !l.contains("\"lo\""))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_group_has_n_rules_and_the_allow_rules_come_last() {
        for n in RULE_COUNTS {
            let groups = groups(n);
            assert_eq!(groups.len(), GROUPS);
            let allow = allow_rules();
            if n == 0 {
                assert!(groups[..GROUPS - 1].iter().all(Vec::is_empty));
                assert_eq!(groups[GROUPS - 1], allow);
            } else {
                assert!(groups.iter().all(|g| g.len() == n), "{n}");
                assert!(groups[GROUPS - 1].ends_with(&allow));
            }
            let total: usize = groups.iter().map(Vec::len).sum();
            assert_eq!(total, if n == 0 { allow.len() } else { GROUPS * n });
        }
    }

    #[test]
    fn filler_rules_never_match_and_never_merge() {
        let rules: Vec<Rule> = (0..GROUPS * 250).map(filler_rule).collect();
        let remotes: BTreeSet<&str> = rules.iter().map(|r| r.remote.as_str()).collect();
        assert_eq!(remotes.len(), rules.len(), "remotes are distinct");
        let mut ports: Vec<(u16, u16)> = rules.iter().map(|r| r.ports).collect();
        ports.sort();
        // Neither overlapping nor adjacent, so no two ranges merge.
        assert!(ports.windows(2).all(|w| w[0].1 + 1 < w[1].0), "ports");
        for rule in &rules {
            assert!(rule.remote.starts_with("172.") && rule.remote.ends_with(".0/24"));
            let second: u8 = rule.remote.split('.').nth(1).unwrap().parse().unwrap();
            assert!(
                (16..32).contains(&second),
                "{} is in 172.16.0.0/12",
                rule.remote
            );
            for port in [IPERF_PORT, SOCKPERF_PORT, CRR_PORT, DENIED_PORT] {
                assert!(!(rule.ports.0..=rule.ports.1).contains(&port), "{rule:?}");
            }
        }
        // Both directions and both protocols occur.
        for d in [Direction::Inbound, Direction::Outbound] {
            for p in [Protocol::Tcp, Protocol::Udp] {
                assert!(rules.iter().any(|r| r.direction == d && r.protocol == p));
            }
        }
    }

    #[test]
    fn the_fabric_file_has_every_lpar_and_its_groups() {
        let plain = fabric_file("f", "16K", "tc", &["a", "b"], None);
        assert!(plain.starts_with("[fabric]\nname = \"f\"\n"));
        assert!(plain.contains("netns = \"b\"") && plain.contains("ipv4 = [\"10.0.0.2/24\"]"));
        assert!(!plain.contains("security_group"));
        let groups = groups(50);
        let toml = fabric_file("f", "64K", "xdp", &["a", "b"], Some(&groups));
        assert_eq!(toml.matches("security_groups = [").count(), 2);
        assert_eq!(toml.matches("[[security_group]]").count(), GROUPS);
        assert!(!toml.contains("ipv6"));
        let v6 = fabric_file_with("f", "16K", "tc", &["a", "b"], None, true);
        assert!(v6.contains(
            "netns = \"b\"\n\n[[lpar.nic]]\nchpid = \"F0\"\nipv4 = [\"10.0.0.2/24\"]\n\
             ipv6 = [\"fd00:f0::2/64\"]\n"
        ));
        assert_eq!(v6.matches("ipv6 = ").count(), 2);
    }

    #[test]
    fn the_fabric_file_lists_every_rule_once() {
        for n in RULE_COUNTS {
            let groups = groups(n);
            let toml = fabric_groups(&groups);
            assert_eq!(toml.matches("[[security_group]]").count(), GROUPS);
            assert_eq!(
                toml.matches("{ direction = ").count(),
                groups.iter().map(Vec::len).sum::<usize>()
            );
            assert!(toml.contains("name = \"bench5\""));
            if n == 0 {
                assert_eq!(toml.matches("rules = []").count(), GROUPS - 1);
            }
            // The last rule of the last group is the outbound ICMP echo rule.
            let last = toml.lines().rfind(|l| l.contains("direction")).unwrap();
            assert_eq!(
                last,
                "  { direction = \"outbound\", protocol = \"icmp\", type = 8, remote = \"10.0.0.0/24\" },"
            );
        }
        assert_eq!(
            nic_groups(&groups(0)),
            "security_groups = [\"bench1\", \"bench2\", \"bench3\", \"bench4\", \"bench5\"]"
        );
    }

    #[test]
    fn the_nft_rule_set_has_the_same_allow_rules_in_the_same_order() {
        for n in RULE_COUNTS {
            let groups = groups(n);
            let nft = nft_ruleset(&groups);
            let total: usize = groups.iter().map(Vec::len).sum();
            assert_eq!(nft_allow_rules(&nft), total, "n = {n}");
            assert_eq!(
                nft.matches("ct state established,related accept").count(),
                2
            );
            assert_eq!(nft.matches("policy drop;").count(), 2);
            // The measured traffic's rules end each chain.
            let input = nft.split("chain output").next().unwrap();
            let last_in = input.lines().rfind(|l| l.ends_with("accept")).unwrap();
            assert_eq!(
                last_in.trim(),
                "ip saddr 10.0.0.0/24 icmp type echo-request accept"
            );
            let last_out = nft.lines().rfind(|l| l.ends_with("accept")).unwrap();
            assert_eq!(
                last_out.trim(),
                "ip daddr 10.0.0.0/24 icmp type echo-request accept"
            );
            assert!(nft.contains("ip saddr 10.0.0.0/24 tcp dport 11111-11112 accept"));
            assert!(nft.contains("ip daddr 10.0.0.0/24 udp dport 5201 accept"));
        }
        let nft = nft_ruleset(&groups(50));
        assert!(nft.contains("ip saddr 172.16.0.0/24 tcp dport 20000-20007 accept"));
        assert!(nft.contains("ip daddr 172.16.1.0/24 tcp dport 20016-20023 accept"));
    }
}
