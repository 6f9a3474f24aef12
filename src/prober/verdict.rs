//! What probe outcomes do to a target's endpoints: the rise/fall machine (healthy after `rise`
//! consecutive good probes, unhealthy after `fall` bad ones), the round-trip time average of
//! good probes, and the writes of verdict, RTT, `X-Load` and last result to every
//! [`EndpointState`](super::EndpointState) the target stands for.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::probe::Outcome;
use super::schedule::ProbedEndpoint;
use crate::health::ProbeResult;

/// Weight of a new sample in the round-trip time average.
pub const RTT_ALPHA: f64 = 0.3;

/// The rise/fall machine of one target, and its RTT average.
#[derive(Debug)]
pub(super) struct Verdict {
    pub healthy: bool,
    pub good: u32,
    pub bad: u32,
    /// EWMA of good probes' durations, in microseconds.
    rtt: Option<f64>,
    /// No probe has answered for these endpoints yet: the first result decides at once,
    /// whatever `rise` and `fall` say (SPEC "Behaviour on the wire", health), so an endpoint
    /// that starts up and fails leaves answers on its first probe, and one a reload added
    /// (which starts down) joins them on its first good one.
    first: bool,
}

impl Verdict {
    #[cfg(test)]
    pub fn new(healthy: bool) -> Verdict {
        Verdict::starting(healthy, false)
    }

    /// A verdict whose first probe decides at once when `first` (endpoints never probed).
    pub fn starting(healthy: bool, first: bool) -> Verdict {
        Verdict {
            healthy,
            good: 0,
            bad: 0,
            rtt: None,
            first,
        }
    }

    /// Starts the counts over from `healthy` (what answers use now), keeping the RTT.
    pub fn reset(&mut self, healthy: bool) {
        (self.healthy, self.good, self.bad) = (healthy, 0, 0);
    }

    /// Counts one probe; returns true when the state flipped.
    pub fn count(&mut self, ok: bool, rise: u32, fall: u32) -> bool {
        if std::mem::take(&mut self.first) {
            let was = self.healthy;
            (self.healthy, self.good, self.bad) = (ok, ok as u32, !ok as u32);
            return was != ok;
        }
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

    /// Counts `out` and writes the result to every member; returns the result and whether the
    /// verdict flipped. `measures_rtt`: whether the probe's duration is a round trip to the endpoint
    /// (not for exec checks).
    pub fn apply(
        &mut self,
        out: Outcome,
        duration: Duration,
        measures_rtt: bool,
        rise: u32,
        fall: u32,
        members: &[ProbedEndpoint],
    ) -> (Arc<ProbeResult>, bool) {
        if out.ok && measures_rtt {
            let sample = duration.as_secs_f64() * 1e6;
            self.rtt = Some(
                self.rtt
                    .map_or(sample, |r| RTT_ALPHA * sample + (1.0 - RTT_ALPHA) * r),
            );
        }
        let flipped = self.count(out.ok, rise, fall);
        let result = Arc::new(ProbeResult {
            ok: out.ok,
            class: out.class,
            reason: out.reason,
            at: SystemTime::now(),
            duration,
        });
        let rtt = self.rtt.map(|r| (r.round() as u64).max(1));
        for m in members {
            // The profile's verdict; the endpoint's follows from its checks (`health_min`).
            m.state.set_check(m.check, self.healthy, result.clone());
            // Exec checks measure none: `rtt` stays `None` and a network profile's stands.
            if out.ok && rtt.is_some() {
                m.state.set_rtt_us(rtt);
            }
            if let Some(load) = out.load {
                m.state.set_load(load);
            }
        }
        (result, flipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_probe_decides_at_once() {
        let mut v = Verdict::starting(true, true);
        assert!(v.count(false, 2, 3) && !v.healthy);
        assert!(!v.count(true, 2, 3)); // then rise applies
        assert!(v.count(true, 2, 3) && v.healthy);
        let mut v = Verdict::starting(false, true);
        assert!(v.count(true, 3, 3) && v.healthy);
        let mut v = Verdict::starting(true, true);
        assert!(!v.count(true, 2, 3) && v.healthy);
    }

    #[test]
    fn rise_and_fall() {
        let mut v = Verdict::new(true);
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
}
