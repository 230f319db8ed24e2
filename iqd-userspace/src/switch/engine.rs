//! The ring thread: moves every received frame to its destination's TX ring by descriptor,
//! gives completed frames back to the fill rings, and keeps the ledger.
//!
//! One thread owns every socket, the UMEM and the ledger, so no ring ever has two producers or
//! two consumers and the ledger needs no lock. It counts per port straight into the fabric's
//! counter map (shared memory), and publishes totals through atomics and a periodic snapshot
//! of the ledger and the kernel's socket statistics.
use std::{
    collections::HashMap,
    io, mem,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use iqd_common::{drop_reason, XSK_META_LEN};
use serde::{Deserialize, Serialize};

use super::{
    counters::SwitchCounters,
    frames::{Counts, Ledger},
    xsk::{Desc, Socket, SocketStats, Umem, PKT_CONTD},
};

/// Descriptors one frame may take: the largest frame a port takes (65535 + 14 bytes) in
/// chunks of 4096 bytes less the kernel's 256 bytes of headroom.
const MAX_DESCS: usize = 18;
/// Descriptors taken from one RX ring per pass, so one busy port cannot starve the others.
const RX_BATCH: u32 = 256;
/// Sends asked of the kernel per TX ring per pass (each sends up to 32 descriptors).
const KICKS: usize = 8;
/// How often the ledger and socket statistics are published.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(100);
/// How long a stopping switch waits for its last frames to be sent and completed.
const DRAIN_FOR: Duration = Duration::from_secs(1);

/// One socket as the snapshot shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SocketReport {
    pub port: String,
    pub queue: u32,
    /// The kernel's counters for the socket.
    pub kernel: SocketStats,
    /// Entries now in its fill ring, RX ring and TX ring.
    pub fill_ring: u32,
    pub rx_ring: u32,
    pub tx_ring: u32,
    /// Its last error, if any (a port deleted under the switch, for one).
    pub error: Option<String>,
}

/// The ledger and the sockets, as of the last snapshot.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Snapshot {
    pub counts: Counts,
    /// Frames in the fill rings themselves; the rest of `counts.fill` the kernel has taken
    /// from them and holds for the next frames it receives.
    pub in_fill_rings: u32,
    pub violations: u64,
    /// `ok`, or what a full recount of the ledger found wrong.
    pub audit: String,
    pub sockets: Vec<SocketReport>,
}

/// What the ring thread and the control task share.
pub struct Shared {
    stop: AtomicBool,
    /// An eventfd that wakes the ring thread from `poll` when it must stop.
    wake: OwnedFd,
    /// Since the switch started: frames (and bytes) moved, and frames dropped as
    /// `target_busy` (by the switch, or by the kernel for want of room in the switch's rings).
    pub frames_moved: AtomicU64,
    pub bytes_moved: AtomicU64,
    pub busy: AtomicU64,
    /// Per port, by slot; the same memory as the fabric's `IQD_SWITCH_COUNTERS`.
    pub counters: SwitchCounters,
    pub snapshot: Mutex<Snapshot>,
}

impl Shared {
    pub fn new(counters: SwitchCounters) -> io::Result<Self> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            stop: AtomicBool::new(false),
            // SAFETY: a fresh descriptor that nothing else owns.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
            frames_moved: AtomicU64::new(0),
            bytes_moved: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            counters,
            snapshot: Mutex::new(Snapshot::default()),
        })
    }

    /// Tells the ring thread to finish: send what it holds, then return.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let one: u64 = 1;
        // SAFETY: writes eight bytes from a live u64 to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    pub fn snapshot(&self) -> Snapshot {
        self.snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A socket and what the engine knows about it.
pub struct Endpoint {
    pub socket: Socket,
    /// Index of its port.
    pub port: usize,
    pub queue: u32,
    pub port_name: String,
}

pub struct Engine {
    // Sockets before the UMEM: they must close before it is unmapped.
    endpoints: Vec<Endpoint>,
    umem: Umem,
    ledger: Ledger,
    /// Port ifindex to the socket that transmits for it (its queue 0).
    tx_socket: HashMap<u32, usize>,
    /// Each port's slot (its counters), by port index.
    slots: Vec<u32>,
    /// Descriptors of a frame still being received, per socket.
    partial: Vec<Vec<Desc>>,
    tx_pending: Vec<bool>,
    errors: Vec<Option<String>>,
    /// Frames the switch keeps in each socket's fill ring, ready for the kernel to receive
    /// into.
    fill_target: u32,
    shared: Arc<Shared>,
}

