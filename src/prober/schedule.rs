//! When probes go out: the prober's supervisor, which follows the snapshot's generation and
//! keeps one task per distinct [`Target`] (stopping the tasks of targets a reload removed and
//! starting tasks for new ones, while unchanged targets keep running with their counters), and
//! each target's loop: first probe at once, then a fixed interval (stretched past the CPU
//! budget) at a random phase the target keeps, every probe under the in-flight bound and cut
//! off by its timeout.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

use super::budget::{self, Meter};
use super::probe::{Outcome, Probe, Settings, Target};
use super::tls::TlsConfigs;
use super::verdict::Verdict;
use crate::health::{EndpointState, ProbeResult};
use crate::snapshot::{SharedSnapshot, Snapshot};

/// Probes in flight at once, over all targets.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// Probes go out on boundaries of this grid (after the first of each target): at 10,000
/// targets a second, 200 at a time. It bounds how much later than its interval a probe can go.
pub const SLOT: Duration = Duration::from_millis(20);
/// How often the supervisor looks for a new snapshot generation: also how long a new
/// endpoint can wait for its first probe after a reload. A look is one atomic load.
pub const POLL: Duration = Duration::from_millis(50);

/// One endpoint that a target's result is written to.
#[derive(Debug, Clone)]
pub struct ProbedEndpoint {
    /// Service name without the final dot.
    pub service: String,
    pub address: IpAddr,
    /// The endpoint as metrics name it: its address, or its `target` name.
    pub label: String,
    pub state: Arc<EndpointState>,
    /// Which of the endpoint's checks (its `health` profiles) this target's result is.
    pub check: usize,
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
    /// Where the CPU budget is applied and shown (`reload::Control::prober`). The budget is
    /// measured only on a prober thread of its own ([`spawn_thread`]): elsewhere the thread's
    /// CPU clock is not the prober's alone.
    pub meter: Arc<Meter>,
}

