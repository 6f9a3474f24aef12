//! The recent past that the status page and `/status` show: a small ring of events (health
//! changes, drains, reloads) and each endpoint's share of answers over the last minute.
//!
//! Both are kept off the query path. The query path only bumps the answer counters it always
//! had ([`crate::policy::ServiceStats`]); a sampler task ([`History::spawn_sampler`]) reads
//! them once a second into a 60-slot ring per endpoint, so "share over the last minute" is the
//! counter now minus the counter up to 60 s ago, divided by the same for the whole service.
//!
//! Health and drain changes are found by the same once-a-second pass comparing each endpoint's
//! state with the previous pass, rather than by hooks in the prober, the drain API and the
//! fleet code: every writer of an `EndpointState` is covered, including future ones, at the cost
//! of up to one second of delay in the event list (the endpoint's own `healthy` in `/status` is
//! live). A health change is stamped with the time of the probe that caused it. Reloads are
//! recorded directly by [`crate::reload::Reloader`], since two can happen within a second.
//!
//! One `History` belongs to one [`crate::reload::Reloader`] (one served config), so servers
//! started side by side in one test process do not see each other's events.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::metrics::name_label;
use crate::reload::ReloadError;
use crate::snapshot::{SharedSnapshot, Snapshot};

/// Events kept; older ones fall off. A page shows a screenful, an operator's script polling
/// `/status` every few seconds loses nothing at ordinary rates.
pub const EVENTS_CAP: usize = 100;
/// Samples kept per endpoint: one a second, so the oldest is at most a minute old.
const WINDOW: usize = 60;
/// Longest `reason` kept in an event (a rejected reload lists every problem of the config).
const REASON_MAX: usize = 300;

/// One entry of `/status` `"events"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time: SystemTime,
    /// `health`, `drain` or `reload`.
    pub kind: &'static str,
    pub service: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// `healthy`/`unhealthy` (health), `undrained`/`drained` (drain), `generation N` or
    /// `rejected` (reload).
    pub from: Option<String>,
    pub to: Option<String>,
    /// The last probe's reason (health), `ok` or the first problem (reload).
    pub reason: Option<String>,
}

impl Event {
    fn to_json(&self) -> Value {
        json!({
            "time": humantime::format_rfc3339_millis(self.time).to_string(),
            "time_unix": crate::metrics::unix_secs(self.time),
            "kind": self.kind,
            "service": self.service,
            "endpoint": self.endpoint,
            "region": self.region,
            "from": self.from,
            "to": self.to,
            "reason": self.reason,
        })
    }
}

/// What one endpoint looked like at the last pass, and its answer counter over the window.
#[derive(Debug)]
struct Track {
    healthy: bool,
    drained: bool,
    /// Cumulative answer counts, oldest first, one a second.
    samples: VecDeque<u64>,
    seen: bool,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct History {
    events: Mutex<VecDeque<Event>>,
    tracks: Mutex<HashMap<(String, IpAddr), Track>>,
}

fn cut(s: &str) -> String {
    let first = s.lines().next().unwrap_or_default();
    match first.char_indices().nth(REASON_MAX) {
        Some((i, _)) => format!("{}…", &first[..i]),
        None => first.to_string(),
    }
}

impl History {
    pub fn new() -> Arc<History> {
        Arc::new(History::default())
    }

    pub fn push(&self, ev: Event) {
        let mut q = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= EVENTS_CAP {
            q.pop_front();
        }
        q.push_back(ev);
    }

    /// The events kept, oldest first.
    pub fn events(&self) -> Vec<Event> {
        let q = self.events.lock().unwrap_or_else(|e| e.into_inner());
        q.iter().cloned().collect()
    }

    /// Records a reload attempt that started at `from` generation.
    pub fn record_reload(&self, from: u64, result: &Result<u64, ReloadError>) {
        let (to, reason) = match result {
            Ok(g) => (format!("generation {g}"), "ok".to_string()),
            Err(e) => ("rejected".to_string(), cut(e.message())),
        };
        self.push(Event {
            time: SystemTime::now(),
            kind: "reload",
            service: None,
            endpoint: None,
            region: None,
            from: Some(format!("generation {from}")),
            to: Some(to),
            reason: Some(reason),
        });
    }

    /// One pass: samples every endpoint's answer counter and turns state changes since the last
    /// pass into events. Endpoints the snapshot no longer has are forgotten.
    pub fn sample(&self, snap: &Snapshot) {
        let mut tracks = self.tracks.lock().unwrap_or_else(|e| e.into_inner());
        for t in tracks.values_mut() {
            t.seen = false;
        }
        let mut new_events = Vec::new();
        for s in &snap.services {
            let svc = name_label(&s.name);
            for (i, e) in s.endpoints.iter().enumerate() {
                let (healthy, drained) = (e.state.healthy(), e.state.drained());
                let answers = s.stats.answers(i);
                let region = || {
                    e.region
                        .and_then(|r| snap.regions.get(r))
                        .map(|r| r.name.clone())
                };
                let t = tracks
                    .entry((svc.clone(), e.addr))
                    .or_insert_with(|| Track {
                        healthy,
                        drained,
                        samples: VecDeque::with_capacity(WINDOW + 1),
                        seen: false,
                    });
                if t.seen {
                    continue; // the same address named twice: one counter, one track
                }
                t.seen = true;
                if t.healthy != healthy {
                    let probe = e.state.last_probe();
                    new_events.push(Event {
                        time: probe.as_ref().map_or_else(SystemTime::now, |p| p.at),
                        kind: "health",
                        service: Some(svc.clone()),
                        endpoint: Some(e.addr.to_string()),
                        region: region(),
                        from: Some(health_word(t.healthy).into()),
                        to: Some(health_word(healthy).into()),
                        reason: probe.map(|p| cut(&p.reason)),
                    });
                }
                if t.drained != drained {
                    new_events.push(Event {
                        time: SystemTime::now(),
                        kind: "drain",
                        service: Some(svc.clone()),
                        endpoint: Some(e.addr.to_string()),
                        region: region(),
                        from: Some(drain_word(t.drained).into()),
                        to: Some(drain_word(drained).into()),
                        reason: None,
                    });
                }
                t.healthy = healthy;
                t.drained = drained;
                if t.samples.len() >= WINDOW {
                    t.samples.pop_front();
                }
                t.samples.push_back(answers);
            }
        }
        tracks.retain(|_, t| t.seen);
        drop(tracks);
        new_events.sort_by_key(|e| e.time);
        for ev in new_events {
            self.push(ev);
        }
    }

