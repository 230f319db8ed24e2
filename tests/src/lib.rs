//! Harness for iqd's namespace integration tests: fabrics with unique names, commands inside
//! LPAR namespaces, and guards that take everything down even when a test fails. Beside it, what
//! the tests share: fabric files built instead of typed (`fixture`), hand-built frames (`frames`),
//! the BPF_PROG_TEST_RUN bench (`prog_test`), the reference model of the policy (`model`) and
//! `iqd trace` runs read back with tshark (`trace`).
use std::{
    fmt::Display,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

/// The iqd binary under test: `IQD_BIN` (set by `cargo xtask test`), else the workspace's
/// debug build.
pub fn iqd_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("IQD_BIN") {
        return PathBuf::from(bin);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/iqd")
}

/// The test-only iqd of another map layout (`IQD_SKEW_BIN`, built and set by `cargo xtask
/// test`): layout 1 with half the connection table. `None` when the variable is not set.
pub fn skew_bin() -> Option<PathBuf> {
    std::env::var_os("IQD_SKEW_BIN")
        .filter(|b| !b.is_empty())
        .map(PathBuf::from)
}

/// Fails loudly when not root: a namespace test that skips itself would pass without testing.
pub fn require_root() {
    assert!(
        nix_is_root(),
        "the integration tests need root (they create network namespaces): run `cargo xtask test`"
    );
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A short name unique to this process and call: fabric names allow 12 chars.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{:x}{n:x}", std::process::id() % 0xfffff)
}

/// Runs `iqd ARGS`, returning its output whatever the exit status.
pub fn iqd(args: &[&str]) -> Output {
    iqd_at(&iqd_bin(), args)
}

/// Runs the iqd binary `bin` with `ARGS`, returning its output whatever the exit status.
pub fn iqd_at(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

/// Runs a command in a network namespace.
pub fn in_netns(netns: &str, program: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", netns, program])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip netns exec {netns} {program}: {e}"))
}

/// A TCP transfer (iperf3) from a namespace to `dest` that a test means to cut while it runs:
/// it lasts long enough to be cut even when `iqd up` takes seconds on a busy machine, and
/// `--snd-timeout` ends it 3 s after its data stops being acknowledged (a cut connection would
/// otherwise retransmit for minutes), `timeout` in any case. See [`transfer_was_cut`].
pub fn transfer_to_cut(netns: &str, dest: &str) -> thread::JoinHandle<Output> {
    let netns = netns.to_string();
    let dest = dest.to_string();
    thread::spawn(move || {
        in_netns(
            &netns,
            "timeout",
            &[
                "40",
                "iperf3",
                "-c",
                &dest,
                "-t",
                "30",
                "--snd-timeout",
                "3000",
                "-J",
            ],
        )
    })
}

/// Whether a [`transfer_to_cut`] failed: killed by `timeout`, or ended by `--snd-timeout`
/// with an error in its report (iperf3 -J then exits 0).
pub fn transfer_was_cut(result: &Output) -> bool {
    !result.status.success() || String::from_utf8_lossy(&result.stdout).contains("\"error\"")
}

pub fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The data path the namespace tests run on: `IQD_TEST_DATAPATH` (`tc`, `xdp` or `afxdp`), or the
/// fabric file's default when it is not set.
pub fn test_datapath() -> Option<String> {
    std::env::var("IQD_TEST_DATAPATH")
        .ok()
        .filter(|d| !d.is_empty())
}

/// A test's fabric file: `{fabric}` replaced by the fabric's name, `{ns}` by the prefix of its
/// namespaces, and the data path under test set in `[fabric]` unless the file sets one (a test
/// of one data path's own behaviour).
pub fn render(toml: &str, name: &str) -> String {
    let mut text = toml.replace("{ns}", name);
    let sets_datapath = toml.lines().any(|l| l.trim_start().starts_with("datapath"));
    if let (Some(datapath), false) = (test_datapath(), sets_datapath) {
        text = text.replacen(
            "name = \"{fabric}\"",
            &format!("name = \"{{fabric}}\"\ndatapath = \"{datapath}\""),
            1,
        );
    }
    text.replace("{fabric}", name)
}

