//! Upgrade-safe pins: what a fabric's pinned maps are, measured against this build's, and the
//! in-place upgrade `iqd up` makes when they differ.
//!
//! A pinned map is *compatible* when its definition (type, key size, value size, capacity,
//! flags) is the one this build's eBPF object defines; only then may this build's programs and
//! readers use it. aya's loader would reuse any map pinned under the name without checking
//! (the verifier then refuses the programs, or they silently misread the map), so
//! [`crate::dataplane::DataPlane::load`] asks [`inspect`] first and loads every incompatible
//! map fresh into the staging directory `<pin dir>/upgrade/` instead. `up` fills the staged
//! maps from the fabric file like any others, while the links keep running the old programs
//! (their swaps are deferred); then [`finish`] moves every link to the new programs at once
//! (atomic link updates), renames each staged pin over the old one, and records the layout
//! version in `IQD_LAYOUT`.
//!
//! Crash safety: until a staged pin is renamed, the canonical pin is the old, incompatible map,
//! so the next `up` sees the fabric as not upgraded and does it all again (a leftover staging
//! directory is removed first). Renames are atomic one by one; a crash between two of them
//! leaves some maps replaced (now compatible, reused) and the others still old (redone). The
//! version is written last: it is only a record, compatibility is decided map by map.
//!
//! What carries over: the configuration maps are refilled by `up` from the file anyway; the
//! connection table's entries are copied when only its capacity changed, or converted from
//! layout 1's and layout 2's keys (else the connections are reset and counted); the per-NIC
//! counters carry over in a map that stays compatible, and are added into the new one when
//! only drop reasons were added (layouts 1-3, and layout 4 before the lifecycle reasons, to this
//! one); other counters start from zero.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
    sync::OnceLock,
};

use aya::maps::{Array, HashMap, Map, MapData, MapInfo};
use iqd_common::{ipv4_mapped, map_names, CtEntry, CtKey, LAYOUT_VERSION};

use crate::{
    dataplane::{self, DataPlane, FabricMaps},
    error::{Error, LayoutMismatch, Result},
};

/// The subdirectory of a fabric's pin directory where an upgrade creates its new maps.
pub const STAGING: &str = "upgrade";

/// The layout of pins written before `IQD_LAYOUT` existed.
pub const UNVERSIONED_LAYOUT: u32 = 1;

/// `BPF_NOEXIST`: an insert that leaves an existing entry alone.
const BPF_NOEXIST: u64 = 1;

/// The staging directory of a fabric's pin directory.
pub fn staging_dir(pin_dir: &Path) -> PathBuf {
    pin_dir.join(STAGING)
}

/// A map's definition as the kernel holds it: what must agree for a pinned map to be reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapDef {
    /// `bpf_map_type`.
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

const BPF_MAP_TYPE_DEVMAP: u32 = 14;
const BPF_MAP_TYPE_DEVMAP_HASH: u32 = 25;
const PERF_EVENT_ARRAY: u32 = 4;
/// `BPF_F_RDONLY_PROG`: the kernel adds it to every DEVMAP (programs must not write the
/// entries a lookup points into).
const BPF_F_RDONLY_PROG: u32 = 0x80;

impl MapDef {
    fn of_object(map: &aya_obj::Map) -> Self {
        MapDef {
            map_type: map.map_type(),
            key_size: map.key_size(),
            value_size: map.value_size(),
            max_entries: map.max_entries(),
            flags: map.map_flags(),
        }
    }

    fn of_pin(info: &MapInfo) -> Self {
        MapDef {
            // An unknown type can only differ from ours.
            map_type: info.map_type().map(|t| t as u32).unwrap_or(u32::MAX),
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
        }
    }

    /// The loader chooses a DEVMAP's value size itself (4 bytes, or 8 where the kernel takes a
    /// program per entry; both hold the target ifindex first), and the kernel adds a flag.
    fn is_devmap(&self) -> bool {
        matches!(
            self.map_type,
            BPF_MAP_TYPE_DEVMAP | BPF_MAP_TYPE_DEVMAP_HASH
        )
    }

    /// The flags as the object would define them: without those the kernel adds itself.
    fn defined_flags(&self) -> u32 {
        if self.is_devmap() {
            self.flags & !BPF_F_RDONLY_PROG
        } else {
            self.flags
        }
    }
}

/// The name of a map type, for messages.
fn type_name(map_type: u32) -> String {
    match map_type {
        1 => "hash".into(),
        2 => "array".into(),
        5 => "percpu_hash".into(),
        6 => "percpu_array".into(),
        9 => "lru_hash".into(),
        11 => "lpm_trie".into(),
        BPF_MAP_TYPE_DEVMAP => "devmap".into(),
        17 => "xskmap".into(),
        BPF_MAP_TYPE_DEVMAP_HASH => "devmap_hash".into(),
        u32::MAX => "unknown".into(),
        other => format!("type {other}"),
    }
}

/// How a pinned map differs from this build's definition, one phrase per field (`key 16 bytes
/// pinned, 20 expected`); empty when it is compatible.
pub fn differences(pinned: &MapDef, expected: &MapDef) -> Vec<String> {
    let mut out = Vec::new();
    if pinned.map_type != expected.map_type {
        out.push(format!(
            "type {} pinned, {} expected",
            type_name(pinned.map_type),
            type_name(expected.map_type)
        ));
    }
    if pinned.key_size != expected.key_size {
        out.push(format!(
            "key {} bytes pinned, {} expected",
            pinned.key_size, expected.key_size
        ));
    }
    let value_free = pinned.map_type == expected.map_type
        && expected.is_devmap()
        && matches!(pinned.value_size, 4 | 8);
    if pinned.value_size != expected.value_size && !value_free {
        out.push(format!(
            "value {} bytes pinned, {} expected",
            pinned.value_size, expected.value_size
        ));
    }
    // A perf event array defined with no size gets one slot per CPU when created.
    let sized_at_load = expected.map_type == PERF_EVENT_ARRAY && expected.max_entries == 0;
    if pinned.max_entries != expected.max_entries && !sized_at_load {
        out.push(format!(
            "capacity {} pinned, {} expected",
            pinned.max_entries, expected.max_entries
        ));
    }
    if pinned.defined_flags() != expected.defined_flags() {
        out.push(format!(
            "flags {:#x} pinned, {:#x} expected",
            pinned.flags, expected.flags
        ));
    }
    out
}

