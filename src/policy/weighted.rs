//! `weighted`: endpoints picked with probability proportional to their weight.

use super::{index::weighted_top, Ctx};

pub(super) fn rank(ctx: &mut Ctx<'_, '_>, out: &mut super::Picks) -> u8 {
    weighted_top(ctx.svc, &ctx.fam.all, ctx.ok, ctx.k, out);
    ctx.note(|| "weighted random draw among the eligible endpoints".into());
    0
}
