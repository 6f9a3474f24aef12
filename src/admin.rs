//! The admin HTTP API on `[admin].listen` (SPEC "Admin HTTP API"):
//!
//! | call | |
//! |---|---|
//! | `GET /` | the status page for people ([`crate::status_page`]) |
//! | `GET /status` | JSON: site, config generation and load time, last reload, every service and endpoint, regions, recent events ([`crate::history`]) |
//! | `GET /metrics` | Prometheus / OpenMetrics text ([`crate::metrics`]) |
//! | `POST /api/v1/drain`, `/api/v1/undrain` | `{"service", "endpoint"}` or `{"region"}` (optionally with `"service"`); drain takes `"share"` (a partial drain) |
//! | `POST /api/v1/reload` | same as SIGHUP ([`crate::reload`]) |
//! | `PUT /api/v1/health` | `{"profile", "endpoint", "up", "load"}`: the state of a `push` profile's check of an endpoint |
//! | `POST /api/v1/anycast/withdraw`, `/announce` | manual withdraw and its end ([`crate::anycast`]) |
//! | `GET /api/v1/explain` | `meridian explain --json` computed live ([`crate::explain::live`]) |
//!
//! Mutating calls need `Authorization: Bearer TOKEN`, compared in constant time. The token in
//! force is `admin.token` of the config being served, so a reload can rotate it; without one
//! mutating calls are refused (403). The API will not start on a non-loopback address without
//! a token (and `meridian check` reports that config as a problem). The token is never logged.
//!
//! Hardening (SPEC "Abuse resistance"): request bodies are capped at 64 KiB (413 above it);
//! request headers must arrive within [`AdminState::header_timeout`] (also the keep-alive idle
//! limit) and a whole request, body included, must be handled within
//! [`AdminState::request_timeout`] (408), so a slowloris client is cut off; a connection lives
//! at most [`MAX_CONN_AGE`], so one that never reads its response cannot hold on; at most
//! [`MAX_CONNS`] connections are served at once, and at most [`MAX_CONNS_PER_CLIENT`] from one
//! client address (more are closed at once), so one address holding connections open cannot
//! lock out the others (SPEC "Trust boundaries"); the header timeout also closes a connection
//! that never sends a request or sits idle between kept-alive ones. The accept loop is our own (hyper's HTTP/1
//! server) because `axum::serve` offers no header-read timeout.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::metrics::{self, name_label};
use crate::policy::WhenAllDown;
use crate::reload::{ReloadError, Reloader};
use crate::snapshot::Snapshot;
use crate::status;

/// What the admin API serves.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub reloader: Arc<Reloader>,
    /// Where to listen; port 0 picks a free port ([`AdminHandle::addr`] tells which).
    pub listen: SocketAddr,
    /// Longest wait for a request's headers, and for the next request on a kept-alive
    /// connection ([`HEADER_TIMEOUT`]).
    pub header_timeout: Duration,
    /// Longest time from a request's headers to its response, reading the body included
    /// ([`REQUEST_TIMEOUT`]).
    pub request_timeout: Duration,
    /// The server's secondary zones (`/status` `secondary`, the metrics): the value its
    /// refresh tasks keep (`crate::secondary::start`); empty when none run.
    pub secondaries: crate::secondary::Secondaries,
    /// The interfaces the server answers on over AF_XDP (`/status` `xdp`, the metrics):
    /// `crate::server::ServerHandle::xdp`; empty when none.
    pub xdp: crate::server::xdp::Interfaces,
}

/// Largest request body accepted; above it the answer is 413. Drain bodies are tiny.
pub const MAX_BODY: usize = 64 * 1024;
/// Default [`AdminState::header_timeout`].
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`AdminState::request_timeout`]: a reload of a large config fits in it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Age at which a connection is asked to close (after its current response); it is dropped
/// [`CLOSE_GRACE`] later if it has not.
pub const MAX_CONN_AGE: Duration = Duration::from_secs(120);
/// Connections served at once; more are closed at once.
pub const MAX_CONNS: usize = 256;
/// Connections served at once from one client address (IPv4-mapped IPv6 counts as IPv4);
/// more are closed at once.
pub const MAX_CONNS_PER_CLIENT: usize = 16;
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long shutdown waits for open requests (SIGTERM must end the process within 2 s).
const SHUTDOWN_WAIT: Duration = Duration::from_millis(1200);

