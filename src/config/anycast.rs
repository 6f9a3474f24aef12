//! The `[anycast]` table (SPEC "Anycast"): its schema, the settings `crate::anycast` runs on,
//! and the checks `meridian check` runs on it.
//! Nothing here talks to BIRD or ExaBGP, so the section validates on a machine without either.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;

use super::{parse_cidr, parse_duration, Cx, Problem};

/// `[anycast]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnycastConfig {
    pub prefixes: Spanned<Vec<Spanned<String>>>,
    pub speaker: Spanned<String>,
    pub bird_socket: Option<Spanned<String>>,
    pub bird_protocol: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub rise: Option<Spanned<u32>>,
    pub fall: Option<Spanned<u32>>,
    pub require: Option<Spanned<String>>,
    pub withdraw_file: Option<Spanned<String>>,
    pub shutdown_grace: Option<Spanned<String>>,
}

/// Which speaker carries the announcements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpeakerKind {
    /// BIRD 2's control socket: `enable` / `disable` of a static protocol.
    Bird { socket: PathBuf, protocol: String },
    /// meridian is an ExaBGP API process: text commands on stdout.
    Exabgp,
}

impl SpeakerKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            SpeakerKind::Bird { .. } => "bird",
            SpeakerKind::Exabgp => "exabgp",
        }
    }
}

/// What the self-check needs besides DNS answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Require {
    /// Only the DNS self-check.
    Dns,
    /// At least one service has a healthy, undrained endpoint.
    AnyService,
    /// Every service has one.
    EveryService,
}

/// `[anycast]` after its checks, with defaults filled in and paths made absolute.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// As written (normalised `addr/len`), for `/status` and the speakers.
    pub prefixes: Vec<String>,
    pub speaker: SpeakerKind,
    pub interval: Duration,
    pub rise: u32,
    pub fall: u32,
    pub require: Require,
    pub withdraw_file: Option<PathBuf>,
    pub shutdown_grace: Duration,
}

pub const DEFAULT_BIRD_SOCKET: &str = "/run/bird/bird.ctl";
pub const DEFAULT_BIRD_PROTOCOL: &str = "meridian_anycast";

/// A BIRD symbol: the name goes verbatim into a control-socket command line, so nothing but
/// letters, digits and `_` (no spaces, no newline that would start a second command).
fn is_bird_symbol(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Checks `[anycast]` and returns its settings (paths resolved against the config's folder);
/// every problem goes to `out`.
pub fn check(c: &AnycastConfig, cx: &Cx, out: &mut Vec<Problem>) -> Option<Settings> {
    let before = out.len();
    let mut prefixes = Vec::new();
    if c.prefixes.get_ref().is_empty() {
        out.push(cx.at(
            c.prefixes.span(),
            "anycast.prefixes: at least one prefix is needed",
        ));
    }
    for p in c.prefixes.get_ref() {
        match parse_cidr(p.get_ref()) {
            Some((addr, len)) => prefixes.push(format!("{addr}/{len}")),
            None => out.push(cx.at(
                p.span(),
                format!(
                    "anycast.prefixes: `{}` is not a prefix like \"198.51.100.53/32\"",
                    p.get_ref()
                ),
            )),
        }
    }
    let speaker = match c.speaker.get_ref().as_str() {
        "bird" => {
            let protocol = c
                .bird_protocol
                .as_ref()
                .map(|p| p.get_ref().clone())
                .unwrap_or_else(|| DEFAULT_BIRD_PROTOCOL.into());
            if !is_bird_symbol(&protocol) {
                let span = c
                    .bird_protocol
                    .as_ref()
                    .map(|p| p.span())
                    .unwrap_or(c.speaker.span());
                out.push(cx.at(
                    span,
                    format!(
                        "anycast.bird_protocol: `{protocol}` is not a BIRD protocol name \
                         (letters, digits and _, not starting with a digit)"
                    ),
                ));
            }
            let socket = c
                .bird_socket
                .as_ref()
                .map(|s| s.get_ref().as_str())
                .unwrap_or(DEFAULT_BIRD_SOCKET);
            if socket.is_empty() {
                if let Some(s) = &c.bird_socket {
                    out.push(cx.at(s.span(), "anycast.bird_socket: must not be empty"));
                }
            }
            Some(SpeakerKind::Bird {
                socket: cx.resolve(socket),
                protocol,
            })
        }
        "exabgp" => {
            for (k, v) in [
                ("bird_socket", &c.bird_socket),
                ("bird_protocol", &c.bird_protocol),
            ] {
                if let Some(v) = v {
                    out.push(cx.at(
                        v.span(),
                        format!("anycast.{k}: only used with speaker = \"bird\""),
                    ));
                }
            }
            Some(SpeakerKind::Exabgp)
        }
        other => {
            out.push(cx.at(
                c.speaker.span(),
                format!("anycast.speaker: `{other}` is not one of bird, exabgp"),
            ));
            None
        }
    };
    let mut duration = |key: &str, v: &Option<Spanned<String>>, default: Duration| match v {
        None => default,
        Some(v) => match parse_duration(v.get_ref()) {
            Ok(d) if d.is_zero() && key == "interval" => {
                out.push(cx.at(v.span(), format!("anycast.{key}: must be longer than 0")));
                default
            }
            Ok(d) => d,
            Err(e) => {
                out.push(cx.at(v.span(), format!("anycast.{key}: {e}")));
                default
            }
        },
    };
    let interval = duration("interval", &c.interval, Duration::from_secs(1));
    let shutdown_grace = duration("shutdown_grace", &c.shutdown_grace, Duration::from_secs(2));
    let mut count = |key: &str, v: &Option<Spanned<u32>>| match v {
        None => 2,
        Some(v) if *v.get_ref() == 0 => {
            out.push(cx.at(v.span(), format!("anycast.{key}: must be at least 1")));
            2
        }
        Some(v) => *v.get_ref(),
    };
    let rise = count("rise", &c.rise);
    let fall = count("fall", &c.fall);
    let require = match c.require.as_ref().map(|r| (r.get_ref().as_str(), r.span())) {
        None | Some(("dns", _)) => Require::Dns,
        Some(("any-service", _)) => Require::AnyService,
        Some(("every-service", _)) => Require::EveryService,
        Some((other, span)) => {
            out.push(cx.at(
                span,
                format!("anycast.require: `{other}` is not one of dns, any-service, every-service"),
            ));
            Require::Dns
        }
    };
    let withdraw_file = match &c.withdraw_file {
        Some(f) if f.get_ref().is_empty() => {
            out.push(cx.at(f.span(), "anycast.withdraw_file: must not be empty"));
            None
        }
        Some(f) => Some(cx.resolve(f.get_ref())),
        None => None,
    };
    if out.len() > before {
        return None;
    }
    Some(Settings {
        prefixes,
        speaker: speaker?,
        interval,
        rise,
        fall,
        require,
        withdraw_file,
        shutdown_grace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bird_symbols() {
        assert!(is_bird_symbol("meridian_anycast"));
        assert!(is_bird_symbol("_x1"));
        assert!(!is_bird_symbol("1x"));
        assert!(!is_bird_symbol("a b"));
        assert!(!is_bird_symbol("a\nshow status"));
        assert!(!is_bird_symbol(""));
    }
}
