//! The XDP data plane: loading the program, its pinned maps and links.
//!
//! Everything lives under `/sys/fs/bpf/iqd/<fabric>/`: the maps (by name, see
//! `iqd_common::map_names`) and one link per fabric-side port (`link_<port>`). Pinned links keep
//! the program attached after iqd exits; pinned maps are reused by the next `iqd up`, which
//! therefore changes the data plane in place without dropping a frame. Maps whose pins another
//! layout wrote are replaced instead (see `layout`).
use std::{
    collections::HashSet,
    fs,
    path::{Path, PathBuf},
};

use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, DevMapHash, HashMap, Map, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues, XskMap,
    },
    programs::{
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
        SchedClassifier, TcAttachType, Xdp, XdpMode,
    },
    util::nr_cpus,
    Ebpf, EbpfLoader,
};
use iqd_common::{
    ct_stat, map_names, program_names, segment_of, xsk_stat, Addr, Bucket, CtEntry, CtKey,
    GroupKey, GroupMembers, NicCounters, PortInfo, RouteKey, RouteTarget, SgKey, SgRanges,
    LAYER2_KEYS,
};

use crate::{
    error::{Error, Result},
    layout::{self, MapPaths, PinnedLayout},
};

/// Where all fabrics keep their pinned objects.
pub const PIN_ROOT: &str = "/sys/fs/bpf/iqd";
const BPFFS: &str = "/sys/fs/bpf";

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/iqd"));

/// The embedded eBPF object (empty in a build without it).
pub(crate) fn object() -> &'static [u8] {
    OBJECT
}

/// CLOCK_MONOTONIC_COARSE in nanoseconds: the clock of `bpf_ktime_get_coarse_ns`, which the
/// data plane stamps connections with.
pub fn ktime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn pin_dir(fabric: &str) -> PathBuf {
    Path::new(PIN_ROOT).join(fabric)
}

/// Mounts bpffs at /sys/fs/bpf unless it is there (a fresh container may lack it).
pub fn ensure_bpffs() -> Result<()> {
    let is_bpffs = nix::sys::statfs::statfs(BPFFS)
        .map(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
        .unwrap_or(false);
    if !is_bpffs {
        fs::create_dir_all(BPFFS).map_err(|e| Error::io("create", BPFFS, e))?;
        nix::mount::mount(
            Some("bpf"),
            BPFFS,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| Error::io("mount bpffs on", BPFFS, e.into()))?;
    }
    Ok(())
}

fn prog_err(name: &str) -> impl FnOnce(aya::programs::ProgramError) -> Error + '_ {
    move |source| Error::Program {
        name: name.to_string(),
        source,
    }
}

fn map_err(name: &str) -> impl FnOnce(aya::maps::MapError) -> Error + '_ {
    move |source| Error::Map {
        name: name.to_string(),
        source,
    }
}

fn pin_err<E: std::error::Error + Send + Sync + 'static>(
    path: &Path,
) -> impl FnOnce(E) -> Error + '_ {
    move |source| Error::Pin {
        path: path.to_path_buf(),
        source: Box::new(source),
    }
}

/// Where on a NIC a program runs, and which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The fabric-side port, data path `xdp`: the switch (`iqd_port`, XDP).
    Port,
    /// The LPAR's interface, data path `xdp`: the pass-through stub (`iqd_nic`, XDP).
    Nic,
    /// The fabric-side port, data path `tc`: the switch (`iqd_tc`, tcx ingress).
    PortTc,
    /// The fabric-side port, data path `afxdp`: hands frames to the AF_XDP switch (`iqd_xsk`,
    /// XDP).
    PortXsk,
    /// Bandwidth shaping (`iqd_shaped`, tcx ingress): the out end of a shaper, and, on data
    /// paths `xdp` and `afxdp`, the fabric-side port (for the frames XDP passes up to be
    /// shaped).
    Shaped,
}

impl Side {
    pub const ALL: [Side; 5] = [
        Side::Port,
        Side::Nic,
        Side::PortTc,
        Side::PortXsk,
        Side::Shaped,
    ];
    /// The sides that switch a port's frames, one per data path.
    pub const PORT_SIDES: [Side; 3] = [Side::Port, Side::PortTc, Side::PortXsk];

