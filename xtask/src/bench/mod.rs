//! `cargo xtask bench`: iqd against the Linux bridge, macvlan and a direct veth pair, measured
//! side by side in one run.
//!
//! Every system is built in namespaces the benchmark creates (see [`env`]). Rounds interleave
//! the systems: within a round each figure is measured once per system, back to back, with the
//! system order rotated from round to round, so that a noisy neighbour hits all systems alike and
//! ratios can be paired within a round.

mod bandwidth;
mod env;
mod mcast;
mod measure;
mod observe;
mod report;
mod secgroups;
mod stats;
mod svg;

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde::Serialize;

use crate::{setup, util};
use env::{Builder, Env, Family, Kind};
use stats::Sample;

/// The MTUs measured by default: Ethernet's, and the CHPID MTUs of MFS 16K and 64K.
const DEFAULT_MTUS: [u32; 3] = [1500, 8192, 57344];

/// The MTUs at which the security-group systems are measured, of those in the run, unless
/// --mtu names the MTUs.
const SECGROUP_MTUS: [u32; 2] = [1500, 57344];

/// The MTUs of the IPv6 figures, of those in the run, unless --mtu names the MTUs.
const V6_MTUS: [u32; 2] = [1500, 57344];

/// IPv6's minimum link MTU: no IPv6 figure below it.
const V6_MIN_MTU: u32 = 1280;

/// The systems that measure the IPv6 figures unless --family is given: iqd on its default data
/// path, the bridge and the veth pair.
const V6_SYSTEMS: [Kind; 3] = [Kind::IqdTc, Kind::Bridge, Kind::Veth];

/// The LPAR counts of the scale test by default: the smallest fabric and the largest, 85 being
/// the machine's limit of LPARs (and so of LPARs on one CHPID). 16 (the quick run's) is left
/// out to keep the full run near 30 minutes with the IPv6 figures; `--scale 2,16,85` adds it
/// back (about 1.5 minutes).
const DEFAULT_SCALE: [u32; 2] = [2, 85];

#[derive(Args)]
pub struct Options {
    /// Short run (at most about 4 minutes): 3 rounds of 1-second runs at MTU 57344 only, the
    /// scale test at 16 LPARs, and of the security-group systems only iqd-sg250 and
    /// bridge-nft250, unless --system, --mtu, --rounds, --duration or --scale say otherwise.
    #[arg(long)]
    quick: bool,

    /// Systems to measure, comma-separated: iqd-xdp, iqd-tc, bridge, macvlan, veth, iqd-sg0,
    /// iqd-sg50, iqd-sg250 (iqd-tc with security groups), bridge-nft0, bridge-nft50,
    /// bridge-nft250, and (only when named) iqd-afxdp, iqd-tc-baseline (with --baseline-iqd)
    /// and iqd-vlan (iqd-tc with both NICs in a VLAN) [default: all but those three].
    /// Ratios need `bridge` (and `veth`) in the run.
    #[arg(long, value_delimiter = ',', value_name = "NAME")]
    system: Vec<String>,

    /// MTUs to measure at, comma-separated, 576-57344 [default: 1500,8192,57344].
    #[arg(long, value_delimiter = ',', value_name = "BYTES")]
    mtu: Vec<u32>,

    /// Repetitions of every figure [default: 5, quick: 3].
    #[arg(long, value_name = "N")]
    rounds: Option<u32>,

    /// Seconds per iperf3 and sockperf run [default: 2, quick: 1].
    #[arg(long, value_name = "SECONDS")]
    duration: Option<u32>,

    /// LPAR counts for the scale test, comma-separated, 2-250; 0 skips it
    /// [default: 2,85, quick: 16].
    #[arg(long, value_delimiter = ',', value_name = "N")]
    scale: Vec<u32>,

    /// Address families to measure, comma-separated: 4, 6 [default: 4,6]. IPv6 figures (TCP 1
    /// stream and request/response at MTU 1500 and 57344) are measured for iqd-tc, bridge and
    /// veth, and, when --family is given, for every system but the security-group ones; the
    /// scale test checks reachability and the per-packet cost of iqd's tc program is measured
    /// in each family named.
    #[arg(long, value_delimiter = ',', value_name = "4|6")]
    family: Vec<u32>,

    /// Write every raw sample to this JSON file [default: target/bench/bench-<time>.json].
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Regenerate this Markdown report, with SVG charts in `performance/` beside it. A full
    /// run with default settings updates docs/performance.md; other runs only when asked.
    #[arg(long, value_name = "FILE")]
    docs: Option<PathBuf>,

    /// Do not write the Markdown report, even for a full default run.
    #[arg(long, conflicts_with = "docs")]
    no_docs: bool,

    /// Benchmark this iqd binary instead of building the release one.
    #[arg(long, value_name = "PATH")]
    iqd: Option<PathBuf>,

    /// Measure only the bandwidth part: TCP through an LPAR with a bandwidth of 2 and of 10
    /// Gbps, one stream and two streams over two NICs, as a ratio to the bandwidth (about 1.5
    /// minutes with the defaults: 3 rounds of 4-second runs unless --rounds, --duration say
    /// otherwise). A full default run measures it too, after the rest.
    #[arg(long, conflicts_with_all = ["quick", "system", "mtu", "scale", "family", "docs"])]
    bandwidth: bool,

    /// Measure only the observe part: TCP throughput and request/response latency of iqd-tc
    /// (MTU 8192) with no trace and with `iqd trace` of both LPARs at snaplen 128, interleaved
    /// (3 rounds of 2-second runs unless --rounds, --duration say otherwise), and the time of
    /// an `iqd metrics` scrape of 85 LPARs x 2 NICs (about 2 minutes in all).
    #[arg(long, conflicts_with_all = ["quick", "system", "mtu", "scale", "family", "docs", "bandwidth"])]
    observe: bool,

    /// Measure only the one-to-many part: 64-byte frames (Ethernet 14 + IPv4 20 + UDP 8 + 22
    /// bytes of payload) sent as fast as a socket can to a multicast group of 1, 4 and 16
    /// receivers, and unicast to one receiver as the reference, on iqd-tc, iqd-xdp and a Linux
    /// bridge with multicast snooping (--system may name iqd-tc, iqd-xdp, iqd-afxdp, bridge),
    /// interleaved: packets per second each receiver's interface received, paired ratios to
    /// one receiver, to unicast and to the bridge, what each receiver added costs per frame,
    /// and whether each receiver of 4 gets at least 0.8x the one-receiver rate. 3 rounds of
    /// 3-second runs unless --rounds, --duration say otherwise (about 3 minutes); not part of
    /// the full run. A run with the default settings (or --docs FILE) rewrites the part's
    /// section of docs/performance.md (of FILE), which a full run keeps.
    #[arg(long, conflicts_with_all = ["quick", "mtu", "scale", "family", "bandwidth", "observe", "baseline_iqd"])]
    mcast: bool,

    /// With --mcast: what sends the frames: `blaster` (the benchmark's own sendmmsg loop, as
    /// fast as the socket takes them) or `iperf2` (`iperf -c GROUP -u -l 22 -b 10000M`, as a
    /// user would stream to a group) [default: blaster].
    #[arg(long, value_name = "SENDER", requires = "mcast")]
    mcast_sender: Option<String>,

    /// Measure nothing: print the table of an earlier run's JSON file and, with --docs,
    /// render its report again.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["quick", "mcast", "system", "mtu", "rounds", "duration", "scale", "family", "json", "iqd", "baseline_iqd"])]
    from_json: Option<PathBuf>,

