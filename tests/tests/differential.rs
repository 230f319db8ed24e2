//! Differential test: the real port program (`iqd_port`, through BPF_PROG_TEST_RUN) against
//! the reference model of its policy (`iqd_tests::model`), on generated fabrics and frames.
//!
//! A seeded generator writes several fabric files (CHPIDs, LPARs with one or two NICs and a few
//! addresses each, security groups with random rules of every kind, random group lists, some
//! NICs with `allow_ip_spoofing`, some layer-2 NICs (some without IPv4 addresses) on the same
//! CHPIDs as layer-3 ones, some NICs with `rx_bcast = false`, some LPARs stopped) and, for
//! each, over a thousand frames (from running LPARs' NICs): new TCP, UDP, ICMP and
//! other-protocol flows between random NICs and addresses (registered or not, on the sender's
//! CHPID or another), replies to and continuations of earlier flows (so connection tracking is
//! exercised both ways), odd frames (IPv4 options, first and later fragments, odd TCP flags,
//! ICMP other than echo, padding, large frames) and malformed ones (truncated headers, bad IHL,
//! bad total length, wrong version, other ethertypes, frames above the MFS, ARP variants),
//! and layer-2 frames (any EtherType, ARP included, to registered layer-2 and layer-3 MACs,
//! unknown MACs, the sender's own, broadcast and multicast MACs; IP frames by MAC), besides
//! the layer-3 NICs' frames, ARP requests and solicitations for layer-2 NICs' addresses.
//!
//! The frames run in order through the program, loaded with the maps `iqd up` writes for that
//! fabric (the rule table compiled by `RuleTable::compile`), and through the model, which
//! evaluates the fabric's rules directly. Connection state carries over from frame to frame on
//! both sides. For every frame the verdict (redirect target, ARP reply, drop reason and the NIC
//! that counts it), the frame as the program leaves it and every NIC's counters must agree.
//!
//! The generator is deterministic: `IQD_DIFF_SEED` (decimal or 0x-hex) picks another seed,
//! `IQD_DIFF_RULE_SETS` and `IQD_DIFF_FRAMES` change the amount of work. A disagreement names
//! the seed, the rule set (its fabric file is written to the temporary directory), the frame
//! index, a summary of the frame and both verdicts.
use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use iqd::{config::Fabric, dataplane, secgroup::RuleTable};
use iqd_common::{
    drop_reason, port_flags, route_flags,
    wire::{
        ARP_LEN, ETH_HLEN, ETH_P_ARP, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPV4_HLEN,
        IPV4_MAX_HLEN, IPV6_HLEN, MAX_IPV6_EXT_HEADERS, ND_NEIGHBOR_SOLICIT, TCP_ACK, TCP_FIN,
        TCP_HLEN, TCP_PSH, TCP_RST, TCP_SYN, VLAN_HLEN,
    },
    NicCounters, PortInfo, RouteKey, RouteTarget, NO_VLAN,
};
use iqd_tests::{
    fixture::{FabricFile, Group, Nic, Rule},
    frames::{
        ethernet, ArpFrame, ExtHeader, Ipv4Frame, Ipv6Frame, Mac, BROADCAST, ETH_P_8021AD,
        ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, ETH_P_LOCAL_EXP, L4,
    },
    model::{Model, NicId, Verdict},
    prog_test::{action_name, ifindex, Hook, ProgBench, XDP_DROP, XDP_REDIRECT, XDP_TX},
};

const DEFAULT_SEED: u64 = 0x1d0_5eed;
const DEFAULT_RULE_SETS: usize = 8;
const DEFAULT_FRAMES: usize = 2500;

/// Nobody's MAC.
const MAC_STRANGER: Mac = [0x02, 0x99, 0x99, 0x99, 0x99, 0x99];

/// Group MACs besides the broadcast MAC: IPv4 multicast (224.0.0.1), IPv6 multicast (all
/// nodes), and another with the group bit.
const GROUP_MACS: [Mac; 3] = [
    [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01],
    [0x33, 0x33, 0x00, 0x00, 0x00, 0x01],
    [0x03, 0x00, 0x00, 0x00, 0x00, 0x07],
];

/// EtherTypes of layer-2 NICs' frames that are neither IP nor ARP: a local experimental one,
/// others (IPX, LLDP, a private one) and 802.3 length fields.
const OTHER_ETHER_TYPES: [u16; 5] = [ETH_P_LOCAL_EXP, 0x8137, 0x88cc, 0x9000, 0x0100];

// ---------------------------------------------------------------------------------------------
// A small deterministic PRNG (SplitMix64).

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// A number in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.index(items.len())].clone()
    }

    /// An index drawn with the given weights.
    fn weighted(&mut self, weights: &[u64]) -> usize {
        let mut n = self.below(weights.iter().sum());
        for (i, w) in weights.iter().enumerate() {
            if n < *w {
                return i;
            }
            n -= w;
        }
        unreachable!("weights sum")
    }

    fn u8(&mut self) -> u8 {
        self.next_u64() as u8
    }

    fn u16(&mut self) -> u16 {
        self.next_u64() as u16
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.u8()).collect()
    }
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={text:?} is not a number")))
}

// ---------------------------------------------------------------------------------------------
// Fabric files.

/// Ports that rules name and frames use, so that both meet often.
const PORTS: [u16; 12] = [1, 7, 22, 53, 80, 443, 1024, 5201, 5432, 8080, 40000, 65535];
const ICMP_TYPES: [u8; 8] = [0, 3, 5, 8, 11, 13, 14, 254];
/// Echo reply and request come up most in rules.
const RULE_ICMP_TYPES: [u8; 9] = [0, 0, 0, 3, 8, 8, 11, 13, 254];
const OTHER_PROTOCOLS: [u8; 9] = [0, 2, 4, 41, 47, 50, 89, 132, 253];
/// ICMPv6 types rules name: errors, echo, ND (which the fabric never forwards), MLD.
const RULE_ICMPV6_TYPES: [u8; 9] = [1, 1, 3, 128, 128, 129, 135, 143, 254];

/// The subnet of the `c`-th CHPID: 10.(c+1).0.0/24. Addresses 10.99.0.x may be registered on
/// several CHPIDs at once.
fn chpid_addr(c: usize, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, c as u8 + 1, 0, host)
}

fn shared_addr(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, 0, host)
}

/// Addresses frames and rules use besides the registered ones: unregistered ones in each
/// subnet, nobody's, broadcast, multicast, loopback, unspecified.
fn extra_addresses(chpids: usize) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    for c in 0..chpids {
        out.push(chpid_addr(c, 200 + c as u8));
        out.push(chpid_addr(c, 255));
    }
    out.extend([
        shared_addr(9),
        Ipv4Addr::new(192, 0, 2, 7),
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(224, 0, 0, 5),
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::UNSPECIFIED,
    ]);
    out
}

/// The IPv6 subnet of the `c`-th CHPID: fd00:(c+1)::/64.
fn chpid_addr6(c: usize, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, c as u16 + 1, 0, 0, 0, 0, 0, host)
}

/// IPv6 addresses frames and rules use besides the registered ones: unregistered ones, nobody's
/// link-local, multicast (all nodes, a solicited-node group), loopback, unspecified, and an
/// IPv4-mapped one (which the data plane keys like the IPv4 address).
fn extra_addresses6(chpids: usize) -> Vec<Ipv6Addr> {
    let mut out: Vec<Ipv6Addr> = (0..chpids).map(|c| chpid_addr6(c, 0xee)).collect();
    out.extend([
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7),
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xdead),
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 1),
        Ipv6Addr::LOCALHOST,
        Ipv6Addr::UNSPECIFIED,
        chpid_addr(0, 1).to_ipv6_mapped(),
    ]);
    out
}

