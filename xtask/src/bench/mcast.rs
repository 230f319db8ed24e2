//! The one-to-many part of the benchmark (`--mcast`): 64-byte UDP frames from one sender to a
//! multicast group of 1, 4 and 16 receivers, and unicast to one receiver as the reference, on
//! iqd and on a Linux bridge with multicast snooping, interleaved round by round.
//!
//! - Each system has 17 endpoints: endpoint 0 sends, endpoints 1-16 receive. Every receiver
//!   opens one UDP socket on [`PORT`] and joins, with `IP_ADD_MEMBERSHIP` naming its own
//!   address (iqd's NICs are NOARP and have no multicast route), the groups it is a member of:
//!   239.77.0.16 (receivers 1-16), 239.77.0.4 (1-4) and 239.77.0.1 (1). The kernel's IGMP
//!   reports register them: with iqd from the data path's snooping, with the bridge from its
//!   `mcast_snooping` (with `mcast_querier` on, without which a bridge floods). Both are
//!   checked before measuring (`iqd status --json`, `bridge mdb show`).
//! - A frame is 64 bytes as it crosses the fabric: Ethernet 14 + IPv4 20 + UDP 8 + a 22-byte
//!   payload (a veth has no FCS). The sender is this benchmark's own blaster (`sendmmsg` of 64
//!   datagrams at a time, for the run's seconds, as fast as the kernel takes them) or, with
//!   `--mcast-sender iperf2`, iperf2; either is bound to the sender's address so the group's
//!   frames leave by its interface.
//! - What each receiver got is its interface's `rx_packets`, what the sender sent its
//!   interface's `tx_packets` (`ip -s -j link`, read in each namespace before and after), the
//!   same on every system. The receivers' sockets are not
//!   read: when their queues are full the kernel drops at the socket, alike everywhere; the
//!   counter counts what the fabric delivered. Frames that reached a receiver not addressed
//!   (a non-member) are counted as strays: snooping that works keeps them at zero.
use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use super::{
    env::{Builder, Env, Kind},
    measure, report, stats,
};
use crate::util::Cmd;

/// The UDP payload of every datagram: with the UDP, IPv4 and Ethernet headers, [`FRAME`] bytes.
pub const PAYLOAD: usize = 22;
/// The frame's length as it crosses a veth (no FCS).
pub const FRAME: usize = 14 + 20 + 8 + PAYLOAD;
/// The group sizes measured.
pub const RECEIVER_COUNTS: [u32; 3] = [1, 4, 16];
const RECEIVERS: usize = 16;
/// The receivers' UDP port.
pub const PORT: u16 = 5399;
/// The MTU of every system (the frames are small: the MTU does not matter).
const MTU: u32 = 1500;
/// The goal of the issue: each receiver of 4 gets at least this much of the one-receiver rate.
pub const GOAL: f64 = 0.8;
/// The systems measured by default, and those --system may name with --mcast.
pub const DEFAULT_SYSTEMS: [Kind; 3] = [Kind::IqdTc, Kind::IqdXdp, Kind::Bridge];
pub const SYSTEMS: [Kind; 4] = [Kind::IqdTc, Kind::IqdXdp, Kind::IqdAfxdp, Kind::Bridge];
/// Datagrams per `sendmmsg`.
const BATCH: usize = 64;
/// The markers of the part's section in docs/performance.md, which a full run keeps.
pub const BEGIN: &str = "<!-- mcast:begin (cargo xtask bench --mcast) -->";
pub const END: &str = "<!-- mcast:end -->";

/// The group whose members are receivers 1 to `receivers`.
pub fn group(receivers: u32) -> Ipv4Addr {
    Ipv4Addr::new(239, 77, 0, receivers as u8)
}

/// The groups receiver `i` (1-16) joins: those of every size that includes it.
pub fn groups_of(i: usize) -> Vec<Ipv4Addr> {
    RECEIVER_COUNTS
        .into_iter()
        .filter(|n| i <= *n as usize)
        .map(group)
        .collect()
}

/// What the sender sends to: the group of N receivers, or receiver 1's own address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    Unicast,
    Group(u32),
}

impl Case {
    pub const ALL: [Case; 4] = [
        Case::Unicast,
        Case::Group(RECEIVER_COUNTS[0]),
        Case::Group(RECEIVER_COUNTS[1]),
        Case::Group(RECEIVER_COUNTS[2]),
    ];

    /// The receivers addressed, as stored in a sample: 0 for unicast (to one receiver).
    pub fn code(self) -> u32 {
        match self {
            Case::Unicast => 0,
            Case::Group(n) => n,
        }
    }

    /// How many receivers the case addresses (receivers 1 to this).
    fn addressed(self) -> usize {
        match self {
            Case::Unicast => 1,
            Case::Group(n) => n as usize,
        }
    }

    pub fn label(code: u32) -> String {
        match code {
            0 => "unicast".into(),
            n => format!("group of {n}"),
        }
    }
}

/// What sends the frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sender {
    /// The benchmark's own `sendmmsg` loop: as fast as the socket takes the datagrams.
    Blaster,
    /// iperf2 (`iperf -c DEST -u -l 22 -b 10000M -T 1 -B SOURCE`), as a user would stream to a
    /// group.
    Iperf2,
}

