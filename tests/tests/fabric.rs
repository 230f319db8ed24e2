//! Namespace integration tests: real fabrics brought up by the `iqd` binary, real frames
//! (ping, TCP with iperf3) between LPAR namespaces, counters read back with `iqd stats`.
use std::{fs, path::Path, time::Duration};

use iqd_tests::{
    fixture::{FabricFile, Nic},
    in_netns, iperf3_tcp, links, netns_with_prefix, ping, tcp_connects, tcp_listener, text,
    wait_until, TestFabric,
};

/// Two LPARs on CHPID F0, a third alone on F1 in namespace `{ns}<c_netns>`.
fn three_lpars_with_c_in(c_netns: &str) -> FabricFile {
    FabricFile::test()
        .chpid("F0")
        .chpid("F1")
        .lpar("A", "{ns}a", [Nic::new("F0", ["10.7.0.1/24"])])
        .lpar("B", "{ns}b", [Nic::new("F0", ["10.7.0.2/24"])])
        .lpar(
            "C",
            &format!("{{ns}}{c_netns}"),
            [Nic::new("F1", ["10.7.1.3/24"])],
        )
}

/// Two LPARs on CHPID F0, a third alone on F1.
fn three_lpars() -> FabricFile {
    three_lpars_with_c_in("c")
}

const MTU_16K: u32 = 8192;

fn u64_of(value: &serde_json::Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {value}"))
}

#[test]
fn ping_and_tcp_on_one_chpid_at_every_mfs() {
    let mut file = FabricFile::test();
    let sizes = [
        ("F0", "16K", 8192u32),
        ("F1", "24K", 16384),
        ("F2", "40K", 32768),
        ("F3", "64K", 57344),
    ];
    for (i, (chpid, mfs, _)) in sizes.iter().enumerate() {
        file = file.chpid_mfs(chpid, mfs);
        for (side, host) in [("a", 1), ("b", 2)] {
            file = file.lpar(
                &format!("L{i}{}", side.to_uppercase()),
                &format!("{{ns}}{i}{side}"),
                [Nic::new(chpid, [format!("10.8.{i}.{host}/24")])],
            );
        }
    }
    let mut fabric = TestFabric::up(file);
    let status: serde_json::Value =
        serde_json::from_slice(&fabric.iqd("status", &["--json"]).stdout).expect("status JSON");

    for (i, (chpid, _, mtu)) in sizes.iter().enumerate() {
        let (a, b) = (fabric.ns(&format!("{i}a")), fabric.ns(&format!("{i}b")));
        let b_addr = format!("10.8.{i}.2");
        let lpar = &status["lpars"][2 * i];
        assert_eq!(
            lpar["nics"][0]["mtu"], *mtu,
            "MTU of CHPID {chpid}: {status}"
        );
        assert_eq!(lpar["nics"][0]["state"], "online");

        assert!(ping(&a, &b_addr, 3, None), "ping on CHPID {chpid}");
        // ICMP payload + 8 (ICMP) + 20 (IPv4) = the whole MTU.
        assert!(
            ping(&a, &b_addr, 2, Some(mtu - 28)),
            "MTU-sized ping on CHPID {chpid}"
        );

        fabric.iperf3_server(&b, &b_addr);
        let bytes =
            iperf3_tcp(&a, &b_addr, 1).unwrap_or_else(|e| panic!("TCP on CHPID {chpid}: {e}"));
        assert!(
            bytes > 1_000_000,
            "TCP on CHPID {chpid} carried only {bytes} bytes"
        );

        let sent = fabric.nic_stats(&format!("L{i}A"), "hsi0");
        let got = fabric.nic_stats(&format!("L{i}B"), "hsi0");
        assert!(u64_of(&sent, "tx_bytes") >= bytes, "tx counted: {sent}");
        assert!(u64_of(&got, "rx_bytes") >= bytes, "rx counted: {got}");
        assert_eq!(sent["drops"]["mfs_exceeded"], 0);
    }
}