/// A random fabric file: 2-3 segments (each its own CHPID, or half the fabrics two segments
/// per CHPID: its untagged NICs and a VLAN), 4-8 LPARs with one or two NICs, 2-5 security
/// groups (sometimes a written `default`), random rules and group lists.
fn fabric_file(rng: &mut Rng) -> FabricFile {
    // `chpids` counts segments: the generator's LANs, each with its own address plan.
    let chpids = rng.between(2, 3) as usize;
    let vlans = rng.percent(50);
    // Segment `c`: CHPID F{c}, or with VLANs F{c / 2}, untagged or in VLAN 100 + c.
    let segment = |c: usize| -> (usize, Option<u16>) {
        if vlans {
            (c / 2, (c % 2 == 1).then_some(100 + c as u16))
        } else {
            (c, None)
        }
    };
    // Half the fabrics give every segment the same address plan (tenants on separate LANs).
    let one_plan = rng.percent(50);
    let mut file = FabricFile::new("diff");
    for c in 0..=segment(chpids - 1).0 {
        let mfs = rng.pick(&["16K", "24K", "40K", "64K"]);
        file = file.chpid_mfs(&format!("F{c}"), mfs);
    }

    let groups: Vec<String> = (0..rng.between(2, 5)).map(|g| format!("g{g}")).collect();
    let mut group_choices = groups.clone();
    group_choices.push("default".into());

    // NICs first: rules name their addresses.
    let mut lpars: Vec<Vec<Nic>> = Vec::new();
    let mut taken: Vec<(usize, Ipv4Addr)> = Vec::new();
    let mut taken6: Vec<(usize, Ipv6Addr)> = Vec::new();
    for _ in 0..rng.between(4, 8) {
        let count = if rng.percent(30) { 2 } else { 1 };
        let first = rng.index(chpids);
        let mut nics = Vec::new();
        for k in 0..count {
            let chpid = (first + k) % chpids;
            let plan = if one_plan { 0 } else { chpid };
            // A third of the NICs are layer-2 NICs; a few of those have no IPv4 address
            // (only their link-local address, and IPv6 ones half the time).
            let layer2 = rng.percent(33);
            let no_ipv4 = layer2 && rng.percent(20);
            let mut addrs = Vec::new();
            for _ in 0..if no_ipv4 { 0 } else { rng.between(1, 3) } {
                let addr = if rng.percent(15) {
                    shared_addr(rng.between(1, 4) as u8)
                } else if one_plan {
                    // Few hosts, so the CHPIDs' NICs often hold the same addresses.
                    chpid_addr(plan, rng.between(1, 12) as u8)
                } else {
                    chpid_addr(plan, rng.between(1, 40) as u8)
                };
                if !taken.contains(&(chpid, addr)) {
                    taken.push((chpid, addr));
                    addrs.push(addr);
                }
            }
            if addrs.is_empty() && !no_ipv4 {
                // Unique by construction: a host number no other NIC gets.
                let addr = chpid_addr(plan, 100 + taken.len() as u8);
                taken.push((chpid, addr));
                addrs.push(addr);
            }
            let groups = (!rng.percent(30)).then(|| {
                let mut list: Vec<String> = Vec::new();
                for _ in 0..rng.between(1, 3) {
                    let g = rng.pick(&group_choices);
                    if !list.contains(&g) {
                        list.push(g);
                    }
                }
                list
            });
            let (on, vlan) = segment(chpid);
            let mut nic = Nic::new(&format!("F{on}"), addrs.iter().map(|a| format!("{a}/24")));
            if let Some(vlan) = vlan {
                nic = nic.vlan(vlan);
            }
            // Half the NICs are dual-stack (every NIC has its link-local address anyway).
            if rng.percent(50) {
                let mut v6 = Vec::new();
                for _ in 0..rng.between(1, 2) {
                    let host = rng.between(1, if one_plan { 12 } else { 40 }) as u16;
                    let addr = chpid_addr6(plan, host);
                    if !taken6.contains(&(chpid, addr)) {
                        taken6.push((chpid, addr));
                        v6.push(addr);
                    }
                }
                if !v6.is_empty() {
                    nic = nic.ipv6(v6.iter().map(|a| format!("{a}/64")));
                }
            }
            if let Some(groups) = groups {
                nic = nic.groups(groups);
            }
            if rng.percent(20) {
                nic = nic.allow_ip_spoofing();
            }
            if layer2 {
                nic = nic.layer2();
            }
            if rng.percent(10) {
                nic = nic.no_broadcasts();
            }
            nics.push(nic);
        }
        lpars.push(nics);
    }

    let mut addresses: Vec<IpAddr> = taken.iter().map(|(_, a)| IpAddr::V4(*a)).collect();
    addresses.extend(extra_addresses(chpids).into_iter().map(IpAddr::V4));
    addresses.extend(taken6.iter().map(|(_, a)| IpAddr::V6(*a)));
    addresses.extend(extra_addresses6(chpids).into_iter().map(IpAddr::V6));
    let mut written = groups.clone();
    if rng.percent(25) {
        written.push("default".into());
    }
    for name in &written {
        let rules: Vec<Rule> = (0..rng.between(0, 10))
            .map(|_| rule(rng, &group_choices, &addresses))
            .collect();
        file = file.group(Group::new(name, rules));
    }

    for (l, nics) in lpars.into_iter().enumerate() {
        file = file.lpar(&format!("L{l}"), &format!("dl{l}"), nics);
    }
    file
}

/// One random rule.
fn rule(rng: &mut Rng, groups: &[String], addresses: &[IpAddr]) -> Rule {
    let direction = rng.pick(&["inbound", "outbound"]);
    let protocol = rng.pick(&["all", "tcp", "udp", "icmp", "icmpv6"]);
    let mut rule = Rule::new(direction, protocol);
    match protocol {
        "tcp" | "udp" if rng.percent(70) => {
            let lo = if rng.percent(80) {
                rng.pick(&PORTS)
            } else {
                rng.between(1, 65535) as u16
            };
            let width = rng.pick(&[0u32, 0, 1, 10, 100, 1000, 65535]);
            let hi = (u32::from(lo) + width).min(65535);
            rule = rule.ports(lo, hi as u16);
        }
        "icmp" | "icmpv6" if rng.percent(70) => {
            let icmp_type = if rng.percent(85) {
                if protocol == "icmp" {
                    rng.pick(&RULE_ICMP_TYPES)
                } else {
                    rng.pick(&RULE_ICMPV6_TYPES)
                }
            } else {
                rng.between(0, 254) as u8
            };
            rule = rule.icmp_type(icmp_type);
            if rng.percent(50) {
                rule = rule.icmp_code(rng.pick(&[0u8, 0, 1, 3, 255]));
            }
        }
        _ => {}
    }
    match rng.weighted(&[40, 35, 25]) {
        0 => {}
        1 => match rng.pick(addresses) {
            IpAddr::V4(addr) => {
                let addr = u32::from(addr);
                let prefix = rng.pick(&[32u32, 32, 31, 30, 28, 24, 24, 16, 8, 0]);
                let mask = if prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - prefix)
                };
                rule = rule.remote(format!("{}/{prefix}", Ipv4Addr::from(addr & mask)));
            }
            IpAddr::V6(addr) => {
                let addr = u128::from(addr);
                let prefix = rng.pick(&[128u32, 128, 127, 120, 64, 64, 48, 10, 0]);
                let mask = if prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - prefix)
                };
                rule = rule.remote(format!("{}/{prefix}", Ipv6Addr::from(addr & mask)));
            }
        },
        _ => rule = rule.remote_group(&rng.pick(groups)),
    }
    rule
}

// ---------------------------------------------------------------------------------------------
// Frames.

/// What a flow carries, to build its later frames (replies, continuations) from.
#[derive(Clone, Copy, Debug)]
enum FlowKind {
    Tcp { sport: u16, dport: u16 },
    Udp { sport: u16, dport: u16 },
    Echo { id: u16 },
    Icmp { icmp_type: u8, code: u8 },
    Other { proto: u8 },
}

/// A frame's flow as the generator built it.
#[derive(Clone, Copy, Debug)]
struct Flow {
    from: NicId,
    /// Both of one family.
    src: IpAddr,
    dst: IpAddr,
    kind: FlowKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    New,
    Reply,
    Continue,
    /// An earlier flow's exact tuple, sent from a NIC on another CHPID that holds the same
    /// source address: separate LANs with one address plan must not share connection state.
    Twin,
}

