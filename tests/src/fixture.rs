//! Fabric files for tests, built rather than typed: [`FabricFile`] with its [`Nic`]s, security
//! [`Group`]s and their [`Rule`]s renders the TOML that `iqd` reads (`to_string()`, or pass it
//! to [`crate::TestFabric`]). Only what a test sets is written; everything else keeps the
//! file's defaults (MFS 16K, the default group, no spoofing, the default data path).
//!
//! A test's own fabric is [`FabricFile::test`], named `{fabric}`, with LPAR namespaces written
//! `{ns}<suffix>`: [`crate::TestFabric`] replaces both with names unique to the test. Tests of
//! the file's text itself (an unknown key, an error's line) edit the rendered text.
use std::fmt::{self, Display};

/// A fabric file: `[fabric]`, then its `[[chpid]]`, `[[security_group]]` and `[[lpar]]`
/// tables in the order they were added.
#[derive(Clone, Debug)]
pub struct FabricFile {
    name: String,
    datapath: Option<String>,
    /// Id and MFS (`None`: the default).
    chpids: Vec<(String, Option<String>)>,
    /// `analyzer` of a CHPID, by id.
    analyzers: Vec<(String, String)>,
    groups: Vec<Group>,
    lpars: Vec<Lpar>,
}

#[derive(Clone, Debug)]
struct Lpar {
    name: String,
    netns: String,
    /// `profile` and `bandwidth`, written when set.
    profile: Option<String>,
    bandwidth: Option<String>,
    traceable: bool,
    nics: Vec<Nic>,
}

/// One `[[lpar.nic]]`.
#[derive(Clone, Debug)]
pub struct Nic {
    chpid: String,
    /// `vlan`, written only when set.
    vlan: Option<u16>,
    ipv4: Vec<String>,
    /// Written only when not empty.
    ipv6: Vec<String>,
    /// `None`: the key is not written (the NIC gets the default group).
    security_groups: Option<Vec<String>>,
    allow_ip_spoofing: bool,
    layer2: bool,
    /// `rx_bcast`, written only when set.
    rx_bcast: Option<bool>,
}

/// One `[[security_group]]`.
#[derive(Clone, Debug)]
pub struct Group {
    name: String,
    rules: Vec<Rule>,
}

/// One security-group rule, written as an inline table.
#[derive(Clone, Debug)]
pub struct Rule {
    direction: String,
    protocol: String,
    ports: Option<(u16, u16)>,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
    remote: Option<String>,
    remote_group: Option<String>,
}

impl FabricFile {
    /// A fabric file for fabric `name`.
    pub fn new(name: &str) -> Self {
        FabricFile {
            name: name.to_string(),
            datapath: None,
            chpids: Vec::new(),
            analyzers: Vec::new(),
            groups: Vec::new(),
            lpars: Vec::new(),
        }
    }

    /// A test's fabric, named `{fabric}` for [`crate::TestFabric`] to replace.
    pub fn test() -> Self {
        FabricFile::new("{fabric}")
    }

    /// `datapath`; unset, [`crate::TestFabric`] sets the data path under test.
    pub fn datapath(mut self, datapath: &str) -> Self {
        self.datapath = Some(datapath.to_string());
        self
    }

    /// A CHPID with the default MFS.
    pub fn chpid(mut self, id: &str) -> Self {
        self.chpids.push((id.to_string(), None));
        self
    }

    /// A CHPID with MFS `mfs` (`"16K"` ... `"64K"`).
    pub fn chpid_mfs(mut self, id: &str, mfs: &str) -> Self {
        self.chpids.push((id.to_string(), Some(mfs.to_string())));
        self
    }

    /// A security group.
    pub fn group(mut self, group: Group) -> Self {
        self.groups.push(group);
        self
    }

    /// An LPAR in namespace `netns`, with its NICs.
    pub fn lpar(mut self, name: &str, netns: &str, nics: impl IntoIterator<Item = Nic>) -> Self {
        self.lpars.push(Lpar {
            name: name.to_string(),
            netns: netns.to_string(),
            profile: None,
            bandwidth: None,
            traceable: false,
            nics: nics.into_iter().collect(),
        });
        self
    }

