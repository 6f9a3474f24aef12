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
//!   (against both limits) until its task has dropped the socket; the newcomer that evicted it
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

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::{timeout_at, Instant};

use crate::answer::log::Tap;
use crate::answer::{respond, Transport};
use crate::base::counters;
use crate::base::liveness::{Beat, BEAT_EVERY};
use crate::snapshot::{SharedSnapshot, Snapshot};

/// How long a stopping connection waits for the rest of a query it has begun to receive.
const STOP_GRACE: Duration = Duration::from_millis(300);
/// How long a connection closed after `tcp_max_queries` reads (and drops) what the client still
/// sends, so that the close is a FIN after the last answer rather than a reset that could
/// discard answers the client has not read yet.
const LINGER: Duration = Duration::from_secs(1);
/// How long a new connection waits, at the global limit, for the connection it evicted to
/// close; a connection told to go ends at its next await, so this is only a bound.
const EVICT_WAIT: Duration = Duration::from_millis(500);
/// How long the accept loop waits at shutdown for connections to finish their answers.
pub(crate) const SHUTDOWN_WAIT: Duration = Duration::from_millis(1200);

/// The connection table shared by every TCP listener: the limits and who holds a slot.
pub(crate) struct Slots {
    max_total: usize,
    max_per_client: usize,
    /// Origin of the `idle_since` clocks (milliseconds since this instant).
    epoch: Instant,
    table: Mutex<Table>,
    /// Woken whenever a slot is given back.
    freed: Notify,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    /// Every connection whose socket is open, evicted ones included.
    open: HashMap<u64, Entry>,
    /// Open connections by [`client_key`].
    per_client: HashMap<IpAddr, usize>,
}

struct Entry {
    client: IpAddr,
    idle_since: Arc<AtomicU64>,
    evict: Arc<Notify>,
    /// Told to close; still counted until it has.
    evicted: bool,
}

/// Why a connection was not given a slot.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    PerClient,
    /// At the global limit: a connection was told to close (or all are closing already);
    /// wait for [`Slots::freed`] and ask again.
    Full,
}

/// What a client is counted as for `tcp_max_per_client`: an IPv4 address (also when written
/// IPv4-mapped), or an IPv6 /64.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// A held slot; dropping it frees the slot (unless it was taken away by eviction already).
pub(crate) struct Slot {
    slots: Arc<Slots>,
    id: u64,
    idle_since: Arc<AtomicU64>,
    evict: Arc<Notify>,
}

impl Slots {
    pub(crate) fn new(max_total: usize, max_per_client: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max_total: max_total.max(1),
            max_per_client: max_per_client.max(1),
            epoch: Instant::now(),
            table: Mutex::new(Table::default()),
            freed: Notify::new(),
        })
    }

    /// Nanoseconds since the table was made: fine enough that connections answered one
    /// after another never tie (with milliseconds they did, and the pick among ties was the
    /// hash map's order, not the oldest).
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table is consistent after every statement; a panic elsewhere cannot leave it
        // half-updated, so a poisoned lock is still usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a connection from `ip`. At the global limit it tells the idlest connection
    /// to close (unless enough are closing already) and answers [`Refused::Full`]: the slot
    /// is free only once that connection's socket is closed.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let client = client_key(ip);
        let mut t = self.lock();
        if t.per_client.get(&client).copied().unwrap_or(0) >= self.max_per_client {
            return Err(Refused::PerClient);
        }
        if t.open.len() >= self.max_total {
            // One connection closing per newcomer waiting is enough; O(connections), but
            // only at the limit, and a few µs for the default 1024.
            if t.open.values().all(|e| !e.evicted) {
                let victim = t
                    .open
                    .iter()
                    .min_by_key(|(id, e)| (e.idle_since.load(Ordering::Relaxed), **id))
                    .map(|(id, _)| *id);
                if let Some(e) = victim.and_then(|id| t.open.get_mut(&id)) {
                    e.evicted = true;
                    // notify_one keeps the wake-up if the connection is busy right now: it
                    // sees it at its next await.
                    e.evict.notify_one();
                }
            }
            return Err(Refused::Full);
        }
        let id = t.next_id;
        t.next_id += 1;
        let idle_since = Arc::new(AtomicU64::new(self.now()));
        let evict = Arc::new(Notify::new());
        t.open.insert(
            id,
            Entry {
                client,
                idle_since: idle_since.clone(),
                evict: evict.clone(),
                evicted: false,
            },
        );
        *t.per_client.entry(client).or_insert(0) += 1;
        Ok(Slot {
            slots: self.clone(),
            id,
            idle_since,
            evict,
        })
    }

    /// [`Slots::admit`], waiting up to [`EVICT_WAIT`] for an evicted connection to close
    /// when the table is full.
    async fn admit_waiting(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let until = Instant::now() + EVICT_WAIT;
        loop {
            // Registered before asking, so a slot given back in between is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.admit(ip) {
                Err(Refused::Full) => {
                    if timeout_at(until, freed).await.is_err() {
                        return Err(Refused::Full);
                    }
                }
                r => return r,
            }
        }
    }

    /// Connections holding a slot now (evicted ones not yet closed included).
    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().open.len()
    }
}

