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

use iqd_common::{
    bw_direction, port_flags, route_flags, GroupKey, PortInfo, RouteKey, RouteTarget,
};

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
    state::{self, AppliedFile, LparState, NicRecord, State},
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

/// Stops or starts the LPAR named `lpar` of the running fabric `fabric` (read from `config`),
/// holding the fabric's lock; `None` if it already was in state `to`.
///
/// The change goes through the same plan and executor as `up`, applying the configuration
/// that runs now (recorded by the last `up`) with the LPAR's new state, so that nothing else
/// changes, whatever the file says meanwhile. Stopping takes its ports down (no carrier in the
/// LPAR), moves its addresses out of the routes (frames to them: `lpar_stopped`) and cuts its
/// tracked connections; starting undoes that. If a step fails, the LPAR returns to its old
/// state.
pub async fn set_lpar_state(
    fabric: &Fabric,
    config: &Path,
    lpar: &str,
    to: LparState,
    wait: Wait,
) -> Result<Option<UpReport>> {
    let verb = match to {
        LparState::Running => "lpar start",
        LparState::Stopped => "lpar stop",
    };
    let _lock = FabricLock::acquire(&fabric.name, verb, wait)?;
    let not_up = || Error::NotUp {
        fabric: fabric.name.clone(),
        pin_dir: dataplane::pin_dir(&fabric.name),
    };
    let state = State::load(&fabric.name)?.ok_or_else(not_up)?;
    if !state.has_lpar(lpar) {
        let mut known: Vec<&str> = state.lpars.keys().map(String::as_str).collect();
        known.extend(state.nics.iter().map(|n| n.lpar.as_str()));
        known.sort_unstable();
        known.dedup();
        return Err(Error::UnknownLpar {
            fabric: fabric.name.clone(),
            lpar: lpar.to_string(),
            known: if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
        });
    }
    if state.lpars.get(lpar).copied().unwrap_or_default() == to {
        return Ok(None);
    }
    // The configuration that runs now; the switch (afxdp) reads it from a copy of its own.
    let applied = match &state.applied {
        Some(applied) => applied.clone(),
        None => AppliedFile {
            path: config.to_path_buf(),
            text: std::fs::read_to_string(config).map_err(|e| Error::io("read", config, e))?,
        },
    };
    let running = Fabric::parse_keeping(&applied.text, &applied.path, &state.kept_devnos())?;
    let copy = state::dir(&fabric.name).join("lifecycle.toml");
    state::write_atomically(&copy, applied.text.as_bytes())?;
    let mut changed = state.clone();
    changed.lpars.insert(lpar.to_string(), to);
    changed.save()?;
    let mut undo = Undo::default();
    let result = apply(&running, &copy, &applied.text, Some(changed), &mut undo).await;
    let failure = match result {
        Ok(report) => {
            // `up` and rollbacks return to the file as the user keeps it.
            if let Some(mut now) = State::load(&fabric.name)? {
                now.applied = Some(applied);
                now.save()?;
            }
            return Ok(Some(report));
        }
        Err(failure) => failure,
    };
    if matches!(failure, Error::Refused { .. }) {
        state.save()?;
        return Err(failure);
    }
    // Back to the state it had, as the failed step left the rest.
    let rollback = async {
        let mut recorded = State::load(&fabric.name)?.unwrap_or_else(|| state.clone());
        recorded.lpars.insert(
            lpar.to_string(),
            state.lpars.get(lpar).copied().unwrap_or_default(),
        );
        recorded.save()?;
        let mut undo = Undo::default();
        apply(&running, &copy, &applied.text, Some(recorded), &mut undo).await?;
        if let Some(mut now) = State::load(&fabric.name)? {
            now.applied = Some(applied.clone());
            now.save()?;
        }
        Ok::<_, Error>("returned the LPAR to its state before")
    }
    .await;
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

/// Reads the fabric file `path` as `up` applies it: a NIC that sets no devno keeps the one it
/// was built with (see [`Fabric::parse_keeping`]).
pub fn load(path: &Path) -> Result<Fabric> {
    let fabric = Fabric::load(path)?;
    match State::load(&fabric.name) {
        Ok(Some(state)) if !state.nics.is_empty() => {
            Ok(Fabric::load_keeping(path, &state.kept_devnos())?)
        }
        _ => Ok(fabric),
    }
}

/// What a failed `up` created, for a fabric with no earlier configuration to return to.
#[derive(Debug, Default)]
struct Undo {
    created_netns: Vec<String>,
    created_ports: Vec<String>,
}

/// Brings the fabric back to the configuration a successful `up` recorded.
async fn roll_back_to(applied: &AppliedFile, name: &str) -> Result<&'static str> {
    let kept = State::load(name)?
        .map(|s| s.kept_devnos())
        .unwrap_or_default();
    let previous = Fabric::parse_keeping(&applied.text, &applied.path, &kept)?;
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
        // Every link of the fabric namespace but its loopback and the shapers is a port.
        for link in fabric_nl.links().await? {
            if link.name != "lo" && !is_shaper(&link.name) {
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
    let steps = reconcile::plan(fabric, &recorded, &observed, config)
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
        stopped_routes: Vec::new(),
        bw_ports: Vec::new(),
        stopped_ports: std::collections::HashSet::new(),
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
    // Every LPAR of the file has a state: new ones run; those gone from the file have none.
    exec.state
        .lpars
        .retain(|name, _| fabric.lpars.iter().any(|l| &l.name == name));
    for lpar in &fabric.lpars {
        exec.state.lpars.entry(lpar.name.clone()).or_default();
    }
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
    /// ROUTES entries of the NICs configured so far (of running LPARs).
    routes: Vec<(RouteKey, RouteTarget)>,
    /// STOPPED entries: the routes of stopped LPARs' NICs configured so far.
    stopped_routes: Vec<(RouteKey, RouteTarget)>,
    /// (port ifindex, bandwidth slot) of the NICs of LPARs with a bandwidth.
    bw_ports: Vec<(u32, u32)>,
    /// Ports of stopped LPARs' NICs: their connections go.
    stopped_ports: std::collections::HashSet<u32>,
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
                // An LPAR that leaves the file is gone with its NICs: a rollback that brings it
                // back brings a new LPAR, whose NICs may come with it.
                if !fabric.lpars.iter().any(|l| l.name == old.lpar) {
                    self.state.lpars.remove(&old.lpar);
                }
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
                let stopped = std::mem::take(&mut self.stopped_routes);
                let broadcasts = broadcast_lists(fabric, |nic| self.ports.get(&nic.devno).copied());
                let (_, maps) = self.plane()?;
                let _guard = NetnsGuard::enter(&fabric_ns)?;
                maps.sync_all_routes(&routes, &stopped)?;
                maps.sync_broadcasts(&broadcasts)?;
            }
            Step::SyncBandwidth => self.sync_bandwidth().await?,
            Step::ApplySecurityGroups => {
                let ports = self.ports.clone();
                let stopped = self.stopped_ports.clone();
                let mut report = std::mem::take(&mut self.report);
                let result = {
                    let (_, maps) = self.plane()?;
                    apply_security_groups(fabric, &ports, &stopped, maps, &mut report)
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
                // The switch reads the state file: a new fabric without LPARs has recorded
                // no NIC, hence written no file, by now.
                self.state.save()?;
                self.report.switch_pid = Some(switch::start(&fabric.name, self.config)?);
            }
            Step::Switch { run: false } => {
                switch::stop(&fabric.name)?;
            }
        }
        Ok(())
    }

    /// Builds a shaper for each LPAR bandwidth and direction, removes those no longer wanted,
    /// and points the meters at them.
    async fn sync_bandwidth(&mut self) -> Result<()> {
        let fabric = self.fabric;
        let fabric_ns = fabric.netns_name();
        let ports = std::mem::take(&mut self.bw_ports);
        let pin_dir = self.pin_dir.clone();
        let wanted = buckets(fabric);
        let mut meters = Vec::new();
        for &(index, rate, burst_ns) in &wanted {
            let (into, out) = shaper_names(index);
            let fabric_nl = self.fabric_nl()?;
            if fabric_nl.link(&into).await?.is_none() || fabric_nl.link(&out).await?.is_none() {
                if let Some(stale) = fabric_nl.link(&into).await? {
                    fabric_nl.delete_link(stale.index).await?;
                }
                fabric_nl.add_local_veth(&into, &out, PORT_MTU).await?;
            }
            let (into_link, out_link) = (
                fabric_nl.require_link(&into).await?,
                fabric_nl.require_link(&out).await?,
            );
            let (burst, limit) = tbf_sizes(rate);
            fabric_nl
                .set_tbf(into_link.index, rate, burst, limit)
                .await?;
            fabric_nl.set_up(out_link.index).await?;
            fabric_nl.set_up(into_link.index).await?;
            {
                let (plane, _) = self.plane()?;
                let _guard = NetnsGuard::enter(&fabric_ns)?;
                plane.attach(Side::Shaped, &out, &out, out_link.index)?;
            }
            meters.push((index, rate, burst_ns, into_link.index));
        }
        let names: Vec<String> = wanted
            .iter()
            .flat_map(|&(index, _, _)| {
                let (into, out) = shaper_names(index);
                [into, out]
            })
            .collect();
        let (_, maps) = self.plane()?;
        maps.sync_bandwidth(&ports, &meters)?;
        // Shapers no one uses any more go (after the meters no longer point at them).
        let fabric_nl = self.fabric_nl()?;
        for link in fabric_nl.links().await? {
            if is_shaper(&link.name) && !names.contains(&link.name) {
                dataplane::detach_side(&pin_dir, Side::Shaped, &link.name)?;
                fabric_nl.delete_link(link.index).await?;
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

    /// Puts `record` in the state file in place of any record of its port; a new LPAR is
    /// recorded running with its first NIC.
    fn record_nic(&mut self, record: &NicRecord) -> Result<()> {
        self.state.lpars.entry(record.lpar.clone()).or_default();
        self.state.nics.retain(|r| r.port != record.port);
        self.state.nics.push(record.clone());
        self.state.save()
    }

    async fn configure_nic(&mut self, record: &NicRecord) -> Result<()> {
        let fabric = self.fabric;
        let fabric_ns = fabric.netns_name();
        let nic = find_nic(fabric, record)?;
        let (slot, lpar) = fabric
            .lpars
            .iter()
            .enumerate()
            .find(|(_, l)| l.name == record.lpar)
            .ok_or(Error::StepOrder("LPAR of the file"))?;
        let stopped = self.state.is_stopped(&record.lpar);
        let limited = lpar.effective_bandwidth().is_some();
        let port = self.fabric_nl()?.require_link(&record.port).await?;
        let mut flags = if nic.allow_ip_spoofing {
            port_flags::ALLOW_IP_SPOOFING
        } else {
            0
        };
        if limited {
            flags |= port_flags::BANDWIDTH;
        }
        if nic.layer2 {
            flags |= port_flags::LAYER2;
        }
        // Copies of one-to-many frames to it are dropped (`lpar_stopped`); its registrations
        // stay (its sockets stay joined), so it receives again once started.
        if stopped {
            flags |= port_flags::STOPPED;
        }
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
            // XDP passes frames that go through a shaper up to the port's tc ingress: needed
            // on every port once any LPAR has a bandwidth (it may receive from any port).
            let shaping = fabric
                .lpars
                .iter()
                .any(|l| l.effective_bandwidth().is_some());
            match fabric.datapath {
                Datapath::Xdp | Datapath::Afxdp if shaping => {
                    plane.attach(Side::Shaped, &record.port, &record.port, port.index)?
                }
                _ => dataplane::detach_side(&pin_dir, Side::Shaped, &record.port)?,
            }
        }
        // A stopped LPAR's port is down: its NIC has no carrier, as a stopped server's.
        if stopped {
            self.fabric_nl()?.set_down(port.index).await?;
        } else {
            self.fabric_nl()?.set_up(port.index).await?;
        }
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
        let routes = nic_routes(nic, port.index).map(|(key, target)| {
            let flags = if limited { route_flags::BANDWIDTH } else { 0 };
            (key, target.with_flags(target.flags | flags))
        });
        if stopped {
            self.stopped_ports.insert(port.index);
            self.stopped_routes.extend(routes);
        } else {
            self.routes.extend(routes);
        }
        if limited {
            self.bw_ports.push((port.index, slot as u32));
        }
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

/// The longest queue a shaper holds, in time at its rate: the meter drops what would make it
/// longer (`bandwidth_exceeded`). TCP keeps far less in it (TCP small queues); a sender that
/// does not slow down meets the drops.
pub const BANDWIDTH_QUEUE_NS: u64 = 10_000_000;

/// The meter's burst for `rate` bytes per second: [`BANDWIDTH_QUEUE_NS`], or at least three
/// 64 KiB packets.
pub fn burst_ns(rate: u64) -> u64 {
    BANDWIDTH_QUEUE_NS.max(3 * 65536 * 1_000_000_000 / rate.max(1))
}

/// The shaper of bandwidth meter `index` (2 × slot + direction): its in end (the TBF qdisc)
/// and out end (`iqd_shaped`), in the fabric namespace: `bs<slot>i`/`bs<slot>o` for what the
/// LPAR sends, `br<slot>i`/`br<slot>o` for what it receives.
pub fn shaper_names(index: u32) -> (String, String) {
    let direction = if index % 2 == bw_direction::SEND {
        "s"
    } else {
        "r"
    };
    let base = format!("b{direction}{:x}", index / 2);
    (format!("{base}i"), format!("{base}o"))
}

/// Whether a link of the fabric namespace is a shaper's end (not a port).
pub fn is_shaper(name: &str) -> bool {
    name.starts_with("bs") || name.starts_with("br")
}

/// The TBF of a shaper of `rate` bytes per second: its bucket (1 ms at the rate, at least
/// two 64 KiB packets, so that GSO packets pass whole and no one-second interval carries more
/// than 0.1% above the rate at 10 Gbps) and its queue (twice the meter's longest, so the meter,
/// which counts, drops before the qdisc would).
pub fn tbf_sizes(rate: u64) -> (u32, u32) {
    let burst = (rate / 1000).max(2 * 65536);
    let limit = rate * 2 * BANDWIDTH_QUEUE_NS / 1_000_000_000 + 2 * burst;
    (
        burst.min(u32::MAX as u64) as u32,
        limit.min(u32::MAX as u64) as u32,
    )
}

/// The share of an LPAR's bandwidth its shapers pass, in percent. A little under the whole:
/// what is measured over one second also holds bytes that are only queued (a socket's buffer,
/// the shaper's queue), and a second stream starting while the first runs at the full rate
/// makes their summed one-second figures exceed the rate by a few percent (docs/architecture.md
/// has the measurements). 98% keeps those within 102% and costs TCP little against its 90%.
pub const SHAPED_PERCENT: u64 = 98;

/// The rate, in bytes per second on the wire, a shaper of `bandwidth` passes.
pub fn shaper_rate(bandwidth: crate::config::Bandwidth) -> u64 {
    bandwidth.bytes_per_second() / 100 * SHAPED_PERCENT
}

/// The meters of the LPARs with a bandwidth: (index, bytes per second, burst in ns), the LPAR
/// at position `slot` of the file having its send meter at `2 * slot` and its receive meter
/// after it.
fn buckets(fabric: &Fabric) -> Vec<(u32, u64, u64)> {
    fabric
        .lpars
        .iter()
        .enumerate()
        .filter_map(|(slot, l)| Some((slot as u32, shaper_rate(l.effective_bandwidth()?))))
        .flat_map(|(slot, rate)| {
            [bw_direction::SEND, bw_direction::RECEIVE]
                .map(|direction| (2 * slot + direction, rate, burst_ns(rate)))
        })
        .collect()
}

/// Compiles every NIC's security groups into the rule table, then cuts the tracked connections
/// the rules no longer allow (revoking access takes effect at once), and those of stopped
/// LPARs' NICs (`stopped`, their ports).
fn apply_security_groups(
    fabric: &Fabric,
    ports: &std::collections::HashMap<u16, u32>,
    stopped: &std::collections::HashSet<u32>,
    maps: &mut FabricMaps,
    report: &mut UpReport,
) -> Result<()> {
    let table = RuleTable::compile(fabric, |nic| ports.get(&nic.devno).copied())
        .map_err(|e| Error::Rules(e.to_string()))?;
    maps.sync_rules(&table.encoded())?;
    // Each live port's segment: a connection stays only between two live ports of its own.
    // A stopped LPAR's ports are not live.
    let segments: std::collections::HashMap<u32, u32> = fabric
        .lpars
        .iter()
        .flat_map(|l| l.nics.iter())
        .filter_map(|nic| Some((*ports.get(&nic.devno)?, nic.segment())))
        .filter(|(port, _)| !stopped.contains(port))
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
/// address) in its segment, and its MAC in the segment's layer-2 space
/// (`iqd_common::mac_key`), pointing at its port. A layer-2 NIC's targets say so: a layer-3
/// NIC cannot reach them, nor a layer-2 NIC the others.
fn nic_routes(nic: &Nic, port_ifindex: u32) -> impl Iterator<Item = (RouteKey, RouteTarget)> + '_ {
    let flags = if nic.layer2 { route_flags::LAYER2 } else { 0 };
    let target = RouteTarget::new(port_ifindex, nic.mac).with_flags(flags);
    nic.addresses()
        .into_iter()
        .map(move |addr| RouteKey::new(nic.segment(), addr))
        .chain(std::iter::once(iqd_common::mac_key(nic.segment(), nic.mac)))
        .map(move |key| (key, target))
}

/// The member lists iqd writes: in each segment, on layer 3, the limited broadcast
/// (255.255.255.255) reaches every layer-3 NIC, and the directed broadcast of each IPv4 prefix
/// (up to /30) every layer-3 NIC with an address in it; on layer 2, a frame to the broadcast
/// MAC every layer-2 NIC, to another group MAC also every layer-2 NIC
/// (`iqd_common::flood_key`). A NIC with `rx_bcast = false` is in no broadcast list. `port`: a
/// NIC's port, if it has one.
pub fn broadcast_lists(
    fabric: &Fabric,
    port: impl Fn(&Nic) -> Option<u32>,
) -> Vec<(GroupKey, Vec<u32>)> {
    let all: Vec<(&Nic, u32)> = fabric
        .lpars
        .iter()
        .flat_map(|l| l.nics.iter())
        .filter_map(|nic| Some((nic, port(nic)?)))
        .collect();
    let mut floods: std::collections::BTreeMap<(u32, bool), Vec<u32>> = Default::default();
    for (nic, port) in all.iter().filter(|(nic, _)| nic.layer2) {
        floods
            .entry((nic.segment(), false))
            .or_default()
            .push(*port);
        if nic.rx_bcast {
            floods.entry((nic.segment(), true)).or_default().push(*port);
        }
    }
    let nics: Vec<(&Nic, u32)> = all
        .into_iter()
        .filter(|(nic, _)| !nic.layer2 && nic.rx_bcast)
        .collect();
    let mut lists: std::collections::BTreeMap<(u32, Ipv4Addr), Vec<u32>> = Default::default();
    for (nic, port) in &nics {
        lists
            .entry((nic.segment(), Ipv4Addr::BROADCAST))
            .or_default()
            .push(*port);
        // Up to /30 only: the programs look a destination up as a directed broadcast only if
        // its two lowest bits are set (`mcast::may_be_one_to_many`).
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
    let floods = floods.into_iter().map(|((segment, broadcast), members)| {
        (iqd_common::flood_key(segment, broadcast), members)
    });
    lists
        .into_iter()
        .map(|((segment, addr), members)| (GroupKey::new(segment, IpAddr::V4(addr)), members))
        .chain(floods)
        .map(|(key, mut members)| {
            members.sort_unstable();
            members.dedup();
            (key, members)
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
        // No duplicate address detection either (a layer-2 interface would run it): the
        // file's addresses are unique in their segment (`iqd check`), and the probes would
        // hold every address back for a second.
        for (key, value) in [
            ("accept_ra", "0"),
            ("router_solicitations", "0"),
            ("accept_dad", "0"),
            ("disable_ipv6", "0"),
        ] {
            netns::write_sysctl(&format!("net/ipv6/conf/{}/{key}", nic.name), value)?;
        }
    }
    // NOARP, as qeth sets a HiperSockets layer-3 interface: the kernel resolves every
    // neighbour without asking (no ARP, no ND, no DAD); the fabric delivers by address and
    // writes the destination MAC itself. A layer-2 interface resolves its neighbours itself,
    // with ordinary ARP and ND.
    let noarp = !nic.layer2;
    if link.noarp != noarp {
        lpar_nl.set_arp(link.index, !noarp).await?;
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
    // Nothing of the fabric stays behind, its lock files included (a trace still running
    // fails with the pins gone).
    crate::trace::remove_lock_files(&fabric.name);
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
        // Two IPv4 addresses, one IPv6 address, the link-local address from the MAC, and the
        // MAC itself in the segment's layer-2 space.
        assert_eq!(routes.len(), 5);
        let (mac_key, mac_target) = routes[4];
        assert_eq!(mac_key, iqd_common::mac_key(0xf0, nic.mac));
        assert!(mac_key.is_layer2());
        assert_eq!(mac_target.flags & route_flags::LAYER2, 0, "a layer-3 NIC");
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
    fn broadcast_and_flood_lists_keep_the_modes_apart() {
        let text = r#"
[fabric]
name = "t"

[[chpid]]
id = "F0"

[[lpar]]
name = "A"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.1/24"]

[[lpar]]
name = "B"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.2/24"]
rx_bcast = false

[[lpar]]
name = "C"
[[lpar.nic]]
chpid = "F0"
layer2 = true
ipv4 = ["10.0.0.3/24"]

[[lpar]]
name = "D"
[[lpar.nic]]
chpid = "F0"
layer2 = true
rx_bcast = false
"#;
        let fabric = Fabric::parse(text, Path::new("t.toml")).unwrap();
        let ports: std::collections::HashMap<&str, u32> =
            [("A", 1), ("B", 2), ("C", 3), ("D", 4)].into();
        let lists = broadcast_lists(&fabric, |nic| {
            let lpar = fabric.lpars.iter().find(|l| l.nics.contains(nic))?;
            ports.get(lpar.name.as_str()).copied()
        });
        let list = |key: GroupKey| {
            lists
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, m)| m.clone())
                .unwrap_or_default()
        };
        let limited = GroupKey::new(0xf0, IpAddr::V4(Ipv4Addr::BROADCAST));
        let directed = GroupKey::new(0xf0, "10.0.0.255".parse().unwrap());
        // Layer 3: only A (B takes no broadcasts, C and D are layer 2).
        assert_eq!(list(limited), [1]);
        assert_eq!(list(directed), [1]);
        // Layer 2: broadcasts to C only, other group MACs to C and D.
        assert_eq!(list(iqd_common::flood_key(0xf0, true)), [3]);
        assert_eq!(list(iqd_common::flood_key(0xf0, false)), [3, 4]);
        assert_eq!(lists.len(), 4, "{lists:?}");
        // A layer-2 NIC's targets say so.
        let c = &fabric.lpars[2].nics[0];
        assert!(nic_routes(c, 3).all(|(_, t)| t.flags & route_flags::LAYER2 != 0));
    }

    #[test]
    fn ports_are_named_after_the_devno() {
        let fabric = Fabric::parse(FILE, Path::new("t.toml")).unwrap();
        assert_eq!(port_name(&fabric.lpars[0].nics[0]), "p7000");
    }
}