/// A generated frame.
struct Generated {
    ingress: NicId,
    frame: Vec<u8>,
    /// How it was made ("reply to #12, later fragment", ...).
    note: String,
    /// The flow it belongs to, when it is a well-formed IPv4 frame worth following up.
    flow: Option<Flow>,
}

struct Generator {
    rng: Rng,
    /// Addresses of both families (IPv4 and IPv6).
    addresses: Vec<IpAddr>,
    /// Destination ports worth trying: the rules' boundaries and their neighbours.
    ports: Vec<u16>,
    /// Flows of earlier frames, with the index of their frame.
    history: Vec<(usize, Flow)>,
}

impl Generator {
    fn new(rng: Rng, fabric: &Fabric, model: &Model) -> Self {
        let chpids = fabric.chpids.len();
        let mut addresses: Vec<IpAddr> =
            model.nics().iter().flat_map(|n| n.addrs.clone()).collect();
        addresses.extend(extra_addresses(chpids).into_iter().map(IpAddr::V4));
        addresses.extend(extra_addresses6(chpids).into_iter().map(IpAddr::V6));
        let mut ports: Vec<u16> = PORTS.to_vec();
        for group in &fabric.security_groups {
            for rule in &group.rules {
                if let Some((lo, hi)) = rule.ports {
                    ports.extend([lo.saturating_sub(1), lo, hi, hi.saturating_add(1)]);
                }
            }
        }
        ports.sort();
        ports.dedup();
        Generator {
            rng,
            addresses,
            ports,
            history: Vec::new(),
        }
    }

    fn port(&mut self) -> u16 {
        if self.rng.percent(70) {
            self.rng.pick(&self.ports)
        } else {
            self.rng.u16()
        }
    }

    /// A NIC to send from: one of a running LPAR (a stopped LPAR's NIC has no carrier), or
    /// any if all are stopped.
    fn sender(&mut self, model: &Model) -> NicId {
        let running: Vec<NicId> = (0..model.nics().len())
            .map(NicId)
            .filter(|n| !model.is_stopped(*n))
            .collect();
        if running.is_empty() {
            NicId(self.rng.index(model.nics().len()))
        } else {
            self.rng.pick(&running)
        }
    }

    fn other_nic(&mut self, model: &Model, not: NicId) -> NicId {
        let n = model.nics().len();
        let other = NicId((not.0 + 1 + self.rng.index(n - 1)) % n);
        debug_assert_ne!(other, not);
        other
    }

    fn next(&mut self, model: &Model) -> Generated {
        match self.rng.weighted(&[40, 25, 10, 9, 3, 8, 7, 8]) {
            0 => self.ipv4(model, Role::New),
            1 => self.ipv4(model, Role::Reply),
            2 => self.ipv4(model, Role::Continue),
            3 => self.arp(model),
            5 => self.ipv4(model, Role::Twin),
            6 => self.nd(model),
            7 => self.layer2(model),
            _ => self.non_ip(model),
        }
    }

    /// Remembers a frame's flow once the model has judged it.
    fn record(&mut self, index: usize, flow: Flow) {
        self.history.push((index, flow));
    }

    /// A flow from a random NIC: mostly from its own address to another NIC's address on its
    /// CHPID, sometimes from or to anywhere.
    fn new_flow(&mut self, model: &Model) -> Flow {
        let from = self.sender(model);
        let nic = model.nic(from);
        // A third of the flows are IPv6 (every NIC has at least its link-local address).
        let v6 = self.rng.percent(33);
        let family = |a: &IpAddr| a.is_ipv6() == v6;
        let own: Vec<IpAddr> = nic.addrs.iter().copied().filter(family).collect();
        let anywhere: Vec<IpAddr> = self.addresses.iter().copied().filter(family).collect();
        // A layer-2 NIC may have no IPv4 address.
        let src = if self.rng.percent(88) && !own.is_empty() {
            self.rng.pick(&own)
        } else {
            self.rng.pick(&anywhere)
        };
        // Mostly NICs of the sender's mode (layer 2 or 3), which it can reach; the others'
        // addresses are `layer_mismatch` for a layer-3 sender.
        let same_mode = self.rng.percent(80);
        let peers: Vec<IpAddr> = model
            .nics()
            .iter()
            .enumerate()
            .filter(|(i, n)| *i != from.0 && n.segment == nic.segment)
            .filter(|(_, n)| !same_mode || n.layer2 == nic.layer2)
            .flat_map(|(_, n)| n.addrs.clone())
            .filter(family)
            .collect();
        let dst = match self.rng.below(10) {
            0..=6 if !peers.is_empty() => self.rng.pick(&peers),
            7 if !own.is_empty() => self.rng.pick(&own),
            _ => self.rng.pick(&anywhere),
        };
        let kind = match self.rng.weighted(&[35, 25, 25, 15]) {
            0 => FlowKind::Tcp {
                sport: self.rng.between(1024, 65535) as u16,
                dport: self.port(),
            },
            1 => FlowKind::Udp {
                sport: self.rng.between(1024, 65535) as u16,
                dport: self.port(),
            },
            2 if self.rng.percent(70) => FlowKind::Echo { id: self.rng.u16() },
            2 => FlowKind::Icmp {
                icmp_type: if self.rng.percent(80) {
                    self.rng.pick(&ICMP_TYPES)
                } else {
                    self.rng.u8()
                },
                code: self.rng.pick(&[0, 0, 1, 3, 255]),
            },
            _ => FlowKind::Other {
                proto: self.rng.pick(&OTHER_PROTOCOLS),
            },
        };
        Flow {
            from,
            src,
            dst,
            kind,
        }
    }

    /// A NIC in another segment than `flow`'s sender that registered its source address.
    fn twin(&mut self, model: &Model, flow: Flow) -> Option<NicId> {
        let own = model.nic(flow.from).segment;
        let twins: Vec<NicId> = model
            .nics()
            .iter()
            .enumerate()
            .filter(|(_, n)| n.segment != own && n.addrs.contains(&flow.src))
            .map(|(i, _)| NicId(i))
            .collect();
        (!twins.is_empty()).then(|| self.rng.pick(&twins))
    }

    /// The transport part of a frame of `flow` in `role`.
    fn l4(&mut self, kind: FlowKind, role: Role) -> L4 {
        let data_len = if self.rng.percent(70) {
            self.rng.index(24)
        } else {
            self.rng.index(400)
        };
        let data = self.rng.bytes(data_len);
        match kind {
            FlowKind::Tcp { sport, dport } => {
                let flags = match role {
                    Role::New | Role::Twin if self.rng.percent(85) => TCP_SYN,
                    Role::New | Role::Twin => self.rng.u8(),
                    Role::Reply => self.rng.pick(&[
                        TCP_SYN | TCP_ACK,
                        TCP_SYN | TCP_ACK,
                        TCP_ACK,
                        TCP_PSH | TCP_ACK,
                        TCP_FIN | TCP_ACK,
                        TCP_RST,
                        TCP_RST | TCP_ACK,
                    ]),
                    Role::Continue => self.rng.pick(&[
                        TCP_ACK,
                        TCP_PSH | TCP_ACK,
                        TCP_PSH | TCP_ACK,
                        TCP_FIN | TCP_ACK,
                        TCP_RST,
                    ]),
                };
                L4::Tcp {
                    src_port: sport,
                    dst_port: dport,
                    seq: self.rng.next_u64() as u32,
                    ack: self.rng.next_u64() as u32,
                    flags,
                    data,
                }
            }
            FlowKind::Udp { sport, dport } => L4::Udp {
                src_port: sport,
                dst_port: dport,
                data,
            },
            FlowKind::Echo { id } => {
                let icmp_type = match role {
                    Role::Reply if self.rng.percent(85) => 0,
                    _ => 8,
                };
                let mut rest = [0u8; 4];
                rest[..2].copy_from_slice(&id.to_be_bytes());
                rest[2..].copy_from_slice(&self.rng.u16().to_be_bytes());
                let code = if self.rng.percent(95) { 0 } else { 1 };
                L4::Icmp {
                    icmp_type,
                    code,
                    rest,
                    data,
                }
            }
            FlowKind::Icmp { icmp_type, code } => L4::Icmp {
                icmp_type,
                code,
                rest: [0; 4],
                // An ICMP error quotes the start of a packet.
                data: self.rng.bytes(28),
            },
            FlowKind::Other { proto } => L4::Raw {
                protocol: proto,
                data,
            },
        }
    }