fn release(t: &mut Table, client: IpAddr) {
    if let Some(n) = t.per_client.get_mut(&client) {
        *n -= 1;
        if *n == 0 {
            t.per_client.remove(&client);
        }
    }
}

impl Slot {
    /// The connection starts waiting for its next query now.
    fn touch(&self) {
        self.idle_since.store(self.slots.now(), Ordering::Relaxed);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.slots.lock();
        if let Some(e) = t.open.remove(&self.id) {
            release(&mut t, e.client);
        }
        drop(t);
        self.slots.freed.notify_waiters();
    }
}

/// Accepts connections on `listener` until `stop`, then waits (bounded) for open connections
/// to answer what they have received.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    snapshot: SharedSnapshot,
    slots: Arc<Slots>,
    mut stop: watch::Receiver<bool>,
    beat: Arc<Beat>,
    log: Tap,
) {
    let mut conns = JoinSet::new();
    // The watchdog's proof that the runtime still polls this loop (crate::base::liveness).
    let mut beat_timer = tokio::time::interval(BEAT_EVERY);
    beat_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (stream, peer) = tokio::select! {
            _ = beat_timer.tick() => {
                beat.stamp();
                continue;
            }
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("tcp accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        // At the global limit this waits (briefly) for the evicted connection to close, and
        // accepts nothing meanwhile: the kernel's backlog holds the next ones.
        let slot = match slots.admit_waiting(peer.ip()).await {
            Ok(s) => s,
            Err(_) => {
                // Closed before anything is read: the client sees the connection end at once
                // and nothing of ours waits on it.
                drop(stream);
                continue;
            }
        };
        let snapshot = snapshot.clone();
        let (stop, log) = (stop.clone(), log.clone());
        conns.spawn(async move {
            let mut stream = stream;
            let end = serve(&mut stream, peer, snapshot, &slot, stop, log).await;
            if matches!(end, Ok(End::Evicted | End::WriteTimeout)) {
                // Unread answers would keep the socket (and its buffers) alive in the kernel
                // after close, behind a FIN the client never reaches: reset instead.
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            }
            // The socket is closed before the slot is given back, never after.
            drop(stream);
            drop(slot);
        });
    }
    // Stop accepting first: a client connecting now is refused by the kernel, not left waiting.
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_WAIT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    // Only a connection stuck writing to a client that does not read is left.
    conns.abort_all();
}

/// The length of the first complete message in `buf`, if one is there (0 = a zero-length
/// message, which ends the connection).
fn complete(buf: &[u8]) -> Option<usize> {
    let len = u16::from_be_bytes([*buf.first()?, *buf.get(1)?]) as usize;
    (buf.len() >= 2 + len).then_some(len)
}

/// How a connection ended, for the tests' and the log's benefit.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Eof,
    Idle,
    Evicted,
    Stopped,
    MaxQueries,
    WriteTimeout,
}

/// Most answer bytes gathered before they are written: a client pipelining hundreds of queries
/// gets its answers in pieces of about this size rather than all at once after the last one.
const OUT_BATCH: usize = 32 * 1024;

