//! The fleet member (built with the `fleet` feature): the etcd session, reports, verdicts,
//! probe assignment and fleet drains. The layout and the rules are in the parent module.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::Slot;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::time::{timeout, Instant, MissedTickBehavior};

use crate::config::fleet::Settings;
use crate::policy::drains::{service_label, Drains, Rule, Scope};
use crate::snapshot::{SharedSnapshot, Snapshot};

/// Longest wait for one etcd call; past it the session counts as lost.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// How often verdicts, assignments and this site's report are brought up to date.
pub const TICK: Duration = Duration::from_millis(100);
/// Wait between reconnection attempts while etcd is unreachable.
pub const RETRY: Duration = Duration::from_millis(500);
/// Largest report read; bigger ones are ignored (etcd's own default request limit is 1.5 MiB).
const MAX_REPORT_BYTES: usize = 2 << 20;
/// Largest drain record read, and most rules in it; past either it is ignored.
const MAX_DRAINS_BYTES: usize = 1 << 20;
const MAX_DRAIN_RULES: usize = 10_000;
/// Most ignored keys listed in `/status` (`ignored_keys` counts them all).
const MAX_IGNORED_SHOWN: usize = 100;
/// Longest site id, service or region name accepted from etcd.
const MAX_NAME: usize = 255;
/// With `probers = N`, no site probes more than (1 + SLACK) × its fair share of the endpoints
/// (rendezvous hashing with bounded loads), so a site whose name ranks first everywhere, by
/// chance or by choice, still leaves most endpoints to the others. See [`assign`].
const SLACK: f64 = 0.25;

/// Why a record under the prefix was not counted: the `reason` of
/// `meridian_fleet_reports_ignored_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ignored {
    /// A report put without a lease: it would outlive its site forever.
    NoLease,
    /// A report whose `site` is not its key's: one site speaking for another.
    SiteMismatch,
    /// Not a report (unreadable JSON, a bad site id in the key or the body).
    Malformed,
    /// Over [`MAX_REPORT_BYTES`].
    TooLarge,
    /// `PREFIX/drains` unreadable, too large, or with a rule that names nothing sane.
    DrainsInvalid,
}

impl Ignored {
    const ALL: [Ignored; 5] = [
        Ignored::NoLease,
        Ignored::SiteMismatch,
        Ignored::Malformed,
        Ignored::TooLarge,
        Ignored::DrainsInvalid,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Ignored::NoLease => "no_lease",
            Ignored::SiteMismatch => "site_mismatch",
            Ignored::Malformed => "malformed",
            Ignored::TooLarge => "too_large",
            Ignored::DrainsInvalid => "drains_invalid",
        }
    }

    /// Counts one more (process-wide, so a reload that restarts the member keeps the count).
    fn count(self) {
        IGNORED_COUNTS[self as usize].fetch_add(1, Ordering::Relaxed);
    }
}

static IGNORED_COUNTS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

/// One site's report as stored in etcd.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Report {
    site: String,
    /// Endpoint key ([`endpoint_key`]) → this site's own verdict, for the endpoints it probes.
    verdicts: BTreeMap<String, bool>,
}

/// The fleet's view of one endpoint, for `/status`.
#[derive(Debug, Clone, Default)]
struct EndpointView {
    healthy_sites: usize,
    reporting_sites: usize,
    healthy: Option<bool>,
    probers: Vec<String>,
}

#[derive(Debug)]
struct View {
    connected: bool,
    since: SystemTime,
    /// The sites whose reports count (this one included), sorted.
    live: Vec<String>,
    /// Keys under `PREFIX/sites/` that are there but do not count, with why.
    ignored: Vec<(String, &'static str)>,
    /// How many keys are ignored, listed or not.
    ignored_keys: usize,
    endpoints: HashMap<String, EndpointView>,
    last_error: Option<String>,
}

/// What the session has read under the prefix: the reports that count, by site, and the
/// keys that do not.
#[derive(Default)]
struct Seen {
    reports: HashMap<String, Report>,
    ignored: BTreeMap<String, &'static str>,
}

/// A drain (true) or undrain of a scope, with its share (partial drains), not yet in etcd.
type Pending = (Scope, bool, Option<f64>);

/// The running fleet member of this process.
pub struct Fleet {
    settings: Settings,
    shared: SharedSnapshot,
    connected: AtomicBool,
    view: Mutex<View>,
    /// The session's client, for drain writes from the API; `None` while disconnected.
    client: Mutex<Option<Client>>,
    lease: Mutex<Option<i64>>,
    /// Drains and undrains made while etcd was unreachable, to store at rejoin.
    pending: Mutex<Vec<Pending>>,
    /// The task that holds the session, ended by [`reconfigure`].
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("settings", &self.settings)
            .field("connected", &self.connected())
            .finish_non_exhaustive()
    }
}

/// `SERVICE/ADDR`: how an endpoint is named in reports; the same at every site that serves the
/// same config.
pub fn endpoint_key(service: &str, addr: IpAddr) -> String {
    format!("{service}/{addr}")
}

