//! Test data and packet helpers for the wire tests (`tests/wire_*.rs`): the `wire.test` zone
//! with what the shipped example lacks, record display for comparing sections, and raw packet
//! builders (header, question, OPT options) for what hickory's encoder would normalise.

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::{example_config, TestServer, EXAMPLE_ZONE};

// ---------------------------------------------------------------------------------------------
// Test data

/// A zone with everything the shipped example lacks: CNAME chains and loops, wildcards, empty
/// non-terminals, and TXT RRsets of chosen sizes for the payload tests. Its SOA TTL (60) is below
/// its MINIMUM (900), the opposite of the example zone, so both halves of min() are exercised.
pub fn wire_zone() -> String {
    let mut z = String::from(
        "$TTL 600
@        60 IN SOA ns1 hostmaster ( 7 3600 600 86400 900 )
         IN NS   ns1
ns1      IN A    192.0.2.1
a.b.c    IN A    192.0.2.2
c1       IN CNAME c2
c2       IN CNAME c3
c3       IN CNAME target
target   IN A    192.0.2.3
         IN AAAA 2001:db8::3
loop1    IN CNAME loop2
loop2    IN CNAME loop1
self     IN CNAME self
out      IN CNAME www.example.org.
dangling IN CNAME nothere
*.w      IN A    192.0.2.4
*.w      IN TXT  \"wild\"
exists.w IN AAAA 2001:db8::4
a.ent.w  IN A    192.0.2.5
*.cw     IN CNAME target
sub      IN NS   ns.sub
ns.sub   IN A    192.0.2.9
todeleg  IN CNAME x.sub
",
    );
    // TXT RRsets whose full responses are about 410, 900, 1160 and 2600 bytes.
    for (name, count, len) in [
        ("small", 1, 350),
        ("medium", 4, 200),
        ("fits", 5, 210),
        ("big", 12, 200),
    ] {
        for i in 0..count {
            let text: String = format!("{name}{i:02}-")
                .chars()
                .chain(std::iter::repeat('x'))
                .take(len)
                .collect();
            // Split into strings of at most 200 bytes (one character-string holds 255).
            let parts: Vec<String> = text
                .as_bytes()
                .chunks(200)
                .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
                .collect();
            z.push_str(&format!("{name} IN TXT {}\n", parts.join(" ")));
        }
    }
    z
}

pub fn server() -> TestServer {
    let wz = wire_zone();
    TestServer::start(
        &[("example.com.zone", EXAMPLE_ZONE), ("wire.test.zone", &wz)],
        &example_config(),
    )
}

// ---------------------------------------------------------------------------------------------
// Helpers

pub fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("name")
}

/// Owner, type and rdata of a record, lower-cased owner, for comparing sections.
pub fn show(r: &Record) -> String {
    format!("{} {} {}", r.name.to_lowercase(), r.record_type(), r.data)
}

pub fn shows(rs: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = rs.iter().map(show).collect();
    v.sort();
    v
}

/// NOERROR or NXDOMAIN with an empty answer and exactly the zone's SOA in authority.
pub fn assert_negative(tag: &str, r: &Message, rcode: ResponseCode, zone: &str, neg_ttl: u32) {
    assert_eq!(r.metadata.response_code, rcode, "{tag}: rcode\n{r}");
    assert!(r.metadata.authoritative, "{tag}: AA\n{r}");
    assert!(!r.metadata.recursion_available, "{tag}: RA");
    assert!(!r.metadata.truncation, "{tag}: TC");
    assert!(r.answers.is_empty(), "{tag}: answers\n{r}");
    assert_eq!(r.authorities.len(), 1, "{tag}: authority\n{r}");
    let soa = &r.authorities[0];
    assert_eq!(soa.record_type(), RecordType::SOA, "{tag}");
    assert_eq!(soa.name, name(zone), "{tag}: SOA owner");
    assert_eq!(soa.ttl, neg_ttl, "{tag}: negative TTL (RFC 2308 §5)");
    assert!(r.additionals.is_empty(), "{tag}: additional\n{r}");
}

pub fn txt_strings(r: &Record) -> Vec<String> {
    match &r.data {
        RData::TXT(t) => t
            .txt_data
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect(),
        other => panic!("not TXT: {other:?}"),
    }
}

pub fn header(id: u16, flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    let mut b = Vec::with_capacity(12);
    for v in [id, flags, qd, an, ns, ar] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b
}

pub fn question_bytes(qname: &str, qtype: u16, qclass: u16) -> Vec<u8> {
    let mut b = Vec::new();
    for label in qname.trim_end_matches('.').split('.') {
        b.push(label.len() as u8);
        b.extend_from_slice(label.as_bytes());
    }
    b.push(0);
    b.extend_from_slice(&qtype.to_be_bytes());
    b.extend_from_slice(&qclass.to_be_bytes());
    b
}

/// The response to a raw packet must be a response to it: same id, QR set.
pub fn decode_reply(tag: &str, id: u16, raw: &[u8]) -> Message {
    let m = Message::from_vec(raw).unwrap_or_else(|e| panic!("{tag}: undecodable reply: {e}"));
    assert_eq!(m.metadata.id, id, "{tag}: id");
    assert_eq!(m.metadata.message_type, MessageType::Response, "{tag}: QR");
    m
}

/// Raw OPT options (code, length, data).
pub fn opt_option(code: u16, data: &[u8]) -> Vec<u8> {
    let mut b = code.to_be_bytes().to_vec();
    b.extend_from_slice(&(data.len() as u16).to_be_bytes());
    b.extend_from_slice(data);
    b
}
