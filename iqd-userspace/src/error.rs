//! The one error type of the iqd library; the binary wraps it with anyhow at the edges.
use std::{io, path::PathBuf};

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error("iqd must run as root (it creates network namespaces and loads eBPF programs)")]
    NotRoot,

    #[error("security groups: {0}")]
    Rules(String),

    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("network namespace {name}: {op}: {source}")]
    Netns {
        name: String,
        op: &'static str,
        #[source]
        source: nix::Error,
    },

    #[error("netlink in namespace {netns}: {op}: {source}")]
    Netlink {
        netns: String,
        op: String,
        #[source]
        source: rtnetlink::Error,
    },

    #[error("interface {ifname} in namespace {netns}: {op}: {source}")]
    Ethtool {
        netns: String,
        ifname: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("interface {ifname} not found in namespace {netns}")]
    NoSuchLink { netns: String, ifname: String },

    #[error("the iqd binary was built without its eBPF object (AYA_BUILD_SKIP was set); rebuild with bpf-linker installed")]
    NoEbpfObject,

    #[error("eBPF: {0}")]
    Ebpf(#[from] aya::EbpfError),

    #[error("eBPF program {name}: {source}")]
    Program {
        name: String,
        #[source]
        source: aya::programs::ProgramError,
    },

    #[error("eBPF map {name}: {source}")]
    Map {
        name: String,
        #[source]
        source: aya::maps::MapError,
    },

    #[error("pin {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("fabric {fabric} is not up (no pinned maps under {pin_dir})")]
    NotUp { fabric: String, pin_dir: PathBuf },

    #[error("the AF_XDP switch of fabric {fabric}: {message}")]
    Switch { fabric: String, message: String },

    #[error("AF_XDP socket on port {port}, queue {queue}: {source}")]
    Xsk {
        port: String,
        queue: u32,
        #[source]
        source: io::Error,
    },

    #[error("fabric {fabric} is being changed by {holder}: run the command again once it is done, or without --no-wait to wait for it")]
    Locked { fabric: String, holder: String },

    #[error("nothing was changed: {}", refusals.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("; "))]
    Refused {
        refusals: Vec<crate::reconcile::Refusal>,
    },

    #[error("{step}: {source}")]
    Step {
        step: String,
        #[source]
        source: Box<Error>,
    },

    #[error("{source}; the fabric was rolled back ({outcome})")]
    RolledBack {
        #[source]
        source: Box<Error>,
        outcome: &'static str,
    },

    #[error("{source}; rolling the fabric back failed too: {rollback} (run `iqd up` again, or `iqd down`)")]
    RollbackFailed {
        #[source]
        source: Box<Error>,
        rollback: Box<Error>,
    },

    #[error("failure injected by IQD_FAILPOINT")]
    Failpoint,

    #[error("internal error: a step ran before the {0} it needs")]
    StepOrder(&'static str),

    #[error("state file {path}: {message}")]
    State { path: PathBuf, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
