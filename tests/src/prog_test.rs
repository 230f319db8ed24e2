//! A bench for feeding a port program frames through BPF_PROG_TEST_RUN: the real eBPF object
//! loaded with its maps pinned under a fabric name of its own, and veth pairs in a namespace of
//! its own standing for the fabric-side ports of NICs. The program is `iqd_port` (XDP, data path
//! `xdp`), `iqd_tc` (tc, data path `tc`) or `iqd_xsk` (XDP, data path `afxdp`): the same
//! decisions, so the same tests hold for all. With no AF_XDP switch socket in its maps, `iqd_xsk`
//! delivers in the kernel exactly as `iqd_port` does.
//!
//! The kernel resolves the ingress ifindex given to a test run (and the DEVMAP entries) in the
//! calling thread's namespace, so the bench enters its namespace for as long as it lives: use it
//! from the thread that made it. Dropping it leaves the namespace and removes the pins and the
//! namespace, whatever happened before.
use std::{
    ffi::CString,
    fs, io,
    path::PathBuf,
    process::Command,
    sync::{Mutex, MutexGuard},
};

use aya::{programs::ProgramError, TestRun, TestRunAttrs, TestRunOptions};
use iqd::{
    dataplane::{self, DataPlane, FabricMaps, Side},
    netns::{self, NetnsGuard},
};
use iqd_common::NicCounters;

use crate::{frames::Mac, require_root, unique};

// Verdicts (enum xdp_action).
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

// Verdicts of a tc program (TC_ACT_*).
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;
pub const TC_ACT_STOLEN: u32 = 4;

/// Which port program a bench runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `iqd_port`, the XDP program.
    Xdp,
    /// `iqd_tc`, the tc ingress program.
    Tc,
    /// `iqd_xsk`, the XDP program of data path `afxdp`.
    Xsk,
}

impl Hook {
    pub const ALL: [Hook; 3] = [Hook::Xdp, Hook::Tc, Hook::Xsk];
}

/// The name of an XDP verdict.
pub fn action_name(action: u32) -> &'static str {
    match action {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        XDP_REDIRECT => "XDP_REDIRECT",
        _ => "unknown verdict",
    }
}

/// Serialises creating a pin directory with removing the (then empty) common pin root, which
/// would otherwise race between parallel tests.
static PIN_ROOT_LOCK: Mutex<()> = Mutex::new(());

fn pin_root_lock() -> MutexGuard<'static, ()> {
    PIN_ROOT_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes what a bench created, on drop: its pin directory (maps) and its namespace (veths).
struct Cleanup {
    netns: String,
    pin_dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        {
            let _lock = pin_root_lock();
            match fs::remove_dir_all(&self.pin_dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => eprintln!("cleanup: remove {}: {e}", self.pin_dir.display()),
            }
            // Only succeeds when no fabric (and no other bench) has pins left.
            let _ = fs::remove_dir(dataplane::PIN_ROOT);
        }
        if let Err(e) = netns::delete(&self.netns) {
            eprintln!("cleanup: delete namespace {}: {e}", self.netns);
        }
    }
}

/// What one test run returned: the verdict and the frame as the program left it.
#[derive(Debug)]
pub struct Run {
    pub action: u32,
    pub frame: Vec<u8>,
}

/// Runs `ip ARGS`, which must succeed.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The ifindex of interface `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> u32 {
    let c_name = CString::new(name).expect("interface name");
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    assert_ne!(index, 0, "no interface {name} in the bench namespace");
    index
}

/// A `struct xdp_md` for a test run: the whole frame, arriving on `ingress_ifindex`, queue 0.
fn xdp_md(len: usize, ingress_ifindex: u32) -> Vec<u8> {
    // data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
    [0, len as u32, 0, ingress_ifindex, 0, 0]
        .iter()
        .flat_map(|v: &u32| v.to_ne_bytes())
        .collect()
}

