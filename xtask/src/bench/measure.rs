//! The measurements: iperf3 (TCP, UDP), sockperf (request/response over IPv4), a ping-pong
//! loop of our own (request/response over IPv6: sockperf 3.7 has no IPv6), fping
//! (reachability), a connect/request/response/close loop of our own (connection rate),
//! /proc/stat (CPU time) and the kernel's BPF statistics (run time of iqd's tc program per
//! packet), each run between endpoints of an [`Env`].

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::Value;

use super::{
    env::{Env, Family},
    secgroups,
};

pub const IPERF_PORT: &str = "5201";
pub const SOCKPERF_PORT: &str = "11111";

/// Runs `f` on a thread of its own that has entered network namespace `netns` (named, as
/// `ip netns` names them). Only that thread changes namespace; it ends with `f`.
pub(super) fn in_netns<'scope, T: Send + 'scope>(
    scope: &'scope thread::Scope<'scope, '_>,
    netns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'scope,
) -> thread::ScopedJoinHandle<'scope, Result<T>> {
    let path = format!("/run/netns/{netns}");
    let netns = netns.to_string();
    scope.spawn(move || {
        let file = std::fs::File::open(&path).with_context(|| format!("could not open {path}"))?;
        // SAFETY: setns on a valid namespace file descriptor affects only this thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!(
                "could not enter network namespace {netns}: {}",
                std::io::Error::last_os_error()
            );
        }
        f()
    })
}

pub(super) fn join<T>(handle: thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    handle
        .join()
        .unwrap_or_else(|_| Err(anyhow!("a measurement thread panicked")))
}

/// What became of a TCP connection attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    Connected,
    /// Refused (an RST): the SYN reached the other end.
    Refused,
    /// No answer within the timeout: the SYN (or its answer) was dropped.
    TimedOut,
}

/// Connects from endpoint `client` to endpoint `server`'s `port`.
pub fn probe_tcp(env: &Env, client: usize, server: usize, port: u16) -> Result<Probe> {
    let addr = SocketAddr::V4(SocketAddrV4::new(env.endpoints[server].addr, port));
    thread::scope(|scope| {
        join(in_netns(
            scope,
            &env.endpoints[client].netns,
            move || match TcpStream::connect_timeout(&addr, Duration::from_millis(700)) {
                Ok(_) => Ok(Probe::Connected),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(Probe::Refused),
                Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock => {
                    Ok(Probe::TimedOut)
                }
                Err(e) => Err(anyhow!("connecting to {addr}: {e}")),
            },
        ))
    })
}

/// Checks that a security-group system filters: the measured ports are open both ways round
/// the pair, and a port no rule allows is dropped (not refused) in both directions.
pub fn check_filtering(env: &Env) -> Result<()> {
    let port: u16 = SOCKPERF_PORT.parse()?;
    let got = probe_tcp(env, 0, 1, port)?;
    if got != Probe::Connected {
        bail!(
            "{}: the allowed port {port} is not reachable ({got:?})",
            env.name()
        );
    }
    for (client, server) in [(0, 1), (1, 0)] {
        let got = probe_tcp(env, client, server, secgroups::DENIED_PORT)?;
        if got != Probe::TimedOut {
            bail!(
                "{}: a connection to port {} that no rule allows was not dropped ({got:?})",
                env.name(),
                secgroups::DENIED_PORT
            );
        }
    }
    Ok(())
}

