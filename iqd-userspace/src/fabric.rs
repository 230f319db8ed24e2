//! Bringing a fabric up and down: namespaces, NICs (veth pairs), addresses, maps and links.
//!
//! `up` converges: whatever already matches the file is left alone (its frames keep flowing),
//! what changed is rebuilt, what is gone is removed. The fabric side of every NIC lives in the
//! fabric's own namespace `iqd-<fabric>`, so the root namespace is never touched. Data path
//! `afxdp` adds a process, the AF_XDP switch, which `up` (re)starts and `down` stops.
use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
};

use iqd_common::{port_flags, GroupKey, PortInfo, RouteKey, RouteTarget};

use crate::{
    config::{Datapath, Fabric, Nic},
    dataplane::{self, DataPlane, FabricMaps, Side},
    error::{Error, Result},
    ethtool,
    layout::{self, Upgrade, UpgradeReport},
    lock::{FabricLock, Wait},
    netlink::Netlink,
    netns::{self, NetnsGuard},
    reconcile::{self, Observed, Step},
    secgroup::{self, RuleTable},
    state::{self, AppliedFile, NicRecord, State},
    switch,
};

/// Fabric-side ports take any frame an LPAR sends (even above the CHPID's MTU), so that the
/// program sees, and counts, what it refuses.
const PORT_MTU: u32 = 65535;

pub use crate::reconcile::port_name;

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
    /// The pins were another map layout's, and were upgraded in place.
    pub upgrade: Option<UpgradeReport>,
}

/// Creates or updates the fabric to match `fabric`, read from the file `config` (which an
/// `afxdp` fabric's switch reads in turn), holding the fabric's lock (`wait` says whether to
/// wait for another writer).
///
/// Transactional: refusals (see [`reconcile::Refusal`]) are found before anything changes;
/// a step that fails midway is undone by bringing the fabric back to the configuration the
/// last successful `up` applied (recorded in the state file), or, for a fabric that did not
/// exist, by removing what this call created. The error names the step that failed.
pub async fn up(fabric: &Fabric, config: &Path, wait: Wait) -> Result<UpReport> {
    let lock = FabricLock::acquire(&fabric.name, "up", wait)?;
    let text = std::fs::read_to_string(config).map_err(|e| Error::io("read", config, e))?;
    let previous = State::load(&fabric.name)?;
    let fresh = previous.is_none() && !netns::exists(&fabric.netns_name());
    let mut undo = Undo::default();
    let failure = match apply(fabric, config, &text, previous.clone(), &mut undo).await {
        Ok(report) => return Ok(report),
        Err(failure) => failure,
    };
    if matches!(failure, Error::Refused { .. }) {
        return Err(failure);
    }
    let rollback = match previous.as_ref().and_then(|p| p.applied.clone()) {
        Some(applied) => roll_back_to(&applied, &fabric.name).await,
        None if fresh => down_unlocked(fabric).await.map(|()| {
            // Nothing of the fabric stays behind, its lock file included.
            lock.remove_file();
            "removed what it had created"
        }),
        None => undo_created(fabric, &undo)
            .await
            .map(|()| "removed what it had created"),
    };
    Err(match rollback {
        Ok(outcome) => Error::RolledBack {
            source: Box::new(failure),
            outcome,
        },
        Err(second) => Error::RollbackFailed {
            source: Box::new(failure),
            rollback: Box::new(second),
        },
    })
}

/// What a failed `up` created, for a fabric with no earlier configuration to return to.
#[derive(Debug, Default)]
struct Undo {
    created_netns: Vec<String>,
    created_ports: Vec<String>,
}

/// Brings the fabric back to the configuration a successful `up` recorded.
async fn roll_back_to(applied: &AppliedFile, name: &str) -> Result<&'static str> {
    let previous = Fabric::parse(&applied.text, &applied.path)?;
    // The switch reads its fabric file: give it the recorded text, not the file as edited.
    let path = state::dir(name).join("rollback.toml");
    state::write_atomically(&path, applied.text.as_bytes())?;
    let recorded = State::load(name)?;
    let mut undo = Undo::default();
    apply(&previous, &path, &applied.text, recorded, &mut undo).await?;
    // Later rollbacks return to the file itself, as the user keeps it.
    if let Some(mut state) = State::load(name)? {
        state.applied = Some(applied.clone());
        state.save()?;
    }
    Ok("returned to the configuration applied before")
}