impl Sender {
    pub fn parse(name: &str) -> Result<Sender> {
        match name {
            "blaster" => Ok(Sender::Blaster),
            "iperf2" => Ok(Sender::Iperf2),
            _ => bail!("--mcast-sender: `{name}` is not a sender; choose blaster or iperf2"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Sender::Blaster => "blaster",
            Sender::Iperf2 => "iperf2",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Sender::Blaster => {
                "as fast as its socket takes them (the benchmark's own `sendmmsg` loop, 64 \
                 datagrams a call)"
            }
            Sender::Iperf2 => {
                "with iperf2 (`iperf -c DEST -u -l 22 -b 10000M -T 1 -B SOURCE`: as fast as \
                 iperf2 sends), counted over a window of the run's seconds that starts 0.5 s \
                 after iperf2"
            }
        }
    }
}

/// One measurement: a system, a case, a round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct McastSample {
    pub system: String,
    /// The group's receivers; 0 is unicast to one receiver.
    pub receivers: u32,
    pub round: u32,
    /// How long the sender sent.
    pub seconds: f64,
    /// Datagrams per second the sender's socket took.
    pub sent_pps: f64,
    /// Frames per second each addressed receiver's interface received, receiver 1 first.
    pub receiver_pps: Vec<f64>,
    /// Frames that reached receivers not addressed (non-members of the group), in all.
    pub strays: u64,
}

impl McastSample {
    /// The mean rate of the addressed receivers.
    pub fn mean(&self) -> f64 {
        if self.receiver_pps.is_empty() {
            return f64::NAN;
        }
        self.receiver_pps.iter().sum::<f64>() / self.receiver_pps.len() as f64
    }

    /// The rate of the slowest addressed receiver.
    pub fn slowest(&self) -> f64 {
        self.receiver_pps
            .iter()
            .copied()
            .fold(f64::NAN, |a, b| if a.is_nan() { b } else { a.min(b) })
    }
}

