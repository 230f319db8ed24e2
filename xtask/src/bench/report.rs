//! What a run reports: the table on stdout, the findings, and docs/performance.md.

use std::{fmt::Write as _, fs, process::Command, process::Stdio};

use serde::Serialize;

use super::env::Kind;
use super::secgroups;
use super::stats::{metric, BaselineRow, FamilyRow, SecgroupRow, Summary, BASELINE, LIMIT};

/// The machine a run measured on.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Machine {
    pub kernel: String,
    pub cpu: String,
    /// CPUs this process may run on; 0 when unknown.
    pub cores: usize,
    /// MemTotal; 0 when unknown.
    pub memory_gib: f64,
    pub iperf3: String,
    pub sockperf: String,
}

const UNKNOWN: &str = "unknown";

impl Machine {
    /// Reads the kernel release, CPU model, core count, memory and tool versions. Whatever
    /// cannot be found is "unknown" (0 for the numbers); never fails.
    pub fn detect() -> Machine {
        let read = |path: &str| fs::read_to_string(path).unwrap_or_default();
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
        Machine {
            kernel: if kernel.is_empty() {
                UNKNOWN.into()
            } else {
                kernel
            },
            cpu: cpu_model(&read("/proc/cpuinfo")).unwrap_or_else(|| UNKNOWN.into()),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: mem_total_gib(&read("/proc/meminfo")).unwrap_or(0.0),
            iperf3: tool_version("iperf3"),
            sockperf: tool_version("sockperf"),
        }
    }
}

/// The CPU model from /proc/cpuinfo: `model name` on x86, other keys elsewhere, and the
/// vendor with the machine type on s390x.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    let value = |key: &str| {
        cpuinfo.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            let v = v.trim();
            (k.trim() == key && !v.is_empty()).then(|| v.to_string())
        })
    };
    for key in ["model name", "cpu model", "Model", "Processor", "cpu"] {
        if let Some(model) = value(key) {
            return Some(model);
        }
    }
    let vendor = value("vendor_id")?;
    // s390x: "processor 0: version = 00,  identification = 0A1B2C,  machine = 3931"
    let machine = cpuinfo.lines().find_map(|line| {
        let rest = line.split("machine = ").nth(1)?;
        rest.split([',', ' ']).next().filter(|m| !m.is_empty())
    });
    Some(match machine {
        Some(machine) => format!("{vendor}, machine type {machine}"),
        None => vendor,
    })
}

/// MemTotal from /proc/meminfo, in GiB.
fn mem_total_gib(meminfo: &str) -> Option<f64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / (1024.0 * 1024.0))
}

/// The first non-empty line `<program> --version` prints (stdout, else stderr).
fn tool_version(program: &str) -> String {
    let output = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output();
    let Ok(output) = output else {
        return UNKNOWN.into();
    };
    [&output.stdout, &output.stderr]
        .iter()
        .find_map(|bytes| {
            String::from_utf8_lossy(bytes)
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| UNKNOWN.into())
}

/// How a run was made; filled by the measurement loop.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct RunInfo {
    pub command: String,
    pub started_utc: String,
    pub elapsed_s: f64,
    pub rounds: u32,
    pub duration_s: u32,
    pub quick: bool,
    pub systems: Vec<String>,
    pub mtus: Vec<u32>,
    pub scale: Vec<u32>,
    /// The MTUs of the security-group systems; the first is the connection rate's.
    #[serde(default)]
    pub secgroup_mtus: Vec<u32>,
    /// The data path of the `iqd-sg<N>` systems. Runs saved before it was recorded measured
    /// them on `xdp`.
    #[serde(default = "secgroup_datapath_before_it_was_recorded")]
    pub secgroup_datapath: String,
    /// The address families measured (4, 6). Runs saved before IPv6 measured IPv4 only.
    #[serde(default = "ipv4_only")]
    pub families: Vec<u32>,
    /// The MTUs of the IPv6 figures.
    #[serde(default)]
    pub v6_mtus: Vec<u32>,
    /// The systems that measured the IPv6 figures.
    #[serde(default)]
    pub v6_systems: Vec<String>,
    /// The MTU of the per-packet cost of iqd's tc program, when measured.
    #[serde(default)]
    pub cost_mtu: Option<u32>,
}

fn ipv4_only() -> Vec<u32> {
    vec![4]
}

fn secgroup_datapath_before_it_was_recorded() -> String {
    "xdp".into()
}

/// A metric's title, or its name when it is not a known metric.
pub fn title_of(name: &str) -> String {
    metric(name).map_or_else(|| name.to_string(), |m| m.title)
}

/// `value` in `unit` with a precision that suits the unit; "-" when not a number.
pub fn format_value(value: f64, unit: &str) -> String {
    if !value.is_finite() {
        return "-".into();
    }
    match unit {
        "Gbit/s" | "%" | "s" => format!("{value:.2}"),
        "packets/s" | "conn/s" => si(value),
        "us" => format!("{value:.1}"),
        "ns" | "entries" => format!("{value:.0}"),
        "CPU s/Gbit" => format!("{value:.3}"),
        _ if value.abs() >= 1e4 => si(value),
        _ => format!("{value:.2}"),
    }
}

/// `value` with three significant digits and a k, M or G suffix: `812k`, `1.23M`; below 1000
/// as a whole number.
fn si(value: f64) -> String {
    const PREFIXES: [(f64, &str); 4] = [(1.0, ""), (1e3, "k"), (1e6, "M"), (1e9, "G")];
    let mut i = PREFIXES
        .iter()
        .rposition(|(div, _)| value.abs() >= *div)
        .unwrap_or(0);
    loop {
        let (div, suffix) = PREFIXES[i];
        let scaled = value / div;
        let text = if i == 0 {
            format!("{scaled:.0}")
        } else {
            [2usize, 1]
                .iter()
                .map(|&d| (d, format!("{scaled:.d$}")))
                .find(|(d, t)| parse_abs(t) < 10f64.powi(3 - *d as i32))
                .map_or_else(|| format!("{scaled:.0}"), |(_, t)| t)
        };
        if parse_abs(&text) >= 1000.0 && i + 1 < PREFIXES.len() {
            i += 1;
            continue;
        }
        return format!("{text}{suffix}");
    }
}

fn parse_abs(text: &str) -> f64 {
    text.parse::<f64>().map_or(0.0, f64::abs)
}

/// A ratio as `0.64x`; "-" when missing.
fn format_ratio(ratio: Option<f64>) -> String {
    match ratio {
        Some(r) if r.is_finite() && r.abs() < 10.0 => format!("{r:.2}x"),
        Some(r) if r.is_finite() && r.abs() < 100.0 => format!("{r:.1}x"),
        Some(r) if r.is_finite() => format!("{r:.0}x"),
        _ => "-".into(),
    }
}

/// `text unit`, with `%` attached.
fn with_unit(text: &str, unit: &str) -> String {
    if unit == "%" {
        format!("{text}%")
    } else {
        format!("{text} {unit}")
    }
}

fn direction(name: &str) -> &'static str {
    match metric(name).map(|m| m.higher_is_better) {
        Some(true) => "higher is better",
        Some(false) => "lower is better",
        None => "",
    }
}

