//! Bar charts of the summaries, as self-contained SVG files: one per metric, grouped by MTU.

use std::fmt::Write as _;

use super::report::{format_value, title_of};
use super::stats::{metric, Summary};

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 360.0;
const PLOT_LEFT: f64 = 70.0;
const PLOT_RIGHT: f64 = WIDTH - 16.0;
const PLOT_BOTTOM: f64 = HEIGHT - 44.0;
const LEGEND_TOP: f64 = 52.0;
const LEGEND_ROW: f64 = 18.0;
/// Widest a bar gets, so that a lone bar does not fill the whole chart.
const MAX_BAR: f64 = 64.0;

/// One chart per metric, in the order of `rows`: (`<metric>.svg`, SVG text).
pub fn charts(rows: &[Summary]) -> Vec<(String, String)> {
    let mut metrics: Vec<&str> = Vec::new();
    for row in rows {
        if !metrics.contains(&row.metric.as_str()) {
            metrics.push(&row.metric);
        }
    }
    metrics
        .into_iter()
        .map(|name| {
            let group: Vec<&Summary> = rows.iter().filter(|r| r.metric == name).collect();
            (format!("{name}.svg"), chart(name, &group))
        })
        .collect()
}

/// A system's colour, the same in every chart (Okabe-Ito palette, safe for colour blindness).
fn colour(system: &str) -> &'static str {
    match system {
        "iqd-xdp" => "#0072B2",
        "iqd-tc" => "#56B4E9",
        "iqd-afxdp" => "#CC79A7",
        "bridge" => "#E69F00",
        "macvlan" => "#009E73",
        "veth" => "#7F7F7F",
        // Security groups: iqd's in darkening blues, the nftables bridge's in darkening
        // oranges, by rule count.
        "iqd-sg0" => "#6BAED6",
        "iqd-sg50" => "#2171B5",
        "iqd-sg250" => "#08306B",
        "bridge-nft0" => "#FDAE6B",
        "bridge-nft50" => "#E6550D",
        "bridge-nft250" => "#7F2704",
        other => {
            const SPARE: [&str; 4] = ["#D55E00", "#F0E442", "#000000", "#882255"];
            // FNV-1a: stable across runs and charts.
            let hash = other.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            SPARE[(hash % SPARE.len() as u64) as usize]
        }
    }
}

/// Text made safe for XML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// The y axis: a top a little above `max` and a round step giving 4 to 6 intervals.
fn axis(max: f64) -> (f64, f64) {
    if !(max.is_finite() && max > 0.0) {
        return (1.0, 0.2);
    }
    let magnitude = 10f64.powf((max / 5.0).log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        let step = m * magnitude;
        let intervals = (max / step - 1e-9).ceil().max(1.0);
        if intervals <= 6.0 {
            return (step * intervals, step);
        }
    }
    (10.0 * magnitude * 6.0, 10.0 * magnitude)
}

/// The fewest decimals that show `step` exactly (up to 6).
fn decimals(step: f64) -> usize {
    (0..6)
        .find(|&d| {
            let text = format!("{step:.d$}");
            text.parse::<f64>()
                .is_ok_and(|v| (v - step).abs() <= step.abs() * 1e-6)
        })
        .unwrap_or(6)
}

/// A tick label: plain, or with a k/M/G suffix shared by the whole axis when `top` is large.
fn tick_label(value: f64, step: f64, top: f64) -> String {
    if value == 0.0 {
        return "0".into();
    }
    let (div, suffix) = [(1e9, "G"), (1e6, "M"), (1e4, "k")]
        .into_iter()
        .find(|(div, _)| top >= *div)
        .map_or((1.0, ""), |(div, suffix)| {
            (if suffix == "k" { 1e3 } else { div }, suffix)
        });
    let d = decimals(step / div);
    format!("{:.d$}{suffix}", value / div)
}

/// A coordinate, rounded to a tenth of a pixel.
fn c(v: f64) -> String {
    let v = if v.is_finite() { v } else { 0.0 };
    let text = format!("{v:.1}");
    text.strip_suffix(".0").map_or(text.clone(), str::to_string)
}

