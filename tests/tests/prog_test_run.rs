//! The port program (`iqd_port`) fed hand-built frames through BPF_PROG_TEST_RUN: every
//! verdict, the bytes it sends on (rewritten MACs, ARP replies) and the counters it keeps,
//! without any traffic.
//!
//! Each test loads the real eBPF object with its maps pinned under a fabric name of its own,
//! and describes ports that are veths in a namespace of its own (`iqd_tests::prog_test`). A
//! guard removes the pins and the namespace whatever happens.
use std::{
    io, mem,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    thread,
    time::Duration,
};

use iqd::{dataplane::Side, netns};
use iqd_common::{
    drop_reason, port_flags, route_flags, segment_of, sg_direction, sg_proto, Bucket, NicCounters,
    PortInfo, RouteKey, RouteTarget, SgKey, SgRanges, NO_VLAN, SG_KEY_FIXED_BITS,
};
use iqd_tests::{
    frames::{
        ethernet, internet_checksum, ipv4_header_checksum_ok, link_local, multicast_mac, padded,
        truncated, vlan_tagged, ArpFrame, ExtHeader, Ipv4Frame, Ipv6Frame, Mac, ALL_NODES,
        ARPOP_REQUEST, ARP_LEN, BROADCAST, ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP,
        ETH_P_LOCAL_EXP, ETH_ZLEN, IPPROTO_ICMPV6, IPPROTO_UDP, IPV4_HLEN, IPV6_HLEN,
        ND_NEIGHBOR_ADVERT, ND_REDIRECT, ND_ROUTER_ADVERT, ND_ROUTER_SOLICIT, TCP_HLEN,
    },
    prog_test::{
        ifindex, ip, Hook, ProgBench, Run, TC_ACT_STOLEN, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX,
    },
};

const F0: u16 = 0xf0;
const F1: u16 = 0xf1;
/// A VLAN of F0: a segment of its own.
const VLAN: u16 = 100;

const MAC_A: Mac = [0x02, 0x49, 0x51, 0x44, 0x00, 0x0a];
const MAC_B: Mac = [0x02, 0x49, 0x51, 0x44, 0x00, 0x0b];
const MAC_C: Mac = [0x02, 0x49, 0x51, 0x44, 0x00, 0x0c];
const MAC_D: Mac = [0x02, 0x49, 0x51, 0x44, 0x00, 0x0d];
const MAC_V: Mac = [0x02, 0x49, 0x51, 0x44, 0x01, 0x0a];
const MAC_W: Mac = [0x02, 0x49, 0x51, 0x44, 0x01, 0x0b];
/// Nobody's MAC: what a stale neighbour cache might hold.
const MAC_STRANGER: Mac = [0x02, 0x99, 0x99, 0x99, 0x99, 0x99];

const IP_A: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 1);
const IP_B: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 2);
const IP_B2: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 22);
const IP_C: Ipv4Addr = Ipv4Addr::new(10, 7, 1, 3);
const IP_D: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 4);
/// Registered by B on F0 and by C on F1.
const IP_SHARED: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
/// Registered by nobody.
const IP_UNKNOWN: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 99);
/// Registered by W in VLAN 100 of F0 only.
const IP_W: Ipv4Addr = Ipv4Addr::new(10, 7, 0, 5);

const V6_A: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xf0, 0, 0, 0, 0, 0, 0xa);
const V6_B: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xf0, 0, 0, 0, 0, 0, 0xb);
const V6_B2: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xf0, 0, 0, 0, 0, 0, 0xb2);
const V6_C: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xf1, 0, 0, 0, 0, 0, 0xc);
const V6_D: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xf0, 0, 0, 0, 0, 0, 0xd);
/// Registered by B on F0 and by C on F1.
const V6_SHARED: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 1);
/// Registered by nobody.
const V6_UNKNOWN: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xf0, 0, 0, 0, 0, 0, 0x99);

/// A fabric-side port: one end of a veth pair in the bench's namespace, standing for a NIC.
struct PortSpec {
    name: &'static str,
    chpid: u16,
    /// Its VLAN in the CHPID (`NO_VLAN`: untagged).
    vlan: u16,
    mtu: u32,
    mac: Mac,
    addrs: &'static [Ipv4Addr],
    /// IPv6 addresses; the port's link-local address (from its MAC) is registered too.
    addrs6: &'static [Ipv6Addr],
    /// Described in IQD_PORTS and the DEVMAP; an undescribed port is one iqd never set up.
    registered: bool,
}

/// A, B (two addresses) and D on F0; C on F1; B and C share one address; V (holding A's
/// address) and W in VLAN 100 of F0; U is a device the maps do not know. D has a CHPID MTU
/// large enough for multi-buffer frames.
const PORTS: &[PortSpec] = &[
    PortSpec {
        name: "a",
        chpid: F0,
        vlan: NO_VLAN,
        mtu: 1500,
        mac: MAC_A,
        addrs: &[IP_A],
        addrs6: &[V6_A],
        registered: true,
    },
    PortSpec {
        name: "b",
        chpid: F0,
        vlan: NO_VLAN,
        mtu: 1500,
        mac: MAC_B,
        addrs: &[IP_B, IP_B2, IP_SHARED],
        addrs6: &[V6_B, V6_B2, V6_SHARED],
        registered: true,
    },
    PortSpec {
        name: "c",
        chpid: F1,
        vlan: NO_VLAN,
        mtu: 1500,
        mac: MAC_C,
        addrs: &[IP_C, IP_SHARED],
        addrs6: &[V6_C, V6_SHARED],
        registered: true,
    },
    PortSpec {
        name: "d",
        chpid: F0,
        vlan: NO_VLAN,
        mtu: 8192,
        mac: MAC_D,
        addrs: &[IP_D],
        addrs6: &[V6_D],
        registered: true,
    },
    PortSpec {
        name: "v",
        chpid: F0,
        vlan: VLAN,
        mtu: 1500,
        mac: MAC_V,
        addrs: &[IP_A],
        addrs6: &[],
        registered: true,
    },
    PortSpec {
        name: "w",
        chpid: F0,
        vlan: VLAN,
        mtu: 1500,
        mac: MAC_W,
        addrs: &[IP_W],
        addrs6: &[],
        registered: true,
    },
    PortSpec {
        name: "u",
        chpid: F0,
        vlan: NO_VLAN,
        mtu: 1500,
        mac: [0x02, 0x49, 0x51, 0x44, 0x00, 0x0e],
        addrs: &[],
        addrs6: &[],
        registered: false,
    },
];

struct Port {
    spec: &'static PortSpec,
    ifindex: u32,
}

/// The program and its maps with the ports of [`PORTS`] described.
struct Bench {
    prog: ProgBench,
    ports: Vec<Port>,
}

/// An AF_PACKET socket that sees every frame arriving on one interface of the calling
/// thread's namespace.
struct PacketSocket {
    fd: OwnedFd,
    name: String,
}

impl PacketSocket {
    fn open(name: &str) -> Self {
        let protocol = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol)) };
        assert!(fd >= 0, "packet socket: {}", io::Error::last_os_error());
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
        let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = ifindex(name) as i32;
        // SAFETY: `addr` is a valid sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "bind to {name}: {}", io::Error::last_os_error());
        let timeout = libc::timeval {
            tv_sec: 3,
            tv_usec: 0,
        };
        // SAFETY: a valid timeval of the size given.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_RCVTIMEO: {}", io::Error::last_os_error());
        Self {
            fd,
            name: name.to_string(),
        }
    }

    fn recv(&self, flags: i32) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 65536];
        // SAFETY: `buf` is writable for its whole length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            assert!(
                matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ),
                "recv on {}: {err}",
                self.name
            );
            return None;
        }
        buf.truncate(n as usize);
        Some(buf)
    }

    /// The next frame that arrives (waiting up to the timeout).
    fn expect_frame(&self, what: &str) -> Vec<u8> {
        self.recv(0)
            .unwrap_or_else(|| panic!("{what}: nothing arrived on {}", self.name))
    }

    /// Asserts that no frame is waiting.
    fn expect_nothing(&self, what: &str) {
        if let Some(frame) = self.recv(libc::MSG_DONTWAIT) {
            panic!("{what}: unexpected frame on {}: {frame:02x?}", self.name);
        }
    }
}

fn reason_name(reason: u32) -> &'static str {
    drop_reason::NAMES[reason as usize]
}

impl Bench {
    fn new() -> Self {
        Self::with_hook(Hook::Xdp)
    }

    fn with_hook(hook: Hook) -> Self {
        let veths: Vec<(&str, Mac)> = PORTS.iter().map(|s| (s.name, s.mac)).collect();
        let mut prog = ProgBench::with_hook(&veths, hook);
        let ports: Vec<Port> = PORTS
            .iter()
            .map(|spec| Port {
                spec,
                ifindex: ifindex(spec.name),
            })
            .collect();
        let maps = &mut prog.maps;
        let mut routes = Vec::new();
        for port in ports.iter().filter(|p| p.spec.registered) {
            let spec = port.spec;
            let info = PortInfo {
                chpid: spec.chpid,
                vlan: spec.vlan,
                mtu: spec.mtu,
                mac: spec.mac,
                flags: 0,
                _pad: 0,
            };
            maps.add_port(port.ifindex, info).expect("add port");
            let addrs6 = spec.addrs6.iter().copied().chain([link_local(spec.mac)]);
            for addr in spec
                .addrs
                .iter()
                .map(|a| iqd_common::ipv4_mapped(a.octets()))
                .chain(addrs6.map(|a| a.octets()))
            {
                routes.push((
                    RouteKey {
                        segment: segment_of(&info),
                        addr,
                    },
                    RouteTarget::new(port.ifindex, spec.mac),
                ));
            }
        }
        maps.sync_routes(&routes).expect("sync routes");
        // Security groups are tested on their own (tests/tests/secgroups.rs): here every
        // registered port allows everything both ways.
        let mut rules = Vec::new();
        for port in ports.iter().filter(|p| p.spec.registered) {
            for direction in [sg_direction::INBOUND, sg_direction::OUTBOUND] {
                for class in [
                    sg_proto::TCP,
                    sg_proto::UDP,
                    sg_proto::ICMP,
                    sg_proto::ICMPV6,
                    sg_proto::OTHER,
                ] {
                    let mut everything = SgRanges {
                        count: 1,
                        ..Default::default()
                    };
                    everything.ranges[0] = 0x0000_ffff;
                    rules.push((
                        (
                            SG_KEY_FIXED_BITS,
                            SgKey::new(port.ifindex, direction, class, [0; 16]),
                        ),
                        everything,
                    ));
                }
            }
        }
        maps.sync_rules(&rules).expect("sync rules");
        Self { prog, ports }
    }

    fn port(&self, name: &str) -> &Port {
        self.ports
            .iter()
            .find(|p| p.spec.name == name)
            .unwrap_or_else(|| panic!("no port {name}"))
    }

    fn ifindex(&self, name: &str) -> u32 {
        self.port(name).ifindex
    }

    /// Runs the port program once on `frame` as if it arrived on port `port`.
    fn try_run(&mut self, port: &str, frame: &[u8]) -> io::Result<Run> {
        let ingress = self.ifindex(port);
        self.prog.try_run(ingress, frame)
    }

    /// Runs the port program once on `frame` from `port` in live-frames mode: the kernel
    /// carries out the verdict (XDP_REDIRECT through the DEVMAP, XDP_TX back out of `port`),
    /// so the frame really reaches the NIC side of a veth. The kernel does not report the
    /// verdict in this mode (the non-live runs check it).
    fn run_live(&mut self, port: &str, frame: &[u8]) {
        let ingress = self.ifindex(port);
        self.prog.run_live(ingress, frame);
    }

    /// Readies the NIC side of every port for frames from the fabric, as `iqd up` does: IPv6
    /// off (no chatter), the pass-through program on the NIC (a veth only takes redirected
    /// frames when its peer has NAPI), both ends up.
    fn bring_up(&mut self) {
        netns::write_sysctl("net/ipv6/conf/all/disable_ipv6", "1").expect("IPv6 off");
        netns::write_sysctl("net/ipv6/conf/default/disable_ipv6", "1").expect("IPv6 off");
        let netns_name = self.prog.netns().to_string();
        for spec in PORTS {
            let nic = format!("{}n", spec.name);
            let nic_index = ifindex(&nic);
            self.prog
                .plane
                .attach(Side::Nic, spec.name, &nic, nic_index)
                .expect("attach the NIC program");
            for link in [spec.name, nic.as_str()] {
                ip(&["-n", &netns_name, "link", "set", "dev", link, "up"]);
            }
        }
    }

