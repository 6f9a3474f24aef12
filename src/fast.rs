//! The fast path (UDP and TCP): the queries that make up nearly all traffic — one question of class IN,
//! at most an OPT with ECS and a COOKIE, answered from an exact name, a balanced name, NODATA or NXDOMAIN —
//! read and written straight from and to bytes, with rdata encoded once at zone load. Names
//! inside rdata (SOA, NS, MX, SRV, PTR) are compressed as hickory's encoder does it, and NS, MX
//! and SRV answers carry their in-zone targets' addresses in the additional section.
//!
//! DNSSEC: in a zone signed here, a DO query of type A, AAAA or TXT for an exact name (static
//! or balanced) or a name that does not exist (compact denial: SOA and NSEC) is signed on this
//! path, its RRSIG bytes from the signer's cache; every other DO query for a signed zone, and
//! every DO query for a zone that arrived signed, falls back.
//!
//! Anything else (other opcodes, CNAMEs — also those of `target` services —, wildcards, referrals, ANY, NSID, CHAOS, malformed or
//! unusual packets, answers that need truncation) returns [`Fast::Fallback`] and goes through
//! [`crate::dns::handle`], which is the reference: `tests/fast_path.rs` checks that both give
//! the same answers. Parsing hickory `Message`s and building responses with them costs more
//! than the rest of the query together; this path removes that cost where it is safe to.

use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::cookie;
use crate::dns::QueryOutcome;
use crate::ecs;
use crate::edns::{self, Transport};
use crate::policy::Family;
use crate::snapshot::Snapshot;
use crate::zone::{Found, RRset, SoaParts, Zone};

/// What the fast path did with a packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Fast {
    /// The response is in the output buffer.
    Answered,
    /// Not a case this path handles: use [`crate::dns::handle`].
    Fallback,
}

const TYPE_OPT: u16 = 41;
const TYPE_A: u16 = 1;
const TYPE_NS: u16 = 2;
const TYPE_PTR: u16 = 12;
const TYPE_MX: u16 = 15;
const TYPE_TXT: u16 = 16;
const TYPE_SRV: u16 = 33;
const TYPE_AAAA: u16 = 28;
const TYPE_RRSIG: u16 = 46;
const TYPE_NSEC: u16 = 47;
/// The NSEC type bitmap of RFC 9824's NXNAME NSEC: window 0, 17 octets, RRSIG (46), NSEC
/// (47), NXNAME (128).
const NXNAME_BITMAP: [u8; 19] = [
    0, 17, 0, 0, 0, 0, 0, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80,
];
const TYPE_DS: u16 = 43;
const TYPE_DNSKEY: u16 = 48;
const TYPE_CDS: u16 = 59;
const TYPE_CDNSKEY: u16 = 60;
/// RFC 9824's NXNAME: a query for it is FORMERR, the reference path's.
const TYPE_NXNAME: u16 = 128;
const CLASS_IN: u16 = 1;
const OPT_ECS: u16 = ecs::OPT_ECS;
const OPT_KEEPALIVE: u16 = 11;

/// The parts of a query this path needs.
struct Parsed {
    /// End of the question section (header + question).
    qend: usize,
    qtype: u16,
    /// Lower-cased wire name and label starts (a wire name is at most 255 bytes: a `u8` each,
    /// which keeps this struct, built for every query, small). Left uninitialised past
    /// `key_len` and `labels`: zeroing 383 bytes and moving them was ~1 % of a query's CPU
    /// under load (`perf`, issue 22 item 4); [`Parsed::key`] and [`Parsed::starts`] read only
    /// what `parse` wrote.
    key: [MaybeUninit<u8>; 255],
    key_len: usize,
    starts: [MaybeUninit<u8>; 128],
    labels: usize,
    edns: Option<EdnsInfo>,
}

