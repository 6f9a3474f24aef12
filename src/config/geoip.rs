//! `[geoip]`: the GeoIP database files and the networks placed by hand (`networks`).

use serde::Deserialize;
use serde_spanned::Spanned;

use super::{check_location, is_country_code, parse_cidr, Cx, Location, Problem};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoipConfig {
    /// One file or a list of files (e.g. separate IPv4 and IPv6 databases), as written.
    pub database: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub networks: Vec<Spanned<NetworkOverride>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkOverride {
    pub cidr: Spanned<String>,
    pub region: Option<Spanned<String>>,
    pub location: Option<Location>,
    pub country: Option<Spanned<String>>,
}

/// `[geoip] database` as file names: a string or an array of strings.
pub(super) fn database_list(v: &toml::Value) -> Option<Vec<String>> {
    match v {
        toml::Value::String(s) => Some(vec![s.clone()]),
        toml::Value::Array(a) => a.iter().map(|x| x.as_str().map(str::to_string)).collect(),
        _ => None,
    }
}

/// Checks `[geoip]` (a network's `region` is checked against `[regions]` in `check.rs`).
pub fn check(geoip: &GeoipConfig, cx: &Cx, out: &mut Vec<Problem>) {
    if let Some(db) = &geoip.database {
        match database_list(db.get_ref()) {
            Some(list) if !list.is_empty() => {
                for path in list.iter().map(|f| cx.resolve(f)) {
                    if !path.is_file() {
                        out.push(cx.at(
                            db.span(),
                            format!("geoip.database: `{}` does not exist", path.display()),
                        ));
                    }
                }
            }
            _ => out.push(cx.at(
                db.span(),
                "geoip.database: expected a file name or a non-empty list of file names",
            )),
        }
    }
    for (i, n) in geoip.networks.iter().enumerate() {
        let key = format!("geoip.networks[{i}]");
        let net = n.get_ref();
        if parse_cidr(net.cidr.get_ref()).is_none() {
            out.push(cx.at(
                net.cidr.span(),
                format!(
                    "{key}.cidr: `{}` is not a network (e.g. \"10.0.0.0/8\")",
                    net.cidr.get_ref()
                ),
            ));
        }
        let targets =
            net.region.is_some() as u8 + net.location.is_some() as u8 + net.country.is_some() as u8;
        if targets != 1 {
            out.push(cx.at(
                n.span(),
                format!("{key}: give exactly one of region, location or country"),
            ));
        }
        if let Some(loc) = &net.location {
            check_location(loc, &format!("{key}.location"), n.span(), cx, out);
        }
        if let Some(cc) = &net.country {
            if !is_country_code(cc.get_ref()) {
                out.push(cx.at(
                    cc.span(),
                    format!(
                        "{key}.country: `{}` is not an ISO 3166-1 alpha-2 code",
                        cc.get_ref()
                    ),
                ));
            }
        }
    }
}
