use clap::Args;
use iqd::layout::Connections;

use super::{ConfigArg, WaitArg};

/// Create or update the fabric to match the file; returns once frames flow.
///
/// Creates the fabric namespace `iqd-<fabric>`, each LPAR's namespace (or adopts an existing
/// one of that name), and per NIC a veth pair: `hsiN` inside the LPAR, its port in the fabric
/// namespace with the data path's program attached (tc ingress for "tc", XDP for "xdp" and
/// "afxdp"). Changing the data path switches every NIC in place. Programs, links and maps are
/// pinned under
/// /sys/fs/bpf/iqd/<fabric>/ and keep working after iqd exits. Running it again is safe: what
/// already matches the file is left as it is; changes are applied in place. Security-group
/// changes take effect at once, without reloading programs: connections the new rules no longer
/// allow are cut. For data path `afxdp`, it (re)starts the AF_XDP switch process and returns
/// once frames flow through it.
///
/// An invalid file changes nothing. Neither does a fabric that cannot be built as asked (an
/// interface iqd did not create holding a NIC's name, say), nor one that adds or removes a NIC
/// of a running LPAR (stop it first with `iqd lpar stop`, as a cloud server must be STOPPED to
/// change its interfaces): such refusals are found before the first change. A stopped LPAR
/// stays stopped; LPARs new to the file come up running. Each LPAR's bandwidth (its own or its
/// profile's) is enforced by shapers in the fabric namespace. A step that fails midway is undone: the fabric returns to the configuration
/// the last successful `up` applied (or, if there was none, what this `up` created is removed),
/// and the error names the step. One `up` or `down` changes a fabric at a time: a second one
/// waits, saying so on stderr (or fails at once with --no-wait).
///
/// A fabric pinned by an iqd of another map layout is upgraded in place: new maps are filled
/// from the file, the links swap to the new programs, tracked connections are carried over
/// where the layout allows (else it says they were reset).
#[derive(Args, Debug)]
pub struct Up {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    wait: WaitArg,
}

impl Up {
    pub async fn run(&self) -> anyhow::Result<()> {
        let fabric = self.config.load()?;
        iqd::require_root()?;
        let report = iqd::fabric::up(&fabric, &self.config.config, self.wait.wait()).await?;
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(" ")
            }
        };
        println!(
            "fabric {} is up (namespace {})",
            fabric.name,
            fabric.netns_name()
        );
        println!("  namespaces created: {}", list(&report.created_netns));
        println!("  namespaces adopted: {}", list(&report.adopted_netns));
        println!("  NICs created:       {}", list(&report.created_nics));
        println!("  NICs unchanged:     {}", list(&report.kept_nics));
        if !report.removed_nics.is_empty() {
            println!("  NICs removed:       {}", list(&report.removed_nics));
        }
        if let Some(upgrade) = &report.upgrade {
            println!("  upgraded pins:      {}", upgrade.summary());
            match upgrade.connections {
                Connections::Kept(n) => println!("  connections kept:   {n}"),
                Connections::CarriedOver(n) => println!("  connections carried over: {n}"),
                Connections::Reset(n) => println!("  connections reset:  {n} (layout changed)"),
            }
        }
        if let Some(pid) = report.switch_pid {
            println!("  AF_XDP switch:      running (pid {pid})");
        }
        if report.revoked_connections > 0 {
            println!(
                "  connections cut:    {} (no longer allowed by the security groups, or a NIC \
                 left their segment)",
                report.revoked_connections
            );
        }
        Ok(())
    }
}
