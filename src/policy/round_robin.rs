//! `round-robin`: rotate through the eligible endpoints, `max_answers` at a time.

use std::sync::atomic::Ordering;

use super::Ctx;

pub(super) fn rank(ctx: &mut Ctx<'_, '_>, eligible: &mut [usize]) -> u8 {
    if eligible.is_empty() {
        return 0;
    }
    let turn = ctx.svc.rr_next.fetch_add(1, Ordering::Relaxed);
    let start = turn.wrapping_mul(ctx.svc.max_answers) % eligible.len();
    eligible.rotate_left(start);
    ctx.note(|| format!("round-robin turn {turn}: starting at eligible endpoint #{start}"));
    0
}