/// A `struct __sk_buff` for a test run: the skb's device and ingress device are the port
/// `ifindex`; `gso_size` and `gso_segs` make it a GSO packet. Every other field stays zero, as
/// the kernel requires.
fn sk_buff(ifindex: u32, gso_size: u32, gso_segs: u32) -> Vec<u8> {
    // Offsets in struct __sk_buff (include/uapi/linux/bpf.h); 192 bytes in all.
    const INGRESS_IFINDEX: usize = 36;
    const IFINDEX: usize = 40;
    const GSO_SEGS: usize = 164;
    const GSO_SIZE: usize = 176;
    let mut ctx = vec![0u8; 192];
    for (at, value) in [
        (INGRESS_IFINDEX, ifindex),
        (IFINDEX, ifindex),
        (GSO_SEGS, gso_segs),
        (GSO_SIZE, gso_size),
    ] {
        ctx[at..at + 4].copy_from_slice(&value.to_ne_bytes());
    }
    ctx
}

/// The loaded programs, their maps and the veths, inside the bench's namespace. The maps start
/// empty: the test describes ports, routes and rules itself.
pub struct ProgBench {
    // Fields drop in order: leave the namespace, close programs and maps, then remove them.
    _netns: NetnsGuard,
    pub plane: DataPlane,
    pub maps: FabricMaps,
    /// The program [`ProgBench::run`] feeds.
    pub hook: Hook,
    cleanup: Cleanup,
}

impl ProgBench {
    /// A fresh namespace with one veth pair per `(name, mac)`: `name` is the fabric-side port,
    /// `{name}n` its peer (the NIC side) with that MAC. Names must be short (at most 14
    /// characters).
    pub fn new(veths: &[(&str, Mac)]) -> Self {
        Self::with_hook(veths, Hook::Xdp)
    }

    /// Like [`ProgBench::new`], running the program of `hook`.
    pub fn with_hook(veths: &[(&str, Mac)], hook: Hook) -> Self {
        require_root();
        let fabric = unique("pt");
        let netns_name = format!("iqd-{fabric}");
        let pin_dir = dataplane::pin_dir(&fabric);
        assert!(!pin_dir.exists(), "{} exists already", pin_dir.display());
        assert!(
            netns::create(&netns_name).expect("create namespace"),
            "namespace {netns_name} exists already"
        );
        // From here on everything is ours to remove, whatever fails next.
        let cleanup = Cleanup {
            netns: netns_name.clone(),
            pin_dir: pin_dir.clone(),
        };
        for (name, mac) in veths {
            let peer = format!("{name}n");
            let mac = mac
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            ip(&[
                "-n",
                &netns_name,
                "link",
                "add",
                "name",
                name,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
                "address",
                &mac,
            ]);
        }

        let guard = NetnsGuard::enter(&netns_name).expect("enter namespace");
        {
            let _lock = pin_root_lock();
            // A fresh machine may not have bpffs mounted yet.
            dataplane::ensure_bpffs().expect("mount bpffs");
            fs::create_dir_all(&pin_dir).expect("create pin directory");
        }
        let plane = DataPlane::load(&pin_dir).expect("load the eBPF programs");
        let maps = FabricMaps::open(&fabric, &pin_dir).expect("open the pinned maps");
        Self {
            _netns: guard,
            plane,
            maps,
            hook,
            cleanup,
        }
    }

    /// The bench's network namespace.
    pub fn netns(&self) -> &str {
        &self.cleanup.netns
    }

    /// Runs the port program once on `frame` as if it arrived on the port `ingress`. A tc
    /// verdict is reported as the XDP verdict with the same effect: TC_ACT_SHOT as XDP_DROP,
    /// TC_ACT_REDIRECT as XDP_TX when it went back to the sender (its rx counter moved) and as
    /// XDP_REDIRECT otherwise; anything else as itself plus 1000, which no test expects.
    pub fn try_run(&mut self, ingress: u32, frame: &[u8]) -> io::Result<Run> {
        match self.hook {
            Hook::Xdp => self.try_run_xdp(Side::Port, ingress, frame),
            Hook::Tc => self.try_run_tc(ingress, frame, 0, 0),
            Hook::Xsk => self.try_run_xdp(Side::PortXsk, ingress, frame),
        }
    }