    fn program(self) -> &'static str {
        match self {
            Side::Port => program_names::PORT,
            Side::Nic => program_names::NIC,
            Side::PortTc => program_names::TC,
            Side::PortXsk => program_names::XSK,
            Side::Shaped => program_names::SHAPED,
        }
    }

    fn link_pin(self, pin_dir: &Path, port: &str) -> PathBuf {
        match self {
            Side::Port => pin_dir.join(format!("link_{port}")),
            Side::Nic => pin_dir.join(format!("link_{port}_nic")),
            Side::PortTc => pin_dir.join(format!("link_{port}_tc")),
            Side::PortXsk => pin_dir.join(format!("link_{port}_xsk")),
            Side::Shaped => pin_dir.join(format!("link_{port}_shaped")),
        }
    }

    /// The other XDP program of the port's XDP hook: a port has one XDP link, so switching
    /// between `xdp` and `afxdp` replaces the link's program rather than adding a link.
    fn xdp_sibling(self) -> Option<Side> {
        match self {
            Side::Port => Some(Side::PortXsk),
            Side::PortXsk => Some(Side::Port),
            Side::Nic | Side::PortTc | Side::Shaped => None,
        }
    }
}

/// The loaded programs of one fabric, their maps pinned under `pin_dir`.
pub struct DataPlane {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    /// The pins as they were before loading (`None`: a new fabric).
    layout: Option<PinnedLayout>,
    /// Where the programs' maps are: pinned, or staged to replace an incompatible pin.
    paths: MapPaths,
    /// Pinned links whose program swap waits until the staged maps are filled (an upgrade).
    deferred: Vec<(Side, String)>,
}

impl DataPlane {
    /// Loads the programs, creating the pinned maps or reusing the ones already there. A
    /// pinned map that differs from this build's definition is not reused: a new one is
    /// created in the staging directory, and the links keep their old programs until
    /// [`DataPlane::swap_deferred_links`] (see `layout`).
    pub fn load(pin_dir: &Path) -> Result<Self> {
        if OBJECT.is_empty() {
            return Err(Error::NoEbpfObject);
        }
        ensure_bpffs()?;
        create_pin_dir(pin_dir)?;
        let pinned = layout::inspect(pin_dir)?;
        let paths = MapPaths::new(pin_dir, pinned.as_ref());
        // A leftover of an interrupted upgrade goes: the upgrade is simply redone.
        layout::prepare_staging(pin_dir, paths.staged().next().is_some())?;
        let staged: Vec<(&str, PathBuf)> = paths
            .staged()
            .map(|name| (name, paths.path(name)))
            .collect();
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(pin_dir);
        for (name, path) in &staged {
            loader.map_pin_path(name, path.as_path());
        }
        let ebpf = loader.load(OBJECT)?;
        let mut plane = Self {
            ebpf,
            pin_dir: pin_dir.to_path_buf(),
            layout: pinned,
            paths,
            deferred: Vec::new(),
        };
        for side in Side::ALL {
            let name = side.program();
            let program = plane
                .ebpf
                .program_mut(name)
                .ok_or_else(|| prog_err(name)(aya::programs::ProgramError::NotLoaded))?;
            match side {
                Side::PortTc | Side::Shaped => {
                    let tc: &mut SchedClassifier = program.try_into().map_err(prog_err(name))?;
                    tc.load().map_err(prog_err(name))?;
                }
                Side::Port | Side::Nic | Side::PortXsk => {
                    let xdp: &mut Xdp = program.try_into().map_err(prog_err(name))?;
                    xdp.load().map_err(prog_err(name))?;
                }
            }
            // The newest program replaces the pinned one; links made from the old one keep it
            // until `attach` moves them over.
            let pin = pin_dir.join(format!("prog_{name}"));
            match fs::remove_file(&pin) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &pin, e)),
            }
            program.pin(&pin).map_err(pin_err(&pin))?;
        }
        Ok(plane)
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The pins as `load` found them: `None` for a new fabric.
    pub fn pinned_layout(&self) -> Option<&PinnedLayout> {
        self.layout.as_ref()
    }

    /// Where each map of the loaded programs is (its pin, or staged).
    pub fn map_paths(&self) -> &MapPaths {
        &self.paths
    }

    /// Moves the links whose swap [`DataPlane::attach`] deferred to the new programs, each
    /// atomically (a BPF link update). Returns how many.
    pub fn swap_deferred_links(&mut self) -> Result<usize> {
        let deferred = std::mem::take(&mut self.deferred);
        for (side, port) in &deferred {
            // A pinned link is updated through its fd: neither namespace nor ifindex matter.
            self.swap(*side, port, "", 0)?;
        }
        Ok(deferred.len())
    }

    /// An XDP program (`Side::Port`, `Side::Nic` or `Side::PortXsk`).
    pub fn program(&mut self, side: Side) -> Result<&mut Xdp> {
        let name = side.program();
        self.ebpf
            .program_mut(name)
            .ok_or_else(|| prog_err(name)(aya::programs::ProgramError::NotLoaded))?
            .try_into()
            .map_err(prog_err(name))
    }

    /// A tc program (`Side::PortTc`, `Side::Shaped`).
    pub fn tc_program(&mut self, side: Side) -> Result<&mut SchedClassifier> {
        let name = side.program();
        self.ebpf
            .program_mut(name)
            .ok_or_else(|| prog_err(name)(aya::programs::ProgramError::NotLoaded))?
            .try_into()
            .map_err(prog_err(name))
    }

    /// Attaches a program to interface `ifindex` (of the calling thread's namespace; `ifname`
    /// is its name there) and pins the link. If the link is pinned already, its program is
    /// replaced atomically; so is the program of the port's other XDP link (`xdp` and
    /// `afxdp` share the hook), whose pin moves to this side's name.
    ///
    /// While maps are staged for an upgrade, a link that is pinned already keeps its old
    /// program (and so the old maps) until [`DataPlane::swap_deferred_links`]: the new programs
    /// must not run before `up` has filled their maps.
    pub fn attach(&mut self, side: Side, port: &str, ifname: &str, ifindex: u32) -> Result<()> {
        let upgrading = self.paths.staged().next().is_some();
        if upgrading && side.link_pin(&self.pin_dir, port).exists() {
            self.deferred.push((side, port.to_string()));
            return Ok(());
        }
        self.swap(side, port, ifname, ifindex)
    }

    fn swap(&mut self, side: Side, port: &str, ifname: &str, ifindex: u32) -> Result<()> {
        let path = side.link_pin(&self.pin_dir, port);
        let name = side.program();
        let existing = if path.exists() {
            Some(path.clone())
        } else {
            side.xdp_sibling()
                .map(|other| other.link_pin(&self.pin_dir, port))
                .filter(|p| p.exists())
        };
        let pinned = match existing {
            Some(old) => {
                let pinned = PinnedLink::from_pin(&old).map_err(pin_err(&old))?;
                Some(pinned.unpin().map_err(pin_err(&old))?)
            }
            None => None,
        };
        let fd_link: FdLink = match side {
            Side::Port | Side::Nic | Side::PortXsk => {
                let program = self.program(side)?;
                let id = match pinned {
                    Some(fd_link) => {
                        let link = XdpLink::try_from(fd_link).map_err(pin_err(&path))?;
                        program.attach_to_link(link).map_err(prog_err(name))?
                    }
                    None => program
                        .attach_to_if_index(ifindex, XdpMode::Driver)
                        .map_err(prog_err(name))?,
                };
                let link = program.take_link(id).map_err(prog_err(name))?;
                link.try_into().map_err(pin_err(&path))?
            }
            Side::PortTc | Side::Shaped => {
                let program = self.tc_program(side)?;
                let id = match pinned {
                    Some(fd_link) => {
                        let link =
                            SchedClassifierLink::try_from(fd_link).map_err(pin_err(&path))?;
                        program.attach_to_link(link).map_err(prog_err(name))?
                    }
                    // tcx (kernel 6.6+): a bpf_link that can be pinned, so the program stays
                    // attached after iqd exits.
                    None => program
                        .attach(ifname, TcAttachType::Ingress)
                        .map_err(prog_err(name))?,
                };
                let link = program.take_link(id).map_err(prog_err(name))?;
                link.try_into().map_err(pin_err(&path))?
            }
        };
        fd_link.pin(&path).map_err(pin_err(&path))?;
        Ok(())
    }
}

