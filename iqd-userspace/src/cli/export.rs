use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;
use iqd::serve::store;

use super::ConfigArg;

/// Print the fabric `iqd serve --config FILE` serves, as a fabric file `iqd check` and `iqd up`
/// accept: the state last acknowledged through the API, read from its store (`<FILE>.db`),
/// also while `iqd serve` runs. Does not need root beyond reading the store.
#[derive(Args, Debug)]
pub struct Export {
    #[command(flatten)]
    config: ConfigArg,
    /// Write it to OUT instead of stdout.
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,
}

impl Export {
    pub fn run(&self) -> anyhow::Result<()> {
        let path = store::path_for(&self.config.config);
        if !path.exists() {
            bail!(
                "{}: no store of iqd serve for {}",
                path.display(),
                self.config.config.display()
            );
        }
        let doc = store::Store::open(&path)?.load()?;
        let Some(text) = doc.render() else {
            bail!(
                "{}: the served VPC has no subnet or no server yet, so no fabric",
                path.display()
            );
        };
        match &self.output {
            Some(out) => {
                std::fs::write(out, text).with_context(|| format!("write {}", out.display()))?
            }
            None => print!("{text}"),
        }
        Ok(())
    }
}
