use clap::{Args, Subcommand};
use iqd::state::{LparState, State};

use super::{ConfigArg, WaitArg};

/// Stop, start and list LPARs, as a cloud stops and starts its servers.
///
/// A stopped LPAR's NICs are down (no carrier inside it), frames to it are dropped and counted
/// as lpar_stopped on the sender, and its tracked connections are cut at once. Its namespace
/// and the processes in it stay: a namespace is not a machine, nothing is shut down inside it.
/// NICs are added to or removed from an LPAR (by `iqd up`) only while it is stopped. The state
/// survives `iqd up` and iqd exiting; a new LPAR comes up running.
#[derive(Args, Debug)]
pub struct Lpar {
    #[command(subcommand)]
    command: LparCommand,
}

#[derive(Subcommand, Debug)]
enum LparCommand {
    /// Stop an LPAR: its NICs lose carrier, frames to it are dropped (lpar_stopped), its
    /// connections are cut. Nothing else of the fabric changes.
    Stop(Change),
    /// Start a stopped LPAR: its NICs carry frames again.
    Start(Change),
    /// List the LPARs with their state (running, stopped), profile and bandwidth.
    List(List),
}

#[derive(Args, Debug)]
struct Change {
    /// The LPAR's name, as the fabric file has it (e.g. LP01).
    name: String,
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    wait: WaitArg,
}

#[derive(Args, Debug)]
struct List {
    #[command(flatten)]
    config: ConfigArg,
    /// Print JSON: [{"lpar":..,"state":..,"profile":..,"bandwidth":..}].
    #[arg(long)]
    json: bool,
}

/// One row of `iqd lpar list`.
#[derive(Debug, serde::Serialize)]
struct Row {
    lpar: String,
    state: String,
    profile: Option<String>,
    bandwidth: Option<String>,
    nics: usize,
}

impl Lpar {
    pub async fn run(&self) -> anyhow::Result<()> {
        match &self.command {
            LparCommand::Stop(change) => change.run(LparState::Stopped).await,
            LparCommand::Start(change) => change.run(LparState::Running).await,
            LparCommand::List(list) => list.run(),
        }
    }
}

impl Change {
    async fn run(&self, to: LparState) -> anyhow::Result<()> {
        let fabric = self.config.load()?;
        iqd::require_root()?;
        let changed = iqd::fabric::set_lpar_state(
            &fabric,
            &self.config.config,
            &self.name,
            to,
            self.wait.wait(),
        )
        .await?;
        match changed {
            None => println!("LPAR {} is {to} already", self.name),
            Some(report) => {
                println!("LPAR {} is {to}", self.name);
                if report.revoked_connections > 0 {
                    println!("  connections cut: {}", report.revoked_connections);
                }
            }
        }
        Ok(())
    }
}

impl List {
    fn run(&self) -> anyhow::Result<()> {
        let fabric = self.config.load()?;
        let state = State::load(&fabric.name)?;
        let rows: Vec<Row> = fabric
            .lpars
            .iter()
            .map(|l| Row {
                lpar: l.name.clone(),
                state: iqd::inspect::lpar_state(state.as_ref(), &l.name),
                profile: l.profile.map(|p| p.name.to_string()),
                bandwidth: l.effective_bandwidth().map(|b| b.to_string()),
                nics: l.nics.len(),
            })
            .collect();
        if self.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
            return Ok(());
        }
        println!(
            "{:<8} {:<8} {:<20} {:<10} NICS",
            "LPAR", "STATE", "PROFILE", "BANDWIDTH"
        );
        for r in &rows {
            println!(
                "{:<8} {:<8} {:<20} {:<10} {}",
                r.lpar,
                r.state,
                r.profile.as_deref().unwrap_or("-"),
                r.bandwidth.as_deref().unwrap_or("-"),
                r.nics
            );
        }
        Ok(())
    }
}