/// The rows grouped by metric, in the order the metrics first appear.
fn by_metric(rows: &[Summary]) -> Vec<(&str, Vec<&Summary>)> {
    let mut groups: Vec<(&str, Vec<&Summary>)> = Vec::new();
    for row in rows {
        match groups.iter_mut().find(|(m, _)| *m == row.metric) {
            Some((_, group)) => group.push(row),
            None => groups.push((&row.metric, vec![row])),
        }
    }
    groups
}

/// The result table for stdout: per metric a heading, then one line per MTU and system.
pub fn table(rows: &[Summary]) -> String {
    const HEADER: [&str; 7] = [
        "MTU",
        "system",
        "median",
        "min–max",
        "n",
        "vs bridge",
        "vs veth",
    ];
    let mut out = String::new();
    for (name, group) in by_metric(rows) {
        let unit = &group[0].unit;
        let dir = direction(name);
        let _ = write!(out, "{} [{unit}", title_of(name));
        if !dir.is_empty() {
            let _ = write!(out, ", {dir}");
        }
        out.push_str("]\n");
        let mut lines: Vec<[String; 7]> = vec![HEADER.map(String::from)];
        let mut previous_mtu = None;
        for row in &group {
            let mtu = if previous_mtu == Some(row.mtu) {
                String::new()
            } else {
                row.mtu.to_string()
            };
            previous_mtu = Some(row.mtu);
            lines.push([
                mtu,
                row.system.clone(),
                format_value(row.median, unit),
                format!(
                    "{}–{}",
                    format_value(row.min, unit),
                    format_value(row.max, unit)
                ),
                row.samples.to_string(),
                format_ratio(row.vs_bridge),
                format_ratio(row.vs_veth),
            ]);
        }
        let mut widths = [0usize; 7];
        for line in &lines {
            for (w, cell) in widths.iter_mut().zip(line) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for line in &lines {
            let mut text = String::from("  ");
            for (i, (cell, w)) in line.iter().zip(widths).enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                // The system name is left-aligned, every number right-aligned.
                if i == 1 {
                    let _ = write!(text, "{cell:<w$}");
                } else {
                    let _ = write!(text, "{cell:>w$}");
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out.push('\n');
    }
    if out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// Loss figures are noisy percentages near 0, and reachability is a yes/no matter: ratios of
/// either say little, so gap-finding leaves them out.
fn ratio_is_meaningful(name: &str) -> bool {
    !(name.ends_with("_loss")
        || name.ends_with("_reachable")
        || name.ends_with("_reachable_v6")
        || name.ends_with("_neigh_permanent"))
}

/// One comparison of a system with a reference system at a metric and MTU.
struct Comparison<'a> {
    row: &'a Summary,
    ratio: f64,
    reference: f64,
    higher_is_better: bool,
    /// log of the ratio, signed so that above 0 is better than the reference.
    score: f64,
}

fn comparisons<'a>(rows: &'a [Summary], system: &str, reference: &str) -> Vec<Comparison<'a>> {
    rows.iter()
        .filter(|row| row.system == system && ratio_is_meaningful(&row.metric))
        .filter_map(|row| {
            let m = metric(&row.metric)?;
            let ratio = if reference == BASELINE {
                row.vs_bridge
            } else {
                row.vs_veth
            }?;
            if !ratio.is_finite() || ratio < 0.0 {
                return None;
            }
            let reference = rows
                .iter()
                .find(|r| r.system == reference && r.metric == row.metric && r.mtu == row.mtu)?
                .median;
            if reference == 0.0 || !reference.is_finite() {
                return None;
            }
            let log = ratio.ln();
            Some(Comparison {
                row,
                ratio,
                reference,
                higher_is_better: m.higher_is_better,
                score: if m.higher_is_better { log } else { -log },
            })
        })
        .collect()
}

/// "TCP throughput, 1 stream at MTU 57344, 0.62x the bridge (16.10 vs 25.90 Gbit/s)".
fn describe(c: &Comparison, reference: &str) -> String {
    let unit = &c.row.unit;
    let mut text = format!(
        "{} at MTU {}, {} {reference} ({} vs {}",
        title_of(&c.row.metric),
        c.row.mtu,
        format_ratio(Some(c.ratio)),
        format_value(c.row.median, unit),
        with_unit(&format_value(c.reference, unit), unit),
    );
    if !c.higher_is_better {
        text.push_str(", lower is better");
    }
    text.push(')');
    text
}

/// Plain sentences on every iqd-* system: its largest gap to the bridge and to the physical
/// limit (a direct veth pair), where it beats the bridge most, and any incomplete reachability.
pub fn findings(rows: &[Summary]) -> Vec<String> {
    let mut systems: Vec<&str> = Vec::new();
    for row in rows {
        // The security-group systems have findings of their own: see `secgroup_findings`.
        if row.system.starts_with("iqd")
            && !row.system.starts_with("iqd-sg")
            && !systems.contains(&row.system.as_str())
        {
            systems.push(&row.system);
        }
    }
    let mut out = Vec::new();
    for system in systems {
        let vs_bridge = comparisons(rows, system, BASELINE);
        let worst = vs_bridge.iter().min_by(|a, b| a.score.total_cmp(&b.score));
        // Ties go to the first in table order, for the best as for the worst.
        let best = vs_bridge.iter().min_by(|a, b| b.score.total_cmp(&a.score));
        match worst {
            Some(c) if c.score < 0.0 => out.push(format!(
                "{system}: largest gap to the bridge: {}",
                describe(c, "the bridge")
            )),
            Some(_) => out.push(format!(
                "{system}: no gap to the bridge: it matches or beats the bridge on every compared \
                 metric"
            )),
            None => {}
        }
        match best {
            Some(c) if c.score > 0.0 => out.push(format!(
                "{system}: beats the bridge most: {}",
                describe(c, "the bridge")
            )),
            Some(_) => out.push(format!(
                "{system}: does not beat the bridge on any compared metric"
            )),
            None => {}
        }
        let vs_veth = comparisons(rows, system, LIMIT);
        match vs_veth.iter().min_by(|a, b| a.score.total_cmp(&b.score)) {
            Some(c) if c.score < 0.0 => out.push(format!(
                "{system}: largest gap to the physical limit (a direct veth pair): {}",
                describe(c, "veth")
            )),
            Some(_) => out.push(format!(
                "{system}: reaches the physical limit (a direct veth pair) on every compared \
                 metric"
            )),
            None => {}
        }
        for row in rows.iter().filter(|r| r.system == system) {
            let Some((lpars, what)) = row
                .metric
                .strip_prefix("scale")
                .and_then(|rest| rest.split_once('_'))
            else {
                continue;
            };
            let family = match what {
                "reachable" => "",
                "reachable_v6" => " over IPv6",
                "neigh_permanent" if row.max > 0.0 => {
                    out.push(format!(
                        "{system}: with {lpars} LPARs at MTU {}, its LPAR namespaces held up to \
                         {} permanent neighbour entries; a fabric of NOARP NICs needs none",
                        row.mtu,
                        format_value(row.max, &row.unit)
                    ));
                    continue;
                }
                _ => continue,
            };
            if row.median < 100.0 {
                out.push(format!(
                    "{system}: all-pairs reachability{family} with {lpars} LPARs at MTU {} was \
                     {}, not 100%",
                    row.mtu,
                    with_unit(&format_value(row.median, &row.unit), &row.unit)
                ));
            }
        }
    }
    out
}

/// The IPv6-against-IPv4 comparison as a Markdown table; empty without IPv6 figures that have
/// an IPv4 twin.
pub fn family_table(rows: &[FamilyRow]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "| System | Figure | MTU | IPv4 | IPv6 | IPv6 / IPv4 |\n|---|---|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let value = |v: Option<f64>| {
            v.map_or_else(
                || "-".into(),
                |v| with_unit(&format_value(v, &r.unit), &r.unit),
            )
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            cell(&r.system),
            cell(&family_title(&r.metric)),
            r.mtu,
            value(r.v4),
            value(r.v6),
            format_ratio(r.v6_vs_v4)
        );
    }
    md
}