    fn run(&mut self, port: &str, frame: &[u8]) -> Run {
        self.try_run(port, frame)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN failed: {e}"))
    }

    fn counters(&self, port: &str) -> NicCounters {
        self.prog.counters(self.ifindex(port))
    }

    fn all_counters(&self) -> Vec<(&'static str, NicCounters)> {
        self.ports
            .iter()
            .map(|p| (p.spec.name, self.counters(p.spec.name)))
            .collect()
    }

    /// Asserts that every port's counters moved from `before` exactly as `change` says.
    fn assert_counters(
        &self,
        before: &[(&'static str, NicCounters)],
        what: &str,
        change: impl Fn(&str, &mut NicCounters),
    ) {
        for (name, counters) in before {
            let mut expected = *counters;
            change(name, &mut expected);
            assert_eq!(
                self.counters(name),
                expected,
                "{what}: counters of port {name}"
            );
        }
    }

    /// `frame` from `from` is dropped and counted under `reason` on `from`, nothing else.
    fn expect_drop(&mut self, from: &str, frame: &[u8], reason: u32, what: &str) {
        let before = self.all_counters();
        let run = self.run(from, frame);
        assert_eq!(
            run.action,
            XDP_DROP,
            "{what}: expected a drop ({})",
            reason_name(reason)
        );
        self.assert_counters(&before, what, |name, c| {
            if name == from {
                c.tx_packets += 1;
                c.tx_bytes += frame.len() as u64;
                c.drops[reason as usize] += 1;
            }
        });
    }

    /// `frame` from `from` is redirected to `to`'s port, unchanged but for the destination MAC
    /// (`to`'s NIC), and counted as sent by `from` and delivered to `to`.
    fn expect_forward(&mut self, from: &str, frame: &[u8], to: &str, what: &str) {
        let before = self.all_counters();
        let run = self.run(from, frame);
        assert_eq!(run.action, XDP_REDIRECT, "{what}: expected a redirect");
        let mut expected = frame.to_vec();
        expected[..6].copy_from_slice(&self.port(to).spec.mac);
        assert_eq!(run.frame.len(), frame.len(), "{what}: length changed");
        assert!(
            run.frame == expected,
            "{what}: forwarded frame differs from the input with the destination MAC \
             rewritten:\n got {:02x?}\nwant {:02x?}",
            &run.frame[..run.frame.len().min(64)],
            &expected[..expected.len().min(64)]
        );
        let len = frame.len() as u64;
        self.assert_counters(&before, what, |name, c| {
            if name == from {
                c.tx_packets += 1;
                c.tx_bytes += len;
            }
            if name == to {
                c.rx_packets += 1;
                c.rx_bytes += len;
            }
        });
    }

    /// `request` from `from` is answered with exactly `reply` (XDP_TX back to `from`), counted
    /// as sent and delivered on `from`.
    fn expect_arp_reply(&mut self, from: &str, request: &[u8], reply: &[u8], what: &str) {
        let before = self.all_counters();
        let run = self.run(from, request);
        assert_eq!(run.action, XDP_TX, "{what}: expected XDP_TX");
        assert!(
            run.frame == reply,
            "{what}: ARP reply differs:\n got {:02x?}\nwant {:02x?}",
            run.frame,
            reply
        );
        let len = request.len() as u64;
        self.assert_counters(&before, what, |name, c| {
            if name == from {
                c.tx_packets += 1;
                c.tx_bytes += len;
                c.rx_packets += 1;
                c.rx_bytes += len;
            }
        });
    }
}

fn tcp(src_mac: Mac, dst_mac: Mac, src: Ipv4Addr, dst: Ipv4Addr) -> Ipv4Frame {
    Ipv4Frame::tcp(src_mac, dst_mac, src, dst)
}

// ---------------------------------------------------------------------------------------------
// Forwarding

#[test]
fn tcp_to_same_chpid_is_redirected_with_destination_mac_rewritten() {
    let mut bench = Bench::new();
    // The sender's neighbour cache says nothing useful: the fabric delivers by address.
    let frame = tcp(MAC_A, MAC_STRANGER, IP_A, IP_B).build();
    let before = bench.all_counters();
    let run = bench.run("a", &frame);
    assert_eq!(run.action, XDP_REDIRECT);
    assert_eq!(&run.frame[..6], &MAC_B, "destination MAC is B's NIC");
    assert_eq!(
        &run.frame[6..12],
        &MAC_A,
        "source MAC stays the sender's own"
    );
    assert_eq!(
        &run.frame[12..],
        &frame[12..],
        "nothing after the MACs changes"
    );
    assert!(ipv4_header_checksum_ok(&run.frame));
    let a = bench.counters("a");
    let b = bench.counters("b");
    assert_eq!((a.tx_packets, a.tx_bytes), (1, frame.len() as u64));
    assert_eq!((a.rx_packets, a.rx_bytes), (0, 0));
    assert_eq!((b.rx_packets, b.rx_bytes), (1, frame.len() as u64));
    assert_eq!((b.tx_packets, b.tx_bytes), (0, 0));
    assert_eq!(a.drops, [0; drop_reason::COUNT]);
    assert_eq!(b.drops, [0; drop_reason::COUNT]);
    bench.assert_counters(&before, "after one TCP frame", |name, c| match name {
        "a" => {
            c.tx_packets += 1;
            c.tx_bytes += frame.len() as u64;
        }
        "b" => {
            c.rx_packets += 1;
            c.rx_bytes += frame.len() as u64;
        }
        _ => {}
    });

    // And the other way, to the address A has, with the right MAC already in place.
    let frame = tcp(MAC_B, MAC_A, IP_B, IP_A).build();
    bench.expect_forward("b", &frame, "a", "TCP from B to A");
}

#[test]
fn forwarding_variants() {
    let mut bench = Bench::new();
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "ICMP echo",
            "a",
            Ipv4Frame::icmp_echo(MAC_A, MAC_B, IP_A, IP_B, b"0123456789abcdef").build(),
            "b",
        ),
        (
            "to B's second address",
            "a",
            tcp(MAC_A, BROADCAST, IP_A, IP_B2).build(),
            "b",
        ),
        (
            "address on two CHPIDs goes to the sender's CHPID",
            "a",
            tcp(MAC_A, MAC_C, IP_A, IP_SHARED).build(),
            "b",
        ),
        (
            "Ethernet padding after the IPv4 packet",
            "a",
            tcp(MAC_A, MAC_B, IP_A, IP_B)
                .with_padding_to(ETH_ZLEN)
                .build(),
            "b",
        ),
        (
            "IPv4 options (IHL 6)",
            "a",
            tcp(MAC_A, MAC_B, IP_A, IP_B).with_ihl(6).build(),
            "b",
        ),
        (
            "IPv4 header only, no payload",
            "a",
            Ipv4Frame::raw(MAC_A, MAC_B, IP_A, IP_B, 253, &[]).build(),
            "b",
        ),
        (
            "exactly the CHPID's MTU plus the Ethernet header",
            "a",
            tcp(MAC_A, MAC_B, IP_A, IP_B)
                .with_frame_len(1500 + 14)
                .build(),
            "b",
        ),
        (
            "to a port with a larger MTU",
            "a",
            tcp(MAC_A, MAC_D, IP_A, IP_D).with_frame_len(1514).build(),
            "d",
        ),
        (
            "multi-buffer frame within D's MTU",
            "d",
            tcp(MAC_D, MAC_A, IP_D, IP_A).with_frame_len(8000).build(),
            "a",
        ),
        (
            "multi-buffer frame of exactly D's MTU",
            "d",
            tcp(MAC_D, MAC_B, IP_D, IP_B)
                .with_frame_len(8192 + 14)
                .build(),
            "b",
        ),
    ];
    for (what, from, frame, to) in cases {
        bench.expect_forward(from, &frame, to, what);
    }
}

#[test]
fn redirect_to_a_port_missing_from_the_devmap_fails() {
    let mut bench = Bench::new();
    let b = bench.ifindex("b");
    bench
        .prog
        .maps
        .devmap
        .remove(b)
        .expect("remove B from the DEVMAP");
    let frame = tcp(MAC_A, MAC_B, IP_A, IP_B).build();
    bench.expect_drop(
        "a",
        &frame,
        drop_reason::REDIRECT_FAILED,
        "B not in the DEVMAP",
    );
}

#[test]
fn frames_to_a_stopped_lpar_are_dropped_as_lpar_stopped_on_every_hook() {
    on_every_hook(|bench, hook| {
        // B's LPAR stops: its routes move from IQD_ROUTES to IQD_STOPPED.
        let b = bench.ifindex("b");
        let routes: Vec<(RouteKey, RouteTarget)> = bench
            .prog
            .maps
            .routes
            .iter()
            .filter_map(|e| e.ok())
            .collect();
        let (stopped, live): (Vec<_>, Vec<_>) =
            routes.into_iter().partition(|(_, t)| t.ifindex == b);
        bench
            .prog
            .maps
            .sync_all_routes(&live, &stopped)
            .expect("stop B");
        let frame = tcp(MAC_A, MAC_B, IP_A, IP_B).build();
        bench.expect_drop(
            "a",
            &frame,
            drop_reason::LPAR_STOPPED,
            &format!("{hook:?}: TCP to stopped B"),
        );
        // Started again: delivered.
        let all: Vec<_> = live.iter().chain(&stopped).copied().collect();
        bench.prog.maps.sync_all_routes(&all, &[]).expect("start B");
        bench.expect_forward("a", &frame, "b", &format!("{hook:?}: TCP to started B"));
    });
}

#[test]
fn frames_of_an_lpar_with_a_bandwidth_are_metered_and_shaped_on_every_hook() {
    on_every_hook(|bench, hook| {
        let (a, b) = (bench.ifindex("a"), bench.ifindex("b"));
        // A's LPAR (slot 0) sends at 1000 bytes/s with a 1 ms queue: one frame of 60 bytes
        // would queue 60 ms.
        let mut info = bench.prog.maps.ports.get(&a, 0).expect("A's port");
        info.flags |= port_flags::BANDWIDTH;
        bench.prog.maps.ports.insert(a, info, 0).expect("flag A");
        let slow = Bucket {
            rate: 1000,
            burst_ns: 1_000_000,
            shaper: b,
            ..Default::default()
        };
        bench
            .prog
            .maps
            .sync_bandwidth(&[(a, 0)], &[(0, slow.rate, slow.burst_ns, slow.shaper)])
            .expect("A's bandwidth");
        let frame = tcp(MAC_A, MAC_B, IP_A, IP_B).build();
        bench.expect_drop(
            "a",
            &frame,
            drop_reason::BANDWIDTH_EXCEEDED,
            &format!("{hook:?}: above A's bandwidth"),
        );
        let meter = bench.prog.maps.bucket(0).expect("A's meter");
        assert_eq!(
            (meter.dropped_packets, meter.dropped_bytes),
            (1, frame.len() as u64)
        );
        // At 1 GB/s it passes, into A's shaper: XDP passes it up to the port's tc ingress with
        // its target in the metadata; tc redirects it to the shaper (B's port stands in).
        bench
            .prog
            .maps
            .sync_bandwidth(&[(a, 0)], &[(0, 1_000_000_000, 10_000_000, b)])
            .expect("A's bandwidth");
        let run = bench.run("a", &frame);
        let expected = match hook {
            Hook::Tc => XDP_REDIRECT,
            Hook::Xdp | Hook::Xsk => XDP_PASS,
        };
        assert_eq!(run.action, expected, "{hook:?}: admitted frame");
        if hook != Hook::Tc {
            // The receiving side's flag alone sends it through the shapers too.
            info.flags &= !port_flags::BANDWIDTH;
            bench.prog.maps.ports.insert(a, info, 0).expect("unflag A");
            let b_info = bench.prog.maps.ports.get(&b, 0).expect("B's port");
            let key = RouteKey {
                segment: segment_of(&b_info),
                addr: iqd_common::ipv4_mapped(IP_B.octets()),
            };
            let target = RouteTarget::new(b, MAC_B).with_flags(route_flags::BANDWIDTH);
            bench
                .prog
                .maps
                .routes
                .insert(key, target, 0)
                .expect("flag B");
            bench
                .prog
                .maps
                .sync_bandwidth(&[(b, 0)], &[(1, 1_000_000_000, 10_000_000, a)])
                .expect("B's bandwidth");
            assert_eq!(bench.run("a", &frame).action, XDP_PASS, "{hook:?}: to B");
        }
    });
}

