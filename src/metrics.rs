//! Prometheus metrics, rendered for `GET /metrics` by the admin API: the exposition only. It
//! sits on the top floor and reads every subsystem; the counters it reads are bumped below it
//! without importing it, so the query path never reaches up here.
//!
//! The query path must stay cheap, so nothing it touches allocates, locks or looks anything up:
//!
//! - Each zone carries a [`ZoneStats`] (owned by the zone): a table of atomic counters indexed
//!   by slots for qtype, rcode and policy, whose `&'static str` labels are defined with the
//!   counting (`answer::count`, which the transports call with each query's outcome). A query
//!   adds one to one cell.
//! - Each service carries a [`ServiceStats`](crate::policy::ServiceStats) (owned by the policy
//!   layer): one atomic counter per endpoint (answers given) and three for answers given while
//!   every endpoint was down.
//! - Per-transport counters, the query duration histogram, reloads and probe results are the
//!   leaf [`crate::base::counters`].
//!
//! Nothing below this module imports it: it reads those counters and the snapshot. Zone and
//! service counters are
//! handed out by a small registry keyed by zone origin / service name / endpoint
//! address, so a reload that keeps a zone or an endpoint keeps its counts (counters never go
//! back). They are exported at scrape time by walking the current snapshot, as are the
//! endpoint health gauges, which are read from the live `EndpointState`s: no per-query cost at
//! all. Response rate limiting keeps its own atomic counters in its table ([`crate::rrl`]),
//! exported here as `meridian_rrl_total{action}`. Probe results (few per second) and reloads
//! (rare) use plain locked maps and atomics.
//!
//! The exposition is built with `prometheus-client` (OpenMetrics text): its `Collector` hook
//! lets every series be computed from the snapshot at scrape time, so series of zones and
//! endpoints that a reload removed disappear instead of lingering, and no global recorder or
//! exporter thread is involved.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

pub use crate::answer::count::{policy_label, NO_ZONE, QTYPES, RCODES};
use crate::base::clock::unix_secs;
use crate::policy::{Service, WhenAllDown};
use crate::reload::Control;
use crate::secondary::Secondaries;
use crate::server::xdp::Interfaces;
use crate::snapshot::Snapshot;
pub use crate::zone::stats::name_label;
use crate::zone::stats::ZoneStats;

// The per-transport families and the query duration histogram; the `process_*` metrics.
mod process;
mod transport;
// The counters themselves are a leaf (`base::counters`) that the query path bumps; these
// names stay here for the benches and tests that use them.
pub use crate::base::counters::{observe_batch, observe_duration, record_malformed, record_sent};
pub use transport::TRANSPORTS;

/// Content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

// ---------------------------------------------------------------------------------------------
// Probes

// The figures live in `base::counters` (bumped by the prober); this is their exposition.
pub use crate::base::counters::record_probe;
use crate::base::counters::{probes, ProbeStats};

