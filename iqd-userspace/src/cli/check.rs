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
        println!(
            "{}: fabric {} is valid: {} CHPIDs, {} LPARs, {} NICs",
            self.config.config.display(),
            fabric.name,
            fabric.chpids.len(),
            fabric.lpars.len(),
            nics
        );
        Ok(())
    }
}