/// The `--baseline-iqd` comparison: iqd-tc against the same fabric built by another iqd.
pub fn baseline_table(rows: &[BaselineRow]) -> String {
    let mut md = String::from(
        "| Figure | MTU | iqd-tc | iqd-tc-baseline | iqd-tc / baseline |\n|---|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let value = |v: f64| with_unit(&format_value(v, &r.unit), &r.unit);
        let title = metric(&r.metric).map_or_else(|| r.metric.clone(), |m| m.title);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            cell(&title),
            r.mtu,
            value(r.iqd),
            value(r.baseline),
            format_ratio(r.ratio)
        );
    }
    md
}

/// A figure's title for both families at once: the IPv4 twin's, less its family.
fn family_title(name: &str) -> String {
    match name {
        "prog_ns" => "iqd_tc run time per packet (ICMP/ICMPv6 echo)".into(),
        _ => title_of(name),
    }
}

/// Plain sentences on IPv6 against IPv4: the per-packet cost of iqd's program in both
/// families, and iqd's single-stream TCP in both.
pub fn family_findings(rows: &[FamilyRow]) -> Vec<String> {
    rows.iter()
        .filter(|r| r.system.starts_with("iqd") && r.metric != "cpu_per_gbit")
        .filter_map(|r| {
            let unit = &r.unit;
            if let (Some(v4), None, "prog_ns") = (r.v4, r.v6, r.metric.as_str()) {
                return Some(format!(
                    "{}: run time of iqd_tc per packet (ICMP echo): {} over IPv4; over IPv6 not \
                     measured (see the run's failures)",
                    r.system,
                    with_unit(&format_value(v4, unit), unit)
                ));
            }
            let (v4, v6, ratio) = (r.v4?, r.v6?, r.v6_vs_v4?);
            let what = if r.metric == "prog_ns" {
                "run time of iqd_tc per packet (ICMP echo)".to_string()
            } else {
                format!("{} at MTU {}", title_of(&r.metric), r.mtu)
            };
            Some(format!(
                "{}: IPv6 against IPv4, {what}: {} ({} vs {}{})",
                r.system,
                format_ratio(Some(ratio)),
                with_unit(&format_value(v6, unit), unit),
                with_unit(&format_value(v4, unit), unit),
                if metric(&r.metric).is_some_and(|m| !m.higher_is_better) {
                    ", lower is better"
                } else {
                    ""
                }
            ))
        })
        .collect()
}

/// "0.93x" or "-".
fn ratio_text(ratio: Option<f64>) -> String {
    format_ratio(ratio)
}

/// Plain sentences on the security-group systems: per metric and MTU, what the largest rule
/// count costs iqd and the nftables bridge, and how the two compare there.
pub fn secgroup_findings(rows: &[SecgroupRow]) -> Vec<String> {
    let most = secgroups::RULE_COUNTS[secgroups::RULE_COUNTS.len() - 1];
    rows.iter()
        .filter(|r| r.rules == most && r.metric != "rr_p99")
        .filter(|r| r.iqd.is_some() && r.nft.is_some())
        .map(|r| {
            let unit = &r.unit;
            format!(
                "security groups, {most} rules per group: {} at MTU {}: iqd-sg{most} {} \
                 ({} its 0-rule figure), bridge-nft{most} {} ({}); iqd {} the nftables \
                 bridge{}",
                title_of(&r.metric),
                r.mtu,
                with_unit(&format_value(r.iqd.unwrap_or(f64::NAN), unit), unit),
                ratio_text(r.iqd_vs_0),
                with_unit(&format_value(r.nft.unwrap_or(f64::NAN), unit), unit),
                ratio_text(r.nft_vs_0),
                ratio_text(r.iqd_vs_nft),
                if metric(&r.metric).is_some_and(|m| !m.higher_is_better) {
                    ", lower is better"
                } else {
                    ""
                }
            )
        })
        .collect()
}

/// The security-group comparison as Markdown tables, one per metric; empty without
/// security-group systems.
pub fn secgroup_tables(rows: &[SecgroupRow]) -> String {
    let mut md = String::new();
    let mut metrics: Vec<&str> = Vec::new();
    for row in rows {
        if !metrics.contains(&row.metric.as_str()) {
            metrics.push(&row.metric);
        }
    }
    for name in metrics {
        let group: Vec<&SecgroupRow> = rows.iter().filter(|r| r.metric == name).collect();
        let unit = &group[0].unit;
        let _ = write!(md, "\n### {}\n\nIn {unit}", title_of(name));
        let dir = direction(name);
        if !dir.is_empty() {
            let _ = write!(md, "; {dir}");
        }
        md.push_str(".\n\n");
        md.push_str(
            "| MTU | Rules per group | iqd-sgN | vs iqd-sg0 | bridge-nftN | vs bridge-nft0 | \
             iqd-sgN / bridge-nftN |\n|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in group {
            let value = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format_value(v, unit));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.mtu,
                r.rules,
                value(r.iqd),
                ratio_text(r.iqd_vs_0),
                value(r.nft),
                ratio_text(r.nft_vs_0),
                ratio_text(r.iqd_vs_nft)
            );
        }
    }
    md
}