/// Whether a port's switch program is attached (its link is pinned), on either data path.
pub fn is_attached(pin_dir: &Path, port: &str) -> bool {
    Side::PORT_SIDES
        .iter()
        .any(|side| side.link_pin(pin_dir, port).exists())
}

/// Detaches one program of a NIC by removing its pinned link (it may be gone already).
pub fn detach_side(pin_dir: &Path, side: Side, port: &str) -> Result<()> {
    let path = side.link_pin(pin_dir, port);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", path, e)),
    }
    Ok(())
}

/// Detaches every program of a NIC (the port may already be gone).
pub fn detach(pin_dir: &Path, port: &str) -> Result<()> {
    for side in Side::ALL {
        detach_side(pin_dir, side, port)?;
    }
    Ok(())
}

/// Creates the pin directory, retrying while a concurrent `down` of another fabric removes the
/// shared root between our creating it and creating the fabric's directory under it.
fn create_pin_dir(pin_dir: &Path) -> Result<()> {
    let mut attempts = 0;
    loop {
        match fs::create_dir_all(pin_dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 5 => attempts += 1,
            Err(e) => return Err(Error::io("create", pin_dir, e)),
        }
    }
}

/// Removes a fabric's whole pin directory: links (detaching the program) and maps.
pub fn remove_pins(pin_dir: &Path) -> Result<()> {
    match fs::remove_dir_all(pin_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", pin_dir, e)),
    }
    // Leave /sys/fs/bpf/iqd only while other fabrics use it.
    let _ = fs::remove_dir(PIN_ROOT);
    Ok(())
}

