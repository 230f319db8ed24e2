//! VLANs within a CHPID, on real namespaces and real frames: each VLAN (and the CHPID's
//! untagged NICs) is a LAN of its own, one address plan may serve several, an LPAR may have a
//! NIC in each, frames an LPAR tags itself are dropped as `vlan_tagged`, and `iqd up` moves a
//! NIC to another VLAN at once. Run on every data path (`IQD_TEST_DATAPATH`).
use std::{net::Ipv4Addr, time::Duration};

use iqd_tests::{
    fixture::{FabricFile, Nic},
    frames::{vlan_tagged, Ipv4Frame, Mac, ETH_P_8021AD, ETH_P_8021Q, L4},
    in_netns, in_netns_thread, iperf3_tcp, ping, send_raw_frame, tcp_connects, tcp_listener, text,
    TestFabric,
};

/// CHPID F0 with VLANs 100 and 200 on one address plan, and its untagged segment:
/// - VLAN 100: A 10.7.0.1, B 10.7.0.2, M/hsi0 10.7.0.3;
/// - VLAN 200: C 10.7.0.1 (A's address) and 10.7.1.1, M/hsi1 10.7.1.3;
/// - untagged: D 10.0.0.4.
///
/// M has a NIC in each VLAN.
fn segments() -> FabricFile {
    FabricFile::test()
        .chpid("F0")
        .lpar("A", "{ns}a", [Nic::new("F0", ["10.7.0.1/24"]).vlan(100)])
        .lpar("B", "{ns}b", [Nic::new("F0", ["10.7.0.2/24"]).vlan(100)])
        .lpar(
            "C",
            "{ns}c",
            [Nic::new("F0", ["10.7.0.1/24", "10.7.1.1/24"]).vlan(200)],
        )
        .lpar("D", "{ns}d", [Nic::new("F0", ["10.0.0.4/24"])])
        .lpar(
            "M",
            "{ns}m",
            [
                Nic::new("F0", ["10.7.0.3/24"]).vlan(100),
                Nic::new("F0", ["10.7.1.3/24"]).vlan(200),
            ],
        )
}

/// A and B in VLAN 100, C in VLAN 200 (10.7.0.3); `b_vlan` moves B.
fn two_vlans(b_vlan: u16) -> FabricFile {
    FabricFile::test()
        .chpid("F0")
        .lpar("A", "{ns}a", [Nic::new("F0", ["10.7.0.1/24"]).vlan(100)])
        .lpar("B", "{ns}b", [Nic::new("F0", ["10.7.0.2/24"]).vlan(b_vlan)])
        .lpar("C", "{ns}c", [Nic::new("F0", ["10.7.0.3/24"]).vlan(200)])
}

fn status(fabric: &TestFabric) -> serde_json::Value {
    serde_json::from_str(&fabric.iqd_ok_args("status", &["--json"])).expect("status JSON")
}

/// The `iqd status --json` entry of NIC `nic` of LPAR `lpar`.
fn nic_status(status: &serde_json::Value, lpar: &str, nic: &str) -> serde_json::Value {
    status["lpars"]
        .as_array()
        .expect("lpars")
        .iter()
        .find(|l| l["lpar"] == lpar)
        .and_then(|l| l["nics"].as_array()?.iter().find(|n| n["nic"] == nic))
        .cloned()
        .unwrap_or_else(|| panic!("no NIC {lpar}/{nic} in {status}"))
}

fn mac_of(status: &serde_json::Value, lpar: &str) -> Mac {
    let text = nic_status(status, lpar, "hsi0")["mac"]
        .as_str()
        .expect("mac")
        .to_string();
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("hex"))
        .collect();
    bytes.try_into().expect("six bytes")
}

fn rx_packets(fabric: &TestFabric, lpar: &str, nic: &str) -> u64 {
    fabric.nic_stats(lpar, nic)["rx_packets"]
        .as_u64()
        .expect("rx_packets")
}

