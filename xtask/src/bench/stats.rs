//! Raw samples and their summaries: medians with min and max, and per-round ratios.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The system every ratio is taken against: what users pick instead of iqd.
pub const BASELINE: &str = "bridge";
/// The physical limit of a veth-based fabric.
pub const LIMIT: &str = "veth";

/// One measured value, exactly as it goes into the JSON file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub system: String,
    pub mtu: u32,
    pub metric: String,
    pub round: u32,
    pub value: f64,
    pub unit: String,
}

/// What a metric measures, how it is shown, and which direction is better.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub unit: &'static str,
    pub title: String,
    pub higher_is_better: bool,
}

/// The per-MTU metrics, in table order: name, unit, title, higher is better. An IPv6 figure
/// is named after its IPv4 twin with `_v6` appended and comes right after it.
pub const METRICS: &[(&str, &str, &str, bool)] = &[
    ("tcp_1", "Gbit/s", "TCP throughput, 1 stream", true),
    ("tcp_1_v6", "Gbit/s", "TCP throughput, 1 stream, IPv6", true),
    ("tcp_4", "Gbit/s", "TCP throughput, 4 streams", true),
    (
        "cpu_per_gbit",
        "CPU s/Gbit",
        "CPU time per gigabit (TCP, 1 stream)",
        false,
    ),
    (
        "cpu_per_gbit_v6",
        "CPU s/Gbit",
        "CPU time per gigabit (TCP, 1 stream, IPv6)",
        false,
    ),
    (
        "udp64_pps",
        "packets/s",
        "UDP packets received/s, 64-byte payload",
        true,
    ),
    ("udp64_loss", "%", "UDP loss, 64-byte payload", false),
    (
        "udp1400_pps",
        "packets/s",
        "UDP packets received/s, 1400-byte payload",
        true,
    ),
    ("udp1400_loss", "%", "UDP loss, 1400-byte payload", false),
    (
        "rr_p50",
        "us",
        "TCP request/response round trip, p50",
        false,
    ),
    (
        "rr_p50_v6",
        "us",
        "TCP request/response round trip, IPv6 (own ping-pong), p50",
        false,
    ),
    (
        "rr_p99",
        "us",
        "TCP request/response round trip, p99",
        false,
    ),
    (
        "rr_p99_v6",
        "us",
        "TCP request/response round trip, IPv6 (own ping-pong), p99",
        false,
    ),
    (
        "tcp_crr",
        "conn/s",
        "TCP connections/s (connect, 64-byte request/response, close)",
        true,
    ),
    (
        "prog_ns",
        "ns",
        "iqd_tc run time per packet (ICMP echo, IPv4)",
        false,
    ),
    (
        "prog_ns_v6",
        "ns",
        "iqd_tc run time per packet (ICMPv6 echo, IPv6)",
        false,
    ),
];

/// Describes `name`: one of [`METRICS`] or a scale metric (N LPARs on one CHPID):
/// `scale<N>_up`, `scale<N>_reachable`, `scale<N>_reachable_v6`, `scale<N>_tcp`,
/// `scale<N>_tcp_v6` or `scale<N>_neigh_permanent`.
pub fn metric(name: &str) -> Option<Metric> {
    if let Some((_, unit, title, higher_is_better)) = METRICS.iter().find(|m| m.0 == name) {
        return Some(Metric {
            unit,
            title: title.to_string(),
            higher_is_better: *higher_is_better,
        });
    }
    let rest = name.strip_prefix("scale")?;
    let (n, what) = rest.split_once('_')?;
    let n: u32 = n.parse().ok()?;
    let (unit, title, higher_is_better) = match what {
        "up" => ("s", "time to bring up", false),
        "reachable" => ("%", "all-pairs reachability", true),
        "reachable_v6" => ("%", "all-pairs reachability, IPv6", true),
        "tcp" => ("Gbit/s", "aggregate TCP throughput of N/2 pairs", true),
        "tcp_v6" => (
            "Gbit/s",
            "aggregate TCP throughput of N/2 pairs, IPv6",
            true,
        ),
        "neigh_permanent" => (
            "entries",
            "permanent neighbour entries in the endpoint namespaces",
            false,
        ),
        _ => return None,
    };
    Some(Metric {
        unit,
        title: format!("{n} LPARs: {title}"),
        higher_is_better,
    })
}