fn set_linger_zero(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn set_accept_timeout(listener: &TcpListener, timeout: Duration) {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
}

/// TCP connections per second, one after another for `seconds`, from endpoint 0 to endpoint
/// 1: connect, send a 64-byte request, read the 64-byte response, close with an RST (linger 0,
/// so that no TIME_WAIT holds the client's ports). Every connection is a new flow that a
/// stateful filter checks against its rules.
pub fn connection_rate(env: &Env, seconds: u32) -> Result<f64> {
    let addr = SocketAddrV4::new(env.endpoints[1].addr, secgroups::CRR_PORT);
    let stop = AtomicBool::new(false);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    thread::scope(|scope| {
        let stop = &stop;
        let server = in_netns(scope, &env.endpoints[1].netns, move || {
            let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
            set_accept_timeout(&listener, Duration::from_millis(100));
            let _ = ready_tx.send(());
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                let mut stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        continue
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(anyhow!("accept on {addr}: {e}")),
                };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = stream.set_nodelay(true);
                // A client that gave up (or the RST) ends only this connection.
                if stream.read_exact(&mut buf).is_ok() {
                    let _ = stream.write_all(&buf);
                    // Wait for the client's RST so that the server never closes first.
                    let _ = stream.read(&mut buf);
                }
            }
            Ok(())
        });
        let client = in_netns(scope, &env.endpoints[0].netns, move || {
            ready_rx
                .recv_timeout(Duration::from_secs(5))
                .map_err(|_| anyhow!("the connection-rate server did not start"))?;
            let request = [0x5au8; 64];
            let mut response = [0u8; 64];
            let target = SocketAddr::V4(addr);
            let started = Instant::now();
            let deadline = started + Duration::from_secs(seconds.into());
            let mut count = 0u64;
            while Instant::now() < deadline {
                let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(1))
                    .with_context(|| format!("connection {} to {addr}", count + 1))?;
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(Duration::from_secs(1)))?;
                stream.write_all(&request)?;
                stream
                    .read_exact(&mut response)
                    .with_context(|| format!("response on connection {}", count + 1))?;
                set_linger_zero(&stream);
                drop(stream);
                count += 1;
            }
            Ok(count as f64 / started.elapsed().as_secs_f64())
        });
        let rate = join(client);
        stop.store(true, Ordering::Relaxed);
        let served = join(server);
        let rate = rate?;
        served?;
        Ok(rate)
    })
}

/// Starts the servers the pairwise measurements talk to, in endpoint 1.
pub fn start_servers(env: &mut Env) -> Result<()> {
    let addr = env.endpoints[1].addr.to_string();
    env.spawn(1, &["iperf3", "--server", "--port", IPERF_PORT])?;
    env.spawn(
        1,
        &[
            "sockperf",
            "server",
            "--tcp",
            "-i",
            &addr,
            "-p",
            SOCKPERF_PORT,
        ],
    )?;
    // The connection-rate client closes with an RST, so its ports are free at once; the wide
    // range keeps the same 4-tuple from coming back while a tracker still holds the last one
    // as closing (10 s in iqd and in the kernel's conntrack).
    let output = env
        .exec(0, "sysctl")
        .args(["-qw", "net.ipv4.ip_local_port_range=1024 65535"])
        .output()?;
    if !output.status.success() {
        bail!(
            "could not widen the port range in {}: {}",
            env.endpoints[0].netns,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    // Both listen within milliseconds; the first measurement retries once anyway.
    thread::sleep(Duration::from_millis(300));
    Ok(())
}

/// Busy and total CPU time so far, in USER_HZ ticks, from the first line of /proc/stat.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuTicks {
    pub busy: u64,
    pub total: u64,
}

pub fn parse_proc_stat(text: &str) -> Option<CpuTicks> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 5 {
        return None;
    }
    let total: u64 = fields.iter().take(8).sum();
    // idle and iowait are the 4th and 5th fields; guest time is already in user.
    let idle = fields[3] + fields[4];
    Some(CpuTicks {
        busy: total - idle,
        total,
    })
}

