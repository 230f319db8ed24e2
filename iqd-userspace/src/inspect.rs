//! Reading a fabric back for `iqd status` and `iqd stats`: configuration, live links, counters.
//! A fabric whose pins another map layout wrote is refused with what to run instead.
use serde::Serialize;

use crate::{
    config::{self, Datapath, Fabric},
    dataplane::{self, FabricMaps},
    error::Result,
    fabric::port_name,
    layout,
    netlink::Netlink,
    netns,
    state::State,
    switch,
};

#[derive(Debug, Serialize)]
pub struct Status {
    pub fabric: String,
    pub netns: String,
    /// "up" when the fabric namespace and pinned maps exist, otherwise "down".
    pub state: String,
    /// The fabric file's data path (`tc`, `xdp` or `afxdp`), which `up` set up.
    pub datapath: String,
    pub pin_dir: String,
    pub chpids: Vec<ChpidStatus>,
    pub lpars: Vec<LparStatus>,
    /// Each segment's multicast groups (registered by the LPARs' IGMP and MLD reports) and
    /// broadcast addresses, with their member NICs.
    pub groups: Vec<GroupStatus>,
    /// Data path `afxdp`: the AF_XDP switch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switch: Option<SwitchStatus>,
}

/// The AF_XDP switch of an `afxdp` fabric.
#[derive(Debug, Serialize)]
pub struct SwitchStatus {
    /// Whether the switch process is alive. When it is not, frames move in the kernel.
    pub running: bool,
    pub pid: Option<u32>,
    pub uptime_s: Option<f64>,
    /// The switch's last report (kept after it stopped or died): frames moved, the ledger of
    /// its UMEM frames, its sockets.
    pub report: Option<switch::Report>,
}

fn switch_status(fabric: &str) -> SwitchStatus {
    let pid = switch::running_pid(fabric);
    let report = switch::read_report(fabric);
    let uptime_s = match (&pid, &report) {
        (Some(pid), Some(r)) if r.pid == *pid => {
            Some(switch::process::unix_ms().saturating_sub(r.started_unix_ms) as f64 / 1000.0)
        }
        _ => None,
    };
    SwitchStatus {
        running: pid.is_some(),
        pid,
        uptime_s,
        report,
    }
}

