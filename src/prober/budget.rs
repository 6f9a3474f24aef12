//! The prober's CPU budget and where its thread runs: [`Meter`] measures the prober thread's
//! own CPU (`CLOCK_THREAD_CPUTIME_ID`) once a [`WINDOW`] and, past `[prober] cpu_budget`,
//! stretches every target's interval by a common factor ([`next_stretch`], from the CPU per
//! probe and the probes the targets ask for) instead of taking
//! more CPU from the answering threads; the factor, the budget and the CPU measured are what
//! `/status` (`prober`) and the metrics (`meridian_prober_*`) show, so a stretched interval is
//! never silent. [`prober_cores`] picks the cores the prober thread is kept on.
//!
//! A budget rather than `nice` alone: `nice` only orders the prober behind busy answering
//! threads, it does not bound what the prober takes from an idle-looking core, and on a
//! saturated machine it starves probes without anyone seeing it. The budget bounds the
//! prober's CPU and says so.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How often the prober's CPU is measured and the stretch adjusted.
pub const WINDOW: Duration = Duration::from_secs(1);
/// How long after new targets start (each probes at once) the budget is not measured.
pub const SETTLE: Duration = Duration::from_secs(2);
/// The most an interval is stretched: past it the prober takes more than its budget rather
/// than let failover wait longer still (the factor shows at this cap in `/status`).
pub const MAX_STRETCH: f64 = 10.0;
/// Changes of the stretch smaller than this share are not made: no flapping at the edge.
const DEAD_BAND: f64 = 0.1;

/// What one budget window showed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// The prober thread's CPU, as a share of one core.
    pub used: f64,
    /// Probes finished per second.
    pub rate: f64,
}

/// The next stretch factor after a window `w`, for targets that ask for `demand` probes a
/// second unstretched (the sum of 1 / interval), under `budget` (`None`: no budget).
///
/// Estimated, not chased: the window's CPU per probe times `demand` is the prober's CPU
/// unstretched, and the stretch that brings it to the budget is that over the budget. The CPU
/// per probe does not depend on the stretch, so the estimate holds at once, although a new
/// factor reaches each target only at its next probe (a controller that only followed the
/// CPU share would see its last step a whole interval late, and overshoot: it went to 10×
/// where 3× was enough). A window with no probe finished falls back on the CPU share alone.
/// Steps are at most ×2 or ×½ a window, smaller ones than [`DEAD_BAND`] are not made, and
/// the result lies within 1..=[`MAX_STRETCH`].
pub fn next_stretch(stretch: f64, w: Window, demand: f64, budget: Option<f64>) -> f64 {
    let Some(budget) = budget.filter(|b| *b > 0.0) else {
        return 1.0;
    };
    let needed = if w.rate > 0.0 && demand > 0.0 {
        w.used / w.rate * demand / budget
    } else {
        stretch * w.used / budget
    };
    let next = needed
        .clamp(stretch * 0.5, stretch * 2.0)
        .clamp(1.0, MAX_STRETCH);
    if (next / stretch - 1.0).abs() < DEAD_BAND && next != 1.0 {
        stretch
    } else {
        next
    }
}

/// The cores the prober thread is kept on, out of the cores the process may use (`allowed`,
/// ascending): on two cores or fewer none (every core answers, and one core of two for the
/// prober alone would halve the answering capacity); on more, the last one alone. The
/// listeners' threads are not pinned: the kernel places a woken answering thread on an idle
/// core before a busy one, so the prober's one core is the one they leave.
pub fn prober_cores(allowed: &[usize]) -> Option<Vec<usize>> {
    match allowed {
        [] | [_] | [_, _] => None,
        [.., last] => Some(vec![*last]),
    }
}

/// Keeps the calling thread on [`prober_cores`] of the process's cores; returns the cores
/// chosen (`None`: left where it was).
pub fn keep_off_answering_cores() -> Option<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls read or write only it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        let allowed: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect();
        let cores = prober_cores(&allowed)?;
        let mut mine: libc::cpu_set_t = std::mem::zeroed();
        for &c in &cores {
            libc::CPU_SET(c, &mut mine);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mine) != 0 {
            return None;
        }
        Some(cores)
    }
}