/// Whether a metric gets ratios to the bridge and the veth pair: not a count of permanent
/// neighbour entries (the bridge gets them from the benchmark, iqd must need none).
pub fn has_ratios(name: &str) -> bool {
    !name.ends_with("_neigh_permanent")
}

/// The scale metrics of one N in table order: reachability in each family beside the count of
/// permanent neighbour entries it needed, then throughput and the time to bring up.
const SCALE_ORDER: [&str; 6] = [
    "reachable",
    "reachable_v6",
    "neigh_permanent",
    "tcp",
    "tcp_v6",
    "up",
];

/// Where a metric sorts in tables: the per-MTU metrics in order, then scale metrics by N, and
/// within one N in [`SCALE_ORDER`].
pub fn metric_order(name: &str) -> (usize, u32, usize, String) {
    match METRICS.iter().position(|m| m.0 == name) {
        Some(i) => (i, 0, 0, String::new()),
        None => {
            let split = name
                .strip_prefix("scale")
                .and_then(|rest| rest.split_once('_'));
            let n = split.and_then(|(n, _)| n.parse().ok()).unwrap_or(u32::MAX);
            let what = split
                .and_then(|(_, what)| SCALE_ORDER.iter().position(|w| *w == what))
                .unwrap_or(SCALE_ORDER.len());
            (METRICS.len(), n, what, name.to_string())
        }
    }
}

/// The median of `values` (mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// One row of the result table: a system's figure for a metric at an MTU.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub metric: String,
    pub unit: String,
    pub mtu: u32,
    pub system: String,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: usize,
    /// Median over rounds of (this system / bridge) in the same round.
    pub vs_bridge: Option<f64>,
    /// Median over rounds of (this system / direct veth pair) in the same round.
    pub vs_veth: Option<f64>,
}

/// Median over the rounds both systems have of `system`'s value divided by `other`'s.
fn paired_ratio(rounds: &BTreeMap<u32, f64>, other: Option<&BTreeMap<u32, f64>>) -> Option<f64> {
    let other = other?;
    let ratios: Vec<f64> = rounds
        .iter()
        .filter_map(|(round, v)| other.get(round).filter(|o| **o != 0.0).map(|o| v / o))
        .collect();
    median(&ratios)
}

/// Summaries in a stable order: metric (table order), MTU, then system in `systems` order.
pub fn summarize(samples: &[Sample], systems: &[String]) -> Vec<Summary> {
    // (metric, mtu) -> system -> round -> value
    type ByRound = BTreeMap<u32, f64>;
    type Key = ((usize, u32, usize, String), String, u32);
    let mut groups: BTreeMap<Key, BTreeMap<String, ByRound>> = BTreeMap::new();
    let mut units: BTreeMap<String, String> = BTreeMap::new();
    for s in samples {
        groups
            .entry((metric_order(&s.metric), s.metric.clone(), s.mtu))
            .or_default()
            .entry(s.system.clone())
            .or_default()
            .insert(s.round, s.value);
        units.insert(s.metric.clone(), s.unit.clone());
    }
    let position = |system: &str| {
        systems
            .iter()
            .position(|s| s == system)
            .unwrap_or(usize::MAX)
    };
    let mut out = Vec::new();
    for ((_, metric, mtu), by_system) in groups {
        let mut names: Vec<&String> = by_system.keys().collect();
        names.sort_by_key(|name| (position(name), (*name).clone()));
        for system in names {
            let rounds = &by_system[system];
            let values: Vec<f64> = rounds.values().copied().collect();
            let Some(median) = median(&values) else {
                continue;
            };
            out.push(Summary {
                unit: units[&metric].clone(),
                metric: metric.clone(),
                mtu,
                system: system.clone(),
                median,
                min: values.iter().copied().fold(f64::INFINITY, f64::min),
                max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                samples: values.len(),
                vs_bridge: paired_ratio(rounds, by_system.get(BASELINE))
                    .filter(|_| has_ratios(&metric)),
                vs_veth: paired_ratio(rounds, by_system.get(LIMIT)).filter(|_| has_ratios(&metric)),
            });
        }
    }
    out
}

/// The system `--baseline-iqd` builds: iqd-tc with another iqd binary.
pub const BASELINE_IQD: &str = "iqd-tc-baseline";

