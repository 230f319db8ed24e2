//! The maps, named and typed in `iqd_common`. All are pinned by name under the fabric's pin
//! directory, so a new `iqd up` reuses them and the data plane outlives the loader.
use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{
        Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap,
        PerfEventArray, XskMap,
    },
};
use iqd_common::{
    ct_stat, xsk_stat, Addr, Bucket, CtEntry, CtKey, GroupKey, GroupMembers, NicCounters, PortInfo,
    RouteKey, RouteTarget, SgKey, SgRanges, TraceEvent, TracePort, MAX_BUCKETS, MAX_CONNTRACK,
    MAX_GROUPS, MAX_PORTS, MAX_ROUTES, MAX_SG_ENTRIES, XSK_MAX_QUEUES,
};

#[map(name = "IQD_PORTS")]
pub static IQD_PORTS: HashMap<u32, PortInfo> = HashMap::pinned(MAX_PORTS, 0);

#[map(name = "IQD_ROUTES")]
pub static IQD_ROUTES: HashMap<RouteKey, RouteTarget> = HashMap::pinned(MAX_ROUTES, 0);

#[map(name = "IQD_ADDRESSES")]
pub static IQD_ADDRESSES: HashMap<Addr, u32> = HashMap::pinned(MAX_ROUTES, 0);

#[map(name = "IQD_DEVMAP")]
pub static IQD_DEVMAP: DevMapHash = DevMapHash::pinned(MAX_PORTS, 0);

#[map(name = "IQD_COUNTERS")]
pub static IQD_COUNTERS: PerCpuHashMap<u32, NicCounters> = PerCpuHashMap::pinned(MAX_PORTS, 0);

#[map(name = "IQD_SG_RULES")]
pub static IQD_SG_RULES: LpmTrie<SgKey, SgRanges> = LpmTrie::pinned(MAX_SG_ENTRIES, 0);

#[map(name = "IQD_CONNTRACK")]
pub static IQD_CONNTRACK: LruHashMap<CtKey, CtEntry> = LruHashMap::pinned(MAX_CONNTRACK, 0);

#[map(name = "IQD_CT_STATS")]
pub static IQD_CT_STATS: PerCpuArray<u64> = PerCpuArray::pinned(ct_stat::COUNT, 0);

#[map(name = "IQD_XSK_SLOTS")]
pub static IQD_XSK_SLOTS: HashMap<u32, u32> = HashMap::pinned(MAX_PORTS, 0);

#[map(name = "IQD_XSKMAP")]
pub static IQD_XSKMAP: XskMap = XskMap::pinned(MAX_PORTS * XSK_MAX_QUEUES, 0);

#[map(name = "IQD_XSK_STATS")]
pub static IQD_XSK_STATS: PerCpuArray<u64> = PerCpuArray::pinned(xsk_stat::COUNT, 0);

#[map(name = "IQD_GROUPS")]
pub static IQD_GROUPS: HashMap<GroupKey, GroupMembers> = HashMap::pinned(MAX_GROUPS, 0);

#[map(name = "IQD_GROUP_SCRATCH")]
pub static IQD_GROUP_SCRATCH: PerCpuArray<GroupMembers> = PerCpuArray::pinned(1, 0);

// Never touched by a program: defined here so that every `up` creates and pins it with the
// others. The switch maps it into its memory (hence mmapable) and counts straight into it,
// with no system call per frame and nothing lost if it dies; `iqd stats` reads it.
#[map(name = "IQD_SWITCH_COUNTERS")]
pub static IQD_SWITCH_COUNTERS: Array<NicCounters> = Array::pinned(MAX_PORTS, BPF_F_MMAPABLE);

// Never touched by a program either: the map layout (`iqd_common::LAYOUT_VERSION`) of the iqd
// that wrote the pins, so a later iqd knows what it finds. `iqd up` writes it.
#[map(name = "IQD_LAYOUT")]
pub static IQD_LAYOUT: Array<u32> = Array::pinned(1, 0);