    /// Also measure the per-packet cost of iqd's tc program with this other iqd binary (an
    /// older build, say), as the system iqd-tc-baseline, interleaved with iqd-tc in every round
    /// and compared as paired ratios: what a change did to the data path's cost. Needs iqd-tc
    /// in the run.
    #[arg(long, value_name = "PATH")]
    baseline_iqd: Option<PathBuf>,
}

#[derive(serde::Deserialize)]
struct SavedRun {
    machine: report::Machine,
    run: report::RunInfo,
    samples: Vec<Sample>,
}

/// `--from-json`: the table (and report) of a saved run.
fn render_saved(path: &Path, docs: Option<&Path>) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read {}", path.display()))?;
    let saved: SavedRun = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a `cargo xtask bench` JSON file", path.display()))?;
    let rows = stats::summarize(&saved.samples, &saved.run.systems);
    let secgroup_rows = stats::secgroup_rows(&saved.samples);
    let family_rows = stats::family_rows(&saved.samples, &saved.run.systems);
    print_results(
        &rows,
        &stats::baseline_rows(&saved.samples),
        &secgroup_rows,
        &family_rows,
    );
    if let Some(docs) = docs {
        write_docs(
            docs,
            &rows,
            &secgroup_rows,
            &family_rows,
            &saved.machine,
            &saved.run,
        )?;
        eprintln!("bench: report: {}", docs.display());
    }
    Ok(())
}

/// What one run does, after defaults and filters.
#[derive(Clone, Debug, Serialize)]
struct Plan {
    systems: Vec<String>,
    mtus: Vec<u32>,
    rounds: u32,
    duration: u32,
    scale: Vec<u32>,
    scale_mtu: u32,
    /// The MTUs at which the security-group systems run, and the first of them the one at
    /// which the connection rate is measured.
    secgroup_mtus: Vec<u32>,
    /// The address families measured: 4, 6.
    families: Vec<u32>,
    /// The MTUs of the IPv6 figures (empty without IPv6).
    v6_mtus: Vec<u32>,
    /// Whether every system but the security-group ones measures the IPv6 figures (--family
    /// given), not only [`V6_SYSTEMS`].
    v6_every_system: bool,
    /// The MTU at which the per-packet cost of iqd's tc program is measured, if iqd-tc is in
    /// the run: small frames, so one MTU is enough.
    cost_mtu: Option<u32>,
    quick: bool,
}

impl Plan {
    fn from_options(o: &Options) -> Result<Plan> {
        let kinds: Vec<Kind> = if o.system.is_empty() && o.quick {
            // The two ends of the security-group range only.
            Kind::ALL
                .into_iter()
                .filter(|k| !k.on_request() && matches!(k.secgroup_rules(), None | Some(250)))
                .collect()
        } else if o.system.is_empty() {
            Kind::ALL.into_iter().filter(|k| !k.on_request()).collect()
        } else {
            let mut kinds = Vec::new();
            for name in &o.system {
                let Some(kind) = Kind::parse(name.trim()) else {
                    bail!(
                        "--system: unknown system `{name}`; choose from {}",
                        Kind::ALL.map(Kind::name).join(", ")
                    );
                };
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
            }
            kinds
        };
        let mut kinds = kinds;
        match (
            o.baseline_iqd.is_some(),
            kinds.contains(&Kind::IqdTcBaseline),
        ) {
            (false, true) => bail!("--system: iqd-tc-baseline needs --baseline-iqd PATH"),
            (true, _) if !kinds.contains(&Kind::IqdTc) => {
                bail!("--baseline-iqd: the run has no iqd-tc to compare the baseline with")
            }
            (true, false) => {
                let at = kinds.iter().position(|k| *k == Kind::IqdTc).unwrap_or(0);
                kinds.insert(at + 1, Kind::IqdTcBaseline);
            }
            _ => {}
        }
        let mtus = if !o.mtu.is_empty() {
            o.mtu.clone()
        } else if o.quick {
            vec![57344]
        } else {
            DEFAULT_MTUS.to_vec()
        };
        if let Some(bad) = mtus.iter().find(|m| !(576..=57344).contains(*m)) {
            bail!("--mtu: {bad} is out of range: 576 to 57344 (the MTU of a 64K CHPID)");
        }
        let rounds = o.rounds.unwrap_or(if o.quick { 3 } else { 5 });
        let duration = o.duration.unwrap_or(if o.quick { 1 } else { 2 });
        if rounds == 0 {
            bail!("--rounds must be at least 1");
        }
        if duration == 0 {
            bail!("--duration must be at least 1 second");
        }
        let scale: Vec<u32> = if o.scale.is_empty() {
            if o.quick {
                vec![16]
            } else {
                DEFAULT_SCALE.to_vec()
            }
        } else {
            o.scale.iter().copied().filter(|n| *n != 0).collect()
        };
        if let Some(bad) = scale.iter().find(|n| !(2..=250).contains(*n)) {
            bail!("--scale: {bad} LPARs is out of range: 2 to 250 (or 0 to skip)");
        }
        // The scale test runs at the default CHPID's MTU (MFS 16K) when that is measured.
        let scale_mtu = if mtus.contains(&8192) { 8192 } else { mtus[0] };
        let mut secgroup_mtus: Vec<u32> = if o.mtu.is_empty() {
            mtus.iter()
                .copied()
                .filter(|m| SECGROUP_MTUS.contains(m))
                .collect()
        } else {
            Vec::new()
        };
        if secgroup_mtus.is_empty() {
            secgroup_mtus = mtus.clone();
        }
        // Only systems of more than two endpoints take part in the scale test.
        let scale = if kinds
            .iter()
            .any(|k| k.max_endpoints() > 2 && *k != Kind::IqdTcBaseline)
        {
            scale
        } else {
            Vec::new()
        };
        let mut families: Vec<u32> = Vec::new();
        for &f in &o.family {
            if Family::parse(f).is_none() {
                bail!("--family: {f} is not an address family: choose from 4, 6");
            }
            if !families.contains(&f) {
                families.push(f);
            }
        }
        let v6_every_system = !families.is_empty();
        if families.is_empty() {
            families = vec![4, 6];
        }
        let v6_mtus: Vec<u32> = if !families.contains(&6) {
            Vec::new()
        } else if o.mtu.is_empty() {
            let preferred: Vec<u32> = mtus
                .iter()
                .copied()
                .filter(|m| V6_MTUS.contains(m))
                .collect();
            if preferred.is_empty() {
                mtus.clone()
            } else {
                preferred
            }
        } else {
            mtus.clone()
        }
        .into_iter()
        .filter(|m| *m >= V6_MIN_MTU)
        .collect();
        // iqd-vlan runs the same program: its cost is measured beside iqd-tc's.
        let cost_mtu = kinds
            .iter()
            .any(|k| matches!(k, Kind::IqdTc | Kind::IqdVlan))
            .then(|| if mtus.contains(&1500) { 1500 } else { mtus[0] });
        Ok(Plan {
            systems: kinds.iter().map(|k| k.name().to_string()).collect(),
            mtus,
            rounds,
            duration,
            scale,
            scale_mtu,
            secgroup_mtus,
            families,
            v6_mtus,
            v6_every_system,
            cost_mtu,
            quick: o.quick,
        })
    }

    fn has(&self, family: Family) -> bool {
        self.families.contains(&family.number())
    }

    /// The families measured, IPv4 first.
    fn families(&self) -> Vec<Family> {
        Family::ALL.into_iter().filter(|f| self.has(*f)).collect()
    }

