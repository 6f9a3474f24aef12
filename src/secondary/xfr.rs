//! Zone transfers in over TCP: a SOA query first (RFC 1996 §4.7: transfer only when the
//! primary's serial is newer, RFC 1982), then IXFR (RFC 1995) from the serial we hold, or AXFR
//! (RFC 5936) when we hold nothing, when the primary refuses IXFR or when its IXFR cannot be
//! applied to our copy. Everything read from the primary is checked; a short, malformed,
//! oversized, unsigned or wrongly signed transfer is an `Err`, and the caller keeps its last
//! good copy.
//!
//! All of it is blocking code on purpose: the caller runs it on a blocking thread
//! (`spawn_blocking`), never on the threads that answer queries or the admin API, and a
//! 100,000-record transfer then costs them nothing. [`Receiver`] is the message-by-message
//! state machine with no I/O, which the `transfer` fuzz target drives directly.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::tsig::{Key, Verifier};

/// What a refresh found.
#[derive(Debug)]
pub enum Fetched {
    /// The primary's serial is the one we hold.
    UpToDate,
    /// The primary's serial is not newer than ours (RFC 1982): nothing applied.
    NotNewer { theirs: u32, ours: u32 },
    /// A new copy of the zone (encoded, [`super::copy`]), and how it came.
    Zone(Box<NewCopy>, &'static str),
}

/// A zone as received, encoded as its copy.
#[derive(Debug)]
pub struct NewCopy {
    /// The copy's bytes ([`super::copy`]).
    pub copy: Vec<u8>,
    /// The zone's SOA (its timers drive the refresh).
    pub soa: Record,
    pub records: u64,
    pub serial: u32,
}

/// Caps on one transfer (`[[secondary]] max_records`, `max_bytes`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Records received (every record of every message, SOAs included).
    pub max_records: u64,
    /// Bytes received on the wire (messages with their length prefixes).
    pub max_bytes: u64,
}

/// The caps without `max_records` / `max_bytes`, set by the config.
pub use crate::config::secondary::{DEFAULT_MAX_BYTES, DEFAULT_MAX_RECORDS};

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_records: DEFAULT_MAX_RECORDS,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// Why a transfer failed: the caller falls back to AXFR on the first two.
#[derive(Debug)]
pub enum XfrError {
    /// The primary answered IXFR with an error rcode (no IXFR for this zone or serial).
    Refused(String),
    /// An IXFR that was received whole and verified but does not apply to our copy.
    CannotApply(String),
    Other(String),
}

impl std::fmt::Display for XfrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            XfrError::Refused(m) | XfrError::CannotApply(m) | XfrError::Other(m) => f.write_str(m),
        }
    }
}

impl From<String> for XfrError {
    fn from(m: String) -> XfrError {
        XfrError::Other(m)
    }
}

impl From<&str> for XfrError {
    fn from(m: &str) -> XfrError {
        XfrError::Other(m.to_string())
    }
}

/// Longest wait for the next message of a transfer.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a whole refresh may take (a 1M-record AXFR on a LAN takes seconds).
const REFRESH_TIMEOUT: Duration = Duration::from_secs(600);

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn serial_of(r: &Record) -> Option<u32> {
    match &r.data {
        RData::SOA(s) => Some(s.serial),
        _ => None,
    }
}

/// RFC 1982 serial arithmetic: is `a` newer than `b`? (`a - b` in (0, 2^31); the one value
/// exactly 2^31 away is undefined by the RFC and counts as not newer, as in BIND.)
pub fn newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

