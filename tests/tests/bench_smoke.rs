//! Smoke test of the benchmark harness: a tiny `cargo xtask bench` run over every kind of
//! system must produce a well-formed table, JSON file and Markdown report. No timing is
//! asserted: speed is what the benchmark reports, not what tests check. Also checks the
//! benchmark's security-group rule sets with iqd's own fabric-file parser.

use std::{collections::BTreeSet, path::Path, process::Command};

use iqd_tests::iqd_bin;
use serde_json::Value;

/// The benchmark's rule-set generator, shared with xtask.
#[allow(dead_code)]
#[path = "../../xtask/src/bench/secgroups.rs"]
mod secgroups;

/// Every plain system, and the security-group systems with the most rules (the ones with fewer
/// rules are built the same way).
const SYSTEMS: [&str; 7] = [
    "iqd-xdp",
    "iqd-tc",
    "bridge",
    "macvlan",
    "veth",
    "iqd-sg250",
    "bridge-nft250",
];
/// What the security-group systems measure.
const SECGROUP_METRICS: [&str; 5] = ["tcp_1", "cpu_per_gbit", "rr_p50", "rr_p99", "tcp_crr"];

#[test]
fn the_bench_security_groups_parse_with_n_rules_per_group() {
    for n in secgroups::RULE_COUNTS {
        let groups = secgroups::groups(n);
        let text = secgroups::fabric_file(
            "benchsg",
            "16K",
            secgroups::DATAPATH,
            &["sga", "sgb"],
            Some(&groups),
        );
        let fabric = iqd::config::Fabric::parse(&text, Path::new("bench-sg.toml"))
            .unwrap_or_else(|e| panic!("{n} rules per group: {e}\n{text}"));
        // The security-group systems measure the data path a fabric gets by default.
        let default = iqd::config::Datapath::default();
        assert_eq!(
            fabric.datapath, default,
            "iqd-sgN must run on iqd's default data path"
        );
        for (g, rules) in groups.iter().enumerate() {
            let name = secgroups::group_name(g);
            let group = fabric
                .security_groups
                .iter()
                .find(|sg| sg.name == name)
                .unwrap_or_else(|| panic!("no group {name}"));
            assert_eq!(group.rules.len(), rules.len(), "{name} with n = {n}");
            if n > 0 {
                assert_eq!(group.rules.len(), n, "{name}");
            }
        }
        let names: Vec<String> = (0..secgroups::GROUPS).map(secgroups::group_name).collect();
        let nics: Vec<_> = fabric.lpars.iter().flat_map(|l| &l.nics).collect();
        assert_eq!(nics.len(), 2);
        for nic in nics {
            assert_eq!(nic.security_groups, names);
        }
        // The nftables rule set allows the same rules.
        let total: usize = groups.iter().map(Vec::len).sum();
        assert_eq!(
            secgroups::nft_allow_rules(&secgroups::nft_ruleset(&groups)),
            total
        );
    }
}

#[test]
fn a_tiny_bench_run_produces_a_table_json_and_report() {
    let dir = std::env::temp_dir().join(format!("iqd-bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    struct RemoveDir<'a>(&'a Path);
    impl Drop for RemoveDir<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0);
        }
    }
    let _cleanup = RemoveDir(&dir);
    let json_path = dir.join("bench.json");
    let docs_path = dir.join("performance.md");

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let output = Command::new(cargo)
        .current_dir(root)
        .args(["run", "--quiet", "--package", "xtask", "--", "bench"])
        .args(["--system", &SYSTEMS.join(",")])
        .args([
            "--mtu",
            "1500",
            "--rounds",
            "1",
            "--duration",
            "1",
            "--scale",
            "2",
        ])
        .arg("--iqd")
        .arg(iqd_bin())
        .arg("--json")
        .arg(&json_path)
        .arg("--docs")
        .arg(&docs_path)
        .output()
        .expect("run cargo xtask bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );

    // The table names every system and shows ratios to the bridge.
    for system in SYSTEMS {
        assert!(stdout.contains(system), "{system} missing from:\n{stdout}");
    }
    assert!(stdout.contains("1.00x"), "no ratio in:\n{stdout}");
    // Progress went to stderr.
    assert!(stderr.contains("round 1/1"), "no progress in:\n{stderr}");

    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("JSON file"))
            .expect("valid JSON");
    let samples = json["samples"].as_array().expect("samples array");
    let mut metrics = BTreeSet::new();
    let mut systems = BTreeSet::new();
    for sample in samples {
        let system = sample["system"].as_str().expect("system is a string");
        let metric = sample["metric"].as_str().expect("metric is a string");
        assert_eq!(sample["mtu"].as_u64(), Some(1500), "{sample}");
        assert_eq!(sample["round"].as_u64(), Some(0), "{sample}");
        let value = sample["value"].as_f64().expect("value is a number");
        assert!(value.is_finite() && value >= 0.0, "{sample}");
        assert!(!sample["unit"].as_str().expect("unit").is_empty() || metric.is_empty());
        systems.insert(system.to_string());
        metrics.insert(metric.to_string());
    }
    assert_eq!(systems, SYSTEMS.iter().map(|s| s.to_string()).collect());
    for system in ["iqd-sg250", "bridge-nft250"] {
        let measured: BTreeSet<&str> = samples
            .iter()
            .filter(|s| s["system"] == system)
            .filter_map(|s| s["metric"].as_str())
            .collect();
        assert_eq!(measured, SECGROUP_METRICS.into_iter().collect(), "{system}");
    }
    for metric in [
        "tcp_1",
        "tcp_4",
        "cpu_per_gbit",
        "udp64_pps",
        "udp64_loss",
        "udp1400_pps",
        "udp1400_loss",
        "rr_p50",
        "rr_p99",
        "tcp_crr",
        "scale2_up",
        "scale2_reachable",
        "scale2_tcp",
    ] {
        assert!(
            metrics.contains(metric),
            "no {metric} sample in {metrics:?}"
        );
    }
    // Every pair of the scale test reached every other.
    for sample in samples.iter().filter(|s| s["metric"] == "scale2_reachable") {
        assert_eq!(sample["value"].as_f64(), Some(100.0), "{sample}");
    }
    assert_eq!(json["failures"].as_array().map(Vec::len), Some(0));
    assert!(json["machine"]["kernel"].is_string());

    let report = std::fs::read_to_string(&docs_path).expect("Markdown report");
    assert!(report.contains("| iqd-xdp"), "{report}");
    assert!(report.contains("## Security groups"), "{report}");
    let sg = format!(
        "- **iqd-sg250**: iqd-{0} (iqd on its `{0}` data path)",
        secgroups::DATAPATH
    );
    assert!(report.contains(&sg), "{report}");
    assert!(stdout.contains("iqd-sgN against bridge-nftN"), "{stdout}");
    let chart = dir.join("performance").join("tcp_1.svg");
    let svg = std::fs::read_to_string(&chart).expect("tcp_1 chart");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(report.contains("performance/tcp_1.svg"));
}

