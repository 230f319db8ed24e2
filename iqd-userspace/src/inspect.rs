//! Reading a fabric back for `iqd status` and `iqd stats`: configuration, live links, counters.
use serde::Serialize;

use crate::{
    config::{self, Fabric},
    dataplane::{self, FabricMaps},
    error::Result,
    fabric::port_name,
    netlink::Netlink,
    netns,
};

#[derive(Debug, Serialize)]
pub struct Status {
    pub fabric: String,
    pub netns: String,
    /// "up" when the fabric namespace and pinned maps exist, otherwise "down".
    pub state: String,
    pub pin_dir: String,
    pub chpids: Vec<ChpidStatus>,
    pub lpars: Vec<LparStatus>,
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
    pub nics: Vec<NicStatus>,
}

#[derive(Debug, Serialize)]
pub struct NicStatus {
    pub nic: String,
    pub chpid: String,
    pub devices: String,
    pub mac: String,
    pub ipv4: Vec<String>,
    /// The NIC's MTU as the LPAR has it set (the CHPID's unless the LPAR changed it).
    pub mtu: Option<u32>,
    pub port: String,
    /// online: both ends up and the program attached; offline: present but not carrying;
    /// absent: not created (fabric down, or the namespace lost it).
    pub state: String,
}

pub async fn status(fabric: &Fabric) -> Result<Status> {
    let pin_dir = dataplane::pin_dir(&fabric.name);
    let fabric_ns = fabric.netns_name();
    let up = netns::exists(&fabric_ns) && pin_dir.exists();
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

    let mut lpars = Vec::new();
    for lpar in &fabric.lpars {
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
                (Some(_), Some(_)) => "offline",
                _ => "absent",
            };
            nics.push(NicStatus {
                nic: nic.name.clone(),
                chpid: config::chpid_label(nic.chpid),
                devices: nic.device_triple(),
                mac: config::format_mac(&nic.mac),
                ipv4: nic.ipv4.iter().map(|a| a.to_string()).collect(),
                mtu: nic_link.as_ref().map(|l| l.mtu),
                port,
                state: state.to_string(),
            });
        }
        lpars.push(LparStatus {
            lpar: lpar.name.clone(),
            netns: lpar.netns.clone(),
            nics,
        });
    }
    Ok(Status {
        fabric: fabric.name.clone(),
        netns: fabric_ns,
        state: if up { "up" } else { "down" }.to_string(),
        pin_dir: pin_dir.display().to_string(),
        chpids,
        lpars,
    })
}

#[derive(Debug, Serialize)]
pub struct Stats {
    pub nics: Vec<NicStats>,
}

#[derive(Debug, Serialize)]
pub struct NicStats {
    pub lpar: String,
    pub nic: String,
    pub chpid: String,
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
    for lpar in &fabric.lpars {
        for nic in &lpar.nics {
            let counters = match fabric_nl.link(&port_name(nic)).await? {
                Some(port) => maps.counters(port.index)?,
                None => Default::default(),
            };
            nics.push(NicStats {
                lpar: lpar.name.clone(),
                nic: nic.name.clone(),
                chpid: config::chpid_label(nic.chpid),
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
    }
    Ok(Stats { nics })
}
