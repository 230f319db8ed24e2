//! Bringing a fabric up and down: namespaces, NICs (veth pairs), addresses, maps and links.
//!
//! `up` converges: whatever already matches the file is left alone (its frames keep flowing),
//! what changed is rebuilt, what is gone is removed. The fabric side of every NIC lives in the
//! fabric's own namespace `iqd-<fabric>`, so the root namespace is never touched. Data path
//! `afxdp` adds a process, the AF_XDP switch, which `up` (re)starts and `down` stops.
use std::{net::IpAddr, path::Path};

use iqd_common::{port_flags, PortInfo, RouteKey, RouteTarget};

use crate::{
    config::{self, Datapath, Fabric, Nic},
    dataplane::{self, DataPlane, FabricMaps, Side},
    error::{Error, Result},
    ethtool,
    netlink::Netlink,
    netns::{self, NetnsGuard},
    secgroup::{self, RuleTable},
    state::{NicRecord, State},
    switch,
};

/// Fabric-side ports take any frame an LPAR sends (even above the CHPID's MTU), so that the
/// program sees, and counts, what it refuses.
const PORT_MTU: u32 = 65535;

/// The fabric-side port of a NIC, named after its read devno (unique in the fabric).
pub fn port_name(nic: &Nic) -> String {
    format!("p{:04x}", nic.devno)
}

fn record(fabric: &Fabric, lpar: &config::Lpar, nic: &Nic) -> NicRecord {
    let mtu = fabric.chpid(nic.chpid).map(|c| c.mfs.mtu()).unwrap_or(0);
    NicRecord {
        lpar: lpar.name.clone(),
        netns: lpar.netns.clone(),
        nic: nic.name.clone(),
        port: port_name(nic),
        chpid: nic.chpid,
        devno: nic.devno,
        mac: nic.mac,
        mtu,
        ipv4: nic.ipv4.iter().map(|a| a.to_string()).collect(),
    }
}

/// What `up` did, for the user.
#[derive(Debug, Default)]
pub struct UpReport {
    pub created_netns: Vec<String>,
    pub adopted_netns: Vec<String>,
    pub created_nics: Vec<String>,
    pub kept_nics: Vec<String>,
    pub removed_nics: Vec<String>,
    /// Tracked connections cut because the rules no longer allow them.
    pub revoked_connections: u64,
    /// Data path `afxdp`: the pid of the switch `up` started.
    pub switch_pid: Option<u32>,
}

/// Creates or updates the fabric to match `fabric`, read from the file `config` (which an
/// `afxdp` fabric's switch reads in turn). On a fabric that did not exist before, a failure
/// removes whatever this call created.
pub async fn up(fabric: &Fabric, config: &Path) -> Result<UpReport> {
    let fresh = State::load(&fabric.name)?.is_none() && !netns::exists(&fabric.netns_name());
    match up_inner(fabric, config).await {
        Ok(report) => Ok(report),
        Err(e) if fresh => {
            if let Err(cleanup) = down(fabric).await {
                eprintln!("iqd: cleaning up after a failed up also failed: {cleanup}");
            }
            Err(e)
        }
        Err(e) => Err(e),
    }
}

