//! `iqd trace`: the Network Traffic Analyzer. The LPAR a CHPID names as its `analyzer` traces
//! the frames of the CHPID's `traceable` LPARs into pcapng, one interface per NIC
//! (`LPAR/hsiN`). The data plane copies frames of the traced ports only (iqd-ebpf trace.rs)
//! into the trace's perf event array; one trace per CHPID (a lock file), up to
//! [`TRACE_SLOTS`] CHPIDs of a fabric at once.
pub mod pcapng;
mod ring;

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::Write,
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData};
use iqd_common::{
    drop_reason, map_names, trace_flags, TraceEvent, TracePort, TRACE_MAX_SNAPLEN, TRACE_SLOTS,
};

use crate::{
    config::{self, Fabric},
    dataplane,
    error::{Error, Result},
    lock::{try_flock, LOCK_DIR},
    netlink::Netlink,
    netns,
    reconcile::port_name,
};

/// What to trace and how.
#[derive(Clone, Debug)]
pub struct Request {
    pub chpid: String,
    /// The LPAR asking: must be the CHPID's analyzer.
    pub as_lpar: String,
    pub snaplen: u32,
    pub drops: bool,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
}

/// What a finished trace saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub written: u64,
    /// Frames the kernel could not hand over (the trace's buffers were full).
    pub lost: u64,
}

/// Per-CPU buffer size in pages (4 KiB each): 8 MiB per CPU.
const BUFFER_PAGES: usize = 2048;
/// How often the buffers are drained.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn refuse(chpid: &str, message: impl Into<String>) -> Error {
    Error::Trace {
        chpid: chpid.to_string(),
        message: message.into(),
    }
}

/// A traced NIC: its pcapng interface.
/// The traced ports: ifindex to the pcapng interface id and the NIC's name.
type Interfaces = HashMap<u32, (u32, String)>;

struct Traced {
    ifindex: u32,
    name: String,
}

