//! Fuzz target `copy`: random records -> the copy of a secondary zone -> read back -> the same
//! records, byte for byte (owner names with any byte, every type, any rdata hickory accepts);
//! and the raw input as a copy file: the reader may refuse it, never panic.
//!
//! Input: records, each: owner (1 byte count of labels, then each label as 1 byte length and
//! bytes), type u16, ttl u32, rdata length u16 and rdata. Records whose rdata hickory does not
//! accept for the type are skipped (a transfer carrying them fails to parse before the copy).
#![no_main]

use hickory_proto::rr::{Name, Record, RecordType};
use libfuzzer_sys::fuzz_target;

use meridian::zone::copy;

fn take<'a>(d: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (a, b) = d.split_at_checked(n)?;
    *d = b;
    Some(a)
}

fn record(d: &mut &[u8], zone: &Name) -> Option<Option<Record>> {
    let labels = *take(d, 1)?.first()? % 4;
    let mut parts: Vec<Vec<u8>> = Vec::new();
    for _ in 0..labels {
        let n = usize::from(*take(d, 1)?.first()? % 64);
        parts.push(take(d, n)?.to_vec());
    }
    let h = take(d, 8)?;
    let rtype = RecordType::from(u16::from_be_bytes([h[0], h[1]]));
    let ttl = u32::from_be_bytes([h[2], h[3], h[4], h[5]]);
    let len = usize::from(u16::from_be_bytes([h[6], h[7]]));
    let rdata = take(d, len.min(d.len()))?;
    let Ok(mut owner) = Name::from_labels(parts.iter().map(Vec::as_slice)) else {
        return Some(None);
    };
    owner = match owner.append_domain(zone) {
        Ok(o) => o,
        Err(_) => return Some(None),
    };
    if matches!(rtype, RecordType::OPT | RecordType::SIG | RecordType::TSIG) {
        return Some(None);
    }
    let Some(data) = meridian::zone::decode_rdata(rtype, rdata) else {
        return Some(None);
    };
    Some(Some(Record::from_rdata(owner, ttl, data)))
}

fuzz_target!(|data: &[u8]| {
    // The input as a copy file.
    let _ = copy::decode(data, &mut |_| {});

    let zone = Name::from_ascii("fuzz.test.").expect("name");
    let mut d = data;
    let mut records = Vec::new();
    while let Some(r) = record(&mut d, &zone) {
        records.extend(r);
        if records.len() > 64 {
            break;
        }
    }
    let Ok(bytes) = copy::encode(&zone, &records) else {
        return;
    };
    let mut back = Vec::new();
    let z = copy::decode(&bytes, &mut |r| back.push(r)).expect("a copy we wrote reads back");
    assert_eq!(z, zone);
    assert_eq!(back.len(), records.len());
    for (a, b) in records.iter().zip(&back) {
        assert_eq!(a.name.to_ascii(), b.name.to_ascii(), "owner");
        assert_eq!(a.record_type(), b.record_type());
        assert_eq!(a.ttl, b.ttl);
        assert_eq!(
            meridian::zone::rdata_wire(&a.data),
            meridian::zone::rdata_wire(&b.data),
            "{} {} rdata",
            a.name,
            a.record_type()
        );
    }
});
