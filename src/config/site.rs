//! `[site]`: this server's id (NSID, `id.server`, the fleet's site) and location.

use serde::Deserialize;
use serde_spanned::Spanned;

use super::{check_location, Cx, Location, Problem};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub id: Option<Spanned<String>>,
    pub location: Option<Spanned<Location>>,
}

/// Checks `[site]`.
pub fn check(site: &SiteConfig, cx: &Cx, out: &mut Vec<Problem>) {
    if let Some(id) = &site.id {
        if id.get_ref().is_empty() || id.get_ref().len() > 255 {
            out.push(cx.at(id.span(), "site.id: must be 1 to 255 bytes long"));
        }
    }
    if let Some(loc) = &site.location {
        check_location(loc.get_ref(), "site.location", loc.span(), cx, out);
    }
}
