//! Builds the eBPF programs (`iqd-ebpf`) with the nightly toolchain and bpf-linker, and puts the
//! object in OUT_DIR for `include_bytes!`. `AYA_BUILD_SKIP=1` skips that (for `cargo check` or
//! clippy on a machine without bpf-linker); the binary then reports that it has no data plane.
use std::{env, fs, path::PathBuf};

use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let ebpf_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../iqd-ebpf");
    let ebpf_dir = ebpf_dir
        .canonicalize()
        .with_context(|| format!("eBPF crate not found at {}", ebpf_dir.display()))?;
    // An empty object stands in when the build is skipped; iqd refuses to load it.
    let object = out_dir.join("iqd");
    if !object.exists() {
        fs::write(&object, b"").context("writing placeholder eBPF object")?;
    }
    // iqd-common reads it at compile time (the upgrade test's skewed layout): the eBPF object
    // must be rebuilt with it, as cargo rebuilds the userspace side.
    println!("cargo:rerun-if-env-changed=IQD_TEST_LAYOUT_SKEW");
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("eBPF crate path is not UTF-8"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "iqd-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
