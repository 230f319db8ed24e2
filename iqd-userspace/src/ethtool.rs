//! The two offload settings every LPAR-side NIC needs (see docs/architecture.md):
//! - TX checksum offload off: a CHECKSUM_PARTIAL skb loses that state when it becomes an XDP
//!   frame, and the receiver would drop every TCP segment for a bad checksum.
//! - GRO on: a frame redirected into a veth arrives only if the receiving side has NAPI.
//!
//! And, for the AF_XDP switch, how many rx queues a port has.
//!
//! Legacy SIOCETHTOOL ioctls, on a socket of the calling thread's network namespace.
use std::{io, os::fd::AsRawFd};

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_SGRO: u32 = 0x2c;
const ETHTOOL_GCHANNELS: u32 = 0x3c;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

fn set(ifname: &str, cmd: u32, on: bool) -> io::Result<()> {
    let mut value = EthtoolValue {
        cmd,
        data: on as u32,
    };
    ioctl(ifname, (&mut value as *mut EthtoolValue).cast())
}

/// Issues one SIOCETHTOOL request whose command struct is at `data`.
fn ioctl(ifname: &str, data: *mut libc::c_void) -> io::Result<()> {
    if ifname.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data,
        _pad: [0; 16],
    };
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: `req` is a valid ifreq whose data points at the caller's live ethtool struct.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `ethtool -K IF tx on|off`.
pub fn set_tx_checksum(ifname: &str, on: bool) -> io::Result<()> {
    set(ifname, ETHTOOL_STXCSUM, on)
}

/// `ethtool -K IF gro on|off`.
pub fn set_gro(ifname: &str, on: bool) -> io::Result<()> {
    set(ifname, ETHTOOL_SGRO, on)
}

/// The rx queues a device uses (`ethtool -l IF`: current RX plus combined channels). The AF_XDP
/// switch needs a socket on each.
pub fn rx_queues(ifname: &str) -> io::Result<u32> {
    let mut channels = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..EthtoolChannels::default()
    };
    ioctl(ifname, (&mut channels as *mut EthtoolChannels).cast())?;
    Ok(channels.rx_count + channels.combined_count)
}
