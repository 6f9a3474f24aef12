//! Behaviour on the wire (SPEC "Behaviour on the wire"): a real server on loopback, real packets
//! over UDP and TCP, exact rcodes, flags, sections, TTLs and names.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

// ---------------------------------------------------------------------------------------------
// Test data

/// A zone with everything the shipped example lacks: CNAME chains and loops, wildcards, empty
/// non-terminals, and TXT RRsets of chosen sizes for the payload tests. Its SOA TTL (60) is below
/// its MINIMUM (900), the opposite of the example zone, so both halves of min() are exercised.
fn wire_zone() -> String {
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

fn server() -> TestServer {
    let wz = wire_zone();
    TestServer::start(
        &[("example.com.zone", EXAMPLE_ZONE), ("wire.test.zone", &wz)],
        &example_config(),
    )
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("name")
}

/// Owner, type and rdata of a record, lower-cased owner, for comparing sections.
fn show(r: &Record) -> String {
    format!("{} {} {}", r.name.to_lowercase(), r.record_type(), r.data)
}

fn shows(rs: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = rs.iter().map(show).collect();
    v.sort();
    v
}

/// NOERROR or NXDOMAIN with an empty answer and exactly the zone's SOA in authority.
fn assert_negative(tag: &str, r: &Message, rcode: ResponseCode, zone: &str, neg_ttl: u32) {
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

fn txt_strings(r: &Record) -> Vec<String> {
    match &r.data {
        RData::TXT(t) => t
            .txt_data
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect(),
        other => panic!("not TXT: {other:?}"),
    }
}

fn header(id: u16, flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    let mut b = Vec::with_capacity(12);
    for v in [id, flags, qd, an, ns, ar] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b
}

fn question_bytes(qname: &str, qtype: u16, qclass: u16) -> Vec<u8> {
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
fn decode_reply(tag: &str, id: u16, raw: &[u8]) -> Message {
    let m = Message::from_vec(raw).unwrap_or_else(|e| panic!("{tag}: undecodable reply: {e}"));
    assert_eq!(m.metadata.id, id, "{tag}: id");
    assert_eq!(m.metadata.message_type, MessageType::Response, "{tag}: QR");
    m
}

/// Raw OPT options (code, length, data).
fn opt_option(code: u16, data: &[u8]) -> Vec<u8> {
    let mut b = code.to_be_bytes().to_vec();
    b.extend_from_slice(&(data.len() as u16).to_be_bytes());
    b.extend_from_slice(data);
    b
}

// ---------------------------------------------------------------------------------------------
// Header flags

#[test]
fn aa_set_ra_never_rd_copied() {
    let s = server();
    for rd in [false, true] {
        let mut q = query("www.example.com.", RecordType::A);
        q.metadata.recursion_desired = rd;
        for (t, r) in s.both(&q) {
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{t}");
            assert!(r.metadata.authoritative, "{t}: AA");
            assert!(!r.metadata.recursion_available, "{t}: RA");
            assert!(!r.metadata.truncation, "{t}: TC");
            assert_eq!(r.metadata.recursion_desired, rd, "{t}: RD copied");
            assert_eq!(r.metadata.op_code, OpCode::Query, "{t}");
            assert_eq!(shows(&r.answers), vec!["www.example.com. A 192.0.2.10"]);
            assert_eq!(r.answers[0].ttl, 30, "{t}: the balanced name's service TTL");
            assert!(r.authorities.is_empty() && r.additionals.is_empty(), "{t}");
        }
        // RA stays clear on every kind of answer, also negative, refused and referral ones.
        for (qn, qt) in [
            ("nope.example.com.", RecordType::A),
            ("www.example.org.", RecordType::A),
            ("host.lab.example.com.", RecordType::A),
            ("www.example.com.", RecordType::MX),
        ] {
            let mut q = query(qn, qt);
            q.metadata.recursion_desired = rd;
            for (t, r) in s.both(&q) {
                assert!(!r.metadata.recursion_available, "{t} {qn}: RA");
                assert_eq!(r.metadata.recursion_desired, rd, "{t} {qn}: RD");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Negative answers

#[test]
fn nodata_has_soa_with_negative_ttl() {
    let s = server();
    // example.com: SOA TTL 3600, MINIMUM 300 → 300.
    for (t, r) in s.both(&query("www.example.com.", RecordType::MX)) {
        assert_negative(t, &r, ResponseCode::NoError, "example.com.", 300);
    }
    // wire.test: SOA TTL 60, MINIMUM 900 → 60.
    for (t, r) in s.both(&query("target.wire.test.", RecordType::TXT)) {
        assert_negative(t, &r, ResponseCode::NoError, "wire.test.", 60);
    }
}

#[test]
fn nxdomain_has_soa() {
    let s = server();
    for (t, r) in s.both(&query("nope.example.com.", RecordType::A)) {
        assert_negative(t, &r, ResponseCode::NXDomain, "example.com.", 300);
    }
    for (t, r) in s.both(&query("x.a.b.c.wire.test.", RecordType::AAAA)) {
        assert_negative(t, &r, ResponseCode::NXDomain, "wire.test.", 60);
    }
}

#[test]
fn empty_non_terminal_is_nodata() {
    let s = server();
    for qn in ["b.c.wire.test.", "c.wire.test.", "ent.w.wire.test."] {
        for (t, r) in s.both(&query(qn, RecordType::A)) {
            assert_negative(
                &format!("{t} {qn}"),
                &r,
                ResponseCode::NoError,
                "wire.test.",
                60,
            );
        }
    }
    // In the shipped zone: _tcp exists only because _imaps._tcp does.
    for (t, r) in s.both(&query("_tcp.example.com.", RecordType::SRV)) {
        assert_negative(t, &r, ResponseCode::NoError, "example.com.", 300);
    }
}

#[test]
fn outside_every_zone_is_refused() {
    let s = server();
    for qn in ["www.example.org.", "com.", ".", "test.", "xwire.test."] {
        for (t, r) in s.both(&query(qn, RecordType::A)) {
            assert_eq!(
                r.metadata.response_code,
                ResponseCode::Refused,
                "{t} {qn}\n{r}"
            );
            assert!(!r.metadata.authoritative, "{t} {qn}: AA");
            assert!(!r.metadata.recursion_available, "{t} {qn}: RA");
            assert!(r.answers.is_empty(), "{t} {qn}");
            assert!(r.authorities.is_empty(), "{t} {qn}");
            assert!(r.additionals.is_empty(), "{t} {qn}");
            assert_eq!(r.queries.len(), 1, "{t} {qn}: question echoed");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Delegations

#[test]
fn referral_with_both_glue_records() {
    let s = server();
    for (qn, qt) in [
        ("lab.example.com.", RecordType::A),
        ("lab.example.com.", RecordType::NS),
        ("host.lab.example.com.", RecordType::A),
        ("deep.host.lab.example.com.", RecordType::AAAA),
        ("ns1.lab.example.com.", RecordType::A), // glue is not authoritative data
        ("host.lab.example.com.", RecordType::DS), // below the cut: the child's business
    ] {
        for (t, r) in s.both(&query(qn, qt)) {
            let tag = format!("{t} {qn} {qt}");
            assert_eq!(
                r.metadata.response_code,
                ResponseCode::NoError,
                "{tag}\n{r}"
            );
            assert!(!r.metadata.authoritative, "{tag}: AA must be clear");
            assert!(!r.metadata.truncation, "{tag}: TC");
            assert!(r.answers.is_empty(), "{tag}: answer\n{r}");
            assert_eq!(
                shows(&r.authorities),
                vec![
                    "lab.example.com. NS ns1.lab.example.com.",
                    "lab.example.com. NS ns2.lab.example.com.",
                ],
                "{tag}"
            );
            assert!(r.authorities.iter().all(|a| a.ttl == 3600), "{tag}: NS TTL");
            assert_eq!(
                shows(&r.additionals),
                vec![
                    "ns1.lab.example.com. A 192.0.2.153",
                    "ns2.lab.example.com. A 198.51.100.153",
                ],
                "{tag}: glue"
            );
        }
    }
    // A delegation in the test zone too.
    for (t, r) in s.both(&query("www.sub.wire.test.", RecordType::A)) {
        assert!(!r.metadata.authoritative, "{t}");
        assert_eq!(
            shows(&r.authorities),
            vec!["sub.wire.test. NS ns.sub.wire.test."]
        );
        assert_eq!(shows(&r.additionals), vec!["ns.sub.wire.test. A 192.0.2.9"]);
    }
}

#[test]
fn ds_at_the_cut_answers_from_the_parent() {
    let s = server();
    for (t, r) in s.both(&query("lab.example.com.", RecordType::DS)) {
        assert_negative(t, &r, ResponseCode::NoError, "example.com.", 300);
    }
}

// ---------------------------------------------------------------------------------------------
// CNAMEs

#[test]
fn cname_followed_in_zone() {
    let s = server();
    for (t, r) in s.both(&query("api.example.com.", RecordType::A)) {
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{t}");
        assert!(r.metadata.authoritative, "{t}");
        let a: Vec<String> = r.answers.iter().map(show).collect();
        assert_eq!(
            a,
            vec![
                "api.example.com. CNAME www.example.com.",
                "www.example.com. A 192.0.2.10",
            ],
            "{t}: CNAME first, then the target's A"
        );
        assert_eq!(r.answers[0].ttl, 3600, "{t}");
        assert_eq!(
            r.answers[1].ttl, 30,
            "{t}: service TTL of the balanced target"
        );
        assert!(r.authorities.is_empty(), "{t}");
    }
    for (t, r) in s.both(&query("api.example.com.", RecordType::AAAA)) {
        let a: Vec<String> = r.answers.iter().map(show).collect();
        assert_eq!(
            a,
            vec![
                "api.example.com. CNAME www.example.com.",
                "www.example.com. AAAA 2001:db8::10",
            ],
            "{t}"
        );
    }
    // The target exists but lacks the type: CNAME plus NODATA.
    for (t, r) in s.both(&query("api.example.com.", RecordType::MX)) {
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{t}");
        assert_eq!(
            shows(&r.answers),
            vec!["api.example.com. CNAME www.example.com."]
        );
        assert_eq!(shows(&r.authorities).len(), 1, "{t}: SOA");
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA, "{t}");
    }
}

#[test]
fn cname_chain_of_several() {
    let s = server();
    for (t, r) in s.both(&query("c1.wire.test.", RecordType::A)) {
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{t}");
        assert!(r.metadata.authoritative, "{t}");
        let a: Vec<String> = r.answers.iter().map(show).collect();
        assert_eq!(
            a,
            vec![
                "c1.wire.test. CNAME c2.wire.test.",
                "c2.wire.test. CNAME c3.wire.test.",
                "c3.wire.test. CNAME target.wire.test.",
                "target.wire.test. A 192.0.2.3",
            ],
            "{t}"
        );
    }
}

#[test]
fn cname_loop_terminates() {
    let s = server();
    for qn in ["loop1.wire.test.", "self.wire.test."] {
        let started = Instant::now();
        for (t, r) in s.both(&query(qn, RecordType::A)) {
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{t} {qn}");
            assert!(!r.answers.is_empty(), "{t} {qn}");
            assert!(
                r.answers
                    .iter()
                    .all(|a| a.record_type() == RecordType::CNAME),
                "{t} {qn}: only CNAMEs\n{r}"
            );
            // Each CNAME of the loop once: no duplicate records (RFC 2181 §5).
            let mut seen = shows(&r.answers);
            seen.dedup();
            assert_eq!(seen.len(), r.answers.len(), "{t} {qn}: duplicates\n{r}");
            assert_eq!(show(&r.answers[0]).split(' ').next(), Some(qn), "{t}");
        }
        assert!(started.elapsed() < Duration::from_secs(2), "{qn}: slow");
    }
    let r = s.udp(&query("loop1.wire.test.", RecordType::A));
    assert_eq!(
        shows(&r.answers),
        vec![
            "loop1.wire.test. CNAME loop2.wire.test.",
            "loop2.wire.test. CNAME loop1.wire.test.",
        ]
    );
    // The server still answers others afterwards.
    let r = s.udp(&query("www.example.com.", RecordType::A));
    assert_eq!(r.answers.len(), 1);
}

#[test]
fn cname_out_of_zone_and_dangling() {
    let s = server();
    for (t, r) in s.both(&query("out.wire.test.", RecordType::A)) {
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{t}");
        assert!(r.metadata.authoritative, "{t}");
        assert_eq!(
            shows(&r.answers),
            vec!["out.wire.test. CNAME www.example.org."],
            "{t}"
        );
        assert!(r.authorities.is_empty(), "{t}\n{r}");
        assert!(r.additionals.is_empty(), "{t}\n{r}");
    }
    // RFC 6604: the rcode describes the last name of the chain.
    for (t, r) in s.both(&query("dangling.wire.test.", RecordType::A)) {
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{t}");
        assert!(r.metadata.authoritative, "{t}");
        assert_eq!(
            shows(&r.answers),
            vec!["dangling.wire.test. CNAME nothere.wire.test."],
            "{t}"
        );
        assert_eq!(r.authorities.len(), 1, "{t}");
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA, "{t}");
        assert_eq!(r.authorities[0].ttl, 60, "{t}");
    }
}

#[test]
fn qtype_cname_returns_the_cname() {
    let s = server();
    for (t, r) in s.both(&query("api.example.com.", RecordType::CNAME)) {
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{t}");
        assert!(r.metadata.authoritative, "{t}");
        let a: Vec<String> = r.answers.iter().map(show).collect();
        assert_eq!(a, vec!["api.example.com. CNAME www.example.com."], "{t}");
    }
    for (t, r) in s.both(&query("c1.wire.test.", RecordType::CNAME)) {
        let a: Vec<String> = r.answers.iter().map(show).collect();
        assert_eq!(a, vec!["c1.wire.test. CNAME c2.wire.test."], "{t}");
    }
}

// ---------------------------------------------------------------------------------------------
// Wildcards (RFC 4592)

#[test]
fn wildcard_synthesis_uses_query_name() {
    let s = server();
    for qn in ["x.w.wire.test.", "y.x.w.wire.test.", "Mixed.W.wire.test."] {
        for (t, r) in s.both(&query(qn, RecordType::A)) {
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{t} {qn}");
            assert!(r.metadata.authoritative, "{t} {qn}");
            assert_eq!(r.answers.len(), 1, "{t} {qn}\n{r}");
            assert_eq!(r.answers[0].name.to_string(), qn, "{t}: owner = qname");
            assert_eq!(
                r.answers[0].data,
                RData::A(Ipv4Addr::new(192, 0, 2, 4).into())
            );
            assert_eq!(r.answers[0].ttl, 600, "{t}");
        }
        for (t, r) in s.both(&query(qn, RecordType::TXT)) {
            assert_eq!(r.answers.len(), 1, "{t} {qn}");
            assert_eq!(r.answers[0].name.to_string(), qn, "{t}");
            assert_eq!(txt_strings(&r.answers[0]), vec!["wild"], "{t}");
        }
    }
    // A wildcard CNAME: synthesised at the query name, then followed.
    for (t, r) in s.both(&query("foo.cw.wire.test.", RecordType::A)) {
        let a: Vec<String> = r.answers.iter().map(show).collect();
        assert_eq!(
            a,
            vec![
                "foo.cw.wire.test. CNAME target.wire.test.",
                "target.wire.test. A 192.0.2.3",
            ],
            "{t}"
        );
    }
}

#[test]
fn wildcard_does_not_override_existing_names() {
    let s = server();
    // exists.w has AAAA only: its A query is NODATA, not the wildcard's A.
    for (t, r) in s.both(&query("exists.w.wire.test.", RecordType::A)) {
        assert_negative(t, &r, ResponseCode::NoError, "wire.test.", 60);
    }
    for (t, r) in s.both(&query("exists.w.wire.test.", RecordType::AAAA)) {
        assert_eq!(
            shows(&r.answers),
            vec!["exists.w.wire.test. AAAA 2001:db8::4"],
            "{t}"
        );
    }
    // Below an existing name the closest encloser is that name, which has no wildcard child.
    for (t, r) in s.both(&query("y.exists.w.wire.test.", RecordType::A)) {
        assert_negative(t, &r, ResponseCode::NXDomain, "wire.test.", 60);
    }
    // The wildcard's own name answers its records literally.
    for (t, r) in s.both(&query("*.w.wire.test.", RecordType::A)) {
        assert_eq!(shows(&r.answers), vec!["*.w.wire.test. A 192.0.2.4"], "{t}");
    }
    // The parent of the wildcard is an empty non-terminal, not matched by it.
    for (t, r) in s.both(&query("w.wire.test.", RecordType::A)) {
        assert_negative(t, &r, ResponseCode::NoError, "wire.test.", 60);
    }
}

#[test]
fn empty_non_terminal_blocks_wildcard() {
    let s = server();
    // ent.w exists (a.ent.w is below it): it is NODATA itself, and names below it that do not
    // exist are NXDOMAIN, since the closest encloser ent.w has no `*` child (RFC 4592 §2.2.2).
    for (t, r) in s.both(&query("ent.w.wire.test.", RecordType::A)) {
        assert_negative(t, &r, ResponseCode::NoError, "wire.test.", 60);
    }
    for (t, r) in s.both(&query("x.ent.w.wire.test.", RecordType::A)) {
        assert_negative(t, &r, ResponseCode::NXDomain, "wire.test.", 60);
    }
    for (t, r) in s.both(&query("a.ent.w.wire.test.", RecordType::A)) {
        assert_eq!(
            shows(&r.answers),
            vec!["a.ent.w.wire.test. A 192.0.2.5"],
            "{t}"
        );
    }
}

#[test]
fn wildcard_nodata_for_missing_type() {
    let s = server();
    for (t, r) in s.both(&query("x.w.wire.test.", RecordType::MX)) {
        assert_negative(t, &r, ResponseCode::NoError, "wire.test.", 60);
    }
}

// ---------------------------------------------------------------------------------------------
// Names, ANY

#[test]
fn query_name_case_is_kept() {
    let s = server();
    let qn = "WwW.ExAmple.COM.";
    let q = query(qn, RecordType::A);
    let raw_q = q.to_vec().expect("encode");
    for (t, raw) in s.both_raw(&raw_q) {
        let r = decode_reply(t, q.metadata.id, &raw);
        assert_eq!(r.queries[0].name().to_string(), qn, "{t}: question");
        assert_eq!(r.answers.len(), 1, "{t}");
        assert_eq!(r.answers[0].name.to_string(), qn, "{t}: answer owner");
        // The question bytes themselves are as sent.
        assert_eq!(&raw[12..raw_q.len()], &raw_q[12..], "{t}: raw question");
    }
    // Through a CNAME the first owner keeps the client's spelling.
    for (t, r) in s.both(&query("API.Example.Com.", RecordType::A)) {
        assert_eq!(r.answers[0].name.to_string(), "API.Example.Com.", "{t}");
        assert_eq!(r.answers.len(), 2, "{t}");
    }
}

#[test]
fn any_is_minimal() {
    let s = server();
    for qn in ["example.com.", "www.example.com.", "target.wire.test."] {
        for (t, r) in s.both(&query(qn, RecordType::ANY)) {
            let tag = format!("{t} {qn}");
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{tag}");
            assert!(r.metadata.authoritative, "{tag}");
            assert!(!r.answers.is_empty(), "{tag}");
            let first = r.answers[0].record_type();
            assert!(
                r.answers.iter().all(|a| a.record_type() == first),
                "{tag}: one RRset only\n{r}"
            );
            assert!(
                r.answers.iter().all(|a| a.name == name(qn)),
                "{tag}: owner\n{r}"
            );
        }
    }
    // The apex has 5 RRsets; one whole RRset is returned (all of its records).
    let r = s.udp(&query("example.com.", RecordType::ANY));
    let t = r.answers[0].record_type();
    let expect = match t {
        RecordType::NS => 2,
        RecordType::SOA | RecordType::MX | RecordType::TXT | RecordType::CAA => 1,
        other => panic!("unexpected ANY answer type {other}"),
    };
    assert_eq!(r.answers.len(), expect, "{r}");
    // ANY at a nonexistent name is still NXDOMAIN.
    for (t, r) in s.both(&query("nope.example.com.", RecordType::ANY)) {
        assert_negative(t, &r, ResponseCode::NXDomain, "example.com.", 300);
    }
}

// ---------------------------------------------------------------------------------------------
// Opcodes and malformed input

#[test]
fn unknown_opcodes_get_notimp() {
    let s = server();
    for op in [
        OpCode::Status,
        OpCode::Update,
        OpCode::Unknown(3),
        OpCode::Unknown(15),
    ] {
        let mut m = Message::new(4711, MessageType::Query, op);
        m.add_query(Query::query(name("example.com."), RecordType::SOA));
        for (t, r) in s.both(&m) {
            assert_eq!(r.metadata.response_code, ResponseCode::NotImp, "{t} {op}");
            assert_eq!(r.metadata.op_code, op, "{t}: opcode echoed");
            assert!(!r.metadata.authoritative, "{t} {op}");
            assert!(r.answers.is_empty() && r.authorities.is_empty(), "{t} {op}");
        }
    }
    // NOTIFY (4) is not implemented either without [[secondary]] zones (tests/secondary.rs).
    let mut m = Message::new(4712, MessageType::Query, OpCode::Notify);
    m.add_query(Query::query(name("example.com."), RecordType::SOA));
    assert_eq!(s.udp(&m).metadata.response_code, ResponseCode::NotImp);
}

#[test]
fn malformed_queries_get_formerr() {
    let s = server();
    let q = question_bytes("www.example.com.", 1, 1);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated qname", {
            let mut b = header(0x1001, 0x0100, 1, 0, 0, 0);
            b.extend_from_slice(&q[..9]);
            b
        }),
        ("question without type/class", {
            let mut b = header(0x1002, 0x0100, 1, 0, 0, 0);
            b.extend_from_slice(&q[..q.len() - 4]);
            b
        }),
        ("qdcount=2", {
            let mut b = header(0x1003, 0x0100, 2, 0, 0, 0);
            b.extend_from_slice(&q);
            b.extend_from_slice(&question_bytes("api.example.com.", 1, 1));
            b
        }),
        ("qdcount=0", header(0x1004, 0x0100, 0, 0, 0, 0)),
        ("arcount beyond the packet", {
            let mut b = header(0x1005, 0x0100, 1, 0, 0, 2);
            b.extend_from_slice(&q);
            b
        }),
        ("compression pointer loop", {
            let mut b = header(0x1006, 0x0100, 1, 0, 0, 0);
            b.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
            b
        }),
        ("label longer than 63", {
            let mut b = header(0x1007, 0x0100, 1, 0, 0, 0);
            b.push(64);
            b.extend_from_slice(&[b'a'; 64]);
            b.extend_from_slice(&[0, 0, 1, 0, 1]);
            b
        }),
    ];
    for (what, pkt) in &cases {
        let id = u16::from_be_bytes([pkt[0], pkt[1]]);
        for (t, raw) in s.both_raw(pkt) {
            let r = decode_reply(&format!("{t} {what}"), id, &raw);
            assert_eq!(
                r.metadata.response_code,
                ResponseCode::FormErr,
                "{t} {what}\n{r}"
            );
            assert!(r.metadata.recursion_desired, "{t} {what}: RD copied");
            assert!(!r.metadata.authoritative, "{t} {what}");
            assert!(r.answers.is_empty(), "{t} {what}");
        }
    }
}

#[test]
fn unreadable_packets_get_silence() {
    let s = server();
    let wait = Duration::from_millis(300);
    for len in [0usize, 1, 2, 5, 11] {
        let pkt = vec![0x42u8; len];
        assert_eq!(s.udp_raw(&pkt, wait), None, "{len}-byte packet answered");
    }
    // A response (QR=1) is never answered, lest two servers bounce packets forever.
    let resp = s.udp_bytes(
        &query("www.example.com.", RecordType::A)
            .to_vec()
            .expect("encode"),
    );
    assert_eq!(resp[2] & 0x80, 0x80);
    assert_eq!(s.udp_raw(&resp, wait), None, "QR=1 packet answered");
    let mut qr = header(0x2001, 0x8000, 1, 0, 0, 0);
    qr.extend_from_slice(&question_bytes("www.example.com.", 1, 1));
    assert_eq!(s.udp_raw(&qr, wait), None, "QR=1 query answered");

    // Over TCP the same packets get nothing, and the connection goes on answering.
    let mut c = TcpStream::connect(s.addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let good = query("www.example.com.", RecordType::A);
    let mut out = Vec::new();
    for p in [vec![1u8, 2, 3, 4, 5], qr.clone(), resp.clone()] {
        out.extend_from_slice(&(p.len() as u16).to_be_bytes());
        out.extend_from_slice(&p);
    }
    let g = good.to_vec().expect("encode");
    out.extend_from_slice(&(g.len() as u16).to_be_bytes());
    out.extend_from_slice(&g);
    c.write_all(&out).expect("write");
    let first = read_tcp_message(&mut c).expect("answer on the same connection");
    let r = decode_reply("tcp", good.metadata.id, &first);
    assert_eq!(r.answers.len(), 1);
}

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Valid packets to mutate: plain, EDNS with options, CHAOS, referral, wildcard.
fn fuzz_seeds() -> Vec<Vec<u8>> {
    let mut seeds = vec![
        query("www.example.com.", RecordType::A)
            .to_vec()
            .expect("encode"),
        query("api.example.com.", RecordType::AAAA)
            .to_vec()
            .expect("encode"),
        query("x.w.wire.test.", RecordType::ANY)
            .to_vec()
            .expect("encode"),
        query("host.lab.example.com.", RecordType::NS)
            .to_vec()
            .expect("encode"),
        query_class("version.bind.", RecordType::TXT, DNSClass::CH)
            .to_vec()
            .expect("encode"),
    ];
    let mut ecs = opt_option(8, &[0, 1, 24, 0, 192, 0, 2]);
    ecs.extend(opt_option(3, &[]));
    ecs.extend(opt_option(65001, b"junk"));
    seeds.push(with_raw_opt(
        &query("big.wire.test.", RecordType::TXT),
        1232,
        0,
        0x8000,
        &ecs,
    ));
    seeds
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut p = seeds[rng.below(seeds.len())].clone();
    match rng.below(6) {
        0 => {
            // Pure noise of any length up to 600.
            let n = rng.below(600);
            p = (0..n).map(|_| rng.next() as u8).collect();
        }
        1 => {
            // Truncate anywhere.
            let n = rng.below(p.len() + 1);
            p.truncate(n);
        }
        2 => {
            // Flip bits.
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(p.len());
                p[i] ^= 1 << rng.below(8);
            }
        }
        3 => {
            // Overwrite header counts with random values.
            let i = 4 + 2 * rng.below(4);
            p[i] = rng.next() as u8;
            p[i + 1] = rng.next() as u8;
        }
        4 => {
            // Insert random bytes somewhere.
            let i = rng.below(p.len() + 1);
            for _ in 0..1 + rng.below(20) {
                p.insert(i, rng.next() as u8);
            }
        }
        _ => {
            // Random bytes past the header, keeping it (so FORMERR paths run).
            for b in p.iter_mut().skip(12) {
                if rng.below(4) == 0 {
                    *b = rng.next() as u8;
                }
            }
        }
    }
    // Mostly keep QR clear so the parser really runs.
    if p.len() > 2 && rng.below(8) != 0 {
        p[2] &= 0x7f;
    }
    p
}

#[test]
fn fuzzed_packets_never_kill_the_server() {
    let s = server();
    let seeds = fuzz_seeds();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_nonblocking(true).expect("nonblocking");
    let mut buf = vec![0u8; 65535];
    let mut answered = 0usize;
    for i in 0..4000 {
        let p = mutate(&mut rng, &seeds);
        sock.send_to(&p, s.addr).expect("send");
        if i % 32 == 31 {
            // Pace a little so the server sees the packets rather than a full socket buffer.
            std::thread::sleep(Duration::from_millis(1));
        }
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            answered += 1;
            assert!(n >= 12, "runt response");
            assert!(n <= 1232, "UDP response of {n} bytes exceeds the cap");
            assert_eq!(buf[2] & 0x80, 0x80, "response without QR");
        }
    }
    assert!(answered > 100, "only {answered} fuzz packets answered");
    // Some fuzz over TCP, each on its own connection.
    for _ in 0..100 {
        let p = mutate(&mut rng, &seeds);
        let _ = s.tcp_raw(&p, Duration::from_millis(200));
    }
    // Still serving, over both transports.
    for (t, r) in s.both(&query("www.example.com.", RecordType::A)) {
        assert_eq!(r.answers.len(), 1, "{t}: server stopped answering");
    }
}

/// The same handler called directly, many more packets: every reply must be a well-formed
/// response to its query.
#[test]
fn fuzzed_packets_in_process() {
    use meridian::dns::{handle, Transport};
    let s = server();
    let snap = s.shared.load();
    let seeds = fuzz_seeds();
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let src = "127.0.0.1:5353".parse().expect("addr");
    // What the run did, so that it cannot pass by answering nothing (or by dropping nothing):
    // packets answered, dropped, and answered with each rcode.
    let (mut answered, mut silent) = (0usize, 0usize);
    let mut rcodes = std::collections::BTreeMap::<u8, usize>::new();
    for _ in 0..20_000 {
        let p = mutate(&mut rng, &seeds);
        for tr in [Transport::Udp, Transport::Tcp] {
            let Some(r) = handle(&snap, &p, src, tr) else {
                silent += 1;
                continue;
            };
            answered += 1;
            *rcodes.entry(r[3] & 0x0f).or_default() += 1;
            assert!(p.len() >= 12 && p[2] & 0x80 == 0, "answered {p:02x?}");
            assert_eq!(&r[..2], &p[..2], "id not copied for {p:02x?}");
            assert_eq!(r[2] & 0x80, 0x80, "QR");
            if tr == Transport::Udp {
                assert!(r.len() <= 1232, "{} bytes over UDP", r.len());
            }
            if let Err(e) = Message::from_vec(&r) {
                panic!("undecodable response {e} to {p:02x?}: {r:02x?}");
            }
        }
    }
    println!("fuzzed: {answered} answered, {silent} dropped, rcodes {rcodes:?}");
    // The mutations keep most packets queries: most get an answer, some are dropped (too
    // short, QR set), and the answers span NOERROR, FORMERR and NXDOMAIN at least.
    assert!(answered >= 40_000 / 4, "only {answered} of 40000 answered");
    assert!(
        silent > 0,
        "nothing dropped: the mutations made no broken headers"
    );
    for rc in [0u8, 1, 3] {
        assert!(
            rcodes.get(&rc).is_some_and(|&n| n > 0),
            "no rcode {rc}: {rcodes:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// EDNS

#[test]
fn edns_opt_echoed_only_when_asked() {
    let s = server();
    for (t, r) in s.both(&query_edns("www.example.com.", RecordType::A, 1232)) {
        let e = r.edns.as_ref().unwrap_or_else(|| panic!("{t}: no OPT"));
        assert_eq!(e.version(), 0, "{t}");
        assert_eq!(e.max_payload(), 1232, "{t}: our payload size");
        assert!(!e.flags().dnssec_ok, "{t}: DO not asked");
        assert_eq!(r.answers.len(), 1, "{t}");
    }
    for (t, r) in s.both(&query("www.example.com.", RecordType::A)) {
        assert!(r.edns.is_none(), "{t}: OPT without EDNS in query");
    }
}

/// Full response size of `qname TXT` over TCP, and its record count.
fn full_size(s: &TestServer, qname: &str, edns: bool) -> (usize, usize) {
    let q = if edns {
        with_raw_opt(&query(qname, RecordType::TXT), 4096, 0, 0, &[])
    } else {
        query(qname, RecordType::TXT).to_vec().expect("encode")
    };
    let raw = s.tcp_raw(&q, Duration::from_secs(3)).expect("tcp answer");
    let r = Message::from_vec(&raw).expect("decode");
    assert!(!r.metadata.truncation, "TCP truncated {qname}");
    (raw.len(), r.answers.len())
}

/// Sends `qname TXT` over UDP with the given EDNS payload (None = no EDNS) and returns the raw
/// response and its decoding.
fn udp_txt(s: &TestServer, qname: &str, payload: Option<u16>) -> (Vec<u8>, Message) {
    let q = query(qname, RecordType::TXT);
    let bytes = match payload {
        Some(p) => with_raw_opt(&q, p, 0, 0, &[]),
        None => q.to_vec().expect("encode"),
    };
    let raw = s.udp_bytes(&bytes);
    let r = decode_reply("udp", q.metadata.id, &raw);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.authoritative);
    assert_eq!(r.edns.is_some(), payload.is_some(), "OPT presence");
    (raw, r)
}

fn assert_complete(what: &str, raw: &[u8], r: &Message, count: usize) {
    assert!(
        !r.metadata.truncation,
        "{what}: TC set ({} bytes)",
        raw.len()
    );
    assert_eq!(r.answers.len(), count, "{what}: records");
}

fn assert_truncated(what: &str, raw: &[u8], r: &Message, limit: usize, count: usize) {
    assert!(
        r.metadata.truncation,
        "{what}: TC clear ({} bytes)",
        raw.len()
    );
    assert!(
        raw.len() <= limit,
        "{what}: {} bytes over a {limit}-byte limit",
        raw.len()
    );
    assert!(r.answers.len() < count, "{what}: all records and TC");
    assert_eq!(r.queries.len(), 1, "{what}: question kept");
}

#[test]
fn edns_payload_size_is_honoured() {
    let s = server();
    // The sizes this test relies on (with OPT).
    let (small, n_small) = full_size(&s, "small.wire.test.", true);
    let (medium, n_medium) = full_size(&s, "medium.wire.test.", true);
    let (fits, n_fits) = full_size(&s, "fits.wire.test.", true);
    let (big, n_big) = full_size(&s, "big.wire.test.", true);
    assert!((300..=500).contains(&small), "small: {small}");
    assert!((600..1200).contains(&medium), "medium: {medium}");
    assert!((1100..=1232).contains(&fits), "fits: {fits}");
    assert!((2000..=3000).contains(&big), "big: {big}");
    assert_eq!((n_small, n_medium, n_fits, n_big), (1, 4, 5, 12));

    // Over TCP everything comes whole, also without EDNS.
    let (big_plain, n) = full_size(&s, "big.wire.test.", false);
    assert_eq!(n, 12);
    assert!(big_plain > 2000);
    let r = s.tcp(&query_edns("big.wire.test.", RecordType::TXT, 512));
    assert_complete("tcp payload 512", &[], &r, 12);

    // The client's size is honoured, and TC set when the answer does not fit.
    for (qn, payload, count, complete) in [
        ("big.wire.test.", 512, 12, false),
        ("big.wire.test.", 1232, 12, false),
        ("medium.wire.test.", 512, 4, false),
        ("medium.wire.test.", 1232, 4, true),
        ("medium.wire.test.", 1000, 4, true),
        ("fits.wire.test.", 1232, 5, true),
        ("fits.wire.test.", 1100, 5, false),
        ("small.wire.test.", 512, 1, true),
    ] {
        let (raw, r) = udp_txt(&s, qn, Some(payload));
        let what = format!("{qn} payload {payload}");
        if complete {
            assert_complete(&what, &raw, &r, count);
        } else {
            assert_truncated(&what, &raw, &r, payload as usize, count);
        }
    }

    // Above 1232 the server caps: `fits` (≤1232) is whole, `big` is truncated to ≤1232.
    for payload in [4096u16, 65535] {
        let (raw, r) = udp_txt(&s, "fits.wire.test.", Some(payload));
        assert_complete(&format!("fits payload {payload}"), &raw, &r, 5);
        let (raw, r) = udp_txt(&s, "big.wire.test.", Some(payload));
        assert_truncated(&format!("big payload {payload}"), &raw, &r, 1232, 12);
    }

    // Below 512 counts as 512: `small` (>256 bytes) still comes whole, `medium` does not.
    for payload in [0u16, 100, 256, 511] {
        let (raw, r) = udp_txt(&s, "small.wire.test.", Some(payload));
        assert!(payload == 511 || raw.len() > payload as usize);
        assert_complete(&format!("small payload {payload}"), &raw, &r, 1);
        let (raw, r) = udp_txt(&s, "medium.wire.test.", Some(payload));
        assert_truncated(&format!("medium payload {payload}"), &raw, &r, 512, 4);
    }

    // Without EDNS the limit is 512.
    let (raw, r) = udp_txt(&s, "small.wire.test.", None);
    assert_complete("small no EDNS", &raw, &r, 1);
    let (raw, r) = udp_txt(&s, "medium.wire.test.", None);
    assert_truncated("medium no EDNS", &raw, &r, 512, 4);
    let (raw, r) = udp_txt(&s, "big.wire.test.", None);
    assert_truncated("big no EDNS", &raw, &r, 512, 12);
}

#[test]
fn edns_version_1_gets_badvers() {
    let s = server();
    for version in [1u8, 2, 255] {
        let q = query("www.example.com.", RecordType::A);
        let pkt = with_raw_opt(&q, 1232, version, 0, &[]);
        for (t, raw) in s.both_raw(&pkt) {
            let r = decode_reply(t, q.metadata.id, &raw);
            // hickory names 16 BADSIG (TSIG) as well; compare the number.
            assert_eq!(
                u16::from(r.metadata.response_code),
                16,
                "{t} v{version}: BADVERS"
            );
            // On the wire: header RCODE 0, OPT extended RCODE 1 (16 >> 4).
            assert_eq!(raw[3] & 0x0f, 0, "{t}: header rcode bits");
            let e = r.edns.as_ref().expect("OPT in BADVERS");
            assert_eq!(e.version(), 0, "{t}: we speak version 0");
            assert_eq!(e.rcode_high(), 1, "{t}");
            assert!(r.answers.is_empty(), "{t}");
            // Resolvers match replies on the question; a BADVERS without it is discarded.
            assert_eq!(r.queries, q.queries, "{t} v{version}: question kept");
        }
    }
}

#[test]
fn edns_unknown_options_ignored_and_do_echoed() {
    let s = server();
    let mut opts = opt_option(65001, b"whatever");
    opts.extend(opt_option(20292, &[]));
    for (flags, dnssec_ok) in [(0x8000u16, true), (0, false), (0x7fff, false)] {
        let q = query("www.example.com.", RecordType::A);
        let pkt = with_raw_opt(&q, 1232, 0, flags, &opts);
        for (t, raw) in s.both_raw(&pkt) {
            let r = decode_reply(t, q.metadata.id, &raw);
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{t}");
            assert_eq!(shows(&r.answers), vec!["www.example.com. A 192.0.2.10"]);
            let e = r.edns.as_ref().expect("OPT");
            assert_eq!(
                e.flags().dnssec_ok,
                dnssec_ok,
                "{t}: DO for flags {flags:#x}"
            );
            assert_eq!(e.flags().z, 0, "{t}: Z bits must not be echoed");
            assert!(
                e.option(EdnsCode::Unknown(65001)).is_none(),
                "{t}: unknown option echoed"
            );
            assert!(e.options().as_ref().is_empty(), "{t}: {e:?}");
        }
    }
}

#[test]
fn nsid_returns_site_id() {
    let s = server();
    let q = query("www.example.com.", RecordType::A);
    let pkt = with_raw_opt(&q, 1232, 0, 0, &opt_option(3, &[]));
    for (t, raw) in s.both_raw(&pkt) {
        let r = decode_reply(t, q.metadata.id, &raw);
        assert_eq!(r.answers.len(), 1, "{t}");
        match r.edns.as_ref().and_then(|e| e.option(EdnsCode::NSID)) {
            Some(EdnsOption::NSID(p)) => assert_eq!(p.as_ref(), b"test-site", "{t}"),
            other => panic!("{t}: NSID missing: {other:?}"),
        }
    }
    // Not asked, not given.
    let r = s.udp(&query_edns("www.example.com.", RecordType::A, 1232));
    assert!(r.edns.expect("OPT").option(EdnsCode::NSID).is_none());
    // Without a site id there is nothing to say.
    let bare = TestServer::start(&[("example.com.zone", EXAMPLE_ZONE)], "");
    let r = decode_reply("udp", q.metadata.id, &bare.udp_bytes(&pkt));
    assert!(r.edns.expect("OPT").option(EdnsCode::NSID).is_none());
}

#[test]
fn chaos_identity_queries() {
    let s = server();
    for (qn, want) in [
        ("id.server.", "test-site"),
        ("hostname.bind.", "test-site"),
        ("ID.Server.", "test-site"),
    ] {
        for (t, r) in s.both(&query_class(qn, RecordType::TXT, DNSClass::CH)) {
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{t} {qn}");
            assert_eq!(r.answers.len(), 1, "{t} {qn}");
            assert_eq!(r.answers[0].dns_class, DNSClass::CH, "{t} {qn}");
            assert_eq!(r.answers[0].name.to_string(), qn, "{t}");
            assert_eq!(txt_strings(&r.answers[0]), vec![want], "{t} {qn}");
            assert_eq!(r.queries[0].query_class(), DNSClass::CH, "{t}");
        }
    }
    for qn in ["version.bind.", "version.server."] {
        for (t, r) in s.both(&query_class(qn, RecordType::TXT, DNSClass::CH)) {
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{t}");
            let v = txt_strings(&r.answers[0]).join("");
            assert!(v.starts_with("meridian"), "{t}: {v}");
        }
    }
    for qn in [
        "authors.bind.",
        "www.example.com.",
        "id.server.example.com.",
    ] {
        for (t, r) in s.both(&query_class(qn, RecordType::TXT, DNSClass::CH)) {
            assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{t} {qn}");
            assert!(r.answers.is_empty(), "{t} {qn}");
        }
    }
    for class in [DNSClass::HS, DNSClass::Unknown(42), DNSClass::NONE] {
        for (t, r) in s.both(&query_class("www.example.com.", RecordType::A, class)) {
            assert_eq!(
                r.metadata.response_code,
                ResponseCode::Refused,
                "{t} {class:?}"
            );
            assert!(r.answers.is_empty(), "{t} {class:?}");
            assert!(!r.metadata.authoritative, "{t} {class:?}");
        }
    }
}

#[test]
fn ecs_is_echoed_with_scope_zero() {
    // A static name: its answer holds for every client, whatever subnet asks.
    let s = server();
    for (addr, source) in [
        (IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)), 24u8),
        (
            IpAddr::V6("2001:db8:42::".parse::<Ipv6Addr>().expect("v6")),
            56,
        ),
        (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
    ] {
        let mut q = query_edns("mail.example.com.", RecordType::A, 1232);
        q.edns
            .as_mut()
            .expect("edns")
            .options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(addr, source, 0)));
        for (t, r) in s.both(&q) {
            assert_eq!(shows(&r.answers), vec!["mail.example.com. A 192.0.2.25"]);
            match r.edns.as_ref().and_then(|e| e.option(EdnsCode::Subnet)) {
                Some(EdnsOption::Subnet(ecs)) => {
                    assert_eq!(ecs.addr(), addr, "{t}");
                    assert_eq!(ecs.source_prefix(), source, "{t}");
                    assert_eq!(ecs.scope_prefix(), 0, "{t}");
                }
                other => panic!("{t}: ECS not echoed: {other:?}"),
            }
        }
    }
    // No ECS in, no ECS out.
    let r = s.udp(&query_edns("www.example.com.", RecordType::A, 1232));
    assert!(r.edns.expect("OPT").option(EdnsCode::Subnet).is_none());
}

// ---------------------------------------------------------------------------------------------
// TCP

#[test]
fn tcp_pipelined_queries_answered_in_order() {
    let s = server();
    let qs = vec![
        query("www.example.com.", RecordType::A),
        query("nope.example.com.", RecordType::A),
        query("api.example.com.", RecordType::AAAA),
        query("www.example.org.", RecordType::A),
        query_edns("big.wire.test.", RecordType::TXT, 512),
        query("example.com.", RecordType::MX),
    ];
    let rs = s.tcp_many(&qs);
    assert_eq!(rs.len(), qs.len());
    for (q, r) in qs.iter().zip(&rs) {
        assert_eq!(r.metadata.id, q.metadata.id, "order");
        assert_eq!(r.queries, q.queries, "question");
    }
    let codes: Vec<ResponseCode> = rs.iter().map(|r| r.metadata.response_code).collect();
    assert_eq!(
        codes,
        vec![
            ResponseCode::NoError,
            ResponseCode::NXDomain,
            ResponseCode::NoError,
            ResponseCode::Refused,
            ResponseCode::NoError,
            ResponseCode::NoError,
        ]
    );
    assert_eq!(rs[0].answers.len(), 1);
    assert_eq!(rs[2].answers.len(), 2);
    assert_eq!(rs[4].answers.len(), 12);
    assert!(!rs[4].metadata.truncation);
}

#[test]
fn tcp_idle_connection_is_closed() {
    let s = server();
    let started = Instant::now();
    let mut c = TcpStream::connect(s.addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(6)))
        .expect("timeout");
    let mut b = [0u8; 16];
    let n = c.read(&mut b).expect("read ends in EOF, not a timeout");
    let took = started.elapsed();
    assert_eq!(n, 0, "data on an idle connection");
    assert!(
        took >= Duration::from_millis(1500),
        "closed too early: {took:?}"
    );
    assert!(took <= Duration::from_secs(4), "closed too late: {took:?}");
}

#[test]
fn tcp_connection_limit() {
    let s = server();
    let q = query("www.example.com.", RecordType::A);
    let qb = q.to_vec().expect("encode");
    let mut framed = (qb.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&qb);
    let ask = |c: &mut TcpStream| -> Option<Vec<u8>> {
        c.write_all(&framed).ok()?;
        read_tcp_message(c)
    };
    // Eight connections, each proven accepted and served (and so holding a slot).
    let mut held: Vec<TcpStream> = (0..8)
        .map(|i| {
            let mut c = TcpStream::connect(s.addr).expect("connect");
            c.set_read_timeout(Some(Duration::from_secs(1)))
                .expect("timeout");
            assert!(ask(&mut c).is_some(), "connection {i} not served");
            c
        })
        .collect();
    // Over the limit the newcomer is served and the connection idle longest (the first)
    // gives up its slot (RFC 7766 §6.2.3; docs/operations.md "TCP limits").
    let started = Instant::now();
    let mut ninth = TcpStream::connect(s.addr).expect("connect");
    ninth
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let raw = ask(&mut ninth).expect("the ninth connection is served");
    let r = decode_reply("tcp", q.metadata.id, &raw);
    assert_eq!(r.answers.len(), 1);
    let mut b = [0u8; 64];
    match held[0].read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("evicted connection got {n} bytes"),
        Err(e) => panic!("the idlest connection was not closed: {e}"),
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the slot came only from the idle timeout"
    );
    // The others still work.
    for (i, c) in held.iter_mut().enumerate().skip(1) {
        assert!(ask(c).is_some(), "held connection {i} broken");
    }
}

#[test]
fn axfr_is_refused() {
    let s = server();
    for qn in ["example.com.", "wire.test."] {
        for qt in [RecordType::AXFR, RecordType::IXFR] {
            let r = s.tcp(&query(qn, qt));
            assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{qn} {qt}");
            assert!(r.answers.is_empty(), "{qn} {qt}");
        }
    }
    let r = s.udp(&query("example.com.", RecordType::AXFR));
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
}

// ---------------------------------------------------------------------------------------------
// Additional section

#[test]
fn mx_srv_ns_targets_in_additional() {
    let s = server();
    let mail = vec![
        "mail.example.com. A 192.0.2.25",
        "mail.example.com. AAAA 2001:db8::25",
    ];
    for (t, r) in s.both(&query("example.com.", RecordType::MX)) {
        assert!(r.metadata.authoritative, "{t}");
        assert_eq!(
            shows(&r.answers),
            vec!["example.com. MX 10 mail.example.com."]
        );
        assert_eq!(shows(&r.additionals), mail, "{t}");
    }
    for (t, r) in s.both(&query("_imaps._tcp.example.com.", RecordType::SRV)) {
        assert_eq!(
            shows(&r.answers),
            vec!["_imaps._tcp.example.com. SRV 0 1 993 mail.example.com."],
            "{t}"
        );
        assert_eq!(shows(&r.additionals), mail, "{t}");
    }
    for (t, r) in s.both(&query("example.com.", RecordType::NS)) {
        assert!(r.metadata.authoritative, "{t}");
        assert_eq!(
            shows(&r.answers),
            vec![
                "example.com. NS ns1.example.com.",
                "example.com. NS ns2.example.com."
            ],
            "{t}"
        );
        assert_eq!(
            shows(&r.additionals),
            vec![
                "ns1.example.com. A 192.0.2.53",
                "ns1.example.com. AAAA 2001:db8::53",
                "ns2.example.com. A 198.51.100.53",
                "ns2.example.com. AAAA 2001:db8:1::53",
            ],
            "{t}"
        );
    }
    // Out-of-zone targets add nothing.
    for (t, r) in s.both(&query("out.wire.test.", RecordType::CNAME)) {
        assert!(r.additionals.is_empty(), "{t}");
    }
}

// ---------------------------------------------------------------------------------------------
// Defects found with genreport, respdiff against Knot, and a new user's tries

/// Every path that answers: the fast path (static, balanced, NXDOMAIN, NODATA) and the
/// reference (CNAME, referral, REFUSED, CHAOS, ANY).
const ANSWERING_NAMES: &[(&str, RecordType)] = &[
    ("mail.example.com.", RecordType::A),
    ("www.example.com.", RecordType::A),
    ("nope.example.com.", RecordType::A),
    ("mail.example.com.", RecordType::TXT),
    ("api.example.com.", RecordType::A),
    ("host.lab.example.com.", RecordType::A),
    ("example.org.", RecordType::A),
    ("example.com.", RecordType::ANY),
    ("example.com.", RecordType::SOA),
];

#[test]
fn cd_is_never_set_in_replies() {
    let s = server();
    for &(n, t) in ANSWERING_NAMES {
        for edns in [false, true] {
            let mut q = if edns {
                query_edns(n, t, 1232)
            } else {
                query(n, t)
            };
            q.metadata.checking_disabled = true;
            q.metadata.recursion_desired = true;
            for (tr, r) in s.both(&q) {
                assert!(!r.metadata.checking_disabled, "{tr} {n} {t}: CD set");
                assert!(r.metadata.recursion_desired, "{tr} {n} {t}: RD copied");
            }
        }
    }
}

#[test]
fn cname_to_a_name_below_a_cut_ends_in_the_referral() {
    let s = server();
    for (t, r) in s.both(&query_edns("todeleg.wire.test.", RecordType::A, 1232)) {
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{t}");
        // The CNAME is ours, so the answer stays authoritative (as Knot answers it).
        assert!(r.metadata.authoritative, "{t}: AA");
        assert_eq!(r.answers.len(), 1, "{t}: {:?}", r.answers);
        assert_eq!(
            r.answers[0].data,
            RData::CNAME(hickory_proto::rr::rdata::CNAME(name("x.sub.wire.test."))),
            "{t}"
        );
        let ns: Vec<_> = r
            .authorities
            .iter()
            .map(|r| (r.name.clone(), &r.data))
            .collect();
        assert_eq!(
            ns,
            vec![(
                name("sub.wire.test."),
                &RData::NS(hickory_proto::rr::rdata::NS(name("ns.sub.wire.test.")))
            )],
            "{t}: referral NS"
        );
        let glue: Vec<_> = r
            .additionals
            .iter()
            .map(|r| (r.name.clone(), &r.data))
            .collect();
        assert_eq!(
            glue,
            vec![(
                name("ns.sub.wire.test."),
                &RData::A("192.0.2.9".parse().expect("ip"))
            )],
            "{t}: glue"
        );
    }
}

#[test]
fn ds_at_a_cut_is_answered_from_the_parent_when_both_are_served() {
    let parent = "$TTL 300
@        IN SOA ns1 hostmaster 5 3600 600 86400 120
         IN NS  ns1
ns1      IN A   192.0.2.1
child    IN NS  ns.child
ns.child IN A   192.0.2.2
signed   IN NS  ns.signed
signed   IN DS  12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
ns.signed IN A  192.0.2.3
";
    let child = "$TTL 300
@   IN SOA ns hostmaster 9 3600 600 86400 60
    IN NS  ns
ns  IN A   192.0.2.2
";
    let signed = "$TTL 300
@   IN SOA ns hostmaster 11 3600 600 86400 60
    IN NS  ns
ns  IN A   192.0.2.3
";
    let s = TestServer::start(
        &[
            ("parent.test.zone", parent),
            ("child.parent.test.zone", child),
            ("signed.parent.test.zone", signed),
        ],
        "",
    );
    // No DS in the parent: NODATA with the parent's SOA (serial 5), not the child's.
    for (t, r) in s.both(&query_edns("child.parent.test.", RecordType::DS, 1232)) {
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{t}");
        assert!(r.metadata.authoritative, "{t}");
        assert!(r.answers.is_empty(), "{t}");
        let soa = r.authorities.first().expect("SOA");
        assert_eq!(soa.name, name("parent.test."), "{t}: the parent's SOA");
        match &soa.data {
            RData::SOA(x) => assert_eq!(x.serial, 5, "{t}"),
            other => panic!("{t}: {other:?}"),
        }
    }
    // A DS in the parent is answered.
    for (t, r) in s.both(&query("signed.parent.test.", RecordType::DS)) {
        assert_eq!(r.answers.len(), 1, "{t}: {r:?}");
        assert_eq!(r.answers[0].record_type(), RecordType::DS, "{t}");
        assert!(r.metadata.authoritative, "{t}");
    }
    // Everything else at the child's apex is the child's.
    for (t, r) in s.both(&query("child.parent.test.", RecordType::SOA)) {
        match &r.answers.first().expect("SOA").data {
            RData::SOA(x) => assert_eq!(x.serial, 9, "{t}"),
            other => panic!("{t}: {other:?}"),
        }
    }
}

/// How often a name's uncompressed labels appear in a raw message.
fn occurrences(raw: &[u8], labels: &[u8]) -> usize {
    raw.windows(labels.len()).filter(|w| *w == labels).count()
}

#[test]
fn names_inside_rdata_are_compressed() {
    let s = server();
    let zone_name = b"\x07example\x03com\x00";
    for (n, t) in [
        ("nope.example.com.", RecordType::A),     // NXDOMAIN: SOA
        ("NoPe.ExAmPlE.CoM.", RecordType::A),     // the same, 0x20
        ("mail.example.com.", RecordType::TXT),   // NODATA: SOA
        ("www.example.com.", RecordType::MX),     // NODATA at a balanced name
        ("example.com.", RecordType::SOA),        // SOA
        ("example.com.", RecordType::MX),         // MX
        ("example.com.", RecordType::NS),         // NS
        ("api.example.com.", RecordType::CNAME),  // CNAME
        ("host.lab.example.com.", RecordType::A), // referral NS
    ] {
        for edns in [false, true] {
            let q = if edns {
                query_edns(n, t, 1232)
            } else {
                query(n, t)
            };
            for (tr, raw) in s.both_raw(&q.to_vec().expect("encode")) {
                let r = decode_reply(tr, q.metadata.id, &raw);
                assert!(
                    !r.answers.is_empty() || !r.authorities.is_empty(),
                    "{tr} {n} {t}: {r:?}"
                );
                // The zone's name is written once at most: in the question, or (when the
                // client spelled it in other case: compression matches bytes, as hickory's
                // encoder does) in the first name of the rdata. Every other one is a pointer.
                let lower = n.to_ascii_lowercase() == n;
                let expected = if lower {
                    1
                } else {
                    usize::from(t != RecordType::CNAME)
                };
                assert!(
                    occurrences(&raw, zone_name) <= expected,
                    "{tr} {n} {t}: example.com written out again: {raw:02x?}"
                );
            }
        }
    }
    // As small as Knot's: Knot 3 answers NXDOMAIN for nx.example.com (EDNS, shipped zone) in
    // 94 bytes.
    let raw = s.udp_bytes(
        &query_edns("nx.example.com.", RecordType::A, 1232)
            .to_vec()
            .expect("q"),
    );
    assert_eq!(raw.len(), 94, "NXDOMAIN size");
}

/// The Extended DNS Error (RFC 8914, option 15) codes in a reply.
fn ede_codes(r: &Message) -> Vec<u16> {
    let Some(e) = &r.edns else { return Vec::new() };
    e.options()
        .as_ref()
        .iter()
        .filter_map(|(code, opt)| match (u16::from(*code), opt) {
            (15, EdnsOption::Unknown(_, data)) if data.len() >= 2 => {
                Some(u16::from_be_bytes([data[0], data[1]]))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn error_replies_carry_extended_dns_errors() {
    let s = server();
    let mut notimp = query_edns("example.com.", RecordType::SOA, 1232);
    notimp.metadata.op_code = OpCode::Status;
    let cases: Vec<(&str, Message, ResponseCode, u16)> = vec![
        (
            "out of zone",
            query_edns("example.org.", RecordType::A, 1232),
            ResponseCode::Refused,
            20,
        ),
        (
            "class HS",
            {
                let mut m = query_edns("example.com.", RecordType::A, 1232);
                m.queries[0].set_query_class(DNSClass::HS);
                m
            },
            ResponseCode::Refused,
            20,
        ),
        (
            "CHAOS other",
            {
                let mut m = query_edns("other.bind.", RecordType::TXT, 1232);
                m.queries[0].set_query_class(DNSClass::CH);
                m
            },
            ResponseCode::Refused,
            20,
        ),
        (
            "AXFR",
            query_edns("example.com.", RecordType::AXFR, 1232),
            ResponseCode::Refused,
            18,
        ),
        ("opcode STATUS", notimp, ResponseCode::NotImp, 21),
    ];
    for (what, q, rcode, code) in cases {
        for (t, r) in s.both(&q) {
            assert_eq!(r.metadata.response_code, rcode, "{what} {t}");
            assert_eq!(ede_codes(&r), vec![code], "{what} {t}");
        }
        // Without EDNS there is nowhere to put it, and no OPT appears.
        let mut plain = q.clone();
        plain.edns = None;
        for (t, r) in s.both(&plain) {
            assert_eq!(r.metadata.response_code, rcode, "{what} {t}");
            assert!(r.edns.is_none(), "{what} {t}: OPT without EDNS");
        }
    }
    // Answers that are not errors carry none.
    for (t, r) in s.both(&query_edns("mail.example.com.", RecordType::A, 1232)) {
        assert!(ede_codes(&r).is_empty(), "{t}");
    }
}
