//! The health prober: HTTP, HTTPS and TCP checks that move endpoints in and out of answers
//! (SPEC "Health").
//!
//! Shape, following HAProxy's and gdnsd's checkers:
//! - a *target* is everything that decides how a probe is made (URL plus profile settings);
//!   endpoints whose targets are equal share one probe task, and its result is written to every
//!   one of their [`EndpointState`]s;
//! - each target runs in its own task: its first probe goes out as soon as the target appears
//!   (at start, or within [`POLL`] of a reload), so a new endpoint is never answered for long
//!   on its unprobed `initial` state; later probes follow a fixed interval whose phase is a
//!   random fraction of the interval, so thousands of targets do not fire together; a global
//!   semaphore bounds the probes in flight, and every probe is cut off by its timeout, so a
//!   hanging endpoint holds one permit and delays nothing else;
//! - rise/fall: a target turns healthy after `rise` consecutive good probes and unhealthy after
//!   `fall` consecutive bad ones; round-trip time is an EWMA (α = 0.3) of good probes; `X-Load`
//!   from any HTTP response is the endpoint's load;
//! - a supervisor task watches the snapshot's generation: after a reload it stops the tasks of
//!   targets that are gone and starts tasks for new ones, while unchanged targets keep running
//!   with their counters (the registry hands the same `EndpointState`s to the new snapshot).
//!
//! Probes never touch the query path: it only reads the atomics in `EndpointState`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use hickory_proto::rr::Name;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::Semaphore;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

use super::{EndpointState, ProbeResult};
use crate::config::{self, HealthProfile};
use crate::snapshot::{SharedSnapshot, Snapshot};

/// Defaults of a `[health.NAME]` profile for keys it leaves out.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;
pub const DEFAULT_EXPECT_STATUS: (u16, u16) = (200, 299);
/// Probes in flight at once, over all targets.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// How much of a body `expect_body` searches.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Weight of a new sample in the round-trip time average.
pub const RTT_ALPHA: f64 = 0.3;
/// How often the supervisor looks for a new snapshot generation: also how long a new
/// endpoint can wait for its first probe after a reload. A look is one atomic load.
pub const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Http,
    Https,
    Tcp,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Https => "https",
            Kind::Tcp => "tcp",
        }
    }
}

/// The settings of a profile with its defaults filled in: interval 5 s, timeout 2 s (at most
/// the interval), rise 2, fall 3, expect_status 200-299, path `/`, port 80 (http) or 443
/// (https), tls_verify true.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Settings {
    pub kind: Kind,
    pub path: String,
    pub port: Option<u16>,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub expect_status: Vec<(u16, u16)>,
    pub expect_body: Option<String>,
    pub host: Option<String>,
    pub headers: Vec<(String, String)>,
    pub tls_verify: bool,
    /// `source`: the local address probes leave from.
    pub source: Option<IpAddr>,
}

impl Settings {
    pub fn from_profile(p: &HealthProfile) -> Settings {
        let kind = match p.kind.get_ref().as_str() {
            "https" => Kind::Https,
            "tcp" => Kind::Tcp,
            _ => Kind::Http,
        };
        let duration = |d: &Option<serde_spanned::Spanned<String>>, default: Duration| {
            d.as_ref()
                .and_then(|d| config::parse_duration(d.get_ref()).ok())
                .filter(|d| !d.is_zero())
                .unwrap_or(default)
        };
        let path = p.path.clone().unwrap_or_else(|| "/".into());
        let interval = duration(&p.interval, DEFAULT_INTERVAL);
        Settings {
            kind,
            path: if path.starts_with('/') {
                path
            } else {
                format!("/{path}")
            },
            port: p.port,
            interval,
            // Probes of one target never overlap, so a timeout above the interval would stretch
            // the interval (and the SPEC's failover bound); gdnsd refuses such a profile.
            timeout: duration(&p.timeout, DEFAULT_TIMEOUT).min(interval),
            rise: p
                .rise
                .as_ref()
                .map_or(DEFAULT_RISE, |r| *r.get_ref())
                .max(1),
            fall: p
                .fall
                .as_ref()
                .map_or(DEFAULT_FALL, |f| *f.get_ref())
                .max(1),
            expect_status: p
                .expect_status
                .as_ref()
                .and_then(|s| config::status_ranges(s.get_ref()).ok())
                .unwrap_or_else(|| vec![DEFAULT_EXPECT_STATUS]),
            expect_body: p.expect_body.clone().filter(|b| !b.is_empty()),
            host: p.host.clone().filter(|h| !h.is_empty()),
            headers: p
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            tls_verify: p.tls_verify.unwrap_or(true),
            source: p.source.as_ref().and_then(|a| a.get_ref().parse().ok()),
        }
    }
}

