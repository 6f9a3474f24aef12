//! Reloads (SPEC "Reload"): SIGHUP and `POST /api/v1/reload` both end up in
//! [`Reloader::reload`]. It re-reads config, zones and the GeoIP database on a blocking thread,
//! off the query path, with the current health registry, so endpoints that did not change keep
//! their health and drain state; then it swaps the snapshot atomically. A rejected config
//! leaves the old snapshot serving; the error goes to the log, `/status` and the metrics.
//! It is all or nothing for what is serving: a zone file that fails is a rejection unless that
//! zone was already failing before (SPEC "Day two"), in which case it stays out, SERVFAIL for
//! its names, and the rest of the reload goes in.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::base::counters;
use crate::history::History;
use crate::snapshot::{SharedSnapshot, Snapshot};
use crate::zone::stats::name_label;

/// The outcome of the last reload, for `/status`.
#[derive(Debug, Clone)]
pub struct ReloadStatus {
    pub at: SystemTime,
    /// The new generation, or why the reload was rejected.
    pub result: Result<u64, ReloadError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadError {
    /// The new config, zones or GeoIP data are invalid: every problem, one per line, as
    /// `file:line:col: message`.
    Invalid(String),
    /// The reload could not run (the blocking task failed).
    Failed(String),
}

impl ReloadError {
    pub fn message(&self) -> &str {
        match self {
            ReloadError::Invalid(m) | ReloadError::Failed(m) => m,
        }
    }
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for ReloadError {}

/// Reloads one served snapshot from one config file; shared by the signal handler and the
/// admin API. Reloads run one at a time, so generations are swapped in the order they were
/// built.
#[derive(Debug)]
pub struct Reloader {
    shared: SharedSnapshot,
    config_path: PathBuf,
    /// Addresses bound at start; a reload cannot move listeners.
    listen: Vec<SocketAddr>,
    admin_listen: Option<String>,
    running: tokio::sync::Mutex<()>,
    last: Mutex<Option<ReloadStatus>>,
    /// Recent events of this server (reloads recorded here, health changes by its sampler).
    history: Arc<History>,
    control: Control,
}

/// The control loops of one server, as handles: made empty with its [`Reloader`], filled by
/// `serve` as it starts them, and read by what shows or steers them (the admin API, the
/// metrics exposition, reloads). Nothing here is process-wide: two servers in one process
/// (tests) each have their own.
#[derive(Debug, Default)]
pub struct Control {
    /// The `[anycast]` controller.
    pub anycast: crate::anycast::Slot,
    /// The `[fleet]` member.
    pub fleet: crate::fleet::Slot,
    /// The prober's CPU budget, stretch and cores (`[prober]`), as the prober writes them.
    pub prober: std::sync::Arc<crate::prober::Meter>,
}

impl Reloader {
    pub fn new(shared: SharedSnapshot, config_path: impl Into<PathBuf>) -> Arc<Reloader> {
        let (listen, admin_listen) = {
            let snap = shared.load();
            (snap.config.listen.clone(), admin_listen(&snap))
        };
        Arc::new(Reloader {
            shared,
            config_path: config_path.into(),
            listen,
            admin_listen,
            running: tokio::sync::Mutex::new(()),
            last: Mutex::new(None),
            history: History::new(),
            control: Control::default(),
        })
    }

