//! Zones from a primary (`[[secondary]]`, SPEC "Zones from a primary"): meridian as a secondary
//! of an existing primary (BIND, Knot, PowerDNS, a hidden master).
//!
//! - A task per zone keeps it fresh: IXFR from the serial held (RFC 1995), AXFR when there is
//!   none or IXFR is not offered (RFC 5936), over TCP, TSIG-signed when a key is set
//!   (RFC 8945, [`tsig`]); SOA refresh/retry/expire drive the timers (RFC 1035 §4.3.5) and a
//!   NOTIFY (RFC 1996) from a listed primary wakes the task at once.
//! - Each good transfer is written atomically to `state_dir/secondary/<zone>.zone` as a master
//!   file, and the server reloads: the copy is loaded like any zone file, so balanced names in
//!   it work as in file zones, and a restart serves the copy before the first transfer.
//! - A failed, malformed or wrongly signed transfer changes nothing: the last good copy serves
//!   until it expires (SOA expire with no successful refresh), then the zone is withdrawn.

pub mod tsig;
pub mod xfr;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde::Deserialize;
use toml::Spanned;

use crate::config::{LoadedConfig, Problem};
use crate::reload::Reloader;

/// `[[secondary]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecondaryConfig {
    pub zone: Spanned<String>,
    pub primaries: Spanned<Vec<Spanned<String>>>,
    pub tsig: Option<Spanned<TsigConfig>>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TsigConfig {
    pub name: String,
    pub algorithm: String,
    pub secret: String,
}

impl std::fmt::Debug for TsigConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches a log.
        f.debug_struct("TsigConfig")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

/// A primary address: `ip:port`, or a bare IP for port 53.
pub fn parse_primary(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

fn zone_name(s: &str) -> Option<Name> {
    let mut n = Name::from_ascii(s).ok()?;
    n.set_fqdn(true);
    Some(n.to_lowercase())
}

/// Checks `[[secondary]]` entries; `at` places a problem at a span of the config text.
pub fn check(
    list: &[Spanned<SecondaryConfig>],
    at: &dyn Fn(std::ops::Range<usize>, String) -> Problem,
    out: &mut Vec<Problem>,
) {
    let mut seen = std::collections::HashSet::new();
    for (i, s) in list.iter().enumerate() {
        let s = s.get_ref();
        let key = format!("secondary[{i}]");
        match zone_name(s.zone.get_ref()) {
            None => out.push(at(
                s.zone.span(),
                format!("{key}.zone: `{}` is not a domain name", s.zone.get_ref()),
            )),
            Some(n) => {
                if !seen.insert(n.clone()) {
                    out.push(at(
                        s.zone.span(),
                        format!("{key}.zone: `{n}` is listed twice"),
                    ));
                }
            }
        }
        if s.primaries.get_ref().is_empty() {
            out.push(at(
                s.primaries.span(),
                format!("{key}.primaries: at least one primary is needed"),
            ));
        }
        for p in s.primaries.get_ref() {
            if parse_primary(p.get_ref()).is_none() {
                out.push(at(
                    p.span(),
                    format!(
                        "{key}.primaries: `{}` is not an address (\"192.0.2.1:53\" or \"192.0.2.1\")",
                        p.get_ref()
                    ),
                ));
            }
        }
        if let Some(t) = &s.tsig {
            let c = t.get_ref();
            if let Err(e) = tsig::Key::new(&c.name, &c.algorithm, &c.secret) {
                out.push(at(t.span(), format!("{key}.tsig: {e}")));
            }
        }
    }
}

/// Where the copy of `zone` is kept.
pub fn copy_path(state_dir: &Path, zone: &Name) -> PathBuf {
    let n = zone.to_ascii();
    let n = n.trim_end_matches('.');
    state_dir.join("secondary").join(format!("{n}.zone"))
}

/// Adds the on-disk copies of the secondary zones to the zones loaded from the zones folder.
/// A zone with no copy yet (or an unreadable one) is listed as unbuilt, so that the services
/// inside it are not rejected before the first transfer; an expired copy is not served.
pub fn add_copies(config: &LoadedConfig, zones: &mut crate::zone::DirLoad) {
    let state = config.state_dir();
    for s in &config.config.secondary {
        let Some(origin) = zone_name(s.get_ref().zone.get_ref()) else {
            continue;
        };
        let key = crate::zone::wire_key(&origin);
        if zones.zones.zones.contains_key(&key) {
            // A file zone of the same name wins; `check` says so.
            continue;
        }
        let path = copy_path(&state, &origin);
        let zone = match crate::zone::load_file(&path) {
            Ok(z) => z,
            Err(problems) => {
                if path.exists() {
                    for p in problems.iter().take(3) {
                        tracing::warn!(zone = %origin, "copy not loaded: {p}");
                    }
                }
                zones.unbuilt.push(origin);
                continue;
            }
        };
        if expired(&zone, &path) {
            tracing::warn!(zone = %origin, "copy has expired (SOA expire passed without a refresh): not served");
            zones.unbuilt.push(origin);
            continue;
        }
        zones.zones.zones.insert(key, Arc::new(zone));
    }
}

fn soa_timers(r: &Record) -> Option<(u32, u32, u32, u32)> {
    match &r.data {
        RData::SOA(s) => Some((s.serial, s.refresh as u32, s.retry as u32, s.expire as u32)),
        _ => None,
    }
}

/// The copy's last successful refresh is its file's modification time (touched on each
/// up-to-date check too), so the expire clock survives restarts.
fn expired(zone: &crate::zone::Zone, path: &Path) -> bool {
    let Some((_, _, _, expire)) = soa_timers(&zone.soa) else {
        return false;
    };
    let age = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok());
    age.is_some_and(|a| a > Duration::from_secs(expire as u64))
}

