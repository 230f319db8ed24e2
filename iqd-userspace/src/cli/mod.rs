//! One module per subcommand.
mod check;
mod conntrack;
mod down;
mod export;
mod lpar;
mod metrics;
mod profiles;
mod serve;
mod stats;
mod status;
mod switch;
mod trace;
mod up;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// iqd: IBM HiperSockets for Linux network namespaces.
///
/// A fabric file describes IQD CHPIDs (isolated LANs with a maximum frame size) and LPARs
/// (network namespaces) with HiperSockets NICs on those CHPIDs. `iqd up` builds it: one
/// namespace per LPAR with NICs (hsi0, hsi1, ...) whose frames are switched by eBPF programs in
/// the kernel ([fabric] datapath: "tc", the default, "xdp", or "afxdp" with a userspace switch),
/// which also enforce MFS, anti-spoofing and security groups. LPARs on one CHPID reach each
/// other; different CHPIDs never do.
#[derive(Parser, Debug)]
#[command(name = "iqd", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    Up(up::Up),
    Down(down::Down),
    Check(check::Check),
    Status(status::Status),
    Stats(stats::Stats),
    Conntrack(conntrack::Conntrack),
    Lpar(lpar::Lpar),
    Profiles(profiles::Profiles),
    Metrics(metrics::Metrics),
    Trace(trace::Trace),
    Serve(serve::Serve),
    Export(export::Export),
    #[command(hide = true)]
    Switch(switch::Switch),
}

/// The fabric file every subcommand works on.
#[derive(Args, Debug)]
pub struct ConfigArg {
    /// Fabric file (TOML). See docs/configuration.md.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
}

/// What a command that changes a fabric does when another one is changing it.
#[derive(Args, Debug)]
pub struct WaitArg {
    /// Fail at once if another iqd is changing this fabric, instead of waiting for it to finish
    /// (one writer per fabric; `status`, `stats` and `conntrack` never wait).
    #[arg(long)]
    pub no_wait: bool,
}

impl WaitArg {
    fn wait(&self) -> iqd::lock::Wait {
        if self.no_wait {
            iqd::lock::Wait::No
        } else {
            iqd::lock::Wait::Yes
        }
    }
}

impl ConfigArg {
    fn load(&self) -> anyhow::Result<iqd::config::Fabric> {
        // As `up` builds it: NICs keep the devnos they were built with.
        Ok(iqd::fabric::load(&self.config)?)
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(cmd) => cmd.run().await,
        Command::Down(cmd) => cmd.run().await,
        Command::Check(cmd) => cmd.run(),
        Command::Status(cmd) => cmd.run().await,
        Command::Stats(cmd) => cmd.run().await,
        Command::Conntrack(cmd) => cmd.run().await,
        Command::Lpar(cmd) => cmd.run().await,
        Command::Profiles(cmd) => cmd.run(),
        Command::Metrics(cmd) => cmd.run().await,
        Command::Trace(cmd) => cmd.run().await,
        Command::Serve(cmd) => cmd.run().await,
        Command::Export(cmd) => cmd.run(),
        Command::Switch(cmd) => cmd.run().await,
    }
}
