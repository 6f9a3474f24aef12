//! `[regions.NAME]`: where a region is (location, countries, continents).

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
}

/// Checks every `[regions.NAME]`.
pub fn check(regions: &BTreeMap<String, Spanned<RegionConfig>>, cx: &Cx, out: &mut Vec<Problem>) {
    for (name, region) in regions {
        let key = format!("regions.{name}");
        let r = region.get_ref();
        if let Some(loc) = &r.location {
            check_location(loc, &format!("{key}.location"), region.span(), cx, out);
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
