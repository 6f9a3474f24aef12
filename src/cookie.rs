//! DNS Cookies (RFC 7873) with interoperable server cookies (RFC 9018).
//!
//! A query whose OPT carries a COOKIE option gets the client cookie back with a server cookie:
//! version 1, three reserved bytes, a 32-bit Unix timestamp and SipHash-2-4 (keyed with the
//! 128-bit `[server] cookie_secret`) over client cookie | version | reserved | timestamp |
//! client IP. Every site behind one anycast address must share the secret, so that a cookie
//! learnt from one site is valid at the next.
//!
//! A returned server cookie is valid when its hash matches and its timestamp lies between one
//! hour in the past and five minutes in the future (RFC 9018 §4.3). A valid cookie younger than
//! half an hour is echoed unchanged; otherwise a fresh one is made. Echoing makes the reply
//! deterministic for a valid cookie (the fast path and the reference handler agree byte for
//! byte without looking at the clock twice) and is what RFC 9018 §4.3 suggests. A query with a
//! valid server cookie proves the client saw our replies at its address, so response rate
//! limiting ([`crate::rrl`]) leaves it alone. An invalid server cookie (forged, expired,
//! another secret) is not an error: the query is answered normally with a fresh cookie
//! (RFC 7873 §5.2.4). A malformed COOKIE option (length not 8 and not 16..=40) is FORMERR
//! (§5.2.2), as are two COOKIE options in one query.
//!
//! Both handlers build the option through [`reply`]: the fast path writes its bytes itself,
//! [`crate::dns`] wraps them in an `EdnsOption` ([`edns_reply`]).

use std::hash::Hasher;
use std::net::IpAddr;

use hickory_proto::op::Edns;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use siphasher::sip::SipHasher24;

/// EDNS option code of COOKIE (RFC 7873 §4).
pub const OPT_COOKIE: u16 = 10;
/// Length of the COOKIE option we send: client cookie (8) + server cookie (16).
pub const REPLY_LEN: usize = 24;
/// Server cookies older than this are invalid (RFC 9018 §4.3).
const MAX_AGE: i64 = 3600;
/// ... and so are those further than this in the future (clock skew between sites).
const MAX_AHEAD: i64 = 300;
/// A valid server cookie younger than this is echoed; older ones are renewed.
const RENEW_AFTER: i64 = 1800;

/// The key of server cookies; it lives on the ground floor so that `config` can parse it and
/// `snapshot` make it without importing this module.
pub use crate::base::secret::Secret;

/// Unix time in seconds, from the coarse real-time clock (a few ns, no system call). Both
/// handlers read the time here, so they agree on a fresh cookie within one second.
pub fn unix_now() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec into the one we own.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    ts.tv_sec as u32
}

/// The server cookie for a client cookie, client address and timestamp (RFC 9018 §4.4).
pub fn server_cookie(secret: &Secret, client: &[u8; 8], ip: IpAddr, ts: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[0] = 1; // version; out[1..4] reserved, zero
    out[4..8].copy_from_slice(&ts.to_be_bytes());
    let head: [u8; 8] = [
        out[0], out[1], out[2], out[3], out[4], out[5], out[6], out[7],
    ];
    out[8..].copy_from_slice(&mac(secret, client, &head, ip));
    out
}

/// SipHash-2-4 over client cookie | version, reserved, timestamp | client IP: the hash half of
/// a server cookie (RFC 9018 §4.4).
fn siphash(secret: &Secret, client: &[u8; 8], head: &[u8; 8], ip: IpAddr) -> [u8; 8] {
    let mut h = SipHasher24::new_with_key(&secret.0);
    h.write(client);
    h.write(head);
    match ip {
        IpAddr::V4(a) => h.write(&a.octets()),
        IpAddr::V6(a) => h.write(&a.octets()),
    }
    h.finish().to_le_bytes()
}

/// One input of [`siphash`] and its hash, as [`mac`] keeps them.
#[derive(Clone, Copy)]
struct Mac {
    secret: [u8; 16],
    client: [u8; 8],
    head: [u8; 8],
    ip: [u8; 16],
    v4: bool,
    hash: [u8; 8],
}

const MACS: usize = 64;

thread_local! {
    static LAST_MACS: std::cell::RefCell<[Option<Mac>; MACS]> =
        const { std::cell::RefCell::new([None; MACS]) };
}

