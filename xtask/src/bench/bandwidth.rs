//! The bandwidth part of the benchmark: TCP throughput through an LPAR with a bandwidth, as a
//! ratio to that bandwidth. One fabric per bandwidth on iqd's default data path: LP01 with
//! `bandwidth` and two NICs (CHPIDs F0 and F1), LP02 on F0 and LP03 on F1. One stream is LP02
//! sending to LP01; two streams are LP02 and LP03 sending to LP01 at once, one per NIC (the
//! NICs share the bandwidth). For each: the ratio of the run and of its highest one-second
//! interval to the bandwidth. One stream: as its receiver counted it. Two streams: what LP01's
//! two NICs received (their interface counters, read every second while both streams run), so
//! that the two clients' different start times do not count the first one's time alone twice.
use std::{net::Ipv4Addr, path::Path, thread};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::util::Cmd;

/// The bandwidths measured, in Gbit/s: those of the profiles.
pub const BANDWIDTHS_GBPS: [u64; 2] = [2, 10];

/// One measurement: a bandwidth, a stream count, a round.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct BandwidthSample {
    pub bandwidth_gbps: u64,
    pub streams: u32,
    pub round: u32,
    /// What the receivers got over the run, divided by the bandwidth.
    pub ratio: f64,
    /// The highest one-second interval (both streams summed), divided by the bandwidth.
    pub max_interval_ratio: f64,
}

/// The fabric file of the bandwidth fabric `name` (namespaces `<name>a`, `b`, `c`).
fn fabric_file(name: &str, gbps: u64) -> String {
    format!(
        "[fabric]\nname = \"{name}\"\n\n[[chpid]]\nid = \"F0\"\nmfs = \"64K\"\n\n[[chpid]]\n\
         id = \"F1\"\nmfs = \"64K\"\n\n[[lpar]]\nname = \"LP01\"\nnetns = \"{name}a\"\n\
         profile = \"mz2d-metal-16x512\"\nbandwidth = \"{gbps}Gbps\"\n[[lpar.nic]]\n\
         chpid = \"F0\"\nipv4 = [\"10.80.0.1/24\"]\n[[lpar.nic]]\nchpid = \"F1\"\n\
         ipv4 = [\"10.81.0.1/24\"]\n\n[[lpar]]\nname = \"LP02\"\nnetns = \"{name}b\"\n\
         [[lpar.nic]]\nchpid = \"F0\"\nipv4 = [\"10.80.0.2/24\"]\n\n[[lpar]]\nname = \"LP03\"\n\
         netns = \"{name}c\"\n[[lpar.nic]]\nchpid = \"F1\"\nipv4 = [\"10.81.0.3/24\"]\n"
    )
}

/// A fabric brought up for the measurement, with its iperf3 servers; down again on drop.
struct Fabric<'a> {
    iqd: &'a Path,
    config: std::path::PathBuf,
    name: String,
    servers: Vec<std::process::Child>,
}

impl Drop for Fabric<'_> {
    fn drop(&mut self) {
        for server in &mut self.servers {
            // SAFETY: our own child, by pid.
            unsafe { libc::kill(server.id() as libc::pid_t, libc::SIGKILL) };
            let _ = server.wait();
        }
        let _ = Cmd::new(self.iqd)
            .args(["down", "--config"])
            .arg(&self.config)
            .quiet()
            .output();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Runs an iperf3 client in `netns` against `server:port` for `seconds`; the receiver's rate of
/// the run and the sender's rate of each one-second interval, in bits per second.
fn iperf3(netns: &str, server: Ipv4Addr, port: u16, seconds: u32) -> Result<(f64, Vec<f64>)> {
    let output = Cmd::new("ip")
        .args(["netns", "exec", netns, "iperf3", "-c"])
        .arg(server.to_string())
        .args([
            "-p",
            &port.to_string(),
            "-t",
            &seconds.to_string(),
            "-i",
            "1",
            "-J",
        ])
        .quiet()
        .output()?;
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("iperf3 in {netns}: output is not JSON"))?;
    if !output.status.success() {
        bail!("iperf3 in {netns}: {}", json["error"]);
    }
    let total = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 JSON without end.sum_received")?;
    let intervals = json["intervals"]
        .as_array()
        .context("iperf3 JSON without intervals")?
        .iter()
        .filter_map(|i| i["sum"]["bits_per_second"].as_f64())
        .collect();
    Ok((total, intervals))
}

