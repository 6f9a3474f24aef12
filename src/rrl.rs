//! Response Rate Limiting (`[rrl]`): a UDP flood of identical responses towards one network (a
//! reflection attack with spoofed sources, or a resolver gone mad) is cut to a configured rate,
//! while every other network sees no change. The classes, slips and exemptions are BIND's; the
//! accounting is Knot's (see **Accounting**), not BIND's.
//!
//! **Classes.** A response is accounted to one token bucket per client network (the source
//! address cut to `ipv4_prefix` / `ipv6_prefix`) and response class, read from the response
//! bytes ([`classify`]) so that the fast path and the reference handler, which
//! `tests/fast_path.rs` proves give the same responses, are classified the same way without
//! either having to report anything:
//!
//! | class | key | rate |
//! |---|---|---|
//! | answer (NOERROR with records, or truncated) | network, qname, qtype | `responses_per_second` |
//! | referral (NOERROR, NS in authority) | network, delegation name | `responses_per_second` |
//! | negative (NXDOMAIN, NODATA: SOA in authority) | network, zone apex | `nxdomains_per_second` |
//! | error (REFUSED, FORMERR, NOTIMP, BADVERS, ...) | network | `errors_per_second` |
//!
//! A rate of 0 leaves that class unlimited. Names are compared lower-cased, so 0x20 case
//! randomisation does not open new buckets; keying negative answers by zone is what stops a
//! random-subdomain flood from getting a fresh bucket per name.
//!
//! **Buckets.** Each is a GCRA ("virtual scheduling") token bucket: one theoretical arrival
//! time (TAT). Credit accrues at the rate up to rate × `window` responses; a response is
//! allowed when TAT − now ≤ window and then moves TAT on by 1/rate. A bucket whose TAT is in
//! the past holds no state at all (it is indistinguishable from a new one), so idle entries
//! need no expiry pass: they are free slots.
//!
//! **Accounting: Knot-like, by choice.** A bucket's credit never goes below zero: a limited
//! response costs nothing, so a sustained flood gets `rate` full answers a second after its
//! burst of rate × `window` (`tests/rrl.rs` measures it: 1,000 queries/s against 20/s and a
//! 2 s window gave 101 full answers in the first 3 s, then 46 in the next 2 s; the rest half
//! slips, half dropped). BIND instead debits every response, limited ones too, down to
//! −window × rate, with credit capped at one second: a flood above the rate gets no full answers
//! at all until it has stopped for a while. We keep the bucket that never goes negative because
//! the flood is usually spoofed: the network it names is the victim, and its real resolvers
//! share the bucket with the attacker. Under BIND's accounting the attacker can keep them from
//! every full UDP answer for the whole flood (and a window after); here they keep a share of
//! the rate and the slips. The reflected traffic stays bounded either way, at `rate` answers a
//! second per network and response plus the slips (which are no larger than the query). One
//! 40-bit TAT per entry also holds exactly this (GCRA); a signed balance would need more bits.
//!
//! **Limited responses.** Every `slip`th limited response of a bucket goes out as a "slip":
//! the header with TC=1, the question and the OPT record (with its cookie), no records, so a
//! real client behind a spoofed flood retries over TCP (never limited) or with the server
//! cookie (never limited); the others are dropped. `slip = 0` drops all, `slip = 1` slips all.
//! A query with a valid server cookie ([`crate::cookie`]) is never limited: its source
//! address is proven. Exempt networks are never limited. `log_only` counts what would be
//! limited (`meridian_rrl_total{action="logged"}`) and sends everything.
//!
//! **The table.** A fixed array of `table_size` 64-bit atomics (rounded up to whole 64-byte
//! lines of 8), allocated when the config is loaded and never resized, so the query path
//! takes no lock and allocates nothing: a keyed SipHash-1-3 of the class key picks a line,
//! 20 bits of it tag the entry, and the entry (tag, slip counter, 40-bit TAT in µs) is updated
//! with one compare-and-swap. A line holds 8 entries; a new key takes a free slot (an entry
//! whose TAT has passed) of its line. **When the line is full** (8 keys of that line are all
//! in debt), the entry closest to having its credit back is replaced: the heaviest floods keep
//! their state, and the key forgotten starts again with full credit, so a table too small for
//! the traffic fails open (answers more, never fewer) rather than limiting innocent keys.
//! Replacements are counted in `meridian_rrl_evictions_total`; size the table at least to the
//! number of (network, class) keys active within one window. A CAS that keeps losing to
//! other threads (4 tries) also fails open.
//!
//! **Reload.** The table is kept across reloads of the same config file (same `table_size`),
//! so a reload, which automation may run every minute, does not hand every flood a fresh
//! burst of credit; the new rates apply to the entries as they are. A new `table_size` starts
//! an empty table. UDP only: TCP proves the source address and is never limited.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use siphasher::sip::SipHasher13;

use crate::base::net::mask;
use crate::base::wire;
use crate::cookie::{self, Secret};

/// The limiter's state is the snapshot's (`snapshot::ratelimit`); this file adds the query side.
use crate::snapshot::ratelimit::Rrl;
#[cfg(doc)]
use crate::snapshot::ratelimit::Table;

