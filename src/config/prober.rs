//! `[prober]`: how much CPU the health prober's thread may take (`cpu_budget`), its default
//! and its check. The prober (`crate::prober::budget`) measures its own thread's CPU and,
//! past the budget, spreads probes out (stretches every target's interval) instead of taking
//! more: a probe interval being stretched is shown in `/status` and the metrics.

use serde::Deserialize;
use serde_spanned::Spanned;

use super::{Cx, Problem};

/// `[prober]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProberConfig {
    /// `"25%"` of one core, or `"off"` / `"0"` / `"0%"` for no budget.
    pub cpu_budget: Option<Spanned<String>>,
}

/// The budget when `[prober] cpu_budget` is left out: half a core. On this project's 2-core
/// test machine 10,000 HTTP endpoints at 1 s cost the kernel alone 36–51 % of a core
/// (docs/performance.md), so half a core lets that run unstretched, and anything beyond it
/// is spread out rather than taken from the answering threads.
pub const DEFAULT_CPU_BUDGET: f64 = 0.5;

/// The budget as a share of one core (`0.25` for `"25%"`), or `None` for no budget.
pub fn cpu_budget(p: Option<&ProberConfig>) -> Option<f64> {
    match p.and_then(|p| p.cpu_budget.as_ref()) {
        None => Some(DEFAULT_CPU_BUDGET),
        Some(v) => parse_budget(v.get_ref()).ok().flatten(),
    }
}

/// `"25%"` → `Some(0.25)`; `"off"`, `"0"`, `"0%"` → `None` (no budget). A share of one core:
/// the prober is one thread, so more than 100 % cannot be spent.
pub fn parse_budget(s: &str) -> Result<Option<f64>, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("off") || t == "0" {
        return Ok(None);
    }
    let Some(num) = t.strip_suffix('%') else {
        return Err(format!(
            "`{s}` is not a share of a core: write a percentage like \"25%\", or \"off\""
        ));
    };
    match num.trim().parse::<f64>() {
        Ok(0.0) => Ok(None),
        Ok(v) if v > 0.0 && v <= 100.0 => Ok(Some(v / 100.0)),
        Ok(_) => Err(format!(
            "`{s}` must lie between 0% (off) and 100% of one core"
        )),
        Err(_) => Err(format!(
            "`{s}` is not a share of a core: write a percentage like \"25%\", or \"off\""
        )),
    }
}

/// Checks `[prober]`.
pub fn check(p: &ProberConfig, cx: &Cx, out: &mut Vec<Problem>) {
    if let Some(v) = &p.cpu_budget {
        if let Err(e) = parse_budget(v.get_ref()) {
            out.push(cx.at(v.span(), format!("prober.cpu_budget: {e}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets() {
        assert_eq!(parse_budget("25%"), Ok(Some(0.25)));
        assert_eq!(parse_budget(" 100% "), Ok(Some(1.0)));
        assert_eq!(parse_budget("0.5%"), Ok(Some(0.005)));
        assert_eq!(parse_budget("off"), Ok(None));
        assert_eq!(parse_budget("0"), Ok(None));
        assert_eq!(parse_budget("0%"), Ok(None));
        assert!(parse_budget("25").is_err());
        assert!(parse_budget("150%").is_err());
        assert!(parse_budget("-5%").is_err());
        assert!(parse_budget("lots").is_err());
        assert_eq!(cpu_budget(None), Some(DEFAULT_CPU_BUDGET));
    }
}
