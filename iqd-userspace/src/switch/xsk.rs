//! AF_XDP sockets over libc: one UMEM, and per socket its fill, completion, RX and TX rings.
//!
//! The rings are single-producer, single-consumer queues shared with the kernel through mmap.
//! Userspace produces to the fill and TX rings and consumes from the RX and completion rings;
//! the kernel does the opposite. Each side publishes its index with release ordering and reads
//! the other's with acquire ordering, which is the whole protocol.
//!
//! The first socket registers the UMEM and binds in copy mode with multi-buffer support (veth
//! has no zero-copy mode). Every further socket shares that UMEM (`XDP_SHARED_UMEM`) and, being
//! on another netdev or queue, brings its own fill and completion ring, as the kernel requires;
//! it inherits copy mode and multi-buffer from the first.
use std::{
    io,
    marker::PhantomData,
    mem,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    ptr::{self, NonNull},
    sync::atomic::{AtomicU32, Ordering},
};

/// A descriptor of the RX and TX rings: a frame (or, with `XDP_PKT_CONTD` in `options`, a
/// part of one) at `addr` in the UMEM, `len` bytes long.
pub type Desc = libc::xdp_desc;

/// Set on every descriptor of a multi-buffer frame but its last.
pub const PKT_CONTD: u32 = libc::XDP_PKT_CONTD;

/// `setsockopt` (kernel 6.17+, not in libc yet): descriptors one `sendto` may send.
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;

/// The frames' memory, shared by every socket.
pub struct Umem {
    area: NonNull<u8>,
    len: usize,
    chunk_size: u32,
    frames: u32,
}

// SAFETY: the mapping is plain memory owned by this value; the kernel writes only frames that
// userspace handed to it, and userspace reads them only after the kernel handed them back.
unsafe impl Send for Umem {}

impl Umem {
    /// Maps `frames` chunks of `chunk_size` bytes (a power of two, 2048 to the page size).
    pub fn new(frames: u32, chunk_size: u32) -> io::Result<Self> {
        let len = frames as usize * chunk_size as usize;
        // SAFETY: an anonymous private mapping with no address hint.
        let area = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if area == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            area: NonNull::new(area.cast()).ok_or_else(io::Error::last_os_error)?,
            len,
            chunk_size,
            frames,
        })
    }

    pub fn frames(&self) -> u32 {
        self.frames
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// The frame (chunk) an address lies in, if it lies in the UMEM.
    pub fn frame_of(&self, addr: u64) -> Option<u32> {
        let index = addr / self.chunk_size as u64;
        (index < self.frames as u64).then_some(index as u32)
    }

    /// The start address of frame `index`.
    pub fn frame_addr(&self, index: u32) -> u64 {
        index as u64 * self.chunk_size as u64
    }

    /// The native-endian `u32` at `addr`, if those four bytes lie in the UMEM.
    pub fn read_u32(&self, addr: u64) -> Option<u32> {
        let end = addr.checked_add(4)?;
        if end > self.len as u64 {
            return None;
        }
        // SAFETY: within the mapping (checked above); the frame is userspace's to read.
        Some(unsafe { ptr::read_unaligned(self.area.as_ptr().add(addr as usize).cast::<u32>()) })
    }

    fn registration(&self) -> libc::xdp_umem_reg {
        // SAFETY: a plain C struct; all-zero is valid (no headroom, no flags).
        let mut reg: libc::xdp_umem_reg = unsafe { mem::zeroed() };
        reg.addr = self.area.as_ptr() as u64;
        reg.len = self.len as u64;
        reg.chunk_size = self.chunk_size;
        reg
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped. The kernel keeps its own reference to the
        // pages for as long as a socket still uses them.
        unsafe { libc::munmap(self.area.as_ptr().cast(), self.len) };
    }
}

/// One mmap'ed ring: indices and entries.
struct RawRing<T> {
    map: NonNull<u8>,
    map_len: usize,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    entries: *mut T,
    mask: u32,
    size: u32,
    _entries: PhantomData<T>,
}

// SAFETY: the ring is owned by one thread at a time (the one holding its Socket); the
// pointers only point into the mapping this value owns.
unsafe impl<T: Send> Send for RawRing<T> {}

