//! Behaviour on the wire (SPEC "Behaviour on the wire"), EDNS: OPT echo, payload sizes and
//! truncation, BADVERS, unknown options and DO, NSID, CHAOS identity queries, ECS echo.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use common::wire::*;
use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, RecordType};

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
