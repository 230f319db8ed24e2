//! The fabric file: a TOML description of CHPIDs, LPARs and their NICs.
//!
//! The file is first deserialized into private `Raw*` structs that keep the source span of every
//! value (`toml::Spanned`), then validated into the fabric's types (`crate::domain`, re-exported
//! here). Validation runs in
//! stages (presence of the tables, each value on its own, then cross-references); a stage
//! collects every problem it finds and reports the one earliest in the file, so the error a user
//! sees follows the file's order rather than the order of the checks. Later stages only run on
//! values that passed the earlier ones, which keeps follow-on errors out of the report.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::domain::fabric_netns;
pub use crate::domain::{
    chpid_label, format_mac, implicit_default, prefix_mask, segment_label, Bandwidth, Chpid,
    CidrError, Datapath, Direction, Fabric, Ipv4Cidr, Ipv6Cidr, Lpar, Mfs, Nic, Profile, Protocol,
    Remote, RemoteCidr, Rule, SecurityGroup, DEFAULT_GROUP, PROFILES,
};

pub mod keys;
mod security_groups;
pub use security_groups::{parse_remote, MAX_GROUPS_PER_NIC, MAX_RULES_PER_GROUP};
use security_groups::{CheckedGroup, RawSecurityGroup};

/// `max_nics_per_lpar` when the file does not set it: the LinuxONE limit of IQD NICs per LPAR
/// and CHPID set.
pub const DEFAULT_MAX_NICS_PER_LPAR: usize = 2;
/// Highest `max_nics_per_lpar` accepted.
pub const MAX_NICS_PER_LPAR_LIMIT: usize = 16;
/// First devno handed out to NICs that do not set one.
pub const FIRST_DEFAULT_DEVNO: u16 = 0x7000;
/// Highest devno: a NIC also uses devno+1 and devno+2, which must fit in 16 bits.
pub const MAX_DEVNO: u16 = 0xFFFD;

/// A fabric file that could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read. The I/O error is part of the message (not a `source`) so
    /// that a one-line print of the error says why.
    #[error("{}: cannot read fabric file: {error}", .path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A problem at a position in the file (1-based line and column, in characters).
    #[error("{}:{line}:{column}: {message}", .path.display())]
    At {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A problem with the file as a whole, such as a missing table.
    #[error("{}: {message}", .path.display())]
    File { path: PathBuf, message: String },
}

impl ConfigError {
    /// The fabric file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ConfigError::Io { path, .. }
            | ConfigError::At { path, .. }
            | ConfigError::File { path, .. } => path,
        }
    }

    /// The 1-based line the error points at, if it points anywhere.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::At { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// Reading a fabric from its file.
impl Fabric {
    /// Reads and validates a fabric file.
    pub fn load(path: &Path) -> Result<Fabric, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Fabric::parse(&text, path)
    }

    /// [`Fabric::load`] keeping the devnos `kept` (see [`Fabric::parse_keeping`]).
    pub fn load_keeping(path: &Path, kept: &KeptDevnos) -> Result<Fabric, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Fabric::parse_keeping(&text, path, kept)
    }

    /// Validates fabric file text; `origin` is the file name used in error messages.
    pub fn parse(text: &str, origin: &Path) -> Result<Fabric, ConfigError> {
        Fabric::parse_keeping(text, origin, &KeptDevnos::new())
    }

    /// [`Fabric::parse`], where a NIC that sets no devno keeps the one it was built with
    /// (`kept`, by LPAR, NIC name and CHPID) if that is free: adding a NIC to one LPAR then
    /// does not move the NICs after it in the file to other devnos (new veth pairs).
    pub fn parse_keeping(
        text: &str,
        origin: &Path,
        kept: &KeptDevnos,
    ) -> Result<Fabric, ConfigError> {
        let src = Source {
            path: origin,
            text,
            kept,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => src.error_at(span.start, e.message().to_string()),
            None => src.error(e.message().to_string()),
        })?;
        validate(&src, raw)
    }
}