#[test]
fn frames_from_an_undescribed_port_are_dropped_uncounted() {
    let mut bench = Bench::new();
    let before = bench.all_counters();
    for frame in [
        tcp(MAC_A, MAC_B, IP_A, IP_B).build(),
        ArpFrame::request(MAC_A, IP_A, IP_B).build(),
    ] {
        assert_eq!(bench.run("u", &frame).action, XDP_DROP);
    }
    bench.assert_counters(&before, "frames from port U", |_, _| {});
    assert_eq!(bench.counters("u"), NicCounters::default());
}

// ---------------------------------------------------------------------------------------------
// Drops, one reason at a time

#[test]
fn malformed_frames_are_dropped() {
    let mut bench = Bench::new();
    let good = tcp(MAC_A, MAC_B, IP_A, IP_B).build();

    // The kernel itself refuses test runs of less than an Ethernet header, so the program's
    // check of the Ethernet header cannot be reached this way (nor from a veth).
    let before = bench.all_counters();
    let err = bench
        .try_run("a", &truncated(&good, ETH_HLEN - 1))
        .expect_err("a 13-byte frame");
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    bench.assert_counters(&before, "13-byte frame", |_, _| {});

    let mut cut_in_tcp = tcp(MAC_A, MAC_B, IP_A, IP_B).build();
    cut_in_tcp.truncate(ETH_HLEN + IPV4_HLEN + TCP_HLEN - 1);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("Ethernet header only", truncated(&good, ETH_HLEN)),
        (
            "IPv4 header cut short",
            truncated(&good, ETH_HLEN + IPV4_HLEN - 1),
        ),
        ("IHL 4", tcp(MAC_A, MAC_B, IP_A, IP_B).with_ihl(4).build()),
        ("IHL 0", tcp(MAC_A, MAC_B, IP_A, IP_B).with_ihl(0).build()),
        (
            "IHL 15 but total length 40",
            tcp(MAC_A, MAC_B, IP_A, IP_B)
                .with_ihl(15)
                .with_total_len(40)
                .build(),
        ),
        (
            "version 6 under the IPv4 ethertype",
            tcp(MAC_A, MAC_B, IP_A, IP_B).with_version(6).build(),
        ),
        (
            "total length below the header length",
            tcp(MAC_A, MAC_B, IP_A, IP_B).with_total_len(19).build(),
        ),
        (
            "total length beyond the frame",
            tcp(MAC_A, MAC_B, IP_A, IP_B).with_total_len(41).build(),
        ),
        ("frame cut inside the TCP header", cut_in_tcp),
        (
            "total length ends inside the TCP header (the rest is in the padding)",
            tcp(MAC_A, MAC_B, IP_A, IP_B)
                .with_total_len((IPV4_HLEN + TCP_HLEN - 1) as u16)
                .build(),
        ),
        (
            "malformed and spoofed: malformed wins",
            tcp(MAC_STRANGER, MAC_B, IP_UNKNOWN, IP_B)
                .with_ihl(4)
                .build(),
        ),
        (
            "ARP header cut short",
            truncated(
                &ArpFrame::request(MAC_A, IP_A, IP_B).build(),
                ETH_HLEN + ARP_LEN - 1,
            ),
        ),
        ("ARP with hlen 8", {
            let mut arp = ArpFrame::request(MAC_A, IP_A, IP_B);
            arp.hlen = 8;
            arp.build()
        }),
        ("ARP with plen 16", {
            let mut arp = ArpFrame::request(MAC_A, IP_A, IP_B);
            arp.plen = 16;
            arp.build()
        }),
        ("ARP for IPv6 (ptype 0x86dd)", {
            let mut arp = ArpFrame::request(MAC_A, IP_A, IP_B);
            arp.ptype = 0x86dd;
            arp.build()
        }),
        ("ARP with htype 6 (IEEE 802)", {
            let mut arp = ArpFrame::request(MAC_A, IP_A, IP_B);
            arp.htype = 6;
            arp.build()
        }),
    ];
    for (what, frame) in cases {
        bench.expect_drop("a", &frame, drop_reason::MALFORMED, what);
    }
}

#[test]
fn non_ip_frames_are_dropped() {
    let mut bench = Bench::new();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "local experimental ethertype 0x88b5",
            ethernet(MAC_B, MAC_A, ETH_P_LOCAL_EXP, b"iqd test payload"),
        ),
        (
            "802.3 length field with LLC",
            ethernet(MAC_B, MAC_A, 0x0026, &[0x42; 46]),
        ),
        (
            "unknown ethertype from a spoofed MAC: the ethertype is checked first",
            ethernet(BROADCAST, MAC_STRANGER, ETH_P_LOCAL_EXP, &[]),
        ),
        (
            "bare Ethernet header of an unknown type",
            ethernet(MAC_B, MAC_A, 0x9000, &[]),
        ),
    ];
    for (what, frame) in cases {
        bench.expect_drop("a", &frame, drop_reason::NON_IP, what);
    }
}

/// Frames an LPAR tags itself, inline as XDP sees them (and as BPF_PROG_TEST_RUN hands them to
/// tc: only a live frame has its tag moved into the skb's metadata, tests/tests/vlan.rs).
fn tagged_frames() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let ipv4 = tcp(MAC_A, MAC_B, IP_A, IP_B).build();
    let q = |frame: &[u8], vid: u16| vlan_tagged(frame, ETH_P_8021Q, vid);
    let ad = |frame: &[u8], vid: u16| vlan_tagged(frame, ETH_P_8021AD, vid);
    vec![
        (
            "a",
            "802.1Q-tagged IPv4 to a NIC of the segment",
            q(&ipv4, 100),
        ),
        ("a", "802.1Q priority tag (VLAN 0)", q(&ipv4, 0x6000)),
        ("a", "802.1ad-tagged IPv4", ad(&ipv4, 100)),
        (
            "a",
            "double-tagged IPv4 (802.1ad outer, 802.1Q inner)",
            ad(&q(&ipv4, 100), 200),
        ),
        ("a", "double 802.1Q tags", q(&q(&ipv4, 100), 100)),
        (
            "a",
            "tagged ARP request",
            q(&ArpFrame::request(MAC_A, IP_A, IP_B).build(), 100),
        ),
        (
            "a",
            "tagged IPv6",
            q(&tcp6(MAC_A, MAC_B, V6_A, V6_B).build(), 100),
        ),
        (
            "v",
            "a NIC in VLAN 100 tagging with its own VLAN",
            q(&tcp(MAC_V, MAC_W, IP_A, IP_W).build(), 100),
        ),
        (
            "a",
            "tagged with the VLAN of another segment's NIC, to its address",
            q(&tcp(MAC_A, MAC_W, IP_A, IP_W).build(), 100),
        ),
        (
            "a",
            "tagged and above the CHPID's MTU: the tag is checked first",
            q(&padded(&ipv4, 1500 + ETH_HLEN + 1), 100),
        ),
        (
            "a",
            "a bare tag header",
            truncated(&q(&ipv4, 100), ETH_HLEN + 4),
        ),
    ]
}

#[test]
fn vlan_tagged_frames_are_dropped_on_every_hook() {
    on_every_hook(|bench, hook| {
        for (from, what, frame) in tagged_frames() {
            bench.expect_drop(
                from,
                &frame,
                drop_reason::VLAN_TAGGED,
                &format!("{hook:?}: {what}"),
            );
        }
    });
}

#[test]
fn vlans_of_a_chpid_are_segments_of_their_own() {
    on_every_hook(|bench, hook| {
        let what = |s: &str| format!("{hook:?}: {s}");
        // Within VLAN 100: V and W reach each other; V holds A's address there.
        bench.expect_forward(
            "v",
            &tcp(MAC_V, MAC_W, IP_A, IP_W).build(),
            "w",
            &what("TCP from V to W within VLAN 100"),
        );
        bench.expect_forward(
            "w",
            &Ipv4Frame::icmp_echo(MAC_W, MAC_V, IP_W, IP_A, b"x").build(),
            "v",
            &what("ping from W to 10.7.0.1: V, the holder in VLAN 100, not A"),
        );
        bench.expect_forward(
            "b",
            &tcp(MAC_B, MAC_A, IP_B, IP_A).build(),
            "a",
            &what("10.7.0.1 in the untagged segment is A's"),
        );
        // Across segments of F0: registered elsewhere, not a member.
        bench.expect_drop(
            "a",
            &tcp(MAC_A, MAC_W, IP_A, IP_W).build(),
            drop_reason::NOT_MEMBER,
            &what("untagged A to W in VLAN 100"),
        );
        bench.expect_drop(
            "v",
            &tcp(MAC_V, MAC_B, IP_A, IP_B).build(),
            drop_reason::NOT_MEMBER,
            &what("V in VLAN 100 to B, untagged"),
        );
        bench.expect_drop(
            "w",
            &tcp(MAC_W, MAC_C, IP_W, IP_C).build(),
            drop_reason::NOT_MEMBER,
            &what("W in VLAN 100 of F0 to C on F1"),
        );
        // An address is the sender's own only in its own segment.
        bench.expect_drop(
            "w",
            &tcp(MAC_W, MAC_V, IP_B, IP_A).build(),
            drop_reason::SPOOFED_SOURCE,
            &what("W sending from B's address (untagged segment)"),
        );
        // ARP is answered within the segment only.
        bench.expect_arp_reply(
            "v",
            &ArpFrame::request(MAC_V, IP_A, IP_W).build(),
            &ArpFrame::reply(MAC_W, IP_W, MAC_V, IP_A).build(),
            &what("ARP for W from V"),
        );
        bench.expect_drop(
            "a",
            &ArpFrame::request(MAC_A, IP_A, IP_W).build(),
            drop_reason::NOT_MEMBER,
            &what("ARP for W from untagged A"),
        );
    });
}

#[test]
fn spoofed_sources_are_dropped() {
    let mut bench = Bench::new();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "source MAC of another NIC",
            tcp(MAC_B, MAC_B, IP_A, IP_B).build(),
        ),
        (
            "source MAC of nobody",
            tcp(MAC_STRANGER, MAC_B, IP_A, IP_B).build(),
        ),
        (
            "source IP registered by nobody",
            tcp(MAC_A, MAC_B, IP_UNKNOWN, IP_B).build(),
        ),
        (
            "source IP of another NIC on the CHPID",
            tcp(MAC_A, MAC_B, IP_B2, IP_B).build(),
        ),
        (
            "source IP of a NIC on another CHPID",
            tcp(MAC_A, MAC_B, IP_C, IP_B).build(),
        ),
        (
            "source IP 0.0.0.0",
            tcp(MAC_A, MAC_B, Ipv4Addr::UNSPECIFIED, IP_B).build(),
        ),
        (
            "spoofed source to an unknown destination: the source is checked first",
            tcp(MAC_A, MAC_B, IP_UNKNOWN, IP_UNKNOWN).build(),
        ),
        ("ARP from a foreign Ethernet source", {
            let mut arp = ArpFrame::request(MAC_A, IP_A, IP_B);
            arp.eth_src = MAC_STRANGER;
            arp.build()
        }),
        ("ARP with a foreign sender MAC", {
            let mut arp = ArpFrame::request(MAC_A, IP_A, IP_B);
            arp.sha = MAC_B;
            arp.build()
        }),
        (
            "ARP with another NIC's sender IP",
            ArpFrame::request(MAC_A, IP_B, IP_B2).build(),
        ),
        (
            "ARP with an unregistered sender IP",
            ArpFrame::request(MAC_A, IP_UNKNOWN, IP_B).build(),
        ),
    ];
    for (what, frame) in cases {
        bench.expect_drop("a", &frame, drop_reason::SPOOFED_SOURCE, what);
    }
}