    /// Whether `kind` measures the IPv6 figures (at [`Plan::v6_mtus`]).
    fn measures_v6(&self, kind: Kind) -> bool {
        self.has(Family::V6)
            && kind.secgroup_rules().is_none()
            && (self.v6_every_system || V6_SYSTEMS.contains(&kind))
    }

    /// Whether `kind`'s environment at `mtu` needs IPv6 addresses.
    fn builds_v6(&self, kind: Kind, mtu: u32) -> bool {
        self.has(Family::V6)
            && Figure::ALL
                .into_iter()
                .any(|f| f.uses_v6() && self.measures(kind, f, mtu))
    }

    /// Whether `kind` is built at `mtu`.
    fn builds(&self, kind: Kind, mtu: u32) -> bool {
        if kind == Kind::IqdTcBaseline {
            return self.cost_mtu == Some(mtu);
        }
        kind.secgroup_rules().is_none() || self.secgroup_mtus.contains(&mtu)
    }

    /// Whether `figure` is measured for `kind` at `mtu`: the security-group systems measure
    /// TCP with 1 stream, the round trip and the connection rate at their MTUs; the connection
    /// rate (64-byte messages, whatever the MTU) is measured at one MTU only.
    fn measures(&self, kind: Kind, figure: Figure, mtu: u32) -> bool {
        if !self.builds(kind, mtu) {
            return false;
        }
        // The baseline is there for the per-packet cost alone.
        if kind == Kind::IqdTcBaseline {
            return figure == Figure::ProgCost;
        }
        let v4 = self.has(Family::V4);
        match figure {
            Figure::Crr => v4 && self.secgroup_mtus.first() == Some(&mtu),
            Figure::Tcp1 | Figure::Latency => v4,
            Figure::Tcp4 | Figure::Udp64 | Figure::Udp1400 => v4 && kind.secgroup_rules().is_none(),
            Figure::Tcp1V6 | Figure::LatencyV6 => {
                self.measures_v6(kind) && self.v6_mtus.contains(&mtu)
            }
            Figure::ProgCost => {
                matches!(kind, Kind::IqdTc | Kind::IqdVlan) && self.cost_mtu == Some(mtu)
            }
        }
    }

    fn kinds(&self) -> Vec<Kind> {
        self.systems.iter().filter_map(|s| Kind::parse(s)).collect()
    }

    fn scale_kinds(&self) -> Vec<Kind> {
        self.kinds()
            .into_iter()
            .filter(|k| k.max_endpoints() > 2 && *k != Kind::IqdTcBaseline)
            .collect()
    }

    /// Rough seconds per pairwise step and per scale step, for the time-left estimate.
    fn nominal(&self, step: &Step) -> f64 {
        let d = self.duration as f64;
        match step {
            Step::Pair(Figure::Latency) => d + 2.3, // sockperf waits 2 s before it starts
            Step::Pair(Figure::LatencyV6) => d + 0.2,
            Step::Pair(Figure::Crr) => d + 0.2,
            // A warm-up and a flood per family.
            Step::Pair(Figure::ProgCost) => self.families.len() as f64 * (d + 0.3),
            Step::Pair(_) => d + 0.1,
            // Building, fping per family, N/2 iperf3 pairs, and taking the namespaces down:
            // measured at 85 LPARs, IPv4 only, 2 s runs: 9 s (bridge) to 13.5 s (iqd-xdp).
            Step::Scale(n) => {
                1.2 * d + 1.0 + (0.08 + 0.02 * self.families.len() as f64) * *n as f64
            }
        }
    }

    fn total_nominal(&self) -> f64 {
        let kinds = self.kinds();
        let mut pair = 0.0;
        for &mtu in &self.mtus {
            for &kind in &kinds {
                for figure in Figure::ALL {
                    if self.measures(kind, figure, mtu) {
                        pair += self.nominal(&Step::Pair(figure));
                    }
                }
            }
        }
        let scale: f64 = self
            .scale
            .iter()
            .map(|n| self.nominal(&Step::Scale(*n)))
            .sum::<f64>()
            * self.scale_kinds().len() as f64;
        (pair + scale) * self.rounds as f64
    }
}

/// The pairwise figures, each one iperf3, sockperf or ping-pong run (IPv4 unless named).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Figure {
    Tcp1,
    Tcp1V6,
    Tcp4,
    Udp64,
    Udp1400,
    Latency,
    LatencyV6,
    /// Connect, request, response, close: a new connection each time.
    Crr,
    /// The run time per packet of iqd's tc program, in every family of the run.
    ProgCost,
}

impl Figure {
    const ALL: [Figure; 9] = [
        Figure::Tcp1,
        Figure::Tcp1V6,
        Figure::Tcp4,
        Figure::Udp64,
        Figure::Udp1400,
        Figure::Latency,
        Figure::LatencyV6,
        Figure::Crr,
        Figure::ProgCost,
    ];

    fn label(self) -> &'static str {
        match self {
            Figure::Tcp1 => "TCP 1 stream",
            Figure::Tcp1V6 => "TCP 1 stream over IPv6",
            Figure::Tcp4 => "TCP 4 streams",
            Figure::Udp64 => "UDP 64 B",
            Figure::Udp1400 => "UDP 1400 B",
            Figure::Latency => "request/response",
            Figure::LatencyV6 => "request/response over IPv6",
            Figure::Crr => "connection rate",
            Figure::ProgCost => "per-packet cost of iqd_tc",
        }
    }

    /// Whether the figure needs the endpoints' IPv6 addresses.
    fn uses_v6(self) -> bool {
        matches!(self, Figure::Tcp1V6 | Figure::LatencyV6 | Figure::ProgCost)
    }
}

enum Step {
    Pair(Figure),
    Scale(u32),
}

#[derive(Serialize)]
struct Failure {
    system: String,
    mtu: u32,
    what: String,
    round: u32,
    error: String,
}

#[derive(Serialize)]
struct Output<'a> {
    machine: &'a report::Machine,
    run: &'a report::RunInfo,
    samples: &'a [Sample],
    failures: &'a [Failure],
    summary: &'a [stats::Summary],
    secgroups: &'a [stats::SecgroupRow],
    families: &'a [stats::FamilyRow],
    /// The bandwidth part's samples (empty unless measured).
    bandwidth: &'a [bandwidth::BandwidthSample],
}

/// The table, the IPv6-against-IPv4 and security-group comparisons and the findings, on
/// stdout.
fn print_results(
    rows: &[stats::Summary],
    baseline: &[stats::BaselineRow],
    secgroup_rows: &[stats::SecgroupRow],
    family_rows: &[stats::FamilyRow],
) {
    print!("{}", report::table(rows));
    if !baseline.is_empty() {
        println!("\niqd-tc against iqd-tc-baseline (--baseline-iqd), per packet (paired ratios)");
        print!("{}", report::baseline_table(baseline));
    }
    if !family_rows.is_empty() {
        println!("\nIPv6 against IPv4 (paired ratios)");
        print!("{}", report::family_table(family_rows));
    }
    if !secgroup_rows.is_empty() {
        println!("\nSecurity groups: iqd-sgN against bridge-nftN (paired ratios)");
        print!("{}", report::secgroup_tables(secgroup_rows));
        println!();
    }
    for finding in report::findings(rows)
        .into_iter()
        .chain(report::family_findings(family_rows))
        .chain(report::secgroup_findings(secgroup_rows))
    {
        println!("{finding}");
    }
}