/// Typed access to a fabric's pinned maps.
pub struct FabricMaps {
    pub ports: HashMap<MapData, u32, PortInfo>,
    pub routes: HashMap<MapData, RouteKey, RouteTarget>,
    pub addresses: HashMap<MapData, Addr, u32>,
    pub devmap: DevMapHash<MapData>,
    pub counters: PerCpuHashMap<MapData, u32, NicCounters>,
    pub sg_rules: LpmTrie<MapData, SgKey, SgRanges>,
    pub conntrack: HashMap<MapData, CtKey, CtEntry>,
    pub ct_stats: PerCpuArray<MapData, u64>,
    pub xsk_slots: HashMap<MapData, u32, u32>,
    pub xskmap: XskMap<MapData>,
    pub xsk_stats: PerCpuArray<MapData, u64>,
    pub switch_counters: Array<MapData, NicCounters>,
    pub stopped: HashMap<MapData, RouteKey, RouteTarget>,
    pub bw_ports: HashMap<MapData, u32, u32>,
    pub buckets: Array<MapData, Bucket>,
    pub groups: HashMap<MapData, GroupKey, GroupMembers>,
}

/// Data path `afxdp`: where `iqd_xsk` sent the frames it delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct XskStats {
    /// Handed to the switch.
    pub to_switch: u64,
    /// Delivered in the kernel because a port had no switch socket.
    pub fallback: u64,
}

/// Connection-table figures: how full it is and what left it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CtStats {
    pub entries: u64,
    pub capacity: u64,
    /// Connections the data plane started tracking.
    pub created: u64,
    /// Entries removed because changed rules no longer allowed them.
    pub revoked: u64,
    /// Entries the full table gave up for newer ones (least recently used first).
    pub evicted: u64,
}

fn open_map(path: &Path, name: &str) -> Result<Map> {
    let data = MapData::from_pin(path).map_err(map_err(name))?;
    Map::from_map_data(data).map_err(map_err(name))
}

impl FabricMaps {
    /// Opens the maps a running fabric pinned, if they are this build's layout (otherwise the
    /// error says what differs and to run `iqd up`).
    pub fn open(fabric: &str, pin_dir: &Path) -> Result<Self> {
        if !pin_dir.join(map_names::PORTS).exists() {
            return Err(Error::NotUp {
                fabric: fabric.to_string(),
                pin_dir: pin_dir.to_path_buf(),
            });
        }
        layout::require_readable(fabric, pin_dir)?;
        Self::open_at(|name| pin_dir.join(name))
    }

    /// Opens the maps the programs `plane` loaded use: pinned, or staged for an upgrade.
    pub fn open_for(plane: &DataPlane) -> Result<Self> {
        Self::open_at(|name| plane.map_paths().path(name))
    }

    /// Opens each map at the path `path` gives for its name.
    pub fn open_at(path: impl Fn(&str) -> PathBuf) -> Result<Self> {
        let open_map = |name: &str| open_map(&path(name), name);
        Ok(Self {
            ports: open_map(map_names::PORTS)?
                .try_into()
                .map_err(map_err(map_names::PORTS))?,
            routes: open_map(map_names::ROUTES)?
                .try_into()
                .map_err(map_err(map_names::ROUTES))?,
            addresses: open_map(map_names::ADDRESSES)?
                .try_into()
                .map_err(map_err(map_names::ADDRESSES))?,
            devmap: open_map(map_names::DEVMAP)?
                .try_into()
                .map_err(map_err(map_names::DEVMAP))?,
            counters: open_map(map_names::COUNTERS)?
                .try_into()
                .map_err(map_err(map_names::COUNTERS))?,
            sg_rules: open_map(map_names::SG_RULES)?
                .try_into()
                .map_err(map_err(map_names::SG_RULES))?,
            conntrack: open_map(map_names::CONNTRACK)?
                .try_into()
                .map_err(map_err(map_names::CONNTRACK))?,
            ct_stats: open_map(map_names::CT_STATS)?
                .try_into()
                .map_err(map_err(map_names::CT_STATS))?,
            xsk_slots: open_map(map_names::XSK_SLOTS)?
                .try_into()
                .map_err(map_err(map_names::XSK_SLOTS))?,
            xskmap: open_map(map_names::XSKMAP)?
                .try_into()
                .map_err(map_err(map_names::XSKMAP))?,
            xsk_stats: open_map(map_names::XSK_STATS)?
                .try_into()
                .map_err(map_err(map_names::XSK_STATS))?,
            switch_counters: open_map(map_names::SWITCH_COUNTERS)?
                .try_into()
                .map_err(map_err(map_names::SWITCH_COUNTERS))?,
            stopped: open_map(map_names::STOPPED)?
                .try_into()
                .map_err(map_err(map_names::STOPPED))?,
            bw_ports: open_map(map_names::BW_PORTS)?
                .try_into()
                .map_err(map_err(map_names::BW_PORTS))?,
            buckets: open_map(map_names::BUCKETS)?
                .try_into()
                .map_err(map_err(map_names::BUCKETS))?,
            groups: open_map(map_names::GROUPS)?
                .try_into()
                .map_err(map_err(map_names::GROUPS))?,
        })
    }

