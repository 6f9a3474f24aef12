//! The fleet member (built with the `fleet` feature): the etcd session, reports, verdicts,
//! probe assignment and fleet drains. The layout and the rules are in the parent module.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::time::{timeout, Instant, MissedTickBehavior};

use super::config::Settings;
use crate::health::drains::{service_label, Drains, Rule, Scope};
use crate::snapshot::{SharedSnapshot, Snapshot};

/// Longest wait for one etcd call; past it the session counts as lost.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// How often verdicts, assignments and this site's report are brought up to date.
pub const TICK: Duration = Duration::from_millis(100);
/// Wait between reconnection attempts while etcd is unreachable.
pub const RETRY: Duration = Duration::from_millis(500);

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
    live: Vec<String>,
    endpoints: HashMap<String, EndpointView>,
    last_error: Option<String>,
}

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
    pending: Mutex<Vec<(Scope, bool)>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("settings", &self.settings)
            .field("connected", &self.connected())
            .finish_non_exhaustive()
    }
}

static CURRENT: ArcSwapOption<Fleet> = ArcSwapOption::const_empty();

/// The fleet of this process, when `[fleet]` is configured and [`start`] ran.
pub fn current() -> Option<Arc<Fleet>> {
    CURRENT.load_full()
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

/// The `n` sites of `live` that probe endpoint `key` (all of them for `n` = 0).
fn probers_of(key: &str, live: &[String], n: u32) -> Vec<String> {
    if n == 0 || n as usize >= live.len() {
        return live.to_vec();
    }
    let mut ranked: Vec<(u64, &String)> = live.iter().map(|s| (rank(key, s), s)).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    ranked
        .into_iter()
        .take(n as usize)
        .map(|(_, s)| s.clone())
        .collect()
}

/// Starts the fleet member on the current tokio runtime; it runs until the process ends.
pub fn start(shared: SharedSnapshot, settings: Settings) -> Option<Arc<Fleet>> {
    let f = Arc::new(Fleet {
        settings,
        shared,
        connected: AtomicBool::new(false),
        view: Mutex::new(View {
            connected: false,
            since: SystemTime::now(),
            live: Vec::new(),
            endpoints: HashMap::new(),
            last_error: None,
        }),
        client: Mutex::new(None),
        lease: Mutex::new(None),
        pending: Mutex::new(Vec::new()),
    });
    CURRENT.store(Some(f.clone()));
    tokio::spawn(run(f.clone()));
    Some(f)
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
    fn recompute(&self, snap: &Snapshot, reports: &HashMap<String, Report>, own: &Report) {
        let me = &self.settings.site;
        let mut live: Vec<String> = reports.keys().cloned().collect();
        if !reports.contains_key(me) {
            live.push(me.clone());
        }
        live.sort();
        let mut views = HashMap::new();
        for svc in &snap.services {
            let name = service_label(svc);
            for e in &svc.endpoints {
                if e.probe.is_empty() {
                    continue; // never probed: its `initial` state stands everywhere
                }
                let key = endpoint_key(&name, e.addr);
                let probers = probers_of(&key, &live, self.settings.probers);
                e.state.set_probe_here(probers.iter().any(|p| p == me));
                let (mut healthy, mut reporting) = (0, 0);
                for site in &live {
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
            "live_sites": v.live,
            "last_error": v.last_error,
        })
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
        snap: &Snapshot,
    ) -> Result<(), String> {
        let r = self.store_drain(scope.clone(), drain, snap).await;
        if r.is_err() {
            self.pending().push((scope, drain));
        }
        r
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<(Scope, bool)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// At rejoin: stores the changes made while etcd was away, in the order they were made.
    async fn replay_pending(&self) -> Result<(), String> {
        let todo = std::mem::take(&mut *self.pending());
        let snap = self.shared.load_full();
        for (i, (scope, drain)) in todo.iter().enumerate() {
            if let Err(e) = self.store_drain(scope.clone(), *drain, &snap).await {
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

    async fn store_drain(&self, scope: Scope, drain: bool, snap: &Snapshot) -> Result<(), String> {
        let Some(mut client) = self.client() else {
            return Err("etcd is not reachable".into());
        };
        let key = self.drains_key();
        for _ in 0..10 {
            let resp = rpc("get drains", client.get(key.clone(), None)).await?;
            let (rules, cmp) = match resp.kvs().first() {
                Some(kv) => (
                    Drains::decode(kv.value()).map_err(|e| format!("{key} in etcd: {e}"))?,
                    Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision()),
                ),
                None => (
                    Vec::new(),
                    Compare::version(key.clone(), CompareOp::Equal, 0),
                ),
            };
            let new =
                Drains::with_change(&rules, scope.clone(), drain, &snap.services, &snap.regions);
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
}

/// Applies one key under the prefix (from the first read or the watch).
fn take_kv(f: &Fleet, reports: &mut HashMap<String, Report>, key: &[u8], value: Option<&[u8]>) {
    let key = String::from_utf8_lossy(key);
    let sites = f.sites_prefix();
    if let Some(site) = key.strip_prefix(&sites) {
        match value.map(serde_json::from_slice::<Report>) {
            Some(Ok(r)) => {
                reports.insert(site.to_string(), r);
            }
            Some(Err(e)) => {
                tracing::warn!(site, "fleet: unreadable report ignored: {e}");
                reports.remove(site);
            }
            None => {
                if reports.remove(site).is_some() {
                    tracing::info!(site, "fleet: site left (report expired or withdrawn)");
                }
            }
        }
    } else if key == f.drains_key() {
        match value.map(Drains::decode) {
            Some(Ok(rules)) => f.apply_drains(rules),
            Some(Err(e)) => tracing::warn!("fleet: drains in etcd unreadable, kept ours: {e}"),
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
    let mut reports = HashMap::new();
    let mut has_drains = false;
    for kv in resp.kvs() {
        has_drains |= kv.key() == f.drains_key().as_bytes();
        take_kv(f, &mut reports, kv.key(), Some(kv.value()));
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

    let own_key = format!("{}{}", f.sites_prefix(), f.settings.site);
    let snap = f.shared.load_full();
    let own = f.own_report(&snap);
    put_report(&mut client, &own_key, &own, lease).await?;
    let mut published = own.clone();
    f.recompute(&snap, &reports, &own);
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
        sites = reports.len().max(1),
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
                            let value = (ev.event_type() == EventType::Put).then(|| kv.value());
                            take_kv(f, &mut reports, kv.key(), value);
                        }
                    }
                    let snap = f.shared.load_full();
                    let own = f.own_report(&snap);
                    f.recompute(&snap, &reports, &own);
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
                    f.recompute(&snap, &reports, &own);
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
