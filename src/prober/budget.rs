//! The prober's CPU budget and where its thread runs: [`Meter`] measures the prober thread's
//! own CPU (`CLOCK_THREAD_CPUTIME_ID`) once a [`WINDOW`] and, past `[prober] cpu_budget`,
//! stretches every target's interval by a common factor ([`next_stretch`]) instead of taking
//! more CPU from the answering threads; the factor, the budget and the CPU measured are what
//! `/status` (`prober`) and the metrics (`meridian_prober_*`) show, so a stretched interval is
//! never silent. [`prober_cores`] picks the cores the prober thread is kept on.
//!
//! A budget rather than `nice` alone: `nice` only orders the prober behind busy answering
//! threads, it does not bound what the prober takes from an idle-looking core, and on a
//! saturated machine it starves probes without anyone seeing it. The budget bounds the
//! prober's CPU and says so.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How often the prober's CPU is measured and the stretch adjusted.
pub const WINDOW: Duration = Duration::from_secs(1);
/// The most an interval is stretched: past it the prober takes more than its budget rather
/// than let failover wait longer still (the factor shows at this cap in `/status`).
pub const MAX_STRETCH: f64 = 10.0;
/// The stretch comes back down only while the prober uses less than this share of its
/// budget, so that it does not flap at the edge.
const RELAX_BELOW: f64 = 0.8;

/// The next stretch factor after a window in which the prober used `used` of a core under
/// `budget` (`None`: no budget). The prober's CPU is proportional to its probe rate, the rate
/// to 1 / stretch: the factor moves towards `stretch × used / budget`, at most doubling or
/// halving in one window (a new factor reaches every target only at its next probe, so a
/// full step would overshoot), within 1..=[`MAX_STRETCH`].
pub fn next_stretch(stretch: f64, used: f64, budget: Option<f64>) -> f64 {
    let Some(budget) = budget.filter(|b| *b > 0.0) else {
        return 1.0;
    };
    let ratio = used / budget;
    let next = if ratio > 1.0 {
        stretch * ratio.min(2.0)
    } else if ratio < RELAX_BELOW && stretch > 1.0 {
        // Aim at the budget's middle of the band, not its edge.
        stretch * (ratio / ((1.0 + RELAX_BELOW) / 2.0)).max(0.5)
    } else {
        stretch
    };
    next.clamp(1.0, MAX_STRETCH)
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
        self.stretch.store(s.to_bits(), Ordering::Relaxed);
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
        let next = next_stretch(before, used, some(load(&self.budget)));
        self.set_stretch(next);
        (next, before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_budget_never_stretches() {
        assert_eq!(next_stretch(1.0, 0.9, None), 1.0);
        assert_eq!(next_stretch(4.0, 0.9, None), 1.0);
    }

    #[test]
    fn over_budget_stretches_at_most_double_per_window() {
        assert_eq!(next_stretch(1.0, 0.375, Some(0.25)), 1.5);
        assert_eq!(next_stretch(1.0, 0.9, Some(0.25)), 2.0);
        assert_eq!(next_stretch(8.0, 0.9, Some(0.25)), MAX_STRETCH);
    }

    #[test]
    fn under_budget_relaxes_with_a_dead_band() {
        // Within the band: kept.
        assert_eq!(next_stretch(3.0, 0.22, Some(0.25)), 3.0);
        // Below it: back down, at most halving, never below 1.
        let s = next_stretch(3.0, 0.1, Some(0.25));
        assert!((1.5..3.0).contains(&s), "{s}");
        assert_eq!(next_stretch(1.0, 0.01, Some(0.25)), 1.0);
        assert_eq!(next_stretch(1.2, 0.0, Some(0.25)), 1.0);
    }

    #[test]
    fn converges_on_the_budget() {
        // A prober whose CPU is proportional to its rate: 0.6 of a core unstretched.
        let mut s = 1.0;
        for _ in 0..20 {
            s = next_stretch(s, 0.6 / s, Some(0.25));
        }
        let used = 0.6 / s;
        assert!((0.2..=0.26).contains(&used), "used {used} at stretch {s}");
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
        assert_eq!(m.measured(0.3, WINDOW), (2.0, 1.0));
        assert_eq!(m.reading().stretched_seconds, 0.0);
        m.measured(0.1, WINDOW);
        let r = m.reading();
        assert_eq!((r.cpu_budget, r.cpu), (Some(0.1), Some(0.1)));
        assert_eq!(r.interval_stretch, 2.0);
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
