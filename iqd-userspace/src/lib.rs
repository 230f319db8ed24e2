//! iqd: IBM HiperSockets for Linux network namespaces.
//!
//! The library behind the `iqd` binary: the fabric's types (`domain`), fabric file parsing and
//! validation (`config`), security groups compiled into rule tables (`secgroup`), the eBPF data
//! plane and its pinned maps (`dataplane`) and their layout across iqd versions (`layout`),
//! namespace and link management (`netns`, `netlink`,
//! `ethtool`), bringing fabrics up and down (`fabric`), reading them back (`inspect`, and as Prometheus metrics: `metrics`), and the
//! AF_XDP switch of data path `afxdp` (`switch`).
pub mod config;
pub mod dataplane;
pub mod domain;
pub mod error;
pub mod ethtool;
pub mod fabric;
pub mod inspect;
pub mod layout;
pub mod lock;
pub mod metrics;
pub mod netlink;
pub mod netns;
pub mod reconcile;
pub mod secgroup;
pub mod serve;
pub mod state;
pub mod switch;
pub mod trace;

pub use error::{Error, Result};

/// iqd changes namespaces, links and BPF objects: it needs root.
pub fn require_root() -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(Error::NotRoot)
    }
}