/// A fabric brought up from a fabric file (a [`fixture::FabricFile`], or TOML text), taken down
/// (with everything started in it) on drop.
pub struct TestFabric {
    pub name: String,
    pub config: PathBuf,
    /// The file as first written: cleanup falls back to it when a test left an invalid one.
    first: String,
    children: Vec<Child>,
}

impl TestFabric {
    /// Writes the fabric file (`{fabric}` in `file` is replaced by the fabric's name and
    /// `{ns}` by a unique prefix for namespace names, see [`render`]) without bringing it up.
    pub fn write(file: impl Display) -> Self {
        require_root();
        let name = unique("t");
        let text = render(&file.to_string(), &name);
        let dir = std::env::temp_dir().join("iqd-tests");
        fs::create_dir_all(&dir).expect("temp dir");
        let config = dir.join(format!("{name}.toml"));
        fs::write(&config, &text).expect("write fabric file");
        Self {
            name,
            config,
            first: text,
            children: Vec::new(),
        }
    }

    /// Writes the file and runs `iqd up`, which must succeed.
    pub fn up(file: impl Display) -> Self {
        let fabric = Self::write(file);
        fabric.iqd_ok("up");
        fabric
    }

    /// Replaces the fabric file (placeholders as for [`TestFabric::write`]), for the next
    /// `iqd` command.
    pub fn rewrite(&self, file: impl Display) {
        fs::write(&self.config, render(&file.to_string(), &self.name))
            .expect("rewrite fabric file");
    }