/// Refreshes `zone` from `primary` (blocking): the SOA first, then IXFR from `current` (the
/// SOA we serve) when we hold a copy, else AXFR. `base` gives the copy we serve
/// ([`super::copy`] bytes), read only when an IXFR has to be applied.
pub fn refresh(
    primary: SocketAddr,
    zone: &Name,
    current: Option<&Record>,
    base: &mut dyn FnMut() -> Option<Vec<u8>>,
    key: Option<&Key>,
    limits: Limits,
) -> Result<Fetched, String> {
    let deadline = Instant::now() + REFRESH_TIMEOUT;
    let ours = current.and_then(serial_of);
    let (Some(ours), Some(soa)) = (ours, current) else {
        return match transfer(primary, zone, RecordType::AXFR, None, key, limits, deadline) {
            Ok(Stream::Whole(c)) => Ok(Fetched::Zone(c, "AXFR")),
            Ok(_) => Err("AXFR answered with something other than a whole zone".into()),
            Err(e) => Err(e.to_string()),
        };
    };
    // NOTIFY and timers alike ask the SOA first: a transfer only when it is newer.
    let theirs = soa_serial(primary, zone, key, deadline)?;
    if theirs == ours {
        return Ok(Fetched::UpToDate);
    }
    if !newer(theirs, ours) {
        return Ok(Fetched::NotNewer { theirs, ours });
    }
    let whole = |c: Box<NewCopy>, kind| {
        if newer(c.serial, ours) {
            Ok(Fetched::Zone(c, kind))
        } else {
            Ok(Fetched::NotNewer {
                theirs: c.serial,
                ours,
            })
        }
    };
    let fallback = |why: String| {
        tracing::info!(zone = %zone, "IXFR not usable ({why}): AXFR instead");
        match transfer(primary, zone, RecordType::AXFR, None, key, limits, deadline) {
            Ok(Stream::Whole(c)) => whole(c, "AXFR"),
            Ok(_) => Err("AXFR answered with something other than a whole zone".into()),
            Err(e) => Err(e.to_string()),
        }
    };
    match transfer(
        primary,
        zone,
        RecordType::IXFR,
        Some(soa),
        key,
        limits,
        deadline,
    ) {
        Ok(Stream::UpToDate) => Ok(Fetched::UpToDate),
        Ok(Stream::Whole(c)) => whole(c, "IXFR (whole zone)"),
        Ok(Stream::Incremental { records }) => match base()
            .ok_or_else(|| "the copy is no longer served".to_string())
            .and_then(|b| apply_ixfr(zone, &b, records))
        {
            Ok(applied) => whole(Box::new(applied), "IXFR"),
            Err(e) => fallback(format!("it does not apply to our copy: {e}")),
        },
        Err(XfrError::Refused(e)) => fallback(e),
        Err(XfrError::CannotApply(e)) => fallback(e),
        Err(XfrError::Other(e)) => Err(e),
    }
}

/// A query for `zone` `qtype`, TSIG-signed with `key`: its wire form and the verifier of the
/// response.
fn query(
    zone: &Name,
    qtype: RecordType,
    current_soa: Option<&Record>,
    key: Option<&Key>,
) -> Result<(u16, Vec<u8>, Option<Verifier>), String> {
    let id: u16 = (crate::base::random::random_unit() * 65535.0) as u16;
    let mut q = Message::new(id, MessageType::Query, OpCode::Query);
    q.add_query(Query::query(zone.clone(), qtype));
    if let Some(soa) = current_soa {
        // IXFR carries the SOA we hold in the authority section (RFC 1995 §3).
        q.authorities.push(soa.clone());
    }
    let mut wire = q.to_vec().map_err(|e| format!("encode query: {e}"))?;
    let verifier = key.map(|k| {
        let mac = k.sign(&mut wire, unix_now());
        Verifier::new(k.clone(), mac)
    });
    Ok((id, wire, verifier))
}

fn remaining(deadline: Instant) -> Result<Duration, String> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("refresh took longer than {REFRESH_TIMEOUT:?}"))
}

fn connect(primary: SocketAddr, wire: &[u8], deadline: Instant) -> Result<TcpStream, String> {
    let t = remaining(deadline)?.min(READ_TIMEOUT);
    let mut sock = TcpStream::connect_timeout(&primary, t)
        .map_err(|e| format!("connect to {primary}: {e}"))?;
    let _ = sock.set_nodelay(true);
    let _ = sock.set_write_timeout(Some(READ_TIMEOUT));
    let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(wire);
    sock.write_all(&framed)
        .map_err(|e| format!("send to {primary}: {e}"))?;
    Ok(sock)
}