/// The systems of a `--mcast` run: those --system names (of [`SYSTEMS`]), or the default ones.
pub fn systems(names: &[String]) -> Result<Vec<Kind>> {
    if names.is_empty() {
        return Ok(DEFAULT_SYSTEMS.to_vec());
    }
    let mut kinds = Vec::new();
    for name in names {
        let name = name.trim();
        let Some(kind) = Kind::parse(name).filter(|k| SYSTEMS.contains(k)) else {
            bail!(
                "--system with --mcast: `{name}` is not measured by the one-to-many part; \
                 choose from {}",
                SYSTEMS.map(Kind::name).join(", ")
            );
        };
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

/// A system built for the part: 17 endpoints, the receivers' sockets joined.
struct System {
    /// The receivers' sockets: closing them leaves the groups. Declared before `env`, so they
    /// close before its namespaces go.
    sockets: Vec<UdpSocket>,
    env: Env,
}

impl System {
    fn name(&self) -> &'static str {
        self.env.name()
    }
}

/// Builds `kind` with a sender and 16 receivers, joins the receivers to their groups and waits
/// until the fabric (iqd or the bridge) has registered every membership.
fn build(builder: &mut Builder, kind: Kind) -> Result<System> {
    let env = builder.build(kind, MTU, 1 + RECEIVERS, false)?;
    if kind == Kind::Bridge {
        let hub = env
            .hub()
            .context("the bridge system has no bridge namespace")?;
        // Without a querier a snooping bridge floods (no querier, no trust in its table); a
        // querier counts as present once the response interval after enabling it has passed:
        // 1 s instead of the default 10, set first (one command might apply it after).
        for args in [
            &[
                "mcast_snooping",
                "1",
                "mcast_query_response_interval",
                "100",
            ][..],
            &["mcast_querier", "1"],
        ] {
            let out = Cmd::new("ip")
                .args(["-n", hub, "link", "set", "br0", "type", "bridge"])
                .args(args)
                .quiet()
                .output()?;
            if !out.status.success() {
                bail!(
                    "could not turn on multicast snooping in {hub} ({}): {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
    }
    // A report sent before the links are up (the kernel brings a new link's queue up a moment
    // later) is lost, and would register only at the next query.
    wait_links_up(&env)?;
    // No IPv6 on the endpoints: their neighbour discovery and MLD reports would count as
    // strays.
    for e in &env.endpoints {
        Cmd::new("ip")
            .args(["netns", "exec", &e.netns, "sysctl", "-qw"])
            .arg(format!("net.ipv6.conf.{}.disable_ipv6=1", env.interface()))
            .quiet()
            .run()
            .with_context(|| format!("turning IPv6 off in {}", e.netns))?;
    }
    let sockets = join_receivers(&env)?;
    let system = System { sockets, env };
    wait_registered(&system.env, Some(&system.sockets))?;
    wait_snooping(&system)?;
    Ok(system)
}

/// Waits (up to 10 s) until every endpoint's interface is up and, for the bridge, every port
/// forwards.
fn wait_links_up(env: &Env) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let ifname = env.interface();
    loop {
        let mut down = Vec::new();
        for e in &env.endpoints {
            let out = Cmd::new("ip")
                .args(["-n", &e.netns, "-j", "link", "show", "dev", ifname])
                .quiet()
                .stdout_string()?;
            let json: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            if json[0]["operstate"].as_str() != Some("UP") {
                down.push(e.netns.clone());
            }
        }
        if let Some(hub) = env.hub() {
            let out = Cmd::new("bridge")
                .args(["-n", hub, "-j", "link", "show"])
                .quiet()
                .stdout_string()?;
            let json: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            for port in json.as_array().into_iter().flatten() {
                if port["state"].as_str() != Some("forwarding") {
                    down.push(format!("{hub}/{}", port["ifname"].as_str().unwrap_or("?")));
                }
            }
        }
        if down.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{}: links not up after 10 s: {}",
                env.name(),
                down.join(", ")
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (up to 20 s) until a burst to the one-receiver group reaches its member and nobody
/// else: a snooping bridge floods until its querier counts as present.
fn wait_snooping(system: &System) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sample = measure_once(system, Case::Group(1), 0, Duration::from_millis(300))?;
        let got = sample.receiver_pps[0] * sample.seconds;
        if got > 0.0 && (sample.strays as f64) <= 0.01 * got {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{}: the group of 1 still reaches non-members after 20 s ({} frames to its \
                 member, {} to the others)",
                system.name(),
                got,
                sample.strays
            );
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// Opens every receiver's socket in its namespace and joins its groups on its interface.
fn join_receivers(env: &Env) -> Result<Vec<UdpSocket>> {
    thread::scope(|scope| {
        let handles: Vec<_> = (1..=RECEIVERS)
            .map(|i| {
                let addr = env.endpoints[i].addr;
                measure::in_netns(scope, &env.endpoints[i].netns, move || {
                    let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT))
                        .with_context(|| format!("receiver {i}: binding port {PORT}"))?;
                    for group in groups_of(i) {
                        socket
                            .join_multicast_v4(&group, &addr)
                            .with_context(|| format!("receiver {i}: joining {group}"))?;
                    }
                    Ok(socket)
                })
            })
            .collect();
        handles.into_iter().map(measure::join).collect()
    })
}

/// The memberships each group must have: (group, receivers).
fn expected() -> Vec<(Ipv4Addr, usize)> {
    RECEIVER_COUNTS
        .into_iter()
        .map(|n| (group(n), n as usize))
        .collect()
}

/// The member count of each benchmark group in `iqd status --json`.
pub fn iqd_members(status: &serde_json::Value) -> Vec<(Ipv4Addr, usize)> {
    let groups = status["groups"].as_array().cloned().unwrap_or_default();
    RECEIVER_COUNTS
        .into_iter()
        .map(|n| {
            let g = group(n);
            let count = groups
                .iter()
                .filter(|e| e["group"].as_str() == Some(&g.to_string()))
                .map(|e| e["members"].as_array().map_or(0, Vec::len))
                .sum();
            (g, count)
        })
        .collect()
}

/// The member ports of each benchmark group in `bridge -j mdb show`.
pub fn bridge_members(mdb: &serde_json::Value) -> Vec<(Ipv4Addr, usize)> {
    let entries: Vec<serde_json::Value> = mdb
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|d| d["mdb"].as_array().cloned().unwrap_or_default())
        .collect();
    RECEIVER_COUNTS
        .into_iter()
        .map(|n| {
            let g = group(n);
            let count = entries
                .iter()
                .filter(|e| e["grp"].as_str() == Some(&g.to_string()))
                .filter(|e| e["port"].as_str() != Some("br0"))
                .count();
            (g, count)
        })
        .collect()
}

/// What the fabric has registered now.
fn registered(env: &Env) -> Result<Vec<(Ipv4Addr, usize)>> {
    if env.kind.is_iqd() {
        let config = env.config().context("the iqd system has no fabric file")?;
        let iqd = env
            .iqd_binary()
            .context("the iqd system has no iqd binary")?;
        let text = Cmd::new(iqd)
            .args(["status", "--json", "--config"])
            .arg(config)
            .quiet()
            .stdout_string()?;
        let json = serde_json::from_str(&text).context("iqd status --json printed no JSON")?;
        Ok(iqd_members(&json))
    } else {
        let hub = env
            .hub()
            .context("the bridge system has no bridge namespace")?;
        let text = Cmd::new("bridge")
            .args(["-n", hub, "-j", "mdb", "show"])
            .quiet()
            .stdout_string()?;
        let json = serde_json::from_str(&text).context("bridge -j mdb show printed no JSON")?;
        Ok(bridge_members(&json))
    }
}

/// Waits (up to 10 s) until every group has all its members registered. With `sockets` (the
/// receivers', receiver 1 first), every 2 s without all registrations the receivers join
/// again: a report can be lost (on a bridge it is then learnt only at the next query, 31 s
/// after the first), and a new join sends new ones.
fn wait_registered(env: &Env, sockets: Option<&[UdpSocket]>) -> Result<()> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(10);
    let mut rejoined = started;
    loop {
        let now = registered(env)?;
        if now == expected() {
            return Ok(());
        }
        if let Some(sockets) = sockets.filter(|_| rejoined.elapsed() > Duration::from_secs(2)) {
            for (i, socket) in sockets.iter().enumerate() {
                let addr = env.endpoints[i + 1].addr;
                for group in groups_of(i + 1) {
                    let _ = socket.leave_multicast_v4(&group, &addr);
                    socket
                        .join_multicast_v4(&group, &addr)
                        .with_context(|| format!("receiver {}: joining {group} again", i + 1))?;
                }
            }
            rejoined = Instant::now();
        }
        if Instant::now() > deadline {
            bail!(
                "{}: the groups' registrations are {now:?}, expected {:?}",
                env.name(),
                expected()
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Every endpoint's interface (`rx_packets`, `tx_packets`), endpoint 0 first.
fn counters(env: &Env) -> Result<Vec<(u64, u64)>> {
    let ifname = env.interface();
    let children: Vec<_> = env
        .endpoints
        .iter()
        .map(|e| {
            Cmd::new("ip")
                .args(["-n", &e.netns, "-s", "-j", "link", "show", "dev", ifname])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
        })
        .collect::<Result<_>>()?;
    let mut counts = Vec::new();
    for (child, e) in children.into_iter().zip(&env.endpoints) {
        let out = child.wait_with_output()?;
        counts.push(
            parse_packets(&out.stdout)
                .with_context(|| format!("packet counters of {ifname} in {}", e.netns))?,
        );
    }
    Ok(counts)
}

/// (`rx_packets`, `tx_packets`) from `ip -s -j link show dev X`.
pub fn parse_packets(json: &[u8]) -> Result<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_slice(json).context("not JSON")?;
    let get = |dir: &str| {
        v[0]["stats64"][dir]["packets"]
            .as_u64()
            .ok_or_else(|| anyhow!("no stats64.{dir}.packets"))
    };
    Ok((get("rx")?, get("tx")?))
}

/// Sends [`PAYLOAD`]-byte datagrams from endpoint 0 to `dest` for `duration`, as fast as the
/// kernel takes them: (datagrams sent, seconds).
fn blast(env: &Env, dest: Ipv4Addr, duration: Duration) -> Result<(u64, f64)> {
    let source = env.endpoints[0].addr;
    thread::scope(|scope| {
        measure::join(measure::in_netns(
            scope,
            &env.endpoints[0].netns,
            move || {
                // Bound to its own address, the socket sends a group's frames out of the
                // interface that has it (there is no multicast route).
                let socket = UdpSocket::bind(SocketAddrV4::new(source, 0))
                    .with_context(|| format!("binding the sender to {source}"))?;
                socket.set_multicast_loop_v4(false)?;
                socket.set_multicast_ttl_v4(1)?;
                socket
                    .connect(SocketAddrV4::new(dest, PORT))
                    .with_context(|| format!("connecting the sender to {dest}"))?;
                let payload = [0x5au8; PAYLOAD];
                let mut iov = libc::iovec {
                    iov_base: payload.as_ptr() as *mut libc::c_void,
                    iov_len: PAYLOAD,
                };
                let mut messages: Vec<libc::mmsghdr> = (0..BATCH)
                    .map(|_| {
                        // SAFETY: mmsghdr is plain data; all-zero is a valid empty message.
                        let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                        m.msg_hdr.msg_iov = &mut iov;
                        m.msg_hdr.msg_iovlen = 1;
                        m
                    })
                    .collect();
                let fd = socket.as_raw_fd();
                let started = Instant::now();
                let deadline = started + duration;
                let mut sent = 0u64;
                while Instant::now() < deadline {
                    // SAFETY: `messages` holds BATCH headers pointing at `iov` and `payload`,
                    // which outlive the call; the socket is open.
                    let n = unsafe {
                        libc::sendmmsg(fd, messages.as_mut_ptr(), BATCH as libc::c_uint, 0)
                    };
                    if n >= 0 {
                        sent += n as u64;
                        continue;
                    }
                    let e = std::io::Error::last_os_error();
                    match e.raw_os_error() {
                        // A full queue or a stale ICMP error: go on sending.
                        Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR | libc::ECONNREFUSED) => {}
                        _ => return Err(anyhow!("sendmmsg to {dest}: {e}")),
                    }
                }
                Ok((sent, started.elapsed().as_secs_f64()))
            },
        ))
    })
}

/// One measurement of `case` on `system` with `sender`; the blaster's after a short warm-up
/// (neighbour resolution for the bridge's unicast, caches).
fn measure_case(
    system: &System,
    sender: Sender,
    case: Case,
    round: u32,
    seconds: u32,
) -> Result<McastSample> {
    match sender {
        Sender::Blaster => {
            blast(
                &system.env,
                dest(&system.env, case),
                Duration::from_millis(100),
            )?;
            thread::sleep(Duration::from_millis(100));
            measure_once(system, case, round, Duration::from_secs(seconds.into()))
        }
        Sender::Iperf2 => measure_iperf2(system, case, round, seconds),
    }
}

/// A child process killed (by pid) on drop.
struct Started(std::process::Child);

impl Drop for Started {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: our own child, by pid.
            unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGKILL) };
        }
        let _ = self.0.wait();
    }
}

