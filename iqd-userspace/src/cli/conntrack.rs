use clap::Args;

use super::ConfigArg;

/// List the connections the security groups are tracking.
///
/// Once a connection's first frame is allowed (the sender's outbound and the receiver's inbound
/// rules), frames of both directions pass without a rule lookup until it goes idle (TCP 1 h,
/// 10 s after FIN or RST; UDP 2 min; ICMP echo 30 s). Connections are kept per CHPID (CHPIDs may
/// reuse one address plan). Shows each connection's CHPID, NICs, 5-tuple
/// (ICMP echo: the identifier as both ports), state, age and idle time, and the table's
/// pressure: entries, capacity, connections created, revoked by rule changes, and evicted when
/// the table was full.
#[derive(Args, Debug)]
pub struct Conntrack {
    #[command(flatten)]
    config: ConfigArg,
    /// Print JSON: {"summary":{..},"connections":[{"origin":..,"reply":..,"protocol":..,..}]}.
    #[arg(long)]
    json: bool,
}

impl Conntrack {
    pub async fn run(&self) -> anyhow::Result<()> {
        let fabric = self.config.load()?;
        iqd::require_root()?;
        let table = iqd::inspect::conntrack(&fabric)
            .await
            .map_err(|e| e.with_config(&self.config.config))?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&table)?);
            return Ok(());
        }
        let s = &table.summary;
        println!(
            "connections: {} of {} (created {}, revoked {}, evicted {})",
            s.entries, s.capacity, s.created, s.revoked, s.evicted
        );
        if table.connections.is_empty() {
            return Ok(());
        }
        println!(
            "{:<5} {:<12} {:<12} {:<6} {:<21} {:<21} {:<11} {:>9} {:>8}",
            "CHPID", "ORIGIN", "REPLY", "PROTO", "SOURCE", "DESTINATION", "STATE", "AGE", "IDLE"
        );
        for c in &table.connections {
            println!(
                "{:<5} {:<12} {:<12} {:<6} {:<21} {:<21} {:<11} {:>8.1}s {:>7.1}s",
                c.chpid,
                c.origin,
                c.reply,
                c.protocol,
                format!("{}:{}", c.source, c.source_port),
                format!("{}:{}", c.destination, c.destination_port),
                c.state,
                c.age_s,
                c.idle_s
            );
        }
        Ok(())
    }
}
