//! `[[service]]`: balanced names, their policy and endpoints.

use std::net::IpAddr;

use serde::Deserialize;
use serde_spanned::Spanned;

use super::{Cx, Problem};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: Spanned<String>,
    /// Required without `[[service.tier]]`s; with them each tier has its own.
    pub policy: Option<Spanned<String>>,
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    #[serde(default = "default_max_answers")]
    pub max_answers: Spanned<usize>,
    /// One profile name or a list ([`super::health::HealthRef`]).
    pub health: Option<Spanned<super::health::HealthRef>>,
    /// Up when at least this many of the `health` profiles pass; default all.
    pub health_min: Option<Spanned<u32>>,
    pub when_all_down: Option<Spanned<String>>,
    /// TTL while the service answers around a failure (see [`crate::policy::Selection`]).
    pub ttl_degraded: Option<u32>,
    /// Where a geo region's clients go when it cannot answer: `nearest` (the default: all to
    /// the next nearest region) or `capacity` (spread by capacity, [`crate::policy::spill`]).
    pub spill: Option<Spanned<String>>,
    /// Inline endpoints; with `pools`, the service answers with the union.
    pub endpoints: Option<Spanned<Vec<Spanned<EndpointConfig>>>>,
    /// Names of `[pool.NAME]`s (`config::pool`).
    pub pools: Option<Spanned<Vec<Spanned<String>>>>,
    /// `[[service.tier]]`: tried in order, the first with `min_up` eligible endpoints answers.
    #[serde(default)]
    pub tier: Vec<Spanned<super::pool::TierConfig>>,
    /// Addresses answered when no tier has enough, before `when_all_down`.
    pub fallback: Option<Spanned<Vec<Spanned<String>>>>,
}

fn default_ttl() -> u32 {
    30
}
fn default_max_answers() -> Spanned<usize> {
    Spanned::new(0..0, 1)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub region: Option<Spanned<String>>,
    /// An endpoint is an `address` (answered as A/AAAA) or a `target` name (answered as a
    /// CNAME to it: a regional load balancer known by name, such as an ALB).
    pub address: Option<Spanned<String>>,
    pub target: Option<Spanned<String>>,
    pub weight: Option<Spanned<f64>>,
    pub priority: Option<u32>,
    pub check: Option<Spanned<String>>,
    /// What the endpoint can take, in any unit shared by the service (default: its weight):
    /// `spill = "capacity"` spreads a failed region's clients in proportion to it.
    pub capacity: Option<Spanned<f64>>,
}

/// The values of `[[service]] spill`.
pub const SPILLS: &[&str] = &["nearest", "capacity"];

pub const POLICIES: &[&str] = &[
    "round-robin",
    "weighted",
    "geo",
    "failover",
    "hash",
    "latency",
    "least-loaded",
];

/// Largest TTL a resolver keeps as given (RFC 2181 §8).
pub const MAX_TTL: u32 = (1 << 31) - 1;

/// How problems name a service: by its `name`, as the operator knows it, not its index.
pub fn service_key(name: &str) -> String {
    format!("service \"{name}\"")
}

