//! The state of response rate limiting (`[rrl]`) a snapshot carries: the fixed table of
//! atomic GCRA buckets, kept across reloads of one config file, and the limiter of one snapshot
//! (its settings with the table). What classifies a response, picks its bucket and slips or
//! drops it is the answer floor's (`crate::rrl`, whose module documentation describes the table
//! and its accounting); the table is here so that building a snapshot does not reach up to
//! the answer floor for it, as endpoint health states live in `health`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::config::rrl::Settings;

const SLOTS: usize = 8;
const TAT_BITS: u32 = 40;
const TAT_MASK: u64 = (1 << TAT_BITS) - 1;
const SLIP_SHIFT: u32 = 40;
const TAG_SHIFT: u32 = 44;
const TAG_MASK: u64 = (1 << 20) - 1;
/// CAS attempts before giving up (and sending).
const TRIES: usize = 4;

#[repr(align(64))]
struct Line([AtomicU64; SLOTS]);

/// The bucket table and the counters of what it did; shared by the snapshots of one config.
pub struct Table {
    lines: Box<[Line]>,
    /// SipHash key, random per table: nobody outside can aim keys at one line.
    pub(crate) key: [u8; 16],
    /// Monotonic µs at creation, less a second so that no live TAT is ever 0.
    epoch_us: u64,
    pub dropped: AtomicU64,
    pub slipped: AtomicU64,
    pub logged: AtomicU64,
    pub evicted: AtomicU64,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Table({} slots)", self.lines.len() * SLOTS)
    }
}

fn mono_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec into the one we own. The coarse clock costs a
    // few ns without a system call; its 1–4 ms resolution is far finer than any rate here.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