impl AdminState {
    /// The API as the served config's `[admin]` table describes it; `None` when the config has
    /// no `[admin]` (or its address does not parse, which `check` reports).
    pub fn from_config(reloader: Arc<Reloader>) -> Option<AdminState> {
        let listen = {
            let snap = reloader.shared().load();
            snap.config
                .config
                .admin
                .as_ref()?
                .listen
                .get_ref()
                .parse()
                .ok()?
        };
        Some(AdminState {
            reloader,
            listen,
            header_timeout: HEADER_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            secondaries: Default::default(),
            xdp: Default::default(),
        })
    }
}

/// A running admin API; dropping it does not stop it, [`AdminHandle::shutdown`] does.
#[derive(Debug)]
pub struct AdminHandle {
    /// The address actually bound.
    pub addr: SocketAddr,
    stop: Arc<Notify>,
    task: JoinHandle<()>,
    /// The once-a-second sampler behind `/status` events and answer shares.
    sampler: JoinHandle<()>,
}

impl AdminHandle {
    /// Stops accepting and waits (about 1.2 s at most) for open requests to finish.
    pub async fn shutdown(mut self) {
        self.sampler.abort();
        self.stop.notify_one();
        if tokio::time::timeout(SHUTDOWN_WAIT + Duration::from_millis(200), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

/// The token mutating calls need, from the config being served; empty counts as none.
fn token(snap: &Snapshot) -> Option<&str> {
    snap.config
        .config
        .admin
        .as_ref()
        .and_then(|a| a.token.as_deref())
        .filter(|t| !t.is_empty())
}

/// Binds `state.listen` and serves the API on the current tokio runtime. Refuses (without
/// binding) a non-loopback address when no token is configured: drain and reload would be
/// open to anyone who can reach it.
pub async fn start(state: AdminState) -> io::Result<AdminHandle> {
    let has_token = token(&state.reloader.shared().load()).is_some();
    if !state.listen.ip().is_loopback() && !has_token {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "admin.listen {} is not a loopback address and admin.token is not set: \
                 refusing to expose the admin API without a token",
                state.listen
            ),
        ));
    }
    let listener = tokio::net::TcpListener::bind(state.listen)
        .await
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("admin API cannot listen on {}: {e}", state.listen),
            )
        })?;
    let addr = listener.local_addr()?;
    let (header_timeout, request_timeout) = (state.header_timeout, state.request_timeout);
    let sampler = state
        .reloader
        .history()
        .spawn_sampler(state.reloader.shared().clone());
    let app = router(Arc::new(state))
        // The layer added last is outermost: a Content-Length over the cap is refused before
        // anything else runs; a body without one is cut at the cap while it is read (413 too).
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .layer(RequestBodyLimitLayer::new(MAX_BODY));
    let stop = Arc::new(Notify::new());
    let task = tokio::spawn(accept_loop(listener, app, stop.clone(), header_timeout));
    if !has_token {
        tracing::warn!("admin.token is not set: drain, undrain and reload are refused");
    }
    tracing::info!(address = %addr, "admin API listening");
    Ok(AdminHandle {
        addr,
        stop,
        task,
        sampler,
    })
}

