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

/// The tests of this suite take turns: a throughput test beside another test's `iqd up` (loading
/// and verifying programs) on a small machine would measure its CPUs, not the shapers.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

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
    let _turn = turn();
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
    let _turn = turn();
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
    let _turn = turn();
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
    let _turn = turn();
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
    let _turn = turn();
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
    let _turn = turn();
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

/// Runs an iperf3 TCP client in `netns` against `server` for `seconds` (`reverse`: the server
/// sends); returns the rate of each one-second interval and of the whole run as the receiver
/// counted it, in bits per second.
fn iperf3_rates(netns: &str, server: &str, seconds: u32, reverse: bool) -> (Vec<f64>, f64) {
    let seconds = seconds.to_string();
    let mut args = vec!["-c", server, "-t", seconds.as_str(), "-i", "1", "-J"];
    if reverse {
        args.push("-R");
    }
    let out = in_netns(netns, "iperf3", &args);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("iperf3 output is not JSON: {}", text(&out)));
    assert!(out.status.success(), "iperf3 failed: {}", json["error"]);
    let intervals = json["intervals"]
        .as_array()
        .expect("intervals")
        .iter()
        .map(|i| {
            i["sum"]["bits_per_second"]
                .as_f64()
                .expect("bits_per_second")
        })
        .collect();
    let total = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .expect("sum_received");
    (intervals, total)
}

/// Asserts TCP used `bandwidth` (bits per second) as the contract says: at least 90% of it
/// over the run, never more than 102% in any one-second interval.
#[track_caller]
fn assert_within(what: &str, intervals: &[f64], total: f64, bandwidth: f64) {
    assert!(
        total >= 0.90 * bandwidth,
        "{what}: {:.3} Gbit/s is below 90% of {:.0} Gbit/s (intervals {intervals:?})",
        total / 1e9,
        bandwidth / 1e9
    );
    for (i, rate) in intervals.iter().enumerate() {
        assert!(
            *rate <= 1.02 * bandwidth,
            "{what}: interval {i} carried {:.3} Gbit/s, above 102% of {:.0} Gbit/s \
             ({intervals:?})",
            rate / 1e9,
            bandwidth / 1e9
        );
    }
}

#[test]
fn a_2_gbps_lpar_sends_and_receives_tcp_at_its_bandwidth() {
    let _turn = turn();
    let file = FabricFile::test()
        .chpid("F0")
        .lpar("LP01", "{ns}a", [Nic::new("F0", ["10.70.0.1/24"])])
        .profile("mz2d-metal-2x64")
        .lpar("LP02", "{ns}b", [Nic::new("F0", ["10.70.0.2/24"])]);
    let mut fabric = TestFabric::up(file);
    let (a, b) = (fabric.ns("a"), fabric.ns("b"));
    fabric.iperf3_server(&a, "10.70.0.1");
    // LP02 sends to LP01 (LP01's receive side), then LP01 sends (-R: its send side).
    let (intervals, total) = iperf3_rates(&b, "10.70.0.1", 4, false);
    assert_within("LP01 receiving", &intervals, total, 2e9);
    let (intervals, total) = iperf3_rates(&b, "10.70.0.1", 4, true);
    assert_within("LP01 sending", &intervals, total, 2e9);
    // What went through the shapers is what `iqd stats` says was shaped.
    let stats = fabric.stats();
    let lp01 = stats["bandwidth"]
        .as_array()
        .expect("bandwidth")
        .iter()
        .find(|b| b["lpar"] == "LP01")
        .cloned()
        .unwrap_or_else(|| panic!("no bandwidth stats for LP01: {stats}"));
    assert_eq!(lp01["bandwidth"], "2Gbps");
    assert!(
        lp01["send_shaped_bytes"].as_u64().unwrap_or(0) > 500_000_000,
        "{lp01}"
    );
    assert!(
        lp01["receive_shaped_bytes"].as_u64().unwrap_or(0) > 500_000_000,
        "{lp01}"
    );
}

#[test]
fn two_nics_of_one_lpar_share_its_bandwidth() {
    let _turn = turn();
    // LP01 with a NIC on F0 (to LP02) and one on F1 (to LP03); 2 Gbps for both together.
    let file = FabricFile::test()
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
        .bandwidth("2Gbps")
        .lpar("LP02", "{ns}b", [Nic::new("F0", ["10.70.0.2/24"])])
        .lpar("LP03", "{ns}c", [Nic::new("F1", ["10.71.0.3/24"])]);
    let mut fabric = TestFabric::up(file);
    let (a, b, c) = (fabric.ns("a"), fabric.ns("b"), fabric.ns("c"));
    fabric.iperf3_server(&a, "10.70.0.1");
    fabric.spawn(&a, "iperf3", &["-s", "-B", "10.71.0.1", "-p", "5202"]);
    wait_until(Duration::from_secs(5), || {
        let out = in_netns(&a, "ss", &["-H", "-l", "-t", "-n", "sport", "=", ":5202"]);
        out.status.success() && !out.stdout.is_empty()
    })
    .expect("second iperf3 server listens");
    // Both streams into LP01 at once, one per NIC.
    let first = std::thread::spawn(move || iperf3_rates(&b, "10.70.0.1", 4, false));
    let second = std::thread::spawn(move || {
        let out = in_netns(
            &c,
            "iperf3",
            &["-c", "10.71.0.1", "-p", "5202", "-t", "4", "-i", "1", "-J"],
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let intervals: Vec<f64> = json["intervals"]
            .as_array()
            .expect("intervals")
            .iter()
            .map(|i| i["sum"]["bits_per_second"].as_f64().expect("rate"))
            .collect();
        let total = json["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .expect("sum_received");
        (intervals, total)
    });
    let (one, one_total) = first.join().expect("first stream");
    let (two, two_total) = second.join().expect("second stream");
    let together: Vec<f64> = one.iter().zip(&two).map(|(x, y)| x + y).collect();
    assert_within(
        "LP01 receiving on two NICs",
        &together,
        one_total + two_total,
        2e9,
    );
    // Each NIC had its share: neither stream starved.
    assert!(one_total > 0.2e9 && two_total > 0.2e9, "{one:?} {two:?}");
}

#[test]
fn an_lpar_without_a_bandwidth_is_not_shaped() {
    let _turn = turn();
    let mut fabric = TestFabric::up(
        FabricFile::test()
            .chpid("F0")
            .lpar("LP01", "{ns}a", [Nic::new("F0", ["10.70.0.1/24"])])
            .lpar("LP02", "{ns}b", [Nic::new("F0", ["10.70.0.2/24"])])
            .lpar("LP03", "{ns}c", [Nic::new("F0", ["10.70.0.3/24"])])
            .bandwidth("2Gbps"),
    );
    let (a, b) = (fabric.ns("a"), fabric.ns("b"));
    fabric.iperf3_server(&a, "10.70.0.1");
    let (_, total) = iperf3_rates(&b, "10.70.0.1", 2, false);
    // Well above any bandwidth in the file: another LPAR's limit is not this one's.
    assert!(
        total > 2.5e9,
        "{:.2} Gbit/s between unlimited LPARs",
        total / 1e9
    );
    let stats = fabric.stats();
    let lp03 = &stats["bandwidth"][0];
    assert_eq!(lp03["lpar"], "LP03", "{stats}");
    assert_eq!(lp03["send_shaped_packets"], 0, "{stats}");
    assert_eq!(lp03["receive_shaped_packets"], 0, "{stats}");
}