    /// `profile` of the LPAR added last.
    pub fn profile(mut self, profile: &str) -> Self {
        if let Some(lpar) = self.lpars.last_mut() {
            lpar.profile = Some(profile.to_string());
        }
        self
    }

    /// `bandwidth` of the LPAR added last (`"2Gbps"`).
    pub fn bandwidth(mut self, bandwidth: &str) -> Self {
        if let Some(lpar) = self.lpars.last_mut() {
            lpar.bandwidth = Some(bandwidth.to_string());
        }
        self
    }

    /// `analyzer = lpar` on CHPID `chpid` (added with [`Self::chpid`]).
    pub fn analyzer(mut self, chpid: &str, lpar: &str) -> Self {
        self.analyzers.push((chpid.to_string(), lpar.to_string()));
        self
    }

    /// `traceable = true` on the LPARs named.
    pub fn traceable(mut self, names: &[&str]) -> Self {
        for lpar in &mut self.lpars {
            if names.contains(&lpar.name.as_str()) {
                lpar.traceable = true;
            }
        }
        self
    }

    /// The TOML text.
    pub fn render(&self) -> String {
        self.to_string()
    }
}

impl Display for FabricFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[fabric]\nname = {}", quoted(&self.name))?;
        if let Some(datapath) = &self.datapath {
            writeln!(f, "datapath = {}", quoted(datapath))?;
        }
        for (id, mfs) in &self.chpids {
            writeln!(f, "\n[[chpid]]\nid = {}", quoted(id))?;
            if let Some(mfs) = mfs {
                writeln!(f, "mfs = {}", quoted(mfs))?;
            }
            for (_, lpar) in self.analyzers.iter().filter(|(c, _)| c == id) {
                writeln!(f, "analyzer = {}", quoted(lpar))?;
            }
        }
        for group in &self.groups {
            writeln!(
                f,
                "\n[[security_group]]\nname = {}\nrules = [",
                quoted(&group.name)
            )?;
            for rule in &group.rules {
                writeln!(f, "  {rule},")?;
            }
            writeln!(f, "]")?;
        }
        for lpar in &self.lpars {
            writeln!(
                f,
                "\n[[lpar]]\nname = {}\nnetns = {}",
                quoted(&lpar.name),
                quoted(&lpar.netns)
            )?;
            if let Some(profile) = &lpar.profile {
                writeln!(f, "profile = {}", quoted(profile))?;
            }
            if let Some(bandwidth) = &lpar.bandwidth {
                writeln!(f, "bandwidth = {}", quoted(bandwidth))?;
            }
            if lpar.traceable {
                writeln!(f, "traceable = true")?;
            }
            for nic in &lpar.nics {
                writeln!(f, "[[lpar.nic]]\nchpid = {}", quoted(&nic.chpid))?;
                if let Some(vlan) = nic.vlan {
                    writeln!(f, "vlan = {vlan}")?;
                }
                // An IPv6-only NIC writes no ipv4 (an empty list is refused), nor does a
                // layer-2 NIC without addresses.
                if !nic.ipv4.is_empty() || (nic.ipv6.is_empty() && !nic.layer2) {
                    writeln!(f, "ipv4 = {}", list(&nic.ipv4))?;
                }
                if !nic.ipv6.is_empty() {
                    writeln!(f, "ipv6 = {}", list(&nic.ipv6))?;
                }
                if let Some(groups) = &nic.security_groups {
                    writeln!(f, "security_groups = {}", list(groups))?;
                }
                if nic.allow_ip_spoofing {
                    writeln!(f, "allow_ip_spoofing = true")?;
                }
                if nic.layer2 {
                    writeln!(f, "layer2 = true")?;
                }
                if let Some(rx_bcast) = nic.rx_bcast {
                    writeln!(f, "rx_bcast = {rx_bcast}")?;
                }
            }
        }
        Ok(())
    }
}

impl Nic {
    /// A NIC on CHPID `chpid` registering the addresses `ipv4` (`a.b.c.d/prefix`).
    pub fn new<A: ToString>(chpid: &str, ipv4: impl IntoIterator<Item = A>) -> Self {
        Nic {
            chpid: chpid.to_string(),
            vlan: None,
            ipv4: ipv4.into_iter().map(|a| a.to_string()).collect(),
            ipv6: Vec::new(),
            security_groups: None,
            allow_ip_spoofing: false,
            layer2: false,
            rx_bcast: None,
        }
    }