/// One line of the baseline comparison: iqd-tc's per-packet cost against the same fabric built
/// by the baseline iqd (`--baseline-iqd`), at a metric and MTU.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BaselineRow {
    pub metric: String,
    pub unit: String,
    pub mtu: u32,
    /// Median of iqd-tc.
    pub iqd: f64,
    /// Median of iqd-tc-baseline.
    pub baseline: f64,
    /// Paired within rounds: iqd-tc / iqd-tc-baseline.
    pub ratio: Option<f64>,
}

/// The baseline comparison, for every metric both iqd-tc and iqd-tc-baseline have.
pub fn baseline_rows(samples: &[Sample]) -> Vec<BaselineRow> {
    // (metric, mtu) -> (iqd-tc's rounds, the baseline's rounds)
    type Rounds = BTreeMap<u32, f64>;
    let mut groups: BTreeMap<(String, u32), (Rounds, Rounds)> = BTreeMap::new();
    let mut units: BTreeMap<String, String> = BTreeMap::new();
    for s in samples {
        let entry = groups.entry((s.metric.clone(), s.mtu)).or_default();
        match s.system.as_str() {
            "iqd-tc" => entry.0.insert(s.round, s.value),
            BASELINE_IQD => entry.1.insert(s.round, s.value),
            _ => continue,
        };
        units.insert(s.metric.clone(), s.unit.clone());
    }
    groups
        .into_iter()
        .filter_map(|((metric, mtu), (iqd, baseline))| {
            let iqd_median = median(&iqd.values().copied().collect::<Vec<_>>())?;
            let baseline_median = median(&baseline.values().copied().collect::<Vec<_>>())?;
            Some(BaselineRow {
                unit: units[&metric].clone(),
                ratio: paired_ratio(&iqd, Some(&baseline)),
                metric,
                mtu,
                iqd: iqd_median,
                baseline: baseline_median,
            })
        })
        .collect()
}

/// The metrics the security-group systems measure.
pub const SECGROUP_METRICS: [&str; 4] = ["tcp_1", "rr_p50", "rr_p99", "tcp_crr"];

/// One line of the security-group comparison: iqd with N rules per group against the bridge
/// with the equivalent nftables rule set, at a metric and MTU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecgroupRow {
    pub metric: String,
    pub unit: String,
    pub mtu: u32,
    /// Rules per group.
    pub rules: usize,
    /// Median of `iqd-sg<rules>`.
    pub iqd: Option<f64>,
    /// Median of `bridge-nft<rules>`.
    pub nft: Option<f64>,
    /// Paired within rounds: `iqd-sg<rules>` / `iqd-sg0`.
    pub iqd_vs_0: Option<f64>,
    /// Paired within rounds: `bridge-nft<rules>` / `bridge-nft0`.
    pub nft_vs_0: Option<f64>,
    /// Paired within rounds: `iqd-sg<rules>` / `bridge-nft<rules>`.
    pub iqd_vs_nft: Option<f64>,
}

/// The security-group comparison, by metric, MTU and rule count; only where at least one of
/// the two systems has samples.
pub fn secgroup_rows(samples: &[Sample]) -> Vec<SecgroupRow> {
    let mut out = Vec::new();
    for metric in SECGROUP_METRICS {
        let mut mtus: Vec<u32> = samples
            .iter()
            .filter(|s| s.metric == metric)
            .map(|s| s.mtu)
            .collect();
        mtus.sort_unstable();
        mtus.dedup();
        for mtu in mtus {
            let rounds = |system: &str| -> Option<BTreeMap<u32, f64>> {
                let map: BTreeMap<u32, f64> = samples
                    .iter()
                    .filter(|s| s.metric == metric && s.mtu == mtu && s.system == system)
                    .map(|s| (s.round, s.value))
                    .collect();
                (!map.is_empty()).then_some(map)
            };
            let (iqd0, nft0) = (rounds("iqd-sg0"), rounds("bridge-nft0"));
            for rules in super::secgroups::RULE_COUNTS {
                let iqd = rounds(&format!("iqd-sg{rules}"));
                let nft = rounds(&format!("bridge-nft{rules}"));
                if iqd.is_none() && nft.is_none() {
                    continue;
                }
                let med = |r: &Option<BTreeMap<u32, f64>>| {
                    r.as_ref()
                        .and_then(|r| median(&r.values().copied().collect::<Vec<_>>()))
                };
                let ratio = |a: &Option<BTreeMap<u32, f64>>, b: &Option<BTreeMap<u32, f64>>| {
                    paired_ratio(a.as_ref()?, b.as_ref())
                };
                out.push(SecgroupRow {
                    metric: metric.to_string(),
                    unit: metric_unit(metric),
                    mtu,
                    rules,
                    iqd: med(&iqd),
                    nft: med(&nft),
                    iqd_vs_0: ratio(&iqd, &iqd0),
                    nft_vs_0: ratio(&nft, &nft0),
                    iqd_vs_nft: ratio(&iqd, &nft),
                });
            }
        }
    }
    out
}

