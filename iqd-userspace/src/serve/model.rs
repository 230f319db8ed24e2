//! What `iqd serve` keeps: the VPC resources with their ids (the desired state), and the fabric
//! file they map to. The fabric file is derived, never edited: every change goes through the
//! resources, is rendered to a fabric file and validated and applied as `iqd up` does.
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// The desired state of the served fabric.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doc {
    /// Sequence of the ids handed out (ids are never reused).
    pub next_id: u64,
    /// Data path the fabric is built with (`[fabric] datapath`).
    #[serde(default)]
    pub datapath: String,
    pub vpc: Option<Vpc>,
    pub subnets: Vec<Subnet>,
    pub servers: Vec<Server>,
    pub security_groups: Vec<Group>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vpc {
    pub id: String,
    pub name: String,
    pub created_at: String,
    /// Id of the group named `default`, created with the VPC.
    pub default_security_group: String,
}

/// A subnet: one CHPID of the fabric.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub network: Ipv4Addr,
    pub prefix: u8,
    pub chpid: u8,
    pub mfs: String,
}

/// A bare metal server: one LPAR.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    pub id: String,
    pub name: String,
    pub created_at: String,
    /// The LPAR's name in the fabric file (z/OS style, derived from the id sequence).
    pub lpar: String,
    /// Its namespace: the server's name at creation (a rename does not move it).
    pub netns: String,
    pub profile: String,
    /// `running` or `stopped`.
    pub status: String,
    /// The primary interface first.
    pub interfaces: Vec<Interface>,
}

/// A network interface: one NIC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub id: String,
    pub name: String,
    pub created_at: String,
    /// The NIC's name inside the LPAR (`hsiN`), fixed at creation.
    pub ifname: String,
    pub subnet: String,
    pub address: Ipv4Addr,
    pub allow_ip_spoofing: bool,
    /// Ids of its security groups.
    pub security_groups: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    pub created_at: String,
    pub direction: String,
    pub protocol: String,
    pub port_min: Option<u16>,
    pub port_max: Option<u16>,
    #[serde(rename = "type")]
    pub icmp_type: Option<u8>,
    pub code: Option<u8>,
    pub remote: Remote,
}

/// What a rule's `remote` names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Remote {
    Any,
    CidrBlock(String),
    Address(String),
    /// A security group, by id.
    Group(String),
}

impl Doc {
    /// A new id of the form the VPC API uses (`<zone>-<uuid>`), from the sequence.
    pub fn new_id(&mut self, kind: u16) -> String {
        self.next_id += 1;
        let n = self.next_id;
        format!("0717-{kind:04x}{:04x}-0000-4000-8000-{n:012x}", n >> 48)
    }