/// The calling thread's CPU time so far.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only `ts`.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// The prober's clock: it reads unstretched seconds, running `1 / stretch` as fast as real
/// time. A target probes each time this clock has moved one interval on from its last due
/// reading, so it is probed every stretched interval.
///
/// Why a clock of its own rather than a stretched interval added to each target's last probe:
/// when the stretch changes, every target's next probe moves with it at once, so targets keep
/// their places in the cycle. Adding the stretched interval kept targets spread over 1 s in a
/// 1 s band when the period grew to 10 s: one burst of every target per period and silence in
/// between (a 6 s window saw no probe at all, CI stop 28). Putting each probe on a fixed grid
/// of the current period instead spread them, but cost half a period at every wobble of the
/// stretch (about every second), which the budget made up for by stretching further.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clock {
    /// When the stretch last changed, and the clock's reading (seconds) then.
    at: Instant,
    reading: f64,
    stretch: f64,
}

impl Clock {
    pub fn new(at: Instant) -> Self {
        Clock {
            at,
            reading: 0.0,
            stretch: 1.0,
        }
    }

    /// The clock's reading at `t` (not before the last change of the stretch).
    pub fn reading(&self, t: Instant) -> f64 {
        self.reading + t.saturating_duration_since(self.at).as_secs_f64() / self.stretch
    }

    /// When the clock reads `reading`, if the stretch stays as it is.
    pub fn when(&self, reading: f64) -> Instant {
        self.at + Duration::from_secs_f64(((reading - self.reading) * self.stretch).max(0.0))
    }

    /// The clock runs at `1 / stretch` of real time.
    pub fn stretch(&self) -> f64 {
        self.stretch
    }

    /// From `t` on, the clock runs at `1 / stretch`.
    pub fn restretch(&mut self, t: Instant, stretch: f64) {
        self.reading = self.reading(t);
        self.at = t.max(self.at);
        self.stretch = stretch.max(1.0);
    }
}

/// What the prober's budget is and does now, shared between the prober (which writes it) and
/// whatever shows it (`reload::Control::prober`: `/status`, the metrics). One per server.
#[derive(Debug)]
pub struct Meter {
    /// The budget as a share of a core, f64 bits; NaN = none.
    budget: AtomicU64,
    /// The prober thread's CPU over the last window, share of a core, f64 bits; NaN = not
    /// measured (no prober thread of its own).
    used: AtomicU64,
    /// The factor every interval is stretched by, f64 bits (1.0 = as configured).
    stretch: AtomicU64,
    /// Seconds spent stretched, in milliseconds (a counter).
    stretched_ms: AtomicU64,
    /// The cores the prober thread is kept on, as a bit set (0 = not pinned).
    cores: AtomicU64,
    /// Whether the thread's CPU clock is the prober's alone (a thread of its own).
    own_thread: AtomicBool,
    /// Probes finished so far, and at the end of the last window.
    probes: AtomicU64,
    probes_seen: AtomicU64,
    /// Probes a second the targets ask for unstretched (the sum of 1 / interval), f64 bits.
    demand: AtomicU64,
    /// The clock probes are due by; changed with the stretch.
    clock: Mutex<Clock>,
}

impl Default for Meter {
    fn default() -> Self {
        Meter {
            budget: AtomicU64::new(f64::NAN.to_bits()),
            used: AtomicU64::new(f64::NAN.to_bits()),
            stretch: AtomicU64::new(1.0f64.to_bits()),
            stretched_ms: AtomicU64::new(0),
            cores: AtomicU64::new(0),
            own_thread: AtomicBool::new(false),
            probes: AtomicU64::new(0),
            probes_seen: AtomicU64::new(0),
            demand: AtomicU64::new(0f64.to_bits()),
            clock: Mutex::new(Clock::new(Instant::now())),
        }
    }
}