    /// An IPv4 frame: a new flow, a reply to an earlier one (from the NIC that received it) or
    /// a continuation; most are well-formed, some odd, a few malformed.
    fn ipv4(&mut self, model: &Model, role: Role) -> Generated {
        let earlier = if self.history.is_empty() {
            None
        } else {
            // Mostly recent flows, so replies follow their requests closely.
            let n = self.history.len();
            let back = if self.rng.percent(70) {
                self.rng.index(n.min(20))
            } else {
                self.rng.index(n)
            };
            Some(self.history[n - 1 - back])
        };
        let (flow, mut note) = match (role, earlier) {
            (Role::Reply, Some((index, f))) => {
                // The reply comes from whoever holds the destination in the sender's segment.
                let segment = model.nic(f.from).segment;
                let from = model
                    .route(segment, f.dst)
                    .unwrap_or_else(|| self.other_nic(model, f.from));
                let kind = match f.kind {
                    FlowKind::Tcp { sport, dport } => FlowKind::Tcp {
                        sport: dport,
                        dport: sport,
                    },
                    FlowKind::Udp { sport, dport } => FlowKind::Udp {
                        sport: dport,
                        dport: sport,
                    },
                    kind => kind,
                };
                let flow = Flow {
                    from,
                    src: f.dst,
                    dst: f.src,
                    kind,
                };
                (flow, format!("reply to #{index}"))
            }
            (Role::Continue, Some((index, f))) => (f, format!("continues #{index}")),
            (Role::Twin, Some((index, f))) => match self.twin(model, f) {
                Some(from) => (Flow { from, ..f }, format!("twin of #{index}")),
                None => (self.new_flow(model), "new flow".to_string()),
            },
            _ => (self.new_flow(model), "new flow".to_string()),
        };
        let role = match role {
            _ if note == "new flow" => Role::New,
            Role::Twin => Role::New,
            role => role,
        };
        let nic = model.nic(flow.from);
        let src_mac = match self.rng.below(100) {
            0..=95 => nic.mac,
            96..=97 => MAC_STRANGER,
            _ => model.nic(self.other_nic(model, flow.from)).mac,
        };
        // Layer 3 ignores the destination MAC; layer 2 goes by it.
        let dst_mac = match model.route(nic.segment, flow.dst) {
            _ if nic.layer2 && self.rng.percent(25) => self.layer2_dst_mac(model, flow.from),
            Some(to) if self.rng.percent(70) => model.nic(to).mac,
            _ => self.rng.pick(&[BROADCAST, MAC_STRANGER, nic.mac]),
        };
        let l4 = self.l4(flow.kind, role);
        let (src, dst) = match (flow.src, flow.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => (src, dst),
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                return self.ipv6(model, flow, src, dst, src_mac, dst_mac, l4, note)
            }
            _ => unreachable!("a flow's addresses are of one family"),
        };
        let mut packet = Ipv4Frame::new(src_mac, dst_mac, src, dst, l4);
        packet.id = self.rng.u16();
        if self.rng.percent(40) {
            packet.frag_off = 0;
        }
        let mut follow = true;

        // Odd but well-formed.
        if self.rng.percent(22) {
            match self.rng.weighted(&[3, 2, 4, 2, 1, 2, 1]) {
                0 => {
                    packet.ihl = self.rng.between(6, 15) as u8;
                    note += ", IPv4 options";
                }
                1 => {
                    packet.frag_off = 0x2000;
                    note += ", first fragment";
                }
                2 => {
                    let more = if self.rng.percent(50) { 0x2000 } else { 0 };
                    packet.frag_off = more | self.rng.between(1, 0x1fff) as u16;
                    note += ", later fragment";
                    follow = false;
                }
                3 => {
                    packet.pad_to = Some(self.rng.between(60, 200) as usize);
                    note += ", padded";
                }
                4 => {
                    let mtu = nic.mtu as usize;
                    let len = match self.rng.below(3) {
                        0 => mtu + ETH_HLEN,
                        1 => self.rng.between(1000, 1514) as usize,
                        _ => self.rng.between(1514, (mtu + ETH_HLEN) as u64) as usize,
                    };
                    packet = packet.with_frame_len(len);
                    note += ", large";
                }
                5 => {
                    if let L4::Tcp { flags, .. } = &mut packet.l4 {
                        *flags = self.rng.u8();
                        note += ", odd TCP flags";
                    }
                }
                _ => {
                    packet.ttl = self.rng.pick(&[0, 1, 255]);
                    packet.checksum = Some(self.rng.u16());
                    note += ", odd TTL and header checksum";
                }
            }
        }

