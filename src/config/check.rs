//! The one pass over every section of a config that read ([`check`], run by `load.rs`), the
//! checks that tie one section to another, and [`warnings`]. Each section's own check is in its
//! file (the convention is in `mod.rs`); this file only calls them and keeps what they return.

use super::service::service_key;
use super::{
    admin, anycast, dnssec, fleet, geoip, health, log, pool, prober, regions, rrl, secondary,
    server, service, site, xdp, Cx, LoadedConfig, Problem,
};

/// The checks that need nothing but the config itself; fills in `lc`'s checked settings.
pub(super) fn check(lc: &mut LoadedConfig, out: &mut Vec<Problem>) {
    let c = lc.config.clone();
    let (path, text) = (lc.path.clone(), lc.text.clone());
    let cx = Cx::new(&path, &text);

    let s = server::check(&c.server, &cx, &lc.zones_dir, out);
    lc.listen = s.listen;
    lc.tcp_idle_timeout = s.tcp_idle_timeout;
    lc.cookie_secret = s.cookie_secret;
    for (span, msg) in xdp::problems(&c.server.xdp) {
        out.push(cx.at(span, msg));
    }
    if let Some(r) = &c.rrl {
        lc.rrl = rrl::check(r.get_ref(), &cx, out);
    }
    if let Some(s) = &c.site {
        site::check(s, &cx, out);
    }
    if let Some(g) = &c.geoip {
        geoip::check(g, &cx, out);
    }
    if let Some(a) = &c.admin {
        admin::check(a, &cx, out);
    }
    if let Some(l) = &c.log {
        log::check(l, &cx, out);
    }
    if let Some(p) = &c.prober {
        prober::check(p, &cx, out);
    }
    health::check(&c.health, &cx, out);
    regions::check(&c.regions, &cx, out);
    if let Some(a) = &c.anycast {
        lc.anycast = anycast::check(a, &cx, out);
    }
    if let Some(f) = &c.fleet {
        let site = c.site.as_ref().and_then(|s| s.id.as_ref());
        lc.fleet = fleet::check(f, &cx, site.map(|s| s.get_ref().as_str()), out);
    }
    secondary::check(&c.secondary, &cx, out);
    dnssec::check(&c.dnssec, &cx, out);
    service::check(&c.service, &cx, out);
    pool::check(&c.pool, &cx, out);
    for svc in &c.service {
        pool::check_service(&c, svc.get_ref(), svc.span(), &cx, out);
    }
    references(&c, &cx, out);
}

/// Names one section gives that another must define: a service's `health` profile and its
/// endpoints' `region`s, a GeoIP network's `region`.
fn references(c: &super::Config, cx: &Cx, out: &mut Vec<Problem>) {
    for (i, n) in c.geoip.iter().flat_map(|g| g.networks.iter()).enumerate() {
        if let Some(r) = &n.get_ref().region {
            if !c.regions.contains_key(r.get_ref()) {
                out.push(cx.at(
                    r.span(),
                    format!(
                        "geoip.networks[{i}].region: no region `{}` is defined",
                        r.get_ref()
                    ),
                ));
            }
        }
    }
    let region = |r: &serde_spanned::Spanned<String>, key: String, out: &mut Vec<Problem>| {
        if !c.regions.contains_key(r.get_ref()) {
            out.push(cx.at(
                r.span(),
                format!("{key}.region: no region `{}` is defined", r.get_ref()),
            ));
        }
    };
    for (name, p) in &c.pool {
        let p = p.get_ref();
        let key = format!("pool.{name}");
        match (&p.health, &p.health_min) {
            (Some(h), m) => health::check_ref(h, m.as_ref(), &c.health, &key, cx, out),
            (None, Some(m)) => health::check_min_alone(m, &key, cx, out),
            (None, None) => {}
        }
        if let Some(r) = &p.region {
            region(r, key.clone(), out);
        }
        for (j, ep) in p.endpoints.get_ref().iter().enumerate() {
            if let Some(r) = &ep.get_ref().region {
                region(r, format!("{key}.endpoints[{j}]"), out);
            }
        }
    }
    for svc in &c.service {
        let s = svc.get_ref();
        let key = service_key(s.name.get_ref());
        match (&s.health, &s.health_min) {
            (Some(h), m) => health::check_ref(h, m.as_ref(), &c.health, &key, cx, out),
            (None, Some(m)) => health::check_min_alone(m, &key, cx, out),
            (None, None) => {}
        }
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
        for (list_key, list) in lists {
            for (j, ep) in list.get_ref().iter().enumerate() {
                if let Some(r) = &ep.get_ref().region {
                    region(r, format!("{list_key}[{j}]"), out);
                }
            }
        }
    }
}

/// Things in a config that load but will not do what the operator likely means (SPEC "Day
/// two"): `check` prints them and still exits 0.
pub fn warnings(lc: &LoadedConfig) -> Vec<Problem> {
    let c = &lc.config;
    let mut out = Vec::new();
    for svc in &c.service {
        let s = svc.get_ref();
        if s.health.is_some() {
            continue;
        }
        let lay = pool::layout(c, s);
        let checked: Vec<_> = lay
            .members()
            .filter(|m| m.pool.is_none() && m.endpoint.get_ref().check.is_some())
            .collect();
        if let Some(first) = checked.first() {
            out.push(lc.problem_at(
                first.endpoint.span(),
                format!(
                    "warning: {}: {} endpoint(s) have a `check` URL but the service has no \
                     `health` profile, so they are never probed (always up)",
                    service_key(s.name.get_ref()),
                    checked.len()
                ),
            ));
        }
    }
    for (name, p) in &c.pool {
        let p = p.get_ref();
        let checked = p
            .endpoints
            .get_ref()
            .iter()
            .filter(|e| e.get_ref().check.is_some());
        if let (None, Some(first)) = (&p.health, checked.clone().next()) {
            out.push(lc.problem_at(
                first.span(),
                format!(
                    "warning: pool.{name}: {} endpoint(s) have a `check` URL but the pool has \
                     no `health` profile, so they are never probed (always up)",
                    checked.count()
                ),
            ));
        }
    }
    for (name, span) in pool::unused(c) {
        out.push(lc.problem_at(
            span,
            format!(
                "warning: pool.{name}: no service uses this pool (its endpoints are neither \
                 answered nor probed)"
            ),
        ));
    }
    for (name, profile) in &c.health {
        let named = |h: &Option<serde_spanned::Spanned<health::HealthRef>>| {
            h.as_ref()
                .is_some_and(|h| h.get_ref().names().contains(name))
        };
        let used = c.service.iter().any(|s| named(&s.get_ref().health))
            || c.pool.values().any(|p| named(&p.get_ref().health));
        if !used {
            out.push(lc.problem_at(
                profile.span(),
                format!("warning: health.{name}: no service uses this profile"),
            ));
        }
    }
    for (span, msg) in xdp::warnings(&c.server.xdp) {
        out.push(lc.problem_at(span, msg));
    }
    out
}