/// Where a run's raw samples go: `--json`, or `target/bench/<stem>-<epoch>.json`; its directory
/// is created.
fn json_path(json: Option<&PathBuf>, stem: &str, epoch: u64) -> Result<PathBuf> {
    let path = json.cloned().unwrap_or_else(|| {
        util::target_dir()
            .join("bench")
            .join(format!("{stem}-{epoch}.json"))
    });
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("could not create {}", parent.display()))?;
    }
    Ok(path)
}

/// The run's scratch directory (fabric files and the like), made anew.
fn work_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("iqd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    Ok(dir)
}

/// SIGINT and SIGTERM end the run between steps ([`check_interrupted`]), after cleanup.
fn catch_signals() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted; namespaces and fabrics created by this run were removed");
    }
    Ok(())
}

/// Collects samples and failures, and reports progress on stderr.
struct Recorder {
    samples: Vec<Sample>,
    failures: Vec<Failure>,
    started: Instant,
    done: f64,
    total: f64,
}

impl Recorder {
    fn progress(&self, round: u32, rounds: u32, what: &str) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = if self.done > 0.0 {
            (self.total - self.done).max(0.0) * elapsed / self.done
        } else {
            self.total
        };
        eprintln!(
            "bench: round {}/{rounds}: {what} ({:.0}% done, about {} left)",
            round + 1,
            100.0 * self.done / self.total.max(1.0),
            minutes(left)
        );
    }

    fn push(&mut self, system: &str, mtu: u32, metric: &str, round: u32, value: f64) {
        let unit = stats::metric(metric).map(|m| m.unit).unwrap_or("");
        self.samples.push(Sample {
            system: system.to_string(),
            mtu,
            metric: metric.to_string(),
            round,
            value,
            unit: unit.to_string(),
        });
    }

    fn fail(&mut self, system: &str, mtu: u32, what: &str, round: u32, error: anyhow::Error) {
        eprintln!("bench: warning: {system} at MTU {mtu}, {what}, round {round}: {error:#}");
        self.failures.push(Failure {
            system: system.to_string(),
            mtu,
            what: what.to_string(),
            round,
            error: format!("{error:#}"),
        });
    }
}

fn minutes(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

pub fn run(options: Options) -> Result<()> {
    if let Some(path) = &options.from_json {
        let docs = if options.no_docs {
            None
        } else {
            options.docs.as_deref()
        };
        return render_saved(path, docs);
    }
    if options.bandwidth {
        return run_bandwidth(&options);
    }
    if options.observe {
        return run_observe(&options);
    }
    if options.mcast {
        return run_mcast(&options);
    }
    let plan = Plan::from_options(&options)?;
    setup::ensure(
        "bench",
        "it creates network namespaces and loads eBPF programs",
    )?;
    let kinds = plan.kinds();
    let iqd = if kinds.iter().any(|k| k.is_iqd()) {
        Some(iqd_binary(&options)?)
    } else {
        None
    };
    let default_run = !plan.quick
        && options.system.is_empty()
        && options.mtu.is_empty()
        && options.rounds.is_none()
        && options.duration.is_none()
        && options.scale.is_empty()
        && options.family.is_empty();
    let docs = match (&options.docs, options.no_docs) {
        (_, true) => None,
        (Some(path), false) => Some(path.clone()),
        (None, false) if default_run => Some(util::workspace_root().join("docs/performance.md")),
        (None, false) => None,
    };
    let started_at = SystemTime::now();
    let epoch = epoch_secs(started_at);
    let json_path = json_path(options.json.as_ref(), "bench", epoch)?;

    catch_signals();

    let work_dir = work_dir()?;
    let mut builder = Builder::new(iqd, work_dir.clone());
    if let Some(path) = &options.baseline_iqd {
        if !path.is_file() {
            bail!("--baseline-iqd: {} is not a file", path.display());
        }
        builder.baseline = Some(std::fs::canonicalize(path)?);
    }
    let mut recorder = Recorder {
        samples: Vec::new(),
        failures: Vec::new(),
        started: Instant::now(),
        done: 0.0,
        total: plan.total_nominal(),
    };
    eprintln!(
        "bench: {} at MTU {}, IPv{}, {} rounds of {} s runs, scale {:?}: about {}",
        plan.systems.join(", "),
        plan.mtus
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        plan.families
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" and IPv"),
        plan.rounds,
        plan.duration,
        plan.scale,
        minutes(plan.total_nominal() + 5.0)
    );
    let result = measure_all(&plan, &mut builder, &mut recorder);
    // A full default run measures the bandwidth part too (on the release iqd).
    let bandwidth_samples = match (&result, &builder.iqd, default_run) {
        (Ok(()), Some(iqd), true) => {
            let iqd = iqd.clone();
            match bandwidth::measure(&iqd, &work_dir, &builder.tag, plan.rounds.min(3), 4) {
                Ok(samples) => samples,
                Err(e) => {
                    recorder.fail("iqd-tc", 57344, "bandwidth", 0, e);
                    Vec::new()
                }
            }
        }
        _ => Vec::new(),
    };
    let _ = std::fs::remove_dir_all(&work_dir);
    result?;

    let rows = stats::summarize(&recorder.samples, &plan.systems);
    let machine = report::Machine::detect();
    let run = report::RunInfo {
        command: command_line(),
        started_utc: utc(epoch),
        elapsed_s: recorder.started.elapsed().as_secs_f64(),
        rounds: plan.rounds,
        duration_s: plan.duration,
        quick: plan.quick,
        systems: plan.systems.clone(),
        mtus: plan.mtus.clone(),
        scale: plan.scale.clone(),
        secgroup_mtus: plan.secgroup_mtus.clone(),
        secgroup_datapath: secgroups::DATAPATH.into(),
        families: plan.families.clone(),
        v6_mtus: plan.v6_mtus.clone(),
        v6_systems: plan
            .kinds()
            .into_iter()
            .filter(|k| plan.measures_v6(*k))
            .map(|k| k.name().to_string())
            .collect(),
        cost_mtu: plan.cost_mtu,
    };
    let secgroup_rows = stats::secgroup_rows(&recorder.samples);
    let family_rows = stats::family_rows(&recorder.samples, &plan.systems);
    print_results(
        &rows,
        &stats::baseline_rows(&recorder.samples),
        &secgroup_rows,
        &family_rows,
    );
    if !bandwidth_samples.is_empty() {
        println!("\nShared bandwidth (iqd-tc, MTU 57344)");
        print!("{}", bandwidth::table(&bandwidth_samples));
    }
    let output = Output {
        bandwidth: &bandwidth_samples,
        machine: &machine,
        run: &run,
        samples: &recorder.samples,
        failures: &recorder.failures,
        summary: &rows,
        secgroups: &secgroup_rows,
        families: &family_rows,
    };
    std::fs::write(&json_path, serde_json::to_string_pretty(&output)?)
        .with_context(|| format!("could not write {}", json_path.display()))?;
    eprintln!("bench: raw samples: {}", json_path.display());
    if let Some(docs) = docs {
        write_docs(&docs, &rows, &secgroup_rows, &family_rows, &machine, &run)?;
        eprintln!("bench: report: {}", docs.display());
    }
    if !recorder.failures.is_empty() {
        bail!(
            "{} measurement(s) failed (listed above and under `failures` in {})",
            recorder.failures.len(),
            json_path.display()
        );
    }
    Ok(())
}

/// The iqd binary a part measures: `--iqd`, or a release build of this tree.
fn iqd_binary(options: &Options) -> Result<PathBuf> {
    match &options.iqd {
        Some(path) if path.is_file() => Ok(std::fs::canonicalize(path)?),
        Some(path) => bail!("--iqd: {} is not a file", path.display()),
        None => build_release(),
    }
}