#[test]
fn destinations_on_another_chpid_only_are_not_members() {
    let mut bench = Bench::new();
    bench.expect_drop(
        "a",
        &tcp(MAC_A, MAC_C, IP_A, IP_C).build(),
        drop_reason::NOT_MEMBER,
        "TCP from F0 to C on F1",
    );
    bench.expect_drop(
        "c",
        &tcp(MAC_C, MAC_A, IP_C, IP_A).build(),
        drop_reason::NOT_MEMBER,
        "TCP from F1 to A on F0",
    );
    bench.expect_drop(
        "a",
        &Ipv4Frame::icmp_echo(MAC_A, MAC_D, IP_A, IP_C, b"x").build(),
        drop_reason::NOT_MEMBER,
        "ICMP from F0 to C on F1",
    );
}

#[test]
fn unknown_destinations_are_dropped() {
    let mut bench = Bench::new();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "unregistered address",
            tcp(MAC_A, MAC_B, IP_A, IP_UNKNOWN).build(),
        ),
        (
            "the sender's own address",
            tcp(MAC_A, MAC_B, IP_A, IP_A).build(),
        ),
        (
            "subnet broadcast without a member list (iqd up writes them)",
            Ipv4Frame::icmp_echo(MAC_A, BROADCAST, IP_A, Ipv4Addr::new(10, 7, 0, 255), b"").build(),
        ),
    ];
    for (what, frame) in cases {
        bench.expect_drop("a", &frame, drop_reason::NO_DESTINATION, what);
    }
    // One-to-many frames with nobody to receive them: counted where they are fanned out (tc;
    // the XDP programs pass them up).
    let mut tc = Bench::with_hook(Hook::Tc);
    for (what, frame) in [
        (
            "limited broadcast without a member list",
            Ipv4Frame::icmp_echo(MAC_A, BROADCAST, IP_A, Ipv4Addr::BROADCAST, b"").build(),
        ),
        (
            "group without members",
            Ipv4Frame::icmp_echo(
                MAC_A,
                [0x01, 0x00, 0x5e, 0, 0, 0x16],
                IP_A,
                Ipv4Addr::new(239, 0, 0, 22),
                b"",
            )
            .build(),
        ),
    ] {
        tc.expect_drop("a", &frame, drop_reason::NO_DESTINATION, what);
    }
}

#[test]
fn frames_above_the_chpid_mtu_are_dropped() {
    let mut bench = Bench::new();
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "one byte above MTU + 14",
            "a",
            tcp(MAC_A, MAC_B, IP_A, IP_B).with_frame_len(1515).build(),
        ),
        (
            "1600-byte TCP frame on a 1500 MTU",
            "a",
            tcp(MAC_A, MAC_B, IP_A, IP_B).with_frame_len(1600).build(),
        ),
        (
            "the sender's MTU counts, not the receiver's",
            "a",
            tcp(MAC_A, MAC_D, IP_A, IP_D).with_frame_len(1600).build(),
        ),
        (
            "Ethernet padding counts",
            "a",
            tcp(MAC_A, MAC_B, IP_A, IP_B).with_padding_to(1515).build(),
        ),
        (
            "size is checked before the ethertype",
            "a",
            padded(&ethernet(BROADCAST, MAC_A, ETH_P_LOCAL_EXP, &[]), 1600),
        ),
        (
            "size is checked before ARP",
            "a",
            ArpFrame::request(MAC_A, IP_A, IP_B)
                .with_padding_to(1600)
                .build(),
        ),
        (
            "size is checked before the source",
            "a",
            tcp(MAC_STRANGER, MAC_B, IP_UNKNOWN, IP_B)
                .with_frame_len(1600)
                .build(),
        ),
        (
            "multi-buffer frame one byte above D's MTU + 14",
            "d",
            tcp(MAC_D, MAC_B, IP_D, IP_B)
                .with_frame_len(8192 + 15)
                .build(),
        ),
        (
            "multi-buffer 9000-byte frame on D",
            "d",
            tcp(MAC_D, MAC_A, IP_D, IP_A).with_frame_len(9000).build(),
        ),
    ];
    for (what, from, frame) in cases {
        bench.expect_drop(from, &frame, drop_reason::MFS_EXCEEDED, what);
    }
}

