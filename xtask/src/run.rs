//! `cargo xtask run`: builds iqd, then runs it with the given arguments or runs the demo.

use std::{
    path::Path,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::{build, setup, util, util::Cmd};

#[derive(Args)]
pub struct Options {
    /// Arguments for the iqd binary, e.g. `-- stats --config examples/demo.toml`.
    /// Without them, runs the demo.
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

pub fn run(options: Options) -> Result<()> {
    setup::ensure(
        "run",
        "it creates network namespaces and loads eBPF programs",
    )?;
    let iqd = build::build()?;
    if options.args.is_empty() {
        return demo(&iqd);
    }
    // Runs in the caller's directory so relative paths in ARGS mean what they typed.
    Err(Cmd::new(&iqd).args(&options.args).exec())
}

const DEMO_CONFIG: &str = "examples/demo.toml";

struct Chpid {
    id: &'static str,
    mfs: &'static str,
}

struct Nic {
    chpid: &'static str,
    /// Address with prefix length, as in the config.
    addr: &'static str,
}

struct Lpar {
    name: &'static str,
    netns: &'static str,
    nics: &'static [Nic],
}

// Mirrors examples/demo.toml (fabric "demo"). Hard-coded rather than parsed so the demo has no
// TOML dependency; keep the two in sync.
const DEMO_FABRIC: &str = "demo";
const DEMO_CHPIDS: &[Chpid] = &[chpid("F0", "64K"), chpid("F1", "16K")];
const DEMO_LPARS: &[Lpar] = &[
    lpar("LP01", "lp01", &[nic("F0", "10.0.0.1/24")]),
    lpar(
        "LP02",
        "lp02",
        &[nic("F0", "10.0.0.2/24"), nic("F1", "10.1.0.2/24")],
    ),
    lpar("LP03", "lp03", &[nic("F1", "10.1.0.3/24")]),
];

const fn chpid(id: &'static str, mfs: &'static str) -> Chpid {
    Chpid { id, mfs }
}

const fn nic(chpid: &'static str, addr: &'static str) -> Nic {
    Nic { chpid, addr }
}

const fn lpar(name: &'static str, netns: &'static str, nics: &'static [Nic]) -> Lpar {
    Lpar { name, netns, nics }
}

fn find_lpar(name: &str) -> &'static Lpar {
    DEMO_LPARS
        .iter()
        .find(|lpar| lpar.name == name)
        .expect("LPAR missing from the demo table")
}

impl Lpar {
    /// This LPAR's IP address (without prefix) on `chpid`.
    fn ip_on(&self, chpid: &str) -> &'static str {
        let nic = self
            .nics
            .iter()
            .find(|nic| nic.chpid == chpid)
            .expect("NIC missing from the demo table");
        nic.addr.split('/').next().unwrap_or(nic.addr)
    }

    /// `ip netns exec <netns> <program>`.
    fn exec(&self, program: &str) -> Cmd {
        Cmd::new("ip")
            .args(["netns", "exec", self.netns])
            .arg(program)
    }
}

fn demo(iqd: &Path) -> Result<()> {
    print_topology();
    let result = demo_steps(iqd);
    if let Err(err) = result {
        eprintln!("demo: failed, tearing the fabric down");
        if let Err(down_err) = iqd_cmd(iqd, "down").run() {
            eprintln!("demo: teardown failed too: {down_err:#}");
        }
        return Err(err);
    }
    print_usage();
    Ok(())
}

/// `iqd <subcommand> --config examples/demo.toml`, run from the workspace root.
fn iqd_cmd(iqd: &Path, subcommand: &str) -> Cmd {
    Cmd::new(iqd)
        .args([subcommand, "--config", DEMO_CONFIG])
        .current_dir(util::workspace_root())
}

fn heading(text: &str) {
    println!("\n=== {text}");
}

