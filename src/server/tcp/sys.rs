//! The few Linux calls the TCP threads make beyond `std` and [`crate::base::epoll`]: an
//! eventfd to wake a thread from another, and `accept4` straight into a non-blocking socket. Thin wrappers, so
//! that the loop in [`super::worker`] reads as the protocol it serves and not as `unsafe`.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An eventfd: other threads [`EventFd::wake`] a TCP thread out of its `epoll_wait` (to stop,
/// or to close a connection evicted for a newcomer).
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as in `Epoll::new`.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64. A full counter (EAGAIN) is already a wake.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter, so that the (level-triggered) descriptor stops being readable.
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64; EAGAIN when it was already zero.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

/// How long the kernel holds a connection that has sent nothing before handing it to
/// `accept` anyway (TCP_DEFER_ACCEPT, one SYN-ACK retransmission). gdnsd sets it too.
/// A connection is then accepted with its query already there: measured with
/// `bench/round3.sh`'s tcp1 loop, ~8 % more one-query connections per core, and a client that
/// connects and stays silent takes no slot until then. The time counts toward its idle
/// timeout (`worker.rs`), so it is still closed `tcp_idle_timeout` after it connected.
pub const DEFER_ACCEPT: std::time::Duration = std::time::Duration::from_secs(1);

/// Sets TCP_DEFER_ACCEPT on a listener (best effort: without it connections are accepted at
/// once, as before).
pub fn defer_accept(listener: &impl AsRawFd) {
    let secs = DEFER_ACCEPT.as_secs() as libc::c_int;
    // SAFETY: a valid socket descriptor and a c_int option value that outlives the call.
    unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Accepts one connection as a non-blocking socket in one system call (std's `accept` needs a
/// second one to make it non-blocking). TCP_NODELAY comes from the listener: Linux copies it
/// into the accepted socket.
pub fn accept(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
    // SAFETY: zeroed sockaddr_storage is a valid value; the kernel fills at most `len` bytes.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `ss` and `len` are valid for writes and describe the same buffer.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor from the kernel, owned by nothing else.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    match crate::server::udp::to_socket_addr(&ss) {
        Some(peer) => Ok((stream, peer)),
        None => Err(io::Error::other("accepted a socket of an unknown family")),
    }
}