// ---------------------------------------------------------------------------------------------
// Raw file structure, as written. Values stay strings so that their syntax is checked here with
// a message that says what is expected, and every value keeps its span for error positions.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    fabric: Option<Spanned<RawFabric>>,
    #[serde(default)]
    chpid: Vec<Spanned<RawChpid>>,
    #[serde(default)]
    lpar: Vec<Spanned<RawLpar>>,
    #[serde(default)]
    security_group: Vec<Spanned<RawSecurityGroup>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFabric {
    name: Spanned<String>,
    max_nics_per_lpar: Option<Spanned<i64>>,
    datapath: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChpid {
    id: Spanned<String>,
    mfs: Option<Spanned<String>>,
    analyzer: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLpar {
    name: Spanned<String>,
    netns: Option<Spanned<String>>,
    profile: Option<Spanned<String>>,
    bandwidth: Option<Spanned<String>>,
    traceable: Option<bool>,
    #[serde(default)]
    nic: Vec<Spanned<RawNic>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNic {
    chpid: Spanned<String>,
    /// Any TOML value, so that a non-integer is refused with a message of our own.
    vlan: Option<Spanned<toml::Value>>,
    name: Option<Spanned<String>>,
    devno: Option<Spanned<String>>,
    mac: Option<Spanned<String>>,
    ipv4: Option<Spanned<Vec<Spanned<String>>>>,
    ipv6: Option<Spanned<Vec<Spanned<String>>>>,
    security_groups: Option<Spanned<Vec<Spanned<String>>>>,
    allow_ip_spoofing: Option<bool>,
    layer2: Option<bool>,
    rx_bcast: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// Values that passed the per-value checks, with the byte offsets the cross-checks point at.

struct CheckedChpid {
    id: u8,
    mfs: Mfs,
    pos: usize,
    /// The LPAR that may trace it, and where the file names it.
    analyzer: Option<(String, usize)>,
}

struct CheckedLpar {
    name: String,
    name_pos: usize,
    netns: String,
    /// Where `netns` was set; `None` when it defaults to the LPAR name.
    netns_pos: Option<usize>,
    profile: Option<Profile>,
    bandwidth: Option<Bandwidth>,
    traceable: bool,
    nics: Vec<CheckedNic>,
}

struct CheckedNic {
    /// `LPAR/nic`, for messages.
    label: String,
    /// The `[[lpar.nic]]` table, for problems with no value of their own to point at.
    pos: usize,
    chpid: u8,
    chpid_pos: usize,
    /// The VLAN and where it was set.
    vlan: Option<(u16, usize)>,
    name: String,
    name_pos: Option<usize>,
    devno: Option<(u16, usize)>,
    mac: Option<([u8; 6], usize)>,
    ipv4: Vec<(Ipv4Cidr, usize)>,
    ipv6: Vec<(Ipv6Cidr, usize)>,
    /// Listed security groups with their positions; `None` for the default.
    security_groups: Option<Vec<(String, usize)>>,
    allow_ip_spoofing: bool,
    layer2: bool,
    rx_bcast: bool,
}

/// Devnos NICs were built with, by (LPAR, NIC name, CHPID): see [`Fabric::parse_keeping`].
pub type KeptDevnos = HashMap<(String, String, u8), u16>;

/// The text being validated, for turning byte offsets into positions.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
    /// Devnos to keep for NICs that set none.
    kept: &'a KeptDevnos,
}

impl Source<'_> {
    /// 1-based line and column (in characters) of a byte offset.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = before.matches('\n').count() + 1;
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    fn line(&self, offset: usize) -> usize {
        self.line_col(offset).0
    }

    fn error_at(&self, offset: usize, message: String) -> ConfigError {
        let (line, column) = self.line_col(offset);
        ConfigError::At {
            path: self.path.to_path_buf(),
            line,
            column,
            message,
        }
    }

    fn error(&self, message: String) -> ConfigError {
        ConfigError::File {
            path: self.path.to_path_buf(),
            message,
        }
    }
}

/// Problems found by one validation stage, each with the byte offset it points at.
#[derive(Default)]
struct Problems(Vec<(usize, String)>);

impl Problems {
    fn add(&mut self, pos: usize, message: String) {
        self.0.push((pos, message));
    }

    /// Records the problem of a failed check and passes a good value on.
    fn check<T>(&mut self, result: Checked<T>) -> Option<T> {
        result.map_err(|(pos, message)| self.add(pos, message)).ok()
    }

    /// Fails with the problem earliest in the file, if there is any.
    fn finish(self, src: &Source<'_>) -> Result<(), ConfigError> {
        // min_by_key keeps the first of equal positions, i.e. the first check made there.
        match self.0.into_iter().min_by_key(|(pos, _)| *pos) {
            Some((pos, message)) => Err(src.error_at(pos, message)),
            None => Ok(()),
        }
    }
}

type Checked<T> = Result<T, (usize, String)>;

fn validate(src: &Source<'_>, raw: RawFile) -> Result<Fabric, ConfigError> {
    // Stage 1: the tables that must be there.
    let Some(raw_fabric) = raw.fabric else {
        return Err(src.error("no [fabric] table defined".into()));
    };
    if raw.chpid.is_empty() {
        return Err(src.error("no [[chpid]] defined".into()));
    }

    // Stage 2: every value on its own.
    let mut problems = Problems::default();
    let raw_fabric = raw_fabric.into_inner();
    let name = problems.check(check_fabric_name(&raw_fabric.name));
    let max_nics = match &raw_fabric.max_nics_per_lpar {
        Some(m) => problems.check(check_max_nics(m)),
        None => Some(DEFAULT_MAX_NICS_PER_LPAR),
    };
    let datapath = match &raw_fabric.datapath {
        Some(d) => problems.check(
            Datapath::ALL
                .into_iter()
                .find(|p| p.label() == d.get_ref())
                .ok_or_else(|| {
                    let all: Vec<&str> = Datapath::ALL.iter().map(|p| p.label()).collect();
                    (
                        d.span().start,
                        format!(
                            "invalid datapath {:?}: must be one of {}",
                            d.get_ref(),
                            all.join(", ")
                        ),
                    )
                }),
        ),
        None => Some(Datapath::default()),
    };
    let own_netns = fabric_netns(raw_fabric.name.get_ref());
    let chpids: Vec<CheckedChpid> = raw
        .chpid
        .iter()
        .filter_map(|c| check_chpid(&mut problems, c.get_ref()))
        .collect();
    let lpars: Vec<CheckedLpar> = raw
        .lpar
        .iter()
        .filter_map(|l| check_lpar(&mut problems, l.get_ref(), &own_netns))
        .collect();
    let groups: Vec<CheckedGroup> = raw
        .security_group
        .iter()
        .filter_map(|g| security_groups::check_group(&mut problems, g))
        .collect();
    problems.finish(src)?;
    let (Some(name), Some(max_nics), Some(datapath)) = (name, max_nics, datapath) else {
        // Unreachable: a missing value was recorded as a problem above.
        return Err(src.error("internal error: fabric table not validated".into()));
    };

    // Stage 3: references between values, uniqueness, limits, and the defaults that depend on
    // the whole file (devnos and MACs).
    let mut problems = Problems::default();
    check_chpid_ids(src, &mut problems, &chpids);
    check_lpar_names(src, &mut problems, &lpars);
    check_analyzers(src, &mut problems, &chpids, &lpars);
    check_nics(src, &mut problems, &lpars, &chpids, max_nics);
    check_addresses_unique(src, &mut problems, &lpars);
    let devnos = assign_devnos(src, &mut problems, &lpars);
    let macs = assign_macs(src, &mut problems, &lpars, &devnos);
    security_groups::check_references(
        src,
        &mut problems,
        &groups,
        lpars.iter().flat_map(|l| &l.nics).filter_map(|n| {
            n.security_groups
                .as_deref()
                .map(|list| (n.label.as_str(), list))
        }),
    );
    problems.finish(src)?;

    let mut devnos = devnos.into_iter();
    let mut macs = macs.into_iter();
    let mut out_lpars = Vec::with_capacity(lpars.len());
    for lpar in lpars {
        let mut nics = Vec::with_capacity(lpar.nics.len());
        for nic in lpar.nics {
            // Both lists have one entry per NIC in this order; a `None` was a recorded problem.
            let (Some(Some(devno)), Some(Some(mac))) = (devnos.next(), macs.next()) else {
                return Err(src.error("internal error: NIC defaults not assigned".into()));
            };
            nics.push(Nic {
                chpid: nic.chpid,
                vlan: nic.vlan.map(|(vlan, _)| vlan),
                name: nic.name,
                devno,
                mac,
                ipv4: nic.ipv4.into_iter().map(|(cidr, _)| cidr).collect(),
                ipv6: nic.ipv6.into_iter().map(|(cidr, _)| cidr).collect(),
                security_groups: match nic.security_groups {
                    Some(list) => list.into_iter().map(|(name, _)| name).collect(),
                    None => vec![DEFAULT_GROUP.to_string()],
                },
                allow_ip_spoofing: nic.allow_ip_spoofing,
                layer2: nic.layer2,
                rx_bcast: nic.rx_bcast,
            });
        }
        out_lpars.push(Lpar {
            name: lpar.name,
            netns: lpar.netns,
            traceable: lpar.traceable,
            nics,
            profile: lpar.profile,
            bandwidth: lpar.bandwidth,
        });
    }
    let fabric = Fabric {
        name,
        max_nics_per_lpar: max_nics,
        datapath,
        chpids: chpids
            .into_iter()
            .map(|c| Chpid {
                id: c.id,
                mfs: c.mfs,
                analyzer: c.analyzer.map(|(name, _)| name),
            })
            .collect(),
        lpars: out_lpars,
        security_groups: {
            let mut all: Vec<SecurityGroup> = groups.into_iter().map(|g| g.group).collect();
            if !all.iter().any(|g| g.name == DEFAULT_GROUP) {
                all.push(implicit_default());
            }
            all
        },
    };

    // Stage 4: what the data plane must hold fits in its maps.
    crate::secgroup::check_capacity(&fabric).map_err(|message| src.error(message))?;
    Ok(fabric)
}

// --- Stage 2: single values ------------------------------------------------------------------

fn check_fabric_name(name: &Spanned<String>) -> Checked<String> {
    let s = name.get_ref();
    let ok = (1..=12).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(s.clone())
    } else {
        Err((
            name.span().start,
            format!("invalid fabric name {s:?}: must be 1-12 characters of a-z, 0-9 and '-'"),
        ))
    }
}

fn check_max_nics(max: &Spanned<i64>) -> Checked<usize> {
    let value = *max.get_ref();
    usize::try_from(value)
        .ok()
        .filter(|v| (1..=MAX_NICS_PER_LPAR_LIMIT).contains(v))
        .ok_or_else(|| {
            (
                max.span().start,
                format!(
                    "max_nics_per_lpar = {value} is out of range: must be 1-{MAX_NICS_PER_LPAR_LIMIT}"
                ),
            )
        })
}

/// Parses exactly `digits` hex digits (either case).
fn parse_hex(s: &str, digits: usize) -> Option<u32> {
    if s.len() != digits || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

fn check_chpid_id(id: &Spanned<String>) -> Checked<u8> {
    parse_hex(id.get_ref(), 2)
        .and_then(|v| u8::try_from(v).ok())
        .ok_or_else(|| {
            (
                id.span().start,
                format!(
                    "invalid CHPID {:?}: must be two hex digits, e.g. \"F0\"",
                    id.get_ref()
                ),
            )
        })
}

/// A NIC's `vlan`: an integer 1-4094 (802.1Q: 0 means "no VLAN", 4095 is reserved).
fn check_vlan(vlan: &Spanned<toml::Value>) -> Checked<u16> {
    use iqd_common::{VLAN_MAX, VLAN_MIN};
    let pos = vlan.span().start;
    let value = match vlan.get_ref() {
        toml::Value::Integer(value) => *value,
        other => {
            let shown = match other {
                toml::Value::String(s) => format!("{s:?}"),
                other => other.to_string(),
            };
            return Err((
                pos,
                format!(
                    "invalid VLAN {shown}: must be an integer {VLAN_MIN}-{VLAN_MAX}, e.g. \
                     vlan = 100"
                ),
            ));
        }
    };
    match value {
        0 => Err((
            pos,
            format!(
                "VLAN 0 is not a VLAN id (802.1Q: no VLAN): must be {VLAN_MIN}-{VLAN_MAX}; \
                 leave vlan out for the CHPID's untagged segment"
            ),
        )),
        4095 => Err((
            pos,
            format!("VLAN 4095 is reserved (802.1Q): must be {VLAN_MIN}-{VLAN_MAX}"),
        )),
        value => u16::try_from(value)
            .ok()
            .filter(|v| (VLAN_MIN..=VLAN_MAX).contains(v))
            .ok_or_else(|| {
                (
                    pos,
                    format!("VLAN {value} is out of range: must be {VLAN_MIN}-{VLAN_MAX}"),
                )
            }),
    }
}

fn check_chpid(problems: &mut Problems, raw: &RawChpid) -> Option<CheckedChpid> {
    let id = problems.check(check_chpid_id(&raw.id));
    let mfs = match &raw.mfs {
        Some(m) => problems.check(Mfs::from_label(m.get_ref()).ok_or_else(|| {
            let all: Vec<&str> = Mfs::ALL.iter().map(|m| m.label()).collect();
            (
                m.span().start,
                format!(
                    "invalid MFS {:?}: must be one of {}",
                    m.get_ref(),
                    all.join(", ")
                ),
            )
        })),
        None => Some(Mfs::K16),
    };
    let (Some(id), Some(mfs)) = (id, mfs) else {
        return None;
    };
    Some(CheckedChpid {
        id,
        mfs,
        pos: raw.id.span().start,
        analyzer: raw
            .analyzer
            .as_ref()
            .map(|a| (a.get_ref().clone(), a.span().start)),
    })
}

fn is_lpar_name(s: &str) -> bool {
    (1..=8).contains(&s.len())
        && s.bytes().all(|b| {
            b.is_ascii_uppercase() || b.is_ascii_digit() || matches!(b, b'@' | b'#' | b'$')
        })
}

fn is_netns_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The kernel's `dev_valid_name()`, plus no control characters (a NUL would cut the name short).
fn is_ifname(s: &str) -> bool {
    (1..16).contains(&s.len())
        && s != "."
        && s != ".."
        && !s
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

fn check_lpar(problems: &mut Problems, raw: &RawLpar, own_netns: &str) -> Option<CheckedLpar> {
    let name = raw.name.get_ref();
    let name_pos = raw.name.span().start;
    let name_ok = is_lpar_name(name);
    if !name_ok {
        problems.add(
            name_pos,
            format!(
                "invalid LPAR name {name:?}: must be 1-8 characters of A-Z, 0-9, '@', '#' and '$'"
            ),
        );
    }
    let netns = match &raw.netns {
        Some(ns) => problems.check(check_netns(ns, own_netns)),
        // The default is the LPAR name, whose '@', '#' and '$' are not allowed in a netns name.
        None if name_ok && !is_netns_name(name) => {
            problems.add(
                name_pos,
                format!(
                    "LPAR name {name:?} is not a valid netns name (it would be the default); \
                     set netns explicitly"
                ),
            );
            None
        }
        None => Some(name.clone()),
    };
    let profile = match &raw.profile {
        Some(p) => Some(problems.check(check_profile(p))?),
        None => None,
    };
    let bandwidth = match &raw.bandwidth {
        Some(b) => {
            Some(problems.check(Bandwidth::parse(b.get_ref()).map_err(|m| (b.span().start, m)))?)
        }
        None => None,
    };
    let nics: Vec<CheckedNic> = raw
        .nic
        .iter()
        .enumerate()
        .filter_map(|(index, nic)| check_nic(problems, name, index, nic))
        .collect();
    let netns = netns.filter(|_| name_ok)?;
    if nics.len() != raw.nic.len() {
        return None;
    }
    Some(CheckedLpar {
        name: name.clone(),
        name_pos,
        netns,
        netns_pos: raw.netns.as_ref().map(|ns| ns.span().start),
        profile,
        bandwidth,
        traceable: raw.traceable.unwrap_or(false),
        nics,
    })
}

fn check_profile(profile: &Spanned<String>) -> Checked<Profile> {
    Profile::find(profile.get_ref()).ok_or_else(|| {
        let all: Vec<&str> = PROFILES.iter().map(|p| p.name).collect();
        (
            profile.span().start,
            format!(
                "unknown profile {:?}: must be one of {} (`iqd profiles` lists them)",
                profile.get_ref(),
                all.join(", ")
            ),
        )
    })
}

fn check_netns(ns: &Spanned<String>, own_netns: &str) -> Checked<String> {
    let s = ns.get_ref();
    let pos = ns.span().start;
    if !is_netns_name(s) {
        return Err((
            pos,
            format!(
                "invalid netns name {s:?}: must be 1-64 characters of A-Z, a-z, 0-9, '_', '.' \
                 and '-', and not \".\" or \"..\""
            ),
        ));
    }
    if s == own_netns {
        return Err((
            pos,
            format!("netns name {s:?} is reserved: it is the fabric's own namespace"),
        ));
    }
    Ok(s.clone())
}

fn check_nic(
    problems: &mut Problems,
    lpar: &str,
    index: usize,
    raw: &Spanned<RawNic>,
) -> Option<CheckedNic> {
    let pos = raw.span().start;
    let raw = raw.get_ref();
    let name = match &raw.name {
        Some(n) if is_ifname(n.get_ref()) => Some(n.get_ref().clone()),
        Some(n) => {
            problems.add(
                n.span().start,
                format!(
                    "invalid NIC name {:?}: must be a Linux interface name (1-15 bytes, no '/', \
                     ':' or whitespace, not \".\" or \"..\")",
                    n.get_ref()
                ),
            );
            None
        }
        None => Some(format!("hsi{index}")),
    };
    // Messages name the NIC as written, even when the name itself is refused.
    let label = match &raw.name {
        Some(n) => format!("{lpar}/{}", n.get_ref()),
        None => format!("{lpar}/hsi{index}"),
    };
    let chpid = problems.check(check_chpid_id(&raw.chpid));
    let vlan = match &raw.vlan {
        Some(v) => problems
            .check(check_vlan(v))
            .map(|vlan| Some((vlan, v.span().start))),
        None => Some(None),
    };
    let devno = match &raw.devno {
        Some(d) => problems
            .check(check_devno(d))
            .map(|v| Some((v, d.span().start))),
        None => Some(None),
    };
    let mac = match &raw.mac {
        Some(m) => problems
            .check(check_mac(m))
            .map(|v| Some((v, m.span().start))),
        None => Some(None),
    };
    let ipv4 = check_list(problems, &raw.ipv4, check_ipv4);
    let ipv6 = check_list(problems, &raw.ipv6, check_ipv6);
    // A layer-3 NIC needs an address to be reachable: at least one in either list. An empty
    // list counts as none; the message points at it, or at the NIC when neither list is
    // written. A layer-2 NIC is reached by its MAC, and may carry no IP at all.
    let empty = |l: &Option<Spanned<Vec<Spanned<String>>>>| {
        l.as_ref().is_none_or(|l| l.get_ref().is_empty())
    };
    let layer2 = raw.layer2.unwrap_or(false);
    if !layer2 && empty(&raw.ipv4) && empty(&raw.ipv6) {
        let at = [&raw.ipv4, &raw.ipv6]
            .into_iter()
            .flatten()
            .map(|l| l.span().start)
            .min()
            .unwrap_or(pos);
        problems.add(at, no_address(&label));
    }
    let security_groups = match &raw.security_groups {
        Some(list) => security_groups::check_nic_groups(problems, &label, list).map(Some),
        None => Some(None),
    };
    let (
        Some(name),
        Some(chpid),
        Some(vlan),
        Some(devno),
        Some(mac),
        Some(ipv4),
        Some(ipv6),
        Some(security_groups),
    ) = (name, chpid, vlan, devno, mac, ipv4, ipv6, security_groups)
    else {
        return None;
    };
    Some(CheckedNic {
        label,
        pos,
        chpid,
        chpid_pos: raw.chpid.span().start,
        vlan,
        name,
        name_pos: raw.name.as_ref().map(|n| n.span().start),
        devno,
        mac,
        ipv4,
        ipv6,
        security_groups,
        allow_ip_spoofing: raw.allow_ip_spoofing.unwrap_or(false),
        layer2,
        rx_bcast: raw.rx_bcast.unwrap_or(true),
    })
}

/// Checks each address of an optional list; `Some` (the addresses with their positions) only
/// when every one passed.
fn check_list<T>(
    problems: &mut Problems,
    list: &Option<Spanned<Vec<Spanned<String>>>>,
    check: fn(&Spanned<String>) -> Checked<T>,
) -> Option<Vec<(T, usize)>> {
    let Some(list) = list else {
        return Some(Vec::new());
    };
    let checked: Vec<(T, usize)> = list
        .get_ref()
        .iter()
        .filter_map(|a| problems.check(check(a)).map(|c| (c, a.span().start)))
        .collect();
    Some(checked).filter(|c| c.len() == list.get_ref().len())
}

fn no_address(label: &str) -> String {
    format!(
        "NIC {label} has no address: list at least one in ipv4 or ipv6, e.g. \
         ipv4 = [\"10.0.0.1/24\"] or ipv6 = [\"fd00:f0::1/64\"] (only a layer-2 NIC, \
         layer2 = true, may have none)"
    )
}

fn check_devno(devno: &Spanned<String>) -> Checked<u16> {
    let pos = devno.span().start;
    let value = parse_hex(devno.get_ref(), 4)
        .and_then(|v| u16::try_from(v).ok())
        .ok_or_else(|| {
            (
                pos,
                format!(
                    "invalid devno {:?}: must be four hex digits, e.g. \"7000\"",
                    devno.get_ref()
                ),
            )
        })?;
    if value > MAX_DEVNO {
        return Err((
            pos,
            format!(
                "devno {value:04x} is too high: the NIC also uses devno+1 and devno+2, so devno \
                 must be at most {MAX_DEVNO:04x}"
            ),
        ));
    }
    Ok(value)
}

fn check_mac(mac: &Spanned<String>) -> Checked<[u8; 6]> {
    let pos = mac.span().start;
    let s = mac.get_ref();
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    let parsed = out.iter_mut().all(|byte| {
        match parts.next().and_then(|p| parse_hex(p, 2)) {
            Some(v) => {
                // parse_hex of two digits is at most 0xff.
                *byte = v as u8;
                true
            }
            None => false,
        }
    }) && parts.next().is_none();
    if !parsed {
        return Err((
            pos,
            format!("invalid MAC {s:?}: must be six hex octets separated by ':', e.g. \"02:00:00:00:f0:01\""),
        ));
    }
    if out[0] & 1 != 0 {
        return Err((
            pos,
            format!(
                "MAC {} is a multicast or broadcast address: a NIC needs a unicast MAC \
                 (lowest bit of the first octet clear)",
                format_mac(&out)
            ),
        ));
    }
    if out == [0; 6] {
        return Err((
            pos,
            "MAC 00:00:00:00:00:00 is all zeros: a NIC needs a unicast MAC".into(),
        ));
    }
    Ok(out)
}

fn check_ipv4(addr: &Spanned<String>) -> Checked<Ipv4Cidr> {
    let pos = addr.span().start;
    let s = addr.get_ref();
    let cidr: Ipv4Cidr = s
        .parse()
        .map_err(|e: CidrError| (pos, format!("invalid IPv4 address {s:?}: {e}")))?;
    let a = cidr.addr;
    let problem = if a.is_unspecified() {
        Some("the unspecified address")
    } else if a.is_broadcast() {
        Some("the broadcast address")
    } else if a.is_loopback() {
        Some("a loopback address")
    } else if a.is_multicast() {
        Some("a multicast address")
    } else {
        None
    };
    match problem {
        Some(what) => Err((
            pos,
            format!("IPv4 address {a} is {what} and cannot be registered with a CHPID"),
        )),
        None => Ok(cidr),
    }
}

fn check_ipv6(addr: &Spanned<String>) -> Checked<Ipv6Cidr> {
    let pos = addr.span().start;
    let s = addr.get_ref();
    let cidr: Ipv6Cidr = s
        .parse()
        .map_err(|e: CidrError| (pos, format!("invalid IPv6 address {s:?}: {e}")))?;
    let a = cidr.addr;
    let problem = if a.is_unspecified() {
        Some("the unspecified address")
    } else if a.is_loopback() {
        Some("the loopback address")
    } else if a.is_multicast() {
        Some("a multicast address")
    } else if a.to_ipv4_mapped().is_some() {
        Some("an IPv4-mapped address (write IPv4 addresses in ipv4)")
    } else if a.is_unicast_link_local() {
        Some("a link-local address (iqd registers the NIC's own link-local address from its MAC)")
    } else {
        None
    };
    match problem {
        Some(what) => Err((
            pos,
            format!("IPv6 address {a} is {what} and cannot be registered with a CHPID"),
        )),
        None => Ok(cidr),
    }
}

// --- Stage 3: the file as a whole --------------------------------------------------------------

fn check_chpid_ids(src: &Source<'_>, problems: &mut Problems, chpids: &[CheckedChpid]) {
    let mut seen: HashMap<u8, usize> = HashMap::new();
    for c in chpids {
        if let Some(&first) = seen.get(&c.id) {
            problems.add(
                c.pos,
                format!(
                    "duplicate CHPID {}, first defined at line {}",
                    chpid_label(c.id),
                    src.line(first)
                ),
            );
        } else {
            seen.insert(c.id, c.pos);
        }
    }
}

/// A CHPID's `analyzer` names an LPAR of the file.
fn check_analyzers(
    _src: &Source<'_>,
    problems: &mut Problems,
    chpids: &[CheckedChpid],
    lpars: &[CheckedLpar],
) {
    for c in chpids {
        if let Some((name, pos)) = &c.analyzer {
            if !lpars.iter().any(|l| &l.name == name) {
                problems.add(
                    *pos,
                    format!(
                        "CHPID {}: analyzer {name:?} is not an LPAR of this file",
                        chpid_label(c.id)
                    ),
                );
            }
        }
    }
}

fn check_lpar_names(src: &Source<'_>, problems: &mut Problems, lpars: &[CheckedLpar]) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut netns: HashMap<&str, (&str, usize)> = HashMap::new();
    for l in lpars {
        if let Some(&first) = names.get(l.name.as_str()) {
            problems.add(
                l.name_pos,
                format!(
                    "duplicate LPAR name {}, first defined at line {}",
                    l.name,
                    src.line(first)
                ),
            );
        } else {
            names.insert(&l.name, l.name_pos);
        }
        let pos = l.netns_pos.unwrap_or(l.name_pos);
        if let Some(&(other, first)) = netns.get(l.netns.as_str()) {
            let how = if l.netns_pos.is_none() {
                " (its default, the LPAR name)"
            } else {
                ""
            };
            problems.add(
                pos,
                format!(
                    "duplicate netns name {}: LPAR {}{how} would share the namespace of LPAR \
                     {other}, defined at line {}",
                    l.netns,
                    l.name,
                    src.line(first)
                ),
            );
        } else {
            netns.insert(&l.netns, (&l.name, pos));
        }
    }
}

fn check_nics(
    src: &Source<'_>,
    problems: &mut Problems,
    lpars: &[CheckedLpar],
    chpids: &[CheckedChpid],
    max_nics: usize,
) {
    let defined: HashSet<u8> = chpids.iter().map(|c| c.id).collect();
    for l in lpars {
        // A profile's interface count replaces the fabric's limit for its LPARs.
        let (max_nics, limit) = match l.profile {
            Some(p) => (
                p.interfaces,
                format!(
                    "profile {} allows ({} interface{})",
                    p.name,
                    p.interfaces,
                    if p.interfaces == 1 { "" } else { "s" }
                ),
            ),
            None => (max_nics, format!("max_nics_per_lpar = {max_nics}")),
        };
        if let Some(extra) = l.nics.get(max_nics) {
            problems.add(
                extra.pos,
                format!(
                    "LPAR {} has {} NICs, more than {limit}",
                    l.name,
                    l.nics.len()
                ),
            );
        }
        // One NIC per segment: z/OS gives each VLAN of a CHPID its own interface.
        let mut in_segment: HashMap<(u8, Option<u16>), (&str, usize)> = HashMap::new();
        let mut names: HashMap<&str, usize> = HashMap::new();
        for nic in &l.nics {
            if !defined.contains(&nic.chpid) {
                problems.add(
                    nic.chpid_pos,
                    format!(
                        "NIC {} is on CHPID {}, which is not defined by any [[chpid]]",
                        nic.label,
                        chpid_label(nic.chpid)
                    ),
                );
            }
            let segment = (nic.chpid, nic.vlan.map(|(vlan, _)| vlan));
            if let Some(&(other, first)) = in_segment.get(&segment) {
                let (pos, untagged) = match nic.vlan {
                    Some((_, pos)) => (pos, ""),
                    None => (nic.chpid_pos, ", both without vlan"),
                };
                problems.add(
                    pos,
                    format!(
                        "NIC {} is on {} like {other}, defined at line {}{untagged}: an LPAR can \
                         have only one NIC per segment (CHPID and VLAN); give each a different vlan",
                        nic.label,
                        segment_label(segment.0, segment.1),
                        src.line(first)
                    ),
                );
            } else {
                in_segment.insert(segment, (&nic.label, nic.chpid_pos));
            }
            let name_pos = nic.name_pos.unwrap_or(nic.pos);
            if let Some(&first) = names.get(nic.name.as_str()) {
                let how = if nic.name_pos.is_none() {
                    " (the default name of this NIC)"
                } else {
                    ""
                };
                problems.add(
                    name_pos,
                    format!(
                        "duplicate NIC name {}{how} in LPAR {}, first used at line {}",
                        nic.name,
                        l.name,
                        src.line(first)
                    ),
                );
            } else {
                names.insert(&nic.name, name_pos);
            }
        }
    }
}

fn check_addresses_unique(src: &Source<'_>, problems: &mut Problems, lpars: &[CheckedLpar]) {
    // The same address in different segments is fine: each CHPID, and each VLAN of one, is its
    // own LAN. Link-local addresses follow from the MACs, which are unique, so only the listed
    // ones are checked.
    let mut seen: HashMap<(u8, Option<u16>, IpAddr), (&str, usize)> = HashMap::new();
    for nic in lpars.iter().flat_map(|l| &l.nics) {
        let v4 = nic.ipv4.iter().map(|&(c, pos)| (IpAddr::V4(c.addr), pos));
        let v6 = nic.ipv6.iter().map(|&(c, pos)| (IpAddr::V6(c.addr), pos));
        for (addr, pos) in v4.chain(v6) {
            let vlan = nic.vlan.map(|(vlan, _)| vlan);
            let key = (nic.chpid, vlan, addr);
            if let Some(&(other, first)) = seen.get(&key) {
                let whom = if other == nic.label {
                    format!("NIC {other} lists it twice")
                } else {
                    format!("NIC {} and {other} both register it", nic.label)
                };
                let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
                problems.add(
                    pos,
                    format!(
                        "duplicate {family} address {addr} on {}: {whom} (first at line {})",
                        segment_label(nic.chpid, vlan),
                        src.line(first)
                    ),
                );
            } else {
                seen.insert(key, (&nic.label, pos));
            }
        }
    }
}

/// Whether the device triples starting at `a` and `b` share a device.
fn triples_overlap(a: u16, b: u16) -> bool {
    a.abs_diff(b) < 3
}

fn device_range(devno: u16) -> String {
    format!("0.0.{devno:04x}-0.0.{:04x}", u32::from(devno) + 2)
}

/// Checks the explicit devnos and allocates the others; one entry per NIC in file order,
/// `None` where allocation failed (recorded as a problem).
fn assign_devnos(
    src: &Source<'_>,
    problems: &mut Problems,
    lpars: &[CheckedLpar],
) -> Vec<Option<u16>> {
    let nics = || lpars.iter().flat_map(|l| &l.nics);
    // Explicit devnos are reserved first, so allocation never takes one a later NIC asked for.
    let mut reserved: Vec<(u16, &str, usize)> = Vec::new();
    for nic in nics() {
        let Some((devno, pos)) = nic.devno else {
            continue;
        };
        if let Some(&(other, other_label, other_pos)) = reserved
            .iter()
            .find(|(other, _, _)| triples_overlap(devno, *other))
        {
            problems.add(
                pos,
                format!(
                    "duplicate devno {devno:04x}: NIC {} overlaps {other_label} (devices {}), \
                     defined at line {}",
                    nic.label,
                    device_range(other),
                    src.line(other_pos)
                ),
            );
        }
        reserved.push((devno, &nic.label, pos));
    }
    // Then the devnos NICs that set none were built with, where still free.
    let mut kept: Vec<Option<u16>> = Vec::new();
    for l in lpars {
        for nic in &l.nics {
            let key = (l.name.clone(), nic.name.clone(), nic.chpid);
            let keep = src.kept.get(&key).copied().filter(|&devno| {
                nic.devno.is_none()
                    && (FIRST_DEFAULT_DEVNO..=MAX_DEVNO).contains(&devno)
                    && !reserved.iter().any(|(r, _, _)| triples_overlap(devno, *r))
            });
            if let Some(devno) = keep {
                reserved.push((devno, &nic.label, nic.pos));
            }
            kept.push(keep);
        }
    }
    let mut kept = kept.into_iter();
    // Candidates only grow, and allocated triples are 3 apart, so each allocation only needs
    // checking against the reserved ones.
    let mut next = u32::from(FIRST_DEFAULT_DEVNO);
    nics()
        .map(|nic| {
            let keep = kept.next().flatten();
            if let Some((devno, _)) = nic.devno {
                return Some(devno);
            }
            if let Some(devno) = keep {
                return Some(devno);
            }
            while next <= u32::from(MAX_DEVNO) {
                let candidate = next as u16;
                next += 3;
                if !reserved
                    .iter()
                    .any(|(r, _, _)| triples_overlap(candidate, *r))
                {
                    return Some(candidate);
                }
            }
            problems.add(
                nic.pos,
                format!(
                    "no free devno left for NIC {} above {FIRST_DEFAULT_DEVNO:04x}: set devno \
                     explicitly",
                    nic.label
                ),
            );
            None
        })
        .collect()
}

/// The MAC a NIC gets when the file does not set one: unique because devnos are.
fn derived_mac(chpid: u8, devno: u16) -> [u8; 6] {
    let [hi, lo] = devno.to_be_bytes();
    [0x02, 0, 0, chpid, hi, lo]
}

/// Resolves every NIC's MAC (one entry per NIC in file order) and checks they are unique.
fn assign_macs(
    src: &Source<'_>,
    problems: &mut Problems,
    lpars: &[CheckedLpar],
    devnos: &[Option<u16>],
) -> Vec<Option<[u8; 6]>> {
    // mac -> (NIC label, position, how it was derived if it was)
    let mut seen: HashMap<[u8; 6], (&str, usize, Option<String>)> = HashMap::new();
    let nics = lpars.iter().flat_map(|l| &l.nics);
    nics.zip(devnos)
        .map(|(nic, devno)| {
            let (mac, pos, derived) = match (nic.mac, devno) {
                (Some((mac, pos)), _) => (mac, pos, None),
                (None, Some(devno)) => (
                    derived_mac(nic.chpid, *devno),
                    nic.pos,
                    Some(format!(
                        " (derived from CHPID {} and devno {devno:04x})",
                        chpid_label(nic.chpid)
                    )),
                ),
                (None, None) => return None,
            };
            match seen.get(&mac) {
                // Two derived MACs only collide on a duplicate devno, which is reported already.
                Some((other, first, other_derived))
                    if derived.is_none() || other_derived.is_none() =>
                {
                    problems.add(
                        pos,
                        format!(
                            "duplicate MAC {}: NIC {}{} collides with {other}{}, defined at line {}",
                            format_mac(&mac),
                            nic.label,
                            derived.as_deref().unwrap_or(""),
                            other_derived.as_deref().unwrap_or(""),
                            src.line(*first)
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    seen.insert(mac, (&nic.label, pos, derived));
                }
            }
            Some(mac)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "test.toml";

    fn parse(text: &str) -> Result<Fabric, ConfigError> {
        Fabric::parse(text, Path::new(FILE))
    }

    fn parse_ok(text: &str) -> Fabric {
        match parse(text) {
            Ok(f) => f,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    #[test]
    fn analyzer_and_traceable() {
        let f = parse_ok(
            "[fabric]\nname = \"f\"\n[[chpid]]\nid = \"F0\"\nanalyzer = \"LP03\"\n\
             [[chpid]]\nid = \"F1\"\n[[lpar]]\nname = \"LP01\"\ntraceable = true\n\
             [[lpar]]\nname = \"LP03\"\n",
        );
        assert_eq!(f.chpids[0].analyzer.as_deref(), Some("LP03"));
        assert_eq!(f.chpids[1].analyzer, None);
        assert!(f.lpars[0].traceable);
        assert!(!f.lpars[1].traceable);
        refused(
            "[fabric]\nname = \"f\"\n[[chpid]]\nid = \"F0\"\nanalyzer = \"LP09\" # <-\n\
             [[lpar]]\nname = \"LP01\"\n",
            "CHPID F0: analyzer \"LP09\" is not an LPAR of this file",
        );
        refused(
            "[fabric]\nname = \"f\"\n[[chpid]]\nid = \"F0\"\n[[lpar]]\nname = \"LP01\"\n\
             traceable = \"yes\" # <-\n",
            "expected a boolean",
        );
    }

    /// Asserts `text` is refused on the line marked `# <-` with a message containing `needle`.
    #[track_caller]
    fn refused(text: &str, needle: &str) -> String {
        let marked: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains("# <-"))
            .map(|(i, _)| i + 1)
            .collect();
        assert_eq!(marked.len(), 1, "test text must mark exactly one line");
        let msg = match parse(text) {
            Ok(_) => panic!("accepted, expected an error containing {needle:?}"),
            Err(e) => e.to_string(),
        };
        let prefix = format!("{FILE}:{}:", marked[0]);
        assert!(
            msg.starts_with(&prefix),
            "{msg:?} should start with {prefix:?}"
        );
        assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
        msg
    }

    /// A valid head (fabric and two CHPIDs) for the refusal tests; lines 1-9.
    const HEAD: &str = r#"[fabric]
name = "demo"

[[chpid]]
id = "F0"

[[chpid]]
id = "F1"
mfs = "24K"
"#;

    fn with_head(rest: &str) -> String {
        format!("{HEAD}{rest}")
    }

    const FULL: &str = r#"# A fabric with every optional key somewhere.
[fabric]
name = "demo-1"

[[chpid]]
id = "F0"

[[chpid]]
id = "e1"
mfs = "64K"

[[lpar]]
name = "LP01"

[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.1/24"]

[[lpar.nic]]
chpid = "E1"
name = "iqd1"
devno = "7004"
mac = "02:aa:bb:cc:dd:ee"
ipv4 = ["10.1.0.1/24", "10.1.0.2/16"]

[[lpar]]
name = "LP02"
netns = "lp02-ns"

[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.2/24"]

[[lpar.nic]]
chpid = "E1"
devno = "80aB"
ipv4 = ["10.0.0.2/24"]   # the same address on another CHPID is fine

[[lpar]]
name = "LP#3"
netns = "lp3"
"#;

    #[test]
    fn full_example_with_defaults() {
        let f = parse_ok(FULL);
        assert_eq!(f.name, "demo-1");
        assert_eq!(f.netns_name(), "iqd-demo-1");
        assert_eq!(f.max_nics_per_lpar, 2);
        assert_eq!(f.chpids.len(), 2);
        assert_eq!(f.chpids[0].id, 0xF0);
        assert_eq!(f.chpids[0].mfs, Mfs::K16);
        assert_eq!(f.chpids[0].mfs.mtu(), 8192);
        assert_eq!(f.chpids[1].id, 0xE1);
        assert_eq!(f.chpids[1].mfs, Mfs::K64);
        assert_eq!(f.chpid(0xE1).map(|c| c.mfs), Some(Mfs::K64));
        assert!(f.chpid(0x00).is_none());

        assert_eq!(f.lpars.len(), 3);
        let lp1 = &f.lpars[0];
        assert_eq!(lp1.name, "LP01");
        assert_eq!(lp1.netns, "LP01");
        let n = &lp1.nics[0];
        assert_eq!(n.name, "hsi0");
        assert_eq!(n.chpid, 0xF0);
        assert_eq!(n.devno, 0x7000);
        assert_eq!(n.mac, [0x02, 0, 0, 0xF0, 0x70, 0x00]);
        assert_eq!(format_mac(&n.mac), "02:00:00:f0:70:00");
        assert_eq!(n.device_triple(), "0.0.7000,0.0.7001,0.0.7002");
        assert_eq!(n.ipv4, vec!["10.0.0.1/24".parse::<Ipv4Cidr>().unwrap()]);
        let n = &lp1.nics[1];
        assert_eq!(n.name, "iqd1");
        assert_eq!(n.chpid, 0xE1);
        assert_eq!(n.devno, 0x7004);
        assert_eq!(format_mac(&n.mac), "02:aa:bb:cc:dd:ee");
        assert_eq!(n.ipv4.len(), 2);
        assert_eq!(n.ipv4[1].prefix, 16);

        let lp2 = &f.lpars[1];
        assert_eq!(lp2.netns, "lp02-ns");
        // 0x7003 and 0x7006 overlap the explicit 0x7004-0x7006.
        assert_eq!(lp2.nics[0].name, "hsi0");
        assert_eq!(lp2.nics[0].devno, 0x7009);
        assert_eq!(format_mac(&lp2.nics[0].mac), "02:00:00:f0:70:09");
        assert_eq!(lp2.nics[1].name, "hsi1");
        assert_eq!(lp2.nics[1].devno, 0x80AB);
        assert_eq!(lp2.nics[1].device_triple(), "0.0.80ab,0.0.80ac,0.0.80ad");
        assert_eq!(format_mac(&lp2.nics[1].mac), "02:00:00:e1:80:ab");

        // An LPAR without NICs is allowed.
        assert_eq!(f.lpars[2].name, "LP#3");
        assert!(f.lpars[2].nics.is_empty());
    }

    #[test]
    fn json_uses_labels() {
        let f = parse_ok(FULL);
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["chpids"][1]["id"], "E1");
        assert_eq!(json["chpids"][1]["mfs"], "64K");
        let nic = &json["lpars"][0]["nics"][0];
        assert_eq!(nic["chpid"], "F0");
        assert_eq!(nic["devno"], "7000");
        assert_eq!(nic["mac"], "02:00:00:f0:70:00");
        assert_eq!(nic["ipv4"][0], "10.0.0.1/24");
    }

    #[test]
    fn mfs_to_mtu() {
        let cases = [
            (Mfs::K16, "16K", 16384, 8192),
            (Mfs::K24, "24K", 24576, 16384),
            (Mfs::K40, "40K", 40960, 32768),
            (Mfs::K64, "64K", 65536, 57344),
        ];
        for (mfs, label, bytes, mtu) in cases {
            assert_eq!(mfs.label(), label);
            assert_eq!(mfs.bytes(), bytes);
            assert_eq!(mfs.mtu(), mtu);
            let f = parse_ok(&format!(
                "[fabric]\nname = \"x\"\n[[chpid]]\nid = \"01\"\nmfs = \"{label}\"\n"
            ));
            assert_eq!(f.chpids[0].mfs, mfs);
        }
    }

    #[test]
    fn cidr_parse_and_display() {
        let c: Ipv4Cidr = "10.1.2.3/32".parse().unwrap();
        assert_eq!(c.addr, std::net::Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(c.prefix, 32);
        assert_eq!(c.to_string(), "10.1.2.3/32");
        for bad in [
            "10.0.0.1",
            "10.0.0.1/0",
            "10.0.0.1/33",
            "10.0.0/8",
            "x/8",
            "1.2.3.4/+8",
        ] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn labels() {
        assert_eq!(chpid_label(0xF0), "F0");
        assert_eq!(chpid_label(0x0A), "0A");
        assert_eq!(format_mac(&[2, 0, 0, 0, 0xF0, 1]), "02:00:00:00:f0:01");
    }

    #[test]
    fn max_nics_setting() {
        let f =
            parse_ok(&HEAD.replace("name = \"demo\"", "name = \"demo\"\nmax_nics_per_lpar = 16"));
        assert_eq!(f.max_nics_per_lpar, 16);
        refused(
            &HEAD.replace(
                "name = \"demo\"",
                "name = \"demo\"\nmax_nics_per_lpar = 0 # <-",
            ),
            "max_nics_per_lpar = 0 is out of range",
        );
        refused(
            &HEAD.replace(
                "name = \"demo\"",
                "name = \"demo\"\nmax_nics_per_lpar = 17 # <-",
            ),
            "must be 1-16",
        );
    }

    #[test]
    fn layer2_nics_and_rx_bcast() {
        let f = parse_ok(&with_head(
            r#"
[[lpar]]
name = "LP01"

[[lpar.nic]]
chpid = "F0"
layer2 = true
rx_bcast = false

[[lpar]]
name = "LP02"

[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.2/24"]
"#,
        ));
        let (l2, l3) = (&f.lpars[0].nics[0], &f.lpars[1].nics[0]);
        // A layer-2 NIC may have no address; the defaults are layer 3 with broadcasts.
        assert!(l2.layer2 && !l2.rx_bcast && l2.ipv4.is_empty());
        assert!(!l3.layer2 && l3.rx_bcast);
        refused(
            &with_head(
                "[[lpar]]\nname = \"LP01\"\n\n[[lpar.nic]] # <-\nchpid = \"F0\"\nlayer2 = false\n",
            ),
            "has no address",
        );
        refused(
            &with_head(
                "[[lpar]]\nname = \"LP01\"\n\n[[lpar.nic]]\nchpid = \"F0\"\nlayer2 = \"yes\" # <-\n",
            ),
            "expected a boolean",
        );
        refused(
            &with_head(
                "[[lpar]]\nname = \"LP01\"\n\n[[lpar.nic]]\nchpid = \"F0\"\nlayer2 = true\nrx_bcast = 0 # <-\n",
            ),
            "expected a boolean",
        );
    }

    #[test]
    fn error_position_and_format() {
        let text = with_head(
            r#"
[[lpar]]
name = "LP01"

[[lpar.nic]]
chpid = "F0"
devno = "7000"
ipv4 = ["10.0.0.1/24"]

[[lpar]]
name = "LP02"

[[lpar.nic]]
chpid = "F0"
devno = "7000"
ipv4 = ["10.0.0.2/24"]
"#,
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line(), Some(24));
        assert_eq!(e.path(), Path::new(FILE));
        assert_eq!(
            e.to_string(),
            "test.toml:24:9: duplicate devno 7000: NIC LP02/hsi0 overlaps LP01/hsi0 \
             (devices 0.0.7000-0.0.7002), defined at line 16"
        );
    }

    #[test]
    fn devno_overlap_is_duplicate() {
        refused(
            &with_head(
                r#"
[[lpar]]
name = "LP01"
[[lpar.nic]]
chpid = "F0"
devno = "7002"
ipv4 = ["10.0.0.1/24"]
[[lpar.nic]]
chpid = "F1"
devno = "7000" # <-
ipv4 = ["10.0.0.2/24"]
"#,
            ),
            "duplicate devno 7000: NIC LP01/hsi1 overlaps LP01/hsi0 (devices 0.0.7002-0.0.7004), \
             defined at line 15",
        );
    }

    #[test]
    fn devno_too_high_or_bad_hex() {
        let nic = |devno: &str| {
            with_head(&format!(
                "[[lpar]]\nname = \"LP01\"\n[[lpar.nic]]\nchpid = \"F0\"\n\
                 devno = \"{devno}\" # <-\nipv4 = [\"10.0.0.1/24\"]\n"
            ))
        };
        parse_ok(&nic("fffd").replace(" # <-", ""));
        refused(&nic("FFFE"), "devno fffe is too high");
        refused(
            &nic("700"),
            "invalid devno \"700\": must be four hex digits",
        );
        refused(&nic("70g0"), "invalid devno \"70g0\"");
        refused(&nic("0.0.7000"), "invalid devno");
    }

    #[test]
    fn unknown_keys() {
        refused(
            &HEAD.replace("name = \"demo\"", "name = \"demo\"\nnics = 2 # <-"),
            "unknown field `nics`",
        );
        refused(
            &HEAD.replace("mfs = \"24K\"", "mfs = \"24K\"\nmtu = 1500 # <-"),
            "unknown field `mtu`",
        );
        refused(
            &with_head("[[lpar]]\nname = \"LP01\"\nnet_ns = \"x\" # <-\n"),
            "unknown field `net_ns`",
        );
        refused(
            &with_head(
                "[[lpar]]\nname = \"LP01\"\n[[lpar.nic]]\nchpid = \"F0\"\n\
                 ip = [\"10.0.0.1/24\"] # <-\n",
            ),
            "unknown field `ip`",
        );
        refused(
            &with_head("[[lapr]] # <-\nname = \"LP01\"\n"),
            "unknown field `lapr`",
        );
    }

    #[test]
    fn toml_syntax_error_has_position() {
        let msg = refused(&with_head("[[lpar]]\nname = \"LP01 # <-\n"), "");
        assert!(!msg.contains('\n'), "one line: {msg:?}");
        refused(&with_head("[[lpar]]\nname = LP01 # <-\n"), "");
        refused(
            &with_head("[[lpar]]\nname = 1 # <-\n"),
            "invalid type: integer `1`, expected a string",
        );
        refused(&with_head("[[lpar]] # <-\n"), "missing field `name`");
    }

    #[test]
    fn bad_chpid_hex() {
        refused(
            &HEAD.replace("id = \"F1\"", "id = \"G1\" # <-"),
            "invalid CHPID \"G1\": must be two hex digits",
        );
        refused(
            &HEAD.replace("id = \"F1\"", "id = \"F\" # <-"),
            "invalid CHPID \"F\"",
        );
        refused(
            &HEAD.replace("id = \"F1\"", "id = \"0F1\" # <-"),
            "invalid CHPID",
        );
        refused(
            &with_head(
                "[[lpar]]\nname = \"LP01\"\n[[lpar.nic]]\nchpid = \"XY\" # <-\n\
                 ipv4 = [\"10.0.0.1/24\"]\n",
            ),
            "invalid CHPID \"XY\"",
        );
    }

    #[test]
    fn bad_mfs() {
        refused(
            &HEAD.replace("mfs = \"24K\"", "mfs = \"32K\" # <-"),
            "invalid MFS \"32K\": must be one of 16K, 24K, 40K, 64K",
        );
    }

    #[test]
    fn duplicate_chpid() {
        refused(
            &with_head("[[chpid]]\nid = \"f0\" # <-\n"),
            "duplicate CHPID F0, first defined at line 5",
        );
    }

    #[test]
    fn duplicate_lpar_name() {
        refused(
            &with_head(
                "[[lpar]]\nname = \"LP01\"\nnetns = \"a\"\n[[lpar]]\nname = \"LP01\" # <-\n\
                 netns = \"b\"\n",
            ),
            "duplicate LPAR name LP01, first defined at line 11",
        );
    }

    #[test]
    fn duplicate_netns() {
        refused(
            &with_head(
                "[[lpar]]\nname = \"LP01\"\nnetns = \"ns\"\n[[lpar]]\nname = \"LP02\"\n\
                 netns = \"ns\" # <-\n",
            ),
            "duplicate netns name ns: LPAR LP02 would share the namespace of LPAR LP01, \
             defined at line 12",
        );
        // An explicit netns equal to another LPAR's default.
        refused(
            &with_head(
                "[[lpar]]\nname = \"LP01\"\n[[lpar]]\nname = \"LP02\"\nnetns = \"LP01\" # <-\n",
            ),
            "duplicate netns name LP01: LPAR LP02 would share the namespace of LPAR LP01, \
             defined at line 11",
        );
        // A default equal to an earlier explicit netns points at the LPAR name.
        refused(
            &with_head(
                "[[lpar]]\nname = \"LP01\"\nnetns = \"LP02\"\n[[lpar]]\nname = \"LP02\" # <-\n",
            ),
            "LPAR LP02 (its default, the LPAR name) would share",
        );
    }

    #[test]
    fn nic_on_undefined_chpid() {
        refused(
            &with_head(
                "[[lpar]]\nname = \"LP01\"\n[[lpar.nic]]\nchpid = \"F2\" # <-\n\
                 ipv4 = [\"10.0.0.1/24\"]\n",
            ),
            "NIC LP01/hsi0 is on CHPID F2, which is not defined",
        );
    }

    #[test]
    fn too_many_nics() {
        let text = with_head(
            r#"[[chpid]]
id = "F2"
[[lpar]]
name = "LP01"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.1/24"]
[[lpar.nic]]
chpid = "F1"
ipv4 = ["10.0.0.1/24"]
[[lpar.nic]] # <-
chpid = "F2"
ipv4 = ["10.0.0.1/24"]
"#,
        );
        refused(
            &text,
            "LPAR LP01 has 3 NICs, more than max_nics_per_lpar = 2",
        );
        let raised = text.replace("name = \"demo\"", "name = \"demo\"\nmax_nics_per_lpar = 3");
        assert_eq!(parse_ok(&raised).lpars[0].nics.len(), 3);
        let lowered = text.replace("name = \"demo\"", "name = \"demo\"\nmax_nics_per_lpar = 1");
        let e = parse(&lowered).unwrap_err();
        // The limit is hit at the second NIC (line 18 after the inserted line).
        assert_eq!(e.line(), Some(18), "{e}");
        assert!(
            e.to_string().contains("more than max_nics_per_lpar = 1"),
            "{e}"
        );
    }

    #[test]
    fn profiles_set_the_nic_limit_and_the_bandwidth() {
        let text = with_head(
            r#"[[lpar]]
name = "LP01"
profile = "mz2d-metal-2x64"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.1/24"]
[[lpar]]
name = "LP02"
profile = "mz2d-metal-16x512"
bandwidth = "4Gbps"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.2/24"]
[[lpar]]
name = "LP03"
"#,
        );
        let fabric = parse_ok(&text);
        let (lp01, lp02, lp03) = (&fabric.lpars[0], &fabric.lpars[1], &fabric.lpars[2]);
        assert_eq!(lp01.profile.map(|p| p.name), Some("mz2d-metal-2x64"));
        assert_eq!(lp01.effective_bandwidth(), Some(Bandwidth::gbps(2)));
        assert_eq!(lp02.profile.map(|p| p.interfaces), Some(2));
        assert_eq!(lp02.bandwidth, Some(Bandwidth::gbps(4)));
        assert_eq!(lp02.effective_bandwidth(), Some(Bandwidth::gbps(4)));
        assert_eq!((lp03.profile, lp03.effective_bandwidth()), (None, None));
        // A bandwidth without a profile limits too.
        let own = text.replace(
            "[[lpar]]\nname = \"LP03\"",
            "[[lpar]]\nname = \"LP03\"\nbandwidth = \"500Mbps\"",
        );
        assert_eq!(
            parse_ok(&own).lpars[2].effective_bandwidth(),
            Some(Bandwidth(500_000_000))
        );
    }

    #[test]
    fn a_profile_s_interface_count_replaces_max_nics_per_lpar() {
        let text = with_head(
            r#"[[lpar]]
name = "LP01"
profile = "mz2d-metal-2x64"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.1/24"]
[[lpar.nic]] # <-
chpid = "F1"
ipv4 = ["10.0.0.1/24"]
"#,
        );
        refused(
            &text,
            "LPAR LP01 has 2 NICs, more than profile mz2d-metal-2x64 allows (1 interface)",
        );
        // A larger profile allows two, whatever max_nics_per_lpar says.
        let larger = text
            .replace("mz2d-metal-2x64", "mz2d-metal-32x1024")
            .replace("name = \"demo\"", "name = \"demo\"\nmax_nics_per_lpar = 1");
        assert_eq!(parse_ok(&larger).lpars[0].nics.len(), 2);
    }

    #[test]
    fn unknown_profiles_are_refused_where_they_are_named() {
        refused(
            &with_head(
                r#"[[lpar]]
name = "LP01"
profile = "mz2d-metal-64x2048" # <-
"#,
            ),
            "unknown profile \"mz2d-metal-64x2048\": must be one of mz2d-metal-2x64, \
             mz2d-metal-16x512, mz2d-metal-32x1024",
        );
    }

    #[test]
    fn malformed_bandwidths_are_refused_where_they_are_written() {
        refused(
            &with_head(
                r#"[[lpar]]
name = "LP01"
bandwidth = "4 GB" # <-
"#,
            ),
            "invalid bandwidth \"4 GB\": must be a number and a unit",
        );
        refused(
            &with_head(
                r#"[[lpar]]
name = "LP01"
profile = "mz2d-metal-2x64"
bandwidth = "0Mbps" # <-
"#,
            ),
            "bandwidth \"0Mbps\" is out of range",
        );
        refused(
            &with_head(
                r#"[[lpar]]
name = "LP01"
bandwidth = 4 # <-
"#,
            ),
            "invalid type: integer `4`, expected a string",
        );
    }

    #[test]
    fn duplicate_ipv4_on_chpid() {
        refused(
            &with_head(
                r#"[[lpar]]
name = "LP01"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.1/24"]
[[lpar]]
name = "LP02"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.2/24",
        "10.0.0.1/16"] # <-
"#,
            ),
            "duplicate IPv4 address 10.0.0.1 on CHPID F0: NIC LP02/hsi0 and LP01/hsi0 both \
             register it (first at line 14)",
        );
        refused(
            &with_head(
                "[[lpar]]\nname = \"LP01\"\n[[lpar.nic]]\nchpid = \"F0\"\n\
                 ipv4 = [\"10.0.0.1/24\",\n\"10.0.0.1/24\"] # <-\n",
            ),
            "NIC LP01/hsi0 lists it twice",
        );
    }

    #[test]
    fn same_ipv4_on_different_chpids_is_fine() {
        let f = parse_ok(&with_head(
            r#"[[lpar]]
name = "LP01"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.1/24"]
[[lpar]]
name = "LP02"
[[lpar.nic]]
chpid = "F1"
ipv4 = ["10.0.0.1/24"]
"#,
        ));
        assert_eq!(f.lpars[1].nics[0].ipv4[0].to_string(), "10.0.0.1/24");
    }

    #[test]
    fn two_nics_of_one_lpar_on_one_chpid() {
        refused(
            &with_head(
                r#"[[lpar]]
name = "LP01"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.1/24"]
[[lpar.nic]]
chpid = "f0" # <-
ipv4 = ["10.0.0.2/24"]
"#,
            ),
            "NIC LP01/hsi1 is on CHPID F0 like LP01/hsi0, defined at line 13, both without \
             vlan: an LPAR can have only one NIC per segment",
        );
    }

    /// LP01 with a NIC on F0 in VLAN `vlan` (written as is), for the VLAN refusals.
    fn nic_in_vlan(vlan: &str) -> String {
        with_head(&format!(
            "[[lpar]]\nname = \"LP01\"\n[[lpar.nic]]\nchpid = \"F0\"\nvlan = {vlan} # <-\n\
             ipv4 = [\"10.0.0.1/24\"]\n"
        ))
    }

    #[test]
    fn a_nic_may_be_in_a_vlan() {
        let f = parse_ok(&nic_in_vlan("100").replace(" # <-", ""));
        let nic = &f.lpars[0].nics[0];
        assert_eq!(nic.vlan, Some(100));
        assert_eq!(nic.segment_label(), "CHPID F0 VLAN 100");
        assert_eq!(
            parse_ok(&nic_in_vlan("1").replace(" # <-", "")).lpars[0].nics[0].vlan,
            Some(1)
        );
        assert_eq!(
            parse_ok(&nic_in_vlan("4094").replace(" # <-", "")).lpars[0].nics[0].vlan,
            Some(4094)
        );
        // Absent: the CHPID's untagged segment, whose number is the CHPID's.
        let f = parse_ok(&with_head(
            "[[lpar]]\nname = \"LP01\"\n[[lpar.nic]]\nchpid = \"F0\"\nipv4 = [\"10.0.0.1/24\"]\n",
        ));
        let untagged = &f.lpars[0].nics[0];
        assert_eq!(untagged.vlan, None);
        assert_eq!(untagged.segment(), 0xf0);
        assert_eq!(untagged.segment_label(), "CHPID F0");
        assert_ne!(nic.segment(), untagged.segment());
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["lpars"][0]["nics"][0]["vlan"], serde_json::Value::Null);
    }

    #[test]
    fn vlan_refusals_name_the_value_and_its_position() {
        let e = parse(&nic_in_vlan("0")).unwrap_err().to_string();
        assert_eq!(
            e,
            "test.toml:14:8: VLAN 0 is not a VLAN id (802.1Q: no VLAN): must be 1-4094; leave \
             vlan out for the CHPID's untagged segment"
        );
        refused(
            &nic_in_vlan("4095"),
            "VLAN 4095 is reserved (802.1Q): must be 1-4094",
        );
        refused(
            &nic_in_vlan("4096"),
            "VLAN 4096 is out of range: must be 1-4094",
        );
        refused(
            &nic_in_vlan("-1"),
            "VLAN -1 is out of range: must be 1-4094",
        );
        refused(
            &nic_in_vlan("70000"),
            "VLAN 70000 is out of range: must be 1-4094",
        );
        refused(
            &nic_in_vlan("\"100\""),
            "invalid VLAN \"100\": must be an integer 1-4094, e.g. vlan = 100",
        );
        refused(
            &nic_in_vlan("1.5"),
            "invalid VLAN 1.5: must be an integer 1-4094",
        );
        refused(
            &nic_in_vlan("true"),
            "invalid VLAN true: must be an integer",
        );
        refused(
            &nic_in_vlan("[100]"),
            "invalid VLAN [100]: must be an integer",
        );
    }

    #[test]
    fn one_lpar_may_have_one_nic_per_vlan_of_a_chpid() {
        let f = parse_ok(&with_head(
            r#"[[lpar]]
name = "LP01"
[[lpar.nic]]
chpid = "F0"
vlan = 100
ipv4 = ["10.0.0.1/24"]
[[lpar.nic]]
chpid = "F0"
vlan = 200
ipv4 = ["10.0.0.1/24"]
"#,
        ));
        let nics = &f.lpars[0].nics;
        assert_eq!((nics[0].vlan, nics[1].vlan), (Some(100), Some(200)));
        assert_ne!(nics[0].segment(), nics[1].segment());
        // Each its own devno, hence its own MAC.
        assert_ne!(nics[0].mac, nics[1].mac);
        // Still within the NIC limit: a third NIC in a third VLAN is one too many.
        refused(
            &with_head(
                r#"[[lpar]]
name = "LP01"
[[lpar.nic]]
chpid = "F0"
vlan = 100
ipv4 = ["10.0.0.1/24"]
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.2/24"]
[[lpar.nic]] # <-
chpid = "F0"
vlan = 300
ipv4 = ["10.0.0.3/24"]
"#,
            ),
            "LPAR LP01 has 3 NICs, more than max_nics_per_lpar = 2",
        );
    }

    #[test]
    fn two_nics_of_one_lpar_in_one_vlan() {
        refused(
            &with_head(
                r#"[[lpar]]
name = "LP01"
[[lpar.nic]]
chpid = "F0"
vlan = 100
ipv4 = ["10.0.0.1/24"]
[[lpar.nic]]
chpid = "F0"
vlan = 100 # <-
ipv4 = ["10.0.0.2/24"]
"#,
            ),
            "NIC LP01/hsi1 is on CHPID F0 VLAN 100 like LP01/hsi0, defined at line 13: an LPAR \
             can have only one NIC per segment (CHPID and VLAN); give each a different vlan",
        );
        // The same VLAN number on two CHPIDs is two segments.
        parse_ok(&with_head(
            r#"[[lpar]]
name = "LP01"
[[lpar.nic]]
chpid = "F0"
vlan = 100
ipv4 = ["10.0.0.1/24"]
[[lpar.nic]]
chpid = "F1"
vlan = 100
ipv4 = ["10.0.0.2/24"]
"#,
        ));
    }

    #[test]
    fn the_same_address_in_two_vlans_of_a_chpid_is_fine_but_not_twice_in_one() {
        let two_lpars = |vlan_a: &str, vlan_b: &str| {
            with_head(&format!(
                "[[lpar]]\nname = \"LP01\"\n[[lpar.nic]]\nchpid = \"F0\"\n{vlan_a}\
                 ipv4 = [\"10.0.0.1/24\"]\n[[lpar]]\nname = \"LP02\"\n[[lpar.nic]]\n\
                 chpid = \"F0\"\n{vlan_b}ipv4 = [\"10.0.0.1/24\"] # <-\n"
            ))
        };
        let marker = |t: String| t.replace(" # <-", "");
        parse_ok(&marker(two_lpars("vlan = 100\n", "vlan = 200\n")));
        parse_ok(&marker(two_lpars("vlan = 100\n", "")));
        refused(
            &two_lpars("vlan = 100\n", "vlan = 100\n"),
            "duplicate IPv4 address 10.0.0.1 on CHPID F0 VLAN 100: NIC LP02/hsi0 and LP01/hsi0 \
             both register it",
        );
        refused(
            &two_lpars("", ""),
            "duplicate IPv4 address 10.0.0.1 on CHPID F0: NIC LP02/hsi0",
        );
    }

    #[test]
    fn duplicate_nic_names() {
        refused(
            &with_head(
                r#"[[lpar]]
name = "LP01"
[[lpar.nic]]
chpid = "F0"
name = "hsi1"
ipv4 = ["10.0.0.1/24"]
[[lpar.nic]] # <-
chpid = "F1"
ipv4 = ["10.0.0.2/24"]
"#,
            ),
            "duplicate NIC name hsi1 (the default name of this NIC) in LPAR LP01, first used at \
             line 14",
        );
        refused(
            &with_head(
                r#"[[lpar]]
name = "LP01"
[[lpar.nic]]
chpid = "F0"
name = "a"
ipv4 = ["10.0.0.1/24"]
[[lpar.nic]]
chpid = "F1"
name = "a" # <-
ipv4 = ["10.0.0.2/24"]
"#,
            ),
            "duplicate NIC name a in LPAR LP01",
        );
    }

    #[test]
    fn nic_without_ipv4() {
        refused(
            &with_head("[[lpar]]\nname = \"LP01\"\n[[lpar.nic]] # <-\nchpid = \"F0\"\n"),
            "NIC LP01/hsi0 has no address: list at least one in ipv4 or ipv6",
        );
        refused(
            &with_head(
                "[[lpar]]\nname = \"LP01\"\n[[lpar.nic]]\nchpid = \"F0\"\nname = \"x\"\n\
                 ipv4 = [] # <-\n",
            ),
            "NIC LP01/x has no address",
        );
        refused(
            &with_head(
                "[[lpar]]\nname = \"LP01\"\n[[lpar.nic]]\nchpid = \"F0\"\n\
                 ipv4 = [] # <-\nipv6 = []\n",
            ),
            "NIC LP01/hsi0 has no address",
        );
    }

    #[test]
    fn ipv6_only_and_dual_stack_nics() {
        let f = parse_ok(&with_head(
            "[[lpar]]\nname = \"LP01\"\n[[lpar.nic]]\nchpid = \"F0\"\n\
             ipv6 = [\"fd00:f0::1/64\"]\n[[lpar.nic]]\nchpid = \"F1\"\n\
             ipv4 = [\"10.1.0.1/24\"]\nipv6 = [\"fd00:f1::1/64\", \"2001:db8::1/128\"]\n",
        ));
        let nics = &f.lpars[0].nics;
        assert!(nics[0].ipv4.is_empty());
        assert_eq!(nics[0].ipv6[0].to_string(), "fd00:f0::1/64");
        assert_eq!(nics[1].ipv6.len(), 2);
        assert_eq!(
            nics[0].link_local().to_string(),
            "fe80::ff:fef0:7000",
            "from the derived MAC 02:00:00:f0:70:00"
        );
        // Registered: the file's addresses and the link-local address.
        assert_eq!(nics[1].addresses().len(), 4);
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["lpars"][0]["nics"][1]["ipv6"][0], "fd00:f1::1/64");
    }

    fn nic_with_ipv6(addr: &str) -> String {
        with_head(&format!(
            "[[lpar]]\nname = \"LP01\"\n[[lpar.nic]]\nchpid = \"F0\"\n\
             ipv6 = [\"fd00::1/64\", \"{addr}\"] # <-\n"
        ))
    }

    #[test]
    fn bad_ipv6_cidr() {
        refused(&nic_with_ipv6("fd00::2/0"), "prefix /0 is not in 1..=128");
        refused(
            &nic_with_ipv6("fd00::2/129"),
            "prefix /129 is not in 1..=128",
        );
        refused(
            &nic_with_ipv6("fd00::2"),
            "invalid IPv6 address \"fd00::2\": missing /prefix",
        );
        refused(&nic_with_ipv6("fd00:::2/64"), "is not an IPv6 address");
        refused(&nic_with_ipv6("10.0.0.1/24"), "is not an IPv6 address");
        parse_ok(&nic_with_ipv6("fd00::2/128").replace(" # <-", ""));
    }

    #[test]
    fn special_ipv6_addresses() {
        refused(
            &nic_with_ipv6("::/64"),
            "IPv6 address :: is the unspecified address and cannot be registered with a CHPID",
        );
        refused(&nic_with_ipv6("::1/128"), "::1 is the loopback address");
        refused(
            &nic_with_ipv6("ff02::1/64"),
            "ff02::1 is a multicast address",
        );
        refused(&nic_with_ipv6("ff0e::1234/16"), "is a multicast address");
        refused(
            &nic_with_ipv6("::ffff:10.0.0.9/120"),
            "::ffff:10.0.0.9 is an IPv4-mapped address",
        );
        refused(
            &nic_with_ipv6("fe80::1/64"),
            "fe80::1 is a link-local address (iqd registers the NIC's own",
        );
        refused(&nic_with_ipv6("febf::1/64"), "is a link-local address");
    }

    #[test]
    fn duplicate_ipv6_on_chpid() {
        refused(
            &with_head(
                r#"[[lpar]]
name = "LP01"
[[lpar.nic]]
chpid = "F0"
ipv6 = ["fd00::1/64"]
[[lpar]]
name = "LP02"
[[lpar.nic]]
chpid = "F0"
ipv6 = ["fd00::2/64",
        "fd00:0::1/48"] # <-
"#,
            ),
            "duplicate IPv6 address fd00::1 on CHPID F0: NIC LP02/hsi0 and LP01/hsi0 both \
             register it (first at line 14)",
        );
        refused(
            &with_head(
                "[[lpar]]\nname = \"LP01\"\n[[lpar.nic]]\nchpid = \"F0\"\n\
                 ipv6 = [\"fd00::1/64\",\n\"fd00::1/64\"] # <-\n",
            ),
            "NIC LP01/hsi0 lists it twice",
        );
        // Another CHPID is another LAN.
        parse_ok(&with_head(
            "[[lpar]]\nname = \"LP01\"\n[[lpar.nic]]\nchpid = \"F0\"\nipv6 = [\"fd00::1/64\"]\n\
             [[lpar]]\nname = \"LP02\"\n[[lpar.nic]]\nchpid = \"F1\"\nipv6 = [\"fd00::1/64\"]\n",
        ));
    }

    fn nic_with_ipv4(addr: &str) -> String {
        with_head(&format!(
            "[[lpar]]\nname = \"LP01\"\n[[lpar.nic]]\nchpid = \"F0\"\n\
             ipv4 = [\"10.0.0.1/24\", \"{addr}\"] # <-\n"
        ))
    }

    #[test]
    fn bad_cidr() {
        refused(&nic_with_ipv4("10.0.0.2/0"), "prefix /0 is not in 1..=32");
        refused(&nic_with_ipv4("10.0.0.2/33"), "prefix /33 is not in 1..=32");
        refused(
            &nic_with_ipv4("10.0.0.2"),
            "invalid IPv4 address \"10.0.0.2\": missing /prefix",
        );
        refused(&nic_with_ipv4("10.0.0/24"), "is not an IPv4 address");
        parse_ok(&nic_with_ipv4("10.0.0.2/32").replace(" # <-", ""));
    }

    #[test]
    fn special_addresses() {
        refused(
            &nic_with_ipv4("0.0.0.0/8"),
            "0.0.0.0 is the unspecified address",
        );
        refused(
            &nic_with_ipv4("255.255.255.255/32"),
            "is the broadcast address",
        );
        refused(
            &nic_with_ipv4("127.1.2.3/8"),
            "127.1.2.3 is a loopback address",
        );
        refused(&nic_with_ipv4("224.0.0.1/4"), "is a multicast address");
        refused(
            &nic_with_ipv4("239.255.255.255/8"),
            "is a multicast address",
        );
    }

    #[test]
    fn bad_fabric_name() {
        for bad in ["Demo", "", "abcdefghijklm", "a_b", "a b"] {
            refused(
                &HEAD.replace("name = \"demo\"", &format!("name = \"{bad}\" # <-")),
                "invalid fabric name",
            );
        }
        parse_ok(&HEAD.replace("name = \"demo\"", "name = \"abcdefghij-1\""));
    }

    #[test]
    fn bad_lpar_name() {
        for bad in ["lp01", "", "LP0123456", "LP-1", "LP 1"] {
            refused(
                &with_head(&format!("[[lpar]]\nname = \"{bad}\" # <-\nnetns = \"x\"\n")),
                "invalid LPAR name",
            );
        }
        // '@', '#' and '$' are fine in an LPAR name, but not as its default netns.
        parse_ok(&with_head("[[lpar]]\nname = \"A@#$\"\nnetns = \"a\"\n"));
        refused(
            &with_head("[[lpar]]\nname = \"LP$1\" # <-\n"),
            "LPAR name \"LP$1\" is not a valid netns name",
        );
    }

    #[test]
    fn bad_netns_name() {
        let long = "n".repeat(65);
        for bad in ["", ".", "..", "a/b", "a b", "ä", long.as_str()] {
            refused(
                &with_head(&format!(
                    "[[lpar]]\nname = \"LP01\"\nnetns = \"{bad}\" # <-\n"
                )),
                "invalid netns name",
            );
        }
        parse_ok(&with_head(&format!(
            "[[lpar]]\nname = \"LP01\"\nnetns = \"{}\"\n",
            "n".repeat(64)
        )));
        refused(
            &with_head("[[lpar]]\nname = \"LP01\"\nnetns = \"iqd-demo\" # <-\n"),
            "netns name \"iqd-demo\" is reserved: it is the fabric's own namespace",
        );
    }

    #[test]
    fn bad_nic_name() {
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "abcdefghijklmnop"] {
            refused(
                &with_head(&format!(
                    "[[lpar]]\nname = \"LP01\"\n[[lpar.nic]]\nchpid = \"F0\"\n\
                     name = \"{bad}\" # <-\nipv4 = [\"10.0.0.1/24\"]\n"
                )),
                "invalid NIC name",
            );
        }
        parse_ok(&with_head(
            "[[lpar]]\nname = \"LP01\"\n[[lpar.nic]]\nchpid = \"F0\"\n\
             name = \"abcdefghijklmno\"\nipv4 = [\"10.0.0.1/24\"]\n",
        ));
    }

    fn nic_with_mac(mac: &str) -> String {
        with_head(&format!(
            "[[lpar]]\nname = \"LP01\"\n[[lpar.nic]]\nchpid = \"F0\"\n\
             mac = \"{mac}\" # <-\nipv4 = [\"10.0.0.1/24\"]\n"
        ))
    }

    #[test]
    fn bad_mac() {
        refused(
            &nic_with_mac("01:00:5e:00:00:01"),
            "is a multicast or broadcast address",
        );
        refused(
            &nic_with_mac("ff:ff:ff:ff:ff:ff"),
            "is a multicast or broadcast address",
        );
        refused(&nic_with_mac("00:00:00:00:00:00"), "is all zeros");
        for bad in [
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "02-00-00-00-00-01",
            "2:0:0:0:0:1",
        ] {
            refused(&nic_with_mac(bad), "invalid MAC");
        }
        // Globally administered unicast is fine; upper case is accepted.
        let f = parse_ok(&nic_with_mac("00:1A:2B:3C:4D:5E"));
        assert_eq!(format_mac(&f.lpars[0].nics[0].mac), "00:1a:2b:3c:4d:5e");
    }

    #[test]
    fn duplicate_mac() {
        refused(
            &with_head(
                r#"[[lpar]]
name = "LP01"
[[lpar.nic]]
chpid = "F0"
mac = "02:00:00:00:00:01"
ipv4 = ["10.0.0.1/24"]
[[lpar]]
name = "LP02"
[[lpar.nic]]
chpid = "F0"
mac = "02:00:00:00:00:01" # <-
ipv4 = ["10.0.0.2/24"]
"#,
            ),
            "duplicate MAC 02:00:00:00:00:01: NIC LP02/hsi0 collides with LP01/hsi0, defined at \
             line 14",
        );
        // An explicit MAC equal to the one derived for an earlier NIC.
        refused(
            &with_head(
                r#"[[lpar]]
name = "LP01"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.1/24"]
[[lpar]]
name = "LP02"
[[lpar.nic]]
chpid = "F1"
mac = "02:00:00:f0:70:00" # <-
ipv4 = ["10.0.0.2/24"]
"#,
            ),
            "duplicate MAC 02:00:00:f0:70:00: NIC LP02/hsi0 collides with LP01/hsi0 (derived \
             from CHPID F0 and devno 7000), defined at line 12",
        );
        // ... and to the one derived for a later NIC, which is where the error points.
        refused(
            &with_head(
                r#"[[lpar]]
name = "LP01"
[[lpar.nic]]
chpid = "F1"
mac = "02:00:00:f0:70:03"
ipv4 = ["10.0.0.2/24"]
[[lpar]]
name = "LP02"
[[lpar.nic]] # <-
chpid = "F0"
ipv4 = ["10.0.0.1/24"]
"#,
            ),
            "NIC LP02/hsi0 (derived from CHPID F0 and devno 7003) collides with LP01/hsi0",
        );
    }

    #[test]
    fn missing_tables() {
        let e = parse("[[chpid]]\nid = \"F0\"\n").unwrap_err();
        assert_eq!(e.to_string(), "test.toml: no [fabric] table defined");
        assert_eq!(e.line(), None);
        let e = parse("[fabric]\nname = \"demo\"\n[[lpar]]\nname = \"LP01\"\n").unwrap_err();
        assert_eq!(e.to_string(), "test.toml: no [[chpid]] defined");
    }

    #[test]
    fn first_error_in_file_order() {
        // The LPAR (with a bad name) comes before the CHPIDs (one with a bad MFS).
        let text = r#"[fabric]
name = "demo"
[[lpar]]
name = "bad" # <-
netns = "x"
[[chpid]]
id = "F0"
mfs = "1K"
"#;
        refused(text, "invalid LPAR name");
        // Cross-checks likewise: the duplicate netns is above the duplicate CHPID.
        let text = r#"[fabric]
name = "demo"
[[lpar]]
name = "LP01"
netns = "x"
[[lpar]]
name = "LP02"
netns = "x" # <-
[[chpid]]
id = "F0"
[[chpid]]
id = "F0"
"#;
        refused(text, "duplicate netns name x");
    }

    #[test]
    fn load_reports_file() {
        let path = Path::new("/nonexistent/iqd/fabric.toml");
        let e = Fabric::load(path).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("/nonexistent/iqd/fabric.toml: cannot read fabric file: "),
            "{msg}"
        );
        assert_eq!(e.path(), path);

        let dir = std::env::temp_dir().join(format!("iqd-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("fabric.toml");
        std::fs::write(&file, FULL).unwrap();
        let loaded = Fabric::load(&file);
        std::fs::write(&file, "[fabric]\nname = 1\n").unwrap();
        let bad = Fabric::load(&file);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(loaded.unwrap().lpars.len(), 3);
        let msg = bad.unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!("{}:2:8: ", file.display())),
            "{msg}"
        );
    }

    #[test]
    fn devno_allocation_exhausted() {
        // Explicit devnos 7001, 7007, ... each cover two default slots (7000 and 7003, ...), so
        // 6144 of them leave no slot up to fffd for a NIC without a devno.
        let mut text = String::from("[fabric]\nname = \"big\"\nmax_nics_per_lpar = 16\n");
        for c in 0..16 {
            text += &format!("[[chpid]]\nid = \"{c:02X}\"\n");
        }
        let explicit = 6144;
        for i in 0..=explicit {
            if i % 16 == 0 {
                text += &format!("[[lpar]]\nname = \"L{:04}\"\n", i / 16);
            }
            let marker = if i == explicit { " # <-" } else { "" };
            text += &format!("[[lpar.nic]]{marker}\nchpid = \"{:02X}\"\n", i % 16);
            if i < explicit {
                text += &format!("devno = \"{:04x}\"\n", 0x7001 + 6 * i);
            }
            text += &format!("ipv4 = [\"10.{}.{}.1/8\"]\n", i / 256, i % 256);
        }
        refused(&text, "no free devno left for NIC L0384/hsi0");
        assert!(triples_overlap(0xFFFD, 0xFFFB));
        assert!(!triples_overlap(0x7000, 0x7003));
    }

    #[test]
    fn nics_keep_the_devno_they_were_built_with_when_one_is_added_before_them() {
        let text = with_head(
            r#"[[lpar]]
name = "LP01"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.1/24"]
[[lpar]]
name = "LP02"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.2/24"]
"#,
        );
        let before = parse_ok(&text);
        assert_eq!(before.lpars[1].nics[0].devno, 0x7003);
        let kept: KeptDevnos = before
            .lpars
            .iter()
            .flat_map(|l| {
                l.nics
                    .iter()
                    .map(|n| ((l.name.clone(), n.name.clone(), n.chpid), n.devno))
            })
            .collect();
        let added = text.replacen(
            "ipv4 = [\"10.0.0.1/24\"]\n",
            "ipv4 = [\"10.0.0.1/24\"]\n[[lpar.nic]]\nchpid = \"F1\"\nipv4 = [\"10.1.0.1/24\"]\n",
            1,
        );
        // Without what was built, the new NIC would take LP02's devno.
        assert_eq!(parse_ok(&added).lpars[1].nics[0].devno, 0x7006);
        let after = Fabric::parse_keeping(&added, Path::new(FILE), &kept).unwrap();
        assert_eq!(after.lpars[0].nics[0].devno, 0x7000);
        assert_eq!(after.lpars[0].nics[1].devno, 0x7006);
        assert_eq!(after.lpars[1].nics[0].devno, 0x7003);
        assert_eq!(after.lpars[1].nics[0].mac, before.lpars[1].nics[0].mac);
    }

    #[test]
    fn line_col_counts_characters() {
        let src = Source {
            path: Path::new(FILE),
            text: "ab\nä = 1\n",
            kept: &KeptDevnos::new(),
        };
        assert_eq!(src.line_col(0), (1, 1));
        assert_eq!(src.line_col(3), (2, 1));
        assert_eq!(src.line_col(6), (2, 3));
        assert_eq!(src.line_col(100), (3, 1));
    }
}