pub fn cpu_ticks() -> Result<CpuTicks> {
    let text = std::fs::read_to_string("/proc/stat").context("could not read /proc/stat")?;
    parse_proc_stat(&text).ok_or_else(|| anyhow!("/proc/stat has no parsable `cpu` line"))
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// Runs iperf3 in endpoint `client` against `server`'s address in `family` with `args`,
/// returning its JSON report. A failed connection (a server still starting) is retried once.
fn iperf3(
    env: &Env,
    client: usize,
    server: usize,
    family: Family,
    args: &[String],
) -> Result<Value> {
    let addr = env.endpoints[server].ip(family).to_string();
    let version = match family {
        Family::V4 => "--version4",
        Family::V6 => "--version6",
    };
    let mut last = None;
    for attempt in 0..2 {
        if attempt > 0 {
            thread::sleep(Duration::from_millis(500));
        }
        let output = env
            .exec(client, "iperf3")
            .args([
                "--client",
                &addr,
                version,
                "--json",
                "--connect-timeout",
                "2000",
            ])
            .args(args)
            .output()?;
        let json: Value = match serde_json::from_slice(&output.stdout) {
            Ok(json) => json,
            Err(_) => {
                last = Some(format!(
                    "iperf3 printed no JSON (exit {}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
                continue;
            }
        };
        if let Some(error) = json.get("error").and_then(Value::as_str) {
            last = Some(format!("iperf3: {error}"));
            continue;
        }
        return Ok(json);
    }
    bail!(
        "{} → {}: {}",
        env.endpoints[client].netns,
        addr,
        last.unwrap_or_default()
    )
}

/// TCP throughput result.
pub struct Tcp {
    pub gbit_per_s: f64,
    /// Gigabits the receiver got.
    pub gbits: f64,
}

pub fn parse_tcp(json: &Value) -> Result<Tcp> {
    let sum = &json["end"]["sum_received"];
    let bps = sum["bits_per_second"]
        .as_f64()
        .ok_or_else(|| anyhow!("iperf3 report lacks end.sum_received.bits_per_second"))?;
    let bytes = sum["bytes"]
        .as_f64()
        .ok_or_else(|| anyhow!("iperf3 report lacks end.sum_received.bytes"))?;
    Ok(Tcp {
        gbit_per_s: bps / 1e9,
        gbits: bytes * 8.0 / 1e9,
    })
}

/// TCP from endpoint 0 to endpoint 1 over `family` with `streams` parallel streams for
/// `seconds`; with the CPU seconds the whole machine spent per gigabit received.
pub fn tcp(env: &Env, family: Family, streams: u32, seconds: u32) -> Result<(Tcp, f64)> {
    let before = cpu_ticks()?;
    let json = iperf3(
        env,
        0,
        1,
        family,
        &[
            "--time".into(),
            seconds.to_string(),
            "--parallel".into(),
            streams.to_string(),
        ],
    )?;
    let after = cpu_ticks()?;
    let tcp = parse_tcp(&json)?;
    let cpu_seconds = (after.busy - before.busy) as f64 / ticks_per_second();
    let per_gbit = if tcp.gbits > 0.0 {
        cpu_seconds / tcp.gbits
    } else {
        f64::NAN
    };
    Ok((tcp, per_gbit))
}

/// UDP result: packets the receiver got per second, and the loss.
pub struct Udp {
    pub received_pps: f64,
    pub loss_percent: f64,
}

pub fn parse_udp(json: &Value) -> Result<Udp> {
    let sum = &json["end"]["sum"];
    let field = |name: &str| {
        sum[name]
            .as_f64()
            .ok_or_else(|| anyhow!("iperf3 UDP report lacks end.sum.{name}"))
    };
    let (packets, lost, seconds) = (field("packets")?, field("lost_packets")?, field("seconds")?);
    if seconds <= 0.0 {
        bail!("iperf3 UDP report has a zero duration");
    }
    Ok(Udp {
        received_pps: (packets - lost).max(0.0) / seconds,
        loss_percent: if packets > 0.0 {
            lost / packets * 100.0
        } else {
            0.0
        },
    })
}

/// UDP from endpoint 0 to endpoint 1 at full speed (`-b 0`) with `payload`-byte datagrams.
pub fn udp(env: &Env, payload: u32, seconds: u32) -> Result<Udp> {
    let json = iperf3(
        env,
        0,
        1,
        Family::V4,
        &[
            "--udp".into(),
            "--bitrate".into(),
            "0".into(),
            "--length".into(),
            payload.to_string(),
            "--time".into(),
            seconds.to_string(),
        ],
    )?;
    parse_udp(&json)
}

/// Round-trip percentiles in microseconds.
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
}

pub fn parse_sockperf(text: &str) -> Result<Latency> {
    let percentile = |p: &str| {
        text.lines()
            .find(|l| l.contains(&format!("percentile {p} =")))
            .and_then(|l| l.rsplit('=').next())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or_else(|| anyhow!("sockperf printed no `percentile {p}` line"))
    };
    Ok(Latency {
        p50_us: percentile("50.000")?,
        p99_us: percentile("99.000")?,
    })
}

/// sockperf ping-pong over TCP, 64-byte messages, from endpoint 0 to endpoint 1's server,
/// reporting full round trips.
pub fn latency(env: &Env, seconds: u32) -> Result<Latency> {
    let addr = env.endpoints[1].addr.to_string();
    let mut last = String::new();
    for attempt in 0..2 {
        if attempt > 0 {
            thread::sleep(Duration::from_millis(500));
        }
        let output = env
            .exec(0, "sockperf")
            .args(["ping-pong", "--tcp", "-i", &addr, "-p", SOCKPERF_PORT])
            .args(["-m", "64", "--full-rtt", "-t", &seconds.to_string()])
            .output()?;
        // sockperf prints its statistics on stderr, and some versions on stdout.
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        match parse_sockperf(&text) {
            Ok(latency) if output.status.success() => return Ok(latency),
            Ok(_) => last = format!("sockperf exited with {}", output.status),
            Err(e) => last = format!("{e} (exit {})", output.status),
        }
    }
    bail!("{} → {addr}: {last}", env.endpoints[0].netns)
}

/// Counts the pairs (i, j), i != j, in which endpoint i reaches endpoint j over `family`,
/// pinging from all endpoints at once with fping.
pub fn reachable_pairs(env: &Env, family: Family) -> Result<usize> {
    if family == Family::V6 && !env.v6 {
        bail!("{} was built without IPv6", env.name());
    }
    let addrs: Vec<String> = env
        .endpoints
        .iter()
        .map(|e| e.ip(family).to_string())
        .collect();
    let version = match family {
        Family::V4 => "-4",
        Family::V6 => "-6",
    };
    let children = (0..env.endpoints.len())
        .map(|i| {
            let targets = addrs
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, a)| a.as_str());
            // -a: print the targets that answered; -r 2: up to 3 tries; -t 500 ms per try.
            env.exec(i, "fping")
                .args([version, "-a", "-r", "2", "-t", "500"])
                .args(targets)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
        })
        .collect::<Result<Vec<_>>>()?;
    let mut reached = 0;
    for child in children {
        // fping exits 1 when some target is unreachable; the list is what counts.
        let output = child.wait_with_output().context("fping did not finish")?;
        reached += String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count();
    }
    Ok(reached)
}

