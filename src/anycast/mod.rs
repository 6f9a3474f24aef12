//! Anycast (SPEC "Anycast"): this site announces its service prefixes over BGP only while it
//! can answer, and withdraws them before it stops.
//!
//! | file | owns |
//! |---|---|
//! | [`config`] | the `[anycast]` schema and its checks (`meridian check`, no speaker needed) |
//! | [`state`] | the decision: rise/fall, which cause wins, the transitions (pure, unit-tested) |
//! | [`selfcheck`] | the self-check: real SOA queries to our own listeners, and `require` |
//! | [`speaker`] | the one trait a BGP speaker implements |
//! | [`bird`], [`exabgp`] | the two speakers: BIRD 2's control socket, ExaBGP's text API on stdout |
//! | this file | the controller thread, `/status` and metrics figures, manual and shutdown calls |
//!
//! The controller is one plain thread, not a tokio task: the self-check and BIRD's socket are
//! blocking I/O with timeouts, and a thread keeps the check off the runtime that answers TCP
//! and the admin API (and it must keep working while the runtime is busy shutting down). It
//! checks every `interval`, polls the withdraw file every [`FILE_POLL`], and acts at once on the
//! admin API's withdraw/announce and on shutdown, which all reach it over a channel. It follows
//! reloads: a changed `[anycast]` is adopted at the next check (`Runner::adopt`), a removed one
//! withdraws and ends the thread.

pub mod bird;
pub mod exabgp;
pub mod selfcheck;
pub mod speaker;
pub mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use serde_json::{json, Value};

use self::speaker::Speaker;
use self::state::{Check, Inputs, Machine, Reason};
use crate::config::anycast::{Require, Settings};
use crate::snapshot::SharedSnapshot;

/// How often the withdraw file is looked at (a `stat`): an operator's `touch` takes effect
/// within this, not within a whole interval.
pub const FILE_POLL: Duration = Duration::from_millis(200);

/// The transitions that can happen, exported from the start (at 0) so rates work at once.
const SERIES: [(bool, Reason); 10] = [
    (true, Reason::SelfCheck),
    (true, Reason::Services),
    (true, Reason::WithdrawFile),
    (true, Reason::Manual),
    (false, Reason::SelfCheck),
    (false, Reason::Services),
    (false, Reason::WithdrawFile),
    (false, Reason::Manual),
    (false, Reason::Shutdown),
    (false, Reason::Start),
];

/// What `/status` shows; written by the controller thread only.
#[derive(Debug, Clone)]
struct Status {
    announced: bool,
    reason: Reason,
    since: SystemTime,
    healthy: bool,
    manual_withdraw: bool,
    withdraw_file_present: bool,
    last_check: Option<(bool, String, SystemTime)>,
    speaker_error: Option<String>,
}

enum Cmd {
    /// Manual withdraw (true) or its end (false); acknowledged once the speaker was told.
    Manual(bool, tokio::sync::oneshot::Sender<()>),
    Shutdown(tokio::sync::oneshot::Sender<()>),
}

/// The running anycast controller.
pub struct Anycast {
    /// The `[anycast]` in force: the one at start, then each reload's (SPEC "Day two").
    settings: arc_swap::ArcSwap<Settings>,
    speaker: Mutex<&'static str>,
    status: Mutex<Status>,
    transitions: Mutex<BTreeMap<(bool, Reason), u64>>,
    tx: Mutex<mpsc::Sender<Cmd>>,
    /// Set when a reload removed `[anycast]` and the controller ended: [`Slot::get`] no
    /// longer returns it.
    stopped: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Anycast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anycast")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Where one server keeps its controller: made empty with the server's
/// [`crate::reload::Reloader`], filled by `serve` once [`start`] ran, and read by `/status`,
/// the metrics, the admin calls and reloads. A handle, not a process-wide static, so that two
/// servers in one process (tests) each see their own controller.
#[derive(Debug, Clone, Default)]
pub struct Slot(Arc<ArcSwapOption<Anycast>>);

impl Slot {
    /// Keeps `a` as this server's controller.
    pub fn set(&self, a: Arc<Anycast>) {
        self.0.store(Some(a));
    }

