//! `latency`: the eligible endpoint with the lowest probe round-trip time measured from this
//! site. Endpoints not yet measured come after measured ones; with none measured, weighted.

use super::{weighted_order, Ctx};

pub(super) fn rank(ctx: &mut Ctx<'_, '_>, eligible: &mut [usize]) -> u8 {
    let svc = ctx.svc;
    weighted_order(svc, eligible); // tie-break and fallback order
    eligible.sort_by_key(|&i| svc.endpoints[i].state.rtt_us().unwrap_or(u64::MAX));
    let known = eligible
        .iter()
        .filter(|&&i| svc.endpoints[i].state.rtt_us().is_some())
        .count();
    ctx.note(|| {
        if known == 0 {
            "latency: no round-trip times measured yet, weighted instead".into()
        } else {
            format!("latency: {known} endpoints measured, lowest round-trip time first")
        }
    });
    0
}