        // Malformed (or at least refused as such).
        let mut cut = None;
        if self.rng.percent(12) {
            follow = false;
            let full = packet.build().len();
            let headers = ETH_HLEN + packet.header_len() + TCP_HLEN;
            match self.rng.below(8) {
                0 => {
                    let at = self
                        .rng
                        .between(ETH_HLEN as u64, headers.min(full - 1) as u64)
                        as usize;
                    cut = Some(at);
                    note += &format!(", cut to {at} bytes");
                }
                1 => {
                    packet.ihl = self.rng.between(0, 4) as u8;
                    note += ", IHL below 5";
                }
                2 => {
                    packet.ihl = 15;
                    packet.total_len = Some(self.rng.between(20, 59) as u16);
                    packet.pad_to = Some(full.max(ETH_HLEN + IPV4_MAX_HLEN + TCP_HLEN));
                    note += ", IHL 15 beyond the total length";
                }
                3 => {
                    let tot = full - ETH_HLEN;
                    packet.total_len = Some((tot + self.rng.between(1, 64) as usize) as u16);
                    note += ", total length beyond the frame";
                }
                4 => {
                    // The transport header (partly) outside the packet, in the padding.
                    let ihl = packet.header_len();
                    packet.total_len = Some((ihl + self.rng.index(20)) as u16);
                    note += ", total length ends inside the transport header";
                }
                5 => {
                    packet.version = self.rng.pick(&[0, 5, 6, 15]);
                    note += ", IP version not 4";
                }
                6 => {
                    let ihl = packet.header_len();
                    packet.total_len = Some(self.rng.between(0, ihl as u64 - 1) as u16);
                    note += ", total length below the header length";
                }
                _ => {
                    let len = nic.mtu as usize + ETH_HLEN + self.rng.between(1, 64) as usize;
                    packet = packet.with_frame_len(len);
                    note += ", above the MFS";
                }
            }
        }
        let mut frame = packet.build();
        if let Some(at) = cut {
            frame.truncate(at);
        }
        Generated {
            ingress: flow.from,
            frame,
            note,
            flow: follow.then_some(flow),
        }
    }

    /// An ARP frame: mostly requests, with spoofed fields, other operations and broken headers.
    fn arp(&mut self, model: &Model) -> Generated {
        let from = self.sender(model);
        let nic = model.nic(from);
        let own: Vec<Ipv4Addr> = nic.addrs.iter().filter_map(|a| v4(*a)).collect();
        let anywhere: Vec<Ipv4Addr> = self.addresses.iter().filter_map(|a| v4(*a)).collect();
        let spa = match self.rng.below(10) {
            0..=6 if !own.is_empty() => self.rng.pick(&own),
            7 => Ipv4Addr::UNSPECIFIED,
            _ => self.rng.pick(&anywhere),
        };
        let tpa = self.rng.pick(&anywhere);
        let mut arp = ArpFrame::request(nic.mac, spa, tpa);
        let mut note = String::from("ARP");
        let mut cut = None;
        match self.rng.below(14) {
            0 => {
                arp.oper = self.rng.pick(&[2, 3, 4, 0]);
                note += ", not a request";
            }
            1 => {
                arp.eth_src = MAC_STRANGER;
                note += ", foreign Ethernet source";
            }
            2 => {
                arp.sha = model.nic(self.other_nic(model, from)).mac;
                note += ", foreign sender MAC";
            }
            3 => {
                match self.rng.below(4) {
                    0 => arp.htype = 6,
                    1 => arp.ptype = ETH_P_IPV6,
                    2 => arp.hlen = 8,
                    _ => arp.plen = 16,
                }
                note += ", not Ethernet/IPv4";
            }
            4 => {
                cut = Some(
                    self.rng
                        .between(ETH_HLEN as u64, (ETH_HLEN + ARP_LEN - 1) as u64)
                        as usize,
                );
                note += ", cut short";
            }
            5 | 6 => {
                arp.pad_to = Some(60);
                note += ", padded";
            }
            7 => {
                arp.eth_dst = model.nic(self.other_nic(model, from)).mac;
                arp.tha = MAC_STRANGER;
                note += ", unicast with a stale target MAC";
            }
            _ => {}
        }
        let mut frame = arp.build();
        if let Some(at) = cut {
            frame.truncate(at);
        }
        Generated {
            ingress: from,
            frame,
            note,
            flow: None,
        }
    }

    /// An IPv6 frame of `flow` (from `src` to `dst`), the counterpart of the IPv4 frames:
    /// mostly well-formed, some with extension headers, fragment headers or padding, a few
    /// malformed (cut, lengths beyond the frame, the wrong version, too many or truncated
    /// extension headers, above the MFS).
    #[allow(clippy::too_many_arguments)]
    fn ipv6(
        &mut self,
        model: &Model,
        flow: Flow,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        src_mac: Mac,
        dst_mac: Mac,
        l4: L4,
        mut note: String,
    ) -> Generated {
        let nic = model.nic(flow.from);
        let mut packet = Ipv6Frame::new(src_mac, dst_mac, src, dst, icmpv6(l4));
        let mut follow = true;
        if self.rng.percent(25) {
            match self.rng.below(5) {
                0 => {
                    for _ in 0..self.rng.between(1, 3) {
                        let len = self.rng.between(0, 2) as u8;
                        packet = packet.with_ext(match self.rng.below(3) {
                            0 => ExtHeader::HopByHop { len },
                            1 => ExtHeader::DestOpts { len },
                            _ => ExtHeader::Routing { len },
                        });
                    }
                    note += ", extension headers";
                }
                1 => {
                    packet = packet.with_ext(ExtHeader::Fragment {
                        offset: 0,
                        more: true,
                    });
                    note += ", first fragment";
                }
                2 => {
                    packet = packet.with_ext(ExtHeader::Fragment {
                        offset: self.rng.between(1, 0x1fff) as u16,
                        more: self.rng.percent(50),
                    });
                    follow = false;
                    note += ", later fragment";
                }
                3 => {
                    packet.pad_to = Some(self.rng.between(60, 200) as usize);
                    note += ", padded";
                }
                _ => {
                    let headers = packet.build().len();
                    let limit = nic.mtu as usize + ETH_HLEN;
                    if headers < limit {
                        let len = self.rng.between(headers as u64, limit as u64) as usize;
                        packet = packet.with_frame_len(len);
                        note += ", large";
                    }
                }
            }
        }
        let mut cut = false;
        if self.rng.percent(12) {
            follow = false;
            let true_len = (packet.packet().len() - IPV6_HLEN) as i64;
            match self.rng.below(7) {
                0 => cut = true,
                1 => {
                    let beyond = true_len + self.rng.between(1, 64) as i64;
                    packet.payload_len = Some(beyond.min(0xffff) as u16);
                    note += ", payload length beyond the frame";
                }
                2 => {
                    packet.version = self.rng.pick(&[0, 4, 5, 15]);
                    note += ", IP version not 6";
                }
                3 => {
                    packet.ext = vec![ExtHeader::DestOpts { len: 0 }; MAX_IPV6_EXT_HEADERS + 1];
                    note += ", too many extension headers";
                }
                4 => {
                    packet = packet.with_ext(ExtHeader::HopByHop { len: 255 });
                    note += ", extension header beyond the packet";
                }
                5 => {
                    // The packet ends inside the transport header; the rest is padding.
                    let shorter = self.rng.between(1, true_len.max(1) as u64) as i64;
                    packet.payload_len = Some((true_len - shorter).max(0) as u16);
                    note += ", payload length ends inside the transport header";
                }
                _ => {
                    let len = nic.mtu as usize + ETH_HLEN + self.rng.between(1, 64) as usize;
                    packet = packet.with_frame_len(len);
                    note += ", above the MFS";
                }
            }
        }
        let mut frame = packet.build();
        if cut {
            let at = self.rng.between(
                ETH_HLEN as u64,
                (frame.len() - 1).min(ETH_HLEN + IPV6_HLEN + 28) as u64,
            ) as usize;
            frame.truncate(at);
            note += &format!(", cut to {at} bytes");
        }
        Generated {
            ingress: flow.from,
            frame,
            note,
            flow: follow.then_some(flow),
        }
    }

    /// IPv6 neighbour discovery: mostly solicitations (for addresses on the sender's CHPID, its
    /// own, another CHPID's, nobody's; from its addresses, the unspecified address or another),
    /// the other ND messages, and a few broken ones.
    fn nd(&mut self, model: &Model) -> Generated {
        let from = self.sender(model);
        let nic = model.nic(from);
        let own: Vec<Ipv6Addr> = nic.addrs.iter().filter_map(|a| v6(*a)).collect();
        let anywhere: Vec<Ipv6Addr> = self.addresses.iter().filter_map(|a| v6(*a)).collect();
        let same_chpid: Vec<Ipv6Addr> = model
            .nics()
            .iter()
            .enumerate()
            .filter(|(i, n)| *i != from.0 && n.segment == nic.segment)
            .flat_map(|(_, n)| n.addrs.iter().filter_map(|a| v6(*a)))
            .collect();
        let src = match self.rng.below(10) {
            0..=6 => self.rng.pick(&own),
            7 => Ipv6Addr::UNSPECIFIED,
            _ => self.rng.pick(&anywhere),
        };
        let target = match self.rng.below(10) {
            0..=4 if !same_chpid.is_empty() => self.rng.pick(&same_chpid),
            5 => self.rng.pick(&own),
            _ => self.rng.pick(&anywhere),
        };
        let mut packet = Ipv6Frame::neighbor_solicitation(nic.mac, src, target);
        let icmp_type = if self.rng.percent(80) {
            ND_NEIGHBOR_SOLICIT
        } else {
            self.rng.pick(&[133u8, 134, 136, 137])
        };
        if let L4::Icmp {
            icmp_type: t, data, ..
        } = &mut packet.l4
        {
            *t = icmp_type;
            // The source link-layer option (present unless the source is `::`) half the time.
            if self.rng.percent(50) {
                data.truncate(16);
            }
        }
        let mut note = format!("ND type {icmp_type} for {target}");
        // A layer-2 NIC's neighbour discovery is its own: unicast ones go by MAC.
        if nic.layer2 && self.rng.percent(40) {
            packet.dst_mac = self.layer2_dst_mac(model, from);
            note += ", to a unicast MAC";
        }
        match self.rng.below(20) {
            0 => {
                // The message (8-byte header and target) cut to 8..23 bytes.
                if let L4::Icmp { data, .. } = &mut packet.l4 {
                    data.truncate(self.rng.between(0, 15) as usize);
                }
                note += ", message cut short";
            }
            1 => {
                packet.src_mac = MAC_STRANGER;
                note += ", foreign Ethernet source";
            }
            2 => {
                packet = packet.with_ext(ExtHeader::HopByHop { len: 0 });
                note += ", after a hop-by-hop header";
            }
            _ => {}
        }
        Generated {
            ingress: from,
            frame: packet.build(),
            note,
            flow: None,
        }
    }

    /// A destination MAC for a layer-2 NIC's frame: another layer-2 NIC's of its segment
    /// (mostly), a layer-3 NIC's of its segment, its own, nobody's, a NIC's of another segment,
    /// the broadcast MAC or another group MAC.
    fn layer2_dst_mac(&mut self, model: &Model, from: NicId) -> Mac {
        let nic = model.nic(from);
        let in_segment = |layer2: bool| -> Vec<Mac> {
            model
                .nics()
                .iter()
                .enumerate()
                .filter(|(i, n)| *i != from.0 && n.segment == nic.segment && n.layer2 == layer2)
                .map(|(_, n)| n.mac)
                .collect()
        };
        let (layer2_peers, layer3_peers) = (in_segment(true), in_segment(false));
        let elsewhere: Vec<Mac> = model
            .nics()
            .iter()
            .filter(|n| n.segment != nic.segment)
            .map(|n| n.mac)
            .collect();
        match self.rng.weighted(&[40, 15, 5, 8, 7, 12, 13]) {
            0 if !layer2_peers.is_empty() => self.rng.pick(&layer2_peers),
            1 if !layer3_peers.is_empty() => self.rng.pick(&layer3_peers),
            2 => nic.mac,
            4 if !elsewhere.is_empty() => self.rng.pick(&elsewhere),
            5 => BROADCAST,
            6 => self.rng.pick(&GROUP_MACS),
            _ => MAC_STRANGER,
        }
    }

    /// A layer-2 NIC's frame that is not IP: ARP (requests mostly, replies; the LPARs' own)
    /// or another EtherType, to a unicast or group MAC, mostly from its own MAC; a few above
    /// the MFS. From a layer-3 NIC if the fabric has no layer-2 NIC.
    fn layer2(&mut self, model: &Model) -> Generated {
        let senders: Vec<NicId> = (0..model.nics().len())
            .map(NicId)
            .filter(|n| model.nic(*n).layer2 && !model.is_stopped(*n))
            .collect();
        if senders.is_empty() {
            return self.non_ip(model);
        }
        let from = self.rng.pick(&senders);
        let nic = model.nic(from);
        let dst = self.layer2_dst_mac(model, from);
        let src = match self.rng.below(100) {
            0..=91 => nic.mac,
            92..=95 => MAC_STRANGER,
            _ => model.nic(self.other_nic(model, from)).mac,
        };
        let (mut frame, mut note) = if self.rng.percent(40) {
            let own: Vec<Ipv4Addr> = nic.addrs.iter().filter_map(|a| v4(*a)).collect();
            let anywhere: Vec<Ipv4Addr> = self.addresses.iter().filter_map(|a| v4(*a)).collect();
            let spa = if own.is_empty() || self.rng.percent(20) {
                self.rng.pick(&anywhere)
            } else {
                self.rng.pick(&own)
            };
            let mut arp = ArpFrame::request(src, spa, self.rng.pick(&anywhere));
            arp.eth_dst = dst;
            arp.oper = self.rng.pick(&[1, 1, 1, 2]);
            if self.rng.percent(30) {
                arp.pad_to = Some(60);
            }
            (arp.build(), format!("layer-2 ARP oper {}", arp.oper))
        } else {
            let ether_type = self.rng.pick(&OTHER_ETHER_TYPES);
            let len = self.rng.index(120);
            let payload = self.rng.bytes(len);
            (
                ethernet(dst, src, ether_type, &payload),
                format!("layer-2 ethertype {ether_type:#06x}"),
            )
        };
        if self.rng.percent(4) {
            frame.resize(
                nic.mtu as usize + ETH_HLEN + self.rng.between(1, 64) as usize,
                0,
            );
            note += ", above the MFS";
        }
        Generated {
            ingress: from,
            frame,
            note,
            flow: None,
        }
    }

    /// Neither IPv4 nor ARP.
    fn non_ip(&mut self, model: &Model) -> Generated {
        let from = self.sender(model);
        let mac = model.nic(from).mac;
        let len = self.rng.index(80);
        let payload = self.rng.bytes(len);
        let (ether_type, note) = match self.rng.below(5) {
            0 => (ETH_P_IPV6, "IPv6 ethertype"),
            1 => (ETH_P_8021Q, "VLAN tag"),
            2 => (ETH_P_8021AD, "802.1ad VLAN tag"),
            3 => (ETH_P_LOCAL_EXP, "experimental ethertype"),
            _ => (self.rng.between(0, 0x05dc) as u16, "802.3 length field"),
        };
        let mut frame = ethernet(BROADCAST, mac, ether_type, &payload);
        if matches!(ether_type, ETH_P_8021Q | ETH_P_8021AD) && frame.len() >= ETH_HLEN + VLAN_HLEN {
            // A tagged IPv4 frame (the tag hides the IPv4 ethertype), or double-tagged.
            let inner = if self.rng.percent(30) {
                ETH_P_8021Q
            } else {
                ETH_P_IP
            };
            frame[ETH_HLEN + 2..ETH_HLEN + VLAN_HLEN].copy_from_slice(&inner.to_be_bytes());
        }
        Generated {
            ingress: from,
            frame,
            note: note.to_string(),
            flow: None,
        }
    }
}