    /// A NIC on CHPID `chpid` registering only the IPv6 addresses `ipv6` (`x::y/prefix`).
    pub fn v6<A: ToString>(chpid: &str, ipv6: impl IntoIterator<Item = A>) -> Self {
        Nic::new::<String>(chpid, []).ipv6(ipv6)
    }

    /// `ipv6`: IPv6 addresses besides the NIC's IPv4 ones (a dual-stack NIC).
    pub fn ipv6<A: ToString>(mut self, ipv6: impl IntoIterator<Item = A>) -> Self {
        self.ipv6.extend(ipv6.into_iter().map(|a| a.to_string()));
        self
    }

    /// `vlan`: the NIC is in this VLAN of its CHPID instead of the untagged segment.
    pub fn vlan(mut self, vlan: u16) -> Self {
        self.vlan = Some(vlan);
        self
    }

    /// `security_groups`: the NIC's groups instead of the default one.
    pub fn groups<G: ToString>(mut self, groups: impl IntoIterator<Item = G>) -> Self {
        self.security_groups = Some(groups.into_iter().map(|g| g.to_string()).collect());
        self
    }

    /// `allow_ip_spoofing = true`.
    pub fn allow_ip_spoofing(mut self) -> Self {
        self.allow_ip_spoofing = true;
        self
    }

    /// `layer2 = true`: a layer-2 NIC (forwarded by MAC, ordinary ARP).
    pub fn layer2(mut self) -> Self {
        self.layer2 = true;
        self
    }

    /// `rx_bcast = false`: the NIC takes no broadcasts.
    pub fn no_broadcasts(mut self) -> Self {
        self.rx_bcast = Some(false);
        self
    }
}

impl Group {
    pub fn new(name: &str, rules: impl IntoIterator<Item = Rule>) -> Self {
        Group {
            name: name.to_string(),
            rules: rules.into_iter().collect(),
        }
    }
}

impl Rule {
    /// A rule of `direction` (`"inbound"`, `"outbound"`) for `protocol` (`"all"`, `"tcp"`,
    /// `"udp"`, `"icmp"`), from any remote.
    pub fn new(direction: &str, protocol: &str) -> Self {
        Rule {
            direction: direction.to_string(),
            protocol: protocol.to_string(),
            ports: None,
            icmp_type: None,
            icmp_code: None,
            remote: None,
            remote_group: None,
        }
    }

    pub fn inbound(protocol: &str) -> Self {
        Rule::new("inbound", protocol)
    }

    pub fn outbound(protocol: &str) -> Self {
        Rule::new("outbound", protocol)
    }

    /// `port_min` and `port_max`.
    pub fn ports(mut self, min: u16, max: u16) -> Self {
        self.ports = Some((min, max));
        self
    }

    /// One port: `port_min = port_max`.
    pub fn port(self, port: u16) -> Self {
        self.ports(port, port)
    }

    /// The ICMP `type`.
    pub fn icmp_type(mut self, icmp_type: u8) -> Self {
        self.icmp_type = Some(icmp_type);
        self
    }

    /// The ICMP `code`.
    pub fn icmp_code(mut self, code: u8) -> Self {
        self.icmp_code = Some(code);
        self
    }

    /// `remote`: an address or block (`a.b.c.d`, `a.b.c.d/n`, `x::y` or `x::/n`).
    pub fn remote(mut self, remote: impl ToString) -> Self {
        self.remote = Some(remote.to_string());
        self
    }

    /// `remote_group`: the members of a group.
    pub fn remote_group(mut self, group: &str) -> Self {
        self.remote_group = Some(group.to_string());
        self
    }
}

