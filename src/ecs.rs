//! EDNS Client Subnet (RFC 7871) as a query carries it: the one validation both answering
//! paths use, so that the fast path ([`crate::fast`]) and the reference handler
//! ([`crate::dns`]) accept exactly the same options, over UDP and TCP alike.
//!
//! RFC 7871 §6: a query whose option has a source prefix longer than its family allows, more
//! address bytes than the prefix needs (or fewer), address bits set past the prefix, a
//! non-zero scope prefix, or an unknown family is answered FORMERR. Lenient readings are what
//! let a client make the echoed option carry bits it never was entitled to, or make two
//! clients look like one to a policy that keys on the subnet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::base::net::mask;
use crate::base::wire;

/// The EDNS option code of ECS.
pub const OPT_ECS: u16 = 8;

/// A well-formed ECS option of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ecs {
    /// 1 = IPv4, 2 = IPv6.
    pub family: u16,
    pub source: u8,
    /// The address bytes as sent (`nbytes` of them), zero after.
    pub bytes: [u8; 16],
    pub nbytes: usize,
    /// The address, with every bit past `source` zero.
    pub addr: IpAddr,
}

/// Why an ECS option is malformed (each is FORMERR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than family, source and scope.
    Short,
    /// Neither IPv4 nor IPv6.
    Family,
    /// A source prefix longer than the family's address.
    SourceTooLong,
    /// Not exactly the bytes the source prefix needs.
    AddressLength,
    /// Address bits set past the source prefix.
    BitsPastPrefix,
    /// A scope prefix other than 0 in a query.
    Scope,
}

/// Reads and checks the data of one ECS option (without its code and length).
pub fn parse(data: &[u8]) -> Result<Ecs, Malformed> {
    let [f0, f1, source, scope, addr @ ..] = data else {
        return Err(Malformed::Short);
    };
    let family = u16::from_be_bytes([*f0, *f1]);
    let max = match family {
        1 => 32,
        2 => 128,
        _ => return Err(Malformed::Family),
    };
    if *source > max {
        return Err(Malformed::SourceTooLong);
    }
    let nbytes = (*source as usize).div_ceil(8);
    if addr.len() != nbytes {
        return Err(Malformed::AddressLength);
    }
    if *scope != 0 {
        return Err(Malformed::Scope);
    }
    let mut bytes = [0u8; 16];
    bytes[..nbytes].copy_from_slice(addr);
    let ip = if family == 1 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(bytes))
    };
    if mask(ip, *source) != ip {
        return Err(Malformed::BitsPastPrefix);
    }
    Ok(Ecs {
        family,
        source: *source,
        bytes,
        nbytes,
        addr: ip,
    })
}

/// Checks every ECS option of the OPT record of `query` (a whole message); `Ok` when there is
/// none. For the reference handler, whose parser reads ECS leniently.
pub fn check_query(query: &[u8]) -> Result<(), Malformed> {
    let Some(at) = wire::find_opt(query) else {
        return Ok(());
    };
    let Some(i) = wire::skip_name(query, at) else {
        return Ok(());
    };
    let be16 = |i: usize| -> Option<usize> {
        Some(u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]) as usize)
    };
    let Some(rdlen) = be16(i + 8) else {
        return Ok(());
    };
    let (mut k, end) = (i + 10, (i + 10 + rdlen).min(query.len()));
    while k + 4 <= end {
        let (Some(code), Some(len)) = (be16(k), be16(k + 2)) else {
            break;
        };
        let Some(data) = query.get(k + 4..k + 4 + len).filter(|_| k + 4 + len <= end) else {
            break; // a truncated option is the parser's to reject
        };
        if code == usize::from(OPT_ECS) {
            parse(data)?;
        }
        k += 4 + len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_7871_section_6_cases() {
        assert!(parse(&[0, 1, 24, 0, 192, 0, 2]).is_ok());
        assert!(parse(&[0, 1, 0, 0]).is_ok());
        assert!(parse(&[0, 2, 56, 0, 0x20, 1, 0xd, 0xb8, 0, 0, 0x12]).is_ok());
        assert_eq!(parse(&[0, 1, 24]), Err(Malformed::Short));
        assert_eq!(parse(&[0, 3, 0, 0]), Err(Malformed::Family));
        assert_eq!(
            parse(&[0, 1, 33, 0, 1, 2, 3, 4, 5]),
            Err(Malformed::SourceTooLong)
        );
        assert_eq!(parse(&[0, 2, 129, 0]), Err(Malformed::SourceTooLong));
        assert_eq!(
            parse(&[0, 1, 24, 0, 192, 0, 2, 0]),
            Err(Malformed::AddressLength)
        );
        assert_eq!(parse(&[0, 1, 24, 0, 192, 0]), Err(Malformed::AddressLength));
        assert_eq!(parse(&[0, 1, 0, 0, 0]), Err(Malformed::AddressLength));
        assert_eq!(
            parse(&[0, 1, 23, 0, 192, 0, 3]),
            Err(Malformed::BitsPastPrefix)
        );
        assert_eq!(parse(&[0, 1, 24, 24, 192, 0, 2]), Err(Malformed::Scope));
    }
}