/// What each system is, for the method section; `secgroup_datapath` is the data path of the
/// `iqd-sg<N>` systems in the run.
fn describe_system(name: &str, secgroup_datapath: &str) -> String {
    if let Some(n) = name.strip_prefix("iqd-sg") {
        return format!(
            "iqd-{secgroup_datapath} (iqd on its `{secgroup_datapath}` data path) with five \
             security groups on each of the two NICs, {n} rules per group (see the \
             security-group rule sets below)."
        );
    }
    if let Some(n) = name.strip_prefix("bridge-nft") {
        return format!(
            "the bridge system with the same five security groups of {n} rules per group as a \
             stateful nftables rule set in each of the two endpoint namespaces (see below)."
        );
    }
    match name {
        "iqd-xdp" => "iqd with its XDP layer-3 data path. Every endpoint is an LPAR namespace \
                      whose interface `hsi0` is a NIC on one CHPID (a veth pair); the \
                      fabric-side ports, which run iqd's `iqd_port` XDP program and redirect \
                      frames between each other, are in a namespace of their own."
            .into(),
        "iqd-tc" => "iqd with its tc data path: the same fabric as iqd-xdp, but the fabric-side \
                     ports run iqd's `iqd_tc` program on tcx ingress, which hands each packet \
                     straight to the destination LPAR's `hsi0` with `bpf_redirect_peer`; no XDP \
                     on either side, so GSO stays on. Security groups are enforced (every NIC \
                     has the default group: its connections are tracked)."
            .into(),
        "iqd-vlan" => "iqd-tc with every NIC in VLAN 100 of the CHPID rather than its untagged \
                       segment: the same programs and maps, another segment number."
            .into(),
        "bridge" => "a Linux bridge in its own namespace, with one veth pair per endpoint.".into(),
        "macvlan" => "macvlan devices in bridge mode on a dummy parent, one per endpoint (on \
                      kernels without the dummy driver, an idle veth is the parent)."
            .into(),
        "veth" => "a direct veth pair between two namespaces: the physical limit of a \
                   veth-based fabric. It takes part in the pairwise measurements only."
            .into(),
        other => match Kind::parse(other).and_then(Kind::datapath) {
            Some(path) => format!("iqd with its `{path}` data path."),
            None => "a system this version of the benchmark does not build (see the history of \
                     `xtask/src/bench/env.rs`)."
                .into(),
        },
    }
}

fn code(text: &str) -> String {
    if text.contains('`') {
        format!("`` {text} ``")
    } else {
        format!("`{text}`")
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn format_duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return UNKNOWN.into();
    }
    let total = seconds.round() as u64;
    match (total / 3600, total / 60 % 60, total % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

const WHY: &str = "\
## Why iqd-xdp loses where it loses

- Attaching an XDP program to a veth makes the kernel turn GSO/TSO off on its peer: `iqd_port`
  on the fabric-side port does this to the LPAR's `hsiN` (see
  [Multi-buffer frames](architecture.md#multi-buffer-frames-frags) in
  [docs/architecture.md](architecture.md)). The sending TCP stack then cuts every stream into
  MTU-sized frames, and every one of them goes through the XDP program on its own.
- The veth's XDP path runs on an `xdp_buff`. A cloned skb (TCP keeps a clone of every segment it
  sends, for retransmission) or a GSO skb is first copied, linearised, into a fresh buffer: one
  copy per frame.
- The bridge has neither cost: its veths keep GSO, so it forwards whole 64 KB GSO super-packets
  and pays its per-packet cost once per up to 64 KB instead of once per MTU-sized frame.
- Both costs are per frame, so they weigh most on bulk TCP at small MTUs; a larger MTU means
  fewer, bigger frames. Small packets (64-byte UDP, request/response) gain nothing from GSO, so
  there the comparison is between iqd's XDP redirect and the bridge's forwarding path.

## Why iqd-tc keeps up with the bridge

- `iqd_tc` runs on the fabric-side port's tc ingress and attaches no XDP anywhere, so the LPAR's
  `hsi0` keeps GSO/TSO and checksum offload: a TCP stream crosses the fabric as 64 KB GSO
  packets, and the program's per-packet cost (parse, policy, a connection-table lookup,
  counters) is paid once per packet, not once per MTU-sized frame.
- `bpf_redirect_peer` hands the packet to the destination LPAR's `hsi0` directly: one veth
  crossing and one backlog queue, where the bridge has two veth crossings and its forwarding
  path. That is why `iqd-tc` comes close to a direct veth pair.
- Security groups cost new connections one longest-prefix match per direction, whatever the
  number of rules; packets of tracked connections one hash lookup.
";