    /// The running controller; `None` without `[anycast]`, or once a reload removed it.
    pub fn get(&self) -> Option<Arc<Anycast>> {
        self.0
            .load_full()
            .filter(|a| !a.stopped.load(std::sync::atomic::Ordering::Acquire))
    }
}

fn label(announced: bool) -> &'static str {
    if announced {
        "announced"
    } else {
        "withdrawn"
    }
}

/// Starts the controller: checks the speaker (BIRD: the protocol exists), withdraws (nothing
/// is announced before the first good check), and runs the loop on its own thread. `listen`
/// are the addresses actually bound. `Err` when the speaker's configuration cannot work.
pub fn start(
    shared: SharedSnapshot,
    listen: Vec<SocketAddr>,
    settings: Settings,
) -> Result<Arc<Anycast>, String> {
    let speaker = speaker::from_settings(&settings);
    start_with(shared, listen, settings, speaker)
}

/// [`start`] with a given speaker (tests).
pub fn start_with(
    shared: SharedSnapshot,
    listen: Vec<SocketAddr>,
    settings: Settings,
    mut speaker: Box<dyn Speaker>,
) -> Result<Arc<Anycast>, String> {
    speaker.start()?;
    let (tx, rx) = mpsc::channel();
    let me = Arc::new(Anycast {
        speaker: Mutex::new(speaker.name()),
        status: Mutex::new(Status {
            announced: false,
            reason: Reason::Start,
            since: SystemTime::now(),
            healthy: false,
            manual_withdraw: false,
            withdraw_file_present: false,
            last_check: None,
            speaker_error: None,
        }),
        transitions: Mutex::new(SERIES.iter().map(|&k| (k, 0)).collect()),
        tx: Mutex::new(tx),
        settings: arc_swap::ArcSwap::from_pointee(settings),
        stopped: std::sync::atomic::AtomicBool::new(false),
    });
    me.count(false, Reason::Start);
    let s = me.settings();
    tracing::info!(
        prefixes = %s.prefixes.join(" "),
        speaker = me.speaker_name(),
        interval_ms = s.interval.as_millis() as u64,
        rise = s.rise,
        fall = s.fall,
        "anycast: withdrawn until {} good self-check(s) (reason start)",
        s.rise
    );
    if let Err(e) = speaker.set(false) {
        me.lock().speaker_error = Some(e);
    }
    let run = Runner {
        me: me.clone(),
        shared,
        listen,
        speaker,
        rx,
    };
    std::thread::Builder::new()
        .name("anycast".into())
        .spawn(move || run.run())
        .map_err(|e| format!("cannot start the anycast thread: {e}"))?;
    Ok(me)
}