impl Engine {
    /// `ports` lists every port's ifindex and slot by port index; `endpoints` hold each port's
    /// sockets. Each fill ring is kept at `fill_target` frames while free frames last.
    pub fn new(
        umem: Umem,
        endpoints: Vec<Endpoint>,
        ports: &[(u32, u32)],
        fill_target: u32,
        shared: Arc<Shared>,
    ) -> Self {
        let mut tx_socket = HashMap::new();
        for (i, endpoint) in endpoints.iter().enumerate() {
            if endpoint.queue == 0 {
                tx_socket.insert(ports[endpoint.port].0, i);
            }
        }
        let n = endpoints.len();
        let mut engine = Self {
            ledger: Ledger::new(umem.frames()),
            umem,
            endpoints,
            tx_socket,
            slots: ports.iter().map(|(_, slot)| *slot).collect(),
            partial: (0..n).map(|_| Vec::with_capacity(MAX_DESCS)).collect(),
            tx_pending: vec![false; n],
            errors: vec![None; n],
            fill_target,
            shared,
        };
        // Fill rings full before any socket is in the XSKMAP: the first frames have room.
        for s in 0..n {
            engine.refill(s);
        }
        engine.publish();
        engine
    }

    /// Runs until told to stop, then sends what it holds and returns.
    pub fn run(mut self) {
        let mut last_snapshot = Instant::now();
        let mut drain_until: Option<Instant> = None;
        loop {
            if drain_until.is_none() && self.shared.stop.load(Ordering::Acquire) {
                drain_until = Some(Instant::now() + DRAIN_FOR);
            }
            let mut work = 0;
            for s in 0..self.endpoints.len() {
                work += self.reclaim(s);
                // A stopping switch takes no new frames from the kernel.
                if drain_until.is_none() {
                    work += self.refill(s);
                }
            }
            for s in 0..self.endpoints.len() {
                work += self.receive(s);
            }
            for s in 0..self.endpoints.len() {
                work += self.transmit(s);
            }
            if last_snapshot.elapsed() >= SNAPSHOT_EVERY {
                self.publish();
                last_snapshot = Instant::now();
            }
            if let Some(deadline) = drain_until {
                let counts = self.ledger.counts();
                let rx_empty = self.endpoints.iter().all(|e| e.socket.rx.available() == 0);
                if (rx_empty && counts.held == 0 && counts.tx == 0) || Instant::now() >= deadline {
                    break;
                }
            }
            if work == 0 {
                self.wait(drain_until.is_some());
            }
        }
        self.publish();
    }

    /// Completed frames of socket `s` become free.
    fn reclaim(&mut self, s: usize) -> u32 {
        let completion = &mut self.endpoints[s].socket.completion;
        let n = completion.available();
        for i in 0..n {
            let addr = completion.peek(i);
            match self.umem.frame_of(addr) {
                Some(frame) => {
                    self.ledger.completed(frame, s as u16);
                }
                None => self.ledger.violation(),
            }
        }
        if n > 0 {
            completion.release(n);
        }
        n
    }

    /// Tops socket `s`'s fill ring up to the fill target from the free frames.
    fn refill(&mut self, s: usize) -> u32 {
        let fill = &mut self.endpoints[s].socket.fill;
        let level = fill.outstanding();
        if level >= self.fill_target {
            return 0;
        }
        let want = (self.fill_target - level).min(fill.free());
        let mut pushed = 0;
        while pushed < want {
            let Some(frame) = self.ledger.to_fill(s as u16) else {
                break;
            };
            fill.push(self.umem.frame_addr(frame));
            pushed += 1;
        }
        if pushed > 0 {
            fill.submit();
        }
        pushed
    }

    /// Takes socket `s`'s received descriptors and forwards every complete frame.
    fn receive(&mut self, s: usize) -> u32 {
        let n = self.endpoints[s].socket.rx.available().min(RX_BATCH);
        for i in 0..n {
            let desc = self.endpoints[s].socket.rx.peek(i);
            match self.umem.frame_of(desc.addr) {
                Some(frame) if self.ledger.received(frame, s as u16) => {}
                // Not a frame of ours to take: leave the ledger as it is.
                _ => continue,
            }
            self.partial[s].push(desc);
            if desc.options & PKT_CONTD == 0 {
                self.forward(s);
            } else if self.partial[s].len() >= MAX_DESCS {
                // Longer than any frame a port takes: cannot be sent on as one.
                self.drop_partial(s);
                self.busy(self.endpoints[s].port);
            }
        }
        if n > 0 {
            self.endpoints[s].socket.rx.release(n);
        }
        n
    }

