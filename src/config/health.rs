//! `[health.NAME]`: probe profiles a service names in `health`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_spanned::Spanned;

use super::{parse_duration, Cx, Problem};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthProfile {
    pub kind: Spanned<String>,
    pub path: Option<String>,
    pub port: Option<u16>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub rise: Option<Spanned<u32>>,
    pub fall: Option<Spanned<u32>>,
    pub expect_status: Option<Spanned<StatusSpec>>,
    pub expect_body: Option<String>,
    pub host: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub tls_verify: Option<bool>,
    pub initial: Option<Spanned<String>>,
    /// The local address probes leave from (bind before connect).
    pub source: Option<Spanned<String>>,
}

/// `expect_status` as written: one code, a range string, or a list of either.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StatusSpec {
    Code(u16),
    Text(String),
    List(Vec<StatusSpec>),
}

/// Checks every `[health.NAME]` profile.
pub fn check(health: &BTreeMap<String, Spanned<HealthProfile>>, cx: &Cx, out: &mut Vec<Problem>) {
    for (name, profile) in health {
        let key = format!("health.{name}");
        let p = profile.get_ref();
        if !["http", "https", "tcp"].contains(&p.kind.get_ref().as_str()) {
            out.push(cx.at(
                p.kind.span(),
                format!(
                    "{key}.kind: `{}` is not one of http, https, tcp",
                    p.kind.get_ref()
                ),
            ));
        }
        if p.kind.get_ref() == "tcp" && p.port.is_none() {
            out.push(cx.at(
                profile.span(),
                format!("{key}.port: a tcp check needs a port"),
            ));
        }
        for (k, d) in [("interval", &p.interval), ("timeout", &p.timeout)] {
            if let Some(d) = d {
                match parse_duration(d.get_ref()) {
                    // Zero would not mean "never" or "at once": it ran as the default.
                    Ok(v) if v.is_zero() => {
                        out.push(cx.at(d.span(), format!("{key}.{k}: must be more than 0")))
                    }
                    Ok(_) => {}
                    Err(e) => out.push(cx.at(d.span(), format!("{key}.{k}: {e}"))),
                }
            }
        }
        for (k, v) in [("rise", &p.rise), ("fall", &p.fall)] {
            if let Some(v) = v {
                if *v.get_ref() == 0 {
                    out.push(cx.at(v.span(), format!("{key}.{k}: must be at least 1")));
                }
            }
        }
        if let Some(s) = &p.expect_status {
            if let Err(e) = status_ranges(s.get_ref()) {
                out.push(cx.at(s.span(), format!("{key}.expect_status: {e}")));
            }
        }
        for (h, v) in &p.headers {
            // RFC 9110 §5.1 token characters; values without control characters.
            let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if h.is_empty() || !h.bytes().all(tchar) {
                out.push(cx.at(
                    profile.span(),
                    format!("{key}.headers: `{h}` is not a valid HTTP header name"),
                ));
            }
            if v.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                out.push(cx.at(
                    profile.span(),
                    format!("{key}.headers.{h}: the value has control characters"),
                ));
            }
        }
        if let Some(i) = &p.initial {
            if !["up", "down"].contains(&i.get_ref().as_str()) {
                out.push(cx.at(
                    i.span(),
                    format!("{key}.initial: `{}` is not one of up, down", i.get_ref()),
                ));
            }
        }
        if let Some(src) = &p.source {
            if src.get_ref().parse::<std::net::IpAddr>().is_err() {
                out.push(cx.at(
                    src.span(),
                    format!("{key}.source: `{}` is not an IP address", src.get_ref()),
                ));
            }
        }
    }
}

/// Expands an `expect_status` into inclusive ranges.
pub fn status_ranges(spec: &StatusSpec) -> Result<Vec<(u16, u16)>, String> {
    let check = |c: u16| {
        if (100..=599).contains(&c) {
            Ok(c)
        } else {
            Err(format!("{c} is not an HTTP status code"))
        }
    };
    match spec {
        StatusSpec::Code(c) => Ok(vec![(check(*c)?, *c)]),
        StatusSpec::Text(t) => {
            let t = t.trim();
            let (a, b) = t.split_once('-').unwrap_or((t, t));
            let parse = |x: &str| {
                x.trim()
                    .parse::<u16>()
                    .map_err(|_| format!("`{t}` is not a status code or range like \"200-299\""))
                    .and_then(check)
            };
            let (a, b) = (parse(a)?, parse(b)?);
            if a > b {
                return Err(format!("`{t}`: range start is above its end"));
            }
            Ok(vec![(a, b)])
        }
        StatusSpec::List(items) => {
            let mut out = Vec::new();
            for i in items {
                out.extend(status_ranges(i)?);
            }
            if out.is_empty() {
                return Err("the list is empty".into());
            }
            Ok(out)
        }
    }
}
