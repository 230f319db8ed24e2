//! Named network namespaces, as `ip netns` keeps them: a bind mount of the namespace file under
//! /run/netns/NAME, so that iqd, `ip netns exec` and the user all see the same ones.
use std::{
    fs::{self, File},
    marker::PhantomData,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    sched::{setns, unshare, CloneFlags},
};

use crate::error::{Error, Result};

const NETNS_RUN_DIR: &str = "/run/netns";
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Whether a named namespace exists (its file is a mounted namespace, not a stale file).
pub fn exists(name: &str) -> bool {
    File::open(path(name))
        .ok()
        .and_then(|f| nix::sys::statfs::fstatfs(&f).ok())
        .is_some_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

fn netns_err<'a>(name: &'a str, op: &'static str) -> impl FnOnce(nix::Error) -> Error + 'a {
    move |source| Error::Netns {
        name: name.to_string(),
        op,
        source,
    }
}

/// Makes /run/netns a shared mount point, as `ip netns add` does, so that namespaces mounted
/// there propagate to other mount namespaces.
fn prepare_run_dir() -> Result<()> {
    fs::create_dir_all(NETNS_RUN_DIR).map_err(|e| Error::io("create", NETNS_RUN_DIR, e))?;
    let flags = MsFlags::MS_SHARED | MsFlags::MS_REC;
    if mount(
        None::<&str>,
        NETNS_RUN_DIR,
        None::<&str>,
        flags,
        None::<&str>,
    )
    .is_err()
    {
        // Not a mount point yet: bind it onto itself first.
        mount(
            Some(NETNS_RUN_DIR),
            NETNS_RUN_DIR,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(netns_err(NETNS_RUN_DIR, "bind mount"))?;
        mount(
            None::<&str>,
            NETNS_RUN_DIR,
            None::<&str>,
            flags,
            None::<&str>,
        )
        .map_err(netns_err(NETNS_RUN_DIR, "make shared"))?;
    }
    Ok(())
}

/// Creates the named namespace (with `lo` up) unless it exists. Returns whether it created it.
pub fn create(name: &str) -> Result<bool> {
    if exists(name) {
        return Ok(false);
    }
    prepare_run_dir()?;
    let target = path(name);
    File::create(&target).map_err(|e| Error::io("create", &target, e))?;
    // unshare() changes the calling thread; a scoped thread keeps iqd's own threads where they are.
    let result = std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(netns_err(name, "unshare"))?;
            mount(
                Some(THREAD_NETNS),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(netns_err(name, "bind mount"))
        })
        .join()
        .unwrap_or_else(|_| Err(netns_err(name, "create")(nix::Error::EIO)))
    });
    if let Err(e) = result {
        let _ = fs::remove_file(&target);
        return Err(e);
    }
    Ok(true)
}

/// Removes the named namespace. The kernel frees it (and its interfaces) once no process is
/// left in it. Missing namespaces are fine: removal is idempotent.
pub fn delete(name: &str) -> Result<()> {
    let target = path(name);
    if !target.exists() {
        return Ok(());
    }
    match umount2(&target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(netns_err(name, "unmount")(e)),
    }
    fs::remove_file(&target).map_err(|e| Error::io("remove", &target, e))
}

/// Runs the current thread in another network namespace until dropped. Sockets opened
/// meanwhile (netlink, ioctl) stay bound to that namespace after the guard is gone.
pub struct NetnsGuard {
    previous: File,
    name: String,
    _not_send: PhantomData<*mut ()>,
}

impl NetnsGuard {
    pub fn enter(name: &str) -> Result<Self> {
        let previous = File::open(THREAD_NETNS).map_err(|e| Error::io("open", THREAD_NETNS, e))?;
        let target_path = path(name);
        let target = File::open(&target_path).map_err(|e| Error::io("open", &target_path, e))?;
        setns(target.as_fd(), CloneFlags::CLONE_NEWNET).map_err(netns_err(name, "setns"))?;
        Ok(Self {
            previous,
            name: name.to_string(),
            _not_send: PhantomData,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(self.previous.as_fd(), CloneFlags::CLONE_NEWNET) {
            // Continuing in the wrong namespace could touch the host's interfaces.
            eprintln!(
                "iqd: cannot return from network namespace {}: {e}",
                self.name
            );
            std::process::abort();
        }
    }
}

/// Writes a sysctl of the current thread's network namespace (e.g. `net/ipv6/conf/all/...`).
pub fn write_sysctl(key: &str, value: &str) -> Result<()> {
    let path = Path::new("/proc/sys").join(key);
    fs::write(&path, value).map_err(|e| Error::io("write", path, e))
}
