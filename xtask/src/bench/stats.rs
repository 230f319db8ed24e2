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

/// The per-MTU metrics, in table order: name, unit, title, higher is better.
pub const METRICS: &[(&str, &str, &str, bool)] = &[
    ("tcp_1", "Gbit/s", "TCP throughput, 1 stream", true),
    ("tcp_4", "Gbit/s", "TCP throughput, 4 streams", true),
    (
        "cpu_per_gbit",
        "CPU s/Gbit",
        "CPU time per gigabit (TCP, 1 stream)",
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
        "rr_p99",
        "us",
        "TCP request/response round trip, p99",
        false,
    ),
    (
        "tcp_crr",
        "conn/s",
        "TCP connections/s (connect, 64-byte request/response, close)",
        true,
    ),
];

/// Describes `name`: one of [`METRICS`] or a scale metric `scale<N>_up`, `scale<N>_reachable`
/// or `scale<N>_tcp` (N LPARs on one CHPID).
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
        "tcp" => ("Gbit/s", "aggregate TCP throughput of N/2 pairs", true),
        _ => return None,
    };
    Some(Metric {
        unit,
        title: format!("{n} LPARs: {title}"),
        higher_is_better,
    })
}

/// Where a metric sorts in tables: the per-MTU metrics in order, then scale metrics by N.
pub fn metric_order(name: &str) -> (usize, u32, String) {
    match METRICS.iter().position(|m| m.0 == name) {
        Some(i) => (i, 0, String::new()),
        None => {
            let n = name
                .strip_prefix("scale")
                .and_then(|rest| rest.split_once('_'))
                .and_then(|(n, _)| n.parse().ok())
                .unwrap_or(u32::MAX);
            (METRICS.len(), n, name.to_string())
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
    type Key = ((usize, u32, String), String, u32);
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
                vs_bridge: paired_ratio(rounds, by_system.get(BASELINE)),
                vs_veth: paired_ratio(rounds, by_system.get(LIMIT)),
            });
        }
    }
    out
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
}
