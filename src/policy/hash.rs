//! `hash`: the same client subnet (/24 IPv4, /56 IPv6) gets the same endpoint. Weighted
//! rendezvous hashing: each endpoint scores `ln(h) / weight` for a hash `h` of (subnet,
//! endpoint) in (0, 1), and the best score wins, so removing an endpoint moves only the
//! subnets that it was winning.

use std::net::IpAddr;

use super::Ctx;
use crate::geo::{canonical, mask};

pub const V4_PREFIX: u8 = 24;
pub const V6_PREFIX: u8 = 56;

/// splitmix64 finaliser: fixed across Rust versions and runs, unlike std's hashers, so a
/// client keeps its endpoint across restarts and across sites.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn ip_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

pub(crate) fn score(subnet: u128, endpoint: IpAddr, weight: f64) -> f64 {
    let e = ip_bits(endpoint);
    let h = mix(
        mix(subnet as u64 ^ mix((subnet >> 64) as u64)) ^ mix(e as u64 ^ mix((e >> 64) as u64))
    );
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    u.ln() / weight
}

pub(super) fn rank(ctx: &mut Ctx<'_, '_>, eligible: &mut [usize]) -> u8 {
    let client = canonical(ctx.client.addr);
    let prefix = if client.is_ipv4() {
        V4_PREFIX
    } else {
        V6_PREFIX
    };
    let subnet = ip_bits(mask(client, prefix)) ^ if client.is_ipv4() { 1u128 << 100 } else { 0 };
    let svc = ctx.svc;
    eligible.sort_by(|&a, &b| {
        let ea = &svc.endpoints[a];
        let eb = &svc.endpoints[b];
        score(subnet, eb.addr, eb.weight).total_cmp(&score(subnet, ea.addr, ea.weight))
    });
    ctx.note(|| {
        format!(
            "hash: client subnet {}/{prefix} by rendezvous hashing",
            mask(client, prefix)
        )
    });
    prefix
}
