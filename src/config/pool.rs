//! `[pool.NAME]` (endpoints that services share), a service's `pools`, its `[[service.tier]]`s
//! and `fallback` addresses (SPEC "Pools, several monitors, tiers").
//!
//! A pool's endpoints are the same [`EndpointConfig`] as a service's inline ones, so every key
//! an endpoint has works in both. What a service answers with is resolved once, here, by
//! [`layout`]: the tiers it tries in order (a service without tiers is one tier of its own
//! policy, inline endpoints and pools), each tier's [`Member`]s with the region and health
//! profile that apply to them (a pool's own for its endpoints, the service's for inline ones),
//! and the fallback addresses. The checks and the snapshot build both read that one resolution.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_spanned::Spanned;

use super::health::HealthRef;
use super::service::{service_key, EndpointConfig, ServiceConfig};
use super::{Config, Cx, Problem};

/// `[pool.NAME]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// The region of its endpoints that do not name their own.
    pub region: Option<Spanned<String>>,
    /// The health profiles of its endpoints (one or a list, as a service's `health`).
    pub health: Option<Spanned<HealthRef>>,
    /// Up when at least this many of its profiles pass (default: all of them).
    pub health_min: Option<Spanned<u32>>,
    pub endpoints: Spanned<Vec<Spanned<EndpointConfig>>>,
}

/// `[[service.tier]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    pub policy: Spanned<String>,
    pub pools: Option<Spanned<Vec<Spanned<String>>>>,
    pub endpoints: Option<Spanned<Vec<Spanned<EndpointConfig>>>>,
    /// The tier answers while at least this many of its endpoints are eligible (default 1).
    pub min_up: Option<Spanned<usize>>,
}

/// `min_up` when a tier does not say.
pub const DEFAULT_MIN_UP: usize = 1;

/// One endpoint a service (or one of its tiers) answers with, from its inline `endpoints` or
/// from a pool, with what applies to it.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    pub endpoint: &'a Spanned<EndpointConfig>,
    /// Its own `region`, else its pool's.
    pub region: Option<&'a Spanned<String>>,
    /// The pool it comes from; `None` for an inline endpoint.
    pub pool: Option<&'a str>,
    /// Its index in the list it was written in (the pool's or the inline list).
    pub index: usize,
    /// The health profiles that apply: its pool's, or the service's for an inline endpoint.
    pub health: Option<&'a Spanned<HealthRef>>,
    /// The `health_min` beside them.
    pub health_min: Option<&'a Spanned<u32>>,
}

impl Member<'_> {
    /// How problems name it: `pool.web.endpoints[2]`, `service "x".endpoints[0]`,
    /// `service "x".tier[1].endpoints[0]`.
    pub fn key(&self, list_key: &str) -> String {
        match self.pool {
            Some(p) => format!("pool.{p}.endpoints[{}]", self.index),
            None => format!("{list_key}[{}]", self.index),
        }
    }
}

/// One tier of a service as resolved: a service without `[[service.tier]]` is one tier.
#[derive(Debug, Clone)]
pub struct TierLayout<'a> {
    /// `None` when the service (without tiers) has no `policy`, an error already reported.
    pub policy: Option<&'a Spanned<String>>,
    pub min_up: usize,
    /// The pools it names that exist, in order.
    pub pools: Vec<&'a str>,
    pub members: Vec<Member<'a>>,
    /// How its inline endpoints are named in problems (`service "x".endpoints`).
    pub list_key: String,
}

/// What a service answers with, resolved ([`layout`]).
#[derive(Debug, Clone)]
pub struct Layout<'a> {
    pub tiers: Vec<TierLayout<'a>>,
    /// Whether the service wrote `[[service.tier]]`s (else `tiers` holds the one of its own).
    pub tiered: bool,
    pub fallback: Vec<&'a Spanned<String>>,
}

impl<'a> Layout<'a> {
    /// Every member of every tier, in tier order.
    pub fn members(&self) -> impl Iterator<Item = &Member<'a>> {
        self.tiers.iter().flat_map(|t| t.members.iter())
    }
}

