//! IPv6 and NOARP with real traffic: fabrics brought up by the `iqd` binary, ping -6 (global and
//! link-local), iperf3 -6, TCP and UDP sockets over IPv6 inside the LPAR namespaces, security
//! groups with IPv6 rules, and packet sockets that watch for ARP and neighbour discovery.
use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use iqd_tests::{
    fixture::{FabricFile, Group, Nic, Rule},
    in_netns, in_netns_thread, iperf3_tcp, ping, tcp_connects, tcp_listener, text, transfer_to_cut,
    transfer_was_cut, udp_delivered, wait_until, TestFabric,
};

const A6: &str = "fd00:f0::1";
const B6: &str = "fd00:f0::2";
const C6: &str = "fd00:f0::3";

/// Three LPARs A, B and C on CHPID F0 (IPv6 only, `fd00:f0::1..3`) with the groups listed for
/// each NIC (none: the default group).
fn three_v6(
    groups: impl IntoIterator<Item = Group>,
    a: &[&str],
    b: &[&str],
    c: &[&str],
) -> FabricFile {
    let nic = |addr: &str, groups: &[&str]| {
        let nic = Nic::v6("F0", [format!("{addr}/64")]);
        if groups.is_empty() {
            nic
        } else {
            nic.groups(groups)
        }
    };
    groups
        .into_iter()
        .fold(FabricFile::test().chpid("F0"), FabricFile::group)
        .lpar("A", "{ns}a", [nic(A6, a)])
        .lpar("B", "{ns}b", [nic(B6, b)])
        .lpar("C", "{ns}c", [nic(C6, c)])
}