/// The meter's figures, as `/status` and the metrics show them.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// `[prober] cpu_budget` as a share of one core; `None` = off.
    pub cpu_budget: Option<f64>,
    /// The prober thread's CPU over the last second, share of one core; `None` before the
    /// first measurement or without a prober thread.
    pub cpu: Option<f64>,
    /// The factor every probe interval is stretched by now (1 = as configured).
    pub interval_stretch: f64,
    /// Seconds the intervals have been stretched since start.
    pub stretched_seconds: f64,
    /// The cores the prober thread is kept on (empty: not pinned).
    pub cores: Vec<usize>,
}

fn load(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

fn some(v: f64) -> Option<f64> {
    (!v.is_nan()).then_some(v)
}

impl Meter {
    pub fn reading(&self) -> Reading {
        let bits = self.cores.load(Ordering::Relaxed);
        Reading {
            cpu_budget: some(load(&self.budget)),
            cpu: some(load(&self.used)),
            interval_stretch: load(&self.stretch),
            stretched_seconds: self.stretched_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            cores: (0..64).filter(|c| bits & (1 << c) != 0).collect(),
        }
    }

    /// The factor every interval is stretched by now.
    pub fn stretch(&self) -> f64 {
        load(&self.stretch)
    }

    pub(super) fn set_budget(&self, budget: Option<f64>) {
        self.budget
            .store(budget.unwrap_or(f64::NAN).to_bits(), Ordering::Relaxed);
        if budget.is_none() {
            self.set_stretch(1.0);
        }
    }

    pub(super) fn set_own_thread(&self, cores: Option<&[usize]>) {
        self.own_thread.store(true, Ordering::Relaxed);
        let bits = cores
            .unwrap_or_default()
            .iter()
            .filter(|&&c| c < 64)
            .fold(0u64, |b, c| b | (1 << c));
        self.cores.store(bits, Ordering::Relaxed);
    }

    pub(super) fn own_thread(&self) -> bool {
        self.own_thread.load(Ordering::Relaxed)
    }

    fn set_stretch(&self, s: f64) {
        if self.stretch.swap(s.to_bits(), Ordering::Relaxed) != s.to_bits() {
            self.with_clock(|c| c.restretch(Instant::now(), s));
        }
    }

    /// The prober's [`Clock`] as it is now (the stretch may change it later).
    pub(super) fn clock(&self) -> Clock {
        self.with_clock(|c| *c)
    }

    fn with_clock<T>(&self, f: impl FnOnce(&mut Clock) -> T) -> T {
        // A panic while holding it cannot leave a clock half written: the value is Copy.
        f(&mut self.clock.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// One probe finished.
    pub(super) fn probed(&self) {
        self.probes.fetch_add(1, Ordering::Relaxed);
    }

    /// The probes a second the targets ask for unstretched (after each reload).
    pub(super) fn set_demand(&self, per_second: f64) {
        self.demand.store(per_second.to_bits(), Ordering::Relaxed);
    }

    /// One window's measurement: `used` share of a core over `window`. Returns the new
    /// stretch and the one before.
    pub(super) fn measured(&self, used: f64, window: Duration) -> (f64, f64) {
        self.used.store(used.to_bits(), Ordering::Relaxed);
        let before = self.stretch();
        if before > 1.0 {
            self.stretched_ms
                .fetch_add(window.as_millis() as u64, Ordering::Relaxed);
        }
        let probes = self.probes.load(Ordering::Relaxed);
        let done = probes.saturating_sub(self.probes_seen.swap(probes, Ordering::Relaxed));
        let w = Window {
            used,
            rate: done as f64 / window.as_secs_f64().max(1e-3),
        };
        let next = next_stretch(before, w, load(&self.demand), some(load(&self.budget)));
        self.set_stretch(next);
        (next, before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(used: f64, rate: f64) -> Window {
        Window { used, rate }
    }

    #[test]
    fn no_budget_never_stretches() {
        assert_eq!(next_stretch(1.0, w(0.9, 10_000.0), 10_000.0, None), 1.0);
        assert_eq!(next_stretch(4.0, w(0.9, 10_000.0), 10_000.0, None), 1.0);
    }

    #[test]
    fn the_stretch_comes_from_the_cost_per_probe() {
        // 60 µs a probe, 10,000 asked a second: 60 % of a core, three times a 20 % budget.
        let s = next_stretch(2.0, w(0.42, 7_000.0), 10_000.0, Some(0.2));
        assert!((s - 3.0).abs() < 1e-9, "{s}");
        // At most doubling in one window.
        assert_eq!(
            next_stretch(1.0, w(0.6, 10_000.0), 10_000.0, Some(0.2)),
            2.0
        );
        assert_eq!(
            next_stretch(8.0, w(0.9, 1_000.0), 10_000.0, Some(0.2)),
            MAX_STRETCH
        );
        // Back down when probes got cheaper, at most halving; never below 1.
        let s = next_stretch(3.0, w(0.05, 3_000.0), 10_000.0, Some(0.2));
        assert_eq!(s, 1.5);
        assert_eq!(
            next_stretch(1.2, w(0.01, 8_000.0), 10_000.0, Some(0.2)),
            1.0
        );
        // Within the dead band: kept.
        assert_eq!(next_stretch(3.0, w(0.2, 3_100.0), 10_000.0, Some(0.2)), 3.0);
        // No probe finished: by the CPU share alone.
        let s = next_stretch(1.0, w(0.3, 0.0), 10_000.0, Some(0.2));
        assert!((s - 1.5).abs() < 1e-9, "{s}");
        assert_eq!(next_stretch(1.0, w(0.1, 0.0), 0.0, Some(0.2)), 1.0);
    }

    #[test]
    fn converges_on_the_budget_although_targets_follow_a_window_late() {
        // 60 µs a probe, 10,000 targets at 1 s; each window's probes follow the stretch of
        // the window before (a target takes a new factor at its next probe).
        let (cost, demand, budget) = (60e-6, 10_000.0, 0.2);
        let (mut s, mut last) = (1.0f64, 1.0f64);
        let mut worst: f64 = 1.0;
        for _ in 0..20 {
            let rate = demand / last;
            last = s;
            s = next_stretch(s, w(cost * rate, rate), demand, Some(budget));
            worst = worst.max(s);
        }
        let used = cost * demand / s;
        assert!((0.18..=0.22).contains(&used), "used {used} at stretch {s}");
        assert!(worst <= 3.3, "overshot to {worst}");
    }

    #[test]
    fn cores_for_the_prober() {
        assert_eq!(prober_cores(&[]), None);
        assert_eq!(prober_cores(&[0]), None);
        assert_eq!(prober_cores(&[0, 1]), None);
        assert_eq!(prober_cores(&[0, 1, 2]), Some(vec![2]));
        assert_eq!(prober_cores(&[0, 1, 2, 3, 4, 5, 6, 7]), Some(vec![7]));
        // A process already restricted (taskset) keeps the prober inside its own set.
        assert_eq!(prober_cores(&[2, 5, 9]), Some(vec![9]));
        assert_eq!(prober_cores(&[4, 6]), None);
    }

    #[test]
    fn meter_counts_time_stretched() {
        let m = Meter::default();
        m.set_budget(Some(0.1));
        m.set_demand(100.0);
        for _ in 0..100 {
            m.probed();
        }
        // 3 ms a probe, 100 a second: 30 % of a core, three times the budget; doubled first.
        assert_eq!(m.measured(0.3, WINDOW), (2.0, 1.0));
        assert_eq!(m.reading().stretched_seconds, 0.0);
        for _ in 0..33 {
            m.probed();
        }
        m.measured(0.1, WINDOW);
        let r = m.reading();
        assert_eq!((r.cpu_budget, r.cpu), (Some(0.1), Some(0.1)));
        assert!((r.interval_stretch - 3.03).abs() < 0.01, "{r:?}");
        assert_eq!(r.stretched_seconds, 1.0);
        m.set_budget(None);
        assert_eq!(m.reading().interval_stretch, 1.0);
    }

    #[test]
    fn thread_cpu_moves() {
        let a = thread_cpu();
        let mut x = 0u64;
        while thread_cpu() - a < Duration::from_millis(2) {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
    }
}