/// `cargo xtask bench --mcast`, one short round: every system and case measured, the members
/// of each group reached and nobody else, and the part's section written into an existing
/// report (the rest of the report kept).
#[test]
fn a_tiny_mcast_run_measures_every_group_and_writes_its_section() {
    let dir = std::env::temp_dir().join(format!("iqd-bench-mcast-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    struct RemoveDir<'a>(&'a Path);
    impl Drop for RemoveDir<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0);
        }
    }
    let _cleanup = RemoveDir(&dir);
    let json_path = dir.join("mcast.json");
    let docs_path = dir.join("performance.md");
    std::fs::write(&docs_path, "# Performance\n\nThe full run's figures.\n").expect("report");

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let output = Command::new(cargo)
        .current_dir(root)
        .args([
            "run",
            "--quiet",
            "--package",
            "xtask",
            "--",
            "bench",
            "--mcast",
        ])
        .args([
            "--system",
            "iqd-tc,bridge",
            "--rounds",
            "1",
            "--duration",
            "1",
        ])
        .arg("--iqd")
        .arg(iqd_bin())
        .arg("--json")
        .arg(&json_path)
        .arg("--docs")
        .arg(&docs_path)
        .output()
        .expect("run cargo xtask bench --mcast");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench --mcast failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    for row in ["| iqd-tc | group of 4 |", "| bridge | unicast |"] {
        assert!(stdout.contains(row), "{row} missing from:\n{stdout}");
    }
    assert!(
        stdout.contains("iqd-tc: each receiver of 4 gets"),
        "{stdout}"
    );

    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("JSON file"))
            .expect("valid JSON");
    assert_eq!(json["frame_bytes"], 64);
    assert_eq!(json["failures"].as_array().map(Vec::len), Some(0));
    let samples = json["samples"].as_array().expect("samples array");
    for system in ["iqd-tc", "bridge"] {
        for receivers in [0u64, 1, 4, 16] {
            let sample = samples
                .iter()
                .find(|s| s["system"] == system && s["receivers"] == receivers)
                .unwrap_or_else(|| panic!("no {system} sample for {receivers}: {json}"));
            let rates = sample["receiver_pps"].as_array().expect("receiver_pps");
            // Every addressed receiver got frames (unicast: receiver 1 alone).
            assert_eq!(rates.len() as u64, receivers.max(1), "{sample}");
            assert!(
                rates.iter().all(|r| r.as_f64().unwrap_or(0.0) > 0.0),
                "{sample}"
            );
            // Non-members got (next to) nothing: a few frames of neighbour resolution at most.
            let delivered: f64 = rates.iter().filter_map(Value::as_f64).sum::<f64>()
                * sample["seconds"].as_f64().unwrap();
            let strays = sample["strays"].as_u64().unwrap() as f64;
            assert!(strays <= 0.01 * delivered, "{sample}");
        }
    }

    let report = std::fs::read_to_string(&docs_path).expect("report");
    assert!(report.starts_with("# Performance\n\nThe full run's figures.\n"));
    assert!(report.contains("## One-to-many delivery"), "{report}");
    assert!(report.contains("| iqd-tc | group of 16 |"), "{report}");
}
