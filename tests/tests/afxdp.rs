//! Data path `afxdp`: the AF_XDP switch's own behaviour, beyond the suites every data path
//! runs (fabric.rs, secgroups.rs): its UMEM ledger after heavy mixed traffic, the in-kernel
//! fallback when it dies, and switching a running fabric to and from it.
use std::{thread, time::Duration};

use iqd_tests::{
    fixture::{FabricFile, Nic},
    in_netns, iperf3_tcp, ping, text, wait_until, TestFabric,
};

/// On data path `datapath`: LPARs A, B and C on CHPID F0 (MFS 64K: frames of up to 15 UMEM
/// chunks), D alone on F1 (MFS 16K).
fn four_lpars(datapath: &str) -> FabricFile {
    FabricFile::test()
        .datapath(datapath)
        .chpid_mfs("F0", "64K")
        .chpid_mfs("F1", "16K")
        .lpar("A", "{ns}a", [Nic::new("F0", ["10.71.0.1/24"])])
        .lpar("B", "{ns}b", [Nic::new("F0", ["10.71.0.2/24"])])
        .lpar("C", "{ns}c", [Nic::new("F0", ["10.71.0.3/24"])])
        .lpar("D", "{ns}d", [Nic::new("F1", ["10.71.1.4/24"])])
}

fn status(fabric: &TestFabric) -> serde_json::Value {
    let out = fabric.iqd("status", &["--json"]);
    assert!(out.status.success(), "iqd status failed: {}", text(&out));
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// The switch part of `iqd status --json`.
fn switch(fabric: &TestFabric) -> serde_json::Value {
    status(fabric)["switch"].clone()
}

fn u64_at(value: &serde_json::Value, pointer: &str) -> u64 {
    value
        .pointer(pointer)
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("{pointer} missing in {value}"))
}

fn running_pid(fabric: &TestFabric) -> u32 {
    let switch = switch(fabric);
    assert_eq!(
        switch["running"], true,
        "the switch is not running: {switch}"
    );
    u64_at(&switch, "/pid") as u32
}

/// An iperf3 TCP client to `server:port` for `seconds`; the bytes the receiver got.
fn iperf3_tcp_to(netns: &str, server: &str, port: u16, seconds: u32) -> u64 {
    let out = in_netns(
        netns,
        "iperf3",
        &[
            "-c",
            server,
            "-p",
            &port.to_string(),
            "-t",
            &seconds.to_string(),
            "-J",
        ],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 output is not JSON ({e}): {}", text(&out)));
    json["end"]["sum_received"]["bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("iperf3 to {server}:{port} failed: {}", json["error"]))
}

fn afxdp_stats(fabric: &TestFabric) -> serde_json::Value {
    fabric.stats()["afxdp"].clone()
}

/// Whether process `pid` has exited (a zombie has: only its parent has not collected it).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.contains(") Z "),
        Err(_) => true,
    }
}