async fn up_inner(fabric: &Fabric, config: &Path) -> Result<UpReport> {
    let mut report = UpReport::default();
    let previous = State::load(&fabric.name)?.unwrap_or_default();
    let mut state = State {
        fabric: fabric.name.clone(),
        created_netns: previous.created_netns.clone(),
        nics: Vec::new(),
    };

    // The fabric's own namespace holds every fabric-side port.
    let fabric_ns = fabric.netns_name();
    if netns::create(&fabric_ns)? {
        let _guard = NetnsGuard::enter(&fabric_ns)?;
        // IPv6 off: the ports must not send router solicitations into the LPARs.
        let _ = netns::write_sysctl("net/ipv6/conf/all/disable_ipv6", "1");
        let _ = netns::write_sysctl("net/ipv6/conf/default/disable_ipv6", "1");
    }
    let fabric_nl = Netlink::open(&fabric_ns)?;
    fabric_nl.set_up(1).await?;

    // LPAR namespaces: created, or adopted when they exist and iqd did not make them.
    for lpar in &fabric.lpars {
        if netns::create(&lpar.netns)? {
            state.created_netns.push(lpar.netns.clone());
            report.created_netns.push(lpar.netns.clone());
            Netlink::open(&lpar.netns)?.set_up(1).await?;
        } else if !state.created_netns.contains(&lpar.netns) {
            report.adopted_netns.push(lpar.netns.clone());
        }
    }
    // Save early: a failure from here on must still let `down` find the namespaces.
    state.nics = previous.nics.clone();
    state.save()?;

    let pin_dir = dataplane::pin_dir(&fabric.name);
    let mut plane = DataPlane::load(&pin_dir)?;
    let mut maps = FabricMaps::open(&fabric.name, &pin_dir)?;

    // Remove NICs that are gone or changed in a way that needs a new veth pair.
    let wanted: Vec<NicRecord> = fabric
        .lpars
        .iter()
        .flat_map(|l| l.nics.iter().map(move |n| record(fabric, l, n)))
        .collect();
    for old in &previous.nics {
        let keep = wanted.iter().any(|w| same_link(w, old));
        if !keep {
            remove_nic(&fabric_nl, &mut maps, &pin_dir, old).await?;
            report
                .removed_nics
                .push(format!("{}/{}", old.lpar, old.nic));
        }
    }

    let mut routes = Vec::new();
    let mut nics = Vec::new();
    let mut ports = std::collections::HashMap::new();
    for lpar in &fabric.lpars {
        let lpar_nl = Netlink::open(&lpar.netns)?;
        for nic in &lpar.nics {
            let wanted = record(fabric, lpar, nic);
            let old = previous.nics.iter().find(|o| same_link(&wanted, o));
            let existing = match old {
                Some(_) => fabric_nl.link(&wanted.port).await?,
                None => None,
            };
            let fresh = existing.is_none();
            if fresh {
                // A leftover from an interrupted run would block the names.
                if let Some(stale) = fabric_nl.link(&wanted.port).await? {
                    fabric_nl.delete_link(stale.index).await?;
                }
                fabric_nl
                    .add_veth(
                        &wanted.port,
                        PORT_MTU,
                        &nic.name,
                        &lpar.netns,
                        nic.mac,
                        wanted.mtu,
                    )
                    .await?;
                report
                    .created_nics
                    .push(format!("{}/{}", lpar.name, nic.name));
            } else {
                report.kept_nics.push(format!("{}/{}", lpar.name, nic.name));
            }
            let port = fabric_nl.require_link(&wanted.port).await?;
            let flags = if nic.allow_ip_spoofing {
                port_flags::ALLOW_IP_SPOOFING
            } else {
                0
            };
            let info = PortInfo::new(nic.chpid, wanted.mtu, nic.mac).with_flags(flags);
            // Devnos are unique in a fabric: they name the NIC.
            ports.insert(nic.devno, port.index);
            {
                let _guard = NetnsGuard::enter(&fabric_ns)?;
                maps.add_port(port.index, info)?;
                // The new path's program first, then the others go: XDP runs before tc, and
                // `xdp` and `afxdp` swap the program of one XDP link, so frames never meet a
                // port with none.
                let on = port_side(fabric.datapath);
                plane.attach(on, &wanted.port, &wanted.port, port.index)?;
                for off in Side::PORT_SIDES.into_iter().filter(|s| *s != on) {
                    dataplane::detach_side(&pin_dir, off, &wanted.port)?;
                }
            }
            fabric_nl.set_up(port.index).await?;
            configure_lpar_side(
                &lpar_nl,
                &mut plane,
                &pin_dir,
                fabric.datapath,
                &wanted.port,
                nic,
                old,
            )
            .await?;
            routes.extend(nic_routes(nic, port.index));
            nics.push(wanted);
        }
    }
    {
        let _guard = NetnsGuard::enter(&fabric_ns)?;
        maps.sync_routes(&routes)?;
    }
    apply_security_groups(fabric, &ports, &mut maps, &mut report)?;

    // Namespaces iqd created for LPARs that are no longer in the file.
    let mut created = Vec::new();
    for name in &state.created_netns {
        if fabric.lpars.iter().any(|l| &l.netns == name) {
            created.push(name.clone());
        } else {
            netns::delete(name)?;
        }
    }
    state.created_netns = created;
    state.nics = nics;
    state.save()?;

    // The switch serves the ports the state file lists, so it (re)starts last. Until it runs,
    // and whenever it does not, `iqd_xsk` delivers in the kernel.
    match fabric.datapath {
        Datapath::Afxdp => report.switch_pid = Some(switch::start(&fabric.name, config)?),
        Datapath::Xdp | Datapath::Tc => {
            switch::stop(&fabric.name)?;
        }
    }
    Ok(report)
}

