//! Zones from a primary (`[[secondary]]`, SPEC "Zones from a primary" and "Trust boundaries"):
//! meridian as a secondary of an existing primary (BIND, Knot, PowerDNS, a hidden master).
//!
//! - A task per zone keeps it fresh: it asks the primary's SOA, and only when that serial is
//!   newer (RFC 1982) transfers: IXFR from the serial held (RFC 1995), AXFR when there is none,
//!   when IXFR is refused or when the IXFR does not apply (RFC 5936), over TCP, TSIG-signed
//!   when a key is set (RFC 8945, [`tsig`]). SOA refresh/retry drive the timers (RFC 1035
//!   §4.3.5); a NOTIFY (RFC 1996) from a listed primary wakes the task at once, and NOTIFYs
//!   during a refresh coalesce into at most one more.
//! - The transfer, its application and the writing and checking of the copy run on a blocking
//!   thread, never on the threads that answer queries or the admin API.
//! - Each good transfer is written atomically to `state_dir/secondary/<zone>.copy` in a binary
//!   form of the records as received ([`copy`]: data, never directives), the time of the last
//!   successful refresh beside it, and the server reloads: balanced names in the zone work as
//!   in file zones, and a restart serves the copy before the first transfer.
//! - A failed, malformed, oversized or wrongly signed transfer changes nothing: the last good
//!   copy serves until SOA expire passes with no successful refresh; then the zone answers
//!   SERVFAIL (a timer while running, the refresh time on disk at start) until a transfer
//!   succeeds.

pub mod tsig;
pub mod xfr;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hickory_proto::rr::{Name, Record};

use crate::config::secondary::zone_name;
pub use crate::config::secondary::{parse_primary, SecondaryConfig, TsigConfig};
// The copy's format and its loading live with the zones: the snapshot reads the copies
// without naming this module.
use crate::reload::Reloader;
use crate::zone::copy;

// ---------------------------------------------------------------------------------------------
// State shared with NOTIFY handling and /status, /metrics

/// What `/status` and the metrics show of one secondary zone.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ZoneStatus {
    pub zone: String,
    pub serial: Option<u32>,
    /// Unix seconds of the last transfer that brought a new copy.
    pub last_transfer: Option<f64>,
    /// "AXFR", "IXFR" or "IXFR (whole zone)".
    pub last_transfer_kind: Option<String>,
    /// Unix seconds of the last refresh that succeeded (new copy or up to date).
    pub last_refresh: Option<f64>,
    pub transfers: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    pub notifies: u64,
    /// Unix seconds of the last NOTIFY accepted.
    pub last_notify: Option<f64>,
}

#[derive(Default)]
struct Shared {
    status: HashMap<Name, ZoneStatus>,
    wake: HashMap<Name, Arc<tokio::sync::Notify>>,
}

/// The secondary zones of one server: their status (what `/status` and the metrics show) and
/// the NOTIFY wake-ups. A handle, not process-wide state: made with the server (`serve`),
/// given to [`start`] and to what reads it (the admin API's `AdminState::secondaries`, the
/// metrics exposition), so two servers in one process each see their own zones. Clones share.
#[derive(Clone, Default)]
pub struct Secondaries(Arc<Mutex<Shared>>);

impl std::fmt::Debug for Secondaries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secondaries")
            .field("zones", &self.with(|s| s.status.len()))
            .finish()
    }
}

impl Secondaries {
    fn with<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Every secondary zone's status, by zone name.
    pub fn status(&self) -> Vec<ZoneStatus> {
        let mut v: Vec<ZoneStatus> = self.with(|s| s.status.values().cloned().collect());
        v.sort_by(|a, b| a.zone.cmp(&b.zone));
        v
    }

    fn update(&self, zone: &Name, f: impl FnOnce(&mut ZoneStatus)) {
        self.with(|s| {
            let st = s.status.entry(zone.clone()).or_insert_with(|| ZoneStatus {
                zone: zone.to_ascii(),
                ..ZoneStatus::default()
            });
            f(st)
        })
    }

    fn wake(&self, zone: &Name) -> Arc<tokio::sync::Notify> {
        self.with(|s| s.wake.entry(zone.clone()).or_default().clone())
    }

    /// An accepted NOTIFY (RFC 1996) for `zone` ([`crate::snapshot::Snapshot::notify`] decided
    /// that it came from one of its primaries): counted, and its refresh woken. Registered with
    /// the server by [`start`].
    fn notified(&self, zone: &Name) {
        self.update(zone, |s| {
            s.notifies += 1;
            s.last_notify = Some(unix(SystemTime::now()));
        });
        // notify_one keeps a permit when the task is busy transferring: it refreshes again after.
        self.wake(zone).notify_one();
    }
}

