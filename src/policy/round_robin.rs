//! `round-robin`: rotate through the eligible endpoints, `max_answers` at a time.

use std::sync::atomic::Ordering;

use super::Ctx;

pub(super) fn rank(ctx: &mut Ctx<'_, '_>, out: &mut super::Picks) -> u8 {
    let (listed, fam);
    let eligible: &[usize] = if ctx.all_ok {
        fam = ctx.fam;
        &fam.all.members
    } else {
        listed = ctx.eligible();
        &listed
    };
    if eligible.is_empty() {
        return 0;
    }
    let turn = ctx.svc.rr_next.fetch_add(1, Ordering::Relaxed);
    let start = turn.wrapping_mul(ctx.svc.max_answers) % eligible.len();
    let (head, tail) = eligible.split_at(start);
    out.extend(tail.iter().chain(head).take(ctx.k).copied());
    ctx.note(|| format!("round-robin turn {turn}: starting at eligible endpoint #{start}"));
    0
}
