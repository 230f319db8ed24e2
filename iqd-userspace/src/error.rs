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

    #[error("fabric {fabric} has no LPAR {lpar} (it has: {known}); an LPAR the file adds exists once `iqd up` has built it")]
    UnknownLpar {
        fabric: String,
        lpar: String,
        known: String,
    },

    /// `iqd trace` refused or failed; nothing was captured when it refused.
    #[error("trace of CHPID {chpid}: {message}")]
    Trace { chpid: String, message: String },

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

    /// The fabric's pinned maps are not those this iqd's programs define: reading them would
    /// misread them. `iqd up` upgrades the pins in place.
    #[error("{0}")]
    Layout(Box<LayoutMismatch>),
}

/// Why a fabric's pins cannot be read by this iqd, and what to run instead.
#[derive(Debug)]
pub struct LayoutMismatch {
    pub fabric: String,
    /// The layout version the pins were written with.
    pub pinned: u32,
    /// This iqd's layout version.
    pub expected: u32,
    /// One line per map that differs, e.g. `IQD_CONNTRACK: key 16 bytes pinned, 20 expected`.
    pub differences: Vec<String>,
    /// The fabric file, when the caller knows it (named in the advice).
    pub config: Option<PathBuf>,
}

impl std::fmt::Display for LayoutMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let config = self
            .config
            .as_ref()
            .map(|c| c.display().to_string())
            .unwrap_or_else(|| "FILE".to_string());
        write!(
            f,
            "fabric {} is pinned with map layout {} ({}); this iqd uses layout {}: ",
            self.fabric,
            self.pinned,
            self.differences.join("; "),
            self.expected
        )?;
        if self.pinned > self.expected {
            // A newer iqd wrote them: converting back is possible, but may not be meant.
            write!(
                f,
                "use the newer iqd that brought it up, or run `iqd up --config {config}` with \
                 this one to convert it to layout {} in place",
                self.expected
            )
        } else {
            write!(f, "run `iqd up --config {config}` to upgrade it in place")
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Names the fabric file in a layout refusal's advice.
    pub fn with_config(self, config: &std::path::Path) -> Self {
        match self {
            Error::Layout(mut mismatch) => {
                mismatch.config = Some(config.to_path_buf());
                Error::Layout(mismatch)
            }
            other => other,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
