//! Security groups with real traffic: fabrics brought up by the `iqd` binary, TCP and UDP
//! sockets opened inside the LPAR namespaces, ping, iperf3, and the counters and connection
//! table read back with `iqd stats` and `iqd conntrack`.
use std::{fs, time::Duration};

use iqd_tests::{
    in_netns, iperf3_tcp, ping, tcp_connects, tcp_listener, text, udp_delivered, TestFabric,
};

/// Three LPARs on one CHPID; `{a}`, `{b}`, `{c}` are each NIC's extra keys and `{groups}` the
/// security-group tables.
const TEMPLATE: &str = r#"
[fabric]
name = "{fabric}"

[[chpid]]
id = "F0"

{groups}

[[lpar]]
name = "A"
netns = "{ns}a"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.8.0.1/24"]
{a}

[[lpar]]
name = "B"
netns = "{ns}b"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.8.0.2/24"]
{b}

[[lpar]]
name = "C"
netns = "{ns}c"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.8.0.3/24"]
{c}
"#;

const A: &str = "10.8.0.1";
const B: &str = "10.8.0.2";
const C: &str = "10.8.0.3";

fn file(groups: &str, a: &str, b: &str, c: &str) -> String {
    TEMPLATE
        .replace("{groups}", groups)
        .replace("{a}", a)
        .replace("{b}", b)
        .replace("{c}", c)
}

fn rewrite(fabric: &TestFabric, text: &str) {
    fs::write(&fabric.config, iqd_tests::render(text, &fabric.name)).expect("rewrite fabric file");
}

