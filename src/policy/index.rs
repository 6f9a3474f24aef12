//! A service's endpoints grouped once, when the snapshot is built, so that a query does not
//! pay for every endpoint: per address family all members, members by region (geo) and by
//! priority (failover), each with the running sums of its weights for weighted draws by
//! binary search ([`weighted_top`]), and its count of up endpoints, kept per health epoch
//! ([`Group::n_up`]) so that a query reads one number instead of every member's health.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Ctx, Endpoint, Family, Picks, Service};
use crate::base::random::random_unit;

/// Bits of [`UpCount`] that hold the count; the others hold the epoch's low bits.
const COUNT_BITS: u32 = 24;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// A group's count of up members and the health epoch ([`crate::health::epoch`]) it was taken
/// at, in one word so that the two are always read together: `epoch << 24 | count`. The epoch
/// keeps its low 40 bits: a stale count could pass for a fresh one only if the group went
/// unqueried across exactly a multiple of 2^40 health changes (over three years at 10,000
/// changes a second). Groups of 2^24 members or more are counted at every query.
#[derive(Debug)]
struct UpCount(AtomicU64);

impl Default for UpCount {
    /// Matches no epoch: its count (2^24 - 1) exceeds any group that is cached.
    fn default() -> UpCount {
        UpCount(AtomicU64::new(u64::MAX))
    }
}

/// Endpoint indices of one group, in index order, with their weights' running sums.
#[derive(Debug, Default)]
pub(super) struct Group {
    pub members: Vec<usize>,
    /// `cum[j]` = the weights of `members[..=j]` added up.
    pub cum: Vec<f64>,
    /// Every member has the same weight: orders by weight reduce to orders by the draw.
    pub uniform: bool,
    /// The members' `capacity` added up, as configured (`spill = "capacity"`).
    pub capacity: f64,
    /// For a region group: the family's other regions from this one's location, nearest first
    /// (biased distance, region group index, the region's hash key); made at the first spill
    /// from this region (regions and services are built together, so it never goes stale).
    pub spill_order: std::sync::OnceLock<Vec<(f64, usize, u64)>>,
    up: UpCount,
}

impl Group {
    fn new(endpoints: &[Endpoint], members: Vec<usize>) -> Group {
        let mut sum = 0.0;
        let cum = members
            .iter()
            .map(|&i| {
                sum += endpoints[i].weight;
                sum
            })
            .collect();
        let uniform = members
            .windows(2)
            .all(|w| endpoints[w[0]].weight == endpoints[w[1]].weight);
        let capacity = members.iter().map(|&i| endpoints[i].capacity).sum();
        Group {
            members,
            cum,
            uniform,
            capacity,
            spill_order: std::sync::OnceLock::new(),
            up: UpCount::default(),
        }
    }

    /// How many members are up (healthy and not drained), as of health epoch `epoch` (read
    /// by the caller before this, [`crate::health::epoch`]). Counted once per epoch and group,
    /// then one load: a change of any endpoint's health bumps the epoch, so a count taken at
    /// the current epoch is current. Two queries counting at once store the same figure, and
    /// a count taken at an older epoch never matches the current one.
    pub fn n_up(&self, epoch: u64, endpoints: &[Endpoint]) -> usize {
        let n = self.members.len();
        let tag = epoch << COUNT_BITS;
        let c = self.up.0.load(Ordering::Relaxed);
        if c & !COUNT_MASK == tag && ((c & COUNT_MASK) as usize) <= n {
            return (c & COUNT_MASK) as usize;
        }
        let k = self
            .members
            .iter()
            .filter(|&&i| endpoints[i].state.up())
            .count();
        if (n as u64) < COUNT_MASK {
            self.up.0.store(tag | k as u64, Ordering::Relaxed);
        }
        k
    }
}

/// The endpoints of one address family.
#[derive(Debug, Default)]
pub(super) struct FamilyIndex {
    pub all: Group,
    /// By region index, ascending (the snapshot's region order); endpoints without a region
    /// are in no group here.
    pub regions: Vec<(usize, Group)>,
    /// By priority, lowest first.
    pub priorities: Vec<(u32, Group)>,
}