#[test]
fn tc_gso_packets_are_checked_and_counted_per_segment() {
    // The tc path sees a TCP stream as GSO packets of up to 64K; the CHPID's frame size holds
    // for each segment on the wire. A's MTU is 1500: 20 bytes of IPv4 and 20 of TCP leave
    // 1460 bytes of payload per segment.
    let mut bench = Bench::with_hook(Hook::Tc);
    let packet = tcp(MAC_A, MAC_B, IP_A, IP_B).with_frame_len(3000).build();
    let a = bench.ifindex("a");
    for (gso_size, segments, fits) in [(1460, 3, true), (1000, 3, true), (1461, 3, false)] {
        let before = bench.all_counters();
        let run = bench
            .prog
            .try_run_tc(a, &packet, gso_size, segments)
            .expect("test run");
        let (segs, bytes) = (segments as u64, packet.len() as u64);
        if fits {
            assert_eq!(run.action, XDP_REDIRECT, "segments of {gso_size} bytes fit");
            bench.assert_counters(&before, "GSO packet delivered", |name, c| match name {
                "a" => {
                    c.tx_packets += segs;
                    c.tx_bytes += bytes;
                }
                "b" => {
                    c.rx_packets += segs;
                    c.rx_bytes += bytes;
                }
                _ => {}
            });
        } else {
            assert_eq!(
                run.action, XDP_DROP,
                "segments of {gso_size} bytes exceed the MTU"
            );
            bench.assert_counters(&before, "GSO packet too big", |name, c| {
                if name == "a" {
                    c.tx_packets += segs;
                    c.tx_bytes += bytes;
                    c.drops[drop_reason::MFS_EXCEEDED as usize] += 1;
                }
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ARP

#[test]
fn arp_requests_for_the_chpid_are_answered_by_the_fabric() {
    let mut bench = Bench::new();

    let request = ArpFrame::request(MAC_A, IP_A, IP_B).build();
    // Built field by field, independently of the frame builders.
    let mut expected = Vec::new();
    expected.extend_from_slice(&MAC_A); // to the asker
    expected.extend_from_slice(&MAC_B); // from the target NIC
    expected.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    expected.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4]);
    expected.extend_from_slice(&[0x00, 0x02]); // reply
    expected.extend_from_slice(&MAC_B);
    expected.extend_from_slice(&IP_B.octets());
    expected.extend_from_slice(&MAC_A);
    expected.extend_from_slice(&IP_A.octets());
    assert_eq!(
        expected,
        ArpFrame::reply(MAC_B, IP_B, MAC_A, IP_A).build(),
        "the test's two ways to build the reply agree"
    );
    bench.expect_arp_reply("a", &request, &expected, "A asks for B");

    let cases: Vec<(&str, &str, Vec<u8>, Vec<u8>)> = vec![
        (
            "padded request: padding kept",
            "a",
            ArpFrame::request(MAC_A, IP_A, IP_B)
                .with_padding_to(ETH_ZLEN)
                .build(),
            ArpFrame::reply(MAC_B, IP_B, MAC_A, IP_A)
                .with_padding_to(ETH_ZLEN)
                .build(),
        ),
        (
            "B's second address",
            "a",
            ArpFrame::request(MAC_A, IP_A, IP_B2).build(),
            ArpFrame::reply(MAC_B, IP_B2, MAC_A, IP_A).build(),
        ),
        (
            "address on two CHPIDs: the NIC on the asker's CHPID answers",
            "a",
            ArpFrame::request(MAC_A, IP_A, IP_SHARED).build(),
            ArpFrame::reply(MAC_B, IP_SHARED, MAC_A, IP_A).build(),
        ),
        (
            "unicast re-validation request",
            "b",
            {
                let mut arp = ArpFrame::request(MAC_B, IP_B, IP_A);
                arp.eth_dst = MAC_A;
                arp.build()
            },
            ArpFrame::reply(MAC_A, IP_A, MAC_B, IP_B).build(),
        ),
        (
            "request with a stale target MAC",
            "d",
            {
                let mut arp = ArpFrame::request(MAC_D, IP_D, IP_A);
                arp.tha = MAC_STRANGER;
                arp.build()
            },
            ArpFrame::reply(MAC_A, IP_A, MAC_D, IP_D).build(),
        ),
        (
            "address probe (sender IP 0.0.0.0)",
            "a",
            ArpFrame::request(MAC_A, Ipv4Addr::UNSPECIFIED, IP_B).build(),
            ArpFrame::reply(MAC_B, IP_B, MAC_A, Ipv4Addr::UNSPECIFIED).build(),
        ),
    ];
    for (what, from, request, reply) in cases {
        bench.expect_arp_reply(from, &request, &reply, what);
    }
}

#[test]
fn arp_requests_without_an_answer_are_dropped() {
    let mut bench = Bench::new();
    let cases: Vec<(&str, &str, Vec<u8>, u32)> = vec![
        (
            "address on another CHPID",
            "a",
            ArpFrame::request(MAC_A, IP_A, IP_C).build(),
            drop_reason::NOT_MEMBER,
        ),
        (
            "address on F0 asked from F1",
            "c",
            ArpFrame::request(MAC_C, IP_C, IP_B).build(),
            drop_reason::NOT_MEMBER,
        ),
        (
            "address the asker registered itself on its CHPID",
            "c",
            ArpFrame::request(MAC_C, IP_C, IP_SHARED).build(),
            drop_reason::NO_DESTINATION,
        ),
        (
            "unknown address",
            "a",
            ArpFrame::request(MAC_A, IP_A, IP_UNKNOWN).build(),
            drop_reason::NO_DESTINATION,
        ),
        (
            "gratuitous ARP for the asker's own address",
            "a",
            ArpFrame::request(MAC_A, IP_A, IP_A).build(),
            drop_reason::NO_DESTINATION,
        ),
        (
            "probe for the asker's own address",
            "a",
            ArpFrame::request(MAC_A, Ipv4Addr::UNSPECIFIED, IP_A).build(),
            drop_reason::NO_DESTINATION,
        ),
        (
            "ARP reply",
            "a",
            ArpFrame::reply(MAC_A, IP_A, MAC_B, IP_B).build(),
            drop_reason::ARP_IGNORED,
        ),
        (
            "ARP reply with a spoofed sender: replies are ignored before any check",
            "a",
            ArpFrame::reply(MAC_STRANGER, IP_B, MAC_B, IP_B).build(),
            drop_reason::ARP_IGNORED,
        ),
        (
            "RARP request (operation 3) under the ARP ethertype",
            "a",
            {
                let mut arp = ArpFrame::request(MAC_A, IP_A, IP_B);
                arp.oper = 3;
                arp.build()
            },
            drop_reason::ARP_IGNORED,
        ),
    ];
    for (what, from, request, reason) in cases {
        // Only what is not a request can be ignored (a self-check of the cases).
        assert_eq!(
            u16::from_be_bytes([request[20], request[21]]) != ARPOP_REQUEST,
            reason == drop_reason::ARP_IGNORED,
            "{what}"
        );
        bench.expect_drop(from, &request, reason, what);
    }
}

// ---------------------------------------------------------------------------------------------
// Live frames: the verdicts carried out

#[test]
fn live_frames_reach_the_right_nic() {
    let mut bench = Bench::new();
    bench.bring_up();
    let nic = |name: &str| PacketSocket::open(&format!("{name}n"));
    let (nic_a, nic_b, nic_c, nic_d) = (nic("a"), nic("b"), nic("c"), nic("d"));
    let all = [&nic_a, &nic_b, &nic_c, &nic_d];
    let quiet = |what: &str| {
        // Frames from one run are all delivered together; give stragglers a moment.
        thread::sleep(Duration::from_millis(100));
        for socket in all {
            socket.expect_nothing(what);
        }
    };

    let frame = tcp(MAC_A, MAC_STRANGER, IP_A, IP_B).build();
    bench.run_live("a", &frame);
    let mut expected = frame.clone();
    expected[..6].copy_from_slice(&MAC_B);
    assert_eq!(nic_b.expect_frame("TCP from A to B"), expected);
    quiet("after TCP from A to B");

    let frame = Ipv4Frame::icmp_echo(MAC_A, MAC_B, IP_A, IP_D, b"to D").build();
    bench.run_live("a", &frame);
    let mut expected = frame.clone();
    expected[..6].copy_from_slice(&MAC_D);
    assert_eq!(nic_d.expect_frame("ICMP from A to D"), expected);
    quiet("after ICMP from A to D");

    let request = ArpFrame::request(MAC_A, IP_A, IP_B).build();
    bench.run_live("a", &request);
    assert_eq!(
        nic_a.expect_frame("ARP reply to A"),
        ArpFrame::reply(MAC_B, IP_B, MAC_A, IP_A).build()
    );
    quiet("after ARP request from A");

    // Dropped frames go nowhere.
    for (what, frame) in [
        ("not member", tcp(MAC_A, MAC_C, IP_A, IP_C).build()),
        ("spoofed", tcp(MAC_A, MAC_B, IP_B2, IP_B).build()),
        (
            "ARP for another CHPID",
            ArpFrame::request(MAC_A, IP_A, IP_C).build(),
        ),
    ] {
        bench.run_live("a", &frame);
        quiet(what);
    }

    let a = bench.counters("a");
    assert_eq!((a.tx_packets, a.rx_packets), (6, 1));
    assert_eq!(bench.counters("b").rx_packets, 1);
    assert_eq!(bench.counters("d").rx_packets, 1);
}

#[test]
fn live_ipv6_frames_reach_the_right_nic() {
    let mut bench = Bench::new();
    bench.bring_up();
    let nic = |name: &str| PacketSocket::open(&format!("{name}n"));
    let (nic_a, nic_b, nic_c, nic_d) = (nic("a"), nic("b"), nic("c"), nic("d"));
    let all = [&nic_a, &nic_b, &nic_c, &nic_d];
    let quiet = |what: &str| {
        thread::sleep(Duration::from_millis(100));
        for socket in all {
            socket.expect_nothing(what);
        }
    };

    let frame = tcp6(MAC_A, MAC_STRANGER, V6_A, V6_B).build();
    bench.run_live("a", &frame);
    let mut expected = frame.clone();
    expected[..6].copy_from_slice(&MAC_B);
    assert_eq!(nic_b.expect_frame("IPv6 TCP from A to B"), expected);
    quiet("after IPv6 TCP from A to B");

    // Answered in place; from `::` the advertisement is longer than the solicitation.
    for (what, request, reply) in [
        (
            "advertisement to A",
            Ipv6Frame::neighbor_solicitation(MAC_A, V6_A, V6_D).build(),
            Ipv6Frame::neighbor_advertisement(MAC_D, V6_D, MAC_A, V6_A).build(),
        ),
        (
            "advertisement to all nodes (duplicate address detection)",
            Ipv6Frame::neighbor_solicitation(MAC_A, Ipv6Addr::UNSPECIFIED, V6_B).build(),
            Ipv6Frame::neighbor_advertisement(MAC_B, V6_B, MAC_A, Ipv6Addr::UNSPECIFIED).build(),
        ),
    ] {
        bench.run_live("a", &request);
        assert_eq!(nic_a.expect_frame(what), reply, "{what}");
        quiet(what);
    }

    for (what, frame) in [
        ("not member", tcp6(MAC_A, MAC_C, V6_A, V6_C).build()),
        (
            "router solicitation",
            nd6(ND_ROUTER_SOLICIT, MAC_A, link_local(MAC_A)),
        ),
    ] {
        bench.run_live("a", &frame);
        quiet(what);
    }
    let a = bench.counters("a");
    assert_eq!((a.tx_packets, a.rx_packets), (5, 2));
    assert_eq!(bench.counters("b").rx_packets, 1);
}

// ---------------------------------------------------------------------------------------------
// AF_XDP (data path `afxdp`)

#[test]
fn xsk_hands_frames_to_the_switch_with_the_destination_in_metadata() {
    use iqd::switch::xsk::{RingSizes, Socket, Umem};
    use iqd_common::{XSK_MAX_QUEUES, XSK_META_LEN};

    let mut bench = Bench::with_hook(Hook::Xsk);
    let (a, b) = (bench.ifindex("a"), bench.ifindex("b"));
    let frame = tcp(MAC_A, MAC_STRANGER, IP_A, IP_B).build();
    let stats = |bench: &Bench| bench.prog.maps.xsk_stats().expect("xsk stats");

    // No switch: delivered in the kernel, exactly as `iqd_port` does, and counted as fallback.
    bench.expect_forward("a", &frame, "b", "no switch socket");
    assert_eq!((stats(&bench).to_switch, stats(&bench).fallback), (0, 1));

    // Sockets on A and B sharing one UMEM, registered as the switch registers them.
    let umem = Umem::new(64, 4096).expect("UMEM");
    let sizes = RingSizes {
        fill: 32,
        completion: 32,
        rx: 32,
        tx: 32,
    };
    let socket_a = Socket::bind(&umem, None, a, 0, sizes).expect("socket on A");
    let socket_b = Socket::bind(&umem, Some(&socket_a), b, 0, sizes).expect("socket on B");
    let maps = &mut bench.prog.maps;
    maps.set_xsk_slot(a, 0).expect("slot of A");
    maps.set_xsk_slot(b, 1).expect("slot of B");
    maps.set_xsk(0, socket_a.fd()).expect("register A");
    maps.set_xsk(XSK_MAX_QUEUES, socket_b.fd())
        .expect("register B");

    let before = bench.all_counters();
    let run = bench.run("a", &frame);
    assert_eq!(run.action, XDP_REDIRECT, "to the switch");
    // The test run returns the frame from its metadata on: B's port, then the frame as the
    // in-kernel path would send it.
    let meta = XSK_META_LEN as usize;
    assert_eq!(
        &run.frame[..meta],
        &b.to_ne_bytes(),
        "destination in metadata"
    );
    let mut expected = frame.clone();
    expected[..6].copy_from_slice(&MAC_B);
    assert_eq!(
        &run.frame[meta..],
        &expected[..],
        "frame after the metadata"
    );
    // Sent is counted here; delivered is the switch's to count, once it has sent it.
    bench.assert_counters(&before, "handed to the switch", |name, c| {
        if name == "a" {
            c.tx_packets += 1;
            c.tx_bytes += frame.len() as u64;
        }
    });
    assert_eq!((stats(&bench).to_switch, stats(&bench).fallback), (1, 1));

    // A destination the switch does not serve (no socket on D): the kernel delivers.
    let to_d = tcp(MAC_A, MAC_D, IP_A, IP_D).build();
    bench.expect_forward("a", &to_d, "d", "destination without a socket");
    assert_eq!((stats(&bench).to_switch, stats(&bench).fallback), (1, 2));

    // Drops and ARP replies stay in the kernel, without metadata.
    bench.expect_drop(
        "a",
        &tcp(MAC_A, MAC_B, IP_B2, IP_B).build(),
        drop_reason::SPOOFED_SOURCE,
        "spoofed, with a switch",
    );
    let request = ArpFrame::request(MAC_A, IP_A, IP_B).build();
    let reply = ArpFrame::reply(MAC_B, IP_B, MAC_A, IP_A).build();
    bench.expect_arp_reply("a", &request, &reply, "ARP with a switch");
    assert_eq!((stats(&bench).to_switch, stats(&bench).fallback), (1, 2));

    // A closed socket leaves the XSKMAP: the kernel path takes over at once.
    drop(socket_b);
    bench.expect_forward("a", &frame, "b", "after the switch closed B's socket");
    assert_eq!((stats(&bench).to_switch, stats(&bench).fallback), (1, 3));
    drop(socket_a);
}

// ---------------------------------------------------------------------------------------------
// IPv6: every data path (the tc and AF_XDP programs' verdicts reported as XDP's, see
// `ProgBench::try_run`; `iqd_xsk` without a switch socket delivers in the kernel)

fn tcp6(src_mac: Mac, dst_mac: Mac, src: Ipv6Addr, dst: Ipv6Addr) -> Ipv6Frame {
    Ipv6Frame::tcp(src_mac, dst_mac, src, dst)
}

fn echo6(src_mac: Mac, dst_mac: Mac, src: Ipv6Addr, dst: Ipv6Addr) -> Ipv6Frame {
    Ipv6Frame::echo_request(src_mac, dst_mac, src, dst, b"0123456789abcdef")
}

fn udp6(src_mac: Mac, dst_mac: Mac, src: Ipv6Addr, dst: Ipv6Addr) -> Ipv6Frame {
    let l4 = iqd_tests::frames::L4::Udp {
        src_port: 5353,
        dst_port: 5353,
        data: b"udp".to_vec(),
    };
    Ipv6Frame::new(src_mac, dst_mac, src, dst, l4)
}

/// ND messages other than solicitations, from A.
fn nd6(icmp_type: u8, src_mac: Mac, src: Ipv6Addr) -> Vec<u8> {
    Ipv6Frame::icmpv6(
        src_mac,
        multicast_mac(ALL_NODES),
        src,
        ALL_NODES,
        icmp_type,
        [0; 4],
        &[0; 16],
    )
    .with_hop_limit(255)
    .build()
}

/// Runs `case` once per data path with a fresh bench.
fn on_every_hook(mut case: impl FnMut(&mut Bench, Hook)) {
    for hook in Hook::ALL {
        let mut bench = Bench::with_hook(hook);
        case(&mut bench, hook);
    }
}

#[test]
fn ipv6_is_forwarded_by_address_with_the_destination_mac_rewritten() {
    on_every_hook(|bench, hook| {
        let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
            (
                "TCP, a stale neighbour entry",
                "a",
                tcp6(MAC_A, MAC_STRANGER, V6_A, V6_B).build(),
                "b",
            ),
            (
                "ICMPv6 echo request",
                "a",
                echo6(MAC_A, MAC_B, V6_A, V6_B).build(),
                "b",
            ),
            ("UDP", "a", udp6(MAC_A, MAC_B, V6_A, V6_B2).build(), "b"),
            (
                "link-local to link-local",
                "a",
                tcp6(MAC_A, MAC_B, link_local(MAC_A), link_local(MAC_B)).build(),
                "b",
            ),
            (
                "address on two CHPIDs goes to the sender's CHPID",
                "a",
                tcp6(MAC_A, MAC_C, V6_A, V6_SHARED).build(),
                "b",
            ),
            (
                "hop-by-hop, routing and destination options",
                "a",
                tcp6(MAC_A, MAC_B, V6_A, V6_B)
                    .with_ext(ExtHeader::HopByHop { len: 0 })
                    .with_ext(ExtHeader::Routing { len: 2 })
                    .with_ext(ExtHeader::DestOpts { len: 1 })
                    .build(),
                "b",
            ),
            (
                "six extension headers, the most there may be",
                "a",
                (0..6)
                    .fold(echo6(MAC_A, MAC_B, V6_A, V6_B), |f, _| {
                        f.with_ext(ExtHeader::DestOpts { len: 0 })
                    })
                    .build(),
                "b",
            ),
            (
                "first fragment",
                "a",
                tcp6(MAC_A, MAC_B, V6_A, V6_B)
                    .with_ext(ExtHeader::Fragment {
                        offset: 0,
                        more: true,
                    })
                    .build(),
                "b",
            ),
            (
                "later fragment: no transport header",
                "a",
                Ipv6Frame::raw(MAC_A, MAC_B, V6_A, V6_B, IPPROTO_UDP, &[0xee; 3])
                    .with_ext(ExtHeader::Fragment {
                        offset: 185,
                        more: false,
                    })
                    .build(),
                "b",
            ),
            (
                "no next header",
                "a",
                Ipv6Frame::raw(MAC_A, MAC_B, V6_A, V6_B, 59, &[]).build(),
                "b",
            ),
            (
                "Ethernet padding after the packet",
                "a",
                Ipv6Frame::raw(MAC_A, MAC_B, V6_A, V6_B, 59, &[])
                    .with_padding_to(ETH_ZLEN)
                    .build(),
                "b",
            ),
            (
                "exactly the CHPID's MTU plus the Ethernet header",
                "a",
                tcp6(MAC_A, MAC_B, V6_A, V6_B).with_frame_len(1514).build(),
                "b",
            ),
            (
                "to a port with a larger MTU",
                "a",
                tcp6(MAC_A, MAC_D, V6_A, V6_D).build(),
                "d",
            ),
        ];
        for (what, from, frame, to) in cases {
            bench.expect_forward(from, &frame, to, &format!("{hook:?}: {what}"));
        }
    });
}

#[test]
fn malformed_ipv6_is_dropped() {
    on_every_hook(|bench, hook| {
        let good = tcp6(MAC_A, MAC_B, V6_A, V6_B).build();
        let too_many = (0..7).fold(echo6(MAC_A, MAC_B, V6_A, V6_B), |f, _| {
            f.with_ext(ExtHeader::DestOpts { len: 0 })
        });
        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "version 4 under the IPv6 ethertype",
                tcp6(MAC_A, MAC_B, V6_A, V6_B).with_version(4).build(),
            ),
            (
                "payload length beyond the frame",
                tcp6(MAC_A, MAC_B, V6_A, V6_B)
                    .with_payload_len(TCP_HLEN as u16 + 1)
                    .build(),
            ),
            ("seven extension headers", too_many.build()),
            (
                "hop-by-hop header cut by the payload length",
                tcp6(MAC_A, MAC_B, V6_A, V6_B)
                    .with_ext(ExtHeader::HopByHop { len: 1 })
                    .with_payload_len(12)
                    .build(),
            ),
            (
                "payload length ends inside the TCP header (the rest is padding)",
                tcp6(MAC_A, MAC_B, V6_A, V6_B)
                    .with_payload_len(TCP_HLEN as u16 - 1)
                    .build(),
            ),
            (
                "frame cut inside the ICMPv6 header",
                truncated(
                    &Ipv6Frame::echo_request(MAC_A, MAC_B, V6_A, V6_B, b"").build(),
                    ETH_HLEN + IPV6_HLEN + 7,
                ),
            ),
            (
                "neighbour solicitation shorter than its target",
                Ipv6Frame::icmpv6(MAC_A, MAC_B, V6_A, V6_B, 135, [0; 4], &[0; 8]).build(),
            ),
            (
                "malformed and spoofed: malformed wins",
                tcp6(MAC_STRANGER, MAC_B, V6_UNKNOWN, V6_B)
                    .with_version(5)
                    .build(),
            ),
        ];
        // The tc test run refuses frames shorter than the IPv6 header it reads itself.
        if hook != Hook::Tc {
            cases.push((
                "IPv6 header cut short",
                truncated(&good, ETH_HLEN + IPV6_HLEN - 1),
            ));
        }
        // The truncated frames fix their payload length to what they hold.
        let cases = cases.into_iter().map(|(what, mut frame)| {
            if what.starts_with("frame cut") {
                let len = (frame.len() - ETH_HLEN - IPV6_HLEN) as u16;
                frame[18..20].copy_from_slice(&len.to_be_bytes());
            }
            (what, frame)
        });
        for (what, frame) in cases {
            bench.expect_drop(
                "a",
                &frame,
                drop_reason::MALFORMED,
                &format!("{hook:?}: {what}"),
            );
        }
    });
}

