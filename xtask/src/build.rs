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

/// The test-only iqd of another map layout (`IQD_TEST_LAYOUT_SKEW`: layout 1, half the
/// connection table), for the upgrade test. Built into `target/skew`, so neither build
/// invalidates the other. Returns the path of its `iqd` binary.
pub fn build_skew() -> Result<PathBuf> {
    let target = util::target_dir().join("skew");
    util::cargo()
        .args(["build", "--package", "iqd-userspace", "--bin", "iqd"])
        .arg("--target-dir")
        .arg(&target)
        .env("IQD_TEST_LAYOUT_SKEW", "1")
        .run()
        .context("build step failed: cargo build (skewed layout)")?;
    let iqd = target.join("debug").join("iqd");
    if !iqd.is_file() {
        bail!("build succeeded but {} does not exist", iqd.display());
    }
    Ok(iqd)
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