impl FamilyIndex {
    fn new(endpoints: &[Endpoint], family: Family) -> FamilyIndex {
        let members: Vec<usize> = (0..endpoints.len())
            .filter(|&i| family.matches(&endpoints[i].addr))
            .collect();
        let mut regions: Vec<usize> = members
            .iter()
            .filter_map(|&i| endpoints[i].region)
            .collect();
        regions.sort_unstable();
        regions.dedup();
        let mut priorities: Vec<u32> = members.iter().map(|&i| endpoints[i].priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        let subset = |keep: &dyn Fn(&Endpoint) -> bool| {
            let m = members
                .iter()
                .copied()
                .filter(|&i| keep(&endpoints[i]))
                .collect();
            Group::new(endpoints, m)
        };
        FamilyIndex {
            regions: regions
                .iter()
                .map(|&r| (r, subset(&|e| e.region == Some(r))))
                .collect(),
            priorities: priorities
                .iter()
                .map(|&p| (p, subset(&|e| e.priority == p)))
                .collect(),
            all: Group::new(endpoints, members),
        }
    }
}

/// One [`FamilyIndex`] per [`Family`].
#[derive(Debug, Default)]
pub(super) struct Index {
    v4: FamilyIndex,
    v6: FamilyIndex,
    any: FamilyIndex,
}

impl Index {
    pub fn new(endpoints: &[Endpoint]) -> Index {
        Index {
            v4: FamilyIndex::new(endpoints, Family::V4),
            v6: FamilyIndex::new(endpoints, Family::V6),
            any: FamilyIndex::new(endpoints, Family::Any),
        }
    }
    pub fn family(&self, f: Family) -> &FamilyIndex {
        match f {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
            Family::Any => &self.any,
        }
    }
}

/// Draws that may miss (an ineligible or already picked member) before the rest is ordered
/// exactly over the eligible members; with few members down a draw almost never misses.
const MISSES: usize = 16;

/// Appends members of `g` that pass `ok` and are not in `out` yet to `out`, until it holds `k`,
/// in weighted random order without replacement: each next pick has probability proportional
/// to its weight among the eligible members left. That is the distribution of
/// Efraimidis–Spirakis sampling (`ln(u) / weight`, largest first) over the eligible members,
/// but drawn by binary search on the running sums, O(log n) a pick instead of a logarithm and
/// a sort over every member. A draw that lands on an ineligible or picked member is redrawn,
/// which keeps the distribution exact; after [`MISSES`] of them the rest is ordered by
/// Efraimidis–Spirakis over the eligible members left.
pub(super) fn weighted_top(
    svc: &Service,
    g: &Group,
    ok: &dyn Fn(usize) -> bool,
    k: usize,
    out: &mut Picks,
) {
    let n = g.members.len();
    if out.len() >= k || n == 0 {
        return;
    }
    // Drawing most of the group one by one would mostly redraw: order it instead.
    if (k - out.len()) * 2 <= n {
        let total = g.cum[n - 1];
        let mut misses = 0;
        while out.len() < k && misses < MISSES {
            let x = random_unit() * total;
            let j = g.cum.partition_point(|&c| c <= x).min(n - 1);
            let i = g.members[j];
            if ok(i) && !out.contains(&i) {
                out.push(i);
            } else {
                misses += 1;
            }
        }
        if out.len() >= k {
            return;
        }
    }
    let rest: Picks = g
        .members
        .iter()
        .copied()
        .filter(|&i| ok(i) && !out.contains(&i))
        .collect();
    weighted_rest(svc, rest.into_iter(), k, out);
}

/// Appends `cands` to `out` in Efraimidis–Spirakis order until `out` holds `k`.
pub(super) fn weighted_rest(
    svc: &Service,
    cands: impl Iterator<Item = usize>,
    k: usize,
    out: &mut Picks,
) {
    let need = k.saturating_sub(out.len());
    let mut cands = cands;
    let Some(first) = cands.next() else {
        return;
    };
    let Some(second) = cands.next() else {
        // One candidate has one order: no draw and no logarithm (geo's region of one
        // endpoint, on every query it answers).
        if need > 0 {
            out.push(first);
        }
        return;
    };
    let mut keyed: smallvec::SmallVec<[(f64, usize); 8]> = [first, second]
        .into_iter()
        .chain(cands)
        .map(|i| (random_unit().ln() / svc.endpoints[i].weight, i))
        .collect();
    top_first(&mut keyed, need, |a, b| b.0.total_cmp(&a.0));
    out.extend(keyed.into_iter().take(need).map(|(_, i)| i));
}

/// Puts the `need` first elements of `v` under `cmp` (a total order) in front, in order; the
/// rest is left in some order. O(n) plus the sort of `need`.
pub(super) fn top_first<T>(
    v: &mut [T],
    need: usize,
    mut cmp: impl FnMut(&T, &T) -> std::cmp::Ordering,
) {
    if need == 0 {
        return;
    }
    if need < v.len() {
        v.select_nth_unstable_by(need - 1, &mut cmp);
        v[..need].sort_unstable_by(cmp);
    } else {
        v.sort_unstable_by(cmp);
    }
}

/// Appends the eligible endpoints with the lowest `key` to `out` until it holds `ctx.k`; equal
/// keys in weighted random order (as a weighted order sorted stably by key would have them).
/// One pass over the family per distinct key taken, reading `key` (live figures: nothing to
/// precompute); when every eligible endpoint has the same key (nothing measured yet) the
/// weighted draw over the whole family.
pub(super) fn lowest_first(ctx: &Ctx<'_, '_>, key: &dyn Fn(usize) -> u64, out: &mut Picks) {
    let (svc, members, ok) = (ctx.svc, &ctx.fam.all.members, ctx.ok);
    let mut above: Option<u64> = None;
    while out.len() < ctx.k {
        // The lowest key above the last one taken, how many have it, and the first of them.
        let mut low: Option<(u64, usize, usize)> = None;
        for &i in members {
            if !ok(i) {
                continue;
            }
            let v = key(i);
            if above.is_some_and(|a| v <= a) {
                continue;
            }
            match &mut low {
                Some((lv, n, _)) if v == *lv => *n += 1,
                Some((lv, ..)) if v > *lv => {}
                _ => low = Some((v, 1, i)),
            }
        }
        let Some((v, n, first)) = low else {
            return;
        };
        if n == 1 {
            out.push(first);
        } else if n == ctx.n_ok {
            weighted_top(svc, &ctx.fam.all, ok, ctx.k, out);
        } else {
            let ties = members.iter().copied().filter(|&i| ok(i) && key(i) == v);
            weighted_rest(svc, ties, ctx.k, out);
        }
        above = Some(v);
    }
}

/// A u64 that orders as `x` does under `f64::total_cmp`.
pub(super) fn f64_key(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | 1 << 63
    }
}
