//! Heartbeats of the DNS listeners, read by the systemd watchdog ([`crate::systemd`]).
//!
//! "Alive" here means *the loop that answers is still going round*: each UDP thread stamps its
//! beat every time `recvmmsg` returns (at least every 200 ms when idle, because of its read
//! timeout), and each TCP thread stamps its beat every time round its epoll loop (at least
//! every 50 ms, the period of its deadline sweep).
//! A thread that died, deadlocked or spins inside one answer stops stamping, and the watchdog
//! stops vouching for the process. A thread that merely exited (a panic) also stops stamping,
//! so no separate "is it finished" check is needed.
//!
//! A stamp is one relaxed store of the coarse monotonic clock (a vDSO read of a few ns, 1–4 ms
//! resolution, which is plenty) into a cache line of its own, once per batch of packets rather
//! than per packet: the query path pays nothing measurable, and the threads never contend.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often an idle UDP thread stamps its beat (its read timeout); TCP threads stamp more often.
pub const BEAT_EVERY: Duration = Duration::from_millis(200);

/// Milliseconds of the coarse monotonic clock (the same clock for writers and the reader).
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid pointer it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1000)
        .saturating_add(ts.tv_nsec as u64 / 1_000_000)
}

/// One listener's heartbeat; aligned to a cache line so that UDP threads stamping their own
/// beats never share a line.
#[repr(align(64))]
#[derive(Debug)]
pub struct Beat(AtomicU64);

impl Beat {
    /// A beat stamped now: a listener counts as alive from the moment it is bound.
    pub fn new() -> Beat {
        Beat(AtomicU64::new(now_ms()))
    }

    pub fn stamp(&self) {
        self.0.store(now_ms(), Ordering::Relaxed);
    }

    /// The coarse-clock millisecond of the last stamp.
    pub fn last_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Beat {
    fn default() -> Self {
        Beat::new()
    }
}

/// Every listener's beat, with a label for the log ("udp 127.0.0.1:5300 #1").
#[derive(Debug, Clone, Default)]
pub struct Liveness {
    beats: Vec<(String, Arc<Beat>)>,
}

impl Liveness {
    /// A new beat for a listener called `label`.
    pub fn add(&mut self, label: impl Into<String>) -> Arc<Beat> {
        let beat = Arc::new(Beat::new());
        self.beats.push((label.into(), beat.clone()));
        beat
    }

    pub fn is_empty(&self) -> bool {
        self.beats.is_empty()
    }

    /// The listeners whose last stamp is older than `stale` at `now_ms`, with how long ago
    /// they stamped. Empty = every listener is alive.
    pub fn stalled(&self, now_ms: u64, stale: Duration) -> Vec<(&str, Duration)> {
        let stale_ms = stale.as_millis() as u64;
        self.beats
            .iter()
            .filter_map(|(label, beat)| {
                let age = now_ms.saturating_sub(beat.last_ms());
                (age > stale_ms).then(|| (label.as_str(), Duration::from_millis(age)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_beat_is_alive_and_an_old_one_is_stalled() {
        let mut l = Liveness::default();
        let a = l.add("udp a");
        let _b = l.add("tcp b");
        let now = now_ms();
        assert!(l.stalled(now, Duration::from_secs(1)).is_empty());
        // Two seconds on, nobody stamped: both are stalled.
        let later = now + 2000;
        assert_eq!(l.stalled(later, Duration::from_secs(1)).len(), 2);
        // One stamps (as of `later`): only the other is left.
        a.0.store(later, Ordering::Relaxed);
        let s = l.stalled(later, Duration::from_secs(1));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, "tcp b");
        assert!(s[0].1 >= Duration::from_millis(2000));
    }

    #[test]
    fn the_coarse_clock_moves_forward() {
        let a = now_ms();
        std::thread::sleep(Duration::from_millis(30));
        let b = now_ms();
        assert!(b > a, "{a} then {b}");
    }
}