/// [`record_probe`] for every endpoint a probe was applied to, in the shape of the prober's
/// observer: `ProberOptions { observer: Some(Arc::new(metrics::observe_probe)), .. }`.
pub fn observe_probe(ev: &crate::prober::ProbeEvent<'_>) {
    for ep in ev.endpoints {
        record_probe(
            &ep.service,
            &ep.label,
            ev.result.ok,
            ev.result.class,
            ev.result.duration,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Exposition

/// The exposition for a snapshot with no control loops running (tools and tests), in
/// OpenMetrics text ([`CONTENT_TYPE`]).
pub fn render(snap: &Arc<Snapshot>) -> String {
    render_served(
        snap,
        &Control::default(),
        &Secondaries::default(),
        &Interfaces::default(),
    )
}

/// The whole exposition of a server: its snapshot and its control loops, read through their
/// handles (`control`: anycast and fleet; `secondaries`: the secondary zones; `xdp`: the
/// interfaces served over AF_XDP), in OpenMetrics text ([`CONTENT_TYPE`]).
pub fn render_served(
    snap: &Arc<Snapshot>,
    control: &Control,
    secondaries: &Secondaries,
    xdp: &Interfaces,
) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector {
        snap: snap.clone(),
        anycast: control.anycast.get(),
        fleet: control.fleet.get(),
        secondaries: secondaries.clone(),
        xdp: xdp.clone(),
        prober: control.prober.reading(),
    }));
    let mut out = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

#[derive(Debug)]
struct SnapshotCollector {
    snap: Arc<Snapshot>,
    anycast: Option<Arc<crate::anycast::Anycast>>,
    fleet: Option<Arc<crate::fleet::Fleet>>,
    secondaries: Secondaries,
    xdp: Interfaces,
    prober: crate::prober::Reading,
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// Writes one metric family: a descriptor, then one sample per label set.
fn family<'l, M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Labels<'l>, M)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in samples {
        metric.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes one metric without labels.
fn single<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: M,
) -> Result<(), std::fmt::Error> {
    metric.encode(enc.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(v: f64) -> ConstGauge<f64> {
    ConstGauge::new(v)
}

fn flag(v: bool) -> ConstGauge<i64> {
    ConstGauge::new(v as i64)
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = &*self.snap;
        let site = snap.wire.site_id.as_deref().unwrap_or("");

        family(
            &mut enc,
            "meridian_build_info",
            "meridian version and site id (always 1).",
            MetricType::Gauge,
            [(
                vec![("version", env!("CARGO_PKG_VERSION")), ("site", site)],
                flag(true),
            )],
        )?;

        // [[secondary]] zones: serial, transfers, failures (crate::secondary).
        let sec = self.secondaries.status();
        family(
            &mut enc,
            "meridian_secondary_serial",
            "SOA serial of the copy served of each secondary zone.",
            MetricType::Gauge,
            sec.iter().filter_map(|z| {
                Some((
                    vec![("zone", z.zone.as_str())],
                    ConstGauge::new(z.serial? as i64),
                ))
            }),
        )?;
        family(
            &mut enc,
            "meridian_secondary_last_transfer_timestamp_seconds",
            "Unix time of the last transfer that brought a new copy of each secondary zone.",
            MetricType::Gauge,
            sec.iter().filter_map(|z| {
                Some((
                    vec![("zone", z.zone.as_str())],
                    ConstGauge::new(z.last_transfer?),
                ))
            }),
        )?;
        for (name, help, get) in [
            (
                "meridian_secondary_transfers",
                "Transfers that brought a new copy, by secondary zone.",
                (|z: &crate::secondary::ZoneStatus| z.transfers) as fn(&_) -> u64,
            ),
            (
                "meridian_secondary_failures",
                "Failed refreshes (the last good copy kept serving), by secondary zone.",
                |z| z.failures,
            ),
            (
                "meridian_secondary_notifies",
                "NOTIFY messages accepted from a primary, by secondary zone.",
                |z| z.notifies,
            ),
        ] {
            family(
                &mut enc,
                name,
                help,
                MetricType::Counter,
                sec.iter()
                    .map(|z| (vec![("zone", z.zone.as_str())], ConstCounter::new(get(z)))),
            )?;
        }

        // DNS queries.
        let mut zones: Vec<&ZoneStats> = snap.zones.zones.values().map(|z| &*z.stats).collect();
        zones.sort_by(|a, b| a.label().cmp(b.label()));
        zones.push(&NO_ZONE);
        family(
            &mut enc,
            "meridian_dns_queries",
            "DNS responses sent, by zone, query type, response code and the policy that \
             answered (static: from the zone; none: outside every zone).",
            MetricType::Counter,
            zones.iter().flat_map(|z| {
                z.cells().map(move |(q, r, p, v)| {
                    (
                        vec![
                            ("zone", z.label()),
                            ("qtype", QTYPES[q]),
                            ("rcode", RCODES[r]),
                            ("policy", policy_label(p)),
                        ],
                        ConstCounter::new(v),
                    )
                })
            }),
        )?;

        // Per service and endpoint. Labels are built once per scrape.
        struct Ep<'s> {
            svc: Arc<str>,
            addr: String,
            region: &'s str,
            service: &'s Service,
            index: usize,
        }
        impl Ep<'_> {
            fn state(&self) -> &crate::health::EndpointState {
                &self.service.endpoints[self.index].state
            }
            fn labels(&self) -> Labels<'_> {
                vec![
                    ("service", &*self.svc),
                    ("endpoint", self.addr.as_str()),
                    ("region", self.region),
                ]
            }
        }
        let mut eps: Vec<Ep<'_>> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for s in &snap.services {
            let svc: Arc<str> = name_label(&s.name).into();
            for (i, e) in s.endpoints.iter().enumerate() {
                // One series per service and address, even if the config names it twice.
                if !seen.insert((svc.clone(), e.addr)) {
                    continue;
                }
                eps.push(Ep {
                    svc: svc.clone(),
                    addr: e.label(),
                    region: e
                        .region
                        .and_then(|r| snap.regions.get(r))
                        .map_or("", |r| r.name.as_str()),
                    service: s,
                    index: i,
                });
            }
        }

        family(
            &mut enc,
            "meridian_answers",
            "Balanced answers that carried this endpoint.",
            MetricType::Counter,
            eps.iter().map(|e| {
                let v = e.service.stats.answers(e.index);
                (
                    vec![("service", &*e.svc), ("endpoint", e.addr.as_str())],
                    ConstCounter::new(v),
                )
            }),
        )?;
        // The same counters summed per region at scrape time: no cost on the query path.
        let mut by_region: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for e in &eps {
            *by_region.entry((&e.svc, e.region)).or_default() += e.service.stats.answers(e.index);
        }
        family(
            &mut enc,
            "meridian_answers_by_region",
            "Balanced answers that carried an endpoint of this region (region empty for \
             endpoints without one); an answer with two endpoints of a region counts twice.",
            MetricType::Counter,
            by_region.into_iter().map(|((svc, region), v)| {
                (
                    vec![("service", svc), ("region", region)],
                    ConstCounter::new(v),
                )
            }),
        )?;
        let mut svcs: Vec<(Arc<str>, &Service)> = Vec::new();
        for s in &snap.services {
            let l: Arc<str> = name_label(&s.name).into();
            if !svcs.iter().any(|(x, _)| *x == l) {
                svcs.push((l, s));
            }
        }
        family(
            &mut enc,
            "meridian_answers_all_down",
            "Queries for a balanced name answered while every endpoint of the family was down: \
             when_all_down=serve-all answered them all anyway (answering blind), \
             when_all_down=empty answered NODATA, when_all_down=servfail answered SERVFAIL.",
            MetricType::Counter,
            svcs.iter().flat_map(|(l, s)| {
                [
                    ("serve-all", &s.stats.all_down_served),
                    ("empty", &s.stats.all_down_empty),
                    ("servfail", &s.stats.all_down_servfail),
                ]
                .into_iter()
                .map(move |(mode, c)| {
                    (
                        vec![("service", &**l), ("when_all_down", mode)],
                        ConstCounter::new(c.load(Ordering::Relaxed)),
                    )
                })
            }),
        )?;
        family(
            &mut enc,
            "meridian_service_when_all_down_empty",
            "1 when the service answers NODATA with every endpoint down (when_all_down = empty), \
             0 otherwise: serve-all (answers as if all were up) or servfail (SERVFAIL).",
            MetricType::Gauge,
            svcs.iter().map(|(l, s)| {
                (
                    vec![("service", &**l)],
                    flag(s.when_all_down == WhenAllDown::Empty),
                )
            }),
        )?;

        // Health, read from the live endpoint states.
        family(
            &mut enc,
            "meridian_endpoint_healthy",
            "1 when the endpoint's health checks pass (or it has none).",
            MetricType::Gauge,
            eps.iter().map(|e| (e.labels(), flag(e.state().healthy()))),
        )?;
        family(
            &mut enc,
            "meridian_endpoint_drained",
            "1 when the endpoint is drained through the admin API.",
            MetricType::Gauge,
            eps.iter().map(|e| (e.labels(), flag(e.state().drained()))),
        )?;
        family(
            &mut enc,
            "meridian_endpoint_up",
            "1 when the endpoint may be answered: healthy and not drained.",
            MetricType::Gauge,
            eps.iter().map(|e| (e.labels(), flag(e.state().up()))),
        )?;
        family(
            &mut enc,
            "meridian_endpoint_rtt_seconds",
            "Round-trip time of the endpoint's last successful probe.",
            MetricType::Gauge,
            eps.iter().filter_map(|e| {
                let us = e.state().rtt_us()?;
                Some((e.labels(), gauge(us as f64 / 1e6)))
            }),
        )?;
        family(
            &mut enc,
            "meridian_endpoint_load",
            "Load the endpoint last reported (X-Load).",
            MetricType::Gauge,
            eps.iter()
                .filter_map(|e| Some((e.labels(), gauge(e.state().load()?)))),
        )?;

        // Probes: only endpoints of the current snapshot.
        {
            let m = probes().lock().unwrap_or_else(|e| e.into_inner());
            let found: Vec<(&Ep<'_>, &ProbeStats)> = eps
                .iter()
                .filter_map(|e| Some((e, m.get(&(e.svc.to_string(), e.addr.clone()))?)))
                .collect();
            family(
                &mut enc,
                "meridian_probes",
                "Health probes by result (ok, or why the probe failed).",
                MetricType::Counter,
                found.iter().flat_map(|(e, p)| {
                    p.results.iter().map(move |(r, v)| {
                        (
                            vec![
                                ("service", &*e.svc),
                                ("endpoint", e.addr.as_str()),
                                ("result", r.as_str()),
                            ],
                            ConstCounter::new(*v),
                        )
                    })
                }),
            )?;
            let mut h = enc.encode_descriptor(
                "meridian_probe_duration_seconds",
                "How long health probes took.",
                None,
                MetricType::Histogram,
            )?;
            for (e, p) in &found {
                let l: Labels<'_> = vec![("service", &*e.svc), ("endpoint", e.addr.as_str())];
                p.duration.encode(h.encode_family(&l)?)?;
            }
        }

        // Response rate limiting: counters of the table, which outlives reloads; zeros
        // without `[rrl]`, so dashboards need no special case.
        let rrl = snap.rrl.as_ref().map(|r| &*r.table);
        let load = |c: Option<&AtomicU64>| c.map_or(0, |c| c.load(Ordering::Relaxed));
        family(
            &mut enc,
            "meridian_rrl",
            "UDP responses response rate limiting acted on: dropped, slipped (sent truncated, \
             TC=1, for the client to retry over TCP), logged (log_only: would have been limited).",
            MetricType::Counter,
            [
                ("dropped", load(rrl.map(|t| &t.dropped))),
                ("slipped", load(rrl.map(|t| &t.slipped))),
                ("logged", load(rrl.map(|t| &t.logged))),
            ]
            .map(|(a, v)| (vec![("action", a)], ConstCounter::new(v))),
        )?;
        single(
            &mut enc,
            "meridian_rrl_evictions",
            "RRL table entries still in debt replaced by a new key because their line was full \
             (the table is too small for the traffic: rrl.table_size).",
            ConstCounter::new(load(rrl.map(|t| &t.evicted))),
        )?;
        crate::querylog::encode_metrics(&mut enc)?;

        // Config and reloads.
        let reloads = crate::base::counters::reloads();
        single(
            &mut enc,
            "meridian_config_generation",
            "Generation of the config being served.",
            ConstGauge::new(snap.generation as i64),
        )?;
        single(
            &mut enc,
            "meridian_config_loaded_timestamp_seconds",
            "When the config being served was loaded (Unix time).",
            gauge(unix_secs(snap.loaded_at)),
        )?;
        single(
            &mut enc,
            "meridian_reloads",
            "Reloads attempted (SIGHUP or POST /api/v1/reload).",
            ConstCounter::new(reloads.attempts),
        )?;
        single(
            &mut enc,
            "meridian_reload_failures",
            "Reloads rejected; the previous config kept serving.",
            ConstCounter::new(reloads.failures),
        )?;
        single(
            &mut enc,
            "meridian_last_reload_successful",
            "1 when the last reload succeeded (or none was tried), 0 when it was rejected.",
            flag(reloads.last_ok),
        )?;
        let last_ok = reloads
            .last_success
            .unwrap_or_else(|| unix_secs(snap.loaded_at));
        single(
            &mut enc,
            "meridian_last_reload_success_timestamp_seconds",
            "When the config was last loaded successfully (Unix time).",
            gauge(last_ok),
        )?;

        // Day two: state that would otherwise lapse without a sign.
        single(
            &mut enc,
            "meridian_drains_state_ok",
            "0 when the drain state file could not be read at start (the drains it held are \
             unknown) until an operator drains or undrains again; 1 otherwise.",
            flag(snap.health.drains.state_error().is_none()),
        )?;
        let zones = snap.zones.status();
        family(
            &mut enc,
            "meridian_zone_loaded",
            "1 when the zone is served, 0 when its file failed to load (its names get SERVFAIL).",
            MetricType::Gauge,
            zones
                .iter()
                .map(|z| (vec![("zone", z.name.as_str())], flag(z.loaded))),
        )?;

        // DNSSEC (SPEC "DNSSEC"), when a zone is signed: process-wide signature counts, and
        // each signed zone's cache.
        if !snap.dnssec.is_empty() {
            let (hits, misses, refused) = crate::dnssec::sign::signature_counts();
            family(
                &mut enc,
                "meridian_dnssec_signatures",
                "RRSIGs put in answers, by whether the signature cache held them (hit) or \
                 they were made for the answer (miss).",
                MetricType::Counter,
                [("hit", hits), ("miss", misses)]
                    .map(|(c, n)| (vec![("cache", c)], ConstCounter::new(n))),
            )?;
            single(
                &mut enc,
                "meridian_dnssec_signatures_refused",
                "DO answers sent TC=1 because a signature they needed was past the zone's \
                 signing budget (UDP without a valid server cookie).",
                ConstCounter::new(refused),
            )?;
            let mut signed: Vec<(String, usize)> = snap
                .dnssec
                .values()
                .map(|o| {
                    let zone = crate::zone::stats::name_label(&o.zone);
                    (zone, o.signer().cache().stats().entries)
                })
                .collect();
            signed.sort();
            family(
                &mut enc,
                "meridian_dnssec_cache_entries",
                "Signatures held in each signed zone's cache.",
                MetricType::Gauge,
                signed
                    .iter()
                    .map(|(z, n)| (vec![("zone", z.as_str())], ConstGauge::new(*n as i64))),
            )?;
        }

        // The prober's CPU budget (`[prober] cpu_budget`): a stretched interval is never silent.
        let p = &self.prober;
        single(
            &mut enc,
            "meridian_prober_interval_stretch",
            "The factor every health-probe interval is stretched by to keep the prober within its CPU budget (1 = as configured).",
            gauge(p.interval_stretch),
        )?;
        single(
            &mut enc,
            "meridian_prober_stretched_seconds",
            "Seconds during which probe intervals were stretched by the CPU budget.",
            ConstCounter::new(p.stretched_seconds),
        )?;
        if let Some(b) = p.cpu_budget {
            single(
                &mut enc,
                "meridian_prober_cpu_budget_ratio",
                "[prober] cpu_budget: the share of one core the prober thread may use.",
                gauge(b),
            )?;
        }
        if let Some(c) = p.cpu {
            single(
                &mut enc,
                "meridian_prober_cpu_ratio",
                "The prober thread's CPU over the last second, as a share of one core.",
                gauge(c),
            )?;
        }
        // Anycast (SPEC "Anycast"), when configured.
        if let Some(a) = &self.anycast {
            let (announced, transitions) = a.metrics_view();
            single(
                &mut enc,
                "meridian_anycast_announced",
                "1 while this site announces its anycast prefixes, 0 while withdrawn.",
                flag(announced),
            )?;
            family(
                &mut enc,
                "meridian_anycast_transitions",
                "Anycast state changes, by the state entered and why.",
                MetricType::Counter,
                transitions.iter().map(|&(to, reason, n)| {
                    (vec![("to", to), ("reason", reason)], ConstCounter::new(n))
                }),
            )?;
        }
        // AF_XDP (SPEC "Answers at the NIC"), on the interfaces it serves.
        let xdp = self.xdp.list();
        if !xdp.is_empty() {
            for (name, help, count) in [
                (
                    "meridian_xdp_answered",
                    "UDP replies sent over AF_XDP, by interface.",
                    (|i: &crate::server::xdp::Interface| &i.answered)
                        as fn(&crate::server::xdp::Interface) -> &std::sync::atomic::AtomicU64,
                ),
                (
                    "meridian_xdp_dropped",
                    "Queries taken over AF_XDP and not answered: reply larger than the link's \
                     MTU (an XDP send cannot fragment) or not a plain UDP datagram.",
                    |i| &i.dropped,
                ),
            ] {
                family(
                    &mut enc,
                    name,
                    help,
                    MetricType::Counter,
                    xdp.iter().map(|i| {
                        let n = count(i).load(Ordering::Relaxed);
                        (vec![("interface", i.name.as_str())], ConstCounter::new(n))
                    }),
                )?;
            }
        }
        transport::encode(&mut enc)?;
        process::encode(&mut enc)?;
        // Fleet (SPEC "Fleet"), when configured.
        if let Some(f) = &self.fleet {
            single(
                &mut enc,
                "meridian_fleet_connected",
                "1 while this site is connected to the fleet's etcd, 0 while it answers alone.",
                flag(f.connected()),
            )?;
            let ignored = f.ignored_counts();
            family(
                &mut enc,
                "meridian_fleet_reports_ignored",
                "Records in the fleet's etcd not counted, by reason: no_lease, site_mismatch, malformed, too_large (reports) and drains_invalid.",
                MetricType::Counter,
                ignored
                    .iter()
                    .map(|&(reason, n)| (vec![("reason", reason)], ConstCounter::new(n))),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observer_fits_the_prober() {
        let _o: crate::prober::probe::ProbeObserver = Arc::new(observe_probe);
    }
}
