//! One TCP thread: an epoll loop over its own SO_REUSEPORT listeners and the connections it
//! accepted from them. Nothing here is per-connection but the connection itself: no task, no
//! timer entry, no wake-up object; a connection is registered with epoll once, when it first has
//! to wait, and leaves the set when its socket is closed (no `EPOLL_CTL_DEL`). Deadlines are
//! swept every [`SWEEP`]; the table of slots is shared with the other threads ([`Slots`]).
//!
//! A connection that opens, asks one question and closes costs `accept4`, `read`, `write`, one
//! `epoll_ctl`, the `read` of its EOF and `close`: the first read is tried at once after the
//! accept (on loopback and on most real paths the query arrived with or just after the
//! handshake's last ACK), so the common case never waits in epoll before it is answered.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::slots::{Inbox, Refused, Slot, Slots};
use super::sys;
use super::{complete, EVICT_WAIT, LINGER, OUT_BATCH, SHUTDOWN_WAIT, STOP_GRACE};
use crate::answer::log::Tap;
use crate::answer::{respond, Transport};
use crate::base::counters;
use crate::base::epoll::{Epoll, ET, IN, OUT};
use crate::base::liveness::Beat;
use crate::snapshot::{SharedSnapshot, Snapshot};

/// How often deadlines are looked at: a connection outlives its idle timeout by at most this.
const SWEEP: Duration = Duration::from_millis(50);
/// Connections accepted from one listener before the loop turns to the others' work.
const ACCEPT_BURST: usize = 64;
/// How long accepting pauses after an error such as running out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Bytes read at once.
const READ_SIZE: usize = 64 * 1024;
/// Most bytes a stopping connection reads from what the kernel holds (a client still sending
/// fast must not keep it going).
const STOP_READ: usize = 64 * 1024;

/// epoll tokens: the inbox, listeners (`LISTENER | index`), and connections
/// (`generation << 32 | index`, so an event for a closed connection whose place was reused in
/// the same round is recognised as stale).
const WAKE: u64 = u64::MAX;
const LISTENER: u64 = 1 << 63;

/// The listeners a thread accepts from, each with the query log's view of it.
pub(crate) struct Listen {
    pub sock: TcpListener,
    pub tap: Tap,
}

struct Listener {
    sock: Option<TcpListener>,
    tap: Tap,
    /// Edge-triggered: true from an event until `accept` says `EAGAIN`.
    ready: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// Waiting for (the rest of) a query; the deadline is the idle timeout.
    Reading,
    /// Answers are waiting for the socket to take them; the deadline is the write bound.
    Writing,
    /// `tcp_max_queries` reached: FIN sent, what the client still sends is read and dropped.
    Lingering,
}

/// How a connection is closed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Close {
    /// The client is done (EOF, an error), or went idle: close(2).
    Plain,
    /// Between two answers at shutdown: FIN first, so the client reads EOF after its answers.
    Fin,
    /// Evicted, or stuck behind a client that does not read: reset (SO_LINGER 0), so the kernel
    /// does not keep the socket and its unread answers behind a FIN no one reaches.
    Reset,
}

struct Conn {
    // Declared before `slot`: the socket is closed before the slot is given back.
    stream: TcpStream,
    slot: Slot,
    peer: SocketAddr,
    listener: usize,
    gen: u32,
    state: State,
    deadline: Instant,
    /// Bytes of a query not yet whole (no allocation while empty: a connection between queries
    /// holds no buffer).
    inbuf: Vec<u8>,
    /// Answer bytes the socket has not taken yet, from `out_at`.
    out: Vec<u8>,
    out_at: usize,
    /// The epoll events asked for; 0 while not registered.
    interest: u32,
    answered: usize,
    /// `tcp_max_queries` answered: what was read is answered, nothing more is read.
    closing: bool,
    /// A zero-length message came: close once the answers before it are sent.
    eof: bool,
}

