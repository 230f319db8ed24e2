//! Servers as the LinuxONE cloud runs them, with the real `iqd` binary on the data path under
//! test (`IQD_TEST_DATAPATH`): `iqd lpar stop`/`start` (no carrier, `lpar_stopped` drops,
//! connections cut, state kept across `up`), NICs added or removed only while an LPAR is
//! stopped (and nothing else changing either way), profiles limiting NIC counts, and shared
//! bandwidth measured with iperf3.
use std::{
    io::{Read as _, Write as _},
    time::Duration,
};

use iqd_tests::{
    fixture::{FabricFile, Group, Nic, Rule},
    in_netns, ping, tcp_listener, text, wait_until, TestFabric,
};

/// LP01 (`{ns}a`, 10.70.0.1) and LP02 (`{ns}b`, 10.70.0.2) on CHPID F0; CHPID F1 is defined
/// for NICs tests add.
fn two_lpars() -> FabricFile {
    FabricFile::test()
        .chpid("F0")
        .chpid("F1")
        .lpar("LP01", "{ns}a", [Nic::new("F0", ["10.70.0.1/24"])])
        .lpar("LP02", "{ns}b", [Nic::new("F0", ["10.70.0.2/24"])])
}

/// LP01 of [`two_lpars`] with a second NIC, on CHPID F1.
fn lp01_with_second_nic() -> FabricFile {
    FabricFile::test()
        .chpid("F0")
        .chpid("F1")
        .lpar(
            "LP01",
            "{ns}a",
            [
                Nic::new("F0", ["10.70.0.1/24"]),
                Nic::new("F1", ["10.71.0.1/24"]),
            ],
        )
        .lpar("LP02", "{ns}b", [Nic::new("F0", ["10.70.0.2/24"])])
}

/// `iqd lpar list --json`: LPAR name to state.
fn states(fabric: &TestFabric) -> Vec<(String, String)> {
    let out = iqd_tests::iqd(&["lpar", "list", "--config", fabric.config_arg(), "--json"]);
    assert!(out.status.success(), "iqd lpar list failed: {}", text(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list JSON");
    rows.as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["lpar"].as_str().expect("lpar").to_string(),
                r["state"].as_str().expect("state").to_string(),
            )
        })
        .collect()
}

