//! `geo`: a region that `countries` / `continents` map the client to wins; otherwise the region
//! nearest by great-circle distance. Only regions with an eligible endpoint compete, so when a
//! region has none the next nearest takes over. Within the region, weighted.
//!
//! The choice is made among the service's regions (grouped with the snapshot), not its
//! endpoints: a distance per region, whatever the number of endpoints in it.

use super::{index::weighted_top, Ctx};
use crate::geo::{code_str, distance_km, Code, LocatedBy};

/// Why a region was chosen; made into words only for `explain`.
pub(super) enum Why {
    Override,
    Country(Code),
    Continent(Code),
    Nearest(f64),
}

/// The region the client goes to, as an index into `ctx.fam.regions`, with the reason; `None`
/// when nothing places the client. Also returns the client's coordinates (if any) and the
/// prefix that decided.
fn locate_and_choose(
    ctx: &mut Ctx<'_, '_>,
) -> (
    Option<(usize, Why)>,
    Option<crate::geo::Coords>,
    LocatedBy,
    u8,
) {
    let regions = ctx.regions;
    let (fam, ok) = (ctx.fam, ctx.ok);
    let loc = ctx.client.location();
    let override_r = loc
        .region
        .as_ref()
        .and_then(|name| regions.iter().position(|x| &x.name == name));
    // A client that an override put in a region stands at that region's location, so that
    // when the region has no eligible endpoint the region nearest to it takes over.
    let coords = loc
        .coords
        .or_else(|| override_r.and_then(|r| regions[r].location));
    let (country, continent, by, prefix) = (loc.country, loc.continent, loc.by, loc.prefix);

    let competing = |g: usize| ctx.any_ok(&fam.regions[g].1);
    let first = |pred: &dyn Fn(usize) -> bool| {
        (0..fam.regions.len()).find(|&g| pred(fam.regions[g].0) && competing(g))
    };
    let mut chosen = override_r
        .and_then(|r| first(&|x| x == r))
        .map(|g| (g, Why::Override));
    if chosen.is_none() {
        if let Some(cc) = country {
            chosen = first(&|r| regions[r].countries.contains(&cc)).map(|g| (g, Why::Country(cc)));
        }
    }
    if chosen.is_none() {
        if let Some(ct) = continent {
            chosen =
                first(&|r| regions[r].continents.contains(&ct)).map(|g| (g, Why::Continent(ct)));
        }
    }
    if chosen.is_none() {
        if let Some(c) = coords {
            // Nearest region with an eligible endpoint; on equal distances the region whose
            // first eligible endpoint comes first, as when endpoints were compared one by one
            // (looked for only on a tie: members are not walked otherwise).
            let first_ok = |g: usize| fam.regions[g].1.members.iter().find(|&&i| ok(i));
            let mut best: Option<(f64, usize)> = None;
            for (g, (r, group)) in fam.regions.iter().enumerate() {
                let Some(rl) = regions[*r].location else {
                    continue;
                };
                if !ctx.any_ok(group) {
                    continue;
                }
                let d = distance_km(c, rl);
                if d.is_finite()
                    && best.is_none_or(|(bd, bg)| d < bd || (d == bd && first_ok(g) < first_ok(bg)))
                {
                    best = Some((d, g));
                }
            }
            chosen = best.map(|(d, g)| (g, Why::Nearest(d)));
        }
    }
    (chosen, coords, by, prefix)
}

/// The region [`rank`] would choose: an index into the family's region groups.
pub(super) fn choose(ctx: &mut Ctx<'_, '_>) -> Option<(usize, Why)> {
    locate_and_choose(ctx).0
}

pub(super) fn rank(ctx: &mut Ctx<'_, '_>, out: &mut super::Picks) -> u8 {
    let (chosen, coords, by, prefix) = locate_and_choose(ctx);
    let (svc, fam, regions) = (ctx.svc, ctx.fam, ctx.regions);
    let group = chosen
        .as_ref()
        .map_or(&fam.all, |(g, _)| &fam.regions[*g].1);
    weighted_top(svc, group, ctx.ok, ctx.k, out);
    if ctx.trace.is_none() {
        return prefix;
    }
    let distances: Vec<(usize, f64)> = match coords {
        Some(c) => ctx
            .eligible()
            .iter()
            .map(|&i| {
                let d = svc.endpoints[i]
                    .region
                    .and_then(|r| regions[r].location)
                    .map_or(f64::INFINITY, |rl| distance_km(c, rl));
                (i, d)
            })
            .collect(),
        None => Vec::new(),
    };
    let Some(t) = ctx.trace.as_deref_mut() else {
        return prefix;
    };
    t.distance_km = distances;
    match chosen {
        Some((g, why)) => {
            let r = fam.regions[g].0;
            let name = &regions[r].name;
            let why = match why {
                Why::Override => format!("override maps the client to region {name}"),
                Why::Country(cc) => format!("country {} is mapped to region {name}", code_str(&cc)),
                Why::Continent(ct) => {
                    format!("continent {} is mapped to region {name}", code_str(&ct))
                }
                Why::Nearest(d) => {
                    let how = match by {
                        LocatedBy::Site => "this site's location",
                        _ => "the client",
                    };
                    format!("region {name} is nearest to {how} ({d:.0} km)")
                }
            };
            t.notes.push(why.clone());
            t.chosen_region = Some((r, why));
        }
        None => t.notes.push(
            // Nothing known about where the client is: every region is equally near.
            "client location unknown: every region counts as equally near, weighted".into(),
        ),
    }
    prefix
}
