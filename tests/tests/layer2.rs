//! Layer-2 NICs on real namespaces: ordinary ARP and neighbour discovery between LPARs,
//! forwarding by MAC with any EtherType, floods to group MACs (and `rx_bcast`), security groups
//! on IP frames, anti-spoofing of the source MAC, and layer-2/layer-3 isolation on one CHPID.
//! Run on every data path (`IQD_TEST_DATAPATH`).
use iqd_tests::{
    fixture::{FabricFile, Group, Nic, Rule},
    in_netns, ping, send_raw_frame, tcp_connects, tcp_listener, text, RawReceiver, TestFabric,
};

/// An EtherType for local experiments (IEEE 802): no stack of the LPARs takes it.
const EXPERIMENTAL: u16 = 0x88b5;

/// CHPID F0: layer-2 NICs A 10.9.0.1, B .2, C .3 (no broadcasts); layer-3 NIC D .4. CHPID F1:
/// layer-2 NIC E .5.
fn lan() -> FabricFile {
    FabricFile::test()
        .chpid("F0")
        .chpid("F1")
        .lpar(
            "A",
            "{ns}a",
            [Nic::new("F0", ["10.9.0.1/24"])
                .ipv6(["fd09::1/64"])
                .layer2()],
        )
        .lpar(
            "B",
            "{ns}b",
            [Nic::new("F0", ["10.9.0.2/24"])
                .ipv6(["fd09::2/64"])
                .layer2()],
        )
        .lpar(
            "C",
            "{ns}c",
            [Nic::new("F0", ["10.9.0.3/24"]).layer2().no_broadcasts()],
        )
        .lpar("D", "{ns}d", [Nic::new("F0", ["10.9.0.4/24"])])
        .lpar("E", "{ns}e", [Nic::new("F1", ["10.9.0.5/24"]).layer2()])
}

fn status(fabric: &TestFabric) -> serde_json::Value {
    serde_json::from_str(&fabric.iqd_ok_args("status", &["--json"])).expect("status JSON")
}

/// The MAC of `lpar`'s hsi0, as `iqd status` shows it.
fn mac(fabric: &TestFabric, lpar: &str) -> [u8; 6] {
    let st = status(fabric);
    let text = st["lpars"]
        .as_array()
        .expect("lpars")
        .iter()
        .find(|l| l["lpar"] == lpar)
        .and_then(|l| l["nics"][0]["mac"].as_str())
        .unwrap_or_else(|| panic!("no NIC of {lpar}: {st}"))
        .to_string();
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(text.split(':')) {
        *byte = u8::from_str_radix(part, 16).expect("hex octet");
    }
    mac
}

/// A minimum-size frame of `ether_type` from `src` to `dst`, `tag` in its payload.
fn frame(dst: [u8; 6], src: [u8; 6], ether_type: u16, tag: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(b"iqd layer 2");
    f.push(tag);
    f.resize(60, 0);
    f
}

/// The tags of the frames `rx` received.
fn tags(rx: &RawReceiver) -> Vec<u8> {
    rx.frames().iter().map(|f| f[25]).collect()
}

