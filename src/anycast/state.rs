//! The announce/withdraw decision as a pure state machine, so its rules (rise/fall, the first
//! announce only after `rise` good checks, which cause wins) are unit-tested without sockets or
//! clocks. The controller feeds it check outcomes and the operator's inputs and acts on the
//! transitions it returns.

/// Why the site is in its state; the `reason` label of
/// `meridian_anycast_transitions_total` and `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The DNS self-check (SOA of each zone on each listen address).
    SelfCheck,
    /// `require = any-service | every-service` was (un)met.
    Services,
    WithdrawFile,
    /// `POST /api/v1/anycast/withdraw` / `announce`.
    Manual,
    Shutdown,
    /// Withdrawn at start, before enough good checks.
    Start,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::SelfCheck,
        Reason::Services,
        Reason::WithdrawFile,
        Reason::Manual,
        Reason::Shutdown,
        Reason::Start,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::SelfCheck => "self-check",
            Reason::Services => "services",
            Reason::WithdrawFile => "withdraw-file",
            Reason::Manual => "manual",
            Reason::Shutdown => "shutdown",
            Reason::Start => "start",
        }
    }
}

/// The outcome of one self-check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Good,
    /// A DNS self-query went unanswered, late, or not authoritative.
    DnsFailed(String),
    /// DNS answered, but `require` is not met.
    ServicesFailed(String),
}

/// A change of the announced state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub announced: bool,
    pub reason: Reason,
}

/// The operator's inputs besides the checks, sampled at each step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inputs {
    pub withdraw_file: bool,
    pub manual_withdraw: bool,
    pub shutdown: bool,
}

#[derive(Debug, Clone)]
pub struct Machine {
    rise: u32,
    fall: u32,
    good: u32,
    bad: u32,
    /// `rise` good checks seen and not `fall` bad ones since.
    healthy: bool,
    /// What the last run of bad checks failed on; `None` while none has counted.
    failure: Option<Reason>,
    announced: bool,
    reason: Reason,
}

impl Machine {
    /// Starts withdrawn, reason `start`: nothing is announced before the first good check.
    pub fn new(rise: u32, fall: u32) -> Machine {
        Machine {
            rise: rise.max(1),
            fall: fall.max(1),
            good: 0,
            bad: 0,
            healthy: false,
            failure: None,
            announced: false,
            reason: Reason::Start,
        }
    }

    pub fn announced(&self) -> bool {
        self.announced
    }

    /// New `rise` and `fall` from a reload; the counts and the state so far are kept.
    pub fn set_thresholds(&mut self, rise: u32, fall: u32) {
        (self.rise, self.fall) = (rise.max(1), fall.max(1));
    }

    /// Why the site is in its current state: while withdrawn the strongest cause in force,
    /// while announced what ended the last withdraw.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Counts one self-check against rise/fall.
    pub fn record(&mut self, check: &Check) {
        match check {
            Check::Good => {
                self.bad = 0;
                self.good = self.good.saturating_add(1);
                if !self.healthy && self.good >= self.rise {
                    self.healthy = true;
                }
            }
            Check::DnsFailed(_) | Check::ServicesFailed(_) => {
                self.good = 0;
                self.bad = self.bad.saturating_add(1);
                let kind = match check {
                    Check::ServicesFailed(_) => Reason::Services,
                    _ => Reason::SelfCheck,
                };
                if self.bad >= self.fall {
                    self.healthy = false;
                    self.failure = Some(kind);
                }
            }
        }
    }

    /// The strongest reason to stay withdrawn, if any.
    fn blocker(&self, i: Inputs) -> Option<Reason> {
        if i.shutdown {
            Some(Reason::Shutdown)
        } else if i.manual_withdraw {
            Some(Reason::Manual)
        } else if i.withdraw_file {
            Some(Reason::WithdrawFile)
        } else if !self.healthy {
            Some(self.failure.unwrap_or(Reason::Start))
        } else {
            None
        }
    }