#[test]
fn no_reachability_across_chpids() {
    let fabric = TestFabric::up(three_lpars());
    let (a, c) = (fabric.ns("a"), fabric.ns("c"));
    // Make A really send to C's address: without a route the kernel would refuse locally.
    let out = in_netns(&a, "ip", &["route", "add", "10.7.1.0/24", "dev", "hsi0"]);
    assert!(out.status.success(), "{}", text(&out));
    let c_before = fabric.nic_stats("C", "hsi0");

    assert!(!ping(&a, "10.7.1.3", 2, None), "A (F0) reached C (F1)");
    // A listener that would accept: the connection must fail for the fabric, not for want of
    // a server. A 1-second connect: with NOARP nothing fails fast, and iperf3 would spend
    // minutes in SYN retries.
    let _listener = tcp_listener(&c, "10.7.1.3", 5201);
    assert!(!tcp_connects(&a, "10.7.1.3", 5201), "TCP crossed CHPIDs");

    assert!(fabric.drops("A", "hsi0", "not_member") > 0);
    let c_after = fabric.nic_stats("C", "hsi0");
    assert_eq!(
        c_before["rx_packets"], c_after["rx_packets"],
        "C received frames from F0"
    );
}

#[test]
fn arp_is_answered_by_the_fabric_and_unknown_addresses_are_not() {
    let fabric = TestFabric::up(three_lpars());
    let a = fabric.ns("a");
    // hsiN is NOARP, as qeth sets it; an LPAR that turns ARP back on gets its answers from
    // the fabric.
    let link = text(&in_netns(&a, "ip", &["link", "show", "hsi0"]));
    assert!(link.contains("NOARP"), "{link}");
    let out = in_netns(&a, "ip", &["link", "set", "hsi0", "arp", "on"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(ping(&a, "10.7.0.2", 1, None));
    // B's NIC MAC, derived from CHPID F0 and its devno.
    let out = in_netns(&a, "ip", &["-j", "neigh", "show", "10.7.0.2"]);
    let neigh: serde_json::Value = serde_json::from_slice(&out.stdout).expect("neigh JSON");
    let status: serde_json::Value =
        serde_json::from_slice(&fabric.iqd("status", &["--json"]).stdout).expect("status JSON");
    assert_eq!(
        neigh[0]["lladdr"], status["lpars"][1]["nics"][0]["mac"],
        "{neigh}"
    );

    assert!(
        !ping(&a, "10.7.0.77", 1, None),
        "an unregistered address answered"
    );
    assert!(fabric.drops("A", "hsi0", "no_destination") > 0);
    // ARP never crosses the fabric: B saw none of A's requests.
    let b_out = in_netns(&fabric.ns("b"), "ip", &["-s", "-j", "link", "show", "hsi0"]);
    let b_link: serde_json::Value = serde_json::from_slice(&b_out.stdout).expect("link JSON");
    assert_eq!(
        b_link[0]["stats64"]["rx"]["broadcast"]
            .as_u64()
            .unwrap_or(0),
        0
    );
}

#[test]
fn larger_frames_than_the_chpid_mtu_are_dropped_and_counted() {
    let fabric = TestFabric::up(three_lpars());
    let a = fabric.ns("a");
    assert!(
        ping(&a, "10.7.0.2", 2, Some(MTU_16K - 28)),
        "a ping filling the MTU"
    );
    assert_eq!(fabric.drops("A", "hsi0", "mfs_exceeded"), 0);

    // The LPAR may raise its own MTU; the fabric still holds the CHPID's.
    let out = in_netns(&a, "ip", &["link", "set", "hsi0", "mtu", "9000"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !ping(&a, "10.7.0.2", 2, Some(MTU_16K - 28 + 500)),
        "an oversize frame arrived"
    );
    assert_eq!(fabric.drops("A", "hsi0", "mfs_exceeded"), 2);
    assert!(
        ping(&a, "10.7.0.2", 1, Some(MTU_16K - 28)),
        "frames within the MTU still pass"
    );
}

#[test]
fn spoofed_sources_are_dropped_and_counted() {
    let fabric = TestFabric::up(three_lpars());
    let a = fabric.ns("a");
    assert!(ping(&a, "10.7.0.2", 1, None));

    // An address A did not register with the CHPID.
    let out = in_netns(&a, "ip", &["addr", "add", "10.7.0.99/24", "dev", "hsi0"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = in_netns(
        &a,
        "ping",
        &["-c", "2", "-W", "1", "-I", "10.7.0.99", "10.7.0.2"],
    );
    assert!(!out.status.success(), "a spoofed source IPv4 got through");
    let by_ip = fabric.drops("A", "hsi0", "spoofed_source");
    assert!(by_ip >= 2, "spoofed_source = {by_ip}");

    // A MAC that is not the NIC's own.
    let out = in_netns(
        &a,
        "ip",
        &["link", "set", "hsi0", "address", "02:66:66:66:66:66"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !ping(&a, "10.7.0.2", 2, None),
        "a spoofed source MAC got through"
    );
    assert!(fabric.drops("A", "hsi0", "spoofed_source") >= by_ip + 2);
}

#[test]
fn up_twice_is_idempotent_and_does_not_interrupt_traffic() {
    let mut fabric = TestFabric::up(three_lpars());
    let (a, b) = (fabric.ns("a"), fabric.ns("b"));
    let index_before = links(&b);
    let ifindex = |ns: &str| {
        let out = in_netns(ns, "ip", &["-j", "link", "show", "hsi0"]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("link JSON");
        json[0]["ifindex"].clone()
    };
    let a_index = ifindex(&a);

    fabric.iperf3_server(&b, "10.7.0.2");
    let a_clone = a.clone();
    let transfer = std::thread::spawn(move || iperf3_tcp(&a_clone, "10.7.0.2", 3));
    std::thread::sleep(Duration::from_millis(500));
    let second = fabric.iqd_ok("up");
    let third = fabric.iqd_ok("up");
    let bytes = transfer
        .join()
        .expect("iperf3 thread")
        .expect("TCP during a second up");
    assert!(bytes > 1_000_000, "TCP carried only {bytes} bytes");

    for out in [&second, &third] {
        assert!(out.contains("NICs created:       -"), "{out}");
        assert!(out.contains("A/hsi0 B/hsi0 C/hsi0"), "{out}");
    }
    assert_eq!(ifindex(&a), a_index, "the NIC was recreated");
    assert_eq!(links(&b), index_before, "links in {b} changed");
    assert_eq!(fabric.drops("A", "hsi0", "redirect_failed"), 0);
}

#[test]
fn down_removes_everything_and_leaves_adopted_namespaces() {
    let fabric = TestFabric::write(three_lpars_with_c_in("adopt"));
    let adopted = fabric.ns("adopt");
    let out = std::process::Command::new("ip")
        .args(["netns", "add", &adopted])
        .output()
        .expect("ip");
    assert!(out.status.success(), "{}", text(&out));
    struct DeleteNetns(String);
    impl Drop for DeleteNetns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .output();
        }
    }
    let _adopted_guard = DeleteNetns(adopted.clone());

    let up = fabric.iqd_ok("up");
    assert!(
        up.contains(&format!("namespaces adopted: {adopted}")),
        "{up}"
    );
    assert!(links(&adopted).contains(&"hsi0".to_string()));
    let pins = Path::new("/sys/fs/bpf/iqd").join(&fabric.name);
    assert!(pins.join("IQD_ROUTES").exists());

    fabric.iqd_ok("down");
    assert_eq!(netns_with_prefix(&fabric.name), vec![adopted.clone()]);
    assert_eq!(
        links(&adopted),
        vec!["lo".to_string()],
        "the adopted namespace kept a NIC"
    );
    assert!(!pins.exists(), "pins left behind");
    assert!(
        !Path::new("/run/iqd").join(&fabric.name).exists(),
        "state left behind"
    );
    assert!(netns_with_prefix(&format!("iqd-{}", fabric.name)).is_empty());
    // Idempotent.
    fabric.iqd_ok("down");
}

#[test]
fn an_invalid_file_changes_nothing() {
    let fabric = TestFabric::up(three_lpars());
    let a = fabric.ns("a");
    let good = fs::read_to_string(&fabric.config).expect("config");
    let before = steady_status(&fabric);

    // B registers A's address on the same CHPID: refused, with the file and the line.
    let bad = good.replace("10.7.0.2/24", "10.7.0.1/24");
    assert_ne!(bad, good);
    fs::write(&fabric.config, &bad).expect("write");
    let out = fabric.iqd("up", &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The second line with A's address is B's, the refused one.
    let line = 1 + bad
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("10.7.0.1/24"))
        .nth(1)
        .map(|(i, _)| i)
        .expect("B's address line");
    assert!(
        stderr.contains(&format!("{}:{line}:", fabric.config.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("duplicate IPv4 address 10.7.0.1 on CHPID F0"),
        "{stderr}"
    );

    fs::write(&fabric.config, &good).expect("write");
    assert_eq!(steady_status(&fabric), before, "status changed");
    assert!(ping(&a, "10.7.0.2", 1, None), "traffic stopped");

    // A fabric that is not up stays absent.
    let fresh = TestFabric::write(bad_unknown_key());
    let out = fresh.iqd("up", &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field"),
        "{}",
        text(&out)
    );
    assert!(netns_with_prefix(&fresh.name).is_empty());
    assert!(!Path::new("/sys/fs/bpf/iqd").join(&fresh.name).exists());
}

/// `iqd status --json` without what changes by itself while nothing else does: the AF_XDP
/// switch's uptime and traffic figures (its pid stays: a refused `up` must not restart it).
fn steady_status(fabric: &TestFabric) -> serde_json::Value {
    let out = fabric.iqd("status", &["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    if let Some(switch) = status.get_mut("switch") {
        let pid = switch["pid"].clone();
        *switch = serde_json::json!({ "pid": pid, "running": switch["running"].clone() });
    }
    status
}

/// The fabric file with a key no table has.
fn bad_unknown_key() -> String {
    three_lpars().render().replace(
        "[[chpid]]\nid = \"F1\"",
        "[[chpid]]\nid = \"F1\"\nspeed = \"fast\"",
    )
}

#[test]
fn frames_keep_flowing_after_iqd_exits() {
    let mut fabric = TestFabric::up(three_lpars());
    // `up` has returned and its process is gone; only pinned objects remain.
    let pins = Path::new("/sys/fs/bpf/iqd").join(&fabric.name);
    let pinned: Vec<String> = fs::read_dir(&pins)
        .expect("pin dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    // One switch link per NIC (`link_<port>` for xdp, `link_<port>_tc` for tc,
    // `link_<port>_xsk` for afxdp), and on xdp and afxdp the tc link too, which copies
    // one-to-many frames (architecture.md, One-to-many delivery).
    let per_nic = match iqd_tests::test_datapath().as_deref() {
        Some("xdp") | Some("afxdp") => 2,
        _ => 1,
    };
    assert_eq!(
        pinned
            .iter()
            .filter(|p| p.starts_with("link_p") && !p.ends_with("_nic"))
            .count(),
        3 * per_nic,
        "{pinned:?}"
    );

    let b = fabric.ns("b");
    fabric.iperf3_server(&b, "10.7.0.2");
    let bytes = iperf3_tcp(&fabric.ns("a"), "10.7.0.2", 1).expect("TCP");
    assert!(bytes > 1_000_000);
    wait_until(Duration::from_secs(2), || {
        fabric.nic_stats("B", "hsi0")["rx_bytes"].as_u64() >= Some(bytes)
    })
    .expect("counters follow the traffic");
}

#[test]
fn cli_explains_itself_and_refuses_bad_input() {
    for cmd in ["up", "down", "check", "status", "stats"] {
        let out = iqd_tests::iqd(&[cmd, "--help"]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("--config"));
    }
    let out = iqd_tests::iqd(&["check", "--config", "/nonexistent/fabric.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/fabric.toml"));
}
