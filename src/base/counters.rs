//! The process's counters as a leaf: plain atomics (and a locked map for probes, a few a
//! second) that any floor may bump without importing the exposition. `metrics` (faces floor)
//! reads them at scrape time and renders them; nothing here knows about Prometheus text.
//!
//! - Per transport: responses, responses sent with TC, malformed queries, and the
//!   query-processing-time histogram `meridian_query_duration_seconds`. The counters are one
//!   relaxed add each. The histogram is sharded by thread (each UDP thread and tokio worker
//!   gets its own cache-line-aligned shard, picked once per thread), so the UDP threads do not
//!   bounce one line between cores at every query; an observation is a bucket search over 13
//!   bounds (the common bucket first in practice, so the branches predict) and two relaxed
//!   adds. What is timed and where is up to the caller: the UDP loop times each `recvmmsg`
//!   batch and attributes the time evenly to its packets ([`observe_batch`], two clock reads
//!   per batch), TCP times each read's queries the same way.
//! - Reloads: attempts, failures, whether the last one worked and when one last did.
//! - Probes: results and durations per (service, endpoint), kept across reloads for the
//!   endpoints that remain ([`retain_probes`]).
//!
//! The per-zone and per-service query counters live with the zone and the service (they are
//! counted from a query's outcome on the answer floor, `answer::count`).

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::histogram::Histogram;

use super::clock::unix_secs;

// ---------------------------------------------------------------------------------------------
// Per transport (index: `tcp as usize`)

static QUERIES: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static TRUNCATED: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static MALFORMED: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

/// Counts one response by transport; a FORMERR also counts as a malformed query.
#[inline]
pub fn record_response(tcp: bool, formerr: bool) {
    QUERIES[tcp as usize].fetch_add(1, Ordering::Relaxed);
    if formerr {
        record_malformed(tcp);
    }
}

/// Counts one query that could not be read or was answered FORMERR.
#[inline]
pub fn record_malformed(tcp: bool) {
    MALFORMED[tcp as usize].fetch_add(1, Ordering::Relaxed);
}