    /// Applies the inputs; returns the transition if the announced state changed.
    pub fn step(&mut self, i: Inputs) -> Option<Transition> {
        match (self.announced, self.blocker(i)) {
            (true, Some(r)) => {
                self.announced = false;
                self.reason = r;
                Some(Transition {
                    announced: false,
                    reason: r,
                })
            }
            (false, None) => {
                // The cause that held the route back is what let it go: the first announce
                // after start is the self-check's doing.
                let r = match self.reason {
                    Reason::Start => Reason::SelfCheck,
                    r => r,
                };
                self.announced = true;
                self.reason = r;
                Some(Transition {
                    announced: true,
                    reason: r,
                })
            }
            (false, Some(r)) => {
                self.reason = r;
                None
            }
            (true, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALM: Inputs = Inputs {
        withdraw_file: false,
        manual_withdraw: false,
        shutdown: false,
    };

    fn feed(m: &mut Machine, c: Check) -> Option<Transition> {
        m.record(&c);
        m.step(CALM)
    }

    #[test]
    fn announces_after_rise_never_before_the_first_check() {
        let mut m = Machine::new(2, 2);
        assert_eq!(m.step(CALM), None, "no check yet");
        assert_eq!(m.reason(), Reason::Start);
        assert_eq!(feed(&mut m, Check::Good), None);
        assert_eq!(
            feed(&mut m, Check::Good),
            Some(Transition {
                announced: true,
                reason: Reason::SelfCheck
            })
        );
    }

    #[test]
    fn rise_of_one_announces_at_the_first_good_check() {
        let mut m = Machine::new(1, 1);
        assert!(feed(&mut m, Check::Good).is_some_and(|t| t.announced));
    }

    #[test]
    fn withdraws_after_fall_bad_checks_in_a_row() {
        let mut m = Machine::new(1, 3);
        feed(&mut m, Check::Good);
        assert!(m.announced());
        let bad = || Check::DnsFailed("timeout".into());
        assert_eq!(feed(&mut m, bad()), None);
        assert_eq!(feed(&mut m, bad()), None);
        assert_eq!(
            feed(&mut m, Check::Good),
            None,
            "a good check resets the count"
        );
        assert_eq!(feed(&mut m, bad()), None);
        assert_eq!(feed(&mut m, bad()), None);
        assert_eq!(
            feed(&mut m, bad()),
            Some(Transition {
                announced: false,
                reason: Reason::SelfCheck
            })
        );
    }

    #[test]
    fn services_failures_are_told_apart() {
        let mut m = Machine::new(1, 1);
        feed(&mut m, Check::Good);
        let t = feed(&mut m, Check::ServicesFailed("no service up".into()));
        assert_eq!(t.map(|t| t.reason), Some(Reason::Services));
        let t = feed(&mut m, Check::Good);
        assert_eq!(
            t,
            Some(Transition {
                announced: true,
                reason: Reason::Services
            })
        );
    }

    #[test]
    fn operator_inputs_win_and_release_in_order() {
        let mut m = Machine::new(1, 1);
        feed(&mut m, Check::Good);
        let file = Inputs {
            withdraw_file: true,
            ..CALM
        };
        assert_eq!(m.step(file).map(|t| t.reason), Some(Reason::WithdrawFile));
        let both = Inputs {
            manual_withdraw: true,
            ..file
        };
        assert_eq!(m.step(both), None);
        assert_eq!(m.reason(), Reason::Manual, "the stronger cause shows");
        assert_eq!(m.step(file), None, "the file still holds it");
        assert_eq!(
            m.step(CALM),
            Some(Transition {
                announced: true,
                reason: Reason::WithdrawFile
            })
        );
    }

    #[test]
    fn shutdown_is_final() {
        let mut m = Machine::new(1, 1);
        feed(&mut m, Check::Good);
        let down = Inputs {
            shutdown: true,
            ..CALM
        };
        assert_eq!(m.step(down).map(|t| t.reason), Some(Reason::Shutdown));
        m.record(&Check::Good);
        assert_eq!(m.step(down), None);
        assert!(!m.announced());
    }
}