/// The pinned maps this build's eBPF object defines, by name. Parsed from the embedded object
/// without loading anything.
pub fn expected() -> Result<&'static BTreeMap<String, MapDef>> {
    static EXPECTED: OnceLock<BTreeMap<String, MapDef>> = OnceLock::new();
    if let Some(defs) = EXPECTED.get() {
        return Ok(defs);
    }
    let defs = definitions(dataplane::object())?;
    Ok(EXPECTED.get_or_init(|| defs))
}

/// The maps an eBPF object pins by name, with their definitions.
pub fn definitions(object: &[u8]) -> Result<BTreeMap<String, MapDef>> {
    if object.is_empty() {
        return Err(Error::NoEbpfObject);
    }
    let object =
        aya_obj::Object::parse(object).map_err(|e| Error::Ebpf(aya::EbpfError::from(e)))?;
    Ok(object
        .maps
        .iter()
        .filter(|(_, map)| map.pinning() == aya_obj::maps::PinningType::ByName)
        .map(|(name, map)| (name.clone(), MapDef::of_object(map)))
        .collect())
}

/// A map this build defines whose pin differs from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incompatible {
    pub name: String,
    pub pinned: MapDef,
    pub expected: MapDef,
}

impl Incompatible {
    /// `IQD_CONNTRACK: key 16 bytes pinned, 20 expected`.
    pub fn describe(&self) -> String {
        format!(
            "{}: {}",
            self.name,
            differences(&self.pinned, &self.expected).join(", ")
        )
    }

    /// Only the capacity differs: the entries themselves read the same.
    pub fn only_capacity_differs(&self) -> bool {
        MapDef {
            max_entries: self.expected.max_entries,
            ..self.pinned
        } == self.expected
    }
}

/// A fabric's pins measured against this build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinnedLayout {
    /// The layout version the pins were written with (`IQD_LAYOUT`; 1 without it).
    pub version: u32,
    /// Maps this build defines whose pins differ: an upgrade replaces them.
    pub incompatible: Vec<Incompatible>,
    /// Maps this build defines that are not pinned: `up` creates them.
    pub missing: Vec<String>,
    /// Pinned maps this build does not define: an upgrade removes them.
    pub unknown: Vec<String>,
}

impl PinnedLayout {
    /// The pins are exactly what this build writes: nothing to upgrade.
    pub fn is_current(&self) -> bool {
        self.version == LAYOUT_VERSION
            && self.incompatible.is_empty()
            && self.missing.is_empty()
            && self.unknown.is_empty()
    }

    /// This build may read the pinned maps (`status`, `stats`, `conntrack`, the switch): every
    /// map it reads is pinned and compatible, and no newer iqd wrote them (a newer layout may
    /// give a map of the same size another meaning). Only the version record may be missing.
    pub fn readable(&self) -> bool {
        self.version <= LAYOUT_VERSION
            && self.incompatible.is_empty()
            && self.missing.iter().all(|m| m == map_names::LAYOUT)
    }

    /// Map `name` is pinned and compatible: what is in it reads as this build's.
    pub fn reads_the_same(&self, name: &str) -> bool {
        !self.incompatible.iter().any(|m| m.name == name) && !self.missing.iter().any(|m| m == name)
    }

    /// The refusal for a fabric this build cannot read.
    pub fn mismatch(&self, fabric: &str) -> Error {
        let mut differences: Vec<String> = self
            .incompatible
            .iter()
            .map(Incompatible::describe)
            .collect();
        differences.extend(
            self.missing
                .iter()
                .filter(|m| *m != map_names::LAYOUT)
                .map(|m| format!("{m}: not pinned")),
        );
        if differences.is_empty() {
            differences.push("maps of this iqd's sizes, written by a newer iqd".to_string());
        }
        Error::Layout(Box::new(LayoutMismatch {
            fabric: fabric.to_string(),
            pinned: self.version,
            expected: LAYOUT_VERSION,
            differences,
            config: None,
        }))
    }
}

/// Compares pinned map definitions (by name) with this build's; `version` is what `IQD_LAYOUT`
/// holds, if it is pinned and was written.
pub fn compare(
    pinned: &BTreeMap<String, MapDef>,
    expected: &BTreeMap<String, MapDef>,
    version: Option<u32>,
) -> PinnedLayout {
    let mut layout = PinnedLayout {
        version: version.unwrap_or(UNVERSIONED_LAYOUT),
        ..Default::default()
    };
    for (name, want) in expected {
        match pinned.get(name) {
            None => layout.missing.push(name.clone()),
            Some(have) if differences(have, want).is_empty() => {}
            Some(have) => layout.incompatible.push(Incompatible {
                name: name.clone(),
                pinned: *have,
                expected: *want,
            }),
        }
    }
    layout.unknown = pinned
        .keys()
        .filter(|name| !expected.contains_key(*name))
        .cloned()
        .collect();
    layout
}