    /// Describes a port; its counters start at zero unless it already has some.
    /// Must run inside the fabric namespace (the DEVMAP resolves the ifindex there).
    pub fn add_port(&mut self, ifindex: u32, info: PortInfo) -> Result<()> {
        self.ports
            .insert(ifindex, info, 0)
            .map_err(map_err(map_names::PORTS))?;
        self.devmap
            .insert(ifindex, ifindex, None, 0)
            .map_err(pin_err(Path::new(map_names::DEVMAP)))?;
        if self.counters.get(&ifindex, 0).is_err() {
            let cpus = nr_cpus().map_err(|(path, e)| Error::io("read", path, e))?;
            let zero = PerCpuValues::try_from(vec![NicCounters::default(); cpus])
                .map_err(|e| Error::io("per-cpu values", "", e))?;
            self.counters
                .insert(ifindex, zero, 0)
                .map_err(map_err(map_names::COUNTERS))?;
        }
        Ok(())
    }

    pub fn remove_port(&mut self, ifindex: u32) -> Result<()> {
        ignore_missing(self.ports.remove(&ifindex)).map_err(map_err(map_names::PORTS))?;
        ignore_missing(self.devmap.remove(ifindex)).map_err(map_err(map_names::DEVMAP))?;
        ignore_missing(self.counters.remove(&ifindex)).map_err(map_err(map_names::COUNTERS))?;
        // Its switch counters go with its slot: the switch zeroes a slot it gives out anew.
        ignore_missing(self.xsk_slots.remove(&ifindex)).map_err(map_err(map_names::XSK_SLOTS))?;
        // Its registrations end with it.
        self.prune_groups()
    }

    /// Every group and broadcast address with its member ports, by segment and address.
    pub fn groups(&self) -> Vec<(GroupKey, Vec<u32>)> {
        let mut groups: Vec<(GroupKey, Vec<u32>)> = self
            .groups
            .iter()
            .filter_map(|e| e.ok())
            .map(|(key, members)| (key, members.members().to_vec()))
            .collect();
        groups.sort_by_key(|(key, _)| (key.segment, key.addr));
        groups
    }

    /// Drops every member the data plane learnt that is no (longer a) port of the group's
    /// segment: a removed NIC, or one moved to another segment.
    pub fn prune_groups(&mut self) -> Result<()> {
        let ports: std::collections::HashMap<u32, u32> = self
            .ports
            .iter()
            .filter_map(|e| e.ok())
            .map(|(ifindex, info)| (ifindex, segment_of(&info)))
            .collect();
        for (key, members) in self.groups() {
            let kept: Vec<u32> = members
                .iter()
                .copied()
                .filter(|p| ports.get(p) == Some(&(key.segment & !LAYER2_KEYS)))
                .collect();
            if kept.len() == members.len() {
                continue;
            }
            if kept.is_empty() {
                ignore_missing(self.groups.remove(&key)).map_err(map_err(map_names::GROUPS))?;
            } else {
                self.groups
                    .insert(key, GroupMembers::of(&kept), 0)
                    .map_err(map_err(map_names::GROUPS))?;
            }
        }
        Ok(())
    }