#[test]
fn spoofed_ipv6_sources_are_dropped() {
    on_every_hook(|bench, hook| {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "source MAC of another NIC",
                tcp6(MAC_B, MAC_B, V6_A, V6_B).build(),
            ),
            (
                "source IP registered by nobody",
                tcp6(MAC_A, MAC_B, V6_UNKNOWN, V6_B).build(),
            ),
            (
                "source IP of another NIC",
                tcp6(MAC_A, MAC_B, V6_B2, V6_B).build(),
            ),
            (
                "source IP on another CHPID",
                tcp6(MAC_A, MAC_B, V6_C, V6_B).build(),
            ),
            (
                "another NIC's link-local source",
                tcp6(MAC_A, MAC_B, link_local(MAC_D), V6_B).build(),
            ),
            (
                "the IPv4-mapped form of A's IPv4 address",
                tcp6(MAC_A, MAC_B, IP_A.to_ipv6_mapped(), V6_B).build(),
            ),
            (
                "solicitation from the IPv4-mapped form of A's IPv4 address",
                Ipv6Frame::neighbor_solicitation(MAC_A, IP_A.to_ipv6_mapped(), V6_B).build(),
            ),
            (
                "source ::",
                tcp6(MAC_A, MAC_B, Ipv6Addr::UNSPECIFIED, V6_B).build(),
            ),
            ("solicitation from a foreign Ethernet source", {
                let mut ns = Ipv6Frame::neighbor_solicitation(MAC_A, V6_A, V6_B);
                ns.src_mac = MAC_STRANGER;
                ns.build()
            }),
            (
                "solicitation from another NIC's address",
                Ipv6Frame::neighbor_solicitation(MAC_A, V6_B2, V6_B).build(),
            ),
        ];
        for (what, frame) in cases {
            bench.expect_drop(
                "a",
                &frame,
                drop_reason::SPOOFED_SOURCE,
                &format!("{hook:?}: {what}"),
            );
        }
        // To a group, the source is checked where the frame is fanned out: by tc (the XDP
        // programs pass one-to-many frames up to it).
        let to_group = udp6(MAC_A, multicast_mac(ALL_NODES), V6_UNKNOWN, ALL_NODES).build();
        if hook == Hook::Tc {
            bench.expect_drop(
                "a",
                &to_group,
                drop_reason::SPOOFED_SOURCE,
                "spoofed source to a group",
            );
        } else {
            let run = bench.run("a", &to_group);
            assert_eq!(run.action, iqd_tests::prog_test::XDP_PASS, "{hook:?}");
        }
    });
}

#[test]
fn ipv6_to_another_chpid_only_is_not_member_and_unknown_is_no_destination() {
    on_every_hook(|bench, hook| {
        let cases: Vec<(&str, &str, Vec<u8>, u32)> = vec![
            (
                "TCP from F0 to C on F1",
                "a",
                tcp6(MAC_A, MAC_C, V6_A, V6_C).build(),
                drop_reason::NOT_MEMBER,
            ),
            (
                "echo from F1 to A on F0",
                "c",
                echo6(MAC_C, MAC_A, V6_C, V6_A).build(),
                drop_reason::NOT_MEMBER,
            ),
            (
                "solicitation for an address on another CHPID",
                "a",
                Ipv6Frame::neighbor_solicitation(MAC_A, V6_A, V6_C).build(),
                drop_reason::NOT_MEMBER,
            ),
            (
                "unregistered address",
                "a",
                tcp6(MAC_A, MAC_B, V6_A, V6_UNKNOWN).build(),
                drop_reason::NO_DESTINATION,
            ),
            (
                "the sender's own address",
                "a",
                tcp6(MAC_A, MAC_B, V6_A, V6_A).build(),
                drop_reason::NO_DESTINATION,
            ),
            (
                "to the IPv4-mapped form of B's IPv4 address",
                "a",
                tcp6(MAC_A, MAC_B, V6_A, IP_B.to_ipv6_mapped()).build(),
                drop_reason::NO_DESTINATION,
            ),
            (
                "solicitation for the IPv4-mapped form of B's IPv4 address",
                "a",
                Ipv6Frame::neighbor_solicitation(MAC_A, V6_A, IP_B.to_ipv6_mapped()).build(),
                drop_reason::NO_DESTINATION,
            ),
            (
                "solicitation for an unregistered address",
                "a",
                Ipv6Frame::neighbor_solicitation(MAC_A, V6_A, V6_UNKNOWN).build(),
                drop_reason::NO_DESTINATION,
            ),
            (
                "solicitation for the asker's own address",
                "a",
                Ipv6Frame::neighbor_solicitation(MAC_A, V6_A, V6_A).build(),
                drop_reason::NO_DESTINATION,
            ),
            (
                "duplicate address detection of the asker's own address",
                "a",
                Ipv6Frame::neighbor_solicitation(MAC_A, Ipv6Addr::UNSPECIFIED, V6_A).build(),
                drop_reason::NO_DESTINATION,
            ),
        ];
        for (what, from, frame, reason) in cases {
            bench.expect_drop(from, &frame, reason, &format!("{hook:?}: {what}"));
        }
    });
}

#[test]
fn ipv6_above_the_chpid_mtu_is_dropped() {
    on_every_hook(|bench, hook| {
        for (what, frame) in [
            (
                "one byte above MTU + 14",
                tcp6(MAC_A, MAC_B, V6_A, V6_B).with_frame_len(1515).build(),
            ),
            (
                "Ethernet padding counts",
                tcp6(MAC_A, MAC_B, V6_A, V6_B).with_padding_to(1515).build(),
            ),
            (
                "a solicitation too",
                Ipv6Frame::neighbor_solicitation(MAC_A, V6_A, V6_B)
                    .with_padding_to(1515)
                    .build(),
            ),
        ] {
            bench.expect_drop(
                "a",
                &frame,
                drop_reason::MFS_EXCEEDED,
                &format!("{hook:?}: {what}"),
            );
        }
    });
}

#[test]
fn tc_ipv6_gso_packets_are_checked_per_segment() {
    // 40 bytes of IPv6 and 20 of TCP leave 1440 bytes of payload per 1500-byte segment; an
    // extension header takes its share.
    let mut bench = Bench::with_hook(Hook::Tc);
    let a = bench.ifindex("a");
    let plain = tcp6(MAC_A, MAC_B, V6_A, V6_B).with_frame_len(3000).build();
    let with_ext = tcp6(MAC_A, MAC_B, V6_A, V6_B)
        .with_ext(ExtHeader::DestOpts { len: 0 })
        .with_frame_len(3000)
        .build();
    for (packet, gso_size, fits) in [
        (&plain, 1440, true),
        (&plain, 1441, false),
        (&with_ext, 1432, true),
        (&with_ext, 1433, false),
    ] {
        let before = bench.all_counters();
        let run = bench
            .prog
            .try_run_tc(a, packet, gso_size, 3)
            .expect("test run");
        let bytes = packet.len() as u64;
        if fits {
            assert_eq!(run.action, XDP_REDIRECT, "segments of {gso_size} bytes fit");
            bench.assert_counters(&before, "GSO packet delivered", |name, c| match name {
                "a" => {
                    c.tx_packets += 3;
                    c.tx_bytes += bytes;
                }
                "b" => {
                    c.rx_packets += 3;
                    c.rx_bytes += bytes;
                }
                _ => {}
            });
        } else {
            assert_eq!(run.action, XDP_DROP, "segments of {gso_size} bytes exceed");
            bench.assert_counters(&before, "GSO packet too big", |name, c| {
                if name == "a" {
                    c.tx_packets += 3;
                    c.tx_bytes += bytes;
                    c.drops[drop_reason::MFS_EXCEEDED as usize] += 1;
                }
            });
        }
    }
}

#[test]
fn neighbour_discovery_other_than_solicitations_is_ignored() {
    on_every_hook(|bench, hook| {
        let ll_a = link_local(MAC_A);
        for (what, frame) in [
            ("router solicitation", nd6(ND_ROUTER_SOLICIT, MAC_A, ll_a)),
            ("router advertisement", nd6(ND_ROUTER_ADVERT, MAC_A, ll_a)),
            (
                "neighbour advertisement",
                nd6(ND_NEIGHBOR_ADVERT, MAC_A, ll_a),
            ),
            ("redirect", nd6(ND_REDIRECT, MAC_A, ll_a)),
            (
                "advertisement from a spoofed source: ignored before any check",
                nd6(ND_NEIGHBOR_ADVERT, MAC_STRANGER, V6_B),
            ),
            (
                "unsolicited advertisement to another NIC",
                Ipv6Frame::neighbor_advertisement(MAC_A, V6_A, MAC_B, V6_B).build(),
            ),
        ] {
            bench.expect_drop(
                "a",
                &frame,
                drop_reason::ND_IGNORED,
                &format!("{hook:?}: {what}"),
            );
        }
    });
}

