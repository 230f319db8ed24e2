use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::Args;
use iqd::serve::{self, store};

use super::ConfigArg;

/// Serve the fabric through the IBM Cloud VPC API (the part that describes bare metal servers,
/// their HiperSockets interfaces and security groups), so the `ibm-vpc` SDK and tools built on
/// it configure the fabric.
///
/// Mapping: VPC = the fabric, subnet = a CHPID, bare metal server = an LPAR, network
/// interface = a NIC; profiles, security groups, rules and targets as in the cloud (see
/// docs/vpc-api.md). HTTP on 127.0.0.1 only; every request needs `Authorization: Bearer
/// <token>`, the token being generated at the first start into --token-file (mode 0600; the
/// path is printed). The desired state is kept in `<FILE>.db` (SQLite) and applied by the engine
/// of `iqd up` under the fabric's lock; FILE is written with the fabric file that runs (`iqd
/// export` prints it from the store). A change is acknowledged only once applied and stored: it
/// survives a crash. At start the stored state is applied again, which leaves a running fabric
/// that matches it untouched. Stopping `iqd serve` leaves frames flowing.
#[derive(Args, Debug)]
pub struct Serve {
    #[command(flatten)]
    config: ConfigArg,
    /// Address to listen on (a loopback address only).
    #[arg(long, default_value = "127.0.0.1:8720")]
    listen: SocketAddr,
    /// The bearer token's file, created (mode 0600) with a new token if absent.
    /// Default: <FILE>.token.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Data path of a fabric created through the API ([fabric] datapath: tc, xdp or afxdp).
    #[arg(long, default_value = "tc")]
    datapath: String,
}

impl Serve {
    pub async fn run(&self) -> anyhow::Result<()> {
        iqd::require_root()?;
        if !self.listen.ip().is_loopback() {
            bail!(
                "--listen {}: iqd serve listens on loopback addresses only (127.0.0.1)",
                self.listen
            );
        }
        if !["tc", "xdp", "afxdp"].contains(&self.datapath.as_str()) {
            bail!("--datapath {}: tc, xdp or afxdp", self.datapath);
        }
        let config = absolute(&self.config.config)?;
        let token_file = match &self.token_file {
            Some(p) => p.clone(),
            None => PathBuf::from(format!("{}.token", config.display())),
        };
        let token = token(&token_file)?;
        let store_path = store::path_for(&config);
        let store = store::Store::open(&store_path)?;
        let mut doc = store.load()?;
        if doc.datapath.is_empty() {
            doc.datapath = self.datapath.clone();
        }
        serve::restore(&config, &doc)
            .await
            .map_err(|e| anyhow::anyhow!("applying the stored state: {}: {}", e.code, e.message))?;
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .with_context(|| format!("listen on {}", self.listen))?;
        let addr = listener.local_addr()?;
        let (app, writer) = serve::channel(
            token,
            format!("http://{addr}/v1"),
            doc,
            config.clone(),
            store,
        );
        println!(
            "iqd serve: VPC API on http://{addr}/v1 for fabric file {}",
            config.display()
        );
        println!("  token:  {}", token_file.display());
        println!("  store:  {}", store_path.display());
        let router = axum::Router::new()
            .fallback(serve::api::handle)
            .with_state(app);
        let server = axum::serve(listener, router).with_graceful_shutdown(stop_signal());
        tokio::select! {
            r = server => r.context("http server")?,
            () = writer.run() => {}
        }
        println!("iqd serve: stopped (the fabric keeps running)");
        Ok(())
    }
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

/// The token in `path`, or a new one written there, readable by root only.
fn token(path: &Path) -> anyhow::Result<String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "token file {}: mode {mode:o} lets others read it; chmod 600 it or remove it",
                path.display()
            );
        }
        let token = text.trim().to_string();
        if token.len() < 16 {
            bail!(
                "token file {}: the token is shorter than 16 characters",
                path.display()
            );
        }
        return Ok(token);
    }
    let token = serve::random_hex(32);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create token file {}", path.display()))?;
    use std::io::Write as _;
    writeln!(file, "{token}")?;
    file.sync_all()?;
    Ok(token)
}