async fn serve(
    stream: &mut TcpStream,
    peer: SocketAddr,
    snapshot: SharedSnapshot,
    slot: &Slot,
    mut stop: watch::Receiver<bool>,
    log: Tap,
) -> io::Result<End> {
    let _ = stream.set_nodelay(true);
    let mut inbuf: Vec<u8> = Vec::with_capacity(1024);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    let mut scratch: Vec<u8> = Vec::with_capacity(512);
    let mut answered = 0usize;
    // Set once `tcp_max_queries` answers are reached: what is read is answered, nothing more
    // is read, then the connection closes.
    let mut closing = false;
    let mut stopping = *stop.borrow();
    loop {
        let (idle, max_queries) = {
            let snap = snapshot.load();
            (
                snap.tcp_idle_timeout(),
                *snap.config.config.server.tcp_max_queries.get_ref(),
            )
        };
        let mut deadline = Instant::now() + idle;
        if stopping {
            deadline = deadline.min(Instant::now() + STOP_GRACE);
        }
        // Wait for one whole message: one deadline however the bytes trickle in.
        while complete(&inbuf).is_none() {
            if closing {
                // Every whole query read is answered; a part of one was never received.
                linger_close(stream, slot).await;
                return Ok(End::MaxQueries);
            }
            if stopping && inbuf.is_empty() {
                // Between two messages: nothing received is left unanswered.
                let _ = stream.shutdown().await;
                return Ok(End::Stopped);
            }
            tokio::select! {
                biased;
                r = timeout_at(deadline, stream.read_buf(&mut inbuf)) => match r {
                    Ok(Ok(0)) | Ok(Err(_)) => return Ok(End::Eof),
                    Ok(Ok(_)) => {}
                    Err(_) => return Ok(End::Idle),
                },
                _ = slot.evict.notified() => return Ok(End::Evicted),
                // A dropped sender (Err) means the server is going away too.
                _ = stop.changed(), if !stopping => {
                    stopping = true;
                    deadline = deadline.min(Instant::now() + STOP_GRACE);
                    // What the kernel already holds counts as received (up to 64 KiB: a
                    // client still sending fast must not keep this loop going).
                    while inbuf.len() < 64 * 1024 {
                        match stream.try_read_buf(&mut inbuf) {
                            Ok(0) => return Ok(End::Eof),
                            Ok(_) => continue,
                            Err(_) => break,
                        }
                    }
                }
            }
        }
        // Every whole query received so far is answered before anything is written, and the
        // answers go out in one write: with pipelining one read often holds many queries, and
        // on loopback a send costs several times what answering a query does.
        let snap = snapshot.load();
        let started = std::time::Instant::now();
        let mut at = 0;
        let mut batch = 0;
        let mut eof = false;
        out.clear();
        while let Some(len) = complete(&inbuf[at..]) {
            if len == 0 {
                eof = true;
                break;
            }
            let query = &inbuf[at + 2..at + 2 + len];
            at += 2 + len;
            batch += 1;
            if answer(&snap, query, peer, &log, &mut scratch) {
                counters::record_sent(true, &scratch);
                out.extend_from_slice(&(scratch.len() as u16).to_be_bytes());
                out.extend_from_slice(&scratch);
            }
            answered += 1;
            if max_queries > 0 && answered >= max_queries {
                closing = true;
            }
            if out.len() >= OUT_BATCH {
                break;
            }
        }
        counters::observe_batch(true, started.elapsed(), batch);
        drop(snap);
        inbuf.drain(..at);
        if !out.is_empty() {
            // Idle from here on, stamped before the client can see the answer: a client that
            // reads it and opens another connection must find this one the idler of the two.
            slot.touch();
            // One deadline for the whole write, so a client reading a byte now and then cannot
            // stretch it; and eviction interrupts it: a client that never reads must not hold
            // a slot it has been told to give up.
            tokio::select! {
                biased;
                _ = slot.evict.notified() => return Ok(End::Evicted),
                r = tokio::time::timeout(idle, stream.write_all(&out)) => match r {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Ok(End::Eof),
                    Err(_) => return Ok(End::WriteTimeout),
                },
            }
        }
        if eof {
            return Ok(End::Eof);
        }
    }
}

/// Answers one query into `resp` the way the UDP threads do ([`respond`]: the fast path, else
/// the reference handler), but as TCP: no truncation, edns-tcp-keepalive answered, no RRL
/// (SPEC: it applies to UDP only). False when nothing is to be sent.
fn answer(snap: &Snapshot, query: &[u8], peer: SocketAddr, log: &Tap, resp: &mut Vec<u8>) -> bool {
    let begun = log.begin();
    let (send, outcome) = respond(snap, query, peer, Transport::Tcp, resp);
    crate::answer::count(&outcome);
    if let Some(b) = begun {
        log.end(b, peer, query, send.then_some(&resp[..]), &outcome);
    }
    send
}