/// iperf2 sends for the run's seconds and a second more on each side; the counters are read
/// over a window of the run's seconds inside it.
fn measure_iperf2(system: &System, case: Case, round: u32, seconds: u32) -> Result<McastSample> {
    let env = &system.env;
    let sender = &env.endpoints[0];
    let iperf = Started(
        Cmd::new("ip")
            .args(["netns", "exec", &sender.netns, "iperf", "-c"])
            .arg(dest(env, case).to_string())
            .args([
                "-u",
                "-p",
                &PORT.to_string(),
                "-B",
                &sender.addr.to_string(),
            ])
            .args(["-T", "1", "-l", &PAYLOAD.to_string(), "-b", "10000M"])
            .args(["-t", &(seconds + 2).to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("could not start iperf (iperf2): cargo xtask setup installs it")?,
    );
    thread::sleep(Duration::from_millis(500));
    let before = counters(env)?;
    let started = Instant::now();
    thread::sleep(Duration::from_secs(seconds.into()));
    let after = counters(env)?;
    let elapsed = started.elapsed().as_secs_f64();
    drop(iperf);
    Ok(sample(env, case, round, elapsed, &before, &after))
}

fn dest(env: &Env, case: Case) -> Ipv4Addr {
    match case {
        Case::Unicast => env.endpoints[1].addr,
        Case::Group(n) => group(n),
    }
}

fn measure_once(
    system: &System,
    case: Case,
    round: u32,
    duration: Duration,
) -> Result<McastSample> {
    let env = &system.env;
    let before = counters(env)?;
    let (_, elapsed) = blast(env, dest(env, case), duration)?;
    // The frames still in the receivers' backlogs are delivered, not lost.
    thread::sleep(Duration::from_millis(100));
    let after = counters(env)?;
    Ok(sample(env, case, round, elapsed, &before, &after))
}

/// The sample of `case` from the counters before and after `seconds` of sending: what the
/// sender's interface sent, what each addressed receiver's received, and what the others got.
fn sample(
    env: &Env,
    case: Case,
    round: u32,
    seconds: f64,
    before: &[(u64, u64)],
    after: &[(u64, u64)],
) -> McastSample {
    let rx: Vec<u64> = before
        .iter()
        .zip(after)
        .map(|(b, a)| a.0.saturating_sub(b.0))
        .collect();
    let sent = after[0].1.saturating_sub(before[0].1);
    let addressed = case.addressed();
    McastSample {
        system: env.name().to_string(),
        receivers: case.code(),
        round,
        seconds,
        sent_pps: sent as f64 / seconds,
        receiver_pps: rx[1..=addressed]
            .iter()
            .map(|d| *d as f64 / seconds)
            .collect(),
        strays: rx[addressed + 1..].iter().sum(),
    }
}

/// Measures every system of `kinds` (built with the iqd binary `iqd`), `rounds` rounds of
/// every case for `seconds` each, the systems' order rotating from round to round. A failed
/// measurement is reported and skipped; failing to build a system ends the run.
pub fn measure(
    iqd: Option<&Path>,
    work_dir: &Path,
    kinds: &[Kind],
    sender: Sender,
    rounds: u32,
    seconds: u32,
) -> Result<(Vec<McastSample>, Vec<String>)> {
    let mut builder = Builder::new(iqd.map(Path::to_path_buf), work_dir.to_path_buf());
    let mut systems = Vec::new();
    for &kind in kinds {
        super::check_interrupted()?;
        eprintln!(
            "bench: mcast: building {} (1 sender, {RECEIVERS} receivers)",
            kind.name()
        );
        systems.push(
            build(&mut builder, kind)
                .with_context(|| format!("could not build {}", kind.name()))?,
        );
    }
    let mut samples = Vec::new();
    let mut failures = Vec::new();
    for round in 0..rounds {
        for case in Case::ALL {
            let mut order: Vec<&System> = systems.iter().collect();
            let len = order.len().max(1);
            order.rotate_left(round as usize % len);
            for system in order {
                super::check_interrupted()?;
                eprintln!(
                    "bench: mcast: round {}/{rounds}: {}, {}",
                    round + 1,
                    system.name(),
                    Case::label(case.code())
                );
                match measure_case(system, sender, case, round, seconds) {
                    Ok(sample) => {
                        let delivered: f64 =
                            sample.receiver_pps.iter().sum::<f64>() * sample.seconds;
                        if sample.strays as f64 > 0.01 * delivered {
                            eprintln!(
                                "bench: mcast: note: {} frames reached receivers that were not \
                                 addressed",
                                sample.strays
                            );
                        }
                        samples.push(sample);
                    }
                    Err(e) => {
                        let text = format!(
                            "{}, {}, round {round}: {e:#}",
                            system.name(),
                            Case::label(case.code())
                        );
                        eprintln!("bench: mcast: warning: {text}");
                        failures.push(text);
                    }
                }
            }
        }
    }
    // Registrations must still hold at the end (a bridge's entries age out without reports).
    for system in &systems {
        if let Err(e) = wait_registered(&system.env, None) {
            failures.push(format!("after the rounds: {e:#}"));
        }
    }
    drop(systems);
    Ok((samples, failures))
}

/// One row of the table: a system and a case, over the rounds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub system: String,
    pub receivers: u32,
    pub rounds: usize,
    /// Median over the rounds of the mean rate per addressed receiver.
    pub pps: f64,
    /// Median over the rounds of the slowest receiver's rate.
    pub slowest_pps: f64,
    pub sent_pps: f64,
    /// Paired (same round) median of this case's mean per receiver / one receiver's.
    pub vs_one: Option<f64>,
    /// The same for the slowest receiver.
    pub slowest_vs_one: Option<f64>,
    /// Paired median of the mean per receiver / the unicast rate to receiver 1.
    pub vs_unicast: Option<f64>,
    /// For systems other than the bridge: paired median of this system's mean per receiver /
    /// the bridge's, same case and round.
    pub vs_bridge: Option<f64>,
    /// For groups of more than one: how much longer each frame took per receiver added,
    /// in microseconds, `(1/rate(N) - 1/rate(1)) / (N - 1)`, paired within a round (median).
    /// On this machine the sender, the fabric and the receivers' kernels share the CPUs, so
    /// this is what a copy costs.
    pub us_per_extra: Option<f64>,
    /// Frames that reached receivers not addressed, over all rounds.
    pub strays: u64,
}

/// The median over rounds of `num(round) / den(round)` for rounds where both exist.
fn paired(
    samples: &[McastSample],
    num: (&str, u32),
    den: (&str, u32),
    f: fn(&McastSample) -> f64,
    g: fn(&McastSample) -> f64,
) -> Option<f64> {
    let find = |(system, receivers): (&str, u32), round: u32| {
        samples
            .iter()
            .find(|s| s.system == system && s.receivers == receivers && s.round == round)
    };
    let ratios: Vec<f64> = samples
        .iter()
        .filter(|s| s.system == num.0 && s.receivers == num.1)
        .filter_map(|s| {
            let d = find(den, s.round)?;
            let (a, b) = (f(s), g(d));
            (b > 0.0).then(|| a / b)
        })
        .collect();
    stats::median(&ratios)
}

/// The table's rows: per system (in `systems`' order) and case (unicast first).
pub fn rows(samples: &[McastSample], systems: &[String]) -> Vec<Row> {
    let mut rows = Vec::new();
    for system in systems {
        for case in Case::ALL {
            let code = case.code();
            let of: Vec<&McastSample> = samples
                .iter()
                .filter(|s| &s.system == system && s.receivers == code)
                .collect();
            if of.is_empty() {
                continue;
            }
            let med = |f: fn(&McastSample) -> f64| {
                stats::median(&of.iter().map(|s| f(s)).collect::<Vec<_>>()).unwrap_or(f64::NAN)
            };
            let me = (system.as_str(), code);
            let one = (system.as_str(), RECEIVER_COUNTS[0]);
            let is_group = code != 0;
            rows.push(Row {
                system: system.clone(),
                receivers: code,
                rounds: of.len(),
                pps: med(McastSample::mean),
                slowest_pps: med(McastSample::slowest),
                sent_pps: med(|s| s.sent_pps),
                vs_one: is_group
                    .then(|| paired(samples, me, one, McastSample::mean, McastSample::mean))
                    .flatten(),
                slowest_vs_one: is_group
                    .then(|| paired(samples, me, one, McastSample::slowest, McastSample::mean))
                    .flatten(),
                vs_unicast: paired(
                    samples,
                    me,
                    (system, 0),
                    McastSample::mean,
                    McastSample::mean,
                ),
                vs_bridge: (system != Kind::Bridge.name())
                    .then(|| {
                        paired(
                            samples,
                            me,
                            (Kind::Bridge.name(), code),
                            McastSample::mean,
                            McastSample::mean,
                        )
                    })
                    .flatten(),
                us_per_extra: (code > 1)
                    .then(|| {
                        let per_round: Vec<f64> = of
                            .iter()
                            .filter_map(|s| {
                                let one = samples.iter().find(|o| {
                                    o.system == *system
                                        && o.receivers == RECEIVER_COUNTS[0]
                                        && o.round == s.round
                                })?;
                                let (n, r1) = (s.mean(), one.mean());
                                (n > 0.0 && r1 > 0.0)
                                    .then(|| (1.0 / n - 1.0 / r1) / (code - 1) as f64 * 1e6)
                            })
                            .collect();
                        stats::median(&per_round)
                    })
                    .flatten(),
                strays: of.iter().map(|s| s.strays).sum(),
            });
        }
    }
    rows
}

fn ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.2}x"))
}