/// Resolves what `s` answers with under the pools of `c`. Pools that do not exist are left
/// out (the check reports them).
pub fn layout<'a>(c: &'a Config, s: &'a ServiceConfig) -> Layout<'a> {
    let key = service_key(s.name.get_ref());
    let fallback = s
        .fallback
        .as_ref()
        .map(|f| f.get_ref().iter().collect())
        .unwrap_or_default();
    if s.tier.is_empty() {
        let tier = tier_layout(
            c,
            s.policy.as_ref(),
            DEFAULT_MIN_UP,
            s.pools.as_ref(),
            s.endpoints.as_ref(),
            (s.health.as_ref(), s.health_min.as_ref()),
            format!("{key}.endpoints"),
        );
        return Layout {
            tiers: vec![tier],
            tiered: false,
            fallback,
        };
    }
    let tiers = s
        .tier
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let t = t.get_ref();
            tier_layout(
                c,
                Some(&t.policy),
                t.min_up.as_ref().map_or(DEFAULT_MIN_UP, |m| *m.get_ref()),
                t.pools.as_ref(),
                t.endpoints.as_ref(),
                (s.health.as_ref(), s.health_min.as_ref()),
                format!("{key}.tier[{i}].endpoints"),
            )
        })
        .collect();
    Layout {
        tiers,
        tiered: true,
        fallback,
    }
}

/// A service's `health` and `health_min`, which apply to its inline endpoints.
type Checks<'a> = (Option<&'a Spanned<HealthRef>>, Option<&'a Spanned<u32>>);

fn tier_layout<'a>(
    c: &'a Config,
    policy: Option<&'a Spanned<String>>,
    min_up: usize,
    pools: Option<&'a Spanned<Vec<Spanned<String>>>>,
    endpoints: Option<&'a Spanned<Vec<Spanned<EndpointConfig>>>>,
    (health, health_min): Checks<'a>,
    list_key: String,
) -> TierLayout<'a> {
    let mut members: Vec<Member<'a>> = endpoints
        .map(|e| e.get_ref().as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(index, ep)| Member {
            endpoint: ep,
            region: ep.get_ref().region.as_ref(),
            pool: None,
            index,
            health,
            health_min,
        })
        .collect();
    let mut names = Vec::new();
    for name in pools.map(|p| p.get_ref().as_slice()).unwrap_or_default() {
        let Some((pname, pool)) = c.pool.get_key_value(name.get_ref()) else {
            continue;
        };
        if names.contains(&pname.as_str()) {
            continue; // named twice: reported by the check, answered once
        }
        let p = pool.get_ref();
        names.push(pname.as_str());
        members.extend(
            p.endpoints
                .get_ref()
                .iter()
                .enumerate()
                .map(|(index, ep)| Member {
                    endpoint: ep,
                    region: ep.get_ref().region.as_ref().or(p.region.as_ref()),
                    pool: Some(pname.as_str()),
                    index,
                    health: p.health.as_ref(),
                    health_min: p.health_min.as_ref(),
                }),
        );
    }
    TierLayout {
        policy,
        min_up,
        pools: names,
        members,
        list_key,
    }
}

