//! `least-loaded`: the eligible endpoint reporting the lowest `X-Load`, weighted random among
//! equals. Endpoints that report nothing come last; with no reports at all, weighted.

use super::{weighted_order, Ctx};

pub(super) fn rank(ctx: &mut Ctx<'_, '_>, eligible: &mut [usize]) -> u8 {
    let svc = ctx.svc;
    weighted_order(svc, eligible); // sort is stable: equal loads keep the weighted order
    eligible.sort_by(|&a, &b| {
        let la = svc.endpoints[a].state.load().unwrap_or(f64::INFINITY);
        let lb = svc.endpoints[b].state.load().unwrap_or(f64::INFINITY);
        la.total_cmp(&lb)
    });
    let known = eligible
        .iter()
        .filter(|&&i| svc.endpoints[i].state.load().is_some())
        .count();
    ctx.note(|| {
        if known == 0 {
            "least-loaded: no load reported yet, weighted instead".into()
        } else {
            format!("least-loaded: {known} endpoints report load, lowest first")
        }
    });
    0
}