/// The response class ([`classify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Class {
    Answer = 1,
    Referral = 2,
    Negative = 3,
    Error = 4,
}

/// What to do with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Send,
    Slip,
    Drop,
}

/// The query side of the limiter: which bucket a response goes to and what to do with it. (The
/// limiter's state, [`Rrl`] and its [`Table`], is the snapshot's: `snapshot::ratelimit`.)
impl Rrl {
    /// The limiter's decision on `response` to `query` from `client`, with its side effects:
    /// counters, and `response` rewritten into a slip. Returns whether to send it.
    pub fn allow(
        &self,
        query: &[u8],
        client: IpAddr,
        response: &mut Vec<u8>,
        secret: &Secret,
    ) -> bool {
        self.allow_prepared(query, client, response, secret, None)
    }

    /// [`Rrl::allow`] with what [`Rrl::prepare`] worked out from the query.
    pub fn allow_prepared(
        &self,
        query: &[u8],
        client: IpAddr,
        response: &mut Vec<u8>,
        secret: &Secret,
        prepared: Option<u64>,
    ) -> bool {
        match self.decide_prepared(query, client, response, secret, prepared) {
            Action::Send => true,
            Action::Drop => false,
            Action::Slip => {
                make_slip(response);
                true
            }
        }
    }

    /// [`Rrl::allow`] without rewriting the response.
    pub fn decide(&self, query: &[u8], client: IpAddr, response: &[u8], secret: &Secret) -> Action {
        self.decide_prepared(query, client, response, secret, None)
    }

    /// The client address as accounted (IPv4-mapped IPv6 as IPv4) and its network; `None`
    /// for an exempt network.
    fn network(&self, client: IpAddr) -> Option<(IpAddr, IpAddr)> {
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            v4 => v4,
        };
        let s = &self.settings;
        let net = match client {
            IpAddr::V4(_) => mask(client, s.ipv4_prefix),
            IpAddr::V6(_) => mask(client, s.ipv6_prefix),
        };
        let exempt = s
            .exempt
            .iter()
            .any(|&(n, p)| n.is_ipv4() == client.is_ipv4() && mask(client, p) == n);
        (!exempt).then_some((client, net))
    }

    /// The bucket hash of `class` for `net`: `key` holds the lower-cased name (`name_len`
    /// bytes) from byte 19 on; the rest of the key (class, network, qtype) is written here, laid
    /// out for one SipHash call.
    fn hash(
        &self,
        key: &mut [u8; 19 + 255],
        class: Class,
        net: IpAddr,
        qtype: u16,
        name_len: usize,
    ) -> u64 {
        // The family bit keeps 1.2.3.0/24 and 102:300::/56 apart.
        key[0] = class as u8 | if net.is_ipv6() { 0x80 } else { 0 };
        match net {
            IpAddr::V4(a) => key[1..5].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => key[1..17].copy_from_slice(&a.octets()),
        }
        let len = if class == Class::Error {
            17 // errors are keyed by network alone
        } else {
            key[17..19].copy_from_slice(&qtype.to_be_bytes());
            19 + name_len
        };
        SipHasher13::new_with_key(&self.table.key).hash(&key[..len])
    }

    /// Before the answer is built: the hash of the answer-class key of `query` (its question's
    /// name and type, which an answer's question repeats), with its table line asked of the
    /// CPU's caches. Building the answer then hides the memory latency: with keys spread over
    /// the whole table (the 100,000-record zone's random names) the line came from memory and
    /// RRL + cookies cost 5.9 % (`RRL_QUERIES=static bash bench/extra.sh rrl`).
    pub fn prepare(&self, query: &[u8], client: IpAddr) -> Option<u64> {
        let (_, net) = self.network(client)?;
        let mut key = [0u8; 19 + 255];
        let name = <&mut [u8; 255]>::try_from(&mut key[19..]).ok()?;
        let (name_len, i) = wire::read_name(query, 12, name)?;
        let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
        let hash = self.hash(&mut key, Class::Answer, net, qtype, name_len);
        self.table.prefetch(hash);
        Some(hash)
    }

    /// [`Rrl::decide`] with what [`Rrl::prepare`] worked out from the query.
    fn decide_prepared(
        &self,
        query: &[u8],
        client: IpAddr,
        response: &[u8],
        secret: &Secret,
        prepared: Option<u64>,
    ) -> Action {
        let Some((client, net)) = self.network(client) else {
            return Action::Send;
        };
        let s = &self.settings;
        let mut key = [0u8; 19 + 255];
        let Ok(name) = <&mut [u8; 255]>::try_from(&mut key[19..]) else {
            return Action::Send;
        };
        let Some((class, name_len, qtype)) = classify(response, name) else {
            return Action::Send; // not a DNS response we made: nothing to account
        };
        let interval = self.interval[class as usize];
        if interval == 0 {
            return Action::Send;
        }
        let hash = match prepared {
            Some(h) if class == Class::Answer => h,
            _ => self.hash(&mut key, class, net, qtype, name_len),
        };
        let t = &self.table;
        let now = t.now();
        let slip = match t.account(hash, interval, self.window_us, s.slip, now) {
            Ok(()) => return Action::Send,
            Err(slip) => slip,
        };
        // Only limited responses pay for the cookie check: a proven source is never limited.
        if let Some(c) = cookie::find_in_query(query) {
            if cookie::valid(secret, c, client, cookie::unix_now()) {
                return Action::Send;
            }
        }
        if s.log_only {
            t.logged.fetch_add(1, Ordering::Relaxed);
            return Action::Send;
        }
        if slip {
            t.slipped.fetch_add(1, Ordering::Relaxed);
            Action::Slip
        } else {
            t.dropped.fetch_add(1, Ordering::Relaxed);
            Action::Drop
        }
    }
}