/// Removes the namespaces and NICs a failed `up` created.
async fn undo_created(fabric: &Fabric, undo: &Undo) -> Result<()> {
    let fabric_ns = fabric.netns_name();
    if netns::exists(&fabric_ns) {
        let fabric_nl = Netlink::open(&fabric_ns)?;
        let pin_dir = dataplane::pin_dir(&fabric.name);
        for port in &undo.created_ports {
            dataplane::detach(&pin_dir, port)?;
            if let Some(link) = fabric_nl.link(port).await? {
                fabric_nl.delete_link(link.index).await?;
            }
        }
    }
    let mut state = State::load(&fabric.name)?.unwrap_or_default();
    for name in &undo.created_netns {
        netns::delete(name)?;
        state.created_netns.retain(|n| n != name);
    }
    if !state.fabric.is_empty() {
        state.save()?;
    }
    Ok(())
}

/// Reads what exists now: the input of the plan besides the file and the state.
async fn observe(fabric: &Fabric) -> Result<Observed> {
    let mut observed = Observed::default();
    let fabric_ns = fabric.netns_name();
    let mut namespaces: Vec<&str> = fabric.lpars.iter().map(|l| l.netns.as_str()).collect();
    namespaces.push(&fabric_ns);
    for name in namespaces {
        if netns::exists(name) {
            observed.netns.insert(name.to_string());
        }
    }
    if observed.netns.contains(&fabric_ns) {
        let fabric_nl = Netlink::open(&fabric_ns)?;
        // Every link of the fabric namespace but its loopback is a port.
        for link in fabric_nl.links().await? {
            if link.name != "lo" {
                observed.ports.insert(link.name);
            }
        }
    }
    for lpar in &fabric.lpars {
        if !observed.netns.contains(&lpar.netns) {
            continue;
        }
        let lpar_nl = Netlink::open(&lpar.netns)?;
        for nic in &lpar.nics {
            if lpar_nl.link(&nic.name).await?.is_some() {
                observed
                    .lpar_links
                    .insert((lpar.netns.clone(), nic.name.clone()));
            }
        }
    }
    Ok(observed)
}

/// Plans and executes `up` for `fabric`, recording what it builds in the state file.
async fn apply(
    fabric: &Fabric,
    config: &Path,
    text: &str,
    previous: Option<State>,
    undo: &mut Undo,
) -> Result<UpReport> {
    let recorded = previous.unwrap_or_else(|| State {
        fabric: fabric.name.clone(),
        ..Default::default()
    });
    let observed = observe(fabric).await?;
    let steps = reconcile::plan(fabric, &recorded, &observed)
        .map_err(|refusals| Error::Refused { refusals })?;
    let mut exec = Executor {
        fabric,
        config,
        pin_dir: dataplane::pin_dir(&fabric.name),
        state: State {
            fabric: fabric.name.clone(),
            ..recorded
        },
        report: UpReport::default(),
        fabric_nl: None,
        plane: None,
        upgrade: None,
        routes: Vec::new(),
        ports: std::collections::HashMap::new(),
        undo,
    };
    for step in &steps {
        failpoint(step)?;
        exec.run(step).await.map_err(|source| Error::Step {
            step: step.to_string(),
            source: Box::new(source),
        })?;
    }
    exec.state.applied = Some(AppliedFile {
        path: config.to_path_buf(),
        text: text.to_string(),
    });
    exec.state.save()?;
    Ok(exec.report)
}

/// Debug builds only: `IQD_FAILPOINT=<step>` makes the step of that name (or name prefix, as
/// `iqd up` prints steps in errors) fail, so tests can check what a failure midway leaves.
fn failpoint(step: &Step) -> Result<()> {
    if cfg!(debug_assertions) {
        if let Ok(point) = std::env::var("IQD_FAILPOINT") {
            if !point.is_empty() && step.to_string().starts_with(&point) {
                return Err(Error::Step {
                    step: step.to_string(),
                    source: Box::new(Error::Failpoint),
                });
            }
        }
    }
    Ok(())
}

/// Carries out the steps of a plan, keeping what later steps need.
struct Executor<'a> {
    fabric: &'a Fabric,
    config: &'a Path,
    pin_dir: std::path::PathBuf,
    state: State,
    report: UpReport,
    fabric_nl: Option<Netlink>,
    plane: Option<(DataPlane, FabricMaps)>,
    /// The pins were another layout's: the upgrade `LoadPrograms` began, which `CommitLayout`
    /// finishes.
    upgrade: Option<Upgrade>,
    /// ROUTES entries of the NICs configured so far.
    routes: Vec<(RouteKey, RouteTarget)>,
    /// Port ifindex by devno (unique in a fabric) of the NICs configured so far.
    ports: std::collections::HashMap<u16, u32>,
    undo: &'a mut Undo,
}

