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

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
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