    /// The namespace name for `{ns}<suffix>` in the TOML.
    pub fn ns(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.name)
    }

    pub fn config_arg(&self) -> &str {
        self.config.to_str().expect("utf-8 path")
    }

    /// `iqd <subcommand> --config <file>`.
    pub fn iqd(&self, subcommand: &str, extra: &[&str]) -> Output {
        self.iqd_at(&iqd_bin(), subcommand, extra)
    }

    /// `<bin> <subcommand> --config <file>`: another iqd binary on this fabric.
    pub fn iqd_at(&self, bin: &Path, subcommand: &str, extra: &[&str]) -> Output {
        let mut args = vec![subcommand, "--config", self.config_arg()];
        args.extend_from_slice(extra);
        iqd_at(bin, &args)
    }

    pub fn iqd_ok(&self, subcommand: &str) -> String {
        self.iqd_ok_args(subcommand, &[])
    }

    /// `iqd <subcommand> --config <file> <extra>`, which must succeed; its stdout.
    pub fn iqd_ok_args(&self, subcommand: &str, extra: &[&str]) -> String {
        let out = self.iqd(subcommand, extra);
        assert!(
            out.status.success(),
            "iqd {subcommand} failed: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `iqd stats --json`, parsed.
    pub fn stats(&self) -> serde_json::Value {
        let out = self.iqd("stats", &["--json"]);
        assert!(out.status.success(), "iqd stats failed: {}", text(&out));
        serde_json::from_slice(&out.stdout).expect("stats JSON")
    }

    /// One NIC's entry of `iqd stats --json`.
    pub fn nic_stats(&self, lpar: &str, nic: &str) -> serde_json::Value {
        let stats = self.stats();
        stats["nics"]
            .as_array()
            .expect("nics array")
            .iter()
            .find(|n| n["lpar"] == lpar && n["nic"] == nic)
            .cloned()
            .unwrap_or_else(|| panic!("no stats for {lpar}/{nic}: {stats}"))
    }

    pub fn drops(&self, lpar: &str, nic: &str, reason: &str) -> u64 {
        self.nic_stats(lpar, nic)["drops"][reason]
            .as_u64()
            .unwrap_or_else(|| panic!("no drop reason {reason}"))
    }

    /// Starts a long-running command in a namespace; it is killed (by pid) on drop.
    pub fn spawn(&mut self, netns: &str, program: &str, args: &[&str]) -> &mut Child {
        let child = Command::new("ip")
            .args(["netns", "exec", netns, program])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} in {netns}: {e}"));
        self.children.push(child);
        self.children.last_mut().expect("just pushed")
    }

    /// Starts `iperf3 -s` on `addr` in `netns` and waits until it listens.
    pub fn iperf3_server(&mut self, netns: &str, addr: &str) {
        self.spawn(netns, "iperf3", &["-s", "-B", addr]);
        wait_until(Duration::from_secs(5), || {
            let out = in_netns(
                netns,
                "ss",
                &["-H", "-l", "-t", "-n", "sport", "=", ":5201"],
            );
            out.status.success() && !out.stdout.is_empty()
        })
        .unwrap_or_else(|_| panic!("iperf3 server in {netns} did not start listening"));
    }

    fn kill_children(&mut self) {
        for child in &mut self.children {
            if let Ok(None) = child.try_wait() {
                // SAFETY: plain syscall on our own unreaped child's pid.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            }
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for TestFabric {
    fn drop(&mut self) {
        // A process left in a namespace keeps it (and its links) alive.
        self.kill_children();
        let mut out = self.iqd("down", &[]);
        if !out.status.success() {
            // A test may leave a file `down` refuses (a refusal under test, say): `down` needs
            // only a valid file of the fabric's name, and removes what the state file lists.
            let _ = fs::write(&self.config, &self.first);
            out = self.iqd("down", &[]);
        }
        if !out.status.success() {
            eprintln!("cleanup: iqd down failed: {}", text(&out));
        }
        let _ = fs::remove_file(&self.config);
    }
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("condition not met within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// `ping -c COUNT` from a namespace; returns whether every reply came back.
pub fn ping(netns: &str, dest: &str, count: u32, size: Option<u32>) -> bool {
    let count = count.to_string();
    let mut args = vec!["-c", count.as_str(), "-i", "0.1", "-W", "1"];
    let size_text;
    if let Some(size) = size {
        size_text = size.to_string();
        // Don't fragment: the frame must be exactly as large as asked.
        args.extend_from_slice(&["-M", "do", "-s", size_text.as_str()]);
    }
    args.push(dest);
    let out = in_netns(netns, "ping", &args);
    out.status.success()
}

/// Runs an iperf3 TCP client for `seconds`; returns the bytes the receiver got.
pub fn iperf3_tcp(netns: &str, server: &str, seconds: u32) -> Result<u64> {
    let out = in_netns(
        netns,
        "iperf3",
        &["-c", server, "-t", &seconds.to_string(), "-J"],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3 output is not JSON: {}", text(&out)))?;
    if !out.status.success() {
        bail!("iperf3 failed: {}", json["error"]);
    }
    json["end"]["sum_received"]["bytes"]
        .as_u64()
        .context("iperf3 JSON without end.sum_received.bytes")
}

/// Network namespaces whose names start with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Vec<String> {
    fs::read_dir("/run/netns")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// The interfaces of a namespace, by name.
pub fn links(netns: &str) -> Vec<String> {
    let out = in_netns(netns, "ip", &["-j", "link", "show"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    json.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l["ifname"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
pub mod fixture;
pub mod frames;
pub mod model;
pub mod prog_test;
pub mod serve;
pub mod trace;

/// Runs `f` on a thread inside network namespace `netns`. Sockets created there stay in that
/// namespace wherever they are used afterwards.
pub fn in_netns_thread<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let netns = netns.to_string();
    thread::spawn(move || {
        let _guard = iqd::netns::NetnsGuard::enter(&netns)
            .unwrap_or_else(|e| panic!("cannot enter {netns}: {e}"));
        f()
    })
    .join()
    .expect("netns thread panicked")
}

/// Sends `frame` as written (Ethernet header included, a VLAN tag say) out of interface
/// `ifname` of `netns` through an AF_PACKET socket, as an LPAR writing its own frames does.
/// The kernel puts nothing of its own in or around it.
pub fn send_raw_frame(netns: &str, ifname: &str, frame: &[u8]) {
    let (ifname, frame) = (ifname.to_string(), frame.to_vec());
    in_netns_thread(netns, move || {
        use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
        let name = std::ffi::CString::new(ifname.clone()).expect("interface name");
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(ifindex, 0, "no interface {ifname}");
        // Protocol 0: a socket that only sends.
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: `frame` and `addr` are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(
            sent,
            frame.len() as isize,
            "send on {ifname}: {}",
            std::io::Error::last_os_error()
        );
    })
}

/// `addr:port`, with an IPv6 address in brackets (`[fd00::1]:80`).
pub fn sockaddr(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

/// A TCP listener bound to `addr:port` in `netns`. The kernel completes handshakes without
/// `accept`, so a connect succeeding shows the fabric carried SYN and SYN-ACK.
pub fn tcp_listener(netns: &str, addr: &str, port: u16) -> std::net::TcpListener {
    let bind = sockaddr(addr, port);
    in_netns_thread(netns, move || {
        std::net::TcpListener::bind(&bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"))
    })
}

/// Whether a TCP connection from `netns` to `addr:port` opens within a second.
pub fn tcp_connects(netns: &str, addr: &str, port: u16) -> bool {
    let target: std::net::SocketAddr = sockaddr(addr, port).parse().expect("address");
    in_netns_thread(netns, move || {
        std::net::TcpStream::connect_timeout(&target, Duration::from_secs(1)).is_ok()
    })
}

/// Whether a UDP datagram from `netns` (bound to `source` if given) reaches a socket bound to
/// `addr:port` in `dest_netns` within a second.
pub fn udp_delivered(
    netns: &str,
    source: Option<&str>,
    dest_netns: &str,
    addr: &str,
    port: u16,
) -> bool {
    let bind = sockaddr(addr, port);
    let receiver = in_netns_thread(dest_netns, move || {
        std::net::UdpSocket::bind(&bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"))
    });
    receiver
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let any = if addr.contains(':') { "::" } else { "0.0.0.0" };
    let source = sockaddr(source.unwrap_or(any), 0);
    let target = sockaddr(addr, port);
    let sender = in_netns_thread(netns, move || {
        std::net::UdpSocket::bind(&source).unwrap_or_else(|e| panic!("bind {source}: {e}"))
    });
    for _ in 0..3 {
        // The first datagram may wait for ARP; a few make the test robust, not lenient.
        let _ = sender.send_to(b"iqd", &target);
        let mut buf = [0u8; 16];
        if let Ok((n, _)) = receiver.recv_from(&mut buf) {
            return &buf[..n] == b"iqd";
        }
    }
    false
}

/// A paced TCP stream between two namespaces that timestamps every read on the receiving
/// side: the longest silence in a time window is how long the fabric carried nothing, to the
/// millisecond (iperf3's intervals are 0.1 s at best). The sender writes `chunk` bytes every
/// `pace`.
pub struct TcpProbe {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    reads: std::sync::Arc<std::sync::Mutex<Vec<Instant>>>,
    sender: Option<thread::JoinHandle<std::io::Result<u64>>>,
    receiver: Option<thread::JoinHandle<std::io::Result<u64>>>,
}

/// What a [`TcpProbe`] saw.
#[derive(Debug)]
pub struct ProbeReport {
    /// Bytes written by the sender and read by the receiver.
    pub sent: u64,
    pub received: u64,
    /// Receive times of every read.
    pub reads: Vec<Instant>,
}

impl ProbeReport {
    /// The longest time between two reads (or a window edge and a read) within `[from, to]`,
    /// and when it began.
    pub fn longest_silence(&self, from: Instant, to: Instant) -> (Duration, Instant) {
        let mut last = from;
        let mut longest = (Duration::ZERO, from);
        for &t in self.reads.iter().filter(|t| **t >= from && **t <= to) {
            if t - last > longest.0 {
                longest = (t - last, last);
            }
            last = t;
        }
        if to.saturating_duration_since(last) > longest.0 {
            longest = (to - last, last);
        }
        longest
    }
}

impl TcpProbe {
    /// Connects from `netns` to a listener it opens on `addr:port` in `dest_netns`, and starts
    /// sending.
    pub fn start(
        netns: &str,
        dest_netns: &str,
        addr: &str,
        port: u16,
        chunk: usize,
        pace: Duration,
    ) -> Self {
        use std::io::{Read as _, Write as _};
        use std::sync::{atomic::AtomicBool, Arc, Mutex};
        let listener = tcp_listener(dest_netns, addr, port);
        let target: std::net::SocketAddr = sockaddr(addr, port).parse().expect("address");
        let stream = in_netns_thread(netns, move || {
            std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2))
        })
        .unwrap_or_else(|e| panic!("probe connect to {target}: {e}"));
        let (mut incoming, _) = listener.accept().expect("probe accept");
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(Mutex::new(Vec::new()));
        let receiver = {
            let (stop, reads) = (stop.clone(), reads.clone());
            thread::spawn(move || {
                incoming.set_read_timeout(Some(Duration::from_millis(100)))?;
                let mut buf = vec![0u8; 1 << 16];
                let mut total = 0u64;
                let mut stopped: Option<Instant> = None;
                loop {
                    match incoming.read(&mut buf) {
                        Ok(0) => return Ok(total),
                        Ok(n) => {
                            total += n as u64;
                            reads.lock().expect("reads").push(Instant::now());
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) =>
                        {
                            // The sender's end of stream should follow its stop soon.
                            if stop.load(Ordering::Relaxed) {
                                let since = *stopped.get_or_insert_with(Instant::now);
                                if since.elapsed() > Duration::from_secs(2) {
                                    return Ok(total);
                                }
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
            })
        };
        let sender = {
            let stop = stop.clone();
            let mut stream = stream;
            thread::spawn(move || {
                stream.set_nodelay(true)?;
                let data = vec![0x5au8; chunk];
                let mut total = 0u64;
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    stream.write_all(&data)?;
                    total += chunk as u64;
                    next += pace;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                }
                stream.shutdown(std::net::Shutdown::Write)?;
                Ok(total)
            })
        };
        Self {
            stop,
            reads,
            sender: Some(sender),
            receiver: Some(receiver),
        }
    }

    /// Stops sending, waits for the receiver to read the rest, and reports. An error of either
    /// end (the connection did not survive) is returned.
    pub fn finish(mut self) -> Result<ProbeReport> {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self
            .sender
            .take()
            .expect("sender")
            .join()
            .map_err(|_| anyhow::anyhow!("probe sender panicked"))?
            .context("probe sender")?;
        let received = self
            .receiver
            .take()
            .expect("receiver")
            .join()
            .map_err(|_| anyhow::anyhow!("probe receiver panicked"))?
            .context("probe receiver")?;
        let reads = std::mem::take(&mut *self.reads.lock().expect("reads"));
        Ok(ProbeReport {
            sent,
            received,
            reads,
        })
    }
}

impl Drop for TcpProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An AF_PACKET socket on `ifname` of `netns` taking the frames of one EtherType, as a
/// program of the LPAR reading its own protocol does.
pub struct RawReceiver {
    fd: std::os::fd::OwnedFd,
}

impl RawReceiver {
    pub fn open(netns: &str, ifname: &str, ether_type: u16) -> Self {
        let ifname = ifname.to_string();
        let fd = in_netns_thread(netns, move || {
            use std::os::fd::{FromRawFd as _, OwnedFd};
            let name = std::ffi::CString::new(ifname.clone()).expect("interface name");
            // SAFETY: a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert_ne!(ifindex, 0, "no interface {ifname}");
            let proto = ether_type.to_be() as i32;
            // SAFETY: plain syscall; the result is checked.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
            assert!(
                fd >= 0,
                "packet socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: a fresh descriptor nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = ether_type.to_be();
            addr.sll_ifindex = ifindex as i32;
            // SAFETY: `addr` is valid for the length given.
            let bound = unsafe {
                libc::bind(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
            fd
        });
        RawReceiver { fd }
    }

    /// The frames that arrived (inbound only: not the LPAR's own), waiting up to 300 ms for
    /// each next one.
    pub fn frames(&self) -> Vec<Vec<u8>> {
        use std::os::fd::AsRawFd as _;
        let mut frames = Vec::new();
        loop {
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, 300) } <= 0 {
                return frames;
            }
            let mut buf = vec![0u8; 65536];
            // SAFETY: an all-zero sockaddr_ll is valid; recvfrom fills it.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: `buf` and `from` are valid for the lengths given.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                return frames;
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            buf.truncate(n as usize);
            frames.push(buf);
        }
    }
}
