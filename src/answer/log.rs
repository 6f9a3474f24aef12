//! The query log as the transports see it: a [`Tap`] per UDP thread or TCP listener that
//! decides whether a query is logged and hands the finished [`Entry`] to a [`QuerySink`]. The
//! sink (the queue and writer thread of `querylog`, control floor) implements the trait and
//! is passed down as a [`LogHandle`]; the server floor never imports `querylog`.
//!
//! Cost with logging off: one relaxed load and a branch per query ([`Tap::begin`]); sampling
//! one in N is a thread-local counter, so the N−1 others pay that and an increment. Only a
//! logged query makes an [`Entry`] (one allocation for its bytes) and calls through the trait
//! object. What answered (policy, service) comes from the query's outcome, handed to
//! [`Tap::end`] by the transport.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hickory_proto::rr::Name;

use crate::dns::QueryOutcome;
use crate::edns::Transport;

/// One logged query, as the writer gets it.
pub struct Entry {
    /// When the query was taken up.
    pub at: SystemTime,
    /// Processing time, from taking the query up to having the response.
    pub elapsed: Duration,
    pub transport: Transport,
    pub client: SocketAddr,
    /// The address the query came to (the socket's: `0.0.0.0` for a wildcard bind).
    pub server: SocketAddr,
    /// The query's bytes, then the response's.
    bytes: Vec<u8>,
    query_len: usize,
    pub policy: &'static str,
    pub service: Option<Name>,
}

impl Entry {
    pub fn query(&self) -> &[u8] {
        &self.bytes[..self.query_len]
    }
    pub fn response(&self) -> &[u8] {
        &self.bytes[self.query_len..]
    }
}

/// Where logged queries go: implemented by the query log of the control floor.
pub trait QuerySink: Send + Sync {
    /// Takes one entry without blocking (dropping and counting it when it cannot).
    fn submit(&self, entry: Entry);
    /// Writes what is queued and stops; waits at most `wait`.
    fn shutdown(&self, wait: Duration);
}

/// A query log as the server takes it: the sampling rate its owner keeps current (one query
/// in `every`; 0 = off) and the sink.
#[derive(Clone)]
pub struct LogHandle {
    pub every: Arc<AtomicU32>,
    pub sink: Arc<dyn QuerySink>,
}

/// A query being logged: when it was taken up.
pub struct Begun {
    at: SystemTime,
    started: Instant,
}

thread_local! {
    /// One-in-N sampling: queries seen by this thread since the last one logged.
    static SEEN: Cell<u32> = const { Cell::new(0) };
}

/// What a DNS thread or connection holds to log its queries.
#[derive(Clone)]
pub struct Tap {
    every: Arc<AtomicU32>,
    sink: Arc<dyn QuerySink>,
    transport: Transport,
    /// The listening address queries arrive at.
    local: SocketAddr,
}

impl Tap {
    pub fn new(log: &LogHandle, transport: Transport, local: SocketAddr) -> Tap {
        Tap {
            every: log.every.clone(),
            sink: log.sink.clone(),
            transport,
            local,
        }
    }

    /// Whether to log the query about to be answered; call before answering it. With logging
    /// off this is one load and one branch.
    #[inline]
    pub fn begin(&self) -> Option<Begun> {
        let every = self.every.load(Ordering::Relaxed);
        if every == 0 {
            return None;
        }
        self.begin_sampled(every)
    }

    #[inline(never)]
    fn begin_sampled(&self, every: u32) -> Option<Begun> {
        if every > 1 {
            let seen = SEEN.with(|c| {
                let n = c.get() + 1;
                c.set(if n >= every { 0 } else { n });
                n
            });
            if seen < every {
                return None;
            }
        }
        Some(Begun {
            at: SystemTime::now(),
            started: Instant::now(),
        })
    }

    /// Logs a query begun with [`Tap::begin`], with what answered it (`outcome`); `response`
    /// is `None` when nothing was sent (then nothing is logged: there is no response to log,
    /// and such packets are not DNS queries or were dropped on purpose).
    pub fn end(
        &self,
        begun: Begun,
        client: SocketAddr,
        query: &[u8],
        response: Option<&[u8]>,
        outcome: &QueryOutcome<'_>,
    ) {
        let elapsed = begun.started.elapsed();
        let Some(response) = response else {
            return;
        };
        let (policy, service) = answered_by(outcome);
        let mut bytes = Vec::with_capacity(query.len() + response.len());
        bytes.extend_from_slice(query);
        bytes.extend_from_slice(response);
        self.sink.submit(Entry {
            at: begun.at,
            elapsed,
            transport: self.transport,
            client,
            server: self.local,
            bytes,
            query_len: query.len(),
            policy,
            service,
        });
    }
}

/// The policy label (`static` from the zone, `none` outside every zone) and service of an
/// answer, for its log entry.
fn answered_by(o: &QueryOutcome<'_>) -> (&'static str, Option<Name>) {
    if o.rcode.is_none() {
        return ("none", None);
    }
    let policy = match (o.service, o.zone.is_some()) {
        (Some(s), _) => crate::config::POLICIES
            .get(s.policy as usize)
            .copied()
            .unwrap_or("other"),
        (None, true) => "static",
        (None, false) => "none",
    };
    (policy, o.service.map(|s| s.name.clone()))
}
