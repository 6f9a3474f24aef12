//! `least-loaded`: the eligible endpoint reporting the lowest `X-Load`, weighted random among
//! equals. Endpoints that report nothing come last; with no reports at all, weighted.

use super::{
    index::{f64_key, lowest_first},
    Ctx,
};

pub(super) fn rank(ctx: &mut Ctx<'_, '_>, out: &mut super::Picks) -> u8 {
    let svc = ctx.svc;
    lowest_first(
        ctx,
        &|i| f64_key(svc.endpoints[i].state.load().unwrap_or(f64::INFINITY)),
        out,
    );
    if ctx.trace.is_some() {
        let known = ctx
            .eligible()
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
    }
    0
}