    /// Makes the member lists iqd writes (broadcasts, layer-2 floods: every key but the
    /// multicast groups the data plane learns) exactly `lists`, then prunes the learnt groups.
    pub fn sync_broadcasts(&mut self, lists: &[(GroupKey, Vec<u32>)]) -> Result<()> {
        for (key, members) in lists {
            self.groups
                .insert(key, GroupMembers::of(members), 0)
                .map_err(map_err(map_names::GROUPS))?;
        }
        let wanted: HashSet<&GroupKey> = lists.iter().map(|(key, _)| key).collect();
        let stale: Vec<GroupKey> = self
            .groups
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !k.is_learnt_group() && !wanted.contains(k))
            .collect();
        for key in stale {
            ignore_missing(self.groups.remove(&key)).map_err(map_err(map_names::GROUPS))?;
        }
        self.prune_groups()
    }

    /// Data path `afxdp`: every port's switch slot, by ifindex.
    pub fn xsk_slots(&self) -> Vec<(u32, u32)> {
        self.xsk_slots.iter().filter_map(|e| e.ok()).collect()
    }

    pub fn remove_xsk_slot(&mut self, ifindex: u32) -> Result<()> {
        ignore_missing(self.xsk_slots.remove(&ifindex)).map_err(map_err(map_names::XSK_SLOTS))
    }

    /// Data path `afxdp`: the switch serves port `ifindex` from socket slot `slot`.
    pub fn set_xsk_slot(&mut self, ifindex: u32, slot: u32) -> Result<()> {
        self.xsk_slots
            .insert(ifindex, slot, 0)
            .map_err(map_err(map_names::XSK_SLOTS))
    }

    /// Data path `afxdp`: puts the AF_XDP socket `fd` at XSKMAP index `index`.
    pub fn set_xsk(&mut self, index: u32, fd: std::os::fd::RawFd) -> Result<()> {
        // SAFETY: the caller's socket stays open for the call.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        self.xskmap
            .set(index, fd, 0)
            .map_err(map_err(map_names::XSKMAP))
    }

    pub fn unset_xsk(&mut self, index: u32) -> Result<()> {
        ignore_missing(self.xskmap.unset(index)).map_err(map_err(map_names::XSKMAP))
    }

    /// What the switch counted for port `ifindex` (zero if it never served it).
    pub fn switch_counters(&self, ifindex: u32) -> Result<NicCounters> {
        let slot = match self.xsk_slots.get(&ifindex, 0) {
            Ok(slot) => slot,
            Err(aya::maps::MapError::KeyNotFound) => return Ok(NicCounters::default()),
            Err(e) => return Err(map_err(map_names::XSK_SLOTS)(e)),
        };
        match self.switch_counters.get(&slot, 0) {
            Ok(counters) => Ok(counters),
            Err(aya::maps::MapError::OutOfBounds { .. }) => Ok(NicCounters::default()),
            Err(e) => Err(map_err(map_names::SWITCH_COUNTERS)(e)),
        }
    }

    /// Data path `afxdp`: the frames `iqd_xsk` handed to the switch and those it delivered
    /// itself, summed over CPUs.
    pub fn xsk_stats(&self) -> Result<XskStats> {
        let sum = |index| per_cpu_total(&self.xsk_stats, index, map_names::XSK_STATS);
        Ok(XskStats {
            to_switch: sum(xsk_stat::TO_SWITCH)?,
            fallback: sum(xsk_stat::FALLBACK)?,
        })
    }

    /// Makes ROUTES and ADDRESSES hold exactly `routes` (and the addresses' segment counts).
    pub fn sync_routes(&mut self, routes: &[(RouteKey, RouteTarget)]) -> Result<()> {
        self.sync_all_routes(routes, &[])
    }

    /// Makes ROUTES hold exactly `routes`, STOPPED exactly `stopped` (the routes of stopped
    /// LPARs' NICs) and ADDRESSES the CHPID counts of both. A route moves into its new map
    /// before it leaves its old one.
    pub fn sync_all_routes(
        &mut self,
        routes: &[(RouteKey, RouteTarget)],
        stopped: &[(RouteKey, RouteTarget)],
    ) -> Result<()> {
        for (key, target) in stopped {
            self.stopped
                .insert(key, target, 0)
                .map_err(map_err(map_names::STOPPED))?;
        }
        let wanted: HashSet<&RouteKey> = stopped.iter().map(|(key, _)| key).collect();
        let gone: Vec<RouteKey> = self
            .stopped
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !wanted.contains(k))
            .collect();
        for key in gone {
            ignore_missing(self.stopped.remove(&key)).map_err(map_err(map_names::STOPPED))?;
        }
        let all: Vec<(RouteKey, RouteTarget)> = routes.iter().chain(stopped).copied().collect();
        for (key, target) in routes {
            self.routes
                .insert(key, target, 0)
                .map_err(map_err(map_names::ROUTES))?;
        }
        let counts = address_counts(&all);
        for (addr, count) in &counts {
            self.addresses
                .insert(addr, count, 0)
                .map_err(map_err(map_names::ADDRESSES))?;
        }
        let wanted: HashSet<&RouteKey> = routes.iter().map(|(key, _)| key).collect();
        let stale: Vec<RouteKey> = self
            .routes
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !wanted.contains(k))
            .collect();
        for key in stale {
            ignore_missing(self.routes.remove(&key)).map_err(map_err(map_names::ROUTES))?;
        }
        let stale: Vec<Addr> = self
            .addresses
            .keys()
            .filter_map(|k| k.ok())
            .filter(|a| !counts.contains_key(a))
            .collect();
        for addr in stale {
            ignore_missing(self.addresses.remove(&addr)).map_err(map_err(map_names::ADDRESSES))?;
        }
        Ok(())
    }

    /// Makes the bandwidth maps hold exactly `ports` (port ifindex, LPAR slot) and `buckets`
    /// (index, bytes per second, burst in ns, shaper in end). A bucket whose rate and burst stay keeps its
    /// meter and its counts; every other index is cleared (not metered).
    pub fn sync_bandwidth(
        &mut self,
        ports: &[(u32, u32)],
        buckets: &[(u32, u64, u64, u32)],
    ) -> Result<()> {
        let wanted: std::collections::HashMap<u32, (u64, u64, u32)> = buckets
            .iter()
            .map(|&(i, rate, burst, shaper)| (i, (rate, burst, shaper)))
            .collect();
        let mut in_use: HashSet<u32> = self
            .bw_ports
            .iter()
            .filter_map(|e| e.ok())
            .map(|(_, s)| s)
            .collect();
        in_use.extend(ports.iter().map(|&(_, slot)| slot));
        let mut indices: Vec<u32> = wanted.keys().copied().collect();
        indices.extend(in_use.iter().flat_map(|s| [2 * s, 2 * s + 1]));
        indices.sort_unstable();
        indices.dedup();
        for index in indices {
            let old = self
                .buckets
                .get(&index, 0)
                .map_err(map_err(map_names::BUCKETS))?;
            let (rate, burst_ns, shaper) = wanted.get(&index).copied().unwrap_or((0, 0, 0));
            let new = if (old.rate, old.burst_ns) == (rate, burst_ns) {
                if old.shaper == shaper {
                    continue;
                }
                Bucket { shaper, ..old }
            } else {
                Bucket {
                    rate,
                    burst_ns,
                    shaper,
                    ..Default::default()
                }
            };
            self.buckets
                .set(index, new, 0)
                .map_err(map_err(map_names::BUCKETS))?;
        }
        for (ifindex, slot) in ports {
            self.bw_ports
                .insert(ifindex, slot, 0)
                .map_err(map_err(map_names::BW_PORTS))?;
        }
        let wanted: HashSet<u32> = ports.iter().map(|&(i, _)| i).collect();
        let gone: Vec<u32> = self
            .bw_ports
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !wanted.contains(k))
            .collect();
        for key in gone {
            ignore_missing(self.bw_ports.remove(&key)).map_err(map_err(map_names::BW_PORTS))?;
        }
        Ok(())
    }

    /// The bandwidth bucket at `index` (see `iqd_common::map_names::BW_PORTS`).
    pub fn bucket(&self, index: u32) -> Result<Bucket> {
        self.buckets
            .get(&index, 0)
            .map_err(map_err(map_names::BUCKETS))
    }

    /// Makes the rule table hold exactly `entries` (new entries first, then the stale ones
    /// go, so a rule that stays allowed never lapses).
    pub fn sync_rules(&mut self, entries: &[((u32, SgKey), SgRanges)]) -> Result<()> {
        for ((prefix_len, data), ranges) in entries {
            self.sg_rules
                .insert(&Key::new(*prefix_len, *data), ranges, 0)
                .map_err(map_err(map_names::SG_RULES))?;
        }
        let wanted: HashSet<(u32, SgKey)> = entries.iter().map(|(key, _)| *key).collect();
        let stale: Vec<Key<SgKey>> = self
            .sg_rules
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !wanted.contains(&(k.prefix_len(), k.data())))
            .collect();
        for key in stale {
            ignore_missing(self.sg_rules.remove(&key)).map_err(map_err(map_names::SG_RULES))?;
        }
        Ok(())
    }

    /// Every tracked connection.
    pub fn connections(&self) -> Vec<(CtKey, CtEntry)> {
        self.conntrack.iter().filter_map(|e| e.ok()).collect()
    }

    /// Removes the tracked connections `keep` refuses; returns how many went.
    pub fn revoke(&mut self, keep: impl Fn(&CtKey, &CtEntry) -> bool) -> Result<u64> {
        let gone: Vec<CtKey> = self
            .connections()
            .into_iter()
            .filter(|(k, e)| !keep(k, e))
            .map(|(k, _)| k)
            .collect();
        for key in &gone {
            ignore_missing(self.conntrack.remove(key)).map_err(map_err(map_names::CONNTRACK))?;
        }
        if !gone.is_empty() {
            let mut values: Vec<u64> = self
                .ct_stats
                .get(&ct_stat::REVOKED, 0)
                .map_err(map_err(map_names::CT_STATS))?
                .iter()
                .copied()
                .collect();
            if let Some(first) = values.first_mut() {
                *first += gone.len() as u64;
            }
            let values =
                PerCpuValues::try_from(values).map_err(|e| Error::io("per-cpu values", "", e))?;
            self.ct_stats
                .set(ct_stat::REVOKED, values, 0)
                .map_err(map_err(map_names::CT_STATS))?;
        }
        Ok(gone.len() as u64)
    }

    pub fn ct_stats(&self) -> Result<CtStats> {
        let sum = |index| per_cpu_total(&self.ct_stats, index, map_names::CT_STATS);
        let entries = self.conntrack.keys().filter(|k| k.is_ok()).count() as u64;
        let (created, revoked) = (sum(ct_stat::CREATED)?, sum(ct_stat::REVOKED)?);
        Ok(CtStats {
            entries,
            capacity: iqd_common::MAX_CONNTRACK as u64,
            created,
            revoked,
            evicted: created.saturating_sub(revoked).saturating_sub(entries),
        })
    }

    /// Every port's counters by ifindex, as [`Self::counters`] gives one's: the counter map is
    /// read in one pass, the switch's counters once per port it serves (a scrape).
    pub fn all_counters(&self) -> Result<std::collections::HashMap<u32, NicCounters>> {
        let mut all = std::collections::HashMap::new();
        for entry in self.counters.iter() {
            let (ifindex, per_cpu) = entry.map_err(map_err(map_names::COUNTERS))?;
            let total: &mut NicCounters = all.entry(ifindex).or_default();
            per_cpu.iter().for_each(|c| total.accumulate(c));
        }
        for (ifindex, slot) in self.xsk_slots() {
            match self.switch_counters.get(&slot, 0) {
                Ok(counters) => all.entry(ifindex).or_default().accumulate(&counters),
                Err(aya::maps::MapError::OutOfBounds { .. }) => {}
                Err(e) => return Err(map_err(map_names::SWITCH_COUNTERS)(e)),
            }
        }
        Ok(all)
    }

    /// A NIC's counters: the kernel's, summed over CPUs, plus the AF_XDP switch's.
    pub fn counters(&self, ifindex: u32) -> Result<NicCounters> {
        let mut total = NicCounters::default();
        match self.counters.get(&ifindex, 0) {
            Ok(per_cpu) => per_cpu.iter().for_each(|c| total.accumulate(c)),
            Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(map_names::COUNTERS)(e)),
        }
        total.accumulate(&self.switch_counters(ifindex)?);
        Ok(total)
    }
}