/// Bytes LP01's two NICs (`hsi0`, `hsi1` in `netns`) have received, as their counters say.
fn received(netns: &str) -> Result<u64> {
    let mut total = 0;
    for nic in ["hsi0", "hsi1"] {
        let text = Cmd::new("ip")
            .args(["netns", "exec", netns, "cat"])
            .arg(format!("/sys/class/net/{nic}/statistics/rx_bytes"))
            .quiet()
            .stdout_string()?;
        total += text
            .trim()
            .parse::<u64>()
            .with_context(|| format!("rx_bytes of {nic} in {netns}: {text:?}"))?;
    }
    Ok(total)
}

/// Waits until an iperf3 server listens on `port` in `netns`.
fn wait_listening(netns: &str, port: u16) -> Result<()> {
    for _ in 0..100 {
        let out = Cmd::new("ip")
            .args(["netns", "exec", netns, "ss", "-H", "-l", "-t", "-n"])
            .args(["sport", "=", &format!(":{port}")])
            .quiet()
            .output()?;
        if out.status.success() && !out.stdout.is_empty() {
            return Ok(());
        }
        thread::sleep(std::time::Duration::from_millis(50));
    }
    bail!("iperf3 server in {netns} on port {port} did not start")
}

/// Measures every bandwidth, one and two streams, `rounds` times of `seconds` each, with the
/// iqd binary `iqd`; fabric files go to `work_dir`, names start with `tag`.
pub fn measure(
    iqd: &Path,
    work_dir: &Path,
    tag: &str,
    rounds: u32,
    seconds: u32,
) -> Result<Vec<BandwidthSample>> {
    let mut samples = Vec::new();
    for gbps in BANDWIDTHS_GBPS {
        let name = format!("{tag}w{gbps}");
        let config = work_dir.join(format!("{name}.toml"));
        std::fs::write(&config, fabric_file(&name, gbps))
            .with_context(|| format!("could not write {}", config.display()))?;
        let mut fabric = Fabric {
            iqd,
            config: config.clone(),
            name: name.clone(),
            servers: Vec::new(),
        };
        Cmd::new(iqd)
            .args(["up", "--config"])
            .arg(&config)
            .quiet()
            .run()
            .with_context(|| format!("iqd up of the {gbps} Gbps fabric"))?;
        let a = format!("{}a", fabric.name);
        for (addr, port) in [("10.80.0.1", 5201u16), ("10.81.0.1", 5202)] {
            let child = std::process::Command::new("ip")
                .args(["netns", "exec", &a, "iperf3", "-s", "-B", addr, "-p"])
                .arg(port.to_string())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .context("could not start iperf3 -s")?;
            fabric.servers.push(child);
            wait_listening(&a, port)?;
        }
        let bandwidth = gbps as f64 * 1e9;
        for round in 0..rounds {
            super::check_interrupted()?;
            eprintln!(
                "bench: bandwidth {gbps} Gbps, round {}: one stream",
                round + 1
            );
            let (total, intervals) = iperf3(
                &format!("{}b", fabric.name),
                Ipv4Addr::new(10, 80, 0, 1),
                5201,
                seconds,
            )?;
            samples.push(BandwidthSample {
                bandwidth_gbps: gbps,
                streams: 1,
                round,
                ratio: total / bandwidth,
                max_interval_ratio: intervals.iter().copied().fold(0.0, f64::max) / bandwidth,
            });
            eprintln!(
                "bench: bandwidth {gbps} Gbps, round {}: two streams",
                round + 1
            );
            // Both run a second longer on each side than the window measured.
            let (b, c) = (format!("{}b", fabric.name), format!("{}c", fabric.name));
            let long = seconds + 2;
            let first = thread::spawn(move || iperf3(&b, Ipv4Addr::new(10, 80, 0, 1), 5201, long));
            let second = thread::spawn(move || iperf3(&c, Ipv4Addr::new(10, 81, 0, 1), 5202, long));
            thread::sleep(std::time::Duration::from_millis(1200));
            let mut readings = vec![(std::time::Instant::now(), received(&a)?)];
            for _ in 0..seconds {
                thread::sleep(std::time::Duration::from_secs(1));
                readings.push((std::time::Instant::now(), received(&a)?));
            }
            first
                .join()
                .map_err(|_| anyhow::anyhow!("iperf3 thread panicked"))??;
            second
                .join()
                .map_err(|_| anyhow::anyhow!("iperf3 thread panicked"))??;
            let rate = |(t0, b0): &(std::time::Instant, u64),
                        (t1, b1): &(std::time::Instant, u64)| {
                (b1 - b0) as f64 * 8.0 / t1.duration_since(*t0).as_secs_f64()
            };
            let highest = readings
                .windows(2)
                .map(|w| rate(&w[0], &w[1]))
                .fold(0.0, f64::max);
            let whole = rate(&readings[0], &readings[readings.len() - 1]);
            samples.push(BandwidthSample {
                bandwidth_gbps: gbps,
                streams: 2,
                round,
                ratio: whole / bandwidth,
                max_interval_ratio: highest / bandwidth,
            });
        }
        drop(fabric);
    }
    Ok(samples)
}

