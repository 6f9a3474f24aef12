//! EDNS Client Subnet in queries (SPEC "Trust boundaries", RFC 7871 §6): a malformed option
//! (source prefix longer than the family allows, more or fewer address bytes than the prefix
//! needs, bits set past the prefix, a non-zero scope, an unknown family) is FORMERR over UDP
//! and TCP, and a well-formed one is answered and echoed with exactly the bits sent. Then a
//! property test: over random ECS options, the fast path and the reference handler agree
//! (the fast path answers exactly the options `meridian::ecs` accepts, byte for byte as the
//! reference does; everything else is the reference's FORMERR).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::RecordType;

use meridian::dns::{self, Transport};
use meridian::fast::{self, Fast};

const ZONE: &str = "$TTL 3600
@        IN SOA ns1 hostmaster ( 1 3600 600 86400 300 )
         IN NS  ns1
ns1      IN A   192.0.2.53
mail     IN A   192.0.2.25
";

/// `hash` keys on the client subnet from ECS (deterministic, so both paths can be compared
/// byte for byte, and the echoed scope says 24 / 56).
const SERVICE: &str = r#"
[[service]]
name = "lb.ecs.test"
policy = "hash"
endpoints = [ { address = "192.0.2.11" }, { address = "192.0.2.12" }, { address = "192.0.2.13" },
              { address = "2001:db8::11" }, { address = "2001:db8::12" } ]
"#;

fn server() -> TestServer {
    TestServer::start(&[("ecs.test.zone", ZONE)], SERVICE)
}

/// A query for `name` A with one ECS option whose data is `ecs` exactly as given.
fn with_ecs(name: &str, t: RecordType, ecs: &[u8]) -> (Message, Vec<u8>) {
    let q = query(name, t);
    let mut opt = vec![0, 8];
    opt.extend_from_slice(&(ecs.len() as u16).to_be_bytes());
    opt.extend_from_slice(ecs);
    let bytes = with_raw_opt(&q, 1232, 0, 0, &opt);
    (q, bytes)
}

/// The malformed options of RFC 7871 §6, each with why.
fn malformed() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("bits past the source prefix", vec![0, 1, 23, 0, 192, 0, 3]),
        (
            "bits past the prefix, IPv6",
            vec![0, 2, 33, 0, 0x20, 1, 0x0d, 0xb8, 0xff],
        ),
        (
            "an address byte more than /24 needs",
            vec![0, 1, 24, 0, 192, 0, 2, 0],
        ),
        ("address bytes with source 0", vec![0, 1, 0, 0, 192]),
        (
            "an address byte fewer than /24 needs",
            vec![0, 1, 24, 0, 192, 0],
        ),
        ("a non-zero scope in a query", vec![0, 1, 24, 24, 192, 0, 2]),
        ("source /33 for IPv4", vec![0, 1, 33, 0, 192, 0, 2, 1, 0]),
        ("source /129 for IPv6", {
            let mut v = vec![0, 2, 129, 0];
            v.extend_from_slice(&[0u8; 17]);
            v
        }),
        ("an unknown family", vec![0, 3, 0, 0]),
        ("shorter than family, source and scope", vec![0, 1, 24]),
    ]
}

fn both(s: &TestServer, bytes: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("udp", s.udp_bytes(bytes)),
        (
            "tcp",
            s.tcp_raw(bytes, Duration::from_secs(5))
                .expect("TCP answer"),
        ),
    ]
}

#[test]
fn malformed_ecs_is_formerr_over_udp_and_tcp() {
    let s = server();
    for name in ["mail.ecs.test.", "lb.ecs.test."] {
        for (why, ecs) in malformed() {
            let (q, bytes) = with_ecs(name, RecordType::A, &ecs);
            for (via, resp) in both(&s, &bytes) {
                assert_eq!(
                    u16::from_be_bytes([resp[0], resp[1]]),
                    q.metadata.id,
                    "{why} over {via}: id"
                );
                assert_eq!(resp[3] & 0x0f, 1, "{why} ({name}) over {via}: FORMERR");
                assert_eq!(
                    u16::from_be_bytes([resp[6], resp[7]]),
                    0,
                    "{why}: no answers"
                );
                if resp.len() > 12 {
                    // When the message could be read, the reply says so with the question
                    // and an OPT, and never echoes the bad option.
                    let m = Message::from_vec(&resp).expect("decode");
                    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
                    assert_eq!(m.queries.len(), 1, "{why} over {via}: question kept");
                    let e = m.edns.as_ref().expect("OPT in a FORMERR about an option");
                    assert!(
                        e.option(EdnsCode::Subnet).is_none(),
                        "{why}: bad ECS echoed"
                    );
                }
            }
        }
    }
    // The server still answers normally.
    assert_eq!(
        s.udp(&query("mail.ecs.test.", RecordType::A)).answers.len(),
        1
    );
}

