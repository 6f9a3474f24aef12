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

use crate::snapshot::{SharedSnapshot, Snapshot};
use crate::zone::stats::name_label;

/// Events kept; older ones fall off. A page shows a screenful, an operator's script polling
/// `/status` every few seconds loses nothing at ordinary rates.
pub const EVENTS_CAP: usize = 100;
/// Samples kept per endpoint: one a second, so the oldest is at most a minute old.
const WINDOW: usize = 60;
/// How far apart two sightings of one endpoint change may be to be one event: a sampler pass
/// (1 s) and the time between the probe and the pass.
const MERGE_WITHIN: Duration = Duration::from_millis(1500);
/// Longest `reason` kept in an event (a rejected reload lists every problem of the config).
const REASON_MAX: usize = 300;

/// One entry of `/status` `"events"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time: SystemTime,
    /// `health`, `drain` or `reload`.
    pub kind: &'static str,
    /// The first of `services` (what `/status` had before `services`; kept for scripts).
    pub service: Option<String>,
    /// Every service whose endpoint at this address changed the same way in the same pass:
    /// one health URL shared by three services is one event, not three.
    pub services: Vec<String>,
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
            "time_unix": crate::base::clock::unix_secs(self.time),
            "kind": self.kind,
            "service": self.service,
            "services": self.services,
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

    /// Records a reload attempt that started at `from` generation: the new generation, or
    /// the rejection's message (the reloader's own error type stays with it, so that this
    /// module does not import the one that owns it).
    pub fn record_reload(&self, from: u64, result: Result<u64, &str>) {
        let (to, reason) = match result {
            Ok(g) => (format!("generation {g}"), "ok".to_string()),
            Err(e) => ("rejected".to_string(), cut(e)),
        };
        self.push(Event {
            time: SystemTime::now(),
            kind: "reload",
            service: None,
            services: Vec::new(),
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
                    add_event(
                        &mut new_events,
                        Event {
                            time: probe.as_ref().map_or_else(SystemTime::now, |p| p.at),
                            kind: "health",
                            service: Some(svc.clone()),
                            services: vec![svc.clone()],
                            endpoint: Some(e.addr.to_string()),
                            region: region(),
                            from: Some(health_word(t.healthy).into()),
                            to: Some(health_word(healthy).into()),
                            // Several profiles: the last probe may be another profile's;
                            // say which decided.
                            reason: match e.state.decided_by() {
                                Some(d) if e.state.checks().len() > 1 => Some(cut(&d)),
                                _ => probe.map(|p| cut(&p.reason)),
                            },
                        },
                    );
                }
                if t.drained != drained {
                    add_event(
                        &mut new_events,
                        Event {
                            time: SystemTime::now(),
                            kind: "drain",
                            service: Some(svc.clone()),
                            services: vec![svc.clone()],
                            endpoint: Some(e.addr.to_string()),
                            region: region(),
                            from: Some(drain_word(t.drained).into()),
                            to: Some(drain_word(drained).into()),
                            reason: None,
                        },
                    );
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
            self.push_merged(ev);
        }
    }

    /// [`History::push`], except that the same change of the same endpoint seen for other
    /// services a pass later joins the event already listed: a pass can run while the prober
    /// is writing the verdict of one shared probe into the services' states one after the
    /// other (or a drain into them), and that is still one change of one endpoint.
    fn push_merged(&self, ev: Event) {
        let mut q = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let last = q
            .iter_mut()
            .rev()
            .find(|o| o.kind == ev.kind && o.endpoint == ev.endpoint && ev.endpoint.is_some());
        if let Some(o) = last {
            let close = match o.time.duration_since(ev.time) {
                Ok(d) => d,
                Err(e) => e.duration(),
            } <= MERGE_WITHIN;
            let new_services = ev.services.iter().all(|s| !o.services.contains(s));
            if o.from == ev.from && o.to == ev.to && close && new_services {
                o.services.extend(ev.services);
                return;
            }
        }
        drop(q);
        self.push(ev);
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

/// Adds `ev` to this pass's events, or its service to the event of the same kind, endpoint and
/// change already there: an endpoint is one machine, and it changed once. (Its services probe
/// it through one shared target, so they change in the same pass; the earliest probe time and
/// the first reason stand for all.)
fn add_event(events: &mut Vec<Event>, ev: Event) {
    let same = events.iter_mut().find(|o| {
        o.kind == ev.kind && o.endpoint == ev.endpoint && o.from == ev.from && o.to == ev.to
    });
    match same {
        Some(o) => {
            for s in ev.services {
                if !o.services.contains(&s) {
                    o.services.push(s);
                }
            }
            o.time = o.time.min(ev.time);
            if o.region.is_none() {
                o.region = ev.region;
            }
        }
        None => events.push(ev),
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
            h.record_reload(g, Ok(g + 1));
        }
        let ev = h.events();
        assert_eq!(ev.len(), EVENTS_CAP);
        assert_eq!(ev[0].from.as_deref(), Some("generation 5"));
        assert_eq!(
            ev.last().and_then(|e| e.to.clone()).as_deref(),
            Some(&*format!("generation {}", EVENTS_CAP + 5))
        );
    }

    /// Three services with 192.0.2.10 (eu-west), one also with 192.0.2.20.
    fn shared_endpoint_snapshot() -> (tempfile::TempDir, Snapshot) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("zones")).expect("mkdir");
        std::fs::write(
            dir.path().join("zones/example.com.zone"),
            "@ 3600 IN SOA ns hostmaster 1 7200 3600 1209600 300\n@ 3600 IN NS ns\nns 3600 IN A 192.0.2.53\n",
        )
        .expect("zone");
        let mut config = String::from(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nzones = \"zones\"\n\
             [regions.eu-west]\nlocation = { lat = 53.35, lon = -6.26 }\n",
        );
        for (name, extra) in [
            ("www", ", { address = \"192.0.2.20\" }"),
            ("api", ""),
            ("img", ""),
        ] {
            config.push_str(&format!(
                "[[service]]\nname = \"{name}.example.com\"\npolicy = \"round-robin\"\nttl = 30\n\
                 endpoints = [{{ region = \"eu-west\", address = \"192.0.2.10\" }}{extra}]\n"
            ));
        }
        std::fs::write(dir.path().join("meridian.toml"), config).expect("config");
        let snap = Snapshot::load(&dir.path().join("meridian.toml"))
            .unwrap_or_else(|p| panic!("config rejected: {p}"));
        (dir, snap)
    }

    #[test]
    fn one_event_per_endpoint_change_listing_its_services() {
        let (_dir, snap) = shared_endpoint_snapshot();
        let h = History::default();
        h.sample(&snap);
        let set = |addr: &str, f: &dyn Fn(&crate::health::EndpointState)| {
            for s in &snap.services {
                for e in s.endpoints.iter().filter(|e| e.addr.to_string() == addr) {
                    f(&e.state);
                }
            }
        };
        set("192.0.2.10", &|st| st.set_healthy(false));
        set("192.0.2.20", &|st| st.set_healthy(false));
        h.sample(&snap);
        let ev = h.events();
        assert_eq!(
            ev.len(),
            2,
            "one event per endpoint, not per service: {ev:#?}"
        );
        let ten = ev
            .iter()
            .find(|e| e.endpoint.as_deref() == Some("192.0.2.10"))
            .expect("192.0.2.10");
        let mut services = ten.services.clone();
        services.sort();
        assert_eq!(
            services,
            ["api.example.com", "img.example.com", "www.example.com"]
        );
        assert_eq!(ten.region.as_deref(), Some("eu-west"));
        assert_eq!(
            (ten.from.as_deref(), ten.to.as_deref()),
            (Some("healthy"), Some("unhealthy"))
        );
        let json = ten.to_json();
        assert_eq!(json["services"].as_array().map(Vec::len), Some(3));
        assert!(json["service"].is_string(), "kept for scripts: {json}");

        // Seen for one service in a pass and for the others in the next (the prober was
        // writing the states as the pass ran): still one event.
        set("192.0.2.10", &|st| st.set_healthy(true));
        h.sample(&snap);
        let first = snap.services[0].endpoints[0].state.clone();
        first.set_healthy(false);
        h.sample(&snap);
        set("192.0.2.10", &|st| st.set_healthy(false));
        h.sample(&snap);
        let downs: Vec<Event> = h
            .events()
            .into_iter()
            .filter(|e| {
                e.to.as_deref() == Some("unhealthy") && e.endpoint.as_deref() == Some("192.0.2.10")
            })
            .collect();
        assert_eq!(downs.len(), 2, "the first fall and this one: {downs:#?}");
        assert_eq!(downs[1].services.len(), 3, "{downs:#?}");

        // A region drain is one event per endpoint as well.
        set("192.0.2.10", &|st| st.set_drained(true));
        h.sample(&snap);
        let drains: Vec<Event> = h
            .events()
            .into_iter()
            .filter(|e| e.kind == "drain")
            .collect();
        assert_eq!(drains.len(), 1, "{drains:#?}");
        assert_eq!(drains[0].services.len(), 3);
    }

    #[test]
    fn a_rejected_reload_keeps_its_first_problem() {
        let h = History::default();
        h.record_reload(3, Err("a.toml:1:1: bad\nb.zone:2:1: worse"));
        let ev = &h.events()[0];
        assert_eq!(ev.to.as_deref(), Some("rejected"));
        assert_eq!(ev.reason.as_deref(), Some("a.toml:1:1: bad"));
    }
}