/// Rendezvous weight of `site` for endpoint `key`: SipHash with fixed keys, so every site (and
/// every build) ranks the same way.
fn rank(key: &str, site: &str) -> u64 {
    let mut h = siphasher::sip::SipHasher24::new_with_keys(0x6d65_7269_6469_616e, 0x0066_6c65_6574);
    h.write(key.as_bytes());
    h.write_u8(0xff);
    h.write(site.as_bytes());
    h.finish()
}

/// The sites of `live` in the order endpoint `key` prefers them (highest weight first).
fn ranking<'a>(key: &str, live: &'a [String]) -> Vec<&'a String> {
    let mut ranked: Vec<(u64, &String)> = live.iter().map(|s| (rank(key, s), s)).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    ranked.into_iter().map(|(_, s)| s).collect()
}

/// The `n` sites of `live` that endpoint `key` ranks highest (all of them for `n` = 0): plain
/// rendezvous hashing, without the bound on a site's share that [`assign`] adds.
#[cfg(test)]
fn probers_of(key: &str, live: &[String], n: u32) -> Vec<String> {
    if n == 0 || n as usize >= live.len() {
        return live.to_vec();
    }
    ranking(key, live)
        .into_iter()
        .take(n as usize)
        .cloned()
        .collect()
}

/// Who probes each endpoint of `keys`: rendezvous hashing with bounded loads. Each endpoint
/// takes the `n` highest-ranked sites of `live` that do not yet probe `cap` endpoints, where
/// `cap` is (1 + [`SLACK`]) × the fair share; endpoints are taken in key order, so every site
/// computes the same assignment from the same live set and config. The site ids are public
/// and the hash has fixed keys, so a site id can be chosen to rank first for every endpoint:
/// the cap is what keeps such a site (or an unlucky one) from taking over all the probing.
/// While no site is at its cap this is exactly plain rendezvous hashing, so a dead site's
/// endpoints move and the others' stay; with many endpoints the cap is rarely reached.
fn assign(keys: &[String], live: &[String], n: u32) -> HashMap<String, Vec<String>> {
    let n = n as usize;
    if n == 0 || n >= live.len() {
        return keys.iter().map(|k| (k.clone(), live.to_vec())).collect();
    }
    let mut keys: Vec<&String> = keys.iter().collect();
    keys.sort();
    keys.dedup();
    let cap = ((1.0 + SLACK) * (keys.len() * n) as f64 / live.len() as f64).ceil() as usize;
    let cap = cap.max(1);
    let mut load: HashMap<&str, usize> = HashMap::new();
    let mut out = HashMap::with_capacity(keys.len());
    for key in keys {
        let ranked = ranking(key, live);
        let mut chosen: Vec<&String> = ranked
            .iter()
            .filter(|s| load.get(s.as_str()).copied().unwrap_or(0) < cap)
            .take(n)
            .copied()
            .collect();
        // Every other site at its cap (only near the end, with few endpoints): still n.
        for s in &ranked {
            if chosen.len() >= n {
                break;
            }
            if !chosen.contains(s) {
                chosen.push(s);
            }
        }
        for s in &chosen {
            *load.entry(s.as_str()).or_default() += 1;
        }
        out.insert(key.clone(), chosen.into_iter().cloned().collect());
    }
    out
}

/// A site id from etcd that can be a key's last part and shows safely in logs and `/status`.
fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME && !s.contains('/') && !s.chars().any(char::is_control)
}

/// The report under `PREFIX/sites/SITE`, if it counts: put with a lease (so it dies with its
/// site), within [`MAX_REPORT_BYTES`], and saying it is `SITE`'s.
fn read_report(site: &str, lease: i64, value: &[u8]) -> Result<Report, (Ignored, String)> {
    if value.len() > MAX_REPORT_BYTES {
        return Err((
            Ignored::TooLarge,
            format!("{} bytes, more than {MAX_REPORT_BYTES}", value.len()),
        ));
    }
    if !valid_name(site) {
        return Err((Ignored::Malformed, "not a site id".into()));
    }
    if lease == 0 {
        return Err((
            Ignored::NoLease,
            "put without a lease, so it would never expire".into(),
        ));
    }
    let r: Report =
        serde_json::from_slice(value).map_err(|e| (Ignored::Malformed, e.to_string()))?;
    if r.site != site {
        return Err((
            Ignored::SiteMismatch,
            format!(
                "says it is site {:?}",
                r.site.chars().take(MAX_NAME).collect::<String>()
            ),
        ));
    }
    Ok(r)
}

