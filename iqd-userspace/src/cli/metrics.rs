use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Args;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use super::ConfigArg;

/// Serve the fabric's figures in Prometheus' text format at /metrics (or print them once).
///
/// Per NIC (labels fabric, chpid, lpar, nic): iqd_nic_sent_frames_total,
/// iqd_nic_sent_bytes_total, iqd_nic_received_frames_total, iqd_nic_received_bytes_total, and
/// iqd_nic_dropped_frames_total with one series per drop reason (label reason). Per fabric:
/// iqd_fabric_up, iqd_conntrack_entries and _capacity (gauges), iqd_conntrack_created_total,
/// _revoked_total, _evicted_total; data path afxdp: the switch's figures. The same numbers as
/// `iqd stats --json`, summed over CPUs, read afresh at every scrape.
#[derive(Args, Debug)]
pub struct Metrics {
    #[command(flatten)]
    config: ConfigArg,
    /// Address to serve on (HTTP, GET /metrics).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9720")]
    listen: SocketAddr,
    /// Print one scrape to stdout and exit instead of serving.
    #[arg(long)]
    once: bool,
}

impl Metrics {
    pub async fn run(&self) -> anyhow::Result<()> {
        let fabric = self.config.load()?;
        iqd::require_root()?;
        if self.once {
            let text = iqd::metrics::gather(&fabric)
                .await
                .map_err(|e| e.with_config(&self.config.config))?;
            print!("{text}");
            return Ok(());
        }
        let listener = TcpListener::bind(self.listen)
            .await
            .with_context(|| format!("cannot listen on {}", self.listen))?;
        eprintln!(
            "iqd: serving metrics of fabric {} at http://{}/metrics",
            fabric.name, self.listen
        );
        let mut interrupt =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            // One scrape at a time: each reads the maps once, and scrapers wait for each other.
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => accepted?,
                _ = interrupt.recv() => return Ok(()),
                _ = terminate.recv() => return Ok(()),
            };
            if let Err(e) = serve(stream, &fabric).await {
                log::warn!("metrics request: {e}");
            }
        }
    }
}

/// Answers one HTTP/1.x request on `stream`, then closes it.
async fn serve(mut stream: TcpStream, fabric: &iqd::config::Fabric) -> anyhow::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), read)
        .await
        .context("request not received within 5 s")??;
    let line = String::from_utf8_lossy(&request);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => match iqd::metrics::gather(fabric).await {
            Ok(text) => ("200 OK", iqd::metrics::CONTENT_TYPE, text),
            Err(e) => (
                "500 Internal Server Error",
                "text/plain; charset=utf-8",
                format!("{e}\n"),
            ),
        },
        ("GET", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "iqd metrics: GET /metrics\n".to_string(),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "GET only\n".to_string(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}
