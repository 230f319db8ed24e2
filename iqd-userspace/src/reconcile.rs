//! The plan half of `iqd up`: from the desired fabric, what the state file recorded and what
//! exists now, the ordered steps that make the fabric match the file, or the refusals that
//! stop it before anything changes. Pure: no system calls, unit-tested without root. The
//! executor (`fabric.rs`) carries the steps out under the fabric's lock.
use std::{collections::HashSet, path::Path};

use crate::{
    config::{Fabric, Lpar, Nic},
    state::{NicRecord, State},
};

/// The fabric-side port of a NIC, named after its read devno (unique in the fabric).
pub fn port_name(nic: &Nic) -> String {
    format!("p{:04x}", nic.devno)
}

/// A NIC as the fabric file wants it.
pub fn record(fabric: &Fabric, lpar: &Lpar, nic: &Nic) -> NicRecord {
    let mtu = fabric.chpid(nic.chpid).map(|c| c.mfs.mtu()).unwrap_or(0);
    NicRecord {
        lpar: lpar.name.clone(),
        netns: lpar.netns.clone(),
        nic: nic.name.clone(),
        port: port_name(nic),
        chpid: nic.chpid,
        vlan: nic.vlan,
        devno: nic.devno,
        mac: nic.mac,
        mtu,
        ipv4: nic.ipv4.iter().map(|a| a.to_string()).collect(),
        ipv6: nic.ipv6.iter().map(|a| a.to_string()).collect(),
    }
}

/// Two records describe the same veth pair (same names, namespace, MAC and MTU): it can stay.
/// The CHPID and VLAN are not the link's: a NIC moved to another segment keeps its veth pair,
/// and its configuration (port description, routes) moves it.
pub fn same_link(a: &NicRecord, b: &NicRecord) -> bool {
    a.port == b.port && a.netns == b.netns && a.nic == b.nic && a.mac == b.mac && a.mtu == b.mtu
}

/// What exists now, read before planning.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Named network namespaces that exist.
    pub netns: HashSet<String>,
    /// Ports in the fabric namespace.
    pub ports: HashSet<String>,
    /// Interfaces in the LPAR namespaces, as (namespace, name), for the names NICs use.
    pub lpar_links: HashSet<(String, String)>,
}

/// One step of `up`. Each names what it changes, so an error says where `up` stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The fabric's own namespace (created if missing; its settings are applied either way).
    FabricNetns { create: bool },
    /// An LPAR namespace iqd creates (recorded first, see `State::will_create_netns`).
    CreateNetns(String),
    /// An existing LPAR namespace iqd did not create: used, never deleted.
    AdoptNetns(String),
    /// Load the programs and open their pinned maps.
    LoadPrograms,
    /// A NIC that is gone from the file or changed so that it needs a new veth pair.
    RemoveNic(NicRecord),
    /// A port in the fabric namespace that no record explains (a run killed after creating
    /// it): deleted, with its pinned links, so the NIC is built anew.
    RemoveLeftoverPort(String),
    /// A new veth pair for a NIC.
    CreateNic(NicRecord),
    /// A NIC that stays: its veth pair is kept (frames keep flowing).
    KeepNic(NicRecord),
    /// A NIC's port description, program and LPAR side (addresses, offloads), created or kept.
    ConfigureNic(NicRecord),
    /// The address maps hold exactly the NICs' addresses (a stopped LPAR's apart).
    SyncRoutes,
    /// The bandwidth meters are the LPARs' bandwidths.
    SyncBandwidth,
    /// The rule table holds the compiled security groups; connections they no longer allow go.
    ApplySecurityGroups,
    /// The programs' maps become the fabric's: on an upgrade of pins of another map layout,
    /// the pinned links move to the new programs and the new maps replace the old pins (see
    /// `layout`); always, `IQD_LAYOUT` records the layout.
    CommitLayout,
    /// An LPAR namespace iqd created for an LPAR that left the file.
    DeleteNetns(String),
    /// The AF_XDP switch (data path `afxdp`) starts, or any running switch stops.
    Switch { run: bool },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::FabricNetns { create: true } => write!(f, "create the fabric namespace"),
            Step::FabricNetns { create: false } => write!(f, "set up the fabric namespace"),
            Step::CreateNetns(name) => write!(f, "create namespace {name}"),
            Step::AdoptNetns(name) => write!(f, "adopt namespace {name}"),
            Step::LoadPrograms => write!(f, "load the eBPF programs and maps"),
            Step::RemoveNic(r) => write!(f, "remove NIC {}/{} (port {})", r.lpar, r.nic, r.port),
            Step::RemoveLeftoverPort(port) => write!(f, "remove leftover port {port}"),
            Step::CreateNic(r) => write!(
                f,
                "create NIC {}/{} (port {}, {} in namespace {})",
                r.lpar, r.nic, r.port, r.nic, r.netns
            ),
            Step::KeepNic(r) => write!(f, "keep NIC {}/{}", r.lpar, r.nic),
            Step::ConfigureNic(nic) => write!(
                f,
                "configure NIC {}/{} (port {}, {} in namespace {})",
                nic.lpar, nic.nic, nic.port, nic.nic, nic.netns
            ),
            Step::SyncRoutes => write!(f, "write the address maps"),
            Step::SyncBandwidth => write!(f, "write the bandwidth meters"),
            Step::ApplySecurityGroups => write!(f, "apply the security groups"),
            Step::CommitLayout => write!(f, "commit the map layout"),
            Step::DeleteNetns(name) => write!(f, "delete namespace {name}"),
            Step::Switch { run: true } => write!(f, "start the AF_XDP switch"),
            Step::Switch { run: false } => write!(f, "stop the AF_XDP switch"),
        }
    }
}

