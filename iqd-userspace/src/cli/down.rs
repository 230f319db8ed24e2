use clap::Args;

use super::ConfigArg;

/// Remove everything `up` created.
///
/// Stops the AF_XDP switch (data path `afxdp`), then deletes the NICs, the pinned programs,
/// links and maps, the fabric namespace and the LPAR namespaces iqd created. Namespaces that
/// existed before (adopted) stay, without their NICs.
/// Running it on a fabric that is down does nothing.
#[derive(Args, Debug)]
pub struct Down {
    #[command(flatten)]
    config: ConfigArg,
}

impl Down {
    pub async fn run(&self) -> anyhow::Result<()> {
        let fabric = self.config.load()?;
        iqd::require_root()?;
        iqd::fabric::down(&fabric).await?;
        println!("fabric {} is down", fabric.name);
        Ok(())
    }
}
