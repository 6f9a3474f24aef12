//! `hash`: the same client subnet (/24 IPv4, /56 IPv6) gets the same endpoint. Weighted
//! rendezvous hashing: each endpoint scores `ln(h) / weight` for a hash `h` of (subnet,
//! endpoint) in (0, 1), and the best score wins, so removing an endpoint moves only the
//! subnets that it was winning.

use std::net::IpAddr;

use super::{index::top_first, Ctx};
use crate::base::net::mask;
use crate::geo::canonical;

pub const V4_PREFIX: u8 = 24;
pub const V6_PREFIX: u8 = 56;

/// splitmix64 finaliser: fixed across Rust versions and runs, unlike std's hashers, so a
/// client keeps its endpoint across restarts and across sites.
pub(super) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(super) fn ip_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The (subnet, endpoint) hash as a number in (0, 1).
fn unit(subnet: u128, endpoint: IpAddr) -> f64 {
    let e = ip_bits(endpoint);
    let h = mix(
        mix(subnet as u64 ^ mix((subnet >> 64) as u64)) ^ mix(e as u64 ^ mix((e >> 64) as u64))
    );
    ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

pub(crate) fn score(subnet: u128, endpoint: IpAddr, weight: f64) -> f64 {
    unit(subnet, endpoint).ln() / weight
}

pub(super) fn rank(ctx: &mut Ctx<'_, '_>, out: &mut super::Picks) -> u8 {
    let client = canonical(ctx.client.addr);
    let prefix = if client.is_ipv4() {
        V4_PREFIX
    } else {
        V6_PREFIX
    };
    let subnet = ip_bits(mask(client, prefix)) ^ if client.is_ipv4() { 1u128 << 100 } else { 0 };
    let (svc, group, ok) = (ctx.svc, &ctx.fam.all, ctx.ok);
    // Each eligible endpoint scored once (not once per comparison of a sort); with equal
    // weights `ln(h) / weight` orders as `h` does, so the logarithm is skipped.
    let scores = group.members.iter().filter(|&&i| ok(i)).map(|&i| {
        let e = &svc.endpoints[i];
        let s = if group.uniform {
            unit(subnet, e.addr)
        } else {
            score(subnet, e.addr, e.weight)
        };
        (s, i)
    });
    // Best score first; on equal scores the lower index, as the stable sort this replaces did.
    let order = |a: &(f64, usize), b: &(f64, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if ctx.k == 1 {
        if let Some((_, i)) = scores.min_by(order) {
            out.push(i);
        }
    } else {
        let mut scored: smallvec::SmallVec<[(f64, usize); 8]> = scores.collect();
        top_first(&mut scored, ctx.k, order);
        out.extend(scored.iter().take(ctx.k).map(|&(_, i)| i));
    }
    ctx.note(|| {
        format!(
            "hash: client subnet {}/{prefix} by rendezvous hashing",
            mask(client, prefix)
        )
    });
    prefix
}