/// Buffers shared by every connection of the thread.
struct Bufs {
    read: Vec<u8>,
    out: Vec<u8>,
    scratch: Vec<u8>,
}

struct Pending {
    stream: TcpStream,
    peer: SocketAddr,
    listener: usize,
    until: Instant,
}

pub(crate) struct Worker {
    ep: Epoll,
    inbox: Arc<Inbox>,
    listeners: Vec<Listener>,
    conns: Vec<Option<Conn>>,
    gens: Vec<u32>,
    free: Vec<usize>,
    /// A connection accepted at the global limit, waiting (at most [`EVICT_WAIT`]) for the one
    /// it evicted to close. Nothing else is accepted meanwhile: the backlog holds the rest.
    pending: Option<Pending>,
    accept_paused_until: Option<Instant>,
    snapshot: SharedSnapshot,
    slots: Arc<Slots>,
    stop: Arc<AtomicBool>,
    /// When the stop was seen.
    stopped_at: Option<Instant>,
    beat: Arc<Beat>,
    bufs: Bufs,
}

impl Worker {
    pub(crate) fn new(
        listeners: Vec<Listen>,
        snapshot: SharedSnapshot,
        slots: Arc<Slots>,
        inbox: Arc<Inbox>,
        stop: Arc<AtomicBool>,
        beat: Arc<Beat>,
    ) -> io::Result<Worker> {
        let ep = Epoll::new()?;
        ep.add(inbox.wake.fd(), IN, WAKE)?;
        for (i, l) in listeners.iter().enumerate() {
            l.sock.set_nonblocking(true)?;
            ep.add(l.sock.as_raw_fd(), IN | ET, LISTENER | i as u64)?;
        }
        Ok(Worker {
            ep,
            inbox,
            listeners: listeners
                .into_iter()
                .map(|l| Listener {
                    sock: Some(l.sock),
                    tap: l.tap,
                    // Connections may have queued before registration.
                    ready: true,
                })
                .collect(),
            conns: Vec::new(),
            gens: Vec::new(),
            free: Vec::new(),
            pending: None,
            accept_paused_until: None,
            snapshot,
            slots,
            stop,
            stopped_at: None,
            beat,
            bufs: Bufs {
                read: Vec::with_capacity(READ_SIZE),
                out: Vec::with_capacity(OUT_BATCH + 1024),
                scratch: Vec::with_capacity(512),
            },
        })
    }

