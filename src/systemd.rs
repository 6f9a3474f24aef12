//! systemd integration (`Type=notify`, `WatchdogSec=`): readiness, reload and stop
//! notifications over `$NOTIFY_SOCKET`, and the watchdog thread. See docs/running.md.
//!
//! Without `NOTIFY_SOCKET` every notification is a no-op (the `sd-notify` crate checks it), and
//! without `WATCHDOG_USEC` (or with a `WATCHDOG_PID` that is not ours) no watchdog thread
//! starts, so running outside systemd changes nothing. Notifications are best effort: a
//! manager that went away must not stop DNS, so a failed send is logged at debug and dropped.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::base::liveness::{self, Liveness};

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify failed: {e}");
    }
}

/// `STATUS=` is one line of the datagram; a newline inside would start a bogus assignment.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], "; ")
}

/// `READY=1`: every listener is bound and the first snapshot is serving.
pub fn ready(status: &str) {
    let status = one_line(status);
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// A `STATUS=` line alone (shown by `systemctl status`).
pub fn status(status: &str) {
    let status = one_line(status);
    send(&[NotifyState::Status(&status)]);
}

/// `RELOADING=1` before a reload. systemd (since 253) wants `MONOTONIC_USEC=` with it to tell
/// this reload from an older one; older managers ignore the extra field.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading, NotifyState::Status("reloading")];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// `READY=1` after a reload, whether it was accepted or rejected: either way a snapshot is
/// serving again, and `status` says which.
pub fn reloaded(status: &str) {
    ready(status);
}

/// `STOPPING=1` as soon as a stop signal arrives.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The watchdog thread; stops when dropped.
pub struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// How old a listener's last beat may be before the watchdog stops vouching for the process:
/// a few idle beats' worth ([`liveness::BEAT_EVERY`]), or the ping period when that is longer.
pub fn stale_after(period: Duration) -> Duration {
    period.max(liveness::BEAT_EVERY * 5)
}

impl Watchdog {
    /// Starts pinging if systemd asked for a watchdog (`WATCHDOG_USEC`, for this pid): every
    /// half interval, as sd_watchdog_enabled(3) advises, so one late wake-up is not fatal.
    pub fn from_env(liveness: Liveness) -> Option<Watchdog> {
        let interval = sd_notify::watchdog_enabled()?;
        if interval.is_zero() {
            return None;
        }
        let period = interval / 2;
        match Watchdog::spawn(liveness, period, stale_after(period), || {
            send(&[NotifyState::Watchdog])
        }) {
            Ok(w) => {
                tracing::info!(?interval, "systemd watchdog: pinging every {period:?}");
                Some(w)
            }
            Err(e) => {
                // Without the thread systemd restarts us after WatchdogSec: say why first.
                tracing::error!("cannot start the watchdog thread: {e}");
                None
            }
        }
    }

    /// Calls `ping` every `period` while no listener's beat is older than `stale`; a stalled
    /// listener is logged once per stall and withholds the ping, so that systemd restarts the
    /// process after `WatchdogSec` (`Restart=on-failure` covers watchdog timeouts).
    pub fn spawn(
        liveness: Liveness,
        period: Duration,
        stale: Duration,
        mut ping: impl FnMut() + Send + 'static,
    ) -> std::io::Result<Watchdog> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                let mut was_stalled = false;
                loop {
                    let stalled = liveness.stalled(liveness::now_ms(), stale);
                    if stalled.is_empty() {
                        if was_stalled {
                            tracing::warn!(
                                "every listener is running again; watchdog pings resume"
                            );
                        }
                        was_stalled = false;
                        ping();
                    } else if !was_stalled {
                        was_stalled = true;
                        let list: Vec<String> = stalled
                            .iter()
                            .map(|(l, age)| format!("{l} (last ran {age:?} ago)"))
                            .collect();
                        let msg = format!("listener stalled: {}", list.join(", "));
                        tracing::error!("{msg}; withholding the systemd watchdog ping");
                        status(&msg);
                    }
                    // A message or a dropped sender both mean stop.
                    match stopped.recv_timeout(period) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                }
            })?;
        Ok(Watchdog {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn counting() -> (Arc<AtomicUsize>, impl FnMut() + Send + 'static) {
        let n = Arc::new(AtomicUsize::new(0));
        let m = n.clone();
        (n, move || {
            m.fetch_add(1, Ordering::SeqCst);
        })
    }

    #[test]
    fn pings_while_every_listener_beats() {
        let mut l = Liveness::default();
        let beat = l.add("udp test");
        let (n, ping) = counting();
        let w = Watchdog::spawn(
            l,
            Duration::from_millis(20),
            Duration::from_millis(500),
            ping,
        )
        .expect("spawn");
        // Pings keep coming while the listener beats: five of them, however slowly the
        // machine schedules us (a count in a fixed 200 ms would be a speed floor); the 10 s
        // bound only ends a test whose pings stopped.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while n.load(Ordering::SeqCst) < 5 {
            assert!(
                std::time::Instant::now() < deadline,
                "pings stopped at {n:?}"
            );
            beat.stamp();
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(w);
    }

    #[test]
    fn withholds_pings_once_a_listener_stalls() {
        let mut l = Liveness::default();
        let _alive = l.add("udp alive");
        let _stuck = l.add("tcp stuck");
        let (n, ping) = counting();
        // Nobody stamps: after 100 ms both count as stalled.
        let w = Watchdog::spawn(
            l,
            Duration::from_millis(20),
            Duration::from_millis(100),
            ping,
        )
        .expect("spawn");
        std::thread::sleep(Duration::from_millis(200));
        let before = n.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(200));
        drop(w);
        assert!(before >= 1, "pinged while fresh");
        assert_eq!(n.load(Ordering::SeqCst), before, "pinged while stalled");
    }

    #[test]
    fn stale_bound_is_never_below_a_few_beats() {
        assert_eq!(
            stale_after(Duration::from_millis(100)),
            Duration::from_secs(1)
        );
        assert_eq!(
            stale_after(Duration::from_secs(15)),
            Duration::from_secs(15)
        );
    }

    #[test]
    fn status_stays_on_one_line() {
        assert_eq!(one_line("a\nb\r\nc"), "a; b; ; c");
    }
}