/// Whether a pin directory entry is one of iqd's maps (programs and links are `prog_*` and
/// `link_*`, the staging directory is `upgrade`).
fn is_map_pin(name: &str) -> bool {
    name.starts_with("IQD_")
}

/// Reads a fabric's pin directory against this build: `None` when no map is pinned there (a
/// new fabric).
pub fn inspect(pin_dir: &Path) -> Result<Option<PinnedLayout>> {
    let expected = expected()?;
    let entries = match fs::read_dir(pin_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", pin_dir, e)),
    };
    let mut pinned = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read", pin_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_map_pin(&name) || entry.path().is_dir() {
            continue;
        }
        let info = MapInfo::from_pin(entry.path()).map_err(|source| Error::Map {
            name: name.clone(),
            source,
        })?;
        pinned.insert(name, MapDef::of_pin(&info));
    }
    if pinned.is_empty() {
        return Ok(None);
    }
    let version = match (
        pinned.get(map_names::LAYOUT),
        expected.get(map_names::LAYOUT),
    ) {
        (Some(have), Some(want)) if differences(have, want).is_empty() => {
            read_version(&pin_dir.join(map_names::LAYOUT))?
        }
        _ => None,
    };
    Ok(Some(compare(&pinned, expected, version)))
}

/// What `IQD_LAYOUT` records; `None` if it was never written (a crash before the end of the
/// `up` that created it).
fn read_version(path: &Path) -> Result<Option<u32>> {
    let array = layout_array(path)?;
    let version = array.get(&0, 0).map_err(map_err(map_names::LAYOUT))?;
    Ok((version != 0).then_some(version))
}

fn layout_array(path: &Path) -> Result<Array<MapData, u32>> {
    let data = MapData::from_pin(path).map_err(map_err(map_names::LAYOUT))?;
    Map::from_map_data(data)
        .map_err(map_err(map_names::LAYOUT))?
        .try_into()
        .map_err(map_err(map_names::LAYOUT))
}

fn map_err(name: &str) -> impl FnOnce(aya::maps::MapError) -> Error + '_ {
    move |source| Error::Map {
        name: name.to_string(),
        source,
    }
}

/// `status`, `stats`, `conntrack` and the AF_XDP switch read a fabric's maps only when they are
/// this build's: otherwise they say what differs and to run `iqd up`. A binary built without
/// its eBPF object cannot tell and reads on.
pub fn require_readable(fabric: &str, pin_dir: &Path) -> Result<()> {
    if dataplane::object().is_empty() {
        return Ok(());
    }
    match inspect(pin_dir)? {
        Some(layout) if !layout.readable() => Err(layout.mismatch(fabric)),
        _ => Ok(()),
    }
}

/// Where the programs being loaded find each map: its pin, or, for a map whose pin is
/// incompatible, a fresh map in the staging directory that replaces the pin once every link
/// runs the new programs.
#[derive(Clone, Debug)]
pub struct MapPaths {
    pin_dir: PathBuf,
    staged: BTreeSet<String>,
}

impl MapPaths {
    pub fn new(pin_dir: &Path, layout: Option<&PinnedLayout>) -> Self {
        MapPaths {
            pin_dir: pin_dir.to_path_buf(),
            staged: layout
                .map(|l| l.incompatible.iter().map(|m| m.name.clone()).collect())
                .unwrap_or_default(),
        }
    }

    /// The map the new programs use.
    pub fn path(&self, name: &str) -> PathBuf {
        if self.staged.contains(name) {
            staging_dir(&self.pin_dir).join(name)
        } else {
            self.pin_dir.join(name)
        }
    }

    /// The maps created anew in the staging directory.
    pub fn staged(&self) -> impl Iterator<Item = &str> {
        self.staged.iter().map(String::as_str)
    }

    pub fn is_staged(&self, name: &str) -> bool {
        self.staged.contains(name)
    }
}

/// Removes what an interrupted upgrade left in the staging directory (it is simply redone),
/// and creates it again when `needed`.
pub fn prepare_staging(pin_dir: &Path, needed: bool) -> Result<()> {
    let dir = staging_dir(pin_dir);
    match fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", &dir, e)),
    }
    if needed {
        fs::create_dir(&dir).map_err(|e| Error::io("create", &dir, e))?;
    }
    Ok(())
}

/// What became of the tracked connections in an upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connections {
    /// The table stayed (compatible): nothing moved.
    Kept(u64),
    /// Copied into the new table.
    CarriedOver(u64),
    /// The table's layout changed: these were dropped; their next frames are checked against
    /// the rules again, as new connections.
    Reset(u64),
}

/// What an upgrade did, for `iqd up` to print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeReport {
    pub from: u32,
    pub to: u32,
    /// Maps replaced by new ones (their pins differed).
    pub replaced: Vec<String>,
    /// Maps pinned for the first time.
    pub created: Vec<String>,
    /// Pins of maps this build does not define, removed.
    pub removed: Vec<String>,
    pub connections: Connections,
}

impl UpgradeReport {
    /// `layout 1 -> 3 (IQD_CONNTRACK replaced; IQD_LAYOUT created)`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (names, what) in [
            (&self.replaced, "replaced"),
            (&self.created, "created"),
            (&self.removed, "removed"),
        ] {
            if !names.is_empty() {
                parts.push(format!("{} {what}", names.join(", ")));
            }
        }
        if parts.is_empty() {
            parts.push("no map replaced".into());
        }
        format!("layout {} -> {} ({})", self.from, self.to, parts.join("; "))
    }
}

/// How the connection table is carried over.
enum CtPlan {
    /// Compatible: the new programs use the same table.
    Kept,
    /// Entries copied; the old table is kept for a last pass of the connections opened while
    /// `up` ran.
    Copied {
        old: OldTable,
        copied: u64,
    },
    Reset(u64),
}