    /// Serves until the stop flag is set, then answers what was received (bounded by
    /// [`SHUTDOWN_WAIT`]) and returns.
    pub(crate) fn run(mut self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut next_sweep = Instant::now() + SWEEP;
        loop {
            self.beat.stamp();
            let now = Instant::now();
            if self.stopped_at.is_none() && self.stop.load(Ordering::Relaxed) {
                self.begin_stop(now);
            }
            if let Some(at) = self.stopped_at {
                if self.live() == 0 {
                    return;
                }
                if now >= at + SHUTDOWN_WAIT {
                    // Only connections stuck writing to clients that do not read are left.
                    self.close_all();
                    return;
                }
            }
            let timeout = if self.can_accept(now) && self.listeners.iter().any(|l| l.ready) {
                0
            } else if self.pending.is_some() {
                2
            } else {
                next_sweep.saturating_duration_since(now).as_millis() as i32 + 1
            };
            // An interrupted (or failed) wait is an empty round.
            let n = self.ep.wait(&mut events, timeout).unwrap_or(0);
            for ev in &events[..n] {
                let (token, flags) = (ev.u64, ev.events);
                if token == WAKE {
                    self.inbox.wake.drain();
                    for id in self.inbox.take_evicted() {
                        if let Some(i) = self.find_slot(id) {
                            let close = if self.conn(i).state == State::Lingering {
                                Close::Plain
                            } else {
                                Close::Reset
                            };
                            self.close(i, close);
                        }
                    }
                } else if token & LISTENER != 0 {
                    if let Some(l) = self.listeners.get_mut((token & !LISTENER) as usize) {
                        l.ready = true;
                    }
                } else {
                    let i = (token & 0xffff_ffff) as usize;
                    let gen = (token >> 32) as u32;
                    if self
                        .conns
                        .get(i)
                        .is_some_and(|c| c.as_ref().is_some_and(|c| c.gen == gen))
                    {
                        self.on_event(i, flags);
                    }
                }
            }
            let now = Instant::now();
            self.retry_pending(now);
            self.accept(now);
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP;
            }
        }
    }

    fn live(&self) -> usize {
        self.conns.len() - self.free.len()
    }

    fn conn(&mut self, i: usize) -> &mut Conn {
        // Only called with the index of a live connection.
        self.conns[i].as_mut().expect("a live connection")
    }

    fn find_slot(&self, id: u64) -> Option<usize> {
        // O(connections), only for an eviction (at the global limit).
        self.conns
            .iter()
            .position(|c| c.as_ref().is_some_and(|c| c.slot.id == id))
    }

    fn can_accept(&self, now: Instant) -> bool {
        self.stopped_at.is_none()
            && self.pending.is_none()
            && self.accept_paused_until.is_none_or(|t| now >= t)
    }

    fn accept(&mut self, now: Instant) {
        for li in 0..self.listeners.len() {
            for _ in 0..ACCEPT_BURST {
                if !self.can_accept(now) || !self.listeners[li].ready {
                    break;
                }
                let Some(sock) = self.listeners[li].sock.as_ref() else {
                    break;
                };
                match sys::accept(sock) {
                    Ok((stream, peer)) => self.admit(stream, peer, li, now),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.listeners[li].ready = false;
                    }
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO)
                        ) => {}
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("tcp accept failed: {e}");
                        self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    }
                }
            }
        }
    }

    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, listener: usize, now: Instant) {
        match self.slots.admit(peer.ip(), &self.inbox) {
            Ok(slot) => self.open(stream, slot, peer, listener, now),
            // Closed before anything is read: the client sees the connection end at once and
            // nothing of ours waits on it.
            Err(Refused::PerClient) => drop(stream),
            Err(Refused::Full) => {
                self.pending = Some(Pending {
                    stream,
                    peer,
                    listener,
                    until: now + EVICT_WAIT,
                })
            }
        }
    }

    fn retry_pending(&mut self, now: Instant) {
        let Some(p) = self.pending.take() else {
            return;
        };
        match self.slots.admit(p.peer.ip(), &self.inbox) {
            Ok(slot) => self.open(p.stream, slot, p.peer, p.listener, now),
            Err(Refused::Full) if now < p.until => self.pending = Some(p),
            Err(_) => drop(p.stream),
        }
    }

    fn open(
        &mut self,
        stream: TcpStream,
        slot: Slot,
        peer: SocketAddr,
        listener: usize,
        now: Instant,
    ) {
        let idle = self.snapshot.load().tcp_idle_timeout();
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.gens.push(0);
                self.conns.len() - 1
            }
        };
        self.gens[i] = self.gens[i].wrapping_add(1);
        self.conns[i] = Some(Conn {
            stream,
            slot,
            peer,
            listener,
            gen: self.gens[i],
            state: State::Reading,
            deadline: now + idle,
            inbuf: Vec::new(),
            out: Vec::new(),
            out_at: 0,
            interest: 0,
            answered: 0,
            closing: false,
            eof: false,
        });
        // The query is usually there already: try it before asking epoll.
        self.on_event(i, IN);
    }

    fn token(&self, i: usize) -> u64 {
        (u64::from(self.gens[i]) << 32) | i as u64
    }

    /// Registers (or re-registers) a connection for `want`; false when epoll refused.
    fn interest(&mut self, i: usize, want: u32) -> bool {
        let token = self.token(i);
        let ep = &self.ep;
        let c = self.conns[i].as_mut().expect("a live connection");
        if c.interest == want {
            return true;
        }
        let fd = c.stream.as_raw_fd();
        let r = if c.interest == 0 {
            ep.add(fd, want, token)
        } else {
            ep.modify(fd, want, token)
        };
        c.interest = want;
        r.is_ok()
    }

    fn on_event(&mut self, i: usize, _flags: u32) {
        match self.conn(i).state {
            State::Reading => self.read(i),
            State::Writing => self.flush(i),
            State::Lingering => self.discard(i),
        }
    }

    /// One read, then everything whole is answered.
    fn read(&mut self, i: usize) {
        let Some(c) = self.conns[i].as_mut() else {
            return;
        };
        let got = if c.inbuf.is_empty() {
            read_into(&mut c.stream, &mut self.bufs.read, READ_SIZE)
        } else {
            // The rest of a query begun earlier: read it where the beginning is.
            let want = match c.inbuf.get(..2) {
                Some(p) => (2 + u16::from_be_bytes([p[0], p[1]]) as usize).max(4096),
                None => 4096,
            };
            read_into(&mut c.stream, &mut c.inbuf, want)
        };
        match got {
            Ok(0) => self.close(i, Close::Plain),
            Ok(_) => {
                let from_shared = c.inbuf.is_empty();
                if from_shared {
                    let data = std::mem::take(&mut self.bufs.read);
                    let used = self.process(i, &data);
                    self.bufs.read = data;
                    if let Some(c) = self.conns[i].as_mut() {
                        c.inbuf.extend_from_slice(&self.bufs.read[used..]);
                    }
                    self.bufs.read.clear();
                } else {
                    self.process_inbuf(i);
                }
                self.after_answers(i);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if c.interest == 0 {
                    // The read right after accept found nothing: with TCP_DEFER_ACCEPT the
                    // kernel hands over a connection without data only once it has been
                    // silent for the defer period, which counts toward its idle timeout.
                    let now = Instant::now();
                    c.deadline = c
                        .deadline
                        .checked_sub(super::sys::DEFER_ACCEPT)
                        .map_or(now, |d| d.max(now));
                }
                if !self.interest(i, IN) {
                    self.close(i, Close::Plain);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.close(i, Close::Plain),
        }
    }

    /// Answers the whole queries held in the connection's own buffer.
    fn process_inbuf(&mut self, i: usize) {
        let Some(c) = self.conns[i].as_mut() else {
            return;
        };
        let data = std::mem::take(&mut c.inbuf);
        let used = self.process(i, &data);
        if let Some(c) = self.conns[i].as_mut() {
            let mut data = data;
            data.drain(..used);
            // A connection between queries keeps no large buffer.
            if data.is_empty() && data.capacity() > 4096 {
                data = Vec::new();
            }
            c.inbuf = data;
        }
    }

    /// Answers every whole query at the start of `data` (sending the answers in writes of
    /// about [`OUT_BATCH`]) and returns how many bytes were used. Stops early, with the answers
    /// it could not send held by the connection, when the socket is full. The connection may be
    /// closed on return.
    fn process(&mut self, i: usize, data: &[u8]) -> usize {
        let snap = self.snapshot.load();
        let (idle, max_queries) = (
            snap.tcp_idle_timeout(),
            *snap.config.config.server.tcp_max_queries.get_ref(),
        );
        let stopped_at = self.stopped_at;
        let Worker {
            conns,
            bufs,
            listeners,
            ..
        } = self;
        let Some(c) = conns[i].as_mut() else {
            return data.len();
        };
        let tap = &listeners[c.listener].tap;
        let mut at = 0;
        let mut any = false;
        let mut gone = false;
        while c.state == State::Reading && !c.eof {
            let started = Instant::now();
            let mut batch = 0;
            bufs.out.clear();
            while let Some(len) = complete(&data[at..]) {
                if len == 0 {
                    c.eof = true;
                    at = data.len();
                    break;
                }
                let query = &data[at + 2..at + 2 + len];
                at += 2 + len;
                batch += 1;
                if answer(&snap, query, c.peer, tap, &mut bufs.scratch) {
                    let r = &bufs.scratch;
                    counters::record_sent(true, r);
                    bufs.out.extend_from_slice(&(r.len() as u16).to_be_bytes());
                    bufs.out.extend_from_slice(r);
                }
                c.answered += 1;
                if max_queries > 0 && c.answered >= max_queries {
                    c.closing = true;
                }
                if bufs.out.len() >= OUT_BATCH {
                    break;
                }
            }
            if batch == 0 {
                break;
            }
            any = true;
            counters::observe_batch(true, started.elapsed(), batch);
            if bufs.out.is_empty() {
                continue;
            }
            // Idle from here on, stamped before the client can see the answer: a client that
            // reads it and opens another connection must find this one the idler of the two.
            c.slot.touch();
            match write_some(&mut c.stream, &bufs.out) {
                Ok(n) if n == bufs.out.len() => {}
                Ok(n) => {
                    c.out.clear();
                    c.out.extend_from_slice(&bufs.out[n..]);
                    c.out_at = 0;
                    c.state = State::Writing;
                    // One bound for the whole write, so a client reading a byte now and then
                    // cannot stretch it.
                    c.deadline = Instant::now() + idle;
                }
                Err(_) => {
                    // The client is gone; what it sent after is of no use.
                    gone = true;
                    at = data.len();
                    break;
                }
            }
        }
        if any && c.state == State::Reading {
            c.deadline = Instant::now() + idle;
            if let Some(s) = stopped_at {
                c.deadline = c.deadline.min(s + STOP_GRACE);
            }
        }
        drop(snap);
        if gone {
            self.close(i, Close::Plain);
        }
        at
    }

    /// What a connection does once its answers are out: wait for more, linger, or close.
    fn after_answers(&mut self, i: usize) {
        let stopping = self.stopped_at.is_some();
        let Some(c) = self.conns[i].as_mut() else {
            return;
        };
        match c.state {
            State::Writing => {
                if !self.interest(i, OUT) {
                    self.close(i, Close::Reset);
                }
            }
            State::Lingering => {}
            State::Reading if c.eof => self.close(i, Close::Plain),
            State::Reading if c.closing => {
                // Every whole query read is answered; a part of one was never received. FIN
                // after the last answer, then what the client still sends is read and dropped
                // for a moment, so the close is not a reset that could destroy answers the
                // client has not read yet.
                let _ = c.stream.shutdown(Shutdown::Write);
                c.state = State::Lingering;
                c.deadline = Instant::now() + LINGER;
                c.inbuf = Vec::new();
                if !self.interest(i, IN) {
                    self.close(i, Close::Plain);
                }
            }
            // Between two messages at shutdown: nothing received is left unanswered.
            State::Reading if stopping && c.inbuf.is_empty() => self.close(i, Close::Fin),
            State::Reading => {
                if !self.interest(i, IN) {
                    self.close(i, Close::Plain);
                }
            }
        }
    }

    /// Sends what the socket would not take before; once all is out, answers what else is
    /// whole in the connection's buffer.
    fn flush(&mut self, i: usize) {
        let Some(c) = self.conns[i].as_mut() else {
            return;
        };
        match write_some(&mut c.stream, &c.out[c.out_at..]) {
            Ok(n) => {
                c.out_at += n;
                if c.out_at < c.out.len() {
                    return;
                }
                c.out = Vec::new();
                c.out_at = 0;
                c.state = State::Reading;
                let idle = self.snapshot.load().tcp_idle_timeout();
                c.deadline = Instant::now() + idle;
                if let Some(at) = self.stopped_at {
                    c.deadline = c.deadline.min(at + STOP_GRACE);
                }
                self.process_inbuf(i);
                self.after_answers(i);
            }
            Err(_) => self.close(i, Close::Plain),
        }
    }

    fn discard(&mut self, i: usize) {
        let Some(c) = self.conns[i].as_mut() else {
            return;
        };
        match read_into(&mut c.stream, &mut self.bufs.read, READ_SIZE) {
            Ok(0) => self.close(i, Close::Plain),
            Ok(_) => self.bufs.read.clear(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => self.close(i, Close::Plain),
        }
    }

    fn sweep(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_ref() else {
                continue;
            };
            if c.deadline > now {
                continue;
            }
            let how = match c.state {
                // Idle: the whole query did not arrive in time.
                State::Reading | State::Lingering => Close::Plain,
                State::Writing => Close::Reset,
            };
            self.close(i, how);
        }
    }

    fn begin_stop(&mut self, now: Instant) {
        self.stopped_at = Some(now);
        // Stop accepting first: a client connecting now is refused by the kernel, not left
        // waiting.
        for l in &mut self.listeners {
            l.sock = None;
            l.ready = false;
        }
        self.pending = None;
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_mut() else {
                continue;
            };
            if c.state != State::Reading {
                continue;
            }
            // What the kernel already holds counts as received.
            while c.inbuf.len() < STOP_READ {
                match read_into(&mut c.stream, &mut c.inbuf, 4096) {
                    Ok(0) => {
                        c.eof = true;
                        break;
                    }
                    Ok(_) => continue,
                    Err(_) => break,
                }
            }
            c.deadline = c.deadline.min(now + STOP_GRACE);
            let eof_before = c.eof;
            self.process_inbuf(i);
            if eof_before {
                if let Some(c) = self.conns[i].as_mut() {
                    c.eof = true;
                }
            }
            self.after_answers(i);
        }
    }

    fn close_all(&mut self) {
        for i in 0..self.conns.len() {
            if let Some(c) = self.conns[i].as_ref() {
                let how = if c.state == State::Writing {
                    Close::Reset
                } else {
                    Close::Plain
                };
                self.close(i, how);
            }
        }
    }

    fn close(&mut self, i: usize, how: Close) {
        let Some(c) = self.conns[i].take() else {
            return;
        };
        self.free.push(i);
        match how {
            Close::Plain => {}
            Close::Fin => {
                let _ = c.stream.shutdown(Shutdown::Write);
            }
            Close::Reset => {
                let _ = socket2::SockRef::from(&c.stream).set_linger(Some(Duration::ZERO));
            }
        }
        // The socket is closed before the slot is given back, never after.
        let Conn { stream, slot, .. } = c;
        drop(stream);
        drop(slot);
    }
}

/// One `read` into the spare room of `buf` (grown to at least `room` free bytes), without
/// zeroing that room first (64 KiB of memset a read would cost more than the read).
fn read_into(stream: &mut TcpStream, buf: &mut Vec<u8>, room: usize) -> io::Result<usize> {
    let len = buf.len();
    if buf.capacity() - len < room {
        buf.reserve(room);
    }
    let spare = buf.capacity() - len;
    // SAFETY: the kernel writes at most `spare` bytes at the end of the vector's allocation,
    // and `set_len` covers only what it reports written.
    let n = unsafe { libc::read(stream.as_raw_fd(), buf.as_mut_ptr().add(len).cast(), spare) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `n` bytes after `len` were just written, and `n <= spare`.
    unsafe { buf.set_len(len + n as usize) };
    Ok(n as usize)
}

/// Writes as much of `data` as the socket takes now (0 when it takes nothing).
fn write_some(stream: &mut TcpStream, mut data: &[u8]) -> io::Result<usize> {
    let total = data.len();
    while !data.is_empty() {
        match stream.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total - data.len())
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
