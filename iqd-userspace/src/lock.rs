//! One writer per fabric: every command that changes a fabric (`up`, `down`, and later
//! commands and API calls) holds the fabric's lock while it does. Readers (`status`, `stats`,
//! `conntrack`) never take it.
//!
//! The lock is an advisory `flock` on `/run/iqd/locks/<fabric>.lock`. The kernel releases it
//! when its holder exits, however it exits (SIGKILL included), so a crashed writer never
//! leaves a fabric locked. The file itself stays: removing a lock file that another process
//! waits on would let a third one lock a new file of the same name.
use std::{
    fs::{self, File, OpenOptions},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

const LOCK_DIR: &str = "/run/iqd/locks";

/// What to do when another writer holds the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Wait for it, saying so on stderr.
    Yes,
    /// Fail at once.
    No,
}

/// The fabric's lock, held until dropped.
#[derive(Debug)]
pub struct FabricLock {
    file: File,
    path: PathBuf,
}

impl FabricLock {
    /// Takes the lock of `fabric` for `command` (shown to other writers that find it taken).
    pub fn acquire(fabric: &str, command: &str, wait: Wait) -> Result<Self> {
        Self::acquire_in(Path::new(LOCK_DIR), fabric, command, wait)
    }

    fn acquire_in(dir: &Path, fabric: &str, command: &str, wait: Wait) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        let path = dir.join(format!("{fabric}.lock"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        if !try_flock(&file, libc::LOCK_EX | libc::LOCK_NB)
            .map_err(|e| Error::io("lock", &path, e))?
        {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            let holder = if holder.is_empty() {
                "another iqd".to_string()
            } else {
                holder.to_string()
            };
            if wait == Wait::No {
                return Err(Error::Locked {
                    fabric: fabric.to_string(),
                    holder,
                });
            }
            eprintln!(
                "iqd: fabric {fabric} is being changed by {holder}; waiting for it to finish"
            );
            try_flock(&file, libc::LOCK_EX).map_err(|e| Error::io("lock", &path, e))?;
        }
        let mut lock = FabricLock { file, path };
        // Who holds it, for the next writer's message; the lock works without it.
        let _ = lock.describe(command);
        Ok(lock)
    }

    fn describe(&mut self, command: &str) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        self.file.set_len(0)?;
        let text = format!("iqd {command} (pid {})\n", std::process::id());
        self.file.write_all_at(text.as_bytes(), 0)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FabricLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        // Closing the file releases the lock; unlocking first keeps the order obvious.
        let _ = try_flock(&self.file, libc::LOCK_UN);
    }
}

/// `flock`, retried on EINTR. `Ok(false)` when LOCK_NB found it taken.
fn try_flock(file: &File, operation: i32) -> std::io::Result<bool> {
    loop {
        // SAFETY: a valid open file descriptor and a valid operation.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("iqd-lock-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_second_writer_is_refused_while_the_first_holds_the_lock() {
        let dir = temp_dir();
        let first = FabricLock::acquire_in(&dir, "demo", "up", Wait::No).unwrap();
        let holder = fs::read_to_string(first.path()).unwrap();
        assert_eq!(holder, format!("iqd up (pid {})\n", std::process::id()));
        let err = FabricLock::acquire_in(&dir, "demo", "down", Wait::No).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("fabric demo"), "{message}");
        assert!(message.contains("iqd up (pid"), "{message}");
        // Another fabric has its own lock.
        let _other = FabricLock::acquire_in(&dir, "other", "up", Wait::No).unwrap();
        drop(first);
        let again = FabricLock::acquire_in(&dir, "demo", "down", Wait::No).unwrap();
        assert!(fs::read_to_string(again.path())
            .unwrap()
            .starts_with("iqd down"));
        drop(again);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_waiting_writer_gets_the_lock_when_the_holder_lets_go() {
        let dir = temp_dir().join("wait");
        let first = FabricLock::acquire_in(&dir, "demo", "up", Wait::No).unwrap();
        let waiter = {
            let dir = dir.clone();
            std::thread::spawn(move || {
                FabricLock::acquire_in(&dir, "demo", "up", Wait::Yes).map(|_| ())
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!waiter.is_finished(), "the second writer must wait");
        drop(first);
        waiter.join().unwrap().unwrap();
        let _ = fs::remove_dir_all(dir);
    }
}