/// The table (Markdown) of `rows`.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| System | Sent to | Per receiver, packets/s (median) | Slowest receiver | Sender, packets/s | \
         Per receiver / 1 receiver | Slowest / 1 receiver | / unicast | / bridge | \
         us per extra receiver | Strays | Rounds |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let pps = |v: f64| report::format_value(v, "packets/s");
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.system,
            Case::label(r.receivers),
            pps(r.pps),
            pps(r.slowest_pps),
            pps(r.sent_pps),
            ratio(r.vs_one),
            ratio(r.slowest_vs_one),
            ratio(r.vs_unicast),
            ratio(r.vs_bridge),
            r.us_per_extra
                .map_or_else(|| "-".into(), |us| format!("{us:.2}")),
            r.strays,
            r.rounds,
        ));
    }
    out
}

/// Per system: whether each receiver of 4 got at least [`GOAL`] of the one-receiver rate (the
/// slowest of the 4, paired within a round).
pub fn verdicts(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .filter(|r| r.receivers == 4)
        .map(|r| match r.slowest_vs_one {
            Some(x) => format!(
                "{}: each receiver of 4 gets {x:.2}x the one-receiver rate (slowest receiver, \
                 paired median): goal of {GOAL:.1}x {}{}",
                r.system,
                if x >= GOAL { "met" } else { "NOT met" },
                r.us_per_extra
                    .map(|us| format!("; each receiver added costs {us:.2} us per frame"))
                    .unwrap_or_default()
            ),
            None => format!("{}: no paired figure for 4 receivers", r.system),
        })
        .collect()
}

