//! The systems under test, each built in network namespaces the benchmark creates and removes.
//!
//! Every environment is a set of endpoint namespaces with an interface `eth0` (`hsi0` for iqd)
//! and an address `10.0.0.<i+1>/24`, and, when the run measures IPv6, `fd00:f0::<i+1>/64` (added
//! with `nodad` on the plain systems; iqd's NICs are NOARP and do no DAD). Whatever connects them (bridge, dummy parent, iqd's fabric
//! ports) lives in a namespace of its own, so the root namespace is never touched.

use std::{
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::secgroups;
use crate::util::Cmd;

/// A kind of fabric between namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// iqd with its `xdp` data path.
    IqdXdp,
    /// A Linux bridge with one veth per endpoint.
    Bridge,
    /// macvlan devices in bridge mode on a dummy parent (an idle veth where the kernel has no
    /// dummy driver).
    Macvlan,
    /// A direct veth pair: the physical limit of a veth-based fabric (two endpoints only).
    Veth,
    /// iqd on its default data path (`iqd-tc`) with five security groups of this many rules
    /// on every NIC (two endpoints only).
    IqdSg(usize),
    /// iqd with its tc data path (`bpf_redirect_peer`, GSO kept).
    IqdTc,
    /// `IqdTc` built by another iqd binary (`--baseline-iqd`), for the per-packet cost only:
    /// what a change did to it, measured side by side.
    IqdTcBaseline,
    /// iqd with its AF_XDP data path (`datapath = "afxdp"`): the same fabric file as `IqdXdp`.
    IqdAfxdp,
    /// `bridge` with a stateful nftables rule set equivalent to `IqdSg`'s in every endpoint
    /// namespace (two endpoints only).
    BridgeNft(usize),
    /// `IqdTc` with every NIC in VLAN [`BENCH_VLAN`] of its CHPID: what a VLAN costs.
    IqdVlan,
}

/// The VLAN of the `iqd-vlan` system's NICs.
pub const BENCH_VLAN: u16 = 100;

impl Kind {
    pub const ALL: [Kind; 14] = [
        Kind::IqdXdp,
        Kind::IqdTc,
        Kind::IqdTcBaseline,
        Kind::IqdAfxdp,
        Kind::Bridge,
        Kind::Macvlan,
        Kind::Veth,
        Kind::IqdSg(secgroups::RULE_COUNTS[0]),
        Kind::IqdSg(secgroups::RULE_COUNTS[1]),
        Kind::IqdSg(secgroups::RULE_COUNTS[2]),
        Kind::BridgeNft(secgroups::RULE_COUNTS[0]),
        Kind::BridgeNft(secgroups::RULE_COUNTS[1]),
        Kind::BridgeNft(secgroups::RULE_COUNTS[2]),
        Kind::IqdVlan,
    ];

    /// Whether a run measures the system only when `--system` names it: `iqd-afxdp` would take
    /// the full run past its 30 minutes; `iqd-tc-baseline` needs `--baseline-iqd`; `iqd-vlan`
    /// is `iqd-tc` again, for a side-by-side check of what a VLAN costs.
    pub fn on_request(self) -> bool {
        matches!(self, Kind::IqdAfxdp | Kind::IqdTcBaseline | Kind::IqdVlan)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::IqdXdp => "iqd-xdp",
            Kind::Bridge => "bridge",
            Kind::Macvlan => "macvlan",
            Kind::Veth => "veth",
            Kind::IqdSg(0) => "iqd-sg0",
            Kind::IqdSg(50) => "iqd-sg50",
            Kind::IqdSg(250) => "iqd-sg250",
            Kind::IqdSg(_) => "iqd-sg",
            Kind::IqdTc => "iqd-tc",
            Kind::IqdTcBaseline => "iqd-tc-baseline",
            Kind::IqdAfxdp => "iqd-afxdp",
            Kind::BridgeNft(0) => "bridge-nft0",
            Kind::BridgeNft(50) => "bridge-nft50",
            Kind::BridgeNft(250) => "bridge-nft250",
            Kind::BridgeNft(_) => "bridge-nft",
            Kind::IqdVlan => "iqd-vlan",
        }
    }

    /// Short code used in namespace names.
    fn code(self) -> &'static str {
        match self {
            Kind::IqdXdp => "x",
            Kind::Bridge => "b",
            Kind::Macvlan => "m",
            Kind::Veth => "v",
            Kind::IqdSg(_) => "s",
            Kind::IqdTc => "t",
            Kind::IqdTcBaseline => "o",
            Kind::IqdAfxdp => "a",
            Kind::BridgeNft(_) => "n",
            Kind::IqdVlan => "l",
        }
    }

    /// The rules per security group, for the systems that measure security groups.
    pub fn secgroup_rules(self) -> Option<usize> {
        match self {
            Kind::IqdSg(n) | Kind::BridgeNft(n) => Some(n),
            _ => None,
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn max_endpoints(self) -> usize {
        match self {
            Kind::Veth | Kind::IqdSg(_) | Kind::BridgeNft(_) => 2,
            _ => 250,
        }
    }

    pub fn is_iqd(self) -> bool {
        self.datapath().is_some()
    }

    /// The `[fabric] datapath` of an iqd system.
    pub fn datapath(self) -> Option<&'static str> {
        match self {
            Kind::IqdXdp => Some("xdp"),
            Kind::IqdTc | Kind::IqdTcBaseline | Kind::IqdVlan => Some("tc"),
            Kind::IqdSg(_) => Some(secgroups::DATAPATH),
            Kind::IqdAfxdp => Some("afxdp"),
            _ => None,
        }
    }
}