/// [`siphash`] through a small per-thread cache of recent inputs. A resolver sends the same
/// client cookie from the same address for as long as it talks to us (RFC 7873 §5.1), so
/// within a second its fresh server cookie, or the check of the one it brings back, is the
/// same hash again: the SipHash was a third of what cookies cost the fast path (`cargo bench
/// --bench handle`, paired). A hit needs the whole input equal, so the answer is the hash's.
fn mac(secret: &Secret, client: &[u8; 8], head: &[u8; 8], ip: IpAddr) -> [u8; 8] {
    let (ip16, v4) = match ip {
        IpAddr::V4(a) => (a.to_ipv6_mapped().octets(), true),
        IpAddr::V6(a) => (a.octets(), false),
    };
    // Client cookies are random (RFC 7873 §5.1); the timestamp spreads one client's seconds.
    let mix = u64::from_le_bytes(*client) ^ u64::from_le_bytes(*head);
    let slot = (mix.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % MACS;
    let same = |m: &Mac| {
        m.client == *client && m.head == *head && m.ip == ip16 && m.v4 == v4 && m.secret == secret.0
    };
    LAST_MACS.with(|cache| {
        let mut cache = cache.borrow_mut();
        match &cache[slot] {
            Some(m) if same(m) => m.hash,
            _ => {
                let hash = siphash(secret, client, head, ip);
                cache[slot] = Some(Mac {
                    secret: secret.0,
                    client: *client,
                    head: *head,
                    ip: ip16,
                    v4,
                    hash,
                });
                hash
            }
        }
    })
}

/// What a returned server cookie is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// No server cookie in the option, or one that is not ours or too old/new.
    Invalid,
    /// Ours and in its time window; `renew` when older than half an hour.
    Valid { renew: bool },
}

/// Checks a server cookie (the option's bytes after the 8-byte client cookie).
pub fn check(secret: &Secret, client: &[u8; 8], server: &[u8], ip: IpAddr, now: u32) -> Check {
    if server.len() != 16 || server[0] != 1 {
        return Check::Invalid;
    }
    let ts = u32::from_be_bytes([server[4], server[5], server[6], server[7]]);
    // Serial-number arithmetic (RFC 1982), as RFC 9018 asks: survives 2106.
    let age = i64::from(now.wrapping_sub(ts) as i32);
    if !(-MAX_AHEAD..=MAX_AGE).contains(&age) {
        return Check::Invalid;
    }
    let head: [u8; 8] = [
        server[0], server[1], server[2], server[3], server[4], server[5], server[6], server[7],
    ];
    let want = mac(secret, client, &head, ip);
    // Constant time, so the hash cannot be learnt byte by byte from timing.
    let diff = want
        .iter()
        .zip(&server[8..16])
        .fold(0u8, |d, (a, b)| d | (a ^ b));
    if diff != 0 {
        return Check::Invalid;
    }
    Check::Valid {
        renew: !(0..RENEW_AFTER).contains(&age),
    }
}

/// Whether a COOKIE option of this length is well formed (RFC 7873 §5.2.2): a client cookie
/// alone, or with a server cookie of 8 to 32 bytes.
pub fn well_formed(len: usize) -> bool {
    len == 8 || (16..=40).contains(&len)
}

/// The COOKIE option data to send for a well-formed option `data` from `ip`: the client cookie
/// and either the server cookie it brought (valid and young) or a fresh one.
pub fn reply(secret: &Secret, data: &[u8], ip: IpAddr, now: u32) -> [u8; REPLY_LEN] {
    let mut out = [0u8; REPLY_LEN];
    let mut client = [0u8; 8];
    client.copy_from_slice(&data[..8]);
    out[..8].copy_from_slice(&client);
    match check(secret, &client, &data[8..], ip, now) {
        Check::Valid { renew: false } => out[8..].copy_from_slice(&data[8..24]),
        _ => out[8..].copy_from_slice(&server_cookie(secret, &client, ip, now)),
    }
    out
}

/// Whether a COOKIE option carries a valid server cookie for `ip`.
pub fn valid(secret: &Secret, data: &[u8], ip: IpAddr, now: u32) -> bool {
    if data.len() < 16 {
        return false;
    }
    let mut client = [0u8; 8];
    client.copy_from_slice(&data[..8]);
    matches!(
        check(secret, &client, &data[8..], ip, now),
        Check::Valid { .. }
    )
}

/// The reference handler's side: the COOKIE option for the response to a query with this EDNS,
/// `Ok(None)` when it had none, `Err(())` when the option is malformed or repeated (FORMERR).
#[allow(clippy::result_unit_err)]
pub fn edns_reply(secret: &Secret, edns: &Edns, ip: IpAddr) -> Result<Option<EdnsOption>, ()> {
    let mut found = None;
    for (code, opt) in edns.options().as_ref() {
        if *code != EdnsCode::Cookie {
            continue;
        }
        let EdnsOption::Unknown(_, data) = opt else {
            return Err(());
        };
        if found.is_some() || !well_formed(data.len()) {
            return Err(());
        }
        found = Some(data);
    }
    Ok(found
        .map(|data| EdnsOption::Unknown(OPT_COOKIE, reply(secret, data, ip, unix_now()).to_vec())))
}