/// Seconds since the Unix epoch of `at`: the stamp in a run's file names.
fn epoch_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// `--bandwidth`: the bandwidth part alone, its table on stdout and its samples in the JSON
/// file.
fn run_bandwidth(options: &Options) -> Result<()> {
    setup::ensure(
        "bench",
        "it creates network namespaces and loads eBPF programs",
    )?;
    let iqd = iqd_binary(options)?;
    let (rounds, seconds) = (options.rounds.unwrap_or(3), options.duration.unwrap_or(4));
    if rounds == 0 || seconds < 2 {
        bail!("--bandwidth needs at least 1 round of at least 2 seconds");
    }
    let epoch = epoch_secs(SystemTime::now());
    let json_path = json_path(options.json.as_ref(), "bandwidth", epoch)?;
    catch_signals();
    let work_dir = work_dir()?;
    let tag = format!("ib{:x}", std::process::id() & 0xffff);
    let result = bandwidth::measure(&iqd, &work_dir, &tag, rounds, seconds);
    let _ = std::fs::remove_dir_all(&work_dir);
    let samples = result?;
    println!("Shared bandwidth (iqd-tc, MTU 57344, {rounds} rounds of {seconds} s)");
    print!("{}", bandwidth::table(&samples));
    std::fs::write(&json_path, serde_json::to_string_pretty(&samples)?)
        .with_context(|| format!("could not write {}", json_path.display()))?;
    eprintln!("bench: raw samples: {}", json_path.display());
    Ok(())
}

/// `--observe`: the observe part alone, its table on stdout and its figures in a JSON file.
fn run_observe(options: &Options) -> Result<()> {
    setup::ensure(
        "bench",
        "it creates network namespaces and loads eBPF programs",
    )?;
    let iqd = iqd_binary(options)?;
    let (rounds, seconds) = (options.rounds.unwrap_or(3), options.duration.unwrap_or(2));
    if rounds == 0 || seconds == 0 {
        bail!("--observe needs at least 1 round of at least 1 second");
    }
    let epoch = epoch_secs(SystemTime::now());
    let json_path = json_path(options.json.as_ref(), "observe", epoch)?;
    let work_dir = work_dir()?;
    let result = observe::measure(&iqd, &work_dir, rounds, seconds);
    let _ = std::fs::remove_dir_all(&work_dir);
    let figures = result?;
    print!("{}", observe::table(&figures));
    observe::write_json(&json_path, &figures)?;
    eprintln!("bench: raw samples: {}", json_path.display());
    Ok(())
}

/// The raw samples of a `--mcast` run.
#[derive(Serialize)]
struct McastOutput<'a> {
    machine: &'a report::Machine,
    command: String,
    started_utc: String,
    rounds: u32,
    duration_s: u32,
    frame_bytes: usize,
    systems: &'a [String],
    sender: mcast::Sender,
    samples: &'a [mcast::McastSample],
    summary: &'a [mcast::Row],
    failures: &'a [String],
}

/// `--mcast`: the one-to-many part alone, its table on stdout, its samples in the JSON file
/// and, for a default run or with --docs, its section of the report.
fn run_mcast(options: &Options) -> Result<()> {
    let kinds = mcast::systems(&options.system)?;
    let sender = match &options.mcast_sender {
        Some(name) => mcast::Sender::parse(name)?,
        None => mcast::Sender::Blaster,
    };
    let (rounds, seconds) = (options.rounds.unwrap_or(3), options.duration.unwrap_or(3));
    if rounds == 0 || seconds == 0 {
        bail!("--mcast needs at least 1 round of at least 1 second");
    }
    setup::ensure(
        "bench",
        "it creates network namespaces and loads eBPF programs",
    )?;
    let iqd = if kinds.iter().any(|k| k.is_iqd()) {
        Some(iqd_binary(options)?)
    } else {
        None
    };
    let default_run = options.system.is_empty()
        && options.rounds.is_none()
        && options.duration.is_none()
        && options.mcast_sender.is_none();
    let docs = match (&options.docs, options.no_docs) {
        (_, true) => None,
        (Some(path), false) => Some(path.clone()),
        (None, false) if default_run => Some(util::workspace_root().join("docs/performance.md")),
        (None, false) => None,
    };
    let epoch = epoch_secs(SystemTime::now());
    let json_path = json_path(options.json.as_ref(), "mcast", epoch)?;
    catch_signals();
    let work_dir = work_dir()?;
    eprintln!(
        "bench: mcast: {}, sender {}, {rounds} rounds of {seconds} s runs: about {}",
        kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", "),
        sender.name(),
        minutes(kinds.len() as f64 * (10.0 + rounds as f64 * 4.0 * (seconds as f64 + 0.8)))
    );
    let result = mcast::measure(iqd.as_deref(), &work_dir, &kinds, sender, rounds, seconds);
    let _ = std::fs::remove_dir_all(&work_dir);
    let (samples, failures) = result?;
    let systems: Vec<String> = kinds.iter().map(|k| k.name().to_string()).collect();
    let rows = mcast::rows(&samples, &systems);
    println!(
        "One-to-many delivery ({}-byte frames sent by {}, {rounds} rounds of {seconds} s; \
         medians, paired ratios)",
        mcast::FRAME,
        sender.name()
    );
    print!("{}", mcast::table(&rows));
    for verdict in mcast::verdicts(&rows) {
        println!("{verdict}");
    }
    let machine = report::Machine::detect();
    let output = McastOutput {
        machine: &machine,
        command: command_line(),
        started_utc: utc(epoch),
        rounds,
        duration_s: seconds,
        frame_bytes: mcast::FRAME,
        systems: &systems,
        sender,
        samples: &samples,
        summary: &rows,
        failures: &failures,
    };
    std::fs::write(&json_path, serde_json::to_string_pretty(&output)?)
        .with_context(|| format!("could not write {}", json_path.display()))?;
    eprintln!("bench: raw samples: {}", json_path.display());
    if let Some(docs) = docs {
        let text = std::fs::read_to_string(&docs).unwrap_or_default();
        let section = mcast::markdown(
            &rows,
            &mcast::RunInfo {
                command: output.command.clone(),
                started_utc: output.started_utc.clone(),
                rounds,
                seconds,
                sender,
                kernel: machine.kernel.clone(),
                cores: machine.cores,
            },
        );
        std::fs::write(&docs, mcast::replace_section(&text, &section))
            .with_context(|| format!("could not write {}", docs.display()))?;
        eprintln!("bench: report: {}", docs.display());
    }
    if !failures.is_empty() {
        bail!(
            "{} measurement(s) failed (listed above and under `failures` in {})",
            failures.len(),
            json_path.display()
        );
    }
    Ok(())
}

