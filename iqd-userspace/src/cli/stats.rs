use clap::Args;

use super::ConfigArg;

/// Show per-NIC traffic and drops, from the LPAR's point of view.
///
/// tx: what the LPAR sent into the fabric; rx: what the fabric delivered to it (like `ip -s
/// link` inside the LPAR). Drops are counted on the sending NIC, by reason: malformed, non_ip,
/// spoofed_source, not_member (destination only on another CHPID), no_destination,
/// mfs_exceeded (frame above the CHPID's MTU), redirect_failed, arp_ignored,
/// sg_denied_outbound (its own security groups refused), target_busy (data path afxdp: a full
/// AF_XDP ring), lpar_stopped (the destination's LPAR is stopped), bandwidth_exceeded (the
/// sender's or the receiver's LPAR bandwidth); except sg_denied_inbound, counted on the
/// receiving NIC whose security groups refused. Per LPAR with a bandwidth, a line shows, sending
/// and receiving, the frames that went through its shaper (delayed as far as the bandwidth
/// needs) and those dropped because its shaper's queue was full (bandwidth_exceeded). A line shows the connection table; for data path afxdp, a last line shows how many
/// frames went through the switch and how many the kernel delivered itself (fallback).
#[derive(Args, Debug)]
pub struct Stats {
    #[command(flatten)]
    config: ConfigArg,
    /// Print JSON: {"nics":[{"lpar":..,"nic":..,"chpid":..,"vlan":..,"tx_packets":..,..,
    /// "drops":{..}}]}.
    #[arg(long)]
    json: bool,
}

impl Stats {
    pub async fn run(&self) -> anyhow::Result<()> {
        let fabric = self.config.load()?;
        iqd::require_root()?;
        let stats = iqd::inspect::stats(&fabric)
            .await
            .map_err(|e| e.with_config(&self.config.config))?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&stats)?);
            return Ok(());
        }
        println!(
            "{:<8} {:<6} {:<5} {:>10} {:>14} {:>10} {:>14}  DROPS",
            "LPAR", "NIC", "CHPID", "TX_PKTS", "TX_BYTES", "RX_PKTS", "RX_BYTES"
        );
        for n in &stats.nics {
            let drops: Vec<String> = n
                .drops
                .iter()
                .filter(|(_, count)| **count > 0)
                .map(|(reason, count)| format!("{reason}={count}"))
                .collect();
            println!(
                "{:<8} {:<6} {:<5} {:>10} {:>14} {:>10} {:>14}  {}",
                n.lpar,
                n.nic,
                n.chpid,
                n.tx_packets,
                n.tx_bytes,
                n.rx_packets,
                n.rx_bytes,
                if drops.is_empty() {
                    "-".to_string()
                } else {
                    drops.join(" ")
                }
            );
        }
        for b in &stats.bandwidth {
            println!(
                "bandwidth {} {}: sent {} frames ({} bytes) through its shaper, {} dropped \
                 ({} bytes); received {} frames ({} bytes) through its shaper, {} dropped ({} \
                 bytes)",
                b.lpar,
                b.bandwidth,
                b.send_shaped_packets,
                b.send_shaped_bytes,
                b.send_dropped_packets,
                b.send_dropped_bytes,
                b.receive_shaped_packets,
                b.receive_shaped_bytes,
                b.receive_dropped_packets,
                b.receive_dropped_bytes
            );
        }
        let ct = &stats.conntrack;
        println!(
            "conntrack: {} of {} entries (created {}, revoked {}, evicted {})",
            ct.entries, ct.capacity, ct.created, ct.revoked, ct.evicted
        );
        if let Some(afxdp) = &stats.afxdp {
            println!(
                "afxdp: {} frames to the switch, {} delivered in the kernel (fallback); switch {}",
                afxdp.programs.to_switch,
                afxdp.programs.fallback,
                if afxdp.switch_running {
                    format!("running, {} frames moved", afxdp.frames_moved)
                } else {
                    "not running".to_string()
                }
            );
        }
        Ok(())
    }
}