impl Executor<'_> {
    fn fabric_nl(&self) -> Result<&Netlink> {
        self.fabric_nl
            .as_ref()
            .ok_or(Error::StepOrder("fabric namespace"))
    }

    fn plane(&mut self) -> Result<&mut (DataPlane, FabricMaps)> {
        self.plane.as_mut().ok_or(Error::StepOrder("programs"))
    }

    async fn run(&mut self, step: &Step) -> Result<()> {
        let fabric = self.fabric;
        let fabric_ns = fabric.netns_name();
        match step {
            Step::FabricNetns { create } => {
                if *create {
                    netns::create(&fabric_ns)?;
                }
                {
                    let _guard = NetnsGuard::enter(&fabric_ns)?;
                    // IPv6 off: the ports must not send router solicitations into the LPARs.
                    let _ = netns::write_sysctl("net/ipv6/conf/all/disable_ipv6", "1");
                    let _ = netns::write_sysctl("net/ipv6/conf/default/disable_ipv6", "1");
                }
                let fabric_nl = Netlink::open(&fabric_ns)?;
                fabric_nl.set_up(1).await?;
                self.fabric_nl = Some(fabric_nl);
            }
            Step::CreateNetns(name) => {
                self.state.will_create_netns(name)?;
                if netns::create(name)? {
                    self.undo.created_netns.push(name.clone());
                }
                self.report.created_netns.push(name.clone());
                Netlink::open(name)?.set_up(1).await?;
            }
            Step::AdoptNetns(name) => self.report.adopted_netns.push(name.clone()),
            Step::LoadPrograms => {
                let plane = DataPlane::load(&self.pin_dir)?;
                // The maps the new programs use: on an upgrade (pins of another layout), some
                // are new, filled by the next steps before any pinned link runs them.
                let mut maps = FabricMaps::open_for(&plane)?;
                self.upgrade = Upgrade::begin(&plane, &mut maps)?;
                self.plane = Some((plane, maps));
            }
            Step::RemoveNic(old) => {
                self.remove_port(&old.port).await?;
                self.report
                    .removed_nics
                    .push(format!("{}/{}", old.lpar, old.nic));
                self.state.nics.retain(|r| r.port != old.port);
                self.state.save()?;
            }
            Step::RemoveLeftoverPort(port) => self.remove_port(port).await?,
            Step::CreateNic(record) => {
                let nic = find_nic(fabric, record)?;
                // Links pinned for a port of that name belong to a veth pair that is gone.
                dataplane::detach(&self.pin_dir, &record.port)?;
                let fabric_nl = self.fabric_nl()?;
                fabric_nl
                    .add_veth(
                        &record.port,
                        PORT_MTU,
                        &nic.name,
                        &record.netns,
                        nic.mac,
                        record.mtu,
                    )
                    .await?;
                self.undo.created_ports.push(record.port.clone());
                // Recorded at once: the state file lists every NIC that exists, so a rollback
                // or the next `up` plans from the truth.
                self.record_nic(record)?;
                self.report
                    .created_nics
                    .push(format!("{}/{}", record.lpar, record.nic));
            }
            Step::KeepNic(record) => self
                .report
                .kept_nics
                .push(format!("{}/{}", record.lpar, record.nic)),
            Step::ConfigureNic(record) => {
                self.configure_nic(record).await?;
                // The record now says what the NIC has (its addresses included).
                self.record_nic(record)?;
            }
            Step::SyncRoutes => {
                let routes = std::mem::take(&mut self.routes);
                let broadcasts = broadcast_lists(fabric, |nic| self.ports.get(&nic.devno).copied());
                let (_, maps) = self.plane()?;
                let _guard = NetnsGuard::enter(&fabric_ns)?;
                maps.sync_routes(&routes)?;
                maps.sync_broadcasts(&broadcasts)?;
            }
            Step::ApplySecurityGroups => {
                let ports = self.ports.clone();
                let mut report = std::mem::take(&mut self.report);
                let result = {
                    let (_, maps) = self.plane()?;
                    apply_security_groups(fabric, &ports, maps, &mut report)
                };
                self.report = report;
                result?;
            }
            // The maps are filled: links move to the new programs, new maps replace old pins.
            Step::CommitLayout => {
                let upgrade = self.upgrade.take();
                let (plane, maps) = self.plane()?;
                self.report.upgrade = layout::finish(upgrade, plane, maps)?;
            }
            Step::DeleteNetns(name) => {
                netns::delete(name)?;
                self.state.created_netns.retain(|n| n != name);
                self.state.save()?;
            }
            // The switch serves the ports the state file lists, so it (re)starts last, once
            // the file lists them. Until it runs, and whenever it does not, `iqd_xsk` delivers
            // in the kernel.
            Step::Switch { run: true } => {
                self.report.switch_pid = Some(switch::start(&fabric.name, self.config)?);
            }
            Step::Switch { run: false } => {
                switch::stop(&fabric.name)?;
            }
        }
        Ok(())
    }

    /// Removes a port: its pinned links, its map entries and its veth pair (the LPAR end goes
    /// with it). A port that is gone already is fine.
    async fn remove_port(&mut self, port: &str) -> Result<()> {
        let pin_dir = self.pin_dir.clone();
        let fabric_nl = self
            .fabric_nl
            .take()
            .ok_or(Error::StepOrder("fabric namespace"))?;
        let result = async {
            let (_, maps) = self.plane()?;
            remove_nic(&fabric_nl, maps, &pin_dir, port).await
        }
        .await;
        self.fabric_nl = Some(fabric_nl);
        result
    }

    /// Puts `record` in the state file in place of any record of its port.
    fn record_nic(&mut self, record: &NicRecord) -> Result<()> {
        self.state.nics.retain(|r| r.port != record.port);
        self.state.nics.push(record.clone());
        self.state.save()
    }

    async fn configure_nic(&mut self, record: &NicRecord) -> Result<()> {
        let fabric = self.fabric;
        let fabric_ns = fabric.netns_name();
        let nic = find_nic(fabric, record)?;
        let port = self.fabric_nl()?.require_link(&record.port).await?;
        let flags = if nic.allow_ip_spoofing {
            port_flags::ALLOW_IP_SPOOFING
        } else {
            0
        };
        let info = PortInfo::new(nic.chpid, record.mtu, nic.mac)
            .with_vlan(nic.vlan.unwrap_or(iqd_common::NO_VLAN))
            .with_flags(flags);
        let pin_dir = self.pin_dir.clone();
        {
            let (plane, maps) = self.plane()?;
            let _guard = NetnsGuard::enter(&fabric_ns)?;
            maps.add_port(port.index, info)?;
            // The new path's program first, then the others go: XDP runs before tc, and
            // `xdp` and `afxdp` swap the program of one XDP link, so frames never meet a
            // port with none.
            let on = port_side(fabric.datapath);
            plane.attach(on, &record.port, &record.port, port.index)?;
            // The XDP programs hand one-to-many frames up to the tc hook, which copies them
            // (mcast.rs): tc runs on every data path, and switches alone on `tc`.
            if on != Side::PortTc {
                plane.attach(Side::PortTc, &record.port, &record.port, port.index)?;
            }
            for off in Side::PORT_SIDES
                .into_iter()
                .filter(|s| *s != on && *s != Side::PortTc)
            {
                dataplane::detach_side(&pin_dir, off, &record.port)?;
            }
        }
        self.fabric_nl()?.set_up(port.index).await?;
        let lpar_nl = Netlink::open(&record.netns)?;
        let (plane, _) = self.plane()?;
        configure_lpar_side(
            &lpar_nl,
            plane,
            &pin_dir,
            fabric.datapath,
            &record.port,
            nic,
        )
        .await?;
        // Devnos are unique in a fabric: they name the NIC.
        self.ports.insert(nic.devno, port.index);
        self.routes.extend(nic_routes(nic, port.index));
        Ok(())
    }
}