/// Checks the request against the fabric file: the CHPID exists and `as_lpar` is its analyzer.
/// Returns the CHPID's id.
pub fn authorize(fabric: &Fabric, request: &Request) -> Result<u8> {
    let label = request.chpid.to_ascii_uppercase();
    let chpid = fabric
        .chpids
        .iter()
        .find(|c| config::chpid_label(c.id) == label)
        .ok_or_else(|| {
            refuse(
                &request.chpid,
                format!(
                    "unknown CHPID {}: the fabric file defines {}",
                    request.chpid,
                    fabric
                        .chpids
                        .iter()
                        .map(|c| config::chpid_label(c.id))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
    match &chpid.analyzer {
        Some(analyzer) if *analyzer == request.as_lpar => Ok(chpid.id),
        Some(analyzer) => Err(refuse(
            &label,
            format!(
                "LPAR {} is not authorized to trace it (its analyzer is {analyzer})",
                request.as_lpar
            ),
        )),
        None => Err(refuse(
            &label,
            format!(
                "LPAR {} is not authorized to trace it (it has no analyzer: set analyzer in \
                 its [[chpid]] table)",
                request.as_lpar
            ),
        )),
    }
}

/// A lock file held until dropped (closing releases the flock).
struct Held(File);

fn try_lock(path: &Path) -> Result<Option<Held>> {
    std::fs::create_dir_all(LOCK_DIR).map_err(|e| Error::io("create", LOCK_DIR, e))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    if try_flock(&file, libc::LOCK_EX | libc::LOCK_NB).map_err(|e| Error::io("lock", path, e))? {
        Ok(Some(Held(file)))
    } else {
        Ok(None)
    }
}

/// Removes the trace lock files of `fabric` (`iqd down`, once the fabric is gone).
pub fn remove_lock_files(fabric: &str) {
    let prefix = format!("{fabric}.trace");
    if let Ok(dir) = std::fs::read_dir(LOCK_DIR) {
        for entry in dir.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&prefix) && name.ends_with(".lock") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// The lock file a trace using `slot` holds.
fn slot_path(fabric: &str, slot: u32) -> std::path::PathBuf {
    Path::new(LOCK_DIR).join(format!("{fabric}.trace-slot{slot}.lock"))
}

fn open_pinned(pin_dir: &Path, name: &str) -> Result<Map> {
    let path = pin_dir.join(name);
    let data =
        MapData::from_pin(&path).map_err(|e| Error::io("open", &path, std::io::Error::other(e)))?;
    Map::from_map_data(data).map_err(|e| Error::io("open", &path, std::io::Error::other(e)))
}

fn map_io(name: &str) -> impl FnOnce(aya::maps::MapError) -> Error + '_ {
    move |e| Error::io("update", name, std::io::Error::other(e))
}

/// The trace maps of a running fabric, and its ports while traced.
struct TraceMaps {
    on: Array<MapData, u32>,
    ports: BpfHashMap<MapData, u32, TracePort>,
    fabric: String,
}

impl TraceMaps {
    /// Sets `IQD_TRACE_ON` from whether any port is traced; under a fabric-wide lock so that
    /// traces starting and stopping at once agree.
    fn update(&mut self, change: impl FnOnce(&mut Self) -> Result<()>) -> Result<()> {
        let path = Path::new(LOCK_DIR).join(format!("{}.trace.lock", self.fabric));
        let held = loop {
            if let Some(held) = try_lock(&path)? {
                break held;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let result = change(self);
        let any = self.ports.keys().any(|k| k.is_ok()) as u32;
        self.on
            .set(0, any, 0)
            .map_err(map_io(map_names::TRACE_ON))?;
        drop(held);
        result
    }
}

/// Runs a trace until `count` frames, `duration`, or SIGINT/SIGTERM; writes pcapng to `out`.
/// Refuses, capturing nothing, unless `request.as_lpar` is the CHPID's analyzer and no other
/// trace of the CHPID runs.
/// `open` gives the output, once the trace may run (a refusal creates no file).
pub async fn run<W: Write>(
    fabric: &Fabric,
    request: &Request,
    open: impl FnOnce() -> std::io::Result<W>,
) -> Result<Summary> {
    let chpid = authorize(fabric, request)?;
    let label = config::chpid_label(chpid);
    let pin_dir = dataplane::pin_dir(&fabric.name);
    if !netns::exists(&fabric.netns_name()) || !pin_dir.join(map_names::PORTS).exists() {
        return Err(Error::NotUp {
            fabric: fabric.name.clone(),
            pin_dir,
        });
    }
    if !pin_dir.join(map_names::TRACE_ON).exists() {
        return Err(refuse(
            &label,
            format!(
                "fabric {} was brought up by an iqd without traces: run iqd up again",
                fabric.name
            ),
        ));
    }
    // One analyzer per CHPID.
    let chpid_lock = Path::new(LOCK_DIR).join(format!("{}.trace-{label}.lock", fabric.name));
    let Some(mut held) = try_lock(&chpid_lock)? else {
        let holder = std::fs::read_to_string(&chpid_lock).unwrap_or_default();
        return Err(refuse(
            &label,
            format!(
                "another trace of this CHPID is already active{}",
                match holder.trim() {
                    "" => String::new(),
                    h => format!(" ({h})"),
                }
            ),
        ));
    };
    let _ = held.0.set_len(0);
    let _ = writeln!(
        held.0,
        "iqd trace --as {} (pid {})",
        request.as_lpar,
        std::process::id()
    );
    let mut slot_lock = None;
    for slot in 0..TRACE_SLOTS {
        if let Some(held) = try_lock(&slot_path(&fabric.name, slot))? {
            slot_lock = Some((slot, held));
            break;
        }
    }
    let Some((slot, _slot_held)) = slot_lock else {
        return Err(refuse(
            &label,
            format!("{TRACE_SLOTS} CHPIDs of this fabric are being traced already"),
        ));
    };

    // The traced NICs: those of traceable LPARs on the CHPID, by their ports' ifindex.
    let links: HashMap<String, u32> = Netlink::open(&fabric.netns_name())?
        .links()
        .await?
        .into_iter()
        .map(|l| (l.name, l.index))
        .collect();
    let traced: Vec<Traced> = fabric
        .lpars
        .iter()
        .filter(|l| l.traceable)
        .flat_map(|l| {
            l.nics.iter().filter(|n| n.chpid == chpid).filter_map(|n| {
                links.get(&port_name(n)).map(|&ifindex| Traced {
                    ifindex,
                    name: format!("{}/{}", l.name, n.name),
                })
            })
        })
        .collect();

    let mut maps = TraceMaps {
        on: open_pinned(&pin_dir, map_names::TRACE_ON)?
            .try_into()
            .map_err(map_io(map_names::TRACE_ON))?,
        ports: open_pinned(&pin_dir, map_names::TRACE_PORTS)?
            .try_into()
            .map_err(map_io(map_names::TRACE_PORTS))?,
        fabric: fabric.name.clone(),
    };
    let events_name = map_names::TRACE_EVENTS[slot as usize];
    let events_path = pin_dir.join(events_name);
    let events = MapData::from_pin(&events_path)
        .map_err(|e| Error::io("open", &events_path, std::io::Error::other(e)))?;
    let cpus = aya::util::online_cpus().map_err(|(path, e)| Error::io("read", path, e))?;
    let mut buffers: Vec<ring::PerfRing> = Vec::new();
    for cpu in cpus {
        buffers.push(
            ring::PerfRing::open(&events, cpu, BUFFER_PAGES)
                .map_err(|e| Error::io("open the perf buffer of", events_name, e))?,
        );
    }

    let snaplen = request.snaplen.clamp(1, TRACE_MAX_SNAPLEN);
    let out = open().map_err(|e| Error::io("open", "the trace's output", e))?;
    let mut writer =
        pcapng::Writer::new(out, "iqd trace").map_err(|e| Error::io("write", "trace", e))?;
    let mut interface_of = HashMap::new();
    for (id, t) in traced.iter().enumerate() {
        writer
            .interface(&t.name, snaplen)
            .map_err(|e| Error::io("write", "trace", e))?;
        interface_of.insert(t.ifindex, (id as u32, t.name.clone()));
    }
    writer.flush().map_err(|e| Error::io("write", "trace", e))?;

    install_signals();
    let port = TracePort {
        slot,
        snaplen,
        flags: if request.drops { trace_flags::DROPS } else { 0 },
        _pad: 0,
    };
    maps.update(|m| {
        // Ports a killed trace left behind: in our slot (we hold it now), or in a slot whose
        // lock is free (a live trace holds its own).
        let entries: Vec<(u32, TracePort)> = m.ports.iter().filter_map(|e| e.ok()).collect();
        for (ifindex, stale) in entries {
            if stale.slot == slot || try_lock(&slot_path(&fabric.name, stale.slot))?.is_some() {
                let _ = m.ports.remove(&ifindex);
            }
        }
        for t in &traced {
            m.ports
                .insert(t.ifindex, port, 0)
                .map_err(map_io(map_names::TRACE_PORTS))?;
        }
        Ok(())
    })?;
    eprintln!(
        "iqd trace: tracing CHPID {label} as {}: {}",
        request.as_lpar,
        if traced.is_empty() {
            "no traceable NICs".to_string()
        } else {
            traced
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let result = capture(&mut buffers, &mut writer, &interface_of, request);
    // Off first, then what is still buffered.
    let stopped = maps.update(|m| {
        for t in &traced {
            let _ = m.ports.remove(&t.ifindex);
        }
        Ok(())
    });
    let mut summary = result?;
    stopped?;
    if request.count.is_none_or(|c| summary.written < c) {
        let (written, lost) = drain(
            &mut buffers,
            &mut writer,
            &interface_of,
            request,
            summary.written,
        )
        .map_err(|e| Error::io("write", "trace", e))?;
        summary.written = written;
        summary.lost += lost;
    }
    writer.flush().map_err(|e| Error::io("write", "trace", e))?;
    Ok(summary)
}

fn install_signals() {
    STOP.store(false, Ordering::Relaxed);
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_signal),
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::empty(),
    );
    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        // SAFETY: the handler only stores to an atomic.
        let _ = unsafe { nix::sys::signal::sigaction(signal, &action) };
    }
    // A reader that goes away (`| head`) ends the trace with a write error, not a signal.
    // SAFETY: ignoring a signal.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        )
    };
}

/// CLOCK_REALTIME minus CLOCK_MONOTONIC, in nanoseconds: turns the kernel's timestamps into
/// wall-clock time.
fn wall_offset_ns() -> i128 {
    let now = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec to write to.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    };
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC)
}

fn capture(
    buffers: &mut [ring::PerfRing],
    writer: &mut pcapng::Writer<impl Write>,
    interface_of: &Interfaces,
    request: &Request,
) -> Result<Summary> {
    let started = Instant::now();
    let mut summary = Summary::default();
    loop {
        if STOP.load(Ordering::Relaxed)
            || request.duration.is_some_and(|d| started.elapsed() >= d)
            || request.count.is_some_and(|c| summary.written >= c)
        {
            return Ok(summary);
        }
        // Drained on a timer: the buffers wake nobody per record (see ring.rs). 10 ms of
        // records fit an 8 MiB buffer at several million records per second per CPU, if the
        // writer keeps up.
        std::thread::sleep(POLL_INTERVAL);
        let (written, lost) = drain(buffers, writer, interface_of, request, summary.written)
            .map_err(|e| Error::io("write", "trace", e))?;
        summary.written = written;
        summary.lost += lost;
    }
}

/// One sample, copied out of the perf buffer.
struct Sample {
    event: TraceEvent,
    data: Vec<u8>,
}

/// Writes what the buffers hold, in time order; returns frames written in all and lost now.
fn drain(
    buffers: &mut [ring::PerfRing],
    writer: &mut pcapng::Writer<impl Write>,
    interface_of: &Interfaces,
    request: &Request,
    mut written: u64,
) -> std::io::Result<(u64, u64)> {
    let mut lost = 0u64;
    let mut samples = Vec::new();
    for buffer in buffers.iter_mut() {
        buffer.drain(|record| match record {
            ring::Record::Sample(raw) => {
                if let Some(sample) = parse(raw) {
                    samples.push(sample);
                }
            }
            ring::Record::Lost(count) => lost += count,
        });
    }
    samples.sort_by_key(|s| s.event.ts_ns);
    let offset = wall_offset_ns();
    for s in samples {
        if request.count.is_some_and(|c| written >= c) {
            break;
        }
        let Some(&(interface, _)) = interface_of.get(&s.event.ifindex) else {
            continue;
        };
        let direction = if s.event.flags & trace_flags::RECEIVED != 0 {
            pcapng::Direction::Inbound
        } else {
            pcapng::Direction::Outbound
        };
        let comment = (s.event.flags & trace_flags::DROPS != 0)
            .then(|| drop_comment(s.event.reason, s.event.peer, interface_of));
        let unix_ns = (s.event.ts_ns as i128 + offset).max(0) as u64;
        writer.packet(
            interface,
            unix_ns,
            &s.data,
            s.event.orig_len,
            direction,
            comment.as_deref(),
        )?;
        written += 1;
    }
    writer.flush()?;
    Ok((written, lost))
}

/// The comment of a dropped frame: its reason, and for a copy of a one-to-many frame
/// (`peer`: the receiver's port) the receiver it was for. The programs record such a copy only
/// if its receiver is traced too; a name not found (the receiver's trace ended) is not guessed.
fn drop_comment(reason: u32, peer: u32, interfaces: &Interfaces) -> String {
    let reason = drop_reason::NAMES
        .get(reason as usize)
        .copied()
        .unwrap_or("unknown");
    match (peer, interfaces.get(&peer)) {
        (0, _) => format!("dropped: {reason}"),
        (_, Some((_, name))) => format!("dropped: {reason} (the copy for {name})"),
        (_, None) => format!("dropped: {reason} (the copy for a NIC not traced)"),
    }
}

fn parse(raw: &[u8]) -> Option<Sample> {
    let size = std::mem::size_of::<TraceEvent>();
    if raw.len() < size {
        return None;
    }
    // SAFETY: TraceEvent is plain integers; `raw` holds at least its size.
    let event: TraceEvent = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
    let end = size + event.cap_len as usize;
    let data = raw.get(size..end)?.to_vec();
    Some(Sample { event, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_copy_names_its_receiver_only_if_traced() {
        let interfaces: Interfaces = [(7, (0, "LP01/hsi0".to_string()))].into();
        assert_eq!(
            drop_comment(drop_reason::NO_DESTINATION, 0, &interfaces),
            "dropped: no_destination"
        );
        assert_eq!(
            drop_comment(drop_reason::LPAR_STOPPED, 7, &interfaces),
            "dropped: lpar_stopped (the copy for LP01/hsi0)"
        );
        assert_eq!(
            drop_comment(drop_reason::BANDWIDTH_EXCEEDED, 9, &interfaces),
            "dropped: bandwidth_exceeded (the copy for a NIC not traced)"
        );
    }
}
