//! Developer tasks for iqd, run as `cargo xtask <command>` (an alias in .cargo/config.toml).
//! Each subcommand lives in its own module exposing `Options` (clap args) and `run`.

mod bench;
mod build;
mod run;
mod setup;
mod test;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Developer tasks for iqd, the eBPF/XDP packet fabric for network namespaces.
///
/// All commands need root: they install packages, create network namespaces and load eBPF
/// programs. Run them as `sudo -E cargo xtask <command>`.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and running iqd needs (run first by every other command).
    ///
    /// Checks for and installs, only where missing: rust-src for the nightly toolchain (the
    /// eBPF crate builds core from source), bpf-linker (built with `cargo install` against
    /// LLVM 22, ~3 minutes, needing llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev), and the
    /// Debian packages iperf3 ethtool iproute2 iputils-ping sockperf fping used by the demo,
    /// the integration tests and the benchmark.
    Setup(setup::Options),

    /// Build iqd, its eBPF object and the integration tests (debug profile).
    ///
    /// Runs setup, then `cargo build --package iqd-userspace --package iqd-tests --all-targets`,
    /// and prints where the iqd binary is (target/debug/iqd).
    Build(build::Options),

    /// Lint, build, and run the unit and network-namespace integration tests.
    ///
    /// Runs setup, `cargo fmt --all -- --check` and `cargo clippy ... -D warnings` (unless
    /// --no-lint), builds (and, for the upgrade test, an iqd of another map layout into
    /// target/skew), then `cargo test` for iqd-common, iqd-userspace and iqd-tests with IQD_BIN
    /// pointing at the built iqd and IQD_SKEW_BIN at the other. Exits non-zero if any step
    /// fails; arguments after `--` go to the test binaries.
    Test(test::Options),

    /// Build iqd and run it with ARGS, or run the demo when no ARGS are given.
    ///
    /// The demo brings up the fabric in examples/demo.toml (LP01 and LP02 on CHPID F0, LP02 and
    /// LP03 on CHPID F1), pings and runs iperf3 across F0, shows that LP01 cannot reach LP03
    /// across CHPIDs, prints status and stats, and leaves the fabric up for you to try.
    /// If a step fails the fabric is taken down again.
    ///
    /// With ARGS, execs target/debug/iqd ARGS, e.g.
    /// `cargo xtask run -- down --config examples/demo.toml`.
    Run(run::Options),

    /// Measure iqd against the Linux bridge, macvlan and a direct veth pair.
    ///
    /// Builds every system in namespaces of its own at each MTU (1500, 8192, 57344) and measures,
    /// interleaved round-robin: TCP throughput (iperf3, 1 and 4 streams), UDP packet rate and
    /// loss (iperf3 -b 0, 64- and 1400-byte payloads), TCP request/response round trip p50/p99
    /// (sockperf ping-pong), CPU seconds per gigabit (/proc/stat), IPv6 TCP throughput and round
    /// trip, the per-packet cost of iqd's tc program over IPv4 and IPv6 (BPF statistics), and a
    /// scale test with N LPARs on one CHPID (time to bring up, all-pairs reachability over IPv4
    /// and IPv6 with fping, permanent neighbour entries, aggregate TCP of N/2 pairs). Prints
    /// medians with min-max and ratios to the bridge and to the veth pair, paired within each
    /// round; writes every raw sample to JSON; a full default run regenerates
    /// docs/performance.md with SVG charts. The full run takes about 31 minutes on 2 cores,
    /// --quick about 4.
    Bench(Box<bench::Options>),
}

fn main() -> ExitCode {
    util::extend_path();
    let result = match Cli::parse().command {
        Command::Setup(options) => setup::run(options),
        Command::Build(options) => build::run(options),
        Command::Test(options) => test::run(options),
        Command::Run(options) => run::run(options),
        Command::Bench(options) => bench::run(*options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