/// Entry `index` of the per-CPU counter array `map` (named `name`), summed over CPUs.
fn per_cpu_total(map: &PerCpuArray<MapData, u64>, index: u32, name: &str) -> Result<u64> {
    Ok(map.get(&index, 0).map_err(map_err(name))?.iter().sum())
}

/// ADDRESSES entries for a set of routes: in how many segments each address is registered. The
/// kernel side tells `not_member` (registered elsewhere) from `no_destination` with it.
pub fn address_counts(routes: &[(RouteKey, RouteTarget)]) -> std::collections::HashMap<Addr, u32> {
    let mut counts = std::collections::HashMap::new();
    // MACs (layer-2 keys) are no addresses.
    for (key, _) in routes.iter().filter(|(key, _)| !key.is_layer2()) {
        *counts.entry(key.addr).or_default() += 1;
    }
    counts
}

fn ignore_missing(r: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn addresses_count_the_segments_that_register_them() {
        let shared = Ipv4Addr::new(10, 9, 0, 1);
        let routes = [
            (
                RouteKey::new(0xf0, shared.into()),
                RouteTarget::new(3, [2, 0, 0, 0xf0, 0, 1]),
            ),
            (
                RouteKey::new(0xf1, shared.into()),
                RouteTarget::new(4, [2, 0, 0, 0xf1, 0, 1]),
            ),
            // VLAN 100 of F0: another segment of the same CHPID.
            (
                RouteKey::new(0xf0 | 100 << 16, shared.into()),
                RouteTarget::new(6, [2, 0, 0, 0xf0, 0, 3]),
            ),
            (
                RouteKey::new(0xf0, Ipv4Addr::new(10, 0, 0, 2).into()),
                RouteTarget::new(5, [2, 0, 0, 0xf0, 0, 2]),
            ),
        ];
        let counts = address_counts(&routes);
        assert_eq!(counts.len(), 2);
        assert_eq!(counts[&iqd_common::ipv4_mapped([10, 9, 0, 1])], 3);
        assert_eq!(counts[&iqd_common::ipv4_mapped([10, 0, 0, 2])], 1);
    }

    #[test]
    fn pins_live_under_the_fabric_directory() {
        assert_eq!(pin_dir("demo"), Path::new("/sys/fs/bpf/iqd/demo"));
        assert_eq!(
            Side::Port.link_pin(&pin_dir("demo"), "p7000"),
            Path::new("/sys/fs/bpf/iqd/demo/link_p7000")
        );
        assert_eq!(
            Side::Nic.link_pin(&pin_dir("demo"), "p7000"),
            Path::new("/sys/fs/bpf/iqd/demo/link_p7000_nic")
        );
    }
}
