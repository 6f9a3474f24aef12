//! Addresses and networks: the CIDR arithmetic that geo, RRL, ECS and config all share.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `ip` with every bit past `prefix` cleared.
pub fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let p = prefix.min(32) as u32;
            let m = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let p = prefix.min(128) as u32;
            let m = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}