#[map(name = "IQD_STOPPED")]
pub static IQD_STOPPED: HashMap<RouteKey, RouteTarget> = HashMap::pinned(MAX_ROUTES, 0);

#[map(name = "IQD_BW_PORTS")]
pub static IQD_BW_PORTS: HashMap<u32, u32> = HashMap::pinned(MAX_PORTS, 0);

#[map(name = "IQD_BUCKETS")]
pub static IQD_BUCKETS: Array<Bucket> = Array::pinned(MAX_BUCKETS, 0);

// `iqd trace` (trace.rs): empty and off unless a trace runs.
#[map(name = "IQD_TRACE_ON")]
pub static IQD_TRACE_ON: Array<u32> = Array::pinned(1, 0);

#[map(name = "IQD_TRACE_PORTS")]
pub static IQD_TRACE_PORTS: HashMap<u32, TracePort> = HashMap::pinned(MAX_PORTS, 0);

#[map(name = "IQD_TRACE_EVENTS_0")]
pub static IQD_TRACE_EVENTS_0: PerfEventArray<TraceEvent> = PerfEventArray::pinned(0);

#[map(name = "IQD_TRACE_EVENTS_1")]
pub static IQD_TRACE_EVENTS_1: PerfEventArray<TraceEvent> = PerfEventArray::pinned(0);

#[map(name = "IQD_TRACE_EVENTS_2")]
pub static IQD_TRACE_EVENTS_2: PerfEventArray<TraceEvent> = PerfEventArray::pinned(0);

#[map(name = "IQD_TRACE_EVENTS_3")]
pub static IQD_TRACE_EVENTS_3: PerfEventArray<TraceEvent> = PerfEventArray::pinned(0);

#[inline(always)]
pub fn port(ifindex: u32) -> Option<PortInfo> {
    // SAFETY: entries are plain data; a concurrent update can only yield another valid entry.
    unsafe { IQD_PORTS.get(ifindex).copied() }
}

#[inline(always)]
pub fn route(segment: u32, addr: &Addr) -> Option<RouteTarget> {
    let key = RouteKey {
        segment,
        addr: *addr,
    };
    // SAFETY: as in `port`.
    unsafe { IQD_ROUTES.get(key).copied() }
}

/// The NIC that registered `mac` in `segment` (layer-2 forwarding: `iqd_common::mac_key`).
#[inline(always)]
pub fn mac_route(segment: u32, mac: &[u8; 6]) -> Option<RouteTarget> {
    let key = iqd_common::mac_key(segment, *mac);
    // SAFETY: as in `port`.
    unsafe { IQD_ROUTES.get(key).copied() }
}

/// Whether a stopped LPAR's NIC registers `mac` in `segment`.
#[inline(always)]
pub fn mac_stopped(segment: u32, mac: &[u8; 6]) -> bool {
    IQD_STOPPED
        .get_ptr(iqd_common::mac_key(segment, *mac))
        .is_some()
}

/// Whether a stopped LPAR's NIC registers `addr` in `segment`.
#[inline(always)]
pub fn stopped(segment: u32, addr: &Addr) -> bool {
    let key = RouteKey {
        segment,
        addr: *addr,
    };
    IQD_STOPPED.get_ptr(key).is_some()
}

/// Whether any segment registers `addr` (tells `not_member` from `no_destination`).
#[inline(always)]
pub fn registered_anywhere(addr: &Addr) -> bool {
    IQD_ADDRESSES.get_ptr(addr).is_some()
}

/// Paths that do not redirect through the DEVMAP (tc, and afxdp's handing to the switch)
/// check it the same way: it lists the ports that may be delivered to.
#[inline(always)]
pub fn deliverable(ifindex: u32) -> Result<(), crate::DropReason> {
    match IQD_DEVMAP.get(ifindex) {
        Some(_) => Ok(()),
        None => Err(iqd_common::drop_reason::REDIRECT_FAILED),
    }
}