/// Sends FIN after the last answer and discards what the client still sends for a moment, so
/// that the close does not turn into a reset (which can destroy unread answers at the client).
/// Eviction cuts it short.
async fn linger_close(stream: &mut TcpStream, slot: &Slot) {
    let _ = stream.shutdown().await;
    // On the heap: an array here would make every connection's future 4 KiB larger, copied
    // at each spawn whether or not the connection ever lingers.
    let mut sink = vec![0u8; 4096];
    let drain = async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(LINGER, drain) => {}
        _ = slot.evict.notified() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_client_limit_refuses_the_newcomer() {
        let slots = Slots::new(100, 2);
        let a = slots.admit(ip("127.0.0.1")).unwrap();
        let _b = slots.admit(ip("127.0.0.1")).unwrap();
        assert_eq!(slots.admit(ip("127.0.0.1")).err(), Some(Refused::PerClient));
        assert!(slots.admit(ip("127.0.0.2")).is_ok());
        drop(a);
        assert!(slots.admit(ip("127.0.0.1")).is_ok());
    }

    #[tokio::test]
    async fn global_limit_evicts_the_idlest_and_counts_it_until_closed() {
        let slots = Slots::new(2, 10);
        let old = slots.admit(ip("127.0.0.1")).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let busy = slots.admit(ip("127.0.0.2")).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        old.touch(); // `old` just answered: now `busy` has waited longest
                     // Full: `busy` is told to go, and the newcomer has no slot until it has gone.
        assert_eq!(slots.admit(ip("127.0.0.3")).err(), Some(Refused::Full));
        tokio::time::timeout(Duration::from_secs(1), busy.evict.notified())
            .await
            .expect("idlest connection evicted");
        assert_eq!(
            slots.open(),
            2,
            "an evicted connection counts until it is closed"
        );
        assert_eq!(slots.lock().per_client.get(&ip("127.0.0.2")), Some(&1));
        // Asking again evicts no one else: one is already closing.
        assert_eq!(slots.admit(ip("127.0.0.4")).err(), Some(Refused::Full));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), old.evict.notified())
                .await
                .is_err(),
            "only one connection is told to go per free slot needed"
        );
        // The waiting newcomer gets the slot as soon as the evicted connection closes.
        let waiting = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.admit_waiting(ip("127.0.0.3")).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(busy);
        let _new = waiting
            .await
            .unwrap()
            .expect("admitted once the slot was freed");
        assert_eq!(slots.open(), 2);
        assert_eq!(slots.lock().per_client.get(&ip("127.0.0.2")), None);
    }

    #[tokio::test]
    async fn a_newcomer_is_refused_when_no_slot_frees_in_time() {
        let slots = Slots::new(1, 10);
        let _stuck = slots.admit(ip("127.0.0.1")).unwrap();
        assert_eq!(
            slots.admit_waiting(ip("127.0.0.2")).await.err(),
            Some(Refused::Full)
        );
        assert_eq!(slots.open(), 1);
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let slots = Slots::new(100, 2);
        let _a = slots.admit(ip("2001:db8:0:1::1")).unwrap();
        let _b = slots.admit(ip("2001:db8:0:1:ffff::2")).unwrap();
        assert_eq!(
            slots.admit(ip("2001:db8:0:1:1234:5678:9abc:def0")).err(),
            Some(Refused::PerClient),
            "a third address of the same /64"
        );
        assert!(slots.admit(ip("2001:db8:0:2::1")).is_ok(), "another /64");
        // IPv4-mapped addresses count as the IPv4 address they carry.
        let _c = slots.admit(ip("192.0.2.1")).unwrap();
        let _d = slots.admit(ip("::ffff:192.0.2.1")).unwrap();
        assert_eq!(slots.admit(ip("192.0.2.1")).err(), Some(Refused::PerClient));
    }

    #[test]
    fn frames() {
        assert_eq!(complete(&[]), None);
        assert_eq!(complete(&[0]), None);
        assert_eq!(complete(&[0, 2, 1]), None);
        assert_eq!(complete(&[0, 2, 1, 2, 9]), Some(2));
        assert_eq!(complete(&[0, 0]), Some(0));
    }
}