impl Display for Rule {
    /// The rule as an inline table, keys in the order the reference documents them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{ direction = {}, protocol = {}",
            quoted(&self.direction),
            quoted(&self.protocol)
        )?;
        if let Some((min, max)) = self.ports {
            write!(f, ", port_min = {min}, port_max = {max}")?;
        }
        if let Some(icmp_type) = self.icmp_type {
            write!(f, ", type = {icmp_type}")?;
        }
        if let Some(code) = self.icmp_code {
            write!(f, ", code = {code}")?;
        }
        if let Some(remote) = &self.remote {
            write!(f, ", remote = {}", quoted(remote))?;
        }
        if let Some(group) = &self.remote_group {
            write!(f, ", remote_group = {}", quoted(group))?;
        }
        write!(f, " }}")
    }
}

/// A TOML basic string. Test values need no escapes; one that would is refused.
fn quoted(s: &str) -> String {
    assert!(
        !s.contains(['"', '\\']) && !s.contains(|c: char| c.is_control()),
        "fixture value {s:?} would need escaping"
    );
    format!("\"{s}\"")
}

/// A TOML array of strings.
fn list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| quoted(s)).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use iqd::config::{Fabric, Protocol, Remote};

    use super::*;

    fn parse(file: &FabricFile) -> Fabric {
        let text = file.render();
        Fabric::parse(&text, Path::new("fixture.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn renders_what_a_test_would_type() {
        let file = FabricFile::test()
            .chpid("F0")
            .chpid_mfs("F1", "64K")
            .group(Group::new(
                "web",
                [
                    Rule::inbound("tcp").ports(80, 443).remote("10.0.0.0/24"),
                    Rule::outbound("all"),
                ],
            ))
            .lpar("A", "{ns}a", [Nic::new("F0", ["10.7.0.1/24"])])
            .lpar(
                "B",
                "{ns}b",
                [Nic::new("F1", ["10.7.1.2/24", "10.7.1.3/24"])
                    .groups(["web"])
                    .allow_ip_spoofing()],
            );
        assert_eq!(
            file.render(),
            r#"[fabric]
name = "{fabric}"

[[chpid]]
id = "F0"

[[chpid]]
id = "F1"
mfs = "64K"

[[security_group]]
name = "web"
rules = [
  { direction = "inbound", protocol = "tcp", port_min = 80, port_max = 443, remote = "10.0.0.0/24" },
  { direction = "outbound", protocol = "all" },
]

[[lpar]]
name = "A"
netns = "{ns}a"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.7.0.1/24"]

[[lpar]]
name = "B"
netns = "{ns}b"
[[lpar.nic]]
chpid = "F1"
ipv4 = ["10.7.1.2/24", "10.7.1.3/24"]
security_groups = ["web"]
allow_ip_spoofing = true
"#
        );
    }

    #[test]
    fn what_it_renders_is_valid_and_means_what_was_built() {
        let fabric = parse(
            &FabricFile::new("fx")
                .datapath("afxdp")
                .chpid_mfs("F0", "24K")
                .group(Group::new(
                    "ping",
                    [
                        Rule::inbound("icmp").icmp_type(8).icmp_code(0),
                        Rule::inbound("udp").port(53).remote_group("ping"),
                    ],
                ))
                .lpar(
                    "LP01",
                    "fx1",
                    [
                        Nic::new("F0", ["10.0.0.1/24"]).groups(["ping"]),
                        Nic::new("F0", ["10.0.0.1/24"]).vlan(100),
                    ],
                ),
        );
        assert_eq!(fabric.lpars[0].nics[0].vlan, None);
        assert_eq!(fabric.lpars[0].nics[1].vlan, Some(100));
        assert_eq!(fabric.name, "fx");
        assert_eq!(fabric.datapath.label(), "afxdp");
        assert_eq!(fabric.chpids[0].mfs.label(), "24K");
        assert_eq!(fabric.lpars[0].netns, "fx1");
        assert_eq!(fabric.lpars[0].nics[0].security_groups, ["ping"]);
        let rules = &fabric.security_group("ping").expect("group").rules;
        assert_eq!(rules[0].protocol, Protocol::Icmp);
        assert_eq!((rules[0].icmp_type, rules[0].icmp_code), (Some(8), Some(0)));
        assert_eq!(rules[1].ports, Some((53, 53)));
        assert_eq!(rules[1].remote, Remote::Group("ping".into()));
    }
}