/// Checks the ICMPv6 checksum of the IPv6 packet in `frame` from scratch (RFC 8200 pseudo
/// header: source, destination, upper-layer length, next header; no extension headers).
fn icmpv6_checksum_is_valid(frame: &[u8]) -> bool {
    let ip = &frame[ETH_HLEN..];
    let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let mut sum = Vec::new();
    sum.extend_from_slice(&ip[8..40]);
    sum.extend_from_slice(&(payload_len as u32).to_be_bytes());
    sum.extend_from_slice(&[0, 0, 0, ip[6]]);
    sum.extend_from_slice(&ip[40..40 + payload_len]);
    ip[6] == IPPROTO_ICMPV6 && internet_checksum(&sum) == 0
}

#[test]
fn neighbour_solicitations_are_answered_with_an_advertisement() {
    on_every_hook(|bench, hook| {
        let ll_a = link_local(MAC_A);
        let ll_b = link_local(MAC_B);
        let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
            (
                "for B's address",
                Ipv6Frame::neighbor_solicitation(MAC_A, V6_A, V6_B).build(),
                Ipv6Frame::neighbor_advertisement(MAC_B, V6_B, MAC_A, V6_A).build(),
            ),
            (
                "for B's second address",
                Ipv6Frame::neighbor_solicitation(MAC_A, V6_A, V6_B2).build(),
                Ipv6Frame::neighbor_advertisement(MAC_B, V6_B2, MAC_A, V6_A).build(),
            ),
            (
                "link-local for link-local",
                Ipv6Frame::neighbor_solicitation(MAC_A, ll_a, ll_b).build(),
                Ipv6Frame::neighbor_advertisement(MAC_B, ll_b, MAC_A, ll_a).build(),
            ),
            (
                "an address on two CHPIDs: the sender's CHPID answers",
                Ipv6Frame::neighbor_solicitation(MAC_A, V6_A, V6_SHARED).build(),
                Ipv6Frame::neighbor_advertisement(MAC_B, V6_SHARED, MAC_A, V6_A).build(),
            ),
            (
                "duplicate address detection (from ::, no option): to all nodes, grown",
                Ipv6Frame::neighbor_solicitation(MAC_A, Ipv6Addr::UNSPECIFIED, V6_B).build(),
                Ipv6Frame::neighbor_advertisement(MAC_B, V6_B, MAC_A, Ipv6Addr::UNSPECIFIED)
                    .build(),
            ),
            (
                "unicast, with a hop-by-hop header and padding: shrunk",
                Ipv6Frame::neighbor_solicitation(MAC_A, V6_A, V6_D)
                    .with_ext(ExtHeader::HopByHop { len: 1 })
                    .with_padding_to(200)
                    .build(),
                Ipv6Frame::neighbor_advertisement(MAC_D, V6_D, MAC_A, V6_A).build(),
            ),
        ];
        for (what, request, reply) in cases {
            let what = format!("{hook:?}: {what}");
            let before = bench.all_counters();
            let run = bench.run("a", &request);
            assert_eq!(run.action, XDP_TX, "{what}: expected the answer back to A");
            assert!(
                icmpv6_checksum_is_valid(&run.frame),
                "{what}: ICMPv6 checksum: {:02x?}",
                run.frame
            );
            assert!(
                run.frame == reply,
                "{what}: advertisement differs:\n got {:02x?}\nwant {:02x?}",
                run.frame,
                reply
            );
            let (asked, answered) = (request.len() as u64, reply.len() as u64);
            bench.assert_counters(&before, &what, |name, c| {
                if name == "a" {
                    c.tx_packets += 1;
                    c.tx_bytes += asked;
                    c.rx_packets += 1;
                    c.rx_bytes += answered;
                }
            });
        }
    });
}

/// A rule-table entry for port `ifindex`: `ranges` (inclusive) of protocol `class` in
/// `direction` to or from `remote`/`prefix` (IPv6 prefix; IPv4 is mapped, 96 + n).
fn rule(
    ifindex: u32,
    direction: u8,
    class: u8,
    remote: Ipv6Addr,
    prefix: u32,
    ranges: &[(u16, u16)],
) -> ((u32, SgKey), SgRanges) {
    let mut set = SgRanges {
        count: ranges.len() as u32,
        ..Default::default()
    };
    for (i, (low, high)) in ranges.iter().enumerate() {
        set.ranges[i] = u32::from(*low) << 16 | u32::from(*high);
    }
    (
        (
            SG_KEY_FIXED_BITS + prefix,
            SgKey::new(ifindex, direction, class, remote.octets()),
        ),
        set,
    )
}

#[test]
fn ipv6_security_groups_deny_and_track() {
    const ECHO_REQUEST: u16 = 128 << 8;
    on_every_hook(|bench, hook| {
        let (a, b, d) = (bench.ifindex("a"), bench.ifindex("b"), bench.ifindex("d"));
        let (out, inb) = (sg_direction::OUTBOUND, sg_direction::INBOUND);
        let fd00_f0: Ipv6Addr = "fd00:f0::".parse().unwrap();
        // A may send TCP 5201 to fd00:f0::/64 and ICMPv6 echo requests anywhere; B takes TCP
        // 5201 from A's address and echo requests from anyone, and may send nothing; an IPv4
        // rule (0.0.0.0/0, mapped) lets B send UDP to IPv4 only.
        let rules = vec![
            rule(a, out, sg_proto::TCP, fd00_f0, 64, &[(5201, 5201)]),
            rule(
                a,
                out,
                sg_proto::ICMPV6,
                Ipv6Addr::UNSPECIFIED,
                0,
                &[(ECHO_REQUEST, ECHO_REQUEST | 0xff)],
            ),
            rule(b, inb, sg_proto::TCP, V6_A, 128, &[(5201, 5201)]),
            rule(
                b,
                inb,
                sg_proto::ICMPV6,
                Ipv6Addr::UNSPECIFIED,
                0,
                &[(ECHO_REQUEST, ECHO_REQUEST)],
            ),
            rule(
                b,
                out,
                sg_proto::UDP,
                Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(),
                96,
                &[(1, 65535)],
            ),
            // D may send TCP anywhere.
            rule(
                d,
                out,
                sg_proto::TCP,
                Ipv6Addr::UNSPECIFIED,
                0,
                &[(1, 65535)],
            ),
        ];
        bench.prog.maps.sync_rules(&rules).expect("sync rules");
        let what = |w: &str| format!("{hook:?}: {w}");

        let mut to_22 = tcp6(MAC_A, MAC_B, V6_A, V6_B);
        if let iqd_tests::frames::L4::Tcp { dst_port, .. } = &mut to_22.l4 {
            *dst_port = 22;
        }
        bench.expect_drop(
            "a",
            &to_22.build(),
            drop_reason::SG_DENIED_OUTBOUND,
            &what("TCP 22"),
        );
        bench.expect_drop(
            "a",
            &udp6(MAC_A, MAC_B, V6_A, V6_B).build(),
            drop_reason::SG_DENIED_OUTBOUND,
            &what("UDP: no rule"),
        );
        bench.expect_drop(
            "b",
            &udp6(MAC_B, MAC_A, V6_B, V6_A).build(),
            drop_reason::SG_DENIED_OUTBOUND,
            &what("an IPv4 rule does not allow IPv6"),
        );
        // Denied inbound: counted on B, whose rules refuse it.
        let from_d = tcp6(MAC_D, MAC_B, V6_D, V6_B).build();
        let before = bench.all_counters();
        assert_eq!(
            bench.run("d", &from_d).action,
            XDP_DROP,
            "{}",
            what("TCP from D")
        );
        bench.assert_counters(&before, &what("TCP from D"), |name, c| match name {
            "d" => {
                c.tx_packets += 1;
                c.tx_bytes += from_d.len() as u64;
            }
            "b" => c.drops[drop_reason::SG_DENIED_INBOUND as usize] += 1,
            _ => {}
        });

        bench.expect_forward(
            "a",
            &tcp6(MAC_A, MAC_B, V6_A, V6_B).build(),
            "b",
            &what("TCP 5201"),
        );
        // The echo request opens a connection; its reply passes though B may send nothing.
        bench.expect_forward(
            "a",
            &echo6(MAC_A, MAC_B, V6_A, V6_B).build(),
            "b",
            &what("echo"),
        );
        let reply = Ipv6Frame::echo_reply(MAC_B, MAC_A, V6_B, V6_A, b"0123456789abcdef").build();
        bench.expect_forward("b", &reply, "a", &what("tracked echo reply"));
        bench.expect_drop(
            "b",
            &Ipv6Frame::icmpv6(MAC_B, MAC_A, V6_B, V6_A, 128, [0x77, 0x77, 0, 1], b"").build(),
            drop_reason::SG_DENIED_OUTBOUND,
            &what("an echo request of B's own (another identifier) is not tracked"),
        );
        let stray = Ipv6Frame::echo_reply(MAC_B, MAC_D, V6_B, V6_D, b"x").build();
        bench.expect_drop(
            "b",
            &stray,
            drop_reason::SG_DENIED_OUTBOUND,
            &what("an echo reply nobody asked for"),
        );
    });
}

/// Not a check: the programs' run time per frame (BPF_PROG_TEST_RUN with repeat), IPv4 and
/// IPv6 side by side, printed for comparison (`-- --nocapture`). Small frames: TCP SYN and
/// ICMP echo, on every data path.
#[test]
fn per_frame_cost_of_ipv4_and_ipv6_is_printed() {
    const REPEAT: u32 = 200_000;
    for hook in Hook::ALL {
        let mut bench = Bench::with_hook(hook);
        let a = bench.ifindex("a");
        for (what, frame) in [
            ("IPv4 TCP", tcp(MAC_A, MAC_B, IP_A, IP_B).build()),
            ("IPv6 TCP", tcp6(MAC_A, MAC_B, V6_A, V6_B).build()),
            (
                "IPv4 ICMP echo",
                Ipv4Frame::icmp_echo(MAC_A, MAC_B, IP_A, IP_B, b"0123456789abcdef").build(),
            ),
            ("IPv6 ICMPv6 echo", echo6(MAC_A, MAC_B, V6_A, V6_B).build()),
        ] {
            let (verdict, per_run) = bench.prog.time_run(a, &frame, REPEAT);
            eprintln!("cost {hook:?} {what}: {per_run:?} per frame (verdict {verdict})");
        }
        // The same TCP segment between two NICs in VLAN 100 of F0: only the segment differs.
        let v = bench.ifindex("v");
        let frame = tcp(MAC_V, MAC_W, IP_A, IP_W).build();
        let (verdict, per_run) = bench.prog.time_run(v, &frame, REPEAT);
        eprintln!("cost {hook:?} IPv4 TCP in a VLAN: {per_run:?} per frame (verdict {verdict})");
    }
}

/// The members `IQD_GROUPS` lists for `group` in segment F0 (untagged).
fn group_members(bench: &Bench, group: std::net::IpAddr) -> Vec<u32> {
    let key = RouteKey::new(u32::from(F0), group);
    bench
        .prog
        .maps
        .groups()
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, m)| m)
        .unwrap_or_default()
}

/// An IGMPv3 report (to 224.0.0.22) with one group record.
fn igmp_v3(
    src_mac: Mac,
    src: Ipv4Addr,
    record_type: u8,
    group: Ipv4Addr,
    sources: &[Ipv4Addr],
) -> Vec<u8> {
    let mut data = vec![0x22, 0, 0, 0, 0, 0, 0, 1, record_type, 0];
    data.extend_from_slice(&(sources.len() as u16).to_be_bytes());
    data.extend_from_slice(&group.octets());
    for s in sources {
        data.extend_from_slice(&s.octets());
    }
    let dst = Ipv4Addr::new(224, 0, 0, 22);
    Ipv4Frame::raw(src_mac, [1, 0, 0x5e, 0, 0, 0x16], src, dst, 2, &data).build()
}

/// An IGMPv2 message (report 0x16, leave 0x17) for `group`.
fn igmp_v2(src_mac: Mac, src: Ipv4Addr, msg_type: u8, group: Ipv4Addr) -> Vec<u8> {
    let mut data = vec![msg_type, 0, 0, 0];
    data.extend_from_slice(&group.octets());
    Ipv4Frame::raw(src_mac, [1, 0, 0x5e, 0, 0, 2], src, group, 2, &data).build()
}

