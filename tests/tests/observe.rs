//! Seeing the fabric: `iqd metrics` (Prometheus) and `iqd trace` (the Network Traffic
//! Analyzer, to pcapng), on real fabrics with real traffic. The data path is the suite's
//! (`IQD_TEST_DATAPATH`); the xtask runs it on each.
use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    net::TcpStream,
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use iqd_tests::{
    fixture::{FabricFile, Nic},
    iperf3_tcp, iqd_bin, ping, text,
    trace::{tshark_fields, Trace},
    wait_until, TestFabric,
};

/// A child process (an `iqd metrics` server) killed by pid on drop.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: plain syscall on our own unreaped child's pid.
            unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGKILL) };
        }
        let _ = self.0.wait();
    }
}

/// Two LPARs on CHPID F0.
fn two_lpars() -> FabricFile {
    FabricFile::test()
        .chpid("F0")
        .lpar("A", "{ns}a", [Nic::new("F0", ["10.9.0.1/24"])])
        .lpar("B", "{ns}b", [Nic::new("F0", ["10.9.0.2/24"])])
}

/// A free TCP port on 127.0.0.1 (bound and released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// GET `path` from 127.0.0.1:`port`: (status line, body).
fn http_get(port: u16, path: &str) -> std::io::Result<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Ok((
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    ))
}

/// The samples of a scrape: "name{labels}" -> value, labels as written.
fn samples(scrape: &str) -> HashMap<String, f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// A NIC series' name as the text format writes it (labels in the order registered).
fn nic_series(metric: &str, fabric: &str, lpar: &str, reason: Option<&str>) -> String {
    let reason = reason
        .map(|r| format!(",reason=\"{r}\""))
        .unwrap_or_default();
    format!("{metric}{{chpid=\"F0\",fabric=\"{fabric}\",lpar=\"{lpar}\",nic=\"hsi0\"{reason}}}")
}