fn measure_all(plan: &Plan, builder: &mut Builder, rec: &mut Recorder) -> Result<()> {
    let kinds = plan.kinds();
    let mut envs: Vec<Env> = Vec::new();
    for &mtu in &plan.mtus {
        for &kind in kinds.iter().filter(|k| plan.builds(**k, mtu)) {
            check_interrupted()?;
            eprintln!("bench: building {} at MTU {mtu}", kind.name());
            let v6 = plan.builds_v6(kind, mtu);
            let mut env = builder
                .build(kind, mtu, 2, v6)
                .with_context(|| format!("could not build {} at MTU {mtu}", kind.name()))?;
            if v6 && !env.v6 && kind == Kind::IqdTcBaseline {
                eprintln!(
                    "bench: note: the baseline iqd does not accept `ipv6` on a NIC: it is \
                     compared over IPv4 only"
                );
            } else if v6 && !env.v6 {
                eprintln!(
                    "bench: warning: this iqd does not accept `ipv6` on a NIC: {} is built \
                     without IPv6, and its IPv6 figures fail",
                    kind.name()
                );
            }
            measure::start_servers(&mut env)?;
            if kind.secgroup_rules().is_some() {
                measure::check_filtering(&env)
                    .with_context(|| format!("{} at MTU {mtu} does not filter", kind.name()))?;
            }
            envs.push(env);
        }
    }
    for round in 0..plan.rounds {
        for &mtu in &plan.mtus {
            for figure in Figure::ALL {
                // Rotate the order each round so no system always runs first (or last).
                let mut order: Vec<&Env> = envs
                    .iter()
                    .filter(|e| e.mtu == mtu && plan.measures(e.kind, figure, mtu))
                    .collect();
                let len = order.len().max(1);
                order.rotate_left(round as usize % len);
                for env in order {
                    check_interrupted()?;
                    rec.progress(
                        round,
                        plan.rounds,
                        &format!("{} at MTU {mtu}, {}", env.name(), figure.label()),
                    );
                    pair_step(plan, env, figure, round, rec);
                    rec.done += plan.nominal(&Step::Pair(figure));
                }
            }
        }
        for &n in &plan.scale {
            let mut kinds = plan.scale_kinds();
            let len = kinds.len().max(1);
            kinds.rotate_left(round as usize % len);
            for kind in kinds {
                check_interrupted()?;
                rec.progress(
                    round,
                    plan.rounds,
                    &format!("{} with {n} LPARs at MTU {}", kind.name(), plan.scale_mtu),
                );
                if let Err(e) = scale_step(plan, builder, kind, n, round, rec) {
                    rec.fail(kind.name(), plan.scale_mtu, &format!("scale {n}"), round, e);
                }
                rec.done += plan.nominal(&Step::Scale(n));
            }
        }
    }
    Ok(())
}

fn pair_step(plan: &Plan, env: &Env, figure: Figure, round: u32, rec: &mut Recorder) {
    let (system, mtu, d) = (env.name(), env.mtu, plan.duration);
    let result = match figure {
        Figure::Tcp1 | Figure::Tcp4 | Figure::Tcp1V6 => {
            let streams = if figure == Figure::Tcp4 { 4 } else { 1 };
            let family = if figure == Figure::Tcp1V6 {
                Family::V6
            } else {
                Family::V4
            };
            let s = family.suffix();
            need_v6(env, family)
                .and_then(|()| measure::tcp(env, family, streams, d))
                .map(|(tcp, cpu_per_gbit)| {
                    let metric = if streams == 1 { "tcp_1" } else { "tcp_4" };
                    rec.push(system, mtu, &format!("{metric}{s}"), round, tcp.gbit_per_s);
                    if streams == 1 {
                        rec.push(
                            system,
                            mtu,
                            &format!("cpu_per_gbit{s}"),
                            round,
                            cpu_per_gbit,
                        );
                    }
                })
        }
        Figure::LatencyV6 => need_v6(env, Family::V6)
            .and_then(|()| measure::ping_pong(env, Family::V6, d))
            .map(|latency| {
                rec.push(system, mtu, "rr_p50_v6", round, latency.p50_us);
                rec.push(system, mtu, "rr_p99_v6", round, latency.p99_us);
            }),
        Figure::ProgCost => {
            prog_cost_step(plan, env, round, rec);
            Ok(())
        }
        Figure::Udp64 | Figure::Udp1400 => {
            let payload = if figure == Figure::Udp64 { 64 } else { 1400 };
            measure::udp(env, payload, d).map(|udp| {
                rec.push(
                    system,
                    mtu,
                    &format!("udp{payload}_pps"),
                    round,
                    udp.received_pps,
                );
                rec.push(
                    system,
                    mtu,
                    &format!("udp{payload}_loss"),
                    round,
                    udp.loss_percent,
                );
            })
        }
        Figure::Latency => measure::latency(env, d).map(|latency| {
            rec.push(system, mtu, "rr_p50", round, latency.p50_us);
            rec.push(system, mtu, "rr_p99", round, latency.p99_us);
        }),
        Figure::Crr => measure::connection_rate(env, d).map(|rate| {
            rec.push(system, mtu, "tcp_crr", round, rate);
        }),
    };
    if let Err(e) = result {
        rec.fail(system, mtu, figure.label(), round, e);
    }
}

/// An error when `env` should carry `family` but was built without it (an iqd without IPv6).
fn need_v6(env: &Env, family: Family) -> Result<()> {
    if family == Family::V6 && !env.v6 {
        bail!(
            "{} has no IPv6: this iqd does not accept `ipv6` addresses on a NIC",
            env.name()
        );
    }
    Ok(())
}

/// The run time per packet of iqd's tc program, over each family of the run, with the kernel's
/// BPF statistics on for this step only (`kernel.bpf_stats_enabled`, put back as it was
/// afterwards, also on failure). Each family fails on its own.
fn prog_cost_step(plan: &Plan, env: &Env, round: u32, rec: &mut Recorder) {
    let (system, mtu) = (env.name(), env.mtu);
    let stats_on = match measure::BpfStatsOn::new() {
        Ok(on) => on,
        Err(e) => {
            rec.fail(system, mtu, Figure::ProgCost.label(), round, e);
            return;
        }
    };
    for family in plan.families() {
        // A baseline from before IPv6 is compared over IPv4 only (its build said so).
        if family == Family::V6 && env.kind == Kind::IqdTcBaseline && !env.v6 {
            continue;
        }
        let result = need_v6(env, family)
            .and_then(|()| measure::prog_ns_per_run(env, family, plan.duration));
        match result {
            Ok(ns) => rec.push(
                system,
                mtu,
                &format!("prog_ns{}", family.suffix()),
                round,
                ns,
            ),
            Err(e) => rec.fail(
                system,
                mtu,
                &format!("{} over {}", Figure::ProgCost.label(), family.label()),
                round,
                e,
            ),
        }
    }
    drop(stats_on);
}

