//! The UDP fast path (`meridian::fast`) against the reference handler (`meridian::dns::handle`):
//! for every query the fast path answers, both responses must decode to the same message; and
//! the fast path must really take the common cases, or this test would prove nothing.

mod common;

use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RecordType};

use meridian::cookie;
use meridian::dns::{handle, Transport};
use meridian::fast::{self, Fast};
use meridian::snapshot::Snapshot;

const ZONE: &str = "$TTL 300
@       SOA ns1 hostmaster 1 7200 1800 1209600 120
        NS  ns1
        NS  ns2
        MX  10 mail
        MX  20 MAIL
        MX  30 mx.example.net.
        MX  40 geo
        MX  50 ns.child
        MX  60 ns.sub
        TXT \"v=spf1 -all\" \"second string\"
        CAA 0 issue \"ca.example.net\"
ns1     A 192.0.2.53
ns2     AAAA 2001:db8::53
mail    A 192.0.2.25
        AAAA 2001:db8::25
alias   CNAME mail
*.wild  A 192.0.2.99
a.b.c   A 192.0.2.7
sub     NS ns.sub
ns.sub  A 192.0.2.77
child   NS ns.child
ns.child A 192.0.2.88
_sip._tcp SRV 0 5 5060 sipserver
        SRV 1 5 5060 sip.example.net.
        SRV 2 5 5060 SipServer
sipserver A 192.0.2.60
        A 192.0.2.61
        AAAA 2001:db8::60
ptr     PTR mail
        PTR host.example.org.
ext     MX 1 a.example.net.
        MX 2 b.example.org.
        MX 3 c.example.co.uk.
        MX 4 d.sub.example.co.uk.
        MX 5 A.EXAMPLE.NET.
        MX 6 e.sub.example.co.uk.
        MX 7 f.g.h.example.com.
        MX 8 ns1.fast.test.
big     TXT \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" \"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\" \"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\" \"dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd\" \"eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee\" \"ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\"
";

fn snapshot() -> (tempfile::TempDir, Snapshot) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("zones")).expect("mkdir");
    // `many`: 70 exchanges with an address each, past the names hickory compresses.
    let mut zone = ZONE.to_string();
    for i in 0..70 {
        zone += &format!("many MX {i} m{i}\nm{i} A 192.0.2.{}\n", 100 + i);
    }
    std::fs::write(dir.path().join("zones/fast.test.zone"), zone).expect("zone");
    // A child zone served beside its parent: DS at its apex is the parent's to answer.
    std::fs::write(
        dir.path().join("zones/child.fast.test.zone"),
        "$TTL 60\n@ SOA ns.child.fast.test. h.child.fast.test. 1 2 3 4 5\n NS ns\nns A 192.0.2.88\n",
    )
    .expect("child zone");
    let db = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/geoip/GeoIP2-City-Test.mmdb"
    );
    let geoip = if std::path::Path::new(db).is_file() {
        format!("[geoip]\ndatabase = \"{db}\"\n")
    } else {
        String::new()
    };
    let cfg = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nzones = \"zones\"\n[site]\nid = \"s\"\nlocation = {{ lat = 50.0, lon = 8.0 }}\n{geoip}