fn unix(t: SystemTime) -> f64 {
    crate::base::clock::unix_secs(t)
}

// ---------------------------------------------------------------------------------------------
// The refresh tasks

/// The running refresh tasks; dropping it (or [`SecondaryHandle::shutdown`]) stops them.
#[derive(Debug)]
pub struct SecondaryHandle {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    secondaries: Secondaries,
}

impl SecondaryHandle {
    pub fn shutdown(self) {}

    /// The zones' state these tasks keep (the value given to [`start`]).
    pub fn secondaries(&self) -> &Secondaries {
        &self.secondaries
    }

    /// Every secondary zone's status, by zone name ([`Secondaries::status`]).
    pub fn status(&self) -> Vec<ZoneStatus> {
        self.secondaries.status()
    }
}

impl Drop for SecondaryHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts one refresh task per `[[secondary]]` (inside a tokio runtime), and a supervisor
/// that starts tasks for zones a reload adds; a task ends by itself when a reload removes its
/// zone. The tasks read the primaries and key from the snapshot at each refresh, so changes to
/// those apply at once. The tasks keep the zones' status and NOTIFY wake-ups in `secondaries`,
/// the server's own value, which the admin API and the metrics read.
pub fn start(reloader: Arc<Reloader>, secondaries: Secondaries) -> SecondaryHandle {
    // NOTIFY reaches this side through the server's registrations: `dns` answers it from the
    // snapshot and calls what is registered here.
    reloader.shared().load().registrations.on_notify({
        let secondaries = secondaries.clone();
        Box::new(move |zone| secondaries.notified(zone))
    });
    let held = secondaries.clone();
    let supervisor = tokio::spawn(async move {
        let mut running: HashMap<Name, tokio::task::JoinHandle<()>> = HashMap::new();
        // Aborting the supervisor (SecondaryHandle dropped) drops this and stops the zones.
        let mut guard = AbortOnDrop(Vec::new());
        loop {
            let zones: Vec<Name> = reloader
                .shared()
                .load()
                .config
                .config
                .secondary
                .iter()
                .filter_map(|s| zone_name(s.get_ref().zone.get_ref()))
                .collect();
            running.retain(|_, t| !t.is_finished());
            for z in zones {
                if !running.contains_key(&z) {
                    running.insert(
                        z.clone(),
                        tokio::spawn(run_zone(reloader.clone(), secondaries.clone(), z)),
                    );
                }
            }
            guard.0 = running.values().map(|t| t.abort_handle()).collect();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    SecondaryHandle {
        tasks: vec![supervisor],
        secondaries: held,
    }
}

/// Aborts the zone tasks when the supervisor is aborted in its sleep.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

struct Settings {
    primaries: Vec<SocketAddr>,
    key: Option<tsig::Key>,
    state_dir: PathBuf,
    limits: xfr::Limits,
}

fn settings(reloader: &Reloader, zone: &Name) -> Option<Settings> {
    let snap = reloader.shared().load();
    let s = snap
        .config
        .config
        .secondary
        .iter()
        .map(|s| s.get_ref())
        .find(|s| zone_name(s.zone.get_ref()).as_ref() == Some(zone))?;
    Some(Settings {
        primaries: s
            .primaries
            .get_ref()
            .iter()
            .filter_map(|p| parse_primary(p.get_ref()))
            .collect(),
        key: s.tsig.as_ref().and_then(|t| {
            let t = t.get_ref();
            tsig::Key::new(&t.name, &t.algorithm, &t.secret).ok()
        }),
        state_dir: snap.config.state_dir(),
        limits: xfr::Limits {
            max_records: s.max_records(),
            max_bytes: s.max_bytes(),
        },
    })
}

/// The SOA of the copy served.
fn served_soa(reloader: &Reloader, zone: &Name) -> Option<Record> {
    let snap = reloader.shared().load();
    Some(
        snap.zones
            .zones
            .get(&crate::zone::wire_key(zone))?
            .soa
            .clone(),
    )
}

/// The SOA timers of the copy served (serial, refresh, retry, expire).
fn served_timers(reloader: &Reloader, zone: &Name) -> Option<(u32, u32, u32, u32)> {
    let snap = reloader.shared().load();
    copy::soa_timers(&snap.zones.zones.get(&crate::zone::wire_key(zone))?.soa)
}

/// Retry period when nothing is known yet (no SOA to read it from).
const DEFAULT_RETRY: Duration = Duration::from_secs(60);

/// What one refresh did, as the blocking thread reports it.
enum Outcome {
    UpToDate,
    NotNewer {
        theirs: u32,
        ours: u32,
    },
    Saved {
        serial: u32,
        kind: &'static str,
        records: u64,
        timers: Option<(u32, u32, u32, u32)>,
    },
}

async fn run_zone(reloader: Arc<Reloader>, secondaries: Secondaries, zone: Name) {
    let wake = secondaries.wake(&zone);
    secondaries.update(&zone, |_| {});
    let mut next = Duration::ZERO; // refresh at start: the copy may be old
    loop {
        // The expire deadline of the copy served: when it passes with no successful refresh,
        // a reload marks the zone expired (SERVFAIL) at once, not at the next reload.
        let expire_in = settings(&reloader, &zone).and_then(|set| {
            let (_, _, _, expire) = served_timers(&reloader, &zone)?;
            let at = copy::last_refresh_or_written(&set.state_dir, &zone)? + u64::from(expire);
            let already = reloader
                .shared()
                .load()
                .zones
                .zones
                .get(&crate::zone::wire_key(&zone))
                .is_some_and(|z| z.expired);
            (!already).then(|| Duration::from_secs(at.saturating_sub(xfr::unix_now()) + 1))
        });
        let mut expired_now = false;
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = wake.notified() => {}
            _ = tokio::time::sleep(expire_in.unwrap_or(Duration::MAX)), if expire_in.is_some() => {
                expired_now = true;
            }
        }
        if expired_now {
            tracing::warn!(zone = %zone, "SOA expire passed without a successful refresh: SERVFAIL until a transfer succeeds");
            if let Err(e) = reloader.reload().await {
                tracing::warn!(zone = %zone, "reload to withdraw the expired zone failed: {}", e.message());
            }
            continue;
        }
        let Some(set) = settings(&reloader, &zone) else {
            return; // removed from the config by a reload
        };
        let timers = served_timers(&reloader, &zone);
        let (r, z) = (reloader.clone(), zone.clone());
        // Receiving, applying, encoding and checking all run off the async workers.
        let outcome = tokio::task::spawn_blocking(move || refresh_blocking(&r, &z, &set))
            .await
            .unwrap_or_else(|e| Err(format!("refresh task failed: {e}")));
        next = match outcome {
            Ok(Outcome::UpToDate) => {
                refreshed(&reloader, &zone);
                secondaries.update(&zone, |s| {
                    s.last_refresh = Some(unix(SystemTime::now()));
                    s.serial = timers.map(|t| t.0);
                });
                timers.map_or(DEFAULT_RETRY, |t| secs(t.1))
            }
            Ok(Outcome::NotNewer { theirs, ours }) => {
                // Not a successful refresh: a primary that went back must not keep an old
                // copy alive past its expire (BIND and Knot do the same).
                fail(
                    &secondaries,
                    &zone,
                    format!("primary offers serial {theirs}, not newer than our {ours} (RFC 1982): not applied"),
                    timers,
                )
            }
            Ok(Outcome::Saved {
                serial,
                kind,
                records,
                timers: new_timers,
            }) => match reload_new_copy(&reloader, &zone).await {
                Ok(_) => {
                    tracing::info!(zone = %zone, serial, kind, records, "zone transferred");
                    secondaries.update(&zone, |s| {
                        let now = Some(unix(SystemTime::now()));
                        s.serial = Some(serial);
                        s.last_transfer = now;
                        s.last_refresh = now;
                        s.last_transfer_kind = Some(kind.to_string());
                        s.transfers += 1;
                        s.last_error = None;
                    });
                    new_timers.map_or(DEFAULT_RETRY, |t| secs(t.1))
                }
                Err(e) => fail(
                    &secondaries,
                    &zone,
                    format!("reload after the transfer: {}", e.message()),
                    timers,
                ),
            },
            Err(e) => fail(&secondaries, &zone, e, timers),
        };
    }
}

/// The reload that serves a new copy: it takes the zone [`save`] built from it (left in the
/// server's `Registrations::prebuilt`). If it did not (a reload rejected before reading the
/// copies), that zone is not kept past it; dropping a large zone takes a while, so off the
/// async workers.
async fn reload_new_copy(
    reloader: &Reloader,
    zone: &Name,
) -> Result<u64, crate::reload::ReloadError> {
    let reloaded = reloader.reload().await;
    if let Some(left) = settings(reloader, zone).and_then(|set| {
        reloader
            .shared()
            .load()
            .registrations
            .prebuilt
            .take(&copy::path(&set.state_dir, zone))
    }) {
        tokio::task::spawn_blocking(move || drop(left));
    }
    reloaded
}

/// Records a successful refresh on disk; reloads when the copy had been marked expired, so it
/// serves again.
fn refreshed(reloader: &Arc<Reloader>, zone: &Name) {
    let Some(set) = settings(reloader, zone) else {
        return;
    };
    if let Err(e) = copy::set_last_refresh(&set.state_dir, zone, xfr::unix_now()) {
        tracing::warn!(zone = %zone, "cannot record the refresh time: {e}");
    }
    let was_expired = reloader
        .shared()
        .load()
        .zones
        .zones
        .get(&crate::zone::wire_key(zone))
        .is_some_and(|z| z.expired);
    if was_expired {
        let r = reloader.clone();
        tokio::spawn(async move {
            let _ = r.reload().await;
        });
    }
}

/// One refresh, on a blocking thread: asks each primary in turn; a new copy is applied,
/// written and checked here, so that only the reload is left to the caller.
fn refresh_blocking(reloader: &Reloader, zone: &Name, set: &Settings) -> Result<Outcome, String> {
    let current = served_soa(reloader, zone);
    // The IXFR base is the copy on disk, which is what is served (a copy is loaded only after
    // it is written); read only when an IXFR must be applied.
    let path = copy::path(&set.state_dir, zone);
    let mut base = || std::fs::read(&path).ok();
    let mut outcome = Err("no primary".to_string());
    for p in &set.primaries {
        outcome = xfr::refresh(
            *p,
            zone,
            current.as_ref(),
            &mut base,
            set.key.as_ref(),
            set.limits,
        )
        .map_err(|e| format!("{p}: {e}"));
        if outcome.is_ok() {
            break;
        }
    }
    match outcome? {
        xfr::Fetched::UpToDate => Ok(Outcome::UpToDate),
        xfr::Fetched::NotNewer { theirs, ours } => Ok(Outcome::NotNewer { theirs, ours }),
        xfr::Fetched::Zone(c, kind) => {
            let timers = copy::soa_timers(&c.soa);
            let (serial, records) = (c.serial, c.records);
            let built = save(zone, set, c.copy)?;
            reloader
                .shared()
                .load()
                .registrations
                .prebuilt
                .put(&copy::path(&set.state_dir, zone), built);
            Ok(Outcome::Saved {
                serial,
                kind,
                records,
                timers,
            })
        }
    }
}

fn secs(s: u32) -> Duration {
    // A zero or absurd timer must neither spin nor sleep for years.
    Duration::from_secs(s.clamp(1, 86_400) as u64)
}

fn fail(
    secondaries: &Secondaries,
    zone: &Name,
    e: String,
    timers: Option<(u32, u32, u32, u32)>,
) -> Duration {
    tracing::warn!(zone = %zone, "refresh failed, the last good copy keeps serving: {e}");
    secondaries.update(zone, |s| {
        s.failures += 1;
        s.last_error = Some(e);
    });
    timers.map_or(DEFAULT_RETRY, |t| secs(t.2))
}

/// Writes the copy: checked as a zone on its own (a copy the zone checks reject never replaces
/// a good one), then renamed over the old one, and the refresh time recorded. Returns the zone
/// the check built, which the reload then serves instead of building it again.
fn save(zone: &Name, set: &Settings, bytes: Vec<u8>) -> Result<crate::zone::Zone, String> {
    let path = copy::path(&set.state_dir, zone);
    let dir = path.parent().ok_or("no state folder")?;
    let incoming = dir.join(".incoming");
    let tmp = incoming.join(path.file_name().ok_or("no file name")?);
    copy::write_atomic(&tmp, &bytes)?;
    drop(bytes);
    let mut built = match copy::load(&tmp, zone) {
        Ok(z) => z,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("transferred zone: {e}"));
        }
    };
    std::fs::rename(&tmp, &path).map_err(|e| format!("rename to {}: {e}", path.display()))?;
    // As if loaded from where it now lies.
    built.file = path;
    copy::set_last_refresh(&set.state_dir, zone, xfr::unix_now())?;
    Ok(built)
}