/// The part's section of docs/performance.md, between [`BEGIN`] and [`END`].
pub fn markdown(rows: &[Row], run: &RunInfo) -> String {
    let RunInfo {
        command,
        started_utc,
        rounds,
        seconds,
        sender,
        kernel,
        cores,
    } = run;
    let mut md = format!("{BEGIN}\n## One-to-many delivery\n\n");
    md.push_str(&format!(
        "Measured by `cargo xtask bench --mcast` (a part of its own, not in the full run; about \
         3 minutes), last by `{command}` started at {started_utc} (UTC), {rounds} rounds of \
         {seconds} s per figure, on kernel {kernel} with {cores} CPUs.\n\n"
    ));
    md.push_str(&format!(
        "One sender sends {FRAME}-byte frames (Ethernet 14 + IPv4 20 + UDP 8 + {PAYLOAD} bytes \
         of payload; a veth has no FCS) {} to a group of 1, 4 and 16 receivers (239.77.0.1, \
         .4, .16: every receiver's socket joins the groups it belongs to, and the kernel's IGMP \
         reports register them), and, as the reference, unicast to one receiver. Each system \
         has 17 endpoints: iqd on one CHPID (17 LPARs), and a Linux bridge with \
         `mcast_snooping 1` and `mcast_querier 1` (a snooping bridge without a querier \
         floods). Both are checked to have registered every membership before and after the \
         rounds (`iqd status --json`, `bridge mdb show`), and that a frame to the group of 1 \
         reaches its member only. What a receiver got is its interface's `rx_packets`, what the \
         sender sent its interface's `tx_packets`, read in their namespaces before and after \
         each run (the sockets are not read; a full socket queue drops alike on every \
         system). Systems are interleaved within a round, the order rotating; figures are \
         medians over the rounds, and ratios are medians of ratios paired within a round. \
         \"us per extra receiver\" is how much longer a frame took per receiver added, \
         `(1/rate(N) - 1/rate(1)) / (N - 1)`. \"Strays\" are frames that reached receivers \
         they were not for, over all rounds: near 0 when snooping works (the few there are \
         the bridge querier's queries and, for unicast, the sender's ARP broadcast).\n\n",
        sender.describe()
    ));
    md.push_str(&table(rows));
    md.push('\n');
    for v in verdicts(rows) {
        md.push_str(&format!("- {v}\n"));
    }
    md.push_str(
        "\nWhy the rate per receiver falls with the group's size: the delivery runs on the \
         sending CPU. The sender hands each frame to its veth; the fabric \
         (iqd's program on the port, or the bridge) runs in the same softirq, and each copy \
         is handed to a receiver's veth and processed by that receiver's kernel (IP, UDP, the \
         socket) before the sender's next frame. A frame to N receivers therefore takes the \
         time of one plus N - 1 times the cost of a copy: with `t1` the time per frame to one \
         receiver and `c` the cost per extra receiver, each of 4 receivers gets \
         `t1 / (t1 + 3c)` of the one-receiver rate, 0.8x only if `c` is at most `t1 / 12`. \
         The bound holds for any fabric on this machine, and for any sender that sends as \
         fast as its CPU allows, since the copies slow the sender down with them \
         (`--mcast-sender iperf2` measures with iperf2); what a fabric decides is `c`, shown \
         per system above. Receivers with CPUs of their own, or a sender held below the \
         fan-out's rate, would see a ratio nearer 1.\n",
    );
    md.push_str(&format!("\n{END}\n"));
    md
}