#[derive(Debug, Serialize)]
pub struct ChpidStatus {
    pub chpid: String,
    pub mfs: String,
    pub mtu: u32,
    /// "LPAR/NIC" of every member.
    pub members: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct LparStatus {
    pub lpar: String,
    pub netns: String,
    /// running or stopped (`iqd lpar stop`/`start`); absent: not built (fabric down, or the
    /// file adds it and `iqd up` has not run).
    pub state: String,
    /// Its profile, if the file names one.
    pub profile: Option<String>,
    /// The bandwidth its NICs share per direction (`2Gbps`), its own or its profile's; `None`:
    /// not limited.
    pub bandwidth: Option<String>,
    pub nics: Vec<NicStatus>,
}

/// The lifecycle state of `lpar` as the state file records it: `running`, `stopped`, or
/// `absent` if the fabric does not have it.
pub fn lpar_state(state: Option<&State>, lpar: &str) -> String {
    match state {
        Some(s) if s.has_lpar(lpar) => s.lpars.get(lpar).copied().unwrap_or_default().to_string(),
        _ => "absent".to_string(),
    }
}

#[derive(Debug, Serialize)]
pub struct NicStatus {
    pub nic: String,
    pub chpid: String,
    /// The NIC's VLAN in its CHPID; `null`: the CHPID's untagged segment.
    pub vlan: Option<u16>,
    pub devices: String,
    pub mac: String,
    pub ipv4: Vec<String>,
    /// The file's IPv6 addresses (the link-local address is `link_local`).
    pub ipv6: Vec<String>,
    /// The NIC's link-local address, from its MAC, registered with its CHPID like the others.
    pub link_local: String,
    /// The NIC's MTU as the LPAR has it set (the CHPID's unless the LPAR changed it).
    pub mtu: Option<u32>,
    pub port: String,
    /// online: both ends up and the program attached; offline: present but not carrying;
    /// absent: not created (fabric down, or the namespace lost it).
    pub state: String,
    /// The NIC's security groups, as the file lists them (or `default`).
    pub security_groups: Vec<String>,
    pub allow_ip_spoofing: bool,
    /// A layer-2 NIC (`layer2`): forwarded by MAC, ordinary ARP.
    pub layer2: bool,
    /// Whether the NIC takes broadcasts (`rx_bcast`).
    pub rx_bcast: bool,
}

pub async fn status(fabric: &Fabric) -> Result<Status> {
    let pin_dir = dataplane::pin_dir(&fabric.name);
    let fabric_ns = fabric.netns_name();
    let up = netns::exists(&fabric_ns) && pin_dir.exists();
    if up {
        // Pins of another map layout: say so, and what to run, rather than show a fabric that
        // this iqd's programs are not running.
        layout::require_readable(&fabric.name, &pin_dir)?;
    }
    let fabric_nl = if up {
        Some(Netlink::open(&fabric_ns)?)
    } else {
        None
    };

    let chpids = fabric
        .chpids
        .iter()
        .map(|c| ChpidStatus {
            chpid: config::chpid_label(c.id),
            mfs: c.mfs.label().to_string(),
            mtu: c.mfs.mtu(),
            members: fabric
                .lpars
                .iter()
                .flat_map(|l| {
                    l.nics
                        .iter()
                        .filter(|n| n.chpid == c.id)
                        .map(move |n| format!("{}/{}", l.name, n.name))
                })
                .collect(),
        })
        .collect();

    let recorded = State::load(&fabric.name)?.filter(|_| up);
    let mut lpars = Vec::new();
    for lpar in &fabric.lpars {
        let lpar_state = lpar_state(recorded.as_ref(), &lpar.name);
        let lpar_nl = if up && netns::exists(&lpar.netns) {
            Some(Netlink::open(&lpar.netns)?)
        } else {
            None
        };
        let mut nics = Vec::new();
        for nic in &lpar.nics {
            let port = port_name(nic);
            let port_link = match &fabric_nl {
                Some(nl) => nl.link(&port).await?,
                None => None,
            };
            let nic_link = match &lpar_nl {
                Some(nl) => nl.link(&nic.name).await?,
                None => None,
            };
            let attached = dataplane::is_attached(&pin_dir, &port);
            let state = match (&port_link, &nic_link) {
                (Some(p), Some(n)) if attached && p.up && n.up && n.oper_up => "online",
                // Its port is down on purpose (`iqd lpar stop`).
                (Some(_), Some(_)) if lpar_state == "stopped" => "stopped",
                (Some(_), Some(_)) => "offline",
                _ => "absent",
            };
            nics.push(NicStatus {
                nic: nic.name.clone(),
                chpid: config::chpid_label(nic.chpid),
                vlan: nic.vlan,
                devices: nic.device_triple(),
                mac: config::format_mac(&nic.mac),
                ipv4: nic.ipv4.iter().map(|a| a.to_string()).collect(),
                ipv6: nic.ipv6.iter().map(|a| a.to_string()).collect(),
                link_local: nic.link_local().to_string(),
                mtu: nic_link.as_ref().map(|l| l.mtu),
                port,
                state: state.to_string(),
                security_groups: nic.security_groups.clone(),
                allow_ip_spoofing: nic.allow_ip_spoofing,
                layer2: nic.layer2,
                rx_bcast: nic.rx_bcast,
            });
        }
        lpars.push(LparStatus {
            lpar: lpar.name.clone(),
            netns: lpar.netns.clone(),
            state: lpar_state,
            profile: lpar.profile.map(|p| p.name.to_string()),
            bandwidth: lpar.effective_bandwidth().map(|b| b.to_string()),
            nics,
        });
    }
    let groups = match &fabric_nl {
        Some(nl) => groups(fabric, nl).await?,
        None => Vec::new(),
    };
    Ok(Status {
        groups,
        fabric: fabric.name.clone(),
        netns: fabric_ns,
        state: if up { "up" } else { "down" }.to_string(),
        datapath: fabric.datapath.to_string(),
        pin_dir: pin_dir.display().to_string(),
        chpids,
        lpars,
        switch: (fabric.datapath == Datapath::Afxdp).then(|| switch_status(&fabric.name)),
    })
}

/// A group or broadcast address of a segment and the NICs it reaches.
#[derive(Debug, Serialize)]
pub struct GroupStatus {
    pub chpid: String,
    /// `None`: the CHPID's untagged segment.
    pub vlan: Option<u16>,
    pub group: String,
    /// "multicast" (registered by reports), "broadcast" (from the NICs' addresses), or, for the
    /// layer-2 NICs, "layer2-broadcast" (the broadcast MAC, to the NICs with `rx_bcast`) and
    /// "layer2-multicast" (every other group MAC, `group` 01:00:00:00:00:00).
    pub kind: String,
    /// Member NICs as LPAR/NIC (a port the file does not name: "port IFINDEX").
    pub members: Vec<String>,
}

/// The GROUPS map, named.
async fn groups(fabric: &Fabric, fabric_nl: &Netlink) -> Result<Vec<GroupStatus>> {
    let pin_dir = dataplane::pin_dir(&fabric.name);
    let maps = FabricMaps::open(&fabric.name, &pin_dir)?;
    let mut names = std::collections::HashMap::new();
    for lpar in &fabric.lpars {
        for nic in &lpar.nics {
            if let Some(port) = fabric_nl.link(&port_name(nic)).await? {
                names.insert(port.index, format!("{}/{}", lpar.name, nic.name));
            }
        }
    }
    Ok(maps
        .groups()
        .into_iter()
        .map(|(key, members)| {
            let (chpid, vlan) = iqd_common::segment_parts(key.segment);
            let mut members: Vec<String> = members
                .iter()
                .map(|p| names.get(p).cloned().unwrap_or_else(|| format!("port {p}")))
                .collect();
            members.sort();
            GroupStatus {
                chpid: config::chpid_label(chpid),
                vlan: (vlan != iqd_common::NO_VLAN).then_some(vlan),
                group: if key.is_layer2() {
                    let mut mac = [0u8; 6];
                    mac.copy_from_slice(&key.addr[..6]);
                    config::format_mac(&mac)
                } else {
                    iqd_common::ip_of(key.addr).to_string()
                },
                kind: if key.is_layer2() {
                    if key.addr[..6] == iqd_common::BROADCAST_MAC {
                        "layer2-broadcast"
                    } else {
                        "layer2-multicast"
                    }
                } else if iqd_common::is_multicast(&key.addr) {
                    "multicast"
                } else {
                    "broadcast"
                }
                .to_string(),
                members,
            }
        })
        .collect())
}

#[derive(Debug, Serialize)]
pub struct Stats {
    pub nics: Vec<NicStats>,
    /// Per LPAR with a bandwidth: what its meters dropped.
    pub bandwidth: Vec<BandwidthStats>,
    /// Connection-table pressure.
    pub conntrack: dataplane::CtStats,
    /// Data path `afxdp`: frames handed to the switch and frames delivered in the kernel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub afxdp: Option<AfxdpStats>,
}

#[derive(Debug, Serialize)]
pub struct AfxdpStats {
    #[serde(flatten)]
    pub programs: dataplane::XskStats,
    pub switch_running: bool,
    /// Frames the running switch moved since it started (0 when none runs).
    pub frames_moved: u64,
}

/// Data path `afxdp`: the programs' figures `programs` with the switch's.
pub fn afxdp_stats(fabric: &Fabric, programs: dataplane::XskStats) -> AfxdpStats {
    let status = switch_status(&fabric.name);
    AfxdpStats {
        programs,
        switch_running: status.running,
        frames_moved: match (status.running, status.report) {
            (true, Some(report)) => report.frames_moved,
            _ => 0,
        },
    }
}

/// What an LPAR's bandwidth did, per direction: frames its shaper carried (delayed as far as
/// the bandwidth needs), and frames its meter dropped (the senders count these drops as
/// `bandwidth_exceeded`).
#[derive(Debug, Serialize)]
pub struct BandwidthStats {
    pub lpar: String,
    pub bandwidth: String,
    pub send_shaped_packets: u64,
    pub send_shaped_bytes: u64,
    pub receive_shaped_packets: u64,
    pub receive_shaped_bytes: u64,
    pub send_dropped_packets: u64,
    pub send_dropped_bytes: u64,
    pub receive_dropped_packets: u64,
    pub receive_dropped_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct NicStats {
    pub lpar: String,
    pub nic: String,
    pub chpid: String,
    /// The NIC's VLAN in its CHPID; `null`: untagged.
    pub vlan: Option<u16>,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub drops: std::collections::BTreeMap<String, u64>,
}

pub async fn stats(fabric: &Fabric) -> Result<Stats> {
    let pin_dir = dataplane::pin_dir(&fabric.name);
    let maps = FabricMaps::open(&fabric.name, &pin_dir)?;
    let fabric_nl = Netlink::open(&fabric.netns_name())?;
    let mut nics = Vec::new();
    let mut bandwidth = Vec::new();
    for lpar in &fabric.lpars {
        let mut slot = None;
        for nic in &lpar.nics {
            let port = fabric_nl.link(&port_name(nic)).await?;
            if let Some(port) = &port {
                slot = slot.or(maps.bw_ports.get(&port.index, 0).ok());
            }
            let counters = match port {
                Some(port) => maps.counters(port.index)?,
                None => Default::default(),
            };
            nics.push(NicStats {
                lpar: lpar.name.clone(),
                nic: nic.name.clone(),
                chpid: config::chpid_label(nic.chpid),
                vlan: nic.vlan,
                tx_packets: counters.tx_packets,
                tx_bytes: counters.tx_bytes,
                rx_packets: counters.rx_packets,
                rx_bytes: counters.rx_bytes,
                drops: iqd_common::drop_reason::NAMES
                    .iter()
                    .zip(counters.drops.iter())
                    .map(|(name, count)| (name.to_string(), *count))
                    .collect(),
            });
        }
        if let (Some(limit), Some(slot)) = (lpar.effective_bandwidth(), slot) {
            let send = maps.bucket(2 * slot + iqd_common::bw_direction::SEND)?;
            let receive = maps.bucket(2 * slot + iqd_common::bw_direction::RECEIVE)?;
            bandwidth.push(BandwidthStats {
                lpar: lpar.name.clone(),
                bandwidth: limit.to_string(),
                send_shaped_packets: send.shaped_packets,
                send_shaped_bytes: send.shaped_bytes,
                receive_shaped_packets: receive.shaped_packets,
                receive_shaped_bytes: receive.shaped_bytes,
                send_dropped_packets: send.dropped_packets,
                send_dropped_bytes: send.dropped_bytes,
                receive_dropped_packets: receive.dropped_packets,
                receive_dropped_bytes: receive.dropped_bytes,
            });
        }
    }
    let afxdp = match fabric.datapath {
        Datapath::Afxdp => Some(afxdp_stats(fabric, maps.xsk_stats()?)),
        Datapath::Xdp | Datapath::Tc => None,
    };
    Ok(Stats {
        nics,
        bandwidth,
        conntrack: maps.ct_stats()?,
        afxdp,
    })
}

#[derive(Debug, Serialize)]
pub struct Conntrack {
    pub summary: dataplane::CtStats,
    pub connections: Vec<Connection>,
}

/// One tracked connection, as its first frame went.
#[derive(Debug, Serialize)]
pub struct Connection {
    /// The NIC that opened it (`LPAR/nic`) and its peer.
    pub origin: String,
    pub reply: String,
    /// The segment the connection runs in: its CHPID, e.g. `F0`, and VLAN (`null`: untagged).
    pub chpid: String,
    pub vlan: Option<u16>,
    pub protocol: String,
    pub source: String,
    pub destination: String,
    /// ICMP echo: the identifier; otherwise the ports.
    pub source_port: u16,
    pub destination_port: u16,
    /// `new` (no reply yet), `established`, `closing` (TCP FIN or RST seen) or `expired`
    /// (idle past its timeout: the next frame is checked against the rules again).
    pub state: String,
    pub age_s: f64,
    pub idle_s: f64,
    pub origin_packets: u64,
    pub reply_packets: u64,
}

pub async fn conntrack(fabric: &Fabric) -> Result<Conntrack> {
    use iqd_common::{ct_flags, ct_timeout};
    let pin_dir = dataplane::pin_dir(&fabric.name);
    let maps = FabricMaps::open(&fabric.name, &pin_dir)?;
    let fabric_nl = Netlink::open(&fabric.netns_name())?;
    let mut names = std::collections::HashMap::new();
    for lpar in &fabric.lpars {
        for nic in &lpar.nics {
            if let Some(port) = fabric_nl.link(&port_name(nic)).await? {
                names.insert(port.index, format!("{}/{}", lpar.name, nic.name));
            }
        }
    }
    let name = |ifindex: u32| {
        names
            .get(&ifindex)
            .cloned()
            .unwrap_or_else(|| format!("port {ifindex}"))
    };
    let now = dataplane::ktime_ns();
    let mut connections: Vec<Connection> = maps
        .connections()
        .into_iter()
        .map(|(key, entry)| {
            let protocol = match key.proto {
                6 => "tcp",
                17 => "udp",
                1 => "icmp",
                58 => "icmpv6",
                _ => "other",
            };
            let idle = now.saturating_sub(entry.last_seen_ns);
            let state = if idle > ct_timeout::of(key.proto, entry.flags) {
                "expired"
            } else if entry.flags & (ct_flags::FIN | ct_flags::RST) != 0 {
                "closing"
            } else if entry.flags & ct_flags::REPLIED != 0 {
                "established"
            } else {
                "new"
            };
            let (chpid, vlan) = iqd_common::segment_parts(key.segment);
            Connection {
                origin: name(entry.origin_ifindex),
                reply: name(entry.reply_ifindex),
                chpid: config::chpid_label(chpid),
                vlan: (vlan != iqd_common::NO_VLAN).then_some(vlan),
                protocol: if protocol == "other" {
                    format!("ip proto {}", key.proto)
                } else {
                    protocol.to_string()
                },
                source: iqd_common::ip_of(key.saddr).to_string(),
                destination: iqd_common::ip_of(key.daddr).to_string(),
                source_port: key.sport,
                destination_port: key.dport,
                state: state.to_string(),
                age_s: now.saturating_sub(entry.created_ns) as f64 / 1e9,
                idle_s: idle as f64 / 1e9,
                origin_packets: entry.origin_packets,
                reply_packets: entry.reply_packets,
            }
        })
        .collect();
    connections.sort_by(|a, b| {
        (&a.chpid, a.vlan, &a.origin, &a.source, a.source_port).cmp(&(
            &b.chpid,
            b.vlan,
            &b.origin,
            &b.source,
            b.source_port,
        ))
    });
    Ok(Conntrack {
        summary: maps.ct_stats()?,
        connections,
    })
}