/// Accepts until `stop`, then lets open requests finish for up to [`SHUTDOWN_WAIT`].
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    stop: Arc<Notify>,
    header_timeout: Duration,
) {
    let (closing, closing_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(MAX_CONNS));
    let per_client = PerClient::default();
    let mut conns = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("admin API accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.notified() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        // Over the address's cap first: one address at its cap must not use up global slots.
        let Some(mine) = per_client.take(peer.ip()) else {
            continue; // over MAX_CONNS_PER_CLIENT: dropped, closed at once
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue; // over MAX_CONNS: dropped, closed at once
        };
        let (app, closing) = (app.clone(), closing_rx.clone());
        conns.spawn(async move {
            serve_conn(stream, app, closing, header_timeout).await;
            drop(permit);
            drop(mine);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    let _ = tokio::time::timeout(SHUTDOWN_WAIT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
}

/// One HTTP/1.1 connection, closed gracefully (after the response in progress) at shutdown or
/// at [`MAX_CONN_AGE`], and dropped [`CLOSE_GRACE`] after that if it still has not ended.
async fn serve_conn(
    stream: tokio::net::TcpStream,
    app: Router,
    mut closing: watch::Receiver<bool>,
    header_timeout: Duration,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    // hyper's header timeout also runs while a connection waits for its first request or
    // sits idle between kept-alive ones: an idle connection is closed after it
    // (tests/admin_hardening.rs).
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(conn);

    let age = tokio::time::sleep(MAX_CONN_AGE);
    tokio::pin!(age);
    let mut hard_stop: Option<tokio::time::Instant> = None;
    loop {
        let close_now = async {
            match hard_stop {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // Errors here are the client's (a reset, a timeout, a malformed request): nothing
            // for the log, and their text could quote what the client sent.
            _ = conn.as_mut() => return,
            _ = closing.changed(), if hard_stop.is_none() => {
                conn.as_mut().graceful_shutdown();
                hard_stop = Some(tokio::time::Instant::now() + SHUTDOWN_WAIT);
            }
            _ = &mut age, if hard_stop.is_none() => {
                conn.as_mut().graceful_shutdown();
                hard_stop = Some(tokio::time::Instant::now() + CLOSE_GRACE);
            }
            _ = close_now => return,
        }
    }
}

/// Open connections by client address, for [`MAX_CONNS_PER_CLIENT`].
#[derive(Default, Clone)]
struct PerClient(Arc<std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>>);

/// One connection counted for its address until dropped.
struct ClientSlot(PerClient, IpAddr);

impl PerClient {
    fn take(&self, ip: IpAddr) -> Option<ClientSlot> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= MAX_CONNS_PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(ClientSlot(self.clone(), ip))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut m = self.0 .0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

type St = Arc<AdminState>;

fn router(state: St) -> Router {
    Router::new()
        .route("/", get(crate::status_page::page))
        .route("/status", get(status_with_history))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/drain", post(drain))
        .route("/api/v1/undrain", post(undrain))
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/health", put(push_health))
        .route("/api/v1/anycast/withdraw", post(anycast_withdraw))
        .route("/api/v1/anycast/announce", post(anycast_announce))
        .route("/api/v1/explain", get(explain_live))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such path") })
        .with_state(state)
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({ "error": message.into() }))).into_response()
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

// ---------------------------------------------------------------------------------------------
// Reading

/// `/status` with what [`crate::history`] adds (regions, events, answer shares).
async fn status_with_history(State(st): State<St>) -> Json<Value> {
    let Json(mut body) = status(State(st.clone())).await;
    st.reloader
        .history()
        .extend_status(&st.reloader.shared().load(), &mut body);
    Json(body)
}

async fn status(State(st): State<St>) -> Json<Value> {
    // Serialised through a Value, whose objects keep their keys sorted: the bytes are those
    // of the `json!` objects this document was once built from, and history adds to it.
    Json(serde_json::to_value(status_doc(&st)).unwrap_or_default())
}

fn last_probe(p: &crate::health::ProbeResult) -> status::LastProbe {
    status::LastProbe {
        ok: p.ok,
        result: p.class.to_string(),
        reason: p.reason.clone(),
        at: rfc3339(p.at),
        duration_ms: p.duration.as_secs_f64() * 1e3,
    }
}

/// Each profile's result on an endpoint, and whether it decided.
pub(crate) fn checks_doc(snap: &Snapshot, st: &crate::health::EndpointState) -> Vec<status::Check> {
    let d = st.decision();
    st.checks()
        .iter()
        .enumerate()
        .map(|(i, c)| status::Check {
            profile: c.profile.clone(),
            kind: snap
                .config
                .config
                .health
                .get(&c.profile)
                .map(|p| p.get_ref().kind.get_ref().clone())
                .unwrap_or_default(),
            healthy: c.healthy(),
            decided: d.by.contains(&i),
            last_probe: c.last_probe().map(|p| last_probe(&p)),
        })
        .collect()
}

/// A signed zone's part of `/status`: keys, the current validity window, the signer.
fn dnssec_status(o: &crate::dnssec::online::Online) -> status::Dnssec {
    let w = o.validity.now();
    // The window's times as Unix seconds (the RRSIG fields are their low 32 bits).
    let inception = w
        .start
        .saturating_sub(crate::dnssec::sign::INCEPTION_BACKDATE);
    let expiration = w.start + o.validity.validity();
    let at = |s: u64| rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
    let cache = o.signer().cache();
    status::Dnssec {
        keys: o
            .keys
            .iter()
            .map(|k| status::DnssecKey {
                tag: k.tag(),
                algorithm: u8::from(k.algorithm()),
                flags: k.flags(),
            })
            .collect(),
        validity_secs: o.validity.validity(),
        inception: at(inception),
        expiration: at(expiration),
        inception_unix: inception,
        expiration_unix: expiration,
        signatures_per_second: o.signatures_per_second(),
        cache_entries: cache.stats().entries,
        cache_capacity: cache.capacity(),
    }
}

/// The typed `/status` document ([`crate::status`]) of the served snapshot and control loops.
fn status_doc(st: &AdminState) -> status::Status {
    let snap = st.reloader.shared().load_full();
    let control = st.reloader.control();
    let fleet = control.fleet.get();
    let last_reload = st.reloader.last().map(|r| match &r.result {
        Ok(generation) => status::LastReload {
            ok: true,
            generation: Some(*generation),
            error: None,
            at: rfc3339(r.at),
        },
        Err(e) => status::LastReload {
            ok: false,
            generation: None,
            error: Some(e.message().to_string()),
            at: rfc3339(r.at),
        },
    });
    let mut zones: Vec<status::Zone> = snap
        .zones
        .zones
        .values()
        .map(|z| status::Zone {
            name: name_label(&z.origin),
            loaded: true,
            error: None,
            origin: Some(z.origin.to_ascii()),
            records: Some(z.record_count),
            file: None,
            dnssec: snap.signing(z).map(dnssec_status),
        })
        .chain(snap.zones.failed.iter().map(|f| status::Zone {
            name: f.name(),
            loaded: false,
            error: Some(f.error.clone()),
            origin: f.origin.as_ref().map(|o| o.to_ascii()),
            records: None,
            file: Some(f.file.display().to_string()),
            dnssec: None,
        }))
        .collect();
    zones.sort_by(|a, b| a.name.cmp(&b.name));
    let services = snap
        .services
        .iter()
        .map(|s| {
            let tiers = s.tiers.as_deref();
            let endpoints = s
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let st = &e.state;
                    status::Endpoint {
                        pool: e.pool.clone(),
                        tier: tiers
                            .and_then(|t| t.list.iter().position(|x| x.map.contains(&i)))
                            .map(|k| k + 1),
                        fallback: tiers.is_some_and(|t| t.fallback.contains(&i)),
                        address: e.label(),
                        target: e.target.as_ref().map(|t| t.to_ascii()),
                        region: e
                            .region
                            .and_then(|r| snap.regions.get(r))
                            .map(|r| r.name.clone()),
                        weight: e.weight,
                        priority: e.priority,
                        probe: (!e.probe.is_empty()).then(|| e.probe.clone()),
                        healthy: st.healthy(),
                        drained: st.drained(),
                        drain_share: Some(st.drain_share()).filter(|s| *s > 0.0),
                        up: st.up(),
                        last_probe: st.last_probe().map(|p| last_probe(&p)),
                        checks: checks_doc(&snap, st),
                        health_min: (!st.checks().is_empty()).then(|| st.min()),
                        decided_by: st.decided_by(),
                        rtt_ms: st.rtt_us().map(|us| us as f64 / 1e3),
                        load: st.load(),
                        fleet: Some(
                            fleet
                                .as_ref()
                                .map(|f| f.endpoint_json(&name_label(&s.name), e.addr, st))
                                .unwrap_or(Value::Null),
                        ),
                        answers_1m: None,
                        share_1m: None,
                    }
                })
                .collect();
            status::Service {
                name: name_label(&s.name),
                policy: s.policy.as_str().to_string(),
                when_all_down: match s.when_all_down {
                    WhenAllDown::ServeAll => "serve-all",
                    WhenAllDown::Empty => "empty",
                    WhenAllDown::Servfail => "servfail",
                }
                .to_string(),
                ttl: s.ttl,
                ttl_degraded: s.ttl_degraded,
                max_answers: s.max_answers,
                health: s.health.clone(),
                endpoints_up: s.endpoints.iter().filter(|e| e.state.up()).count(),
                endpoints,
                pools: {
                    let mut p: Vec<String> = Vec::new();
                    for e in &s.endpoints {
                        if let Some(n) = e.pool.as_ref().filter(|n| !p.contains(n)) {
                            p.push(n.clone());
                        }
                    }
                    p
                },
                tiers: status_tiers(s),
                fallback: tiers
                    .map(|t| t.fallback.iter().map(|&i| s.endpoints[i].label()).collect())
                    .unwrap_or_default(),
            }
        })
        .collect();
    status::Status {
        site: snap.wire.site_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        generation: snap.generation,
        loaded_at: rfc3339(snap.loaded_at),
        loaded_at_unix: crate::base::clock::unix_secs(snap.loaded_at),
        config_path: Some(st.reloader.config_path().display().to_string()),
        last_reload,
        zones,
        services,
        anycast: control.anycast.get().map(|a| a.status_json()),
        xdp: st.xdp.status_json(),
        fleet: fleet.as_ref().map(|f| f.status_json()),
        secondary: st.secondaries.status(),
        prober: Some(control.prober.reading().into()),
        drains: snap
            .health
            .drains
            .rules()
            .into_iter()
            .map(|rule| status::Drain {
                matches: Some(crate::policy::drains::matches(
                    &rule.scope,
                    &snap.services,
                    &snap.regions,
                )),
                rule,
            })
            .collect(),
        drains_state: match snap.health.drains.state_error() {
            None => status::DrainsState {
                ok: true,
                error: None,
            },
            Some(e) => status::DrainsState {
                ok: false,
                error: Some(e.to_string()),
            },
        },
        regions: None,
        events: None,
    }
}

/// `GET /api/v1/explain?name=N&type=A&client=IP&ecs=CIDR[&format=text]`: `meridian explain`
/// computed on the served snapshot, with its live health, drains and RTTs. Read-only, so no
/// token, like `/status`.
async fn explain_live(State(st): State<St>, uri: axum::http::Uri) -> Response {
    let snap = st.reloader.shared().load_full();
    match crate::explain::live(&snap, uri.query().unwrap_or("")) {
        Ok(crate::explain::Live::Json(v)) => Json(v).into_response(),
        Ok(crate::explain::Live::Text(t)) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            t,
        )
            .into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn metrics_text(State(st): State<St>) -> Response {
    let snap = st.reloader.shared().load_full();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        )],
        metrics::render_served(&snap, st.reloader.control(), &st.secondaries, &st.xdp),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Mutating

/// `given` against `expected` without an early exit: the time taken depends on the length of
/// `given` only, so it tells neither how much of a guessed token was right nor how long the
/// real one is.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    if expected.is_empty() {
        return given.is_empty(); // no token configured: nothing secret to protect
    }
    let mut diff = (given.len() != expected.len()) as u8;
    for (i, g) in given.iter().enumerate() {
        // Wrapping around `expected` keeps the same work for every position; where it wraps,
        // the length check above has already failed.
        diff |= std::hint::black_box(g ^ expected[i % expected.len()]);
    }
    std::hint::black_box(diff) == 0
}

/// `Authorization: Bearer TOKEN` against the configured token: the refusal, 403 when there is
/// none, 401 when the header is missing or wrong; `None` when the call may go on.
fn refuse(st: &AdminState, headers: &HeaderMap) -> Option<Response> {
    let snap = st.reloader.shared().load();
    let Some(expected) = token(&snap) else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "mutating calls are disabled: no admin.token is configured",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => None,
        _ => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (Authorization: Bearer TOKEN)",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"meridian\""),
            );
            Some(r)
        }
    }
}