struct EdnsInfo {
    payload: u16,
    dnssec_ok: bool,
    /// ECS: (family, source prefix, address bytes as sent, decoded address).
    ecs: Option<(u16, u8, [u8; 16], usize, IpAddr)>,
    /// A well-formed COOKIE option: (offset of its data in the packet, length).
    cookie: Option<(usize, usize)>,
}

fn be16(p: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?]))
}

impl Parsed {
    /// The lower-cased wire name, root label included.
    fn key(&self) -> &[u8] {
        // SAFETY: `parse` wrote `key[..key_len]` (and never lets key_len pass 255).
        unsafe { std::slice::from_raw_parts(self.key.as_ptr().cast::<u8>(), self.key_len) }
    }

    /// Where each label of [`Parsed::key`] starts, the root's last.
    fn starts(&self) -> &[u8] {
        // SAFETY: `parse` wrote `starts[..labels]` (and never lets labels pass 128).
        unsafe { std::slice::from_raw_parts(self.starts.as_ptr().cast::<u8>(), self.labels) }
    }
}

// Inlined into its one caller, so that the struct is built in place rather than moved.
#[inline(always)]
fn parse(p: &[u8]) -> Option<Parsed> {
    if p.len() < 12 {
        return None;
    }
    // QR clear, opcode QUERY, one question, nothing in answer/authority, at most the OPT.
    if p[2] & 0xF8 != 0 || be16(p, 4)? != 1 || be16(p, 6)? != 0 || be16(p, 8)? != 0 {
        return None;
    }
    let arcount = be16(p, 10)?;
    if arcount > 1 {
        return None;
    }
    let mut out = Parsed {
        qend: 0,
        qtype: 0,
        key: [MaybeUninit::uninit(); 255],
        key_len: 0,
        starts: [MaybeUninit::uninit(); 128],
        labels: 0,
        edns: None,
    };
    let mut i = 12;
    loop {
        let len = *p.get(i)? as usize;
        if len & 0xC0 != 0 {
            return None; // no compression in a question we handle
        }
        if out.labels >= out.starts.len() || out.key_len + 1 + len > out.key.len() {
            return None;
        }
        out.starts[out.labels] = MaybeUninit::new(out.key_len as u8);
        out.labels += 1;
        out.key[out.key_len] = MaybeUninit::new(len as u8);
        let label = p.get(i + 1..i + 1 + len)?;
        for (d, s) in out.key[out.key_len + 1..out.key_len + 1 + len]
            .iter_mut()
            .zip(label)
        {
            *d = MaybeUninit::new(s.to_ascii_lowercase());
        }
        out.key_len += 1 + len;
        i += 1 + len;
        if len == 0 {
            break;
        }
    }
    out.qtype = be16(p, i)?;
    if be16(p, i + 2)? != CLASS_IN {
        return None;
    }
    out.qend = i + 4;
    let mut j = out.qend;
    if arcount == 1 {
        // OPT: root owner, type 41, class = payload, ttl = ext-rcode/version/flags, rdata.
        if *p.get(j)? != 0 || be16(p, j + 1)? != TYPE_OPT {
            return None;
        }
        let payload = be16(p, j + 3)?;
        let (ext_rcode, version, flags) = (*p.get(j + 5)?, *p.get(j + 6)?, *p.get(j + 7)?);
        if ext_rcode != 0 || version != 0 {
            return None;
        }
        let rdlen = be16(p, j + 9)? as usize;
        let mut k = j + 11;
        let end = k + rdlen;
        if end != p.len() {
            return None;
        }
        let mut edns = EdnsInfo {
            payload,
            dnssec_ok: flags & 0x80 != 0,
            ecs: None,
            cookie: None,
        };
        while k < end {
            let code = be16(p, k)?;
            let len = be16(p, k + 2)? as usize;
            let data = p.get(k + 4..k + 4 + len)?;
            match code {
                OPT_ECS => {
                    // Malformed (RFC 7871 §6): FORMERR is the reference handler's, which
                    // applies the same check (crate::ecs).
                    if edns.ecs.is_some() {
                        return None;
                    }
                    let e = ecs::parse(data).ok()?;
                    edns.ecs = Some((e.family, e.source, e.bytes, e.nbytes, e.addr));
                }
                3 => return None, // NSID: the slow path adds the site id
                // edns-tcp-keepalive: over TCP the slow path answers it (RFC 7828); over UDP
                // it is ignored there as it would be here, so falling back changes no byte.
                OPT_KEEPALIVE => return None,
                cookie::OPT_COOKIE => {
                    // Malformed or repeated: FORMERR is the slow path's (RFC 7873 §5.2.2).
                    if edns.cookie.is_some() || !cookie::well_formed(len) {
                        return None;
                    }
                    edns.cookie = Some((k + 4, len));
                }
                _ => {} // unknown options are ignored (RFC 6891 §6.1.2)
            }
            k += 4 + len;
        }
        j = end;
        out.edns = Some(edns);
    }
    if j != p.len() {
        return None;
    }
    Some(out)
}

