//! The `[fleet]` table (SPEC "Fleet"): its schema, the settings `crate::fleet` runs on (the
//! quorum rule among them), and the checks `meridian check` runs on it. Nothing here talks to
//! etcd, so the section validates on a machine without one.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;

use super::{parse_duration, Cx, Problem};

/// `[fleet]` as written.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    pub etcd: Spanned<Vec<Spanned<String>>>,
    pub prefix: Option<Spanned<String>>,
    /// `any`, `majority`, `all`, or a share as a string ("0.3") or a number (0.3).
    pub quorum: Option<Spanned<toml::Value>>,
    pub probers: Option<Spanned<u32>>,
    pub report_ttl: Option<Spanned<String>>,
    pub ca: Option<Spanned<String>>,
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// By hand so that no `{:?}` of a config can print the etcd password.
impl std::fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetConfig")
            .field("etcd", &self.etcd)
            .field("prefix", &self.prefix)
            .field("quorum", &self.quorum)
            .field("probers", &self.probers)
            .field("report_ttl", &self.report_ttl)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Share of the reporting sites that must see an endpoint healthy for the fleet to answer it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Quorum {
    /// At least one site.
    Any,
    /// More than half.
    Majority,
    /// Every reporting site.
    All,
    /// At least this share (0 < f ≤ 1).
    Share(f64),
}

impl Quorum {
    /// The fleet verdict from `healthy` of `reporting` sites (`reporting` > 0).
    pub fn healthy(self, healthy: usize, reporting: usize) -> bool {
        match self {
            Quorum::Any => healthy >= 1,
            Quorum::Majority => healthy * 2 > reporting,
            Quorum::All => healthy == reporting,
            // A small epsilon so that 0.3 of 10 sites is 3, not 4 from float rounding.
            Quorum::Share(f) => healthy as f64 + 1e-9 >= f * reporting as f64,
        }
    }

    pub fn describe(self) -> String {
        match self {
            Quorum::Any => "any".into(),
            Quorum::Majority => "majority".into(),
            Quorum::All => "all".into(),
            Quorum::Share(f) => f.to_string(),
        }
    }
}

pub const DEFAULT_PREFIX: &str = "/meridian";
pub const DEFAULT_REPORT_TTL: Duration = Duration::from_secs(5);

/// `[fleet]` after its checks, with defaults filled in.
#[derive(Clone, PartialEq)]
pub struct Settings {
    pub etcd: Vec<String>,
    /// Without a trailing `/`.
    pub prefix: String,
    pub quorum: Quorum,
    /// 0 = every site probes every endpoint.
    pub probers: u32,
    /// Lease time of this site's reports; whole seconds, since etcd leases are.
    pub report_ttl: Duration,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `[site] id`.
    pub site: String,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("etcd", &self.etcd)
            .field("prefix", &self.prefix)
            .field("quorum", &self.quorum)
            .field("probers", &self.probers)
            .field("report_ttl", &self.report_ttl)
            .field("site", &self.site)
            .finish_non_exhaustive()
    }
}

fn parse_quorum(v: &toml::Value) -> Result<Quorum, String> {
    let share = match v {
        toml::Value::String(s) => match s.as_str() {
            "any" => return Ok(Quorum::Any),
            "majority" => return Ok(Quorum::Majority),
            "all" => return Ok(Quorum::All),
            s => s.trim().parse::<f64>().ok(),
        },
        toml::Value::Float(f) => Some(*f),
        toml::Value::Integer(1) => Some(1.0),
        _ => None,
    };
    let shown = match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Integer(i) => i.to_string(),
        other => format!("{other:?}"),
    };
    match share {
        Some(f) if f > 0.0 && f <= 1.0 => Ok(Quorum::Share(f)),
        _ => Err(format!(
            "`{shown}` is not one of any, majority, all, or a share above 0 and at most 1 (\"0.3\")"
        )),
    }
}

