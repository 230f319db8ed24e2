use clap::Args;

use super::ConfigArg;

/// Show the fabric: CHPIDs with MFS, MTU and members; LPARs with their state (running,
/// stopped), profile and bandwidth; their NICs.
///
/// Then each segment's multicast groups (as the LPARs registered them with IGMP and MLD) and
/// broadcast addresses, with their member NICs.
///
/// For every NIC: name, CHPID, VLAN (- for the untagged segment), device triple (read,write,data
/// devices), MAC, addresses, the MTU the LPAR has set and the state (online, offline, absent).
/// Like lsqeth and znetconf. For data path afxdp, also the AF_XDP switch: pid, uptime, frames
/// moved, and where each of its UMEM frames is (free, fill ring, held, TX ring), with the
/// ledger's violations and audit.
#[derive(Args, Debug)]
pub struct Status {
    #[command(flatten)]
    config: ConfigArg,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

impl Status {
    pub async fn run(&self) -> anyhow::Result<()> {
        let fabric = self.config.load()?;
        iqd::require_root()?;
        let status = iqd::inspect::status(&fabric)
            .await
            .map_err(|e| e.with_config(&self.config.config))?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&status)?);
            return Ok(());
        }
        println!(
            "fabric {}: {} (data path {}, namespace {}, pins {})",
            status.fabric, status.state, status.datapath, status.netns, status.pin_dir
        );
        println!();
        println!("{:<6} {:<5} {:>6}  MEMBERS", "CHPID", "MFS", "MTU");
        for c in &status.chpids {
            println!(
                "{:<6} {:<5} {:>6}  {}",
                c.chpid,
                c.mfs,
                c.mtu,
                c.members.join(" ")
            );
        }
        println!();
        println!("{:<8} {:<8} {:<20} BANDWIDTH", "LPAR", "STATE", "PROFILE");
        for l in &status.lpars {
            println!(
                "{:<8} {:<8} {:<20} {}",
                l.lpar,
                l.state,
                l.profile.as_deref().unwrap_or("-"),
                l.bandwidth.as_deref().unwrap_or("-")
            );
        }
        println!();
        // Namespace names may be long (up to 64): the column grows to fit them.
        let ns_width = status
            .lpars
            .iter()
            .map(|l| l.netns.len())
            .max()
            .unwrap_or(0)
            .max(8);
        println!(
            "{:<8} {:<ns_width$} {:<6} {:<5} {:<4} {:<26} {:<17} {:>6} {:<8} ADDRESSES",
            "LPAR", "NETNS", "NIC", "CHPID", "VLAN", "DEVICES", "MAC", "MTU", "STATE"
        );
        for l in &status.lpars {
            for n in &l.nics {
                let mtu = n.mtu.map(|m| m.to_string()).unwrap_or_else(|| "-".into());
                // "-": the CHPID's untagged segment.
                let vlan = n.vlan.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
                println!(
                    "{:<8} {:<ns_width$} {:<6} {:<5} {:<4} {:<26} {:<17} {:>6} {:<8} {}",
                    l.lpar,
                    l.netns,
                    n.nic,
                    n.chpid,
                    vlan,
                    n.devices,
                    n.mac,
                    mtu,
                    n.state,
                    addresses(n)
                );
            }
        }
        println!();
        println!(
            "{:<8} {:<6} {:<6} {:<9} {:<14} SECURITY GROUPS",
            "LPAR", "NIC", "LAYER", "RX_BCAST", "IP SPOOFING"
        );
        for l in &status.lpars {
            for n in &l.nics {
                let spoofing = if n.allow_ip_spoofing {
                    "allowed"
                } else {
                    "refused"
                };
                println!(
                    "{:<8} {:<6} {:<6} {:<9} {:<14} {}",
                    l.lpar,
                    n.nic,
                    if n.layer2 { "2" } else { "3" },
                    if n.rx_bcast { "on" } else { "off" },
                    spoofing,
                    n.security_groups.join(" ")
                );
            }
        }
        println!();
        println!(
            "{:<5} {:<4} {:<40} {:<16} MEMBERS",
            "CHPID", "VLAN", "GROUP", "KIND"
        );
        for g in &status.groups {
            let vlan = g.vlan.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
            println!(
                "{:<5} {:<4} {:<40} {:<16} {}",
                g.chpid,
                vlan,
                g.group,
                g.kind,
                g.members.join(" ")
            );
        }
        if let Some(switch) = &status.switch {
            println!();
            print_switch(switch);
        }
        Ok(())
    }
}

/// A NIC's addresses for the table: IPv4, IPv6, then its link-local address.
fn addresses(n: &iqd::inspect::NicStatus) -> String {
    n.ipv4
        .iter()
        .chain(&n.ipv6)
        .cloned()
        .chain(std::iter::once(format!("{}/64", n.link_local)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_switch(switch: &iqd::inspect::SwitchStatus) {
    match (switch.running, switch.pid, &switch.report) {
        (true, Some(pid), Some(report)) => {
            println!(
                "AF_XDP switch: running (pid {pid}, up {:.1}s), {} frames ({} bytes) moved, \
                 {} dropped busy",
                switch.uptime_s.unwrap_or(0.0),
                report.frames_moved,
                report.bytes_moved,
                report.target_busy
            );
            let ledger = &report.ledger;
            println!(
                "  UMEM: {} frames of {} bytes on {} sockets: {} free, {} fill, {} held, {} tx; \
                 violations {}, audit {}",
                ledger.counts.frames,
                report.umem_bytes / u64::from(ledger.counts.frames.max(1)),
                ledger.sockets.len(),
                ledger.counts.free,
                ledger.counts.fill,
                ledger.counts.held,
                ledger.counts.tx,
                ledger.violations,
                ledger.audit
            );
        }
        (true, Some(pid), None) => println!("AF_XDP switch: running (pid {pid}), no report yet"),
        _ => println!(
            "AF_XDP switch: not running; frames move in the kernel (run `iqd up` to start it){}",
            switch
                .report
                .as_ref()
                .and_then(|r| r.error.as_ref())
                .map(|e| format!("; it last failed: {e}"))
                .unwrap_or_default()
        ),
    }
}