/// Checks every `[[service]]` (its `health` profile and endpoint `region`s are checked against
/// `[health]` and `[regions]` in `check.rs`).
pub fn check(services: &[Spanned<ServiceConfig>], cx: &Cx, out: &mut Vec<Problem>) {
    let mut seen_services = std::collections::HashSet::new();
    for svc in services {
        let s = svc.get_ref();
        let key = service_key(s.name.get_ref());
        // RFC 2181 §8: a TTL above 2^31 - 1 is read as 0 by resolvers.
        for (k, v) in [("ttl", Some(s.ttl)), ("ttl_degraded", s.ttl_degraded)] {
            if v.is_some_and(|v| v > MAX_TTL) {
                out.push(cx.at(
                    svc.span(),
                    format!("{key}.{k}: must be at most {MAX_TTL} (2^31 - 1, RFC 2181)"),
                ));
            }
        }
        if let Some(d) = s.ttl_degraded.filter(|&d| d > s.ttl) {
            out.push(cx.at(
                svc.span(),
                format!(
                    "{key}.ttl_degraded: {d} is above ttl {}; the TTL while answering around a \
                     failure is meant to be shorter",
                    s.ttl
                ),
            ));
        }
        let lname = s.name.get_ref().trim_end_matches('.').to_ascii_lowercase();
        if !seen_services.insert(lname) {
            out.push(cx.at(
                s.name.span(),
                format!("{key}.name: `{}` is defined twice", s.name.get_ref()),
            ));
        }
        if let Some(policy) = &s.policy {
            if !POLICIES.contains(&policy.get_ref().as_str()) {
                out.push(cx.at(
                    policy.span(),
                    format!(
                        "{key}.policy: `{}` is not one of {}",
                        policy.get_ref(),
                        POLICIES.join(", ")
                    ),
                ));
            }
        }
        if *s.max_answers.get_ref() == 0 {
            out.push(cx.at(
                s.max_answers.span(),
                format!("{key}.max_answers: must be at least 1"),
            ));
        }
        if let Some(w) = &s.when_all_down {
            if !["serve-all", "empty", "servfail"].contains(&w.get_ref().as_str()) {
                out.push(cx.at(
                    w.span(),
                    format!(
                        "{key}.when_all_down: `{}` is not one of serve-all, empty, servfail",
                        w.get_ref()
                    ),
                ));
            }
        }
        if let Some(sp) = &s.spill {
            let v = sp.get_ref().as_str();
            // With tiers, `spill` applies to the geo tiers.
            let geo = s.policy.as_ref().is_some_and(|p| p.get_ref() == "geo")
                || s.tier.iter().any(|t| t.get_ref().policy.get_ref() == "geo");
            if !SPILLS.contains(&v) {
                out.push(cx.at(
                    sp.span(),
                    format!("{key}.spill: `{v}` is not one of {}", SPILLS.join(", ")),
                ));
            } else if v == "capacity" && !geo {
                out.push(cx.at(
                    sp.span(),
                    format!(
                        "{key}.spill: `capacity` applies to the geo policy only (this service is `{}`)",
                        s.policy.as_ref().map_or("tiered without geo", |p| p.get_ref().as_str())
                    ),
                ));
            }
        }
        // Inline endpoints: the service's own and its tiers'. Pools' endpoints are checked
        // once per pool (`config::pool`), and what ties them to the service there too.
        let lists = s
            .endpoints
            .iter()
            .map(|l| (format!("{key}.endpoints"), l))
            .chain(s.tier.iter().enumerate().filter_map(|(i, t)| {
                t.get_ref()
                    .endpoints
                    .as_ref()
                    .map(|l| (format!("{key}.tier[{i}].endpoints"), l))
            }));
        let mut seen = std::collections::HashSet::new();
        let mut seen_targets = std::collections::HashSet::new();
        // The kind of the first endpoint (true = target); a service answers one kind only.
        let mut kind: Option<bool> = None;
        for (list_key, list) in lists {
            for (j, ep) in list.get_ref().iter().enumerate() {
                let e = ep.get_ref();
                let ekey = format!("{list_key}[{j}]");
                check_endpoint(ep, &ekey, cx, out);
                if let (Some(a), None) | (None, Some(a)) = (&e.address, &e.target) {
                    let is_target = e.target.is_some();
                    match kind {
                        None => kind = Some(is_target),
                        Some(k) if k != is_target => out.push(cx.at(
                            a.span(),
                            format!(
                                "{list_key}: a service has `address` endpoints or `target` endpoints, not both (endpoint {j} is the first `{}`)",
                                if is_target { "target" } else { "address" }
                            ),
                        )),
                        Some(_) => {}
                    }
                }
                if let Some(t) = &e.target {
                    let name = t.get_ref();
                    let lower = name.trim_end_matches('.').to_ascii_lowercase();
                    if check_target_name(name).is_err() {
                        // Reported by `check_endpoint`.
                    } else if lower == s.name.get_ref().trim_end_matches('.').to_ascii_lowercase() {
                        out.push(cx.at(
                            t.span(),
                            format!("{ekey}.target: `{name}` is the service's own name: the CNAME would point at itself (a loop)"),
                        ));
                    } else if !seen_targets.insert(lower) {
                        out.push(
                            cx.at(t.span(), format!("{ekey}.target: `{name}` is listed twice")),
                        );
                    }
                }
                if let Some(a) = e
                    .address
                    .as_ref()
                    .and_then(|a| a.get_ref().parse::<IpAddr>().ok())
                {
                    if !seen.insert(a) {
                        out.push(cx.at(
                            e.address.as_ref().map_or(ep.span(), |a| a.span()),
                            format!("{ekey}.address: `{a}` is listed twice"),
                        ));
                    }
                }
                // The geo policy's need of a region, and a region that must exist: in
                // `config::pool` and `check.rs`, with pooled endpoints.
            }
        }
    }
}