/// The tiers of a service for `/status`, with the one that would answer now.
fn status_tiers(s: &crate::policy::Service) -> Vec<status::Tier> {
    let Some(tiers) = &s.tiers else {
        return Vec::new();
    };
    let mut answering = false;
    tiers
        .list
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let up = t.svc.endpoints.iter().filter(|e| e.state.up()).count();
            let this = !answering && up >= t.min_up && up > 0;
            answering |= this;
            status::Tier {
                tier: k + 1,
                policy: t.svc.policy.as_str().to_string(),
                min_up: t.min_up,
                pools: t.pools.clone(),
                endpoints: t.svc.endpoints.len(),
                endpoints_up: up,
                answering: this,
            }
        })
        .collect()
}

/// Body of drain and undrain.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    service: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    /// A partial drain: the share of client networks moved away (0 < share ≤ 1; default 1).
    share: Option<f64>,
}

async fn drain(State(st): State<St>, headers: HeaderMap, body: Bytes) -> Response {
    set_drained(&st, &headers, &body, true).await
}

async fn undrain(State(st): State<St>, headers: HeaderMap, body: Bytes) -> Response {
    set_drained(&st, &headers, &body, false).await
}

async fn set_drained(st: &AdminState, headers: &HeaderMap, body: &[u8], drained: bool) -> Response {
    if let Some(r) = refuse(st, headers) {
        return r;
    }
    let target: Target = match serde_json::from_slice(body) {
        Ok(t) => t,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "body must be JSON like {{\"service\": \"www.example.com\", \"endpoint\": \
                     \"192.0.2.10\"}} or {{\"region\": \"eu-west\"}}: {e}"
                ),
            )
        }
    };
    if target.endpoint.is_none() && target.region.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "name an \"endpoint\" (an address) or a \"region\"",
        );
    }
    let share = match crate::policy::drains::check_share(target.share) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if !drained && share.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "an undrain has no share: it returns every client network (drain again with a \
             smaller share to return some)",
        );
    }
    // A `target` endpoint is named by its target; drains key it by its stand-in address,
    // which is derived from the name and so stays the same across restarts. Only names that
    // are targets of the current config count: anything else is not an endpoint.
    let snap = st.reloader.shared().load();
    let by_target = |e: &str| {
        let mut n = hickory_proto::rr::Name::from_ascii(e.trim()).map_err(|_| ())?;
        n.set_fqdn(true);
        let n = n.to_lowercase();
        let known = snap
            .services
            .iter()
            .any(|s| s.endpoints.iter().any(|x| x.target.as_ref() == Some(&n)));
        // An undrain may name a target a reload removed: its drain is still in force.
        let addr = crate::policy::Endpoint::target_addr(&n);
        let kept = !drained
            && snap
                .health
                .drains
                .rules()
                .iter()
                .any(|r| r.scope.endpoint == Some(addr));
        (known || kept)
            .then(|| crate::policy::Endpoint::target_addr(&n))
            .ok_or(())
    };
    let endpoint: Option<IpAddr> = match target
        .endpoint
        .as_deref()
        .map(|e| e.trim().parse().or_else(|_| by_target(e)))
    {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "endpoint `{}` is not an IP address or a target name",
                    target.endpoint.as_deref().unwrap_or_default()
                ),
            )
        }
    };
    let service = target
        .service
        .as_deref()
        .map(|s| s.trim().trim_end_matches('.').to_ascii_lowercase());

    let snap = st.reloader.shared().load_full();
    // Stored as the rule asked for (a region drain covers endpoints added to it later) and
    // written to state_dir, so it survives restarts (crate::policy::drains).
    let scope = crate::policy::drains::Scope {
        service: service.clone(),
        endpoint,
        region: target.region.clone(),
    };
    // An undrain with the words a drain was made with removes it even when that drain matches
    // nothing any more (a reload renamed its region or removed its endpoint): drains never
    // lapse silently, and never stay out of reach (SPEC "Day two").
    let undoes_rule = !drained
        && snap
            .health
            .drains
            .would_undo(&scope, &snap.services, &snap.regions);
    let region = match target.region.as_deref() {
        None => None,
        Some(r) => match snap.regions.iter().position(|x| x.name == r) {
            Some(i) => Some(i),
            None if undoes_rule => None,
            None => return error(StatusCode::NOT_FOUND, format!("no region `{r}`")),
        },
    };
    let region_gone = target.region.is_some() && region.is_none();
    let mut matched = Vec::new();
    let mut service_seen = false;
    for s in &snap.services {
        let name = name_label(&s.name);
        if service.as_ref().is_some_and(|want| *want != name) {
            continue;
        }
        service_seen = true;
        for e in &s.endpoints {
            if endpoint.is_some_and(|a| a != e.addr)
                || region.is_some_and(|r| e.region != Some(r))
                || region_gone
            {
                continue;
            }
            matched.push(json!({
                "service": name,
                "endpoint": e.label(),
                "region": e.region.and_then(|r| snap.regions.get(r)).map(|r| &r.name),
            }));
        }
    }
    if matched.is_empty() && !undoes_rule {
        let what = match (&service, service_seen) {
            (Some(s), false) => format!("no service `{s}`"),
            _ => "no endpoint matches".to_string(),
        };
        return error(StatusCode::NOT_FOUND, what);
    }
    // [fleet]: stored in etcd, applied by every site; while etcd is away, here only.
    let fleet_stored = match st.reloader.control().fleet.get() {
        None => None,
        Some(f) => Some(f.change_drain(scope.clone(), drained, share, &snap).await),
    };
    if let Some(Err(e)) = &fleet_stored {
        tracing::warn!("drain not stored in the fleet ({e}): applied at this site only");
    }
    let saved = match &fleet_stored {
        Some(Ok(())) => Ok(()),
        _ => snap.health.drains.change(
            scope,
            drained,
            share,
            &snap.services,
            &snap.regions,
            &snap.config.state_dir(),
        ),
    };
    if let Err(e) = &saved {
        tracing::warn!("drain applied but will not survive a restart: {e}");
    }
    snap.health.drains.operator_acted();
    tracing::info!(
        service = target.service.as_deref().unwrap_or("*"),
        endpoint = target.endpoint.as_deref().unwrap_or("*"),
        region = target.region.as_deref().unwrap_or("*"),
        endpoints = matched.len(),
        share = share.unwrap_or(1.0),
        "{}",
        if drained { "drained" } else { "undrained" }
    );
    let mut body = json!({
        "drained": drained,
        "share": if drained { share.unwrap_or(1.0) } else { 0.0 },
        "count": matched.len(),
        "endpoints": matched,
        "persisted": saved.is_ok(),
    });
    if let Err(e) = saved {
        body["warning"] = json!(format!("not saved, lost at restart: {e}"));
    }
    if let Some(r) = fleet_stored {
        body["fleet"] = json!(r.is_ok());
        if let Err(e) = r {
            body["warning"] = json!(format!(
                "applied at this site only ({e}); stored in the fleet when etcd is back"
            ));
        }
    }
    Json(body).into_response()
}

