//! One writer per fabric: every command that changes a fabric (`up`, `down`, and later
//! commands and API calls) holds the fabric's lock while it does. Readers (`status`, `stats`,
//! `conntrack`) never take it.
//!
//! The lock is an advisory `flock` on `/run/iqd/locks/<fabric>.lock`. The kernel releases it
//! when its holder exits, however it exits (SIGKILL included), so a crashed writer never
//! leaves a fabric locked. `down` removes the file while it holds the lock; a writer that was
//! waiting on the removed file notices (its file is no longer the one at the path) and locks
//! the new one instead, so two writers never hold "the" lock at once.
use std::{
    fs::{self, File, OpenOptions},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

pub(crate) const LOCK_DIR: &str = "/run/iqd/locks";

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
        let mut said_waiting = false;
        loop {
            let file = lock_file(&path, fabric, wait, &mut said_waiting)?;
            if is_current(&file, &path) {
                let mut lock = FabricLock { file, path };
                // Who holds it, for the next writer's message; the lock works without it.
                let _ = lock.describe(command);
                return Ok(lock);
            }
            // Removed by the `down` that held it: lock the file now at the path.
        }
    }

    /// Removes the lock file (the fabric is gone); the lock holds until dropped.
    pub fn remove_file(&self) {
        let _ = fs::remove_file(&self.path);
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

/// Opens the lock file at `path` and locks it, waiting (and saying so once) or not.
fn lock_file(path: &Path, fabric: &str, wait: Wait, said_waiting: &mut bool) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    if try_flock(&file, libc::LOCK_EX | libc::LOCK_NB).map_err(|e| Error::io("lock", path, e))? {
        return Ok(file);
    }
    let holder = fs::read_to_string(path).unwrap_or_default();
    let holder = match holder.trim() {
        "" => "another iqd".to_string(),
        holder => holder.to_string(),
    };
    if wait == Wait::No {
        return Err(Error::Locked {
            fabric: fabric.to_string(),
            holder,
        });
    }
    if !*said_waiting {
        eprintln!("iqd: fabric {fabric} is being changed by {holder}; waiting for it to finish");
        *said_waiting = true;
    }
    try_flock(&file, libc::LOCK_EX).map_err(|e| Error::io("lock", path, e))?;
    Ok(file)
}

/// Whether `file` is still the file at `path` (not removed or replaced meanwhile).
fn is_current(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

/// `flock`, retried on EINTR. `Ok(false)` when LOCK_NB found it taken.
pub(crate) fn try_flock(file: &File, operation: i32) -> std::io::Result<bool> {
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

    fn temp_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("iqd-lock-{test}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_second_writer_is_refused_while_the_first_holds_the_lock() {
        let dir = temp_dir("refused");
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
    fn a_writer_waiting_on_a_removed_lock_file_locks_the_new_one() {
        let dir = temp_dir("removed");
        let first = FabricLock::acquire_in(&dir, "demo", "down", Wait::No).unwrap();
        let waiter = {
            let dir = dir.clone();
            std::thread::spawn(move || FabricLock::acquire_in(&dir, "demo", "up", Wait::Yes))
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        first.remove_file();
        drop(first);
        let second = waiter.join().unwrap().unwrap();
        // The waiter holds the file now at the path: nobody else can take it.
        assert!(is_current(&second.file, second.path()));
        assert!(FabricLock::acquire_in(&dir, "demo", "up", Wait::No).is_err());
        drop(second);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_waiting_writer_gets_the_lock_when_the_holder_lets_go() {
        let dir = temp_dir("wait");
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