/// An MLD message with a hop-by-hop header: v1 (131 report, 132 done) naming `group`, or v2
/// (143) with one record of `record_type` for it.
fn mld(src_mac: Mac, msg_type: u8, record_type: u8, group: Ipv6Addr) -> Vec<u8> {
    let (rest, data) = if msg_type == 143 {
        let mut record = vec![record_type, 0, 0, 0];
        record.extend_from_slice(&group.octets());
        ([0, 0, 0, 1], record)
    } else {
        ([0; 4], group.octets().to_vec())
    };
    Ipv6Frame::icmpv6(
        src_mac,
        [0x33, 0x33, 0, 0, 0, 0x16],
        link_local(src_mac),
        "ff02::16".parse().unwrap(),
        msg_type,
        rest,
        &data,
    )
    .with_ext(ExtHeader::HopByHop { len: 0 })
    .build()
}

#[test]
fn igmp_and_mld_reports_register_and_leaves_end_registrations() {
    let mut bench = Bench::new();
    let a = bench.ifindex("a");
    let b = bench.ifindex("b");
    let group: Ipv4Addr = Ipv4Addr::new(239, 1, 2, 3);
    let sent = |bench: &Bench| bench.counters("a").tx_packets;

    // IGMPv2 report, then leave: consumed (XDP_DROP), counted as sent, never as a drop.
    let before = sent(&bench);
    let run = bench.run("a", &igmp_v2(MAC_A, IP_A, 0x16, group));
    assert_eq!(run.action, XDP_DROP);
    assert_eq!(
        group_members(&bench, group.into()),
        vec![a],
        "IGMPv2 report"
    );
    assert_eq!(sent(&bench), before + 1);
    assert_eq!(bench.counters("a").drops.iter().sum::<u64>(), 0);
    bench.run("b", &igmp_v3(MAC_B, IP_B, 2, group, &[]));
    let mut members = group_members(&bench, group.into());
    members.sort();
    let mut both = vec![a, b];
    both.sort();
    assert_eq!(members, both, "IGMPv3 MODE_IS_EXCLUDE joins");
    bench.run("a", &igmp_v2(MAC_A, IP_A, 0x17, group));
    assert_eq!(group_members(&bench, group.into()), vec![b], "IGMPv2 leave");
    // IGMPv3: an include of no source leaves; an include of a source joins.
    bench.run("b", &igmp_v3(MAC_B, IP_B, 3, group, &[]));
    assert!(
        group_members(&bench, group.into()).is_empty(),
        "TO_INCLUDE {{}}"
    );
    bench.run("b", &igmp_v3(MAC_B, IP_B, 5, group, &[IP_A]));
    assert_eq!(
        group_members(&bench, group.into()),
        vec![b],
        "ALLOW_NEW_SOURCES"
    );

    // A report from a spoofed source registers nothing and is counted as such.
    let other = Ipv4Addr::new(239, 1, 2, 4);
    bench.expect_drop(
        "a",
        &igmp_v2(MAC_A, IP_UNKNOWN, 0x16, other),
        drop_reason::SPOOFED_SOURCE,
        "spoofed report",
    );
    assert!(group_members(&bench, other.into()).is_empty());

    // MLDv2 join (CHANGE_TO_EXCLUDE), MLDv1 done, MLDv1 report.
    let group6: Ipv6Addr = "ff15::1:2".parse().unwrap();
    assert_eq!(bench.run("a", &mld(MAC_A, 143, 4, group6)).action, XDP_DROP);
    assert_eq!(group_members(&bench, group6.into()), vec![a], "MLDv2 join");
    bench.run("a", &mld(MAC_A, 132, 0, group6));
    assert!(
        group_members(&bench, group6.into()).is_empty(),
        "MLDv1 done"
    );
    bench.run("a", &mld(MAC_A, 131, 0, group6));
    assert_eq!(
        group_members(&bench, group6.into()),
        vec![a],
        "MLDv1 report"
    );

    // A frame to a group on XDP goes up to the port's tc hook, uncounted here (tc counts it).
    let before = sent(&bench);
    let run = bench.run(
        "b",
        &udp6(MAC_B, multicast_mac(group6), V6_B, group6).build(),
    );
    assert_eq!(run.action, iqd_tests::prog_test::XDP_PASS);
    assert_eq!(sent(&bench), before);
}

#[test]
fn tc_gso_group_packets_are_checked_per_segment() {
    // As for unicast: a GSO packet to a group stands for segments of `gso_size` payload each,
    // and the CHPID's frame size holds for every one. A's MTU is 1500: 20 bytes of IPv4 and 8
    // of UDP leave 1472 bytes of payload per segment.
    let mut bench = Bench::with_hook(Hook::Tc);
    let (a, b) = (bench.ifindex("a"), bench.ifindex("b"));
    let group = Ipv4Addr::new(239, 1, 2, 6);
    bench.run("b", &igmp_v2(MAC_B, IP_B, 0x16, group));
    assert_eq!(group_members(&bench, group.into()), vec![b]);
    let l4 = iqd_tests::frames::L4::Udp {
        src_port: 5000,
        dst_port: 5000,
        data: vec![0x5a; 2 * 1472],
    };
    let group_mac = [0x01, 0x00, 0x5e, 0x01, 0x02, 0x06];
    let packet = Ipv4Frame::new(MAC_A, group_mac, IP_A, group, l4).build();
    let bytes = packet.len() as u64;
    for (gso_size, fits) in [(1472, true), (1473, false)] {
        let before = bench.counters("a");
        let run = bench
            .prog
            .try_run_tc(a, &packet, gso_size, 2)
            .expect("test run");
        let after = bench.counters("a");
        assert_eq!(
            after.tx_packets - before.tx_packets,
            2,
            "sent: two segments"
        );
        assert_eq!(after.tx_bytes - before.tx_bytes, bytes);
        let mfs = |c: &NicCounters| c.drops[drop_reason::MFS_EXCEEDED as usize];
        if fits {
            // On to the receivers' step (TC_ACT_STOLEN: the packet is consumed by its copies;
            // in a test run the copy itself fails, counted as redirect_failed).
            assert_eq!(
                run.action,
                TC_ACT_STOLEN + 1000,
                "segments of {gso_size} fit"
            );
            assert_eq!(mfs(&after), mfs(&before));
        } else {
            assert_eq!(
                run.action, XDP_DROP,
                "segments of {gso_size} exceed the MTU"
            );
            assert_eq!(mfs(&after), mfs(&before) + 1);
        }
    }
}

#[test]
fn group_frames_without_members_have_no_destination_on_tc() {
    let mut bench = Bench::with_hook(Hook::Tc);
    let group6: Ipv6Addr = "ff15::1:3".parse().unwrap();
    bench.expect_drop(
        "a",
        &udp6(MAC_A, multicast_mac(group6), V6_A, group6).build(),
        drop_reason::NO_DESTINATION,
        "IPv6 group without members",
    );
    bench.expect_drop(
        "a",
        &echo6(MAC_A, multicast_mac(ALL_NODES), V6_A, ALL_NODES).build(),
        drop_reason::NO_DESTINATION,
        "all nodes: no NIC registers it",
    );
    bench.expect_drop(
        "a",
        &udp6(MAC_STRANGER, multicast_mac(group6), V6_A, group6).build(),
        drop_reason::SPOOFED_SOURCE,
        "group frame from a foreign MAC",
    );
}

/// Makes A and D layer-2 NICs (port and route flags) and registers every port's MAC, as `up`
/// does for a fabric with layer-2 NICs.
fn make_layer2(bench: &mut Bench) {
    let layer2 = [bench.ifindex("a"), bench.ifindex("d")];
    let routes: Vec<(RouteKey, RouteTarget)> = bench
        .prog
        .maps
        .routes
        .iter()
        .filter_map(|e| e.ok())
        .collect();
    let mut all = Vec::new();
    for (key, target) in routes {
        let flags = if layer2.contains(&target.ifindex) {
            route_flags::LAYER2
        } else {
            0
        };
        all.push((key, target.with_flags(flags)));
    }
    for port in bench.ports.iter().filter(|p| p.spec.registered) {
        let spec = port.spec;
        let info = PortInfo {
            chpid: spec.chpid,
            vlan: spec.vlan,
            mtu: spec.mtu,
            mac: spec.mac,
            flags: if layer2.contains(&port.ifindex) {
                port_flags::LAYER2
            } else {
                0
            },
            _pad: 0,
        };
        let flags = if layer2.contains(&port.ifindex) {
            route_flags::LAYER2
        } else {
            0
        };
        all.push((
            iqd_common::mac_key(segment_of(&info), spec.mac),
            RouteTarget::new(port.ifindex, spec.mac).with_flags(flags),
        ));
        if layer2.contains(&port.ifindex) {
            bench
                .prog
                .maps
                .add_port(port.ifindex, info)
                .expect("layer-2 port");
        }
    }
    bench.prog.maps.sync_routes(&all).expect("sync routes");
}

#[test]
fn layer2_nics_forward_by_mac_and_cannot_reach_layer3_nics_on_every_hook() {
    on_every_hook(|bench, hook| {
        make_layer2(bench);
        // Any EtherType, by MAC, the destination MAC as the sender wrote it.
        let other = ethernet(MAC_D, MAC_A, ETH_P_LOCAL_EXP, b"iqd layer 2 payload");
        bench.expect_forward("a", &other, "d", &format!("{hook:?}: 0x88b5 A -> D"));
        let tcp_ad = tcp(MAC_A, MAC_D, IP_A, IP_D).build();
        bench.expect_forward("a", &tcp_ad, "d", &format!("{hook:?}: TCP A -> D"));
        // An IP packet goes by its MAC, whatever its address says.
        let by_mac = tcp(MAC_A, MAC_D, IP_A, IP_UNKNOWN).build();
        bench.expect_forward("a", &by_mac, "d", &format!("{hook:?}: TCP by MAC"));
        // ARP replies are the LPARs' own on layer 2.
        let mut reply = ArpFrame::request(MAC_A, IP_A, IP_D);
        reply.eth_dst = MAC_D;
        reply.oper = 2;
        bench.expect_forward("a", &reply.build(), "d", &format!("{hook:?}: ARP reply"));
        let cases: Vec<(&str, &str, Vec<u8>, u32)> = vec![
            (
                "layer 2 to a layer-3 NIC's MAC",
                "a",
                ethernet(MAC_B, MAC_A, ETH_P_LOCAL_EXP, b"x"),
                drop_reason::LAYER_MISMATCH,
            ),
            (
                "layer 3 to a layer-2 NIC's address",
                "b",
                tcp(MAC_B, MAC_A, IP_B, IP_A).build(),
                drop_reason::LAYER_MISMATCH,
            ),
            (
                "layer 3 asks ARP for a layer-2 NIC's address",
                "b",
                ArpFrame::request(MAC_B, IP_B, IP_A).build(),
                drop_reason::LAYER_MISMATCH,
            ),
            (
                "layer 3 solicits a layer-2 NIC's address",
                "b",
                Ipv6Frame::neighbor_solicitation(MAC_B, V6_B, V6_A).build(),
                drop_reason::LAYER_MISMATCH,
            ),
            (
                "unknown unicast MAC",
                "a",
                ethernet(MAC_STRANGER, MAC_A, ETH_P_LOCAL_EXP, b"x"),
                drop_reason::NO_DESTINATION,
            ),
            (
                "a MAC of another CHPID",
                "a",
                ethernet(MAC_C, MAC_A, ETH_P_LOCAL_EXP, b"x"),
                drop_reason::NO_DESTINATION,
            ),
            (
                "another source MAC",
                "a",
                ethernet(MAC_D, MAC_STRANGER, ETH_P_LOCAL_EXP, b"x"),
                drop_reason::SPOOFED_SOURCE,
            ),
            (
                "another source address",
                "a",
                tcp(MAC_A, MAC_D, IP_B, IP_D).build(),
                drop_reason::SPOOFED_SOURCE,
            ),
        ];
        for (what, from, frame, reason) in cases {
            bench.expect_drop(from, &frame, reason, &format!("{hook:?}: {what}"));
        }
    });
}