    /// Samples `shared` every second until the task is aborted.
    pub fn spawn_sampler(self: &Arc<Self>, shared: SharedSnapshot) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                me.sample(&shared.load());
            }
        })
    }

    /// Answers of each endpoint of `svc` (by address) since the oldest sample, up to a minute
    /// ago, counted up to now: the live counter minus the oldest sample.
    fn answers_1m(&self, snap: &Snapshot) -> HashMap<(String, IpAddr), u64> {
        let tracks = self.tracks.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = HashMap::new();
        for s in &snap.services {
            let svc = name_label(&s.name);
            for (i, e) in s.endpoints.iter().enumerate() {
                let key = (svc.clone(), e.addr);
                let oldest = tracks.get(&key).and_then(|t| t.samples.front().copied());
                if let Some(oldest) = oldest {
                    out.entry(key)
                        .or_insert(s.stats.answers(i).saturating_sub(oldest));
                }
            }
        }
        out
    }

    /// Adds what this module knows to a `/status` body built by the admin API: `"regions"`
    /// (name and coordinates, for the map), `"events"` (oldest first), and per endpoint
    /// `"answers_1m"` and `"share_1m"` (its fraction of the service's answers over the last
    /// minute; null before the first sample or when the service gave no answer). Only adds keys,
    /// so `/status` stays backward compatible.
    pub fn extend_status(&self, snap: &Snapshot, body: &mut Value) {
        let counts = self.answers_1m(snap);
        let mut totals: HashMap<&str, u64> = HashMap::new();
        for ((svc, _), n) in &counts {
            *totals.entry(svc.as_str()).or_default() += n;
        }
        // Matched by name and address rather than position: the body may have been built from
        // the snapshot before a reload that `snap` is after.
        let services = body.get_mut("services").and_then(Value::as_array_mut);
        for sv in services.into_iter().flatten() {
            let Some(svc) = sv.get("name").and_then(Value::as_str).map(str::to_string) else {
                continue;
            };
            let total = totals.get(svc.as_str()).copied().unwrap_or(0);
            let eps = sv.get_mut("endpoints").and_then(Value::as_array_mut);
            for ev in eps.into_iter().flatten() {
                let addr = ev.get("address").and_then(Value::as_str);
                let addr: Option<IpAddr> = addr.and_then(|a| a.parse().ok());
                let n = addr.and_then(|a| counts.get(&(svc.clone(), a)).copied());
                let share = n.filter(|_| total > 0).map(|n| n as f64 / total as f64);
                if let Some(obj) = ev.as_object_mut() {
                    obj.insert("answers_1m".into(), json!(n));
                    obj.insert("share_1m".into(), json!(share));
                }
            }
        }
        let regions: Vec<Value> = snap
            .regions
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "lat": r.location.map(|c| c.lat),
                    "lon": r.location.map(|c| c.lon),
                })
            })
            .collect();
        let events: Vec<Value> = self.events().iter().map(Event::to_json).collect();
        if let Some(obj) = body.as_object_mut() {
            obj.insert("regions".into(), Value::Array(regions));
            obj.insert("events".into(), Value::Array(events));
        }
    }
}

fn health_word(healthy: bool) -> &'static str {
    if healthy {
        "healthy"
    } else {
        "unhealthy"
    }
}

fn drain_word(drained: bool) -> &'static str {
    if drained {
        "drained"
    } else {
        "undrained"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest() {
        let h = History::default();
        for g in 0..(EVENTS_CAP as u64 + 5) {
            h.record_reload(g, &Ok(g + 1));
        }
        let ev = h.events();
        assert_eq!(ev.len(), EVENTS_CAP);
        assert_eq!(ev[0].from.as_deref(), Some("generation 5"));
        assert_eq!(
            ev.last().and_then(|e| e.to.clone()).as_deref(),
            Some(&*format!("generation {}", EVENTS_CAP + 5))
        );
    }

    #[test]
    fn a_rejected_reload_keeps_its_first_problem() {
        let h = History::default();
        h.record_reload(
            3,
            &Err(ReloadError::Invalid(
                "a.toml:1:1: bad\nb.zone:2:1: worse".into(),
            )),
        );
        let ev = &h.events()[0];
        assert_eq!(ev.to.as_deref(), Some("rejected"));
        assert_eq!(ev.reason.as_deref(), Some("a.toml:1:1: bad"));
    }
}