fn status(fabric: &TestFabric) -> serde_json::Value {
    let out = fabric.iqd("status", &["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// The first NIC of `lpar` in `iqd status --json`.
fn nic_status(status: &serde_json::Value, lpar: &str) -> serde_json::Value {
    status["lpars"]
        .as_array()
        .expect("lpars")
        .iter()
        .find(|l| l["lpar"] == lpar)
        .map(|l| l["nics"][0].clone())
        .unwrap_or_else(|| panic!("no LPAR {lpar} in {status}"))
}

fn sysctl(netns: &str, key: &str) -> String {
    let out = in_netns(netns, "sysctl", &["-n", key]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn hsi_is_noarp_and_ping_works_global_and_link_local() {
    let fabric = TestFabric::up(three_v6([], &[], &[], &[]));
    let (a, b) = (fabric.ns("a"), fabric.ns("b"));
    for ns in [&a, &b] {
        let link = text(&in_netns(ns, "ip", &["link", "show", "hsi0"]));
        assert!(link.contains("NOARP"), "hsi0 in {ns} is not NOARP: {link}");
        assert_eq!(sysctl(ns, "net.ipv6.conf.hsi0.disable_ipv6"), "0");
        assert_eq!(sysctl(ns, "net.ipv6.conf.hsi0.accept_ra"), "0");
        assert_eq!(sysctl(ns, "net.ipv6.conf.hsi0.router_solicitations"), "0");
    }
    let fabric_ns = format!("iqd-{}", fabric.name);
    assert_eq!(sysctl(&fabric_ns, "net.ipv6.conf.all.disable_ipv6"), "1");

    let status = status(&fabric);
    let b_nic = nic_status(&status, "B");
    assert_eq!(b_nic["ipv6"], serde_json::json!([format!("{B6}/64")]));
    let b_ll = b_nic["link_local"]
        .as_str()
        .expect("link_local")
        .to_string();
    assert!(b_ll.starts_with("fe80::"), "{b_nic}");
    // The link-local address iqd registered is the one the kernel formed on B's hsi0.
    let addrs = text(&in_netns(&b, "ip", &["-6", "addr", "show", "dev", "hsi0"]));
    assert!(
        addrs.contains(&format!("{b_ll}/64")),
        "{b_ll} not on B: {addrs}"
    );
    // The text table shows it too.
    let table = fabric.iqd_ok("status");
    assert!(table.contains(&format!("{B6}/64 {b_ll}/64")), "{table}");

    assert!(ping(&a, B6, 3, None), "ping -6 to B's global address");
    assert!(
        ping(&a, &format!("{b_ll}%hsi0"), 3, None),
        "ping -6 to B's link-local address"
    );
    // B answers from its link-local address to A's: both directions are registered.
    let a_ll = nic_status(&status, "A")["link_local"]
        .as_str()
        .expect("link_local")
        .to_string();
    assert!(ping(&b, &format!("{a_ll}%hsi0"), 2, None));
    assert_eq!(fabric.drops("A", "hsi0", "spoofed_source"), 0);
    assert!(
        !ping(&a, "fd00:f0::77", 1, None),
        "an unregistered address answered"
    );
    assert!(fabric.drops("A", "hsi0", "no_destination") > 0);
}

#[test]
fn ping_and_tcp_over_ipv6_at_every_mfs() {
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
                [Nic::v6(chpid, [format!("fd00:8:{i}::{host}/64")])],
            );
        }
    }
    let mut fabric = TestFabric::up(file);
    for (i, (chpid, _, mtu)) in sizes.iter().enumerate() {
        let (a, b) = (fabric.ns(&format!("{i}a")), fabric.ns(&format!("{i}b")));
        let b_addr = format!("fd00:8:{i}::2");
        assert!(ping(&a, &b_addr, 2, None), "ping -6 on CHPID {chpid}");
        // ICMPv6 payload + 8 (ICMPv6) + 40 (IPv6) = the whole MTU.
        assert!(
            ping(&a, &b_addr, 2, Some(mtu - 48)),
            "MTU-sized ping -6 on CHPID {chpid}"
        );
        fabric.iperf3_server(&b, &b_addr);
        let bytes = iperf3_tcp(&a, &b_addr, 1)
            .unwrap_or_else(|e| panic!("TCP over IPv6 on CHPID {chpid}: {e}"));
        assert!(
            bytes > 1_000_000,
            "TCP over IPv6 on CHPID {chpid} carried only {bytes} bytes"
        );
        assert_eq!(
            fabric.drops(&format!("L{i}A"), "hsi0", "mfs_exceeded"),
            0,
            "CHPID {chpid}"
        );
    }
}

#[test]
fn no_ipv6_reachability_across_chpids() {
    let file = FabricFile::test()
        .chpid("F0")
        .chpid("F1")
        .lpar("A", "{ns}a", [Nic::v6("F0", ["fd00:f0::1/64"])])
        .lpar("B", "{ns}b", [Nic::v6("F0", ["fd00:f0::2/64"])])
        .lpar("C", "{ns}c", [Nic::v6("F1", ["fd00:f1::3/64"])]);
    let fabric = TestFabric::up(file);
    let (a, c) = (fabric.ns("a"), fabric.ns("c"));
    let out = in_netns(
        &a,
        "ip",
        &["-6", "route", "add", "fd00:f1::/64", "dev", "hsi0"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let c_before = fabric.nic_stats("C", "hsi0");
    assert!(!ping(&a, "fd00:f1::3", 2, None), "A (F0) reached C (F1)");
    // A listener that would accept: the connection must fail for the fabric, not for want of
    // a server (a 1-second connect, not iperf3's minutes of SYN retries).
    let _listener = tcp_listener(&c, "fd00:f1::3", 5201);
    assert!(
        !tcp_connects(&a, "fd00:f1::3", 5201),
        "TCP over IPv6 crossed CHPIDs"
    );
    // C's link-local address is registered on F1 only.
    let c_ll = nic_status(&status(&fabric), "C")["link_local"]
        .as_str()
        .expect("link_local")
        .to_string();
    assert!(!ping(&a, &format!("{c_ll}%hsi0"), 1, None));
    assert!(fabric.drops("A", "hsi0", "not_member") > 0);
    let c_after = fabric.nic_stats("C", "hsi0");
    assert_eq!(
        c_before["rx_packets"], c_after["rx_packets"],
        "C received frames from F0"
    );
}

#[test]
fn a_spoofed_ipv6_source_is_dropped_unless_allowed() {
    let open = Group::new("open", [Rule::inbound("all"), Rule::outbound("all")]);
    let nic = |addr: &str| Nic::v6("F0", [format!("{addr}/64")]).groups(["open"]);
    let fabric = TestFabric::up(
        FabricFile::test()
            .chpid("F0")
            .group(open)
            .lpar("A", "{ns}a", [nic(A6)])
            .lpar("B", "{ns}b", [nic(B6)])
            .lpar("C", "{ns}c", [nic(C6).allow_ip_spoofing()]),
    );
    let (a, b, c) = (fabric.ns("a"), fabric.ns("b"), fabric.ns("c"));
    for ns in [&a, &c] {
        let out = in_netns(
            ns,
            "ip",
            &[
                "-6",
                "addr",
                "add",
                "fd00:f0::99/128",
                "dev",
                "hsi0",
                "nodad",
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    assert!(
        udp_delivered(&c, Some("fd00:f0::99"), &b, B6, 9999),
        "C may spoof"
    );
    assert!(
        !udp_delivered(&a, Some("fd00:f0::99"), &b, B6, 9998),
        "A may not spoof"
    );
    assert!(fabric.drops("A", "hsi0", "spoofed_source") >= 1);
    assert_eq!(fabric.drops("C", "hsi0", "spoofed_source"), 0);
}

#[test]
fn security_groups_with_ipv6_rules() {
    let groups = [
        Group::new(
            "web",
            [
                Rule::inbound("tcp").ports(80, 443),
                Rule::inbound("icmpv6").icmp_type(128),
                Rule::outbound("all"),
            ],
        ),
        Group::new("app", [Rule::outbound("all")]),
        Group::new(
            "db",
            [
                Rule::inbound("tcp").port(5432).remote_group("app"),
                Rule::inbound("tcp").port(22).remote(format!("{C6}/128")),
                Rule::inbound("tcp").port(2222).remote("fd00:f0::/127"),
            ],
        ),
    ];
    // A: app, B: web + db, C: default.
    let fabric = TestFabric::up(three_v6(groups, &["app"], &["web", "db"], &[]));
    let (a, b, c) = (fabric.ns("a"), fabric.ns("b"), fabric.ns("c"));
    let listeners: Vec<_> = [443, 8080, 5432, 22, 2222]
        .into_iter()
        .map(|port| tcp_listener(&b, B6, port))
        .collect();
    assert!(tcp_connects(&a, B6, 443), "TCP 443 is in 80-443");
    assert!(!tcp_connects(&a, B6, 8080), "TCP 8080 is outside 80-443");
    assert!(ping(&a, B6, 2, None), "icmpv6 type 128 (echo request)");
    assert!(tcp_connects(&a, B6, 5432), "A is a member of app");
    assert!(!tcp_connects(&c, B6, 5432), "C is not a member of app");
    assert!(tcp_connects(&c, B6, 22), "22 from fd00:f0::3 only");
    assert!(!tcp_connects(&a, B6, 22), "22 from fd00:f0::3 only");
    assert!(tcp_connects(&a, B6, 2222), "fd00:f0::1 is in fd00:f0::/127");
    assert!(!tcp_connects(&c, B6, 2222), "fd00:f0::3 is outside");
    assert!(fabric.drops("B", "hsi0", "sg_denied_inbound") >= 4);
    drop(listeners);

    // The remote group covers its members' link-local addresses too: A connects from its
    // link-local address to B's.
    let b_ll = nic_status(&status(&fabric), "B")["link_local"]
        .as_str()
        .expect("link_local")
        .to_string();
    let _l = tcp_listener(&b, "::", 5432);
    let target: std::net::SocketAddr = std::net::SocketAddrV6::new(
        b_ll.parse().expect("link-local"),
        5432,
        0,
        if_index(&a, "hsi0"),
    )
    .into();
    let connected = in_netns_thread(&a, move || {
        std::net::TcpStream::connect_timeout(&target, Duration::from_secs(1)).is_ok()
    });
    assert!(connected, "A's link-local address is a member of app");
}

/// The ifindex of `ifname` in `netns`.
fn if_index(netns: &str, ifname: &str) -> u32 {
    let out = in_netns(netns, "cat", &[&format!("/sys/class/net/{ifname}/ifindex")]);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no ifindex for {ifname} in {netns}: {}", text(&out)))
}

#[test]
fn tracked_ipv6_replies_and_a_live_cut() {
    let server = |port: u16| {
        Group::new(
            "server",
            [Rule::inbound("tcp").port(port), Rule::inbound("icmpv6")],
        )
    };
    let client = Group::new("client", [Rule::outbound("all")]);
    let mut fabric = TestFabric::up(three_v6(
        [client.clone(), server(5201)],
        &["client"],
        &["server"],
        &[],
    ));
    let (a, b) = (fabric.ns("a"), fabric.ns("b"));
    // B has no outbound rule and A no inbound one: only tracking lets the replies through.
    fabric.iperf3_server(&b, B6);
    let bytes = iperf3_tcp(&a, B6, 1).expect("TCP over IPv6 through tracked replies");
    assert!(bytes > 1_000_000, "only {bytes} bytes");
    assert!(ping(&a, B6, 2, None), "echo replies are tracked");
    assert_eq!(fabric.drops("B", "hsi0", "sg_denied_outbound"), 0);

    let out = fabric.iqd("conntrack", &["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let table: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let connections = table["connections"].as_array().expect("connections");
    assert!(
        connections.iter().any(|c| c["origin"] == "A/hsi0"
            && c["protocol"] == "tcp"
            && c["source"] == A6
            && c["destination"] == B6
            && c["destination_port"] == 5201),
        "no tracked A -> B:5201 over IPv6 in {table}"
    );
    assert!(
        connections.iter().any(|c| c["protocol"] == "icmpv6"),
        "no tracked ICMPv6 echo in {table}"
    );
    let listing = fabric.iqd_ok("conntrack");
    assert!(listing.contains(&format!("[{B6}]:5201")), "{listing}");

    // A live cut: a running transfer stops when the rule goes.
    let run = transfer_to_cut(&a, B6);
    std::thread::sleep(Duration::from_millis(1500));
    fabric.rewrite(three_v6(
        [client, server(22)],
        &["client"],
        &["server"],
        &[],
    ));
    let out = fabric.iqd_ok("up");
    assert!(out.contains("connections cut:"), "{out}");
    // The frames in flight are dropped at once; after them, the sender's retransmissions come
    // at its backed-off timeouts (0.2 s, 0.4 s, ...): wait for one.
    let before = fabric.drops("B", "hsi0", "sg_denied_inbound");
    let dropped = || fabric.drops("B", "hsi0", "sg_denied_inbound") > before;
    assert!(
        wait_until(Duration::from_secs(2), dropped).is_ok(),
        "frames of the cut IPv6 connection still pass"
    );
    let result = run.join().expect("client thread");
    assert!(
        transfer_was_cut(&result),
        "iperf3 finished although its connection was cut: {}",
        text(&result)
    );
}

#[test]
fn a_dual_stack_nic_carries_both_families() {
    let file = FabricFile::test()
        .chpid_mfs("F0", "64K")
        .lpar(
            "A",
            "{ns}a",
            [Nic::new("F0", ["10.9.0.1/24"]).ipv6(["fd00:9::1/64"])],
        )
        .lpar(
            "B",
            "{ns}b",
            [Nic::new("F0", ["10.9.0.2/24"]).ipv6(["fd00:9::2/64"])],
        );
    let mut fabric = TestFabric::up(file);
    let (a, b) = (fabric.ns("a"), fabric.ns("b"));
    assert!(ping(&a, "10.9.0.2", 2, None));
    assert!(ping(&a, "fd00:9::2", 2, None));
    fabric.iperf3_server(&b, "::");
    for dest in ["10.9.0.2", "fd00:9::2"] {
        let bytes = iperf3_tcp(&a, dest, 1).unwrap_or_else(|e| panic!("TCP to {dest}: {e}"));
        assert!(bytes > 1_000_000, "TCP to {dest}: only {bytes} bytes");
    }
    let b_nic = nic_status(&status(&fabric), "B");
    assert_eq!(b_nic["ipv4"], serde_json::json!(["10.9.0.2/24"]));
    assert_eq!(b_nic["ipv6"], serde_json::json!(["fd00:9::2/64"]));

    // Removing the IPv6 address from the file removes it from the interface.
    fabric.rewrite(
        FabricFile::test()
            .chpid_mfs("F0", "64K")
            .lpar(
                "A",
                "{ns}a",
                [Nic::new("F0", ["10.9.0.1/24"]).ipv6(["fd00:9::1/64"])],
            )
            .lpar("B", "{ns}b", [Nic::new("F0", ["10.9.0.2/24"])]),
    );
    fabric.iqd_ok("up");
    let addrs = text(&in_netns(&b, "ip", &["-6", "addr", "show", "dev", "hsi0"]));
    assert!(!addrs.contains("fd00:9::2"), "{addrs}");
    assert!(
        addrs.contains("fe80::"),
        "the link-local address stays: {addrs}"
    );
    assert!(!ping(&a, "fd00:9::2", 1, None));
    assert!(ping(&a, "10.9.0.2", 1, None));
}

#[test]
fn the_fabric_answers_neighbour_solicitations_when_an_lpar_turns_arp_on() {
    let fabric = TestFabric::up(three_v6([], &[], &[], &[]));
    let a = fabric.ns("a");
    let out = in_netns(&a, "ip", &["link", "set", "hsi0", "arp", "on"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(ping(&a, B6, 2, None), "ping -6 with ND on");
    let out = in_netns(&a, "ip", &["-j", "-6", "neigh", "show", B6]);
    let neigh: serde_json::Value = serde_json::from_slice(&out.stdout).expect("neigh JSON");
    let b_mac = nic_status(&status(&fabric), "B")["mac"].clone();
    assert_eq!(neigh[0]["lladdr"], b_mac, "{neigh}");
}

/// ARP frames and ICMPv6 neighbour-discovery messages (types 133-137) a packet socket on
/// `ifname` in `netns` sees, sent or received, for `duration`; and all frames it saw (to show
/// the socket was watching).
fn count_arp_and_nd(
    netns: &str,
    ifname: &str,
    duration: Duration,
) -> std::thread::JoinHandle<(u32, u32)> {
    let netns = netns.to_string();
    let ifname = ifname.to_string();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _guard = iqd::netns::NetnsGuard::enter(&netns).expect("enter netns");
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket calls on a descriptor this function owns.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd is a fresh descriptor owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(ifname.clone()).expect("ifname");
        // SAFETY: a NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert!(index > 0, "no {ifname} in {netns}");
        // SAFETY: zeroed sockaddr_ll is valid; the fields set are the ones bind reads.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = index as i32;
        // SAFETY: sll outlives the call and its size is passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: timeout outlives the call and its size is passed.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &timeout as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        ready_tx.send(()).expect("ready");
        let deadline = Instant::now() + duration;
        let (mut count, mut frames) = (0, 0);
        let mut buf = vec![0u8; 65536];
        while Instant::now() < deadline {
            // SAFETY: buf is writable for its length.
            let n = unsafe {
                libc::recv(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n < 14 {
                continue;
            }
            frames += 1;
            let frame = &buf[..n as usize];
            let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
            let nd = ethertype == 0x86dd
                && frame.len() > 54
                && frame[20] == 58
                && (133..=137).contains(&frame[54]);
            if ethertype == 0x0806 || nd {
                count += 1;
            }
        }
        (count, frames)
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("packet socket ready");
    handle
}

#[test]
fn a_third_lpar_sees_no_arp_or_nd_while_two_others_talk() {
    let file = FabricFile::test()
        .chpid_mfs("F0", "64K")
        .lpar(
            "A",
            "{ns}a",
            [Nic::new("F0", ["10.9.1.1/24"]).ipv6(["fd00:91::1/64"])],
        )
        .lpar(
            "B",
            "{ns}b",
            [Nic::new("F0", ["10.9.1.2/24"]).ipv6(["fd00:91::2/64"])],
        )
        .lpar(
            "C",
            "{ns}c",
            [Nic::new("F0", ["10.9.1.3/24"]).ipv6(["fd00:91::3/64"])],
        );
    let mut fabric = TestFabric::up(file);
    let (a, b, c) = (fabric.ns("a"), fabric.ns("b"), fabric.ns("c"));
    let window = Duration::from_secs(5);
    let watchers = [
        ("C", count_arp_and_nd(&c, "hsi0", window)),
        ("A", count_arp_and_nd(&a, "hsi0", window)),
        ("B", count_arp_and_nd(&b, "hsi0", window)),
    ];
    assert!(ping(&a, "10.9.1.2", 3, None));
    assert!(ping(&a, "fd00:91::2", 3, None));
    fabric.iperf3_server(&b, "::");
    iperf3_tcp(&a, "fd00:91::2", 1).expect("TCP over IPv6");
    iperf3_tcp(&a, "10.9.1.2", 1).expect("TCP over IPv4");
    for (who, watcher) in watchers {
        let (seen, frames) = watcher.join().expect("watcher");
        assert_eq!(seen, 0, "{who}'s hsi0 carried {seen} ARP or ND frames");
        if who != "C" {
            assert!(
                frames > 100,
                "{who}'s packet socket saw only {frames} frames"
            );
        }
    }
}

#[test]
fn sixteen_lpars_reach_each_other_without_neighbour_resolution() {
    const N: usize = 16;
    let mut file = FabricFile::test().chpid("F0");
    for i in 1..=N {
        file = file.lpar(
            &format!("L{i:02}"),
            &format!("{{ns}}{i}"),
            [Nic::new("F0", [format!("10.16.0.{i}/24")]).ipv6([format!("fd00:16::{i}/64")])],
        );
    }
    let fabric = TestFabric::up(file);
    for i in 1..=N {
        let ns = fabric.ns(&i.to_string());
        for family in ["4", "6"] {
            let targets: Vec<String> = (1..=N)
                .filter(|j| *j != i)
                .map(|j| {
                    if family == "4" {
                        format!("10.16.0.{j}")
                    } else {
                        format!("fd00:16::{j}")
                    }
                })
                .collect();
            let mut args = vec![
                format!("-{family}"),
                "-q".into(),
                "-c".into(),
                "2".into(),
                "-t".into(),
                "500".into(),
                "-p".into(),
                "20".into(),
            ];
            args.extend(targets);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = in_netns(&ns, "fping", &args);
            assert!(
                out.status.success(),
                "L{i:02} did not reach every LPAR over IPv{family}: {}",
                text(&out)
            );
        }
        // NOARP: no neighbour was resolved, none was learnt, none is permanent.
        let neigh = text(&in_netns(&ns, "ip", &["neigh", "show", "dev", "hsi0"]));
        for state in [
            "REACHABLE",
            "STALE",
            "PERMANENT",
            "DELAY",
            "PROBE",
            "FAILED",
        ] {
            assert!(
                !neigh.contains(state),
                "L{i:02} has {state} neighbour entries: {neigh}"
            );
        }
    }
}
