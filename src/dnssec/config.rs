//! `[[dnssec]]` (SPEC "DNSSEC"): its schema, its checks (zone, keys readable and of a
//! supported algorithm and of that zone, validity), and `meridian dnssec ds`.
//!
//! Answers are not signed yet, so `check` and `serve` refuse a config with `[[dnssec]]`
//! ([`NOT_WIRED`]): a zone must never look signed when it is not. `meridian dnssec ds` reads
//! the same section and works already, so DS records can go to the parent ahead of time.

use std::path::{Path, PathBuf};

use hickory_proto::rr::Name;
use serde::Deserialize;
use serde_spanned::Spanned;

use super::key::SigningKey;
use super::sign::Validity;
use crate::base::problem::Problem;

/// The problem `check` and `serve` report for every `[[dnssec]]` until answers are signed.
pub const NOT_WIRED: &str =
    "[[dnssec]]: signing answers is not in this build yet; `meridian dnssec ds` works";

/// The RRSIG validity without `validity =`.
pub const DEFAULT_VALIDITY: &str = "4d";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnssecConfig {
    pub zone: Spanned<String>,
    /// BIND key files (`.private`, the `.key` beside it) or PKCS#8 PEM files, relative to the
    /// config's folder.
    pub keys: Spanned<Vec<Spanned<String>>>,
    pub validity: Option<Spanned<String>>,
}

/// One signed zone's checked settings.
#[derive(Debug)]
pub struct ZoneKeys {
    pub zone: Name,
    pub keys: Vec<SigningKey>,
    pub validity: Validity,
}

impl ZoneKeys {
    /// The keys that sign DNSKEY, CDS and CDNSKEY and whose DS goes to the parent.
    pub fn sep_keys(&self) -> impl Iterator<Item = &SigningKey> {
        self.keys.iter().filter(|k| k.is_sep())
    }
}

fn resolve(config: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config.parent().unwrap_or_else(|| Path::new(".")).join(p)
    }
}

/// Checks every `[[dnssec]]` and loads its keys; problems go to `out`. Returns the zones that
/// passed. Does not add [`NOT_WIRED`]: the config's checks do (see [`not_wired`]).
pub fn load(
    list: &[Spanned<DnssecConfig>],
    config_path: &Path,
    at: &dyn Fn(std::ops::Range<usize>, String) -> Problem,
    out: &mut Vec<Problem>,
) -> Vec<ZoneKeys> {
    let mut zones = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, d) in list.iter().enumerate() {
        let d = d.get_ref();
        let key = format!("dnssec[{i}]");
        let before = out.len();
        let zone = match Name::from_ascii(d.zone.get_ref().trim_end_matches('.')) {
            Ok(mut n) if !d.zone.get_ref().is_empty() => {
                n.set_fqdn(true);
                let n = n.to_lowercase();
                if !seen.insert(n.clone()) {
                    out.push(at(
                        d.zone.span(),
                        format!("{key}.zone: `{n}` is listed twice"),
                    ));
                }
                Some(n)
            }
            _ => {
                out.push(at(
                    d.zone.span(),
                    format!("{key}.zone: `{}` is not a domain name", d.zone.get_ref()),
                ));
                None
            }
        };
        let validity = match &d.validity {
            None => crate::config::parse_duration(DEFAULT_VALIDITY)
                .and_then(Validity::new)
                .ok(),
            Some(v) => match crate::config::parse_duration(v.get_ref()).and_then(Validity::new) {
                Ok(v) => Some(v),
                Err(e) => {
                    out.push(at(v.span(), format!("{key}.validity: {e}")));
                    None
                }
            },
        };
        if d.keys.get_ref().is_empty() {
            out.push(at(
                d.keys.span(),
                format!("{key}.keys: at least one key is needed"),
            ));
        }
        let mut keys: Vec<SigningKey> = Vec::new();
        if let Some(zone) = &zone {
            for k in d.keys.get_ref() {
                match SigningKey::load(zone, &resolve(config_path, k.get_ref())) {
                    Ok(loaded) => {
                        if keys.iter().any(|o| o.public_key() == loaded.public_key()) {
                            out.push(at(
                                k.span(),
                                format!("{key}.keys: key {} is listed twice", loaded.tag()),
                            ));
                        }
                        keys.push(loaded);
                    }
                    Err(e) => out.push(at(k.span(), format!("{key}.keys: {e}"))),
                }
            }
            if !keys.is_empty() && !keys.iter().any(SigningKey::is_sep) {
                out.push(at(
                    d.keys.span(),
                    format!(
                        "{key}.keys: no key has flags 257 (KSK or CSK): the parent's DS needs one"
                    ),
                ));
            }
        }
        if out.len() == before {
            if let (Some(zone), Some(validity)) = (zone, validity) {
                zones.push(ZoneKeys {
                    zone,
                    keys,
                    validity,
                });
            }
        }
    }
    zones
}

/// The refusal `check` and `serve` give each `[[dnssec]]` while answers are unsigned.
pub fn not_wired(
    list: &[Spanned<DnssecConfig>],
    at: &dyn Fn(std::ops::Range<usize>, String) -> Problem,
    out: &mut Vec<Problem>,
) {
    for d in list {
        out.push(at(d.span(), NOT_WIRED.to_string()));
    }
}

/// The checks of the config (src/config.rs calls this once): every problem of the keys, and
/// the refusal while answers are unsigned.
pub fn check(
    list: &[Spanned<DnssecConfig>],
    config_path: &Path,
    at: &dyn Fn(std::ops::Range<usize>, String) -> Problem,
    out: &mut Vec<Problem>,
) {
    load(list, config_path, at, out);
    not_wired(list, at, out);
}
