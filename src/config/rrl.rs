//! `[rrl]`: response rate limiting (run by `crate::rrl` on the UDP path): its schema, the
//! defaults of the keys left out and the bounds the config accepts, and its check.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;

use super::{parse_cidr, parse_duration, Cx, Problem};
use crate::base::net::mask;

/// `[rrl]` as written; absent keys take the defaults below.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RrlConfig {
    pub responses_per_second: Option<Spanned<u32>>,
    pub nxdomains_per_second: Option<Spanned<u32>>,
    pub errors_per_second: Option<Spanned<u32>>,
    pub window: Option<Spanned<String>>,
    pub slip: Option<Spanned<u32>>,
    pub ipv4_prefix: Option<Spanned<u8>>,
    pub ipv6_prefix: Option<Spanned<u8>>,
    #[serde(default)]
    pub exempt: Vec<Spanned<String>>,
    #[serde(default)]
    pub log_only: bool,
    pub table_size: Option<Spanned<usize>>,
}

/// `[rrl]` as it applies to queries: checked, with its defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub responses_per_second: u32,
    pub nxdomains_per_second: u32,
    pub errors_per_second: u32,
    pub window: Duration,
    pub slip: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Networks never limited, already masked to their prefix.
    pub exempt: Vec<(IpAddr, u8)>,
    pub log_only: bool,
    pub table_size: usize,
}

/// Defaults of the keys `[rrl]` leaves out (those of BIND and Knot where they agree).
pub const DEFAULT_RATE: u32 = 20;
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(5);
pub const DEFAULT_SLIP: u32 = 2;
pub const DEFAULT_TABLE_SIZE: usize = 100_000;
/// Upper bounds the config accepts.
pub const MAX_RATE: u32 = 1_000_000;
pub const MAX_SLIP: u32 = 10;
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);
pub const MAX_TABLE_SIZE: usize = 1 << 26;

/// Checks `[rrl]` and fills in its defaults; `None` when a value is wrong (reported in `out`).
pub fn check(r: &RrlConfig, cx: &Cx, out: &mut Vec<Problem>) -> Option<Settings> {
    let before = out.len();
    let mut rate = |key: &str, v: &Option<Spanned<u32>>, default: u32| match v {
        Some(v) if *v.get_ref() > MAX_RATE => {
            out.push(cx.at(
                v.span(),
                format!("rrl.{key}: must be at most {} (0 = unlimited)", MAX_RATE),
            ));
            default
        }
        Some(v) => *v.get_ref(),
        None => default,
    };
    let responses = rate(
        "responses_per_second",
        &r.responses_per_second,
        DEFAULT_RATE,
    );
    // As in BIND: the other rates default to the answer rate.
    let nxdomains = rate("nxdomains_per_second", &r.nxdomains_per_second, responses);
    let errors = rate("errors_per_second", &r.errors_per_second, responses);
    let window = match &r.window {
        None => DEFAULT_WINDOW,
        Some(w) => match parse_duration(w.get_ref()) {
            Ok(d) if d >= Duration::from_secs(1) && d <= MAX_WINDOW => d,
            Ok(_) => {
                out.push(cx.at(w.span(), "rrl.window: must lie between 1s and 1h"));
                DEFAULT_WINDOW
            }
            Err(e) => {
                out.push(cx.at(w.span(), format!("rrl.window: {e}")));
                DEFAULT_WINDOW
            }
        },
    };
    let slip = match &r.slip {
        Some(s) if *s.get_ref() > MAX_SLIP => {
            out.push(cx.at(
                s.span(),
                format!(
                    "rrl.slip: must lie between 0 (drop every limited response) and {}",
                    MAX_SLIP
                ),
            ));
            DEFAULT_SLIP
        }
        Some(s) => *s.get_ref(),
        None => DEFAULT_SLIP,
    };
    let mut prefix = |key: &str, v: &Option<Spanned<u8>>, default: u8, max: u8| match v {
        Some(p) if *p.get_ref() == 0 || *p.get_ref() > max => {
            out.push(cx.at(p.span(), format!("rrl.{key}: must lie between 1 and {max}")));
            default
        }
        Some(p) => *p.get_ref(),
        None => default,
    };
    let ipv4_prefix = prefix("ipv4_prefix", &r.ipv4_prefix, 24, 32);
    let ipv6_prefix = prefix("ipv6_prefix", &r.ipv6_prefix, 56, 128);
    let mut exempt = Vec::new();
    for (i, e) in r.exempt.iter().enumerate() {
        match parse_cidr(e.get_ref()) {
            Some((ip, len)) => exempt.push((mask(ip, len), len)),
            None => out.push(cx.at(
                e.span(),
                format!(
                    "rrl.exempt[{i}]: `{}` is not a network (e.g. \"10.0.0.0/8\")",
                    e.get_ref()
                ),
            )),
        }
    }
    let table_size = match &r.table_size {
        Some(t) if *t.get_ref() == 0 || *t.get_ref() > MAX_TABLE_SIZE => {
            out.push(cx.at(
                t.span(),
                format!("rrl.table_size: must lie between 1 and {}", MAX_TABLE_SIZE),
            ));
            DEFAULT_TABLE_SIZE
        }
        Some(t) => *t.get_ref(),
        None => DEFAULT_TABLE_SIZE,
    };
    (out.len() == before).then_some(Settings {
        responses_per_second: responses,
        nxdomains_per_second: nxdomains,
        errors_per_second: errors,
        window,
        slip,
        ipv4_prefix,
        ipv6_prefix,
        exempt,
        log_only: r.log_only,
        table_size,
    })
}