impl Anycast {
    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, announced: bool, reason: Reason) {
        let mut t = self.transitions.lock().unwrap_or_else(|e| e.into_inner());
        *t.entry((announced, reason)).or_insert(0) += 1;
    }

    /// The settings in force (a reload may have changed them).
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    fn speaker_name(&self) -> &'static str {
        *self.speaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn announced(&self) -> bool {
        self.lock().announced
    }

    async fn send(&self, make: impl FnOnce(tokio::sync::oneshot::Sender<()>) -> Cmd) -> bool {
        let (ack, done) = tokio::sync::oneshot::channel();
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(make(ack))
            .is_ok();
        // The speaker answers within its own timeouts; this bounds a wedged one.
        sent && matches!(
            tokio::time::timeout(Duration::from_secs(5), done).await,
            Ok(Ok(()))
        )
    }

    /// `POST /api/v1/anycast/withdraw` (true) or `/announce` (false). Returns when the speaker
    /// has been told; `false` if the controller did not answer.
    pub async fn manual(&self, withdraw: bool) -> bool {
        self.send(|ack| Cmd::Manual(withdraw, ack)).await
    }

    /// SIGTERM / SIGINT: withdraw at once, then keep answering for `shutdown_grace` so the
    /// route is gone everywhere before the listeners close.
    pub async fn shutdown(&self) {
        let grace = self.settings().shutdown_grace;
        if !self.send(Cmd::Shutdown).await {
            tracing::warn!("anycast: the controller did not confirm the withdraw");
        }
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "anycast: withdrawn for shutdown; answering until the grace period ends"
        );
        // The grace counts from the confirmed withdraw (SPEC: "the route goes first, answering
        // stops `shutdown_grace` later"), so it starts after the log line that says so; counting
        // it from the signal let a slow confirm shorten it (CI saw 299.9 ms of a 300 ms grace).
        tokio::time::sleep(grace).await;
    }

    /// The `anycast` object of `/status`.
    pub fn status_json(&self) -> Value {
        let s = self.lock().clone();
        let settings = self.settings();
        let rfc3339 = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
        json!({
            "announced": s.announced,
            "reason": s.reason.as_str(),
            "since": rfc3339(s.since),
            "since_unix": crate::base::clock::unix_secs(s.since),
            "prefixes": settings.prefixes,
            "speaker": self.speaker_name(),
            "healthy": s.healthy,
            "manual_withdraw": s.manual_withdraw,
            "withdraw_file": settings.withdraw_file.as_ref().map(|p| p.display().to_string()),
            "withdraw_file_present": s.withdraw_file_present,
            "last_check": s.last_check.map(|(ok, detail, at)| json!({
                "ok": ok, "detail": detail, "at": rfc3339(at),
            })),
            "speaker_error": s.speaker_error,
            "interval_ms": settings.interval.as_millis() as u64,
            "rise": settings.rise,
            "fall": settings.fall,
            "require": match settings.require {
                Require::Dns => "dns",
                Require::AnyService => "any-service",
                Require::EveryService => "every-service",
            },
        })
    }

    /// For the metrics: announced now, and every transition count as (to, reason, count).
    pub fn metrics_view(&self) -> (bool, Vec<(&'static str, &'static str, u64)>) {
        let announced = self.announced();
        let t = self.transitions.lock().unwrap_or_else(|e| e.into_inner());
        let counts = t
            .iter()
            .map(|(&(to, r), &n)| (label(to), r.as_str(), n))
            .collect();
        (announced, counts)
    }
}

/// The controller thread's state.
struct Runner {
    me: Arc<Anycast>,
    shared: SharedSnapshot,
    listen: Vec<SocketAddr>,
    speaker: Box<dyn Speaker>,
    rx: mpsc::Receiver<Cmd>,
}

impl Runner {
    /// A reload changed `[anycast]` (SPEC "Day two"): the new rise, fall, interval, require,
    /// withdraw file and grace apply from the next check, keeping the announced state and the
    /// counts so far. A new speaker or new prefixes (which the speaker holds) get a new
    /// speaker: the old one withdraws first, so no prefix stays announced by nobody's will.
    fn adopt(&mut self, old: &Settings, new: Settings, machine: &mut Machine) {
        machine.set_thresholds(new.rise, new.fall);
        if new.speaker != old.speaker || new.prefixes != old.prefixes {
            let _ = self.speaker.set(false);
            let mut next = speaker::from_settings(&new);
            match next.start() {
                Ok(()) => {
                    let r = next.set(machine.announced());
                    *self.me.speaker.lock().unwrap_or_else(|e| e.into_inner()) = next.name();
                    self.me.lock().speaker_error = r.err();
                    self.speaker = next;
                }
                Err(e) => {
                    // The old speaker has withdrawn its prefixes; the new one is kept (so the
                    // old prefixes are not announced again), and its errors show in /status
                    // until a reload gives one that works.
                    tracing::error!("anycast: the reloaded speaker cannot work ({e})");
                    *self.me.speaker.lock().unwrap_or_else(|e| e.into_inner()) = next.name();
                    self.me.lock().speaker_error = Some(e);
                    self.speaker = next;
                }
            }
        }
        tracing::info!(
            prefixes = %new.prefixes.join(" "),
            speaker = self.me.speaker_name(),
            interval_ms = new.interval.as_millis() as u64,
            rise = new.rise,
            fall = new.fall,
            "anycast: [anycast] reloaded"
        );
        self.me.settings.store(Arc::new(new));
    }

