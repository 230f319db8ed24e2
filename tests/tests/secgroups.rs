//! Security groups with real traffic: fabrics brought up by the `iqd` binary, TCP and UDP
//! sockets opened inside the LPAR namespaces, ping, iperf3, and the counters and connection
//! table read back with `iqd stats` and `iqd conntrack`.
use std::time::Duration;

use iqd_tests::{
    fixture::{FabricFile, Group, Nic, Rule},
    in_netns, iperf3_tcp, ping, tcp_connects, tcp_listener, text, transfer_to_cut,
    transfer_was_cut, udp_delivered, wait_until, TestFabric,
};

const A: &str = "10.8.0.1";
const B: &str = "10.8.0.2";
const C: &str = "10.8.0.3";

/// Three LPARs A, B and C on one CHPID with the security groups `groups` and these NICs.
fn three_lpars(groups: impl IntoIterator<Item = Group>, [a, b, c]: [Nic; 3]) -> FabricFile {
    groups
        .into_iter()
        .fold(FabricFile::test().chpid("F0"), FabricFile::group)
        .lpar("A", "{ns}a", [a])
        .lpar("B", "{ns}b", [b])
        .lpar("C", "{ns}c", [c])
}

/// [`three_lpars`] with each NIC in the groups listed for it (none listed: the default group).
fn file(groups: impl IntoIterator<Item = Group>, a: &[&str], b: &[&str], c: &[&str]) -> FabricFile {
    let nic = |addr: &str, groups: &[&str]| {
        let nic = Nic::new("F0", [format!("{addr}/24")]);
        if groups.is_empty() {
            nic
        } else {
            nic.groups(groups)
        }
    };
    three_lpars(groups, [nic(A, a), nic(B, b), nic(C, c)])
}

/// A group that allows everything both ways.
fn open(name: &str) -> Group {
    Group::new(name, [Rule::inbound("all"), Rule::outbound("all")])
}

#[test]
fn tcp_and_udp_are_allowed_by_port_range_only() {
    let web = Group::new(
        "web",
        [
            Rule::inbound("tcp").ports(80, 443),
            Rule::inbound("udp").ports(5000, 5001),
            Rule::outbound("all"),
        ],
    );
    let fabric = TestFabric::up(file([web], &[], &["web"], &[]));
    let (a, b) = (fabric.ns("a"), fabric.ns("b"));
    let _l1 = tcp_listener(&b, B, 443);
    let _l2 = tcp_listener(&b, B, 8080);
    assert!(tcp_connects(&a, B, 443), "TCP 443 is in 80-443");
    assert!(!tcp_connects(&a, B, 8080), "TCP 8080 is outside 80-443");
    assert!(
        udp_delivered(&a, None, &b, B, 5001),
        "UDP 5001 is in 5000-5001"
    );
    assert!(!udp_delivered(&a, None, &b, B, 6000), "UDP 6000 is outside");
    // Refused by B's inbound rules: counted on B.
    assert!(fabric.drops("B", "hsi0", "sg_denied_inbound") >= 2);
    assert_eq!(fabric.drops("A", "hsi0", "sg_denied_outbound"), 0);
}

#[test]
fn icmp_is_allowed_by_type() {
    let groups = [
        Group::new(
            "echo",
            [Rule::inbound("icmp").icmp_type(8), Rule::outbound("all")],
        ),
        Group::new(
            "timestamps",
            [
                Rule::inbound("icmp").icmp_type(13).icmp_code(0),
                Rule::outbound("all"),
            ],
        ),
    ];
    let fabric = TestFabric::up(file(groups, &[], &["echo"], &["timestamps"]));
    let a = fabric.ns("a");
    assert!(ping(&a, B, 2, None), "echo requests are type 8");
    assert!(!ping(&a, C, 2, None), "C allows only type 13");
    assert!(fabric.drops("C", "hsi0", "sg_denied_inbound") >= 2);
}

#[test]
fn remote_cidr_and_remote_group_and_the_union_of_groups() {
    let groups = [
        Group::new("app", [Rule::outbound("all")]),
        Group::new("db", [Rule::inbound("tcp").port(5432).remote_group("app")]),
        Group::new("ssh", [Rule::inbound("tcp").port(22).remote(C)]),
    ];
    let fabric = TestFabric::up(file(groups, &["app"], &["db", "ssh"], &[]));
    let (a, b, c) = (fabric.ns("a"), fabric.ns("b"), fabric.ns("c"));
    let _db = tcp_listener(&b, B, 5432);
    let _ssh = tcp_listener(&b, B, 22);
    assert!(tcp_connects(&a, B, 5432), "A is a member of app");
    assert!(!tcp_connects(&c, B, 5432), "C is not a member of app");
    assert!(
        tcp_connects(&c, B, 22),
        "ssh allows 10.8.0.3 (union with db)"
    );
    assert!(!tcp_connects(&a, B, 22), "ssh allows only 10.8.0.3");
}

