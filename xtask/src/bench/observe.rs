//! The observe part of the benchmark (`--observe`): what `iqd trace` and `iqd metrics` cost.
//!
//! - Trace: TCP throughput (iperf3, one stream) and request/response latency (sockperf
//!   ping-pong) between two LPARs on iqd's default data path, with no trace and with a trace
//!   of both LPARs at snaplen 128 running, interleaved round by round (order alternating), the
//!   per-packet cost of iqd's tc program (a ping flood, BPF statistics), and the frames each
//!   trace captured and lost.
//! - Scrape: `iqd metrics` on a fabric of 85 LPARs with 2 NICs each (CHPIDs F0 and F1): the
//!   time of a scrape over HTTP (GET /metrics on a running server) and of `iqd metrics --once`
//!   (a whole process), and the scrape's size.
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use super::{
    env::{Builder, Family, Kind},
    measure,
};
use crate::util::Cmd;

/// The MTU of the trace figures: the default CHPID's (MFS 16K).
const TRACE_MTU: u32 = 8192;
const SNAPLEN: &str = "128";
/// The scrape fabric: LPARs, each with a NIC on F0 and on F1.
const SCRAPE_LPARS: usize = 85;
const SCRAPES: usize = 20;

#[derive(Clone, Debug, Serialize)]
pub struct TraceSample {
    pub round: u32,
    pub traced: bool,
    pub gbit_per_s: f64,
    pub rr_p50_us: f64,
    pub rr_p99_us: f64,
    /// Nanoseconds per run of iqd's tc program (a ping flood of small frames, BPF statistics).
    pub prog_ns: f64,
    /// With a trace: frames it wrote and frames it reported lost.
    pub captured: Option<u64>,
    pub lost: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ScrapeFigures {
    pub lpars: usize,
    pub nics: usize,
    pub bytes: usize,
    pub series: usize,
    /// GET /metrics on a running `iqd metrics`, milliseconds.
    pub http_ms: Vec<f64>,
    /// `iqd metrics --once`, a whole process, milliseconds.
    pub once_ms: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Figures {
    pub trace: Vec<TraceSample>,
    pub scrape: Option<ScrapeFigures>,
}

/// A child process killed (by pid) on drop.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: our own child, by pid.
            unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGKILL) };
        }
        let _ = self.0.wait();
    }
}

pub fn measure(iqd: &Path, work_dir: &Path, rounds: u32, seconds: u32) -> Result<Figures> {
    let trace = trace_figures(iqd, work_dir, rounds, seconds)?;
    let scrape = scrape_figures(iqd, work_dir)?;
    Ok(Figures {
        trace,
        scrape: Some(scrape),
    })
}

fn trace_figures(
    iqd: &Path,
    work_dir: &Path,
    rounds: u32,
    seconds: u32,
) -> Result<Vec<TraceSample>> {
    let mut builder = Builder::new(Some(iqd.to_path_buf()), work_dir.to_path_buf());
    let mut env = builder.build(Kind::IqdTc, TRACE_MTU, 2, false)?;
    let config = env
        .config()
        .context("the iqd system has no fabric file")?
        .to_path_buf();
    // Both LPARs traceable, L0 the CHPID's analyzer: a config change only.
    let text = std::fs::read_to_string(&config)?
        .replacen("id = \"F0\"\n", "id = \"F0\"\nanalyzer = \"L0\"\n", 1)
        .replace("\nnetns = ", "\ntraceable = true\nnetns = ");
    std::fs::write(&config, text)?;
    let up = Cmd::new(iqd)
        .arg("up")
        .arg("--config")
        .arg(&config)
        .quiet()
        .output()?;
    if !up.status.success() {
        bail!(
            "iqd up (traceable): {}",
            String::from_utf8_lossy(&up.stderr).trim()
        );
    }
    measure::start_servers(&mut env)?;
    let _stats = measure::BpfStatsOn::new()?;
    let mut samples = Vec::new();
    for round in 0..rounds {
        for traced in [round % 2 == 1, round % 2 == 0] {
            eprintln!(
                "bench: observe: round {}/{rounds}, {}",
                round + 1,
                if traced { "traced" } else { "no trace" }
            );
            let trace = if traced {
                Some(start_trace(iqd, &config, work_dir)?)
            } else {
                None
            };
            let (tcp, _) = measure::tcp(&env, Family::V4, 1, seconds)?;
            let latency = measure::latency(&env, seconds)?;
            let prog_ns = measure::prog_ns_per_run(&env, Family::V4, seconds)?;
            let (captured, lost) = match trace {
                Some(trace) => {
                    let (captured, lost) = stop_trace(trace)?;
                    (Some(captured), Some(lost))
                }
                None => (None, None),
            };
            samples.push(TraceSample {
                round,
                traced,
                gbit_per_s: tcp.gbit_per_s,
                rr_p50_us: latency.p50_us,
                rr_p99_us: latency.p99_us,
                prog_ns,
                captured,
                lost,
            });
        }
    }
    drop(env);
    Ok(samples)
}