    /// Runs `iqd_tc` once on `frame` from port `ingress`, as a GSO packet of `gso_segs`
    /// segments of `gso_size` payload bytes when `gso_size` is not 0.
    pub fn try_run_tc(
        &mut self,
        ingress: u32,
        frame: &[u8],
        gso_size: u32,
        gso_segs: u32,
    ) -> io::Result<Run> {
        let ctx = sk_buff(ingress, gso_size, gso_segs);
        let mut out = vec![0u8; frame.len() + 4096];
        let rx_before = self.counters(ingress).rx_packets;
        let program = self.plane.tc_program(Side::PortTc).expect("tc program");
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::new()
        };
        let result = match program.test_run(opts) {
            Ok(result) => result,
            Err(ProgramError::SyscallError(e)) => return Err(e.io_error),
            Err(e) => panic!("test run failed: {e}"),
        };
        out.truncate(result.data_size_out as usize);
        let action = match result.return_value {
            TC_ACT_SHOT => XDP_DROP,
            TC_ACT_REDIRECT if self.counters(ingress).rx_packets != rx_before => XDP_TX,
            TC_ACT_REDIRECT => XDP_REDIRECT,
            other => other + 1000,
        };
        Ok(Run { action, frame: out })
    }

    /// Runs an XDP port program (`Side::Port` or `Side::PortXsk`) once. The frame it returns
    /// starts with the XDP metadata the program left, if any.
    pub fn try_run_xdp(&mut self, side: Side, ingress: u32, frame: &[u8]) -> io::Result<Run> {
        let ctx = xdp_md(frame.len(), ingress);
        let mut out = vec![0u8; frame.len() + 4096];
        let program = self.plane.program(side).expect("port program");
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::new()
        };
        match program.test_run(opts) {
            Ok(result) => {
                out.truncate(result.data_size_out as usize);
                Ok(Run {
                    action: result.return_value,
                    frame: out,
                })
            }
            Err(ProgramError::SyscallError(e)) => Err(e.io_error),
            Err(e) => panic!("test run failed: {e}"),
        }
    }

    /// Like [`ProgBench::try_run`], for frames the kernel accepts.
    pub fn run(&mut self, ingress: u32, frame: &[u8]) -> Run {
        self.try_run(ingress, frame).unwrap_or_else(|e| {
            panic!(
                "BPF_PROG_TEST_RUN of the {:?} program failed: {e}; frame of {} bytes: {:02x?}",
                self.hook,
                frame.len(),
                &frame[..frame.len().min(64)]
            )
        })
    }

    /// Runs the port program once on `frame` from port `ingress` in live-frames mode: the
    /// kernel carries out the verdict (XDP_REDIRECT through the DEVMAP, XDP_TX back out of the
    /// port), so the frame really reaches the NIC side of a veth. The kernel does not report the
    /// verdict in this mode.
    pub fn run_live(&mut self, ingress: u32, frame: &[u8]) {
        let ctx = xdp_md(frame.len(), ingress);
        let program = self.plane.program(Side::Port).expect("port program");
        let opts = TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            attrs: TestRunAttrs::new().xdp_live_frames(1),
            ..TestRunOptions::new()
        };
        if let Err(e) = program.test_run(opts) {
            panic!("live BPF_PROG_TEST_RUN failed: {e}");
        }
    }

    /// The program of the bench's hook run `repeat` times on `frame` from port `ingress` in one
    /// BPF_PROG_TEST_RUN: its verdict and the kernel's average run time per frame (of the
    /// program alone, as `kernel.bpf_stats_enabled` measures it). A cost, not a throughput.
    pub fn time_run(
        &mut self,
        ingress: u32,
        frame: &[u8],
        repeat: u32,
    ) -> (u32, std::time::Duration) {
        let mut out = vec![0u8; frame.len() + 4096];
        let ctx = match self.hook {
            Hook::Tc => sk_buff(ingress, 0, 0),
            _ => xdp_md(frame.len(), ingress),
        };
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat,
            ..TestRunOptions::new()
        };
        let result = match self.hook {
            Hook::Tc => self
                .plane
                .tc_program(Side::PortTc)
                .expect("tc program")
                .test_run(opts),
            Hook::Xdp => self
                .plane
                .program(Side::Port)
                .expect("port program")
                .test_run(opts),
            Hook::Xsk => self
                .plane
                .program(Side::PortXsk)
                .expect("xsk program")
                .test_run(opts),
        }
        .expect("timed test run");
        (result.return_value, result.duration)
    }

    /// A port's counters, summed over CPUs.
    pub fn counters(&self, ifindex: u32) -> NicCounters {
        self.maps.counters(ifindex).expect("read counters")
    }
}