/// Reads one length-prefixed message into `buf`.
fn read_message(sock: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> Result<(), String> {
    sock.set_read_timeout(Some(remaining(deadline)?.min(READ_TIMEOUT)))
        .map_err(|e| format!("socket: {e}"))?;
    let mut len = [0u8; 2];
    sock.read_exact(&mut len)
        .map_err(|e| format!("transfer ended early: {e}"))?;
    buf.clear();
    buf.resize(u16::from_be_bytes(len) as usize, 0);
    sock.read_exact(buf)
        .map_err(|e| format!("transfer ended early: {e}"))
}

/// The primary's SOA serial for `zone`, asked over TCP (signed when there is a key).
fn soa_serial(
    primary: SocketAddr,
    zone: &Name,
    key: Option<&Key>,
    deadline: Instant,
) -> Result<u32, String> {
    let (id, wire, mut verifier) = query(zone, RecordType::SOA, None, key)?;
    let mut sock = connect(primary, &wire, deadline)?;
    let mut buf = Vec::new();
    read_message(&mut sock, &mut buf, deadline).map_err(|e| format!("SOA query: {e}"))?;
    if buf.len() < 12 {
        return Err("SOA query: malformed answer (shorter than a header)".into());
    }
    if let Some(v) = verifier.as_mut() {
        buf = v.check(&buf, unix_now())?;
        v.finish()?;
    }
    let m = Message::from_vec(&buf).map_err(|e| format!("SOA query: malformed answer: {e}"))?;
    if m.metadata.id != id || m.metadata.message_type != MessageType::Response {
        return Err("SOA query: answer does not match the query".into());
    }
    if m.metadata.response_code != ResponseCode::NoError {
        return Err(format!("SOA query: rcode {}", m.metadata.response_code));
    }
    m.answers
        .iter()
        .filter(|r| r.name == *zone)
        .find_map(serial_of)
        .ok_or_else(|| "SOA query: the answer holds no SOA of the zone".into())
}

/// A complete, verified transfer response.
#[derive(Debug)]
pub enum Stream {
    /// IXFR answered with our own SOA alone.
    UpToDate,
    /// The whole zone (AXFR, or IXFR answered AXFR-style), encoded as its copy as it arrived,
    /// without the closing SOA.
    Whole(Box<NewCopy>),
    /// IXFR difference sequences: SOA(new) [SOA(old) deletions SOA(new') additions]... SOA(new).
    Incremental { records: Vec<Record> },
}

/// Reads one transfer response message by message, checking each; no I/O, so that the
/// `transfer` fuzz target drives it directly. A whole zone is encoded into its copy as it
/// arrives (one record behind, so the closing SOA stays out); only an incremental IXFR, usually
/// small, is held as records.
pub struct Receiver {
    id: u16,
    qtype: RecordType,
    zone: Name,
    ours: Option<u32>,
    verifier: Option<Verifier>,
    limits: Limits,
    /// The records while it is not yet known whether the response is incremental.
    records: Vec<Record>,
    /// Set once the response is known to be a whole zone.
    writer: Option<super::copy::Writer>,
    /// The last record of a whole zone, not yet written (it may be the closing SOA).
    held: Option<Record>,
    first_soa: Option<Record>,
    /// Type and serial of the last record received.
    last: Option<(RecordType, Option<u32>)>,
    soas: usize,
    first_serial: Option<u32>,
    bytes: u64,
    received: u64,
}

impl Receiver {
    /// `id` is the query's; `ours` the serial we hold (IXFR); `verifier` checks TSIG.
    pub fn new(
        id: u16,
        qtype: RecordType,
        zone: Name,
        ours: Option<u32>,
        verifier: Option<Verifier>,
        limits: Limits,
    ) -> Receiver {
        Receiver {
            id,
            qtype,
            writer: (qtype != RecordType::IXFR)
                .then(|| super::copy::Writer::new(&zone).ok())
                .flatten(),
            zone,
            ours,
            verifier,
            limits,
            records: Vec::new(),
            held: None,
            first_soa: None,
            last: None,
            soas: 0,
            first_serial: None,
            bytes: 0,
            received: 0,
        }
    }

    /// Takes the next message as received; `Ok(Some(_))` once the response is complete and
    /// verified (the caller reads no further), `Ok(None)` when more is to come.
    pub fn push(&mut self, msg: &[u8], now: u64) -> Result<Option<Stream>, XfrError> {
        self.bytes += msg.len() as u64 + 2;
        if self.bytes > self.limits.max_bytes {
            return Err(format!(
                "transfer is larger than max_bytes = {} bytes: rejected",
                self.limits.max_bytes
            )
            .into());
        }
        if msg.len() < 12 {
            return Err("malformed message (shorter than a header)".into());
        }
        let owned;
        let msg = match self.verifier.as_mut() {
            Some(v) => {
                owned = v.check(msg, now)?;
                &owned[..]
            }
            None => msg,
        };
        let m = Message::from_vec(msg).map_err(|e| format!("malformed message: {e}"))?;
        if m.metadata.id != self.id || m.metadata.message_type != MessageType::Response {
            return Err("response does not match the query".into());
        }
        if m.metadata.response_code != ResponseCode::NoError {
            let e = format!("rcode {}", m.metadata.response_code);
            return Err(if self.qtype == RecordType::IXFR && self.last.is_none() {
                XfrError::Refused(e)
            } else {
                XfrError::Other(e)
            });
        }
        self.received += m.answers.len() as u64;
        if self.received > self.limits.max_records {
            return Err(format!(
                "transfer has more than max_records = {} records: rejected",
                self.limits.max_records
            )
            .into());
        }
        for r in m.answers {
            let serial = serial_of(&r);
            if r.record_type() == RecordType::SOA {
                self.soas += 1;
                if self.first_serial.is_none() {
                    if r.name != self.zone {
                        return Err(format!("transfer starts with the SOA of {}", r.name).into());
                    }
                    self.first_serial = serial;
                    self.first_soa = Some(r.clone());
                }
            } else if self.last.is_none() {
                return Err("transfer does not start with the zone's SOA".into());
            }
            if !self.zone.zone_of(&r.name) {
                return Err(format!("record {} lies outside {}", r.name, self.zone).into());
            }
            self.last = Some((r.record_type(), serial));
            match self.writer.as_mut() {
                Some(w) => {
                    if let Some(prev) = self.held.replace(r) {
                        w.push(&prev)?;
                    }
                }
                None => {
                    self.records.push(r);
                    // IXFR: a second record that is not an SOA means a whole zone.
                    if self.records.len() == 2 && self.records[1].record_type() != RecordType::SOA {
                        let mut w = super::copy::Writer::new(&self.zone)?;
                        w.push(&self.records[0])?;
                        self.held = self.records.pop();
                        self.records.clear();
                        self.writer = Some(w);
                    }
                }
            }
        }
        let Some(first) = self.first_serial else {
            return Ok(None);
        };
        let streaming = self.writer.is_some();
        let n = self.records.len();
        // IXFR answered with one SOA: nothing newer than what we hold (RFC 1995 §4).
        let up_to_date = !streaming
            && self.qtype == RecordType::IXFR
            && n == 1
            && self.ours.is_some_and(|s| !newer(first, s));
        let done = up_to_date
            || if streaming {
                self.soas >= 2 && self.last.map(|l| l.0) == Some(RecordType::SOA)
            } else {
                // SOA(new) [SOA(old) dels SOA(mid) adds]... SOA(new): the closing SOA is the
                // one that makes the count of SOAs even with the first serial again.
                n >= 2
                    && self.soas >= 4
                    && self.soas.is_multiple_of(2)
                    && self.last.and_then(|l| l.1) == Some(first)
            };
        if !done {
            return Ok(None);
        }
        if let Some(v) = &self.verifier {
            // The last message must be signed: an unsigned tail is never applied.
            v.finish()?;
        }
        if up_to_date {
            return Ok(Some(Stream::UpToDate));
        }
        let Some(w) = self.writer.take() else {
            return Ok(Some(Stream::Incremental {
                records: std::mem::take(&mut self.records),
            }));
        };
        // `held` is the closing SOA, left out of the copy.
        if self.held.take().as_ref().and_then(serial_of) != Some(first) {
            return Err("transfer ends with another serial than it started with".into());
        }
        if self.soas != 2 {
            return Err("zone holds more than one SOA".into());
        }
        let soa = self.first_soa.take().ok_or("no SOA")?;
        Ok(Some(Stream::Whole(Box::new(NewCopy {
            records: w.count(),
            copy: w.finish(),
            soa,
            serial: first,
        }))))
    }
}

fn transfer(
    primary: SocketAddr,
    zone: &Name,
    qtype: RecordType,
    soa: Option<&Record>,
    key: Option<&Key>,
    limits: Limits,
    deadline: Instant,
) -> Result<Stream, XfrError> {
    let (id, wire, verifier) = query(zone, qtype, soa, key)?;
    let mut sock = connect(primary, &wire, deadline)?;
    let mut rx = Receiver::new(
        id,
        qtype,
        zone.clone(),
        soa.and_then(serial_of),
        verifier,
        limits,
    );
    let mut buf = Vec::new();
    loop {
        read_message(&mut sock, &mut buf, deadline).map_err(|e| format!("{primary}: {e}"))?;
        if let Some(s) = rx.push(&buf, unix_now())? {
            return Ok(s);
        }
    }
}

/// A record's identity for IXFR, written into `out`: owner (lower case), type, then rdata in
/// uncompressed wire form with the names inside it lowercased (as `RData` equality compares
/// them). Label length bytes are at most 63, so lowercasing whole wire names is safe.
fn key_into(out: &mut Vec<u8>, owner: &[u8], rtype: u16, rdata: &[u8]) {
    out.clear();
    out.extend(owner.iter().map(u8::to_ascii_lowercase));
    out.extend_from_slice(&rtype.to_be_bytes());
    let at = out.len();
    out.extend_from_slice(rdata);
    let fixed = match RecordType::from(rtype) {
        RecordType::NS | RecordType::CNAME | RecordType::PTR | RecordType::DNAME => Some(0),
        RecordType::MX => Some(2),
        RecordType::SRV => Some(6),
        _ => None,
    };
    if let Some(tail) = fixed.and_then(|f| out.get_mut(at + f..)) {
        tail.make_ascii_lowercase();
    }
}

fn record_key(r: &Record, out: &mut Vec<u8>) -> bool {
    let Some(data) = crate::zone::rdata_wire(&r.data) else {
        return false;
    };
    let (mut owner, mut starts) = (Vec::new(), Vec::new());
    crate::zone::wire_lower(&r.name, &mut owner, &mut starts);
    key_into(out, &owner, u16::from(r.record_type()), &data);
    true
}

/// Index entries at or above this are additions (`added[v - ADDED]`), below it base records.
const ADDED: u32 = 1 << 31;

/// The base copy and the additions made so far, indexed by a keyed hash of each record's
/// identity. Only hashes and offsets are held, never keys: a lookup recomputes the candidate's
/// key and compares, and a collision (a 64-bit keyed hash: in practice never) is an error, so
/// the caller falls back to AXFR rather than apply anything wrong.
struct Index<'a> {
    base: &'a [u8],
    offs: Vec<u32>,
    alive: Vec<bool>,
    added: Vec<Option<Record>>,
    map: HashMap<u64, u32>,
    hasher: std::collections::hash_map::RandomState,
    k1: Vec<u8>,
    k2: Vec<u8>,
}

