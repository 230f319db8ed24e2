use clap::Args;

use super::ConfigArg;

/// Validate the fabric file and change nothing.
///
/// Reports the first problem with file, line and column; prints a summary when the file is
/// valid. Does not need root.
#[derive(Args, Debug)]
pub struct Check {
    #[command(flatten)]
    config: ConfigArg,
}

impl Check {
    pub fn run(&self) -> anyhow::Result<()> {
        let fabric = self.config.load()?;
        let nics: usize = fabric.lpars.iter().map(|l| l.nics.len()).sum();
        let rules: usize = fabric.security_groups.iter().map(|g| g.rules.len()).sum();
        println!(
            "{}: fabric {} is valid: {}, {}, {}, {} with {}",
            self.config.config.display(),
            fabric.name,
            count(fabric.chpids.len(), "CHPID"),
            count(fabric.lpars.len(), "LPAR"),
            count(nics, "NIC"),
            count(fabric.security_groups.len(), "security group"),
            count(rules, "rule"),
        );
        Ok(())
    }
}

/// `1 NIC`, `2 NICs`.
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("{n} {what}")
    } else {
        format!("{n} {what}s")
    }
}
