//! Upgrade-safe pins: a fabric whose pinned maps another map layout wrote is refused by this
//! iqd's readers with what to run, and upgraded in place by its `up`, under traffic.
//!
//! The other layout comes from a test-only iqd (`IQD_SKEW_BIN`, built by `cargo xtask test`
//! with `IQD_TEST_LAYOUT_SKEW`: layout 1, a connection table of half the size), or from maps
//! pinned by hand with another key size.
use std::{
    fs,
    mem::size_of,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use iqd_common::{ct_flags, CtEntry, CtKey, LAYOUT_VERSION};

use iqd_tests::{
    in_netns, iqd_bin, ping, skew_bin, test_datapath, text, wait_until, TcpProbe, TestFabric,
};

const TWO_LPARS: &str = r#"
[fabric]
name = "{fabric}"

[[chpid]]
id = "F0"

[[lpar]]
name = "A"
netns = "{ns}a"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.9.0.1/24"]

[[lpar]]
name = "B"
netns = "{ns}b"
[[lpar.nic]]
chpid = "F0"
ipv4 = ["10.9.0.2/24"]
"#;

/// The connection table's capacity in this build and in the skewed one.
const CAPACITY: u32 = iqd_common::MAX_CONNTRACK;
const SKEWED_CAPACITY: u32 = 131_072;

/// The skewed iqd, or `None` (with a loud message) when `IQD_SKEW_BIN` is not set: plain
/// `cargo test` does not build it; `cargo xtask test` always does.
fn skewed() -> Option<PathBuf> {
    let bin = skew_bin();
    if bin.is_none() {
        eprintln!(
            "\n*** SKIPPED: IQD_SKEW_BIN is not set. `cargo xtask test` builds the iqd of another \
             map layout (target/skew) and sets it. ***\n"
        );
    }
    bin
}

/// The fabric, brought up by the skewed iqd.
fn up_with(bin: &Path) -> TestFabric {
    let fabric = TestFabric::write(TWO_LPARS);
    let out = fabric.iqd_at(bin, "up", &[]);
    assert!(out.status.success(), "skewed iqd up: {}", text(&out));
    fabric
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn pins(fabric: &TestFabric) -> PathBuf {
    Path::new("/sys/fs/bpf/iqd").join(&fabric.name)
}

#[test]
fn this_iqd_refuses_to_read_a_fabric_of_another_layout() {
    let Some(skew) = skewed() else { return };
    let fabric = up_with(&skew);
    let a = fabric.ns("a");
    assert!(
        ping(&a, "10.9.0.2", 2, None),
        "the skewed fabric carries frames"
    );

    let expected = format!(
        "iqd: fabric {} is pinned with map layout 1 (IQD_CONNTRACK: capacity {SKEWED_CAPACITY} \
         pinned, {CAPACITY} expected); this iqd uses layout {LAYOUT_VERSION}: run `iqd up --config {}` to \
         upgrade it in place",
        fabric.name,
        fabric.config.display()
    );
    for command in ["status", "stats", "conntrack"] {
        let out = fabric.iqd(command, &[]);
        assert_eq!(out.status.code(), Some(1), "iqd {command}: {}", text(&out));
        assert_eq!(stderr(&out).trim_end(), expected, "iqd {command}");
        assert!(
            out.stdout.is_empty(),
            "iqd {command} printed: {}",
            text(&out)
        );
    }
    // Refusing changed nothing: the skewed iqd still reads its fabric, which still carries.
    let out = fabric.iqd_at(&skew, "status", &[]);
    assert!(out.status.success(), "skewed status: {}", text(&out));
    assert!(ping(&a, "10.9.0.2", 2, None), "traffic after the refusals");
}

#[test]
fn an_interrupted_upgrade_leaves_the_old_fabric_running_and_the_next_up_completes_it() {
    let Some(skew) = skewed() else { return };
    let fabric = up_with(&skew);
    let a = fabric.ns("a");
    // The upgrade fails where its maps would replace the old pins (a debug build's failpoint);
    // the rollback runs into it again, so nothing completes.
    let out = std::process::Command::new(iqd_bin())
        .args(["up", "--config", fabric.config_arg()])
        .env("IQD_FAILPOINT", "commit the map layout")
        .output()
        .expect("run iqd up");
    assert!(
        !out.status.success(),
        "the failpoint did not fire: {}",
        text(&out)
    );
    assert!(
        stderr(&out).contains("commit the map layout"),
        "{}",
        text(&out)
    );

    // The old programs still run on the old maps: the fabric carries, its pins are layout 1's.
    assert!(
        ping(&a, "10.9.0.2", 2, None),
        "traffic after the interrupted upgrade"
    );
    let out = fabric.iqd("status", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("is pinned with map layout 1"),
        "{}",
        text(&out)
    );
    assert!(fabric.iqd_at(&skew, "status", &[]).status.success());

    // The next `up` does it all again, and completes it.
    let up = fabric.iqd_ok("up");
    assert!(
        up.contains(&format!(
            "  upgraded pins:      layout 1 -> {LAYOUT_VERSION} (IQD_CONNTRACK replaced)\n"
        )),
        "{up}"
    );
    assert!(
        !pins(&fabric).join("upgrade").exists(),
        "staging left behind"
    );
    assert!(fabric.iqd("status", &[]).status.success());
    assert!(ping(&a, "10.9.0.2", 2, None), "traffic after the upgrade");
}

/// One interval of an iperf3 report.
#[derive(Debug)]
struct Interval {
    start: f64,
    end: f64,
    bytes: u64,
}

fn intervals(report: &serde_json::Value) -> Vec<Interval> {
    report["intervals"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|i| Interval {
                    start: i["sum"]["start"].as_f64().unwrap_or(0.0),
                    end: i["sum"]["end"].as_f64().unwrap_or(0.0),
                    bytes: i["sum"]["bytes"].as_u64().unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn gbit(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 * 8.0 / seconds.max(1e-9) / 1e9
}

/// The longest run of consecutive intervals carrying less than `threshold` bytes: (seconds,
/// start of the run).
fn longest_stall(intervals: &[Interval], threshold: u64) -> (f64, f64) {
    let (mut best, mut best_start) = (0.0, 0.0);
    let mut run: Option<(f64, f64)> = None;
    for i in intervals {
        if i.bytes < threshold {
            let (start, _) = run.unwrap_or((i.start, i.start));
            run = Some((start, i.end));
            if i.end - start > best {
                best = i.end - start;
                best_start = start;
            }
        } else {
            run = None;
        }
    }
    (best, best_start)
}

#[test]
fn up_upgrades_a_fabric_of_another_layout_under_a_running_tcp_stream() {
    let Some(skew) = skewed() else { return };
    let mut fabric = up_with(&skew);
    let (a, b) = (fabric.ns("a"), fabric.ns("b"));
    // A tracked ICMP connection from before the upgrade (ICMP idles out after 30 s).
    assert!(ping(&a, "10.9.0.2", 2, None));
    fabric.iperf3_server(&b, "10.9.0.2");

    // Two streams from A to B: iperf3 at full speed (9 s, reported every 0.1 s by both
    // ends), and a paced probe (1 KiB every millisecond) whose receiver timestamps each read.
    // The upgrade runs at 3 s; a plain `up` (nothing to upgrade) at 6 s, for comparison.
    let probe = TcpProbe::start(&a, &b, "10.9.0.2", 7001, 1024, Duration::from_millis(1));
    let stream_start = Instant::now();
    let client_ns = a.clone();
    let client = std::thread::spawn(move || {
        in_netns(
            &client_ns,
            "iperf3",
            &[
                "-c",
                "10.9.0.2",
                "-t",
                "9",
                "-i",
                "0.1",
                "-J",
                "--get-server-output",
            ],
        )
    });
    std::thread::sleep(Duration::from_secs(3));
    let upgrade = timed(|| fabric.iqd("up", &[]));
    assert!(
        upgrade.out.status.success(),
        "iqd up (upgrade): {}",
        text(&upgrade.out)
    );
    let up_out = String::from_utf8_lossy(&upgrade.out.stdout).into_owned();
    assert!(
        up_out.contains(&format!(
            "  upgraded pins:      layout 1 -> {LAYOUT_VERSION} (IQD_CONNTRACK replaced)\n"
        )),
        "{up_out}"
    );
    let carried: u64 = up_out
        .lines()
        .find_map(|l| l.strip_prefix("  connections carried over: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no carried-over count: {up_out}"));
    // The ICMP echo, the probe, iperf3's control and data connections.
    assert!(carried >= 4, "carried over {carried}: {up_out}");
    std::thread::sleep(
        (stream_start + Duration::from_secs(6)).saturating_duration_since(Instant::now()),
    );
    let again = timed(|| fabric.iqd("up", &[]));
    assert!(
        again.out.status.success(),
        "iqd up (again): {}",
        text(&again.out)
    );
    assert!(
        !String::from_utf8_lossy(&again.out.stdout).contains("upgraded pins"),
        "{}",
        text(&again.out)
    );

    let out = client.join().expect("iperf3 thread");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 JSON: {e}: {}", text(&out)));
    assert!(
        out.status.success() && report.get("error").is_none(),
        "the stream did not survive the upgrade: {}",
        report["error"]
    );
    let received = report["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(received > 10_000_000, "only {received} bytes arrived");

    // The connections the old programs tracked are the ones the new table holds: opened
    // before the upgrade (a connection tracked anew would be younger than it).
    let out = fabric.iqd("conntrack", &["--json"]);
    assert!(out.status.success(), "conntrack: {}", text(&out));
    let table: serde_json::Value = serde_json::from_slice(&out.stdout).expect("conntrack JSON");
    assert_eq!(table["summary"]["capacity"], CAPACITY, "{table}");
    let since_upgrade = upgrade.start.elapsed().as_secs_f64();
    let old = |protocol: &str, port: Option<u64>| {
        table["connections"]
            .as_array()
            .expect("connections")
            .iter()
            .any(|c| {
                c["protocol"] == protocol
                    && port.is_none_or(|p| c["destination_port"] == p)
                    && c["age_s"].as_f64().unwrap_or(0.0) > since_upgrade
            })
    };
    for (protocol, port) in [("tcp", Some(5201)), ("tcp", Some(7001)), ("icmp", None)] {
        assert!(
            old(protocol, port),
            "no {protocol} connection ({port:?}) from before the upgrade: {table}"
        );
    }
    let probe = probe.finish().expect("the probe stream survived");
    assert_eq!(probe.received, probe.sent, "the probe lost bytes");

    // This iqd reads the fabric now; the skewed one refuses it, as this one did before.
    for command in ["status", "stats"] {
        let out = fabric.iqd(command, &[]);
        assert!(out.status.success(), "iqd {command}: {}", text(&out));
    }
    let stats = fabric.nic_stats("A", "hsi0");
    assert!(stats["tx_bytes"].as_u64() > Some(0), "{stats}");
    let out = fabric.iqd_at(&skew, "status", &[]);
    assert_eq!(out.status.code(), Some(1), "skewed status: {}", text(&out));
    let message = stderr(&out);
    for part in [
        format!(
            "is pinned with map layout {LAYOUT_VERSION} (IQD_CONNTRACK: capacity 262144 pinned, \
             131072 expected)"
        ),
        "this iqd uses layout 1".to_string(),
    ] {
        assert!(message.contains(&part), "{message}");
    }
    assert!(
        !pins(&fabric).join("upgrade").exists(),
        "staging left behind"
    );
    assert!(ping(&a, "10.9.0.2", 2, None), "traffic after the upgrade");

    // The traffic gap. The probe's longest silence while each `up` ran (and half a second
    // after, for a retransmission to show), beside an undisturbed stretch of the same length;
    // and iperf3's receiver intervals: the lowest, and the longest run below 10% of the median.
    let settle = Duration::from_millis(500);
    // The silence, and where it began from the start of the `up` (the links swap at its end).
    let silence = |w: &Timed| {
        let (length, start) = probe.longest_silence(w.start, w.end + settle);
        format!("{:.1} ms (from +{:.0} ms)", ms(length), ms(start - w.start))
    };
    let quiet_start = stream_start + Duration::from_millis(1000);
    let (quiet, _) = probe.longest_silence(
        quiet_start,
        quiet_start + (upgrade.end - upgrade.start) + settle,
    );
    let receiver = intervals(&report["server_output_json"]);
    let measured = if receiver.is_empty() {
        intervals(&report)
    } else {
        receiver
    };
    let mut rates: Vec<u64> = measured.iter().map(|i| i.bytes).collect();
    rates.sort_unstable();
    let median = rates.get(rates.len() / 2).copied().unwrap_or(0);
    let (stall, stall_at) = longest_stall(&measured, median / 10);
    let lowest = measured
        .iter()
        .min_by_key(|i| i.bytes)
        .map(|i| {
            format!(
                "{:.2} Gbit/s at {:.1}-{:.1} s",
                gbit(i.bytes, i.end - i.start),
                i.start,
                i.end
            )
        })
        .unwrap_or_else(|| "-".into());
    let at = |t: Instant| (t - stream_start).as_secs_f64();
    eprintln!(
        "\nupgrade under TCP (data path {}): `iqd up` upgrading layout 1 -> {LAYOUT_VERSION} took {:.0} ms \
         ({:.2}-{:.2} s into the streams), a plain `iqd up` {:.0} ms ({:.2}-{:.2} s). Longest \
         silence of the paced probe (1 KiB/ms): upgrade {}, plain up {}, undisturbed \
         {:.1} ms. iperf3 receiver, 0.1 s intervals: median {:.2} Gbit/s, lowest \
         {lowest}, longest run below 10% of the median {stall:.1} s{}; {received} bytes in \
         9 s.\n",
        test_datapath().unwrap_or_else(|| "default".into()),
        ms(upgrade.end - upgrade.start),
        at(upgrade.start),
        at(upgrade.end),
        ms(again.end - again.start),
        at(again.start),
        at(again.end),
        silence(&upgrade),
        silence(&again),
        ms(quiet),
        gbit(median, 0.1),
        if stall > 0.0 {
            format!(" (from {stall_at:.1} s)")
        } else {
            String::new()
        }
    );
}

/// A command with the times it started and ended.
struct Timed {
    start: Instant,
    end: Instant,
    out: std::process::Output,
}

fn timed(run: impl FnOnce() -> std::process::Output) -> Timed {
    let start = Instant::now();
    let out = run();
    Timed {
        start,
        end: Instant::now(),
        out,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Raw `bpf(2)` calls to pin a map of a layout no iqd has (aya makes maps only from an object).
mod bpf {
    use std::{ffi::CString, io, path::Path};

    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    const BPF_OBJ_PIN: libc::c_long = 6;
    pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;

    fn call(cmd: libc::c_long, attr: &[u64; 16]) -> io::Result<i64> {
        // SAFETY: `attr` is a zero-filled `union bpf_attr` prefix of 128 bytes whose pointers
        // outlive the call.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_ptr(), 128usize) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    }

    /// Creates a map named `name` and returns its fd (left open: the test process ends soon).
    pub fn create(name: &str, map_type: u32, key: u32, value: u32, entries: u32) -> i32 {
        let mut attr = [0u64; 16];
        attr[0] = u64::from(map_type) | u64::from(key) << 32;
        attr[1] = u64::from(value) | u64::from(entries) << 32;
        // map_name: 16 bytes at offset 28.
        // SAFETY: the 16 u64s are 128 initialised bytes, borrowed mutably only here.
        let bytes = unsafe { std::slice::from_raw_parts_mut(attr.as_mut_ptr() as *mut u8, 128) };
        bytes[28..28 + name.len()].copy_from_slice(name.as_bytes());
        call(BPF_MAP_CREATE, &attr).expect("BPF_MAP_CREATE") as i32
    }

    pub fn update(fd: i32, key: &[u8], value: &[u8]) {
        let mut attr = [0u64; 16];
        attr[0] = fd as u32 as u64;
        attr[1] = key.as_ptr() as u64;
        attr[2] = value.as_ptr() as u64;
        call(BPF_MAP_UPDATE_ELEM, &attr).expect("BPF_MAP_UPDATE_ELEM");
    }

    pub fn pin(fd: i32, path: &Path) {
        use std::os::unix::ffi::OsStrExt as _;
        let path = CString::new(path.as_os_str().as_bytes()).expect("path");
        let mut attr = [0u64; 16];
        attr[0] = path.as_ptr() as u64;
        attr[1] = fd as u32 as u64;
        call(BPF_OBJ_PIN, &attr).expect("BPF_OBJ_PIN");
    }
}

/// The port ifindex of LPAR `lpar`'s first NIC, in the fabric namespace.
fn port_ifindex(fabric: &TestFabric, lpar: &str) -> u32 {
    let out = fabric.iqd("status", &["--json"]);
    assert!(out.status.success(), "status: {}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let port = status["lpars"]
        .as_array()
        .expect("lpars")
        .iter()
        .find(|l| l["lpar"] == lpar)
        .and_then(|l| l["nics"][0]["port"].as_str())
        .unwrap_or_else(|| panic!("no port of {lpar}: {status}"))
        .to_string();
    let out = in_netns(
        &format!("iqd-{}", fabric.name),
        "ip",
        &["-j", "link", "show", &port],
    );
    let link: serde_json::Value = serde_json::from_slice(&out.stdout).expect("link JSON");
    link[0]["ifindex"].as_u64().expect("ifindex") as u32
}

fn bytes_of<T: Copy>(value: &T) -> Vec<u8> {
    // SAFETY: the iqd_common map types are repr(C) plain data with explicit padding.
    unsafe { std::slice::from_raw_parts(value as *const T as *const u8, size_of::<T>()) }.to_vec()
}

/// Replaces the fabric's connection table pin with a table of `key_size`-byte keys holding
/// `entries`, as another layout's iqd would have left it, and leaves a staged map of yet
/// another layout behind, as an upgrade interrupted before its renames would: the next `up`
/// must not take it.
fn pin_foreign_table(fabric: &TestFabric, key_size: u32, entries: &[(Vec<u8>, CtEntry)]) {
    let pins = pins(fabric);
    let value_size = size_of::<CtEntry>() as u32;
    let table = bpf::create(
        "IQD_CONNTRACK",
        bpf::BPF_MAP_TYPE_LRU_HASH,
        key_size,
        value_size,
        1024,
    );
    for (key, entry) in entries {
        assert_eq!(key.len(), key_size as usize);
        bpf::update(table, key, &bytes_of(entry));
    }
    fs::remove_file(pins.join("IQD_CONNTRACK")).expect("unpin the table");
    bpf::pin(table, &pins.join("IQD_CONNTRACK"));
    fs::create_dir_all(pins.join("upgrade")).expect("staging directory");
    let leftover = bpf::create("IQD_CONNTRACK", bpf::BPF_MAP_TYPE_LRU_HASH, 4, 4, 16);
    bpf::pin(leftover, &pins.join("upgrade/IQD_CONNTRACK"));
}

#[test]
fn up_converts_a_layout_1_connection_table_adding_the_segment() {
    let fabric = TestFabric::up(TWO_LPARS);
    let (a_port, b_port) = (port_ifindex(&fabric, "A"), port_ifindex(&fabric, "B"));
    let now = iqd::dataplane::ktime_ns();
    let entry = |origin, reply| CtEntry {
        origin_ifindex: origin,
        reply_ifindex: reply,
        created_ns: now,
        last_seen_ns: now,
        origin_packets: 3,
        reply_packets: 2,
        flags: ct_flags::REPLIED,
        _pad: 0,
    };
    // Layout 1's key: saddr, daddr, sport, dport, proto, 3 bytes of padding.
    let v1_key = |sport: u16, dport: u16| {
        let mut key = vec![10, 9, 0, 1, 10, 9, 0, 2];
        key.extend_from_slice(&sport.to_ne_bytes());
        key.extend_from_slice(&dport.to_ne_bytes());
        key.extend_from_slice(&[6, 0, 0, 0]);
        key
    };
    pin_foreign_table(
        &fabric,
        16,
        &[
            (v1_key(40000, 80), entry(a_port, b_port)),
            // A port that is gone: nothing gives this one a segment.
            (v1_key(40001, 80), entry(999_999, b_port)),
        ],
    );
    // Pins of an iqd before layouts were recorded.
    fs::remove_file(pins(&fabric).join("IQD_LAYOUT")).expect("unpin the layout record");
    let key_size = size_of::<CtKey>();

    let out = fabric.iqd("conntrack", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains(&format!(
            "is pinned with map layout 1 (IQD_CONNTRACK: key 16 bytes pinned, {key_size} \
             expected, capacity 1024 pinned, {CAPACITY} expected)"
        )),
        "{}",
        text(&out)
    );

    let up = fabric.iqd_ok("up");
    assert!(
        up.contains(&format!(
            "  upgraded pins:      layout 1 -> {LAYOUT_VERSION} (IQD_CONNTRACK replaced; \
             IQD_LAYOUT created)\n"
        )),
        "{up}"
    );
    assert!(up.contains("  connections carried over: 1\n"), "{up}");
    assert!(
        !pins(&fabric).join("upgrade").exists(),
        "staging left behind"
    );

    let out = fabric.iqd("conntrack", &["--json"]);
    assert!(out.status.success(), "conntrack: {}", text(&out));
    let table: serde_json::Value = serde_json::from_slice(&out.stdout).expect("conntrack JSON");
    let connections = table["connections"].as_array().expect("connections");
    let converted: Vec<&serde_json::Value> = connections
        .iter()
        .filter(|c| c["destination_port"] == 80)
        .collect();
    let [c] = converted.as_slice() else {
        panic!("expected the one convertible connection: {table}")
    };
    for (field, value) in [
        ("origin", "A/hsi0"),
        ("reply", "B/hsi0"),
        ("chpid", "F0"),
        ("protocol", "tcp"),
        ("source", "10.9.0.1"),
        ("destination", "10.9.0.2"),
        ("state", "established"),
    ] {
        assert_eq!(c[field], value, "{field}: {c}");
    }
    assert_eq!(c["source_port"], 40000, "{c}");
    assert_eq!(c["origin_packets"], 3, "{c}");
    assert!(
        ping(&fabric.ns("a"), "10.9.0.2", 2, None),
        "traffic after the upgrade"
    );
}

#[test]
fn up_resets_a_connection_table_of_no_known_layout_and_says_so() {
    let fabric = TestFabric::up(TWO_LPARS);
    let a = fabric.ns("a");
    assert!(ping(&a, "10.9.0.2", 1, None));
    // A key no layout has: 8 bytes shorter than this one's, three connections.
    let key_size = size_of::<CtKey>() as u32 - 8;
    let entries: Vec<(Vec<u8>, CtEntry)> = (1..=3u8)
        .map(|n| {
            let mut key = vec![0u8; key_size as usize];
            key[0] = n;
            (key, CtEntry::default())
        })
        .collect();
    pin_foreign_table(&fabric, key_size, &entries);

    let out = fabric.iqd("status", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains(&format!(
            "(IQD_CONNTRACK: key {key_size} bytes pinned, {} expected, capacity 1024 pinned, \
             {CAPACITY} expected)",
            size_of::<CtKey>()
        )),
        "{}",
        text(&out)
    );

    let up = fabric.iqd_ok("up");
    assert!(
        up.contains(&format!(
            "  upgraded pins:      layout {LAYOUT_VERSION} -> {LAYOUT_VERSION} (IQD_CONNTRACK \
             replaced)\n"
        )),
        "{up}"
    );
    assert!(
        up.contains("  connections reset:  3 (layout changed)\n"),
        "{up}"
    );
    assert!(
        !pins(&fabric).join("upgrade").exists(),
        "staging left behind"
    );
    // The new table is the one pinned, and the one the programs use.
    assert!(ping(&a, "10.9.0.2", 2, None), "traffic after the upgrade");
    wait_until(Duration::from_secs(2), || {
        let out = fabric.iqd("conntrack", &["--json"]);
        let table: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        table["connections"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["protocol"] == "icmp"))
    })
    .expect("the new table tracks the ping");
    // An `up` of a current fabric has nothing to upgrade.
    let again = fabric.iqd_ok("up");
    assert!(!again.contains("upgraded pins"), "{again}");
}