/// Checks every `[pool.NAME]` on its own: its endpoints (as a service's inline ones),
/// References (its region, its profiles, `health_min`) are checked in
/// `check.rs`; whether a service uses it in [`unused`].
pub fn check(pools: &BTreeMap<String, Spanned<PoolConfig>>, cx: &Cx, out: &mut Vec<Problem>) {
    for (name, pool) in pools {
        let p = pool.get_ref();
        let key = format!("pool.{name}");
        if p.endpoints.get_ref().is_empty() {
            out.push(cx.at(
                p.endpoints.span(),
                format!("{key}.endpoints: a pool needs at least one endpoint"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (j, ep) in p.endpoints.get_ref().iter().enumerate() {
            let ekey = format!("{key}.endpoints[{j}]");
            super::service::check_endpoint(ep, &ekey, cx, out);
            let e = ep.get_ref();
            let id = e
                .address
                .as_ref()
                .map(|a| a.get_ref().trim().to_string())
                .or_else(|| e.target.as_ref().map(|t| t.get_ref().to_ascii_lowercase()));
            if let Some(id) = id {
                if !seen.insert(id.clone()) {
                    out.push(cx.at(ep.span(), format!("{ekey}: `{id}` is listed twice")));
                }
            }
        }
    }
}

/// The checks of a service's `pools`, `[[service.tier]]`s and `fallback` that need the pools:
/// unknown pools, a pool named twice, tiers beside the service's own `endpoints`/`pools`/
/// `policy`, `min_up` above what a tier has, fallback addresses.
pub fn check_service(
    c: &Config,
    s: &ServiceConfig,
    span: std::ops::Range<usize>,
    cx: &Cx,
    out: &mut Vec<Problem>,
) {
    let key = service_key(s.name.get_ref());
    let check_pools =
        |pools: Option<&Spanned<Vec<Spanned<String>>>>, pkey: &str, out: &mut Vec<Problem>| {
            let mut seen = std::collections::HashSet::new();
            for (i, name) in pools
                .map(|p| p.get_ref().as_slice())
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                let n = name.get_ref();
                if !c.pool.contains_key(n) {
                    let known: Vec<&str> = c.pool.keys().map(String::as_str).collect();
                    out.push(cx.at(
                        name.span(),
                        format!(
                            "{pkey}[{i}]: no pool `{n}` is defined{}",
                            if known.is_empty() {
                                " (there is no [pool.NAME] table)".to_string()
                            } else {
                                format!(" (pools: {})", known.join(", "))
                            }
                        ),
                    ));
                } else if !seen.insert(n.as_str()) {
                    out.push(cx.at(
                        name.span(),
                        format!("{pkey}[{i}]: pool `{n}` is named twice"),
                    ));
                }
            }
        };
    if s.tier.is_empty() {
        check_pools(s.pools.as_ref(), &format!("{key}.pools"), out);
        if s.policy.is_none() {
            out.push(cx.at(
                span.clone(),
                format!(
                    "{key}.policy: missing: give the service a `policy` (one of {}), or \
                     `[[service.tier]]`s with theirs",
                    super::POLICIES.join(", ")
                ),
            ));
        }
        let inline = s
            .endpoints
            .as_ref()
            .is_some_and(|e| !e.get_ref().is_empty());
        let pooled = s.pools.as_ref().is_some_and(|p| !p.get_ref().is_empty());
        if !inline && !pooled {
            let at = s
                .endpoints
                .as_ref()
                .map(|e| e.span())
                .or_else(|| s.pools.as_ref().map(|p| p.span()))
                .unwrap_or(span.clone());
            out.push(cx.at(
                at,
                format!("{key}.endpoints: at least one endpoint is needed (inline `endpoints`, `pools`, or `[[service.tier]]`s)"),
            ));
        }
    } else {
        // A tiered service lists what it answers with in its tiers: one place to look.
        for (what, at) in [
            ("endpoints", s.endpoints.as_ref().map(|e| e.span())),
            ("pools", s.pools.as_ref().map(|p| p.span())),
            ("policy", s.policy.as_ref().map(|p| p.span())),
        ] {
            if let Some(at) = at {
                out.push(cx.at(
                    at,
                    format!(
                        "{key}.{what}: a service with `[[service.tier]]`s sets `{what}` in each \
                         tier, not on the service"
                    ),
                ));
            }
        }
        for (i, t) in s.tier.iter().enumerate() {
            let tkey = format!("{key}.tier[{i}]");
            let tc = t.get_ref();
            check_pools(tc.pools.as_ref(), &format!("{tkey}.pools"), out);
            if !super::POLICIES.contains(&tc.policy.get_ref().as_str()) {
                out.push(cx.at(
                    tc.policy.span(),
                    format!(
                        "{tkey}.policy: `{}` is not one of {}",
                        tc.policy.get_ref(),
                        super::POLICIES.join(", ")
                    ),
                ));
            }
        }
    }
    let lay = layout(c, s);
    for (i, t) in lay.tiers.iter().enumerate() {
        let tkey = if lay.tiered {
            format!("{key}.tier[{i}]")
        } else {
            key.clone()
        };
        let tspan = if lay.tiered {
            s.tier[i].span()
        } else {
            span.clone()
        };
        if lay.tiered && t.members.is_empty() {
            out.push(cx.at(
                tspan.clone(),
                format!("{tkey}: a tier needs at least one endpoint (`endpoints` or `pools`)"),
            ));
        }
        if lay.tiered {
            if let Some(m) = &s.tier[i].get_ref().min_up {
                let v = *m.get_ref();
                if v == 0 {
                    out.push(cx.at(m.span(), format!("{tkey}.min_up: must be at least 1")));
                } else if !t.members.is_empty() && v > t.members.len() {
                    out.push(cx.at(
                        m.span(),
                        format!(
                            "{tkey}.min_up: {v} is more than the tier's {} endpoint(s): it \
                             could never answer",
                            t.members.len()
                        ),
                    ));
                }
            }
        }
        if t.policy.is_some_and(|p| p.get_ref() == "geo") {
            for m in t.members.iter().filter(|m| m.region.is_none()) {
                out.push(cx.at(
                    m.endpoint.span(),
                    format!(
                        "{}.region: the geo policy needs a region for every endpoint{}",
                        m.key(&t.list_key),
                        match m.pool {
                            Some(p) => format!(" (or `region` on pool.{p}; used by {tkey})"),
                            None => String::new(),
                        }
                    ),
                ));
            }
        }
    }
    // One address is one endpoint of a service: twice (inline and in a pool, in two pools, in
    // two tiers) would answer it twice and count it twice.
    let mut seen: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for t in &lay.tiers {
        for m in &t.members {
            let e = m.endpoint.get_ref();
            let id = e
                .address
                .as_ref()
                .and_then(|a| {
                    a.get_ref()
                        .parse::<std::net::IpAddr>()
                        .ok()
                        .map(|a| a.to_string())
                })
                .or_else(|| {
                    e.target
                        .as_ref()
                        .map(|t| t.get_ref().trim_end_matches('.').to_ascii_lowercase())
                });
            let Some(id) = id else { continue };
            let here = m.key(&t.list_key);
            match seen.get(&id) {
                // Inline duplicates are reported by the service's own check.
                Some(first) if m.pool.is_some() || first.starts_with("pool.") => {
                    out.push(cx.at(
                        m.endpoint.span(),
                        format!(
                            "{here}: `{id}` is already an endpoint of {key} (as {first}); an \
                             address is one endpoint of a service"
                        ),
                    ));
                }
                Some(_) => {}
                None => {
                    seen.insert(id, here);
                }
            }
        }
    }
    // A service answers with `address` endpoints or `target` endpoints, not both.
    let mut kinds = lay.members().filter_map(|m| {
        let e = m.endpoint.get_ref();
        match (&e.address, &e.target) {
            (Some(_), None) => Some((false, m)),
            (None, Some(_)) => Some((true, m)),
            _ => None,
        }
    });
    if let Some((first, _)) = kinds.next() {
        if let Some((_, m)) = kinds.find(|(k, m)| *k != first && m.pool.is_some()) {
            out.push(cx.at(
                m.endpoint.span(),
                format!(
                    "{key}: a service has `address` endpoints or `target` endpoints, not both \
                     (pool.{} brings `{}` endpoints)",
                    m.pool.unwrap_or_default(),
                    if first { "address" } else { "target" }
                ),
            ));
        }
    }
    if let Some(f) = &s.fallback {
        let fkey = format!("{key}.fallback");
        if f.get_ref().is_empty() {
            out.push(cx.at(
                f.span(),
                format!("{fkey}: list at least one address, or leave it out"),
            ));
        }
        if lay.members().any(|m| m.endpoint.get_ref().target.is_some()) {
            out.push(cx.at(
                f.span(),
                format!("{fkey}: a service of `target` endpoints cannot fall back to addresses"),
            ));
        }
        let mut fseen = std::collections::HashSet::new();
        for (i, a) in f.get_ref().iter().enumerate() {
            match a.get_ref().trim().parse::<std::net::IpAddr>() {
                Err(_) => out.push(cx.at(
                    a.span(),
                    format!(
                        "{fkey}[{i}]: `{}` is not an IPv4 or IPv6 address",
                        a.get_ref()
                    ),
                )),
                Ok(ip) => {
                    if !fseen.insert(ip) {
                        out.push(cx.at(a.span(), format!("{fkey}[{i}]: `{ip}` is listed twice")));
                    } else if let Some(first) = seen.get(&ip.to_string()) {
                        out.push(cx.at(
                            a.span(),
                            format!(
                                "{fkey}[{i}]: `{ip}` is already an endpoint of the service (as \
                                 {first}); a fallback address is answered only when no tier can"
                            ),
                        ));
                    }
                }
            }
        }
    }
}

/// `[pool.NAME]`s that no service (nor tier) names: loaded, never answered nor probed.
pub fn unused(c: &Config) -> Vec<(&str, std::ops::Range<usize>)> {
    let named = |n: &str| {
        c.service.iter().any(|s| {
            let s = s.get_ref();
            let has = |p: Option<&Spanned<Vec<Spanned<String>>>>| {
                p.is_some_and(|p| p.get_ref().iter().any(|x| x.get_ref() == n))
            };
            has(s.pools.as_ref()) || s.tier.iter().any(|t| has(t.get_ref().pools.as_ref()))
        })
    };
    c.pool
        .iter()
        .filter(|(n, _)| !named(n))
        .map(|(n, p)| (n.as_str(), p.span()))
        .collect()
}