/// The program that switches a port's frames on a data path.
fn port_side(datapath: Datapath) -> Side {
    match datapath {
        Datapath::Xdp => Side::Port,
        Datapath::Tc => Side::PortTc,
        Datapath::Afxdp => Side::PortXsk,
    }
}

/// Compiles every NIC's security groups into the rule table, then cuts the tracked connections
/// the rules no longer allow (revoking access takes effect at once).
fn apply_security_groups(
    fabric: &Fabric,
    ports: &std::collections::HashMap<u16, u32>,
    maps: &mut FabricMaps,
    report: &mut UpReport,
) -> Result<()> {
    let table = RuleTable::compile(fabric, |nic| ports.get(&nic.devno).copied())
        .map_err(|e| Error::Rules(e.to_string()))?;
    maps.sync_rules(&table.encoded())?;
    // Each live port's segment: a connection stays only between two live ports of its own.
    let segments: std::collections::HashMap<u32, u32> = fabric
        .lpars
        .iter()
        .flat_map(|l| l.nics.iter())
        .filter_map(|nic| Some((*ports.get(&nic.devno)?, segment(nic))))
        .collect();
    let in_segment = |ifindex: u32, segment: u32| segments.get(&ifindex) == Some(&segment);
    report.revoked_connections = maps.revoke(|key, entry| {
        in_segment(entry.origin_ifindex, key.segment)
            && in_segment(entry.reply_ifindex, key.segment)
            && secgroup::connection_allowed(&table, key, entry)
    })?;
    Ok(())
}

/// The segment of a NIC's connections, as the data plane computes it from its port.
fn segment(nic: &Nic) -> u32 {
    iqd_common::segment_of(&PortInfo::new(nic.chpid, 0, nic.mac))
}

/// The ROUTES entries a NIC registers: each of its addresses on its CHPID, pointing at its port.
fn nic_routes(nic: &Nic, port_ifindex: u32) -> impl Iterator<Item = (RouteKey, RouteTarget)> + '_ {
    nic.ipv4.iter().map(move |cidr| {
        (
            RouteKey::new(nic.chpid, cidr.addr),
            RouteTarget::new(port_ifindex, nic.mac),
        )
    })
}

/// Two records describe the same veth pair (same names, namespace, MAC and MTU): it can stay.
fn same_link(a: &NicRecord, b: &NicRecord) -> bool {
    a.port == b.port && a.netns == b.netns && a.nic == b.nic && a.mac == b.mac && a.mtu == b.mtu
}

/// The LPAR side of a NIC: addresses, offloads the data path needs, link up.
async fn configure_lpar_side(
    lpar_nl: &Netlink,
    plane: &mut DataPlane,
    pin_dir: &std::path::Path,
    datapath: Datapath,
    port: &str,
    nic: &Nic,
    old: Option<&NicRecord>,
) -> Result<()> {
    let link = lpar_nl.require_link(&nic.name).await?;
    {
        let _guard = NetnsGuard::enter(lpar_nl.netns())?;
        match datapath {
            // XDP_TX replies (and, on `afxdp`, the kernel fallback's redirects) reach the LPAR
            // only if its side runs XDP too.
            Datapath::Xdp | Datapath::Afxdp => {
                plane.attach(Side::Nic, port, &nic.name, link.index)?
            }
            // No XDP on either side: XDP on a veth takes GSO from its peer.
            Datapath::Tc => dataplane::detach_side(pin_dir, Side::Nic, port)?,
        }
        // Layer 3 mode carries IPv4: no IPv6 chatter from the NIC.
        let _ = netns::write_sysctl(&format!("net/ipv6/conf/{}/disable_ipv6", nic.name), "1");
    }
    if let Some(old) = old {
        for stale in old
            .ipv4
            .iter()
            .filter(|a| !nic.ipv4.iter().any(|c| &c.to_string() == *a))
        {
            if let Ok(cidr) = stale.parse::<config::Ipv4Cidr>() {
                lpar_nl
                    .delete_address(link.index, IpAddr::V4(cidr.addr))
                    .await?;
            }
        }
    }
    // After the stale ones are gone: an address whose prefix changed is deleted, then re-added.
    for cidr in &nic.ipv4 {
        lpar_nl
            .add_address(link.index, IpAddr::V4(cidr.addr), cidr.prefix)
            .await?;
    }
    lpar_nl.set_up(link.index).await?;
    let _guard = NetnsGuard::enter(lpar_nl.netns())?;
    let ethtool_err = |op| {
        let netns = lpar_nl.netns().to_string();
        let ifname = nic.name.clone();
        move |source| Error::Ethtool {
            netns,
            ifname,
            op,
            source,
        }
    };
    match datapath {
        // An XDP redirect loses the skb's CHECKSUM_PARTIAL state (and so does a copy into an
        // AF_XDP UMEM): the LPAR must fill in its checksums itself. GRO gives the veth the NAPI
        // context redirected frames need.
        Datapath::Xdp | Datapath::Afxdp => {
            ethtool::set_tx_checksum(&nic.name, false).map_err(ethtool_err("tx checksum off"))?;
            ethtool::set_gro(&nic.name, true).map_err(ethtool_err("gro on"))?;
        }
        // tc moves the skb itself, checksum state and GSO included: offload stays on (and
        // comes back on when a fabric switches from xdp).
        Datapath::Tc => {
            ethtool::set_tx_checksum(&nic.name, true).map_err(ethtool_err("tx checksum on"))?;
        }
    }
    Ok(())
}

