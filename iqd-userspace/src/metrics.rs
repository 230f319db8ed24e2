//! Prometheus metrics of a fabric (`iqd metrics`): per-NIC traffic and drops by reason, the
//! connection table, the AF_XDP switch. A scrape reads each map once (the per-NIC counter map
//! in one pass, summed over CPUs) and the fabric namespace's links once; nothing is kept
//! between scrapes, so the figures are the data plane's own and never drift.
use std::time::Instant;

use prometheus::{Encoder as _, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::{
    config::{self, Datapath, Fabric},
    dataplane::{self, FabricMaps},
    error::{Error, Result},
    fabric::port_name,
    inspect,
    netlink::Netlink,
    netns,
};

/// The content type of the text format [`gather`] writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const NIC_LABELS: [&str; 4] = ["fabric", "chpid", "lpar", "nic"];

fn prom_err(e: prometheus::Error) -> Error {
    Error::io(
        "prometheus",
        "metrics",
        std::io::Error::other(e.to_string()),
    )
}

/// Families registered in one scrape's registry.
struct Families {
    registry: Registry,
}

impl Families {
    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec> {
        let vec = IntCounterVec::new(Opts::new(name, help), labels).map_err(prom_err)?;
        self.registry
            .register(Box::new(vec.clone()))
            .map_err(prom_err)?;
        Ok(vec)
    }

    fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec> {
        let vec = IntGaugeVec::new(Opts::new(name, help), labels).map_err(prom_err)?;
        self.registry
            .register(Box::new(vec.clone()))
            .map_err(prom_err)?;
        Ok(vec)
    }
}

/// One scrape of `fabric`, in Prometheus' text format. A fabric that is not up yields
/// `iqd_fabric_up 0` only.
pub async fn gather(fabric: &Fabric) -> Result<String> {
    let started = Instant::now();
    let families = Families {
        registry: Registry::new(),
    };
    let name = fabric.name.as_str();
    let up = families.gauge(
        "iqd_fabric_up",
        "1 when the fabric's namespace and pinned maps exist.",
        &["fabric", "datapath"],
    )?;
    let pin_dir = dataplane::pin_dir(name);
    let is_up = netns::exists(&fabric.netns_name()) && pin_dir.exists();
    up.with_label_values(&[name, &fabric.datapath.to_string()])
        .set(is_up as i64);
    if is_up {
        gather_up(fabric, &families).await?;
    }
    let duration = prometheus::GaugeVec::new(
        Opts::new(
            "iqd_scrape_duration_seconds",
            "How long this scrape took to read the maps and links.",
        ),
        &["fabric"],
    )
    .map_err(prom_err)?;
    families
        .registry
        .register(Box::new(duration.clone()))
        .map_err(prom_err)?;
    duration
        .with_label_values(&[name])
        .set(started.elapsed().as_secs_f64());
    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&families.registry.gather(), &mut text)
        .map_err(prom_err)?;
    String::from_utf8(text).map_err(|e| prom_err(prometheus::Error::Msg(e.to_string())))
}

