//! `cargo xtask setup`: installs the tools iqd needs to build and run, skipping what is present.

use std::collections::HashSet;

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::util::{self, Cmd};

#[derive(Args)]
pub struct Options {}

/// Needed to run the demo, the integration tests and the benchmark.
const RUNTIME_PACKAGES: &[&str] = &[
    "iperf3",
    // iperf2: multicast streams (`iperf -u` to a group).
    "iperf",
    "ethtool",
    "iproute2",
    "iputils-ping",
    "sockperf",
    "fping",
    "nftables",
    // promtool (checks `iqd metrics`), tshark (reads `iqd trace`'s pcapng) in the observe suite.
    "prometheus",
    "tshark",
    // The virtualenv of the `iqd serve` tests, which drive it with IBM's ibm-vpc SDK.
    "python3-venv",
];

/// The SDK the `iqd serve` tests drive it with, unmodified from PyPI.
const VPC_SDK: &str = "ibm-vpc==0.36.0";

/// Needed only to build bpf-linker against LLVM 22.
const BPF_LINKER_BUILD_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];

const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

pub fn run(_: Options) -> Result<()> {
    ensure("setup", "it installs system packages and Rust tools")
}

/// Checks that we are root (naming `subcommand` and `why` if not), then installs what is missing.
pub fn ensure(subcommand: &str, why: &str) -> Result<()> {
    require_root(subcommand, why)?;
    let mut ok = Vec::new();

    rust_src(&mut ok).context("setup step failed: rust-src for the nightly toolchain")?;

    let linker = bpf_linker_version();
    if let Some(version) = &linker {
        ok.push(version.clone());
    }

    let mut packages = RUNTIME_PACKAGES.to_vec();
    if linker.is_none() {
        packages.extend_from_slice(BPF_LINKER_BUILD_PACKAGES);
    }
    debian_packages(&packages, &mut ok).context("setup step failed: Debian packages")?;

    if linker.is_none() {
        install_bpf_linker().context("setup step failed: bpf-linker")?;
    }

    vpc_sdk(&mut ok).context("setup step failed: the ibm-vpc SDK's virtualenv")?;

    if !ok.is_empty() {
        eprintln!("setup: ok: {}", ok.join(", "));
    }
    Ok(())
}

fn require_root(subcommand: &str, why: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "cargo xtask {subcommand} must run as root: {why}; \
             try: sudo -E cargo xtask {subcommand}"
        );
    }
    Ok(())
}

fn rust_src(ok: &mut Vec<String>) -> Result<()> {
    if util::which("rustup").is_none() {
        bail!("rustup not found on PATH or in $CARGO_HOME/bin; install it from https://rustup.rs");
    }
    let installed = Cmd::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()?;
    if !installed.status.success() {
        // Most likely the nightly toolchain itself is missing.
        eprintln!("setup: installing the nightly toolchain with rust-src");
        return Cmd::new("rustup")
            .args(["toolchain", "install", "nightly", "--profile", "minimal"])
            .args(["--component", "rust-src", "--component", "clippy"])
            .run();
    }
    let has_rust_src = String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|line| line.trim() == "rust-src" || line.starts_with("rust-src-"));
    if has_rust_src {
        ok.push("rust-src (nightly)".into());
        return Ok(());
    }
    eprintln!("setup: installing rust-src for the nightly toolchain");
    Cmd::new("rustup")
        .args(["component", "add", "rust-src", "--toolchain", "nightly"])
        .run()
}

/// `bpf-linker --version` (e.g. "bpf-linker 0.13.0") if it runs; PATH includes $CARGO_HOME/bin.
fn bpf_linker_version() -> Option<String> {
    let output = Cmd::new("bpf-linker").arg("--version").output().ok()?;
    if !output.status.success() {
        return None;
    }
    let version = String::from_utf8_lossy(&output.stdout);
    let version = version.lines().next().unwrap_or("").trim();
    Some(if version.is_empty() {
        "bpf-linker".into()
    } else {
        version.into()
    })
}

fn debian_packages(packages: &[&str], ok: &mut Vec<String>) -> Result<()> {
    if util::which("dpkg-query").is_none() {
        bail!(
            "dpkg-query not found: setup supports Debian and Ubuntu only; \
             install these by hand: {}",
            packages.join(" ")
        );
    }
    // Unknown packages make dpkg-query exit non-zero but it still lists the others.
    let output = Cmd::new("dpkg-query")
        .arg("-W")
        .arg(r"--showformat=${Package} ${Status}\n")
        .args(packages)
        .output()?;
    let installed: HashSet<&str> = std::str::from_utf8(&output.stdout)
        .unwrap_or("")
        .lines()
        .filter(|line| line.contains("install ok installed"))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| !installed.contains(package))
        .collect();
    if missing.is_empty() {
        ok.push("Debian packages".into());
        return Ok(());
    }

    eprintln!("setup: installing Debian packages: {}", missing.join(" "));
    // Without noninteractive, iperf3's debconf question hangs CI.
    Cmd::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()?;
    Cmd::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()
}

/// The virtualenv `target/vpc-venv` with the ibm-vpc SDK (tests/tests/serve.rs runs
/// tests/vpc/*.py with its python), made unless its python already imports the SDK.
fn vpc_sdk(ok: &mut Vec<String>) -> Result<()> {
    let venv = util::workspace_root().join("target/vpc-venv");
    let python = venv.join("bin/python");
    let has_sdk = python.exists()
        && Cmd::new(&python)
            .args(["-c", "import ibm_vpc, ibm_cloud_sdk_core"])
            .quiet()
            .status()
            .is_ok_and(|s| s.success());
    if has_sdk {
        ok.push("ibm-vpc (target/vpc-venv)".into());
        return Ok(());
    }
    eprintln!("setup: making {} with {VPC_SDK}", venv.display());
    Cmd::new("python3").arg("-m").arg("venv").arg(&venv).run()?;
    Cmd::new(venv.join("bin/pip"))
        .args(["install", "--quiet", VPC_SDK])
        .run()
}

fn install_bpf_linker() -> Result<()> {
    eprintln!("setup: installing bpf-linker with LLVM 22 (cargo install, takes ~3 minutes)");
    util::cargo()
        .args(["install", "bpf-linker", "--locked", "--no-default-features"])
        .args(["--features", "llvm-22"])
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .run()?;
    match bpf_linker_version() {
        Some(version) => {
            eprintln!("setup: installed {version}");
            Ok(())
        }
        None => bail!("bpf-linker was installed but `bpf-linker --version` does not run"),
    }
}
