//! `cargo xtask build`: builds iqd (with its eBPF object) and the integration tests.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::{setup, util};

#[derive(Args)]
pub struct Options {}

pub fn run(_: Options) -> Result<()> {
    setup::ensure(
        "build",
        "it runs setup, which installs system packages and Rust tools",
    )?;
    let iqd = build()?;
    eprintln!("build: iqd binary: {}", iqd.display());
    Ok(())
}

/// Builds in the debug profile (iqd-userspace's build script compiles the eBPF object) and
/// returns the absolute path of the `iqd` binary. Assumes setup already ran.
pub fn build() -> Result<PathBuf> {
    util::cargo()
        .args([
            "build",
            "--package",
            "iqd-userspace",
            "--package",
            "iqd-tests",
        ])
        .arg("--all-targets")
        .run()
        .context("build step failed: cargo build")?;
    let iqd = util::iqd_bin();
    if !iqd.is_file() {
        bail!("build succeeded but {} does not exist", iqd.display());
    }
    Ok(iqd)
}