/// `promtool check metrics` on `scrape`: its complaints, empty when it passes.
fn promtool(scrape: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; cargo xtask setup installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(scrape.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    if out.status.success() {
        String::new()
    } else {
        text(&out)
    }
}

#[test]
fn metrics_under_traffic_pass_promtool_and_match_stats() {
    let mut fabric = TestFabric::up(two_lpars());
    let port = free_port();
    let _server = Started(
        Command::new(iqd_bin())
            .args(["metrics", "--config", fabric.config_arg()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iqd metrics"),
    );
    wait_until(Duration::from_secs(5), || {
        http_get(port, "/metrics").is_ok()
    })
    .expect("iqd metrics serves");

    // A scrape under traffic: TCP from A to B, and frames to nobody (no_destination).
    let (a, b) = (fabric.ns("a"), fabric.ns("b"));
    fabric.iperf3_server(&b, "10.9.0.2");
    let client = thread::spawn(move || iperf3_tcp(&a, "10.9.0.2", 3));
    thread::sleep(Duration::from_millis(1500));
    let (status, scrape) = http_get(port, "/metrics").expect("scrape");
    assert!(status.contains("200"), "{status}");
    assert!(client.join().expect("iperf3").expect("iperf3 ran") > 0);
    assert_eq!(promtool(&scrape), "", "promtool check metrics:\n{scrape}");
    let during = samples(&scrape);
    let name = &fabric.name;
    let sent = nic_series("iqd_nic_sent_frames_total", name, "A", None);
    assert!(
        during[&sent] > 0.0,
        "no frames sent under traffic:\n{scrape}"
    );
    assert_eq!(
        during[&format!(
            "iqd_fabric_up{{datapath=\"{}\",fabric=\"{name}\"}}",
            datapath()
        )],
        1.0
    );

    assert!(!ping(&fabric.ns("a"), "10.9.0.99", 2, None));
    // Quiet now: the scrape and `iqd stats --json` must agree exactly.
    let stats = fabric.stats();
    let (status, scrape) = http_get(port, "/metrics").expect("scrape");
    assert!(status.contains("200"), "{status}");
    assert_eq!(promtool(&scrape), "", "promtool check metrics:\n{scrape}");
    let after = samples(&scrape);
    for nic in stats["nics"].as_array().expect("nics") {
        let lpar = nic["lpar"].as_str().expect("lpar");
        for (metric, key) in [
            ("iqd_nic_sent_frames_total", "tx_packets"),
            ("iqd_nic_sent_bytes_total", "tx_bytes"),
            ("iqd_nic_received_frames_total", "rx_packets"),
            ("iqd_nic_received_bytes_total", "rx_bytes"),
        ] {
            let series = nic_series(metric, name, lpar, None);
            assert_eq!(
                after.get(&series).copied(),
                nic[key].as_u64().map(|v| v as f64),
                "{series} against stats {key}:\n{scrape}"
            );
        }
        for (reason, count) in nic["drops"].as_object().expect("drops") {
            let series = nic_series("iqd_nic_dropped_frames_total", name, lpar, Some(reason));
            assert_eq!(
                after.get(&series).copied(),
                count.as_u64().map(|v| v as f64),
                "{series}:\n{scrape}"
            );
        }
    }
    let no_destination = nic_series(
        "iqd_nic_dropped_frames_total",
        name,
        "A",
        Some("no_destination"),
    );
    assert!(after[&no_destination] >= 2.0, "{scrape}");
    let created = format!("iqd_conntrack_created_total{{fabric=\"{name}\"}}");
    assert_eq!(
        after.get(&created).copied(),
        stats["conntrack"]["created"].as_u64().map(|v| v as f64)
    );
    assert!(after[&created] >= 1.0, "the iperf3 connections: {scrape}");

    // --once prints the same families, and other paths are not found.
    let once = fabric.iqd_ok_args("metrics", &["--once"]);
    assert!(
        once.contains("# TYPE iqd_nic_dropped_frames_total counter"),
        "{once}"
    );
    assert_eq!(promtool(&once), "");
    let (status, _) = http_get(port, "/nothing").expect("request");
    assert!(status.contains("404"), "{status}");

    // Each LPAR's lifecycle state, one series per state.
    let out = iqd_tests::iqd(&["lpar", "stop", "B", "--config", fabric.config_arg()]);
    assert!(out.status.success(), "{}", text(&out));
    let scrape = fabric.iqd_ok_args("metrics", &["--once"]);
    assert_eq!(promtool(&scrape), "");
    let now = samples(&scrape);
    let state = |lpar: &str, state: &str| {
        now.get(&format!(
            "iqd_lpar_state{{fabric=\"{name}\",lpar=\"{lpar}\",state=\"{state}\"}}"
        ))
        .copied()
    };
    assert_eq!(state("B", "stopped"), Some(1.0), "{scrape}");
    assert_eq!(state("B", "running"), Some(0.0));
    assert_eq!(state("A", "running"), Some(1.0));
}

/// The data path the suite runs on, as `iqd status` names it.
fn datapath() -> String {
    iqd_tests::test_datapath().unwrap_or_else(|| "tc".to_string())
}

/// LP01 and LP02 traceable on F0, LP03 (not traceable) on F0 too and F0's analyzer.
fn traced_fabric() -> FabricFile {
    FabricFile::test()
        .chpid("F0")
        .analyzer("F0", "LP03")
        .lpar("LP01", "{ns}a", [Nic::new("F0", ["10.9.0.1/24"])])
        .lpar("LP02", "{ns}b", [Nic::new("F0", ["10.9.0.2/24"])])
        .lpar("LP03", "{ns}c", [Nic::new("F0", ["10.9.0.3/24"])])
        .traceable(&["LP01", "LP02"])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends `payload` over TCP from `from` to `addr`:7001 in `to` and checks it arrived.
fn tcp_send(from: &str, to: &str, addr: &str, payload: &'static [u8]) {
    let listener = iqd_tests::tcp_listener(to, addr, 7001);
    let target = format!("{addr}:7001");
    iqd_tests::in_netns_thread(from, move || {
        let mut stream =
            TcpStream::connect_timeout(&target.parse().expect("address"), Duration::from_secs(2))
                .expect("connect through the fabric");
        stream.write_all(payload).expect("send");
    });
    let (mut conn, _) = listener.accept().expect("accept");
    let mut got = Vec::new();
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = conn.read_to_end(&mut got);
    assert_eq!(got, payload);
}

#[test]
fn trace_captures_tcp_between_traceable_lpars_into_pcapng() {
    let fabric = TestFabric::up(traced_fabric());
    let file = std::env::temp_dir().join(format!("{}.pcapng", fabric.name));
    let trace = Trace::start(
        &fabric,
        &[
            "--chpid",
            "F0",
            "--as",
            "LP03",
            "-w",
            file.to_str().unwrap(),
            "--snaplen",
            "128",
        ],
    );
    let (a, b, c) = (fabric.ns("a"), fabric.ns("b"), fabric.ns("c"));
    const PAYLOAD: &[u8] = b"iqd-trace-payload-0123456789";
    tcp_send(&a, &b, "10.9.0.2", PAYLOAD);
    // LP03 is not traceable: its frames to a traceable LPAR are never captured.
    tcp_send(&c, &a, "10.9.0.1", b"not-traceable");
    let (_, summary) = trace.stop();
    assert!(summary.contains("0 lost"), "{summary}");

    let frames = tshark_fields(
        &file,
        &[
            "frame.interface_name",
            "ip.src",
            "ip.dst",
            "tcp.payload",
            "frame.comment",
        ],
    );
    let _ = std::fs::remove_file(&file);
    assert!(!frames.is_empty(), "nothing captured: {summary}");
    let interfaces: std::collections::BTreeSet<&str> =
        frames.iter().map(|f| f[0].as_str()).collect();
    assert_eq!(
        interfaces.into_iter().collect::<Vec<_>>(),
        ["LP01/hsi0", "LP02/hsi0"],
        "{frames:?}"
    );
    assert!(
        frames
            .iter()
            .all(|f| f[1] != "10.9.0.3" && f[2] != "10.9.0.3"),
        "a frame of LP03 was captured: {frames:?}"
    );
    // The segment with the payload: once as LP01 sent it, once as LP02 received it.
    let with_payload: Vec<&Vec<String>> = frames
        .iter()
        .filter(|f| f[3].contains(&hex(PAYLOAD)))
        .collect();
    let seen_on: Vec<&str> = with_payload.iter().map(|f| f[0].as_str()).collect();
    assert_eq!(seen_on, ["LP01/hsi0", "LP02/hsi0"], "{frames:?}");
    assert!(with_payload
        .iter()
        .all(|f| f[1] == "10.9.0.1" && f[2] == "10.9.0.2"));
    // The handshake both ways, and no drops recorded without --drops.
    assert!(frames
        .iter()
        .any(|f| f[1] == "10.9.0.2" && f[0] == "LP01/hsi0"));
    assert!(frames.iter().all(|f| f[4].is_empty()), "{frames:?}");
}

#[test]
fn trace_with_drops_records_their_reasons_and_writes_to_stdout() {
    let fabric = TestFabric::up(traced_fabric());
    let trace = Trace::start(&fabric, &["--chpid", "F0", "--as", "LP03", "--drops"]);
    // Nobody has these addresses: no_destination, on the sender.
    assert!(!ping(&fabric.ns("a"), "10.9.0.99", 2, None));
    assert!(!ping(&fabric.ns("c"), "10.9.0.98", 2, None));
    assert!(ping(&fabric.ns("a"), "10.9.0.2", 1, None));
    let (stdout, summary) = trace.stop();
    let file = std::env::temp_dir().join(format!("{}-drops.pcapng", fabric.name));
    std::fs::write(&file, &stdout).expect("write capture");
    let frames = tshark_fields(
        &file,
        &["frame.interface_name", "ip.src", "ip.dst", "frame.comment"],
    );
    let _ = std::fs::remove_file(&file);
    let drops: Vec<&Vec<String>> = frames.iter().filter(|f| !f[3].is_empty()).collect();
    assert_eq!(drops.len(), 2, "{frames:?} ({summary})");
    for d in &drops {
        assert_eq!(d[0], "LP01/hsi0");
        assert_eq!(d[2], "10.9.0.99");
        assert!(d[3].contains("no_destination"), "{d:?}");
    }
    // LP03 is not traceable: not even its drops. The delivered pings are there, no comment.
    assert!(frames.iter().all(|f| f[1] != "10.9.0.3"), "{frames:?}");
    assert!(frames.iter().any(|f| f[2] == "10.9.0.2" && f[3].is_empty()));
}

#[test]
fn trace_refusals_capture_nothing() {
    let fabric = TestFabric::up(traced_fabric());
    let file = std::env::temp_dir().join(format!("{}-refused.pcapng", fabric.name));
    let w = file.to_str().unwrap();
    for (args, expected) in [
        (vec!["--chpid", "F0", "--as", "LP01"], "not authorized"),
        (vec!["--chpid", "F7", "--as", "LP03"], "unknown CHPID F7"),
    ] {
        let mut args = args.clone();
        args.extend_from_slice(&["-w", w]);
        let out = fabric.iqd("trace", &args);
        assert!(!out.status.success());
        assert!(text(&out).contains(expected), "{}", text(&out));
        assert!(!file.exists(), "a refused trace wrote {w}");
    }
    let trace = Trace::start(&fabric, &["--chpid", "F0", "--as", "LP03"]);
    let out = fabric.iqd("trace", &["--chpid", "F0", "--as", "LP03", "-w", w]);
    assert!(!out.status.success());
    assert!(text(&out).contains("already active"), "{}", text(&out));
    assert!(!file.exists());
    // A trace killed outright leaves no lock or traced port behind: the next one runs.
    drop(trace);
    let trace = Trace::start(&fabric, &["--chpid", "F0", "--as", "LP03"]);
    assert!(ping(&fabric.ns("a"), "10.9.0.2", 1, None));
    let (stdout, summary) = trace.stop();
    // The echo and its reply, each on both NICs.
    assert!(
        summary.contains(" 4 frames captured, 0 lost"),
        "{summary} ({} bytes)",
        stdout.len()
    );
    // `down` leaves none of the trace's lock files.
    let prefix = format!("{}.trace", fabric.name);
    drop(fabric);
    let left: Vec<String> = std::fs::read_dir("/run/iqd/locks")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
