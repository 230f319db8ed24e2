//! A reference model of the port program (`iqd_port`) in plain Rust, for tests.
//!
//! Given a fabric, a frame and the NIC that sent it, [`Model::handle`] says what the data plane
//! must do with the frame: redirect it to a NIC, answer it (ARP, `XDP_TX`), or drop it with a
//! reason counted on a NIC. It is written from the documented semantics
//! (docs/architecture.md, docs/security-groups.md), not from the program: the security groups
//! are evaluated rule by rule from the fabric's groups (union of a NIC's groups, remote blocks and
//! remote-group members, port ranges, ICMP type and code), never through the compiled rule
//! table, and connection tracking is a map of connections keyed by their first frame. The
//! differential test (tests/tests/differential.rs) runs generated frames through both and
//! checks they agree on every verdict.
//!
//! The checks come in the program's order, which decides the reason when several apply:
//! a VLAN tag, frame size, ethertype, then for IPv4 the header, source MAC, source address (unless the NIC
//! has `allow_ip_spoofing`), destination, transport header, and finally connection tracking and
//! security groups; for ARP the header, the operation, the source MAC and sender address, and
//! the target.
//!
//! Layer-2 NICs (`layer2 = true`, docs/hipersockets.md "Layer-2 NICs") go by destination MAC:
//! after the frame size, the source MAC (any, for a NIC with `allow_ip_spoofing`); a group MAC
//! is one-to-many (flooded) whatever the frame carries; IP frames then meet the layer-3 checks
//! and rules with the target found from the destination MAC (left as it is), other EtherTypes
//! (ARP included, never answered) go to the MAC's NIC with no rules. A layer-2 and a layer-3
//! NIC of one segment cannot reach each other (`layer_mismatch`), by address (IP, ARP, ND) or
//! by MAC.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use iqd_common::{
    ct_timeout, drop_reason,
    wire::{
        ARP_LEN, ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6,
        ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_HLEN,
        IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_ICMPV6,
        IPPROTO_ROUTING, IPPROTO_TCP, IPPROTO_UDP, IPV4_HLEN, IPV6_HLEN, MAX_IPV6_EXT_HEADERS,
        ND_NEIGHBOR_ADVERT, ND_NEIGHBOR_SOLICIT, ND_REDIRECT, ND_ROUTER_SOLICIT, TCP_FIN, TCP_HLEN,
        TCP_RST, UDP_HLEN,
    },
};

use iqd::domain::{mapped, Direction, Fabric, Protocol, Remote, Rule};

/// A segment: a CHPID and a VLAN of it (`None`: the CHPID's untagged NICs). NICs reach each
/// other only within one.
pub type Segment = (u8, Option<u16>);

/// A NIC of the modelled fabric: its index in [`Model::nics`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NicId(pub usize);

/// What the model knows of a NIC.
#[derive(Clone, Debug)]
pub struct ModelNic {
    pub lpar: String,
    pub name: String,
    pub chpid: u8,
    /// The NIC's segment: its CHPID and VLAN.
    pub segment: Segment,
    pub mac: [u8; 6],
    /// The CHPID's MTU.
    pub mtu: u32,
    /// Every address the NIC registers: IPv4, IPv6 and its link-local address.
    pub addrs: Vec<IpAddr>,
    pub allow_ip_spoofing: bool,
    /// A layer-2 NIC: forwarded by MAC among the layer-2 NICs of its segment.
    pub layer2: bool,
    /// Whether the NIC takes broadcasts (`rx_bcast`).
    pub rx_bcast: bool,
    /// Every rule of every group the NIC has (their union).
    pub rules: Vec<Rule>,
}

impl ModelNic {
    /// `LPAR/nic`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.lpar, self.name)
    }
}

/// What the data plane does with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forwarded to the NIC (`XDP_REDIRECT`), counted as received there.
    Redirect { to: NicId },
    /// An ARP request or IPv6 neighbour solicitation answered by the fabric and sent back to
    /// the asker (`XDP_TX`).
    Reply,
    /// Dropped, counted under `reason` (`iqd_common::drop_reason`) on the NIC `counted_on`.
    Drop { reason: u32, counted_on: NicId },
    /// A well-formed IP packet to a group or broadcast address: the one-to-many path takes
    /// it (learns an IGMP or MLD report; XDP passes the rest up to the port's tc hook, which
    /// copies it to every member). Membership lives in the data plane, learnt from reports:
    /// the namespace tests (mcast.rs) and prog_test_run.rs check what follows. Also a layer-2
    /// NIC's frame to a group MAC (broadcast or multicast), whatever it carries, from its own
    /// MAC: flooded to the segment's other layer-2 NICs the same way (the flood checks an IP
    /// frame's headers and source address, and the receivers' rules, per copy).
    OneToMany,
}

/// A verdict and the frame as the program leaves it (destination MAC rewritten on a redirect,
/// the ARP reply on `XDP_TX`, unchanged on a drop).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub frame: Vec<u8>,
    /// The frame passed as part of a tracked connection, without asking the rules.
    pub tracked: bool,
}

/// The layer 4 facts security groups and connection tracking look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP (`v6`: ICMPv6, its own protocol with its own echo types).
    Icmp {
        v6: bool,
        icmp_type: u8,
        code: u8,
        id: u16,
    },
    /// A later fragment (offset > 0) of TCP, UDP or ICMP: no transport header, no ports.
    LaterFragment {
        proto: u8,
    },
    /// Any other IP protocol (fragment or not): only addresses.
    Other {
        proto: u8,
    },
}

impl L4 {
    fn proto(&self) -> u8 {
        match *self {
            L4::Tcp { .. } => IPPROTO_TCP,
            L4::Udp { .. } => IPPROTO_UDP,
            L4::Icmp { v6: false, .. } => IPPROTO_ICMP,
            L4::Icmp { v6: true, .. } => IPPROTO_ICMPV6,
            L4::LaterFragment { proto } | L4::Other { proto } => proto,
        }
    }

    /// Source and destination "ports" of a tracked connection; `None` if the frame belongs to
    /// none (ICMP other than echo, later fragments).
    fn ports(&self) -> Option<(u16, u16)> {
        match *self {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => Some((sport, dport)),
            L4::Icmp {
                v6, icmp_type, id, ..
            } if is_echo(v6, icmp_type) => Some((id, id)),
            L4::Icmp { .. } | L4::LaterFragment { .. } => None,
            L4::Other { .. } => Some((0, 0)),
        }
    }

    /// Whether an allowed frame starts a connection (echo replies and other ICMP do not).
    fn opens(&self) -> bool {
        match *self {
            L4::Icmp { v6, icmp_type, .. } => icmp_type == echo_request(v6),
            _ => self.ports().is_some(),
        }
    }

    fn closing(&self) -> bool {
        matches!(*self, L4::Tcp { flags, .. } if flags & (TCP_FIN | TCP_RST) != 0)
    }
}

/// The echo request type of ICMP (`v6`: ICMPv6).
fn echo_request(v6: bool) -> u8 {
    if v6 {
        ICMPV6_ECHO_REQUEST
    } else {
        ICMP_ECHO_REQUEST
    }
}

/// Whether `icmp_type` is an echo request or reply of ICMP (`v6`: ICMPv6).
fn is_echo(v6: bool, icmp_type: u8) -> bool {
    if v6 {
        icmp_type == ICMPV6_ECHO_REQUEST || icmp_type == ICMPV6_ECHO_REPLY
    } else {
        icmp_type == ICMP_ECHO_REQUEST || icmp_type == ICMP_ECHO_REPLY
    }
}

/// A tracked connection as its first frame had it, in the segment of its NICs: two segments
/// (CHPIDs, or VLANs of one) may use one address plan, and their connections are separate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ConnKey {
    segment: Segment,
    /// Addresses as the data plane keys them (IPv4 mapped into IPv6).
    saddr: Ipv6Addr,
    daddr: Ipv6Addr,
    sport: u16,
    dport: u16,
    proto: u8,
}

