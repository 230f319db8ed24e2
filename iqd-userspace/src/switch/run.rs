//! The switch process (`iqd switch`, started by `iqd up`): gives each port a slot, binds the
//! sockets, registers them for `iqd_xsk`, runs the ring thread, and on the control side (tokio)
//! handles signals and keeps its report current.
use std::{
    collections::{HashMap, HashSet},
    os::fd::RawFd,
    sync::{atomic::Ordering, Arc},
    thread::JoinHandle,
    time::Duration,
};

use iqd_common::{drop_reason, MAX_PORTS, XSK_MAX_QUEUES};
use tokio::signal::unix::{signal, SignalKind};

use super::{
    counters::SwitchCounters,
    engine::{Endpoint, Engine, Shared},
    process::{self, Report},
    xsk::{RingSizes, Socket, Umem},
};
use crate::{
    config::{Datapath, Fabric},
    dataplane::{self, FabricMaps},
    error::{Error, Result},
    ethtool,
    netns::NetnsGuard,
    state::State,
};

/// UMEM chunk: one page, the largest the kernel takes in aligned mode. Larger frames span
/// several chunks (multi-buffer).
pub const CHUNK_SIZE: u32 = 4096;
/// UMEM frames per socket, by the number of sockets: the UMEM is pinned memory (16 MiB per
/// socket for up to 4 sockets, 8 MiB up to 16, 4 MiB beyond). A 56K frame takes 15 frames.
pub fn frames_per_socket(sockets: u32) -> u32 {
    match sockets {
        0..=4 => 4096,
        5..=16 => 2048,
        _ => 1024,
    }
}

/// The rings of a socket with `frames` UMEM frames. Half of them fill its fill ring (with 4096,
/// a burst of over 130 56K frames while the switch waits for a core; what does not fit, the
/// kernel drops as `target_busy`); a quarter at most wait in its TX ring (a destination that takes nothing can
/// hold no more); the rest stay free for the frames in flight. So no port, however stuck, can
/// starve the others of frames to receive into.
pub fn ring_sizes(frames: u32) -> RingSizes {
    RingSizes {
        fill: frames / 2,
        completion: frames / 2,
        rx: frames / 2,
        tx: frames / 4,
    }
}

/// How often the control task rewrites the report (and counts the kernel's drops).
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// A port the switch serves.
struct Port {
    name: String,
    ifindex: u32,
    queues: u32,
    /// Where its sockets and counters are (`IQD_XSK_SLOTS`).
    slot: u32,
}

/// Runs the switch of `fabric` until SIGTERM or SIGINT.
pub async fn run(fabric: &Fabric) -> Result<()> {
    let fail = |message: String| Error::Switch {
        fabric: fabric.name.clone(),
        message,
    };
    if fabric.datapath != Datapath::Afxdp {
        return Err(fail(format!(
            "the fabric's data path is {}; the switch serves afxdp fabrics only",
            fabric.datapath
        )));
    }
    let state = State::load(&fabric.name)?
        .ok_or_else(|| fail("the fabric is not up (no state file)".to_string()))?;
    process::write_pid_file(&fabric.name)?;
    let mut report = Report {
        pid: std::process::id(),
        state: "starting".to_string(),
        started_unix_ms: process::unix_ms(),
        ports: state.nics.iter().map(|n| n.port.clone()).collect(),
        ..Report::default()
    };
    process::write_report(&fabric.name, &report)?;
    let result = serve(fabric, &state, &mut report).await;
    report.updated_unix_ms = process::unix_ms();
    match &result {
        Ok(()) => report.state = "stopped".to_string(),
        Err(e) => {
            report.state = "failed".to_string();
            report.error = Some(e.to_string());
        }
    }
    process::write_report(&fabric.name, &report)?;
    if process::running_pid(&fabric.name) == Some(std::process::id()) {
        let _ = std::fs::remove_file(process::pid_file(&fabric.name));
    }
    result
}

