//! `failover`: only the eligible endpoints of the lowest `priority` group, weighted within it.

use super::{weighted_order, Ctx};

pub(super) fn rank(ctx: &mut Ctx<'_, '_>, eligible: &mut super::Picks) -> u8 {
    let svc = ctx.svc;
    let Some(best) = eligible.iter().map(|&i| svc.endpoints[i].priority).min() else {
        return 0;
    };
    eligible.retain(|i| svc.endpoints[*i].priority == best);
    weighted_order(svc, eligible);
    ctx.note(|| format!("failover: priority group {best} is the lowest with an eligible endpoint"));
    0
}