async fn gather_up(fabric: &Fabric, families: &Families) -> Result<()> {
    let name = fabric.name.as_str();
    let maps = FabricMaps::open(name, &dataplane::pin_dir(name))?;
    let counters = maps.all_counters()?;
    let ports: std::collections::HashMap<String, u32> = Netlink::open(&fabric.netns_name())?
        .links()
        .await?
        .into_iter()
        .map(|l| (l.name, l.index))
        .collect();

    let nic_counter = |metric: &str, help: &str| families.counter(metric, help, &NIC_LABELS);
    let sent_frames = nic_counter(
        "iqd_nic_sent_frames_total",
        "Frames the LPAR sent into the fabric on this NIC (a GSO packet counts its segments).",
    )?;
    let sent_bytes = nic_counter(
        "iqd_nic_sent_bytes_total",
        "Bytes the LPAR sent into the fabric on this NIC.",
    )?;
    let received_frames = nic_counter(
        "iqd_nic_received_frames_total",
        "Frames the fabric delivered to the LPAR on this NIC.",
    )?;
    let received_bytes = nic_counter(
        "iqd_nic_received_bytes_total",
        "Bytes the fabric delivered to the LPAR on this NIC.",
    )?;
    let mut drop_labels = NIC_LABELS.to_vec();
    drop_labels.push("reason");
    let drops = families.counter(
        "iqd_nic_dropped_frames_total",
        "Frames the fabric dropped, by reason (counted on the sending NIC, sg_denied_inbound on \
         the receiving one).",
        &drop_labels,
    )?;
    for lpar in &fabric.lpars {
        for nic in &lpar.nics {
            let c = ports
                .get(&port_name(nic))
                .and_then(|index| counters.get(index))
                .copied()
                .unwrap_or_default();
            let chpid = config::chpid_label(nic.chpid);
            let labels = [name, chpid.as_str(), lpar.name.as_str(), nic.name.as_str()];
            sent_frames.with_label_values(&labels).inc_by(c.tx_packets);
            sent_bytes.with_label_values(&labels).inc_by(c.tx_bytes);
            received_frames
                .with_label_values(&labels)
                .inc_by(c.rx_packets);
            received_bytes.with_label_values(&labels).inc_by(c.rx_bytes);
            for (reason, count) in iqd_common::drop_reason::NAMES.iter().zip(c.drops.iter()) {
                let mut labels = labels.to_vec();
                labels.push(reason);
                drops.with_label_values(&labels).inc_by(*count);
            }
        }
    }

    // Per LPAR: its lifecycle state (one series per state, 1 for the one it is in) and, with a
    // bandwidth, what its meters shaped and dropped per direction.
    let recorded = crate::state::State::load(name)?;
    let lpar_state = families.gauge(
        "iqd_lpar_state",
        "1 for the LPAR's lifecycle state (running, stopped; absent: not built), 0 otherwise.",
        &["fabric", "lpar", "state"],
    )?;
    let bw_labels = ["fabric", "lpar", "direction"];
    let bw_limit = families.gauge(
        "iqd_lpar_bandwidth_bits_per_second",
        "The bandwidth the LPAR's NICs share per direction (absent: not limited).",
        &["fabric", "lpar"],
    )?;
    let shaped_frames = families.counter(
        "iqd_lpar_bandwidth_shaped_frames_total",
        "Frames that went through the LPAR's shaper, per direction.",
        &bw_labels,
    )?;
    let shaped_bytes = families.counter(
        "iqd_lpar_bandwidth_shaped_bytes_total",
        "Bytes that went through the LPAR's shaper, per direction.",
        &bw_labels,
    )?;
    let bw_dropped = families.counter(
        "iqd_lpar_bandwidth_dropped_frames_total",
        "Frames dropped for exceeding the LPAR's bandwidth, per direction (the senders count \
         them as bandwidth_exceeded).",
        &bw_labels,
    )?;
    let bw_dropped_bytes = families.counter(
        "iqd_lpar_bandwidth_dropped_bytes_total",
        "Bytes dropped for exceeding the LPAR's bandwidth, per direction.",
        &bw_labels,
    )?;
    let bw_slots: std::collections::HashMap<u32, u32> =
        maps.bw_ports.iter().filter_map(|e| e.ok()).collect();
    for lpar in &fabric.lpars {
        let state = inspect::lpar_state(recorded.as_ref(), &lpar.name);
        for s in ["running", "stopped", "absent"] {
            lpar_state
                .with_label_values(&[name, lpar.name.as_str(), s])
                .set((state == s) as i64);
        }
        let Some(limit) = lpar.effective_bandwidth() else {
            continue;
        };
        bw_limit
            .with_label_values(&[name, lpar.name.as_str()])
            .set(limit.bits_per_second() as i64);
        let slot = lpar
            .nics
            .iter()
            .filter_map(|n| ports.get(&port_name(n)))
            .find_map(|index| bw_slots.get(index).copied());
        let Some(slot) = slot else {
            continue;
        };
        for (direction, index) in [
            ("send", iqd_common::bw_direction::SEND),
            ("receive", iqd_common::bw_direction::RECEIVE),
        ] {
            let bucket = maps.bucket(2 * slot + index)?;
            let labels = [name, lpar.name.as_str(), direction];
            shaped_frames
                .with_label_values(&labels)
                .inc_by(bucket.shaped_packets);
            shaped_bytes
                .with_label_values(&labels)
                .inc_by(bucket.shaped_bytes);
            bw_dropped
                .with_label_values(&labels)
                .inc_by(bucket.dropped_packets);
            bw_dropped_bytes
                .with_label_values(&labels)
                .inc_by(bucket.dropped_bytes);
        }
    }

    let ct = maps.ct_stats()?;
    let fabric_label = [name];
    families
        .gauge(
            "iqd_conntrack_entries",
            "Connections the fabric tracks now.",
            &["fabric"],
        )?
        .with_label_values(&fabric_label)
        .set(ct.entries as i64);
    families
        .gauge(
            "iqd_conntrack_capacity",
            "Connections the table holds at most.",
            &["fabric"],
        )?
        .with_label_values(&fabric_label)
        .set(ct.capacity as i64);
    for (metric, help, value) in [
        (
            "iqd_conntrack_created_total",
            "Connections the data plane started tracking.",
            ct.created,
        ),
        (
            "iqd_conntrack_revoked_total",
            "Tracked connections removed because changed rules no longer allowed them.",
            ct.revoked,
        ),
        (
            "iqd_conntrack_evicted_total",
            "Tracked connections the full table gave up for newer ones.",
            ct.evicted,
        ),
    ] {
        families
            .counter(metric, help, &["fabric"])?
            .with_label_values(&fabric_label)
            .inc_by(value);
    }

    if fabric.datapath == Datapath::Afxdp {
        let programs = maps.xsk_stats()?;
        let stats = inspect::afxdp_stats(fabric, programs);
        for (metric, help, value) in [
            (
                "iqd_afxdp_to_switch_frames_total",
                "Frames the programs handed to the AF_XDP switch.",
                stats.programs.to_switch,
            ),
            (
                "iqd_afxdp_fallback_frames_total",
                "Frames the programs delivered in the kernel (no switch socket).",
                stats.programs.fallback,
            ),
            (
                "iqd_afxdp_switch_moved_frames_total",
                "Frames the running switch moved since it started.",
                stats.frames_moved,
            ),
        ] {
            families
                .counter(metric, help, &["fabric"])?
                .with_label_values(&fabric_label)
                .inc_by(value);
        }
        families
            .gauge(
                "iqd_afxdp_switch_running",
                "1 when the AF_XDP switch process runs.",
                &["fabric"],
            )?
            .with_label_values(&fabric_label)
            .set(stats.switch_running as i64);
    }
    Ok(())
}
