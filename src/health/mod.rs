//! Health state of endpoints, shared between whatever writes it (the prober, the drain API,
//! `explain --down`) and the query path, which reads it without locks: every field is an atomic.
//!
//! States live in a [`HealthRegistry`] keyed by what identifies a probe target, so a reload
//! that keeps an endpoint keeps its state (SPEC "Reload": health carries over).
//!
//! Drains are kept as rules in `policy::drains` (held by `snapshot::HealthRegistry`) and
//! applied to the drained flags of each new snapshot, so they outlive reloads and restarts.
//!
//! The prober that writes them is a control loop of its own, a floor up: `crate::prober`.
//!
//! An endpoint checked by several profiles (`health = ["web", "tls"]`) has one [`Check`] per
//! profile, each with its own verdict (the prober keeps each profile's rise/fall), and is
//! healthy while at least `health_min` of them are ([`EndpointState::checks`]). A `push`
//! profile's verdict is written by `PUT /api/v1/health` ([`EndpointState::push`]).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;

/// The health epoch: bumped after every change of an endpoint's `healthy` or `drained` flag,
/// whatever the endpoint, so that the query path can keep counts of up endpoints and trust
/// them for as long as the epoch stays the same (`policy`'s groups cache their up-count per
/// epoch: a query then reads one number instead of every endpoint's flags). A change is
/// visible to whoever reads the epoch it bumped to: the flag is written before the bump
/// (Release), and readers load the epoch (Acquire) before they read flags.
///
/// One counter for the whole process rather than one per service: states outlive the
/// snapshots that share them across a reload, and a change costs each service at most one
/// recount (at 10,000 changes a second, a few microseconds per service per change).
static EPOCH: AtomicU64 = AtomicU64::new(1);

/// The current health epoch (see [`EPOCH`]); read before any endpoint's flags.
pub fn epoch() -> u64 {
    EPOCH.load(Ordering::Acquire)
}

#[cfg(test)]
thread_local! {
    /// Calls of [`EndpointState::up`] on this thread: what the policy tests count to show
    /// that a query does not read every endpoint's health.
    pub static UP_READS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn bump_epoch() {
    EPOCH.fetch_add(1, Ordering::Release);
}

/// The outcome of one probe, kept for `/status`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    pub ok: bool,
    /// A fixed word for metrics labels: `ok`, `timeout`, `refused`, `tls`, `status`, `body`,
    /// `connect`, `error`.
    pub class: &'static str,
    /// For people: `ok`, `timeout`, `refused`, `tls error: …`, `status 503`, `body mismatch`, …
    pub reason: String,
    /// When the probe finished.
    pub at: SystemTime,
    /// How long it took (connect, request, and the body when one is expected).
    pub duration: Duration,
}

/// Live figures for one endpoint of one service.
#[derive(Debug)]
pub struct EndpointState {
    healthy: AtomicBool,
    drained: AtomicBool,
    /// A partial drain: the share (0 < share < 1, as f64 bits) of client networks for which
    /// the endpoint counts as drained; 0 = none. Not part of `up`, which is the same for every
    /// client: the policy compares it with the client network's hash.
    drain_share: AtomicU64,
    /// Probe round-trip time in microseconds; 0 = not measured yet.
    rtt_us: AtomicU64,
    /// `X-Load` reported by the endpoint, as f64 bits; NaN = not reported.
    load: AtomicU64,
    /// The last probe; only `/status` reads it, never the query path.
    last_probe: ArcSwapOption<ProbeResult>,
    /// `[fleet]` (crate::fleet): this site's own verdict (0 none, 1 down, 2 up), kept apart
    /// from `healthy` because with a fleet `healthy` holds the fleet's verdict.
    local: AtomicU8,
    /// Set while the fleet decides `healthy`; the prober then writes only `local`.
    fleet_managed: AtomicBool,
    /// Whether this site probes the endpoint (`[fleet] probers`); true without a fleet.
    probe_here: AtomicBool,
    /// One per health profile, in the order of the `health` list; empty when none checks it.
    checks: Vec<Check>,
    /// How many checks must pass (`health_min`); 0 = all.
    min: AtomicUsize,
}