fn v4(addr: IpAddr) -> Option<Ipv4Addr> {
    match addr {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

fn v6(addr: IpAddr) -> Option<Ipv6Addr> {
    match addr {
        IpAddr::V6(a) => Some(a),
        IpAddr::V4(_) => None,
    }
}

/// The generator's `l4` as carried over IPv6: ICMP becomes ICMPv6 (echo types 128 and 129,
/// errors their ICMPv6 counterparts).
fn icmpv6(mut l4: L4) -> L4 {
    if let L4::Icmp { icmp_type, .. } = &mut l4 {
        *icmp_type = match *icmp_type {
            8 => 128,
            0 => 129,
            3 => 1,
            11 => 3,
            13 => 200,
            other => other,
        };
    }
    l4
}

// ---------------------------------------------------------------------------------------------
// Describing frames and verdicts.

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn mac_text(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A one-line decoding of a frame, tcpdump style.
fn summarize(frame: &[u8]) -> String {
    let mut s = format!("{} bytes", frame.len());
    if frame.len() < ETH_HLEN {
        return s;
    }
    let _ = write!(
        s,
        ", {} > {}",
        mac_text(&frame[6..12]),
        mac_text(&frame[0..6])
    );
    match be16(frame, 12) {
        ETH_P_IPV6 if frame.len() >= ETH_HLEN + IPV6_HLEN => {
            let ip = &frame[ETH_HLEN..];
            let addr = |at: usize| {
                let octets: [u8; 16] = ip[at..at + 16].try_into().expect("16 bytes");
                Ipv6Addr::from(octets)
            };
            let _ = write!(
                s,
                ", IPv{} payload_len={} next={} {} > {}",
                ip[0] >> 4,
                be16(ip, 4),
                ip[6],
                addr(8),
                addr(24)
            );
        }
        ETH_P_IP if frame.len() >= ETH_HLEN + IPV4_HLEN => {
            let ip = &frame[ETH_HLEN..];
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let _ = write!(
                s,
                ", IPv{} header={} tot_len={} frag={:#06x} proto={} {} > {}",
                ip[0] >> 4,
                ihl,
                be16(ip, 2),
                be16(ip, 6),
                ip[9],
                ip_at(ip, 12),
                ip_at(ip, 16)
            );
            let l4 = ip.get(ihl.max(IPV4_HLEN)..).unwrap_or(&[]);
            match ip[9] {
                IPPROTO_TCP if l4.len() >= 14 => {
                    let _ = write!(
                        s,
                        " TCP {} > {} flags={:#04x}",
                        be16(l4, 0),
                        be16(l4, 2),
                        l4[13]
                    );
                }
                IPPROTO_UDP if l4.len() >= 4 => {
                    let _ = write!(s, " UDP {} > {}", be16(l4, 0), be16(l4, 2));
                }
                IPPROTO_ICMP if l4.len() >= 6 => {
                    let _ = write!(s, " ICMP type={} code={} id={}", l4[0], l4[1], be16(l4, 4));
                }
                _ => {}
            }
        }
        ETH_P_IP => s += ", IPv4 (header cut short)",
        ETH_P_ARP if frame.len() >= ETH_HLEN + ARP_LEN => {
            let a = &frame[ETH_HLEN..];
            let _ = write!(
                s,
                ", ARP htype={} ptype={:#06x} hlen={} plen={} oper={} sha={} spa={} tha={} tpa={}",
                be16(a, 0),
                be16(a, 2),
                a[4],
                a[5],
                be16(a, 6),
                mac_text(&a[8..14]),
                ip_at(a, 14),
                mac_text(&a[18..24]),
                ip_at(a, 24)
            );
        }
        ETH_P_ARP => s += ", ARP (header cut short)",
        other => {
            let _ = write!(s, ", ethertype {other:#06x}");
        }
    }
    s
}

/// What the program did, read from its verdict and the counters it changed.
fn observed(
    model: &Model,
    action: u32,
    ingress: NicId,
    before: &[NicCounters],
    after: &[NicCounters],
) -> Result<Verdict, String> {
    let mut received = Vec::new();
    let mut drops = Vec::new();
    for (i, (b, a)) in before.iter().zip(after).enumerate() {
        if a.rx_packets != b.rx_packets {
            received.push(NicId(i));
        }
        for reason in 0..drop_reason::COUNT {
            if a.drops[reason] != b.drops[reason] {
                drops.push((NicId(i), reason as u32));
            }
        }
    }
    let verdict = match (action, received.as_slice(), drops.as_slice()) {
        (XDP_REDIRECT, [to], []) => Some(Verdict::Redirect { to: *to }),
        (XDP_TX, [to], []) if *to == ingress => Some(Verdict::Reply),
        (XDP_DROP, [], [(nic, reason)]) => Some(Verdict::Drop {
            reason: *reason,
            counted_on: *nic,
        }),
        _ => None,
    };
    verdict.ok_or_else(|| {
        let labels = |ids: Vec<String>| format!("[{}]", ids.join(", "));
        format!(
            "{} with deliveries counted on {} and drops counted {}",
            action_name(action),
            labels(received.iter().map(|n| model.nic(*n).label()).collect()),
            labels(
                drops
                    .iter()
                    .map(|(n, r)| format!(
                        "{} on {}",
                        drop_reason::NAMES[*r as usize],
                        model.nic(*n).label()
                    ))
                    .collect()
            )
        )
    })
}

/// Every NIC's counters as the model's verdict says they change: `len` bytes sent, and a
/// reply of `reply_len` bytes (a neighbour advertisement is longer than a short solicitation).
fn expected_counters(
    before: &[NicCounters],
    ingress: NicId,
    verdict: &Verdict,
    len: u64,
    reply_len: u64,
) -> Vec<NicCounters> {
    let mut out = before.to_vec();
    out[ingress.0].tx_packets += 1;
    out[ingress.0].tx_bytes += len;
    match *verdict {
        Verdict::Redirect { to } => {
            out[to.0].rx_packets += 1;
            out[to.0].rx_bytes += len;
        }
        Verdict::Reply => {
            out[ingress.0].rx_packets += 1;
            out[ingress.0].rx_bytes += reply_len;
        }
        Verdict::Drop { reason, counted_on } => out[counted_on.0].drops[reason as usize] += 1,
        Verdict::OneToMany => {}
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(96)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
        + if bytes.len() > 96 { " ..." } else { "" }
}

// ---------------------------------------------------------------------------------------------
// The test.

/// Tallies of the model's verdicts, to show (and check) what the frames covered.
#[derive(Default)]
struct Tally {
    verdicts: BTreeMap<String, usize>,
    /// The same, of the frames layer-2 NICs sent.
    layer2_verdicts: BTreeMap<String, usize>,
    /// Replies that passed as part of a tracked connection.
    tracked_replies: usize,
    /// Frames the kernel would not feed to the tc program in a test run.
    refused_by_tc_test_run: usize,
}

/// Runs one generated fabric and its frames; returns how many frames ran.
fn rule_set(seed: u64, set: usize, frames: usize, hook: Hook, tally: &mut Tally) -> usize {
    let set_seed = Rng::new(seed ^ (set as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)).next_u64();
    let mut rng = Rng::new(set_seed);
    let text = fabric_file(&mut rng).render();
    let file = std::env::temp_dir().join(format!("iqd-differential-{seed:#x}-{set}.toml"));
    std::fs::write(&file, &text).expect("write the generated fabric file");
    let fabric = Fabric::parse(&text, &file)
        .unwrap_or_else(|e| panic!("generated fabric file {} is invalid: {e}", file.display()));
    let mut model = Model::new(&fabric);
    let nics = model.nics().len();
    // Some LPARs are stopped (`iqd lpar stop`): their routes are in the STOPPED map.
    for lpar in &fabric.lpars {
        if rng.percent(12) {
            model.stop_lpar(&lpar.name);
        }
    }

    // The maps as `iqd up` writes them: ports, routes, the compiled rule table.
    let names: Vec<String> = (0..nics).map(|i| format!("d{i}")).collect();
    let veths: Vec<(&str, Mac)> = names
        .iter()
        .zip(model.nics())
        .map(|(name, nic)| (name.as_str(), nic.mac))
        .collect();
    let mut prog = ProgBench::with_hook(&veths, hook);
    let ifindexes: Vec<u32> = names.iter().map(|n| ifindex(n)).collect();
    let mut routes = Vec::new();
    let mut port_of: HashMap<(u8, u16), u32> = HashMap::new();
    let mut stopped = Vec::new();
    let fabric_nics = fabric.lpars.iter().flat_map(|l| l.nics.iter());
    for (i, nic) in fabric_nics.enumerate() {
        let is_stopped = model.is_stopped(NicId(i));
        let mut flags = if nic.allow_ip_spoofing {
            port_flags::ALLOW_IP_SPOOFING
        } else {
            0
        };
        if nic.layer2 {
            flags |= port_flags::LAYER2;
        }
        if is_stopped {
            flags |= port_flags::STOPPED;
        }
        let info = PortInfo::new(nic.chpid, model.nic(NicId(i)).mtu, nic.mac)
            .with_vlan(nic.vlan.unwrap_or(NO_VLAN))
            .with_flags(flags);
        prog.maps.add_port(ifindexes[i], info).expect("add port");
        port_of.insert((nic.chpid, nic.devno), ifindexes[i]);
        // Every address the NIC registers: IPv4, IPv6 and its link-local one; and its MAC
        // in the segment's layer-2 space. A layer-2 NIC's targets say so.
        let target = RouteTarget::new(ifindexes[i], nic.mac).with_flags(if nic.layer2 {
            route_flags::LAYER2
        } else {
            0
        });
        let into = if is_stopped {
            &mut stopped
        } else {
            &mut routes
        };
        for addr in nic.addresses() {
            into.push((RouteKey::new(nic.segment(), addr), target));
        }
        into.push((iqd_common::mac_key(nic.segment(), nic.mac), target));
    }
    prog.maps
        .sync_all_routes(&routes, &stopped)
        .expect("sync routes");
    // The broadcast addresses' member lists and the layer-2 flood lists, as `iqd up` writes
    // them (multicast groups stay empty: no frame here is a report the model would follow).
    prog.maps
        .sync_broadcasts(&iqd::fabric::broadcast_lists(&fabric, |nic| {
            port_of.get(&(nic.chpid, nic.devno)).copied()
        }))
        .expect("sync the broadcast lists");
    let table = RuleTable::compile(&fabric, |nic| port_of.get(&(nic.chpid, nic.devno)).copied())
        .expect("compile the rule table");
    prog.maps
        .sync_rules(&table.encoded())
        .expect("sync the rule table");

    let mut generator = Generator::new(rng, &fabric, &model);
    let mut before: Vec<NicCounters> = ifindexes.iter().map(|i| prog.counters(*i)).collect();
    for index in 0..frames {
        let generated = generator.next(&model);
        let ingress = generated.ingress;
        let frame = &generated.frame;
        // A tc test run refuses (EINVAL, before the program runs) frames too short for the
        // headers their ethertype announces; the XDP run covers those for the shared code.
        let run = match prog.try_run(ifindexes[ingress.0], frame) {
            Err(e) if hook == Hook::Tc && e.raw_os_error() == Some(libc::EINVAL) => {
                tally.refused_by_tc_test_run += 1;
                continue;
            }
            Err(e) => panic!("BPF_PROG_TEST_RUN of the {hook:?} program failed: {e}"),
            Ok(run) => run,
        };
        let want = model.handle(ingress, frame, dataplane::ktime_ns());
        let after: Vec<NicCounters> = ifindexes.iter().map(|i| prog.counters(*i)).collect();
        // The one-to-many path's verdicts depend on memberships the data plane learns:
        // mcast.rs and prog_test_run.rs check them. Here: that the program took the frame
        // there too (not forwarded as unicast, not refused as something else).
        if want.verdict == Verdict::OneToMany {
            let as_unicast = matches!(run.action, XDP_REDIRECT | XDP_TX)
                && after
                    .iter()
                    .zip(&before)
                    .any(|(a, b)| a.rx_packets == b.rx_packets + 1)
                && hook == Hook::Xdp;
            assert!(
                !as_unicast,
                "frame #{index}: the model takes it one-to-many, the program forwarded it: {}",
                summarize(frame)
            );
            *tally.verdicts.entry("one_to_many".to_string()).or_default() += 1;
            if model.nic(ingress).layer2 {
                *tally
                    .layer2_verdicts
                    .entry("one_to_many".to_string())
                    .or_default() += 1;
            }
            before = after;
            continue;
        }

        let expected_action = match want.verdict {
            Verdict::Redirect { .. } => XDP_REDIRECT,
            Verdict::Reply => XDP_TX,
            Verdict::Drop { .. } | Verdict::OneToMany => XDP_DROP,
        };
        let got = observed(&model, run.action, ingress, &before, &after);
        let expected = expected_counters(
            &before,
            ingress,
            &want.verdict,
            frame.len() as u64,
            want.frame.len() as u64,
        );
        let problem = if got.as_ref() != Ok(&want.verdict) || run.action != expected_action {
            Some("verdicts differ")
        } else if after != expected {
            Some("counters differ")
        } else if run.frame != want.frame {
            Some("output frames differ")
        } else {
            None
        };
        if let Some(problem) = problem {
            let program = match &got {
                Ok(v) => format!("{} ({})", model.describe(v), action_name(run.action)),
                Err(e) => e.clone(),
            };
            let mut counters = String::new();
            for (i, (a, e)) in after.iter().zip(&expected).enumerate() {
                if a != e {
                    let _ = write!(
                        counters,
                        "\n  counters of {}: program {a:?}\n{:>20} model   {e:?}",
                        model.nic(NicId(i)).label(),
                        ""
                    );
                }
            }
            let output = if run.frame != want.frame {
                format!(
                    "\n  program output: {}\n  model output:   {}",
                    hex(&run.frame),
                    hex(&want.frame)
                )
            } else {
                String::new()
            };
            panic!(
                "differential test ({hook:?} program): {problem}\n  seed {seed:#x} (rerun with \
                 IQD_DIFF_SEED={seed:#x}), rule set {set} (fabric file {}), frame #{index} from {}\n  \
                 frame: {} ({})\n  \
                 model:   {}\n  program: {program}{counters}{output}\n  bytes: {}",
                file.display(),
                model.nic(ingress).label(),
                summarize(frame),
                generated.note,
                model.describe(&want.verdict),
                hex(frame),
            );
        }

        let key = match want.verdict {
            Verdict::Redirect { .. } => "redirect".to_string(),
            Verdict::Reply => "arp_reply".to_string(),
            Verdict::OneToMany => "one_to_many".to_string(),
            Verdict::Drop { reason, .. } => drop_reason::NAMES[reason as usize].to_string(),
        };
        if model.nic(ingress).layer2 {
            // By what the frame carries: IP, ARP or another EtherType.
            let carries = match frame.get(12..14).map(|t| be16(t, 0)) {
                Some(ETH_P_IP | ETH_P_IPV6) => "",
                Some(ETH_P_ARP) => " (ARP)",
                _ => " (other)",
            };
            *tally
                .layer2_verdicts
                .entry(format!("{key}{carries}"))
                .or_default() += 1;
            if want.tracked && generated.note.starts_with("reply") {
                *tally
                    .layer2_verdicts
                    .entry("tracked_reply".to_string())
                    .or_default() += 1;
            }
        }
        *tally.verdicts.entry(key).or_default() += 1;
        if want.tracked && generated.note.starts_with("reply") {
            tally.tracked_replies += 1;
        }
        if let Some(flow) = generated.flow {
            generator.record(index, flow);
        }
        before = after;
    }
    let _ = std::fs::remove_file(&file);
    frames
}

#[test]
fn program_and_model_agree_on_every_verdict() {
    let seed = env_number("IQD_DIFF_SEED").unwrap_or(DEFAULT_SEED);
    let sets = env_number("IQD_DIFF_RULE_SETS").map_or(DEFAULT_RULE_SETS, |n| n as usize);
    let frames = env_number("IQD_DIFF_FRAMES").map_or(DEFAULT_FRAMES, |n| n as usize);
    println!("differential: seed {seed:#x} (IQD_DIFF_SEED), {sets} rule sets of {frames} frames");
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut total = 0;
    // Every data path's program, each against the same model: the policy is written once. With
    // no switch socket in the maps, `iqd_xsk` takes its in-kernel path, the one that decides.
    for hook in Hook::ALL {
        for set in 0..sets {
            total += rule_set(seed, set, frames, hook, &mut tally);
        }
    }
    println!(
        "differential: {total} frames agreed in {:.1?}: {:?} (of layer-2 NICs' frames: {:?}); \
         {} replies passed only by tracking; {} malformed frames not fed to the tc program \
         (refused by the test run)",
        started.elapsed(),
        tally.verdicts,
        tally.layer2_verdicts,
        tally.tracked_replies,
        tally.refused_by_tc_test_run
    );
    assert!(
        tally.refused_by_tc_test_run * 20 < total,
        "the tc program saw too few of the frames"
    );
    if sets * frames >= 5000 {
        // The generator must keep reaching every outcome, or the comparison proves little.
        for reason in drop_reason::NAMES {
            // Neither happens to a test run: every port is in the DEVMAP, and only the AF_XDP
            // switch (not running here) finds a ring busy. Its fabrics have no bandwidths (the
            // bandwidth suite and prog_test_run cover them).
            if !["redirect_failed", "target_busy", "bandwidth_exceeded"].contains(&reason) {
                assert!(
                    tally.verdicts.contains_key(reason),
                    "no frame was dropped as {reason}: the generator lost coverage"
                );
            }
        }
        for outcome in ["redirect", "arp_reply"] {
            assert!(
                tally.verdicts.contains_key(outcome),
                "no frame had the verdict {outcome}"
            );
        }
        // Layer-2 NICs' frames reach each outcome of their own.
        for outcome in [
            "redirect",
            "redirect (ARP)",
            "redirect (other)",
            "tracked_reply",
            "one_to_many",
            "layer_mismatch",
            "layer_mismatch (other)",
            "lpar_stopped",
            "lpar_stopped (other)",
            "no_destination",
            "spoofed_source",
            "sg_denied_outbound",
            "sg_denied_inbound",
        ] {
            assert!(
                tally.layer2_verdicts.contains_key(outcome),
                "no layer-2 NIC's frame had the verdict {outcome}"
            );
        }
        assert!(tally.tracked_replies > 0, "no reply passed by tracking");
    }
}