/// An address family the benchmark measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// `4` or `6`, as `--family` takes it.
    pub fn number(self) -> u32 {
        match self {
            Family::V4 => 4,
            Family::V6 => 6,
        }
    }

    pub fn parse(number: u32) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.number() == number)
    }

    /// The suffix of this family's metric names: IPv4's figures keep their plain names
    /// (`tcp_1`), IPv6's twins end in `_v6` (`tcp_1_v6`).
    pub fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "",
            Family::V6 => "_v6",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// One namespace taking part in the measurements.
pub struct Endpoint {
    pub netns: String,
    pub addr: Ipv4Addr,
    /// Configured only when the environment was built with IPv6 ([`Env::v6`]).
    pub addr6: Ipv6Addr,
}

impl Endpoint {
    /// The endpoint's address in `family`.
    pub fn ip(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => IpAddr::V4(self.addr),
            Family::V6 => IpAddr::V6(self.addr6),
        }
    }
}

/// A built system: its namespaces, background servers and, for iqd, its fabric. Dropping it
/// stops the servers (by pid), takes the fabric down and deletes the namespaces.
pub struct Env {
    pub kind: Kind,
    pub mtu: u32,
    pub endpoints: Vec<Endpoint>,
    /// Whether the endpoints have IPv6 addresses.
    pub v6: bool,
    /// For iqd: the fabric's name (its pins are under /sys/fs/bpf/iqd/<fabric>/).
    pub fabric: Option<String>,
    /// Namespaces this environment created (endpoint and infrastructure), deleted on drop.
    namespaces: Vec<String>,
    /// For iqd: the binary and the fabric file `iqd down` needs.
    iqd: Option<(PathBuf, PathBuf)>,
    children: Vec<Child>,
    /// How long building the environment took.
    pub setup_time: Duration,
}

pub fn endpoint_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// Endpoint `i`'s IPv6 address, in `fd00:f0::/64` (a unique local prefix, as in the fabric-file
/// examples): `fd00:f0::<i+1>`.
pub fn endpoint_addr6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0xf0, 0, 0, 0, 0, 0, i as u16 + 1)
}

/// The CHPID MFS that carries `mtu`, and whether the LPAR interface must be lowered to it.
fn mfs_for(mtu: u32) -> Result<&'static str> {
    Ok(match mtu {
        0..=8192 => "16K",
        8193..=16384 => "24K",
        16385..=32768 => "40K",
        32769..=57344 => "64K",
        _ => bail!("MTU {mtu} is above the largest CHPID MTU (57344, MFS 64K)"),
    })
}

/// The largest MTU each CHPID MFS gives (MFS minus 8K).
fn chpid_mtu(mfs: &str) -> u32 {
    match mfs {
        "16K" => 8192,
        "24K" => 16384,
        "40K" => 32768,
        _ => 57344,
    }
}