#[test]
fn wellformed_ecs_is_answered_and_echoed_as_sent() {
    let s = server();
    let cases: Vec<(Vec<u8>, IpAddr, u8, RecordType)> = vec![
        (
            vec![0, 1, 24, 0, 81, 2, 69],
            "81.2.69.0".parse().unwrap(),
            24,
            RecordType::A,
        ),
        (
            vec![0, 1, 22, 0, 81, 2, 68],
            "81.2.68.0".parse().unwrap(),
            22,
            RecordType::A,
        ),
        (
            vec![0, 1, 0, 0],
            "0.0.0.0".parse().unwrap(),
            0,
            RecordType::A,
        ),
        (
            vec![0, 1, 32, 0, 192, 0, 2, 1],
            "192.0.2.1".parse().unwrap(),
            32,
            RecordType::A,
        ),
        (
            vec![0, 2, 48, 0, 0x20, 1, 0x0d, 0xb8, 0, 1],
            "2001:db8:1::".parse().unwrap(),
            48,
            RecordType::AAAA,
        ),
    ];
    for (ecs, addr, source, t) in cases {
        let (q, bytes) = with_ecs("lb.ecs.test.", t, &ecs);
        for (via, resp) in both(&s, &bytes) {
            let m = Message::from_vec(&resp).expect("decode");
            assert_eq!(m.metadata.id, q.metadata.id);
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::NoError,
                "{ecs:?} over {via}"
            );
            assert_eq!(m.answers.len(), 1, "{ecs:?} over {via}");
            match m.edns.as_ref().and_then(|e| e.option(EdnsCode::Subnet)) {
                Some(EdnsOption::Subnet(e)) => {
                    assert_eq!(e.addr(), addr, "{ecs:?} over {via}: address echoed");
                    assert_eq!(e.source_prefix(), source);
                    assert!(e.scope_prefix() <= source);
                }
                other => panic!("{ecs:?} over {via}: ECS echoed as {other:?}"),
            }
        }
    }
}

/// xorshift64*: a fixed seed, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random ECS option, mostly near-valid: the family usually 1 or 2, the source around the
/// family's range, the scope usually 0, the address length usually what the source needs, the
/// address bits usually clear past the prefix.
fn random_ecs(r: &mut Rng) -> Vec<u8> {
    let family: u16 = match r.below(10) {
        0 => r.below(4) as u16,
        1..=5 => 1,
        _ => 2,
    };
    let max = if family == 2 { 128 } else { 32 };
    let source = match r.below(8) {
        0 => r.below(256) as u8,
        _ => r.below(max + 2) as u8,
    };
    let scope = if r.below(6) == 0 {
        r.below(256) as u8
    } else {
        0
    };
    let need = (source as usize).div_ceil(8);
    let len = match r.below(8) {
        0 => need.saturating_sub(1),
        1 => need + 1 + r.below(3) as usize,
        _ => need,
    };
    let mut addr: Vec<u8> = (0..len).map(|_| r.below(256) as u8).collect();
    if r.below(4) != 0 && len == need && source % 8 != 0 {
        // Clear the bits past the prefix in the last byte (a valid option, usually).
        let keep = 0xffu8 << (8 - source % 8);
        if let Some(b) = addr.last_mut() {
            *b &= keep;
        }
    }
    let mut v = family.to_be_bytes().to_vec();
    v.extend_from_slice(&[source, scope]);
    v.extend_from_slice(&addr);
    v
}

#[test]
fn fast_path_and_reference_agree_on_random_ecs() {
    let s = server();
    let snap = s.shared.load_full();
    let src: SocketAddr = "198.51.100.7:5353".parse().unwrap();
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut answered_fast, mut formerr, mut valid) = (0, 0, 0);
    let mut out = Vec::new();
    for i in 0..20_000 {
        let ecs = random_ecs(&mut r);
        let ok = meridian::ecs::parse(&ecs).is_ok();
        valid += ok as usize;
        let name = ["lb.ecs.test.", "mail.ecs.test.", "nope.ecs.test."][i % 3];
        let t = if i % 2 == 0 {
            RecordType::A
        } else {
            RecordType::AAAA
        };
        let (_, bytes) = with_ecs(name, t, &ecs);
        for transport in [Transport::Udp, Transport::Tcp] {
            let reference = dns::handle(&snap, &bytes, src, transport).expect("a reply");
            let rcode = reference[3] & 0x0f;
            assert_eq!(
                rcode == 1,
                !ok,
                "{ecs:?} ({name} {t} {transport:?}): FORMERR exactly when the option is malformed"
            );
            out.clear();
            match fast::answer_over(&snap, &bytes, src, &mut out, transport) {
                Fast::Answered => {
                    assert!(ok, "{ecs:?}: the fast path answered a malformed option");
                    assert_eq!(out, reference, "{ecs:?} ({name} {t} {transport:?})");
                    answered_fast += 1;
                }
                Fast::Fallback => formerr += (!ok) as usize,
            }
        }
    }
    eprintln!(
        "20,000 random options, {valid} well-formed: fast path answered {answered_fast} \
         (of 40,000 UDP+TCP queries), {formerr} queries with a malformed one left to the reference's FORMERR"
    );
    assert!(
        valid > 5_000 && valid < 18_000,
        "a mix of valid and malformed"
    );
    assert!(answered_fast > 5_000, "the fast path took part");
}

#[test]
fn explain_clears_host_bits_of_the_ecs_it_is_given() {
    // `explain --ecs 81.2.69.160/23` names a network by one of its addresses: the option it
    // sends must be well-formed, or the strict check above would answer it FORMERR.
    let s = server();
    let snap = s.shared.load_full();
    for ecs in ["81.2.69.160%2F23", "2001:db8::1%2F48", "81.2.69.160%2F0"] {
        let q = format!("name=lb.ecs.test&type=A&ecs={ecs}");
        match meridian::explain::live(&snap, &q) {
            Ok(meridian::explain::Live::Json(v)) => {
                assert_eq!(v["rcode"], "No Error", "{ecs}: {v}");
                assert_eq!(
                    v["answer"].as_array().map(|a| a.len()),
                    Some(1),
                    "{ecs}: {v}"
                );
            }
            Ok(_) => panic!("{ecs}: text where JSON was asked"),
            Err(e) => panic!("{ecs}: {e}"),
        }
    }
}
