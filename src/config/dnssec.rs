//! `[[dnssec]]` (SPEC "DNSSEC"): its schema and the checks that need no key file (zone name,
//! validity, a key listed). Opening the keys is `crate::dnssec::config`'s, run where the
//! snapshot is built and by `meridian dnssec ds`, as opening the GeoIP database is.
//!
//! `signatures_per_second` is the zone's signing budget (signatures made on cache misses per
//! second; past it a DO query over UDP that needs a fresh signature gets TC=1, so a
//! random-subdomain flood with DO cannot turn into a signing flood).

use std::collections::HashSet;
use std::time::Duration;

use hickory_proto::rr::Name;
use serde::Deserialize;
use serde_spanned::Spanned;

use super::{parse_duration, Cx, Problem};

/// The RRSIG validity without `validity =`.
pub const DEFAULT_VALIDITY: &str = "4d";

/// The signing budget without `signatures_per_second =`: a fifth of one core at the ~20 µs a
/// P-256 or Ed25519 signature costs (docs/dnssec.md), so a flood of DO queries for fresh
/// names cannot take the server's CPU. 0 means no budget.
pub const DEFAULT_SIGNATURES_PER_SECOND: u32 = 10_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnssecConfig {
    pub zone: Spanned<String>,
    /// BIND key files (`.private`, the `.key` beside it) or PKCS#8 PEM files, relative to the
    /// config's folder.
    pub keys: Spanned<Vec<Spanned<String>>>,
    pub validity: Option<Spanned<String>>,
    /// Signatures made per second on cache misses before DO queries over UDP needing a fresh
    /// one get TC=1 (TCP and queries with a valid server cookie are not limited); 0 = no limit.
    pub signatures_per_second: Option<u32>,
}

/// `validity` must be at least 4 hours (shorter windows would re-sign every RRset every hour)
/// and at most 68 years (the RFC 1982 serial horizon); the seconds.
pub fn validity_secs(validity: Duration) -> Result<u64, String> {
    let secs = validity.as_secs();
    if secs < 4 * 3600 {
        return Err(format!(
            "validity {} is too short: at least 4h",
            humantime::format_duration(validity)
        ));
    }
    if secs >= 1 << 31 {
        return Err("validity must be under 68 years (RFC 1982 serial arithmetic)".into());
    }
    Ok(secs)
}

/// What one `[[dnssec]]` says without its key files: the zone (lower-cased, fully qualified)
/// and the validity, each `None` when it is wrong (the problem is in `out`).
pub struct Entry {
    pub zone: Option<Name>,
    pub validity: Option<Duration>,
}

/// Reads entry `i` of `[[dnssec]]`; `seen` holds the zones of the entries before it.
pub fn read_entry(
    i: usize,
    d: &DnssecConfig,
    seen: &mut HashSet<Name>,
    cx: &Cx,
    out: &mut Vec<Problem>,
) -> Entry {
    let key = format!("dnssec[{i}]");
    let zone = match Name::from_ascii(d.zone.get_ref().trim_end_matches('.')) {
        Ok(mut n) if !d.zone.get_ref().is_empty() => {
            n.set_fqdn(true);
            let n = n.to_lowercase();
            if !seen.insert(n.clone()) {
                out.push(cx.at(d.zone.span(), format!("{key}.zone: `{n}` is listed twice")));
            }
            Some(n)
        }
        _ => {
            out.push(cx.at(
                d.zone.span(),
                format!("{key}.zone: `{}` is not a domain name", d.zone.get_ref()),
            ));
            None
        }
    };
    let validity = match &d.validity {
        None => parse_duration(DEFAULT_VALIDITY).ok(),
        Some(v) => match parse_duration(v.get_ref()).and_then(|d| validity_secs(d).map(|_| d)) {
            Ok(d) => Some(d),
            Err(e) => {
                out.push(cx.at(v.span(), format!("{key}.validity: {e}")));
                None
            }
        },
    };
    if d.keys.get_ref().is_empty() {
        out.push(cx.at(
            d.keys.span(),
            format!("{key}.keys: at least one key is needed"),
        ));
    }
    Entry { zone, validity }
}

/// Checks every `[[dnssec]]` as far as it goes without the key files.
pub fn check(list: &[Spanned<DnssecConfig>], cx: &Cx, out: &mut Vec<Problem>) {
    let mut seen = HashSet::new();
    for (i, d) in list.iter().enumerate() {
        read_entry(i, d.get_ref(), &mut seen, cx, out);
    }
}