    /// Sends the frame socket `s` just received to the port in its metadata, by moving its
    /// descriptors; drops it when that port's TX ring has no room for all of them.
    fn forward(&mut self, s: usize) {
        let mut descs = mem::take(&mut self.partial[s]);
        let sender = self.endpoints[s].port;
        // `iqd_xsk` wrote the destination right before the frame.
        let target = descs
            .first()
            .and_then(|d| d.addr.checked_sub(XSK_META_LEN as u64))
            .and_then(|at| self.umem.read_u32(at))
            .and_then(|ifindex| self.tx_socket.get(&ifindex).copied());
        match target {
            None => {
                // Not a port of this switch (it changed under a running switch): the
                // destination cannot be reached this way, as with a port missing from the
                // DEVMAP.
                self.shared
                    .counters
                    .dropped(self.slots[sender], drop_reason::REDIRECT_FAILED, 1);
                self.release(&descs);
            }
            Some(t) if (self.endpoints[t].socket.tx.free() as usize) < descs.len() => {
                // HiperSockets' "busy": the target cannot take the frame now. Only this frame
                // is lost; every other port keeps moving.
                self.busy(sender);
                self.release(&descs);
            }
            Some(t) => {
                let last = descs.len() - 1;
                let mut bytes = 0u64;
                for (i, desc) in descs.iter().enumerate() {
                    if let Some(frame) = self.umem.frame_of(desc.addr) {
                        self.ledger.to_tx(frame, t as u16);
                    }
                    bytes += desc.len as u64;
                    self.endpoints[t].socket.tx.push(Desc {
                        addr: desc.addr,
                        len: desc.len,
                        options: if i == last { 0 } else { PKT_CONTD },
                    });
                }
                self.tx_pending[t] = true;
                self.shared
                    .counters
                    .delivered(self.slots[self.endpoints[t].port], bytes);
                self.shared.frames_moved.fetch_add(1, Ordering::Relaxed);
                self.shared.bytes_moved.fetch_add(bytes, Ordering::Relaxed);
            }
        }
        descs.clear();
        self.partial[s] = descs;
    }

    fn busy(&self, port: usize) {
        self.shared
            .counters
            .dropped(self.slots[port], drop_reason::TARGET_BUSY, 1);
        self.shared.busy.fetch_add(1, Ordering::Relaxed);
    }

    fn release(&mut self, descs: &[Desc]) {
        for desc in descs {
            if let Some(frame) = self.umem.frame_of(desc.addr) {
                self.ledger.drop_held(frame);
            }
        }
    }

    fn drop_partial(&mut self, s: usize) {
        let descs = mem::take(&mut self.partial[s]);
        self.release(&descs);
        self.partial[s] = descs;
        self.partial[s].clear();
    }

    /// Publishes socket `s`'s new TX descriptors and asks the kernel to send them.
    fn transmit(&mut self, s: usize) -> u32 {
        let endpoint = &mut self.endpoints[s];
        if self.tx_pending[s] {
            endpoint.socket.tx.submit();
            self.tx_pending[s] = false;
        }
        let before = endpoint.socket.tx.outstanding();
        if before == 0 {
            return 0;
        }
        for _ in 0..KICKS {
            match endpoint.socket.tx.outstanding() {
                0 => break,
                _ => match endpoint.socket.kick_tx() {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        // The port went away or down: say so once; its frames complete or
                        // stay until the switch restarts.
                        if self.errors[s].is_none() {
                            eprintln!(
                                "iqd switch: send on {} queue {}: {e}",
                                endpoint.port_name, endpoint.queue
                            );
                        }
                        self.errors[s] = Some(e.to_string());
                        break;
                    }
                },
            }
        }
        before - endpoint.socket.tx.outstanding()
    }

    /// Sleeps until a socket has received something or it is time to look again: soon while
    /// frames are being sent (their completions must be reclaimed), else at the snapshot rate.
    fn wait(&self, draining: bool) {
        let mut fds: Vec<libc::pollfd> = self
            .endpoints
            .iter()
            .map(|e| libc::pollfd {
                fd: e.socket.fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        fds.push(libc::pollfd {
            fd: self.shared.wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        let sending = self.ledger.counts().tx > 0;
        let timeout = if sending || draining { 1 } else { 100 };
        // SAFETY: `fds` is a live array of the length given.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
    }

    fn publish(&mut self) {
        let sockets = self
            .endpoints
            .iter()
            .zip(&self.errors)
            .map(|(e, error)| SocketReport {
                port: e.port_name.clone(),
                queue: e.queue,
                kernel: e.socket.stats().unwrap_or_default(),
                fill_ring: e.socket.fill.outstanding(),
                rx_ring: e.socket.rx.available(),
                tx_ring: e.socket.tx.outstanding(),
                error: error.clone(),
            })
            .collect::<Vec<_>>();
        let snapshot = Snapshot {
            counts: self.ledger.counts(),
            in_fill_rings: sockets.iter().map(|s| s.fill_ring).sum(),
            violations: self.ledger.violations(),
            audit: match self.ledger.audit() {
                Ok(()) => "ok".to_string(),
                Err(e) => e,
            },
            sockets,
        };
        *self
            .shared
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = snapshot;
    }
}