/// `iqd lpar <verb> <lpar> --config <file>`, which must succeed.
fn lpar(fabric: &TestFabric, verb: &str, name: &str) -> String {
    let out = iqd_tests::iqd(&["lpar", verb, name, "--config", fabric.config_arg()]);
    assert!(
        out.status.success(),
        "iqd lpar {verb} {name} failed: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The flags of interface `ifname` in `netns`, as `ip -j link` shows them.
fn link_flags(netns: &str, ifname: &str) -> Vec<String> {
    let out = in_netns(netns, "ip", &["-j", "link", "show", ifname]);
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    links[0]["flags"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the kernel's operational state of `ifname` in `netns` has caught up with its
/// carrier (linkwatch runs a moment after a change), so that snapshots compare settled links.
fn settle(netns: &str, ifname: &str) {
    let _ = wait_until(Duration::from_secs(3), || {
        let flags = link_flags(netns, ifname);
        let carrier = flags.iter().any(|f| f == "LOWER_UP");
        carrier != flags.iter().any(|f| f == "NO-CARRIER")
    });
}

/// What exists of the fabric's LPARs, read from the system: per namespace, every interface
/// with its ifindex, MAC, flags and IPv4 addresses. A rebuilt NIC has a new ifindex.
fn snapshot(fabric: &TestFabric, suffixes: &[&str]) -> Vec<String> {
    let mut facts = Vec::new();
    for suffix in suffixes {
        let ns = fabric.ns(suffix);
        let out = in_netns(&ns, "ip", &["-j", "address", "show"]);
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        for link in links.as_array().into_iter().flatten() {
            let addrs: Vec<String> = link["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["family"] == "inet")
                .map(|a| format!("{}/{}", a["local"], a["prefixlen"]))
                .collect();
            facts.push(format!(
                "{ns} {} #{} {} {} {}",
                link["ifname"],
                link["ifindex"],
                link["address"],
                link["flags"],
                addrs.join(",")
            ));
        }
    }
    facts.sort();
    facts
}

#[test]
fn stop_cuts_traffic_at_once_counts_it_and_start_restores_it() {
    let mut fabric = TestFabric::up(two_lpars());
    let (a, b) = (fabric.ns("a"), fabric.ns("b"));
    assert_eq!(
        states(&fabric),
        [
            ("LP01".to_string(), "running".to_string()),
            ("LP02".to_string(), "running".to_string())
        ]
    );
    assert!(ping(&b, "10.70.0.1", 2, None), "LP02 does not reach LP01");
    // A process in the LPAR: it outlives the stop (a namespace is not a machine).
    let pid = fabric.spawn(&a, "sleep", &["60"]).id();

    let out = lpar(&fabric, "stop", "LP01");
    assert!(out.contains("LPAR LP01 is stopped"), "{out}");
    // At once: the NIC has no carrier, and frames to it are dropped and counted on the sender.
    let flags = link_flags(&a, "hsi0");
    assert!(flags.iter().any(|f| f == "NO-CARRIER"), "{flags:?}");
    let before = fabric.drops("LP02", "hsi0", "lpar_stopped");
    assert!(
        !ping(&b, "10.70.0.1", 3, None),
        "LP01 answers while stopped"
    );
    let dropped = fabric.drops("LP02", "hsi0", "lpar_stopped") - before;
    assert!(dropped >= 3, "{dropped} frames counted as lpar_stopped");
    assert_eq!(fabric.drops("LP02", "hsi0", "no_destination"), 0);
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the LPAR's process died with the stop"
    );
    assert!(iqd_tests::netns_with_prefix(&a).contains(&a));
    let status: serde_json::Value =
        serde_json::from_str(&fabric.iqd_ok_args("status", &["--json"])).expect("status JSON");
    assert_eq!(status["lpars"][0]["state"], "stopped", "{status}");
    assert_eq!(
        status["lpars"][0]["nics"][0]["state"], "stopped",
        "{status}"
    );
    assert_eq!(status["lpars"][1]["state"], "running", "{status}");

    // Stopping again changes nothing; the state survives `up` (and iqd exiting).
    let out = lpar(&fabric, "stop", "LP01");
    assert!(out.contains("LPAR LP01 is stopped already"), "{out}");
    fabric.iqd_ok("up");
    assert_eq!(states(&fabric)[0].1, "stopped");
    assert!(
        !ping(&b, "10.70.0.1", 1, None),
        "up started the stopped LPAR"
    );

    let out = lpar(&fabric, "start", "LP01");
    assert!(out.contains("LPAR LP01 is running"), "{out}");
    let flags = link_flags(&a, "hsi0");
    assert!(!flags.iter().any(|f| f == "NO-CARRIER"), "{flags:?}");
    wait_until(Duration::from_secs(3), || ping(&b, "10.70.0.1", 1, None))
        .expect("LP02 does not reach LP01 once started");
    assert!(ping(&a, "10.70.0.2", 2, None), "LP01 does not reach LP02");
    assert_eq!(states(&fabric)[0].1, "running");
}

#[test]
fn stopping_an_lpar_the_fabric_does_not_have_is_refused() {
    let fabric = TestFabric::up(two_lpars());
    let out = iqd_tests::iqd(&["lpar", "stop", "LP09", "--config", fabric.config_arg()]);
    assert!(!out.status.success());
    let message = text(&out);
    assert!(
        message.contains("has no LPAR LP09 (it has: LP01, LP02)"),
        "{message}"
    );
    assert_eq!(states(&fabric)[0].1, "running");
}

#[test]
fn a_tracked_connection_does_not_survive_a_stop() {
    // LP01 may open connections but accepts nothing unasked: its replies pass only as part
    // of a tracked connection.
    let file = FabricFile::test()
        .chpid("F0")
        .group(Group::new("closed", [Rule::outbound("all")]))
        .group(Group::new(
            "open",
            [Rule::inbound("all"), Rule::outbound("all")],
        ))
        .lpar(
            "LP01",
            "{ns}a",
            [Nic::new("F0", ["10.70.0.1/24"]).groups(["closed"])],
        )
        .lpar(
            "LP02",
            "{ns}b",
            [Nic::new("F0", ["10.70.0.2/24"]).groups(["open"])],
        );
    let fabric = TestFabric::up(file);
    let (a, b) = (fabric.ns("a"), fabric.ns("b"));
    let listener = tcp_listener(&b, "10.70.0.2", 7001);
    let target: std::net::SocketAddr = "10.70.0.2:7001".parse().expect("address");
    let mut client = iqd_tests::in_netns_thread(&a, move || {
        std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2))
    })
    .expect("LP01 connects to LP02");
    let (mut server, _) = listener.accept().expect("accept");
    server
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    // Both ways while tracked.
    server.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    client
        .read_exact(&mut buf)
        .expect("LP02's reply reaches LP01 while tracked");
    let tracked = |fabric: &TestFabric| {
        let out = fabric.iqd_ok_args("conntrack", &["--json"]);
        let table: serde_json::Value = serde_json::from_str(&out).expect("conntrack JSON");
        table["connections"]
            .as_array()
            .expect("connections")
            .iter()
            .filter(|c| c["destination_port"] == 7001)
            .count()
    };
    assert_eq!(tracked(&fabric), 1);

    let out = lpar(&fabric, "stop", "LP01");
    assert!(out.contains("connections cut: 1"), "{out}");
    assert_eq!(tracked(&fabric), 0, "the connection survived the stop");
    lpar(&fabric, "start", "LP01");
    // LP02 writes on the old connection: with no tracked connection, LP01's rules refuse it.
    let denied = fabric.drops("LP01", "hsi0", "sg_denied_inbound");
    server.write_all(b"late").expect("write");
    assert!(
        client.read_exact(&mut buf).is_err(),
        "the old connection still carries frames to LP01"
    );
    assert!(
        fabric.drops("LP01", "hsi0", "sg_denied_inbound") > denied,
        "no inbound denial counted"
    );
}

#[test]
fn adding_a_nic_is_refused_while_the_lpar_runs_and_applied_while_it_is_stopped() {
    let fabric = TestFabric::up(two_lpars());
    let (a, b) = (fabric.ns("a"), fabric.ns("b"));
    // The operational state follows carrier a moment later: snapshots are of settled links.
    settle(&a, "hsi0");
    settle(&b, "hsi0");
    let before = snapshot(&fabric, &["a", "b"]);

    fabric.rewrite(lp01_with_second_nic());
    let out = fabric.iqd("up", &[]);
    assert!(!out.status.success(), "up added a NIC to a running LPAR");
    let message = text(&out);
    assert!(
        message.contains("LPAR LP01 is running: adding NIC hsi1 (CHPID F1) needs it stopped"),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "run `iqd lpar stop LP01 --config {}`",
            fabric.config_arg()
        )),
        "{message}"
    );
    assert_eq!(
        snapshot(&fabric, &["a", "b"]),
        before,
        "the refused up changed something"
    );
    assert!(ping(&b, "10.70.0.1", 1, None));

    lpar(&fabric, "stop", "LP01");
    settle(&a, "hsi0");
    let stopped = snapshot(&fabric, &["a", "b"]);
    let out = fabric.iqd_ok("up");
    assert!(out.contains("NICs created:       LP01/hsi1"), "{out}");
    assert!(out.contains("LP02/hsi0"), "LP02's NIC was not kept: {out}");
    // LP02 is as it was (same interfaces, same ifindex), LP01 has its new NIC, still stopped.
    let after = snapshot(&fabric, &["a", "b"]);
    let lp02 = |facts: &[String]| -> Vec<String> {
        facts
            .iter()
            .filter(|f| f.starts_with(&b))
            .cloned()
            .collect()
    };
    assert_eq!(lp02(&after), lp02(&stopped));
    assert!(
        after
            .iter()
            .any(|f| f.contains("\"hsi1\"") && f.contains("10.71.0.1")),
        "{after:?}"
    );
    let flags = link_flags(&a, "hsi1");
    assert!(flags.iter().any(|f| f == "NO-CARRIER"), "{flags:?}");

    lpar(&fabric, "start", "LP01");
    wait_until(Duration::from_secs(3), || ping(&b, "10.70.0.1", 1, None))
        .expect("LP02 does not reach LP01 once started");
    assert_eq!(lp02(&snapshot(&fabric, &["a", "b"])), lp02(&stopped));

    // Removing it is refused the same way while LP01 runs.
    fabric.rewrite(two_lpars());
    let out = fabric.iqd("up", &[]);
    assert!(!out.status.success(), "up removed a NIC of a running LPAR");
    assert!(
        text(&out).contains("LPAR LP01 is running: removing NIC hsi1 (CHPID F1)"),
        "{}",
        text(&out)
    );
    assert!(link_flags(&a, "hsi1").iter().any(|f| f == "UP"));
}