fn add_route(netns: &str, prefix: &str, dev: &str) {
    let out = in_netns(netns, "ip", &["route", "add", prefix, "dev", dev]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn each_vlan_of_a_chpid_is_a_lan_of_its_own() {
    let mut fabric = TestFabric::up(segments());
    let (a, b, c, d, m) = (
        fabric.ns("a"),
        fabric.ns("b"),
        fabric.ns("c"),
        fabric.ns("d"),
        fabric.ns("m"),
    );

    // `iqd status` shows each NIC's VLAN; the LPAR sees an untagged interface.
    let st = status(&fabric);
    assert_eq!(nic_status(&st, "A", "hsi0")["vlan"], 100, "{st}");
    assert_eq!(nic_status(&st, "C", "hsi0")["vlan"], 200, "{st}");
    assert_eq!(
        nic_status(&st, "D", "hsi0")["vlan"],
        serde_json::Value::Null
    );
    assert_eq!(nic_status(&st, "M", "hsi0")["vlan"], 100);
    assert_eq!(nic_status(&st, "M", "hsi1")["vlan"], 200);
    assert_eq!(fabric.nic_stats("M", "hsi1")["vlan"], 200);
    let table = fabric.iqd_ok("status");
    assert!(table.contains(" VLAN "), "{table}");
    let links = text(&in_netns(&a, "ip", &["-d", "link", "show", "hsi0"]));
    assert!(!links.contains("vlan"), "{links}");

    // Within VLAN 100: ping and TCP.
    assert!(ping(&a, "10.7.0.2", 3, None), "ping within VLAN 100");
    fabric.iperf3_server(&b, "10.7.0.2");
    let bytes = iperf3_tcp(&a, "10.7.0.2", 1).expect("TCP within VLAN 100");
    assert!(
        bytes > 1_000_000,
        "TCP within VLAN 100 carried {bytes} bytes"
    );

    // One LPAR, two NICs on F0 in two VLANs: each reaches its own VLAN.
    assert!(ping(&m, "10.7.1.1", 2, None), "M/hsi1 to C within VLAN 200");
    let _c_listener = tcp_listener(&c, "10.7.1.1", 7000);
    assert!(tcp_connects(&m, "10.7.1.1", 7000), "TCP within VLAN 200");
    assert!(ping(&m, "10.7.0.2", 2, None), "M/hsi0 to B within VLAN 100");

    // 10.7.0.1 is A's in VLAN 100 and C's in VLAN 200: from VLAN 100 only A answers. A
    // listener on it in C is unreachable (A, with none, resets the connection), one in A is
    // reached.
    let c_rx = rx_packets(&fabric, "C", "hsi0");
    assert!(ping(&m, "10.7.0.1", 2, None), "M to 10.7.0.1 in VLAN 100");
    let _c_same = tcp_listener(&c, "10.7.0.1", 7001);
    assert!(
        !tcp_connects(&m, "10.7.0.1", 7001),
        "VLAN 100 reached C's listener on the shared address"
    );
    let _a_same = tcp_listener(&a, "10.7.0.1", 7001);
    assert!(tcp_connects(&m, "10.7.0.1", 7001), "A's listener");
    assert!(tcp_connects(&b, "10.7.0.1", 7001), "A's listener from B");
    assert_eq!(
        rx_packets(&fabric, "C", "hsi0"),
        c_rx,
        "C got VLAN 100's frames"
    );

    // Across VLANs of the CHPID, and to its untagged segment: nothing, counted `not_member`.
    add_route(&a, "10.7.1.0/24", "hsi0");
    add_route(&a, "10.0.0.0/24", "hsi0");
    add_route(&d, "10.7.0.0/24", "hsi0");
    let d_rx = rx_packets(&fabric, "D", "hsi0");
    assert!(!ping(&a, "10.7.1.1", 2, None), "VLAN 100 reached VLAN 200");
    assert!(
        !tcp_connects(&a, "10.7.1.1", 7000),
        "TCP crossed from VLAN 100 to VLAN 200"
    );
    assert!(
        !ping(&a, "10.0.0.4", 2, None),
        "VLAN 100 reached untagged D"
    );
    let _d_listener = tcp_listener(&d, "10.0.0.4", 7002);
    assert!(
        !tcp_connects(&a, "10.0.0.4", 7002),
        "TCP reached untagged D"
    );
    assert!(fabric.drops("A", "hsi0", "not_member") >= 5);
    assert!(
        !ping(&d, "10.7.0.2", 2, None),
        "untagged D reached VLAN 100"
    );
    assert!(fabric.drops("D", "hsi0", "not_member") >= 2);
    assert_eq!(rx_packets(&fabric, "C", "hsi0"), c_rx, "C got frames of A");
    assert_eq!(rx_packets(&fabric, "D", "hsi0"), d_rx, "D got frames of A");
}

#[test]
fn frames_an_lpar_tags_itself_are_dropped_as_vlan_tagged() {
    let fabric = TestFabric::up(two_vlans(100));
    let (a, b, c) = (fabric.ns("a"), fabric.ns("b"), fabric.ns("c"));
    let st = status(&fabric);
    let (mac_a, mac_b, mac_c) = (mac_of(&st, "A"), mac_of(&st, "B"), mac_of(&st, "C"));
    let udp = |ns: &str, addr: &'static str| {
        let socket = in_netns_thread(ns, move || {
            std::net::UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
        });
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        socket
    };
    let (to_b, to_c) = (udp(&b, "10.7.0.2:9000"), udp(&c, "10.7.0.3:9000"));
    let datagram = |dst_mac: Mac, dst: [u8; 4], payload: &[u8]| {
        Ipv4Frame::new(
            mac_a,
            dst_mac,
            Ipv4Addr::new(10, 7, 0, 1),
            Ipv4Addr::from(dst),
            L4::Udp {
                src_port: 4000,
                dst_port: 9000,
                data: payload.to_vec(),
            },
        )
        .build()
    };
    let received = |socket: &std::net::UdpSocket| {
        let mut buf = [0u8; 64];
        socket.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
    };

    // The same datagram untagged arrives: the raw sender works, and B would take it.
    send_raw_frame(&a, "hsi0", &datagram(mac_b, [10, 7, 0, 2], b"plain"));
    assert_eq!(received(&to_b).as_deref(), Some(&b"plain"[..]));

    let to_b_frame = datagram(mac_b, [10, 7, 0, 2], b"tagged");
    let to_c_frame = datagram(mac_c, [10, 7, 0, 3], b"tagged");
    let tagged = [
        // A's own VLAN, to B.
        vlan_tagged(&to_b_frame, ETH_P_8021Q, 100),
        // Another VLAN's, to C there: no way out of its segment by tagging.
        vlan_tagged(&to_c_frame, ETH_P_8021Q, 200),
        vlan_tagged(&to_b_frame, ETH_P_8021AD, 100),
        // Double-tagged (802.1ad outer, 802.1Q inner).
        vlan_tagged(
            &vlan_tagged(&to_c_frame, ETH_P_8021Q, 200),
            ETH_P_8021AD,
            300,
        ),
    ];
    let b_rx = rx_packets(&fabric, "B", "hsi0");
    let c_rx = rx_packets(&fabric, "C", "hsi0");
    for frame in &tagged {
        send_raw_frame(&a, "hsi0", frame);
    }
    assert_eq!(received(&to_b), None, "a tagged frame reached B");
    assert_eq!(received(&to_c), None, "a tagged frame reached C");
    assert_eq!(
        fabric.drops("A", "hsi0", "vlan_tagged"),
        tagged.len() as u64
    );
    assert_eq!(fabric.drops("A", "hsi0", "non_ip"), 0);
    assert_eq!(rx_packets(&fabric, "B", "hsi0"), b_rx);
    assert_eq!(rx_packets(&fabric, "C", "hsi0"), c_rx);
}

#[test]
fn a_vlan_change_moves_the_nic_at_once_and_cuts_its_connections() {
    let fabric = TestFabric::up(two_vlans(100));
    let (a, b, c) = (fabric.ns("a"), fabric.ns("b"), fabric.ns("c"));
    let ifindex = |ns: &str| {
        let out = in_netns(ns, "ip", &["-j", "link", "show", "hsi0"]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("link JSON");
        json[0]["ifindex"].clone()
    };
    let b_index = ifindex(&b);

    // A tracked connection A -> B in VLAN 100, and C (VLAN 200) not reaching B.
    let _listener = tcp_listener(&b, "10.7.0.2", 7000);
    assert!(tcp_connects(&a, "10.7.0.2", 7000), "TCP within VLAN 100");
    add_route(&c, "10.7.0.2/32", "hsi0");
    assert!(!ping(&c, "10.7.0.2", 1, None), "VLAN 200 reached B");
    let connections = |fabric: &TestFabric| -> Vec<serde_json::Value> {
        let out = fabric.iqd("conntrack", &["--json"]);
        assert!(out.status.success(), "{}", text(&out));
        let table: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        table["connections"]
            .as_array()
            .expect("connections")
            .iter()
            .filter(|c| c["origin"] == "A/hsi0" && c["reply"] == "B/hsi0")
            .cloned()
            .collect()
    };
    let before = connections(&fabric);
    assert!(
        before
            .iter()
            .any(|c| c["vlan"] == 100 && c["chpid"] == "F0" && c["destination_port"] == 7000),
        "{before:?}"
    );

    // B moves to VLAN 200.
    fabric.rewrite(two_vlans(200));
    let out = fabric.iqd_ok("up");
    assert!(out.contains("connections cut:"), "{out}");
    assert_eq!(nic_status(&status(&fabric), "B", "hsi0")["vlan"], 200);
    assert_eq!(ifindex(&b), b_index, "B's NIC was recreated");
    assert_eq!(
        connections(&fabric),
        Vec::<serde_json::Value>::new(),
        "A's connection to B in VLAN 100 survived the move"
    );
    assert!(ping(&c, "10.7.0.2", 2, None), "C reaches B in VLAN 200");
    assert!(tcp_connects(&c, "10.7.0.2", 7000), "TCP from C to B");
    let not_member = fabric.drops("A", "hsi0", "not_member");
    assert!(!ping(&a, "10.7.0.2", 1, None), "A still reaches B");
    assert!(
        !tcp_connects(&a, "10.7.0.2", 7000),
        "TCP from A still reaches B"
    );
    assert!(fabric.drops("A", "hsi0", "not_member") > not_member);
}
