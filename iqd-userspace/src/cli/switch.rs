use clap::Args;

use super::ConfigArg;

/// Run the AF_XDP switch of an `afxdp` fabric (internal: `iqd up` starts it, `iqd down` stops
/// it).
///
/// Binds an AF_XDP socket to every port and rx queue, all sharing one UMEM, and moves the frames
/// the ports' programs hand it to their destinations until SIGTERM or SIGINT. Then it gives the
/// ports back to the in-kernel path and sends what it still holds.
#[derive(Args, Debug)]
pub struct Switch {
    #[command(flatten)]
    config: ConfigArg,
}

impl Switch {
    pub async fn run(&self) -> anyhow::Result<()> {
        let fabric = self.config.load()?;
        iqd::require_root()?;
        iqd::switch::run(&fabric).await?;
        Ok(())
    }
}
