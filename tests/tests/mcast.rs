//! One-to-many delivery on real namespaces with real sockets: multicast groups as the LPARs
//! register them (the kernel's own IGMP and MLD reports, sent when a socket joins or leaves),
//! limited and directed broadcasts, security groups per receiver, iperf2 streaming to a group,
//! and per receiver as for unicast: stopped LPARs, bandwidths and traces. Run on every data
//! path (`IQD_TEST_DATAPATH`).
use std::{
    net::{Ipv4Addr, Ipv6Addr, UdpSocket},
    time::Duration,
};

use iqd_tests::{
    fixture::{FabricFile, Group, Nic, Rule},
    in_netns, in_netns_thread, text,
    trace::{tshark_fields, Trace},
    wait_until, TestFabric,
};

/// CHPID F0: A (the sender) 10.8.0.1, B .2, C .3, D .4; CHPID F1: E 10.8.0.5 (same plan).
fn lan() -> FabricFile {
    FabricFile::test()
        .chpid("F0")
        .chpid("F1")
        .lpar(
            "A",
            "{ns}a",
            [Nic::new("F0", ["10.8.0.1/24"]).ipv6(["fd08::1/64"])],
        )
        .lpar(
            "B",
            "{ns}b",
            [Nic::new("F0", ["10.8.0.2/24"]).ipv6(["fd08::2/64"])],
        )
        .lpar(
            "C",
            "{ns}c",
            [Nic::new("F0", ["10.8.0.3/24"]).ipv6(["fd08::3/64"])],
        )
        .lpar(
            "D",
            "{ns}d",
            [Nic::new("F0", ["10.8.0.4/24"]).ipv6(["fd08::4/64"])],
        )
        .lpar(
            "E",
            "{ns}e",
            [Nic::new("F1", ["10.8.0.5/24"]).ipv6(["fd08::5/64"])],
        )
}

fn status(fabric: &TestFabric) -> serde_json::Value {
    serde_json::from_str(&fabric.iqd_ok_args("status", &["--json"])).expect("status JSON")
}