/// Body of `PUT /api/v1/health`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pushed {
    profile: String,
    endpoint: String,
    up: bool,
    load: Option<f64>,
}

/// `PUT /api/v1/health`: an outside monitor's verdict on one endpoint for a `push` profile
/// (NS1 data feeds, gdnsd extfile). Taken as given, for every service that has the endpoint
/// checked by that profile; it holds for the profile's `expire`.
async fn push_health(State(st): State<St>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = refuse(&st, &headers) {
        return r;
    }
    let p: Pushed = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "body must be JSON like {{\"profile\": \"feed\", \"endpoint\": \"192.0.2.10\", \
                     \"up\": true, \"load\": 0.5}}: {e}"
                ),
            )
        }
    };
    if p.load.is_some_and(|l| !l.is_finite() || l < 0.0) {
        return error(
            StatusCode::BAD_REQUEST,
            "\"load\" must be a number of 0 or more",
        );
    }
    let snap = st.reloader.shared().load_full();
    let Some(profile) = snap.config.config.health.get(&p.profile) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no health profile `{}` is defined", p.profile),
        );
    };
    let kind = profile.get_ref().kind.get_ref();
    if kind != "push" {
        return error(
            StatusCode::CONFLICT,
            format!(
                "health profile `{}` is kind `{kind}`: its states come from its own probes; \
                 only `push` profiles take PUT /api/v1/health",
                p.profile
            ),
        );
    }
    let want = p.endpoint.trim();
    let want_ip: Option<IpAddr> = want.parse().ok();
    let want_name = want.trim_end_matches('.').to_ascii_lowercase();
    let mut updated = Vec::new();
    let mut exists = false;
    for s in &snap.services {
        for e in &s.endpoints {
            let same = match (want_ip, &e.target) {
                (Some(ip), None) => ip == e.addr,
                (None, Some(_)) => e.label().eq_ignore_ascii_case(&want_name),
                _ => false,
            };
            if !same {
                continue;
            }
            exists = true;
            for (i, c) in e.state.checks().iter().enumerate() {
                if c.profile == p.profile && e.state.push(i, p.up, p.load) {
                    updated.push(json!({
                        "service": name_label(&s.name),
                        "healthy": e.state.healthy(),
                    }));
                }
            }
        }
    }
    if updated.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            if exists {
                format!(
                    "endpoint `{want}` is not checked by profile `{}` (no service lists it in `health`)",
                    p.profile
                )
            } else {
                format!("no endpoint `{want}` (an address or target name of a service)")
            },
        );
    }
    tracing::debug!(
        profile = p.profile,
        endpoint = want,
        up = p.up,
        "pushed health state"
    );
    Json(json!({
        "profile": p.profile,
        "endpoint": want,
        "up": p.up,
        "count": updated.len(),
        "services": updated,
    }))
    .into_response()
}