#[test]
fn tcp_and_udp_are_allowed_by_port_range_only() {
    let groups = r#"
[[security_group]]
name = "web"
rules = [
  { direction = "inbound", protocol = "tcp", port_min = 80, port_max = 443 },
  { direction = "inbound", protocol = "udp", port_min = 5000, port_max = 5001 },
  { direction = "outbound", protocol = "all" },
]
"#;
    let fabric = TestFabric::up(&file(groups, "", r#"security_groups = ["web"]"#, ""));
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
    let groups = r#"
[[security_group]]
name = "echo"
rules = [
  { direction = "inbound", protocol = "icmp", type = 8 },
  { direction = "outbound", protocol = "all" },
]

[[security_group]]
name = "timestamps"
rules = [
  { direction = "inbound", protocol = "icmp", type = 13, code = 0 },
  { direction = "outbound", protocol = "all" },
]
"#;
    let fabric = TestFabric::up(&file(
        groups,
        "",
        r#"security_groups = ["echo"]"#,
        r#"security_groups = ["timestamps"]"#,
    ));
    let a = fabric.ns("a");
    assert!(ping(&a, B, 2, None), "echo requests are type 8");
    assert!(!ping(&a, C, 2, None), "C allows only type 13");
    assert!(fabric.drops("C", "hsi0", "sg_denied_inbound") >= 2);
}

#[test]
fn remote_cidr_and_remote_group_and_the_union_of_groups() {
    let groups = r#"
[[security_group]]
name = "app"
rules = [{ direction = "outbound", protocol = "all" }]

[[security_group]]
name = "db"
rules = [
  { direction = "inbound", protocol = "tcp", port_min = 5432, port_max = 5432, remote_group = "app" },
]

[[security_group]]
name = "ssh"
rules = [
  { direction = "inbound", protocol = "tcp", port_min = 22, port_max = 22, remote = "10.8.0.3" },
]
"#;
    let fabric = TestFabric::up(&file(
        groups,
        r#"security_groups = ["app"]"#,
        r#"security_groups = ["db", "ssh"]"#,
        "",
    ));
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
    let groups = r#"
[[security_group]]
name = "client"
rules = [{ direction = "outbound", protocol = "all" }]

[[security_group]]
name = "server"
rules = [{ direction = "inbound", protocol = "tcp", port_min = 5201, port_max = 5201 }]
"#;
    let mut fabric = TestFabric::up(&file(
        groups,
        r#"security_groups = ["client"]"#,
        r#"security_groups = ["server"]"#,
        "",
    ));
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
    let groups = r#"
[[security_group]]
name = "open"
rules = [
  { direction = "inbound", protocol = "all" },
  { direction = "outbound", protocol = "all" },
]
"#;
    let fabric = TestFabric::up(&file(groups, "", "", r#"security_groups = ["open"]"#));
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
    let closed = r#"
[[security_group]]
name = "web"
rules = [{ direction = "inbound", protocol = "tcp", port_min = 80, port_max = 80 }]
"#;
    let opened = r#"
[[security_group]]
name = "web"
rules = [
  { direction = "inbound", protocol = "tcp", port_min = 80, port_max = 80 },
  { direction = "inbound", protocol = "tcp", port_min = 8080, port_max = 8080 },
]
"#;
    let b_keys = r#"security_groups = ["web"]"#;
    let fabric = TestFabric::up(&file(closed, "", b_keys, ""));
    let (a, b) = (fabric.ns("a"), fabric.ns("b"));
    let _l = tcp_listener(&b, B, 8080);
    assert!(!tcp_connects(&a, B, 8080));
    rewrite(&fabric, &file(opened, "", b_keys, ""));
    let out = fabric.iqd_ok("up");
    assert!(out.contains("NICs created:       -"), "{out}");
    assert!(
        tcp_connects(&a, B, 8080),
        "the new rule did not take effect"
    );
}

#[test]
fn a_rule_change_cuts_a_running_transfer() {
    let open = r#"
[[security_group]]
name = "server"
rules = [{ direction = "inbound", protocol = "tcp", port_min = 5201, port_max = 5201 }]
"#;
    let shut = r#"
[[security_group]]
name = "server"
rules = [{ direction = "inbound", protocol = "tcp", port_min = 22, port_max = 22 }]
"#;
    let b_keys = r#"security_groups = ["server"]"#;
    let mut fabric = TestFabric::up(&file(open, "", b_keys, ""));
    let (a, b) = (fabric.ns("a"), fabric.ns("b"));
    fabric.iperf3_server(&b, B);
    let client = std::thread::spawn(move || {
        // `timeout`: a cut connection would otherwise retransmit for minutes.
        in_netns(&a, "timeout", &["12", "iperf3", "-c", B, "-t", "6", "-J"])
    });
    std::thread::sleep(Duration::from_millis(1500));
    rewrite(&fabric, &file(shut, "", b_keys, ""));
    let out = fabric.iqd_ok("up");
    assert!(out.contains("connections cut:"), "{out}");
    let before = fabric.drops("B", "hsi0", "sg_denied_inbound");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        fabric.drops("B", "hsi0", "sg_denied_inbound") > before,
        "frames of the cut connection still pass"
    );
    let result = client.join().expect("client thread");
    assert!(
        !result.status.success(),
        "iperf3 finished although its connection was cut: {}",
        text(&result)
    );
}

#[test]
fn spoofing_is_allowed_only_with_the_flag() {
    let groups = r#"
[[security_group]]
name = "open"
rules = [
  { direction = "inbound", protocol = "all" },
  { direction = "outbound", protocol = "all" },
]
"#;
    let keys = r#"security_groups = ["open"]"#;
    let spoofer = r#"security_groups = ["open"]
allow_ip_spoofing = true"#;
    let fabric = TestFabric::up(&file(groups, keys, keys, spoofer));
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

/// Two tenants with one address plan on two CHPIDs (the issue's scenario): a connection on one
/// CHPID neither finds, refreshes nor replaces the other's.
#[test]
fn connections_belong_to_their_chpid_when_tenants_share_an_address_plan() {
    const TENANTS: &str = r#"
[fabric]
name = "{fabric}"

[[chpid]]
id = "C0"

[[chpid]]
id = "D0"

[[security_group]]
name = "send5200"
rules = [{ direction = "outbound", protocol = "udp", port_min = 5200, port_max = 5200 }]

[[security_group]]
name = "take5200"
rules = [{ direction = "inbound", protocol = "udp", port_min = 5200, port_max = 5200 }]

[[security_group]]
name = "open"
rules = [
  { direction = "inbound", protocol = "all" },
  { direction = "outbound", protocol = "all" },
]

[[lpar]]
name = "XC"
netns = "{ns}xc"
[[lpar.nic]]
chpid = "C0"
ipv4 = ["10.78.0.1/24"]
security_groups = ["send5200"]

[[lpar]]
name = "YC"
netns = "{ns}yc"
[[lpar.nic]]
chpid = "C0"
ipv4 = ["10.78.0.2/24"]
security_groups = ["take5200"]

[[lpar]]
name = "XD"
netns = "{ns}xd"
[[lpar.nic]]
chpid = "D0"
ipv4 = ["10.78.0.1/24"]
security_groups = ["open"]

[[lpar]]
name = "YD"
netns = "{ns}yd"
[[lpar.nic]]
chpid = "D0"
ipv4 = ["10.78.0.2/24"]
security_groups = ["open"]
"#;
    let fabric = TestFabric::up(TENANTS);
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