#[test]
fn addresses_of_a_running_lpar_change_in_place() {
    let fabric = TestFabric::up(two_lpars());
    let b = fabric.ns("b");
    fabric.rewrite(
        FabricFile::test()
            .chpid("F0")
            .chpid("F1")
            .lpar("LP01", "{ns}a", [Nic::new("F0", ["10.70.0.11/24"])])
            .lpar("LP02", "{ns}b", [Nic::new("F0", ["10.70.0.2/24"])]),
    );
    let out = fabric.iqd_ok("up");
    assert!(
        out.contains("NICs unchanged:     LP01/hsi0 LP02/hsi0"),
        "{out}"
    );
    assert!(ping(&b, "10.70.0.11", 2, None));
}

#[test]
fn profiles_limit_the_nics_of_an_lpar() {
    let too_many = FabricFile::test()
        .chpid("F0")
        .chpid("F1")
        .lpar(
            "LP01",
            "{ns}a",
            [
                Nic::new("F0", ["10.70.0.1/24"]),
                Nic::new("F1", ["10.71.0.1/24"]),
            ],
        )
        .profile("mz2d-metal-2x64");
    let fabric = TestFabric::write(too_many);
    let out = fabric.iqd("up", &[]);
    assert!(!out.status.success(), "up built an LPAR above its profile");
    let message = text(&out);
    assert!(
        message.contains(&format!("{}:", fabric.config_arg()))
            && message.contains(
                "LPAR LP01 has 2 NICs, more than profile mz2d-metal-2x64 allows (1 interface)"
            ),
        "{message}"
    );
    assert!(iqd_tests::netns_with_prefix(&fabric.name).is_empty());

    // Two interfaces are what the larger profiles allow.
    fabric.rewrite(
        FabricFile::test()
            .chpid("F0")
            .chpid("F1")
            .lpar(
                "LP01",
                "{ns}a",
                [
                    Nic::new("F0", ["10.70.0.1/24"]),
                    Nic::new("F1", ["10.71.0.1/24"]),
                ],
            )
            .profile("mz2d-metal-16x512")
            .bandwidth("4Gbps")
            .lpar("LP02", "{ns}b", [Nic::new("F0", ["10.70.0.2/24"])])
            .profile("mz2d-metal-2x64"),
    );
    fabric.iqd_ok("up");
    let status: serde_json::Value =
        serde_json::from_str(&fabric.iqd_ok_args("status", &["--json"])).expect("status JSON");
    assert_eq!(
        status["lpars"][0]["profile"], "mz2d-metal-16x512",
        "{status}"
    );
    assert_eq!(status["lpars"][0]["bandwidth"], "4Gbps", "{status}");
    assert_eq!(status["lpars"][1]["bandwidth"], "2Gbps", "{status}");
    assert!(ping(&fabric.ns("b"), "10.70.0.1", 2, None));
    let profiles = iqd_tests::iqd(&["profiles", "--json"]);
    let profiles: serde_json::Value = serde_json::from_slice(&profiles.stdout).expect("JSON");
    assert_eq!(profiles[0]["name"], "mz2d-metal-2x64");
    assert_eq!(profiles[0]["interfaces"], 1);
    assert_eq!(profiles[0]["bandwidth"], "2Gbps");
}
