//! Smoke test of the benchmark harness: a tiny `cargo xtask bench` run over every system must
//! produce a well-formed table, JSON file and Markdown report. No timing is asserted: speed is
//! what the benchmark reports, not what tests check.

use std::{collections::BTreeSet, path::Path, process::Command};

use iqd_tests::iqd_bin;
use serde_json::Value;

const SYSTEMS: [&str; 4] = ["iqd-xdp", "bridge", "macvlan", "veth"];

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
    let chart = dir.join("performance").join("tcp_1.svg");
    let svg = std::fs::read_to_string(&chart).expect("tcp_1 chart");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(report.contains("performance/tcp_1.svg"));
}