/// The NIC of the file a record was made from.
fn find_nic<'a>(fabric: &'a Fabric, record: &NicRecord) -> Result<&'a Nic> {
    fabric
        .lpars
        .iter()
        .filter(|l| l.name == record.lpar)
        .flat_map(|l| l.nics.iter())
        .find(|n| n.name == record.nic)
        .ok_or(Error::StepOrder("NIC of the file"))
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
        .filter_map(|nic| Some((*ports.get(&nic.devno)?, nic.segment())))
        .collect();
    let in_segment = |ifindex: u32, segment: u32| segments.get(&ifindex) == Some(&segment);
    report.revoked_connections = maps.revoke(|key, entry| {
        in_segment(entry.origin_ifindex, key.segment)
            && in_segment(entry.reply_ifindex, key.segment)
            && secgroup::connection_allowed(&table, key, entry)
    })?;
    Ok(())
}

/// The ROUTES entries a NIC registers: each of its addresses (IPv4, IPv6 and its link-local
/// address) in its segment, pointing at its port.
fn nic_routes(nic: &Nic, port_ifindex: u32) -> impl Iterator<Item = (RouteKey, RouteTarget)> + '_ {
    nic.addresses().into_iter().map(move |addr| {
        (
            RouteKey::new(nic.segment(), addr),
            RouteTarget::new(port_ifindex, nic.mac),
        )
    })
}