/// The data of the COOKIE option of a raw query, if it has exactly one in its OPT record.
/// For the rate limiter, which asks only about responses it would otherwise limit.
pub fn find_in_query(q: &[u8]) -> Option<&[u8]> {
    let opt = crate::base::wire::find_opt(q)?;
    let rdlen = u16::from_be_bytes([*q.get(opt + 9)?, *q.get(opt + 10)?]) as usize;
    let mut k = opt + 11;
    let end = (k + rdlen).min(q.len());
    while k + 4 <= end {
        let code = u16::from_be_bytes([q[k], q[k + 1]]);
        let len = u16::from_be_bytes([q[k + 2], q[k + 3]]) as usize;
        let data = q.get(k + 4..k + 4 + len)?;
        if code == OPT_COOKIE {
            return Some(data);
        }
        k += 4 + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 9018 Appendix A.1 and A.2.
    #[test]
    fn rfc9018_test_vectors() {
        let secret = Secret::parse_hex("e5e973e5a6b2a43f48e7dc849e37bfcf").unwrap();
        let client: [u8; 8] = hex("2464c4abcf10c957").try_into().unwrap();
        let ip: IpAddr = "198.51.100.100".parse().unwrap();
        assert_eq!(
            server_cookie(&secret, &client, ip, 1559731985).to_vec(),
            hex("010000005cf79f111f8130c3eee29480")
        );
        assert_eq!(
            server_cookie(&secret, &client, ip, 1559734385).to_vec(),
            hex("010000005cf7a871d4a564a1442aca77")
        );
    }

    #[test]
    fn cached_hashes_are_those_of_their_own_input() {
        // One client cookie and second (so one cache slot), from addresses and under secrets
        // that take turns, including the IPv4 address and its IPv6-mapped form.
        let secrets = [Secret([1; 16]), Secret([2; 16])];
        let client = [9u8; 8];
        let ips: Vec<IpAddr> = ["192.0.2.1", "192.0.2.2", "::ffff:192.0.2.1", "2001:db8::1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let mut seen = std::collections::HashSet::new();
        for round in 0..3 {
            for s in &secrets {
                for &ip in &ips {
                    let head = [1, 0, 0, 0, 0, 0, 0, round];
                    let want = siphash(s, &client, &head, ip);
                    assert_eq!(mac(s, &client, &head, ip), want);
                    assert_eq!(mac(s, &client, &head, ip), want, "hit");
                    seen.insert(want);
                }
            }
        }
        assert_eq!(seen.len(), 3 * 2 * 4, "every input its own hash");
    }

    #[test]
    fn validation_window() {
        let secret = Secret([7; 16]);
        let client = [1u8; 8];
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let sc = server_cookie(&secret, &client, ip, 1_000_000);
        let at = |now| check(&secret, &client, &sc, ip, now);
        assert_eq!(at(1_000_000), Check::Valid { renew: false });
        assert_eq!(at(1_000_000 + 1799), Check::Valid { renew: false });
        assert_eq!(at(1_000_000 + 1800), Check::Valid { renew: true });
        assert_eq!(at(1_000_000 + 3600), Check::Valid { renew: true });
        assert_eq!(at(1_000_000 + 3601), Check::Invalid);
        assert_eq!(at(1_000_000 - 300), Check::Valid { renew: true });
        assert_eq!(at(1_000_000 - 301), Check::Invalid);
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(
            check(&secret, &client, &sc, other, 1_000_000),
            Check::Invalid
        );
        let mut forged = sc;
        forged[15] ^= 1;
        assert_eq!(
            check(&secret, &client, &forged, ip, 1_000_000),
            Check::Invalid
        );
    }

    #[test]
    fn secrets_parse_as_32_hex_digits() {
        assert!(Secret::parse_hex("000102030405060708090a0b0c0d0e0F").is_some());
        assert!(Secret::parse_hex("000102030405060708090a0b0c0d0e0").is_none());
        assert!(Secret::parse_hex("000102030405060708090a0b0c0d0e0g").is_none());
        assert!(Secret::parse_hex("+00102030405060708090a0b0c0d0e0f").is_none());
        let p = Path::new("/nonexistent/a.toml");
        assert_eq!(Secret::random_for(p), Secret::random_for(p));
    }

    #[test]
    fn lengths() {
        assert!(well_formed(8) && well_formed(16) && well_formed(40));
        assert!(!well_formed(7) && !well_formed(9) && !well_formed(15) && !well_formed(41));
    }
}
