//! Upgrade-safe pins: a fabric whose pinned maps another map layout wrote is refused by this
//! iqd's readers with what to run, and upgraded in place by its `up`, under traffic.
//!
//! The other layout comes from a test-only iqd (`IQD_SKEW_BIN`, built by `cargo xtask test`
//! with `IQD_TEST_LAYOUT_SKEW`: layout 1, a connection table of half the size), or from maps
//! pinned by hand with another key size.
use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use iqd_tests::{in_netns, ping, skew_bin, test_datapath, text, wait_until, TcpProbe, TestFabric};

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
         pinned, {CAPACITY} expected); this iqd uses layout 2: run `iqd up --config {}` to \
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
        up_out.contains("  upgraded pins:      layout 1 -> 2 (IQD_CONNTRACK replaced)\n"),
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
        "is pinned with map layout 2 (IQD_CONNTRACK: capacity 262144 pinned, 131072 expected)",
        "this iqd uses layout 1",
    ] {
        assert!(message.contains(part), "{message}");
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
        "\nupgrade under TCP (data path {}): `iqd up` upgrading layout 1 -> 2 took {:.0} ms \
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

#[test]
fn up_replaces_a_connection_table_of_another_key_and_says_the_connections_were_reset() {
    let fabric = TestFabric::up(TWO_LPARS);
    let a = fabric.ns("a");
    assert!(ping(&a, "10.9.0.2", 1, None));
    let pins = pins(&fabric);
    let key_size = std::mem::size_of::<iqd_common::CtKey>() as u32;
    let value_size = std::mem::size_of::<iqd_common::CtEntry>() as u32;

    // Another layout's connection table, 4 bytes shorter a key, with three connections.
    let table = bpf::create(
        "IQD_CONNTRACK",
        bpf::BPF_MAP_TYPE_LRU_HASH,
        key_size - 4,
        value_size,
        1024,
    );
    for n in 0..3u8 {
        let mut key = vec![0u8; key_size as usize - 4];
        key[0] = n + 1;
        bpf::update(table, &key, &vec![0u8; value_size as usize]);
    }
    fs::remove_file(pins.join("IQD_CONNTRACK")).expect("unpin the table");
    bpf::pin(table, &pins.join("IQD_CONNTRACK"));
    // And what an upgrade interrupted before its renames leaves: a staged map of a layout
    // that is no one's. The next `up` must not take it.
    fs::create_dir_all(pins.join("upgrade")).expect("staging directory");
    let leftover = bpf::create("IQD_CONNTRACK", bpf::BPF_MAP_TYPE_LRU_HASH, 4, 4, 16);
    bpf::pin(leftover, &pins.join("upgrade/IQD_CONNTRACK"));

    let out = fabric.iqd("status", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains(&format!(
            "(IQD_CONNTRACK: key {} bytes pinned, {key_size} expected, capacity 1024 pinned, \
             {CAPACITY} expected)",
            key_size - 4
        )),
        "{}",
        text(&out)
    );

    let up = fabric.iqd_ok("up");
    assert!(up.contains("(IQD_CONNTRACK replaced)"), "{up}");
    assert!(
        up.contains("  connections reset:  3 (layout changed)\n"),
        "{up}"
    );
    assert!(!pins.join("upgrade").exists(), "staging left behind");
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