// ---------------------------------------------------------------------------------------------
// State shared with NOTIFY handling and /status, /metrics

/// What `/status` and the metrics show of one secondary zone.
#[derive(Debug, Clone, Default, serde::Serialize)]
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

fn shared() -> &'static Mutex<Shared> {
    static S: OnceLock<Mutex<Shared>> = OnceLock::new();
    S.get_or_init(Default::default)
}

fn with<T>(f: impl FnOnce(&mut Shared) -> T) -> T {
    f(&mut shared().lock().unwrap_or_else(|e| e.into_inner()))
}

/// Every secondary zone's status, by zone name.
pub fn status() -> Vec<ZoneStatus> {
    let mut v: Vec<ZoneStatus> = with(|s| s.status.values().cloned().collect());
    v.sort_by(|a, b| a.zone.cmp(&b.zone));
    v
}

fn update(zone: &Name, f: impl FnOnce(&mut ZoneStatus)) {
    with(|s| {
        let st = s.status.entry(zone.clone()).or_insert_with(|| ZoneStatus {
            zone: zone.to_ascii(),
            ..ZoneStatus::default()
        });
        f(st)
    })
}

fn unix(t: SystemTime) -> f64 {
    crate::metrics::unix_secs(t)
}

/// A NOTIFY (RFC 1996) for `zone` from `src`: accepted (NOERROR) when `zone` is a secondary
/// zone and `src` one of its primaries' addresses, which wakes its refresh; REFUSED otherwise
/// (§3.10: a NOTIFY from elsewhere must not trigger transfers).
pub fn notify(config: &LoadedConfig, zone: &Name, src: IpAddr) -> bool {
    let zone = zone.to_lowercase();
    let allowed = config.config.secondary.iter().any(|s| {
        let s = s.get_ref();
        zone_name(s.zone.get_ref()).as_ref() == Some(&zone)
            && s.primaries
                .get_ref()
                .iter()
                .filter_map(|p| parse_primary(p.get_ref()))
                .any(|p| crate::geo::canonical(p.ip()) == crate::geo::canonical(src))
    });
    if !allowed {
        return false;
    }
    update(&zone, |s| {
        s.notifies += 1;
        s.last_notify = Some(unix(SystemTime::now()));
    });
    let wake = with(|s| s.wake.entry(zone.clone()).or_default().clone());
    // notify_one keeps a permit when the task is busy transferring: it refreshes again after.
    wake.notify_one();
    true
}

// ---------------------------------------------------------------------------------------------
// The refresh tasks

/// The running refresh tasks; dropping it (or [`SecondaryHandle::shutdown`]) stops them.
#[derive(Debug)]
pub struct SecondaryHandle {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SecondaryHandle {
    pub fn shutdown(self) {}
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
/// those apply at once.
pub fn start(reloader: Arc<Reloader>) -> SecondaryHandle {
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
                    running.insert(z.clone(), tokio::spawn(run_zone(reloader.clone(), z)));
                }
            }
            guard.0 = running.values().map(|t| t.abort_handle()).collect();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    SecondaryHandle {
        tasks: vec![supervisor],
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
    })
}

/// The records the server holds for `zone`, SOA first; `None` when it serves no copy.
fn served_records(reloader: &Reloader, zone: &Name) -> Option<Vec<Record>> {
    let snap = reloader.shared().load();
    let z = snap.zones.zones.get(&crate::zone::wire_key(zone))?;
    let mut out = vec![z.soa.clone()];
    for (key, node) in &z.nodes {
        let Some(owner) = crate::zone::key_name(key) else {
            continue;
        };
        for set in node.rrsets.iter().filter(|s| s.rtype != RecordType::SOA) {
            out.extend(set.records(&owner));
        }
    }
    Some(out)
}

/// Retry period when nothing is known yet (no SOA to read it from).
const DEFAULT_RETRY: Duration = Duration::from_secs(60);