/// The member NICs `iqd status --json` lists for `group` on CHPID `chpid`.
fn members(fabric: &TestFabric, chpid: &str, group: &str) -> Vec<String> {
    let st = status(fabric);
    st["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["chpid"] == chpid && g["group"] == group)
        .map(|g| {
            g["members"]
                .as_array()
                .expect("members")
                .iter()
                .map(|m| m.as_str().expect("name").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `group` on `chpid` has exactly `expected` members (the kernel sends its report
/// when the socket joins; a leave likewise).
fn await_members(fabric: &TestFabric, chpid: &str, group: &str, expected: &[&str]) {
    let result = wait_until(Duration::from_secs(5), || {
        members(fabric, chpid, group) == expected
    });
    assert!(
        result.is_ok(),
        "{group} on {chpid}: members {:?}, expected {expected:?}",
        members(fabric, chpid, group)
    );
}

/// A UDP socket in `netns` on `port`, any address, with a short read timeout.
fn receiver(netns: &str, v6: bool, port: u16) -> UdpSocket {
    let bind = if v6 {
        format!("[::]:{port}")
    } else {
        format!("0.0.0.0:{port}")
    };
    let socket = in_netns_thread(netns, move || {
        UdpSocket::bind(&bind).expect("bind receiver")
    });
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    socket
}

/// Joins IPv4 group `group` on the interface with address `local`.
fn join_v4(socket: &UdpSocket, group: &str, local: &str) {
    socket
        .join_multicast_v4(&group.parse().unwrap(), &local.parse().unwrap())
        .expect("join");
}

/// The ifindex of `hsi0` in `netns`.
fn hsi0_index(netns: &str) -> u32 {
    in_netns_thread(netns, || {
        let name = std::ffi::CString::new("hsi0").unwrap();
        // SAFETY: a NUL-terminated name.
        unsafe { libc::if_nametoindex(name.as_ptr()) }
    })
}

/// Datagrams `socket` has waiting.
fn received(socket: &UdpSocket) -> usize {
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while socket.recv_from(&mut buf).is_ok() {
        n += 1;
    }
    n
}

/// Sends `count` datagrams from `netns`, from `source` (bound: the kernel sends multicast and
/// limited broadcasts out of the interface with that address) to `dest:port`.
fn send(netns: &str, source: &str, dest: &str, port: u16, count: usize) {
    let bind = iqd_tests::sockaddr(source, 0);
    let target = iqd_tests::sockaddr(dest, port);
    let socket = in_netns_thread(netns, move || UdpSocket::bind(&bind).expect("bind sender"));
    socket.set_broadcast(true).expect("SO_BROADCAST");
    for _ in 0..count {
        socket.send_to(b"iqd one-to-many", &target).expect("send");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn rx_packets(fabric: &TestFabric, lpar: &str) -> u64 {
    fabric.nic_stats(lpar, "hsi0")["rx_packets"]
        .as_u64()
        .expect("rx_packets")
}

#[test]
fn an_ipv4_group_reaches_its_members_in_the_segment_only() {
    let fabric = TestFabric::up(lan());
    let (a, b, c, d, e) = (
        fabric.ns("a"),
        fabric.ns("b"),
        fabric.ns("c"),
        fabric.ns("d"),
        fabric.ns("e"),
    );
    let group = "239.8.0.1";
    let (rb, rc, rd, re) = (
        receiver(&b, false, 5300),
        receiver(&c, false, 5300),
        receiver(&d, false, 5300),
        receiver(&e, false, 5300),
    );
    join_v4(&rb, group, "10.8.0.2");
    join_v4(&rc, group, "10.8.0.3");
    join_v4(&re, group, "10.8.0.5");
    // D listens on the port without joining.
    await_members(&fabric, "F0", group, &["B/hsi0", "C/hsi0"]);
    await_members(&fabric, "F1", group, &["E/hsi0"]);
    let table = fabric.iqd_ok("status");
    assert!(
        table.contains(group) && table.contains("multicast"),
        "{table}"
    );

    let before = rx_packets(&fabric, "B");
    send(&a, "10.8.0.1", group, 5300, 10);
    assert_eq!(received(&rb), 10, "member B");
    assert_eq!(received(&rc), 10, "member C");
    assert_eq!(received(&rd), 0, "non-member D");
    assert_eq!(received(&re), 0, "member of the group in another segment");
    assert_eq!(
        rx_packets(&fabric, "B") - before,
        10,
        "one frame per receiver"
    );

    // C leaves: it stops receiving, B goes on.
    rc.leave_multicast_v4(&group.parse().unwrap(), &"10.8.0.3".parse().unwrap())
        .expect("leave");
    await_members(&fabric, "F0", group, &["B/hsi0"]);
    send(&a, "10.8.0.1", group, 5300, 5);
    assert_eq!(received(&rb), 5, "B stays a member");
    assert_eq!(received(&rc), 0, "C left");

    // The registration ends with the NIC's socket too (its last listener gone).
    drop(rb);
    await_members(&fabric, "F0", group, &[]);
    assert_eq!(fabric.drops("A", "hsi0", "no_destination"), 0);
    send(&a, "10.8.0.1", group, 3, 1);
    assert!(fabric.drops("A", "hsi0", "no_destination") >= 1);
}

#[test]
fn an_ipv6_group_is_registered_with_mld() {
    let fabric = TestFabric::up(lan());
    let (a, b, c, e) = (
        fabric.ns("a"),
        fabric.ns("b"),
        fabric.ns("c"),
        fabric.ns("e"),
    );
    let group = "ff15::8:1";
    let (rb, rc, re) = (
        receiver(&b, true, 5301),
        receiver(&c, true, 5301),
        receiver(&e, true, 5301),
    );
    let addr: Ipv6Addr = group.parse().unwrap();
    rb.join_multicast_v6(&addr, hsi0_index(&b)).expect("join");
    re.join_multicast_v6(&addr, hsi0_index(&e)).expect("join");
    await_members(&fabric, "F0", group, &["B/hsi0"]);
    await_members(&fabric, "F1", group, &["E/hsi0"]);
    let out = in_netns(&a, "ip", &["-6", "route", "show", "table", "local"]);
    assert!(out.status.success(), "{}", text(&out));
    send(&a, "fd08::1", group, 5301, 10);
    assert_eq!(received(&rb), 10, "member B");
    assert_eq!(received(&rc), 0, "non-member C");
    assert_eq!(received(&re), 0, "another segment");
    rb.leave_multicast_v6(&addr, hsi0_index(&b)).expect("leave");
    await_members(&fabric, "F0", group, &[]);
    send(&a, "fd08::1", group, 5301, 5);
    assert_eq!(received(&rb), 0, "B left");
}

#[test]
fn broadcasts_reach_every_nic_of_the_segment() {
    let fabric = TestFabric::up(lan());
    let (a, b, c, e) = (
        fabric.ns("a"),
        fabric.ns("b"),
        fabric.ns("c"),
        fabric.ns("e"),
    );
    let (rb, rc, re) = (
        receiver(&b, false, 5302),
        receiver(&c, false, 5302),
        receiver(&e, false, 5302),
    );
    await_members(
        &fabric,
        "F0",
        "255.255.255.255",
        &["A/hsi0", "B/hsi0", "C/hsi0", "D/hsi0"],
    );
    for dest in [Ipv4Addr::BROADCAST.to_string(), "10.8.0.255".to_string()] {
        send(&a, "10.8.0.1", &dest, 5302, 5);
        assert_eq!(received(&rb), 5, "B, {dest}");
        assert_eq!(received(&rc), 5, "C, {dest}");
        assert_eq!(received(&re), 0, "another segment, {dest}");
    }
}

#[test]
fn directed_broadcasts_of_small_prefixes_reach_their_nics() {
    // /29: the broadcast is .7 (the programs look up only destinations whose two lowest bits
    // are set, as every directed broadcast up to /30 has); C is in another /29 of the segment.
    let file = FabricFile::test()
        .chpid("F0")
        .lpar("A", "{ns}a", [Nic::new("F0", ["10.8.1.1/29"])])
        .lpar("B", "{ns}b", [Nic::new("F0", ["10.8.1.2/29"])])
        .lpar("C", "{ns}c", [Nic::new("F0", ["10.8.1.9/29"])]);
    let fabric = TestFabric::up(file);
    let (a, b, c) = (fabric.ns("a"), fabric.ns("b"), fabric.ns("c"));
    let (rb, rc) = (receiver(&b, false, 5309), receiver(&c, false, 5309));
    await_members(&fabric, "F0", "10.8.1.7", &["A/hsi0", "B/hsi0"]);
    send(&a, "10.8.1.1", "10.8.1.7", 5309, 4);
    assert_eq!(received(&rb), 4, "B, in the prefix");
    assert_eq!(received(&rc), 0, "C, in another prefix");
}

#[test]
fn security_groups_apply_per_receiver() {
    let file = FabricFile::test()
        .chpid("F0")
        .group(Group::new(
            "open",
            [Rule::inbound("all"), Rule::outbound("all")],
        ))
        .group(Group::new("tcp-only", [Rule::inbound("tcp")]))
        .lpar(
            "A",
            "{ns}a",
            [Nic::new("F0", ["10.8.0.1/24"]).groups(["open"])],
        )
        .lpar(
            "B",
            "{ns}b",
            [Nic::new("F0", ["10.8.0.2/24"]).groups(["open"])],
        )
        .lpar(
            "C",
            "{ns}c",
            [Nic::new("F0", ["10.8.0.3/24"]).groups(["tcp-only"])],
        );
    let fabric = TestFabric::up(file);
    let (a, b, c) = (fabric.ns("a"), fabric.ns("b"), fabric.ns("c"));
    let group = "239.8.0.2";
    let (rb, rc) = (receiver(&b, false, 5303), receiver(&c, false, 5303));
    join_v4(&rb, group, "10.8.0.2");
    join_v4(&rc, group, "10.8.0.3");
    await_members(&fabric, "F0", group, &["B/hsi0", "C/hsi0"]);
    send(&a, "10.8.0.1", group, 5303, 10);
    assert_eq!(received(&rb), 10, "B's rules allow it");
    assert_eq!(received(&rc), 0, "C's rules deny it");
    assert_eq!(fabric.drops("C", "hsi0", "sg_denied_inbound"), 10);
    // One-to-many frames open no tracked connection.
    let ct = fabric.iqd_ok_args("conntrack", &["--json"]);
    assert!(!ct.contains("239.8.0.2"), "{ct}");
}

#[test]
fn iperf2_streams_to_a_group_of_three() {
    if std::process::Command::new("iperf")
        .arg("-v")
        .output()
        .is_err()
    {
        panic!("iperf (iperf2) is not installed: cargo xtask setup installs it");
    }
    let file = FabricFile::test()
        .chpid("F0")
        .lpar("A", "{ns}a", [Nic::new("F0", ["10.8.0.1/24"])])
        .lpar("B", "{ns}b", [Nic::new("F0", ["10.8.0.2/24"])])
        .lpar("C", "{ns}c", [Nic::new("F0", ["10.8.0.3/24"])])
        .lpar("D", "{ns}d", [Nic::new("F0", ["10.8.0.4/24"])]);
    let mut fabric = TestFabric::up(file);
    let a = fabric.ns("a");
    let group = "239.8.0.3";
    for r in ["b", "c", "d"] {
        let ns = fabric.ns(r);
        // Groups go out of hsi0 (the LPAR has no default route).
        let out = in_netns(&ns, "ip", &["route", "add", "224.0.0.0/4", "dev", "hsi0"]);
        assert!(out.status.success(), "{}", text(&out));
        // The server joins the group (bound to it).
        fabric.spawn(&ns, "iperf", &["-s", "-u", "-B", group, "-p", "5304"]);
    }
    await_members(&fabric, "F0", group, &["B/hsi0", "C/hsi0", "D/hsi0"]);
    let before: Vec<u64> = ["B", "C", "D"]
        .iter()
        .map(|l| rx_packets(&fabric, l))
        .collect();
    // Bound to A's address: the kernel sends the group's frames out of hsi0.
    let out = in_netns(
        &a,
        "iperf",
        &[
            "-c", group, "-u", "-p", "5304", "-B", "10.8.0.1", "-T", "1", "-t", "2", "-b", "10M",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let sent = fabric.nic_stats("A", "hsi0")["tx_packets"]
        .as_u64()
        .unwrap();
    for (i, l) in ["B", "C", "D"].iter().enumerate() {
        let got = rx_packets(&fabric, l) - before[i];
        // 10 Mbit/s for 2 s of 1470-byte datagrams: about 1700.
        assert!(
            got > 1000,
            "{l} received {got} of the stream (A sent {sent})"
        );
    }
}

/// The frames `hsi0` in `netns` received, as its LPAR's kernel counts them.
fn hsi0_rx(netns: &str) -> u64 {
    let out = in_netns(netns, "cat", &["/sys/class/net/hsi0/statistics/rx_packets"]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("rx_packets")
}

/// `iqd lpar <verb> <lpar>`, which must succeed.
fn lpar(fabric: &TestFabric, verb: &str, name: &str) {
    let out = iqd_tests::iqd(&["lpar", verb, name, "--config", fabric.config_arg()]);
    assert!(
        out.status.success(),
        "iqd lpar {verb} {name} failed: {}",
        text(&out)
    );
}

#[test]
fn a_stopped_receiver_gets_no_copy_and_receives_again_once_started() {
    let fabric = TestFabric::up(lan());
    let (a, b, c) = (fabric.ns("a"), fabric.ns("b"), fabric.ns("c"));
    let group = "239.8.0.4";
    let (rb, rc) = (receiver(&b, false, 5305), receiver(&c, false, 5305));
    join_v4(&rb, group, "10.8.0.2");
    join_v4(&rc, group, "10.8.0.3");
    await_members(&fabric, "F0", group, &["B/hsi0", "C/hsi0"]);
    send(&a, "10.8.0.1", group, 5305, 3);
    assert_eq!(received(&rb), 3, "B before the stop");
    assert_eq!(received(&rc), 3, "C before the stop");

    lpar(&fabric, "stop", "B");
    // Its registration stays (its socket is still joined), its copies are dropped and counted
    // on the sender as frames to a stopped LPAR's address are.
    assert_eq!(members(&fabric, "F0", group), ["B/hsi0", "C/hsi0"]);
    let stopped = fabric.drops("A", "hsi0", "lpar_stopped");
    let failed = fabric.drops("A", "hsi0", "redirect_failed");
    let b_rx = rx_packets(&fabric, "B");
    send(&a, "10.8.0.1", group, 5305, 5);
    assert_eq!(received(&rc), 5, "C while B is stopped");
    assert_eq!(received(&rb), 0, "B while stopped");
    assert_eq!(fabric.drops("A", "hsi0", "lpar_stopped") - stopped, 5);
    // Broadcasts too: the directed broadcast of the prefix.
    let (bb, bc) = (receiver(&b, false, 5306), receiver(&c, false, 5306));
    send(&a, "10.8.0.1", "10.8.0.255", 5306, 2);
    assert_eq!(received(&bc), 2, "C, broadcast");
    assert_eq!(received(&bb), 0, "B, broadcast while stopped");
    // Of the prefix's other NICs (B, C, D) only B is stopped.
    assert_eq!(fabric.drops("A", "hsi0", "lpar_stopped") - stopped, 7);
    assert_eq!(fabric.drops("A", "hsi0", "redirect_failed"), failed);
    assert_eq!(rx_packets(&fabric, "B"), b_rx, "nothing delivered to B");

    lpar(&fabric, "start", "B");
    // The carrier comes back a moment after the start.
    wait_until(Duration::from_secs(5), || {
        send(&a, "10.8.0.1", group, 5305, 1);
        received(&rb) > 0
    })
    .expect("B receives the group again once started");
    let _ = received(&rc);
    let stopped = fabric.drops("A", "hsi0", "lpar_stopped");
    send(&a, "10.8.0.1", group, 5305, 4);
    assert_eq!(received(&rb), 4, "B once started");
    assert_eq!(received(&rc), 4, "C");
    assert_eq!(fabric.drops("A", "hsi0", "lpar_stopped"), stopped);
}

#[test]
fn a_receiver_over_its_bandwidth_drops_copies_the_others_get_every_one() {
    // B may receive 1 Mbit/s: its meter queues at most about 200 KB, a flood of 800 KB
    // overruns it. C and D have no bandwidth.
    let file = FabricFile::test()
        .chpid("F0")
        .lpar("A", "{ns}a", [Nic::new("F0", ["10.8.0.1/24"])])
        .lpar("B", "{ns}b", [Nic::new("F0", ["10.8.0.2/24"])])
        .bandwidth("1Mbps")
        .lpar("C", "{ns}c", [Nic::new("F0", ["10.8.0.3/24"])])
        .lpar("D", "{ns}d", [Nic::new("F0", ["10.8.0.4/24"])]);
    let fabric = TestFabric::up(file);
    let a = fabric.ns("a");
    let group = "239.8.0.5";
    let sockets: Vec<UdpSocket> = ["b", "c", "d"]
        .iter()
        .zip(["10.8.0.2", "10.8.0.3", "10.8.0.4"])
        .map(|(r, local)| {
            let socket = receiver(&fabric.ns(r), false, 5307);
            join_v4(&socket, group, local);
            socket
        })
        .collect();
    await_members(&fabric, "F0", group, &["B/hsi0", "C/hsi0", "D/hsi0"]);
    let tx = |f: &TestFabric| f.nic_stats("A", "hsi0")["tx_packets"].as_u64().unwrap();
    let (tx0, b0, c0, d0) = (
        tx(&fabric),
        rx_packets(&fabric, "B"),
        rx_packets(&fabric, "C"),
        rx_packets(&fabric, "D"),
    );
    let exceeded0 = fabric.drops("A", "hsi0", "bandwidth_exceeded");
    let b_nic0 = hsi0_rx(&fabric.ns("b"));

    let took = flood(&a, "10.8.0.1", group, 5307);
    let sent = tx(&fabric) - tx0;
    assert!(sent >= 700, "the fabric saw {sent} of 800 frames");
    // Every other receiver got every frame.
    assert_eq!(rx_packets(&fabric, "C") - c0, sent, "C");
    assert_eq!(rx_packets(&fabric, "D") - d0, sent, "D");
    // B's copies: delivered through its shaper (counted as they leave it, within about 1.6 s)
    // or dropped as over its bandwidth, counted on the sender.
    let settled = wait_until(Duration::from_secs(10), || {
        let delivered = rx_packets(&fabric, "B") - b0;
        let exceeded = fabric.drops("A", "hsi0", "bandwidth_exceeded") - exceeded0;
        delivered + exceeded == sent
    });
    let delivered = rx_packets(&fabric, "B") - b0;
    let exceeded = fabric.drops("A", "hsi0", "bandwidth_exceeded") - exceeded0;
    assert!(
        settled.is_ok(),
        "B: {delivered} delivered + {exceeded} over its bandwidth != {sent} sent"
    );
    assert!(exceeded > 0, "nothing over B's bandwidth: {delivered}");
    assert!(delivered > 0, "B got nothing");
    // What B got, it got at its bandwidth: at most its meter's queue and what 1 Mbit/s
    // carries meanwhile, far below the 800 KB sent.
    let most = admitted_at_1mbps(took);
    assert!(
        delivered <= most,
        "B got {delivered} of {sent} at 1 Mbit/s, more than {most} (exceeded {exceeded})"
    );
    assert_eq!(fabric.drops("A", "hsi0", "redirect_failed"), 0);
    // B's own NIC received what the fabric counts as delivered (its socket's buffer may
    // have dropped some of a burst).
    assert_eq!(hsi0_rx(&fabric.ns("b")) - b_nic0, delivered, "B's hsi0");
    assert!(received(&sockets[0]) > 0, "B's socket");
}

/// Sends 800 datagrams of 1000 bytes (1042-byte frames) from `netns` (from `source`) to
/// `group`:`port`, in bursts of 20 (no queue on the way overflows); returns how long it took.
fn flood(netns: &str, source: &str, group: &str, port: u16) -> Duration {
    let started = std::time::Instant::now();
    let bind = iqd_tests::sockaddr(source, 0);
    let target = iqd_tests::sockaddr(group, port);
    let socket = in_netns_thread(netns, move || UdpSocket::bind(&bind).expect("bind sender"));
    let payload = [0x5au8; 1000];
    for i in 0..800 {
        socket.send_to(&payload, &target).expect("send");
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    started.elapsed()
}

/// The most 1042-byte frames a 1 Mbit/s meter admits during `flood` seconds: its queue (three
/// 64 KiB packets, `fabric::burst_ns`) and what 98% of 1 Mbit/s carries meanwhile, with a
/// tenth more for timing.
fn admitted_at_1mbps(flood: Duration) -> u64 {
    let bytes = 3.0 * 65536.0 + 122_500.0 * flood.as_secs_f64();
    (bytes / 1042.0 * 1.1) as u64 + 5
}

#[test]
fn a_sender_over_its_bandwidth_pays_for_every_copy() {
    // A may send 1 Mbit/s; each copy counts against it, as a unicast frame to each receiver
    // would.
    let file = FabricFile::test()
        .chpid("F0")
        .lpar("A", "{ns}a", [Nic::new("F0", ["10.8.0.1/24"])])
        .bandwidth("1Mbps")
        .lpar("B", "{ns}b", [Nic::new("F0", ["10.8.0.2/24"])])
        .lpar("C", "{ns}c", [Nic::new("F0", ["10.8.0.3/24"])]);
    let fabric = TestFabric::up(file);
    let a = fabric.ns("a");
    let group = "239.8.0.7";
    let _sockets: Vec<UdpSocket> = ["b", "c"]
        .iter()
        .zip(["10.8.0.2", "10.8.0.3"])
        .map(|(r, local)| {
            let socket = receiver(&fabric.ns(r), false, 5310);
            join_v4(&socket, group, local);
            socket
        })
        .collect();
    await_members(&fabric, "F0", group, &["B/hsi0", "C/hsi0"]);
    let tx = |f: &TestFabric| f.nic_stats("A", "hsi0")["tx_packets"].as_u64().unwrap();
    let rx = |f: &TestFabric| rx_packets(f, "B") + rx_packets(f, "C");
    let (tx0, rx0) = (tx(&fabric), rx(&fabric));
    let exceeded0 = fabric.drops("A", "hsi0", "bandwidth_exceeded");
    let took = flood(&a, "10.8.0.1", group, 5310);
    let sent = tx(&fabric) - tx0;
    assert!(sent >= 700, "the fabric saw {sent} of 800 frames");
    // Two copies of each frame: delivered through A's send shaper, or over its bandwidth.
    let settled = wait_until(Duration::from_secs(10), || {
        let exceeded = fabric.drops("A", "hsi0", "bandwidth_exceeded") - exceeded0;
        rx(&fabric) - rx0 + exceeded == 2 * sent
    });
    let delivered = rx(&fabric) - rx0;
    let exceeded = fabric.drops("A", "hsi0", "bandwidth_exceeded") - exceeded0;
    assert!(
        settled.is_ok(),
        "{delivered} copies delivered + {exceeded} over A's bandwidth != 2 x {sent} sent"
    );
    assert!(
        exceeded > 0 && delivered > 0,
        "{delivered} delivered, {exceeded} exceeded"
    );
    // Every copy counts on A's meter: together they stay within what one receiver alone
    // could get (metered once per frame, twice that would pass).
    let most = admitted_at_1mbps(took);
    assert!(
        delivered <= most,
        "{delivered} copies delivered at 1 Mbit/s, more than {most} (exceeded {exceeded})"
    );
    assert_eq!(fabric.drops("A", "hsi0", "redirect_failed"), 0);
}

#[test]
fn trace_records_each_copy_once_per_receiver_and_names_a_dropped_one() {
    let file = FabricFile::test()
        .chpid("F0")
        .analyzer("F0", "Z")
        .lpar("A", "{ns}a", [Nic::new("F0", ["10.8.0.1/24"])])
        .lpar("B", "{ns}b", [Nic::new("F0", ["10.8.0.2/24"])])
        .lpar("C", "{ns}c", [Nic::new("F0", ["10.8.0.3/24"])])
        .lpar("D", "{ns}d", [Nic::new("F0", ["10.8.0.4/24"])])
        .lpar("E", "{ns}e", [Nic::new("F0", ["10.8.0.5/24"])])
        .lpar("Z", "{ns}z", [Nic::new("F0", ["10.8.0.9/24"])])
        .traceable(&["A", "B", "C", "D"]);
    let fabric = TestFabric::up(file);
    let a = fabric.ns("a");
    let group = "239.8.0.6";
    let sockets: Vec<UdpSocket> = ["b", "c", "d", "e"]
        .iter()
        .zip(["10.8.0.2", "10.8.0.3", "10.8.0.4", "10.8.0.5"])
        .map(|(r, local)| {
            let socket = receiver(&fabric.ns(r), false, 5308);
            join_v4(&socket, group, local);
            socket
        })
        .collect();
    await_members(
        &fabric,
        "F0",
        group,
        &["B/hsi0", "C/hsi0", "D/hsi0", "E/hsi0"],
    );
    // D (traceable) and E (not) are stopped: only D's dropped copies are recorded.
    lpar(&fabric, "stop", "D");
    lpar(&fabric, "stop", "E");
    let trace = Trace::start(&fabric, &["--chpid", "F0", "--as", "Z", "--drops"]);
    send(&a, "10.8.0.1", group, 5308, 3);
    assert_eq!(received(&sockets[0]), 3);
    assert_eq!(received(&sockets[1]), 3);
    let (stdout, summary) = trace.stop();
    let file = std::env::temp_dir().join(format!("{}-mcast.pcapng", fabric.name));
    std::fs::write(&file, &stdout).expect("write capture");
    let frames = tshark_fields(
        &file,
        &[
            "frame.interface_name",
            "ip.dst",
            "udp.dstport",
            "frame.comment",
        ],
    );
    let _ = std::fs::remove_file(&file);
    let ours: Vec<&Vec<String>> = frames
        .iter()
        .filter(|f| f[1] == group && f[2] == "5308")
        .collect();
    let count = |interface: &str, dropped: bool| {
        ours.iter()
            .filter(|f| f[0] == interface && f[3].is_empty() != dropped)
            .count()
    };
    // Sent once on A's NIC, received once on each running member's; D's copies dropped, E's
    // (not traceable) not recorded at all.
    assert_eq!(count("A/hsi0", false), 3, "{frames:?} ({summary})");
    assert_eq!(count("B/hsi0", false), 3, "{frames:?}");
    assert_eq!(count("C/hsi0", false), 3, "{frames:?}");
    assert_eq!(count("D/hsi0", false), 0, "{frames:?}");
    assert_eq!(count("A/hsi0", true), 3, "{frames:?}");
    assert!(
        ours.iter()
            .filter(|f| !f[3].is_empty())
            .all(|f| f[3] == "dropped: lpar_stopped (the copy for D/hsi0)"),
        "{frames:?}"
    );
    assert_eq!(fabric.drops("A", "hsi0", "lpar_stopped"), 6, "D's and E's");
}
