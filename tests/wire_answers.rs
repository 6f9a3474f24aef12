//! Behaviour on the wire (SPEC "Behaviour on the wire"), the answers: a real server on
//! loopback, real packets; exact rcodes, flags, sections, TTLs and names of negative answers,
//! referrals, CNAMEs, wildcards, ANY, the additional section, and the defects other tools found.
//! The other wire files: `wire_malformed.rs` (opcodes, malformed input), `wire_fuzz.rs` (the
//! home-made fuzzer), `wire_edns.rs` (EDNS, NSID, CHAOS, ECS), `wire_tcp.rs` (TCP).

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::wire::*;
use common::*;
use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{DNSClass, RData, RecordType};

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