/// The member lists of the broadcast addresses: in each segment, the limited broadcast
/// (255.255.255.255) reaches every NIC, and the directed broadcast of each IPv4 prefix (up to
/// /30) every NIC with an address in it. `port`: a NIC's port, if it has one.
pub fn broadcast_lists(
    fabric: &Fabric,
    port: impl Fn(&Nic) -> Option<u32>,
) -> Vec<(GroupKey, Vec<u32>)> {
    let nics: Vec<(&Nic, u32)> = fabric
        .lpars
        .iter()
        .flat_map(|l| l.nics.iter())
        .filter_map(|nic| Some((nic, port(nic)?)))
        .collect();
    let mut lists: std::collections::BTreeMap<(u32, Ipv4Addr), Vec<u32>> = Default::default();
    for (nic, port) in &nics {
        lists
            .entry((nic.segment(), Ipv4Addr::BROADCAST))
            .or_default()
            .push(*port);
        for cidr in nic.ipv4.iter().filter(|c| c.prefix <= 30) {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(cidr.prefix))
                .unwrap_or(0);
            let network = u32::from(cidr.addr) & mask;
            let broadcast = Ipv4Addr::from(network | !mask);
            let members = nics
                .iter()
                .filter(|(other, _)| {
                    other.segment() == nic.segment()
                        && other
                            .ipv4
                            .iter()
                            .any(|c| u32::from(c.addr) & mask == network)
                })
                .map(|(_, port)| *port);
            let list = lists.entry((nic.segment(), broadcast)).or_default();
            for member in members {
                if !list.contains(&member) {
                    list.push(member);
                }
            }
        }
    }
    lists
        .into_iter()
        .map(|((segment, addr), mut members)| {
            members.sort_unstable();
            members.dedup();
            (GroupKey::new(segment, IpAddr::V4(addr)), members)
        })
        .collect()
}

/// The LPAR side of a NIC: addresses, offloads the data path needs, link up.
async fn configure_lpar_side(
    lpar_nl: &Netlink,
    plane: &mut DataPlane,
    pin_dir: &std::path::Path,
    datapath: Datapath,
    port: &str,
    nic: &Nic,
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
        // IPv6 on, but quiet: no router solicitations and no router advertisements taken;
        // the kernel still forms the link-local address from the MAC, the one iqd registers.
        for (key, value) in [
            ("accept_ra", "0"),
            ("router_solicitations", "0"),
            ("disable_ipv6", "0"),
        ] {
            netns::write_sysctl(&format!("net/ipv6/conf/{}/{key}", nic.name), value)?;
        }
    }
    // NOARP, as qeth sets a HiperSockets layer-3 interface: the kernel resolves every
    // neighbour without asking (no ARP, no ND, no DAD); the fabric delivers by address and
    // writes the destination MAC itself.
    if !link.noarp {
        lpar_nl.set_arp(link.index, false).await?;
    }
    // The interface holds exactly the file's addresses, whatever an earlier (perhaps
    // interrupted) run or the user left on it. An address whose prefix changed is deleted,
    // then re-added. IPv6 link-local addresses are the kernel's and stay.
    let wanted: Vec<(IpAddr, u8)> = nic
        .ipv4
        .iter()
        .map(|c| (IpAddr::V4(c.addr), c.prefix))
        .chain(nic.ipv6.iter().map(|c| (IpAddr::V6(c.addr), c.prefix)))
        .collect();
    let present: Vec<(IpAddr, u8)> = lpar_nl
        .addresses(link.index)
        .await?
        .into_iter()
        .filter(|(a, _)| !matches!(a, IpAddr::V6(v6) if v6.is_unicast_link_local()))
        .collect();
    for (addr, prefix) in &present {
        if !wanted.contains(&(*addr, *prefix)) {
            lpar_nl.delete_address(link.index, *addr).await?;
        }
    }
    for (addr, prefix) in &wanted {
        if !present.contains(&(*addr, *prefix)) {
            lpar_nl.add_address(link.index, *addr, *prefix).await?;
        }
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
    port: &str,
) -> Result<()> {
    dataplane::detach(pin_dir, port)?;
    if let Some(port) = fabric_nl.link(port).await? {
        maps.remove_port(port.index)?;
        // Deleting one end of a veth pair deletes the LPAR's end too.
        fabric_nl.delete_link(port.index).await?;
    }
    Ok(())
}