    pub fn server(&self, id: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.id == id)
    }
    pub fn subnet(&self, id: &str) -> Option<&Subnet> {
        self.subnets.iter().find(|s| s.id == id)
    }
    pub fn group(&self, id: &str) -> Option<&Group> {
        self.security_groups.iter().find(|g| g.id == id)
    }
    /// The interface `id` with its server.
    pub fn interface(&self, id: &str) -> Option<(&Server, &Interface)> {
        self.servers
            .iter()
            .find_map(|s| s.interfaces.iter().find(|i| i.id == id).map(|i| (s, i)))
    }

    /// The fabric file of this state; `None` while it has no VPC, no subnet (a fabric needs a
    /// CHPID) or no server: the fabric is built with the first server and taken down with the
    /// last (an `afxdp` fabric without LPARs does not come up: its switch finds no state).
    pub fn render(&self) -> Option<String> {
        let vpc = self.vpc.as_ref()?;
        if self.subnets.is_empty() || self.servers.is_empty() {
            return None;
        }
        let mut out = String::new();
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let _ = writeln!(
            out,
            "# The fabric of VPC {} ({}), as `iqd serve` keeps it.\n",
            vpc.name, vpc.id
        );
        let _ = writeln!(out, "[fabric]\nname = {}", q(&vpc.name));
        if !self.datapath.is_empty() {
            let _ = writeln!(out, "datapath = {}", q(&self.datapath));
        }
        for s in &self.subnets {
            let _ = writeln!(
                out,
                "\n# subnet {} ({}) {}/{}\n[[chpid]]\nid = \"{:02X}\"\nmfs = {}",
                s.name,
                s.id,
                s.network,
                s.prefix,
                s.chpid,
                q(&s.mfs)
            );
        }
        let group_name = |id: &str| self.group(id).map(|g| g.name.clone()).unwrap_or_default();
        for g in &self.security_groups {
            let _ = writeln!(
                out,
                "\n# security group {}\n[[security_group]]\nname = {}\nrules = [",
                g.id,
                q(&g.name)
            );
            for r in &g.rules {
                let mut parts = vec![
                    format!("direction = {}", q(&r.direction)),
                    format!("protocol = {}", q(&r.protocol)),
                ];
                if let (Some(a), Some(b)) = (r.port_min, r.port_max) {
                    parts.push(format!("port_min = {a}, port_max = {b}"));
                }
                if let Some(t) = r.icmp_type {
                    parts.push(format!("type = {t}"));
                }
                if let Some(c) = r.code {
                    parts.push(format!("code = {c}"));
                }
                match &r.remote {
                    Remote::Any => {}
                    Remote::CidrBlock(c) | Remote::Address(c) => {
                        parts.push(format!("remote = {}", q(c)))
                    }
                    Remote::Group(id) => {
                        parts.push(format!("remote_group = {}", q(&group_name(id))))
                    }
                }
                let _ = writeln!(out, "  {{ {} }},", parts.join(", "));
            }
            out.push_str("]\n");
        }
        for s in &self.servers {
            let _ = writeln!(
                out,
                "\n# bare metal server {} ({})\n[[lpar]]\nname = {}\nnetns = {}\nprofile = {}",
                s.name,
                s.id,
                q(&s.lpar),
                q(&s.netns),
                q(&s.profile)
            );
            for i in &s.interfaces {
                let Some(subnet) = self.subnet(&i.subnet) else {
                    continue;
                };
                let groups: Vec<String> = i
                    .security_groups
                    .iter()
                    .map(|g| q(&group_name(g)))
                    .collect();
                let _ = writeln!(
                    out,
                    "\n# network interface {} ({})\n[[lpar.nic]]\nchpid = \"{:02X}\"\nname = {}\n\
                     ipv4 = [\"{}/{}\"]\nallow_ip_spoofing = {}",
                    i.name,
                    i.id,
                    subnet.chpid,
                    q(&i.ifname),
                    i.address,
                    subnet.prefix,
                    i.allow_ip_spoofing
                );
                if !groups.is_empty() {
                    let _ = writeln!(out, "security_groups = [{}]", groups.join(", "));
                }
            }
        }
        Some(out)
    }
}

/// `2026-11-30T06:40:00Z` for seconds since the epoch (RFC 3339, as the API writes dates).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

pub fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_020_800), "2026-11-30T06:40:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn an_empty_vpc_has_no_fabric_file_and_one_with_a_subnet_is_valid() {
        let mut doc = Doc::default();
        assert_eq!(doc.render(), None);
        let sg = doc.new_id(1);
        doc.vpc = Some(Vpc {
            id: doc.new_id(2),
            name: "web".into(),
            created_at: now(),
            default_security_group: sg.clone(),
        });
        assert_eq!(doc.render(), None);
        doc.security_groups.push(Group {
            id: sg.clone(),
            name: "default".into(),
            created_at: now(),
            rules: vec![Rule {
                id: "r1".into(),
                created_at: now(),
                direction: "inbound".into(),
                protocol: "tcp".into(),
                port_min: Some(22),
                port_max: Some(22),
                icmp_type: None,
                code: None,
                remote: Remote::Group(sg.clone()),
            }],
        });
        doc.subnets.push(Subnet {
            id: "s1".into(),
            name: "a".into(),
            created_at: now(),
            network: Ipv4Addr::new(10, 0, 0, 0),
            prefix: 24,
            chpid: 0xf0,
            mfs: "16K".into(),
        });
        doc.servers.push(Server {
            id: "b1".into(),
            name: "one".into(),
            created_at: now(),
            lpar: "S0001".into(),
            netns: "one".into(),
            profile: "mz2d-metal-16x512".into(),
            status: "running".into(),
            interfaces: vec![Interface {
                id: "i1".into(),
                name: "eth0".into(),
                created_at: now(),
                ifname: "hsi0".into(),
                subnet: "s1".into(),
                address: Ipv4Addr::new(10, 0, 0, 4),
                allow_ip_spoofing: false,
                security_groups: vec![sg],
            }],
        });
        let text = doc.render().unwrap();
        let fabric = crate::config::Fabric::parse(&text, std::path::Path::new("x.toml")).unwrap();
        assert_eq!(fabric.lpars[0].nics[0].security_groups, ["default"]);
        assert_eq!(fabric.security_groups[0].rules.len(), 1);
    }
}