/// The class of a response, with the key name (lower-cased wire form, into `name`) and qtype.
/// `None` for bytes too short to be a DNS header.
pub fn classify(resp: &[u8], name: &mut [u8; 255]) -> Option<(Class, usize, u16)> {
    if resp.len() < 12 {
        return None;
    }
    let be16 = |i: usize| Some(u16::from_be_bytes([*resp.get(i)?, *resp.get(i + 1)?]));
    let rcode = resp[3] & 0x0F;
    let tc = resp[2] & 0x02 != 0;
    let (qd, an, ns) = (be16(4)?, be16(6)?, be16(8)?);
    let error = Some((Class::Error, 0, 0));
    if qd != 1 {
        return error;
    }
    let Some((qlen, i)) = wire::read_name(resp, 12, name) else {
        return error;
    };
    let Some(qtype) = be16(i) else {
        return error;
    };
    if rcode == 0 && (an > 0 || tc) {
        return Some((Class::Answer, qlen, qtype));
    }
    if (rcode == 0 || rcode == 3) && ns > 0 {
        // Skip the answers (a CNAME chain may precede an NXDOMAIN), read the first authority.
        let mut j = i + 4;
        for _ in 0..an {
            let Some(k) = wire::skip_rr(resp, j) else {
                return error;
            };
            j = k;
        }
        let Some((len, k)) = wire::read_name(resp, j, name) else {
            return error;
        };
        return match be16(k) {
            Some(6) => Some((Class::Negative, len, 0)),
            Some(2) if rcode == 0 => Some((Class::Referral, len, 0)),
            _ => error,
        };
    }
    error
}

/// Rewrites a response into a slip: TC=1, the question and the OPT record only.
fn make_slip(resp: &mut Vec<u8>) {
    if resp.len() < 12 {
        return;
    }
    resp[2] |= 0x02;
    let qd = u16::from_be_bytes([resp[4], resp[5]]);
    let qend = if qd == 1 {
        wire::skip_name(resp, 12).map(|i| i + 4)
    } else {
        None
    };
    let Some(qend) = qend.filter(|&e| e <= resp.len()) else {
        resp.truncate(12);
        resp[4..12].fill(0);
        return;
    };
    let opt = wire::find_opt(resp).and_then(|o| Some((o, wire::skip_rr(resp, o)?)));
    resp[6..10].fill(0);
    match opt {
        Some((start, end)) if start >= qend => {
            resp.copy_within(start..end, qend);
            resp.truncate(qend + end - start);
            resp[10..12].copy_from_slice(&1u16.to_be_bytes());
        }
        _ => {
            resp.truncate(qend);
            resp[10..12].fill(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::rrl::Settings;
    use std::path::Path;

    #[test]
    fn a_prepared_answer_shares_the_bucket_of_its_response() {
        let settings = Settings {
            responses_per_second: 1,
            nxdomains_per_second: 1,
            errors_per_second: 1,
            window: std::time::Duration::from_secs(1),
            slip: 0,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            exempt: Vec::new(),
            log_only: false,
            table_size: 64,
        };
        let rrl = Rrl::new(settings, Path::new("/nonexistent/rrl-prepare-test.toml"));
        let secret = Secret([0; 16]);
        // www.example.com A, in mixed case: the key is lower-cased either way.
        let question = b"\x03WwW\x07example\x03com\x00\x00\x01\x00\x01";
        let query = [&[0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0][..], question].concat();
        let answer = [
            &[0, 1, 0x85, 0, 0, 1, 0, 1, 0, 0, 0, 0][..],
            question,
            &[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1],
        ]
        .concat();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let prepared = rrl.prepare(&query, ip);
        let mut name = [0u8; 255];
        let (class, len, qtype) = classify(&answer, &mut name).unwrap();
        assert_eq!(class, Class::Answer);
        let mut key = [0u8; 19 + 255];
        key[19..19 + len].copy_from_slice(&name[..len]);
        let net = mask(ip, 24);
        assert_eq!(prepared, Some(rrl.hash(&mut key, class, net, qtype, len)));
        // One bucket: a credit of two (rate x window + 1), whichever way each is accounted.
        let d = |p| rrl.decide_prepared(&query, ip, &answer, &secret, p);
        assert_eq!(d(prepared), Action::Send);
        assert_eq!(d(None), Action::Send);
        assert_eq!(d(prepared), Action::Drop);
        assert_eq!(d(None), Action::Drop);
    }
}
