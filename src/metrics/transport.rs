//! The per-transport families: queries answered, responses truncated, queries malformed, and
//! the query-processing-time histogram `meridian_query_duration_seconds`, rendered from the
//! counters of [`crate::base::counters`] (where the query path bumps them; the cost notes are
//! there).
//!
//! They are families of their own rather than a `transport` label on `meridian_dns_queries_total`:
//! that family's label set is part of the contract dashboards and tests already match on.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;

use super::family;
use crate::base::counters::{self, BOUNDS_NS};

/// `transport` label values, indexed by `tcp as usize`.
pub const TRANSPORTS: [&str; 2] = ["udp", "tcp"];

/// One transport's histogram summed over its shards, at scrape time.
struct Summed {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

fn summed(tcp: bool) -> Summed {
    let (counts, sum_ns) = counters::durations(tcp);
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
    let counts = [false, true].map(counters::transport_counts);
    let per_transport = |pick: fn(&(u64, u64, u64)) -> u64| {
        TRANSPORTS
            .iter()
            .zip(counts)
            .map(move |(t, c)| (vec![("transport", *t)], ConstCounter::new(pick(&c))))
    };
    family(
        enc,
        "meridian_dns_queries_by_transport",
        "DNS responses sent, by transport (udp, tcp); the same responses as \
         meridian_dns_queries_total.",
        MetricType::Counter,
        per_transport(|c| c.0),
    )?;
    family(
        enc,
        "meridian_dns_truncated_responses",
        "Responses sent with TC set (too large for the client's UDP limit, or slipped by the \
         rate limiter), by transport.",
        MetricType::Counter,
        per_transport(|c| c.1),
    )?;
    family(
        enc,
        "meridian_dns_malformed_queries",
        "Queries that could not be read (shorter than a header, unparseable) or were answered \
         FORMERR, by transport.",
        MetricType::Counter,
        per_transport(|c| c.2),
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
    use crate::base::counters::{observe_batch, observe_duration, BUCKETS};
    use std::time::Duration;

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
}