[regions.us]\nlocation = {{ lat = 38.9, lon = -77.0 }}\n[regions.eu]\nlocation = {{ lat = 53.35, lon = -6.26 }}
[[service]]\nname = \"geo.fast.test\"\npolicy = \"geo\"\nttl = 20\nendpoints = [
  {{ region = \"us\", address = \"192.0.2.1\" }}, {{ region = \"eu\", address = \"192.0.2.2\" }},
  {{ region = \"us\", address = \"2001:db8::1\" }}, {{ region = \"eu\", address = \"2001:db8::2\" }} ]
[[service]]\nname = \"hash.fast.test\"\npolicy = \"hash\"\nmax_answers = 2\nendpoints = [
  {{ address = \"192.0.2.11\" }}, {{ address = \"192.0.2.12\" }}, {{ address = \"192.0.2.13\" }} ]
[[service]]\nname = \"v4only.fast.test\"\npolicy = \"failover\"\nendpoints = [ {{ address = \"192.0.2.21\" }} ]
[[service]]\nname = \"degraded.fast.test\"\npolicy = \"failover\"\nttl = 300\nttl_degraded = 5\nendpoints = [
  {{ address = \"192.0.2.31\" }}, {{ address = \"192.0.2.32\", priority = 2 }}, {{ address = \"2001:db8::31\" }} ]
[[service]]\nname = \"cname.fast.test\"\npolicy = \"geo\"\nendpoints = [
  {{ region = \"us\", target = \"lb-us.example.net\" }}, {{ region = \"eu\", target = \"mail.fast.test\" }} ]
[[service]]\nname = \"servfail.fast.test\"\npolicy = \"round-robin\"\nwhen_all_down = \"servfail\"\nendpoints = [
  {{ address = \"192.0.2.41\" }}, {{ address = \"2001:db8::41\" }} ]
"
    );
    std::fs::write(dir.path().join("m.toml"), cfg).expect("config");
    let snap = Snapshot::load(&dir.path().join("m.toml")).unwrap_or_else(|p| panic!("{p}"));
    // Answers around a failure: the preferred endpoint of `degraded` is down (ttl_degraded),
    // and every endpoint of `servfail` is (SERVFAIL).
    for svc in &snap.services {
        for e in &svc.endpoints {
            if ["192.0.2.31", "192.0.2.41", "2001:db8::41"].contains(&e.addr.to_string().as_str()) {
                e.state.set_healthy(false);
            }
        }
    }
    (dir, snap)
}

fn packet(
    name: &str,
    t: RecordType,
    edns: Option<(u16, bool)>,
    ecs: Option<(&str, u8)>,
) -> Vec<u8> {
    let mut m = Message::new(0xBEEF, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.metadata.checking_disabled = name.starts_with('C');
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), t));
    if let Some((payload, dnssec_ok)) = edns {
        let mut e = Edns::new();
        e.set_max_payload(payload);
        e.set_dnssec_ok(dnssec_ok);
        if let Some((ip, prefix)) = ecs {
            let ip: IpAddr = ip.parse().expect("ip");
            e.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(ip, prefix, 0)));
        }
        m.set_edns(e);
    }
    m.to_vec().expect("encode")
}

/// Everything a client can see, in a comparable form.
fn view(m: &Message) -> String {
    let mut s = format!(
        "id={} rcode={} aa={} tc={} rd={} ra={} cd={} ad={}\n",
        m.metadata.id,
        m.metadata.response_code,
        m.metadata.authoritative,
        m.metadata.truncation,
        m.metadata.recursion_desired,
        m.metadata.recursion_available,
        m.metadata.checking_disabled,
        m.metadata.authentic_data
    );
    for q in &m.queries {
        s += &format!("Q {} {} {}\n", q.name(), q.query_type(), q.query_class());
    }
    for (sect, rs) in [
        ("AN", &m.answers),
        ("NS", &m.authorities),
        ("AR", &m.additionals),
    ] {
        for r in rs.iter() {
            // Owners are compared with their case: answers must read as the client wrote the
            // question, and both paths point the SOA owner into the question (as Knot does).
            let owner = r.name.to_string();
            s += &format!(
                "{sect} {owner} {} {} {} {}\n",
                r.ttl,
                r.dns_class,
                r.record_type(),
                r.data
            );
        }
    }
    if let Some(e) = &m.edns {
        s += &format!(
            "OPT payload={} do={} v={}\n",
            e.max_payload(),
            e.flags().dnssec_ok,
            e.version()
        );
        if let Some(EdnsOption::Subnet(c)) = e.option(EdnsCode::Subnet) {
            s += &format!(
                "ECS {}/{}/{}\n",
                c.addr(),
                c.source_prefix(),
                c.scope_prefix()
            );
        }
        // Every option, in order, with the COOKIE's bytes.
        for (code, opt) in e.options().as_ref() {
            s += &format!("OPTION {code:?}");
            if let EdnsOption::Unknown(10, data) = opt {
                s += &format!(" {data:02x?}");
            }
            s += "\n";
        }
    }
    s
}

#[test]
fn fast_path_matches_the_reference_handler() {
    let (_dir, snap) = snapshot();
    let src: SocketAddr = "127.0.0.1:5353".parse().expect("addr");
    let mut out = Vec::new();
    let mut answered = 0;
    let mut cases = Vec::new();
    for name in [
        "fast.test.",
        "FaSt.TeSt.",
        "mail.fast.test.",
        "MAIL.fast.test.",
        "ns2.fast.test.",
        "b.c.fast.test.",
        "a.b.c.fast.test.",
        "nope.fast.test.",
        "x.nope.fast.test.",
        "Cmail.fast.test.",
        "geo.fast.test.",
        "GEO.fast.test.",
        "hash.fast.test.",
        "v4only.fast.test.",
        "degraded.fast.test.",
        "servfail.fast.test.",
        "SERVFAIL.fast.test.",
        "big.fast.test.",
        "child.fast.test.",
        "CHILD.fast.test.",
        "ns.child.fast.test.",
        "nx.child.fast.test.",
        "ns1.nope.fast.test.",
        "hostmaster.fast.test.",
        "x.ns1.fast.test.",
        "_sip._tcp.fast.test.",
        "_SIP._tcp.fast.test.",
        "ptr.fast.test.",
        "ext.fast.test.",
        "Ext.Fast.Test.",
        "many.fast.test.",
        "sipserver.fast.test.",
    ] {
        for t in [
            RecordType::A,
            RecordType::AAAA,
            RecordType::TXT,
            RecordType::SOA,
            RecordType::CAA,
            RecordType::SSHFP,
            RecordType::DS,
            RecordType::NS,
            RecordType::MX,
            RecordType::SRV,
            RecordType::PTR,
        ] {
            cases.push(packet(name, t, None, None));
            cases.push(packet(name, t, Some((1232, false)), None));
            cases.push(packet(name, t, Some((4096, true)), None));
            cases.push(packet(name, t, Some((512, false)), None));
        }
    }
    for (ip, prefix) in [
        ("81.2.69.160", 32),
        ("81.2.69.0", 24),
        ("214.0.1.0", 24),
        ("2001:218::", 48),
        ("1.1.1.0", 24),
        ("0.0.0.0", 0),
        ("10.9.8.0", 24),
    ] {
        for name in [
            "geo.fast.test.",
            "hash.fast.test.",
            "mail.fast.test.",
            "nope.fast.test.",
            "degraded.fast.test.",
            "servfail.fast.test.",
        ] {
            for t in [RecordType::A, RecordType::AAAA] {
                cases.push(packet(name, t, Some((1232, false)), Some((ip, prefix))));
            }
        }
    }
    for p in &cases {
        if fast::answer(&snap, p, src, &mut out) == Fast::Answered {
            answered += 1;
            let slow = handle(&snap, p, src, Transport::Udp).expect("slow path answers");
            let (f, s) = (
                Message::from_vec(&out).expect("fast response decodes"),
                Message::from_vec(&slow).expect("slow response decodes"),
            );
            assert_eq!(
                view(&f),
                view(&s),
                "query {:?}",
                Message::from_vec(p).map(|m| m.queries)
            );
            // Byte for byte too: same compression, same order, same sizes (what truncation
            // and the 512-byte limit depend on).
            assert_eq!(
                out,
                slow,
                "bytes differ for {:?}",
                Message::from_vec(p).map(|m| m.queries)
            );
        }
    }
    for (name, t, rcode, ttl) in [
        ("degraded.fast.test.", RecordType::A, 0u8, Some(5u32)),
        ("degraded.fast.test.", RecordType::AAAA, 0, Some(300)),
        ("servfail.fast.test.", RecordType::A, 2, None),
    ] {
        let p = packet(name, t, Some((1232, false)), None);
        assert_eq!(
            fast::answer(&snap, &p, src, &mut out),
            Fast::Answered,
            "{name} {t}"
        );
        let m = Message::from_vec(&out).expect("decodes");
        assert_eq!(
            u16::from(m.metadata.response_code),
            u16::from(rcode),
            "{name} {t}: {m}"
        );
        assert_eq!(m.answers.first().map(|r| r.ttl), ttl, "{name} {t}: {m}");
    }
    // Names in rdata and the additional section are this path's too (NS at the apex, MX, SRV,
    // PTR), with the addresses of in-zone targets after them.
    for (name, t, answers, additional) in [
        ("fast.test.", RecordType::NS, 2, 2),
        ("fast.test.", RecordType::MX, 6, 4),
        ("_sip._tcp.fast.test.", RecordType::SRV, 3, 3),
        ("ptr.fast.test.", RecordType::PTR, 2, 0),
        ("ext.fast.test.", RecordType::MX, 8, 1),
    ] {
        let p = packet(name, t, Some((4096, false)), None);
        assert_eq!(
            fast::answer(&snap, &p, src, &mut out),
            Fast::Answered,
            "{name} {t}"
        );
        let m = Message::from_vec(&out).expect("decodes");
        assert_eq!(m.answers.len(), answers, "{name} {t}: {m}");
        assert_eq!(m.additionals.len(), additional, "{name} {t}: {m}");
    }
    assert!(
        answered * 10 >= cases.len() * 7,
        "fast path took only {answered} of {}",
        cases.len()
    );
}

#[test]
fn fast_path_leaves_the_special_cases_to_the_reference() {
    let (_dir, snap) = snapshot();
    let src: SocketAddr = "127.0.0.1:5353".parse().expect("addr");
    let mut out = Vec::new();
    let fallback = [
        packet("alias.fast.test.", RecordType::A, None, None), // CNAME chase
        packet("x.wild.fast.test.", RecordType::A, None, None), // wildcard
        packet("www.sub.fast.test.", RecordType::A, None, None), // referral
        // More names than hickory compresses (120): the reference's.
        packet(
            "many.fast.test.",
            RecordType::MX,
            Some((65000, false)),
            None,
        ),
        packet("fast.test.", RecordType::ANY, None, None), // RFC 8482
        packet("fast.test.", RecordType::AXFR, None, None),
        packet("example.org.", RecordType::A, None, None), // REFUSED
        packet("big.fast.test.", RecordType::TXT, None, None), // needs truncation at 512
        packet("geo.fast.test.", RecordType::TXT, None, None), // other type at a balanced name
        packet("cname.fast.test.", RecordType::A, None, None), // target: CNAME, chased
        packet(
            "cname.fast.test.",
            RecordType::AAAA,
            Some((1232, false)),
            None,
        ),
    ];
    for p in &fallback {
        assert_eq!(
            fast::answer(&snap, p, src, &mut out),
            Fast::Fallback,
            "{:?}",
            Message::from_vec(p).map(|m| m.queries)
        );
    }
    // Malformed or unusual packets never get a fast answer.
    let good = packet("mail.fast.test.", RecordType::A, Some((1232, false)), None);
    assert_eq!(fast::answer(&snap, &good, src, &mut out), Fast::Answered);
    for cut in 0..good.len() {
        assert_eq!(
            fast::answer(&snap, &good[..cut], src, &mut out),
            Fast::Fallback,
            "cut at {cut}"
        );
    }
    let mut qr = good.clone();
    qr[2] |= 0x80;
    assert_eq!(fast::answer(&snap, &qr, src, &mut out), Fast::Fallback);
    let mut v1 = good.clone();
    let opt_version = v1.len() - 11 + 6;
    v1[opt_version] = 1; // EDNS version 1: BADVERS is the slow path's
    assert_eq!(fast::answer(&snap, &v1, src, &mut out), Fast::Fallback);
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(
        fast::answer(&snap, &trailing, src, &mut out),
        Fast::Fallback
    );
}

/// A query with a raw COOKIE option (and optionally ECS), as resolvers send them.
fn cookie_packet(name: &str, t: RecordType, cookie: &[u8], ecs: Option<(&str, u8)>) -> Vec<u8> {
    let mut m = Message::new(0xC00C, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), t));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    e.options_mut()
        .insert(EdnsOption::Unknown(10, cookie.to_vec()));
    if let Some((ip, prefix)) = ecs {
        let ip: IpAddr = ip.parse().expect("ip");
        e.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(ip, prefix, 0)));
    }
    m.set_edns(e);
    m.to_vec().expect("encode")
}

#[test]
fn fast_path_cookies_match_the_reference_byte_for_byte() {
    let (_dir, snap) = snapshot();
    let src: SocketAddr = "127.0.0.1:5353".parse().expect("addr");
    let client = [1u8, 2, 3, 4, 5, 6, 7, 8];
    let now = cookie::unix_now();
    let sc = |ts: u32| cookie::server_cookie(&snap.cookie_secret, &client, src.ip(), ts);
    let with = |server: &[u8]| [&client[..], server].concat();
    let mut forged = sc(now);
    forged[9] ^= 0xFF;
    let cookies: Vec<(&str, Vec<u8>)> = vec![
        ("client only", client.to_vec()),
        ("valid", with(&sc(now))),
        ("valid, to renew", with(&sc(now - 2000))),
        ("forged", with(&forged)),
        ("expired", with(&sc(now - 4000))),
        ("8-byte server cookie", with(&[7; 8])),
        ("32-byte server cookie", with(&[7; 32])),
    ];
    let mut out = Vec::new();
    for (what, c) in &cookies {
        for (name, t, ecs, identical) in [
            ("mail.fast.test.", RecordType::A, None, true),
            ("MAIL.fast.test.", RecordType::AAAA, None, true),
            ("fast.test.", RecordType::TXT, None, true),
            ("nope.fast.test.", RecordType::A, None, false),
            ("mail.fast.test.", RecordType::SSHFP, None, false),
            (
                "geo.fast.test.",
                RecordType::A,
                Some(("81.2.69.0", 24)),
                true,
            ),
            (
                "hash.fast.test.",
                RecordType::A,
                Some(("10.9.8.0", 24)),
                true,
            ),
        ] {
            let p = cookie_packet(name, t, c, ecs);
            // A fresh cookie carries the current second: a boundary between the two calls
            // would make them differ, so try again (three boundaries in a row cannot happen).
            let mut compared = false;
            for _ in 0..3 {
                let before = cookie::unix_now();
                assert_eq!(
                    fast::answer(&snap, &p, src, &mut out),
                    Fast::Answered,
                    "{what}: {name} {t}: the fast path must take cookie queries"
                );
                let slow = handle(&snap, &p, src, Transport::Udp).expect("slow path answers");
                if cookie::unix_now() != before {
                    continue;
                }
                let (f, s) = (
                    Message::from_vec(&out).expect("fast response decodes"),
                    Message::from_vec(&slow).expect("slow response decodes"),
                );
                assert_eq!(view(&f), view(&s), "{what}: {name} {t}");
                assert!(view(&f).contains("OPTION Cookie"), "{what}: {}", view(&f));
                if identical {
                    // Answers have no SOA whose owner the two paths spell differently.
                    assert_eq!(out, slow, "{what}: {name} {t}: bytes");
                }
                compared = true;
                break;
            }
            assert!(compared, "{what}: {name} {t}");
        }
    }
    // Malformed and repeated COOKIE options are FORMERR, which is the reference's to give.
    for bad in [
        vec![1u8; 7],
        vec![1u8; 9],
        vec![1u8; 15],
        vec![1u8; 41],
        vec![],
    ] {
        let p = cookie_packet("mail.fast.test.", RecordType::A, &bad, None);
        assert_eq!(fast::answer(&snap, &p, src, &mut out), Fast::Fallback);
        let slow = handle(&snap, &p, src, Transport::Udp).expect("FORMERR");
        let m = Message::from_vec(&slow).expect("decode");
        assert_eq!(
            m.metadata.response_code,
            hickory_proto::op::ResponseCode::FormErr,
            "length {}",
            bad.len()
        );
    }
    let mut two = Message::from_vec(&cookie_packet(
        "mail.fast.test.",
        RecordType::A,
        &client,
        None,
    ))
    .expect("decode");
    if let Some(e) = two.edns.as_mut() {
        e.options_mut()
            .insert(EdnsOption::Unknown(10, client.to_vec()));
    }
    let p = two.to_vec().expect("encode");
    assert_eq!(fast::answer(&snap, &p, src, &mut out), Fast::Fallback);
}

#[test]
fn fast_path_over_tcp_matches_the_reference_handler_over_tcp() {
    let (_dir, snap) = snapshot();
    let src: SocketAddr = "127.0.0.1:5353".parse().expect("addr");
    let mut out = Vec::new();
    let mut cases = Vec::new();
    for name in [
        "fast.test.",
        "mail.fast.test.",
        "nope.fast.test.",
        "geo.fast.test.",
        "hash.fast.test.",
        "servfail.fast.test.",
        "big.fast.test.",
    ] {
        for t in [
            RecordType::A,
            RecordType::AAAA,
            RecordType::TXT,
            RecordType::SOA,
        ] {
            cases.push(packet(name, t, None, None));
            cases.push(packet(name, t, Some((512, false)), None));
            cases.push(packet(name, t, Some((1232, true)), Some(("81.2.69.0", 24))));
        }
    }
    let mut answered = 0;
    for p in &cases {
        if fast::answer_over(&snap, p, src, &mut out, Transport::Tcp) == Fast::Answered {
            answered += 1;
            let slow = handle(&snap, p, src, Transport::Tcp).expect("slow path answers");
            assert_eq!(
                out,
                slow,
                "bytes differ over TCP for {:?}",
                Message::from_vec(p).map(|m| m.queries)
            );
        }
    }
    assert!(
        answered * 10 >= cases.len() * 7,
        "fast path took only {answered} of {} over TCP",
        cases.len()
    );
    // Over UDP the big TXT set does not fit 512 bytes (truncation is the slow path's); over
    // TCP there is no such limit and the fast path answers it whole.
    let big = packet("big.fast.test.", RecordType::TXT, None, None);
    assert_eq!(fast::answer(&snap, &big, src, &mut out), Fast::Fallback);
    assert_eq!(
        fast::answer_over(&snap, &big, src, &mut out, Transport::Tcp),
        Fast::Answered
    );
    // edns-tcp-keepalive is answered by the reference handler over TCP (RFC 7828), so the fast
    // path must leave it there.
    let mut m = Message::from_vec(&packet(
        "mail.fast.test.",
        RecordType::A,
        Some((1232, false)),
        None,
    ))
    .expect("decode");
    if let Some(e) = m.edns.as_mut() {
        e.options_mut().insert(EdnsOption::Unknown(
            u16::from(EdnsCode::Keepalive),
            Vec::new(),
        ));
    }
    let ka = m.to_vec().expect("encode");
    assert_eq!(
        fast::answer_over(&snap, &ka, src, &mut out, Transport::Tcp),
        Fast::Fallback
    );
}