/// What builds environments: unique names per benchmark run, and the iqd binary.
pub struct Builder {
    /// Unique per run: `ib<pid in hex>`.
    pub tag: String,
    pub iqd: Option<PathBuf>,
    /// The binary of `iqd-tc-baseline` (`--baseline-iqd`).
    pub baseline: Option<PathBuf>,
    pub work_dir: PathBuf,
    serial: u32,
    /// Whether each iqd binary accepts `ipv6` on a NIC; asked once, see
    /// [`Builder::iqd_has_ipv6`].
    iqd_ipv6: std::collections::HashMap<PathBuf, bool>,
}

impl Builder {
    pub fn new(iqd: Option<PathBuf>, work_dir: PathBuf) -> Self {
        Builder {
            tag: format!("ib{:x}", std::process::id() & 0xffff),
            iqd,
            baseline: None,
            work_dir,
            serial: 0,
            iqd_ipv6: std::collections::HashMap::new(),
        }
    }

    /// The iqd binary that builds `kind`.
    fn iqd_for(&self, kind: Kind) -> Option<&PathBuf> {
        if kind == Kind::IqdTcBaseline {
            self.baseline.as_ref()
        } else {
            self.iqd.as_ref()
        }
    }

    /// Whether the iqd binary accepts `ipv6 = [...]` on a NIC (`iqd check` of a fabric file
    /// that has one). An iqd from before IPv6 refuses the key; its systems are then built
    /// without IPv6 and their IPv6 figures are reported as failed, not the whole run.
    pub fn iqd_has_ipv6(&mut self, kind: Kind) -> Result<bool> {
        let Some(iqd) = self.iqd_for(kind).cloned() else {
            return Ok(false);
        };
        if let Some(known) = self.iqd_ipv6.get(&iqd) {
            return Ok(*known);
        }
        let probe = self.work_dir.join(format!("{}-ipv6-probe.toml", self.tag));
        let toml = secgroups::fabric_file_with(
            &format!("{}p", self.tag),
            "16K",
            "tc",
            &["iqd-bench-probe-a", "iqd-bench-probe-b"],
            None,
            true,
        );
        std::fs::write(&probe, toml)
            .with_context(|| format!("could not write {}", probe.display()))?;
        let output = Cmd::new(&iqd)
            .arg("check")
            .arg("--config")
            .arg(&probe)
            .quiet()
            .output();
        let _ = std::fs::remove_file(&probe);
        let known = output?.status.success();
        self.iqd_ipv6.insert(iqd, known);
        Ok(known)
    }

    /// Builds `kind` with `n` endpoints at `mtu`, with IPv6 addresses when `v6` (for iqd, only
    /// if the binary has IPv6: see [`Builder::iqd_has_ipv6`] and [`Env::v6`]).
    pub fn build(&mut self, kind: Kind, mtu: u32, n: usize, v6: bool) -> Result<Env> {
        let v6 = v6 && (!kind.is_iqd() || self.iqd_has_ipv6(kind)?);
        if n < 2 || n > kind.max_endpoints() {
            bail!(
                "{} supports 2 to {} endpoints, not {n}",
                kind.name(),
                kind.max_endpoints()
            );
        }
        self.serial += 1;
        let id = format!("{}{}{}", self.tag, kind.code(), self.serial);
        let mut env = Env {
            kind,
            mtu,
            endpoints: (0..n)
                .map(|i| Endpoint {
                    netns: format!("{id}-{i}"),
                    addr: endpoint_addr(i),
                    addr6: endpoint_addr6(i),
                })
                .collect(),
            v6,
            fabric: None,
            namespaces: Vec::new(),
            iqd: None,
            children: Vec::new(),
            setup_time: Duration::ZERO,
        };
        let started = Instant::now();
        match kind {
            Kind::IqdXdp
            | Kind::IqdSg(_)
            | Kind::IqdTc
            | Kind::IqdTcBaseline
            | Kind::IqdAfxdp
            | Kind::IqdVlan => self.build_iqd(&mut env, &id)?,
            Kind::Bridge => build_bridge(&mut env, &id)?,
            Kind::BridgeNft(n) => {
                build_bridge(&mut env, &id)?;
                self.load_nft(&env, &id, n)?;
            }
            Kind::Macvlan => build_macvlan(&mut env, &id)?,
            Kind::Veth => build_veth(&mut env)?,
        }
        env.setup_time = started.elapsed();
        Ok(env)
    }

