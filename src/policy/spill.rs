//! Spill-over by capacity (`[[service]] spill = "capacity"`, geo) and the per-network hash
//! that partial drains compare with their share (SPEC "Spill-over by capacity, partial
//! drains, bias").
//!
//! When the region a client belongs to cannot answer, its clients are not all sent to the
//! next nearest region (which would then take the failed region's whole load, gdnsd #126):
//! from the failed region's location, the nearest regions that can answer are taken in order
//! until their eligible capacity covers the failed region's configured capacity, and each
//! client network (/24 IPv4, /56 IPv6) goes to one of them by rendezvous hashing weighted by
//! capacity. Rendezvous keeps a network on its region while the spill set stays the same, and
//! gives each region a share of networks proportional to its capacity.
//!
//! Both hashes are fixed functions of the network (and the region's name), not of the
//! process: every site and every restart sends a network to the same place and drains the
//! same networks.

use std::net::IpAddr;

use super::hash::{ip_bits, mix, V4_PREFIX, V6_PREFIX};
use super::Ctx;
use crate::base::net::mask;
use crate::geo::{canonical, distance_km};

/// `[[service]] spill`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spill {
    /// A failed region's clients all go to the next nearest region that can answer (today's
    /// behaviour, the default).
    Nearest,
    /// Spread by capacity over the nearest regions that cover the failed region's capacity.
    Capacity,
}

impl Spill {
    pub fn parse(s: &str) -> Option<Spill> {
        match s {
            "nearest" => Some(Spill::Nearest),
            "capacity" => Some(Spill::Capacity),
            _ => None,
        }
    }
}

/// The client's network (/24 IPv4, /56 IPv6) as hashed, and its prefix length: what an
/// answer that depends on the network has for ECS scope.
pub fn network(addr: IpAddr) -> (u128, u8) {
    let client = canonical(addr);
    let prefix = if client.is_ipv4() {
        V4_PREFIX
    } else {
        V6_PREFIX
    };
    // The family is folded in so that 10.0.0.0/24 and ::a00:0/56 hash apart.
    let bits = ip_bits(mask(client, prefix)) ^ if client.is_ipv4() { 1u128 << 100 } else { 0 };
    (bits, prefix)
}

fn hash_network(net: u128, salt: u64) -> u64 {
    mix(mix(net as u64 ^ mix((net >> 64) as u64)) ^ salt)
}

/// A number in [0, 1) per client network, the same everywhere: a partial drain of share `s`
/// drains the networks with `drain_unit < s`, so raising the share only adds networks.
pub fn drain_unit(addr: IpAddr) -> f64 {
    let (net, _) = network(addr);
    (hash_network(net, 0x6472_6169_6e00_0000) >> 11) as f64 / (1u64 << 53) as f64
}

