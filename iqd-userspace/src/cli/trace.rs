use std::{io::Write, path::PathBuf, time::Duration};

use clap::Args;

use super::ConfigArg;

/// Trace a CHPID's frames into pcapng, as the Network Traffic Analyzer does.
///
/// Only the LPAR the CHPID names as its `analyzer` may trace it (`--as`), one trace per CHPID
/// at a time, and only the frames of LPARs marked `traceable` are captured: one pcapng
/// interface per traced NIC, named LPAR/hsiN. A frame from one traced NIC to another appears
/// twice, as sent on the sender's interface and as received on the receiver's. Timestamps are
/// wall-clock time. Writes to stdout unless -w is given (`iqd trace ... | tshark -r -`); stops
/// at --count frames, after --duration seconds, or on Ctrl-C, and reports frames lost because
/// the capture could not keep up.
#[derive(Args, Debug)]
pub struct Trace {
    #[command(flatten)]
    config: ConfigArg,
    /// The CHPID to trace (two hex digits, e.g. F0).
    #[arg(long, value_name = "ID")]
    chpid: String,
    /// The LPAR doing the tracing: must be the CHPID's analyzer.
    #[arg(long = "as", value_name = "LPAR")]
    as_lpar: String,
    /// Write the pcapng file here instead of stdout.
    #[arg(short = 'w', value_name = "FILE")]
    write: Option<PathBuf>,
    /// Bytes of each frame to keep (at most 65000).
    #[arg(long, value_name = "N", default_value_t = iqd_common::TRACE_MAX_SNAPLEN,
          value_parser = clap::value_parser!(u32).range(1..=iqd_common::TRACE_MAX_SNAPLEN as i64))]
    snaplen: u32,
    /// Record dropped frames too, with the drop reason in each packet's comment.
    #[arg(long)]
    drops: bool,
    /// Stop after N frames.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Stop after S seconds.
    #[arg(long, value_name = "S")]
    duration: Option<f64>,
}

impl Trace {
    pub async fn run(&self) -> anyhow::Result<()> {
        let fabric = self.config.load()?;
        let duration = match self.duration {
            Some(s) if !(s.is_finite() && s > 0.0) => {
                anyhow::bail!("--duration {s}: must be a positive number of seconds")
            }
            s => s.map(Duration::from_secs_f64),
        };
        let request = iqd::trace::Request {
            chpid: self.chpid.clone(),
            as_lpar: self.as_lpar.clone(),
            snaplen: self.snaplen,
            drops: self.drops,
            count: self.count,
            duration,
        };
        // Refusals need no root and create nothing.
        iqd::trace::authorize(&fabric, &request)?;
        iqd::require_root()?;
        let open = || -> std::io::Result<Box<dyn Write>> {
            Ok(match &self.write {
                Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            })
        };
        let summary = iqd::trace::run(&fabric, &request, open)
            .await
            .map_err(|e| e.with_config(&self.config.config))?;
        eprintln!(
            "iqd trace: {} frames captured, {} lost (the capture could not keep up)",
            summary.written, summary.lost
        );
        Ok(())
    }
}
