//! Zone transfers in over TCP: IXFR (RFC 1995) from the serial we hold, AXFR (RFC 5936) when
//! we hold nothing or the primary answers IXFR with a whole zone or not at all. Everything
//! read from the primary is checked; a short, malformed, unsigned or wrongly signed transfer
//! is an `Err`, and the caller keeps its last good copy.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::tsig::{Key, Verifier};

/// What a refresh found.
#[derive(Debug)]
pub enum Fetched {
    /// The primary's serial is the one we hold.
    UpToDate,
    /// A new copy of the zone, and how it came.
    Zone {
        records: Vec<Record>,
        serial: u32,
        kind: &'static str,
    },
}

/// Longest a whole transfer may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest number of records accepted in one transfer (a runaway primary must not exhaust
/// memory).
const MAX_RECORDS: usize = 2_000_000;

fn unix_now() -> u64 {
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

/// RFC 1982 serial arithmetic: is `a` newer than `b`?
pub fn newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

/// Refreshes `zone` from `primary`: IXFR from `current` (the records we serve) when we have
/// them, else AXFR.
pub async fn refresh(
    primary: SocketAddr,
    zone: &Name,
    current: Option<&[Record]>,
    key: Option<&Key>,
) -> Result<Fetched, String> {
    let fut = async {
        let have = current.and_then(|c| c.iter().find_map(serial_of).map(|s| (s, c)));
        match have {
            Some((serial, records)) => {
                match transfer(primary, zone, RecordType::IXFR, Some(records), key).await {
                    Err(e) if e.starts_with("rcode") => {
                        // NOTIMP / REFUSED for IXFR: a primary without IXFR; AXFR instead.
                        tracing::debug!(zone = %zone, "IXFR not offered ({e}), AXFR");
                        transfer(primary, zone, RecordType::AXFR, None, key).await
                    }
                    r => r,
                }
                .map(|f| match f {
                    Fetched::Zone { serial: s, .. } if s == serial => Fetched::UpToDate,
                    f => f,
                })
            }
            None => transfer(primary, zone, RecordType::AXFR, None, key).await,
        }
    };
    tokio::time::timeout(TRANSFER_TIMEOUT, fut)
        .await
        .map_err(|_| format!("transfer from {primary} took longer than {TRANSFER_TIMEOUT:?}"))?
}

async fn transfer(
    primary: SocketAddr,
    zone: &Name,
    qtype: RecordType,
    current: Option<&[Record]>,
    key: Option<&Key>,
) -> Result<Fetched, String> {
    let id: u16 = (crate::policy::random_unit() * 65535.0) as u16;
    let mut q = Message::new(id, MessageType::Query, OpCode::Query);
    q.add_query(Query::query(zone.clone(), qtype));
    let our_serial = current.and_then(|c| c.iter().find_map(serial_of));
    if let Some(soa) = current.and_then(|c| c.iter().find(|r| r.record_type() == RecordType::SOA)) {
        // IXFR carries the SOA we hold in the authority section (RFC 1995 §3).
        q.authorities.push(soa.clone());
    }
    let mut wire = q.to_vec().map_err(|e| format!("encode query: {e}"))?;
    let mut verifier = key.map(|k| {
        let mac = k.sign(&mut wire, unix_now());
        Verifier::new(k.clone(), mac)
    });

    let mut sock = tokio::net::TcpStream::connect(primary)
        .await
        .map_err(|e| format!("connect to {primary}: {e}"))?;
    let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&wire);
    sock.write_all(&framed)
        .await
        .map_err(|e| format!("send to {primary}: {e}"))?;

    let mut records: Vec<Record> = Vec::new();
    let mut soas = 0usize;
    let mut first_serial: Option<u32> = None;
    loop {
        let mut len = [0u8; 2];
        sock.read_exact(&mut len)
            .await
            .map_err(|e| format!("transfer from {primary} ended early: {e}"))?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        sock.read_exact(&mut buf)
            .await
            .map_err(|e| format!("transfer from {primary} ended early: {e}"))?;
        if buf.len() < 12 {
            return Err("malformed message (shorter than a header)".into());
        }
        if let Some(v) = verifier.as_mut() {
            buf = v.check(&buf, unix_now())?;
        }
        let m = Message::from_vec(&buf).map_err(|e| format!("malformed message: {e}"))?;
        if m.metadata.id != id || m.metadata.message_type != MessageType::Response {
            return Err("response does not match the query".into());
        }
        if m.metadata.response_code != ResponseCode::NoError {
            return Err(format!("rcode {}", m.metadata.response_code));
        }
        for r in m.answers {
            if r.record_type() == RecordType::SOA {
                soas += 1;
                let s = serial_of(&r);
                if first_serial.is_none() {
                    first_serial = s;
                }
            } else if records.is_empty() {
                return Err("transfer does not start with the zone's SOA".into());
            }
            if !zone.zone_of(&r.name) {
                return Err(format!("record {} lies outside {zone}", r.name));
            }
            records.push(r);
            if records.len() > MAX_RECORDS {
                return Err(format!("more than {MAX_RECORDS} records"));
            }
        }
        let Some(first) = first_serial else {
            continue;
        };
        // IXFR answered with one SOA: nothing newer than what we hold (RFC 1995 §4).
        if qtype == RecordType::IXFR
            && records.len() == 1
            && our_serial.is_some_and(|s| !newer(first, s))
        {
            return Ok(Fetched::UpToDate);
        }
        let incremental = qtype == RecordType::IXFR
            && records.len() >= 2
            && records[1].record_type() == RecordType::SOA;
        let done = if incremental {
            // Incremental: the last record is the final SOA again, with the new serial:
            // SOA(new) [SOA(old) dels SOA(mid) adds]... SOA(new).
            soas >= 3
                && records.len() > 2
                && records
                    .last()
                    .and_then(serial_of)
                    .is_some_and(|s| s == first)
                && soas.is_multiple_of(2)
        } else {
            soas >= 2 && records.last().map(|r| r.record_type()) == Some(RecordType::SOA)
        };
        if !done {
            continue;
        }
        if incremental {
            let base = current.ok_or("incremental transfer without a copy to apply it to")?;
            let applied = apply_ixfr(base, &records)?;
            return Ok(Fetched::Zone {
                records: applied,
                serial: first,
                kind: "IXFR",
            });
        }
        records.pop(); // the closing SOA
        return Ok(Fetched::Zone {
            records,
            serial: first,
            kind: if qtype == RecordType::IXFR {
                "IXFR (whole zone)"
            } else {
                "AXFR"
            },
        });
    }
}