/// The figures measured in both families with the same tool, by their IPv4 names: the IPv6
/// round trip comes from another tool than sockperf's IPv4 one, so it is compared with the
/// bridge and the veth pair only.
pub const FAMILY_METRICS: [&str; 3] = ["tcp_1", "cpu_per_gbit", "prog_ns"];

/// One system's figure in IPv4 and IPv6 side by side, at a metric (IPv4 name) and MTU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FamilyRow {
    pub metric: String,
    pub unit: String,
    pub mtu: u32,
    pub system: String,
    /// Median over the rounds, IPv4.
    pub v4: Option<f64>,
    /// Median over the rounds, IPv6.
    pub v6: Option<f64>,
    /// Paired within rounds: IPv6 / IPv4.
    pub v6_vs_v4: Option<f64>,
}

/// IPv6 against IPv4 for every system, metric of [`FAMILY_METRICS`] and MTU with IPv6
/// samples, and wherever the program's cost was measured.
pub fn family_rows(samples: &[Sample], systems: &[String]) -> Vec<FamilyRow> {
    let rounds = |system: &str, metric: &str, mtu: u32| -> Option<BTreeMap<u32, f64>> {
        let map: BTreeMap<u32, f64> = samples
            .iter()
            .filter(|s| s.metric == metric && s.mtu == mtu && s.system == system)
            .map(|s| (s.round, s.value))
            .collect();
        (!map.is_empty()).then_some(map)
    };
    let med = |r: &Option<BTreeMap<u32, f64>>| {
        r.as_ref()
            .and_then(|r| median(&r.values().copied().collect::<Vec<_>>()))
    };
    let mut keys: Vec<(usize, u32, usize, String)> = Vec::new();
    for s in samples {
        // Every IPv6 figure with an IPv4 twin, and the program's cost in either family, so
        // that a failed IPv6 cost shows as missing beside the IPv4 one.
        let v4_name = match s.metric.strip_suffix("_v6") {
            Some(name) => name,
            None if s.metric == "prog_ns" => "prog_ns",
            None => continue,
        };
        let Some(m) = FAMILY_METRICS.iter().position(|f| *f == v4_name) else {
            continue;
        };
        let position = systems
            .iter()
            .position(|x| *x == s.system)
            .unwrap_or(usize::MAX);
        let key = (m, s.mtu, position, s.system.clone());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.sort();
    keys.into_iter()
        .map(|(m, mtu, _, system)| {
            let name = FAMILY_METRICS[m];
            let v4 = rounds(&system, name, mtu);
            let v6 = rounds(&system, &format!("{name}_v6"), mtu);
            FamilyRow {
                metric: name.to_string(),
                unit: metric_unit(name),
                mtu,
                v4: med(&v4),
                v6: med(&v6),
                v6_vs_v4: v6.as_ref().and_then(|v6| paired_ratio(v6, v4.as_ref())),
                system,
            }
        })
        .collect()
}

fn metric_unit(name: &str) -> String {
    metric(name).map_or_else(String::new, |m| m.unit.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(system: &str, round: u32, value: f64) -> Sample {
        Sample {
            system: system.into(),
            mtu: 1500,
            metric: "tcp_1".into(),
            round,
            value,
            unit: "Gbit/s".into(),
        }
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn ratios_are_paired_within_rounds() {
        // iqd beats the bridge in every round although its median is below the bridge's
        // median across rounds: pairing by round is what shows that.
        let samples = vec![
            sample("bridge", 0, 10.0),
            sample("iqd-xdp", 0, 11.0),
            sample("bridge", 1, 20.0),
            sample("iqd-xdp", 1, 22.0),
            sample("bridge", 2, 30.0),
            sample("iqd-xdp", 2, 33.0),
            sample("veth", 0, 22.0),
        ];
        let systems = vec!["iqd-xdp".to_string(), "bridge".into(), "veth".into()];
        let rows = summarize(&samples, &systems);
        assert_eq!(rows.len(), 3);
        let iqd = &rows[0];
        assert_eq!(iqd.system, "iqd-xdp");
        assert_eq!(iqd.median, 22.0);
        assert_eq!((iqd.min, iqd.max, iqd.samples), (11.0, 33.0, 3));
        assert!((iqd.vs_bridge.unwrap() - 1.1).abs() < 1e-9);
        assert!((iqd.vs_veth.unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(rows[1].vs_bridge, Some(1.0));
        assert_eq!(rows[2].system, "veth");
    }

    #[test]
    fn secgroup_rows_pair_iqd_with_nft_and_with_zero_rules() {
        let mut samples = Vec::new();
        for round in 0..3 {
            let r = round as f64;
            samples.push(sample("iqd-sg0", round, 10.0 + r));
            samples.push(sample("iqd-sg250", round, 9.0 + r));
            samples.push(sample("bridge-nft0", round, 20.0 + r));
            samples.push(sample("bridge-nft250", round, 10.0 + r / 2.0));
            samples.push(sample("bridge", round, 30.0));
        }
        let rows = secgroup_rows(&samples);
        assert_eq!(rows.len(), 2, "no 50-rule systems: {rows:?}");
        let zero = &rows[0];
        assert_eq!(
            (zero.rules, zero.mtu, zero.unit.as_str()),
            (0, 1500, "Gbit/s")
        );
        assert_eq!((zero.iqd, zero.nft), (Some(11.0), Some(21.0)));
        assert_eq!((zero.iqd_vs_0, zero.nft_vs_0), (Some(1.0), Some(1.0)));
        let full = &rows[1];
        assert_eq!(full.rules, 250);
        assert_eq!((full.iqd, full.nft), (Some(10.0), Some(10.5)));
        // Round 1: 10 / 10.5; the median of 0.9, 0.952, 0.9565 (rounds 0, 1, 2).
        assert!((full.iqd_vs_nft.unwrap() - 10.0 / 10.5).abs() < 1e-9);
        assert!((full.iqd_vs_0.unwrap() - 10.0 / 11.0).abs() < 1e-9);
        assert!((full.nft_vs_0.unwrap() - 10.5 / 21.0).abs() < 1e-9);
        assert!(secgroup_rows(&[sample("bridge", 0, 1.0)]).is_empty());
    }

    #[test]
    fn scale_metrics_are_described() {
        let m = metric("scale64_tcp").unwrap();
        assert_eq!(m.unit, "Gbit/s");
        assert!(m.higher_is_better);
        assert!(!metric("scale16_up").unwrap().higher_is_better);
        assert!(metric("scale_x").is_none());
        assert!(metric("nonsense").is_none());
    }
    #[test]
    fn ipv6_figures_sort_beside_their_ipv4_twins() {
        for name in ["tcp_1", "cpu_per_gbit", "rr_p50", "rr_p99", "prog_ns"] {
            let v6 = format!("{name}_v6");
            assert_eq!(metric_order(&v6).0, metric_order(name).0 + 1, "{v6}");
            let (a, b) = (metric(name).unwrap(), metric(&v6).unwrap());
            assert_eq!((a.unit, a.higher_is_better), (b.unit, b.higher_is_better));
            assert!(b.title.contains("IPv6"), "{}", b.title);
        }
        let m = metric("scale85_reachable_v6").unwrap();
        assert_eq!((m.unit, m.higher_is_better), ("%", true));
        assert_eq!(m.title, "85 LPARs: all-pairs reachability, IPv6");
        let m = metric("scale85_neigh_permanent").unwrap();
        assert_eq!((m.unit, m.higher_is_better), ("entries", false));
        assert!(metric("scale85_tcp_v6").is_some());
        // Scale metrics sort by N, then reachability first, each family's beside the other.
        assert!(metric_order("scale85_reachable") < metric_order("scale85_reachable_v6"));
        assert!(metric_order("scale85_reachable_v6") < metric_order("scale85_neigh_permanent"));
        assert!(metric_order("scale85_neigh_permanent") < metric_order("scale85_tcp"));
        assert!(metric_order("scale2_up") < metric_order("scale85_reachable"));
    }

    #[test]
    fn permanent_neighbour_counts_have_no_ratios() {
        let mut samples = Vec::new();
        for (system, value) in [("iqd-tc", 0.0), ("bridge", 14280.0)] {
            samples.push(Sample {
                system: system.into(),
                mtu: 8192,
                metric: "scale85_neigh_permanent".into(),
                round: 0,
                value,
                unit: "entries".into(),
            });
        }
        let rows = summarize(&samples, &["iqd-tc".into(), "bridge".into()]);
        assert_eq!(rows.len(), 2);
        assert!(rows
            .iter()
            .all(|r| r.vs_bridge.is_none() && r.vs_veth.is_none()));
        assert!(has_ratios("scale85_reachable_v6"));
    }

    #[test]
    fn family_rows_pair_ipv6_with_ipv4_within_rounds() {
        let mut samples = Vec::new();
        let mut push = |system: &str, metric: &str, round: u32, value: f64| {
            samples.push(Sample {
                system: system.into(),
                mtu: 1500,
                metric: metric.into(),
                round,
                value,
                unit: "ns".into(),
            })
        };
        for round in 0..3 {
            let r = f64::from(round);
            push("iqd-tc", "prog_ns", round, 200.0 + 10.0 * r);
            push("iqd-tc", "prog_ns_v6", round, 220.0 + 11.0 * r);
            push("bridge", "tcp_1", round, 20.0);
            push("bridge", "tcp_1_v6", round, 19.0);
            push("bridge", "rr_p50", round, 60.0);
            push("bridge", "rr_p50_v6", round, 50.0);
        }
        // A round in which IPv6 failed pairs nothing.
        push("iqd-tc", "prog_ns", 3, 1000.0);
        let systems = vec!["iqd-tc".to_string(), "bridge".into()];
        let rows = family_rows(&samples, &systems);
        // No round-trip row: the two families' round trips come from different tools.
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(
            (rows[0].metric.as_str(), rows[0].system.as_str()),
            ("tcp_1", "bridge")
        );
        assert!((rows[0].v6_vs_v4.unwrap() - 0.95).abs() < 1e-9);
        let cost = &rows[1];
        assert_eq!(
            (cost.metric.as_str(), cost.unit.as_str()),
            ("prog_ns", "ns")
        );
        assert_eq!((cost.v4, cost.v6), (Some(215.0), Some(231.0)));
        assert!((cost.v6_vs_v4.unwrap() - 1.1).abs() < 1e-9);
        // IPv4's cost alone: a row with IPv6 missing. Other IPv4 figures alone: none.
        let v4_only = family_rows(&samples[..1], &systems);
        assert_eq!(v4_only.len(), 1);
        assert_eq!((v4_only[0].v4, v4_only[0].v6), (Some(200.0), None));
        assert!(family_rows(&samples[2..3], &systems).is_empty());
    }

    #[test]
    fn the_baseline_is_compared_round_by_round() {
        let sample = |system: &str, round: u32, value: f64| Sample {
            system: system.into(),
            mtu: 1500,
            metric: "prog_ns".into(),
            round,
            value,
            unit: "ns".into(),
        };
        let samples = vec![
            sample("iqd-tc", 0, 400.0),
            sample(BASELINE_IQD, 0, 380.0),
            sample("iqd-tc", 1, 500.0),
            sample(BASELINE_IQD, 1, 500.0),
            sample("iqd-tc", 2, 390.0),
            sample(BASELINE_IQD, 2, 400.0),
            sample("bridge", 0, 1.0),
        ];
        let rows = baseline_rows(&samples);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].iqd, 400.0);
        assert_eq!(rows[0].baseline, 400.0);
        // Ratios 400/380, 500/500, 390/400: the median is 1.0.
        assert_eq!(rows[0].ratio, Some(1.0));
        assert!(baseline_rows(&samples[..1]).is_empty());
    }
}