async fn serve(fabric: &Fabric, state: &State, report: &mut Report) -> Result<()> {
    // The whole process works in the fabric namespace: the ports' ifindexes resolve there,
    // and the sockets bind there. Threads started from here on inherit it.
    let _netns = NetnsGuard::enter(&fabric.netns_name())?;
    let pin_dir = dataplane::pin_dir(&fabric.name);
    let mut maps = FabricMaps::open(&fabric.name, &pin_dir)?;
    let counters = SwitchCounters::open(&pin_dir).map_err(|e| {
        Error::io(
            "map",
            pin_dir.join(iqd_common::map_names::SWITCH_COUNTERS),
            e,
        )
    })?;
    let ports = ports(fabric, state, &mut maps, &counters)?;

    let sockets: u32 = ports.iter().map(|p| p.queues).sum();
    let per_socket = frames_per_socket(sockets);
    let rings = ring_sizes(per_socket);
    let umem = Umem::new(sockets.max(1) * per_socket, CHUNK_SIZE)
        .map_err(|e| Error::io("map the UMEM", "anonymous memory", e))?;
    report.umem_frames = umem.frames();
    report.umem_bytes = umem.frames() as u64 * umem.chunk_size() as u64;

    let mut endpoints: Vec<Endpoint> = Vec::new();
    // XSKMAP index and socket of each endpoint, registered once the rings are ready.
    let mut registrations: Vec<(u32, RawFd)> = Vec::new();
    for (index, port) in ports.iter().enumerate() {
        for queue in 0..port.queues {
            let first = endpoints.first().map(|e| &e.socket);
            // A switch that was just stopped may still hold the queue: the kernel releases an
            // AF_XDP socket after its last descriptor closes, not at once (EBUSY until then).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            let socket = loop {
                match Socket::bind(&umem, first, port.ifindex, queue, rings) {
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY)
                            && std::time::Instant::now() < deadline =>
                    {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                    result => {
                        break result.map_err(|source| Error::Xsk {
                            port: port.name.clone(),
                            queue,
                            source,
                        })?
                    }
                }
            };
            registrations.push((port.slot * XSK_MAX_QUEUES + queue, socket.fd()));
            endpoints.push(Endpoint {
                socket,
                port: index,
                queue,
                port_name: port.name.clone(),
            });
        }
    }
    let shared = Arc::new(Shared::new(counters).map_err(|e| Error::io("create", "an eventfd", e))?);
    let ids: Vec<(u32, u32)> = ports.iter().map(|p| (p.ifindex, p.slot)).collect();
    // Fills the fill rings before any frame can be sent here.
    let engine = Engine::new(umem, endpoints, &ids, rings.fill, shared.clone());
    for (index, fd) in &registrations {
        maps.set_xsk(*index, *fd)?;
    }
    let ring = std::thread::Builder::new()
        .name("iqd-rings".to_string())
        .spawn(move || engine.run())
        .map_err(|e| Error::io("start", "the ring thread", e))?;

    report.state = "running".to_string();
    let mut control = Control {
        fabric: &fabric.name,
        ports: &ports,
        shared: &shared,
        kernel_busy: vec![0; ports.len()],
    };
    control.update(report);
    process::write_report(&fabric.name, report)?;

    let result = control.run(&ring, report).await;

    // Hand over to the kernel path: unregistered sockets get no new frames, and the ring
    // thread sends on what it still holds before the sockets close.
    for (index, _) in &registrations {
        let _ = maps.unset_xsk(*index);
    }
    shared.stop();
    if ring.join().is_err() {
        return Err(Error::Switch {
            fabric: fabric.name.clone(),
            message: "the ring thread panicked".to_string(),
        });
    }
    control.count_kernel_drops();
    control.update(report);
    result
}