/// One probe target: what is probed and how. Endpoints with equal targets share one probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub kind: Kind,
    /// `http://…` / `https://…` URL, or `tcp://host:port`.
    pub url: String,
    pub settings: Settings,
}

impl Target {
    /// The target of an endpoint at `addr` whose probe is `probe` (its `check` URL, or
    /// `profile:NAME` for the profile's own kind, port and path).
    pub fn new(addr: IpAddr, probe: &str, settings: &Settings) -> Target {
        let (kind, url) = if probe.starts_with("profile:") || probe.is_empty() {
            let kind = settings.kind;
            let port = settings.port.unwrap_or(match kind {
                Kind::Https => 443,
                _ => 80,
            });
            let sa = SocketAddr::new(addr, port); // brackets IPv6
            let url = match kind {
                Kind::Tcp => format!("tcp://{sa}"),
                _ => format!("{}://{sa}{}", kind.as_str(), settings.path),
            };
            (kind, url)
        } else {
            let kind = if probe.starts_with("https://") {
                Kind::Https
            } else if probe.starts_with("tcp://") {
                Kind::Tcp
            } else {
                Kind::Http
            };
            (kind, probe.to_string())
        };
        Target {
            kind,
            url,
            settings: settings.clone(),
        }
    }
}

impl Target {
    /// The target of a `target` endpoint: the profile's kind, port and path at the name
    /// (`{kind}://{target}:{port}{path}`), so that Host and SNI are the target and the name is
    /// resolved through the system resolver at every probe (a load balancer's addresses
    /// change). A `check` URL is used as given.
    pub fn for_name(name: &Name, probe: &str, settings: &Settings) -> Target {
        if !(probe.starts_with("profile:") || probe.is_empty()) {
            return Target::new(IpAddr::from([0, 0, 0, 0]), probe, settings);
        }
        let host = name.to_ascii();
        let host = host.trim_end_matches('.');
        let kind = settings.kind;
        let port = settings.port.unwrap_or(match kind {
            Kind::Https => 443,
            _ => 80,
        });
        let url = match kind {
            Kind::Tcp => format!("tcp://{host}:{port}"),
            _ => format!("{}://{host}:{port}{}", kind.as_str(), settings.path),
        };
        Target {
            kind,
            url,
            settings: settings.clone(),
        }
    }
}

/// One endpoint that a target's result is written to.
#[derive(Debug, Clone)]
pub struct ProbedEndpoint {
    /// Service name without the final dot.
    pub service: String,
    pub address: IpAddr,
    /// The endpoint as metrics name it: its address, or its `target` name.
    pub label: String,
    pub state: Arc<EndpointState>,
}

/// Handed to [`ProberOptions::observer`] after every probe (for metrics).
#[derive(Debug)]
pub struct ProbeEvent<'a> {
    pub target: &'a Target,
    pub result: &'a ProbeResult,
    /// Every endpoint the result was applied to.
    pub endpoints: &'a [ProbedEndpoint],
    /// Healthy after this probe (rise/fall applied).
    pub healthy: bool,
}

