//! `cargo xtask test`: lints, builds, then runs the unit and namespace integration tests.

use anyhow::{bail, Result};
use clap::Args;

use crate::{build, setup, util};

#[derive(Args)]
pub struct Options {
    /// Skip `cargo fmt --check` and `cargo clippy`.
    #[arg(long)]
    no_lint: bool,

    /// Arguments passed to the test binaries, e.g. a test name filter or `--nocapture`.
    #[arg(last = true, value_name = "EXTRA")]
    extra: Vec<String>,
}

const TEST_PACKAGES: &[&str] = &["iqd-common", "iqd-userspace", "xtask", "iqd-tests"];

/// Data paths other than the default, and the suites that run again on each of them.
const OTHER_DATAPATHS: &[&str] = &["xdp", "afxdp"];
const DATAPATH_SUITES: &[&str] = &[
    "fabric",
    "secgroups",
    "ipv6",
    "vlan",
    "upgrade",
    "lifecycle",
    "observe",
    "serve",
    "mcast",
    "layer2",
];

pub fn run(options: Options) -> Result<()> {
    setup::ensure(
        "test",
        "it creates network namespaces and loads eBPF programs",
    )?;
    // Lint and test failures are collected so one run reports all of them.
    let mut failed = Vec::new();

    if !options.no_lint {
        if let Err(err) = util::cargo().args(["fmt", "--all", "--", "--check"]).run() {
            eprintln!("test: fmt failed: {err:#}");
            failed.push("fmt");
        }
        let clippy = util::cargo()
            .args(["clippy", "--all-targets"])
            .args(package_args(TEST_PACKAGES))
            .args(["--package", "xtask"])
            .args(["--", "-D", "warnings"]);
        if let Err(err) = clippy.run() {
            eprintln!("test: clippy failed: {err:#}");
            failed.push("clippy");
        }
        // The kernel crate too, for its own target with the nightly toolchain that builds it.
        let ebpf_clippy = util::cargo()
            .args(["+nightly", "clippy", "--package", "iqd-ebpf", "--release"])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .args(["--", "-D", "warnings"])
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("RUSTUP_TOOLCHAIN");
        if let Err(err) = ebpf_clippy.run() {
            eprintln!("test: clippy (iqd-ebpf) failed: {err:#}");
            failed.push("clippy (iqd-ebpf)");
        }
    }

    // Nothing to test without a build, so this one stops the run.
    let iqd = build::build()?;
    // The upgrade test brings a fabric up with an iqd of another map layout.
    let skew = build::build_skew()?;

    // --no-fail-fast: one failing suite must not hide how the others fare.
    let mut test = util::cargo()
        .args(["test", "--no-fail-fast"])
        .args(package_args(TEST_PACKAGES))
        .env("IQD_BIN", &iqd)
        .env("IQD_SKEW_BIN", &skew)
        .env("RUST_BACKTRACE", "1");
    if !options.extra.is_empty() {
        test = test.arg("--").args(&options.extra);
    }
    if let Err(err) = test.run() {
        eprintln!("test: tests failed: {err:#}");
        failed.push("tests");
    }

    // The namespace suites once more on every other data path: each path must keep every
    // behaviour.
    for datapath in OTHER_DATAPATHS {
        eprintln!("test: namespace tests on data path {datapath}");
        let mut again = util::cargo()
            .args(["test", "--no-fail-fast", "--package", "iqd-tests"])
            .args(DATAPATH_SUITES.iter().flat_map(|suite| ["--test", suite]))
            .env("IQD_BIN", &iqd)
            .env("IQD_SKEW_BIN", &skew)
            .env("IQD_TEST_DATAPATH", datapath)
            .env("RUST_BACKTRACE", "1");
        if !options.extra.is_empty() {
            again = again.arg("--").args(&options.extra);
        }
        if let Err(err) = again.run() {
            eprintln!("test: tests on data path {datapath} failed: {err:#}");
            failed.push(datapath);
        }
    }

    if !failed.is_empty() {
        bail!("test step(s) failed: {}", failed.join(", "));
    }
    eprintln!("test: all passed");
    Ok(())
}

fn package_args<'a>(packages: &'a [&'a str]) -> impl Iterator<Item = &'a str> {
    packages.iter().flat_map(|package| ["--package", package])
}