/// The ports of the state file, with their slots: a port keeps the slot it had (and with it
/// its counters) across restarts of the switch; a new port gets the lowest free slot, its
/// counters zeroed. Slots of ports that are gone are given up.
fn ports(
    fabric: &Fabric,
    state: &State,
    maps: &mut FabricMaps,
    counters: &SwitchCounters,
) -> Result<Vec<Port>> {
    let mut found = Vec::new();
    for nic in &state.nics {
        let ifindex =
            nix::net::if_::if_nametoindex(nic.port.as_str()).map_err(|_| Error::NoSuchLink {
                netns: fabric.netns_name(),
                ifname: nic.port.clone(),
            })?;
        // One socket per rx queue: a frame is only handed to the socket of the queue it came
        // in on. A veth has one unless created with more.
        let queues = ethtool::rx_queues(&nic.port)
            .unwrap_or(1)
            .clamp(1, XSK_MAX_QUEUES);
        found.push((nic.port.clone(), ifindex, queues));
    }
    let mut slots: HashMap<u32, u32> = HashMap::new();
    for (ifindex, slot) in maps.xsk_slots() {
        if slot < MAX_PORTS && found.iter().any(|(_, i, _)| *i == ifindex) {
            slots.insert(ifindex, slot);
        } else {
            maps.remove_xsk_slot(ifindex)?;
        }
    }
    let mut used: HashSet<u32> = slots.values().copied().collect();
    let mut next = 0;
    let mut ports = Vec::new();
    for (name, ifindex, queues) in found {
        let slot = match slots.get(&ifindex) {
            Some(slot) => *slot,
            None => {
                while used.contains(&next) {
                    next += 1;
                }
                used.insert(next);
                counters.zero(next);
                maps.set_xsk_slot(ifindex, next)?;
                next
            }
        };
        ports.push(Port {
            name,
            ifindex,
            queues,
            slot,
        });
    }
    Ok(ports)
}

struct Control<'a> {
    fabric: &'a str,
    ports: &'a [Port],
    shared: &'a Arc<Shared>,
    /// Per port, the kernel's drops of frames for the switch counted so far.
    kernel_busy: Vec<u64>,
}

impl Control<'_> {
    async fn run(&mut self, ring: &JoinHandle<()>, report: &mut Report) -> Result<()> {
        let signal_err = |e| Error::io("install", "a signal handler", e);
        let mut term = signal(SignalKind::terminate()).map_err(signal_err)?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_err)?;
        let mut tick = tokio::time::interval(REPORT_EVERY);
        loop {
            tokio::select! {
                _ = term.recv() => return Ok(()),
                _ = interrupt.recv() => return Ok(()),
                _ = tick.tick() => {
                    if ring.is_finished() {
                        return Err(Error::Switch {
                            fabric: self.fabric.to_string(),
                            message: "the ring thread ended".to_string(),
                        });
                    }
                    self.count_kernel_drops();
                    self.update(report);
                    process::write_report(self.fabric, report)?;
                }
            }
        }
    }

    /// Frames the kernel dropped on their way to the switch (its RX ring or fill ring of the
    /// sender's port was full) count as `target_busy` on the sender, like the switch's own.
    fn count_kernel_drops(&mut self) {
        let snapshot = self.shared.snapshot();
        for (p, port) in self.ports.iter().enumerate() {
            let now: u64 = snapshot
                .sockets
                .iter()
                .filter(|s| s.port == port.name)
                .map(|s| s.kernel.rx_dropped + s.kernel.rx_ring_full)
                .sum();
            let new = now.saturating_sub(self.kernel_busy[p]);
            if new > 0 {
                self.shared
                    .counters
                    .dropped(port.slot, drop_reason::TARGET_BUSY, new);
                self.shared.busy.fetch_add(new, Ordering::Relaxed);
                self.kernel_busy[p] = now;
            }
        }
    }

    fn update(&self, report: &mut Report) {
        report.updated_unix_ms = process::unix_ms();
        report.frames_moved = self.shared.frames_moved.load(Ordering::Relaxed);
        report.bytes_moved = self.shared.bytes_moved.load(Ordering::Relaxed);
        report.target_busy = self.shared.busy.load(Ordering::Relaxed);
        report.ledger = self.shared.snapshot();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuck_tx_rings_and_full_fill_rings_leave_frames_free() {
        for sockets in [1, 2, 4, 5, 16, 17, 64, 4096] {
            let frames = frames_per_socket(sockets);
            let rings = ring_sizes(frames);
            for size in [rings.fill, rings.completion, rings.rx, rings.tx] {
                assert!(size.is_power_of_two(), "{size}");
            }
            // Every fill ring full and every TX ring full still leaves a quarter free.
            assert!(rings.fill + rings.tx <= frames * 3 / 4);
            // The completion ring takes all a TX ring sends.
            assert!(rings.completion >= rings.tx);
            // The largest frame (18 chunks) fits a TX ring many times.
            assert!(rings.tx >= 18 * 8);
            let umem = u64::from(sockets * frames) * u64::from(CHUNK_SIZE);
            assert!(
                umem <= 256 << 20 || frames == 1024,
                "{sockets} sockets: {umem} bytes"
            );
        }
    }
}