/// A connection table of another layout whose entries can be carried over.
enum OldTable {
    /// Only its capacity differs.
    Same(HashMap<MapData, CtKey, CtEntry>),
    /// Layout 1: the key without the segment, IPv4 addresses (see [`convert_v1`]).
    V1(HashMap<MapData, CtKeyV1, CtEntry>),
    /// Layout 2: the key with the segment, IPv4 addresses (see [`convert_v2`]).
    V2(HashMap<MapData, CtKeyV2, CtEntry>),
}

/// An upgrade under way: begun once the new programs are loaded and their maps opened, before
/// any link runs them; finished by [`finish`].
pub struct Upgrade {
    from: u32,
    replaced: Vec<String>,
    created: Vec<String>,
    unknown: Vec<String>,
    conntrack: CtPlan,
    /// Connections opened after this (by the old programs, while `up` runs) are copied in the
    /// last pass.
    begun_ns: u64,
}

impl Upgrade {
    /// Starts the upgrade `plane` loaded for, if any: carries the tracked connections into the
    /// new table (or counts those it cannot). Call before the links change.
    pub fn begin(plane: &DataPlane, maps: &mut FabricMaps) -> Result<Option<Upgrade>> {
        let Some(layout) = plane.pinned_layout().filter(|l| !l.is_current()) else {
            return Ok(None);
        };
        let begun_ns = dataplane::ktime_ns();
        let old_path = plane.pin_dir().join(map_names::CONNTRACK);
        let conntrack = match layout
            .incompatible
            .iter()
            .find(|m| m.name == map_names::CONNTRACK)
        {
            None => CtPlan::Kept,
            Some(m) if m.only_capacity_differs() => {
                let old = OldTable::Same(open_typed(&old_path)?);
                let copied = copy_connections(&old, maps, 0)?;
                CtPlan::Copied { old, copied }
            }
            // Layout 1: the key gains the segment, which the port that opened the
            // connection gives (its entry in IQD_PORTS, which must then read the same), and
            // its addresses are mapped into IPv6.
            Some(m)
                if is_old_table(m, std::mem::size_of::<CtKeyV1>())
                    && layout.reads_the_same(map_names::PORTS) =>
            {
                let old = OldTable::V1(open_typed(&old_path)?);
                let copied = copy_connections(&old, maps, 0)?;
                CtPlan::Copied { old, copied }
            }
            // Layout 2: its IPv4 addresses are mapped into IPv6.
            Some(m) if is_old_table(m, std::mem::size_of::<CtKeyV2>()) => {
                let old = OldTable::V2(open_typed(&old_path)?);
                let copied = copy_connections(&old, maps, 0)?;
                CtPlan::Copied { old, copied }
            }
            Some(m) => {
                let old = MapData::from_pin(&old_path).map_err(map_err(map_names::CONNTRACK))?;
                CtPlan::Reset(count_entries(
                    &old,
                    m.pinned.key_size as usize,
                    m.pinned.max_entries,
                )?)
            }
        };
        Ok(Some(Upgrade {
            from: layout.version,
            replaced: layout.incompatible.iter().map(|m| m.name.clone()).collect(),
            created: layout.missing.clone(),
            unknown: layout.unknown.clone(),
            conntrack,
            begun_ns,
        }))
    }
}

/// Ends an `up`: moves the deferred links to the new programs, copies the connections opened
/// meanwhile, puts the staged maps in place of their old pins, removes pins this build does not
/// define, and records the layout. Without an upgrade it only records the layout (a new
/// fabric). Call once every NIC is configured and the maps are filled.
pub fn finish(
    upgrade: Option<Upgrade>,
    plane: &mut DataPlane,
    maps: &mut FabricMaps,
) -> Result<Option<UpgradeReport>> {
    let pin_dir = plane.pin_dir().to_path_buf();
    let Some(upgrade) = upgrade else {
        write_version(&pin_dir)?;
        return Ok(None);
    };
    // Every link at once (each an atomic program swap), now that the new maps hold the file's
    // ports, routes and rules.
    plane.swap_deferred_links()?;
    // The old programs count no more: their counters join the new ones.
    if upgrade.replaced.iter().any(|m| m == map_names::COUNTERS) {
        carry_counters(&pin_dir.join(map_names::COUNTERS), maps)?;
    }
    let connections = match upgrade.conntrack {
        CtPlan::Kept => Connections::Kept(maps.ct_stats()?.entries),
        CtPlan::Copied { old, copied } => {
            // The old programs ran until the swap: what they opened meanwhile comes too
            // (what they only refreshed keeps its earlier times).
            Connections::CarriedOver(copied + copy_connections(&old, maps, upgrade.begun_ns)?)
        }
        CtPlan::Reset(count) => Connections::Reset(count),
    };
    // The point of no return, one map at a time: each rename replaces the old pin atomically.
    // A crash before a rename leaves that map's old pin, which the next `up` replaces again.
    let staging = staging_dir(&pin_dir);
    for name in plane.map_paths().staged() {
        let (from, to) = (staging.join(name), pin_dir.join(name));
        fs::rename(&from, &to).map_err(|e| Error::io("rename", &from, e))?;
    }
    prepare_staging(&pin_dir, false)?;
    for name in &upgrade.unknown {
        let path = pin_dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &path, e)),
        }
    }
    write_version(&pin_dir)?;
    Ok(Some(UpgradeReport {
        from: upgrade.from,
        to: LAYOUT_VERSION,
        replaced: upgrade.replaced,
        created: upgrade.created,
        removed: upgrade.unknown,
        connections,
    }))
}

