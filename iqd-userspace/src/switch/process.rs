//! The switch as a process: starting it detached, stopping it by pid, reading its report.
//!
//! Its files live beside the fabric's state in `/run/iqd/<fabric>/`:
//! - `switch.pid`: `<pid> <start time>`, written by the switch when it starts. The start time
//!   (in clock ticks since boot, from `/proc/<pid>/stat`) tells the switch from an unrelated
//!   process that got the same pid after it died.
//! - `switch.json`: its [`Report`], rewritten atomically a few times a second and kept after
//!   it stops.
//! - `switch.log`: its standard output and error.
use std::{
    fs,
    io::{self, Read as _, Seek as _, SeekFrom},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::engine::Snapshot;
use crate::{
    error::{Error, Result},
    state,
};

/// How long `up` waits for a new switch to carry frames.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a stopping switch may take to hand its last frames on before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What the switch says about itself (`switch.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub pid: u32,
    /// `starting`, `running` (frames flow through it), `stopped` (it exited when told to) or
    /// `failed` (it exited on an error, given in `error`).
    pub state: String,
    pub started_unix_ms: u64,
    pub updated_unix_ms: u64,
    /// The ports it serves, by name.
    pub ports: Vec<String>,
    pub umem_frames: u32,
    pub umem_bytes: u64,
    /// Frames (and bytes) it moved from one port to another.
    pub frames_moved: u64,
    pub bytes_moved: u64,
    /// Frames it dropped because the destination's TX ring was full, or the kernel because
    /// the switch's RX ring or fill ring was.
    pub target_busy: u64,
    pub ledger: Snapshot,
    pub error: Option<String>,
}

pub fn pid_file(fabric: &str) -> PathBuf {
    state::dir(fabric).join("switch.pid")
}

pub fn report_file(fabric: &str) -> PathBuf {
    state::dir(fabric).join("switch.json")
}

pub fn log_file(fabric: &str) -> PathBuf {
    state::dir(fabric).join("switch.log")
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// State and start time of a process, from `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 is the state, field 22 the start time.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// This process's start time, for the pid file.
pub fn own_start_time() -> u64 {
    proc_stat(std::process::id()).map_or(0, |(_, start)| start)
}

/// The pid in `fabric`'s pid file, if that process is alive and is the one that wrote it.
pub fn running_pid(fabric: &str) -> Option<u32> {
    let text = fs::read_to_string(pid_file(fabric)).ok()?;
    let mut words = text.split_whitespace();
    let pid: u32 = words.next()?.parse().ok()?;
    let start: u64 = words.next()?.parse().ok()?;
    alive(pid, start).then_some(pid)
}

fn alive(pid: u32, start: u64) -> bool {
    // A zombie has exited; only its parent has not collected it yet.
    matches!(proc_stat(pid), Some((state, s)) if s == start && state != 'Z' && state != 'X')
}

pub fn write_pid_file(fabric: &str) -> Result<()> {
    let path = pid_file(fabric);
    write_atomic(
        &path,
        format!("{} {}\n", std::process::id(), own_start_time()).as_bytes(),
    )
}

pub fn write_report(fabric: &str, report: &Report) -> Result<()> {
    let path = report_file(fabric);
    let text = serde_json::to_vec_pretty(report).map_err(|e| Error::State {
        path: path.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&path, &text)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    }
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(|e| Error::io("write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))
}

/// The switch's last report, if it wrote one.
pub fn read_report(fabric: &str) -> Option<Report> {
    let text = fs::read(report_file(fabric)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The last lines of the switch's log, to explain a failed start.
fn log_tail(fabric: &str) -> String {
    let mut text = String::new();
    if let Ok(mut file) = fs::File::open(log_file(fabric)) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(2000)));
        let _ = file.read_to_string(&mut text);
    }
    let text = text.trim();
    if text.is_empty() {
        "(no output)".to_string()
    } else {
        text.to_string()
    }
}

/// Starts the switch of `fabric` (stopping a running one first) and returns its pid once it
/// reports that frames flow through it.
pub fn start(fabric: &str, config: &Path) -> Result<u32> {
    stop(fabric)?;
    let dir = state::dir(fabric);
    fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
    let _ = fs::remove_file(report_file(fabric));
    let log_path = log_file(fabric);
    let log = fs::File::create(&log_path).map_err(|e| Error::io("create", &log_path, e))?;
    let log_err = log
        .try_clone()
        .map_err(|e| Error::io("duplicate", &log_path, e))?;
    let exe = std::env::current_exe().map_err(|e| Error::io("find", "/proc/self/exe", e))?;
    let config = config
        .canonicalize()
        .map_err(|e| Error::io("resolve", config, e))?;
    let mut command = Command::new(&exe);
    command
        .arg("switch")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    // SAFETY: setsid is async-signal-safe; the child touches nothing else before exec. A
    // session of its own: the switch outlives `iqd up` and its terminal.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| Error::io("start", exe.clone(), e))?;
    let pid = child.id();
    let failed = |message: String| Error::Switch {
        fabric: fabric.to_string(),
        message: format!(
            "{message}; its log ({}):\n{}",
            log_path.display(),
            log_tail(fabric)
        ),
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(report) = read_report(fabric).filter(|r| r.pid == pid) {
            match report.state.as_str() {
                "running" => return Ok(pid),
                "failed" | "stopped" => {
                    let _ = child.wait();
                    return Err(failed(format!(
                        "the switch stopped: {}",
                        report.error.unwrap_or_default()
                    )));
                }
                _ => {}
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(failed(format!(
                "the switch exited ({status}) before it ran"
            )));
        }
        if Instant::now() >= deadline {
            // SAFETY: our own child, not yet reaped, so the pid is still its.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let _ = child.wait();
            return Err(failed(format!(
                "the switch did not start within {START_TIMEOUT:?}"
            )));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Stops `fabric`'s switch, if one runs: asks it to finish (it hands the frames it holds on
/// and frees its sockets, so the kernel path takes over), kills it if it does not. Returns
/// whether one was running.
pub fn stop(fabric: &str) -> Result<bool> {
    let path = pid_file(fabric);
    let Ok(text) = fs::read_to_string(&path) else {
        return Ok(false);
    };
    let mut words = text.split_whitespace();
    let parsed = (
        words.next().and_then(|w| w.parse::<u32>().ok()),
        words.next().and_then(|w| w.parse::<u64>().ok()),
    );
    let mut was_running = false;
    if let (Some(pid), Some(start)) = parsed {
        if pid > 1 && alive(pid, start) {
            was_running = true;
            // SAFETY: plain syscalls on a pid checked to be our switch (same start time).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            if !wait_exit(pid, start, STOP_TIMEOUT) {
                eprintln!("iqd: the switch (pid {pid}) did not stop; killing it");
                // SAFETY: as above.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                wait_exit(pid, start, Duration::from_secs(2));
            }
        }
    }
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", path, e)),
    }
    Ok(was_running)
}

fn wait_exit(pid: u32, start: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(pid, start) {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_with_its_own_start_time() {
        let start = own_start_time();
        assert!(start > 0);
        assert!(alive(std::process::id(), start));
        assert!(!alive(std::process::id(), start + 1), "another start time");
    }

    #[test]
    fn switch_files_live_beside_the_state() {
        assert_eq!(pid_file("demo"), Path::new("/run/iqd/demo/switch.pid"));
        assert_eq!(report_file("demo"), Path::new("/run/iqd/demo/switch.json"));
    }
}