/// Why `up` will not start: something it would have to change is not its own, or may not
/// change now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// As in the cloud, a server's network interfaces are added and removed only while it is
    /// stopped.
    #[error("LPAR {lpar} is running: {} NIC {nic} (CHPID {chpid}) needs it stopped; run `iqd lpar stop {lpar} --config {config}`, then `iqd up --config {config}` again and `iqd lpar start {lpar} --config {config}`", if *.added { "adding" } else { "removing" })]
    NicChangeWhileRunning {
        lpar: String,
        nic: String,
        chpid: String,
        /// Added (else removed).
        added: bool,
        /// The fabric file, as the user named it.
        config: String,
    },
    #[error("create NIC {lpar}/{nic}: namespace {netns} already has an interface {nic} that iqd did not create; rename or delete it, or give the NIC another name")]
    ForeignLink {
        lpar: String,
        netns: String,
        nic: String,
    },
}

/// NICs added to or removed from LPARs that exist and run: refused (see
/// [`Refusal::NicChangeWhileRunning`]). A NIC is its name and CHPID: moving it to another
/// CHPID removes one and adds another. An LPAR that is new, stopped, or leaves the file as a
/// whole may change freely; so may everything else of a NIC (addresses, groups, spoofing).
fn nic_changes_while_running(desired: &Fabric, recorded: &State, config: &Path) -> Vec<Refusal> {
    let mut refusals = Vec::new();
    let config = config.display().to_string();
    for lpar in &desired.lpars {
        if !recorded.has_lpar(&lpar.name) || recorded.is_stopped(&lpar.name) {
            continue;
        }
        let was: Vec<(&str, u8)> = recorded
            .nics
            .iter()
            .filter(|r| r.lpar == lpar.name)
            .map(|r| (r.nic.as_str(), r.chpid))
            .collect();
        let is: Vec<(&str, u8)> = lpar
            .nics
            .iter()
            .map(|n| (n.name.as_str(), n.chpid))
            .collect();
        let refusal = |(nic, chpid): (&str, u8), added| Refusal::NicChangeWhileRunning {
            lpar: lpar.name.clone(),
            nic: nic.to_string(),
            chpid: crate::config::chpid_label(chpid),
            added,
            config: config.clone(),
        };
        refusals.extend(
            was.iter()
                .filter(|n| !is.contains(n))
                .map(|n| refusal(*n, false)),
        );
        refusals.extend(
            is.iter()
                .filter(|n| !was.contains(n))
                .map(|n| refusal(*n, true)),
        );
    }
    refusals
}