    pub fn shared(&self) -> &SharedSnapshot {
        &self.shared
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Recent events and answer shares of the server this reloader serves.
    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    /// The control loops of the server this reloader serves.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// The last reload's outcome; `None` before the first.
    pub fn last(&self) -> Option<ReloadStatus> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Rebuilds from the config file and swaps the new snapshot in; returns its generation.
    /// On error the old snapshot keeps serving. Must run inside a tokio runtime.
    pub async fn reload(&self) -> Result<u64, ReloadError> {
        let _one_at_a_time = self.running.lock().await;
        crate::systemd::reloading();
        let from_generation = self.shared.load().generation;
        let path = self.config_path.clone();
        let health = self.shared.load().health.clone();
        // What the control floor registered with this server stays registered, and the new
        // snapshot takes the zones a transfer left there.
        let registrations = self.shared.load().registrations.clone();
        // A zone already failing may keep failing; one that serves now may not break.
        let failing = crate::snapshot::Tolerate::Failing(
            self.shared
                .load()
                .zones
                .failed
                .iter()
                .map(|f| f.name())
                .collect(),
        );
        let started = std::time::Instant::now();
        let built = tokio::task::spawn_blocking(move || {
            Snapshot::load_serving_for(&path, health, &failing, registrations)
        })
        .await;
        // Rounded to a tenth of a millisecond: more digits are noise in a log line.
        let took_ms = (started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
        let result = match built {
            Ok(Ok(snap)) => {
                if snap.config.listen != self.listen {
                    tracing::warn!(
                        "server.listen changed: the new addresses take effect after a restart"
                    );
                }
                if admin_listen(&snap) != self.admin_listen {
                    tracing::warn!(
                        "admin.listen changed: the new address takes effect after a restart"
                    );
                }
                if snap.config.anycast.is_some() && self.control.anycast.get().is_none() {
                    tracing::warn!(
                        "[anycast] added: the controller starts with the next restart \
                         (a changed [anycast] applies at once)"
                    );
                }
                let generation = snap.generation;
                let snap = Arc::new(snap);
                self.shared.store(snap.clone());
                // A drain made while this snapshot was built reached only the old one's
                // endpoints: apply the rules again now that this one serves.
                snap.health.drains.apply(&snap.services, &snap.regions);
                // A drain whose region or endpoint this config renamed or removed is kept (it
                // applies again if the name comes back) but said out loud: it drains nothing.
                for r in snap.health.drains.unmatched(&snap.services, &snap.regions) {
                    tracing::warn!(
                        since = r.at,
                        "{} {} matches nothing in the reloaded config; it is kept (undrain it \
                         with the same words to remove it)",
                        if r.drain { "drain of" } else { "undrain of" },
                        r.scope.describe()
                    );
                }
                for f in &snap.zones.failed {
                    tracing::error!(
                        zone = f.name(),
                        "zone still not loaded, its names get SERVFAIL: {}",
                        f.error.replace('\n', "; ")
                    );
                }
                counters::retain_probes(&probe_keys(&snap));
                // A changed [fleet] restarts the fleet member with the new settings.
                crate::fleet::reconfigure(
                    &self.control.fleet,
                    &self.shared,
                    snap.config.fleet.clone(),
                )
                .await;
                tracing::info!(generation, took_ms, config = %self.config_path.display(), "reloaded");
                Ok(generation)
            }
            Ok(Err(problems)) => {
                for p in &problems.0 {
                    tracing::error!("reload rejected, old config keeps serving: {p}");
                }
                Err(ReloadError::Invalid(problems.to_string()))
            }
            Err(e) => {
                tracing::error!("reload failed, old config keeps serving: {e}");
                Err(ReloadError::Failed(format!("reload failed: {e}")))
            }
        };
        counters::record_reload(result.is_ok());
        // READY=1 either way: after a rejected reload the old snapshot is serving again.
        let serving = self.shared.load().generation;
        crate::systemd::reloaded(&match &result {
            Ok(_) => format!("serving generation {serving}, reloaded"),
            Err(e) => format!(
                "serving generation {serving}; last reload rejected: {}",
                e.message().lines().next().unwrap_or("")
            ),
        });
        self.history.record_reload(
            from_generation,
            result.as_ref().map(|g| *g).map_err(|e| e.message()),
        );
        give_back_freed_memory();
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(ReloadStatus {
            at: SystemTime::now(),
            result: result.clone(),
        });
        result
    }
}

/// Once the readers of the old snapshot (or a rejected new one) are done with it, hands its
/// pages back to the system ([`release_freed_heap`]).
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        // A UDP thread holds the old snapshot for at most one batch; a TCP connection for one
        // answer. A second is far longer than either.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let _ = tokio::task::spawn_blocking(release_freed_heap).await;
    });
}

/// Hands freed heap pages back to the system. glibc keeps freed small allocations in its
/// arenas: without this, a 1M-record zone served at 222 MB stayed at 472 MB after its first
/// reloads, and 10,000 services, whose config parse peaks at 75 MB of heap for 46 MB kept,
/// started at 86 MB (bench/scale.sh).
pub(crate) fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The probe keys ([`counters::probe_key`]) of every endpoint `snap` serves: probe figures of
/// any other endpoint are forgotten after a reload.
fn probe_keys(snap: &Snapshot) -> HashSet<counters::ProbeKey> {
    snap.services
        .iter()
        .flat_map(|s| {
            let svc = name_label(&s.name);
            s.endpoints.iter().map(move |e| (svc.clone(), e.label()))
        })
        .collect()
}

fn admin_listen(snap: &Snapshot) -> Option<String> {
    snap.config
        .config
        .admin
        .as_ref()
        .map(|a| a.listen.get_ref().clone())
}