/// What the part's section says about the run.
pub struct RunInfo {
    pub command: String,
    pub started_utc: String,
    pub rounds: u32,
    pub seconds: u32,
    pub sender: Sender,
    pub kernel: String,
    pub cores: usize,
}

/// The part's section of an existing report, markers included, if it has one.
pub fn section(text: &str) -> Option<&str> {
    let start = text.find(BEGIN)?;
    let end = text[start..].find(END)? + start + END.len();
    Some(&text[start..end])
}

/// `text` with its part's section replaced by `new` (appended when it has none).
pub fn replace_section(text: &str, new: &str) -> String {
    let new = new.trim_end();
    match section(text) {
        Some(old) => text.replacen(old, new, 1),
        None => {
            let mut out = text.trim_end().to_string();
            out.push_str("\n\n");
            out.push_str(new);
            out.push('\n');
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(system: &str, receivers: u32, round: u32, pps: &[f64]) -> McastSample {
        McastSample {
            system: system.into(),
            receivers,
            round,
            seconds: 3.0,
            sent_pps: 500_000.0,
            receiver_pps: pps.to_vec(),
            strays: 0,
        }
    }

    #[test]
    fn a_frame_is_64_bytes_and_groups_nest() {
        assert_eq!(FRAME, 64);
        assert_eq!(groups_of(1).len(), 3);
        assert_eq!(groups_of(4), [group(4), group(16)]);
        assert_eq!(groups_of(5), [group(16)]);
        assert_eq!(groups_of(16), [group(16)]);
        assert_eq!(group(16).to_string(), "239.77.0.16");
        assert!(group(1).is_multicast());
        assert_eq!(Case::ALL.map(Case::code), [0, 1, 4, 16]);
        assert_eq!(Case::label(0), "unicast");
        assert_eq!(Case::label(4), "group of 4");
    }

    #[test]
    fn rows_pair_ratios_within_a_round() {
        let samples = vec![
            sample("iqd-tc", 0, 0, &[100.0]),
            sample("iqd-tc", 1, 0, &[80.0]),
            sample("iqd-tc", 4, 0, &[70.0, 60.0, 70.0, 80.0]),
            sample("bridge", 0, 0, &[50.0]),
            sample("bridge", 1, 0, &[25.0]),
            sample("bridge", 4, 0, &[20.0, 20.0, 20.0, 20.0]),
            // A second round, twice as fast: the paired ratios do not change.
            sample("iqd-tc", 0, 1, &[200.0]),
            sample("iqd-tc", 1, 1, &[160.0]),
            sample("iqd-tc", 4, 1, &[140.0, 120.0, 140.0, 160.0]),
            sample("bridge", 4, 1, &[40.0, 40.0, 40.0, 40.0]),
        ];
        let systems = ["iqd-tc".to_string(), "bridge".to_string()];
        let rows = rows(&samples, &systems);
        assert_eq!(rows.len(), 6);
        let four = rows
            .iter()
            .find(|r| r.system == "iqd-tc" && r.receivers == 4)
            .unwrap();
        assert_eq!(four.rounds, 2);
        assert!((four.pps - 105.0).abs() < 1e-9, "{}", four.pps);
        assert!((four.slowest_pps - 90.0).abs() < 1e-9);
        assert!((four.vs_one.unwrap() - 70.0 / 80.0).abs() < 1e-9);
        assert!((four.slowest_vs_one.unwrap() - 0.75).abs() < 1e-9);
        assert!((four.vs_unicast.unwrap() - 0.7).abs() < 1e-9);
        assert!((four.vs_bridge.unwrap() - 3.5).abs() < 1e-9);
        // (1/70 - 1/80) / 3 s in round 0, half that in round 1: the median of the two, in us.
        let extra = |r: f64| (1.0 / r - 1.0 / (r * 8.0 / 7.0)) / 3.0 * 1e6;
        assert!((four.us_per_extra.unwrap() - (extra(70.0) + extra(140.0)) / 2.0).abs() < 1e-6);
        let bridge_unicast = rows
            .iter()
            .find(|r| r.system == "bridge" && r.receivers == 0)
            .unwrap();
        assert_eq!(bridge_unicast.vs_one, None);
        assert_eq!(bridge_unicast.vs_bridge, None);
        assert_eq!(bridge_unicast.vs_unicast, Some(1.0));
        // The bridge's 4 receivers in round 1 have no one-receiver figure to pair with.
        let bridge_four = rows
            .iter()
            .find(|r| r.system == "bridge" && r.receivers == 4)
            .unwrap();
        assert_eq!(bridge_four.vs_one, Some(0.8));

        let table = table(&rows);
        assert!(
            table.contains(
                "| iqd-tc | group of 4 | 105 | 90 | 500k | 0.88x | 0.75x | 0.70x | 3.50x | 446.43 | 0 | 2 |"
            ),
            "{table}"
        );
        assert!(table.contains("| bridge | unicast | 50 |"), "{table}");
        let verdicts = verdicts(&rows);
        assert_eq!(verdicts.len(), 2);
        assert!(verdicts[0].starts_with("iqd-tc: each receiver of 4 gets 0.75x"));
        assert!(
            verdicts[0].contains("goal of 0.8x NOT met; each receiver added costs 446.43 us"),
            "{}",
            verdicts[0]
        );
        assert!(
            verdicts[1].contains("0.80x") && verdicts[1].contains("goal of 0.8x met"),
            "{}",
            verdicts[1]
        );
    }

    #[test]
    fn the_section_is_replaced_or_appended() {
        let rows = rows(&[sample("iqd-tc", 4, 0, &[1.0])], &["iqd-tc".into()]);
        let run = RunInfo {
            command: "cargo xtask bench --mcast".into(),
            started_utc: "2026-11-30T09:00:00Z".into(),
            rounds: 3,
            seconds: 3,
            sender: Sender::Blaster,
            kernel: "6.18".into(),
            cores: 2,
        };
        let new = markdown(&rows, &run);
        assert!(new.contains("`sendmmsg` loop") && new.contains("with 2 CPUs"));
        assert!(new.starts_with(BEGIN) && new.trim_end().ends_with(END));
        assert!(new.contains("64-byte frames"));
        let report = "# Performance\n\nfigures\n";
        let once = replace_section(report, &new);
        assert!(once.starts_with("# Performance\n\nfigures\n\n<!-- mcast:begin"));
        assert_eq!(section(&once), Some(new.trim_end()));
        let newer = new.replace("2026-11-30T09:00:00Z", "2026-12-01T09:00:00Z");
        let twice = replace_section(&once, &newer);
        assert_eq!(twice.matches(BEGIN).count(), 1);
        assert!(twice.contains("2026-12-01") && !twice.contains("2026-11-30"));
        assert_eq!(section("no section"), None);
    }

    #[test]
    fn registrations_are_read_from_iqd_and_the_bridge() {
        let status = serde_json::json!({"groups": [
            {"chpid": "F0", "group": "239.77.0.1", "members": ["L1/hsi0"]},
            {"chpid": "F0", "group": "239.77.0.4", "members": ["L1/hsi0", "L2/hsi0", "L3/hsi0", "L4/hsi0"]},
            {"chpid": "F0", "group": "239.9.9.9", "members": ["L5/hsi0"]},
        ]});
        assert_eq!(
            iqd_members(&status),
            [(group(1), 1), (group(4), 4), (group(16), 0)]
        );
        let mdb = serde_json::json!([{"mdb": [
            {"index": 2, "dev": "br0", "port": "p1", "grp": "239.77.0.1", "state": "temp"},
            {"index": 2, "dev": "br0", "port": "p1", "grp": "239.77.0.16", "state": "temp"},
            {"index": 2, "dev": "br0", "port": "p2", "grp": "239.77.0.16", "state": "temp"},
            {"index": 2, "dev": "br0", "port": "br0", "grp": "239.77.0.4", "state": "temp"},
        ], "router": {}}]);
        assert_eq!(
            bridge_members(&mdb),
            [(group(1), 1), (group(4), 0), (group(16), 2)]
        );
        let ip = br#"[{"ifindex":2,"ifname":"hsi0","stats64":{"rx":{"bytes":640,"packets":10},"tx":{"bytes":0,"packets":0}}}]"#;
        assert_eq!(parse_packets(ip).unwrap(), (10, 0));
        assert!(parse_packets(b"[]").is_err());
        assert_eq!(Sender::parse("iperf2").unwrap(), Sender::Iperf2);
        assert_eq!(
            Sender::parse(Sender::Blaster.name()).unwrap(),
            Sender::Blaster
        );
        let err = Sender::parse("iperf3").unwrap_err().to_string();
        assert!(err.contains("`iperf3`"), "{err}");
    }

    #[test]
    fn systems_default_and_filter() {
        assert_eq!(systems(&[]).unwrap(), DEFAULT_SYSTEMS);
        assert_eq!(
            systems(&["iqd-xdp".into(), "bridge".into(), "iqd-xdp".into()]).unwrap(),
            [Kind::IqdXdp, Kind::Bridge]
        );
        let err = systems(&["macvlan".into()]).unwrap_err().to_string();
        assert!(err.contains("`macvlan`") && err.contains("iqd-tc"), "{err}");
    }
}