/// One profile's view of an endpoint: its verdict (rise/fall applied, or as pushed), its last
/// result, and for `push` when a state last arrived.
#[derive(Debug)]
pub struct Check {
    pub profile: String,
    healthy: AtomicBool,
    last_probe: ArcSwapOption<ProbeResult>,
    /// Unix milliseconds of the last pushed state, or of the check's creation before any.
    since_ms: AtomicU64,
    pushed: AtomicBool,
}

impl Check {
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
    pub fn last_probe(&self) -> Option<Arc<ProbeResult>> {
        self.last_probe.load_full()
    }
    /// When a state was last pushed (unix ms), or since when none was (the check's start).
    pub fn pushed_since_ms(&self) -> (u64, bool) {
        (
            self.since_ms.load(Ordering::Relaxed),
            self.pushed.load(Ordering::Relaxed),
        )
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Which checks decided an endpoint's verdict: when up, the passing ones; when down, the
/// failing ones; with how many pass and how many were needed.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub up: bool,
    pub passing: usize,
    pub needed: usize,
    /// Indexes into [`EndpointState::checks`].
    pub by: Vec<usize>,
}

impl EndpointState {
    pub fn new(initially_up: bool) -> EndpointState {
        EndpointState {
            healthy: AtomicBool::new(initially_up),
            drained: AtomicBool::new(false),
            drain_share: AtomicU64::new(0),
            rtt_us: AtomicU64::new(0),
            load: AtomicU64::new(f64::NAN.to_bits()),
            last_probe: ArcSwapOption::empty(),
            local: AtomicU8::new(0),
            fleet_managed: AtomicBool::new(false),
            probe_here: AtomicBool::new(true),
            checks: Vec::new(),
            min: AtomicUsize::new(0),
        }
    }

    /// An endpoint checked by the profiles `checks` (name, initially up), healthy while at
    /// least `min` of them are (0 = all).
    pub fn with_checks(checks: &[(String, bool)], min: usize) -> EndpointState {
        let now = now_ms();
        let mut st = EndpointState::new(true);
        st.checks = checks
            .iter()
            .map(|(p, up)| Check {
                profile: p.clone(),
                healthy: AtomicBool::new(*up),
                last_probe: ArcSwapOption::empty(),
                since_ms: AtomicU64::new(now),
                pushed: AtomicBool::new(false),
            })
            .collect();
        st.min = AtomicUsize::new(min);
        let up = st.decision().up;
        st.healthy = AtomicBool::new(up);
        st
    }

    /// The profiles checking this endpoint, in the order of its `health` list.
    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// Whether its checks are those profiles, in that order (else a reload makes a new state).
    pub fn checked_by(&self, profiles: &[String]) -> bool {
        self.checks.len() == profiles.len()
            && self
                .checks
                .iter()
                .zip(profiles)
                .all(|(c, p)| &c.profile == p)
    }

    /// How many checks must pass.
    pub fn min(&self) -> usize {
        let n = self.checks.len();
        match self.min.load(Ordering::Relaxed) {
            0 => n,
            m => m.min(n),
        }
    }

    /// Sets `health_min` (a reload may change it) and applies it to the checks' verdicts.
    pub fn set_min(&self, min: usize) {
        if self.min.swap(min, Ordering::Relaxed) != min
            && self.checks.iter().any(|c| c.last_probe().is_some())
        {
            self.recompute();
        }
    }

    /// What the checks decide now, and which of them decided it.
    pub fn decision(&self) -> Decision {
        let needed = self.min();
        let passing = self.checks.iter().filter(|c| c.healthy()).count();
        let up = passing >= needed;
        Decision {
            up,
            passing,
            needed,
            by: (0..self.checks.len())
                .filter(|&i| self.checks[i].healthy() == up)
                .collect(),
        }
    }