/// Checks `[fleet]`; `site` is `[site] id`, which the fleet needs. Problems go to `out`;
/// returns the settings (TLS paths resolved against the config's folder) when there were none.
pub fn check(
    c: &Spanned<FleetConfig>,
    cx: &Cx,
    site: Option<&str>,
    out: &mut Vec<Problem>,
) -> Option<Settings> {
    if !cfg!(feature = "fleet") {
        out.push(cx.at(
            c.span(),
            "fleet: this meridian was built without the `fleet` feature (the etcd client); \
             build it with `cargo build --release --features fleet` (needs protoc: Debian \
             protobuf-compiler and libprotobuf-dev), or use the Debian package, which has it",
        ));
        return None;
    }
    let before = out.len();
    let f = c.get_ref();
    let site = site.unwrap_or_default().to_string();
    if site.is_empty() {
        out.push(cx.at(c.span(), "fleet: needs [site] id, unique per site"));
    } else if site.contains('/') {
        out.push(cx.at(c.span(), "fleet: [site] id must not contain `/`"));
    }
    let mut etcd = Vec::new();
    if f.etcd.get_ref().is_empty() {
        out.push(cx.at(f.etcd.span(), "fleet.etcd: at least one endpoint is needed"));
    }
    let tls = f.ca.is_some() || f.cert.is_some();
    for e in f.etcd.get_ref() {
        let u = e.get_ref();
        match reqwest::Url::parse(u) {
            Ok(url)
                if (url.scheme() == "http" || url.scheme() == "https") && url.host().is_some() =>
            {
                if url.scheme() == "https" && !tls {
                    out.push(cx.at(
                        e.span(),
                        format!("fleet.etcd: `{u}` is https, so fleet.ca is needed"),
                    ));
                }
                etcd.push(u.trim_end_matches('/').to_string());
            }
            _ => out.push(cx.at(
                e.span(),
                format!("fleet.etcd: `{u}` is not an http:// or https:// URL"),
            )),
        }
    }
    let prefix = match &f.prefix {
        None => DEFAULT_PREFIX.to_string(),
        Some(p) => {
            let s = p.get_ref().trim_end_matches('/');
            if !s.starts_with('/') || s.len() < 2 {
                out.push(cx.at(
                    p.span(),
                    format!(
                        "fleet.prefix: `{}` must start with `/` and name something",
                        p.get_ref()
                    ),
                ));
            }
            s.to_string()
        }
    };
    let quorum = match &f.quorum {
        None => Quorum::Majority,
        Some(q) => parse_quorum(q.get_ref()).unwrap_or_else(|e| {
            out.push(cx.at(q.span(), format!("fleet.quorum: {e}")));
            Quorum::Majority
        }),
    };
    let report_ttl = match &f.report_ttl {
        None => DEFAULT_REPORT_TTL,
        Some(d) => match parse_duration(d.get_ref()) {
            Ok(t) if t >= Duration::from_secs(1) => {
                Duration::from_secs(t.as_secs_f64().ceil() as u64)
            }
            Ok(_) => {
                out.push(cx.at(d.span(), "fleet.report_ttl: at least 1s"));
                DEFAULT_REPORT_TTL
            }
            Err(e) => {
                out.push(cx.at(d.span(), format!("fleet.report_ttl: {e}")));
                DEFAULT_REPORT_TTL
            }
        },
    };
    if f.cert.is_some() != f.key.is_some() {
        out.push(cx.at(
            c.span(),
            "fleet: cert and key go together (client certificate)",
        ));
    }
    if f.username.is_some() != f.password.is_some() {
        out.push(cx.at(c.span(), "fleet: username and password go together"));
    }
    // TLS files, like every path in the config, are relative to its folder.
    let path = |p: &Option<Spanned<String>>| p.as_ref().map(|p| cx.resolve(p.get_ref()));
    (out.len() == before).then(|| Settings {
        etcd,
        prefix,
        quorum,
        probers: f.probers.as_ref().map_or(0, |p| *p.get_ref()),
        report_ttl,
        ca: path(&f.ca),
        cert: path(&f.cert),
        key: path(&f.key),
        username: f.username.clone(),
        password: f.password.clone(),
        site,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_choices() {
        let q = |s: &str| parse_quorum(&toml::Value::String(s.into()));
        assert_eq!(q("any"), Ok(Quorum::Any));
        assert_eq!(q("0.3"), Ok(Quorum::Share(0.3)));
        assert!(q("0").is_err() && q("1.5").is_err() && q("most").is_err());
        assert!(Quorum::Majority.healthy(2, 3) && !Quorum::Majority.healthy(1, 2));
        assert!(Quorum::All.healthy(3, 3) && !Quorum::All.healthy(2, 3));
        assert!(Quorum::Any.healthy(1, 3) && !Quorum::Any.healthy(0, 3));
        assert!(Quorum::Share(0.3).healthy(3, 10) && !Quorum::Share(0.3).healthy(2, 10));
    }
}
