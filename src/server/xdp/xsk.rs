//! One AF_XDP socket with its own UMEM (frame memory shared with the kernel) and its four
//! rings, over `libc`: fill (frames the kernel may receive into), RX (frames received), TX
//! (frames to send), completion (frames sent, free again).
//!
//! A frame's life: fill → RX → answered in place → TX → completion → fill; a frame not
//! answered goes straight back to fill. So the frames are never more than the fill ring
//! holds, and no other bookkeeping is needed. Each ring is single-producer/single-consumer
//! between this thread and the kernel: the producer index is published with release, the
//! other side's read with acquire (the protocol of `<xdp/xsk.h>`).

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// Bytes per frame: a page, so a frame never straddles two.
pub const FRAME: usize = 4096;
/// Frames per socket (16 MiB of UMEM).
const FRAMES: u32 = 4096;
/// RX and TX ring entries; fill and completion hold every frame.
const RING: u32 = 2048;

/// The kernel puts received frames this far into the chunk (XDP_PACKET_HEADROOM in copy mode);
/// we add none of our own.
const HEADROOM: u32 = 0;

/// A mapped ring.
struct Ring {
    map: NonNull<u8>,
    map_len: usize,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    desc: *mut u8,
    mask: u32,
}

// SAFETY: the ring memory is owned by the socket that this one thread uses.
unsafe impl Send for Ring {}

impl Ring {
    fn map(
        fd: RawFd,
        off: &libc::xdp_ring_offset,
        entries: u32,
        entry: usize,
        pgoff: u64,
    ) -> io::Result<Ring> {
        let len = off.desc as usize + entries as usize * entry;
        // SAFETY: mapping the ring the kernel set up for this socket at its documented offset.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = p.cast::<u8>();
        // SAFETY: the offsets come from XDP_MMAP_OFFSETS for this mapping.
        unsafe {
            Ok(Ring {
                map: NonNull::new_unchecked(base),
                map_len: len,
                producer: base.add(off.producer as usize).cast(),
                consumer: base.add(off.consumer as usize).cast(),
                flags: base.add(off.flags as usize).cast(),
                desc: base.add(off.desc as usize),
                mask: entries - 1,
            })
        }
    }
    fn prod(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping; the kernel's index is a u32 updated atomically.
        unsafe { &*self.producer }
    }
    fn cons(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { &*self.consumer }
    }
    fn needs_wakeup(&self) -> bool {
        // SAFETY: as above.
        unsafe { &*self.flags }.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }
    fn slot<T>(&self, i: u32) -> *mut T {
        // SAFETY (of the callers' use): `i & mask` is within the ring's entries.
        unsafe { self.desc.cast::<T>().add((i & self.mask) as usize) }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

/// How the socket was bound: copy or zero-copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copy {
    Copy,
    ZeroCopy,
}

/// An AF_XDP socket bound to one queue of one interface.
pub struct Socket {
    // Field order is drop order: rings unmapped, then the socket closed, then the UMEM freed.
    fill: Ring,
    comp: Ring,
    rx: Ring,
    tx: Ring,
    fd: OwnedFd,
    umem: Umem,
    pub bind: Copy,
}

// SAFETY: the socket, its rings and its UMEM are used by the one thread that owns it.
unsafe impl Send for Socket {}

/// The UMEM mapping; unmapped after the socket that registered it is closed (field order).
struct Umem(NonNull<u8>);

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `Socket::new`, FRAMES * FRAME bytes.
        unsafe { libc::munmap(self.0.as_ptr().cast(), FRAMES as usize * FRAME) };
    }
}