impl ConnKey {
    fn reversed(&self) -> ConnKey {
        ConnKey {
            segment: self.segment,
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Conn {
    /// The NIC that opened the connection, and its peer.
    origin: NicId,
    reply: NicId,
    last_seen_ns: u64,
    /// TCP FIN or RST seen either way.
    closing: bool,
}

impl Conn {
    fn live(&self, proto: u8, now_ns: u64) -> bool {
        let timeout = match proto {
            IPPROTO_TCP if self.closing => ct_timeout::TCP_CLOSING_NS,
            IPPROTO_TCP => ct_timeout::TCP_NS,
            IPPROTO_ICMP | IPPROTO_ICMPV6 => ct_timeout::ICMP_NS,
            _ => ct_timeout::UDP_NS,
        };
        now_ns.saturating_sub(self.last_seen_ns) <= timeout
    }
}

/// The policy of one fabric, with the state of its connection table.
#[derive(Clone, Debug)]
pub struct Model {
    nics: Vec<ModelNic>,
    /// Who registered an address in a segment.
    routes: HashMap<(Segment, Ipv6Addr), NicId>,
    /// NICs of stopped LPARs (`iqd lpar stop`): their addresses and MACs are in the STOPPED
    /// map, not the routes.
    stopped: HashSet<NicId>,
    /// Whose MAC it is, in a segment (every NIC's, layer 2 or 3: a layer-2 NIC's frame to a
    /// layer-3 NIC's MAC is a `layer_mismatch`, not an unknown MAC).
    macs: HashMap<(Segment, [u8; 6]), NicId>,
    /// Addresses registered in any segment.
    registered: HashSet<Ipv6Addr>,
    /// The registered addresses of each group's members, per segment: a remote group names
    /// the members in the rule owner's segment.
    members: HashMap<(String, Segment), HashSet<Ipv6Addr>>,
    /// The directed broadcast addresses of each segment (of its NICs' IPv4 prefixes up to
    /// /30), which iqd gives member lists.
    broadcasts: HashSet<(Segment, Ipv4Addr)>,
    connections: HashMap<ConnKey, Conn>,
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// The IPv4 address at `at`, as the data plane keys it (mapped).
fn addr(bytes: &[u8], at: usize) -> Ipv6Addr {
    Ipv4Addr::new(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]).to_ipv6_mapped()
}

/// The IPv6 address at `at`.
fn addr6(bytes: &[u8], at: usize) -> Ipv6Addr {
    let octets: [u8; 16] = bytes[at..at + 16].try_into().expect("16 bytes");
    Ipv6Addr::from(octets)
}

impl Model {
    /// The model of `fabric` with every NIC in place and no tracked connection.
    pub fn new(fabric: &Fabric) -> Model {
        let mut nics = Vec::new();
        let mut routes = HashMap::new();
        let mut macs = HashMap::new();
        let mut registered = HashSet::new();
        let mut members: HashMap<(String, Segment), HashSet<Ipv6Addr>> = HashMap::new();
        let mut broadcasts = HashSet::new();
        for lpar in &fabric.lpars {
            for nic in &lpar.nics {
                let id = NicId(nics.len());
                let segment = (nic.chpid, nic.vlan);
                macs.insert((segment, nic.mac), id);
                // Layer-3 broadcasts reach layer-3 NICs that take broadcasts: only their
                // prefixes have a directed broadcast (layer-2 NICs' floods are by MAC).
                let takes_broadcasts = !nic.layer2 && nic.rx_bcast;
                for cidr in nic
                    .ipv4
                    .iter()
                    .filter(|c| takes_broadcasts && c.prefix <= 30)
                {
                    let mask = u32::MAX
                        .checked_shl(32 - u32::from(cidr.prefix))
                        .unwrap_or(0);
                    broadcasts.insert((segment, Ipv4Addr::from(u32::from(cidr.addr) | !mask)));
                }
                // IPv4 and IPv6 addresses and the link-local one, all registered alike.
                let addrs = nic.addresses();
                for a in &addrs {
                    routes.insert((segment, mapped(*a)), id);
                    registered.insert(mapped(*a));
                }
                for group in &nic.security_groups {
                    members
                        .entry((group.clone(), segment))
                        .or_default()
                        .extend(addrs.iter().map(|a| mapped(*a)));
                }
                let rules = nic
                    .security_groups
                    .iter()
                    .filter_map(|g| fabric.security_group(g))
                    .flat_map(|g| g.rules.iter().cloned())
                    .collect();
                nics.push(ModelNic {
                    lpar: lpar.name.clone(),
                    name: nic.name.clone(),
                    chpid: nic.chpid,
                    segment,
                    mac: nic.mac,
                    mtu: fabric.chpid(nic.chpid).map(|c| c.mfs.mtu()).unwrap_or(0),
                    addrs,
                    allow_ip_spoofing: nic.allow_ip_spoofing,
                    layer2: nic.layer2,
                    rx_bcast: nic.rx_bcast,
                    rules,
                });
            }
        }
        Model {
            broadcasts,
            nics,
            routes,
            stopped: HashSet::new(),
            macs,
            registered,
            members,
            connections: HashMap::new(),
        }
    }

    /// Every NIC, in the fabric file's order.
    pub fn nics(&self) -> &[ModelNic] {
        &self.nics
    }

    pub fn nic(&self, id: NicId) -> &ModelNic {
        &self.nics[id.0]
    }

    /// The NIC `name` of LPAR `lpar`.
    pub fn nic_id(&self, lpar: &str, name: &str) -> Option<NicId> {
        self.nics
            .iter()
            .position(|n| n.lpar == lpar && n.name == name)
            .map(NicId)
    }

    /// Stops LPAR `lpar` (`iqd lpar stop`): its NICs' routes (addresses and MACs) move to
    /// the STOPPED map, frames to them are `lpar_stopped`.
    pub fn stop_lpar(&mut self, lpar: &str) {
        for (i, nic) in self.nics.iter().enumerate() {
            if nic.lpar == lpar {
                self.stopped.insert(NicId(i));
            }
        }
    }

    /// Whether NIC `id`'s LPAR is stopped.
    pub fn is_stopped(&self, id: NicId) -> bool {
        self.stopped.contains(&id)
    }

    /// The NIC whose MAC `mac` is in `segment`, if its LPAR runs.
    pub fn mac_route(&self, segment: Segment, mac: [u8; 6]) -> Option<NicId> {
        self.macs
            .get(&(segment, mac))
            .copied()
            .filter(|id| !self.is_stopped(*id))
    }

    /// The NIC that registered `addr` in `segment`, if its LPAR runs.
    pub fn route(&self, segment: Segment, addr: impl Into<IpAddr>) -> Option<NicId> {
        self.routes
            .get(&(segment, mapped(addr.into())))
            .copied()
            .filter(|id| !self.is_stopped(*id))
    }

    /// Whether a stopped LPAR's NIC registered `addr` in `segment`.
    fn stopped_route(&self, segment: Segment, addr: Ipv6Addr) -> bool {
        self.routes
            .get(&(segment, addr))
            .is_some_and(|id| self.is_stopped(*id))
    }

    /// Number of connections in the table (live or idle).
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// A verdict in words, with NIC labels.
    pub fn describe(&self, verdict: &Verdict) -> String {
        match *verdict {
            Verdict::Redirect { to } => format!("redirect to {}", self.nic(to).label()),
            Verdict::Reply => "ARP reply or neighbour advertisement (XDP_TX)".to_string(),
            Verdict::OneToMany => "one-to-many (report learnt, or copied to members)".to_string(),
            Verdict::Drop { reason, counted_on } => format!(
                "drop {} on {}",
                drop_reason::NAMES
                    .get(reason as usize)
                    .copied()
                    .unwrap_or("?"),
                self.nic(counted_on).label()
            ),
        }
    }

    /// What the data plane does with `frame`, sent by NIC `ingress` at monotonic time `now_ns`
    /// (what `bpf_ktime_get_coarse_ns` would say). Updates the connection table as the program does.
    pub fn handle(&mut self, ingress: NicId, frame: &[u8], now_ns: u64) -> Outcome {
        let (verdict, tracked) = self
            .decide(ingress, frame, now_ns)
            .unwrap_or_else(|reason| {
                let drop = Verdict::Drop {
                    reason,
                    counted_on: ingress,
                };
                (drop, false)
            });
        let mut out = frame.to_vec();
        match verdict {
            // Layer 3 delivers by address (the destination MAC becomes the NIC's); layer 2
            // by the MAC the sender wrote.
            Verdict::Redirect { to } if !self.nic(ingress).layer2 => {
                out[..6].copy_from_slice(&self.nic(to).mac)
            }
            Verdict::Redirect { .. } => {}
            Verdict::Reply if be16(frame, 12) == ETH_P_IPV6 => {
                out = self.advertisement(ingress, frame)
            }
            Verdict::Reply => self.arp_reply(ingress, &mut out),
            Verdict::Drop { .. } | Verdict::OneToMany => {}
        }
        Outcome {
            verdict,
            frame: out,
            tracked,
        }
    }

    /// The verdict, and whether the frame passed by a tracked connection; `Err` is a drop
    /// counted on the sender.
    fn decide(
        &mut self,
        ingress: NicId,
        frame: &[u8],
        now_ns: u64,
    ) -> Result<(Verdict, bool), u32> {
        let nic = self.nic(ingress);
        if frame.len() < ETH_HLEN {
            return Err(drop_reason::MALFORMED);
        }
        // A NIC's VLAN is the fabric's: a tagged frame (802.1Q, 802.1ad, double tags) is
        // refused whatever it carries.
        if matches!(be16(frame, 12), ETH_P_8021Q | ETH_P_8021AD) {
            return Err(drop_reason::VLAN_TAGGED);
        }
        // The CHPID's frame size holds for every frame, whatever it carries.
        if frame.len() as u64 > u64::from(nic.mtu) + ETH_HLEN as u64 {
            return Err(drop_reason::MFS_EXCEEDED);
        }
        if nic.layer2 {
            return self.layer2(ingress, frame, now_ns);
        }
        match be16(frame, 12) {
            ETH_P_IP => self.ipv4(ingress, frame, now_ns),
            ETH_P_ARP => self.arp(ingress, frame).map(|_| (Verdict::Reply, false)),
            ETH_P_IPV6 => self.ipv6(ingress, frame, now_ns),
            _ => Err(drop_reason::NON_IP),
        }
    }

    /// A layer-2 NIC's frame: its source MAC, then a group MAC floods, IP goes through the
    /// layer-3 checks and rules (target by MAC), anything else to the MAC's NIC.
    fn layer2(
        &mut self,
        ingress: NicId,
        frame: &[u8],
        now_ns: u64,
    ) -> Result<(Verdict, bool), u32> {
        self.check_source_mac(ingress, &frame[6..12])?;
        // The group bit: broadcast and multicast MACs.
        if frame[0] & 1 != 0 {
            return Ok((Verdict::OneToMany, false));
        }
        match be16(frame, 12) {
            ETH_P_IP => self.ipv4(ingress, frame, now_ns),
            ETH_P_IPV6 => self.ipv6(ingress, frame, now_ns),
            // ARP and every other EtherType: no rules (security groups are IP rules).
            _ => self
                .mac_destination(ingress, frame)
                .map(|to| (Verdict::Redirect { to }, false)),
        }
    }

    /// A NIC sends from its own MAC; a layer-2 NIC with `allow_ip_spoofing` from any.
    fn check_source_mac(&self, ingress: NicId, mac: &[u8]) -> Result<(), u32> {
        let nic = self.nic(ingress);
        if (nic.layer2 && nic.allow_ip_spoofing) || mac == nic.mac {
            Ok(())
        } else {
            Err(drop_reason::SPOOFED_SOURCE)
        }
    }

    /// The NIC a layer-2 NIC's unicast frame reaches: the layer-2 NIC of its segment whose MAC
    /// is the frame's destination (registered, never learnt).
    fn mac_destination(&self, ingress: NicId, frame: &[u8]) -> Result<NicId, u32> {
        let dst: [u8; 6] = frame[..6].try_into().expect("6 bytes");
        let segment = self.nic(ingress).segment;
        match self.mac_route(segment, dst) {
            // Its own MAC: its stack delivers that locally.
            Some(to) if to == ingress => Err(drop_reason::NO_DESTINATION),
            Some(to) => self.same_layer(ingress, to),
            None if self.macs.contains_key(&(segment, dst)) => Err(drop_reason::LPAR_STOPPED),
            None => Err(drop_reason::NO_DESTINATION),
        }
    }

    /// `to`, if it is of the sender's mode (layer 2 or 3): the two cannot reach each other.
    fn same_layer(&self, ingress: NicId, to: NicId) -> Result<NicId, u32> {
        if self.nic(ingress).layer2 != self.nic(to).layer2 {
            return Err(drop_reason::LAYER_MISMATCH);
        }
        Ok(to)
    }

    /// Anti-spoofing of a sender address: registered by this very NIC in its segment, unless the
    /// NIC may spoof.
    fn check_source(&self, ingress: NicId, saddr: Ipv6Addr) -> Result<(), u32> {
        let nic = self.nic(ingress);
        if nic.allow_ip_spoofing || self.route(nic.segment, saddr) == Some(ingress) {
            Ok(())
        } else {
            Err(drop_reason::SPOOFED_SOURCE)
        }
    }

    /// The NIC a destination address (or an ARP or solicitation target) reaches from
    /// `ingress`: another NIC in the same segment, of the same mode.
    fn destination(&self, ingress: NicId, daddr: Ipv6Addr) -> Result<NicId, u32> {
        let segment = self.nic(ingress).segment;
        match self.route(segment, daddr) {
            // A NIC's own address is no destination in the fabric.
            Some(to) if to == ingress => Err(drop_reason::NO_DESTINATION),
            Some(to) => self.same_layer(ingress, to),
            // A stopped LPAR's address is out of the routes (`lpar_stopped`).
            None if self.stopped_route(segment, daddr) => Err(drop_reason::LPAR_STOPPED),
            None if self.registered.contains(&daddr) => Err(drop_reason::NOT_MEMBER),
            None => Err(drop_reason::NO_DESTINATION),
        }
    }

    fn ipv4(&mut self, ingress: NicId, frame: &[u8], now_ns: u64) -> Result<(Verdict, bool), u32> {
        let ip = frame
            .get(ETH_HLEN..ETH_HLEN + IPV4_HLEN)
            .ok_or(drop_reason::MALFORMED)?;
        let version = ip[0] >> 4;
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let tot_len = usize::from(be16(ip, 2));
        if version != 4 || ihl < IPV4_HLEN || tot_len < ihl || ETH_HLEN + tot_len > frame.len() {
            return Err(drop_reason::MALFORMED);
        }
        // Groups, the limited broadcast and the segment's directed broadcasts (on layer 2,
        // the destination MAC decided that).
        let layer2 = self.nic(ingress).layer2;
        let dest = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        if !layer2
            && (dest.is_multicast()
                || dest.is_broadcast()
                || self.broadcasts.contains(&(self.nic(ingress).segment, dest)))
        {
            return Ok((Verdict::OneToMany, false));
        }
        self.check_source_mac(ingress, &frame[6..12])?;
        let (saddr, daddr) = (addr(ip, 12), addr(ip, 16));
        self.check_source(ingress, saddr)?;
        let to = if layer2 {
            self.mac_destination(ingress, frame)?
        } else {
            self.destination(ingress, daddr)?
        };

        // The transport header must lie within the IPv4 packet (padding after it is not part
        // of the packet).
        let packet = &frame[ETH_HLEN..ETH_HLEN + tot_len];
        let l4 = transport(false, ip[9], be16(ip, 6) & 0x1fff != 0, &packet[ihl..])?;

        self.policy(ingress, to, l4, saddr, daddr, now_ns)
    }

    /// IPv6 in the program's order: the fixed header, the extension headers up to the
    /// transport header, neighbour discovery (answered or ignored, never forwarded), then the
    /// checks IPv4 has.
    fn ipv6(&mut self, ingress: NicId, frame: &[u8], now_ns: u64) -> Result<(Verdict, bool), u32> {
        let ip = frame
            .get(ETH_HLEN..ETH_HLEN + IPV6_HLEN)
            .ok_or(drop_reason::MALFORMED)?;
        let payload_len = usize::from(be16(ip, 4));
        if ip[0] >> 4 != 6 || ETH_HLEN + IPV6_HLEN + payload_len > frame.len() {
            return Err(drop_reason::MALFORMED);
        }
        // The packet, from the network header to its end (what follows is padding).
        let packet = &frame[ETH_HLEN..ETH_HLEN + IPV6_HLEN + payload_len];
        let (proto, offset, later_fragment) = extension_headers(ip[6], packet)?;
        let data = &packet[offset..];
        // Layer 2 forwards by MAC, neighbour discovery included (the LPARs' own).
        let layer2 = self.nic(ingress).layer2;
        if layer2 {
            return self.ipv6_unicast(ingress, frame, proto, later_fragment, data, now_ns);
        }
        // Groups, but not neighbour discovery (nor an ICMPv6 message too short to tell).
        let icmp_checked = proto != IPPROTO_ICMPV6 || later_fragment || data.len() >= ICMP_HLEN;
        let nd = proto == IPPROTO_ICMPV6
            && !later_fragment
            && data.len() >= ICMP_HLEN
            && (ND_ROUTER_SOLICIT..=ND_REDIRECT).contains(&data[0]);
        if ip[24] == 0xff && icmp_checked && !nd {
            return Ok((Verdict::OneToMany, false));
        }
        if proto == IPPROTO_ICMPV6 && !later_fragment && data.len() >= ICMP_HLEN {
            let icmp_type = data[0];
            if (ND_ROUTER_SOLICIT..=ND_REDIRECT).contains(&icmp_type) {
                if icmp_type != ND_NEIGHBOR_SOLICIT {
                    return Err(drop_reason::ND_IGNORED);
                }
                return self
                    .solicitation(ingress, frame, packet, offset)
                    .map(|_| (Verdict::Reply, false));
            }
        }
        self.ipv6_unicast(ingress, frame, proto, later_fragment, data, now_ns)
    }

    /// An IPv6 packet that is neither one-to-many nor neighbour discovery the fabric answers
    /// (`proto` at `data`, after the extension headers): the checks IPv4 has.
    fn ipv6_unicast(
        &mut self,
        ingress: NicId,
        frame: &[u8],
        proto: u8,
        later_fragment: bool,
        data: &[u8],
        now_ns: u64,
    ) -> Result<(Verdict, bool), u32> {
        let ip = &frame[ETH_HLEN..ETH_HLEN + IPV6_HLEN];
        let layer2 = self.nic(ingress).layer2;
        self.check_source_mac(ingress, &frame[6..12])?;
        let (saddr, daddr) = (addr6(ip, 8), addr6(ip, 24));
        // IPv4-mapped addresses never appear on the wire (RFC 4291): such a source is nobody's,
        // even for a NIC that may spoof, and such a destination no IPv6 NIC's.
        if saddr.to_ipv4_mapped().is_some() {
            return Err(drop_reason::SPOOFED_SOURCE);
        }
        self.check_source(ingress, saddr)?;
        if layer2 {
            let to = self.mac_destination(ingress, frame)?;
            let l4 = transport(true, proto, later_fragment, data)?;
            return self.policy(ingress, to, l4, saddr, daddr, now_ns);
        }
        // Multicast the one-to-many path did not take (a truncated ICMPv6 message) has no
        // destination.
        if daddr.is_multicast() || daddr.to_ipv4_mapped().is_some() {
            return Err(drop_reason::NO_DESTINATION);
        }
        let to = self.destination(ingress, daddr)?;
        let l4 = transport(true, proto, later_fragment, data)?;
        self.policy(ingress, to, l4, saddr, daddr, now_ns)
    }

    /// A neighbour solicitation (its ICMPv6 message at `offset` of `packet`): `Ok` with the
    /// NIC whose address it asks for, if the fabric answers it.
    fn solicitation(
        &self,
        ingress: NicId,
        frame: &[u8],
        packet: &[u8],
        offset: usize,
    ) -> Result<NicId, u32> {
        // Type, code, checksum, reserved, target.
        let ns = packet
            .get(offset..offset + 24)
            .ok_or(drop_reason::MALFORMED)?;
        self.check_source_mac(ingress, &frame[6..12])?;
        let saddr = addr6(packet, 8);
        if saddr.to_ipv4_mapped().is_some() {
            return Err(drop_reason::SPOOFED_SOURCE);
        }
        // The unspecified source is duplicate address detection and claims nothing.
        if !saddr.is_unspecified() {
            self.check_source(ingress, saddr)?;
        }
        let target = addr6(ns, 8);
        if target.to_ipv4_mapped().is_some() {
            return Err(drop_reason::NO_DESTINATION);
        }
        self.destination(ingress, target)
    }

    /// The neighbour advertisement answering the solicitation `frame`: from the target NIC
    /// (its MAC, the target address), solicited and override (only override, to all nodes,
    /// for duplicate address detection), with the target's MAC as an option.
    fn advertisement(&self, ingress: NicId, frame: &[u8]) -> Vec<u8> {
        let packet = &frame[ETH_HLEN..];
        let (_, offset, _) = extension_headers(packet[6], packet).expect("a solicitation");
        let target = self
            .solicitation(ingress, frame, packet, offset)
            .expect("only answered solicitations get an advertisement");
        let target_mac = self.nic(target).mac;
        let target_addr = addr6(packet, offset + 8);
        let saddr = addr6(packet, 8);
        let (dst, dst_mac, flags) = if saddr.is_unspecified() {
            (
                Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
                [0x33, 0x33, 0, 0, 0, 1],
                0x20,
            )
        } else {
            let asker: [u8; 6] = frame[6..12].try_into().expect("6 bytes");
            (saddr, asker, 0x60)
        };
        let mut icmp = vec![ND_NEIGHBOR_ADVERT, 0, 0, 0, flags, 0, 0, 0];
        icmp.extend_from_slice(&target_addr.octets());
        icmp.extend_from_slice(&[2, 1]);
        icmp.extend_from_slice(&target_mac);
        let check = icmpv6_checksum(&target_addr, &dst, &icmp);
        icmp[2..4].copy_from_slice(&check.to_be_bytes());

        let mut out = dst_mac.to_vec();
        out.extend_from_slice(&target_mac);
        out.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
        out.extend_from_slice(&[0x60, 0, 0, 0]);
        out.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        out.extend_from_slice(&[IPPROTO_ICMPV6, 255]);
        out.extend_from_slice(&target_addr.octets());
        out.extend_from_slice(&dst.octets());
        out.extend_from_slice(&icmp);
        out
    }

    /// Security groups: a tracked connection passes either way; anything else needs the
    /// sender's outbound and the receiver's inbound rules, and then opens a connection.
    fn policy(
        &mut self,
        ingress: NicId,
        to: NicId,
        l4: L4,
        saddr: Ipv6Addr,
        daddr: Ipv6Addr,
        now_ns: u64,
    ) -> Result<(Verdict, bool), u32> {
        if self.track(&l4, saddr, daddr, ingress, to, now_ns) {
            return Ok((Verdict::Redirect { to }, true));
        }
        if !self.allows(ingress, Direction::Outbound, &l4, daddr) {
            return Err(drop_reason::SG_DENIED_OUTBOUND);
        }
        if !self.allows(to, Direction::Inbound, &l4, saddr) {
            let drop = Verdict::Drop {
                reason: drop_reason::SG_DENIED_INBOUND,
                counted_on: to,
            };
            return Ok((drop, false));
        }
        if l4.opens() {
            let (sport, dport) = l4.ports().unwrap_or((0, 0));
            let key = ConnKey {
                segment: self.nic(ingress).segment,
                saddr,
                daddr,
                sport,
                dport,
                proto: l4.proto(),
            };
            // A new connection takes the tuple's place only if the entry there has expired.
            let conn = Conn {
                origin: ingress,
                reply: to,
                last_seen_ns: now_ns,
                closing: l4.closing(),
            };
            let proto = key.proto;
            self.connections
                .entry(key)
                .and_modify(|old| {
                    if !old.live(proto, now_ns) {
                        *old = conn;
                    }
                })
                .or_insert(conn);
        }
        Ok((Verdict::Redirect { to }, false))
    }

    /// Whether the frame belongs to a live connection, opened either from `from` to `to` (same
    /// direction) or from `to` to `from` (a reply); refreshes it if so.
    fn track(
        &mut self,
        l4: &L4,
        saddr: Ipv6Addr,
        daddr: Ipv6Addr,
        from: NicId,
        to: NicId,
        now_ns: u64,
    ) -> bool {
        let Some((sport, dport)) = l4.ports() else {
            return false;
        };
        let proto = l4.proto();
        let key = ConnKey {
            segment: self.nic(from).segment,
            saddr,
            daddr,
            sport,
            dport,
            proto,
        };
        for (key, origin, reply) in [(key, from, to), (key.reversed(), to, from)] {
            if let Some(conn) = self.connections.get_mut(&key) {
                if conn.origin == origin && conn.reply == reply && conn.live(proto, now_ns) {
                    conn.closing |= l4.closing();
                    conn.last_seen_ns = now_ns;
                    return true;
                }
            }
        }
        false
    }

    /// Whether any rule of the NIC's groups allows the frame in `direction`, with `remote` the
    /// address at the other end.
    fn allows(&self, id: NicId, direction: Direction, l4: &L4, remote: Ipv6Addr) -> bool {
        self.nic(id).rules.iter().any(|rule| {
            rule.direction == direction && self.rule_matches(rule, self.nic(id).segment, l4, remote)
        })
    }

    /// Whether `rule`, of a NIC in `segment`, matches the frame.
    fn rule_matches(&self, rule: &Rule, segment: Segment, l4: &L4, remote: Ipv6Addr) -> bool {
        let remote_ok = match &rule.remote {
            Remote::Any => true,
            Remote::Cidr(cidr) => cidr.contains(remote),
            Remote::Group(group) => self
                .members
                .get(&(group.clone(), segment))
                .is_some_and(|m| m.contains(&remote)),
        };
        let in_ports = |port: u16| rule.ports.is_none_or(|(lo, hi)| lo <= port && port <= hi);
        remote_ok
            && match (rule.protocol, *l4) {
                (Protocol::All, _) => true,
                (Protocol::Tcp, L4::Tcp { dport, .. }) | (Protocol::Udp, L4::Udp { dport, .. }) => {
                    in_ports(dport)
                }
                (
                    Protocol::Icmp,
                    L4::Icmp {
                        v6: false,
                        icmp_type,
                        code,
                        ..
                    },
                )
                | (
                    Protocol::Icmpv6,
                    L4::Icmp {
                        v6: true,
                        icmp_type,
                        code,
                        ..
                    },
                ) => {
                    rule.icmp_type.is_none_or(|t| t == icmp_type)
                        && rule.icmp_code.is_none_or(|c| c == code)
                }
                // A later fragment has no ports, type or code: only rules that ask for none
                // allow it.
                (Protocol::Tcp, L4::LaterFragment { proto: IPPROTO_TCP })
                | (Protocol::Udp, L4::LaterFragment { proto: IPPROTO_UDP }) => rule.ports.is_none(),
                (
                    Protocol::Icmp,
                    L4::LaterFragment {
                        proto: IPPROTO_ICMP,
                    },
                )
                | (
                    Protocol::Icmpv6,
                    L4::LaterFragment {
                        proto: IPPROTO_ICMPV6,
                    },
                ) => rule.icmp_type.is_none(),
                _ => false,
            }
    }

    /// ARP in layer 3 mode: `Ok` if the fabric answers the request.
    fn arp(&self, ingress: NicId, frame: &[u8]) -> Result<NicId, u32> {
        let arp = frame
            .get(ETH_HLEN..ETH_HLEN + ARP_LEN)
            .ok_or(drop_reason::MALFORMED)?;
        if be16(arp, 0) != 1 || be16(arp, 2) != ETH_P_IP || arp[4] != 6 || arp[5] != 4 {
            return Err(drop_reason::MALFORMED);
        }
        if be16(arp, 6) != 1 {
            return Err(drop_reason::ARP_IGNORED);
        }
        self.check_source_mac(ingress, &frame[6..12])?;
        self.check_source_mac(ingress, &arp[8..14])?;
        let spa = addr(arp, 14);
        // 0.0.0.0 is an address probe (RFC 5227) and claims nothing.
        if spa != Ipv4Addr::UNSPECIFIED.to_ipv6_mapped() {
            self.check_source(ingress, spa)?;
        }
        self.destination(ingress, addr(arp, 24))
    }

    /// Turns an answered request into its reply, in place.
    fn arp_reply(&self, ingress: NicId, frame: &mut [u8]) {
        let target = self
            .arp(ingress, frame)
            .expect("only answered requests get a reply");
        let target_mac = self.nic(target).mac;
        let asker_mac: [u8; 6] = frame[22..28].try_into().expect("6 bytes");
        let (spa, tpa) = (frame[28..32].to_vec(), frame[38..42].to_vec());
        frame[0..6].copy_from_slice(&asker_mac);
        frame[6..12].copy_from_slice(&target_mac);
        frame[20..22].copy_from_slice(&2u16.to_be_bytes());
        frame[22..28].copy_from_slice(&target_mac);
        frame[28..32].copy_from_slice(&tpa);
        frame[32..38].copy_from_slice(&asker_mac);
        frame[38..42].copy_from_slice(&spa);
    }
}

/// Walks the extension headers of the IPv6 `packet` (network header to end), starting with
/// next header `first`: the transport protocol, its offset in `packet`, and whether the packet
/// is a later fragment (the walk stops at its fragment header). More than
/// `MAX_IPV6_EXT_HEADERS` headers, or one cut by the packet's end, is malformed.
fn extension_headers(first: u8, packet: &[u8]) -> Result<(u8, usize, bool), u32> {
    let (mut proto, mut offset) = (first, IPV6_HLEN);
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match proto {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let ext = packet
                    .get(offset..offset + 2)
                    .ok_or(drop_reason::MALFORMED)?;
                proto = ext[0];
                offset += (usize::from(ext[1]) + 1) * 8;
                if offset > packet.len() {
                    return Err(drop_reason::MALFORMED);
                }
            }
            IPPROTO_FRAGMENT => {
                let frag = packet
                    .get(offset..offset + 8)
                    .ok_or(drop_reason::MALFORMED)?;
                proto = frag[0];
                offset += 8;
                if be16(frag, 2) & 0xfff8 != 0 {
                    return Ok((proto, offset, true));
                }
            }
            _ => return Ok((proto, offset, false)),
        }
    }
    match proto {
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT => {
            Err(drop_reason::MALFORMED)
        }
        _ => Ok((proto, offset, false)),
    }
}

/// The ICMPv6 checksum of `message` from `src` to `dst` (RFC 8200 pseudo-header).
pub fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, message: &[u8]) -> u16 {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&src.octets());
    bytes.extend_from_slice(&dst.octets());
    bytes.extend_from_slice(&(message.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&[0, 0, 0, IPPROTO_ICMPV6]);
    bytes.extend_from_slice(message);
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The layer 4 facts of an IPv4 packet's payload (`data`: from the end of the IPv4 header to
/// the end of the packet). A transport header that does not fit is malformed.
fn transport(v6: bool, proto: u8, later_fragment: bool, data: &[u8]) -> Result<L4, u32> {
    // ICMP is ICMPv6 in IPv6, and just another protocol in the other family.
    let icmp = if v6 { IPPROTO_ICMPV6 } else { IPPROTO_ICMP };
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP && proto != icmp {
        return Ok(L4::Other { proto });
    }
    if later_fragment {
        return Ok(L4::LaterFragment { proto });
    }
    let need = match proto {
        IPPROTO_TCP => TCP_HLEN,
        IPPROTO_UDP => UDP_HLEN,
        _ => ICMP_HLEN,
    };
    if data.len() < need {
        return Err(drop_reason::MALFORMED);
    }
    Ok(match proto {
        IPPROTO_TCP => L4::Tcp {
            sport: be16(data, 0),
            dport: be16(data, 2),
            flags: data[13],
        },
        IPPROTO_UDP => L4::Udp {
            sport: be16(data, 0),
            dport: be16(data, 2),
        },
        _ => L4::Icmp {
            v6,
            icmp_type: data[0],
            code: data[1],
            id: be16(data, 4),
        },
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Three NICs on F0 (A: web; B: db; D: default, may spoof) and one on F1 (C), which shares
    /// B's second address; two layer-2 NICs on F0 (E: default; F: no address, may spoof).
    const FABRIC: &str = r#"
[fabric]
name = "model"

[[chpid]]
id = "F0"
mfs = "16K"

[[chpid]]
id = "F1"
mfs = "16K"

[[security_group]]
name = "web"
rules = [
  { direction = "inbound",  protocol = "tcp", port_min = 80, port_max = 443 },
  { direction = "inbound",  protocol = "icmp", type = 8 },
  { direction = "outbound", protocol = "tcp", port_min = 5432, port_max = 5432, remote_group = "db" },
]

[[security_group]]
name = "db"
rules = [
  { direction = "inbound", protocol = "tcp", port_min = 5432, port_max = 5432, remote_group = "web" },
  { direction = "outbound", protocol = "icmp", remote = "10.0.0.0/24" },
  { direction = "outbound", protocol = "udp", port_min = 53, port_max = 53, remote = "10.0.0.4" },
]

[[lpar]]
name = "A"
netns = "a"
[[lpar.nic]]
chpid = "F0"
devno = "7000"
ipv4 = ["10.0.0.1/24"]
security_groups = ["web"]

[[lpar]]
name = "B"
netns = "b"
[[lpar.nic]]
chpid = "F0"
devno = "7003"
ipv4 = ["10.0.0.2/24", "10.9.0.1/24"]
security_groups = ["db"]

[[lpar]]
name = "C"
netns = "c"
[[lpar.nic]]
chpid = "F1"
devno = "7100"
ipv4 = ["10.1.0.3/24", "10.9.0.1/24"]

[[lpar]]
name = "D"
netns = "d"
[[lpar.nic]]
chpid = "F0"
devno = "7006"
ipv4 = ["10.0.0.4/24"]
allow_ip_spoofing = true

[[lpar]]
name = "E"
netns = "e"
[[lpar.nic]]
chpid = "F0"
devno = "7009"
layer2 = true
ipv4 = ["10.0.0.5/24"]

[[lpar]]
name = "F"
netns = "f"
[[lpar.nic]]
chpid = "F0"
devno = "700c"
layer2 = true
allow_ip_spoofing = true
"#;

    fn model() -> Model {
        Model::new(&Fabric::parse(FABRIC, Path::new("model.toml")).expect("valid fabric"))
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("address")
    }

    /// An Ethernet frame with an IPv4 header (no options) and `payload`; `frag` is the
    /// fragment offset field.
    fn ipv4(
        src_mac: [u8; 6],
        src: &str,
        dst: &str,
        proto: u8,
        frag: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&src_mac);
        f.extend_from_slice(&ETH_P_IP.to_be_bytes());
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&(20 + payload.len() as u16).to_be_bytes());
        f.extend_from_slice(&[0, 1]);
        f.extend_from_slice(&frag.to_be_bytes());
        f.extend_from_slice(&[64, proto, 0, 0]);
        f.extend_from_slice(&ip(src).octets());
        f.extend_from_slice(&ip(dst).octets());
        f.extend_from_slice(payload);
        f
    }

    fn tcp(src_mac: [u8; 6], src: &str, dst: &str, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut seg = Vec::new();
        seg.extend_from_slice(&sport.to_be_bytes());
        seg.extend_from_slice(&dport.to_be_bytes());
        seg.extend_from_slice(&[0; 8]);
        seg.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        ipv4(src_mac, src, dst, IPPROTO_TCP, 0, &seg)
    }

    fn udp(src_mac: [u8; 6], src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
        let mut seg = Vec::new();
        seg.extend_from_slice(&sport.to_be_bytes());
        seg.extend_from_slice(&dport.to_be_bytes());
        seg.extend_from_slice(&[0, 8, 0, 0]);
        ipv4(src_mac, src, dst, IPPROTO_UDP, 0, &seg)
    }

    fn icmp(src_mac: [u8; 6], src: &str, dst: &str, icmp_type: u8, code: u8, id: u16) -> Vec<u8> {
        let mut msg = vec![icmp_type, code, 0, 0];
        msg.extend_from_slice(&id.to_be_bytes());
        msg.extend_from_slice(&[0, 1]);
        ipv4(src_mac, src, dst, IPPROTO_ICMP, 0, &msg)
    }

    fn arp(src_mac: [u8; 6], oper: u16, spa: &str, tpa: &str) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&src_mac);
        f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
        f.extend_from_slice(&oper.to_be_bytes());
        f.extend_from_slice(&src_mac);
        f.extend_from_slice(&ip(spa).octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&ip(tpa).octets());
        f
    }

    struct Nics {
        a: NicId,
        b: NicId,
        c: NicId,
        d: NicId,
    }

    fn ids(m: &Model) -> Nics {
        let id = |l: &str| m.nic_id(l, "hsi0").expect("NIC");
        Nics {
            a: id("A"),
            b: id("B"),
            c: id("C"),
            d: id("D"),
        }
    }

    fn drop(reason: u32, counted_on: NicId) -> Verdict {
        Verdict::Drop { reason, counted_on }
    }

    #[test]
    fn groups_on_both_ends_decide_and_replies_are_tracked() {
        let mut m = model();
        let n = ids(&m);
        let (mac_a, mac_b) = (m.nic(n.a).mac, m.nic(n.b).mac);
        // A may open 5432 to B (a db member); B's db group takes it from web members.
        let syn = tcp(mac_a, "10.0.0.1", "10.0.0.2", 40000, 5432, 0x02);
        let out = m.handle(n.a, &syn, 0);
        assert_eq!(out.verdict, Verdict::Redirect { to: n.b });
        assert_eq!(&out.frame[..6], &mac_b, "destination MAC rewritten");
        assert_eq!(&out.frame[6..], &syn[6..]);
        // B has no outbound TCP rule, yet its reply passes: the connection is tracked.
        let reply = tcp(mac_b, "10.0.0.2", "10.0.0.1", 5432, 40000, 0x12);
        let out = m.handle(n.b, &reply, 1);
        assert_eq!(out.verdict, Verdict::Redirect { to: n.a });
        assert!(out.tracked, "the reply passed by the tracked connection");
        assert_eq!(m.connection_count(), 1);
        // B opening its own connection to A is refused by B's outbound rules.
        let syn_b = tcp(mac_b, "10.0.0.2", "10.0.0.1", 40001, 80, 0x02);
        assert_eq!(
            m.handle(n.b, &syn_b, 2).verdict,
            drop(drop_reason::SG_DENIED_OUTBOUND, n.b)
        );
        // A to another port of B: A's outbound allows only 5432.
        let other = tcp(mac_a, "10.0.0.1", "10.0.0.2", 40000, 5433, 0x02);
        assert_eq!(
            m.handle(n.a, &other, 3).verdict,
            drop(drop_reason::SG_DENIED_OUTBOUND, n.a)
        );
    }

    #[test]
    fn inbound_denials_are_counted_on_the_receiver() {
        let mut m = model();
        let n = ids(&m);
        let mac_d = m.nic(n.d).mac;
        // D has the default group (all outbound); A's web group takes TCP 80-443 from anyone.
        let ok = tcp(mac_d, "10.0.0.4", "10.0.0.1", 1234, 443, 0x02);
        assert_eq!(m.handle(n.d, &ok, 0).verdict, Verdict::Redirect { to: n.a });
        let refused = tcp(mac_d, "10.0.0.4", "10.0.0.1", 1234, 444, 0x02);
        assert_eq!(
            m.handle(n.d, &refused, 0).verdict,
            drop(drop_reason::SG_DENIED_INBOUND, n.a)
        );
        // UDP to B: B's db group has no inbound UDP rule.
        let dns = udp(mac_d, "10.0.0.4", "10.0.0.2", 53, 53);
        assert_eq!(
            m.handle(n.d, &dns, 0).verdict,
            drop(drop_reason::SG_DENIED_INBOUND, n.b)
        );
        // ICMP by type: echo requests to A pass, timestamps do not.
        let ping = icmp(mac_d, "10.0.0.4", "10.0.0.1", 8, 0, 7);
        assert_eq!(
            m.handle(n.d, &ping, 0).verdict,
            Verdict::Redirect { to: n.a }
        );
        let pong = icmp(m.nic(n.a).mac, "10.0.0.1", "10.0.0.4", 0, 0, 7);
        assert_eq!(
            m.handle(n.a, &pong, 0).verdict,
            Verdict::Redirect { to: n.d }
        );
        let timestamp = icmp(mac_d, "10.0.0.4", "10.0.0.1", 13, 0, 7);
        assert_eq!(
            m.handle(n.d, &timestamp, 0).verdict,
            drop(drop_reason::SG_DENIED_INBOUND, n.a)
        );
    }

    #[test]
    fn fabric_checks_come_before_security_groups() {
        let mut m = model();
        let n = ids(&m);
        let (mac_a, mac_d) = (m.nic(n.a).mac, m.nic(n.d).mac);
        let cases = [
            // Another NIC's source MAC.
            (
                n.a,
                tcp(mac_d, "10.0.0.1", "10.0.0.2", 1, 5432, 2),
                drop_reason::SPOOFED_SOURCE,
            ),
            // B's address from A.
            (
                n.a,
                tcp(mac_a, "10.0.0.2", "10.0.0.4", 1, 80, 2),
                drop_reason::SPOOFED_SOURCE,
            ),
            // C's address on F1 only.
            (
                n.a,
                tcp(mac_a, "10.0.0.1", "10.1.0.3", 1, 80, 2),
                drop_reason::NOT_MEMBER,
            ),
            (
                n.a,
                tcp(mac_a, "10.0.0.1", "10.0.0.99", 1, 80, 2),
                drop_reason::NO_DESTINATION,
            ),
            (
                n.a,
                tcp(mac_a, "10.0.0.1", "10.0.0.1", 1, 80, 2),
                drop_reason::NO_DESTINATION,
            ),
            // Cut inside the TCP header.
            (
                n.a,
                tcp(mac_a, "10.0.0.1", "10.0.0.2", 1, 5432, 2)[..50].to_vec(),
                drop_reason::MALFORMED,
            ),
            // The frame size comes first.
            (
                n.a,
                {
                    let mut f = tcp(mac_d, "1.2.3.4", "10.0.0.2", 1, 5432, 2);
                    f.resize(8192 + 15, 0);
                    f
                },
                drop_reason::MFS_EXCEEDED,
            ),
            (
                n.a,
                {
                    // A local experimental EtherType: neither IPv4, IPv6 nor ARP.
                    let mut f = tcp(mac_a, "10.0.0.1", "10.0.0.2", 1, 5432, 2);
                    f[12] = 0x88;
                    f[13] = 0xb5;
                    f
                },
                drop_reason::NON_IP,
            ),
        ];
        for (i, (from, frame, reason)) in cases.into_iter().enumerate() {
            assert_eq!(
                m.handle(from, &frame, 0).verdict,
                drop(reason, from),
                "case {i}"
            );
        }
        // D may spoof its source address: then the rules decide (default: all outbound; A's web
        // group takes 80-443).
        let spoofed = tcp(mac_d, "192.0.2.1", "10.0.0.1", 1, 80, 2);
        assert_eq!(
            m.handle(n.d, &spoofed, 0).verdict,
            Verdict::Redirect { to: n.a }
        );
        // The shared address goes to the NIC on the sender's CHPID.
        let shared = tcp(mac_d, "10.0.0.4", "10.9.0.1", 1, 5432, 2);
        assert_eq!(
            m.handle(n.d, &shared, 0).verdict,
            drop(drop_reason::SG_DENIED_INBOUND, n.b),
            "B's db group takes 5432 only from web members"
        );
        let _ = n.c;
    }

    #[test]
    fn later_fragments_match_only_rules_without_ports_or_types() {
        let mut m = model();
        let n = ids(&m);
        let (mac_a, mac_b, mac_d) = (m.nic(n.a).mac, m.nic(n.b).mac, m.nic(n.d).mac);
        // B's outbound ICMP to 10.0.0.0/24 has no type; D (default) takes inbound from its
        // own members only, and B is not one: refused inbound, not outbound.
        let frag = ipv4(mac_b, "10.0.0.2", "10.0.0.4", IPPROTO_ICMP, 100, &[0; 8]);
        assert_eq!(
            m.handle(n.b, &frag, 0).verdict,
            drop(drop_reason::SG_DENIED_INBOUND, n.d)
        );
        // A's inbound ICMP rule names type 8: a later fragment has no type.
        let frag = ipv4(mac_d, "10.0.0.4", "10.0.0.1", IPPROTO_ICMP, 100, &[0; 8]);
        assert_eq!(
            m.handle(n.d, &frag, 0).verdict,
            drop(drop_reason::SG_DENIED_INBOUND, n.a)
        );
        // A's inbound TCP rule has a port range: a later fragment has no port.
        let frag = ipv4(mac_d, "10.0.0.4", "10.0.0.1", IPPROTO_TCP, 0x2001, &[]);
        assert_eq!(
            m.handle(n.d, &frag, 0).verdict,
            drop(drop_reason::SG_DENIED_INBOUND, n.a)
        );
        // A first fragment carries its ports.
        let mut first = tcp(mac_d, "10.0.0.4", "10.0.0.1", 1, 80, 2);
        first[20] = 0x20; // more fragments, offset 0
        assert_eq!(
            m.handle(n.d, &first, 0).verdict,
            Verdict::Redirect { to: n.a }
        );
        // A's outbound allows nothing but TCP 5432 to db members.
        let gre = ipv4(mac_a, "10.0.0.1", "10.0.0.4", 47, 0, &[0; 4]);
        assert_eq!(
            m.handle(n.a, &gre, 0).verdict,
            drop(drop_reason::SG_DENIED_OUTBOUND, n.a)
        );
    }

    #[test]
    fn connections_expire_when_idle() {
        let mut m = model();
        let n = ids(&m);
        let (mac_a, mac_d) = (m.nic(n.a).mac, m.nic(n.d).mac);
        let ping = icmp(mac_d, "10.0.0.4", "10.0.0.1", 8, 0, 9);
        assert_eq!(
            m.handle(n.d, &ping, 0).verdict,
            Verdict::Redirect { to: n.a }
        );
        // A's echo reply needs the tracked connection (A has no outbound ICMP rule).
        let pong = icmp(mac_a, "10.0.0.1", "10.0.0.4", 0, 0, 9);
        assert_eq!(
            m.handle(n.a, &pong, ct_timeout::ICMP_NS).verdict,
            Verdict::Redirect { to: n.d }
        );
        assert_eq!(
            m.handle(n.a, &pong, 2 * ct_timeout::ICMP_NS + 1).verdict,
            drop(drop_reason::SG_DENIED_OUTBOUND, n.a)
        );
        // TCP after a FIN: the closing timeout applies.
        let syn = tcp(mac_d, "10.0.0.4", "10.0.0.1", 5, 80, 0x02);
        let fin = tcp(mac_a, "10.0.0.1", "10.0.0.4", 80, 5, 0x11);
        assert_eq!(
            m.handle(n.d, &syn, 0).verdict,
            Verdict::Redirect { to: n.a }
        );
        assert_eq!(
            m.handle(n.a, &fin, 1).verdict,
            Verdict::Redirect { to: n.d }
        );
        let late = 2 + ct_timeout::TCP_CLOSING_NS;
        assert_eq!(
            m.handle(n.a, &fin, late).verdict,
            drop(drop_reason::SG_DENIED_OUTBOUND, n.a)
        );
    }

    #[test]
    fn arp_is_answered_by_the_fabric() {
        let mut m = model();
        let n = ids(&m);
        let (mac_a, mac_b) = (m.nic(n.a).mac, m.nic(n.b).mac);
        let request = arp(mac_a, 1, "10.0.0.1", "10.9.0.1");
        let out = m.handle(n.a, &request, 0);
        assert_eq!(out.verdict, Verdict::Reply);
        let mut want = mac_a.to_vec();
        want.extend_from_slice(&mac_b);
        want.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
        want.extend_from_slice(&mac_b);
        want.extend_from_slice(&[10, 9, 0, 1]);
        want.extend_from_slice(&mac_a);
        want.extend_from_slice(&[10, 0, 0, 1]);
        assert_eq!(out.frame, want);
        let cases = [
            (
                arp(mac_a, 2, "10.0.0.1", "10.0.0.2"),
                drop_reason::ARP_IGNORED,
            ),
            (
                arp(mac_b, 1, "10.0.0.1", "10.0.0.2"),
                drop_reason::SPOOFED_SOURCE,
            ),
            (
                arp(mac_a, 1, "10.0.0.4", "10.0.0.2"),
                drop_reason::SPOOFED_SOURCE,
            ),
            (
                arp(mac_a, 1, "10.0.0.1", "10.1.0.3"),
                drop_reason::NOT_MEMBER,
            ),
            (
                arp(mac_a, 1, "0.0.0.0", "10.0.0.1"),
                drop_reason::NO_DESTINATION,
            ),
            (
                arp(mac_a, 1, "10.0.0.1", "10.0.0.2")[..41].to_vec(),
                drop_reason::MALFORMED,
            ),
        ];
        for (i, (frame, reason)) in cases.into_iter().enumerate() {
            assert_eq!(
                m.handle(n.a, &frame, 0).verdict,
                drop(reason, n.a),
                "case {i}"
            );
        }
        // Security groups do not apply to ARP; a spoofing NIC may claim any sender address.
        let spoofing = arp(m.nic(n.d).mac, 1, "10.0.0.2", "10.0.0.1");
        assert_eq!(m.handle(n.d, &spoofing, 0).verdict, Verdict::Reply);
        assert_eq!(ip("10.0.0.1"), m.nic(n.a).addrs[0]);
    }

    /// An Ethernet frame of EtherType `ether_type`.
    fn eth(dst: [u8; 6], src: [u8; 6], ether_type: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&ether_type.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn layer2_nics_forward_by_mac_and_not_to_layer3() {
        let mut m = model();
        let n = ids(&m);
        let id = |l: &str| m.nic_id(l, "hsi0").expect("NIC");
        let (e, f) = (id("E"), id("F"));
        let (mac_a, mac_e, mac_f) = (m.nic(n.a).mac, m.nic(e).mac, m.nic(f).mac);
        // Any EtherType to a layer-2 NIC's MAC, left as written; none to a layer-3 NIC's MAC,
        // its own, or an unknown one.
        let other = eth(mac_f, mac_e, 0x88b5, &[1, 2, 3]);
        let out = m.handle(e, &other, 0);
        assert_eq!(out.verdict, Verdict::Redirect { to: f });
        assert_eq!(out.frame, other);
        for (to, reason) in [
            (mac_a, drop_reason::LAYER_MISMATCH),
            (mac_e, drop_reason::NO_DESTINATION),
            ([0x02, 9, 9, 9, 9, 9], drop_reason::NO_DESTINATION),
        ] {
            let frame = eth(to, mac_e, 0x88b5, &[]);
            assert_eq!(m.handle(e, &frame, 0).verdict, drop(reason, e));
        }
        // Group MACs are flooded; the source MAC is checked first, unless the NIC may spoof.
        assert_eq!(
            m.handle(e, &eth([0xff; 6], mac_e, 0x88b5, &[]), 0).verdict,
            Verdict::OneToMany
        );
        assert_eq!(
            m.handle(e, &eth([0x33, 0x33, 0, 0, 0, 1], mac_a, 0x88b5, &[]), 0)
                .verdict,
            drop(drop_reason::SPOOFED_SOURCE, e)
        );
        assert_eq!(
            m.handle(f, &eth(mac_e, mac_a, 0x88b5, &[]), 0).verdict,
            Verdict::Redirect { to: e }
        );
        // ARP is the LPARs' own on layer 2: forwarded, not answered.
        let mut request = arp(mac_e, 1, "10.0.0.5", "10.0.0.9");
        request[..6].copy_from_slice(&mac_f);
        assert_eq!(
            m.handle(e, &request, 0).verdict,
            Verdict::Redirect { to: f }
        );
        // IP: the layer-3 checks and rules, the target by MAC, the MAC kept.
        let syn = tcp(mac_e, "10.0.0.5", "10.0.0.1", 1, 80, 2);
        let mut to_f = syn.clone();
        to_f[..6].copy_from_slice(&mac_f);
        let out = m.handle(e, &to_f, 0);
        assert_eq!(out.verdict, Verdict::Redirect { to: f });
        assert_eq!(out.frame, to_f);
        let mut spoofed = tcp(mac_e, "10.0.0.1", "10.0.0.5", 1, 80, 2);
        spoofed[..6].copy_from_slice(&mac_f);
        assert_eq!(
            m.handle(e, &spoofed, 0).verdict,
            drop(drop_reason::SPOOFED_SOURCE, e)
        );
        // A layer-3 NIC cannot reach a layer-2 NIC's address, nor ask for it.
        let syn = tcp(mac_a, "10.0.0.1", "10.0.0.5", 1, 5432, 2);
        assert_eq!(
            m.handle(n.a, &syn, 0).verdict,
            drop(drop_reason::LAYER_MISMATCH, n.a)
        );
        assert_eq!(
            m.handle(n.a, &arp(mac_a, 1, "10.0.0.1", "10.0.0.5"), 0)
                .verdict,
            drop(drop_reason::LAYER_MISMATCH, n.a)
        );
    }

    #[test]
    fn stopped_lpars_are_out_of_the_routes() {
        let mut m = model();
        let n = ids(&m);
        let (e, f) = (
            m.nic_id("E", "hsi0").expect("E"),
            m.nic_id("F", "hsi0").expect("F"),
        );
        m.stop_lpar("B");
        m.stop_lpar("F");
        let mac_a = m.nic(n.a).mac;
        let syn = tcp(mac_a, "10.0.0.1", "10.0.0.2", 1, 5432, 2);
        assert_eq!(
            m.handle(n.a, &syn, 0).verdict,
            drop(drop_reason::LPAR_STOPPED, n.a)
        );
        // An ARP request for a stopped LPAR's address goes unanswered the same way.
        assert_eq!(
            m.handle(n.a, &arp(mac_a, 1, "10.0.0.1", "10.0.0.2"), 0)
                .verdict,
            drop(drop_reason::LPAR_STOPPED, n.a)
        );
        let to_f = eth(m.nic(f).mac, m.nic(e).mac, 0x88b5, &[]);
        assert_eq!(
            m.handle(e, &to_f, 0).verdict,
            drop(drop_reason::LPAR_STOPPED, e)
        );
    }
}
