//! One-to-many delivery on real namespaces with real sockets: multicast groups as the LPARs
//! register them (the kernel's own IGMP and MLD reports, sent when a socket joins or leaves),
//! limited and directed broadcasts, security groups per receiver, and iperf2 streaming to a
//! group. Run on every data path (`IQD_TEST_DATAPATH`).
use std::{
    net::{Ipv4Addr, Ipv6Addr, UdpSocket},
    time::Duration,
};

use iqd_tests::{
    fixture::{FabricFile, Group, Nic, Rule},
    in_netns, in_netns_thread, text, wait_until, TestFabric,
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