/// Per-NIC counters with `N` drop reasons: twelve in layouts 1 to 3, thirteen in layout 4
/// before the lifecycle reasons, fifteen in layout 4. Reasons are only ever added at the end, so the earlier ones
/// keep their indices.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NicCountersOld<const N: usize> {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub drops: [u64; N],
}

/// Counters of layouts 1 to 3.
pub type NicCountersV3 = NicCountersOld<12>;

// SAFETY: #[repr(C)] plain integers.
unsafe impl aya::Pod for NicCountersOld<12> {}
// SAFETY: as above.
unsafe impl aya::Pod for NicCountersOld<13> {}
// SAFETY: as above.
unsafe impl aya::Pod for NicCountersOld<15> {}

impl<const N: usize> Default for NicCountersOld<N> {
    fn default() -> Self {
        NicCountersOld {
            tx_packets: 0,
            tx_bytes: 0,
            rx_packets: 0,
            rx_bytes: 0,
            drops: [0; N],
        }
    }
}

impl<const N: usize> NicCountersOld<N> {
    /// The same counts in this layout's counters (the reasons it adds at zero).
    pub fn upgraded(&self) -> iqd_common::NicCounters {
        let mut counters = iqd_common::NicCounters {
            tx_packets: self.tx_packets,
            tx_bytes: self.tx_bytes,
            rx_packets: self.rx_packets,
            rx_bytes: self.rx_bytes,
            ..Default::default()
        };
        for (new, old) in counters.drops.iter_mut().zip(self.drops) {
            *new = old;
        }
        counters
    }
}

/// Adds the per-NIC counters of the old pin at `old_path` (with fewer drop reasons: see
/// [`NicCountersOld`]) to the new map's, so that an upgrade loses no count. A pin of another
/// shape is left alone: its counts start from zero, as before.
fn carry_counters(old_path: &Path, maps: &mut FabricMaps) -> Result<()> {
    carry_counters_of::<12>(old_path, maps)?;
    carry_counters_of::<13>(old_path, maps)?;
    carry_counters_of::<15>(old_path, maps)
}

fn carry_counters_of<const N: usize>(old_path: &Path, maps: &mut FabricMaps) -> Result<()>
where
    NicCountersOld<N>: aya::Pod,
{
    use aya::maps::{PerCpuHashMap, PerCpuValues};
    let Ok(data) = MapData::from_pin(old_path) else {
        return Ok(());
    };
    let Ok(map) = Map::from_map_data(data) else {
        return Ok(());
    };
    // Another value size: not this shape.
    let Ok(old) = PerCpuHashMap::<MapData, u32, NicCountersOld<N>>::try_from(map) else {
        return Ok(());
    };
    for (ifindex, values) in old.iter().filter_map(|e| e.ok()) {
        let mut sums: Vec<iqd_common::NicCounters> = values.iter().map(|v| v.upgraded()).collect();
        if let Ok(now) = maps.counters.get(&ifindex, 0) {
            for (sum, now) in sums.iter_mut().zip(now.iter()) {
                sum.accumulate(now);
            }
        }
        let values =
            PerCpuValues::try_from(sums).map_err(|e| Error::io("per-cpu values", "", e))?;
        maps.counters
            .insert(ifindex, values, 0)
            .map_err(map_err(map_names::COUNTERS))?;
    }
    Ok(())
}

/// Records this build's layout version in `IQD_LAYOUT`.
pub fn write_version(pin_dir: &Path) -> Result<()> {
    let mut array = layout_array(&pin_dir.join(map_names::LAYOUT))?;
    array
        .set(0, LAYOUT_VERSION, 0)
        .map_err(map_err(map_names::LAYOUT))
}

fn open_typed<T: TryFrom<Map, Error = aya::maps::MapError>>(path: &Path) -> Result<T> {
    let data = MapData::from_pin(path).map_err(map_err(map_names::CONNTRACK))?;
    Map::from_map_data(data)
        .map_err(map_err(map_names::CONNTRACK))?
        .try_into()
        .map_err(map_err(map_names::CONNTRACK))
}

/// A connection table of an older layout whose key is `key_size` bytes ([`CtKeyV1`],
/// [`CtKeyV2`]) and whose entries are this build's.
fn is_old_table(m: &Incompatible, key_size: usize) -> bool {
    let v1 = MapDef {
        key_size: key_size as u32,
        max_entries: m.expected.max_entries,
        ..m.expected
    };
    MapDef {
        max_entries: m.expected.max_entries,
        ..m.pinned
    } == v1
        && m.expected.key_size as usize == std::mem::size_of::<CtKey>()
        && m.expected.value_size as usize == std::mem::size_of::<CtEntry>()
}

/// Copies the connections of `old` created at or after `since_ns` into the new table, leaving
/// any the new table has already (the new programs' own are newer); returns how many it added.
/// Layout-1 connections whose ports `IQD_PORTS` does not place in one segment are left out.
fn copy_connections(old: &OldTable, maps: &mut FabricMaps, since_ns: u64) -> Result<u64> {
    let entries: Vec<(CtKey, CtEntry)> = match old {
        OldTable::Same(table) => table.iter().filter_map(|e| e.ok()).collect(),
        OldTable::V1(table) => {
            let segments: std::collections::HashMap<u32, u32> = maps
                .ports
                .iter()
                .filter_map(|e| e.ok())
                .map(|(ifindex, port)| (ifindex, iqd_common::segment_of(&port)))
                .collect();
            table
                .iter()
                .filter_map(|e| e.ok())
                .filter_map(|(key, entry)| {
                    convert_v1(&key, &entry, |i| segments.get(&i).copied()).map(|k| (k, entry))
                })
                .collect()
        }
        OldTable::V2(table) => table
            .iter()
            .filter_map(|e| e.ok())
            .map(|(key, entry)| (convert_v2(&key), entry))
            .collect(),
    };
    let mut copied = 0;
    for (key, entry) in entries {
        if entry.created_ns < since_ns {
            continue;
        }
        match maps.conntrack.insert(key, entry, BPF_NOEXIST) {
            Ok(()) => copied += 1,
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(map_err(map_names::CONNTRACK)(e)),
        }
    }
    Ok(copied)
}

