//! `[[secondary]]` (SPEC "Zones from a primary"): a zone transferred from a primary and run by
//! `crate::secondary`. Its schema, the transfer caps' defaults, what a primary address and a
//! TSIG key may be, and its check.

use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::Name;
use serde::Deserialize;
use serde_spanned::Spanned;

use super::{Cx, Problem};
use crate::base::text::{base64, wire_name};

/// `[[secondary]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecondaryConfig {
    pub zone: Spanned<String>,
    pub primaries: Spanned<Vec<Spanned<String>>>,
    pub tsig: Option<Spanned<TsigConfig>>,
    /// Records a transfer may carry (default 1,000,000); over it the transfer is rejected.
    pub max_records: Option<Spanned<i64>>,
    /// Bytes a transfer may carry on the wire (default 268435456); over it it is rejected.
    pub max_bytes: Option<Spanned<i64>>,
}

/// Records a transfer may carry without `max_records`.
pub const DEFAULT_MAX_RECORDS: u64 = 1_000_000;
/// Bytes a transfer may carry without `max_bytes`.
pub const DEFAULT_MAX_BYTES: u64 = 268_435_456;

impl SecondaryConfig {
    /// The zone's name, lower-cased and fully qualified; `None` when it is not a name.
    pub fn origin(&self) -> Option<Name> {
        zone_name(self.zone.get_ref())
    }

    /// `max_records`, or its default when absent (or not above 0: a config problem).
    pub fn max_records(&self) -> u64 {
        cap(&self.max_records, DEFAULT_MAX_RECORDS)
    }

    /// `max_bytes`, or its default when absent (or not above 0: a config problem).
    pub fn max_bytes(&self) -> u64 {
        cap(&self.max_bytes, DEFAULT_MAX_BYTES)
    }

    /// The primaries' addresses that parse.
    pub fn primary_addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.primaries
            .get_ref()
            .iter()
            .filter_map(|p| parse_primary(p.get_ref()))
    }
}

fn cap(v: &Option<Spanned<i64>>, default: u64) -> u64 {
    v.as_ref()
        .and_then(|v| u64::try_from(*v.get_ref()).ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TsigConfig {
    pub name: String,
    pub algorithm: String,
    pub secret: String,
}

impl std::fmt::Debug for TsigConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret never reaches a log.
        f.debug_struct("TsigConfig")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

/// The TSIG algorithms offered: RFC 8945 §6 names SHA-256 as the one to implement; SHA-1 and
/// MD5 are not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsigAlgorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

/// A TSIG key's values read (what `secondary::tsig::Key` is made from).
pub struct TsigKey {
    /// Key name in canonical wire form (lower case, uncompressed).
    pub name: Vec<u8>,
    pub algorithm: TsigAlgorithm,
    /// Algorithm name in canonical wire form (`hmac-sha256.`).
    pub algorithm_name: Vec<u8>,
    pub secret: Vec<u8>,
}

/// Reads a TSIG key's name, algorithm (hmac-sha256, hmac-sha384 or hmac-sha512) and base64
/// secret; `Err` says what is wrong.
pub fn tsig_key(name: &str, algorithm: &str, secret: &str) -> Result<TsigKey, String> {
    let alg = match algorithm
        .trim_end_matches('.')
        .to_ascii_lowercase()
        .as_str()
    {
        "hmac-sha256" => TsigAlgorithm::HmacSha256,
        "hmac-sha384" => TsigAlgorithm::HmacSha384,
        "hmac-sha512" => TsigAlgorithm::HmacSha512,
        other => {
            return Err(format!(
                "algorithm `{other}` is not one of hmac-sha256, hmac-sha384, hmac-sha512"
            ))
        }
    };
    let name = wire_name(name).ok_or_else(|| format!("`{name}` is not a key name"))?;
    let secret = base64(secret).ok_or("secret is not base64")?;
    Ok(TsigKey {
        name,
        algorithm: alg,
        algorithm_name: wire_name(&algorithm.to_ascii_lowercase()).ok_or("bad algorithm")?,
        secret,
    })
}

/// A primary address: `ip:port`, or a bare IP for port 53.
pub fn parse_primary(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

/// A zone name as written, lower-cased and fully qualified.
pub fn zone_name(s: &str) -> Option<Name> {
    let mut n = Name::from_ascii(s).ok()?;
    n.set_fqdn(true);
    Some(n.to_lowercase())
}

/// Checks every `[[secondary]]`.
pub fn check(list: &[Spanned<SecondaryConfig>], cx: &Cx, out: &mut Vec<Problem>) {
    let mut seen = std::collections::HashSet::new();
    for (i, s) in list.iter().enumerate() {
        let s = s.get_ref();
        let key = format!("secondary[{i}]");
        match zone_name(s.zone.get_ref()) {
            None => out.push(cx.at(
                s.zone.span(),
                format!("{key}.zone: `{}` is not a domain name", s.zone.get_ref()),
            )),
            Some(n) => {
                if !seen.insert(n.clone()) {
                    out.push(cx.at(s.zone.span(), format!("{key}.zone: `{n}` is listed twice")));
                }
            }
        }
        if s.primaries.get_ref().is_empty() {
            out.push(cx.at(
                s.primaries.span(),
                format!("{key}.primaries: at least one primary is needed"),
            ));
        }
        for p in s.primaries.get_ref() {
            if parse_primary(p.get_ref()).is_none() {
                out.push(cx.at(
                    p.span(),
                    format!(
                        "{key}.primaries: `{}` is not an address (\"192.0.2.1:53\" or \"192.0.2.1\")",
                        p.get_ref()
                    ),
                ));
            }
        }
        for (what, v) in [("max_records", &s.max_records), ("max_bytes", &s.max_bytes)] {
            if let Some(v) = v {
                if *v.get_ref() < 1 {
                    out.push(cx.at(v.span(), format!("{key}.{what}: must be at least 1")));
                }
            }
        }
        if let Some(t) = &s.tsig {
            let c = t.get_ref();
            if let Err(e) = tsig_key(&c.name, &c.algorithm, &c.secret) {
                out.push(cx.at(t.span(), format!("{key}.tsig: {e}")));
            }
        }
    }
}