/// The checks of one endpoint that need nothing else (inline or in a pool): `address` or
/// `target` (one of them, well formed), `weight`, `check`.
pub fn check_endpoint(ep: &Spanned<EndpointConfig>, ekey: &str, cx: &Cx, out: &mut Vec<Problem>) {
    let e = ep.get_ref();
    match (&e.address, &e.target) {
        (Some(_), Some(t)) => out.push(cx.at(
            t.span(),
            format!("{ekey}: an endpoint has either `address` or `target`, not both"),
        )),
        (None, None) => out.push(cx.at(
            ep.span(),
            format!("{ekey}: an endpoint needs `address` or `target`"),
        )),
        _ => {}
    }
    if let Some(t) = &e.target {
        let name = t.get_ref();
        if let Err(why) = check_target_name(name) {
            out.push(cx.at(
                t.span(),
                format!("{ekey}.target: `{name}` is not a valid domain name: {why}"),
            ));
        }
    }
    if let Some(addr) = &e.address {
        if addr.get_ref().parse::<IpAddr>().is_err() {
            out.push(cx.at(
                addr.span(),
                format!(
                    "{ekey}.address: `{}` is not an IPv4 or IPv6 address",
                    addr.get_ref()
                ),
            ));
        }
    }
    if let Some(w) = &e.weight {
        let v = *w.get_ref();
        if !(v.is_finite() && v > 0.0) {
            out.push(cx.at(
                w.span(),
                format!("{ekey}.weight: must be a positive number"),
            ));
        }
    }
    if let Some(c) = &e.capacity {
        if !(c.get_ref().is_finite() && *c.get_ref() > 0.0) {
            out.push(cx.at(
                c.span(),
                format!("{ekey}.capacity: must be a positive number"),
            ));
        }
    }
    if let Some(chk) = &e.check {
        let u = chk.get_ref();
        if !(u.starts_with("http://") || u.starts_with("https://") || u.starts_with("tcp://")) {
            out.push(cx.at(
                chk.span(),
                format!("{ekey}.check: `{u}` must start with http://, https:// or tcp://"),
            ));
        }
    }
}

/// A `target` must be a host name that resolvers and the system resolver both accept:
/// letters, digits, `-` and `_` in labels of 1 to 63 bytes, at most 253 bytes in all.
fn check_target_name(name: &str) -> Result<(), String> {
    let body = name.strip_suffix('.').unwrap_or(name);
    if body.is_empty() {
        return Err("it is empty".into());
    }
    if body.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    for label in body.split('.') {
        if label.is_empty() {
            return Err("it has an empty label".into());
        }
        if label.len() > 63 {
            return Err(format!("label `{label}` is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("`{c}` is not allowed in a host name"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label `{label}` starts or ends with `-`"));
        }
    }
    Ok(())
}