impl Default for ProberOptions {
    fn default() -> Self {
        ProberOptions {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            observer: None,
            meter: Arc::default(),
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
        epoch: Instant::now(),
        sem: Semaphore::new(opts.max_in_flight.max(1)),
        tls: TlsConfigs::new(),
        observer: opts.observer,
        meter: opts.meter,
        reactor: super::reactor::Reactor::new(),
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

/// The prober on a thread of its own, as `serve` runs it: a current-thread tokio runtime (one
/// thread, no work-stealing or cross-thread wakeups to pay for), named `prober`, at a low CPU
/// priority so that probes of thousands of endpoints give way to DNS answers on a busy core
/// ("probes never block answering").
#[derive(Debug)]
pub struct ProberThread {
    targets: Arc<AtomicUsize>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProberThread {
    /// Probe tasks running now (distinct targets).
    pub fn targets(&self) -> usize {
        self.targets.load(Ordering::Relaxed)
    }
    /// The snapshot generation the probe tasks follow (0 before the first reconcile).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
    /// Stops every probe and lets the thread end; does not wait for probes in flight.
    pub fn shutdown(mut self) {
        self.stop.take();
        self.thread.take();
    }
}

impl Drop for ProberThread {
    fn drop(&mut self) {
        self.stop.take();
    }
}

/// Starts the prober on its own thread; see [`ProberThread`].
pub fn spawn_thread(shared: SharedSnapshot, opts: ProberOptions) -> std::io::Result<ProberThread> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("prober".into())
        .spawn(move || {
            lower_priority();
            let cores = budget::keep_off_answering_cores();
            if let Some(c) = &cores {
                tracing::info!(cores = ?c, "prober kept off the answering cores");
            }
            opts.meter.set_own_thread(cores.as_deref());
            rt.block_on(async move {
                let h = start_with(shared, opts);
                let _ = tx.send((h.targets.clone(), h.generation.clone()));
                let _ = stopped.await;
                h.shutdown();
            });
            rt.shutdown_background();
        })?;
    let (targets, generation) = rx
        .recv()
        .map_err(|_| std::io::Error::other("the prober thread ended at start"))?;
    Ok(ProberThread {
        targets,
        generation,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// nice 10 for the calling thread (Linux: nice is per thread; a process started nicer stays
/// as nice), and a short scheduler slice (Linux 6.12+): the kernel lets a running task finish
/// its slice before a woken one takes the core, and a DNS thread woken by a query should not
/// wait out milliseconds of probing. The answering threads ask for the same short slice
/// ([`crate::base::sched::answering`]), and at nice 0 against 10 their deadlines come first.
/// Not SCHED_IDLE: on a saturated machine the prober must still get its share, or endpoints
/// would be marked down because their probes never ran.
fn lower_priority() {
    crate::base::sched::set_fair(
        crate::base::sched::nice().max(10),
        crate::base::sched::SHORT_SLICE,
    );
}

struct Ctx {
    /// Origin of the grid of [`SLOT`]s on which probes go out.
    epoch: Instant,
    sem: Semaphore,
    tls: Option<TlsConfigs>,
    observer: Option<ProbeObserver>,
    meter: Arc<Meter>,
    /// The epoll set of plain HTTP and TCP probes (`None`: they go through tokio's sockets).
    reactor: Option<Arc<super::reactor::Reactor>>,
}

impl Ctx {
    /// The first boundary at or after `t` of slots `stretch` times [`SLOT`] long: stretched,
    /// as many probes go out per wakeup as unstretched, in fewer wakeups.
    fn slot_at(&self, t: Instant, stretch: f64) -> Instant {
        let slot = SLOT.mul_f64(stretch.max(1.0)).as_nanos();
        let since = t.saturating_duration_since(self.epoch).as_nanos();
        let n = since.div_ceil(slot);
        self.epoch + Duration::from_nanos(u64::try_from(n * slot).unwrap_or(u64::MAX))
    }
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
    if let Some(r) = &ctx.reactor {
        set.spawn(r.clone().drive());
    }
    let mut running: HashMap<Arc<Target>, Running> = HashMap::new();
    let mut seen = None;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The CPU budget's window: this task runs on the prober's thread, so the thread's CPU
    // clock read here is the prober's (probes, TLS, hyper, and the kernel's share of them).
    let mut window = (Instant::now(), budget::thread_cpu());
    // New targets all probe at once (their first probe): a burst whose CPU per probe (256 in
    // flight, the endpoints' accept queues full, the probes made) is not what probing costs
    // later, and which made the budget stretch 8× where 3× was enough. Windows begin after it.
    let mut settle: Option<Instant> = None;
    loop {
        tick.tick().await;
        while set.try_join_next().is_some() {}
        if settle.is_some_and(|t| Instant::now() >= t) {
            settle = None;
            window = (Instant::now(), budget::thread_cpu());
        }
        if ctx.meter.own_thread() && settle.is_none() && window.0.elapsed() >= budget::WINDOW {
            window = measure(&ctx.meter, window);
        }
        let snap = shared.load_full();
        if seen == Some(snap.generation) {
            continue;
        }
        seen = Some(snap.generation);
        ctx.meter.set_budget(crate::config::prober::cpu_budget(
            snap.config.config.prober.as_ref(),
        ));
        let want = desired(&snap);
        // What the CPU budget is measured against: the probes a second asked for.
        ctx.meter.set_demand(
            want.keys()
                .filter(|t| t.kind != super::probe::Kind::Push)
                .map(|t| 1.0 / t.settings.interval.as_secs_f64().max(1e-3))
                .sum(),
        );
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
        if started > 0 {
            settle = Some(Instant::now() + budget::SETTLE);
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

/// Ends one budget window begun at `from` (time and thread CPU): records the CPU share,
/// adjusts the stretch, says so when probes start or stop being spread out. Returns the next
/// window's start.
fn measure(meter: &Meter, from: (Instant, Duration)) -> (Instant, Duration) {
    let now = (Instant::now(), budget::thread_cpu());
    let wall = now.0.duration_since(from.0);
    let used = now.1.saturating_sub(from.1).as_secs_f64() / wall.as_secs_f64().max(1e-3);
    let (next, before) = meter.measured(used, wall);
    let budget = meter.reading().cpu_budget.unwrap_or(0.0);
    if before == 1.0 && next > 1.0 {
        tracing::warn!(
            cpu = format!("{:.1}%", used * 100.0),
            budget = format!("{:.1}%", budget * 100.0),
            "prober over its CPU budget ([prober] cpu_budget): probe intervals stretched x{next:.2}"
        );
    } else if before > 1.0 && next == 1.0 {
        tracing::info!(
            cpu = format!("{:.1}%", used * 100.0),
            "prober back within its CPU budget: probe intervals as configured"
        );
    } else if next >= budget::MAX_STRETCH && before < budget::MAX_STRETCH {
        tracing::warn!(
            cpu = format!("{:.1}%", used * 100.0),
            "prober intervals stretched to the most allowed (x{}); it now takes more than its budget",
            budget::MAX_STRETCH
        );
    }
    now
}

/// Targets of a snapshot and the endpoints each one stands for: one target per (profile,
/// endpoint) probed the same way, whatever the number of services that share it.
fn desired(snap: &Snapshot) -> HashMap<Target, Vec<ProbedEndpoint>> {
    let mut want: HashMap<Target, Vec<ProbedEndpoint>> = HashMap::new();
    let profiles = &snap.config.config.health;
    let mut settings: HashMap<&str, Settings> = HashMap::new();
    for svc in &snap.services {
        let name = svc.name.to_ascii();
        let name = name.strip_suffix('.').unwrap_or(&name);
        for e in &svc.endpoints {
            if e.probe.is_empty() {
                continue;
            }
            if e.state.checks().is_empty() {
                tracing::warn!(
                    service = name,
                    endpoint = %e.addr,
                    check = e.probe,
                    "endpoint has a check but no health profile: not probed"
                );
                continue;
            }
            let label = e.label();
            for (i, c) in e.state.checks().iter().enumerate() {
                let Some(profile) = profiles.get(&c.profile) else {
                    continue;
                };
                let settings = settings
                    .entry(c.profile.as_str())
                    .or_insert_with(|| Settings::from_profile(profile.get_ref()));
                // A `check` URL stands in for the address of the network kinds only.
                let target = match (Target::local(&c.profile, &label, settings), &e.target) {
                    (Some(t), _) => t,
                    (None, Some(t)) => Target::for_name(t, &e.probe, settings),
                    (None, None) => Target::new(e.addr, &e.probe, settings),
                };
                want.entry(target).or_default().push(ProbedEndpoint {
                    service: name.to_string(),
                    address: e.addr,
                    label: label.clone(),
                    state: e.state.clone(),
                    check: i,
                });
            }
        }
    }
    want
}

/// A `push` target: nothing to probe, its states come from `PUT /api/v1/health`. Every
/// `interval` (at most a second apart), a check whose state was not pushed within `expire`
/// (since the last push, or since the check began) counts as failed.
async fn run_push(target: Arc<Target>, members: Arc<ArcSwap<Vec<ProbedEndpoint>>>) {
    let s = &target.settings;
    let expire_ms = s.expire.as_millis() as u64;
    let mut tick = tokio::time::interval(s.interval.min(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for m in members.load().iter() {
            let Some(c) = m.state.checks().get(m.check) else {
                continue;
            };
            let (since, pushed) = c.pushed_since_ms();
            if now.saturating_sub(since) <= expire_ms {
                continue;
            }
            let already = c.last_probe().is_some_and(|r| r.class == "expired");
            if already && !c.healthy() {
                continue;
            }
            let reason = if pushed {
                format!("expired: no state pushed for {:?}", s.expire)
            } else {
                format!(
                    "expired: no state pushed since the check began ({:?} ago)",
                    s.expire
                )
            };
            let result = Arc::new(ProbeResult {
                ok: false,
                class: "expired",
                reason,
                at: std::time::SystemTime::now(),
                duration: Duration::ZERO,
            });
            let was = m.state.healthy();
            let now_up = m.state.set_check(m.check, false, result);
            if was && !now_up {
                tracing::warn!(
                    check = target.url,
                    endpoint = m.label,
                    "health: endpoint DOWN: its pushed state expired"
                );
            }
        }
    }
}

async fn run_target(
    target: Arc<Target>,
    members: Arc<ArcSwap<Vec<ProbedEndpoint>>>,
    ctx: Arc<Ctx>,
) {
    if target.kind == super::probe::Kind::Push {
        return run_push(target, members).await;
    }
    let s = &target.settings;
    let probe = Probe::new(&target, ctx.tls.as_ref());
    if let Err(e) = &probe {
        tracing::warn!(check = target.url, "health check cannot be made: {e}");
    }
    // The first probe goes out at once: a new endpoint (at start or after a reload) is
    // answered on its `initial` state only for as long as that probe takes (the burst of first
    // probes is bounded by the in-flight semaphore). The later ones keep a random phase of
    // the period, so that thousands of targets do not fire together, rounded up to a
    // [`SLOT`] boundary shared by every target: the probes of one slot go out together, on
    // one wakeup of the thread, and their connections complete in batches too.
    let phase = crate::base::random::random_unit();
    // When the probe is due, as a reading of the prober's clock ([`budget::Clock`]).
    let mut due: Option<f64> = None;
    let sleep = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(sleep);
    // A new target of endpoints that already have a state (its profile changed) goes on from
    // that state; fresh endpoints start as the profile's `initial` says.
    // Endpoints never probed: the first result decides at once.
    let check_of = |m: &ProbedEndpoint| {
        m.state
            .checks()
            .get(m.check)
            .map(|c| (c.healthy(), c.last_probe().is_none()))
    };
    let mut verdict = {
        let m = members.load();
        Verdict::starting(
            m.first()
                .is_none_or(|m| check_of(m).map_or(m.state.healthy(), |c| c.0)),
            m.iter()
                .all(|m| check_of(m).map_or(m.state.last_probe().is_none(), |c| c.1)),
        )
    };
    let interval = s.interval.as_secs_f64();
    loop {
        if let Some(d) = due {
            // Until the clock reads `d`, on the grid of slots; a stretch that grew meanwhile
            // moves it later (one that shrank takes effect from the next probe).
            loop {
                let clock = ctx.meter.clock();
                sleep
                    .as_mut()
                    .reset(ctx.slot_at(clock.when(d), clock.stretch()));
                sleep.as_mut().await;
                if ctx.meter.clock().reading(Instant::now()) >= d - 1e-6 {
                    break;
                }
            }
        }
        // The next probe is one interval of the clock after this one was due: one stretched
        // interval, never sooner than the configured one. The first keeps a random phase of
        // the interval. A probe that overran it (only possible when timeout = interval) is
        // followed at once by the next one, and the grid is kept.
        due = Some(match due {
            None => ctx.meter.clock().reading(Instant::now()) + interval * phase,
            Some(d) => d + interval,
        });
        // [fleet] probers = N: other sites probe this target. The verdict follows what
        // answers use, so a takeover goes on from the fleet's view instead of a stale one.
        if !members.load().iter().any(|m| m.state.probe_here()) {
            let current = members.load();
            for m in current.iter() {
                m.state.clear_local_verdict();
            }
            verdict.reset(current.first().is_none_or(|m| m.state.healthy()));
            continue;
        }
        let Ok(permit) = ctx.sem.acquire().await else {
            return;
        };
        let started = Instant::now();
        let out = match &probe {
            // Boxed: the state of a probe in flight is not small (hyper and rustls, boxed once
            // more inside, are kilobytes), and only the targets probing now need to hold it.
            // An exec check keeps its own timeout, to kill and reap the program; this one
            // only backs it up.
            Ok(p) => match tokio::time::timeout(
                match target.kind {
                    super::probe::Kind::Exec => s.timeout + Duration::from_secs(1),
                    _ => s.timeout,
                },
                Box::pin(p.run(ctx.reactor.as_ref())),
            )
            .await
            {
                Ok(o) => o,
                Err(_) => Outcome::fail("timeout", "timeout"),
            },
            Err(e) => Outcome::fail("error", e.clone()),
        };
        let duration = started.elapsed();
        drop(permit);
        ctx.meter.probed();

        let members = members.load();
        let ok = out.ok;
        // An exec check's run time is a program's, not a round trip to the endpoint: it
        // does not feed `latency`.
        let rtt = target.kind != super::probe::Kind::Exec;
        let (result, flipped) = verdict.apply(out, duration, rtt, s.rise, s.fall, &members);
        if flipped && verdict.healthy {
            tracing::info!(
                check = target.url,
                endpoints = %labels(&members),
                reason = result.reason,
                "health: endpoint UP after {} good probe(s)",
                verdict.good,
            );
        } else if flipped {
            // An endpoint leaving answers is worth an operator's look: WARN, not INFO.
            tracing::warn!(
                check = target.url,
                endpoints = %labels(&members),
                reason = result.reason,
                "health: endpoint DOWN after {} failed probe(s)",
                verdict.bad,
            );
        } else if !ok {
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

#[cfg(test)]
mod tests {
    use crate::prober::budget::Clock;
    use std::time::Duration;
    use tokio::time::Instant;

    /// 300 targets at 1 s, phases spread over the second, probed (in simulation) as
    /// `run_target` does while the stretch changes at the times `changes` gives (seconds from
    /// the start, the new stretch); returns every probe's time in seconds from the start.
    fn simulate(changes: &[(f64, f64)]) -> Vec<Vec<f64>> {
        let epoch = Instant::now();
        let at = |secs: f64| epoch + Duration::from_secs_f64(secs);
        let secs = |t: Instant| t.duration_since(epoch).as_secs_f64();
        // The clock as the meter holds it at `t`.
        let clock = |t: f64| {
            let mut c = Clock::new(epoch);
            for &(when, stretch) in changes.iter().filter(|c| c.0 <= t) {
                c.restretch(at(when), stretch);
            }
            c
        };
        (0..300)
            .map(|i| {
                let phase = i as f64 / 300.0;
                let mut due = phase;
                let mut t = at(phase);
                let mut times = vec![];
                loop {
                    // Sleep until the clock (as known when going to sleep) reads `due`; check.
                    loop {
                        t = clock(secs(t)).when(due).max(t);
                        if clock(secs(t)).reading(t) >= due - 1e-6 {
                            break;
                        }
                    }
                    if secs(t) >= 60.0 {
                        break;
                    }
                    times.push(secs(t));
                    due += 1.0;
                }
                times
            })
            .collect()
    }

    /// The budget's first windows: the stretch doubles its way up to the cap.
    const DOUBLING: [(f64, f64); 4] = [(3.0, 2.0), (4.0, 4.0), (5.0, 8.0), (6.0, 10.0)];

    #[test]
    fn a_stretched_period_spreads_the_targets_over_all_of_it() {
        let probes = simulate(&DOUBLING);
        // From the moment the stretch reached 10, every second holds a tenth of the targets
        // and any 6 s hold 6/10 of them: no burst of all of them every 10 s with silence in
        // between (what adding the stretched period to each target's last probe did).
        let in_window = |from: f64, secs: f64| {
            probes
                .iter()
                .flatten()
                .filter(|&&t| t >= from && t < from + secs)
                .count()
        };
        for second in 7..50 {
            let (one, six) = (in_window(second as f64, 1.0), in_window(second as f64, 6.0));
            assert!((25..=35).contains(&one), "{one} probes in second {second}");
            assert!(
                (170..=190).contains(&six),
                "{six} probes in the 6 s from {second}"
            );
        }
        // And no target probes sooner than its configured interval.
        for times in &probes {
            for w in times.windows(2) {
                assert!(w[1] - w[0] >= 1.0 - 1e-5, "{w:?}");
            }
        }
    }

    #[test]
    fn unstretched_a_target_probes_once_an_interval_on_its_phase() {
        let probes = simulate(&[]);
        for (i, times) in probes.iter().enumerate() {
            assert_eq!(times.len(), 60, "target {i}");
            for (k, t) in times.iter().enumerate() {
                let want = k as f64 + i as f64 / 300.0;
                assert!(
                    (t - want).abs() < 1e-5,
                    "target {i} probe {k} at {t}, not {want}"
                );
            }
        }
    }

    /// The budget's stretch wavers from window to window; the probe rate follows the clock's
    /// mean rate, not a rate raised by every change (a probe put on a grid of the current
    /// period waited half a period more at each).
    #[test]
    fn a_wavering_stretch_costs_no_probe_rate() {
        let changes: Vec<(f64, f64)> = (1..60u32)
            .map(|s| (f64::from(s), if s.is_multiple_of(2) { 2.5 } else { 3.5 }))
            .collect();
        let probes = simulate(&changes);
        let total = probes.iter().map(Vec::len).sum::<usize>() as f64;
        // The first second unstretched, then 59 s at 1/2.5 and 1/3.5 in turn.
        let want = 300.0 * (1.0 + 29.5 * (1.0 / 2.5 + 1.0 / 3.5));
        assert!(
            (total / want - 1.0).abs() < 0.03,
            "{total} probes, not {want}"
        );
    }
}