/// Applies the difference sequences of an incremental IXFR response to `base`.
fn apply_ixfr(base: &[Record], resp: &[Record]) -> Result<Vec<Record>, String> {
    let final_soa = resp.first().ok_or("empty IXFR")?.clone();
    let mut zone: Vec<Record> = base
        .iter()
        .filter(|r| r.record_type() != RecordType::SOA)
        .cloned()
        .collect();
    let body = &resp[1..resp.len() - 1];
    // Each sequence: SOA(old) deletions... SOA(new) additions...
    let mut i = 0;
    let mut expect = base.iter().find_map(serial_of);
    while i < body.len() {
        let old = serial_of(&body[i]).ok_or("IXFR sequence without its SOA")?;
        if expect.is_some_and(|e| e != old) {
            return Err(format!(
                "IXFR sequence starts at serial {old}, we hold {expect:?}"
            ));
        }
        i += 1;
        while i < body.len() && body[i].record_type() != RecordType::SOA {
            let d = &body[i];
            let before = zone.len();
            zone.retain(|r| !same_rr(r, d));
            if zone.len() == before {
                return Err(format!(
                    "IXFR deletes {} {}, which we do not hold",
                    d.name,
                    d.record_type()
                ));
            }
            i += 1;
        }
        let new = body
            .get(i)
            .and_then(serial_of)
            .ok_or("IXFR sequence without its new SOA")?;
        i += 1;
        while i < body.len() && body[i].record_type() != RecordType::SOA {
            if !zone.iter().any(|r| same_rr(r, &body[i])) {
                zone.push(body[i].clone());
            }
            i += 1;
        }
        expect = Some(new);
    }
    if expect != serial_of(&final_soa) {
        return Err("IXFR does not end at the serial it announced".into());
    }
    zone.insert(0, final_soa);
    Ok(zone)
}

fn same_rr(a: &Record, b: &Record) -> bool {
    a.record_type() == b.record_type()
        && a.name.to_lowercase() == b.name.to_lowercase()
        && a.data == b.data
}