async fn remove_nic(
    fabric_nl: &Netlink,
    maps: &mut FabricMaps,
    pin_dir: &std::path::Path,
    old: &NicRecord,
) -> Result<()> {
    dataplane::detach(pin_dir, &old.port)?;
    if let Some(port) = fabric_nl.link(&old.port).await? {
        maps.remove_port(port.index)?;
        // Deleting one end of a veth pair deletes the LPAR's end too.
        fabric_nl.delete_link(port.index).await?;
    }
    Ok(())
}

/// Removes everything `up` created: ports and NICs, pins, the fabric namespace and the LPAR
/// namespaces iqd created. Adopted namespaces stay, without their NICs. Idempotent.
pub async fn down(fabric: &Fabric) -> Result<()> {
    // The switch first: it holds sockets on the ports.
    switch::stop(&fabric.name)?;
    let state = State::load(&fabric.name)?;
    let fabric_ns = fabric.netns_name();
    if netns::exists(&fabric_ns) {
        let fabric_nl = Netlink::open(&fabric_ns)?;
        let mut ports: Vec<String> = fabric
            .lpars
            .iter()
            .flat_map(|l| l.nics.iter().map(port_name))
            .collect();
        if let Some(state) = &state {
            ports.extend(state.nics.iter().map(|n| n.port.clone()));
        }
        for port in ports {
            if let Some(link) = fabric_nl.link(&port).await? {
                fabric_nl.delete_link(link.index).await?;
            }
        }
    }
    dataplane::remove_pins(&dataplane::pin_dir(&fabric.name))?;
    netns::delete(&fabric_ns)?;
    if let Some(state) = &state {
        for name in &state.created_netns {
            netns::delete(name)?;
        }
    }
    State::remove(&fabric.name)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const FILE: &str = r#"
[fabric]
name = "t"

[[chpid]]
id = "F0"

[[chpid]]
id = "F1"

[[lpar]]
name = "LP01"

[[lpar.nic]]
chpid = "F0"
devno = "7000"
ipv4 = ["10.0.0.1/24", "10.0.1.1/24"]

[[lpar.nic]]
chpid = "F1"
ipv4 = ["10.1.0.1/24"]
"#;

    #[test]
    fn each_address_of_a_nic_routes_to_its_port_on_its_chpid() {
        let fabric = Fabric::parse(FILE, Path::new("t.toml")).unwrap();
        let nic = &fabric.lpars[0].nics[0];
        let routes: Vec<_> = nic_routes(nic, 17).collect();
        assert_eq!(routes.len(), 2);
        for ((key, target), addr) in routes.iter().zip([[10, 0, 0, 1], [10, 0, 1, 1]]) {
            assert_eq!(key.chpid, 0xf0);
            assert_eq!(key.addr.to_ne_bytes(), addr);
            assert_eq!(target.ifindex, 17);
            assert_eq!(target.mac, [0x02, 0, 0, 0xf0, 0x70, 0x00]);
        }
        let other: Vec<_> = nic_routes(&fabric.lpars[0].nics[1], 18).collect();
        assert_eq!(other[0].0.chpid, 0xf1);
        assert_eq!(other[0].1.ifindex, 18);
    }

    #[test]
    fn ports_are_named_after_the_devno() {
        let fabric = Fabric::parse(FILE, Path::new("t.toml")).unwrap();
        assert_eq!(port_name(&fabric.lpars[0].nics[0]), "p7000");
    }
}
