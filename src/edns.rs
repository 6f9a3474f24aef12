//! What both answer paths ([`crate::fast`] and the reference, [`crate::dns`]) decide the same
//! way about a query, written once so that they cannot drift: the response size limit of the
//! transport and the client's EDNS payload, who the client is (the ECS subnet or the source
//! address), the balanced pick (the one `up` filter), and the ECS scope the response echoes.
//! The ECS option's own validation (RFC 7871 §6) is [`crate::ecs`]; cookies are
//! [`crate::cookie`]. `tests/fast_path.rs` and the `packet` fuzz target hold the two paths'
//! bytes equal; this module is why they do not have to chase two copies of each rule.

use std::net::IpAddr;

use crate::base::net::mask;
use crate::geo::{prefix_in, AddrSource};
use crate::policy::{self, Client, Family, Selection, Service, Trace};
use crate::snapshot::Snapshot;

/// How the query arrived; it decides the response size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Size limit without EDNS (RFC 1035 §4.2.1).
pub const PLAIN_UDP_LIMIT: usize = 512;

/// The most bytes a response may have: over TCP what the length prefix can say; over UDP 512
/// without EDNS, else the client's payload size, at least 512 (RFC 6891 §6.2.5) and at most
/// the server's `max_udp_payload` (at least 512 itself: the config checks say so).
#[inline]
pub fn size_limit(transport: Transport, payload: Option<u16>, max_udp_payload: u16) -> usize {
    match (transport, payload) {
        (Transport::Tcp, _) => u16::MAX as usize,
        (Transport::Udp, None) => PLAIN_UDP_LIMIT,
        (Transport::Udp, Some(p)) => p.max(512).min(max_udp_payload) as usize,
    }
}

/// Who the client is for the policies: the ECS subnet (RFC 7871) when it says anything
/// (`source` > 0), else the packet's source address. `ecs` is (source prefix, address).
#[inline]
pub fn client<'s>(snap: &'s Snapshot, ecs: Option<(u8, IpAddr)>, src: IpAddr) -> Client<'s> {
    let (addr, source) = match ecs {
        Some((s, a)) if s > 0 => (mask(a, s), AddrSource::Ecs(s)),
        _ => (src, AddrSource::SourceIp),
    };
    Client::new(addr, source, &snap.locator)
}

/// The endpoints a balanced name answers with for `client`: the policy over the endpoints
/// that are up (health and drains, read live).
#[inline]
pub fn pick(
    snap: &Snapshot,
    svc: &Service,
    family: Family,
    client: &mut Client<'_>,
    trace: Option<&mut Trace>,
) -> Selection {
    policy::select(svc, &snap.regions, family, client, trace)
}

/// The ECS scope prefix to echo: the prefix the answer depended on (`scope`, 0 for answers
/// valid for every client), stated in the client's address family (policies measure it on the
/// IPv4 address inside a 6to4 or IPv4-mapped one), never more specific than the client asked
/// (`source`, RFC 7871 §7.2.1).
#[inline]
pub fn echo_scope(client: IpAddr, scope: u8, source: u8) -> u8 {
    prefix_in(client, scope).min(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_limits() {
        assert_eq!(size_limit(Transport::Tcp, Some(512), 1232), 65535);
        assert_eq!(size_limit(Transport::Udp, None, 1232), 512);
        assert_eq!(size_limit(Transport::Udp, Some(100), 1232), 512);
        assert_eq!(size_limit(Transport::Udp, Some(4096), 1232), 1232);
        assert_eq!(size_limit(Transport::Udp, Some(1000), 1232), 1000);
    }

    #[test]
    fn scope_is_capped_by_the_source() {
        let v4: IpAddr = "192.0.2.0".parse().unwrap();
        assert_eq!(echo_scope(v4, 24, 20), 20);
        assert_eq!(echo_scope(v4, 0, 24), 0);
        // An IPv4-mapped client: the /24 measured on its IPv4 address is a /120.
        let mapped: IpAddr = "::ffff:192.0.2.0".parse().unwrap();
        assert_eq!(echo_scope(mapped, 24, 128), 120);
    }
}