    /// Which profiles decided the verdict, for people (`/status`, `explain`): `up: web
    /// passes (1 of 2, needs 1)`; `None` without profiles.
    pub fn decided_by(&self) -> Option<String> {
        if self.checks.is_empty() {
            return None;
        }
        let d = self.decision();
        let names: Vec<&str> =
            d.by.iter()
                .map(|&i| self.checks[i].profile.as_str())
                .collect();
        let n = self.checks.len();
        Some(if d.up {
            format!(
                "up: {} pass{} ({} of {n}, needs {})",
                names.join(", "),
                if names.len() == 1 { "es" } else { "" },
                d.passing,
                d.needed
            )
        } else {
            format!(
                "down: {} failed ({} of {n} pass, needs {})",
                names.join(", "),
                d.passing,
                d.needed
            )
        })
    }

    fn recompute(&self) {
        if !self.checks.is_empty() {
            self.set_probed(self.decision().up);
        }
    }

    /// Writes check `i`'s verdict and last result, then the endpoint's verdict (at least
    /// `min` checks healthy). Returns the endpoint's verdict.
    pub fn set_check(&self, i: usize, healthy: bool, result: Arc<ProbeResult>) -> bool {
        let Some(c) = self.checks.get(i) else {
            self.set_probed(healthy);
            self.set_last_probe(result);
            return healthy;
        };
        c.healthy.store(healthy, Ordering::Relaxed);
        c.last_probe.store(Some(result.clone()));
        self.set_last_probe(result);
        self.recompute();
        self.healthy()
    }

    /// A state pushed from outside for check `i` (a `push` profile): taken as given, and
    /// fresh from now on. Returns false when there is no such check.
    pub fn push(&self, i: usize, up: bool, load: Option<f64>) -> bool {
        let Some(c) = self.checks.get(i) else {
            return false;
        };
        c.since_ms.store(now_ms(), Ordering::Relaxed);
        c.pushed.store(true, Ordering::Relaxed);
        if load.is_some() {
            self.set_load(load);
        }
        let result = Arc::new(ProbeResult {
            ok: up,
            class: if up { "ok" } else { "pushed" },
            reason: format!("pushed {}", if up { "up" } else { "down" }),
            at: SystemTime::now(),
            duration: Duration::ZERO,
        });
        self.set_check(i, up, result);
        true
    }
    /// Takes the probed figures of `other` (the same address and probe in another service):
    /// its health, RTT, load and last probe; never its drain, which is per service.
    pub fn seed_from(&self, other: &EndpointState) {
        self.healthy.store(other.healthy(), Ordering::Relaxed);
        self.rtt_us
            .store(other.rtt_us.load(Ordering::Relaxed), Ordering::Relaxed);
        self.load
            .store(other.load.load(Ordering::Relaxed), Ordering::Relaxed);
        self.local
            .store(other.local.load(Ordering::Relaxed), Ordering::Relaxed);
        if let Some(p) = other.last_probe() {
            self.last_probe.store(Some(p));
        }
        for (c, o) in self.checks.iter().zip(&other.checks) {
            if c.profile == o.profile {
                c.healthy.store(o.healthy(), Ordering::Relaxed);
                if let Some(p) = o.last_probe() {
                    c.last_probe.store(Some(p));
                }
            }
        }
    }
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
    pub fn set_healthy(&self, v: bool) {
        if self.healthy.swap(v, Ordering::Relaxed) != v {
            bump_epoch();
        }
    }
    pub fn drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }
    pub fn set_drained(&self, v: bool) {
        if self.drained.swap(v, Ordering::Relaxed) != v {
            bump_epoch();
        }
    }
    /// The share of client networks for which the endpoint is drained, below 1 (a full drain
    /// is [`EndpointState::drained`]); 0 = no partial drain.
    pub fn drain_share(&self) -> f64 {
        f64::from_bits(self.drain_share.load(Ordering::Relaxed))
    }
    pub fn set_drain_share(&self, share: f64) {
        let share = if share > 0.0 && share < 1.0 {
            share
        } else {
            0.0
        };
        self.drain_share.store(share.to_bits(), Ordering::Relaxed);
    }
    /// Up for answering: healthy and not drained.
    pub fn up(&self) -> bool {
        #[cfg(test)]
        UP_READS.with(|c| c.set(c.get() + 1));
        self.healthy() && !self.drained()
    }
    pub fn rtt_us(&self) -> Option<u64> {
        match self.rtt_us.load(Ordering::Relaxed) {
            0 => None,
            v => Some(v),
        }
    }
    pub fn set_rtt_us(&self, v: Option<u64>) {
        self.rtt_us.store(v.unwrap_or(0), Ordering::Relaxed)
    }
    pub fn load(&self) -> Option<f64> {
        let v = f64::from_bits(self.load.load(Ordering::Relaxed));
        (!v.is_nan()).then_some(v)
    }
    pub fn set_load(&self, v: Option<f64>) {
        self.load
            .store(v.unwrap_or(f64::NAN).to_bits(), Ordering::Relaxed)
    }
    /// The last probe of this endpoint; `None` until it has been probed (or when it has no
    /// health check).
    pub fn last_probe(&self) -> Option<Arc<ProbeResult>> {
        self.last_probe.load_full()
    }
    pub fn set_last_probe(&self, r: Arc<ProbeResult>) {
        self.last_probe.store(Some(r))
    }