    fn build_iqd(&self, env: &mut Env, id: &str) -> Result<()> {
        let Some(iqd) = self.iqd_for(env.kind) else {
            bail!("no iqd binary to benchmark");
        };
        let mfs = mfs_for(env.mtu)?;
        // The fabric name becomes the pin directory and the `iqd-<name>` namespace.
        let fabric = id.to_string();
        let netns: Vec<&str> = env.endpoints.iter().map(|e| e.netns.as_str()).collect();
        let groups = env.kind.secgroup_rules().map(secgroups::groups);
        let datapath = env.kind.datapath().unwrap_or("xdp");
        let mut toml =
            secgroups::fabric_file_with(&fabric, mfs, datapath, &netns, groups.as_deref(), env.v6);
        if env.kind == Kind::IqdVlan {
            toml = in_vlan(&toml, BENCH_VLAN);
        }
        let config = self.work_dir.join(format!("{fabric}.toml"));
        std::fs::write(&config, toml)
            .with_context(|| format!("could not write {}", config.display()))?;
        // Registered before `up` runs, so that a half-built fabric is taken down too.
        env.iqd = Some((iqd.clone(), config.clone()));
        env.fabric = Some(fabric.clone());
        let output = Cmd::new(iqd)
            .arg("up")
            .arg("--config")
            .arg(&config)
            .quiet()
            .output()?;
        if !output.status.success() {
            bail!(
                "iqd up failed for {}: {}",
                config.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        // A CHPID's MTU is its MFS minus 8K; smaller MTUs (1500) are the LPAR's own choice.
        if env.mtu < chpid_mtu(mfs) {
            for e in &env.endpoints {
                ip(&e.netns, &format!("link set hsi0 mtu {}", env.mtu))?;
            }
        }
        for e in &env.endpoints {
            ip(&e.netns, "link set lo up")?;
        }
        Ok(())
    }

    /// Loads the nftables rule set of `n` rules per group into every endpoint namespace.
    fn load_nft(&self, env: &Env, id: &str, n: usize) -> Result<()> {
        let ruleset = secgroups::nft_ruleset(&secgroups::groups(n));
        let file = self.work_dir.join(format!("{id}.nft"));
        std::fs::write(&file, &ruleset)
            .with_context(|| format!("could not write {}", file.display()))?;
        let mut result = Ok(());
        for e in &env.endpoints {
            let output = Cmd::new("ip")
                .args(["netns", "exec", &e.netns, "nft", "-f"])
                .arg(&file)
                .quiet()
                .output()?;
            if !output.status.success() {
                result = Err(anyhow::anyhow!(
                    "`ip netns exec {} nft -f {}` failed: {}",
                    e.netns,
                    file.display(),
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
                break;
            }
        }
        let _ = std::fs::remove_file(&file);
        result
    }
}

/// The benchmark's fabric file `toml` with every NIC in VLAN `vlan` of its CHPID.
fn in_vlan(toml: &str, vlan: u16) -> String {
    toml.replace(
        "[[lpar.nic]]\nchpid = \"F0\"\n",
        &format!("[[lpar.nic]]\nchpid = \"F0\"\nvlan = {vlan}\n"),
    )
}

/// `ip -n NETNS ARGS...`, quietly; a failure is an error naming the command.
fn ip(netns: &str, args: &str) -> Result<()> {
    let output = Cmd::new("ip")
        .arg("-n")
        .arg(netns)
        .args(args.split_whitespace())
        .quiet()
        .output()?;
    if !output.status.success() {
        bail!(
            "`ip -n {netns} {args}` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn add_netns(env: &mut Env, name: &str) -> Result<()> {
    let output = Cmd::new("ip")
        .args(["netns", "add", name])
        .quiet()
        .output()?;
    if !output.status.success() {
        bail!(
            "`ip netns add {name}` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    env.namespaces.push(name.to_string());
    ip(name, "link set lo up")
}

fn add_endpoint_namespaces(env: &mut Env) -> Result<()> {
    let names: Vec<String> = env.endpoints.iter().map(|e| e.netns.clone()).collect();
    for name in names {
        add_netns(env, &name)?;
    }
    Ok(())
}

fn address_endpoints(env: &Env) -> Result<()> {
    for e in &env.endpoints {
        ip(&e.netns, &format!("addr add {}/24 dev eth0", e.addr))?;
        if env.v6 {
            // nodad: usable at once, as on a NOARP HiperSockets interface (the plain systems
            // still resolve neighbours with ND).
            ip(
                &e.netns,
                &format!("-6 addr add {}/64 dev eth0 nodad", e.addr6),
            )?;
        }
        ip(&e.netns, "link set eth0 up")?;
    }
    Ok(())
}

fn build_veth(env: &mut Env) -> Result<()> {
    add_endpoint_namespaces(env)?;
    let (a, b) = (&env.endpoints[0].netns, &env.endpoints[1].netns);
    ip(
        a,
        &format!(
            "link add eth0 mtu {mtu} type veth peer name eth0 netns {b} mtu {mtu}",
            mtu = env.mtu
        ),
    )?;
    address_endpoints(env)
}

fn build_bridge(env: &mut Env, id: &str) -> Result<()> {
    let hub = format!("{id}-br");
    add_netns(env, &hub)?;
    add_endpoint_namespaces(env)?;
    ip(&hub, &format!("link add br0 mtu {} type bridge", env.mtu))?;
    for (i, e) in env.endpoints.iter().enumerate() {
        ip(
            &hub,
            &format!(
                "link add p{i} mtu {mtu} type veth peer name eth0 netns {ns} mtu {mtu}",
                mtu = env.mtu,
                ns = e.netns
            ),
        )?;
        ip(&hub, &format!("link set p{i} master br0 up"))?;
    }
    ip(&hub, "link set br0 up")?;
    address_endpoints(env)
}

fn build_macvlan(env: &mut Env, id: &str) -> Result<()> {
    let hub = format!("{id}-hub");
    add_netns(env, &hub)?;
    add_endpoint_namespaces(env)?;
    // The parent only anchors the macvlans: in bridge mode they switch among themselves
    // without it. Kernels built without CONFIG_DUMMY get an idle veth pair instead.
    if ip(&hub, &format!("link add d0 mtu {} type dummy", env.mtu)).is_err() {
        ip(
            &hub,
            &format!(
                "link add d0 mtu {mtu} type veth peer name d1 mtu {mtu}",
                mtu = env.mtu
            ),
        )?;
        ip(&hub, "link set d1 up")?;
    }
    ip(&hub, "link set d0 up")?;
    for (i, e) in env.endpoints.iter().enumerate() {
        ip(
            &hub,
            &format!(
                "link add m{i} link d0 mtu {} type macvlan mode bridge",
                env.mtu
            ),
        )?;
        ip(&hub, &format!("link set m{i} netns {} name eth0", e.netns))?;
    }
    address_endpoints(env)
}

impl Env {
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// The namespace that connects the endpoints, for the systems that have one (the bridge's
    /// `<id>-br`, macvlan's `<id>-hub`); iqd's fabric namespace is iqd's own.
    pub fn hub(&self) -> Option<&str> {
        self.namespaces
            .iter()
            .find(|n| !self.endpoints.iter().any(|e| &e.netns == *n))
            .map(String::as_str)
    }

    /// The endpoints' interface: a HiperSockets NIC for iqd, a plain `eth0` otherwise.
    pub fn interface(&self) -> &'static str {
        if self.kind.is_iqd() {
            "hsi0"
        } else {
            "eth0"
        }
    }

    /// Gives every endpoint a permanent neighbour entry for every other one, for IPv6 too when
    /// the endpoints have it. Permanent entries are exempt from the kernel's neighbour table
    /// limit, which all namespaces share.
    pub fn pin_neighbours(&self, work_dir: &std::path::Path) -> Result<()> {
        let ifname = self.interface();
        let mut macs = Vec::new();
        for e in &self.endpoints {
            let output = Cmd::new("ip")
                .args(["-n", &e.netns, "-j", "link", "show", "dev", ifname])
                .quiet()
                .output()?;
            let json: serde_json::Value = serde_json::from_slice(&output.stdout)
                .with_context(|| format!("no link {ifname} in {}", e.netns))?;
            let mac = json[0]["address"]
                .as_str()
                .with_context(|| format!("link {ifname} in {} has no address", e.netns))?
                .to_string();
            macs.push(mac);
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            let mut batch = String::new();
            for (j, other) in self.endpoints.iter().enumerate() {
                if i == j {
                    continue;
                }
                let _ = writeln!(
                    batch,
                    "neigh replace {} lladdr {} dev {ifname} nud permanent",
                    other.addr, macs[j]
                );
                if self.v6 {
                    let _ = writeln!(
                        batch,
                        "neigh replace {} lladdr {} dev {ifname} nud permanent",
                        other.addr6, macs[j]
                    );
                }
            }
            let file = work_dir.join(format!("{}.neigh", e.netns));
            std::fs::write(&file, batch)
                .with_context(|| format!("could not write {}", file.display()))?;
            let result = ip(&e.netns, &format!("-batch {}", file.display()));
            let _ = std::fs::remove_file(&file);
            result?;
        }
        Ok(())
    }

    /// The permanent neighbour entries (IPv4 and IPv6) in all endpoint namespaces.
    pub fn permanent_neighbours(&self) -> Result<usize> {
        let mut total = 0;
        for e in &self.endpoints {
            let output = Cmd::new("ip")
                .args(["-n", &e.netns, "-j", "neigh", "show", "nud", "permanent"])
                .quiet()
                .output()?;
            if !output.status.success() {
                bail!(
                    "`ip -n {} -j neigh show nud permanent` failed: {}",
                    e.netns,
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
            total += count_permanent(&String::from_utf8_lossy(&output.stdout))
                .with_context(|| format!("neighbour table of {}", e.netns))?;
        }
        Ok(total)
    }

    /// For iqd: the fabric file the system was brought up with.
    pub fn config(&self) -> Option<&std::path::Path> {
        self.iqd.as_ref().map(|(_, config)| config.as_path())
    }

    /// For iqd: the binary that built the system.
    pub fn iqd_binary(&self) -> Option<&std::path::Path> {
        self.iqd.as_ref().map(|(iqd, _)| iqd.as_path())
    }

    /// Starts `program ARGS` in endpoint `i`'s namespace, stopped when the environment drops.
    pub fn spawn(&mut self, i: usize, args: &[&str]) -> Result<()> {
        let child = Cmd::new("ip")
            .args(["netns", "exec", &self.endpoints[i].netns])
            .args(args)
            .quiet()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.children.push(child);
        Ok(())
    }

    /// A command run inside endpoint `i`'s namespace.
    pub fn exec(&self, i: usize, program: &str) -> Cmd {
        Cmd::new("ip")
            .args(["netns", "exec", &self.endpoints[i].netns, program])
            .quiet()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for child in &mut self.children {
            // Our own children: `ip netns exec` execs the server, so the pid is the server's.
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some((iqd, config)) = &self.iqd {
            let _ = Cmd::new(iqd)
                .arg("down")
                .arg("--config")
                .arg(config)
                .quiet()
                .output();
            let _ = std::fs::remove_file(config);
        }
        for name in self.namespaces.iter().rev() {
            let _ = Cmd::new("ip").args(["netns", "del", name]).quiet().output();
        }
    }
}

/// The PERMANENT entries in `ip -j neigh show` output (whatever the filter asked for, only
/// the entries whose state says PERMANENT count). Empty output is an empty table.
pub fn count_permanent(json: &str) -> Result<usize> {
    if json.trim().is_empty() {
        return Ok(0);
    }
    let entries: serde_json::Value =
        serde_json::from_str(json).context("`ip -j neigh` printed no JSON")?;
    let entries = entries
        .as_array()
        .context("`ip -j neigh` printed no JSON array")?;
    Ok(entries
        .iter()
        .filter(|e| {
            e["state"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s == "PERMANENT"))
        })
        .count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_neighbours_are_counted_from_ip_json() {
        let json = r#"[{"dst":"10.0.0.2","dev":"hsi0","lladdr":"02:00:00:00:00:02","state":["PERMANENT"]},
            {"dst":"fd00:f0::2","dev":"hsi0","lladdr":"02:00:00:00:00:02","state":["PERMANENT"]},
            {"dst":"10.0.0.3","dev":"hsi0","state":["NOARP"]},
            {"dst":"10.0.0.4","dev":"hsi0","state":["REACHABLE"]}]"#;
        assert_eq!(count_permanent(json).unwrap(), 2);
        assert_eq!(count_permanent("").unwrap(), 0);
        assert_eq!(count_permanent("[]\n").unwrap(), 0);
        assert!(count_permanent("not json").is_err());
    }

    #[test]
    fn families_and_ipv6_addresses() {
        assert_eq!(endpoint_addr6(0).to_string(), "fd00:f0::1");
        assert_eq!(endpoint_addr6(84).to_string(), "fd00:f0::55");
        assert_eq!(endpoint_addr6(250).to_string(), "fd00:f0::fb");
        assert_eq!(Family::parse(6), Some(Family::V6));
        assert_eq!(Family::parse(5), None);
        assert_eq!(Family::V4.suffix(), "");
        assert_eq!(Family::V6.suffix(), "_v6");
        let e = Endpoint {
            netns: "n".into(),
            addr: endpoint_addr(1),
            addr6: endpoint_addr6(1),
        };
        assert_eq!(e.ip(Family::V6).to_string(), "fd00:f0::2");
        assert_eq!(e.ip(Family::V4).to_string(), "10.0.0.2");
    }

    #[test]
    fn each_mtu_gets_the_smallest_chpid_that_carries_it() {
        assert_eq!(mfs_for(1500).unwrap(), "16K");
        assert_eq!(mfs_for(8192).unwrap(), "16K");
        assert_eq!(mfs_for(9000).unwrap(), "24K");
        assert_eq!(mfs_for(57344).unwrap(), "64K");
        assert!(mfs_for(60000).is_err());
        assert_eq!(chpid_mtu(mfs_for(57344).unwrap()), 57344);
    }

    #[test]
    fn systems_are_named_and_parsed() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.name()), Some(kind));
        }
        assert_eq!(Kind::parse("ovs"), None);
        assert_eq!(endpoint_addr(0), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(endpoint_addr(63), Ipv4Addr::new(10, 0, 0, 64));
    }

    /// README.md's table of the benchmark's systems lists exactly these.
    #[test]
    fn the_readme_lists_every_system() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).expect("README.md");
        let table: Vec<&str> = readme
            .lines()
            .skip_while(|l| !l.starts_with("| System | What it is |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .collect();
        assert!(
            !table.is_empty(),
            "README.md: no `| System | What it is |` table"
        );
        let mut listed: Vec<&str> = table
            .iter()
            .flat_map(|row| {
                row.split('|')
                    .nth(1)
                    .unwrap_or("")
                    .split('`')
                    .skip(1)
                    .step_by(2)
            })
            .collect();
        listed.sort_unstable();
        let mut systems: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        systems.sort_unstable();
        assert_eq!(listed, systems, "README.md's systems table vs Kind::ALL");
    }

    #[test]
    fn the_fabric_file_gives_every_lpar_its_endpoint_address() {
        let names: Vec<String> = (0..251).map(|i| format!("n{i}")).collect();
        let netns: Vec<&str> = names.iter().map(String::as_str).collect();
        let toml = secgroups::fabric_file("f", "16K", "xdp", &netns, None);
        for i in [0, 1, 249, 250] {
            let nic = format!(
                "netns = \"n{i}\"\n\n[[lpar.nic]]\nchpid = \"F0\"\nipv4 = [\"{}/24\"]",
                endpoint_addr(i)
            );
            assert!(toml.contains(&nic), "LPAR {i}");
        }
        // With IPv6, each NIC gets the address the benchmark's measurements go to.
        let toml = secgroups::fabric_file_with("f", "16K", "tc", &netns, None, true);
        for i in [0, 1, 84, 249, 250] {
            let nic = format!(
                "ipv4 = [\"{}/24\"]\nipv6 = [\"{}/64\"]\n",
                endpoint_addr(i),
                endpoint_addr6(i)
            );
            assert!(toml.contains(&nic), "LPAR {i}");
        }
        let sg = Kind::parse("iqd-sg50").unwrap();
        assert_eq!(sg.secgroup_rules(), Some(50));
        assert!(sg.is_iqd() && sg.max_endpoints() == 2);
        // The security-group systems measure the default data path, as `iqd-tc` does.
        assert_eq!(sg.datapath(), Kind::IqdTc.datapath());
        assert_eq!(Kind::parse("bridge-nft250"), Some(Kind::BridgeNft(250)));
        assert!(!Kind::BridgeNft(0).is_iqd());
        // iqd-vlan: the tc path with every NIC in the VLAN, measured on request.
        let vlan = Kind::parse("iqd-vlan").unwrap();
        assert_eq!(vlan.datapath(), Some("tc"));
        assert!(vlan.on_request());
        let tagged = in_vlan(&toml, BENCH_VLAN);
        assert_eq!(tagged.matches("vlan = 100\n").count(), netns.len());
        assert_eq!(
            tagged
                .matches("[[lpar.nic]]\nchpid = \"F0\"\nvlan = 100\nipv4 = ")
                .count(),
            netns.len()
        );
    }
}