fn scale_step(
    plan: &Plan,
    builder: &mut Builder,
    kind: Kind,
    n: u32,
    round: u32,
    rec: &mut Recorder,
) -> Result<()> {
    let mtu = plan.scale_mtu;
    let mut env = builder.build(kind, mtu, n as usize, plan.has(Family::V6))?;
    rec.push(
        kind.name(),
        mtu,
        &format!("scale{n}_up"),
        round,
        env.setup_time.as_secs_f64(),
    );
    let pairs = (n * (n - 1)) as f64;
    // The plain systems resolve neighbours with ARP and ND: beyond the shared table's limit,
    // they get permanent entries. iqd's NICs are NOARP, as HiperSockets layer-3 interfaces
    // are: they must reach every pair with none, which the count below checks.
    if !kind.is_iqd() && pairs > 0.75 * neighbour_table_limit() {
        env.pin_neighbours(&builder.work_dir)?;
    }
    let mut first_error = None;
    for family in plan.families() {
        let reached = need_v6(&env, family).and_then(|()| measure::reachable_pairs(&env, family));
        match reached {
            Ok(reached) => rec.push(
                kind.name(),
                mtu,
                &format!("scale{n}_reachable{}", family.suffix()),
                round,
                100.0 * reached as f64 / pairs,
            ),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let permanent = env.permanent_neighbours()?;
    rec.push(
        kind.name(),
        mtu,
        &format!("scale{n}_neigh_permanent"),
        round,
        permanent as f64,
    );
    let family = plan.families()[0];
    let total = need_v6(&env, family)
        .and_then(|()| measure::aggregate_tcp(&mut env, family, plan.duration))?;
    rec.push(
        kind.name(),
        mtu,
        &format!("scale{n}_tcp{}", family.suffix()),
        round,
        total,
    );
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The dynamic neighbour entries the kernel keeps across all namespaces (`gc_thresh3`).
fn neighbour_table_limit() -> f64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/neigh/default/gc_thresh3")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024.0)
}

/// Builds iqd in the release profile: the benchmark measures what users run.
fn build_release() -> Result<PathBuf> {
    util::cargo()
        .args(["build", "--release", "--package", "iqd-userspace"])
        .run()
        .context("could not build the release iqd")?;
    let iqd = util::target_dir().join("release").join("iqd");
    if !iqd.is_file() {
        bail!(
            "the release build succeeded but {} is missing",
            iqd.display()
        );
    }
    Ok(iqd)
}

/// Writes the Markdown report to `path` and its charts to a directory named after the file
/// beside it (`performance/` for `performance.md`), which the report links to.
fn write_docs(
    path: &Path,
    rows: &[stats::Summary],
    secgroup_rows: &[stats::SecgroupRow],
    family_rows: &[stats::FamilyRow],
    machine: &report::Machine,
    run: &report::RunInfo,
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let chart_dir = dir.join(chart_dir_name(path));
    std::fs::create_dir_all(&chart_dir)
        .with_context(|| format!("could not create {}", chart_dir.display()))?;
    let charts = svg::charts(rows);
    for (file, svg) in &charts {
        let path = chart_dir.join(file);
        std::fs::write(&path, svg)
            .with_context(|| format!("could not write {}", path.display()))?;
    }
    let mut md = report::markdown(rows, secgroup_rows, family_rows, machine, run, &charts)
        .replace("](performance/", &format!("]({}/", chart_dir_name(path)));
    // The one-to-many part is measured by `--mcast` alone: its section stays as it was.
    if let Some(kept) = std::fs::read_to_string(path)
        .ok()
        .as_deref()
        .and_then(mcast::section)
    {
        md = mcast::replace_section(&md, kept);
    }
    std::fs::write(path, md).with_context(|| format!("could not write {}", path.display()))
}

/// The chart directory of a report: the file's name without its extension.
fn chart_dir_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "performance".into())
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}