fn setsockopt<T>(fd: RawFd, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a live value of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Socket {
    /// A socket on queue `queue` of interface `ifindex`: zero-copy when the driver offers it,
    /// else copy mode.
    pub fn new(ifindex: u32, queue: u32) -> io::Result<Socket> {
        // SAFETY: plain socket(2).
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the descriptor just returned.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let len = FRAMES as usize * FRAME;
        // SAFETY: an anonymous private mapping of our own.
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if mem == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: mmap succeeded, so not null.
        let umem = Umem(unsafe { NonNull::new_unchecked(mem.cast::<u8>()) });
        let setup = || -> io::Result<(Ring, Ring, Ring, Ring)> {
            // SAFETY: all-zero is valid for this plain C struct.
            let mut reg: libc::xdp_umem_reg = unsafe { zeroed() };
            reg.addr = mem as u64;
            reg.len = len as u64;
            reg.chunk_size = FRAME as u32;
            reg.headroom = HEADROOM;
            setsockopt(raw, libc::XDP_UMEM_REG, &reg)?;
            setsockopt(raw, libc::XDP_UMEM_FILL_RING, &FRAMES)?;
            setsockopt(raw, libc::XDP_UMEM_COMPLETION_RING, &FRAMES)?;
            setsockopt(raw, libc::XDP_RX_RING, &RING)?;
            setsockopt(raw, libc::XDP_TX_RING, &RING)?;
            // SAFETY: all-zero is valid; the kernel fills it.
            let mut off: libc::xdp_mmap_offsets = unsafe { zeroed() };
            let mut olen = size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
            // SAFETY: `off` is live and `olen` its size.
            let r = unsafe {
                libc::getsockopt(
                    raw,
                    libc::SOL_XDP,
                    libc::XDP_MMAP_OFFSETS,
                    (&mut off as *mut libc::xdp_mmap_offsets).cast(),
                    &mut olen,
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            let desc = size_of::<libc::xdp_desc>();
            let rx = Ring::map(raw, &off.rx, RING, desc, libc::XDP_PGOFF_RX_RING as u64)?;
            let tx = Ring::map(raw, &off.tx, RING, desc, libc::XDP_PGOFF_TX_RING as u64)?;
            let fill = Ring::map(raw, &off.fr, FRAMES, 8, libc::XDP_UMEM_PGOFF_FILL_RING)?;
            let comp = Ring::map(
                raw,
                &off.cr,
                FRAMES,
                8,
                libc::XDP_UMEM_PGOFF_COMPLETION_RING,
            )?;
            Ok((fill, comp, rx, tx))
        };
        let (fill, comp, rx, tx) = match setup() {
            Ok(r) => r,
            Err(e) => {
                drop(fd);
                drop(umem);
                return Err(e);
            }
        };
        // Every frame to the kernel before the bind, so the first packets have somewhere to go.
        for i in 0..FRAMES {
            // SAFETY: slot i of the fill ring, which holds FRAMES entries.
            unsafe { *fill.slot::<u64>(i) = u64::from(i) * FRAME as u64 };
        }
        fill.prod().store(FRAMES, Ordering::Release);
        let mut sock = Socket {
            fill,
            comp,
            rx,
            tx,
            fd,
            umem,
            bind: Copy::ZeroCopy,
        };
        let bind = |flags: u16| {
            // SAFETY: all-zero is valid for sockaddr_xdp.
            let mut sa: libc::sockaddr_xdp = unsafe { zeroed() };
            sa.sxdp_family = libc::AF_XDP as u16;
            sa.sxdp_flags = flags | libc::XDP_USE_NEED_WAKEUP;
            sa.sxdp_ifindex = ifindex;
            sa.sxdp_queue_id = queue;
            // SAFETY: `sa` is a live sockaddr_xdp of the size passed.
            let r = unsafe {
                libc::bind(
                    raw,
                    (&sa as *const libc::sockaddr_xdp).cast(),
                    size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
                )
            };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        if bind(libc::XDP_ZEROCOPY).is_err() {
            bind(libc::XDP_COPY)?;
            sock.bind = Copy::Copy;
        }
        Ok(sock)
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The UMEM as one slice (frames are `FRAME` bytes at multiples of `FRAME`).
    pub fn umem(&mut self) -> &mut [u8] {
        // SAFETY: our mapping of FRAMES * FRAME bytes; the kernel writes only frames that are
        // on the fill ring, which we do not touch until they come back on RX.
        unsafe { std::slice::from_raw_parts_mut(self.umem.0.as_ptr(), FRAMES as usize * FRAME) }
    }

    /// Up to `max` received frames as (address, length), appended to `out`.
    pub fn receive(&mut self, out: &mut Vec<(u64, u32)>, max: usize) {
        let cons = self.rx.cons().load(Ordering::Relaxed);
        let prod = self.rx.prod().load(Ordering::Acquire);
        let n = prod.wrapping_sub(cons).min(max as u32);
        for i in 0..n {
            // SAFETY: entries between consumer and producer are the kernel's finished ones.
            let d = unsafe { &*self.rx.slot::<libc::xdp_desc>(cons.wrapping_add(i)) };
            out.push((d.addr, d.len));
        }
        self.rx
            .cons()
            .store(cons.wrapping_add(n), Ordering::Release);
    }

    /// Gives frames (any address inside them) back to the kernel to receive into.
    pub fn refill(&mut self, addrs: impl ExactSizeIterator<Item = u64>) {
        let prod = self.fill.prod().load(Ordering::Relaxed);
        // The fill ring holds every frame, so it always has room for those we own.
        let n = addrs.len() as u32;
        for (i, a) in addrs.enumerate() {
            // SAFETY: slot within the ring; room as argued above.
            unsafe { *self.fill.slot::<u64>(prod.wrapping_add(i as u32)) = a - a % FRAME as u64 };
        }
        self.fill
            .prod()
            .store(prod.wrapping_add(n), Ordering::Release);
    }

    /// Frames the kernel has sent, appended to `out` (to go back on the fill ring).
    pub fn completed(&mut self, out: &mut Vec<u64>) {
        let cons = self.comp.cons().load(Ordering::Relaxed);
        let prod = self.comp.prod().load(Ordering::Acquire);
        let n = prod.wrapping_sub(cons);
        for i in 0..n {
            // SAFETY: finished entries, as in `receive`.
            out.push(unsafe { *self.comp.slot::<u64>(cons.wrapping_add(i)) });
        }
        self.comp
            .cons()
            .store(cons.wrapping_add(n), Ordering::Release);
    }

    /// Queues frames (address, length) for sending and kicks the kernel; returns how many were
    /// queued (the rest did not fit in the TX ring and are the caller's again).
    pub fn transmit(&mut self, frames: &[(u64, u32)]) -> usize {
        if frames.is_empty() {
            return 0;
        }
        let prod = self.tx.prod().load(Ordering::Relaxed);
        let cons = self.tx.cons().load(Ordering::Acquire);
        let room = RING - prod.wrapping_sub(cons);
        let n = (frames.len() as u32).min(room);
        for (i, &(addr, len)) in frames[..n as usize].iter().enumerate() {
            // SAFETY: a free slot (between producer and consumer + RING).
            let d = unsafe { &mut *self.tx.slot::<libc::xdp_desc>(prod.wrapping_add(i as u32)) };
            d.addr = addr;
            d.len = len;
            d.options = 0;
        }
        self.tx
            .prod()
            .store(prod.wrapping_add(n), Ordering::Release);
        // Copy mode sends only from the system call; zero-copy drivers say when they need one.
        if self.bind == Copy::Copy || self.tx.needs_wakeup() {
            // SAFETY: sendto with no data on our own socket is the documented TX kick.
            unsafe {
                libc::sendto(
                    self.raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
        }
        n as usize
    }

    /// Waits up to `ms` for frames to receive. With need-wakeup the kernel only fills RX after
    /// a poll when the fill ring was empty; poll is that call.
    pub fn wait(&self, ms: i32) {
        let mut p = libc::pollfd {
            fd: self.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        unsafe { libc::poll(&mut p, 1, ms) };
    }

    /// Whether the kernel has frames waiting on RX.
    pub fn has_rx(&self) -> bool {
        self.rx.prod().load(Ordering::Acquire) != self.rx.cons().load(Ordering::Relaxed)
    }
}
