//! `latency`: the eligible endpoint with the lowest probe round-trip time measured from this
//! site. Endpoints not yet measured come after measured ones; with none measured, weighted.

use super::{index::lowest_first, Ctx};

pub(super) fn rank(ctx: &mut Ctx<'_, '_>, out: &mut super::Picks) -> u8 {
    let svc = ctx.svc;
    lowest_first(
        ctx,
        &|i| svc.endpoints[i].state.rtt_us().unwrap_or(u64::MAX),
        out,
    );
    if ctx.trace.is_some() {
        let known = ctx
            .eligible()
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
    }
    0
}
