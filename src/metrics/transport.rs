//! Figures kept per transport on the query path: queries answered, responses truncated,
//! queries malformed, and the query-processing-time histogram `meridian_query_duration_seconds`.
//!
//! They are families of their own rather than a `transport` label on `meridian_dns_queries_total`:
//! that family's label set is part of the contract dashboards and tests already match on.
//!
//! Cost: the counters are one relaxed add each. The histogram is sharded by thread (each UDP
//! thread and tokio worker gets its own cache-line-aligned shard, picked once per thread), so
//! the UDP threads do not bounce one line between cores at every query; an observation is a
//! bucket search over 13 bounds (the common bucket first in practice, so the branches predict)
//! and two relaxed adds. What is timed and where is up to the caller: the UDP loop times each
//! `recvmmsg` batch and attributes the time evenly to its packets ([`observe_batch`], two clock
//! reads per batch), TCP times each query around the handler ([`observe_duration`]).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;

use super::family;

/// `transport` label values, indexed by `tcp as usize`.
pub const TRANSPORTS: [&str; 2] = ["udp", "tcp"];

static QUERIES: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static TRUNCATED: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static MALFORMED: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

/// Counts one response by transport; a FORMERR also counts as a malformed query. Called by
/// [`super::record_query`] for every response.
#[inline]
pub(super) fn record_transport(tcp: bool, rcode: ResponseCode) {
    QUERIES[tcp as usize].fetch_add(1, Ordering::Relaxed);
    if rcode == ResponseCode::FormErr {
        record_malformed(tcp);
    }
}

/// Counts one query that could not be read or was answered FORMERR.
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

/// Upper bounds of the duration buckets in nanoseconds: the fast path answers in 0.1–0.4 µs,
/// the reference handler in 1–10 µs; anything near a millisecond is worth seeing apart.
const BOUNDS_NS: [u64; 13] = [
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
const BUCKETS: usize = BOUNDS_NS.len() + 1;
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

/// One transport's histogram summed over its shards, at scrape time.
struct Summed {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

fn summed(tcp: bool) -> Summed {
    let mut counts = [0u64; BUCKETS];
    let mut sum_ns = 0u64;
    for s in &DURATIONS[tcp as usize] {
        for (c, b) in counts.iter_mut().zip(&s.buckets) {
            *c += b.load(Ordering::Relaxed);
        }
        sum_ns = sum_ns.wrapping_add(s.sum_ns.load(Ordering::Relaxed));
    }
    let buckets = BOUNDS_NS
        .iter()
        .map(|&ns| ns as f64 / 1e9)
        .chain([f64::INFINITY])
        .zip(counts)
        .collect();
    Summed {
        sum: sum_ns as f64 / 1e9,
        count: counts.iter().sum(),
        buckets,
    }
}

impl EncodeMetric for Summed {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Writes the families of this module.
pub(super) fn encode(enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let per_transport = |c: &'static [AtomicU64; 2]| {
        TRANSPORTS.iter().enumerate().map(move |(i, t)| {
            (
                vec![("transport", *t)],
                ConstCounter::new(c[i].load(Ordering::Relaxed)),
            )
        })
    };
    family(
        enc,
        "meridian_dns_queries_by_transport",
        "DNS responses sent, by transport (udp, tcp); the same responses as \
         meridian_dns_queries_total.",
        MetricType::Counter,
        per_transport(&QUERIES),
    )?;
    family(
        enc,
        "meridian_dns_truncated_responses",
        "Responses sent with TC set (too large for the client's UDP limit, or slipped by the \
         rate limiter), by transport.",
        MetricType::Counter,
        per_transport(&TRUNCATED),
    )?;
    family(
        enc,
        "meridian_dns_malformed_queries",
        "Queries that could not be read (shorter than a header, unparseable) or were answered \
         FORMERR, by transport.",
        MetricType::Counter,
        per_transport(&MALFORMED),
    )?;
    family(
        enc,
        "meridian_query_duration_seconds",
        "Time to process one query (parse, decide, build the response; not the socket), by \
         transport.",
        MetricType::Histogram,
        [false, true].map(|tcp| (vec![("transport", TRANSPORTS[tcp as usize])], summed(tcp))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_their_buckets() {
        let before = summed(true);
        observe_duration(true, Duration::from_nanos(300));
        observe_duration(true, Duration::from_secs(5));
        // A batch of four taking 4 µs: four queries at 1 µs.
        observe_batch(true, Duration::from_micros(4), 4);
        observe_batch(true, Duration::from_micros(4), 0);
        let after = summed(true);
        assert_eq!(after.count - before.count, 6);
        assert_eq!(after.buckets[1].1 - before.buckets[1].1, 1); // (250 ns, 500 ns]
        assert_eq!(after.buckets[2].1 - before.buckets[2].1, 4); // (500 ns, 1 µs]
        assert_eq!(
            after.buckets[BUCKETS - 1].1 - before.buckets[BUCKETS - 1].1,
            1
        ); // +Inf
        assert!(after.sum - before.sum >= 5.0);
    }

    #[test]
    fn tc_is_counted() {
        let before = TRUNCATED[0].load(Ordering::Relaxed);
        record_sent(false, &[0, 0, 0x82, 0]);
        record_sent(false, &[0, 0, 0x80, 0]);
        record_sent(false, &[]);
        assert_eq!(TRUNCATED[0].load(Ordering::Relaxed) - before, 1);
    }
}
