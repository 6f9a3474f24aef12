//! `weighted`: endpoints picked with probability proportional to their weight.

use super::{weighted_order, Ctx};

pub(super) fn rank(ctx: &mut Ctx<'_, '_>, eligible: &mut [usize]) -> u8 {
    weighted_order(ctx.svc, eligible);
    ctx.note(|| "weighted random draw among the eligible endpoints".into());
    0
}