async fn run_zone(reloader: Arc<Reloader>, zone: Name) {
    let wake = with(|s| s.wake.entry(zone.clone()).or_default().clone());
    update(&zone, |_| {});
    let mut next = Duration::ZERO; // transfer at start: the copy may be old
    loop {
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
            _ = wake.notified() => {}
        }
        let Some(set) = settings(&reloader, &zone) else {
            return; // removed from the config by a reload
        };
        let current = served_records(&reloader, &zone);
        let timers = current
            .as_ref()
            .and_then(|c| c.first())
            .and_then(soa_timers);
        let mut outcome = Err("no primary".to_string());
        for p in &set.primaries {
            outcome = xfr::refresh(*p, &zone, current.as_deref(), set.key.as_ref())
                .await
                .map_err(|e| format!("{p}: {e}"));
            if outcome.is_ok() {
                break;
            }
        }
        let path = copy_path(&set.state_dir, &zone);
        next = match outcome {
            Ok(xfr::Fetched::UpToDate) => {
                touch(&path);
                update(&zone, |s| {
                    s.last_refresh = Some(unix(SystemTime::now()));
                    s.serial = timers.map(|t| t.0);
                });
                timers.map_or(DEFAULT_RETRY, |t| secs(t.1))
            }
            Ok(xfr::Fetched::Zone {
                records,
                serial,
                kind,
            }) => match save_and_serve(&reloader, &zone, &path, &records).await {
                Ok(()) => {
                    tracing::info!(zone = %zone, serial, kind, records = records.len(), "zone transferred");
                    update(&zone, |s| {
                        let now = Some(unix(SystemTime::now()));
                        s.serial = Some(serial);
                        s.last_transfer = now;
                        s.last_refresh = now;
                        s.last_transfer_kind = Some(kind.to_string());
                        s.transfers += 1;
                        s.last_error = None;
                    });
                    records
                        .first()
                        .and_then(soa_timers)
                        .map_or(DEFAULT_RETRY, |t| secs(t.1))
                }
                Err(e) => fail(&zone, e, timers),
            },
            Err(e) => fail(&zone, e, timers),
        };
    }
}

fn secs(s: u32) -> Duration {
    // A zero or absurd timer must neither spin nor sleep for years.
    Duration::from_secs(s.clamp(1, 86_400) as u64)
}

fn fail(zone: &Name, e: String, timers: Option<(u32, u32, u32, u32)>) -> Duration {
    tracing::warn!(zone = %zone, "transfer failed, the last good copy keeps serving: {e}");
    update(zone, |s| {
        s.failures += 1;
        s.last_error = Some(e);
    });
    timers.map_or(DEFAULT_RETRY, |t| secs(t.2))
}

fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Writes the copy atomically (temp file + rename), then reloads so it serves. A copy that
/// the zone checks reject is removed again and the old one restored: a malformed transfer
/// never replaces a good copy.
async fn save_and_serve(
    reloader: &Reloader,
    zone: &Name,
    path: &Path,
    records: &[Record],
) -> Result<(), String> {
    let text = master_file(zone, records);
    let dir = path.parent().ok_or("no state folder")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    // Checked on its own before it replaces anything: written beside the copy under the same
    // file name (the loader takes the origin from it), then renamed over it.
    let incoming = dir.join(".incoming");
    std::fs::create_dir_all(&incoming)
        .map_err(|e| format!("create {}: {e}", incoming.display()))?;
    let tmp_zone = incoming.join(path.file_name().ok_or("no file name")?);
    std::fs::write(&tmp_zone, &text).map_err(|e| format!("write {}: {e}", tmp_zone.display()))?;
    if let Err(problems) = crate::zone::load_file(&tmp_zone) {
        let _ = std::fs::remove_file(&tmp_zone);
        let first = problems.first().map(|p| p.to_string()).unwrap_or_default();
        return Err(format!("transferred zone fails the zone checks: {first}"));
    }
    std::fs::rename(&tmp_zone, path).map_err(|e| format!("rename to {}: {e}", path.display()))?;
    reloader
        .reload()
        .await
        .map(|_| ())
        .map_err(|e| format!("reload after the transfer: {}", e.message()))
}

/// The records as an RFC 1035 master file, read back by the zone loader.
fn master_file(zone: &Name, records: &[Record]) -> String {
    let mut out = format!(
        "; {zone} transferred by meridian from its primary; rewritten at each transfer\n$ORIGIN {zone}\n"
    );
    for r in records {
        let data = match &r.data {
            RData::TXT(t) => t
                .txt_data
                .iter()
                .map(|s| quote(s))
                .collect::<Vec<_>>()
                .join(" "),
            d => d.to_string(),
        };
        out.push_str(&format!(
            "{} {} {} {} {}\n",
            r.name,
            r.ttl,
            r.dns_class,
            r.record_type(),
            data
        ));
    }
    out
}

fn quote(s: &[u8]) -> String {
    let mut o = String::from("\"");
    for &b in s {
        match b {
            b'"' | b'\\' => {
                o.push('\\');
                o.push(b as char);
            }
            0x20..=0x7e => o.push(b as char),
            _ => o.push_str(&format!("\\{b:03}")),
        }
    }
    o.push('"');
    o
}