impl Table {
    fn new(size: usize) -> Table {
        let lines = size.div_ceil(SLOTS).max(1);
        Table {
            lines: (0..lines)
                .map(|_| Line([const { AtomicU64::new(0) }; SLOTS]))
                .collect(),
            key: crate::base::secret::random_bytes(),
            epoch_us: mono_us().saturating_sub(1_000_000),
            dropped: AtomicU64::new(0),
            slipped: AtomicU64::new(0),
            logged: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    fn line(&self, hash: u64) -> &[AtomicU64; SLOTS] {
        &self.lines[((hash as u128 * self.lines.len() as u128) >> 64) as usize].0
    }

    /// Asks the CPU to bring the line of `hash` into its caches (a hint; it changes nothing).
    pub(crate) fn prefetch(&self, hash: u64) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch of an address inside the table, which is alive; it never faults.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(self.line(hash).as_ptr().cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = hash;
    }

    /// Slots in the table (`table_size` rounded up to whole lines).
    pub fn slots(&self) -> usize {
        self.lines.len() * SLOTS
    }

    pub(crate) fn now(&self) -> u64 {
        (mono_us() - self.epoch_us) & TAT_MASK
    }

    /// Accounts one response of the bucket `hash` at `now`; `Ok` if within its rate, else
    /// `Err(slip)` with whether this limited response is the one to slip.
    pub(crate) fn account(
        &self,
        hash: u64,
        interval: u64,
        window: u64,
        slip: u32,
        now: u64,
    ) -> Result<(), bool> {
        let line = self.line(hash);
        let tag = hash & TAG_MASK;
        // How far ahead of now a TAT is; 0 for a free entry. More than window + interval
        // cannot be written by `account`, so it is a stale TAT that wrapped (after 2^40 µs,
        // 12.7 days): free too.
        let debt = |v: u64| {
            let d = (v & TAT_MASK).wrapping_sub(now) & TAT_MASK;
            if d >= 1 << (TAT_BITS - 1) || d > window + interval {
                0
            } else {
                d
            }
        };
        for _ in 0..TRIES {
            let mut pick = None;
            let mut victim = (0, u64::MAX, 0u64);
            for (i, s) in line.iter().enumerate() {
                let v = s.load(Ordering::Relaxed);
                if (v >> TAG_SHIFT) & TAG_MASK == tag {
                    pick = Some((i, v, debt(v)));
                    break;
                }
                let d = debt(v);
                if d < victim.1 {
                    victim = (i, d, v);
                }
            }
            let (i, old, d, evicting) = match pick {
                Some((i, v, d)) => (i, v, d, false),
                None => (victim.0, victim.2, 0, victim.1 > 0),
            };
            let slips = if pick.is_some() {
                (old >> SLIP_SHIFT) & 0xF
            } else {
                0
            };
            let (new, verdict) = if d <= window {
                let tat = (now + d + interval) & TAT_MASK;
                (tag << TAG_SHIFT | slips << SLIP_SHIFT | tat, Ok(()))
            } else {
                let n = if slip == 0 {
                    0
                } else {
                    (slips + 1) % u64::from(slip)
                };
                let tat = old & TAT_MASK;
                (
                    tag << TAG_SHIFT | n << SLIP_SHIFT | tat,
                    Err(slip > 0 && n == 0),
                )
            };
            if line[i]
                .compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                if evicting {
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                }
                return verdict;
            }
        }
        Ok(())
    }
}

/// The tables by config file: a reload of the same file with the same `table_size` keeps its
/// table; two servers in one process (tests) have their own.
fn table_for(config: &Path, size: usize) -> Arc<Table> {
    static TABLES: OnceLock<Mutex<HashMap<PathBuf, Weak<Table>>>> = OnceLock::new();
    let mut m = TABLES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let lines = size.div_ceil(SLOTS).max(1);
    if let Some(t) = m.get(config).and_then(Weak::upgrade) {
        if t.lines.len() == lines {
            return t;
        }
    }
    m.retain(|_, w| w.strong_count() > 0);
    let t = Arc::new(Table::new(size));
    m.insert(config.to_path_buf(), Arc::downgrade(&t));
    t
}

/// The rate limiter of one snapshot: its settings and the (shared) table.
#[derive(Debug)]
pub struct Rrl {
    pub settings: Settings,
    /// µs between responses per class (index `crate::rrl::Class as usize`); 0 = unlimited.
    pub(crate) interval: [u64; 5],
    pub(crate) window_us: u64,
    pub table: Arc<Table>,
}

impl Rrl {
    /// The limiter for `settings`, with the table of `config` kept from earlier snapshots.
    pub fn new(settings: Settings, config: &Path) -> Rrl {
        let per = |rate: u32| {
            if rate == 0 {
                0
            } else {
                (1_000_000 / u64::from(rate)).max(1)
            }
        };
        let r = per(settings.responses_per_second);
        let interval = [
            0,
            r,
            r,
            per(settings.nxdomains_per_second),
            per(settings.errors_per_second),
        ];
        Rrl {
            window_us: settings.window.as_micros().min(u128::from(u32::MAX)) as u64,
            table: table_for(config, settings.table_size),
            interval,
            settings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = 1_000_000; // 1 s window
    const T: u64 = 100_000; // 10/s

    #[test]
    fn gcra_allows_rate_times_window_plus_one_then_the_rate() {
        let t = Table::new(64);
        let now = 5_000_000;
        let ok = (0..100)
            .filter(|_| t.account(42, T, W, 2, now).is_ok())
            .count();
        assert_eq!(ok, 11);
        // Half a second later: five more.
        let ok = (0..100)
            .filter(|_| t.account(42, T, W, 2, now + 500_000).is_ok())
            .count();
        assert_eq!(ok, 5);
    }

    #[test]
    fn slips_every_nth_limited_response() {
        for (slip, want) in [(0u32, 0usize), (1, 10), (2, 5), (5, 2)] {
            let t = Table::new(8);
            let now = 5_000_000;
            // Ten limited responses: the one that ends the loop and nine more; exactly every
            // `slip`-th slips, and with slip = 0 none.
            let first = loop {
                if let Err(slipped) = t.account(7, T, W, slip, now) {
                    break slipped;
                }
            };
            let slips = usize::from(first)
                + (0..9)
                    .filter(|_| t.account(7, T, W, slip, now) == Err(true))
                    .count();
            assert_eq!(slips, want, "slip {slip}");
        }
    }

    #[test]
    fn a_full_line_evicts_the_entry_nearest_its_credit() {
        let t = Table::new(8); // one line
        let now = 5_000_000;
        // A flooder deep in debt.
        while t.account(1 << 20, T, W, 2, now).is_ok() {}
        // Eight other keys, one response each: the line is full after seven of them.
        for k in 2..10u64 {
            assert!(t.account(k << 20 | k, T, W, 2, now).is_ok());
        }
        assert!(t.evicted.load(Ordering::Relaxed) >= 1);
        // The flooder kept its entry: still limited.
        assert!(t.account(1 << 20, T, W, 2, now).is_err());
    }

    #[test]
    fn entries_in_the_past_are_free() {
        let t = Table::new(8);
        while t.account(3, T, W, 2, 5_000_000).is_ok() {}
        // Long after: full credit again, nothing evicted.
        assert!(t.account(3, T, W, 2, 60_000_000).is_ok());
        assert_eq!(t.evicted.load(Ordering::Relaxed), 0);
    }
}
