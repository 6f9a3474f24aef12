//! `geo`: a region that `countries` / `continents` map the client to wins; otherwise the region
//! nearest by great-circle distance. Only regions with an eligible endpoint compete, so when a
//! region has none the next nearest takes over. Within the region, weighted.

use super::{weighted_order, Ctx};
use crate::geo::{code_str, distance_km, LocatedBy};

pub(super) fn rank(ctx: &mut Ctx<'_, '_>, eligible: &mut super::Picks) -> u8 {
    let svc = ctx.svc;
    let regions = ctx.regions;
    let loc = ctx.client.location().clone();
    let region_of = |i: usize| svc.endpoints[i].region;
    let competing = |r: usize| eligible.iter().any(|&i| region_of(i) == Some(r));

    let mut chosen: Option<(usize, String)> = None;
    if let Some(name) = &loc.region {
        if let Some(r) = regions.iter().position(|x| &x.name == name) {
            if competing(r) {
                chosen = Some((r, format!("override maps the client to region {name}")));
            }
        }
    }
    if chosen.is_none() {
        if let Some(cc) = loc.country {
            chosen = (0..regions.len())
                .find(|&r| competing(r) && regions[r].countries.contains(&cc))
                .map(|r| {
                    (
                        r,
                        format!(
                            "country {} is mapped to region {}",
                            code_str(&cc),
                            regions[r].name
                        ),
                    )
                });
        }
    }
    if chosen.is_none() {
        if let Some(ct) = loc.continent {
            chosen = (0..regions.len())
                .find(|&r| competing(r) && regions[r].continents.contains(&ct))
                .map(|r| {
                    (
                        r,
                        format!(
                            "continent {} is mapped to region {}",
                            code_str(&ct),
                            regions[r].name
                        ),
                    )
                });
        }
    }

    // A client that an override put in a region stands at that region's location, so that
    // when the region has no eligible endpoint the region nearest to it takes over.
    let coords = loc.coords.or_else(|| {
        let name = loc.region.as_ref()?;
        regions.iter().find(|x| &x.name == name)?.location
    });
    let distances: Vec<(usize, f64)> = match coords {
        Some(c) => eligible
            .iter()
            .map(|&i| {
                let d = region_of(i)
                    .and_then(|r| regions[r].location)
                    .map_or(f64::INFINITY, |rl| distance_km(c, rl));
                (i, d)
            })
            .collect(),
        None => Vec::new(),
    };
    if chosen.is_none() && !distances.is_empty() {
        if let Some(&(i, d)) = distances
            .iter()
            .filter(|(_, d)| d.is_finite())
            .min_by(|a, b| a.1.total_cmp(&b.1))
        {
            if let Some(r) = region_of(i) {
                let how = match loc.by {
                    LocatedBy::Site => "this site's location",
                    _ => "the client",
                };
                chosen = Some((
                    r,
                    format!("region {} is nearest to {how} ({d:.0} km)", regions[r].name),
                ));
            }
        }
    }

    if let Some(t) = ctx.trace.as_deref_mut() {
        t.distance_km = distances;
    }
    match chosen {
        Some((r, why)) => {
            eligible.retain(|i| region_of(*i) == Some(r));
            weighted_order(svc, eligible);
            if let Some(t) = ctx.trace.as_deref_mut() {
                t.notes.push(why.clone());
                t.chosen_region = Some((r, why));
            }
        }
        None => {
            // Nothing known about where the client is: every region is equally near.
            weighted_order(svc, eligible);
            ctx.note(|| {
                "client location unknown: every region counts as equally near, weighted".into()
            });
        }
    }
    loc.prefix
}
