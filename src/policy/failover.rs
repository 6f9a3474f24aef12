//! `failover`: only the eligible endpoints of the lowest `priority` group, weighted within it.

use super::{index::weighted_top, Ctx};

pub(super) fn rank(ctx: &mut Ctx<'_, '_>, out: &mut super::Picks) -> u8 {
    let (ok, fam) = (ctx.ok, ctx.fam);
    // Groups are in priority order: the first with an eligible member wins.
    let Some((best, group)) = fam.priorities.iter().find(|(_, g)| ctx.any_ok(g)) else {
        return 0;
    };
    weighted_top(ctx.svc, group, ok, ctx.k, out);
    ctx.note(|| format!("failover: priority group {best} is the lowest with an eligible endpoint"));
    0
}