fn demo_steps(iqd: &Path) -> Result<()> {
    let (lp01, lp02, lp03) = (find_lpar("LP01"), find_lpar("LP02"), find_lpar("LP03"));

    heading(&format!("bringing up fabric \"{DEMO_FABRIC}\""));
    iqd_cmd(iqd, "up")
        .run()
        .context("demo step failed: iqd up")?;

    let peer = lp02.ip_on("F0");
    heading(&format!(
        "ping {} -> {} ({peer}) on CHPID F0",
        lp01.name, lp02.name
    ));
    lp01.exec("ping")
        .args(["-c", "3", "-i", "0.2", peer])
        .run()
        .with_context(|| format!("demo step failed: ping {} -> {}", lp01.name, lp02.name))?;

    heading(&format!(
        "iperf3 {} -> {} on CHPID F0",
        lp01.name, lp02.name
    ));
    let server = lp02
        .exec("iperf3")
        .args(["-s", "-1", "-B", peer])
        .stdout(Stdio::null())
        .spawn()
        .context("demo step failed: starting the iperf3 server")?;
    let mut server = KillOnDrop(server);
    wait_for_listener(&mut server.0, lp02, 5201)
        .context("demo step failed: waiting for the iperf3 server")?;
    lp01.exec("iperf3")
        .args(["-c", peer, "-t", "3"])
        .run()
        .context("demo step failed: iperf3 client")?;
    drop(server);

    let far = lp03.ip_on("F1");
    heading(&format!(
        "ping {} (CHPID F0) -> {} ({far}, CHPID F1): must be refused",
        lp01.name, lp03.name
    ));
    // A host route makes LP01 actually send to LP03's address, so the fabric is what refuses
    // it (counted as not_member), not LP01's own routing table.
    lp01.exec("ip")
        .args(["route", "replace", &format!("{far}/32"), "dev", "hsi0"])
        .run()
        .context("demo step failed: adding a host route in LP01")?;
    let status = lp01
        .exec("ping")
        .args(["-c", "2", "-W", "1", far])
        .status()
        .context("demo step failed: cross-CHPID ping")?;
    if status.success() {
        bail!(
            "demo step failed: {} (CHPID F0) reached {} (CHPID F1) at {far}; \
             CHPIDs are not isolated",
            lp01.name,
            lp03.name
        );
    }
    println!(
        "refused as expected: {} (CHPID F0) cannot reach {} (CHPID F1); \
         `iqd stats` counts the drops as not_member",
        lp01.name, lp03.name
    );

    heading("status");
    iqd_cmd(iqd, "status")
        .run()
        .context("demo step failed: iqd status")?;
    heading("stats");
    iqd_cmd(iqd, "stats")
        .run()
        .context("demo step failed: iqd stats")?;
    Ok(())
}

/// Polls `ss` in the server's namespace (a probe connection would use up `iperf3 -1`).
fn wait_for_listener(server: &mut Child, lpar: &Lpar, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let sport = format!(":{port}");
    loop {
        if let Some(status) = server.try_wait()? {
            bail!("iperf3 server exited before listening: {status}");
        }
        let listening = lpar
            .exec("ss")
            .args(["-H", "-l", "-t", "-n", "sport", "=", &sport])
            .quiet()
            .output()
            .is_ok_and(|output| output.status.success() && !output.stdout.is_empty());
        if listening {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "nothing listens on port {port} in netns {} after 5s",
                lpar.netns
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Stops a child still running when dropped: SIGTERM by pid, then SIGKILL after a second.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let child = &mut self.0;
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: plain syscall; the pid is our unreaped child, so it cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn print_topology() {
    println!("demo fabric \"{DEMO_FABRIC}\" ({DEMO_CONFIG}):");
    for chpid in DEMO_CHPIDS {
        let members: Vec<String> = DEMO_LPARS
            .iter()
            .flat_map(|lpar| {
                lpar.nics
                    .iter()
                    .filter(|nic| nic.chpid == chpid.id)
                    .map(move |nic| format!("{} (netns {}) {}", lpar.name, lpar.netns, nic.addr))
            })
            .collect();
        println!(
            "  CHPID {} (mfs {}): {}",
            chpid.id,
            chpid.mfs,
            members.join(", ")
        );
    }
}

fn print_usage() {
    let (lp01, lp02, lp03) = (find_lpar("LP01"), find_lpar("LP02"), find_lpar("LP03"));
    println!(
        "\nThe demo fabric is up. As root, from {}:\n\
         \x20 ip netns exec {} ping {}      # {} -> {} on CHPID F0\n\
         \x20 ip netns exec {} ping {}      # {} -> {} on CHPID F1\n\
         \x20 cargo xtask run -- stats --config {DEMO_CONFIG}\n\
         \x20 cargo xtask run -- status --config {DEMO_CONFIG}\n\
         Take it down with:\n\
         \x20 cargo xtask run -- down --config {DEMO_CONFIG}",
        util::workspace_root().display(),
        lp01.netns,
        lp02.ip_on("F0"),
        lp01.name,
        lp02.name,
        lp02.netns,
        lp03.ip_on("F1"),
        lp02.name,
        lp03.name,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_table_is_consistent() {
        for lpar in DEMO_LPARS {
            for nic in lpar.nics {
                assert!(DEMO_CHPIDS.iter().any(|chpid| chpid.id == nic.chpid));
            }
        }
        assert_eq!(find_lpar("LP02").ip_on("F1"), "10.1.0.2");
        assert_eq!(find_lpar("LP01").ip_on("F0"), "10.0.0.1");
    }
}
