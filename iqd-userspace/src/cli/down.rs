use clap::Args;

use super::{ConfigArg, WaitArg};

/// Remove everything `up` created.
///
/// Stops the AF_XDP switch (data path `afxdp`), then deletes the NICs, the pinned programs,
/// links and maps, the fabric namespace and the LPAR namespaces iqd created. Namespaces that
/// existed before (adopted) stay, without their NICs.
/// Running it on a fabric that is down does nothing, and a `down` that was interrupted is
/// finished by the next one. Waits for another `up` or `down` of the fabric to finish (or fails
/// at once with --no-wait).
#[derive(Args, Debug)]
pub struct Down {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    wait: WaitArg,
}

impl Down {
    pub async fn run(&self) -> anyhow::Result<()> {
        let fabric = self.config.load()?;
        iqd::require_root()?;
        iqd::fabric::down(&fabric, self.wait.wait()).await?;
        println!("fabric {} is down", fabric.name);
        Ok(())
    }
}