/// Aggregate TCP throughput of N/2 concurrent pairs (endpoint 2k sends to 2k+1) over `family`,
/// in Gbit/s.
pub fn aggregate_tcp(env: &mut Env, family: Family, seconds: u32) -> Result<f64> {
    let pairs = env.endpoints.len() / 2;
    for k in 0..pairs {
        env.spawn(
            2 * k + 1,
            &["iperf3", "--server", "--one-off", "--port", IPERF_PORT],
        )?;
    }
    thread::sleep(Duration::from_millis(300 + 10 * pairs as u64));
    let env = &*env;
    let results: Vec<Result<f64>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..pairs)
            .map(|k| {
                scope.spawn(move || -> Result<f64> {
                    let json = iperf3(
                        env,
                        2 * k,
                        2 * k + 1,
                        family,
                        &["--time".into(), seconds.to_string()],
                    )?;
                    Ok(parse_tcp(&json)?.gbit_per_s)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a client thread panicked")))
            })
            .collect()
    });
    let mut total = 0.0;
    for result in results {
        total += result?;
    }
    Ok(total)
}

/// The value at percentile `p` (0-100) of `sorted` (ascending), by nearest rank; `None` when
/// empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Exchanges before the round trips are timed: the connection's first exchanges (slow start,
/// delayed ACKs, a cold cache) are not what the figure is about.
pub const PING_PONG_WARMUP: u32 = 200;