    // ---- [fleet] (crate::fleet) ----

    /// The prober's verdict: this site's own view, and what answers use unless the fleet
    /// decides them.
    pub fn set_probed(&self, healthy: bool) {
        self.local.store(1 + healthy as u8, Ordering::Relaxed);
        if !self.fleet_managed.load(Ordering::Relaxed) {
            self.set_healthy(healthy);
        }
    }
    /// This site's own verdict; `None` while it does not probe the endpoint.
    pub fn local_verdict(&self) -> Option<bool> {
        match self.local.load(Ordering::Relaxed) {
            0 => None,
            v => Some(v == 2),
        }
    }
    pub fn clear_local_verdict(&self) {
        self.local.store(0, Ordering::Relaxed)
    }
    pub fn fleet_managed(&self) -> bool {
        self.fleet_managed.load(Ordering::Relaxed)
    }
    /// Hands `healthy` to the fleet (true) or back to the prober (false, which restores the
    /// site's own verdict at once).
    pub fn set_fleet_managed(&self, v: bool) {
        self.fleet_managed.store(v, Ordering::Relaxed);
        if let (false, Some(own)) = (v, self.local_verdict()) {
            self.set_healthy(own);
        }
    }
    pub fn probe_here(&self) -> bool {
        self.probe_here.load(Ordering::Relaxed)
    }
    pub fn set_probe_here(&self, v: bool) {
        self.probe_here.store(v, Ordering::Relaxed)
    }
}

/// What makes two endpoints "the same" across reloads: same service, address and probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub service: String,
    pub address: IpAddr,
    pub probe: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(ok: bool) -> Arc<ProbeResult> {
        Arc::new(ProbeResult {
            ok,
            class: if ok { "ok" } else { "status" },
            reason: String::new(),
            at: SystemTime::now(),
            duration: Duration::ZERO,
        })
    }

    #[test]
    fn health_min_counts_the_checks_and_names_what_decided() {
        let checks = [("web".to_string(), true), ("tls".to_string(), true)];
        let all = EndpointState::with_checks(&checks, 0);
        let any = EndpointState::with_checks(&checks, 1);
        assert!(all.healthy() && any.healthy());
        assert!(!all.set_check(1, false, result(false)));
        assert!(any.set_check(1, false, result(false)));
        assert_eq!(all.decision().by, vec![1]);
        assert_eq!(any.decision().by, vec![0]);
        assert_eq!(
            all.decided_by().as_deref(),
            Some("down: tls failed (1 of 2 pass, needs 2)")
        );
        assert_eq!(
            any.decided_by().as_deref(),
            Some("up: web passes (1 of 2, needs 1)")
        );
        // health_min lowered on a reload: decided again at once.
        all.set_min(1);
        assert!(all.healthy());
        // A pushed state is taken as given.
        assert!(any.push(0, false, Some(0.5)));
        assert!(!any.healthy() && any.load() == Some(0.5));
        assert!(!any.push(7, true, None), "no such check");
    }
}