pub type ProbeObserver = Arc<dyn Fn(&ProbeEvent<'_>) + Send + Sync>;

#[derive(Clone)]
pub struct ProberOptions {
    /// Bound on probes in flight over all targets.
    pub max_in_flight: usize,
    /// Called after every probe, on the probing task; keep it short.
    pub observer: Option<ProbeObserver>,
}

impl Default for ProberOptions {
    fn default() -> Self {
        ProberOptions {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            observer: None,
        }
    }
}

impl std::fmt::Debug for ProberOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProberOptions")
            .field("max_in_flight", &self.max_in_flight)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

/// The running prober. Dropping it leaves the prober running; [`ProberHandle::shutdown`] stops it.
#[derive(Debug)]
pub struct ProberHandle {
    task: tokio::task::JoinHandle<()>,
    targets: Arc<AtomicUsize>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl ProberHandle {
    /// Stops the supervisor and every probe task (at their next await point).
    pub fn shutdown(self) {
        self.task.abort();
    }
    /// Probe tasks running now (distinct targets).
    pub fn targets(&self) -> usize {
        self.targets.load(Ordering::Relaxed)
    }
    /// The snapshot generation the probe tasks follow (0 before the first reconcile).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
}

/// Starts probing the endpoints of the current snapshot and follows reloads of `shared`. Must be
/// called inside a tokio runtime.
pub fn start(shared: SharedSnapshot) -> ProberHandle {
    start_with(shared, ProberOptions::default())
}

pub fn start_with(shared: SharedSnapshot, opts: ProberOptions) -> ProberHandle {
    let ctx = Arc::new(Ctx {
        sem: Semaphore::new(opts.max_in_flight.max(1)),
        tls: TlsConfigs::new(),
        observer: opts.observer,
    });
    let targets = Arc::new(AtomicUsize::new(0));
    let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let task = tokio::spawn(supervise(shared, ctx, targets.clone(), generation.clone()));
    ProberHandle {
        task,
        targets,
        generation,
    }
}

struct Ctx {
    sem: Semaphore,
    tls: Option<TlsConfigs>,
    observer: Option<ProbeObserver>,
}

struct Running {
    members: Arc<ArcSwap<Vec<ProbedEndpoint>>>,
    abort: AbortHandle,
}

async fn supervise(
    shared: SharedSnapshot,
    ctx: Arc<Ctx>,
    count: Arc<AtomicUsize>,
    generation: Arc<std::sync::atomic::AtomicU64>,
) {
    // Dropping this future (ProberHandle::shutdown) drops the set, which aborts every task.
    let mut set = JoinSet::new();
    let mut running: HashMap<Arc<Target>, Running> = HashMap::new();
    let mut seen = None;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        while set.try_join_next().is_some() {}
        let snap = shared.load_full();
        if seen == Some(snap.generation) {
            continue;
        }
        seen = Some(snap.generation);
        let want = desired(&snap);
        let gen = snap.generation;
        drop(snap);
        let before = running.len();
        running.retain(|t, r| {
            let keep = want.contains_key(t);
            if !keep {
                r.abort.abort();
            }
            keep
        });
        let stopped = before - running.len();
        let mut started = 0;
        for (t, members) in want {
            match running.get(&t) {
                Some(r) => r.members.store(Arc::new(members)),
                None => {
                    let t = Arc::new(t);
                    let members = Arc::new(ArcSwap::from_pointee(members));
                    let abort = set.spawn(run_target(t.clone(), members.clone(), ctx.clone()));
                    running.insert(t, Running { members, abort });
                    started += 1;
                }
            }
        }
        count.store(running.len(), Ordering::Relaxed);
        generation.store(gen, Ordering::Relaxed);
        tracing::info!(
            generation = gen,
            targets = running.len(),
            started,
            stopped,
            "health prober following the config"
        );
    }
}

/// Targets of a snapshot and the endpoints each one stands for.
fn desired(snap: &Snapshot) -> HashMap<Target, Vec<ProbedEndpoint>> {
    let mut want: HashMap<Target, Vec<ProbedEndpoint>> = HashMap::new();
    for svc in &snap.services {
        let name = svc.name.to_ascii();
        let name = name.strip_suffix('.').unwrap_or(&name);
        let profile = svc
            .health
            .as_ref()
            .and_then(|p| snap.config.config.health.get(p));
        let Some(profile) = profile else {
            for e in svc.endpoints.iter().filter(|e| !e.probe.is_empty()) {
                tracing::warn!(
                    service = name,
                    endpoint = %e.addr,
                    check = e.probe,
                    "endpoint has a check but its service no health profile: not probed"
                );
            }
            continue;
        };
        let settings = Settings::from_profile(profile.get_ref());
        for e in &svc.endpoints {
            if e.probe.is_empty() {
                continue;
            }
            let target = match &e.target {
                Some(t) => Target::for_name(t, &e.probe, &settings),
                None => Target::new(e.addr, &e.probe, &settings),
            };
            want.entry(target).or_default().push(ProbedEndpoint {
                service: name.to_string(),
                address: e.addr,
                label: e.label(),
                state: e.state.clone(),
            });
        }
    }
    want
}

/// What one probe found.
#[derive(Debug)]
struct Outcome {
    ok: bool,
    class: &'static str,
    reason: String,
    /// `Some` when an HTTP response came back: the `X-Load` it carried, if any.
    load: Option<Option<f64>>,
}

impl Outcome {
    fn ok(load: Option<Option<f64>>) -> Outcome {
        Outcome {
            ok: true,
            class: "ok",
            reason: "ok".into(),
            load,
        }
    }
    fn fail(class: &'static str, reason: impl Into<String>) -> Outcome {
        Outcome {
            ok: false,
            class,
            reason: reason.into(),
            load: None,
        }
    }
}

/// The rise/fall machine of one target.
#[derive(Debug)]
struct Verdict {
    healthy: bool,
    good: u32,
    bad: u32,
}

impl Verdict {
    /// Counts one probe; returns true when the state flipped.
    fn count(&mut self, ok: bool, rise: u32, fall: u32) -> bool {
        if ok {
            self.good = self.good.saturating_add(1);
            self.bad = 0;
            if !self.healthy && self.good >= rise {
                self.healthy = true;
                return true;
            }
        } else {
            self.bad = self.bad.saturating_add(1);
            self.good = 0;
            if self.healthy && self.bad >= fall {
                self.healthy = false;
                return true;
            }
        }
        false
    }
}

async fn run_target(
    target: Arc<Target>,
    members: Arc<ArcSwap<Vec<ProbedEndpoint>>>,
    ctx: Arc<Ctx>,
) {
    let s = &target.settings;
    let probe = Probe::new(&target, ctx.tls.as_ref());
    if let Err(e) = &probe {
        tracing::warn!(check = target.url, "health check cannot be made: {e}");
    }
    // The first probe goes out at once: a new endpoint (at start or after a reload) is
    // answered on its `initial` state only for as long as that probe takes. The later ticks
    // start at a random phase of the interval, so that thousands of targets do not fire
    // together (the burst of first probes is bounded by the in-flight semaphore).
    let phase = s.interval.mul_f64(crate::policy::random_unit());
    let mut tick = tokio::time::interval_at(Instant::now() + phase, s.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut first = true;
    let mut verdict = Verdict {
        // A new target of endpoints that already have a state (its profile changed) goes on
        // from that state; fresh endpoints start as the profile's `initial` says.
        healthy: members.load().first().is_none_or(|m| m.state.healthy()),
        good: 0,
        bad: 0,
    };
    let mut rtt: Option<f64> = None;
    loop {
        if !std::mem::take(&mut first) {
            tick.tick().await;
        }
        // [fleet] probers = N: other sites probe this target. The verdict follows what
        // answers use, so a takeover goes on from the fleet's view instead of a stale one.
        if !members.load().iter().any(|m| m.state.probe_here()) {
            let current = members.load();
            for m in current.iter() {
                m.state.clear_local_verdict();
            }
            verdict.healthy = current.first().is_none_or(|m| m.state.healthy());
            (verdict.good, verdict.bad) = (0, 0);
            continue;
        }
        let Ok(permit) = ctx.sem.acquire().await else {
            return;
        };
        let started = Instant::now();
        let out = match &probe {
            Ok(p) => match tokio::time::timeout(s.timeout, p.run()).await {
                Ok(o) => o,
                Err(_) => Outcome::fail("timeout", "timeout"),
            },
            Err(e) => Outcome::fail("error", e.clone()),
        };
        let duration = started.elapsed();
        drop(permit);

        if out.ok {
            let sample = duration.as_secs_f64() * 1e6;
            rtt = Some(rtt.map_or(sample, |r| RTT_ALPHA * sample + (1.0 - RTT_ALPHA) * r));
        }
        let flipped = verdict.count(out.ok, s.rise, s.fall);
        let result = Arc::new(ProbeResult {
            ok: out.ok,
            class: out.class,
            reason: out.reason,
            at: SystemTime::now(),
            duration,
        });
        let members = members.load();
        for m in members.iter() {
            m.state.set_probed(verdict.healthy);
            if out.ok {
                m.state.set_rtt_us(rtt.map(|r| (r.round() as u64).max(1)));
            }
            if let Some(load) = out.load {
                m.state.set_load(load);
            }
            m.state.set_last_probe(result.clone());
        }
        if flipped {
            tracing::info!(
                check = target.url,
                endpoints = %labels(&members),
                reason = result.reason,
                "health: endpoint {} after {} {} probe(s)",
                if verdict.healthy { "UP" } else { "DOWN" },
                if verdict.healthy { verdict.good } else { verdict.bad },
                if verdict.healthy { "good" } else { "failed" },
            );
        } else if !out.ok {
            tracing::debug!(check = target.url, reason = result.reason, "probe failed");
        }
        if let Some(obs) = &ctx.observer {
            obs(&ProbeEvent {
                target: &target,
                result: &result,
                endpoints: &members,
                healthy: verdict.healthy,
            });
        }
    }
}

fn labels(members: &[ProbedEndpoint]) -> String {
    let mut s = String::new();
    for (i, m) in members.iter().enumerate() {
        if i == 5 {
            s.push_str(&format!(" and {} more", members.len() - 5));
            break;
        }
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&format!("{} {}", m.service, m.address));
    }
    s
}

/// A ready-made probe of one target.
enum Probe {
    /// `https://`: reqwest with rustls.
    Http(Box<HttpProbe>),
    /// `http://`: a request written by hand on a fresh TCP connection. A probe is one small GET
    /// with `Connection: close`; reqwest/hyper cost ~100 µs of CPU for it, this a fraction, and
    /// 10,000 endpoints at 1 s make that the difference between a core and a quarter of one.
    Plain(Box<PlainProbe>),
    Tcp {
        /// `host:port`, resolved at each probe when it is a name.
        dest: String,
        source: Option<IpAddr>,
    },
}

struct HttpProbe {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    expect_status: Vec<(u16, u16)>,
    expect_body: Option<Vec<u8>>,
}

struct PlainProbe {
    /// `host:port` to connect to.
    dest: String,
    source: Option<IpAddr>,
    request: Vec<u8>,
    expect_status: Vec<(u16, u16)>,
    expect_body: Option<Vec<u8>>,
}

impl PlainProbe {
    fn new(t: &Target) -> Result<PlainProbe, String> {
        let s = &t.settings;
        let url = reqwest::Url::parse(&t.url).map_err(|e| format!("bad URL `{}`: {e}", t.url))?;
        let host = url
            .host_str()
            .ok_or_else(|| format!("URL `{}` has no host", t.url))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let dest = format!("{host}:{port}"); // IPv6 stays in brackets
        let mut path = url.path().to_string();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        let host_header = match (&s.host, url.port()) {
            (Some(h), _) => h.clone(),
            (None, Some(p)) => format!("{host}:{p}"),
            (None, None) => host.to_string(),
        };
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: meridian/{} health-check\r\nAccept: */*\r\n",
            env!("CARGO_PKG_VERSION")
        );
        for (k, v) in &s.headers {
            if k.eq_ignore_ascii_case("host") || k.eq_ignore_ascii_case("connection") {
                continue;
            }
            if k.bytes().any(|b| b <= b' ' || b == b':')
                || v.bytes().any(|b| b == b'\r' || b == b'\n')
            {
                return Err(format!("header `{k}` is not valid"));
            }
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("Connection: close\r\n\r\n");
        Ok(PlainProbe {
            dest,
            source: s.source,
            request: req.into_bytes(),
            expect_status: s.expect_status.clone(),
            expect_body: s.expect_body.as_ref().map(|b| b.as_bytes().to_vec()),
        })
    }

    async fn run(&self) -> Outcome {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut sock = match connect(&self.dest, self.source).await {
            Ok(s) => s,
            Err(o) => return o,
        };
        let _ = sock.set_nodelay(true);
        if let Err(e) = sock.write_all(&self.request).await {
            return io_failure(&e);
        }
        let mut buf: Vec<u8> = Vec::with_capacity(2048);
        let mut head: Option<Head> = None;
        loop {
            if buf.len() >= BODY_LIMIT + 16 * 1024 {
                break;
            }
            match sock.read_buf(&mut buf).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if head.is_some() => {
                    let _ = e;
                    break;
                }
                Err(e) => return io_failure(&e),
            }
            if head.is_none() {
                head = parse_head(&buf);
            }
            if let Some(h) = &head {
                // Without a body to check, the status line and headers are all we need.
                if self.expect_body.is_none() {
                    break;
                }
                if h.content_length.is_some_and(|n| buf.len() >= h.end + n) {
                    break;
                }
            }
        }
        let Some(h) = head.or_else(|| parse_head(&buf)) else {
            return Outcome::fail("http", "no valid HTTP response");
        };
        if !self
            .expect_status
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&h.status))
        {
            let mut o = Outcome::fail("status", format!("status {}", h.status));
            o.load = Some(h.load);
            return o;
        }
        if let Some(needle) = &self.expect_body {
            let raw = &buf[h.end.min(buf.len())..];
            let body = if h.chunked {
                dechunk(raw)
            } else {
                raw.to_vec()
            };
            let body = &body[..body.len().min(BODY_LIMIT)];
            if !contains(body, needle) {
                let mut o = Outcome::fail("body", "body mismatch");
                o.load = Some(h.load);
                return o;
            }
        }
        Outcome::ok(Some(h.load))
    }
}

/// Status line and the headers a probe cares about.
struct Head {
    status: u16,
    /// Offset of the body.
    end: usize,
    content_length: Option<usize>,
    chunked: bool,
    load: Option<f64>,
}

fn parse_head(buf: &[u8]) -> Option<Head> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let mut head = Head {
        status,
        end,
        content_length: None,
        chunked: false,
        load: None,
    };
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            head.content_length = v.parse().ok();
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = v.to_ascii_lowercase().contains("chunked");
        } else if k.eq_ignore_ascii_case("x-load") {
            head.load = v.parse::<f64>().ok().filter(|x| x.is_finite());
        }
    }
    Some(head)
}

/// Joins the data of a chunked body, as far as it goes.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..nl])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next().unwrap_or("").trim(), 16).ok());
        let Some(size) = size else { break };
        raw = &raw[nl + 2..];
        if size == 0 {
            break;
        }
        let take = size.min(raw.len());
        out.extend_from_slice(&raw[..take]);
        if take < size || raw.len() < size + 2 {
            break;
        }
        raw = &raw[size + 2..];
    }
    out
}

fn io_failure(e: &std::io::Error) -> Outcome {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => Outcome::fail("refused", "refused"),
        std::io::ErrorKind::TimedOut => Outcome::fail("timeout", "timeout"),
        _ => Outcome::fail("connect", format!("connect error: {e}")),
    }
}

/// Connects to `host:port`, from `source` when given (bound before connect, so the endpoint
/// and a firewall see the address the profile names). A name is looked up through the system
/// resolver first, at every probe (the addresses of a load balancer change), so that a name
/// that does not resolve is reported as such rather than as a connect error.
async fn connect(dest: &str, source: Option<IpAddr>) -> Result<tokio::net::TcpStream, Outcome> {
    let host = dest.rsplit_once(':').map_or(dest, |(h, _)| h);
    let addrs: Vec<SocketAddr> = match dest.parse::<SocketAddr>() {
        Ok(a) => vec![a],
        Err(_) => match tokio::net::lookup_host(dest).await {
            Ok(a) => a.collect(),
            Err(e) => {
                return Err(Outcome::fail(
                    "resolve",
                    format!("cannot resolve {host}: {e}"),
                ))
            }
        },
    };
    let mut last = Outcome::fail("resolve", format!("cannot resolve {host}: no addresses"));
    if let Some(src) = source {
        if !addrs.iter().any(|a| a.is_ipv4() == src.is_ipv4()) {
            last = Outcome::fail(
                "connect",
                format!("{dest} has no address of the family of source {src}"),
            );
        }
    }
    for a in addrs {
        let attempt = match source {
            None => tokio::net::TcpStream::connect(a).await,
            Some(src) if src.is_ipv4() != a.is_ipv4() => continue,
            Some(src) => {
                let sock = if src.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()
                } else {
                    tokio::net::TcpSocket::new_v6()
                };
                match sock.and_then(|s| s.bind(SocketAddr::new(src, 0)).map(|()| s)) {
                    Ok(s) => s.connect(a).await,
                    Err(e) => Err(e),
                }
            }
        };
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) => last = io_failure(&e),
        }
    }
    Err(last)
}

impl Probe {
    fn new(t: &Target, tls: Option<&TlsConfigs>) -> Result<Probe, String> {
        let s = &t.settings;
        if t.kind == Kind::Tcp {
            let dest = t.url["tcp://".len()..].trim_end_matches('/').to_string();
            return Ok(Probe::Tcp {
                dest,
                source: s.source,
            });
        }
        if t.kind == Kind::Http {
            return PlainProbe::new(t).map(|p| Probe::Plain(Box::new(p)));
        }
        let mut url =
            reqwest::Url::parse(&t.url).map_err(|e| format!("bad URL `{}`: {e}", t.url))?;
        let mut headers = HeaderMap::new();
        for (k, v) in &s.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("header name `{k}` is not valid"))?;
            let value =
                HeaderValue::from_str(v).map_err(|_| format!("header `{k}`: value not valid"))?;
            headers.insert(name, value);
        }
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            // A new connection per probe, as HAProxy and gdnsd do: a probe must see what a new
            // client sees (accept queue, TLS handshake, certificate).
            .pool_max_idle_per_host(0)
            .connect_timeout(s.timeout)
            .timeout(s.timeout)
            .http1_only()
            .user_agent(concat!(
                "meridian/",
                env!("CARGO_PKG_VERSION"),
                " health-check"
            ));
        if let Some(src) = s.source {
            b = b.local_address(src);
        }
        if let Some(host) = &s.host {
            let value = HeaderValue::from_str(host)
                .map_err(|_| format!("host `{host}` is not a valid Host header"))?;
            headers.insert(reqwest::header::HOST, value);
            // HTTPS to an IP with a host name: connect to the IP, name the host in SNI and
            // certificate checks.
            let ip = url
                .host_str()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
                .and_then(|h| h.parse::<IpAddr>().ok());
            if let (Kind::Https, Some(ip)) = (t.kind, ip) {
                let port = url.port_or_known_default().unwrap_or(443);
                url.set_host(Some(host))
                    .map_err(|e| format!("host `{host}`: {e}"))?;
                let name = url.host_str().unwrap_or(host).to_string();
                b = b.resolve(&name, SocketAddr::new(ip, port));
            }
        }
        if t.kind == Kind::Https {
            let tls = tls.ok_or("tls error: no TLS configuration could be built")?;
            let cfg = if s.tls_verify {
                tls.verify.clone()
            } else {
                tls.insecure.clone()
            };
            b = b.use_preconfigured_tls(cfg);
        }
        let client = b.build().map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Probe::Http(Box::new(HttpProbe {
            client,
            url,
            headers,
            expect_status: s.expect_status.clone(),
            expect_body: s.expect_body.as_ref().map(|b| b.as_bytes().to_vec()),
        })))
    }

    async fn run(&self) -> Outcome {
        match self {
            Probe::Plain(p) => p.run().await,
            Probe::Tcp { dest, source } => match connect(dest, *source).await {
                Ok(_) => Outcome::ok(None),
                Err(o) => o,
            },
            Probe::Http(h) => {
                let HttpProbe {
                    client,
                    url,
                    headers,
                    expect_status,
                    expect_body,
                } = &**h;
                let resp = match client
                    .get(url.clone())
                    .headers(headers.clone())
                    .send()
                    .await
                {
                    Ok(r) => r,
                    Err(e) => return classify(&e),
                };
                let status = resp.status().as_u16();
                let load = resp
                    .headers()
                    .get("x-load")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|v| v.is_finite());
                if !expect_status
                    .iter()
                    .any(|&(lo, hi)| (lo..=hi).contains(&status))
                {
                    let mut o = Outcome::fail("status", format!("status {status}"));
                    o.load = Some(load);
                    return o;
                }
                if let Some(needle) = expect_body {
                    let mut resp = resp;
                    let mut body = Vec::new();
                    while body.len() < BODY_LIMIT {
                        match resp.chunk().await {
                            Ok(Some(c)) => {
                                let room = BODY_LIMIT - body.len();
                                body.extend_from_slice(&c[..c.len().min(room)]);
                            }
                            Ok(None) => break,
                            Err(e) => return classify(&e),
                        }
                    }
                    if !contains(&body, needle) {
                        let mut o = Outcome::fail("body", "body mismatch");
                        o.load = Some(load);
                        return o;
                    }
                }
                Outcome::ok(Some(load))
            }
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Names why a request failed: `timeout`, `refused`, `tls error: …`, else the innermost cause.
fn classify(e: &reqwest::Error) -> Outcome {
    if e.is_timeout() {
        return Outcome::fail("timeout", "timeout");
    }
    let mut innermost = e.to_string();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Outcome::fail("tls", format!("tls error: {tls}"));
        }
        innermost = err.to_string();
        cur = err.source();
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    return Outcome::fail("refused", "refused")
                }
                std::io::ErrorKind::TimedOut => return Outcome::fail("timeout", "timeout"),
                _ => {}
            }
            // io::Error::source() skips the error it wraps: step into that one instead.
            if let Some(inner) = io.get_ref() {
                cur = Some(inner);
            }
        }
    }
    if e.is_connect() {
        Outcome::fail("connect", format!("connect error: {innermost}"))
    } else {
        Outcome::fail("error", format!("error: {innermost}"))
    }
}

/// TLS client settings shared by every HTTPS probe: verifying against the bundled web PKI
/// roots, or (`tls_verify = false`) accepting any certificate.
struct TlsConfigs {
    verify: rustls::ClientConfig,
    insecure: rustls::ClientConfig,
}

impl TlsConfigs {
    fn new() -> Option<TlsConfigs> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let build = || {
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
        };
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let made = build().and_then(|v| {
            let verify = v.with_root_certificates(roots).with_no_client_auth();
            let insecure = build()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider.clone())))
                .with_no_client_auth();
            Ok((verify, insecure))
        });
        match made {
            Ok((mut verify, mut insecure)) => {
                verify.alpn_protocols = vec![b"http/1.1".to_vec()];
                insecure.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some(TlsConfigs { verify, insecure })
            }
            Err(e) => {
                tracing::error!("TLS setup for health checks failed: {e}");
                None
            }
        }
    }
}

/// `tls_verify = false`: any certificate for any name, though the handshake signature is still
/// checked against the certificate presented.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(kind: Kind, port: Option<u16>) -> Settings {
        Settings {
            kind,
            path: "/health".into(),
            port,
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            rise: 2,
            fall: 3,
            expect_status: vec![DEFAULT_EXPECT_STATUS],
            expect_body: None,
            host: None,
            headers: Vec::new(),
            tls_verify: true,
            source: None,
        }
    }

    #[test]
    fn derived_targets() {
        let v4: IpAddr = "192.0.2.10".parse().unwrap();
        let v6: IpAddr = "2001:db8::20".parse().unwrap();
        let t = |a, k, p| Target::new(a, "profile:web", &settings(k, p)).url;
        assert_eq!(t(v4, Kind::Http, None), "http://192.0.2.10:80/health");
        assert_eq!(
            t(v6, Kind::Https, None),
            "https://[2001:db8::20]:443/health"
        );
        assert_eq!(t(v6, Kind::Tcp, Some(25)), "tcp://[2001:db8::20]:25");
        let c = Target::new(v4, "tcp://127.0.0.1:9", &settings(Kind::Http, None));
        assert_eq!((c.kind, c.url.as_str()), (Kind::Tcp, "tcp://127.0.0.1:9"));
    }

    #[test]
    fn equal_targets_are_shared() {
        let s = settings(Kind::Http, None);
        let a = Target::new("192.0.2.1".parse().unwrap(), "http://127.0.0.1:1/h", &s);
        let b = Target::new("192.0.2.2".parse().unwrap(), "http://127.0.0.1:1/h", &s);
        assert_eq!(a, b);
        let mut s2 = s.clone();
        s2.fall = 4;
        let c = Target::new("192.0.2.2".parse().unwrap(), "http://127.0.0.1:1/h", &s2);
        assert_ne!(a, c);
    }

    #[test]
    fn rise_and_fall() {
        let mut v = Verdict {
            healthy: true,
            good: 0,
            bad: 0,
        };
        assert!(!v.count(false, 2, 3));
        assert!(!v.count(false, 2, 3));
        assert!(!v.count(true, 2, 3)); // the streak breaks
        assert!(!v.count(false, 2, 3));
        assert!(!v.count(false, 2, 3));
        assert!(v.count(false, 2, 3));
        assert!(!v.healthy);
        assert!(!v.count(true, 2, 3));
        assert!(v.count(true, 2, 3));
        assert!(v.healthy);
    }

    #[test]
    fn plain_http_parsing() {
        let h = parse_head(b"HTTP/1.1 503 Busy\r\nX-Load: 0.75\r\nContent-Length: 2\r\n\r\nok")
            .expect("head");
        assert_eq!(
            (h.status, h.content_length, h.load),
            (503, Some(2), Some(0.75))
        );
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\n").is_none(),
            "incomplete head"
        );
        assert!(parse_head(b"SSH-2.0-x\r\n\r\n").is_none());
        assert_eq!(
            dechunk(b"3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\n\r\n"),
            b"abcdefg"
        );
    }

    #[test]
    fn body_search() {
        assert!(contains(b"status: ok\n", b"ok"));
        assert!(!contains(b"status: fine", b"ok"));
        assert!(contains(b"", b""));
    }
}