#[test]
fn layer2_nics_resolve_their_neighbours_and_carry_ip() {
    let fabric = TestFabric::up(lan());
    let (a, b) = (fabric.ns("a"), fabric.ns("b"));
    // Not NOARP, unlike a layer-3 NIC.
    let link = text(&in_netns(&a, "ip", &["link", "show", "hsi0"]));
    assert!(!link.contains("NOARP"), "{link}");
    let link = text(&in_netns(&fabric.ns("d"), "ip", &["link", "show", "hsi0"]));
    assert!(link.contains("NOARP"), "layer-3 NIC: {link}");

    assert!(ping(&a, "10.9.0.2", 2, None), "IPv4 ping A -> B");
    assert!(ping(&a, "fd09::2", 2, None), "IPv6 ping A -> B");
    // A learnt B's MAC from B's own ARP reply: the fabric answers no ARP on layer 2.
    let b_mac = mac(&fabric, "B")
        .iter()
        .map(|o| format!("{o:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let neigh = text(&in_netns(&a, "ip", &["neigh", "show", "10.9.0.2"]));
    assert!(neigh.contains(&b_mac), "A's neighbour entry: {neigh}");
    let neigh = text(&in_netns(&a, "ip", &["-6", "neigh", "show", "fd09::2"]));
    assert!(neigh.contains(&b_mac), "A's IPv6 neighbour entry: {neigh}");

    let _listener = tcp_listener(&b, "10.9.0.2", 5400);
    assert!(tcp_connects(&a, "10.9.0.2", 5400), "TCP A -> B");
    let _listener6 = tcp_listener(&b, "fd09::2", 5401);
    assert!(tcp_connects(&a, "fd09::2", 5401), "TCP over IPv6 A -> B");

    // `status` shows the mode and the flood lists.
    let st = status(&fabric);
    let nic_a = &st["lpars"][0]["nics"][0];
    assert_eq!(nic_a["layer2"], true, "{nic_a}");
    assert_eq!(st["lpars"][3]["nics"][0]["layer2"], false);
    assert_eq!(st["lpars"][2]["nics"][0]["rx_bcast"], false);
    let list = |kind: &str, chpid: &str| -> Vec<String> {
        st["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .find(|g| g["kind"] == kind && g["chpid"] == chpid)
            .map(|g| {
                g["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(list("layer2-broadcast", "F0"), ["A/hsi0", "B/hsi0"]);
    assert_eq!(
        list("layer2-multicast", "F0"),
        ["A/hsi0", "B/hsi0", "C/hsi0"]
    );
    // The layer-3 broadcast lists hold only layer-3 NICs.
    let limited = st["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "255.255.255.255" && g["chpid"] == "F0")
        .cloned()
        .unwrap_or_default();
    assert_eq!(limited["members"], serde_json::json!(["D/hsi0"]), "{st}");
}

#[test]
fn any_ethertype_crosses_by_mac_and_group_macs_are_flooded() {
    let fabric = TestFabric::up(lan());
    let (a, b, c, d, e) = (
        fabric.ns("a"),
        fabric.ns("b"),
        fabric.ns("c"),
        fabric.ns("d"),
        fabric.ns("e"),
    );
    let (mac_a, mac_b) = (mac(&fabric, "A"), mac(&fabric, "B"));
    let rx = |ns: &str| RawReceiver::open(ns, "hsi0", EXPERIMENTAL);
    let (rb, rc, rd, re) = (rx(&b), rx(&c), rx(&d), rx(&e));

    // Unicast to B's MAC: B only.
    send_raw_frame(&a, "hsi0", &frame(mac_b, mac_a, EXPERIMENTAL, 1));
    assert_eq!(tags(&rb), [1], "B, unicast");
    assert_eq!(tags(&rc), Vec::<u8>::new(), "C, unicast to B");

    // Broadcast: every layer-2 NIC of the segment that takes broadcasts.
    send_raw_frame(&a, "hsi0", &frame([0xff; 6], mac_a, EXPERIMENTAL, 2));
    assert_eq!(tags(&rb), [2], "B, broadcast");
    assert_eq!(tags(&rc), Vec::<u8>::new(), "C has rx_bcast = false");
    assert_eq!(tags(&rd), Vec::<u8>::new(), "D is a layer-3 NIC");
    assert_eq!(tags(&re), Vec::<u8>::new(), "E is on another CHPID");

    // Multicast: every layer-2 NIC of the segment, rx_bcast or not.
    let group = [0x01, 0x00, 0x5e, 0x09, 0x00, 0x01];
    send_raw_frame(&a, "hsi0", &frame(group, mac_a, EXPERIMENTAL, 3));
    assert_eq!(tags(&rb), [3], "B, multicast");
    assert_eq!(tags(&rc), [3], "C, multicast");
    assert_eq!(tags(&rd), Vec::<u8>::new(), "D, multicast");
    assert_eq!(tags(&re), Vec::<u8>::new(), "E, multicast");

    // Counted like any frame: one sent by A, one received per receiver.
    let sent = fabric.nic_stats("A", "hsi0")["tx_packets"]
        .as_u64()
        .unwrap();
    assert!(sent >= 3, "A sent {sent}");

    // Unknown unicast: dropped, not flooded.
    let before = fabric.drops("A", "hsi0", "no_destination");
    send_raw_frame(
        &a,
        "hsi0",
        &frame([0x02, 0xaa, 0, 0, 0, 1], mac_a, EXPERIMENTAL, 4),
    );
    assert_eq!(tags(&rb), Vec::<u8>::new(), "unknown unicast reached B");
    assert_eq!(fabric.drops("A", "hsi0", "no_destination"), before + 1);

    // Another source MAC than A's own: spoofed.
    let before = fabric.drops("A", "hsi0", "spoofed_source");
    send_raw_frame(
        &a,
        "hsi0",
        &frame(mac_b, [0x02, 0xbb, 0, 0, 0, 1], EXPERIMENTAL, 5),
    );
    assert_eq!(tags(&rb), Vec::<u8>::new(), "spoofed frame reached B");
    assert_eq!(fabric.drops("A", "hsi0", "spoofed_source"), before + 1);
}

#[test]
fn allow_ip_spoofing_lets_a_layer2_nic_send_from_other_macs() {
    let file = FabricFile::test()
        .chpid("F0")
        .lpar(
            "A",
            "{ns}a",
            [Nic::new("F0", ["10.9.0.1/24"]).layer2().allow_ip_spoofing()],
        )
        .lpar("B", "{ns}b", [Nic::new::<&str>("F0", []).layer2()]);
    let fabric = TestFabric::up(file);
    let (a, b) = (fabric.ns("a"), fabric.ns("b"));
    let rb = RawReceiver::open(&b, "hsi0", EXPERIMENTAL);
    let mac_b = mac(&fabric, "B");
    send_raw_frame(
        &a,
        "hsi0",
        &frame(mac_b, [0x02, 0xbb, 0, 0, 0, 1], EXPERIMENTAL, 6),
    );
    assert_eq!(tags(&rb), [6], "B, from another MAC");
    assert_eq!(fabric.drops("A", "hsi0", "spoofed_source"), 0);
}

#[test]
fn layer2_and_layer3_nics_cannot_reach_each_other() {
    let fabric = TestFabric::up(lan());
    let (a, d) = (fabric.ns("a"), fabric.ns("d"));
    // D (layer 3) to A's address: the fabric answers no ARP for a layer-2 NIC.
    assert!(!ping(&d, "10.9.0.1", 1, None), "layer 3 -> layer 2");
    assert!(fabric.drops("D", "hsi0", "layer_mismatch") >= 1);
    // A (layer 2) to D's address: its ARP request reaches layer-2 NICs only.
    assert!(!ping(&a, "10.9.0.4", 1, None), "layer 2 -> layer 3");
    // A frame of A to D's MAC is counted.
    let (mac_a, mac_d) = (mac(&fabric, "A"), mac(&fabric, "D"));
    let rd = RawReceiver::open(&d, "hsi0", EXPERIMENTAL);
    let before = fabric.drops("A", "hsi0", "layer_mismatch");
    send_raw_frame(&a, "hsi0", &frame(mac_d, mac_a, EXPERIMENTAL, 7));
    assert_eq!(tags(&rd), Vec::<u8>::new(), "layer 2 frame reached D");
    assert_eq!(fabric.drops("A", "hsi0", "layer_mismatch"), before + 1);
}

#[test]
fn security_groups_apply_to_a_layer2_nics_ip_frames() {
    let file = FabricFile::test()
        .chpid("F0")
        .group(Group::new(
            "open",
            [Rule::inbound("all"), Rule::outbound("all")],
        ))
        .group(Group::new(
            "ssh",
            [Rule::inbound("tcp").port(22), Rule::outbound("all")],
        ))
        .lpar(
            "A",
            "{ns}a",
            [Nic::new("F0", ["10.9.0.1/24"]).layer2().groups(["open"])],
        )
        .lpar(
            "B",
            "{ns}b",
            [Nic::new("F0", ["10.9.0.2/24"]).layer2().groups(["ssh"])],
        );
    let fabric = TestFabric::up(file);
    let (a, b) = (fabric.ns("a"), fabric.ns("b"));
    let _ssh = tcp_listener(&b, "10.9.0.2", 22);
    let _web = tcp_listener(&b, "10.9.0.2", 80);
    // ARP is no IP frame: it crosses, and A resolves B.
    assert!(tcp_connects(&a, "10.9.0.2", 22), "allowed port");
    assert!(!tcp_connects(&a, "10.9.0.2", 80), "denied port");
    assert!(fabric.drops("B", "hsi0", "sg_denied_inbound") >= 1);
    // The allowed connection is tracked, as on layer 3.
    let ct = fabric.iqd_ok_args("conntrack", &["--json"]);
    assert!(ct.contains("10.9.0.2") && ct.contains("22"), "{ct}");
}
