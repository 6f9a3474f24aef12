//! `geo`: a region that `countries` / `continents` map the client to wins; otherwise the region
//! nearest by great-circle distance, scaled by the region's `bias`. Only regions with an
//! eligible endpoint compete, so when a region has none the next nearest takes over, or with
//! `spill = "capacity"` the regions that cover its capacity share its clients
//! ([`super::spill`]). Within the region, weighted.
//!
//! The choice is made among the service's regions (grouped with the snapshot), not its
//! endpoints: a distance per region, whatever the number of endpoints in it.

use super::{index::weighted_top, spill, Ctx};
use crate::geo::{code_str, distance_km, Code, LocatedBy};

/// Why a region was chosen; made into words only for `explain`.
pub(super) enum Why {
    Override,
    Country(Code),
    Continent(Code),
    Nearest(f64),
    /// The client's region (a region index) could not answer; `spill = "capacity"` chose.
    Spill(usize),
}

/// The region the client goes to, as an index into `ctx.fam.regions`, with the reason; `None`
/// when nothing places the client. Also returns the client's coordinates (if any) and the
/// prefix that decided. With `all_compete` every region with endpoints of the family
/// competes, as if all were up: the client's own region.
fn locate_and_choose(
    ctx: &mut Ctx<'_, '_>,
    all_compete: bool,
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

    let competing = |g: usize| {
        let group = &fam.regions[g].1;
        if all_compete {
            !group.members.is_empty()
        } else {
            ctx.any_ok(group)
        }
    };
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
            for (g, (r, _)) in fam.regions.iter().enumerate() {
                let Some(rl) = regions[*r].location else {
                    continue;
                };
                if !competing(g) {
                    continue;
                }
                let d = regions[*r].biased(distance_km(c, rl));
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
    locate_and_choose(ctx, false).0
}

type Located = (
    Option<(usize, Why)>,
    Option<crate::geo::Coords>,
    LocatedBy,
    u8,
);

/// `spill = "capacity"` while something is down: the client's own region if it can answer,
/// else the spill set's choice for the client's network (whose prefix is then the scope).
fn spill_or_choose(ctx: &mut Ctx<'_, '_>) -> Located {
    let home = locate_and_choose(ctx, true);
    let Some((g, _)) = home.0 else {
        return home;
    };
    if ctx.any_ok(&ctx.fam.regions[g].1) {
        return home;
    }
    match spill::choose(ctx, g) {
        Some(to) => {
            let (_, net_prefix) = spill::network(ctx.client.addr);
            let why = Why::Spill(ctx.fam.regions[g].0);
            (Some((to, why)), home.1, home.2, home.3.max(net_prefix))
        }
        None => locate_and_choose(ctx, false),
    }
}

pub(super) fn rank(ctx: &mut Ctx<'_, '_>, out: &mut super::Picks) -> u8 {
    let (chosen, coords, by, prefix) = if ctx.svc.spill == spill::Spill::Capacity && !ctx.all_ok {
        spill_or_choose(ctx)
    } else {
        locate_and_choose(ctx, false)
    };
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
                    let bias = regions[r].bias;
                    if bias == 0.0 {
                        format!("region {name} is nearest to {how} ({d:.0} km)")
                    } else {
                        // `d` is what the distance counts as; the raw one is in the table.
                        format!(
                            "region {name} is nearest to {how} ({d:.0} km as counted with its bias {bias:+})"
                        )
                    }
                }
                Why::Spill(from) => format!(
                    "region {} cannot answer; spill = capacity sends this client network to region {name}",
                    regions[from].name
                ),
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