#[test]
fn replies_need_no_rule_and_the_other_way_stays_closed() {
    let groups = [
        Group::new("client", [Rule::outbound("all")]),
        Group::new("server", [Rule::inbound("tcp").port(5201)]),
    ];
    let mut fabric = TestFabric::up(file(groups, &["client"], &["server"], &[]));
    let (a, b) = (fabric.ns("a"), fabric.ns("b"));
    // B has no outbound rule and A no inbound one: only connection tracking lets the
    // replies of A's connection through.
    fabric.iperf3_server(&b, B);
    let bytes = iperf3_tcp(&a, B, 1).expect("TCP through tracked replies");
    assert!(bytes > 1_000_000, "only {bytes} bytes");
    // Not one reply may be refused, even while both CPUs refresh the connection at once.
    assert_eq!(
        fabric.drops("B", "hsi0", "sg_denied_outbound"),
        0,
        "replies of a tracked connection were refused"
    );
    let _l = tcp_listener(&a, A, 7000);
    assert!(!tcp_connects(&b, A, 7000), "B may open nothing");
    assert!(fabric.drops("B", "hsi0", "sg_denied_outbound") >= 1);

    let out = fabric.iqd("conntrack", &["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let table: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let connections = table["connections"].as_array().expect("connections");
    assert!(
        connections.iter().any(|c| c["origin"] == "A/hsi0"
            && c["reply"] == "B/hsi0"
            && c["protocol"] == "tcp"
            && c["destination_port"] == 5201
            && c["reply_packets"].as_u64() > Some(0)),
        "no tracked A→B:5201 connection in {table}"
    );
    assert!(table["summary"]["entries"].as_u64() >= Some(1));
}

#[test]
fn the_default_group_admits_its_members_only() {
    let fabric = TestFabric::up(file([open("open")], &[], &[], &["open"]));
    let (a, c) = (fabric.ns("a"), fabric.ns("c"));
    assert!(ping(&a, B, 1, None), "A and B are both in default");
    assert!(
        ping(&a, C, 1, None),
        "default allows all outbound; C allows all inbound"
    );
    let _l = tcp_listener(&a, A, 7000);
    assert!(
        !tcp_connects(&c, A, 7000),
        "C is not a member of default, which admits only its members"
    );
    assert!(fabric.drops("A", "hsi0", "sg_denied_inbound") >= 1);
}

#[test]
fn a_rule_change_opens_a_port_at_once() {
    let closed = Group::new("web", [Rule::inbound("tcp").port(80)]);
    let opened = Group::new(
        "web",
        [
            Rule::inbound("tcp").port(80),
            Rule::inbound("tcp").port(8080),
        ],
    );
    let fabric = TestFabric::up(file([closed], &[], &["web"], &[]));
    let (a, b) = (fabric.ns("a"), fabric.ns("b"));
    let _l = tcp_listener(&b, B, 8080);
    assert!(!tcp_connects(&a, B, 8080));
    fabric.rewrite(file([opened], &[], &["web"], &[]));
    let out = fabric.iqd_ok("up");
    assert!(out.contains("NICs created:       -"), "{out}");
    assert!(
        tcp_connects(&a, B, 8080),
        "the new rule did not take effect"
    );
}

#[test]
fn a_rule_change_cuts_a_running_transfer() {
    let open = Group::new("server", [Rule::inbound("tcp").port(5201)]);
    let shut = Group::new("server", [Rule::inbound("tcp").port(22)]);
    let mut fabric = TestFabric::up(file([open], &[], &["server"], &[]));
    let (a, b) = (fabric.ns("a"), fabric.ns("b"));
    fabric.iperf3_server(&b, B);
    let client = transfer_to_cut(&a, B);
    std::thread::sleep(Duration::from_millis(1500));
    fabric.rewrite(file([shut], &[], &["server"], &[]));
    let out = fabric.iqd_ok("up");
    assert!(out.contains("connections cut:"), "{out}");
    // The frames in flight are dropped at once; after them, the sender's retransmissions come
    // at its backed-off timeouts (0.2 s, 0.4 s, ...): wait for one.
    let before = fabric.drops("B", "hsi0", "sg_denied_inbound");
    let dropped = || fabric.drops("B", "hsi0", "sg_denied_inbound") > before;
    assert!(
        wait_until(Duration::from_secs(2), dropped).is_ok(),
        "frames of the cut connection still pass"
    );
    let result = client.join().expect("client thread");
    assert!(
        transfer_was_cut(&result),
        "iperf3 finished although its connection was cut: {}",
        text(&result)
    );
}

#[test]
fn spoofing_is_allowed_only_with_the_flag() {
    let nic = |addr: &str| Nic::new("F0", [format!("{addr}/24")]).groups(["open"]);
    let fabric = TestFabric::up(three_lpars(
        [open("open")],
        [nic(A), nic(B), nic(C).allow_ip_spoofing()],
    ));
    let (a, b, c) = (fabric.ns("a"), fabric.ns("b"), fabric.ns("c"));
    for ns in [&a, &c] {
        let out = in_netns(ns, "ip", &["addr", "add", "10.8.0.99/32", "dev", "hsi0"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    assert!(
        udp_delivered(&c, Some("10.8.0.99"), &b, B, 9999),
        "C may spoof"
    );
    assert!(
        !udp_delivered(&a, Some("10.8.0.99"), &b, B, 9998),
        "A may not spoof"
    );
    assert!(fabric.drops("A", "hsi0", "spoofed_source") >= 1);
    assert_eq!(fabric.drops("C", "hsi0", "spoofed_source"), 0);

    // `iqd status` shows who may spoof and every NIC's groups.
    let out = fabric.iqd("status", &["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let nic = |lpar: &str| {
        status["lpars"]
            .as_array()
            .expect("lpars")
            .iter()
            .find(|l| l["lpar"] == lpar)
            .map(|l| l["nics"][0].clone())
            .expect("LPAR in status")
    };
    assert_eq!(nic("C")["allow_ip_spoofing"], true);
    assert_eq!(nic("A")["allow_ip_spoofing"], false);
    assert_eq!(nic("A")["security_groups"], serde_json::json!(["open"]));
}

/// Two tenants with one address plan on two CHPIDs (the scenario): a connection on one
/// CHPID neither finds, refreshes nor replaces the other's.
#[test]
fn connections_belong_to_their_chpid_when_tenants_share_an_address_plan() {
    let on = |chpid: &str, addr: &str, group: &str| Nic::new(chpid, [addr]).groups([group]);
    let tenants = FabricFile::test()
        .chpid("C0")
        .chpid("D0")
        .group(Group::new("send5200", [Rule::outbound("udp").port(5200)]))
        .group(Group::new("take5200", [Rule::inbound("udp").port(5200)]))
        .group(open("open"))
        .lpar("XC", "{ns}xc", [on("C0", "10.78.0.1/24", "send5200")])
        .lpar("YC", "{ns}yc", [on("C0", "10.78.0.2/24", "take5200")])
        .lpar("XD", "{ns}xd", [on("D0", "10.78.0.1/24", "open")])
        .lpar("YD", "{ns}yd", [on("D0", "10.78.0.2/24", "open")]);
    let fabric = TestFabric::up(tenants);
    let udp = |ns: &str, addr: &'static str| {
        let socket = iqd_tests::in_netns_thread(ns, move || {
            std::net::UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
        });
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        socket
    };
    let (xc, yc) = (
        udp(&fabric.ns("xc"), "10.78.0.1:4200"),
        udp(&fabric.ns("yc"), "10.78.0.2:5200"),
    );
    let (xd, yd) = (
        udp(&fabric.ns("xd"), "10.78.0.1:4200"),
        udp(&fabric.ns("yd"), "10.78.0.2:5200"),
    );
    // How many of `count` datagrams `from` sends to `to` arrive.
    let stream = |from: &std::net::UdpSocket, to: &std::net::UdpSocket, dest: &str, count| {
        let mut arrived = 0;
        for _ in 0..count {
            from.send_to(b"iqd", dest).expect("send");
            let mut buf = [0u8; 8];
            if to.recv_from(&mut buf).is_ok() {
                arrived += 1;
            }
        }
        arrived
    };
    // XC opens the connection (its only rule); YC's datagrams back pass only by tracking.
    assert_eq!(stream(&xc, &yc, "10.78.0.2:5200", 1), 1, "XC to YC:5200");
    assert_eq!(stream(&yc, &xc, "10.78.0.1:4200", 10), 10, "YC's replies");
    // The other tenant opens the very same 5-tuple on its own CHPID.
    assert_eq!(stream(&xd, &yd, "10.78.0.2:5200", 1), 1, "XD to YD:5200");
    assert_eq!(stream(&yd, &xd, "10.78.0.1:4200", 10), 10, "YD's replies");
    // C0's connection is untouched: YC's stream goes on.
    assert_eq!(
        stream(&yc, &xc, "10.78.0.1:4200", 20),
        20,
        "C0's tracked stream stopped after D0 opened the same tuple"
    );
    assert_eq!(fabric.drops("YC", "hsi0", "sg_denied_outbound"), 0);
    assert_eq!(fabric.drops("XC", "hsi0", "sg_denied_inbound"), 0);

    let out = fabric.iqd("conntrack", &["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let table: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let connections = table["connections"].as_array().expect("connections");
    for (chpid, origin, reply) in [("C0", "XC/hsi0", "YC/hsi0"), ("D0", "XD/hsi0", "YD/hsi0")] {
        assert!(
            connections.iter().any(|c| c["chpid"] == chpid
                && c["origin"] == origin
                && c["reply"] == reply
                && c["protocol"] == "udp"
                && c["source_port"] == 4200
                && c["destination_port"] == 5200
                && c["reply_packets"].as_u64() >= Some(10)),
            "no {chpid} connection {origin} -> {reply} in {table}"
        );
    }
}