/// Looks at a response about to be sent and counts it if it has TC set: truncation by size in
/// the handler and any other reason to send TC (e.g. a rate limiter's slip) alike.
#[inline]
pub fn record_sent(tcp: bool, reply: &[u8]) {
    if reply.get(2).is_some_and(|b| b & 0x02 != 0) {
        TRUNCATED[tcp as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Responses, truncated responses and malformed queries so far over one transport.
pub fn transport_counts(tcp: bool) -> (u64, u64, u64) {
    let i = tcp as usize;
    (
        QUERIES[i].load(Ordering::Relaxed),
        TRUNCATED[i].load(Ordering::Relaxed),
        MALFORMED[i].load(Ordering::Relaxed),
    )
}

/// Upper bounds of the duration buckets in nanoseconds: the fast path answers in 0.1–0.4 µs,
/// the reference handler in 1–10 µs; anything near a millisecond is worth seeing apart.
pub const BOUNDS_NS: [u64; 13] = [
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    1_000_000,
    10_000_000,
    100_000_000,
];
/// Buckets of the duration histogram: one per bound and `+Inf`.
pub const BUCKETS: usize = BOUNDS_NS.len() + 1;
const SHARDS: usize = 8;

#[repr(align(128))]
struct Shard {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl Shard {
    const fn new() -> Shard {
        Shard {
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
            sum_ns: AtomicU64::new(0),
        }
    }
}

static DURATIONS: [[Shard; SHARDS]; 2] = [const { [const { Shard::new() }; SHARDS] }; 2];

fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    MINE.with(|m| {
        let v = m.get();
        if v != usize::MAX {
            return v;
        }
        let v = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
        m.set(v);
        v
    })
}

/// Records how long one query took to process (parse, decide, build the response).
#[inline]
pub fn observe_duration(tcp: bool, d: Duration) {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let b = BOUNDS_NS
        .iter()
        .position(|&bound| ns <= bound)
        .unwrap_or(BUCKETS - 1);
    let s = &DURATIONS[tcp as usize][shard()];
    s.buckets[b].fetch_add(1, Ordering::Relaxed);
    s.sum_ns.fetch_add(ns, Ordering::Relaxed);
}

/// Records `n` queries that took `total` together: each is counted at the mean, so the sum is
/// exact and the count is `n`, for one bucket search and two adds however large the batch.
#[inline]
pub fn observe_batch(tcp: bool, total: Duration, n: usize) {
    if n == 0 {
        return;
    }
    let total_ns = u64::try_from(total.as_nanos()).unwrap_or(u64::MAX);
    let mean = total_ns / n as u64;
    let b = BOUNDS_NS
        .iter()
        .position(|&bound| mean <= bound)
        .unwrap_or(BUCKETS - 1);
    let s = &DURATIONS[tcp as usize][shard()];
    s.buckets[b].fetch_add(n as u64, Ordering::Relaxed);
    s.sum_ns.fetch_add(total_ns, Ordering::Relaxed);
}

/// One transport's duration histogram summed over its shards: the count in each bucket (not
/// cumulative) and the sum in nanoseconds.
pub fn durations(tcp: bool) -> ([u64; BUCKETS], u64) {
    let mut counts = [0u64; BUCKETS];
    let mut sum_ns = 0u64;
    for s in &DURATIONS[tcp as usize] {
        for (c, b) in counts.iter_mut().zip(&s.buckets) {
            *c += b.load(Ordering::Relaxed);
        }
        sum_ns = sum_ns.wrapping_add(s.sum_ns.load(Ordering::Relaxed));
    }
    (counts, sum_ns)
}

// ---------------------------------------------------------------------------------------------
// Reloads

static RELOADS: AtomicU64 = AtomicU64::new(0);
static RELOAD_FAILURES: AtomicU64 = AtomicU64::new(0);
static LAST_RELOAD_OK: AtomicBool = AtomicBool::new(true);
/// Unix seconds (f64 bits) of the last successful reload; 0 = none yet.
static LAST_RELOAD_SUCCESS: AtomicU64 = AtomicU64::new(0);

/// Counts one reload attempt (SIGHUP or the API).
pub fn record_reload(ok: bool) {
    RELOADS.fetch_add(1, Ordering::Relaxed);
    LAST_RELOAD_OK.store(ok, Ordering::Relaxed);
    if ok {
        LAST_RELOAD_SUCCESS.store(unix_secs(SystemTime::now()).to_bits(), Ordering::Relaxed);
    } else {
        RELOAD_FAILURES.fetch_add(1, Ordering::Relaxed);
    }
}

/// The reload figures, for the exposition.
#[derive(Debug, Clone, Copy)]
pub struct Reloads {
    pub attempts: u64,
    pub failures: u64,
    /// The last reload succeeded (or none was tried).
    pub last_ok: bool,
    /// Unix seconds of the last successful reload; `None` before the first.
    pub last_success: Option<f64>,
}

/// What [`record_reload`] has counted.
pub fn reloads() -> Reloads {
    let t = f64::from_bits(LAST_RELOAD_SUCCESS.load(Ordering::Relaxed));
    Reloads {
        attempts: RELOADS.load(Ordering::Relaxed),
        failures: RELOAD_FAILURES.load(Ordering::Relaxed),
        last_ok: LAST_RELOAD_OK.load(Ordering::Relaxed),
        last_success: (t > 0.0).then_some(t),
    }
}

// ---------------------------------------------------------------------------------------------
// Probes

/// Results and durations of the probes of one endpoint of one service.
#[derive(Debug)]
pub struct ProbeStats {
    /// Probes by result: `ok`, or why the probe failed.
    pub results: BTreeMap<String, u64>,
    pub duration: Histogram,
}

/// (service name without the final dot, lower case; endpoint address or label).
pub type ProbeKey = (String, String);

/// The probe figures, keyed by [`probe_key`].
pub fn probes() -> &'static Mutex<HashMap<ProbeKey, ProbeStats>> {
    static PROBES: OnceLock<Mutex<HashMap<ProbeKey, ProbeStats>>> = OnceLock::new();
    PROBES.get_or_init(Default::default)
}

/// The key of `endpoint` of `service` (with or without the final dot, any case).
pub fn probe_key(service: &str, endpoint: &str) -> ProbeKey {
    let svc = service.trim_end_matches('.').to_ascii_lowercase();
    let ep = endpoint
        .parse::<IpAddr>()
        .map_or_else(|_| endpoint.to_string(), |a| a.to_string());
    (if svc.is_empty() { ".".into() } else { svc }, ep)
}

/// Buckets of the probe duration histogram, in seconds.
const PROBE_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Records one probe of `endpoint` (its address, e.g. `192.0.2.10`) of `service` (with or
/// without the final dot). `reason` says why a failed probe failed; keep it to a few fixed
/// words (`timeout`, `refused`, `tls`, `status`, `body`, ...) since it becomes the `result`
/// label (the prober's `ProbeResult::class`). Called by the prober after every probe.
pub fn record_probe(service: &str, endpoint: &str, ok: bool, reason: &str, duration: Duration) {
    let result = if ok {
        "ok"
    } else if reason.is_empty() {
        "fail"
    } else {
        reason
    };
    let mut m = probes().lock().unwrap_or_else(|e| e.into_inner());
    let s = m
        .entry(probe_key(service, endpoint))
        .or_insert_with(|| ProbeStats {
            results: BTreeMap::new(),
            duration: Histogram::new(PROBE_BUCKETS),
        });
    *s.results.entry(result.to_string()).or_insert(0) += 1;
    s.duration.observe(duration.as_secs_f64());
}

/// Forgets the probe figures of every endpoint not in `keep` (after a reload).
pub fn retain_probes(keep: &HashSet<ProbeKey>) {
    let mut m = probes().lock().unwrap_or_else(|e| e.into_inner());
    m.retain(|k, _| keep.contains(k));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tc_is_counted() {
        let before = TRUNCATED[0].load(Ordering::Relaxed);
        record_sent(false, &[0, 0, 0x82, 0]);
        record_sent(false, &[0, 0, 0x80, 0]);
        record_sent(false, &[]);
        assert_eq!(TRUNCATED[0].load(Ordering::Relaxed) - before, 1);
    }

    #[test]
    fn probe_results_are_kept() {
        record_probe(
            "Probe.Test.",
            "192.0.2.1",
            false,
            "timeout",
            Duration::from_millis(3),
        );
        record_probe(
            "probe.test",
            "192.0.2.1",
            true,
            "",
            Duration::from_millis(2),
        );
        let m = probes().lock().unwrap();
        let s = &m[&("probe.test".to_string(), "192.0.2.1".to_string())];
        assert_eq!(s.results["ok"], 1);
        assert_eq!(s.results["timeout"], 1);
    }
}