/// TCP request/response over `family` with the benchmark's own loop, for `seconds`: endpoint 0
/// sends a 64-byte message to a server thread in endpoint 1 (on the round-trip port), which
/// sends it back; every full round trip is timed, as sockperf's `--full-rtt` does. Used for
/// IPv6, which the sockperf of Debian 12 (3.7) cannot address.
pub fn ping_pong(env: &Env, family: Family, seconds: u32) -> Result<Latency> {
    if family == Family::V6 && !env.v6 {
        bail!("{} was built without IPv6", env.name());
    }
    let port: u16 = SOCKPERF_PORT.parse()?;
    let addr = SocketAddr::new(env.endpoints[1].ip(family), port);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    thread::scope(|scope| {
        let server = in_netns(scope, &env.endpoints[1].netns, move || {
            let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
            set_accept_timeout(&listener, Duration::from_secs(5));
            let _ = ready_tx.send(());
            let (mut stream, _) = listener
                .accept()
                .with_context(|| format!("no client connected to {addr}"))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut buf = [0u8; 64];
            // Until the client closes (or stops answering).
            while stream.read_exact(&mut buf).is_ok() {
                if stream.write_all(&buf).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let client = in_netns(scope, &env.endpoints[0].netns, move || {
            ready_rx
                .recv_timeout(Duration::from_secs(5))
                .map_err(|_| anyhow!("the ping-pong server did not start"))?;
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .with_context(|| format!("connecting to {addr}"))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(1)))?;
            let request = [0x5au8; 64];
            let mut response = [0u8; 64];
            let mut exchange = |stream: &mut TcpStream| -> Result<()> {
                stream.write_all(&request)?;
                stream
                    .read_exact(&mut response)
                    .with_context(|| format!("no response from {addr}"))
            };
            for _ in 0..PING_PONG_WARMUP {
                exchange(&mut stream)?;
            }
            let deadline = Instant::now() + Duration::from_secs(seconds.into());
            let mut rtts = Vec::with_capacity(100_000 * seconds as usize);
            loop {
                let started = Instant::now();
                if started >= deadline {
                    break;
                }
                exchange(&mut stream)?;
                rtts.push(started.elapsed().as_secs_f64() * 1e6);
            }
            Ok(rtts)
        });
        let rtts = join(client);
        let served = join(server);
        let mut rtts = rtts?;
        served?;
        rtts.sort_by(f64::total_cmp);
        Ok(Latency {
            p50_us: percentile(&rtts, 50.0).ok_or_else(|| anyhow!("no round trip in time"))?,
            p99_us: percentile(&rtts, 99.0).ok_or_else(|| anyhow!("no round trip in time"))?,
        })
    })
}

/// The program's cumulative run time and run count, as the kernel counts them while BPF
/// statistics are on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgStats {
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// `run_time_ns` and `run_cnt` from a program's /proc/<pid>/fdinfo/<fd>.
pub fn parse_fdinfo(text: &str) -> Option<ProgStats> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().parse::<u64>().ok())?
        })
    };
    Some(ProgStats {
        run_time_ns: field("run_time_ns")?,
        run_cnt: field("run_cnt")?,
    })
}

/// The statistics of the program pinned at `pin`: opened by its pin (BPF_OBJ_GET), read from
/// the descriptor's fdinfo. By pin, not by name: every fabric loads its own `iqd_tc`.
pub fn prog_stats(pin: &Path) -> Result<ProgStats> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(pin.as_os_str().as_bytes())
        .with_context(|| format!("{} is not a valid path", pin.display()))?;
    // union bpf_attr for BPF_OBJ_GET: pathname, bpf_fd, file_flags, path_fd.
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_F_RDONLY: u32 = 1 << 3;
    let attr = ObjGet {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: BPF_F_RDONLY,
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: BPF_OBJ_GET reads `attr` (of the size given) and the NUL-terminated path it
    // points to, both alive for the call; it returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &attr as *const ObjGet,
            std::mem::size_of::<ObjGet>() as libc::c_uint,
        )
    };
    if fd < 0 {
        bail!(
            "could not open the program pinned at {}: {}",
            pin.display(),
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: a descriptor the kernel just returned to us and nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let info = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    let text = std::fs::read_to_string(&info).with_context(|| format!("could not read {info}"))?;
    parse_fdinfo(&text).ok_or_else(|| {
        anyhow!(
            "{info} (the program pinned at {}) has no run_time_ns/run_cnt: a kernel without BPF \
             statistics?",
            pin.display()
        )
    })
}

const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `kernel.bpf_stats_enabled` turned on for as long as this lives; dropping it puts back the
/// value it had (also when the measurement fails). The statistics cost a little themselves, so
/// they are on only while a cost is measured.
pub struct BpfStatsOn {
    previous: String,
}

impl BpfStatsOn {
    pub fn new() -> Result<BpfStatsOn> {
        let previous = std::fs::read_to_string(BPF_STATS_SYSCTL)
            .with_context(|| format!("could not read {BPF_STATS_SYSCTL}"))?
            .trim()
            .to_string();
        std::fs::write(BPF_STATS_SYSCTL, "1")
            .with_context(|| format!("could not turn on {BPF_STATS_SYSCTL}"))?;
        Ok(BpfStatsOn { previous })
    }
}

impl Drop for BpfStatsOn {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(BPF_STATS_SYSCTL, &self.previous) {
            eprintln!(
                "bench: warning: could not set {BPF_STATS_SYSCTL} back to {}: {e}",
                self.previous
            );
        }
    }
}

