//! The one interface between the decision and a BGP speaker. A speaker is told the state it
//! should be in — every change and again every interval — and makes it so; adding GoBGP or FRR
//! is one more file implementing [`Speaker`] and one arm in [`from_settings`].

use crate::config::anycast::{Settings, SpeakerKind};

/// Something that can announce and withdraw this site's prefixes.
pub trait Speaker: Send {
    /// `bird`, `exabgp`: the `speaker` of `/status`.
    fn name(&self) -> &'static str;

    /// Runs once before the first [`Speaker::set`]. An `Err` is a configuration mismatch that
    /// will not fix itself (e.g. BIRD has no such protocol) and stops the server; a speaker
    /// that is merely unreachable logs, returns `Ok` and retries in `set`.
    fn start(&mut self) -> Result<(), String>;

    /// Brings the speaker to `announce` (true: the prefixes are announced). Called on every
    /// change and every interval, so a speaker that restarted and forgot is put right; it must
    /// be idempotent. `Err` says why it did not work this time (it will be called again).
    fn set(&mut self, announce: bool) -> Result<(), String>;
}

/// The speaker `[anycast]` names.
pub fn from_settings(s: &Settings) -> Box<dyn Speaker> {
    match &s.speaker {
        SpeakerKind::Bird { socket, protocol } => {
            Box::new(super::bird::Bird::new(socket.clone(), protocol.clone()))
        }
        SpeakerKind::Exabgp => Box::new(super::exabgp::Exabgp::new(
            std::io::stdout(),
            s.prefixes.clone(),
        )),
    }
}
