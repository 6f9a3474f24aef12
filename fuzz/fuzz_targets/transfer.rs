//! Fuzz target `transfer`: a stream of AXFR/IXFR response messages, as a primary would send
//! them, into the receiver that checks each message (TSIG included) and then into the IXFR
//! apply code and the copy encoder. Nothing may panic, and with TSIG a response whose last
//! message is unsigned must never be accepted (RFC 8945 §5.3.1).
//!
//! Input: byte 0 picks the query type (bit 0: IXFR), TSIG (bit 1) and the caps (bit 2: tiny);
//! byte 1 is a mask of which messages get signed (bit i for message i, the rest unsigned);
//! then messages, each a big-endian u16 length and that many bytes. Each message's ID is set
//! to the query's, so the fuzzer explores the content rather than guessing IDs.
#![no_main]

use hickory_proto::rr::{Name, RData, Record, RecordType};
use libfuzzer_sys::fuzz_target;

use meridian::secondary::{tsig, xfr};
use meridian::zone::copy;

const ID: u16 = 0x4242;
const NOW: u64 = 1_700_000_000;

fn base() -> Vec<Record> {
    use hickory_proto::rr::rdata::{NS, SOA};
    let z = Name::from_ascii("fuzz.test.").expect("name");
    let ns = Name::from_ascii("ns1.fuzz.test.").expect("name");
    vec![
        Record::from_rdata(
            z.clone(),
            300,
            RData::SOA(SOA::new(ns.clone(), ns.clone(), 1, 1, 1, 1, 1)),
        ),
        Record::from_rdata(z, 300, RData::NS(NS(ns.clone()))),
        Record::from_rdata(ns, 300, RData::A("192.0.2.1".parse().expect("ip"))),
    ]
}

fuzz_target!(|data: &[u8]| {
    let [mode, mask, rest @ ..] = data else {
        return;
    };
    let ixfr = mode & 1 != 0;
    let signed = mode & 2 != 0;
    let limits = if mode & 4 != 0 {
        xfr::Limits { max_records: 8, max_bytes: 512 }
    } else {
        xfr::Limits::default()
    };
    let mut msgs = Vec::new();
    let mut rest = rest;
    while let [h, l, tail @ ..] = rest {
        let n = usize::from(u16::from_be_bytes([*h, *l])).min(tail.len());
        let mut m = tail[..n].to_vec();
        if m.len() >= 2 {
            m[..2].copy_from_slice(&ID.to_be_bytes());
        }
        msgs.push(m);
        rest = &tail[n..];
        if msgs.len() >= 16 {
            break;
        }
    }
    let zone = Name::from_ascii("fuzz.test.").expect("name");
    let key = tsig::Key::new("k.", "hmac-sha256", "c2VjcmV0c2VjcmV0c2VjcmV0").expect("key");
    let verifier = signed.then(|| {
        let mut q = vec![0x42, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mac = key.sign(&mut q, NOW);
        // The primary's side: sign the messages the mask picks, chaining the MACs.
        let mut prior = mac.clone();
        let mut unsigned: Vec<Vec<u8>> = Vec::new();
        let mut first = true;
        for (i, m) in msgs.iter_mut().enumerate() {
            if m.len() >= 12 && i < 8 && mask & (1 << i) != 0 {
                let u: Vec<&[u8]> = unsigned.iter().map(Vec::as_slice).collect();
                prior = key.sign_response(m, &prior, &u, first, NOW);
                unsigned.clear();
                first = false;
            } else {
                unsigned.push(m.clone());
            }
        }
        tsig::Verifier::new(key.clone(), mac)
    });
    let qtype = if ixfr { RecordType::IXFR } else { RecordType::AXFR };
    let ours = ixfr.then_some(1);
    let mut rx = xfr::Receiver::new(ID, qtype, zone.clone(), ours, verifier, limits);
    for (i, m) in msgs.iter().enumerate() {
        match rx.push(m, NOW) {
            Ok(None) => continue,
            Err(_) => return,
            Ok(Some(stream)) => {
                if signed {
                    let last_signed = m.len() >= 12 && i < 8 && mask & (1 << i) != 0;
                    assert!(last_signed, "accepted a response whose last message is unsigned");
                }
                let copy = match stream {
                    xfr::Stream::UpToDate => return,
                    xfr::Stream::Whole(c) => c.copy,
                    xfr::Stream::Incremental { records } => {
                        let b = copy::encode(&zone, &base()).expect("base copy");
                        match xfr::apply_ixfr(&zone, &b, records) {
                            Ok(c) => c.copy,
                            Err(_) => return,
                        }
                    }
                };
                // What would be written as the copy reads back.
                copy::decode(&copy, &mut |_| {}).expect("own copy decodes");
                return;
            }
        }
    }
});