async fn reload(State(st): State<St>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&st, &headers) {
        return r;
    }
    match st.reloader.reload().await {
        Ok(generation) => Json(json!({ "ok": true, "generation": generation })).into_response(),
        Err(e) => {
            let code = match e {
                ReloadError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                ReloadError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (code, Json(json!({ "ok": false, "error": e.message() }))).into_response()
        }
    }
}

async fn anycast_withdraw(State(st): State<St>, headers: HeaderMap) -> Response {
    anycast_manual(&st, &headers, true).await
}

async fn anycast_announce(State(st): State<St>, headers: HeaderMap) -> Response {
    anycast_manual(&st, &headers, false).await
}

/// Manual withdraw (`true`) or its end; answers with the `anycast` object of `/status`.
async fn anycast_manual(st: &AdminState, headers: &HeaderMap, withdraw: bool) -> Response {
    if let Some(r) = refuse(st, headers) {
        return r;
    }
    let Some(a) = st.reloader.control().anycast.get() else {
        return error(
            StatusCode::NOT_FOUND,
            "this server has no [anycast] section",
        );
    };
    if !a.manual(withdraw).await {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the anycast controller did not answer (shutting down?)",
        );
    }
    Json(a.status_json()).into_response()
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(!constant_time_eq(b"s3cret\0", b"s3cret"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"s3crets3cret", b"s3cret"));
    }
}