/// `2026-11-22T10:00:00Z` for a Unix time, without a date crate.
fn utc(epoch: u64) -> String {
    let (days, secs) = (epoch / 86400, epoch % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        options: Options,
    }

    fn plan(args: &[&str]) -> Result<Plan> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))?;
        Plan::from_options(&cli.options)
    }

    #[test]
    fn defaults_measure_everything_five_times() {
        let p = plan(&[]).unwrap();
        assert_eq!(
            p.systems,
            [
                "iqd-xdp",
                "iqd-tc",
                "bridge",
                "macvlan",
                "veth",
                "iqd-sg0",
                "iqd-sg50",
                "iqd-sg250",
                "bridge-nft0",
                "bridge-nft50",
                "bridge-nft250"
            ]
        );
        assert_eq!(p.mtus, [1500, 8192, 57344]);
        assert_eq!((p.rounds, p.duration), (5, 2));
        assert_eq!(p.scale, [2, 85]);
        assert_eq!(p.scale_mtu, 8192);
        assert_eq!(p.families, [4, 6]);
        assert_eq!(p.v6_mtus, [1500, 57344]);
        assert_eq!(p.cost_mtu, Some(1500));
        assert_eq!(p.scale_kinds().len(), 4);
        assert_eq!(p.secgroup_mtus, [1500, 57344]);
        // The full run must stay near 30 minutes: with IPv6 and 85 LPARs the estimate is about
        // 32.6 minutes, and the last full run took 4% less than its estimate (27 min 53 s for
        // 29 min). The quick one under about 4.
        assert!(p.total_nominal() < 33.0 * 60.0, "{}", p.total_nominal());
        let quick = plan(&["--quick"]).unwrap();
        // About 245 s estimated (the last full run took 4% less than its estimate).
        assert!(quick.total_nominal() < 250.0, "{}", quick.total_nominal());
        assert_eq!(
            quick.systems,
            [
                "iqd-xdp",
                "iqd-tc",
                "bridge",
                "macvlan",
                "veth",
                "iqd-sg250",
                "bridge-nft250"
            ]
        );
    }

    #[test]
    fn security_group_systems_measure_three_figures_at_their_mtus() {
        let p = plan(&[]).unwrap();
        let sg = Kind::parse("iqd-sg250").unwrap();
        let nft = Kind::parse("bridge-nft0").unwrap();
        let bridge = Kind::parse("bridge").unwrap();
        for kind in [sg, nft] {
            assert!(!p.builds(kind, 8192));
            for mtu in [1500, 57344] {
                assert!(p.measures(kind, Figure::Tcp1, mtu));
                assert!(p.measures(kind, Figure::Latency, mtu));
                assert!(!p.measures(kind, Figure::Tcp4, mtu));
                assert!(!p.measures(kind, Figure::Udp64, mtu));
            }
            assert!(p.measures(kind, Figure::Crr, 1500));
            assert!(!p.measures(kind, Figure::Crr, 57344));
        }
        for mtu in [1500, 8192, 57344] {
            assert!(p.builds(bridge, mtu) && p.measures(bridge, Figure::Udp64, mtu));
            assert_eq!(p.measures(bridge, Figure::Crr, mtu), mtu == 1500);
        }
        assert!(!p.scale_kinds().contains(&sg));
        // --mtu names the MTUs for every system.
        let p = plan(&["--mtu", "8192", "--system", "iqd-sg50,bridge"]).unwrap();
        assert_eq!(p.secgroup_mtus, [8192]);
        assert!(p.measures(Kind::parse("iqd-sg50").unwrap(), Figure::Crr, 8192));
        // Without 1500 or 57344 in the run, they run at the run's MTUs.
        let cli = Cli::try_parse_from(["bench", "--quick"]).unwrap();
        let mut o = cli.options;
        o.quick = false;
        o.mtu.clear();
        assert_eq!(Plan::from_options(&o).unwrap().secgroup_mtus, [1500, 57344]);
    }

    #[test]
    fn the_system_help_names_every_system() {
        use clap::CommandFactory;
        let command = Cli::command();
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == "system")
            .expect("--system");
        let help = arg.get_long_help().or(arg.get_help()).unwrap().to_string();
        let (all, on_request) = help.split_once("only when named").expect("on-request part");
        let named = |text: &str, name: &str| {
            text.split(|c: char| !(c.is_alphanumeric() || c == '-'))
                .any(|word| word == name)
        };
        for kind in Kind::ALL {
            let part = if kind.on_request() { on_request } else { all };
            assert!(
                named(part, kind.name()),
                "--system help: {}\n{help}",
                kind.name()
            );
        }
        let listed = help
            .split(|c: char| !(c.is_alphanumeric() || c == '-'))
            .filter(|w| {
                w.starts_with("iqd-") || w.starts_with("bridge") || ["macvlan", "veth"].contains(w)
            })
            .filter(|w| Kind::parse(w).is_none())
            .collect::<Vec<_>>();
        assert!(
            listed.is_empty(),
            "--system help names no such system: {listed:?}"
        );
    }

    #[test]
    fn chart_directories_follow_the_report_name() {
        assert_eq!(
            chart_dir_name(Path::new("docs/performance.md")),
            "performance"
        );
        assert_eq!(
            chart_dir_name(Path::new("docs/performance-secgroups.md")),
            "performance-secgroups"
        );
    }

    #[test]
    fn filters_and_bad_values() {
        let p = plan(&["--system", "veth,bridge", "--mtu", "1500", "--scale", "0"]).unwrap();
        assert_eq!(p.systems, ["veth", "bridge"]);
        assert!(p.scale.is_empty());
        // No scale test for systems of two endpoints.
        let p = plan(&["--system", "iqd-sg250,bridge-nft250", "--quick"]).unwrap();
        assert_eq!(p.systems, ["iqd-sg250", "bridge-nft250"]);
        assert!(p.scale_kinds().is_empty() && p.scale.is_empty());
        let err = plan(&["--system", "ovs"]).unwrap_err().to_string();
        assert!(err.contains("unknown system `ovs`"), "{err}");
        assert!(plan(&["--mtu", "65536"]).is_err());
        assert!(plan(&["--rounds", "0"]).is_err());
        assert!(plan(&["--scale", "1"]).is_err());
    }

    #[test]
    fn ipv6_figures_for_iqd_tc_the_bridge_and_veth_at_1500_and_57344() {
        let p = plan(&[]).unwrap();
        let v6: Vec<&str> = p
            .kinds()
            .into_iter()
            .filter(|k| p.measures_v6(*k))
            .map(Kind::name)
            .collect();
        assert_eq!(v6, ["iqd-tc", "bridge", "veth"]);
        for kind in [Kind::IqdTc, Kind::Bridge, Kind::Veth] {
            for (mtu, yes) in [(1500, true), (8192, false), (57344, true)] {
                assert_eq!(p.measures(kind, Figure::Tcp1V6, mtu), yes, "{kind:?} {mtu}");
                assert_eq!(p.measures(kind, Figure::LatencyV6, mtu), yes);
                assert!(p.measures(kind, Figure::Tcp1, mtu));
            }
        }
        assert!(!p.measures(Kind::IqdXdp, Figure::Tcp1V6, 1500));
        assert!(!p.measures(Kind::IqdSg(250), Figure::Tcp1V6, 1500));
        // The per-packet cost: iqd-tc only, at one MTU, in an environment with IPv6.
        assert!(p.measures(Kind::IqdTc, Figure::ProgCost, 1500));
        assert!(!p.measures(Kind::IqdTc, Figure::ProgCost, 57344));
        assert!(!p.measures(Kind::IqdXdp, Figure::ProgCost, 1500));
        assert!(p.builds_v6(Kind::IqdTc, 1500) && p.builds_v6(Kind::IqdTc, 57344));
        assert!(!p.builds_v6(Kind::IqdTc, 8192) && !p.builds_v6(Kind::Macvlan, 1500));
        // Quick: MTU 57344 only, where the cost is measured too.
        let quick = plan(&["--quick"]).unwrap();
        assert_eq!(
            (quick.v6_mtus.as_slice(), quick.cost_mtu),
            (&[57344][..], Some(57344))
        );
    }

    #[test]
    fn the_family_filter() {
        let p = plan(&["--family", "4"]).unwrap();
        assert_eq!(p.families, [4]);
        assert!(p.v6_mtus.is_empty());
        assert!(!p.measures(Kind::IqdTc, Figure::Tcp1V6, 1500));
        assert!(p.measures(Kind::IqdTc, Figure::ProgCost, 1500));
        assert!(!p.builds_v6(Kind::IqdTc, 1500));
        assert_eq!(p.families(), [Family::V4]);
        // IPv6 only: no IPv4 figure, and with --family given every system but the
        // security-group ones measures IPv6.
        let p = plan(&["--family", "6", "--mtu", "576,1500"]).unwrap();
        assert_eq!(p.families(), [Family::V6]);
        assert_eq!(p.v6_mtus, [1500], "no IPv6 below 1280");
        for figure in [
            Figure::Tcp1,
            Figure::Tcp4,
            Figure::Udp64,
            Figure::Latency,
            Figure::Crr,
        ] {
            assert!(!p.measures(Kind::Bridge, figure, 1500), "{figure:?}");
        }
        assert!(p.measures(Kind::IqdXdp, Figure::Tcp1V6, 1500));
        assert!(p.measures(Kind::Macvlan, Figure::LatencyV6, 1500));
        assert!(!p.measures(Kind::BridgeNft(0), Figure::Tcp1V6, 1500));
        let p = plan(&["--family", "6,4,6"]).unwrap();
        assert_eq!(p.families, [6, 4]);
        assert_eq!(p.families(), [Family::V4, Family::V6]);
        let err = plan(&["--family", "5"]).unwrap_err().to_string();
        assert!(err.contains("--family: 5"), "{err}");
        // No iqd-tc, no per-packet cost.
        assert_eq!(plan(&["--system", "bridge,veth"]).unwrap().cost_mtu, None);
    }

    #[test]
    fn the_mcast_part_takes_its_own_options() {
        let cli = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
                .map(|c| c.options)
        };
        let o = cli(&["--mcast", "--system", "iqd-tc,bridge", "--rounds", "2"]).unwrap();
        assert!(o.mcast && o.mcast_sender.is_none());
        assert_eq!(
            mcast::systems(&o.system).unwrap(),
            [Kind::IqdTc, Kind::Bridge]
        );
        let o = cli(&["--mcast", "--mcast-sender", "iperf2"]).unwrap();
        assert_eq!(o.mcast_sender.as_deref(), Some("iperf2"));
        // The sender needs the part; the part is not mixed with the others' options.
        assert!(cli(&["--mcast-sender", "iperf2"]).is_err());
        for other in [
            &["--quick"][..],
            &["--observe"],
            &["--mtu", "1500"],
            &["--scale", "2"],
        ] {
            let args: Vec<&str> = std::iter::once("--mcast")
                .chain(other.iter().copied())
                .collect();
            assert!(cli(&args).is_err(), "{args:?}");
        }
        assert!(cli(&["--from-json", "x.json", "--mcast"]).is_err());
        // Its --help says what it measures and how long it takes.
        use clap::CommandFactory;
        let command = Cli::command();
        let help = command
            .get_arguments()
            .find(|a| a.get_id() == "mcast")
            .and_then(|a| a.get_long_help().or(a.get_help()))
            .unwrap()
            .to_string();
        for words in [
            "64-byte frames",
            "1, 4 and 16",
            "bridge",
            "0.8x",
            "not part of",
        ] {
            assert!(help.contains(words), "{words}: {help}");
        }
    }

    #[test]
    fn a_full_run_keeps_the_mcast_section_of_the_report() {
        let dir = std::env::temp_dir().join(format!("iqd-bench-docs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("performance.md");
        let section = format!(
            "{}\n## One-to-many delivery\n\nfigures\n\n{}",
            mcast::BEGIN,
            mcast::END
        );
        std::fs::write(
            &path,
            format!("# Performance\n\nold figures\n\n{section}\n"),
        )
        .unwrap();
        let run: report::RunInfo = serde_json::from_value(serde_json::json!({
            "command": "cargo xtask bench", "started_utc": "2026-11-30T09:00:00Z",
            "elapsed_s": 1.0, "rounds": 1, "duration_s": 1, "quick": false,
            "systems": [], "mtus": [1500], "scale": []
        }))
        .unwrap();
        let written = write_docs(&path, &[], &[], &[], &report::Machine::detect(), &run);
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        written.unwrap();
        assert!(!text.contains("old figures"), "{text}");
        assert!(text.contains("## Machine"), "{text}");
        assert_eq!(mcast::section(&text), Some(section.as_str()));
        assert_eq!(text.matches(mcast::BEGIN).count(), 1);
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