/// `ping` statistics: echo requests sent and replies received.
pub fn parse_ping(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.contains("packets transmitted"))?;
    let number_before = |what: &str| -> Option<u64> {
        let (before, _) = line.split_once(what)?;
        before
            .rsplit([',', ' '])
            .find(|w| !w.is_empty())?
            .parse()
            .ok()
    };
    Some((
        number_before(" packets transmitted")?,
        number_before(" received")?,
    ))
}

/// Runs `ping ARGS` from endpoint 0 to endpoint 1 over `family`, requiring that at least
/// nine replies in ten came back; returns (sent, received).
fn ping(env: &Env, family: Family, args: &[&str]) -> Result<(u64, u64)> {
    let addr = env.endpoints[1].ip(family).to_string();
    let version = match family {
        Family::V4 => "-4",
        Family::V6 => "-6",
    };
    let output = env
        .exec(0, "ping")
        .arg(version)
        .args(args)
        .arg(&addr)
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let (sent, received) = parse_ping(&text).ok_or_else(|| {
        anyhow!(
            "ping {addr} printed no statistics: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })?;
    if sent == 0 || received * 10 < sent * 9 {
        bail!(
            "{} echo from {} to {addr}: {received} of {sent} replies; does {} carry {}?",
            family.label(),
            env.endpoints[0].netns,
            env.name(),
            family.label()
        );
    }
    Ok((sent, received))
}

/// The pinned tc program of an iqd environment: `/sys/fs/bpf/iqd/<fabric>/prog_iqd_tc`.
pub fn tc_prog_pin(env: &Env) -> Result<std::path::PathBuf> {
    let fabric = env
        .fabric
        .as_deref()
        .ok_or_else(|| anyhow!("{} is not an iqd fabric", env.name()))?;
    Ok(Path::new("/sys/fs/bpf/iqd")
        .join(fabric)
        .join("prog_iqd_tc"))
}

/// Nanoseconds per run of iqd's tc program for small frames over `family`: a ping flood
/// (56-byte ICMP or ICMPv6 echo, both ways through the fabric) from endpoint 0 to endpoint 1
/// for `seconds`, between two readings of the program's statistics. BPF statistics must be on
/// ([`BpfStatsOn`]).
pub fn prog_ns_per_run(env: &Env, family: Family, seconds: u32) -> Result<f64> {
    if family == Family::V6 && !env.v6 {
        bail!("{} was built without IPv6", env.name());
    }
    let pin = tc_prog_pin(env)?;
    // Resolve neighbours and open the tracked flow before the counters are read.
    ping(env, family, &["-q", "-c", "3", "-i", "0.05"])?;
    let before = prog_stats(&pin)?;
    ping(env, family, &["-q", "-f", "-w", &seconds.to_string()])?;
    let after = prog_stats(&pin)?;
    ns_per_run(before, after).ok_or_else(|| {
        anyhow!(
            "{} did not run during the ping flood (run_cnt {} -> {}): are BPF statistics on?",
            pin.display(),
            before.run_cnt,
            after.run_cnt
        )
    })
}

/// Run time per run between two readings; `None` when the program did not run.
pub fn ns_per_run(before: ProgStats, after: ProgStats) -> Option<f64> {
    let runs = after.run_cnt.checked_sub(before.run_cnt)?;
    let time = after.run_time_ns.checked_sub(before.run_time_ns)?;
    (runs > 0).then(|| time as f64 / runs as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_busy_excludes_idle_and_iowait() {
        let text = "cpu  100 5 50 1000 20 3 7 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        let ticks = parse_proc_stat(text).unwrap();
        assert_eq!(ticks.total, 1185);
        assert_eq!(ticks.busy, 165);
        assert!(parse_proc_stat("intr 1 2 3").is_none());
    }

    #[test]
    fn iperf3_tcp_and_udp_reports() {
        let tcp: Value = serde_json::from_str(
            r#"{"end":{"sum_received":{"bytes":2500000000,"bits_per_second":2.0e10}}}"#,
        )
        .unwrap();
        let tcp = parse_tcp(&tcp).unwrap();
        assert_eq!(tcp.gbit_per_s, 20.0);
        assert_eq!(tcp.gbits, 20.0);
        let udp: Value = serde_json::from_str(
            r#"{"end":{"sum":{"packets":1000,"lost_packets":250,"seconds":2.0}}}"#,
        )
        .unwrap();
        let udp = parse_udp(&udp).unwrap();
        assert_eq!(udp.received_pps, 375.0);
        assert_eq!(udp.loss_percent, 25.0);
        assert!(parse_tcp(&serde_json::json!({"error": "x"})).is_err());
    }

    #[test]
    fn sockperf_percentiles() {
        let text = "sockperf: ---> percentile 99.900 =   31.065\n\
                    sockperf: ---> percentile 99.000 =   22.276\n\
                    sockperf: ---> percentile 90.000 =   16.933\n\
                    sockperf: ---> percentile 50.000 =   15.749\n";
        let latency = parse_sockperf(text).unwrap();
        assert_eq!(latency.p50_us, 15.749);
        assert_eq!(latency.p99_us, 22.276);
        assert!(parse_sockperf("sockperf: error").is_err());
    }
    #[test]
    fn percentiles_by_nearest_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 50.0), Some(50.0));
        assert_eq!(percentile(&sorted, 99.0), Some(99.0));
        assert_eq!(percentile(&sorted, 100.0), Some(100.0));
        assert_eq!(percentile(&sorted, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn program_statistics_from_fdinfo() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t2077\nprog_type:\t3\n\
                    prog_jited:\t1\nprog_tag:\t8ac6ee2c5ab2e0a3\nmemlock:\t4096\nprog_id:\t41\n\
                    run_time_ns:\t2150000\nrun_cnt:\t10000\nrecursion_misses:\t0\n\
                    verified_insns:\t1234\n";
        let stats = parse_fdinfo(text).unwrap();
        assert_eq!(
            stats,
            ProgStats {
                run_time_ns: 2_150_000,
                run_cnt: 10_000
            }
        );
        assert!(parse_fdinfo("pos:\t0\nprog_type:\t3\n").is_none());
        let later = ProgStats {
            run_time_ns: 4_350_000,
            run_cnt: 21_000,
        };
        assert_eq!(ns_per_run(stats, later), Some(200.0));
        assert_eq!(ns_per_run(stats, stats), None);
        assert_eq!(ns_per_run(later, stats), None);
    }

    #[test]
    fn ping_statistics() {
        let v4 = "--- 10.0.0.2 ping statistics ---\n\
                  111060 packets transmitted, 111058 received, 0.0018% packet loss, time 1000ms\n\
                  rtt min/avg/max/mdev = 0.005/0.005/0.083/0.001 ms, ipg/ewma 0.009/0.008 ms\n";
        assert_eq!(parse_ping(v4), Some((111_060, 111_058)));
        let lost = "--- fd00:f0::2 ping statistics ---\n\
                    100 packets transmitted, 0 received, +3 errors, 100% packet loss, time 990ms\n";
        assert_eq!(parse_ping(lost), Some((100, 0)));
        assert_eq!(parse_ping("ping: connect: Network is unreachable"), None);
    }
}