/// docs/performance.md: the machine, the method, the findings, and per metric a chart (by
/// name from `charts`, stored in `performance/` next to the file) and a table.
pub fn markdown(
    rows: &[Summary],
    secgroup_rows: &[SecgroupRow],
    family_rows: &[FamilyRow],
    machine: &Machine,
    run: &RunInfo,
    charts: &[(String, String)],
) -> String {
    let mut md = String::new();
    let unknown_if = |empty: bool, text: String| if empty { UNKNOWN.into() } else { text };

    md.push_str("# Performance\n\n");
    md.push_str(
        "<!-- Generated by `cargo xtask bench`: do not edit by hand; rerun the benchmark. -->\n\n",
    );
    let _ = writeln!(
        md,
        "This file is generated by `cargo xtask bench`; do not edit it by hand. It was written by \
         {} started at {} (UTC), which took {}.",
        code(&run.command),
        run.started_utc,
        format_duration(run.elapsed_s)
    );
    if run.quick {
        md.push_str(
            "\nThis was a **quick** run: few, short measurements. Its figures are indicative \
             only.\n",
        );
    }

    md.push_str("\n## Machine\n\n");
    let _ = writeln!(md, "- Kernel: {}", machine.kernel);
    let _ = writeln!(md, "- CPU: {}", machine.cpu);
    let _ = writeln!(
        md,
        "- Cores: {}",
        unknown_if(machine.cores == 0, machine.cores.to_string())
    );
    let _ = writeln!(
        md,
        "- Memory: {}",
        unknown_if(
            !(machine.memory_gib.is_finite() && machine.memory_gib > 0.0),
            format!("{:.1} GiB", machine.memory_gib)
        )
    );
    let _ = writeln!(md, "- iperf3: {}", machine.iperf3);
    let _ = writeln!(md, "- sockperf: {}", machine.sockperf);

    md.push_str("\n## Method\n\n");
    md.push_str(
        "Every system runs in network namespaces on this one machine, so senders, receivers and \
         the fabric share its CPUs. The systems:\n\n",
    );
    for system in &run.systems {
        let _ = writeln!(
            md,
            "- **{system}**: {}",
            describe_system(system, &run.secgroup_datapath)
        );
    }
    let _ = write!(
        md,
        "\nThe measurements, at MTU {}:\n\n",
        unknown_if(run.mtus.is_empty(), join(&run.mtus))
    );
    let _ = writeln!(
        md,
        "- {} rounds. Within a round every figure is measured once per system, back to back, \
         round-robin, so that drift and noisy neighbours hit all systems alike. A figure is the \
         median over the rounds, with the minimum and maximum. The ratios \"vs bridge\" and \"vs \
         veth\" are medians of per-round ratios: each system is paired with the bridge (or the \
         veth pair) measured in the same round.",
        run.rounds
    );
    let _ = writeln!(
        md,
        "- TCP throughput: iperf3, 1 and 4 parallel streams, {} s per run.",
        run.duration_s
    );
    md.push_str(
        "- UDP: iperf3 `-u -b 0` (no rate limit) with 64- and 1400-byte payloads: packets \
         received per second at the receiver, and the loss in percent.\n",
    );
    md.push_str(
        "- Round trip: sockperf ping-pong over TCP with 64-byte messages and `--full-rtt`, p50 \
         and p99.\n",
    );
    md.push_str(
        "- CPU time per gigabit: the busy time of all CPUs (everything but idle and iowait in \
         /proc/stat) during the 1-stream TCP run, divided by the gigabits received.\n",
    );
    let secgroup_systems: Vec<&String> = run
        .systems
        .iter()
        .filter(|s| s.starts_with("iqd-sg") || s.starts_with("bridge-nft"))
        .collect();
    if let Some(crr_mtu) = run.secgroup_mtus.first() {
        let _ = writeln!(
            md,
            "- Connection rate: a loop in the benchmark itself opens TCP connections one after \
         another from endpoint 0 to a server in endpoint 1 for {} s: connect, 64-byte request, \
         64-byte response, close with an RST (`SO_LINGER` 0, so that no TIME_WAIT holds the \
         client's ports). Every connection is a new flow, which is when a stateful filter \
         consults its rules; the throughput and round-trip figures run over one established \
         connection. It is measured at MTU {crr_mtu} only: the messages are 64 bytes \
         whatever the MTU.",
            run.duration_s,
        );
    }
    if !secgroup_systems.is_empty() {
        let allow = secgroups::allow_rules().len();
        let _ = writeln!(
            md,
            "- Security groups: the systems {} run at MTU {} and measure TCP throughput with 1 \
             stream, the round trip and the connection rate. Every NIC (endpoint) has {} \
             security groups. With N rules per group (50, 250), every group has exactly N \
             rules, and the {allow} rules that allow the measured traffic are the last rules \
             of the last group, where a linear scan reaches them only after all others: \
             inbound and outbound each, TCP and UDP port {} (iperf3), TCP ports {}-{} \
             (sockperf and the connection-rate server) and ICMP echo request, all with remote \
             {}. The other rules never match the measured traffic and never merge: rule k has \
             a remote /24 of its own in 172.16.0.0/12 and a port range of its own, \
             {}+16k to {}+16k+7, alternately inbound and outbound, two in three TCP and the \
             rest UDP. With N = 0, the first four groups are empty and the fifth holds only \
             the {allow} allow rules, so 0 means \"no rule but those the measured traffic \
             needs\".",
            join(&secgroup_systems),
            join(&run.secgroup_mtus),
            secgroups::GROUPS,
            secgroups::IPERF_PORT,
            secgroups::SOCKPERF_PORT,
            secgroups::CRR_PORT,
            secgroups::BENCH_NET,
            secgroups::FILLER_PORT,
            secgroups::FILLER_PORT,
        );
        md.push_str(
            "- The nftables systems load the same rules into every endpoint namespace with \
             `nft -f`: a table `inet iqdbench` whose `input` chain holds the inbound rules and \
             whose `output` chain the outbound rules, in group order, each chain starting \
             with `ct state established,related accept` (and loopback) and ending in policy \
             drop. So, as with iqd, a new connection needs the sender's outbound and the \
             receiver's inbound rules, and its replies pass without rules. The rules are not \
             on the bridge: this kernel has no `nf_conntrack_bridge` \
             (`CONFIG_NF_CONNTRACK_BRIDGE` is not set), and a bridge-family rule `ct state \
             established,related accept` is refused with \"Protocol error\". Filtering on \
             the bridge statefully would take br_netfilter (`bridge-nf-call-iptables`, which \
             passes bridged frames through the IPv4 hooks); endpoint tables need neither, and \
             the bridge stays as in the bridge system.\n",
        );
        md.push_str(
            "- Before measuring, the benchmark checks that every security-group system \
             filters: a TCP connection to the sockperf port succeeds, and one to a port no \
             rule allows times out, in both directions.\n",
        );
    }
    let v6 = run.families.contains(&6);
    if v6 && !run.v6_systems.is_empty() && !run.v6_mtus.is_empty() {
        let _ = writeln!(
            md,
            "- IPv6: the systems {} also measure TCP throughput with 1 stream (iperf3 `-6`, \
             with its CPU time per gigabit) and the round trip over IPv6, at MTU {}. Every \
             endpoint then has an address in fd00:f0::/64 besides its IPv4 one: on iqd's NICs \
             from the fabric file (`ipv6 = [...]` on each `[[lpar.nic]]`), on the others with \
             `ip -6 addr add ... nodad`. The sockperf of this machine cannot address IPv6, so \
             the IPv6 round trip is the benchmark's own loop: one TCP connection with \
             `TCP_NODELAY`, a 64-byte message and its echo, every full round trip timed after \
             {} untimed ones, for {} s; p50 and p99 by nearest rank. Compare it with the other \
             systems' IPv6 round trips, not with the sockperf figures over IPv4. IPv6 figures \
             are named after their IPv4 twins with `_v6` appended (`tcp_1_v6`, `rr_p50_v6`).",
            join(&run.v6_systems),
            join(&run.v6_mtus),
            super::measure::PING_PONG_WARMUP,
            run.duration_s,
        );
    }
    if let Some(mtu) = run.cost_mtu {
        let _ = writeln!(
            md,
            "- Per-packet cost of iqd's tc program (iqd-tc, MTU {mtu}): with the kernel's BPF \
             statistics on (`kernel.bpf_stats_enabled` = 1 for this step only, set back to its \
             previous value afterwards, also on failure), a ping flood (`ping -f`, 56-byte \
             payload) from endpoint 0 to endpoint 1 for {} s over {}. The program's \
             `run_time_ns` and `run_cnt` are read before and after from the program pinned at \
             `/sys/fs/bpf/iqd/<fabric>/prog_iqd_tc` (by its pin: every fabric loads its own), \
             and their differences give nanoseconds per run; each echo request and each reply \
             is one run, on the sending LPAR's port. At least 9 replies in 10 must come back, \
             or the figure fails.",
            run.duration_s,
            if v6 { "IPv4 and over IPv6" } else { "IPv4" }
        );
    }
    if run.scale.is_empty() {
        md.push_str("- Scale: not run.\n");
    } else {
        let _ = writeln!(
            md,
            "- Scale, with {} LPARs on one CHPID (endpoints, for the other systems): the time to \
             bring them all up, all-pairs reachability with fping{}, the permanent neighbour \
             entries in the endpoint namespaces afterwards, and the aggregate TCP throughput of \
             N/2 concurrent iperf3 pairs. iqd's NICs are NOARP, as HiperSockets layer-3 \
             interfaces are: they resolve no neighbour, so the benchmark gives iqd no \
             neighbour entries, and the count shows that iqd itself adds none (0 expected). \
             The bridge and macvlan resolve with ARP and ND through the kernel's neighbour \
             table, which all namespaces share and which holds at most `gc_thresh3` (1024 by \
             default) dynamic entries per family; where all pairs need more (N(N-1) > 3/4 of \
             it, so from about 28 endpoints), each of their endpoints gets permanent entries \
             for the others, which the count includes.",
            join(&run.scale),
            if v6 {
                " over IPv4 and with `fping -6` over IPv6"
            } else {
                ""
            }
        );
    }

    md.push_str("\n## Findings\n\n");
    let mut findings = findings(rows);
    findings.extend(family_findings(family_rows));
    findings.extend(secgroup_findings(secgroup_rows));
    if findings.is_empty() {
        md.push_str("- None: the run has no iqd system compared with the bridge or veth.\n");
    }
    for finding in &findings {
        let _ = writeln!(md, "- {finding}");
    }

    if !family_rows.is_empty() {
        md.push_str(
            "\n## IPv6 against IPv4\n\nEach system's figures measured with the same tool in \
             both families, side by side; the last column is the paired ratio within rounds. \
             The IPv6 figures' ratios to the bridge and the veth pair are in the Results \
             below, each beside its IPv4 twin.\n\n",
        );
        md.push_str(&family_table(family_rows));
    }

    if !secgroup_rows.is_empty() {
        let _ = writeln!(
            md,
            "\n## Security groups\n\nThe security-group systems side by side: iqd on its \
             `{}` data path with N rules per group (`iqd-sgN`) and the bridge with the \
             equivalent nftables rule set (`bridge-nftN`). \"vs ...0\" is the paired ratio to \
             the same system with 0 rules per group (the cost of the rules); the last column is \
             iqd's paired ratio to the nftables bridge with as many rules. The Results below \
             list the same medians with their ranges and their ratios to the plain bridge and \
             the veth pair.",
            run.secgroup_datapath
        );
        md.push_str(&secgroup_tables(secgroup_rows));
    }

    md.push_str("\n## Results\n");
    let mut referenced = Vec::new();
    for (name, group) in by_metric(rows) {
        let unit = &group[0].unit;
        let title = title_of(name);
        let _ = write!(md, "\n### {title}\n\nIn {unit}");
        let dir = direction(name);
        if !dir.is_empty() {
            let _ = write!(md, "; {dir}");
        }
        md.push_str(".\n\n");
        let file = format!("{name}.svg");
        if let Some((file, _)) = charts.iter().find(|(f, _)| *f == file) {
            let _ = writeln!(md, "![{title}](performance/{file})\n");
            referenced.push(file.as_str());
        }
        md.push_str("| System | MTU | Median | Min | Max | n | vs bridge | vs veth |\n");
        md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for row in group {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                cell(&row.system),
                row.mtu,
                format_value(row.median, unit),
                format_value(row.min, unit),
                format_value(row.max, unit),
                row.samples,
                format_ratio(row.vs_bridge),
                format_ratio(row.vs_veth)
            );
        }
    }
    let others: Vec<&String> = charts
        .iter()
        .map(|(f, _)| f)
        .filter(|f| !referenced.contains(&f.as_str()))
        .collect();
    if !others.is_empty() {
        md.push_str("\n### Other charts\n\n");
        for file in others {
            let _ = writeln!(md, "![{file}](performance/{file})\n");
        }
    }
    if rows.is_empty() {
        md.push_str("\nNo results.\n");
    }

    md.push('\n');
    md.push_str(WHY);
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        metric: &str,
        mtu: u32,
        system: &str,
        median: f64,
        vs_bridge: Option<f64>,
        vs_veth: Option<f64>,
    ) -> Summary {
        Summary {
            metric: metric.into(),
            unit: super::metric(metric).map_or("x", |m| m.unit).into(),
            mtu,
            system: system.into(),
            median,
            min: median * 0.9,
            max: median * 1.1,
            samples: 5,
            vs_bridge,
            vs_veth,
        }
    }

    /// iqd loses most on TCP at 57344 (0.62x), wins on p50 latency (0.8x: lower is better),
    /// and its worst latency is p99 (1.5x: lower is better, so worse than TCP at 0.7x).
    fn rows() -> Vec<Summary> {
        vec![
            row("tcp_1", 1500, "iqd-xdp", 10.0, Some(0.9), Some(0.5)),
            row("tcp_1", 1500, "bridge", 11.1, Some(1.0), Some(0.55)),
            row("tcp_1", 1500, "veth", 20.0, Some(1.8), Some(1.0)),
            row("tcp_1", 57344, "iqd-xdp", 16.1, Some(0.62), Some(0.4)),
            row("tcp_1", 57344, "bridge", 25.9, Some(1.0), Some(0.65)),
            row("tcp_1", 57344, "veth", 40.0, Some(1.55), Some(1.0)),
            row("udp64_loss", 1500, "iqd-xdp", 9.0, Some(90.0), None),
            row("udp64_loss", 1500, "bridge", 0.1, Some(1.0), None),
            row("udp64_pps", 1500, "iqd-xdp", 812_000.0, Some(1.2), None),
            row("udp64_pps", 1500, "bridge", 1_234_000.0, Some(1.0), None),
            row("rr_p50", 1500, "iqd-xdp", 20.0, Some(0.8), Some(1.1)),
            row("rr_p50", 1500, "bridge", 25.0, Some(1.0), None),
            row("rr_p99", 1500, "iqd-xdp", 45.0, Some(1.35), Some(3.0)),
            row("rr_p99", 1500, "bridge", 33.3, Some(1.0), Some(1.0)),
            row("rr_p99", 1500, "veth", 15.0, None, Some(1.0)),
        ]
    }

    #[test]
    fn values_are_formatted_by_unit() {
        assert_eq!(format_value(16.104, "Gbit/s"), "16.10");
        assert_eq!(format_value(812_000.0, "packets/s"), "812k");
        assert_eq!(format_value(1_234_000.0, "packets/s"), "1.23M");
        assert_eq!(format_value(999_700.0, "packets/s"), "1.00M");
        assert_eq!(format_value(9_996.0, "packets/s"), "10.0k");
        assert_eq!(format_value(512.0, "packets/s"), "512");
        assert_eq!(format_value(12.34, "us"), "12.3");
        assert_eq!(format_value(0.126, "%"), "0.13");
        assert_eq!(format_value(1.5, "s"), "1.50");
        assert_eq!(format_value(0.01234, "CPU s/Gbit"), "0.012");
        assert_eq!(format_value(f64::NAN, "Gbit/s"), "-");
        assert_eq!(format_ratio(Some(0.644)), "0.64x");
        assert_eq!(format_ratio(None), "-");
        assert_eq!(format_ratio(Some(f64::INFINITY)), "-");
    }

    #[test]
    fn table_lists_every_system_with_ratios() {
        let text = table(&rows());
        for system in ["iqd-xdp", "bridge", "veth"] {
            assert!(text.contains(system), "{system} missing:\n{text}");
        }
        assert!(text.contains("TCP throughput, 1 stream [Gbit/s, higher is better]"));
        assert!(text.contains("0.62x"));
        assert!(text.contains("16.10"));
        assert!(text.contains("14.49–17.71"));
        assert!(text.contains("812k"));
        // udp64_pps has no veth ratio: shown as "-" at the end of the line.
        let line = text.lines().find(|l| l.contains("812k")).unwrap();
        assert!(line.ends_with('-'), "{line}");
        // Columns line up: every data line of a metric block has the same length.
        let block: Vec<&str> = text.split("\n\n").next().unwrap().lines().skip(1).collect();
        let len = block[0].chars().count();
        assert!(block.iter().all(|l| l.chars().count() == len), "{block:?}");
        assert!(table(&[]).is_empty());
    }

    #[test]
    fn findings_take_the_direction_into_account() {
        let f = findings(&rows());
        let gap = f
            .iter()
            .find(|s| s.contains("largest gap to the bridge"))
            .unwrap();
        // p99 at 1.35x (lower is better) is less bad than TCP at 0.62x; loss is ignored.
        assert_eq!(
            gap,
            "iqd-xdp: largest gap to the bridge: TCP throughput, 1 stream at MTU 57344, 0.62x \
             the bridge (16.10 vs 25.90 Gbit/s)"
        );
        let best = f
            .iter()
            .find(|s| s.contains("beats the bridge most"))
            .unwrap();
        // p50 at 0.8x (lower is better: 1.25x better) beats pps at 1.2x.
        assert!(
            best.contains("round trip, p50 at MTU 1500, 0.80x"),
            "{best}"
        );
        assert!(best.contains("lower is better"), "{best}");
        let limit = f.iter().find(|s| s.contains("physical limit")).unwrap();
        // p99 at 3x veth (lower is better) is worse than TCP at 0.4x.
        assert!(
            limit.contains("p99 at MTU 1500, 3.00x veth (45.0 vs 15.0 us"),
            "{limit}"
        );
        assert!(f.iter().all(|s| s.starts_with("iqd-xdp: ")));
        assert!(!f.iter().any(|s| s.contains("loss")));
    }

    #[test]
    fn findings_flip_for_lower_is_better_only() {
        // Only a latency metric: 1.2x is a gap, 0.9x is a win.
        let rows = vec![
            row("rr_p50", 1500, "iqd-xdp", 12.0, Some(1.2), None),
            row("rr_p50", 1500, "bridge", 10.0, Some(1.0), None),
            row("rr_p50", 8192, "iqd-xdp", 9.0, Some(0.9), None),
            row("rr_p50", 8192, "bridge", 10.0, Some(1.0), None),
        ];
        let f = findings(&rows);
        assert!(
            f[0].contains("largest gap") && f[0].contains("MTU 1500, 1.20x"),
            "{f:?}"
        );
        assert!(f[1].contains("beats the bridge most") && f[1].contains("MTU 8192, 0.90x"));
        assert_eq!(f.len(), 2, "no veth in the run: {f:?}");
    }

    #[test]
    fn findings_skip_zero_baselines_and_missing_ratios() {
        let rows = vec![
            row("tcp_4", 1500, "iqd-tc", 5.0, None, None),
            row("cpu_per_gbit", 1500, "iqd-tc", 0.5, Some(0.0), None),
            row("cpu_per_gbit", 1500, "bridge", 0.0, Some(1.0), None),
            row(
                "scale16_reachable",
                1500,
                "iqd-tc",
                93.75,
                Some(0.9375),
                None,
            ),
            row("scale16_reachable", 1500, "bridge", 100.0, Some(1.0), None),
        ];
        let f = findings(&rows);
        assert_eq!(
            f,
            vec!["iqd-tc: all-pairs reachability with 16 LPARs at MTU 1500 was 93.75%, not 100%"]
        );
        assert!(findings(&[]).is_empty());
    }

    fn machine() -> Machine {
        Machine {
            kernel: "6.18.44-test".into(),
            cpu: "Intel(R) Xeon(R) Processor".into(),
            cores: 8,
            memory_gib: 31.25,
            iperf3: "iperf 3.12 (cJSON 1.7.15)".into(),
            sockperf: "sockperf, version 3.7-no.git".into(),
        }
    }

    fn run() -> RunInfo {
        RunInfo {
            command: "cargo xtask bench".into(),
            started_utc: "2026-11-22T10:00:00Z".into(),
            elapsed_s: 725.0,
            rounds: 5,
            duration_s: 2,
            quick: false,
            systems: vec![
                "iqd-xdp".into(),
                "bridge".into(),
                "macvlan".into(),
                "veth".into(),
            ],
            mtus: vec![1500, 8192, 57344],
            scale: vec![2, 16, 64],
            secgroup_mtus: vec![1500, 57344],
            secgroup_datapath: "tc".into(),
            families: vec![4, 6],
            v6_mtus: vec![1500, 57344],
            v6_systems: vec!["iqd-tc".into(), "bridge".into(), "veth".into()],
            cost_mtu: Some(1500),
        }
    }

    #[test]
    fn markdown_has_the_machine_the_findings_and_every_chart() {
        let rows = rows();
        let charts: Vec<(String, String)> =
            ["tcp_1", "udp64_loss", "udp64_pps", "rr_p50", "rr_p99"]
                .iter()
                .map(|m| (format!("{m}.svg"), "<svg/>".to_string()))
                .chain([("extra.svg".to_string(), String::new())])
                .collect();
        let md = markdown(&rows, &[], &[], &machine(), &run(), &charts);
        assert!(md.starts_with("# Performance\n"));
        assert!(md.contains("generated by `cargo xtask bench`"));
        assert!(md.contains("2026-11-22T10:00:00Z"));
        assert!(md.contains("12 min 5 s"));
        for text in [
            "6.18.44-test",
            "Intel(R) Xeon(R) Processor",
            "Cores: 8",
            "31.2 GiB",
            "iperf 3.12",
            "sockperf, version 3.7",
        ] {
            assert!(md.contains(text), "{text} missing");
        }
        for (file, _) in &charts {
            assert!(
                md.contains(&format!("](performance/{file})")),
                "{file} missing"
            );
        }
        assert!(md.contains("![TCP throughput, 1 stream](performance/tcp_1.svg)"));
        assert!(md.contains("- iqd-xdp: largest gap to the bridge: TCP throughput"));
        assert!(md.contains("| iqd-xdp | 57344 | 16.10 | 14.49 | 17.71 | 5 | 0.62x | 0.40x |"));
        assert!(md.contains("## Why iqd-xdp loses where it loses"));
        assert!(md.contains("architecture.md"));
        assert!(md.contains("**macvlan**: macvlan devices in bridge mode on a dummy parent"));
        assert!(md.contains("2, 16, 64 LPARs"));
        assert!(!md.contains("quick"));
    }

    fn secgroup_row(rules: usize, iqd: f64, nft: f64) -> SecgroupRow {
        SecgroupRow {
            metric: "tcp_crr".into(),
            unit: "conn/s".into(),
            mtu: 1500,
            rules,
            iqd: Some(iqd),
            nft: Some(nft),
            iqd_vs_0: Some(iqd / 13_000.0),
            nft_vs_0: Some(nft / 12_000.0),
            iqd_vs_nft: Some(iqd / nft),
        }
    }

    #[test]
    fn markdown_describes_and_compares_the_security_group_systems() {
        let mut run = run();
        run.systems.extend(
            ["iqd-sg0", "iqd-sg250", "bridge-nft0", "bridge-nft250"]
                .iter()
                .map(|s| s.to_string()),
        );
        let sg = vec![
            secgroup_row(0, 13_000.0, 12_000.0),
            secgroup_row(250, 12_000.0, 6_000.0),
        ];
        let rows = vec![
            row("tcp_crr", 1500, "iqd-sg250", 12_000.0, Some(0.9), None),
            row("tcp_crr", 1500, "bridge", 13_500.0, Some(1.0), None),
        ];
        let md = markdown(&rows, &sg, &[], &machine(), &run, &[]);
        assert!(
            md.contains("- **iqd-sg250**: iqd-tc (iqd on its `tc` data path) with five security"),
            "{md}"
        );
        assert!(md.contains("iqd on its `tc` data path with N rules per group"));
        assert!(md.contains("- **bridge-nft0**: the bridge system with the same five"));
        assert!(md.contains("With N = 0, the first four groups are empty"));
        assert!(md.contains("`CONFIG_NF_CONNTRACK_BRIDGE` is not set"));
        assert!(md.contains("## Security groups"));
        assert!(
            md.contains("| 1500 | 250 | 12.0k | 0.92x | 6.00k | 0.50x | 2.00x |"),
            "{md}"
        );
        assert!(md.contains(
            "- security groups, 250 rules per group: TCP connections/s (connect, 64-byte \
             request/response, close) at MTU 1500: iqd-sg250 12.0k conn/s (0.92x its 0-rule \
             figure), bridge-nft250 6.00k conn/s (0.50x); iqd 2.00x the nftables bridge"
        ));
        // The per-system findings leave the security-group systems to their own sentence.
        assert!(!md.contains("- iqd-sg250: "));
        assert!(md.contains("measured at MTU 1500 only"));
        let tables = secgroup_tables(&sg);
        assert_eq!(tables.matches("| 1500 |").count(), 2);
    }

    #[test]
    fn markdown_handles_an_empty_run() {
        let mut run = run();
        run.quick = true;
        run.scale.clear();
        let machine = Machine {
            cores: 0,
            memory_gib: 0.0,
            ..machine()
        };
        let md = markdown(&[], &[], &[], &machine, &run, &[]);
        assert!(md.contains("Cores: unknown") && md.contains("Memory: unknown"));
        assert!(md.contains("**quick** run") && md.contains("Scale: not run"));
        assert!(md.contains("No results."));
    }

    #[test]
    fn machine_details_are_parsed() {
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)\n";
        assert_eq!(cpu_model(x86).as_deref(), Some("Intel(R) Xeon(R)"));
        let s390 = "vendor_id       : IBM/S390\n# processors    : 4\n\
                    processor 0: version = 00,  identification = 0A1B2C,  machine = 3931\n";
        assert_eq!(
            cpu_model(s390).as_deref(),
            Some("IBM/S390, machine type 3931")
        );
        assert_eq!(cpu_model(""), None);
        let gib = mem_total_gib("MemTotal:       32768000 kB\nMemFree: 1 kB\n").unwrap();
        assert!((gib - 31.25).abs() < 1e-9);
        assert_eq!(mem_total_gib("nothing"), None);
        assert_eq!(tool_version("/nonexistent/tool"), "unknown");
        // Never panics, whatever the machine has.
        let m = Machine::detect();
        assert!(!m.kernel.is_empty() && !m.cpu.is_empty());
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(45.2), "45 s");
        assert_eq!(format_duration(725.0), "12 min 5 s");
        assert_eq!(format_duration(7300.0), "2 h 1 min");
        assert_eq!(format_duration(f64::NAN), "unknown");
    }
    #[test]
    fn markdown_describes_ipv6_the_program_cost_and_the_scale_check() {
        let family = vec![FamilyRow {
            metric: "prog_ns".into(),
            unit: "ns".into(),
            mtu: 1500,
            system: "iqd-tc".into(),
            v4: Some(200.0),
            v6: Some(230.0),
            v6_vs_v4: Some(1.15),
        }];
        let mut run = run();
        run.systems.insert(1, "iqd-tc".into());
        run.scale = vec![2, 85];
        let rows = vec![
            row("prog_ns", 1500, "iqd-tc", 200.0, None, None),
            row("prog_ns_v6", 1500, "iqd-tc", 230.0, None, None),
            row("tcp_1_v6", 1500, "iqd-tc", 20.0, Some(1.05), Some(0.98)),
            row("tcp_1_v6", 1500, "bridge", 19.0, Some(1.0), Some(0.93)),
        ];
        let md = markdown(&rows, &[], &family, &machine(), &run, &[]);
        assert!(
            md.contains("- IPv6: the systems iqd-tc, bridge, veth also measure"),
            "{md}"
        );
        assert!(md.contains("at MTU 1500, 57344. Every endpoint"), "{md}");
        assert!(md.contains("`kernel.bpf_stats_enabled` = 1 for this step only"));
        assert!(md.contains("/sys/fs/bpf/iqd/<fabric>/prog_iqd_tc"));
        assert!(md.contains("over IPv4 and over IPv6"));
        assert!(md.contains("with 2, 85 LPARs") && md.contains("`fping -6`"));
        assert!(md.contains("## IPv6 against IPv4"));
        assert!(md.contains(
            "| iqd-tc | iqd_tc run time per packet (ICMP/ICMPv6 echo) | 1500 | 200 ns | 230 ns \
             | 1.15x |"
        ));
        assert!(md.contains(
            "- iqd-tc: IPv6 against IPv4, run time of iqd_tc per packet (ICMP echo): 1.15x \
             (230 ns vs 200 ns, lower is better)"
        ));
        assert!(md.contains("### TCP throughput, 1 stream, IPv6"));
        assert!(md.contains("| iqd-tc | 1500 | 20.00 | 18.00 | 22.00 | 5 | 1.05x | 0.98x |"));
        let failed = FamilyRow {
            v6: None,
            v6_vs_v4: None,
            ..family[0].clone()
        };
        assert_eq!(
            family_findings(&[failed]),
            [
                "iqd-tc: run time of iqd_tc per packet (ICMP echo): 200 ns over IPv4; over IPv6 \
              not measured (see the run's failures)"
            ]
        );
        // IPv4 only: no IPv6 text.
        run.families = vec![4];
        let md = markdown(&rows, &[], &[], &machine(), &run, &[]);
        assert!(!md.contains("- IPv6:") && !md.contains("## IPv6 against IPv4"));
        assert!(md.contains("ping flood") && !md.contains("over IPv4 and over IPv6"));
    }

    #[test]
    fn findings_report_unreachable_pairs_per_family_and_permanent_entries() {
        let mut pinned = row("scale85_neigh_permanent", 8192, "iqd-tc", 0.0, None, None);
        pinned.max = 12.0;
        let rows = vec![
            row("scale85_reachable", 8192, "iqd-tc", 100.0, Some(1.0), None),
            row("scale85_reachable_v6", 8192, "iqd-tc", 0.0, Some(0.0), None),
            pinned,
            row(
                "scale85_neigh_permanent",
                8192,
                "bridge",
                14280.0,
                None,
                None,
            ),
        ];
        let f = findings(&rows);
        assert_eq!(
            f,
            vec![
                "iqd-tc: all-pairs reachability over IPv6 with 85 LPARs at MTU 8192 was 0.00%, \
                 not 100%",
                "iqd-tc: with 85 LPARs at MTU 8192, its LPAR namespaces held up to 12 permanent \
                 neighbour entries; a fabric of NOARP NICs needs none",
            ]
        );
    }
}