#[test]
fn every_umem_frame_is_back_in_a_ring_after_heavy_mixed_traffic() {
    let mut fabric = TestFabric::up(four_lpars("afxdp"));
    let (a, b, c) = (fabric.ns("a"), fabric.ns("b"), fabric.ns("c"));
    let frames = u64_at(&switch(&fabric), "/report/ledger/counts/frames");
    assert!(frames >= 4 * 1024, "UMEM of {frames} frames for 4 ports");

    // An iperf3 server takes one client at a time: one per stream.
    fabric.iperf3_server(&b, "10.71.0.2");
    fabric.spawn(&b, "iperf3", &["-s", "-B", "10.71.0.2", "-p", "5203"]);
    fabric.spawn(&a, "iperf3", &["-s", "-B", "10.71.0.1", "-p", "5202"]);
    thread::sleep(Duration::from_millis(300));
    // Two TCP streams into B (one receiver, two senders), a UDP flood of small frames into A,
    // large and oversize pings, and frames the policy drops, all at once.
    let (a2, c2) = (a.clone(), c.clone());
    let tcp_ab = thread::spawn(move || iperf3_tcp(&a2, "10.71.0.2", 3));
    let tcp_cb = thread::spawn(move || iperf3_tcp_to(&c2, "10.71.0.2", 5203, 3));
    let c3 = c.clone();
    let udp = thread::spawn(move || {
        in_netns(
            &c3,
            "iperf3",
            &[
                "-c",
                "10.71.0.1",
                "-p",
                "5202",
                "-u",
                "-b",
                "0",
                "-l",
                "64",
                "-t",
                "3",
            ],
        )
    });
    let b2 = b.clone();
    let pings = thread::spawn(move || {
        // Every size from one chunk to fifteen: multi-buffer frames both ways.
        for size in [56, 3000, 3900, 8000, 20000, 57316] {
            assert!(
                ping(&b2, "10.71.0.1", 3, Some(size)),
                "ping of {size} bytes"
            );
        }
    });
    // Dropped by the policy before the switch: another CHPID, nobody's address, a frame
    // above the MTU, a spoofed source.
    let out = in_netns(&a, "ip", &["route", "add", "10.71.1.0/24", "dev", "hsi0"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !ping(&a, "10.71.1.4", 2, None),
        "A reached D on another CHPID"
    );
    assert!(
        !ping(&a, "10.71.0.99", 2, None),
        "an unknown address answered"
    );
    let out = in_netns(&c, "ip", &["link", "set", "hsi0", "mtu", "60000"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !ping(&c, "10.71.0.1", 2, Some(58000)),
        "an oversize frame arrived"
    );
    let out = in_netns(&a, "ip", &["addr", "add", "10.71.0.98/24", "dev", "hsi0"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = in_netns(
        &a,
        "ping",
        &["-c", "2", "-W", "1", "-I", "10.71.0.98", "10.71.0.3"],
    );
    assert!(!out.status.success(), "a spoofed source got through");

    let ab = tcp_ab.join().expect("iperf3 thread").expect("TCP A to B");
    let cb = tcp_cb.join().expect("iperf3 thread");
    assert!(
        ab > 1_000_000 && cb > 1_000_000,
        "TCP carried {ab} and {cb} bytes"
    );
    let udp = udp.join().expect("iperf3 thread");
    assert!(udp.status.success(), "UDP flood: {}", text(&udp));
    pings.join().expect("pings");

    // The switch carried the traffic, and the kernel never had to.
    let stats = afxdp_stats(&fabric);
    assert!(u64_at(&stats, "/to_switch") > 100_000, "{stats}");
    assert_eq!(u64_at(&stats, "/fallback"), 0, "{stats}");
    for (lpar, reason) in [
        ("A", "not_member"),
        ("A", "no_destination"),
        ("A", "spoofed_source"),
        ("C", "mfs_exceeded"),
    ] {
        assert!(
            fabric.drops(lpar, "hsi0", reason) > 0,
            "{lpar}: no {reason}"
        );
    }

    // At rest, every frame is free or in a fill ring: none held, none left in a TX ring,
    // every move the kernel made agreed with the ledger, and a full recount agrees too.
    let mut last = serde_json::Value::Null;
    let settled = wait_until(Duration::from_secs(5), || {
        last = switch(&fabric);
        let counts = &last["report"]["ledger"]["counts"];
        u64_at(counts, "/held") == 0
            && u64_at(counts, "/tx") == 0
            && u64_at(counts, "/free") + u64_at(counts, "/fill") == frames
    });
    assert!(settled.is_ok(), "frames did not come back: {last}");
    let ledger = &last["report"]["ledger"];
    assert_eq!(ledger["violations"], 0, "{ledger}");
    assert_eq!(ledger["audit"], "ok", "{ledger}");
    assert!(
        u64_at(ledger, "/in_fill_rings") <= u64_at(ledger, "/counts/fill"),
        "{ledger}"
    );
    for socket in ledger["sockets"].as_array().expect("sockets") {
        assert_eq!(u64_at(socket, "/tx_ring"), 0, "{socket}");
        assert_eq!(u64_at(socket, "/rx_ring"), 0, "{socket}");
        assert_eq!(u64_at(socket, "/kernel/rx_invalid_descs"), 0, "{socket}");
        assert_eq!(u64_at(socket, "/kernel/tx_invalid_descs"), 0, "{socket}");
    }
    // What the switch dropped as busy is counted on the senders, nowhere else.
    let busy: u64 = ["A", "B", "C", "D"]
        .iter()
        .map(|l| fabric.drops(l, "hsi0", "target_busy"))
        .sum();
    assert_eq!(busy, u64_at(&last, "/report/target_busy"), "{last}");
    println!(
        "ledger at rest: {}; frames moved {}, target_busy {busy}; sockets {}",
        ledger["counts"], last["report"]["frames_moved"], ledger["sockets"]
    );
}

#[test]
fn killing_the_switch_mid_transfer_falls_back_and_up_takes_traffic_back() {
    let mut fabric = TestFabric::up(four_lpars("afxdp"));
    let (a, b) = (fabric.ns("a"), fabric.ns("b"));
    let first = running_pid(&fabric);

    fabric.iperf3_server(&b, "10.71.0.2");
    let a2 = a.clone();
    let transfer = thread::spawn(move || iperf3_tcp(&a2, "10.71.0.2", 6));
    thread::sleep(Duration::from_millis(1500));
    assert!(
        u64_at(&afxdp_stats(&fabric), "/to_switch") > 1000,
        "the switch did not carry the transfer"
    );
    // SAFETY: plain syscall; the pid is the switch this test's `iqd up` started.
    assert_eq!(
        unsafe { libc::kill(first as libc::pid_t, libc::SIGKILL) },
        0
    );
    wait_until(Duration::from_secs(3), || {
        switch(&fabric)["running"] == false
    })
    .expect("the switch still runs after SIGKILL");
    let fallback = u64_at(&afxdp_stats(&fabric), "/fallback");
    thread::sleep(Duration::from_millis(500));
    assert!(
        u64_at(&afxdp_stats(&fabric), "/fallback") > fallback,
        "the kernel path did not take the transfer over"
    );
    let bytes = transfer
        .join()
        .expect("iperf3 thread")
        .expect("the transfer did not survive the switch's death");
    assert!(bytes > 10_000_000, "TCP carried only {bytes} bytes");

    // `up` starts a new switch, which takes the traffic back.
    let out = fabric.iqd_ok("up");
    assert!(out.contains("AF_XDP switch:      running"), "{out}");
    let second = running_pid(&fabric);
    assert_ne!(second, first);
    let (to_switch, fallback) = {
        let stats = afxdp_stats(&fabric);
        (u64_at(&stats, "/to_switch"), u64_at(&stats, "/fallback"))
    };
    let bytes = iperf3_tcp(&a, "10.71.0.2", 1).expect("TCP after the restart");
    assert!(bytes > 1_000_000, "TCP carried only {bytes} bytes");
    let stats = afxdp_stats(&fabric);
    assert!(u64_at(&stats, "/to_switch") > to_switch + 1000, "{stats}");
    assert_eq!(u64_at(&stats, "/fallback"), fallback, "{stats}");
    assert!(u64_at(&switch(&fabric), "/report/frames_moved") > 1000);

    // `down` stops it.
    fabric.iqd_ok("down");
    assert!(gone(second), "the switch survived down");
}

#[test]
fn a_running_fabric_switches_to_and_from_afxdp_under_traffic() {
    let mut fabric = TestFabric::up(four_lpars("xdp"));
    let (a, b) = (fabric.ns("a"), fabric.ns("b"));
    assert!(switch(&fabric).is_null(), "an xdp fabric shows no switch");
    fabric.iperf3_server(&b, "10.71.0.2");
    let a2 = a.clone();
    // Long enough to outlast two `up`s, which take seconds each on a busy machine.
    let transfer = thread::spawn(move || iperf3_tcp(&a2, "10.71.0.2", 12));
    thread::sleep(Duration::from_millis(500));

    fabric.rewrite(four_lpars("afxdp"));
    let out = fabric.iqd_ok("up");
    assert!(out.contains("NICs created:       -"), "{out}");
    let pid = running_pid(&fabric);
    wait_until(Duration::from_secs(5), || {
        u64_at(&afxdp_stats(&fabric), "/to_switch") > 1000
    })
    .expect("the switch did not take the transfer over");

    fabric.rewrite(four_lpars("xdp"));
    fabric.iqd_ok("up");
    assert!(switch(&fabric).is_null());
    let bytes = transfer
        .join()
        .expect("iperf3 thread")
        .expect("TCP across two data path changes");
    assert!(bytes > 10_000_000, "TCP carried only {bytes} bytes");
    assert!(gone(pid), "the switch still runs on an xdp fabric");
    assert_eq!(fabric.drops("A", "hsi0", "redirect_failed"), 0);
}

#[test]
fn a_full_tx_ring_drops_as_busy_and_the_other_ports_keep_moving() {
    let fabric = TestFabric::up(four_lpars("afxdp"));
    let (a, b) = (fabric.ns("a"), fabric.ns("b"));
    let fabric_ns = format!("iqd-{}", fabric.name);
    let frames = u64_at(&switch(&fabric), "/report/ledger/counts/frames");
    // B knows A's MAC before A's port stops taking frames.
    assert!(ping(&b, "10.71.0.1", 1, None));

    // A's port set down: the kernel sends nothing from its TX ring, which fills.
    let port_a = "p7000";
    let out = in_netns(&fabric_ns, "ip", &["link", "set", port_a, "down"]);
    assert!(out.status.success(), "{}", text(&out));
    let sent = 6000;
    iqd_tests::in_netns_thread(&b, move || {
        let socket = std::net::UdpSocket::bind("10.71.0.2:0").expect("bind");
        for _ in 0..sent {
            let _ = socket.send_to(&[0u8; 18], "10.71.0.1:9");
        }
    });
    let mut busy = 0;
    wait_until(Duration::from_secs(5), || {
        busy = fabric.drops("B", "hsi0", "target_busy");
        busy > 0
    })
    .expect("no frame was dropped as target_busy");
    // The report lags the counters by up to a quarter second.
    let mut stuck = 0;
    wait_until(Duration::from_secs(2), || {
        stuck = u64_at(&switch(&fabric), "/report/ledger/counts/tx");
        stuck > 0
    })
    .expect("no frame waits in A's TX ring");
    // Other ports keep moving meanwhile.
    assert!(ping(&b, "10.71.0.3", 3, None), "B cannot reach C");
    assert!(
        ping(&fabric.ns("c"), "10.71.0.2", 3, Some(20000)),
        "C cannot reach B"
    );

    // A's port back up: what waited goes out, and every frame comes back.
    let out = in_netns(&fabric_ns, "ip", &["link", "set", port_a, "up"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut last = serde_json::Value::Null;
    wait_until(Duration::from_secs(5), || {
        last = switch(&fabric)["report"]["ledger"].clone();
        u64_at(&last, "/counts/tx") == 0
            && u64_at(&last, "/counts/held") == 0
            && u64_at(&last, "/counts/free") + u64_at(&last, "/counts/fill") == frames
    })
    .unwrap_or_else(|_| panic!("frames did not come back: {last}"));
    assert_eq!(last["violations"], 0, "{last}");
    assert_eq!(last["audit"], "ok", "{last}");
    wait_until(Duration::from_secs(5), || ping(&a, "10.71.0.2", 1, None))
        .expect("A cannot reach B after its port came back");
    println!("{sent} datagrams: {busy} dropped busy, {stuck} frames waited");
}

#[test]
fn a_new_fabric_without_lpars_comes_up_and_takes_lpars_later() {
    // CHPIDs only: nothing records a NIC before the switch starts, which once found no state
    // file and failed the `up`.
    let empty = FabricFile::test().datapath("afxdp").chpid("F0");
    let fabric = TestFabric::write(&empty);
    let out = fabric.iqd("up", &[]);
    assert!(
        out.status.success(),
        "iqd up of a fabric without LPARs failed: {}",
        text(&out)
    );
    let pid = running_pid(&fabric);
    wait_until(Duration::from_secs(5), || {
        switch(&fabric)["report"]["state"] == "running"
    })
    .unwrap_or_else(|_| panic!("the switch does not run: {}", switch(&fabric)));
    assert_eq!(switch(&fabric)["report"]["ports"], serde_json::json!([]));
    // LPARs come later; the switch (restarted by `up`) carries their frames.
    fabric.rewrite(
        empty
            .lpar("A", "{ns}a", [Nic::new("F0", ["10.71.2.1/24"])])
            .lpar("B", "{ns}b", [Nic::new("F0", ["10.71.2.2/24"])]),
    );
    fabric.iqd_ok("up");
    assert_ne!(running_pid(&fabric), pid, "up restarts the switch");
    assert!(
        ping(&fabric.ns("a"), "10.71.2.2", 2, None),
        "A does not reach B"
    );
    wait_until(Duration::from_secs(5), || {
        u64_at(&afxdp_stats(&fabric), "/to_switch") > 0
    })
    .unwrap_or_else(|_| panic!("no frame went through the switch: {}", afxdp_stats(&fabric)));
}
