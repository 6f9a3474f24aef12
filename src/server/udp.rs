//! The UDP loop: one blocking thread per SO_REUSEPORT socket, receiving and sending in batches
//! with `recvmmsg`/`sendmmsg`. On loopback the kernel's per-packet cost dominates everything
//! meridian does in user space (`shared/notes/hickory-0.26.md`), so a system call per batch
//! instead of two per query is the largest single saving; a blocking thread also avoids the
//! epoll round trip and task wake-up an async socket pays per packet. Response rate limiting
//! ([`crate::rrl`]) applies here, to UDP responses only.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::answer::log::Tap;
use crate::answer::{self, Transport};
use crate::base::counters;
use crate::base::liveness::Beat;
use crate::snapshot::{SharedSnapshot, Snapshot};

/// Packets per system call. Under load a batch fills; when idle `MSG_WAITFORONE` returns as soon
/// as one packet is there, so batching adds no latency.
const BATCH: usize = 32;
/// Largest query we read; EDNS queries are small, and anything longer is cut and then FORMERR.
const MAX_QUERY: usize = 4096;
/// How often an idle thread looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);
/// Longest a stopping thread keeps answering what was queued before the stop.
pub(crate) const STOP_DRAIN: Duration = Duration::from_millis(300);

pub(crate) fn to_socket_addr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for AF_INET; storage is large enough.
            let sin = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for AF_INET6.
            let sin6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Serves DNS on `sock` until `stop` is set, each query through [`answer::respond`] (the fast
/// path, else the reference handler), counted from its outcome, then RRL.
/// `beat` is stamped every time round the loop, for the watchdog ([`crate::base::liveness`]); `log`
/// sees every query and response (one branch while logging is off).
pub fn run(
    sock: UdpSocket,
    snapshot: SharedSnapshot,
    stop: Arc<AtomicBool>,
    beat: Arc<Beat>,
    log: Tap,
) {
    let log = &log;
    run_batched_beating(sock, stop, &beat, || {
        // One snapshot per batch, not per packet: a load and its release are ~20 ns, and a
        // batch lasts microseconds, so a reload is still seen by the next batch.
        let snap = snapshot.load();
        move |packet: &[u8], src: SocketAddr, out: &mut Vec<u8>| {
            answer(&snap, log, packet, src, out)
        }
    })
}

/// One UDP query: writes the reply into `out` and says whether to send it. The fast path,
/// else the reference handler (`answer::respond`); then RRL; then the counters and the query
/// log. The socket loop here and the AF_XDP loop (`server/xdp`) both answer through this one
/// function, so their bytes cannot differ.
pub(crate) fn answer(
    snap: &Snapshot,
    log: &Tap,
    packet: &[u8],
    src: SocketAddr,
    out: &mut Vec<u8>,
) -> bool {
    let begun = log.begin();
    // RRL's table line is fetched while the answer is built.
    let prepared = snap.rrl.as_ref().and_then(|r| r.prepare(packet, src.ip()));
    let (send, outcome) = answer::respond(snap, packet, src, Transport::Udp, out);
    answer::count(&outcome);
    // Response rate limiting sees the finished response, whichever path made it;
    // without `[rrl]` this is the one branch it costs. The query log then sees what
    // RRL left to send.
    let send = match &snap.rrl {
        Some(rrl) if send => {
            rrl.allow_prepared(packet, src.ip(), out, &snap.cookie_secret, prepared)
        }
        _ => send,
    };
    if let Some(b) = begun {
        log.end(b, src, packet, send.then_some(&out[..]), &outcome);
    }
    send
}

/// The batched receive/answer/send loop. `batch` is called once per received batch and gives
/// the `answer` for its packets, which writes a reply into its buffer and says whether to send
/// it. `bench/` runs a reflector through this same loop to measure the floor that the kernel
/// and the loop itself set. The socket must be blocking.
pub fn run_batched<A>(sock: UdpSocket, stop: Arc<AtomicBool>, batch: impl FnMut() -> A)
where
    A: FnMut(&[u8], SocketAddr, &mut Vec<u8>) -> bool,
{
    run_batched_beating(sock, stop, &Beat::new(), batch)
}

/// [`run_batched`] that stamps `beat` every time round the loop: each batch, or the idle timeout.
fn run_batched_beating<A>(
    sock: UdpSocket,
    stop: Arc<AtomicBool>,
    beat: &Beat,
    mut batch: impl FnMut() -> A,
) where
    A: FnMut(&[u8], SocketAddr, &mut Vec<u8>) -> bool,
{
    let _ = sock.set_read_timeout(Some(STOP_POLL));
    let fd = sock.as_raw_fd();
    let mut bufs = vec![[0u8; MAX_QUERY]; BATCH];
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1232)).collect();
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut addrs: Vec<libc::sockaddr_storage> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: MAX_QUERY,
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
    let mut send_iovs: Vec<libc::iovec> = (0..BATCH)
        .map(|_| libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        })
        .collect();
    let mut send_msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();

    // Once `stop` is set, what is already queued on the socket still counts as received: it is
    // read without waiting and answered, for at most STOP_DRAIN, then the loop ends.
    let mut drain_until: Option<Instant> = None;
    loop {
        // Once per batch (or idle timeout), before recvmmsg so that its errno is read untouched.
        beat.stamp();
        let flags = if stop.load(Ordering::Relaxed) {
            let until = *drain_until.get_or_insert_with(|| Instant::now() + STOP_DRAIN);
            if Instant::now() >= until {
                break;
            }
            libc::MSG_DONTWAIT
        } else {
            libc::MSG_WAITFORONE
        };
        for i in 0..BATCH {
            let h = &mut msgs[i].msg_hdr;
            h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            msgs[i].msg_len = 0;
        }
        // SAFETY: every header points at live buffers of the stated sizes owned by this frame.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            if drain_until.is_some()
                && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
            {
                break; // stopping and nothing left queued
            }
            continue; // timeout (stop check), EINTR, or an ICMP error from an earlier send
        }
        let n = n as usize;
        let mut ready = 0;
        // Query duration per batch, attributed evenly to its packets: two clock reads per
        // batch instead of one or two per packet. A read costs ~40 ns here (a quarter of a
        // fast-path answer); per batch it is ~2.5 ns a packet when load fills the batches,
        // which is when the cost matters. Sum and count stay exact; the buckets hold per-batch
        // means, which are per-query times when batches hold one packet (light load).
        let started = Instant::now();
        let mut answer = batch();
        for i in 0..n {
            let Some(src) = to_socket_addr(&addrs[i]) else {
                continue;
            };
            let len = (msgs[i].msg_len as usize).min(MAX_QUERY);
            let packet = &bufs[i][..len];
            let out = &mut outs[i];
            if !answer(packet, src, out) {
                continue;
            }
            counters::record_sent(false, out);
            let reply: &[u8] = out;
            send_iovs[ready] = libc::iovec {
                iov_base: reply.as_ptr() as *mut libc::c_void,
                iov_len: reply.len(),
            };
            let h = &mut send_msgs[ready].msg_hdr;
            h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = msgs[i].msg_hdr.msg_namelen;
            h.msg_iov = &mut send_iovs[ready];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            ready += 1;
        }
        counters::observe_batch(false, started.elapsed(), n);
        let mut sent = 0;
        while sent < ready {
            // SAFETY: the headers point at replies and addresses that live until the loop ends.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    send_msgs[sent..].as_mut_ptr(),
                    (ready - sent) as libc::c_uint,
                    0,
                )
            };
            if r <= 0 {
                // A send that fails (e.g. an unreachable client) must not stall the others:
                // skip that one message.
                sent += 1;
            } else {
                sent += r as usize;
            }
        }
    }
}