/// `PREFIX/drains`, if it is a drain record this site may apply: the `drains.json` format,
/// within [`MAX_DRAINS_BYTES`] and [`MAX_DRAIN_RULES`], every rule naming an endpoint of a
/// service or a region by sane names, with an RFC 3339 time.
fn read_drains(value: &[u8]) -> Result<Vec<Rule>, String> {
    if value.len() > MAX_DRAINS_BYTES {
        return Err(format!(
            "{} bytes, more than {MAX_DRAINS_BYTES}",
            value.len()
        ));
    }
    let rules = Drains::decode(value)?;
    if rules.len() > MAX_DRAIN_RULES {
        return Err(format!(
            "{} rules, more than {MAX_DRAIN_RULES}",
            rules.len()
        ));
    }
    let name =
        |s: &str| !s.is_empty() && s.len() <= MAX_NAME && s.chars().all(|c| c.is_ascii_graphic());
    for (i, r) in rules.iter().enumerate() {
        let sc = &r.scope;
        let ok = match (&sc.endpoint, &sc.region) {
            // An endpoint without `service` is drained in every service using it (SPEC
            // "Pools": one address is one endpoint for drains), so it travels as it is.
            (Some(_), None) => sc.service.as_deref().is_none_or(name),
            (None, Some(region)) => name(region) && sc.service.as_deref().is_none_or(name),
            _ => false,
        };
        if !ok {
            return Err(format!("rule {i} names no endpoint of a service or region"));
        }
        if r.share.is_some_and(|s| !(s > 0.0 && s < 1.0)) {
            return Err(format!("rule {i}: `share` is not between 0 and 1"));
        }
        if r.at.len() > 64 || humantime::parse_rfc3339_weak(&r.at).is_err() {
            return Err(format!("rule {i}: `at` is not an RFC 3339 time"));
        }
    }
    Ok(rules)
}

/// Starts the fleet member on the current tokio runtime; it runs until the process ends or a
/// reload changes `[fleet]` ([`reconfigure`]).
pub fn start(slot: &Slot, shared: SharedSnapshot, settings: Settings) -> Option<Arc<Fleet>> {
    // A reload through the admin API before this ran has started it already.
    Some(
        slot.get()
            .unwrap_or_else(|| launch(slot, shared, settings, Vec::new())),
    )
}

/// After a reload: when `[fleet]` changed, the member with the old settings leaves (its task
/// ends, its lease is revoked so the others drop it at once, every endpoint goes back to this
/// site's own probes), and one with the new settings joins, taking over the drains still
/// waiting to be stored. No `[fleet]` any more: the site works alone from then on.
pub async fn reconfigure(slot: &Slot, shared: &SharedSnapshot, new: Option<Settings>) {
    let old = slot.get();
    if old.as_ref().map(|f| &f.settings) == new.as_ref() {
        return;
    }
    let mut pending = Vec::new();
    if let Some(old) = old {
        tracing::info!("fleet: [fleet] changed by a reload: leaving with the old settings");
        old.stop().await;
        pending = std::mem::take(&mut *old.pending());
        slot.set(None);
    }
    if let Some(s) = new {
        launch(slot, shared.clone(), s, pending);
    }
}

fn launch(
    slot: &Slot,
    shared: SharedSnapshot,
    settings: Settings,
    pending: Vec<Pending>,
) -> Arc<Fleet> {
    let f = Arc::new(Fleet {
        settings,
        shared,
        connected: AtomicBool::new(false),
        view: Mutex::new(View {
            connected: false,
            since: SystemTime::now(),
            live: Vec::new(),
            ignored: Vec::new(),
            ignored_keys: 0,
            endpoints: HashMap::new(),
            last_error: None,
        }),
        client: Mutex::new(None),
        lease: Mutex::new(None),
        pending: Mutex::new(pending),
        task: Mutex::new(None),
    });
    slot.set(Some(f.clone()));
    let task = tokio::spawn(run(f.clone()));
    *f.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    f
}