/// Removes everything `up` created: ports and NICs, pins, the fabric namespace and the LPAR
/// namespaces iqd created. Adopted namespaces stay, without their NICs. Idempotent; holds the
/// fabric's lock.
pub async fn down(fabric: &Fabric, wait: Wait) -> Result<()> {
    let lock = FabricLock::acquire(&fabric.name, "down", wait)?;
    down_unlocked(fabric).await?;
    // Nothing of the fabric stays behind, its lock file included.
    lock.remove_file();
    Ok(())
}

/// `down` for a caller that holds the lock. Each part is idempotent and the state file goes
/// last, so a `down` killed midway is finished by the next one.
async fn down_unlocked(fabric: &Fabric) -> Result<()> {
    // The switch first: it holds sockets on the ports.
    switch::stop(&fabric.name)?;
    let state = State::load(&fabric.name)?;
    let fabric_ns = fabric.netns_name();
    if netns::exists(&fabric_ns) {
        let fabric_nl = Netlink::open(&fabric_ns)?;
        // Every port, including any the file or the state no longer names: deleting one
        // end of a veth pair deletes the NIC in the LPAR (adopted namespaces keep nothing).
        for link in fabric_nl.links().await? {
            if link.name != "lo" {
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
ipv6 = ["fd00:f0::1/64"]

[[lpar.nic]]
chpid = "F1"
ipv4 = ["10.1.0.1/24"]

[[lpar]]
name = "LP02"

[[lpar.nic]]
chpid = "F0"
vlan = 100
ipv4 = ["10.0.0.1/24"]
"#;

    #[test]
    fn each_address_of_a_nic_routes_to_its_port_in_its_segment() {
        let fabric = Fabric::parse(FILE, Path::new("t.toml")).unwrap();
        let nic = &fabric.lpars[0].nics[0];
        let routes: Vec<_> = nic_routes(nic, 17).collect();
        // Two IPv4 addresses, one IPv6 address and the link-local address from the MAC.
        assert_eq!(routes.len(), 4);
        let expected: [IpAddr; 4] = [
            "10.0.0.1".parse().unwrap(),
            "10.0.1.1".parse().unwrap(),
            "fd00:f0::1".parse().unwrap(),
            "fe80::ff:fef0:7000".parse().unwrap(),
        ];
        for ((key, target), addr) in routes.iter().zip(expected) {
            assert_eq!(key.segment, 0xf0);
            assert_eq!(key.addr, iqd_common::addr_of(addr));
            assert_eq!(target.ifindex, 17);
            assert_eq!(target.mac, [0x02, 0, 0, 0xf0, 0x70, 0x00]);
        }
        assert_eq!(
            routes[0].0.addr,
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1],
            "IPv4 is keyed IPv4-mapped"
        );
        let other: Vec<_> = nic_routes(&fabric.lpars[0].nics[1], 18).collect();
        assert_eq!(other[0].0.segment, 0xf1);
        assert_eq!(other[0].1.ifindex, 18);
        // The same address in VLAN 100 of F0 is another key: another LAN.
        let tagged: Vec<_> = nic_routes(&fabric.lpars[1].nics[0], 19).collect();
        assert_eq!(tagged[0].0.addr, routes[0].0.addr);
        assert_eq!(tagged[0].0.segment, 0xf0 | 100 << 16);
        assert_ne!(tagged[0].0, routes[0].0);
    }

    #[test]
    fn ports_are_named_after_the_devno() {
        let fabric = Fabric::parse(FILE, Path::new("t.toml")).unwrap();
        assert_eq!(port_name(&fabric.lpars[0].nics[0]), "p7000");
    }
}
