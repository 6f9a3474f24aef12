//! `[regions.NAME]`: where a region is (location, countries, continents) and its geo `bias`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_spanned::Spanned;

use super::{check_location, is_country_code, Cx, Location, Problem};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    pub location: Option<Location>,
    #[serde(default)]
    pub countries: Vec<Spanned<String>>,
    #[serde(default)]
    pub continents: Vec<Spanned<String>>,
    /// −99…99: geo distance to the region counts as `distance × (1 − bias/100)`, growing
    /// (positive) or shrinking (negative) the area it wins (Route 53 geoproximity bias).
    pub bias: Option<Spanned<i64>>,
}

/// The largest `bias` either way: at ±100 a region would win (or lose) every client.
pub const MAX_BIAS: i64 = 99;

/// Checks every `[regions.NAME]`.
pub fn check(regions: &BTreeMap<String, Spanned<RegionConfig>>, cx: &Cx, out: &mut Vec<Problem>) {
    for (name, region) in regions {
        let key = format!("regions.{name}");
        let r = region.get_ref();
        if let Some(loc) = &r.location {
            check_location(loc, &format!("{key}.location"), region.span(), cx, out);
        }
        if let Some(b) = &r.bias {
            if b.get_ref().abs() > MAX_BIAS {
                out.push(cx.at(
                    b.span(),
                    format!(
                        "{key}.bias: {} is outside -{MAX_BIAS}…{MAX_BIAS}",
                        b.get_ref()
                    ),
                ));
            }
        }
        for cc in &r.countries {
            if !is_country_code(cc.get_ref()) {
                out.push(cx.at(
                    cc.span(),
                    format!(
                        "{key}.countries: `{}` is not an ISO 3166-1 alpha-2 code",
                        cc.get_ref()
                    ),
                ));
            }
        }
        for ct in &r.continents {
            if !["AF", "AN", "AS", "EU", "NA", "OC", "SA"].contains(&ct.get_ref().as_str()) {
                out.push(cx.at(
                    ct.span(),
                    format!(
                        "{key}.continents: `{}` is not one of AF AN AS EU NA OC SA",
                        ct.get_ref()
                    ),
                ));
            }
        }
    }
}