fn start_trace(iqd: &Path, config: &Path, work_dir: &Path) -> Result<Started> {
    let file = work_dir.join("trace.pcapng");
    let mut child = Cmd::new(iqd)
        .args(["trace", "--config"])
        .arg(config)
        .args(["--chpid", "F0", "--as", "L0", "--snaplen", SNAPLEN, "-w"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stderr = child.stderr.take().context("trace stderr")?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stderr.read(&mut byte)? == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    child.stderr = Some(stderr);
    let started = Started(child);
    if !String::from_utf8_lossy(&line).contains("tracing CHPID") {
        bail!(
            "iqd trace did not start: {}",
            String::from_utf8_lossy(&line)
        );
    }
    Ok(started)
}

/// Stops a trace with SIGINT: (frames captured, lost), from its last line.
fn stop_trace(mut trace: Started) -> Result<(u64, u64)> {
    // SAFETY: our own child, by pid.
    unsafe { libc::kill(trace.0.id() as libc::pid_t, libc::SIGINT) };
    let mut text = String::new();
    if let Some(mut err) = trace.0.stderr.take() {
        err.read_to_string(&mut text)?;
    }
    trace.0.wait()?;
    // "iqd trace: N frames captured, M lost (...)"
    let words: Vec<&str> = text.split_whitespace().collect();
    let number_before = |word: &str| {
        words
            .iter()
            .position(|w| w.trim_end_matches(',') == word)
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| words[i].parse::<u64>().ok())
    };
    let captured = number_before("captured").or_else(|| {
        words
            .iter()
            .position(|w| *w == "frames")
            .and_then(|i| words[i - 1].parse().ok())
    });
    match (captured, number_before("lost")) {
        (Some(c), Some(l)) => Ok((c, l)),
        _ => bail!("iqd trace ended without its summary: {text}"),
    }
}

/// The scrape fabric's file: `SCRAPE_LPARS` LPARs with a NIC on F0 and one on F1.
fn scrape_file(name: &str) -> String {
    let mut toml = format!(
        "[fabric]\nname = \"{name}\"\n\n[[chpid]]\nid = \"F0\"\n\n[[chpid]]\nid = \"F1\"\n\n"
    );
    for i in 0..SCRAPE_LPARS {
        toml.push_str(&format!(
            "[[lpar]]\nname = \"L{i}\"\nnetns = \"{name}-{i}\"\n[[lpar.nic]]\nchpid = \"F0\"\n\
             ipv4 = [\"10.60.0.{}/24\"]\n[[lpar.nic]]\nchpid = \"F1\"\nipv4 = [\"10.61.0.{}/24\"]\n\n",
            i + 1,
            i + 1
        ));
    }
    toml
}

/// A fabric brought up with `iqd up`, taken down on drop.
struct Fabric<'a> {
    iqd: &'a Path,
    config: PathBuf,
}

impl Drop for Fabric<'_> {
    fn drop(&mut self) {
        let _ = Cmd::new(self.iqd)
            .args(["down", "--config"])
            .arg(&self.config)
            .quiet()
            .output();
        let _ = std::fs::remove_file(&self.config);
    }
}