/// The steps that make the fabric match `desired` (read from the file `config`), given what
/// `recorded` says iqd built and what `observed` exists; or every refusal, found before
/// anything changes.
pub fn plan(
    desired: &Fabric,
    recorded: &State,
    observed: &Observed,
    config: &Path,
) -> Result<Vec<Step>, Vec<Refusal>> {
    let fabric_netns = desired.netns_name();
    let mut steps = vec![Step::FabricNetns {
        create: !observed.netns.contains(&fabric_netns),
    }];

    let mut seen = HashSet::new();
    for lpar in &desired.lpars {
        if !seen.insert(lpar.netns.clone()) {
            continue;
        }
        let ours = recorded.created_netns.contains(&lpar.netns);
        if !observed.netns.contains(&lpar.netns) {
            steps.push(Step::CreateNetns(lpar.netns.clone()));
        } else if !ours {
            steps.push(Step::AdoptNetns(lpar.netns.clone()));
        }
    }
    steps.push(Step::LoadPrograms);

    let wanted: Vec<NicRecord> = desired
        .lpars
        .iter()
        .flat_map(|l| l.nics.iter().map(move |n| record(desired, l, n)))
        .collect();
    // A recorded NIC is kept only if the file still wants that very veth pair and its port
    // still exists.
    let kept = |w: &NicRecord| -> Option<&NicRecord> {
        recorded
            .nics
            .iter()
            .find(|old| same_link(w, old))
            .filter(|old| observed.ports.contains(&old.port))
    };
    for old in &recorded.nics {
        if !wanted.iter().any(|w| same_link(w, old)) || !observed.ports.contains(&old.port) {
            steps.push(Step::RemoveNic(old.clone()));
        }
    }
    let recorded_ports: HashSet<&str> = recorded.nics.iter().map(|r| r.port.as_str()).collect();
    let mut leftovers: Vec<&String> = observed
        .ports
        .iter()
        .filter(|p| !recorded_ports.contains(p.as_str()))
        .collect();
    leftovers.sort();
    steps.extend(leftovers.into_iter().cloned().map(Step::RemoveLeftoverPort));

    let mut refusals = nic_changes_while_running(desired, recorded, config);
    for nic in &wanted {
        match kept(nic) {
            Some(_) => {
                steps.push(Step::KeepNic(nic.clone()));
                steps.push(Step::ConfigureNic(nic.clone()));
            }
            None => {
                // The LPAR-side name is free unless something holds it that iqd will not
                // delete first: an interface whose port is not one iqd removes in this run.
                let name_taken = observed
                    .lpar_links
                    .contains(&(nic.netns.clone(), nic.nic.clone()));
                let removed_here = recorded
                    .nics
                    .iter()
                    .any(|old| old.netns == nic.netns && old.nic == nic.nic)
                    || observed.ports.contains(&nic.port);
                if name_taken && !removed_here {
                    refusals.push(Refusal::ForeignLink {
                        lpar: nic.lpar.clone(),
                        netns: nic.netns.clone(),
                        nic: nic.nic.clone(),
                    });
                }
                steps.push(Step::CreateNic(nic.clone()));
                steps.push(Step::ConfigureNic(nic.clone()));
            }
        }
    }
    steps.push(Step::SyncRoutes);
    steps.push(Step::SyncBandwidth);
    steps.push(Step::ApplySecurityGroups);
    steps.push(Step::CommitLayout);
    for name in &recorded.created_netns {
        if !desired.lpars.iter().any(|l| &l.netns == name) {
            steps.push(Step::DeleteNetns(name.clone()));
        }
    }
    steps.push(Step::Switch {
        run: desired.datapath == crate::config::Datapath::Afxdp,
    });
    if refusals.is_empty() {
        Ok(steps)
    } else {
        Err(refusals)
    }
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

[[lpar]]
name = "LP01"
netns = "lp01"

[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.1/24"]

[[lpar]]
name = "LP02"
netns = "lp02"

[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.0.0.2/24"]
"#;

    fn fabric(text: &str) -> Fabric {
        Fabric::parse(text, Path::new("t.toml")).unwrap()
    }

    fn observed(netns: &[&str], ports: &[&str], links: &[(&str, &str)]) -> Observed {
        Observed {
            netns: netns.iter().map(|s| s.to_string()).collect(),
            ports: ports.iter().map(|s| s.to_string()).collect(),
            lpar_links: links
                .iter()
                .map(|(n, l)| (n.to_string(), l.to_string()))
                .collect(),
        }
    }

    fn names(steps: &[Step]) -> Vec<String> {
        steps.iter().map(|s| s.to_string()).collect()
    }

    /// The state a completed `up` of `fabric` leaves.
    fn recorded(fabric: &Fabric) -> State {
        State {
            fabric: fabric.name.clone(),
            created_netns: fabric.lpars.iter().map(|l| l.netns.clone()).collect(),
            nics: fabric
                .lpars
                .iter()
                .flat_map(|l| l.nics.iter().map(move |n| record(fabric, l, n)))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_new_fabric_creates_everything_in_order() {
        let f = fabric(FILE);
        let steps = plan(
            &f,
            &State::default(),
            &Observed::default(),
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(
            names(&steps),
            [
                "create the fabric namespace",
                "create namespace lp01",
                "create namespace lp02",
                "load the eBPF programs and maps",
                "create NIC LP01/hsi0 (port p7000, hsi0 in namespace lp01)",
                "configure NIC LP01/hsi0 (port p7000, hsi0 in namespace lp01)",
                "create NIC LP02/hsi0 (port p7003, hsi0 in namespace lp02)",
                "configure NIC LP02/hsi0 (port p7003, hsi0 in namespace lp02)",
                "write the address maps",
                "write the bandwidth meters",
                "apply the security groups",
                "commit the map layout",
                "stop the AF_XDP switch",
            ]
        );
    }

    #[test]
    fn a_fabric_that_matches_keeps_every_nic() {
        let f = fabric(FILE);
        let seen = observed(
            &["iqd-t", "lp01", "lp02"],
            &["p7000", "p7003"],
            &[("lp01", "hsi0"), ("lp02", "hsi0")],
        );
        let steps = plan(&f, &recorded(&f), &seen, Path::new("t.toml")).unwrap();
        assert!(steps.contains(&Step::FabricNetns { create: false }));
        assert!(!steps.iter().any(|s| matches!(
            s,
            Step::CreateNic(_) | Step::RemoveNic(_) | Step::CreateNetns(_)
        )));
        assert_eq!(
            steps
                .iter()
                .filter(|s| matches!(s, Step::KeepNic(_)))
                .count(),
            2
        );
    }

    #[test]
    fn a_vlan_change_keeps_the_veth_pair_and_reconfigures_the_nic_into_its_new_segment() {
        let before = fabric(FILE);
        let after = fabric(&FILE.replacen(
            "chpid = \"F0\"\nipv4 = [\"10.0.0.1/24\"]",
            "chpid = \"F0\"\nvlan = 100\nipv4 = [\"10.0.0.1/24\"]",
            1,
        ));
        assert_eq!(after.lpars[0].nics[0].vlan, Some(100));
        let seen = observed(
            &["iqd-t", "lp01", "lp02"],
            &["p7000", "p7003"],
            &[("lp01", "hsi0"), ("lp02", "hsi0")],
        );
        let steps = plan(&after, &recorded(&before), &seen, Path::new("t.toml")).unwrap();
        // No new veth pair: the port description, the routes and the connection table (cut by
        // segment when the security groups are applied) move the NIC.
        assert!(!steps
            .iter()
            .any(|s| matches!(s, Step::CreateNic(_) | Step::RemoveNic(_))));
        let configured: Vec<&NicRecord> = steps
            .iter()
            .filter_map(|s| match s {
                Step::ConfigureNic(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(configured[0].vlan, Some(100));
        assert_eq!(configured[1].vlan, None);
        let at = |wanted: &Step| steps.iter().position(|s| s == wanted).unwrap();
        assert!(at(&Step::ConfigureNic(configured[0].clone())) < at(&Step::SyncRoutes));
        assert!(at(&Step::SyncRoutes) < at(&Step::ApplySecurityGroups));
    }

    #[test]
    fn existing_namespaces_iqd_did_not_create_are_adopted() {
        let f = fabric(FILE);
        let seen = observed(&["lp01"], &[], &[]);
        let steps = plan(&f, &State::default(), &seen, Path::new("t.toml")).unwrap();
        assert!(steps.contains(&Step::AdoptNetns("lp01".into())));
        assert!(steps.contains(&Step::CreateNetns("lp02".into())));
    }

    #[test]
    fn a_foreign_interface_with_the_nic_name_is_refused_before_anything_changes() {
        let f = fabric(FILE);
        let seen = observed(&["lp01"], &[], &[("lp01", "hsi0")]);
        let refusals = plan(&f, &State::default(), &seen, Path::new("t.toml")).unwrap_err();
        assert_eq!(
            refusals,
            [Refusal::ForeignLink {
                lpar: "LP01".into(),
                netns: "lp01".into(),
                nic: "hsi0".into()
            }]
        );
        assert!(refusals[0]
            .to_string()
            .contains("namespace lp01 already has an interface hsi0 that iqd did not create"));
    }

    #[test]
    fn an_interface_left_by_a_killed_run_is_not_foreign() {
        // The port exists (created by a run killed before it recorded the NIC): it and its
        // LPAR side are removed and built again.
        let f = fabric(FILE);
        let seen = observed(&["iqd-t", "lp01", "lp02"], &["p7000"], &[("lp01", "hsi0")]);
        let mut state = recorded(&f);
        state.nics.clear();
        let steps = plan(&f, &state, &seen, Path::new("t.toml")).unwrap();
        assert!(steps.contains(&Step::RemoveLeftoverPort("p7000".into())));
        assert!(steps
            .iter()
            .any(|s| matches!(s, Step::CreateNic(r) if r.port == "p7000")));
    }

    #[test]
    fn a_recorded_nic_whose_port_vanished_is_rebuilt() {
        let f = fabric(FILE);
        let seen = observed(&["iqd-t", "lp01", "lp02"], &["p7003"], &[("lp02", "hsi0")]);
        let steps = plan(&f, &recorded(&f), &seen, Path::new("t.toml")).unwrap();
        assert!(steps
            .iter()
            .any(|s| matches!(s, Step::RemoveNic(r) if r.port == "p7000")));
        assert!(steps
            .iter()
            .any(|s| matches!(s, Step::CreateNic(r) if r.port == "p7000")));
        assert!(steps
            .iter()
            .any(|s| matches!(s, Step::KeepNic(r) if r.port == "p7003")));
    }

    #[test]
    fn lpars_that_left_the_file_lose_their_nics_and_created_namespaces() {
        let before = fabric(FILE);
        let after = fabric(&FILE.replace(
            "[[lpar]]\nname = \"LP02\"\nnetns = \"lp02\"\n\n[[lpar.nic]]\nchpid = \"F0\"\nipv4 = [\"10.0.0.2/24\"]\n",
            "",
        ));
        assert_eq!(after.lpars.len(), 1);
        let seen = observed(
            &["iqd-t", "lp01", "lp02"],
            &["p7000", "p7003"],
            &[("lp01", "hsi0"), ("lp02", "hsi0")],
        );
        let steps = plan(&after, &recorded(&before), &seen, Path::new("t.toml")).unwrap();
        let names = names(&steps);
        let removed = names
            .iter()
            .position(|s| s.starts_with("remove NIC LP02/hsi0"));
        let deleted = names.iter().position(|s| s == "delete namespace lp02");
        assert!(removed.is_some() && deleted.is_some(), "{names:?}");
        assert!(removed < deleted, "{names:?}");
    }

    /// LP01 with a second NIC, on CHPID F1 (the other NICs keep the devnos of `FILE`).
    fn with_second_nic() -> Fabric {
        let text = FILE.replace(
            "[[chpid]]\nid = \"F0\"\n",
            "[[chpid]]\nid = \"F0\"\n\n[[chpid]]\nid = \"F1\"\n",
        );
        let text = text.replacen(
            "ipv4 = [\"10.0.0.1/24\"]\n",
            "ipv4 = [\"10.0.0.1/24\"]\n\n[[lpar.nic]]\nchpid = \"F1\"\nname = \"hsi1\"\nipv4 = [\"10.1.0.1/24\"]\n",
            1,
        );
        let kept = recorded(&fabric(FILE)).kept_devnos();
        let f = Fabric::parse_keeping(&text, Path::new("t.toml"), &kept).unwrap();
        assert_eq!(f.lpars[0].nics.len(), 2);
        f
    }

    fn up_seen() -> Observed {
        observed(
            &["iqd-t", "lp01", "lp02"],
            &["p7000", "p7003"],
            &[("lp01", "hsi0"), ("lp02", "hsi0")],
        )
    }

    #[test]
    fn adding_a_nic_to_a_running_lpar_is_refused_naming_it_and_what_to_run() {
        let before = fabric(FILE);
        let refusals = plan(
            &with_second_nic(),
            &recorded(&before),
            &up_seen(),
            Path::new("demo.toml"),
        )
        .unwrap_err();
        assert_eq!(
            refusals,
            [Refusal::NicChangeWhileRunning {
                lpar: "LP01".into(),
                nic: "hsi1".into(),
                chpid: "F1".into(),
                added: true,
                config: "demo.toml".into(),
            }]
        );
        let message = refusals[0].to_string();
        assert!(
            message
                .starts_with("LPAR LP01 is running: adding NIC hsi1 (CHPID F1) needs it stopped"),
            "{message}"
        );
        assert!(
            message.contains("run `iqd lpar stop LP01 --config demo.toml`"),
            "{message}"
        );
    }

    #[test]
    fn removing_a_nic_of_a_running_lpar_is_refused() {
        let before = with_second_nic();
        let seen = observed(
            &["iqd-t", "lp01", "lp02"],
            &["p7000", "p7003", "p7006"],
            &[("lp01", "hsi0"), ("lp01", "hsi1"), ("lp02", "hsi0")],
        );
        let refusals = plan(
            &fabric(FILE),
            &recorded(&before),
            &seen,
            Path::new("t.toml"),
        )
        .unwrap_err();
        assert_eq!(refusals.len(), 1, "{refusals:?}");
        assert!(refusals[0]
            .to_string()
            .starts_with("LPAR LP01 is running: removing NIC hsi1 (CHPID F1)"));
    }

    #[test]
    fn moving_a_nic_of_a_running_lpar_to_another_chpid_is_a_removal_and_an_addition() {
        let before = fabric(FILE);
        let moved = fabric(
            &FILE
                .replace(
                    "[[chpid]]\nid = \"F0\"\n",
                    "[[chpid]]\nid = \"F0\"\n\n[[chpid]]\nid = \"F1\"\n",
                )
                .replacen("chpid = \"F0\"", "chpid = \"F1\"", 1),
        );
        let refusals =
            plan(&moved, &recorded(&before), &up_seen(), Path::new("t.toml")).unwrap_err();
        let messages: Vec<String> = refusals.iter().map(|r| r.to_string()).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages[0].contains("removing NIC hsi0 (CHPID F0)"),
            "{messages:?}"
        );
        assert!(
            messages[1].contains("adding NIC hsi0 (CHPID F1)"),
            "{messages:?}"
        );
    }

    #[test]
    fn nics_of_stopped_and_new_lpars_change_freely_and_addresses_of_running_ones_too() {
        let before = fabric(FILE);
        let mut state = recorded(&before);
        state
            .lpars
            .insert("LP01".into(), crate::state::LparState::Stopped);
        let steps = plan(&with_second_nic(), &state, &up_seen(), Path::new("t.toml")).unwrap();
        assert!(steps
            .iter()
            .any(|s| matches!(s, Step::CreateNic(r) if r.lpar == "LP01" && r.nic == "hsi1")));
        // LP02's NIC stays as it is.
        assert!(steps
            .iter()
            .any(|s| matches!(s, Step::KeepNic(r) if r.lpar == "LP02")));
        // An LPAR the fabric does not have yet comes with its NICs.
        let steps = plan(
            &before,
            &State::default(),
            &Observed::default(),
            Path::new("t.toml"),
        );
        assert!(steps.is_ok());
        // Addresses of a running LPAR's NIC may change.
        let readdressed = fabric(&FILE.replace("10.0.0.1/24", "10.0.0.9/24"));
        assert!(plan(
            &readdressed,
            &recorded(&before),
            &up_seen(),
            Path::new("t.toml")
        )
        .is_ok());
        // An LPAR may leave the file as a whole, running or not.
        let without_lp02 = fabric(&FILE.replace(
            "[[lpar]]\nname = \"LP02\"\nnetns = \"lp02\"\n\n[[lpar.nic]]\nchpid = \"F0\"\nipv4 = [\"10.0.0.2/24\"]\n",
            "",
        ));
        assert!(plan(
            &without_lp02,
            &recorded(&before),
            &up_seen(),
            Path::new("t.toml")
        )
        .is_ok());
    }
}