/// The table of a run: per bandwidth and stream count, the median ratio and the highest
/// interval.
pub fn table(samples: &[BandwidthSample]) -> String {
    let mut out = String::from(
        "| Bandwidth | Streams | TCP / bandwidth (median) | Highest 1-s interval / bandwidth | Rounds |\n\
         |---|---|---|---|---|\n",
    );
    for gbps in BANDWIDTHS_GBPS {
        for streams in [1, 2] {
            let mut ratios: Vec<f64> = samples
                .iter()
                .filter(|s| s.bandwidth_gbps == gbps && s.streams == streams)
                .map(|s| s.ratio)
                .collect();
            if ratios.is_empty() {
                continue;
            }
            ratios.sort_by(f64::total_cmp);
            let median = ratios[ratios.len() / 2];
            let highest = samples
                .iter()
                .filter(|s| s.bandwidth_gbps == gbps && s.streams == streams)
                .map(|s| s.max_interval_ratio)
                .fold(0.0, f64::max);
            let what = if streams == 1 {
                "1".to_string()
            } else {
                "2 (two NICs)".to_string()
            };
            out.push_str(&format!(
                "| {gbps} Gbps | {what} | {:.1}% | {:.1}% | {} |\n",
                median * 100.0,
                highest * 100.0,
                ratios.len()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_medians_and_the_highest_interval() {
        let sample = |gbps, streams, round, ratio, max| BandwidthSample {
            bandwidth_gbps: gbps,
            streams,
            round,
            ratio,
            max_interval_ratio: max,
        };
        let table = table(&[
            sample(2, 1, 0, 0.95, 0.99),
            sample(2, 1, 1, 0.97, 1.01),
            sample(2, 1, 2, 0.96, 0.98),
            sample(2, 2, 0, 0.94, 1.0),
        ]);
        assert!(
            table.contains("| 2 Gbps | 1 | 96.0% | 101.0% | 3 |"),
            "{table}"
        );
        assert!(
            table.contains("| 2 Gbps | 2 (two NICs) | 94.0% | 100.0% | 1 |"),
            "{table}"
        );
        assert!(!table.contains("10 Gbps"), "{table}");
    }

    #[test]
    fn the_fabric_file_limits_lp01_on_two_nics() {
        let text = fabric_file("ibw", 10);
        assert!(text.contains("bandwidth = \"10Gbps\""));
        assert_eq!(text.matches("[[lpar.nic]]").count(), 4);
    }
}