fn chart(name: &str, rows: &[&Summary]) -> String {
    let title = title_of(name);
    let unit = rows.first().map_or("", |r| r.unit.as_str());
    let note = match metric(name).map(|m| m.higher_is_better) {
        Some(true) => "higher is better",
        Some(false) => "lower is better",
        None => "",
    };
    let mut mtus: Vec<u32> = rows.iter().map(|r| r.mtu).collect();
    mtus.sort_unstable();
    mtus.dedup();
    let mut systems: Vec<&str> = Vec::new();
    for row in rows {
        if !systems.contains(&row.system.as_str()) {
            systems.push(&row.system);
        }
    }

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">",
        w = WIDTH,
        h = HEIGHT
    );
    let _ = writeln!(svg, "<title>{}</title>", escape(&title));
    let _ = writeln!(
        svg,
        "<rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#ffffff\"/>"
    );
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\" \
         font-weight=\"bold\">{}</text>",
        c(WIDTH / 2.0),
        escape(&title)
    );
    if !note.is_empty() {
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"37\" text-anchor=\"middle\" fill=\"#555555\">{note}</text>",
            c(WIDTH / 2.0)
        );
    }

    // Legend: rows of swatches and names, wrapped at the plot's width.
    let (mut x, mut y) = (PLOT_LEFT, LEGEND_TOP);
    for system in &systems {
        let width = 18.0 + 7.0 * system.chars().count() as f64 + 18.0;
        if x > PLOT_LEFT && x + width > PLOT_RIGHT {
            x = PLOT_LEFT;
            y += LEGEND_ROW;
        }
        let _ = writeln!(
            svg,
            "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"{}\">{}</text>",
            c(x),
            c(y - 10.0),
            colour(system),
            c(x + 18.0),
            c(y),
            escape(system)
        );
        x += width;
    }
    let plot_top = y + 18.0;
    let plot_height = PLOT_BOTTOM - plot_top;
    let plot_width = PLOT_RIGHT - PLOT_LEFT;

    let max = rows
        .iter()
        .flat_map(|r| [r.median, r.max])
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    // A little headroom, so that the tallest whisker does not touch the top.
    let (top, step) = axis(max * 1.04);
    let to_y = |v: f64| {
        let v = if v.is_finite() {
            v.clamp(0.0, top)
        } else {
            0.0
        };
        PLOT_BOTTOM - v / top * plot_height
    };

    // Gridlines and tick labels.
    let ticks = (top / step).round() as usize;
    for i in 0..=ticks {
        let value = step * i as f64;
        let ty = to_y(value);
        let _ = writeln!(
            svg,
            "<line x1=\"{l}\" y1=\"{y}\" x2=\"{r}\" y2=\"{y}\" stroke=\"{}\" stroke-width=\"1\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            if i == 0 { "#333333" } else { "#dddddd" },
            c(PLOT_LEFT - 6.0),
            c(ty + 4.0),
            escape(&tick_label(value, step, top)),
            l = c(PLOT_LEFT),
            r = c(PLOT_RIGHT),
            y = c(ty),
        );
    }
    let _ = writeln!(
        svg,
        "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"#333333\" stroke-width=\"1\"/>",
        c(plot_top),
        c(PLOT_BOTTOM),
        x = c(PLOT_LEFT)
    );
    let _ = writeln!(
        svg,
        "<text transform=\"translate(16,{}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        c((plot_top + PLOT_BOTTOM) / 2.0),
        escape(unit)
    );
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">MTU (bytes)</text>",
        c((PLOT_LEFT + PLOT_RIGHT) / 2.0),
        c(HEIGHT - 8.0)
    );

    // Bars: one group per MTU, one slot per system (the same slot in every group).
    let group_width = plot_width / mtus.len().max(1) as f64;
    let slot = (group_width * 0.8 / systems.len().max(1) as f64).min(MAX_BAR);
    let bar = slot * 0.85;
    for (g, mtu) in mtus.iter().enumerate() {
        let centre = PLOT_LEFT + group_width * (g as f64 + 0.5);
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{mtu}</text>",
            c(centre),
            c(PLOT_BOTTOM + 16.0)
        );
        let first = centre - slot * systems.len() as f64 / 2.0;
        for (s, system) in systems.iter().enumerate() {
            let Some(row) = rows.iter().find(|r| r.mtu == *mtu && r.system == *system) else {
                continue;
            };
            let x = first + slot * s as f64 + (slot - bar) / 2.0;
            let y = to_y(row.median);
            let _ = writeln!(
                svg,
                "<rect class=\"bar\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\">\
                 <title>{}</title></rect>",
                c(x),
                c(y),
                c(bar),
                c(PLOT_BOTTOM - y),
                colour(system),
                escape(&format!(
                    "{system}, MTU {mtu}: median {} {unit} (min {}, max {}, n {})",
                    format_value(row.median, unit),
                    format_value(row.min, unit),
                    format_value(row.max, unit),
                    row.samples
                ))
            );
            if row.min.is_finite() && row.max.is_finite() {
                let (mid, cap) = (x + bar / 2.0, (bar * 0.2).min(6.0));
                let (low, high) = (to_y(row.min), to_y(row.max));
                let _ = writeln!(
                    svg,
                    "<path class=\"whisker\" d=\"M{} {low}V{high}M{} {high}H{}M{} {low}H{}\" \
                     stroke=\"#222222\" stroke-width=\"1.2\" fill=\"none\"/>",
                    c(mid),
                    c(mid - cap),
                    c(mid + cap),
                    c(mid - cap),
                    c(mid + cap),
                    low = c(low),
                    high = c(high),
                );
            }
        }
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(metric: &str, mtu: u32, system: &str, median: f64, min: f64, max: f64) -> Summary {
        Summary {
            metric: metric.into(),
            unit: super::metric(metric).map_or("x", |m| m.unit).into(),
            mtu,
            system: system.into(),
            median,
            min,
            max,
            samples: 3,
            vs_bridge: None,
            vs_veth: None,
        }
    }

    /// Checks the SVG is one well-formed element: tags balance, attributes are quoted, every
    /// `&` starts an entity and every number attribute is finite.
    fn check_well_formed(svg: &str) {
        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        let mut closed_root = false;
        while let Some(start) = rest.find('<') {
            let text = &rest[..start];
            assert!(!text.contains('>'), "stray > in {text:?}");
            assert!(
                !closed_root || text.trim().is_empty(),
                "content after the root"
            );
            for (i, _) in text.match_indices('&') {
                let entity = &text[i..text[i..].find(';').map_or(text.len(), |e| i + e + 1)];
                assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&entity),
                    "bad entity {entity:?}"
                );
            }
            let end = start + rest[start..].find('>').expect("unclosed tag");
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "< inside a tag: {tag}");
            assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes: {tag}");
            for attr in ["x", "y", "x1", "y1", "x2", "y2", "width", "height"] {
                if let Some(i) = tag.find(&format!(" {attr}=\"")) {
                    let value = &tag[i + attr.len() + 3..];
                    let value = &value[..value.find('"').unwrap()];
                    let v: f64 = value.parse().unwrap_or_else(|_| panic!("{attr}={value}"));
                    assert!(v.is_finite());
                }
            }
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
                closed_root = stack.is_empty();
            } else if !tag.ends_with('/') {
                assert!(!closed_root, "second root element");
                stack.push(tag.split_whitespace().next().unwrap().to_string());
            }
            rest = &rest[end + 1..];
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    fn bars(svg: &str) -> usize {
        svg.matches("<rect class=\"bar\"").count()
    }

    #[test]
    fn one_chart_per_metric_with_every_bar_and_the_legend() {
        let mut rows = Vec::new();
        for (i, mtu) in [1500, 8192, 57344].into_iter().enumerate() {
            for (j, system) in ["iqd-xdp", "bridge", "macvlan", "veth"]
                .into_iter()
                .enumerate()
            {
                let v = 5.0 + 3.0 * i as f64 + j as f64;
                rows.push(row("tcp_1", mtu, system, v, v * 0.9, v * 1.1));
                rows.push(row("rr_p99", mtu, system, 20.0 + v, 19.0 + v, 30.0 + v));
            }
        }
        let charts = charts(&rows);
        let names: Vec<&str> = charts.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(names, ["tcp_1.svg", "rr_p99.svg"]);
        for (_, svg) in &charts {
            check_well_formed(svg);
            assert_eq!(bars(svg), 12);
            assert_eq!(svg.matches("class=\"whisker\"").count(), 12);
            for name in [
                "iqd-xdp", "bridge", "macvlan", "veth", "1500", "8192", "57344",
            ] {
                assert!(svg.contains(&format!(">{name}</text>")), "{name} missing");
            }
            // The same system has the same colour in every chart.
            assert!(svg.contains("fill=\"#0072B2\"><title>iqd-xdp"));
        }
        let tcp = &charts[0].1;
        assert!(tcp.contains(">TCP throughput, 1 stream</text>"));
        assert!(tcp.contains(">higher is better</text>"));
        assert!(tcp.contains(">Gbit/s</text>"));
        assert!(charts[1].1.contains(">lower is better</text>"));
        // 4 to 6 intervals on the y axis: 5 to 7 lines including the axis at 0, plus the
        // vertical axis.
        let lines = tcp.matches("<line ").count();
        assert!((6..=8).contains(&lines), "{lines} lines");
    }

    #[test]
    fn edge_cases_give_valid_charts() {
        let cases: Vec<Vec<Summary>> = vec![
            vec![row("tcp_4", 57344, "iqd-xdp", 12.0, 11.0, 13.0)],
            vec![
                row("udp64_loss", 1500, "iqd-xdp", 0.0, 0.0, 0.0),
                row("udp64_loss", 1500, "bridge", 0.0, 0.0, 0.0),
            ],
            vec![
                row(
                    "cpu_per_gbit",
                    1500,
                    "iqd-xdp",
                    f64::NAN,
                    f64::NAN,
                    f64::NAN,
                ),
                row("cpu_per_gbit", 1500, "bridge", 0.2, f64::NAN, f64::INFINITY),
                row("cpu_per_gbit", 8192, "bridge", -1.0, -2.0, 0.0),
            ],
            vec![row("odd<&>\"metric'", 1500, "sys<&>", 1e12, 0.0, 2e12)],
        ];
        for rows in &cases {
            let charts = charts(rows);
            assert_eq!(charts.len(), 1);
            let svg = &charts[0].1;
            check_well_formed(svg);
            assert_eq!(bars(svg), rows.len());
        }
        assert!(charts(&[]).is_empty());
    }

    #[test]
    fn packet_rates_get_suffixed_ticks() {
        let rows = vec![row("udp64_pps", 1500, "iqd-xdp", 1.1e6, 1.0e6, 1.15e6)];
        let svg = &charts(&rows)[0].1;
        check_well_formed(svg);
        assert!(
            svg.contains(">0.2M</text>") && svg.contains(">1.2M</text>"),
            "{svg}"
        );
    }

    #[test]
    fn axes_are_round() {
        assert_eq!(axis(0.0), (1.0, 0.2));
        assert_eq!(axis(f64::NAN), (1.0, 0.2));
        for max in [
            0.003, 0.7, 1.0, 1.01, 9.9, 17.3, 25.9, 99.0, 100.0, 812_000.0, 3.3e9,
        ] {
            let (top, step) = axis(max);
            let intervals = (top / step).round();
            assert!(
                top >= max && (4.0..=6.0).contains(&intervals),
                "{max}: {top} {step}"
            );
        }
        assert_eq!(tick_label(250.0, 50.0, 300.0), "250");
        assert_eq!(tick_label(0.25, 0.05, 0.3), "0.25");
        assert_eq!(tick_label(40_000.0, 10_000.0, 50_000.0), "40k");
    }
}
