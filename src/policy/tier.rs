//! Tiers (SPEC "Pools, several monitors, tiers"): a service's `[[service.tier]]`s are tried in
//! order and the first with at least `min_up` eligible endpoints of the family asked answers,
//! under its own policy (F5's preferred → alternate, Cloudflare's fallback pool); when none
//! has enough, the `fallback` addresses; when there are none, `when_all_down`.
//!
//! Each tier is a [`Service`] of its own (its policy, its endpoints, their groups), whose
//! endpoints are clones of the service's: they share the service's health states, so drains
//! and probes written for the service are what the tier reads. A tier's picks are its own
//! indices, mapped to the service's ([`Tier::map`]) so that answers, counters and `explain`
//! see one list. Whether a tier qualifies does not depend on the client (an up-count, one load
//! per health epoch), so the ECS scope of the answer is the answering tier's.

use super::{index, select_in, Client, Counts, Family, Picks, Region, Selection, Service};
use super::{Trace, WhenAllDown};

/// The tiers of a service and its fallback addresses.
#[derive(Debug)]
pub struct Tiers {
    pub list: Vec<Tier>,
    /// Indices into the service's endpoints of the `fallback` addresses: answered (never
    /// probed, whatever their state) when no tier has enough.
    pub fallback: Vec<usize>,
}

#[derive(Debug)]
pub struct Tier {
    /// The tier as a service: its policy, its endpoints (sharing the service's states).
    pub svc: Service,
    /// The tier's endpoint index → the service's.
    pub map: Vec<usize>,
    pub min_up: usize,
    /// The pools it names, for people.
    pub pools: Vec<String>,
}

/// What became of one tier in a traced selection (`explain`).
#[derive(Debug, Clone, PartialEq)]
pub struct TierTrace {
    /// 0-based.
    pub index: usize,
    pub policy: &'static str,
    pub pools: Vec<String>,
    /// Its endpoints of the family asked.
    pub endpoints: usize,
    /// How many of them are eligible (healthy, not drained, not `--down`).
    pub up: usize,
    pub min_up: usize,
    pub answered: bool,
    /// Why it answered, or why it was passed over.
    pub why: String,
}

/// [`super::select`] for a service with tiers.
pub(super) fn select(
    svc: &Service,
    tiers: &Tiers,
    regions: &[Region],
    family: Family,
    client: &mut Client<'_>,
    mut trace: Option<&mut Trace>,
) -> Selection {
    let epoch = crate::health::epoch();
    let forced = trace
        .as_deref()
        .filter(|t| !t.down.is_empty())
        .map(|t| t.down.clone());
    // A partial drain counts per client network, as in `select_in`.
    let drain_h = svc
        .partial
        .load(std::sync::atomic::Ordering::Relaxed)
        .then(|| super::spill::drain_unit(client.addr));
    let mut first: Option<usize> = None;
    let mut passed_over = false;
    for (i, t) in tiers.list.iter().enumerate() {
        let fam: &index::FamilyIndex = t.svc.index.family(family);
        let n = fam.all.members.len();
        let counts = Counts {
            epoch,
            endpoints: &t.svc.endpoints,
            forced: forced.as_ref(),
            drain_h,
        };
        let up = if n == 0 { 0 } else { counts.n_up(&fam.all) };
        let qualifies = n > 0 && up >= t.min_up;
        if let Some(tr) = trace.as_deref_mut() {
            tr.tiers.push(TierTrace {
                index: i,
                policy: t.svc.policy.as_str(),
                pools: t.pools.clone(),
                endpoints: n,
                up,
                min_up: t.min_up,
                answered: qualifies,
                why: if n == 0 {
                    "no endpoint of the address family asked: skipped".into()
                } else if qualifies {
                    format!(
                        "{up} of {n} endpoints eligible, min_up {}: answers",
                        t.min_up
                    )
                } else {
                    format!(
                        "{up} of {n} endpoints eligible, below min_up {}: passed over",
                        t.min_up
                    )
                },
            });
        }
        if n == 0 {
            continue;
        }
        first.get_or_insert(i);
        if qualifies {
            let mut sel = answer(t, regions, family, client, trace, false);
            if passed_over {
                sel.degraded = true;
            }
            return sel;
        }
        passed_over = true;
    }
    let fallback: Picks = tiers
        .fallback
        .iter()
        .copied()
        .filter(|&g| family.matches(&svc.endpoints[g].addr))
        .take(svc.max_answers)
        .collect();
    if !fallback.is_empty() {
        if let Some(tr) = trace.as_deref_mut() {
            tr.fallback = true;
            tr.notes.push(format!(
                "no tier has enough eligible endpoints: the fallback addresses answer, with \
                 ttl_degraded {}",
                svc.ttl_degraded
            ));
        }
        return Selection {
            picks: fallback,
            scope: 0,
            all_down: false,
            degraded: true,
            servfail: false,
        };
    }
    // No tier (nor fallback address) has an endpoint of this family: NODATA, as a service
    // without endpoints of the family answers.
    let Some(first) = first else {
        return Selection::default();
    };
    if svc.when_all_down != WhenAllDown::ServeAll {
        let servfail = svc.when_all_down == WhenAllDown::Servfail;
        if let Some(tr) = trace.as_deref_mut() {
            tr.all_down = true;
            tr.notes.push(if servfail {
                "no tier has enough eligible endpoints and there is no fallback; \
                 when_all_down = servfail: SERVFAIL"
                    .into()
            } else {
                "no tier has enough eligible endpoints and there is no fallback; \
                 when_all_down = empty: NODATA"
                    .into()
            });
        }
        return Selection {
            all_down: true,
            degraded: true,
            servfail,
            ..Selection::default()
        };
    }
    let mut sel = answer(&tiers.list[first], regions, family, client, trace, true);
    sel.degraded = true;
    sel
}

/// Tier `t` answers (as if all its endpoints were up with `serve_all`); its picks, and what
/// the trace got from it, in the service's indices.
fn answer(
    t: &Tier,
    regions: &[Region],
    family: Family,
    client: &mut Client<'_>,
    mut trace: Option<&mut Trace>,
    serve_all: bool,
) -> Selection {
    let from = trace.as_deref().map_or(0, |tr| tr.distance_km.len());
    let mut sel = select_in(
        &t.svc,
        regions,
        family,
        client,
        trace.as_deref_mut(),
        serve_all,
    );
    for p in sel.picks.iter_mut() {
        *p = t.map[*p];
    }
    if let Some(tr) = trace {
        for d in &mut tr.distance_km[from..] {
            d.0 = t.map[d.0];
        }
    }
    sel
}