    fn run(mut self) {
        let mut s = (*self.me.settings()).clone();
        let mut machine = Machine::new(s.rise, s.fall);
        let mut checker = selfcheck::SelfCheck::default();
        let mut inputs = Inputs::default();
        let mut last_ok: Option<bool> = None;
        let mut next_check = Instant::now();
        let mut next_assert = Instant::now() + s.interval;
        let mut acks = Vec::new();
        let mut seen_generation = self.shared.load().generation;
        loop {
            let now = Instant::now();
            let wait = next_check
                .min(now + FILE_POLL)
                .saturating_duration_since(now);
            match self.rx.recv_timeout(wait) {
                Ok(Cmd::Manual(w, ack)) => {
                    if inputs.manual_withdraw != w {
                        tracing::info!(
                            "anycast: manual {} through the admin API",
                            if w { "withdraw" } else { "withdraw ended" }
                        );
                    }
                    inputs.manual_withdraw = w;
                    acks.push(ack);
                }
                Ok(Cmd::Shutdown(ack)) => {
                    inputs.shutdown = true;
                    acks.push(ack);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => inputs.shutdown = true,
            }

            let now = Instant::now();
            if !inputs.shutdown && now >= next_check {
                let snap = self.shared.load_full();
                if snap.generation != seen_generation {
                    seen_generation = snap.generation;
                    match snap.config.anycast.as_ref() {
                        Some(new) if *new != s => {
                            self.adopt(&s, new.clone(), &mut machine);
                            s = new.clone();
                            // The new interval counts from now.
                            next_check = Instant::now();
                        }
                        Some(_) => {}
                        None => {
                            // No [anycast] any more: withdraw for good (the controller stops,
                            // and the route with it); DNS keeps answering.
                            tracing::warn!(
                                generation = snap.generation,
                                "anycast: [anycast] removed by a reload; withdrawing {} and \
                                 stopping the controller",
                                s.prefixes.join(" ")
                            );
                            let _ = self.speaker.set(false);
                            {
                                let mut st = self.me.lock();
                                st.announced = false;
                                st.reason = Reason::Manual;
                                st.since = SystemTime::now();
                            }
                            self.me.count(false, Reason::Manual);
                            self.me
                                .stopped
                                .store(true, std::sync::atomic::Ordering::Release);
                            for a in acks.drain(..) {
                                let _ = a.send(());
                            }
                            return;
                        }
                    }
                }
                let check = checker.run(&snap, &self.listen, s.require);
                machine.record(&check);
                let (ok, detail) = match &check {
                    Check::Good => (true, "ok".to_string()),
                    Check::DnsFailed(d) | Check::ServicesFailed(d) => (false, d.clone()),
                };
                if last_ok != Some(ok) {
                    if ok {
                        tracing::info!("anycast: self-check passes");
                    } else {
                        tracing::warn!(detail = %detail, "anycast: self-check failed");
                    }
                    last_ok = Some(ok);
                }
                let mut st = self.me.lock();
                st.last_check = Some((ok, detail, SystemTime::now()));
                st.healthy = machine.healthy();
                drop(st);
                // Checks start every interval whatever they took: a failing one waits its whole
                // 500 ms, and counting from its end would stretch `fall` by that much each time.
                next_check += s.interval;
                next_check = next_check.max(Instant::now());
            }
            let reassert = now >= next_assert;
            if reassert {
                next_assert = now + s.interval;
            }
            inputs.withdraw_file = s.withdraw_file.as_ref().is_some_and(|f| f.exists());

            let transition = machine.step(inputs);
            if let Some(t) = transition {
                let detail = self
                    .me
                    .lock()
                    .last_check
                    .as_ref()
                    .map(|(_, d, _)| d.clone())
                    .unwrap_or_default();
                if t.announced {
                    tracing::info!(
                        reason = t.reason.as_str(),
                        "anycast: announcing {}",
                        s.prefixes.join(" ")
                    );
                } else {
                    tracing::warn!(reason = t.reason.as_str(), detail = %detail, "anycast: withdrawing {}", s.prefixes.join(" "));
                }
                self.me.count(t.announced, t.reason);
            }
            {
                let mut st = self.me.lock();
                if let Some(t) = transition {
                    st.announced = t.announced;
                    st.since = SystemTime::now();
                }
                st.reason = machine.reason();
                st.manual_withdraw = inputs.manual_withdraw;
                st.withdraw_file_present = inputs.withdraw_file;
            }
            if transition.is_some() || reassert || !acks.is_empty() {
                let r = self.speaker.set(machine.announced());
                self.me.lock().speaker_error = r.err();
            }
            for a in acks.drain(..) {
                let _ = a.send(());
            }
            if inputs.shutdown {
                return;
            }
        }
    }
}
