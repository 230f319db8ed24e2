use clap::Args;

use super::ConfigArg;

/// List the connections the security groups are tracking.
///
/// Once a connection's first frame is allowed (the sender's outbound and the receiver's inbound
/// rules), frames of both directions pass without a rule lookup until it goes idle (TCP 1 h,
/// 10 s after FIN or RST; UDP 2 min; ICMP echo 30 s). Connections are kept per segment (CHPIDs
/// and VLANs may reuse one address plan). Shows each connection's CHPID and VLAN, NICs, 5-tuple
/// (ICMP and ICMPv6 echo: the identifier as both ports; IPv6 as `[addr]:port`), state, age and idle time, and the table's
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
            "{:<5} {:<4} {:<12} {:<12} {:<6} {:<21} {:<21} {:<11} {:>9} {:>8}",
            "CHPID",
            "VLAN",
            "ORIGIN",
            "REPLY",
            "PROTO",
            "SOURCE",
            "DESTINATION",
            "STATE",
            "AGE",
            "IDLE"
        );
        for c in &table.connections {
            println!(
                "{:<5} {:<4} {:<12} {:<12} {:<6} {:<21} {:<21} {:<11} {:>8.1}s {:>7.1}s",
                c.chpid,
                c.vlan.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
                c.origin,
                c.reply,
                c.protocol,
                endpoint(&c.source, c.source_port),
                endpoint(&c.destination, c.destination_port),
                c.state,
                c.age_s,
                c.idle_s
            );
        }
        Ok(())
    }
}

/// An address and port as a URL writes them: `10.0.0.1:80`, `[fd00::1]:80`.
fn endpoint(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn ipv6_endpoints_are_bracketed() {
        assert_eq!(endpoint("10.0.0.1", 80), "10.0.0.1:80");
        assert_eq!(endpoint("fd00:f0::1", 5201), "[fd00:f0::1]:5201");
        assert_eq!(endpoint("fe80::ff:fef0:7000", 7), "[fe80::ff:fef0:7000]:7");
    }
}