/// Name compression done exactly as hickory's encoder does it, so that the fast path's bytes
/// equal the reference's (`tests/fast_path.rs`, `fuzz/`): a name's suffix is replaced by a
/// pointer only when its bytes match, case-sensitively, a suffix already written; the first one
/// remembered wins; at most [`MAX_SUFFIXES`] are remembered, the question's first.
struct Suffixes<'p> {
    /// The question name as the client wrote it, without its root label, and where its labels
    /// start; its suffixes sit at `12 + start` in the response.
    qname: &'p [u8],
    qstarts: &'p [u8],
    /// Suffixes of names written into the response since: (offset, bytes without the root).
    more: smallvec::SmallVec<[(u16, &'p [u8]); 16]>,
}

/// hickory's `COMPRESSION_CANDIDATE_LIMIT`.
const MAX_SUFFIXES: usize = 64;

/// Below hickory's `COMPRESSED_NAME_LIMIT` (120), past which it writes names uncompressed: a
/// response with more names than this goes to the reference.
const MAX_NAMES: usize = 100;

impl<'p> Suffixes<'p> {
    fn new(packet: &'p [u8], q: &'p Parsed) -> Self {
        let root = 12 + usize::from(q.starts()[q.labels - 1]);
        Suffixes {
            qname: &packet[12..root],
            qstarts: &q.starts()[..(q.labels - 1).min(MAX_SUFFIXES)],
            more: smallvec::SmallVec::new(),
        }
    }

    fn find(&self, suffix: &[u8]) -> Option<u16> {
        for &s in self.qstarts {
            if &self.qname[usize::from(s)..] == suffix {
                return Some(12 + u16::from(s));
            }
        }
        self.more
            .iter()
            .find(|(_, b)| *b == suffix)
            .map(|&(at, _)| at)
    }

    /// Remembers `suffix`, written at `at`, while there is room for it (as hickory does, and
    /// only below offset 0x3FFF, which [`Self::put`] keeps to).
    fn remember(&mut self, at: usize, suffix: &'p [u8]) {
        if self.qstarts.len() + self.more.len() < MAX_SUFFIXES {
            self.more.push((at as u16, suffix));
        }
    }

    /// Writes `name` (uncompressed wire form with its root label) at the end of `out`,
    /// compressed. `None` when the response is too long for pointers into it.
    fn put(&mut self, out: &mut Vec<u8>, name: &'p [u8]) -> Option<()> {
        self.write(out, name, true)
    }

    /// Writes `name` whole, as hickory writes the names of rdata that must not be compressed
    /// (SRV, RFC 2782), remembering its suffixes all the same.
    fn put_whole(&mut self, out: &mut Vec<u8>, name: &'p [u8]) -> Option<()> {
        self.write(out, name, false)
    }

    /// [`Self::put`] (`compress`) and [`Self::put_whole`]: label by label, each suffix either
    /// replaced by a pointer to where it was written before or remembered.
    #[inline(always)]
    fn write(&mut self, out: &mut Vec<u8>, name: &'p [u8], compress: bool) -> Option<()> {
        let body = name.len().checked_sub(1)?;
        if out.len() + name.len() >= 0x3FFF {
            return None;
        }
        let mut i = 0;
        while i < body {
            let suffix = &name[i..body];
            if let Some(at) = compress.then(|| self.find(suffix)).flatten() {
                out.extend_from_slice(&(0xC000 | at).to_be_bytes());
                return Some(());
            }
            self.remember(out.len(), suffix);
            let len = name[i] as usize + 1;
            out.extend_from_slice(name.get(i..i + len)?);
            i += len;
        }
        out.push(0);
        Some(())
    }
}

/// Writes the zone's SOA record with its owner at `owner_ptr` and its names compressed.
fn put_soa<'p>(
    out: &mut Vec<u8>,
    owner_ptr: u16,
    ttl: u32,
    soa: &'p SoaParts,
    names: &mut Suffixes<'p>,
) -> Option<()> {
    out.extend_from_slice(&(0xC000 | owner_ptr).to_be_bytes());
    out.extend_from_slice(&u16::from(RecordType::SOA).to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    let len_at = out.len();
    out.extend_from_slice(&[0, 0]);
    names.put(out, &soa.mname)?;
    names.put(out, &soa.rname)?;
    out.extend_from_slice(&soa.numbers);
    let rdlen = (out.len() - len_at - 2) as u16;
    out[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    Some(())
}

/// Writes the records of an NS, MX, SRV or PTR RRset, owned by the question name, with the
/// name in each rdata written as hickory writes it (compressed, but SRV's whole); returns how
/// many, and adds the names whose addresses go in the additional section (NS, MX and SRV
/// targets) to `targets`.
fn put_named<'p>(
    out: &mut Vec<u8>,
    qtype: u16,
    set: &'p RRset,
    names: &mut Suffixes<'p>,
    targets: &mut smallvec::SmallVec<[&'p [u8]; 8]>,
) -> Option<u16> {
    let fixed = match RecordType::from(qtype) {
        RecordType::MX => 2,
        RecordType::SRV => 6,
        _ => 0,
    };
    let mut n = 0u16;
    for rdata in set.rdata() {
        let name = rdata.get(fixed..)?;
        out.extend_from_slice(&0xC00Cu16.to_be_bytes());
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&set.ttl.to_be_bytes());
        let len_at = out.len();
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&rdata[..fixed]);
        if qtype == TYPE_SRV {
            names.put_whole(out, name)?;
        } else {
            names.put(out, name)?;
        }
        let rdlen = (out.len() - len_at - 2) as u16;
        out[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
        if qtype != TYPE_PTR {
            targets.push(name);
        }
        n += 1;
    }
    Some(n)
}

/// The additional section of an NS, MX or SRV answer, as [`crate::dns`] builds it: for each
/// target in this zone (`origin`, its wire key), once, its A and then its AAAA records, the
/// owner compressed. Returns how many records.
fn put_addresses<'p>(
    out: &mut Vec<u8>,
    zone: &'p Zone,
    origin: &[u8],
    targets: &[&'p [u8]],
    names: &mut Suffixes<'p>,
) -> Option<u16> {
    let mut n = 0u16;
    let mut buf = [0u8; 255];
    for (i, &target) in targets.iter().enumerate() {
        // Wire names compare without regard to case byte by byte: a length byte (< 64) is
        // never an ASCII letter.
        if targets[..i].iter().any(|t| t.eq_ignore_ascii_case(target)) {
            continue;
        }
        let key = buf.get_mut(..target.len())?;
        for (k, b) in key.iter_mut().zip(target) {
            *k = b.to_ascii_lowercase();
        }
        if !in_zone(key, origin) {
            continue;
        }
        let Some(node) = zone.node_at(key) else {
            continue;
        };
        for rtype in [RecordType::A, RecordType::AAAA] {
            let Some(set) = node.rrset(rtype) else {
                continue;
            };
            for rdata in set.rdata() {
                names.put(out, target)?;
                out.extend_from_slice(&u16::from(rtype).to_be_bytes());
                out.extend_from_slice(&CLASS_IN.to_be_bytes());
                out.extend_from_slice(&set.ttl.to_be_bytes());
                out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
                out.extend_from_slice(rdata);
                n += 1;
            }
        }
    }
    Some(n)
}

/// Whether the wire key `key` is `origin` or below it (both lower-case).
fn in_zone(key: &[u8], origin: &[u8]) -> bool {
    let Some(at) = key.len().checked_sub(origin.len()) else {
        return false;
    };
    if key[at..] != *origin {
        return false;
    }
    // On a label boundary: walk the labels from the start.
    let mut i = 0;
    while i < at {
        i += usize::from(key[i]) + 1;
    }
    i == at
}

/// Writes one resource record whose owner is a compression pointer.
fn put_rr(out: &mut Vec<u8>, owner_ptr: u16, rtype: u16, ttl: u32, rdata: &[u8]) {
    out.extend_from_slice(&(0xC000 | owner_ptr).to_be_bytes());
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(rdata);
}

/// Writes the RRSIGs of the signed zone `o` over the RRset at the query name (lower-cased
/// wire `owner`) and returns how many; `None` when one is not cached and the budget is
/// spent, or signing failed: the reference path answers then (TC=1, or unsigned).
fn put_rrsigs(
    out: &mut Vec<u8>,
    o: &crate::dnssec::online::Online,
    owner: &[u8],
    qtype: u16,
    ttl: u32,
    rdatas: &[&[u8]],
    limited: bool,
) -> Option<u16> {
    let sigs = o
        .sign_wire(owner, RecordType::from(qtype), ttl, rdatas, limited)
        .ok()??;
    for sig in &sigs {
        put_rr(out, 12, TYPE_RRSIG, ttl, sig);
    }
    Some(sigs.len() as u16)
}

/// Answers `packet` into `out` if it is a case this path handles. Counts nothing: a served
/// query is counted by its transport from the outcome ([`crate::answer::respond`]).
pub fn answer(snap: &Snapshot, packet: &[u8], src: SocketAddr, out: &mut Vec<u8>) -> Fast {
    answer_over(snap, packet, src, out, Transport::Udp)
}

/// [`answer`] for a query that arrived over `transport`. Over TCP the response has no size
/// limit but the 64 KiB of the length prefix (as in [`crate::dns::handle`]).
pub fn answer_over(
    snap: &Snapshot,
    packet: &[u8],
    src: SocketAddr,
    out: &mut Vec<u8>,
    transport: Transport,
) -> Fast {
    match try_answer(snap, packet, src, out, transport) {
        Some(_) => Fast::Answered,
        None => Fast::Fallback,
    }
}

/// [`answer_over`] with the outcome of an answered query (its `rcode` set); `None` is
/// [`Fast::Fallback`].
#[inline]
pub fn try_answer<'s>(
    snap: &'s Snapshot,
    packet: &[u8],
    src: SocketAddr,
    out: &mut Vec<u8>,
    transport: Transport,
) -> Option<QueryOutcome<'s>> {
    let q = parse(packet)?;
    let key = q.key();
    let starts = q.starts();
    // Names of a zone that failed to load get SERVFAIL, from the reference path.
    if snap.zones.failing(key, starts) {
        return None;
    }
    let zone = snap.zones.find_for(key, starts, q.qtype == TYPE_DS)?;
    if zone.expired {
        // An expired secondary zone: the reference path answers SERVFAIL.
        return None;
    }
    // Meta types (OPT, NXNAME, TKEY, TSIG, IXFR, AXFR, MAILB, MAILA, ANY) have rules of
    // their own.
    if q.qtype == TYPE_OPT || q.qtype == TYPE_NXNAME || q.qtype >= 249 {
        return None;
    }
    let apex_labels = zone.origin.num_labels() as usize + 1;
    // DNSSEC. A zone that arrived signed gives DO queries its own RRSIGs and NSECs, on the
    // reference path. A zone signed here: DO queries of A, AAAA and TXT for an exact name
    // (static or balanced) or a name that does not exist are signed on this path, their
    // signatures from the signer's cache (made on a miss); everything else with DO (NODATA,
    // names in rdata, SOA, wildcards, referrals) is the reference's, as are DNSKEY, CDS and
    // CDNSKEY at the apex. Without DO
    // this costs one branch while no zone is signed (docs/dnssec.md "Speed").
    let origin = || &key[usize::from(starts[q.labels - apex_labels])..];
    let mut signing = None;
    if q.edns.as_ref().is_some_and(|e| e.dnssec_ok) {
        if zone.presigned.is_some() {
            return None;
        }
        if let Some(o) = snap.signing_key(origin()) {
            if !matches!(q.qtype, TYPE_A | TYPE_AAAA | TYPE_TXT) {
                return None;
            }
            signing = Some(o);
        }
    } else if !snap.dnssec.is_empty()
        && matches!(q.qtype, TYPE_DNSKEY | TYPE_CDS | TYPE_CDNSKEY)
        && snap.signing_key(origin()).is_some()
    {
        return None;
    }
    // The signing budget limits UDP queries without a valid server cookie.
    let limited = || {
        transport == Transport::Udp
            && !q
                .edns
                .as_ref()
                .and_then(|e| e.cookie)
                .is_some_and(|(at, len)| {
                    cookie::valid(
                        &snap.cookie_secret,
                        &packet[at..at + len],
                        src.ip(),
                        cookie::unix_now(),
                    )
                })
    };
    let qtype = RecordType::from(q.qtype);
    let mut outcome = QueryOutcome {
        zone: Some(&zone.stats),
        qtype: Some(qtype),
        tcp: transport == Transport::Tcp,
        ..QueryOutcome::default()
    };

    out.clear();
    out.extend_from_slice(&packet[..2]);
    // QR, opcode 0, AA, RD copied; RA, AD and CD clear (nothing here is signed: RFC 4035
    // §3.1.6 leaves CD to resolvers). The rcode is patched in below.
    out.push(0x84 | (packet[2] & 0x01));
    out.push(0);
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&packet[12..q.qend]);

    let mut names = Suffixes::new(packet, &q);
    // NS, MX and SRV targets: their addresses go in the additional section.
    let mut targets: smallvec::SmallVec<[&[u8]; 8]> = smallvec::SmallVec::new();
    let mut rcode = ResponseCode::NoError;
    let mut answers = 0u16;
    let mut negative = false;
    let mut scope = 0u8;
    match zone.find(key, starts, qtype == RecordType::DS) {
        Found::NxDomain => {
            // Signed: compact denial (RFC 9824), NOERROR with the SOA and an NSEC at the
            // query name, both signed (below).
            if signing.is_none() {
                rcode = ResponseCode::NXDomain;
            }
            negative = true;
        }
        Found::Delegation(..) | Found::Wildcard(_) => return None,
        Found::Node(node) => {
            if let Some(svc) = snap.service_of(node) {
                if svc.targets {
                    // A CNAME to a target, chased inside the zone: the reference's, by
                    // design (about 1 µs; docs/performance.md).
                    return None;
                }
                let family = match qtype {
                    RecordType::A => Family::V4,
                    RecordType::AAAA => Family::V6,
                    _ => return None,
                };
                let ecs = q.edns.as_ref().and_then(|e| e.ecs.as_ref());
                let ecs = ecs.map(|&(_, source, _, _, addr)| (source, addr));
                let mut client = edns::client(snap, ecs, src.ip());
                let sel = edns::pick(snap, svc, family, &mut client, None);
                // Echoed only with ECS, whose source prefix caps it.
                scope = edns::echo_scope(client.addr, sel.scope, ecs.map_or(0, |e| e.0));
                if sel.servfail {
                    // As dns::servfail: no data, not authoritative.
                    rcode = ResponseCode::ServFail;
                    out[2] &= !0x04;
                }
                let ttl = svc.answer_ttl(&sel);
                let mut octets: smallvec::SmallVec<[[u8; 16]; 4]> = smallvec::SmallVec::new();
                for &i in &sel.picks {
                    let rdata: &[u8] = match &svc.endpoints[i].addr {
                        IpAddr::V4(a) => &a.octets(),
                        IpAddr::V6(a) => &a.octets(),
                    };
                    put_rr(out, 12, q.qtype, ttl, rdata);
                    answers += 1;
                    if signing.is_some() {
                        let mut o = [0u8; 16];
                        o[..rdata.len()].copy_from_slice(rdata);
                        octets.push(o);
                    }
                }
                if let Some(o) = signing {
                    if sel.servfail || sel.picks.is_empty() {
                        return None; // NODATA's NSEC, or SERVFAIL: the reference's
                    }
                    let len = if family == Family::V4 { 4 } else { 16 };
                    let rdatas: smallvec::SmallVec<[&[u8]; 4]> =
                        octets.iter().map(|x| &x[..len]).collect();
                    answers += put_rrsigs(out, o, key, q.qtype, ttl, &rdatas, limited())?;
                }
                negative = sel.picks.is_empty() && !sel.servfail;
                outcome.service = Some(svc);
                outcome.all_down = sel.all_down;
                outcome.picks = sel.picks;
            } else {
                if qtype == RecordType::ANY || node.rrset(RecordType::CNAME).is_some() {
                    // CNAME chasing lives in the slow path.
                    return None;
                }
                match node.rrset(qtype) {
                    // Only the apex holds an SOA (zone checks), and it is the zone's.
                    Some(set) if qtype == RecordType::SOA => {
                        if q.labels != apex_labels
                            || put_soa(out, 12, set.ttl, &zone.soa_parts, &mut names).is_none()
                        {
                            return None;
                        }
                        answers += 1;
                    }
                    // Names in rdata, compressed, and the additional section's addresses
                    // (signed zones' NS, MX and SRV fell back above).
                    Some(set) if matches!(q.qtype, TYPE_NS | TYPE_MX | TYPE_SRV | TYPE_PTR) => {
                        answers += put_named(out, q.qtype, set, &mut names, &mut targets)?;
                    }
                    Some(set) => {
                        for rdata in set.rdata() {
                            put_rr(out, 12, q.qtype, set.ttl, rdata);
                            answers += 1;
                        }
                        if let Some(o) = signing {
                            // A, AAAA, TXT: no names in the rdata, so it is canonical as
                            // stored.
                            let rdatas: smallvec::SmallVec<[&[u8]; 8]> = set.rdata().collect();
                            answers +=
                                put_rrsigs(out, o, key, q.qtype, set.ttl, &rdatas, limited())?;
                        }
                    }
                    None if signing.is_some() => return None, // NODATA's NSEC
                    None => negative = true,
                }
            }
        }
    }
    let mut authority = 0u16;
    if negative {
        // The apex is a suffix of the question name: point at it there, as the reference's
        // encoder does when it remembers that suffix.
        let apex_index = q.labels - apex_labels;
        if apex_index >= MAX_SUFFIXES {
            return None;
        }
        let apex_at = 12 + u16::from(starts[apex_index]);
        put_soa(out, apex_at, zone.negative_ttl, &zone.soa_parts, &mut names)?;
        authority = 1;
        if let Some(o) = signing {
            // Only a name that does not exist gets here signed (NODATA fell back above).
            let ttl = zone.negative_ttl;
            let soa = &zone.soa_parts;
            let mut soa_rd = Vec::with_capacity(soa.mname.len() + soa.rname.len() + 20);
            soa_rd.extend(soa.mname.iter().map(u8::to_ascii_lowercase));
            soa_rd.extend(soa.rname.iter().map(u8::to_ascii_lowercase));
            soa_rd.extend_from_slice(&soa.numbers);
            let apex = &key[usize::from(starts[apex_index])..];
            let sigs = o
                .sign_wire(apex, RecordType::SOA, ttl, &[&soa_rd], limited())
                .ok()??;
            for sig in &sigs {
                put_rr(out, apex_at, TYPE_RRSIG, ttl, sig);
                authority += 1;
            }
            // NSEC at the qname: next `\000.<qname>`, types RRSIG NSEC NXNAME. A qname too
            // long for that next name takes Knot's way on the reference path.
            if key.len() + 2 > 255 {
                return None;
            }
            let mut nsec = Vec::with_capacity(key.len() + 21);
            nsec.extend_from_slice(&[1, 0]);
            nsec.extend_from_slice(key);
            nsec.extend_from_slice(&NXNAME_BITMAP);
            put_rr(out, 12, TYPE_NSEC, ttl, &nsec);
            authority += 1;
            let sigs = o
                .sign_wire(key, RecordType::NSEC, ttl, &[&nsec], limited())
                .ok()??;
            for sig in &sigs {
                put_rr(out, 12, TYPE_RRSIG, ttl, sig);
                authority += 1;
            }
        }
    }
    let mut additional = 0u16;
    if !targets.is_empty() {
        additional = put_addresses(out, zone, origin(), &targets, &mut names)?;
        // Names past hickory's limit of compressed names go uncompressed there: the
        // reference answers such a response (the question, answers' owners and rdata,
        // additional owners).
        if 1 + 2 * usize::from(answers) + usize::from(additional) > MAX_NAMES {
            return None;
        }
    }
    let limit = edns::size_limit(
        transport,
        q.edns.as_ref().map(|e| e.payload),
        snap.wire.max_udp_payload,
    );
    if let Some(e) = &q.edns {
        out.push(0);
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&snap.wire.max_udp_payload.to_be_bytes());
        out.extend_from_slice(&[0, 0, if e.dnssec_ok { 0x80 } else { 0 }, 0]);
        let cookie_len = e.cookie.map_or(0, |_| 4 + cookie::REPLY_LEN);
        let ecs_len = e.ecs.as_ref().map_or(0, |x| 8 + x.3);
        out.extend_from_slice(&((cookie_len + ecs_len) as u16).to_be_bytes());
        if let Some((at, len)) = e.cookie {
            // DNS Cookies, written where dns::handle puts them: before ECS.
            let data = &packet[at..at + len];
            let reply = cookie::reply(&snap.cookie_secret, data, src.ip(), cookie::unix_now());
            out.extend_from_slice(&cookie::OPT_COOKIE.to_be_bytes());
            out.extend_from_slice(&(cookie::REPLY_LEN as u16).to_be_bytes());
            out.extend_from_slice(&reply);
        }
        if let Some((family, source, bytes, nbytes, _)) = &e.ecs {
            out.extend_from_slice(&OPT_ECS.to_be_bytes());
            out.extend_from_slice(&((4 + nbytes) as u16).to_be_bytes());
            out.extend_from_slice(&family.to_be_bytes());
            out.push(*source);
            out.push(scope);
            out.extend_from_slice(&bytes[..*nbytes]);
        }
        additional += 1;
    }
    if out.len() > limit {
        // Truncation rules live in the slow path.
        return None;
    }
    out[3] |= u16::from(rcode) as u8 & 0x0F;
    out[6..8].copy_from_slice(&answers.to_be_bytes());
    out[8..10].copy_from_slice(&authority.to_be_bytes());
    out[10..12].copy_from_slice(&additional.to_be_bytes());
    outcome.rcode = Some(rcode);
    Some(outcome)
}
