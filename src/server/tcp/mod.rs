//! DNS over TCP (RFC 7766, RFC 7828) with the limits of SPEC "Abuse resistance".
//!
//! - **Slots.** At most `tcp_max_connections` connections are open, and at most
//!   `tcp_max_per_client` from one client (an IPv4 address, or an IPv6 /64: one host is
//!   usually given a whole /64, so counting IPv6 addresses would leave it unlimited). A client
//!   over its own limit is closed at once: it is the one holding too much. At the global limit
//!   a new connection takes the slot of the connection that has waited longest for its next
//!   query (RFC 7766 §6.2.3: under pressure close idle connections first). Refusing the
//!   newcomer instead would let anyone who opens `tcp_max_connections` idle connections lock
//!   every other client out of TCP; evicting the idlest costs an attacker a fresh connection
//!   per slot held, and a client that is being answered is always newer than the connections
//!   that sit idle.
//! - **A slot is held until the socket is closed.** An evicted connection keeps counting
//!   (against both limits) until its thread has closed the socket; the newcomer that evicted it
//!   waits for that (at most [`EVICT_WAIT`]). Eviction interrupts whatever the connection is
//!   doing, a blocked write included, and a connection that is evicted or misses its write
//!   deadline is reset (SO_LINGER 0) rather than closed with a FIN queued behind answers the
//!   client never reads, which would leave the kernel holding the socket and its buffers.
//! - **Deadlines.** Each query must arrive whole within `tcp_idle_timeout` of the previous answer
//!   (or of the connection opening). It is one deadline for the length prefix and the message,
//!   not a timeout per read: a client trickling one byte a second cannot stretch a query past
//!   the idle timeout. Writing an answer has the same bound, so a client that never reads
//!   cannot hold a slot by filling the socket buffers.
//! - **Queries per connection.** `tcp_max_queries` (default 0: no limit, as Knot, NSD and
//!   gdnsd): once that many are answered the connection is closed, after answering every whole
//!   query already read (a pipelining client loses nothing it had sent before the close).
//! - **Keepalive.** `dns::handle` answers the edns-tcp-keepalive option over TCP with the idle
//!   timeout (the fast path leaves such queries to it); the connection loop keeps to the same
//!   value.
//! - **Batches.** Queries are answered as UDP's are (`answer::respond`: the fast path, else
//!   the reference),
//!   without truncation or RRL. All whole queries one read brings are answered before one write
//!   sends their answers, in order: on loopback a send costs more than answering several
//!   queries, and a pipelining client (dnsperf -m tcp) sends many per read.
//! - **Stopping.** On shutdown a connection answers every query it has already received, closes
//!   between two answers (never inside one) and ends; a connection waiting for a query closes at
//!   once.
//! - **Threads, not tasks.** As many threads as UDP's (`[server] udp_sockets`), each with its
//!   own SO_REUSEPORT listener per address and its own epoll loop ([`worker`]): the kernel
//!   spreads connections over them, and a connection costs no task, timer entry or epoll
//!   deregistration. With tokio's task per connection a one-query connection cost 0.87× gdnsd's
//!   per core; the kernel's share of a connection is most of its cost, and what is left in user
//!   space is what decides the race (docs/performance.md, "DNS over TCP").

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::base::liveness::Beat;
use crate::snapshot::SharedSnapshot;

mod slots;
pub(super) mod sys;
mod worker;

pub(crate) use slots::Slots;
pub(crate) use worker::Listen;

/// How long a stopping connection waits for the rest of a query it has begun to receive.
const STOP_GRACE: Duration = Duration::from_millis(300);
/// How long a connection closed after `tcp_max_queries` reads (and drops) what the client still
/// sends, so that the close is a FIN after the last answer rather than a reset that could
/// discard answers the client has not read yet.
const LINGER: Duration = Duration::from_secs(1);
/// How long a new connection waits, at the global limit, for the connection it evicted to
/// close; the evicted one's thread closes it at its next turn, so this is only a bound.
const EVICT_WAIT: Duration = Duration::from_millis(500);
/// How long a thread waits at shutdown for its connections to finish their answers.
pub(crate) const SHUTDOWN_WAIT: Duration = Duration::from_millis(1200);
/// Most answer bytes gathered before they are written: a client pipelining hundreds of queries
/// gets its answers in pieces of about this size rather than all at once after the last one.
const OUT_BATCH: usize = 32 * 1024;

/// The length of the first complete message in `buf`, if one is there (0 = a zero-length
/// message, which ends the connection).
fn complete(buf: &[u8]) -> Option<usize> {
    let len = u16::from_be_bytes([*buf.first()?, *buf.get(1)?]) as usize;
    (buf.len() >= 2 + len).then_some(len)
}

/// The running TCP threads.
pub(crate) struct TcpThreads {
    stop: Arc<AtomicBool>,
    inboxes: Vec<Arc<slots::Inbox>>,
    threads: Vec<JoinHandle<()>>,
}

impl TcpThreads {
    /// Starts one thread per entry of `per_thread` (its listeners), sharing `slots`.
    pub(crate) fn start(
        per_thread: Vec<(Vec<Listen>, Arc<Beat>)>,
        snapshot: &SharedSnapshot,
        slots: &Arc<Slots>,
    ) -> io::Result<TcpThreads> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut inboxes = Vec::new();
        let mut threads = Vec::new();
        for (i, (listeners, beat)) in per_thread.into_iter().enumerate() {
            let inbox = slots::Inbox::new()?;
            let w = worker::Worker::new(
                listeners,
                snapshot.clone(),
                slots.clone(),
                inbox.clone(),
                stop.clone(),
                beat,
            )?;
            inboxes.push(inbox);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("tcp #{i}"))
                    .spawn(move || {
                        crate::base::sched::answering();
                        w.run()
                    })?,
            );
        }
        Ok(TcpThreads {
            stop,
            inboxes,
            threads,
        })
    }

    /// Tells every thread to stop (they close their listeners at once and end within
    /// [`SHUTDOWN_WAIT`]) and hands back the threads to join.
    pub(crate) fn stop(self) -> Vec<JoinHandle<()>> {
        self.stop.store(true, Ordering::Relaxed);
        for i in &self.inboxes {
            i.wake.wake();
        }
        self.threads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        assert_eq!(complete(&[]), None);
        assert_eq!(complete(&[0]), None);
        assert_eq!(complete(&[0, 2, 1]), None);
        assert_eq!(complete(&[0, 2, 1, 2, 9]), Some(2));
        assert_eq!(complete(&[0, 0]), Some(0));
    }
}