fn scrape_figures(iqd: &Path, work_dir: &Path) -> Result<ScrapeFigures> {
    let name = format!("is{:x}", std::process::id() & 0xffff);
    let config = work_dir.join(format!("{name}.toml"));
    std::fs::write(&config, scrape_file(&name))?;
    let fabric = Fabric { iqd, config };
    eprintln!("bench: observe: bringing up {SCRAPE_LPARS} LPARs x 2 NICs for the scrape");
    let up = Cmd::new(iqd)
        .arg("up")
        .arg("--config")
        .arg(&fabric.config)
        .quiet()
        .output()?;
    if !up.status.success() {
        bail!(
            "iqd up (scrape fabric): {}",
            String::from_utf8_lossy(&up.stderr).trim()
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _server = Started(
        Cmd::new(iqd)
            .args(["metrics", "--config"])
            .arg(&fabric.config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("iqd metrics did not listen on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut http_ms = Vec::new();
    let mut body = String::new();
    for _ in 0..SCRAPES {
        let started = Instant::now();
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        http_ms.push(started.elapsed().as_secs_f64() * 1e3);
        body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
    }
    let mut once_ms = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let out = Cmd::new(iqd)
            .args(["metrics", "--once", "--config"])
            .arg(&fabric.config)
            .quiet()
            .output()?;
        once_ms.push(started.elapsed().as_secs_f64() * 1e3);
        if !out.status.success() {
            bail!(
                "iqd metrics --once: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let series = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    if !body.contains("iqd_nic_sent_frames_total") {
        bail!("the scrape has no NIC series: {body:.200}");
    }
    Ok(ScrapeFigures {
        lpars: SCRAPE_LPARS,
        nics: SCRAPE_LPARS * 2,
        bytes: body.len(),
        series,
        http_ms,
        once_ms,
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The figures as a text table.
pub fn table(figures: &Figures) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Trace (iqd-tc, MTU {TRACE_MTU}, snaplen {SNAPLEN}; medians of {} rounds)\n",
        figures.trace.len() / 2
    ));
    out.push_str(&format!(
        "{:<10} {:>10} {:>10} {:>10} {:>8} {:>12} {:>8}\n",
        "", "TCP Gbit/s", "rr p50 us", "rr p99 us", "prog ns", "captured", "lost"
    ));
    for traced in [false, true] {
        let rows: Vec<&TraceSample> = figures
            .trace
            .iter()
            .filter(|s| s.traced == traced)
            .collect();
        let col =
            |f: fn(&TraceSample) -> f64| median(&mut rows.iter().map(|s| f(s)).collect::<Vec<_>>());
        let gbit = col(|s| s.gbit_per_s);
        let p50 = col(|s| s.rr_p50_us);
        let p99 = col(|s| s.rr_p99_us);
        let prog = col(|s| s.prog_ns);
        let captured: u64 = rows.iter().filter_map(|s| s.captured).sum();
        let lost: u64 = rows.iter().filter_map(|s| s.lost).sum();
        out.push_str(&format!(
            "{:<10} {:>10.2} {:>10.1} {:>10.1} {:>8.0} {:>12} {:>8}\n",
            if traced { "traced" } else { "no trace" },
            gbit,
            p50,
            p99,
            prog,
            if traced {
                captured.to_string()
            } else {
                "-".into()
            },
            if traced { lost.to_string() } else { "-".into() },
        ));
    }
    if let Some(s) = &figures.scrape {
        let (mut http, mut once) = (s.http_ms.clone(), s.once_ms.clone());
        out.push_str(&format!(
            "\nScrape ({} LPARs x 2 NICs: {} series, {} bytes)\n\
             GET /metrics: median {:.1} ms (of {}); iqd metrics --once: median {:.1} ms (of {})\n",
            s.lpars,
            s.series,
            s.bytes,
            median(&mut http),
            s.http_ms.len(),
            median(&mut once),
            s.once_ms.len()
        ));
    }
    out
}

/// Where the figures go: next to the other JSON files of the benchmark.
pub fn write_json(path: &Path, figures: &Figures) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(figures)?)
        .with_context(|| format!("could not write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scrape_fabric_has_two_nics_per_lpar() {
        let text = scrape_file("x");
        assert_eq!(text.matches("[[lpar]]").count(), SCRAPE_LPARS);
        assert_eq!(text.matches("[[lpar.nic]]").count(), 2 * SCRAPE_LPARS);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