/// FNV-1a of a region's name: the region's key in the rendezvous hash, so that a network's
/// region does not change when regions are added, removed or reordered in the config.
fn region_key(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The rendezvous score of a region (by its [`region_key`]) for network `net`: `ln(u) / capacity` for a hash `u` in
/// (0, 1); the highest wins, with probability capacity / the set's capacity.
fn score(net: u128, region_key: u64, capacity: f64) -> f64 {
    let u = ((hash_network(net, region_key) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    u.ln() / capacity
}

/// One region of a spill set, for `explain`.
struct Member {
    group: usize,
    km: f64,
    capacity: f64,
    key: u64,
}

/// The region (an index into `ctx.fam.regions`) that takes this client when its region
/// `home` (same indexing) cannot answer; `None` when `home` has no location to measure from
/// or no region can answer (the caller then does what `nearest` does).
pub(super) fn choose(ctx: &mut Ctx<'_, '_>, home: usize) -> Option<usize> {
    let (fam, regions) = (ctx.fam, ctx.regions);
    let (home_r, home_group) = &fam.regions[home];
    let Some(from) = regions[*home_r].location else {
        ctx.note(|| {
            format!(
                "spill = capacity: region {} has no location to spill from; the nearest region takes over",
                regions[*home_r].name
            )
        });
        return None;
    };
    let need = home_group.capacity;
    // The other regions nearest first (after their bias; those without a location last, on a
    // tie in region order): fixed for the snapshot, so measured once per region, not per query.
    let order = home_group.spill_order.get_or_init(|| {
        let mut v: Vec<(f64, usize, u64)> = fam
            .regions
            .iter()
            .enumerate()
            .filter(|&(g, _)| g != home)
            .map(|(g, (r, _))| {
                let km = regions[*r]
                    .location
                    .map_or(f64::INFINITY, |l| regions[*r].biased(distance_km(from, l)));
                (km, g, region_key(&regions[*r].name))
            })
            .collect();
        v.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        v
    });
    let addr = ctx.client.addr;
    let (net, prefix) = network(addr);
    let mut set: smallvec::SmallVec<[Member; 8]> = smallvec::SmallVec::new();
    let mut covered = 0.0;
    // Only the regions that can answer join, in that order, until they cover `need`.
    for &(km, g, key) in order {
        if !ctx.any_ok(&fam.regions[g].1) {
            continue;
        }
        let capacity = eligible_capacity(ctx, g);
        set.push(Member {
            group: g,
            km,
            capacity,
            key,
        });
        covered += capacity;
        if covered >= need {
            break;
        }
    }
    let best = set
        .iter()
        .map(|m| (score(net, m.key, m.capacity), m.group))
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))?
        .1;
    ctx.note(|| {
        let name = |g: usize| &regions[fam.regions[g].0].name;
        let list: Vec<String> = set
            .iter()
            .map(|m| {
                format!(
                    "{} (capacity {}, {:.0} km)",
                    name(m.group),
                    m.capacity,
                    m.km
                )
            })
            .collect();
        format!(
            "spill = capacity: region {} cannot answer (capacity {need}); spill set from its \
             location: {}{}; client network {}/{prefix} goes to {} by rendezvous hash weighted \
             by capacity (share {:.0} %)",
            regions[*home_r].name,
            list.join(", "),
            if covered < need {
                " (all regions that can answer, short of its capacity)"
            } else {
                ""
            },
            mask(canonical(addr), prefix),
            name(best),
            100.0
                * set
                    .iter()
                    .find(|m| m.group == best)
                    .map_or(0.0, |m| m.capacity)
                / covered,
        )
    });
    Some(best)
}

/// The capacity of region group `g`'s endpoints that may be picked now.
fn eligible_capacity(ctx: &Ctx<'_, '_>, g: usize) -> f64 {
    let group = &ctx.fam.regions[g].1;
    if ctx.all_ok {
        return group.capacity;
    }
    let ok = ctx.ok;
    group
        .members
        .iter()
        .filter(|&&i| ok(i))
        .map(|&i| ctx.svc.endpoints[i].capacity)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_units_spread_evenly_and_per_network() {
        let n = 20_000u32;
        let below = (0..n)
            .filter(|i| drain_unit(IpAddr::from([10, (i >> 8) as u8, *i as u8, 0])) < 0.25)
            .count();
        let share = below as f64 / n as f64;
        assert!((share - 0.25).abs() < 0.02, "{share}");
        // Every address of one /24 has the same value.
        assert_eq!(
            drain_unit("10.1.2.3".parse().unwrap()),
            drain_unit("10.1.2.200".parse().unwrap())
        );
    }

    #[test]
    fn rendezvous_shares_follow_capacity() {
        let caps = [("a", 300.0), ("b", 100.0)];
        let mut wins = [0usize; 2];
        for i in 0..20_000u32 {
            let (net, _) = network(IpAddr::from([10, (i >> 8) as u8, i as u8, 0]));
            let best = (0..2)
                .max_by(|&x, &y| {
                    let s = |i: usize| score(net, region_key(caps[i].0), caps[i].1);
                    s(x).total_cmp(&s(y))
                })
                .unwrap();
            wins[best] += 1;
        }
        let share = wins[0] as f64 / 20_000.0;
        assert!((share - 0.75).abs() < 0.02, "{share}");
    }
}