/// `union bpf_attr` for the map element commands.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    next_key: u64,
    flags: u64,
}

const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

/// Counts the entries of a map whose key is `key_size` bytes, whatever its types (a map of
/// another layout, which aya's typed maps refuse). Stops after `limit` keys: a table that
/// changes under the walk may restart it.
fn count_entries(map: &MapData, key_size: usize, limit: u32) -> Result<u64> {
    let fd = map.fd().as_fd().as_raw_fd();
    let mut key = vec![0u8; key_size.max(1)];
    let mut next = vec![0u8; key_size.max(1)];
    let mut count = 0u64;
    loop {
        let attr = MapElemAttr {
            map_fd: fd as u32,
            _pad: 0,
            key: if count == 0 { 0 } else { key.as_ptr() as u64 },
            next_key: next.as_mut_ptr() as u64,
            flags: 0,
        };
        // SAFETY: `attr` points at buffers of the map's key size that outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_GET_NEXT_KEY,
                &attr as *const MapElemAttr,
                std::mem::size_of::<MapElemAttr>(),
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) {
                return Ok(count);
            }
            return Err(Error::io("walk the keys of", map_names::CONNTRACK, e));
        }
        count += 1;
        if count >= u64::from(limit) {
            return Ok(count);
        }
        std::mem::swap(&mut key, &mut next);
    }
}

/// The connection key of map layout 1 (16 bytes): before connections were keyed by segment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtKeyV1 {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

// SAFETY: #[repr(C)] plain integers and byte arrays with explicit padding.
unsafe impl aya::Pod for CtKeyV1 {}

/// Converts a connection tracked under map layout 1 into this layout's key, which names the
/// segment too: that of the port that opened it (`segment_of` its ifindex, from
/// `IQD_PORTS`). `None` when the connection cannot be placed (its origin port is unknown, or
/// its two ports are not on one segment, which frames never cross): it is then left behind.
pub fn convert_v1(
    old: &CtKeyV1,
    entry: &CtEntry,
    segment_of: impl Fn(u32) -> Option<u32>,
) -> Option<CtKey> {
    let segment = segment_of(entry.origin_ifindex)?;
    if segment_of(entry.reply_ifindex) != Some(segment) {
        return None;
    }
    Some(convert_v2(&CtKeyV2 {
        segment,
        saddr: old.saddr,
        daddr: old.daddr,
        sport: old.sport,
        dport: old.dport,
        proto: old.proto,
        _pad: [0; 3],
    }))
}

/// The connection key of map layout 2 (20 bytes): keyed by segment, IPv4 addresses only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtKeyV2 {
    pub segment: u32,
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

// SAFETY: #[repr(C)] plain integers and byte arrays with explicit padding.
unsafe impl aya::Pod for CtKeyV2 {}