impl<T> RawRing<T> {
    fn map(fd: RawFd, offsets: &libc::xdp_ring_offset, size: u32, pgoff: u64) -> io::Result<Self> {
        let map_len = offsets.desc as usize + size as usize * mem::size_of::<T>();
        // SAFETY: maps the ring the kernel created for this socket at this page offset.
        let map = unsafe {
            libc::mmap(
                ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff as libc::off_t,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = NonNull::new(map.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        // SAFETY: the kernel's offsets lie within the mapping it sized.
        unsafe {
            Ok(Self {
                producer: map.as_ptr().add(offsets.producer as usize).cast(),
                consumer: map.as_ptr().add(offsets.consumer as usize).cast(),
                entries: map.as_ptr().add(offsets.desc as usize).cast(),
                map,
                map_len,
                mask: size - 1,
                size,
                _entries: PhantomData,
            })
        }
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping, 4-byte aligned by the kernel.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { &*self.consumer }
    }
}

impl<T> Drop for RawRing<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

/// A ring userspace fills and the kernel empties (fill, TX).
pub struct Producer<T> {
    ring: RawRing<T>,
    /// Our producer index, published by `submit`.
    head: u32,
}

impl<T: Copy> Producer<T> {
    /// Entries that can be pushed now.
    pub fn free(&self) -> u32 {
        let consumer = self.ring.consumer().load(Ordering::Acquire);
        self.ring.size - self.head.wrapping_sub(consumer)
    }

    /// Entries pushed and not yet taken by the kernel.
    pub fn outstanding(&self) -> u32 {
        self.head
            .wrapping_sub(self.ring.consumer().load(Ordering::Acquire))
    }

    /// Writes one entry; the caller checked `free` first. Invisible to the kernel until
    /// `submit`.
    pub fn push(&mut self, entry: T) {
        // SAFETY: the index is masked into the ring, and the slot is free (consumer checked).
        unsafe {
            self.ring
                .entries
                .add((self.head & self.ring.mask) as usize)
                .write(entry)
        };
        self.head = self.head.wrapping_add(1);
    }

    /// Hands every pushed entry to the kernel.
    pub fn submit(&self) {
        self.ring.producer().store(self.head, Ordering::Release);
    }

    pub fn size(&self) -> u32 {
        self.ring.size
    }
}

/// A ring the kernel fills and userspace empties (RX, completion).
pub struct Consumer<T> {
    ring: RawRing<T>,
    /// Our consumer index, published by `release`.
    tail: u32,
}

impl<T: Copy> Consumer<T> {
    /// Entries ready to be read.
    pub fn available(&self) -> u32 {
        self.ring
            .producer()
            .load(Ordering::Acquire)
            .wrapping_sub(self.tail)
    }

    /// The `i`-th unread entry; `i` below `available()`.
    pub fn peek(&self, i: u32) -> T {
        let index = self.tail.wrapping_add(i) & self.ring.mask;
        // SAFETY: masked into the ring; the kernel published the entry (acquire above).
        unsafe { self.ring.entries.add(index as usize).read() }
    }

    /// Gives `n` read entries back to the kernel.
    pub fn release(&mut self, n: u32) {
        self.tail = self.tail.wrapping_add(n);
        self.ring.consumer().store(self.tail, Ordering::Release);
    }
}

/// Ring sizes of one socket (powers of two).
#[derive(Clone, Copy, Debug)]
pub struct RingSizes {
    pub fill: u32,
    pub completion: u32,
    pub rx: u32,
    pub tx: u32,
}

/// The kernel's per-socket counters (`XDP_STATISTICS`).
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct SocketStats {
    /// Frames the kernel dropped on the way in: no fill-ring frame for them, or too large.
    pub rx_dropped: u64,
    /// Frames dropped on the way in because the RX ring was full.
    pub rx_ring_full: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
}

/// One AF_XDP socket bound to a queue of a netdev, with its four rings.
pub struct Socket {
    // Rings first: they are unmapped before the socket closes.
    pub fill: Producer<u64>,
    pub completion: Consumer<u64>,
    pub rx: Consumer<Desc>,
    pub tx: Producer<Desc>,
    fd: OwnedFd,
}

fn setsockopt<T>(fd: RawFd, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live T of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            name,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn getsockopt<T>(fd: RawFd, name: libc::c_int, value: &mut T) -> io::Result<()> {
    let mut len = mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is a live, writable T of the size given.
    let rc =
        unsafe { libc::getsockopt(fd, libc::SOL_XDP, name, (value as *mut T).cast(), &mut len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Socket {
    /// A socket on `ifindex` (of the calling thread's network namespace), rx queue `queue`.
    /// With `shared` (the first socket) absent, this socket registers `umem` and binds in copy
    /// mode with multi-buffer frames; otherwise it shares the first socket's UMEM.
    pub fn bind(
        umem: &Umem,
        shared: Option<&Socket>,
        ifindex: u32,
        queue: u32,
        sizes: RingSizes,
    ) -> io::Result<Self> {
        // SAFETY: plain syscall.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if shared.is_none() {
            setsockopt(raw, libc::XDP_UMEM_REG, &umem.registration())?;
        }
        setsockopt(raw, libc::XDP_UMEM_FILL_RING, &sizes.fill)?;
        setsockopt(raw, libc::XDP_UMEM_COMPLETION_RING, &sizes.completion)?;
        setsockopt(raw, libc::XDP_RX_RING, &sizes.rx)?;
        setsockopt(raw, libc::XDP_TX_RING, &sizes.tx)?;
        // Copy mode sends at most this many descriptors per `sendto` (32 by default): as many
        // as the TX ring holds saves system calls. Kernels before 6.17 lack the option; they
        // keep 32.
        let _ = setsockopt(raw, XDP_MAX_TX_SKB_BUDGET, &sizes.tx);

        // SAFETY: a plain C struct the kernel fills in.
        let mut off: libc::xdp_mmap_offsets = unsafe { mem::zeroed() };
        getsockopt(raw, libc::XDP_MMAP_OFFSETS, &mut off)?;
        let fill = RawRing::map(raw, &off.fr, sizes.fill, libc::XDP_UMEM_PGOFF_FILL_RING)?;
        let completion = RawRing::map(
            raw,
            &off.cr,
            sizes.completion,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
        )?;
        let rx = RawRing::map(raw, &off.rx, sizes.rx, libc::XDP_PGOFF_RX_RING as u64)?;
        let tx = RawRing::map(raw, &off.tx, sizes.tx, libc::XDP_PGOFF_TX_RING as u64)?;

        // SAFETY: a plain C struct; zero is a valid start.
        let mut addr: libc::sockaddr_xdp = unsafe { mem::zeroed() };
        addr.sxdp_family = libc::AF_XDP as u16;
        addr.sxdp_ifindex = ifindex;
        addr.sxdp_queue_id = queue;
        match shared {
            // Shared sockets may name no mode: they take the first socket's.
            Some(first) => {
                addr.sxdp_flags = libc::XDP_SHARED_UMEM;
                addr.sxdp_shared_umem_fd = first.fd.as_raw_fd() as u32;
            }
            None => addr.sxdp_flags = libc::XDP_COPY | libc::XDP_USE_SG,
        }
        // SAFETY: a valid sockaddr_xdp of the size given.
        let rc = unsafe {
            libc::bind(
                raw,
                (&addr as *const libc::sockaddr_xdp).cast(),
                mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            fill: Producer {
                ring: fill,
                head: 0,
            },
            completion: Consumer {
                ring: completion,
                tail: 0,
            },
            rx: Consumer { ring: rx, tail: 0 },
            tx: Producer { ring: tx, head: 0 },
            fd,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Asks the kernel to transmit what the TX ring holds (copy mode sends only when told).
    /// `Ok(true)` when it stopped before the end (its batch limit, or the device was busy):
    /// call again later.
    pub fn kick_tx(&self) -> io::Result<bool> {
        // SAFETY: a zero-length, non-blocking send on our own socket.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                ptr::null(),
                0,
            )
        };
        if rc >= 0 {
            return Ok(false);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // EAGAIN: batch limit or device busy; EBUSY: a frame was dropped by the device
            // (its descriptor completes anyway); ENOBUFS: completion ring full.
            Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS) => Ok(true),
            _ => Err(err),
        }
    }

    pub fn stats(&self) -> io::Result<SocketStats> {
        // SAFETY: a plain C struct the kernel fills in.
        let mut raw: libc::xdp_statistics = unsafe { mem::zeroed() };
        getsockopt(self.fd.as_raw_fd(), libc::XDP_STATISTICS, &mut raw)?;
        Ok(SocketStats {
            rx_dropped: raw.rx_dropped,
            rx_ring_full: raw.rx_ring_full,
            rx_invalid_descs: raw.rx_invalid_descs,
            tx_invalid_descs: raw.tx_invalid_descs,
        })
    }
}