async fn run(f: Arc<Fleet>) {
    tracing::info!(
        etcd = ?f.settings.etcd,
        prefix = f.settings.prefix,
        quorum = f.settings.quorum.describe(),
        probers = f.settings.probers,
        "fleet: joining"
    );
    let mut logged = false;
    loop {
        let err = match session(&f).await {
            Ok(()) => "session ended".to_string(),
            Err(e) => e,
        };
        let was = f.connected();
        f.disconnect(&err);
        if was || !logged {
            tracing::warn!(
                "fleet: etcd unreachable ({err}): answering from this site's own probes, drains kept"
            );
            logged = true;
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// One etcd call, bounded by [`RPC_TIMEOUT`].
async fn rpc<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match timeout(RPC_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {RPC_TIMEOUT:?}")),
    }
}

impl Fleet {
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn sites_prefix(&self) -> String {
        format!("{}/sites/", self.settings.prefix)
    }

    fn drains_key(&self) -> String {
        format!("{}/drains", self.settings.prefix)
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn client(&self) -> Option<Client> {
        self.client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_client(&self, c: Option<Client>) {
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = c;
    }

    async fn connect(&self) -> Result<Client, String> {
        let s = &self.settings;
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(RPC_TIMEOUT)
            // HTTP/2 pings: a silently dead etcd (cable, firewall) ends the watch too.
            .with_keep_alive(Duration::from_secs(1), RPC_TIMEOUT)
            .with_keep_alive_while_idle(true);
        if let (Some(u), Some(p)) = (&s.username, &s.password) {
            // etcd's auth tokens expire (simple tokens after 5 min idle): renew them.
            opts = opts
                .with_user(u.clone(), p.clone())
                .with_auto_token_refresh(true);
        }
        if s.ca.is_some() || s.cert.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &s.ca {
                let pem =
                    std::fs::read(ca).map_err(|e| format!("fleet.ca {}: {e}", ca.display()))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            if let (Some(c), Some(k)) = (&s.cert, &s.key) {
                let cert =
                    std::fs::read(c).map_err(|e| format!("fleet.cert {}: {e}", c.display()))?;
                let key =
                    std::fs::read(k).map_err(|e| format!("fleet.key {}: {e}", k.display()))?;
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            opts = opts.with_tls(tls);
        }
        rpc("connect", Client::connect(&s.etcd, Some(opts))).await
    }

    /// Back to this site's own view: every endpoint probed here, its own verdict answered.
    fn disconnect(&self, why: &str) {
        self.set_client(None);
        let was = self.connected.swap(false, Ordering::Relaxed);
        let snap = self.shared.load_full();
        for svc in &snap.services {
            for e in &svc.endpoints {
                e.state.set_probe_here(true);
                e.state.set_fleet_managed(false);
            }
        }
        let mut v = self.view();
        if was || v.connected {
            v.since = SystemTime::now();
        }
        v.connected = false;
        v.live.clear();
        v.ignored.clear();
        v.ignored_keys = 0;
        v.endpoints.clear();
        v.last_error = Some(why.to_string());
    }

    /// Puts the fleet's drain rules in force here (and in the local cache file).
    fn apply_drains(&self, rules: Vec<Rule>) {
        let snap = self.shared.load_full();
        if snap.health.drains.rules() == rules {
            return;
        }
        tracing::info!(rules = rules.len(), "fleet: drains from etcd applied");
        if let Err(e) = snap.health.drains.replace(
            rules,
            &snap.services,
            &snap.regions,
            &snap.config.state_dir(),
        ) {
            tracing::warn!("fleet: drains applied but not cached locally: {e}");
        }
    }

    /// This site's report: its own verdict of every endpoint it probes.
    fn own_report(&self, snap: &Snapshot) -> Report {
        let mut verdicts = BTreeMap::new();
        for svc in &snap.services {
            let name = service_label(svc);
            for e in &svc.endpoints {
                if let Some(v) = e.state.local_verdict() {
                    verdicts.insert(endpoint_key(&name, e.addr), v);
                }
            }
        }
        Report {
            site: self.settings.site.clone(),
            verdicts,
        }
    }

    /// Assignments and fleet verdicts of every endpoint from the live reports.
    /// Only the sites whose reports count are ranked, and with `probers = N` only an
    /// endpoint's assigned probers vote on it.
    fn recompute(&self, snap: &Snapshot, seen: &Seen, own: &Report) {
        let me = &self.settings.site;
        let reports = &seen.reports;
        let mut live: Vec<String> = reports.keys().cloned().collect();
        if !reports.contains_key(me) {
            live.push(me.clone());
        }
        live.sort();
        let probed: Vec<String> = snap
            .services
            .iter()
            .flat_map(|svc| {
                let name = service_label(svc);
                svc.endpoints
                    .iter()
                    .filter(|e| !e.probe.is_empty())
                    .map(move |e| endpoint_key(&name, e.addr))
            })
            .collect();
        let assigned = assign(&probed, &live, self.settings.probers);
        let mut views = HashMap::new();
        for svc in &snap.services {
            let name = service_label(svc);
            for e in &svc.endpoints {
                if e.probe.is_empty() {
                    continue; // never probed: its `initial` state stands everywhere
                }
                let key = endpoint_key(&name, e.addr);
                let probers = assigned.get(&key).cloned().unwrap_or_else(|| live.clone());
                e.state.set_probe_here(probers.iter().any(|p| p == me));
                let (mut healthy, mut reporting) = (0, 0);
                for site in &probers {
                    let r = if site == me {
                        own.verdicts.get(&key)
                    } else {
                        reports.get(site).and_then(|r| r.verdicts.get(&key))
                    };
                    if let Some(&v) = r {
                        reporting += 1;
                        healthy += v as usize;
                    }
                }
                e.state.set_fleet_managed(true);
                // No site reports it (a takeover under way): the last verdict stands.
                let verdict =
                    (reporting > 0).then(|| self.settings.quorum.healthy(healthy, reporting));
                if let Some(v) = verdict {
                    e.state.set_healthy(v);
                }
                views.insert(
                    key,
                    EndpointView {
                        healthy_sites: healthy,
                        reporting_sites: reporting,
                        healthy: verdict,
                        probers,
                    },
                );
            }
        }
        let mut v = self.view();
        v.live = live;
        // Listed up to a bound: keys are whatever was written under the prefix.
        v.ignored = seen
            .ignored
            .iter()
            .take(MAX_IGNORED_SHOWN)
            .map(|(k, r)| (k.clone(), *r))
            .collect();
        v.ignored_keys = seen.ignored.len();
        v.endpoints = views;
    }

    /// `/status` `"fleet"`.
    pub fn status_json(&self) -> Value {
        let v = self.view();
        json!({
            "connected": v.connected,
            "since": humantime::format_rfc3339_millis(v.since).to_string(),
            "site": self.settings.site,
            "etcd": self.settings.etcd,
            "prefix": self.settings.prefix,
            "quorum": self.settings.quorum.describe(),
            "probers": self.settings.probers,
            "report_ttl_s": self.settings.report_ttl.as_secs(),
            // The sites whose reports count (SPEC "Trust boundaries"); `live_sites` is the
            // older name of the same list.
            "sites": v.live,
            "live_sites": v.live,
            "ignored_keys": v.ignored_keys,
            "ignored": v.ignored.iter().map(|(key, reason)| json!({"key": key, "reason": reason})).collect::<Vec<_>>(),
            "last_error": v.last_error,
        })
    }

    /// `meridian_fleet_reports_ignored_total{reason}`: every reason, zeros included.
    pub fn ignored_counts(&self) -> Vec<(&'static str, u64)> {
        Ignored::ALL
            .iter()
            .map(|r| {
                (
                    r.as_str(),
                    IGNORED_COUNTS[*r as usize].load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// `/status` per endpoint `"fleet"`: the count behind its verdict and who probes it.
    pub fn endpoint_json(
        &self,
        service: &str,
        addr: IpAddr,
        state: &crate::health::EndpointState,
    ) -> Value {
        let v = self.view();
        let e = v.endpoints.get(&endpoint_key(service, addr));
        // Disconnected (or not yet computed): this site's own probe is the only report.
        let own = state.local_verdict();
        json!({
            "healthy_sites": e.map_or(usize::from(own == Some(true)), |e| e.healthy_sites),
            "reporting_sites": e.map_or(usize::from(own.is_some()), |e| e.reporting_sites),
            "healthy": e.and_then(|e| e.healthy).unwrap_or(state.healthy()),
            "probers": e.map(|e| e.probers.clone()).unwrap_or_else(|| vec![self.settings.site.clone()]),
            "probed_here": state.probe_here(),
            "own_verdict": state.local_verdict(),
        })
    }

    /// A drain or undrain made through this site's API: stored in etcd by compare-and-swap,
    /// then applied here at once (the others apply it from their watch). `Err` when etcd
    /// could not take it; the caller then applies it locally, and the change is kept to be
    /// stored in etcd when the site rejoins, so a drain made during a partition is not
    /// undone by etcd's older copy.
    pub async fn change_drain(
        &self,
        scope: Scope,
        drain: bool,
        share: Option<f64>,
        snap: &Snapshot,
    ) -> Result<(), String> {
        let r = self.store_drain(scope.clone(), drain, share, snap).await;
        if r.is_err() {
            self.pending().push((scope, drain, share));
        }
        r
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// At rejoin: stores the changes made while etcd was away, in the order they were made.
    async fn replay_pending(&self) -> Result<(), String> {
        let todo = std::mem::take(&mut *self.pending());
        let snap = self.shared.load_full();
        for (i, (scope, drain, share)) in todo.iter().enumerate() {
            if let Err(e) = self.store_drain(scope.clone(), *drain, *share, &snap).await {
                // Put back what is left, ahead of anything queued meanwhile.
                let mut p = self.pending();
                let later = std::mem::take(&mut *p);
                p.extend(todo[i..].iter().cloned());
                p.extend(later);
                return Err(e);
            }
            tracing::info!(
                "fleet: stored in etcd the {} made while it was away: {}",
                if *drain { "drain" } else { "undrain" },
                scope.describe()
            );
        }
        Ok(())
    }

    async fn store_drain(
        &self,
        scope: Scope,
        drain: bool,
        share: Option<f64>,
        snap: &Snapshot,
    ) -> Result<(), String> {
        let Some(mut client) = self.client() else {
            return Err("etcd is not reachable".into());
        };
        let key = self.drains_key();
        for _ in 0..10 {
            let resp = rpc("get drains", client.get(key.clone(), None)).await?;
            let (rules, cmp) = match resp.kvs().first() {
                Some(kv) => (
                    read_drains(kv.value()).unwrap_or_else(|e| {
                        // Not applied when it came (see take_kv): this write replaces it,
                        // starting from the rules in force here.
                        tracing::warn!("fleet: {key} in etcd is invalid ({e}): replacing it with this site's drains and the change");
                        snap.health.drains.rules()
                    }),
                    Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision()),
                ),
                None => (
                    Vec::new(),
                    Compare::version(key.clone(), CompareOp::Equal, 0),
                ),
            };
            let new = Drains::with_change(
                &rules,
                scope.clone(),
                drain,
                share,
                &snap.services,
                &snap.regions,
            );
            let txn = Txn::new().when([cmp]).and_then([TxnOp::put(
                key.clone(),
                Drains::encode(&new),
                None,
            )]);
            if rpc("put drains", client.txn(txn)).await?.succeeded() {
                self.apply_drains(new);
                return Ok(());
            }
        }
        Err("the drains in etcd kept changing under us".into())
    }

    /// At shutdown: revokes the lease, so the other sites drop this one (and take over its
    /// probes) at once instead of after `report_ttl`.
    pub async fn shutdown(&self) {
        let lease = *self.lease.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(mut c), Some(id)) = (self.client(), lease) {
            let _ = timeout(Duration::from_millis(300), c.lease_revoke(id)).await;
        }
    }

    /// Leaves the fleet for good (a reload changed `[fleet]`): the session ends, the lease is
    /// revoked, and every endpoint is back on this site's own probes.
    async fn stop(&self) {
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
        self.shutdown().await;
        self.disconnect("left: [fleet] changed by a reload");
    }
}

/// Applies one key under the prefix (from the first read or the watch); `lease` is the
/// lease the key was put with (0 for none). A report that does not count is dropped, logged
/// once per change, counted in the metric and listed in `/status` `fleet.ignored`; so is a
/// drain record that is not valid, and the drains in force stay as they were.
fn take_kv(f: &Fleet, seen: &mut Seen, key: &[u8], value: Option<&[u8]>, lease: i64) {
    let key = String::from_utf8_lossy(key);
    let sites = f.sites_prefix();
    if let Some(site) = key.strip_prefix(&sites) {
        let Some(value) = value else {
            seen.ignored.remove(key.as_ref());
            if seen.reports.remove(site).is_some() {
                tracing::info!(site, "fleet: site left (report expired or withdrawn)");
            }
            return;
        };
        match read_report(site, lease, value) {
            Ok(r) => {
                seen.ignored.remove(key.as_ref());
                seen.reports.insert(site.to_string(), r);
            }
            Err((why, detail)) => {
                why.count();
                let shown: String = key.chars().take(2 * MAX_NAME).collect();
                tracing::warn!(
                    key = shown,
                    reason = why.as_str(),
                    "fleet: report ignored: {detail}"
                );
                seen.reports.remove(site);
                seen.ignored.insert(shown, why.as_str());
            }
        }
    } else if key == f.drains_key() {
        match value.map(read_drains) {
            Some(Ok(rules)) => f.apply_drains(rules),
            Some(Err(e)) => {
                Ignored::DrainsInvalid.count();
                tracing::warn!(
                    "fleet: drain record in etcd ignored, the drains in force stay: {e}"
                );
            }
            None => f.apply_drains(Vec::new()),
        }
    }
}

/// One connected session; returns when it is lost.
async fn session(f: &Arc<Fleet>) -> Result<(), String> {
    let mut client = f.connect().await?;
    // Changes made while etcd was away go in first, so that etcd's older copy (read below)
    // never undoes them here, not even for a moment.
    f.set_client(Some(client.clone()));
    f.replay_pending().await?;
    let ttl = f.settings.report_ttl;
    let prefix = format!("{}/", f.settings.prefix);
    let lease = rpc(
        "lease grant",
        client.lease_grant(ttl.as_secs() as i64, None),
    )
    .await?
    .id();
    *f.lease.lock().unwrap_or_else(|e| e.into_inner()) = Some(lease);
    let (mut keeper, mut kept) = rpc("lease keep-alive", client.lease_keep_alive(lease)).await?;

    let resp = rpc(
        "read",
        client.get(prefix.clone(), Some(GetOptions::new().with_prefix())),
    )
    .await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let own_key = format!("{}{}", f.sites_prefix(), f.settings.site);
    let mut seen = Seen::default();
    let mut has_drains = false;
    for kv in resp.kvs() {
        has_drains |= kv.key() == f.drains_key().as_bytes();
        if kv.key() == own_key.as_bytes() {
            continue; // ours, whatever is there now, is put again below
        }
        take_kv(f, &mut seen, kv.key(), Some(kv.value()), kv.lease());
    }
    if !has_drains {
        // A new fleet: the first site brings the drains it kept on disk; a site that finds
        // drains in etcd takes etcd's (above).
        let rules = f.shared.load().health.drains.rules();
        if !rules.is_empty() {
            let key = f.drains_key();
            let txn = Txn::new()
                .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, Drains::encode(&rules), None)]);
            rpc("seed drains", client.txn(txn)).await?;
        }
    }
    let mut watch = rpc(
        "watch",
        client.watch(
            prefix.clone(),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        ),
    )
    .await?;

    let snap = f.shared.load_full();
    let own = f.own_report(&snap);
    put_report(&mut client, &own_key, &own, lease).await?;
    let mut published = own.clone();
    f.recompute(&snap, &seen, &own);
    let mut seen_generation = snap.generation;
    drop(snap);

    f.set_client(Some(client.clone()));
    f.connected.store(true, Ordering::Relaxed);
    {
        let mut v = f.view();
        v.connected = true;
        v.since = SystemTime::now();
        v.last_error = None;
    }
    tracing::info!(
        sites = seen.reports.len().max(1),
        "fleet: connected to etcd; answering from the fleet's verdicts"
    );

    let mut refresh = tokio::time::interval(ttl / 3);
    refresh.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_kept = Instant::now();
    loop {
        tokio::select! {
            _ = refresh.tick() => {
                keeper.keep_alive().await.map_err(|e| format!("lease keep-alive: {e}"))?;
            }
            m = kept.message() => match m {
                Ok(Some(r)) if r.ttl() > 0 => last_kept = Instant::now(),
                Ok(Some(_)) => return Err("lease expired".into()),
                Ok(None) => return Err("lease keep-alive stream ended".into()),
                Err(e) => return Err(format!("lease keep-alive: {e}")),
            },
            m = watch.message() => match m {
                Ok(Some(r)) => {
                    if r.canceled() {
                        return Err(format!("watch canceled: {}", r.cancel_reason()));
                    }
                    for ev in r.events() {
                        if let Some(kv) = ev.kv() {
                            let put = ev.event_type() == EventType::Put;
                            if kv.key() == own_key.as_bytes() && !(put && kv.lease() == lease) {
                                // Someone else wrote or deleted this site's key: put ours back.
                                tracing::warn!("fleet: {own_key} was changed by someone else: publishing this site's report again");
                                put_report(&mut client, &own_key, &published, lease).await?;
                                continue;
                            }
                            take_kv(f, &mut seen, kv.key(), put.then(|| kv.value()), kv.lease());
                        }
                    }
                    let snap = f.shared.load_full();
                    let own = f.own_report(&snap);
                    f.recompute(&snap, &seen, &own);
                }
                Ok(None) => return Err("watch ended".into()),
                Err(e) => return Err(format!("watch: {e}")),
            },
            _ = tick.tick() => {
                // A keep-alive that goes unanswered means the lease (and our reports) are
                // gone at the others by now: count as disconnected.
                if last_kept.elapsed() > ttl {
                    return Err(format!("no lease keep-alive answer for {ttl:?}"));
                }
                let snap = f.shared.load_full();
                let own = f.own_report(&snap);
                // Recomputed only when something it depends on moved: our own verdicts or the
                // config (new endpoint states need their flags); watch events recompute above.
                let changed = own != published;
                if changed {
                    put_report(&mut client, &own_key, &own, lease).await?;
                    published = own.clone();
                }
                if changed || seen_generation != snap.generation {
                    seen_generation = snap.generation;
                    f.recompute(&snap, &seen, &own);
                }
            }
        }
    }
}

async fn put_report(client: &mut Client, key: &str, r: &Report, lease: i64) -> Result<(), String> {
    let body = serde_json::to_vec(r).map_err(|e| format!("encode report: {e}"))?;
    rpc(
        "put report",
        client.put(key, body, Some(PutOptions::new().with_lease(lease))),
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// A site id that ranks first for every one of `keys` (ground as an attacker would).
    fn ranks_first_everywhere(keys: &[String], live: &[String]) -> String {
        (0u64..)
            .map(|i| format!("x{i}"))
            .find(|x| {
                keys.iter()
                    .all(|k| live.iter().all(|s| rank(k, x) > rank(k, s)))
            })
            .expect("some id ranks first")
    }

    #[test]
    fn a_site_id_chosen_to_rank_first_gets_only_its_capped_share() {
        let keys: Vec<String> = (1..=6)
            .map(|i| format!("www.example.com/192.0.2.{i}"))
            .collect();
        let real = sites(&["a", "b", "c"]);
        let x = ranks_first_everywhere(&keys, &real);
        let mut live = real.clone();
        live.push(x.clone());
        // Plain rendezvous gives it every endpoint ...
        assert!(keys.iter().all(|k| probers_of(k, &live, 1) == [x.clone()]));
        // ... the bounded assignment at most (1 + SLACK) × 6 / 4, rounded up: 2.
        let a = assign(&keys, &live, 1);
        let taken = a.values().filter(|p| p.contains(&x)).count();
        assert_eq!(taken, 2, "{a:?}");
        assert!(a.values().all(|p| p.len() == 1));
        // With probers = 2 every endpoint still has two, and x at most ceil(1.25 × 12 / 4) = 4.
        let a2 = assign(&keys, &live, 2);
        assert!(a2.values().all(|p| p.len() == 2 && p[0] != p[1]), "{a2:?}");
        assert!(
            a2.values().filter(|p| p.contains(&x)).count() <= 4,
            "{a2:?}"
        );
    }

    #[test]
    fn bounded_assignment_is_rendezvous_while_no_site_is_at_its_cap() {
        let keys: Vec<String> = (0..300)
            .map(|i| format!("www.example.com/192.0.2.{i}"))
            .collect();
        let live = sites(&["a", "b", "c"]);
        let without_c = sites(&["a", "b"]);
        let (all, after) = (assign(&keys, &live, 1), assign(&keys, &without_c, 1));
        for k in &keys {
            assert_eq!(all[k], probers_of(k, &live, 1));
            if all[k][0] != "c" {
                assert_eq!(
                    all[k], after[k],
                    "an endpoint not probed by c keeps its prober"
                );
            }
        }
        assert!(assign(&keys, &live, 0).values().all(|p| p.len() == 3));
    }

    #[test]
    fn reports_count_only_leased_and_under_their_own_site() {
        let body = br#"{"site": "a", "verdicts": {"www.example.com/192.0.2.1": false}}"#;
        assert!(read_report("a", 7, body).is_ok());
        assert_eq!(
            read_report("a", 0, body).map_err(|e| e.0),
            Err(Ignored::NoLease)
        );
        assert_eq!(
            read_report("b", 7, body).map_err(|e| e.0),
            Err(Ignored::SiteMismatch)
        );
        assert_eq!(
            read_report("a/b", 7, body).map_err(|e| e.0),
            Err(Ignored::Malformed)
        );
        assert_eq!(
            read_report("a", 7, b"[1, 2").map_err(|e| e.0),
            Err(Ignored::Malformed)
        );
        let big = vec![b' '; MAX_REPORT_BYTES + 1];
        assert_eq!(
            read_report("a", 7, &big).map_err(|e| e.0),
            Err(Ignored::TooLarge)
        );
    }

    #[test]
    fn drain_records_are_checked_before_use() {
        let ok = br#"{"version": 1, "drains": [{"drain": true, "service": "www.example.com", "endpoint": "192.0.2.1", "at": "2026-01-01T00:00:00Z"}, {"drain": true, "region": "eu", "at": "2026-01-01T00:00:00Z"}]}"#;
        assert_eq!(read_drains(ok).map(|r| r.len()), Ok(2));
        // A partial drain travels with its share.
        let partial = br#"{"version": 1, "drains": [{"drain": true, "region": "eu", "share": 0.25, "at": "2026-01-01T00:00:00Z"}]}"#;
        assert_eq!(read_drains(partial).map(|r| r[0].share), Ok(Some(0.25)));
        // An endpoint drained in every service (no `service`), fully or partly, is a record
        // the other sites apply as it is.
        let every = br#"{"version": 1, "drains": [{"drain": true, "endpoint": "192.0.2.1", "at": "2026-01-01T00:00:00Z"}, {"drain": true, "endpoint": "192.0.2.2", "share": 0.5, "at": "2026-01-01T00:00:00Z"}]}"#;
        assert_eq!(read_drains(every).map(|r| r.len()), Ok(2));
        for bad in [
            &br#"{"version": 1, "drains": [{"drain": true, "region": "eu", "share": 1.5, "at": "2026-01-01T00:00:00Z"}]}"#[..],
            br#"{"version": 1, "drains": [{"drain": true, "region": "eu", "share": 0, "at": "2026-01-01T00:00:00Z"}]}"#,
            br#"{"version": 1, "drains": [{"drain": true, "region": "eu", "share": "half", "at": "2026-01-01T00:00:00Z"}]}"#,
        ] {
            assert!(read_drains(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        for bad in [
            &br#"{"version": 1, "drains": [{"drain": true, "at": "2026-01-01T00:00:00Z"}]}"#[..],
            br#"{"version": 1, "drains": [{"drain": true, "endpoint": "192.0.2.1\n", "at": "2026-01-01T00:00:00Z"}]}"#,
            br#"{"version": 1, "drains": [{"drain": true, "region": "eu", "at": "yesterday"}]}"#,
            br#"{"version": 1, "drains": [{"drain": true, "region": "e u\n", "at": "2026-01-01T00:00:00Z"}]}"#,
            br#"{"version": 2, "drains": []}"#,
            br#"{"drains": 5}"#,
        ] {
            assert!(read_drains(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let many = format!(
            r#"{{"version": 1, "drains": [{}]}}"#,
            vec![
                r#"{"drain": true, "region": "eu", "at": "2026-01-01T00:00:00Z"}"#;
                MAX_DRAIN_RULES + 1
            ]
            .join(",")
        );
        assert!(read_drains(many.as_bytes()).is_err());
        assert!(read_drains(&vec![b' '; MAX_DRAINS_BYTES + 1]).is_err());
    }

    #[test]
    fn rendezvous_picks_n_and_moves_only_the_dead_sites_share() {
        let live: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let mut counts = HashMap::new();
        for i in 0..300 {
            let key = format!("www.example.com/192.0.2.{i}");
            let p = probers_of(&key, &live, 1);
            assert_eq!(p.len(), 1);
            *counts.entry(p[0].clone()).or_insert(0) += 1;
            let without_c: Vec<String> = live.iter().filter(|s| *s != "c").cloned().collect();
            let q = probers_of(&key, &without_c, 1);
            if p[0] != "c" {
                assert_eq!(p, q, "an endpoint not probed by c keeps its prober");
            }
            assert_eq!(probers_of(&key, &live, 2).len(), 2);
            assert_eq!(probers_of(&key, &live, 0).len(), 3);
        }
        for s in ["a", "b", "c"] {
            assert!(counts[s] > 60, "{counts:?}");
        }
    }
}