/// Converts a connection tracked under map layout 2 into this layout's key: the same
/// connection, its IPv4 addresses mapped into IPv6 (`::ffff:a.b.c.d`) as the programs now key
/// them.
pub fn convert_v2(old: &CtKeyV2) -> CtKey {
    CtKey::new(
        old.segment,
        ipv4_mapped(old.saddr),
        ipv4_mapped(old.daddr),
        old.sport,
        old.dport,
        old.proto,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_of_layout_3_read_the_same_in_this_layout_with_the_new_reasons_at_zero() {
        assert_eq!(std::mem::size_of::<NicCountersV3>(), 8 * (4 + 12));
        let mut old = NicCountersV3 {
            tx_packets: 1,
            tx_bytes: 2,
            rx_packets: 3,
            rx_bytes: 4,
            ..Default::default()
        };
        old.drops[iqd_common::drop_reason::ND_IGNORED as usize] = 5;
        old.drops[iqd_common::drop_reason::MALFORMED as usize] = 6;
        let new = old.upgraded();
        assert_eq!(
            (new.tx_packets, new.tx_bytes, new.rx_packets, new.rx_bytes),
            (1, 2, 3, 4)
        );
        assert_eq!(new.drops[iqd_common::drop_reason::ND_IGNORED as usize], 5);
        assert_eq!(new.drops[iqd_common::drop_reason::MALFORMED as usize], 6);
        assert_eq!(new.drops[12..].iter().sum::<u64>(), 0);
    }

    const HASH: u32 = 1;
    const ARRAY: u32 = 2;
    const LRU_HASH: u32 = 9;

    fn def(map_type: u32, key_size: u32, value_size: u32, max_entries: u32) -> MapDef {
        MapDef {
            map_type,
            key_size,
            value_size,
            max_entries,
            flags: 0,
        }
    }

    fn ours() -> BTreeMap<String, MapDef> {
        [
            (map_names::PORTS, def(HASH, 4, 16, 4096)),
            (map_names::CONNTRACK, def(LRU_HASH, 44, 48, 262_144)),
            (map_names::LAYOUT, def(ARRAY, 4, 4, 1)),
        ]
        .into_iter()
        .map(|(n, d)| (n.to_string(), d))
        .collect()
    }

    #[test]
    fn pins_of_a_newer_layout_are_not_read_even_when_the_sizes_match() {
        let layout = compare(&ours(), &ours(), Some(LAYOUT_VERSION + 1));
        assert!(!layout.readable());
        let message = layout.mismatch("demo").to_string();
        assert!(message.contains("written by a newer iqd"), "{message}");
        assert!(message.contains("use the newer iqd"), "{message}");
        assert!(compare(&ours(), &ours(), Some(LAYOUT_VERSION)).readable());
    }

    #[test]
    fn equal_definitions_are_compatible() {
        let layout = compare(&ours(), &ours(), Some(LAYOUT_VERSION));
        assert!(layout.is_current(), "{layout:?}");
        assert!(layout.readable());
    }

    #[test]
    fn each_differing_field_is_named_with_both_values() {
        let want = def(LRU_HASH, 20, 48, 262_144);
        assert_eq!(
            differences(&def(LRU_HASH, 16, 48, 262_144), &want),
            ["key 16 bytes pinned, 20 expected"]
        );
        assert_eq!(
            differences(&def(HASH, 20, 56, 131_072), &want),
            [
                "type hash pinned, lru_hash expected",
                "value 56 bytes pinned, 48 expected",
                "capacity 131072 pinned, 262144 expected"
            ]
        );
        let flagged = MapDef {
            flags: 1024,
            ..want
        };
        assert_eq!(
            differences(&want, &flagged),
            ["flags 0x0 pinned, 0x400 expected"]
        );
    }

    #[test]
    fn a_devmap_value_size_is_the_loaders_choice() {
        let want = def(BPF_MAP_TYPE_DEVMAP_HASH, 4, 4, 4096);
        assert!(differences(&def(BPF_MAP_TYPE_DEVMAP_HASH, 4, 8, 4096), &want).is_empty());
        assert_eq!(
            differences(&def(BPF_MAP_TYPE_DEVMAP_HASH, 4, 12, 4096), &want),
            ["value 12 bytes pinned, 4 expected"]
        );
        // Nor the read-only flag the kernel gives every DEVMAP.
        let flagged = MapDef {
            flags: BPF_F_RDONLY_PROG,
            ..want
        };
        assert!(differences(&flagged, &want).is_empty());
        // Not for other types.
        assert!(!differences(&def(HASH, 4, 8, 4096), &def(HASH, 4, 4, 4096)).is_empty());
        let hash = def(HASH, 4, 4, 4096);
        let flagged = MapDef {
            flags: BPF_F_RDONLY_PROG,
            ..hash
        };
        assert!(!differences(&flagged, &hash).is_empty());
    }

    #[test]
    fn layout_1_pins_are_described_for_the_refusal() {
        // An iqd of layout 1: a 16-byte connection key, no IQD_LAYOUT.
        let mut pinned = ours();
        pinned.remove(map_names::LAYOUT);
        pinned.insert(map_names::CONNTRACK.into(), def(LRU_HASH, 16, 48, 262_144));
        let layout = compare(&pinned, &ours(), None);
        assert_eq!(layout.version, UNVERSIONED_LAYOUT);
        assert_eq!(layout.missing, [map_names::LAYOUT]);
        assert!(!layout.readable());
        assert!(!layout.is_current());
        let [m] = layout.incompatible.as_slice() else {
            panic!("{layout:?}")
        };
        assert!(!m.only_capacity_differs());
        let message = layout.mismatch("demo").to_string();
        assert_eq!(
            message,
            format!(
                "fabric demo is pinned with map layout 1 (IQD_CONNTRACK: key 16 bytes pinned, \
                 44 expected); this iqd uses layout {LAYOUT_VERSION}: run `iqd up --config FILE` \
                 to upgrade it in place"
            )
        );
        let named = layout
            .mismatch("demo")
            .with_config(Path::new("demo.toml"))
            .to_string();
        assert!(named.contains("`iqd up --config demo.toml`"), "{named}");
    }

    #[test]
    fn pins_without_the_version_record_alone_stay_readable() {
        let mut pinned = ours();
        pinned.remove(map_names::LAYOUT);
        let layout = compare(&pinned, &ours(), None);
        assert!(layout.readable());
        assert!(!layout.is_current(), "up records the version");
    }

    #[test]
    fn layout_1_and_2_connection_tables_are_recognised_for_conversion() {
        let expected = def(LRU_HASH, 44, 48, 262_144);
        let table = |pinned| Incompatible {
            name: map_names::CONNTRACK.into(),
            pinned,
            expected,
        };
        for key_size in [16, 20] {
            assert!(is_old_table(
                &table(def(LRU_HASH, key_size, 48, 262_144)),
                key_size as usize
            ));
            // Its capacity may differ too.
            assert!(is_old_table(
                &table(def(LRU_HASH, key_size, 48, 1024)),
                key_size as usize
            ));
            // Anything else is not that layout's table: its connections are reset.
            assert!(!is_old_table(
                &table(def(LRU_HASH, 12, 48, 262_144)),
                key_size as usize
            ));
            assert!(!is_old_table(
                &table(def(LRU_HASH, key_size, 56, 262_144)),
                key_size as usize
            ));
            assert!(!is_old_table(
                &table(def(HASH, key_size, 48, 262_144)),
                key_size as usize
            ));
        }
        assert_eq!(std::mem::size_of::<CtKeyV1>(), 16);
        assert_eq!(std::mem::size_of::<CtKeyV2>(), 20);
    }

    #[test]
    fn a_layout_2_connection_has_its_addresses_mapped() {
        let old = CtKeyV2 {
            segment: 0xf0,
            saddr: [10, 0, 0, 1],
            daddr: [10, 0, 0, 2],
            sport: 40000,
            dport: 5201,
            proto: 6,
            _pad: [0; 3],
        };
        let new = convert_v2(&old);
        assert_eq!(
            new,
            CtKey::new(
                0xf0,
                [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1],
                [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 2],
                40000,
                5201,
                6,
            )
        );
        assert_eq!(
            iqd_common::ip_of(new.saddr),
            std::net::IpAddr::from([10, 0, 0, 1])
        );
    }

    #[test]
    fn a_capacity_change_alone_keeps_the_entries_readable() {
        let mut pinned = ours();
        pinned.insert(map_names::CONNTRACK.into(), def(LRU_HASH, 44, 48, 131_072));
        let layout = compare(&pinned, &ours(), Some(1));
        assert!(layout.incompatible[0].only_capacity_differs());
        assert!(!layout.readable());
    }

    #[test]
    fn missing_and_unknown_maps_are_listed() {
        let mut pinned = ours();
        pinned.remove(map_names::PORTS);
        pinned.insert("IQD_OLD_THING".into(), def(HASH, 4, 4, 1));
        let layout = compare(&pinned, &ours(), Some(LAYOUT_VERSION));
        assert_eq!(layout.missing, [map_names::PORTS]);
        assert_eq!(layout.unknown, ["IQD_OLD_THING"]);
        assert!(!layout.readable());
        assert!(layout
            .mismatch("demo")
            .to_string()
            .contains("IQD_PORTS: not pinned"));
    }

    #[test]
    fn a_newer_layout_is_not_called_an_upgrade() {
        let mut pinned = ours();
        pinned.insert(map_names::CONNTRACK.into(), def(LRU_HASH, 24, 48, 262_144));
        let message = compare(&pinned, &ours(), Some(LAYOUT_VERSION + 1))
            .mismatch("demo")
            .to_string();
        assert!(message.contains("use the newer iqd"), "{message}");
        assert!(!message.contains("upgrade it"), "{message}");
    }

    #[test]
    fn staged_maps_are_found_in_the_staging_directory() {
        let mut pinned = ours();
        pinned.insert(map_names::CONNTRACK.into(), def(LRU_HASH, 16, 48, 262_144));
        let layout = compare(&pinned, &ours(), None);
        let paths = MapPaths::new(Path::new("/sys/fs/bpf/iqd/demo"), Some(&layout));
        assert_eq!(
            paths.path(map_names::CONNTRACK),
            Path::new("/sys/fs/bpf/iqd/demo/upgrade/IQD_CONNTRACK")
        );
        assert_eq!(
            paths.path(map_names::PORTS),
            Path::new("/sys/fs/bpf/iqd/demo/IQD_PORTS")
        );
        assert_eq!(paths.staged().collect::<Vec<_>>(), [map_names::CONNTRACK]);
        let fresh = MapPaths::new(Path::new("/p"), None);
        assert_eq!(fresh.staged().count(), 0);
    }

    #[test]
    fn the_report_names_what_changed() {
        let report = UpgradeReport {
            from: 1,
            to: 2,
            replaced: vec!["IQD_CONNTRACK".into(), "IQD_COUNTERS".into()],
            created: vec!["IQD_LAYOUT".into()],
            removed: vec![],
            connections: Connections::Reset(3),
        };
        assert_eq!(
            report.summary(),
            "layout 1 -> 2 (IQD_CONNTRACK, IQD_COUNTERS replaced; IQD_LAYOUT created)"
        );
        let quiet = UpgradeReport {
            replaced: vec![],
            created: vec![],
            ..report
        };
        assert_eq!(quiet.summary(), "layout 1 -> 2 (no map replaced)");
    }

    fn entry(origin: u32, reply: u32) -> CtEntry {
        CtEntry {
            origin_ifindex: origin,
            reply_ifindex: reply,
            created_ns: 5,
            ..Default::default()
        }
    }

    #[test]
    fn a_layout_1_connection_is_keyed_by_its_origins_segment() {
        let old = CtKeyV1 {
            saddr: [10, 0, 0, 1],
            daddr: [10, 0, 0, 2],
            sport: 40000,
            dport: 5201,
            proto: 6,
            _pad: [0; 3],
        };
        // Ports 3 and 4 on CHPID F0, port 5 on F1.
        let chpid = |ifindex| match ifindex {
            3 | 4 => Some(0xf0),
            5 => Some(0xf1),
            _ => None,
        };
        assert_eq!(
            convert_v1(&old, &entry(3, 4), chpid),
            Some(CtKey::new(
                0xf0,
                ipv4_mapped([10, 0, 0, 1]),
                ipv4_mapped([10, 0, 0, 2]),
                40000,
                5201,
                6,
            ))
        );
        // The origin port is gone: nothing to key it by.
        assert_eq!(convert_v1(&old, &entry(9, 4), chpid), None);
        // Ports on different segments cannot share a connection.
        assert_eq!(convert_v1(&old, &entry(3, 5), chpid), None);
        assert_eq!(std::mem::size_of::<CtKeyV1>(), 16);
    }

    /// Only meaningful in a build with its eBPF object (`cargo xtask build`).
    #[test]
    fn the_object_pins_exactly_the_named_maps() {
        if dataplane::object().is_empty() {
            eprintln!("skipped: built without the eBPF object (AYA_BUILD_SKIP)");
            return;
        }
        let defs = expected().unwrap();
        let mut names: Vec<&str> = defs.keys().map(String::as_str).collect();
        let mut all = map_names::ALL.to_vec();
        names.sort();
        all.sort();
        assert_eq!(names, all);
        assert_eq!(
            defs[map_names::CONNTRACK].max_entries,
            iqd_common::MAX_CONNTRACK
        );
        assert_eq!(
            defs[map_names::CONNTRACK].key_size as usize,
            std::mem::size_of::<CtKey>()
        );
        assert_eq!(defs[map_names::LAYOUT], def(ARRAY, 4, 4, 1));
    }
}