impl Index<'_> {
    fn entry_key(&mut self, v: u32) -> bool {
        if v >= ADDED {
            match self.added.get((v - ADDED) as usize) {
                Some(Some(r)) => record_key(r, &mut self.k2),
                _ => false,
            }
        } else {
            match self
                .offs
                .get(v as usize)
                .and_then(|&o| super::copy::raw_at(self.base, o as usize))
            {
                Some(r) => {
                    key_into(&mut self.k2, r.owner, r.rtype, r.rdata);
                    true
                }
                None => false,
            }
        }
    }

    /// The entry holding the record whose key is in `k1`, and the key's hash.
    fn find(&mut self) -> Result<(u64, Option<u32>), String> {
        use std::hash::BuildHasher;
        let h = self.hasher.hash_one(&self.k1);
        let Some(&v) = self.map.get(&h) else {
            return Ok((h, None));
        };
        if self.entry_key(v) && self.k1 == self.k2 {
            Ok((h, Some(v)))
        } else {
            Err("two records share an index hash".into())
        }
    }
}

/// Applies the difference sequences of an incremental IXFR response to `base`, the copy we
/// serve ([`super::copy`] bytes), and returns the new copy, in time linear in the sizes of
/// both and memory about twice the copy: base records are indexed by offset and copied over
/// byte for byte, never decoded. `Err` when a sequence does not follow from the serial before
/// it or deletes a record we do not hold: the caller then transfers the whole zone.
pub fn apply_ixfr(zone: &Name, base: &[u8], resp: Vec<Record>) -> Result<NewCopy, String> {
    let final_soa = resp.first().ok_or("empty IXFR")?.clone();
    let (bzone, offs) = super::copy::raw_offsets(base)?;
    if bzone != *zone {
        return Err(format!("the copy is of {bzone}, not {zone}"));
    }
    let first = offs
        .first()
        .and_then(|&o| super::copy::raw_at(base, o as usize))
        .filter(|r| r.rtype == u16::from(RecordType::SOA))
        .ok_or("the copy does not start with its SOA")?;
    let mut expect =
        crate::zone::decode_rdata(RecordType::SOA, first.rdata).and_then(|d| match d {
            RData::SOA(s) => Some(s.serial),
            _ => None,
        });
    let n = offs.len();
    let mut ix = Index {
        base,
        alive: vec![true; n],
        offs,
        added: Vec::new(),
        map: HashMap::with_capacity(n),
        hasher: Default::default(),
        k1: Vec::with_capacity(256),
        k2: Vec::with_capacity(256),
    };
    ix.alive[0] = false; // the old SOA; the final one is written first
    for i in 1..n {
        let Some(r) = super::copy::raw_at(base, ix.offs[i] as usize) else {
            return Err("copy is damaged".into());
        };
        key_into(&mut ix.k1, r.owner, r.rtype, r.rdata);
        match ix.find()? {
            (_, Some(_)) => ix.alive[i] = false, // a duplicate
            (h, None) => {
                ix.map.insert(h, i as u32);
            }
        }
    }
    let len = resp.len();
    if len < 2 {
        return Err("IXFR too short".into());
    }
    let mut body = resp.into_iter().take(len - 1).skip(1).peekable();
    while let Some(old_soa) = body.next() {
        let old = serial_of(&old_soa).ok_or("IXFR sequence without its SOA")?;
        if expect.is_some_and(|e| e != old) {
            return Err(format!(
                "IXFR sequence starts at serial {old}, we hold {}",
                expect.map_or("nothing".into(), |e| e.to_string())
            ));
        }
        while let Some(d) = body.next_if(|r| r.record_type() != RecordType::SOA) {
            if !record_key(&d, &mut ix.k1) {
                return Err("IXFR record cannot be encoded".into());
            }
            match ix.find()? {
                (h, Some(v)) => {
                    ix.map.remove(&h);
                    if v >= ADDED {
                        ix.added[(v - ADDED) as usize] = None;
                    } else {
                        ix.alive[v as usize] = false;
                    }
                }
                (_, None) => {
                    return Err(format!(
                        "IXFR deletes {} {}, which we do not hold",
                        d.name,
                        d.record_type()
                    ))
                }
            }
        }
        let new = body
            .next()
            .as_ref()
            .and_then(serial_of)
            .ok_or("IXFR sequence without its new SOA")?;
        if !newer(new, old) {
            return Err(format!(
                "IXFR sequence goes from serial {old} back to {new}"
            ));
        }
        while let Some(a) = body.next_if(|r| r.record_type() != RecordType::SOA) {
            if !record_key(&a, &mut ix.k1) {
                return Err("IXFR record cannot be encoded".into());
            }
            if let (h, None) = ix.find()? {
                let v = ADDED + u32::try_from(ix.added.len()).map_err(|_| "IXFR too large")?;
                ix.map.insert(h, v);
                ix.added.push(Some(a));
            }
        }
        expect = Some(new);
    }
    let serial = serial_of(&final_soa);
    if expect != serial {
        return Err("IXFR does not end at the serial it announced".into());
    }
    drop(ix.map);
    let mut w = super::copy::Writer::new(zone)?;
    w.push(&final_soa)?;
    for (i, &o) in ix.offs.iter().enumerate() {
        if ix.alive[i] {
            let r = super::copy::raw_at(base, o as usize).ok_or("copy is damaged")?;
            w.push_raw(r.bytes);
        }
    }
    for a in ix.added.iter().flatten() {
        w.push(a)?;
    }
    Ok(NewCopy {
        records: w.count(),
        copy: w.finish(),
        soa: final_soa,
        serial: serial.ok_or("IXFR without a serial")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, data: RData) -> Record {
        Record::from_rdata(Name::from_ascii(name).expect("name"), 300, data)
    }

    fn soa(serial: u32) -> Record {
        use hickory_proto::rr::rdata::SOA;
        let n = Name::from_ascii("z.").expect("n");
        rec("z.", RData::SOA(SOA::new(n.clone(), n, serial, 1, 1, 1, 1)))
    }

    fn a(name: &str, ip: &str) -> Record {
        rec(name, RData::A(ip.parse().expect("ip")))
    }

    /// `apply_ixfr` on records: through the copy form and back.
    fn apply(base: &[Record], resp: Vec<Record>) -> Result<Vec<Record>, String> {
        let z = Name::from_ascii("z.").expect("n");
        let bytes = crate::zone::copy::encode(&z, base)?;
        let c = apply_ixfr(&z, &bytes, resp)?;
        let mut out = Vec::new();
        crate::zone::copy::decode(&c.copy, &mut |r| out.push(r))?;
        assert_eq!(c.records, out.len() as u64);
        Ok(out)
    }

    #[test]
    fn serial_arithmetic_follows_rfc_1982() {
        assert!(newer(2, 1));
        assert!(newer(0, u32::MAX), "wraps");
        assert!(!newer(1, 2));
        assert!(!newer(5, 5));
        assert!(
            !newer(1u32.wrapping_add(0x8000_0000), 1),
            "exactly half way"
        );
    }

    #[test]
    fn ixfr_applies_deletions_and_additions_across_sequences() {
        let base = vec![soa(1), a("a.z.", "192.0.2.1"), a("B.z.", "192.0.2.2")];
        let resp = vec![
            soa(3),
            soa(1),
            a("b.z.", "192.0.2.2"), // case differs: same record
            soa(2),
            a("c.z.", "192.0.2.3"),
            soa(2),
            a("a.z.", "192.0.2.1"),
            soa(3),
            a("d.z.", "192.0.2.4"),
            soa(3),
        ];
        let out = apply(&base, resp).expect("applies");
        let names: Vec<String> = out.iter().map(|r| r.name.to_ascii()).collect();
        assert_eq!(names, ["z.", "c.z.", "d.z."]);
        assert_eq!(serial_of(&out[0]), Some(3));
    }

    #[test]
    fn ixfr_compares_names_in_rdata_without_case_and_keeps_duplicates_out() {
        use hickory_proto::rr::rdata::{MX, NS};
        let n = |s: &str| Name::from_ascii(s).expect("n");
        let base = vec![
            soa(1),
            rec("z.", RData::NS(NS(n("NS1.Z.")))),
            rec("z.", RData::MX(MX::new(10, n("Mail.z.")))),
            a("a.z.", "192.0.2.1"),
            a("a.z.", "192.0.2.1"),
        ];
        let resp = vec![
            soa(2),
            soa(1),
            rec("Z.", RData::NS(NS(n("ns1.z.")))),
            rec("z.", RData::MX(MX::new(10, n("MAIL.Z.")))),
            soa(2),
            a("a.z.", "192.0.2.1"), // already held: not added twice
            soa(2),
        ];
        let out = apply(&base, resp).expect("applies");
        let kinds: Vec<RecordType> = out.iter().map(Record::record_type).collect();
        assert_eq!(kinds, [RecordType::SOA, RecordType::A]);
        // MX preference 10 vs another preference is another record.
        let base = vec![soa(1), rec("z.", RData::MX(MX::new(10, n("m.z."))))];
        let resp = vec![
            soa(2),
            soa(1),
            rec("z.", RData::MX(MX::new(11, n("m.z.")))),
            soa(2),
            soa(2),
        ];
        assert!(apply(&base, resp).is_err());
    }

    #[test]
    fn ixfr_that_does_not_apply_is_an_error() {
        let base = vec![soa(1), a("a.z.", "192.0.2.1")];
        let gone = vec![soa(2), soa(1), a("x.z.", "192.0.2.9"), soa(2), soa(2)];
        assert!(apply(&base, gone).is_err());
        let wrong_start = vec![soa(3), soa(2), soa(3), soa(3)];
        assert!(apply(&base, wrong_start).is_err());
        let backwards = vec![soa(0), soa(1), soa(0), soa(0)];
        assert!(apply(&base, backwards).is_err());
    }
}
