//! Balanced names on the wire (SPEC "Behaviour on the wire": balanced names, client location,
//! policies; CLI `explain`): a real server on loopback, real UDP and TCP packets, client
//! subnets varied through EDNS Client Subnet, endpoint health flipped in the live snapshot.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{RData, RecordType};

// ---------------------------------------------------------------------------------------------
// Test data and helpers

const ZONE: &str = "$TTL 3600
@        IN SOA ns1 hostmaster ( 7 3600 600 86400 300 )
         IN NS   ns1
ns1      IN A    192.0.2.53
mail     IN A    192.0.2.25
www      IN TXT  \"static text at a balanced name\"
api      IN CNAME www
api4     IN CNAME v4only
";

/// The MaxMind test databases, shipped in the repo (tests/data/geoip/README.md says where from).
const GEOIP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/geoip");
const US: &str = "us-east";
const EU: &str = "eu-west";
const AP: &str = "ap";

/// Absolute path of a test database; fails the test with a clear message when it is missing.
fn db(file: &str) -> String {
    let p = format!("{GEOIP_DIR}/{file}");
    assert!(
        Path::new(&p).is_file(),
        "GeoIP test database {p} is missing; these tests need the MaxMind test data \
         (see {GEOIP_DIR}/README.md)"
    );
    p
}

fn start(services: &str) -> TestServer {
    TestServer::start(&[("example.com.zone", ZONE)], services)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("IP address")
}

/// `addr` with every bit past `prefix` cleared, as RFC 7871 §6 asks of the client.
fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// A query carrying an EDNS Client Subnet option for `client`/`prefix`.
fn ecs_query(name: &str, rtype: RecordType, client: &str, prefix: u8) -> Message {
    let mut m = query_edns(name, rtype, 1232);
    let subnet = ClientSubnet::new(masked(ip(client), prefix), prefix, 0);
    m.edns
        .as_mut()
        .expect("edns")
        .options_mut()
        .insert(EdnsOption::Subnet(subnet));
    m
}

/// The ECS option of a response, if any.
fn ecs_of(m: &Message) -> Option<ClientSubnet> {
    match m.edns.as_ref()?.option(EdnsCode::Subnet) {
        Some(EdnsOption::Subnet(s)) => Some(*s),
        _ => None,
    }
}

/// Addresses in the answer section, in order.
fn addrs(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// The single address of a NOERROR answer.
fn one(m: &Message) -> IpAddr {
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
    let a = addrs(m);
    assert_eq!(a.len(), 1, "expected exactly one address: {m}");
    a[0]
}

/// NOERROR, authoritative, nothing in the answer, the zone SOA in authority.
fn assert_nodata(m: &Message) {
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
    assert!(m.metadata.authoritative, "AA: {m}");
    assert!(m.answers.is_empty(), "NODATA has no answers: {m}");
    assert_eq!(m.authorities.len(), 1, "{m}");
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA, "{m}");
}

/// Marks the endpoint `addr` of service `svc` healthy or not in the running server.
fn set_healthy(s: &TestServer, svc: &str, addr: &str, up: bool) {
    endpoint_state(s, svc, addr, |st| st.set_healthy(up));
}

fn set_drained(s: &TestServer, svc: &str, addr: &str, drained: bool) {
    endpoint_state(s, svc, addr, |st| st.set_drained(drained));
}

fn endpoint_state(
    s: &TestServer,
    svc: &str,
    addr: &str,
    f: impl Fn(&meridian::health::EndpointState),
) {
    f(&s.endpoint_state(svc, addr));
}

// ---------------------------------------------------------------------------------------------
// weighted, round-robin, multivalue, families, other types, CNAME into a balanced name

#[test]
fn weighted_shares_follow_weights_over_10000_queries() {
    let s = start(
        r#"
[[service]]
name = "www.example.com"
policy = "weighted"
ttl = 30
endpoints = [
  { address = "192.0.2.1", weight = 3 },
  { address = "192.0.2.2", weight = 2 },
  { address = "192.0.2.3" , weight = 1 },
]
"#,
    );
    let mut c = s.udp_client();
    let q = query("www.example.com.", RecordType::A);
    let n = 10_000;
    let mut counts: HashMap<IpAddr, usize> = HashMap::new();
    for i in 0..n {
        let mut q = q.clone();
        q.metadata.id = i as u16;
        *counts.entry(one(&c.ask(&q))).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    // σ of a share over 10,000 draws is 0.50, 0.47 and 0.37 points for shares 1/2, 1/3, 1/6,
    // so ±2 points is 4σ, 4.2σ and 5.4σ: a correct server fails this about once in 10,000 runs.
    for (addr, weight) in [("192.0.2.1", 3.0), ("192.0.2.2", 2.0), ("192.0.2.3", 1.0)] {
        let share = 100.0 * counts[&ip(addr)] as f64 / n as f64;
        let want = 100.0 * weight / 6.0;
        assert!(
            (share - want).abs() <= 2.0,
            "{addr}: share {share:.2}% vs weight share {want:.2}% ({counts:?})"
        );
    }
}

fn round_robin_server(max_answers: usize) -> TestServer {
    start(&format!(
        r#"
[[service]]
name = "www.example.com"
policy = "round-robin"
ttl = 30
max_answers = {max_answers}
endpoints = [
  {{ address = "192.0.2.1" }},
  {{ address = "192.0.2.2" }},
  {{ address = "192.0.2.3" }},
]
"#
    ))
}

/// `n` consecutive answers for www A, alternating UDP and TCP.
fn consecutive(s: &TestServer, n: usize) -> Vec<Vec<IpAddr>> {
    (0..n)
        .map(|i| {
            let q = query("www.example.com.", RecordType::A);
            let r = if i % 2 == 0 { s.udp(&q) } else { s.tcp(&q) };
            assert_eq!(r.metadata.response_code, ResponseCode::NoError);
            addrs(&r)
        })
        .collect()
}

#[test]
fn round_robin_rotates_one_at_a_time() {
    let s = round_robin_server(1);
    let answers = consecutive(&s, 12);
    for w in answers.windows(4) {
        assert_eq!(w[0].len(), 1);
        assert_ne!(w[0], w[1], "consecutive answers must differ: {answers:?}");
        let three: BTreeSet<_> = w[..3].iter().map(|a| a[0]).collect();
        assert_eq!(three.len(), 3, "three in a row cover all: {answers:?}");
        assert_eq!(w[0], w[3], "period 3: {answers:?}");
    }
}

#[test]
fn round_robin_rotates_two_at_a_time() {
    let s = round_robin_server(2);
    let answers = consecutive(&s, 12);
    for a in &answers {
        assert_eq!(a.len(), 2, "{answers:?}");
        assert_ne!(a[0], a[1], "{answers:?}");
    }
    for w in answers.windows(3) {
        assert_ne!(w[0], w[1], "consecutive answers must differ: {answers:?}");
        let firsts: BTreeSet<_> = w.iter().map(|a| a[0]).collect();
        assert_eq!(firsts.len(), 3, "first records rotate: {answers:?}");
        // Two at a time over three endpoints: three queries show each endpoint twice.
        let mut seen: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for a in w {
            for x in a {
                *seen.entry(*x).or_default() += 1;
            }
        }
        assert!(
            seen.len() == 3 && seen.values().all(|&c| c == 2),
            "{answers:?}"
        );
    }
}

const MULTI: &str = r#"
[[service]]
name = "www.example.com"
policy = "weighted"
ttl = 42
max_answers = 2
endpoints = [
  { address = "192.0.2.1" },
  { address = "192.0.2.2" },
  { address = "192.0.2.3" },
  { address = "2001:db8::1" },
  { address = "2001:db8::2" },
]

[[service]]
name = "v4only.example.com"
policy = "round-robin"
ttl = 17
endpoints = [
  { address = "192.0.2.9" },
]
"#;

#[test]
fn max_answers_two_gives_two_records_of_the_family_with_service_ttl() {
    let s = start(MULTI);
    for (rtype, v4) in [(RecordType::A, true), (RecordType::AAAA, false)] {
        for (how, r) in s.both(&query("www.example.com.", rtype)) {
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{how}");
            assert!(r.metadata.authoritative, "{how}");
            assert_eq!(r.answers.len(), 2, "{how}: {r}");
            for rec in &r.answers {
                assert_eq!(rec.record_type(), rtype, "{how}: {r}");
                assert_eq!(rec.ttl, 42, "{how}: service TTL");
                assert_eq!(rec.name.to_ascii(), "www.example.com.", "{how}");
            }
            let a = addrs(&r);
            assert_ne!(a[0], a[1], "{how}: two different endpoints: {r}");
            assert!(a.iter().all(|x| x.is_ipv4() == v4), "{how}: {r}");
        }
    }
}

#[test]
fn no_endpoint_of_the_family_is_nodata() {
    let s = start(MULTI);
    for (how, r) in s.both(&query("v4only.example.com.", RecordType::AAAA)) {
        assert_nodata(&r);
        assert_eq!(r.queries[0].query_type(), RecordType::AAAA, "{how}");
    }
    // The name has no records in the zone file, yet it exists with its A.
    let r = s.udp(&query("v4only.example.com.", RecordType::A));
    assert_eq!(addrs(&r), vec![ip("192.0.2.9")]);
    assert_eq!(r.answers[0].ttl, 17);
}

#[test]
fn other_types_at_a_balanced_name_come_from_the_zone() {
    let s = start(MULTI);
    for (how, r) in s.both(&query("www.example.com.", RecordType::TXT)) {
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{how}");
        assert!(r.metadata.authoritative, "{how}");
        assert_eq!(r.answers.len(), 1, "{how}: {r}");
        match &r.answers[0].data {
            RData::TXT(t) => assert_eq!(t.to_string(), "static text at a balanced name"),
            other => panic!("{how}: expected TXT, got {other:?}"),
        }
        assert_eq!(
            r.answers[0].ttl, 3600,
            "{how}: the zone's TTL, not the service's"
        );
    }
    for rtype in [RecordType::MX, RecordType::SRV, RecordType::CAA] {
        for (_, r) in s.both(&query("www.example.com.", rtype)) {
            assert_nodata(&r);
        }
    }
    // A balanced name without any static records: other types are NODATA too.
    assert_nodata(&s.udp(&query("v4only.example.com.", RecordType::TXT)));
}

#[test]
fn cname_into_a_balanced_name_is_followed() {
    let s = start(MULTI);
    for (rtype, v4) in [(RecordType::A, true), (RecordType::AAAA, false)] {
        for (how, r) in s.both(&query("api.example.com.", rtype)) {
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{how}");
            assert!(r.metadata.authoritative, "{how}");
            assert_eq!(r.answers.len(), 3, "{how}: CNAME + two addresses: {r}");
            assert_eq!(r.answers[0].record_type(), RecordType::CNAME, "{how}");
            assert_eq!(r.answers[0].name.to_ascii(), "api.example.com.");
            match &r.answers[0].data {
                RData::CNAME(t) => assert_eq!(t.0.to_ascii(), "www.example.com."),
                other => panic!("{other:?}"),
            }
            for rec in &r.answers[1..] {
                assert_eq!(rec.record_type(), rtype, "{how}: {r}");
                assert_eq!(rec.name.to_ascii(), "www.example.com.", "{how}");
                assert_eq!(rec.ttl, 42, "{how}");
            }
            assert!(addrs(&r).iter().all(|x| x.is_ipv4() == v4), "{how}: {r}");
        }
    }
    // CNAME to a balanced name without the family: the CNAME, then NODATA.
    let r = s.udp(&query("api4.example.com.", RecordType::AAAA));
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers.len(), 1, "{r}");
    assert_eq!(r.answers[0].record_type(), RecordType::CNAME);
    assert_eq!(r.authorities.len(), 1, "{r}");
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    let r = s.tcp(&query("api4.example.com.", RecordType::A));
    assert_eq!(addrs(&r), vec![ip("192.0.2.9")]);
}

// ---------------------------------------------------------------------------------------------
// failover

#[test]
fn failover_answers_the_lowest_priority_group_that_is_up() {
    let s = start(
        r#"
[[service]]
name = "www.example.com"
policy = "failover"
ttl = 30
endpoints = [
  { address = "192.0.2.3", priority = 2 },
  { address = "192.0.2.1" },
  { address = "192.0.2.2", priority = 1 },
  { address = "192.0.2.4", priority = 3 },
]
"#,
    );
    let mut c = s.udp_client();
    let mut seen = |n: usize| -> BTreeSet<IpAddr> {
        (0..n)
            .map(|_| one(&c.ask(&query("www.example.com.", RecordType::A))))
            .collect()
    };
    let group1: BTreeSet<IpAddr> = [ip("192.0.2.1"), ip("192.0.2.2")].into();
    assert_eq!(
        seen(64),
        group1,
        "both endpoints of priority 1, nothing else"
    );

    set_healthy(&s, "www.example.com", "192.0.2.1", false);
    assert_eq!(seen(32), [ip("192.0.2.2")].into());

    // Drained counts as down as well.
    set_drained(&s, "www.example.com", "192.0.2.2", true);
    assert_eq!(seen(16), [ip("192.0.2.3")].into(), "priority 2 takes over");
    for (how, r) in s.both(&query("www.example.com.", RecordType::A)) {
        assert_eq!(addrs(&r), vec![ip("192.0.2.3")], "{how}");
    }

    set_healthy(&s, "www.example.com", "192.0.2.3", false);
    assert_eq!(seen(16), [ip("192.0.2.4")].into(), "then priority 3");

    set_healthy(&s, "www.example.com", "192.0.2.1", true);
    set_drained(&s, "www.example.com", "192.0.2.2", false);
    assert_eq!(seen(64), group1, "back to priority 1 when it recovers");
}

// ---------------------------------------------------------------------------------------------
// hash

const HASH: &str = r#"
[[service]]
name = "www.example.com"
policy = "hash"
ttl = 30
endpoints = [
  { address = "192.0.2.1" },
  { address = "192.0.2.2" },
  { address = "192.0.2.3" },
  { address = "2001:db8::1" },
  { address = "2001:db8::2" },
  { address = "2001:db8::3" },
]
"#;

/// Endpoint for each of 256 IPv4 /24s (client host .77 in each), asked via ECS /32.
fn hash_map_v4(c: &mut UdpClient) -> Vec<IpAddr> {
    (0..256)
        .map(|i| {
            let client = format!("198.{}.{}.77", 18 + i % 2, i);
            one(&c.ask(&ecs_query("www.example.com.", RecordType::A, &client, 32)))
        })
        .collect()
}

#[test]
fn hash_keeps_a_subnet_on_one_endpoint_and_moves_only_the_lost_ones() {
    let s = start(HASH);
    let mut c = s.udp_client();
    let before = hash_map_v4(&mut c);

    // Spread: every endpoint wins a fair part of 256 subnets (expected 85 each).
    let mut counts: BTreeMap<IpAddr, usize> = BTreeMap::new();
    for a in &before {
        *counts.entry(*a).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&n| n >= 40), "{counts:?}");

    // Stable: the same mapping again, also for other hosts in the same /24, also over TCP and
    // with a /24 source prefix.
    assert_eq!(hash_map_v4(&mut c), before);
    for (i, want) in before.iter().enumerate().step_by(7) {
        let sub = format!("198.{}.{}", 18 + i % 2, i);
        for host in [1, 128, 254] {
            let q = ecs_query(
                "www.example.com.",
                RecordType::A,
                &format!("{sub}.{host}"),
                32,
            );
            assert_eq!(one(&c.ask(&q)), *want, "{sub}.{host}");
        }
        let q = ecs_query("www.example.com.", RecordType::A, &format!("{sub}.0"), 24);
        assert_eq!(one(&s.tcp(&q)), *want, "{sub}.0/24 over TCP");
    }

    // One endpoint goes down: only its subnets move, and they spread over the others.
    let lost = ip("192.0.2.2");
    set_healthy(&s, "www.example.com", "192.0.2.2", false);
    let after = hash_map_v4(&mut c);
    let mut moved_to = BTreeSet::new();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert_ne!(*a, lost, "subnet {i} still answered by the down endpoint");
        if *b == lost {
            moved_to.insert(*a);
        } else {
            assert_eq!(a, b, "subnet {i} moved though its endpoint stayed up");
        }
    }
    assert_eq!(moved_to.len(), 2, "lost clients spread over both others");

    // It comes back: every subnet returns to where it was.
    set_healthy(&s, "www.example.com", "192.0.2.2", true);
    assert_eq!(hash_map_v4(&mut c), before);
}

#[test]
fn hash_uses_the_ipv6_slash_56_and_the_source_address() {
    let s = start(HASH);
    let mut c = s.udp_client();
    let mut seen = BTreeSet::new();
    for i in 0..64u32 {
        let net = format!("2001:db8:{:x}:{:x}", 0x100 + i, i << 8);
        let want = one(&c.ask(&ecs_query(
            "www.example.com.",
            RecordType::AAAA,
            &format!("{net}::1"),
            128,
        )));
        assert!(want.is_ipv6());
        seen.insert(want);
        // Other /64s inside the same /56 (the low byte of the fourth group).
        for sub in [1u32, 0x7f, 0xff] {
            let other = format!("2001:db8:{:x}:{:x}::9", 0x100 + i, (i << 8) | sub);
            let q = ecs_query("www.example.com.", RecordType::AAAA, &other, 64);
            assert_eq!(one(&c.ask(&q)), want, "{other} is in the /56 of {net}::1");
        }
    }
    assert_eq!(seen.len(), 3, "64 subnets spread over all three: {seen:?}");

    // Without ECS the source address (127.0.0.1) is the client: always the same endpoint.
    let first = one(&s.udp(&query("www.example.com.", RecordType::A)));
    for _ in 0..10 {
        assert_eq!(
            one(&c.ask(&query("www.example.com.", RecordType::A))),
            first
        );
        assert_eq!(
            one(&s.tcp(&query("www.example.com.", RecordType::A))),
            first
        );
    }
}

// ---------------------------------------------------------------------------------------------
// when_all_down

#[test]
fn when_all_down_serve_all_and_empty() {
    let s = start(
        r#"
[[service]]
name = "www.example.com"
policy = "weighted"
ttl = 30
max_answers = 3
endpoints = [
  { address = "192.0.2.1" },
  { address = "192.0.2.2" },
  { address = "192.0.2.3" },
]

[[service]]
name = "one.example.com"
policy = "round-robin"
ttl = 30
when_all_down = "serve-all"
endpoints = [
  { address = "192.0.2.1" },
  { address = "192.0.2.2" },
]

[[service]]
name = "empty.example.com"
policy = "weighted"
ttl = 30
max_answers = 3
when_all_down = "empty"
endpoints = [
  { address = "192.0.2.1" },
  { address = "192.0.2.2" },
]
"#,
    );
    let all: BTreeSet<IpAddr> = [ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3")].into();
    let set = |m: &Message| addrs(m).into_iter().collect::<BTreeSet<_>>();

    set_healthy(&s, "www.example.com", "192.0.2.1", false);
    set_healthy(&s, "www.example.com", "192.0.2.3", false);
    for (how, r) in s.both(&query("www.example.com.", RecordType::A)) {
        assert_eq!(
            addrs(&r),
            vec![ip("192.0.2.2")],
            "{how}: only the healthy one"
        );
    }
    set_drained(&s, "www.example.com", "192.0.2.2", true);
    for (how, r) in s.both(&query("www.example.com.", RecordType::A)) {
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{how}");
        assert_eq!(
            set(&r),
            all,
            "{how}: serve-all (default) answers with every endpoint"
        );
    }

    for a in ["192.0.2.1", "192.0.2.2"] {
        set_healthy(&s, "one.example.com", a, false);
        set_healthy(&s, "empty.example.com", a, false);
    }
    let mut c = s.udp_client();
    let seen: BTreeSet<IpAddr> = (0..8)
        .map(|_| one(&c.ask(&query("one.example.com.", RecordType::A))))
        .collect();
    assert_eq!(seen, [ip("192.0.2.1"), ip("192.0.2.2")].into());

    for (_, r) in s.both(&query("empty.example.com.", RecordType::A)) {
        assert_nodata(&r);
    }
    // One comes back: answered again.
    set_healthy(&s, "empty.example.com", "192.0.2.2", true);
    assert_eq!(
        addrs(&s.udp(&query("empty.example.com.", RecordType::A))),
        vec![ip("192.0.2.2")]
    );
}

// ---------------------------------------------------------------------------------------------
// geo

/// Regions (us-east and eu-west as in the SPEC, `ap` in Singapore when `with_ap`), each with
/// one IPv4 and one IPv6 endpoint, plus whatever `extra` adds (site, geoip).
fn geo_config(extra: &str, us_extra: &str, eu_extra: &str, with_ap: bool) -> String {
    let (ap_region, ap_eps) = if with_ap {
        (
            "[regions.ap]\nlocation = { lat = 1.35, lon = 103.82 }\n",
            "  { region = \"ap\", address = \"192.0.2.3\" },\n  { region = \"ap\", address = \"2001:db8::3\" },\n",
        )
    } else {
        ("", "")
    };
    format!(
        r#"
{extra}
[regions.us-east]
location = {{ lat = 38.9, lon = -77.0 }}
{us_extra}
[regions.eu-west]
location = {{ lat = 53.35, lon = -6.26 }}
{eu_extra}
{ap_region}
[[service]]
name = "www.example.com"
policy = "geo"
ttl = 30
endpoints = [
  {{ region = "us-east", address = "192.0.2.1" }},
  {{ region = "us-east", address = "2001:db8::1" }},
  {{ region = "eu-west", address = "192.0.2.2" }},
  {{ region = "eu-west", address = "2001:db8::2" }},
{ap_eps}]
"#
    )
}

fn geo_server(extra: &str) -> TestServer {
    start(&geo_config(extra, "", "", false))
}

fn city() -> String {
    format!("[geoip]\ndatabase = \"{}\"\n", db("GeoIP2-City-Test.mmdb"))
}

fn region_of(a: IpAddr) -> &'static str {
    match a.to_string().as_str() {
        "192.0.2.1" | "2001:db8::1" => US,
        "192.0.2.2" | "2001:db8::2" => EU,
        "192.0.2.3" | "2001:db8::3" => AP,
        other => panic!("unexpected endpoint {other}"),
    }
}

/// The ECS source prefix used for geo clients: the whole IPv4 address, an IPv6 /48 (as
/// resolvers send), both more specific than the test database's networks.
fn full_prefix(client: &str) -> u8 {
    if ip(client).is_ipv4() {
        32
    } else {
        48
    }
}

/// Region answering `client` (via ECS) for A and for AAAA, over UDP and TCP; all four must agree.
fn geo_region(s: &TestServer, client: &str) -> &'static str {
    let p = full_prefix(client);
    let mut regions = BTreeSet::new();
    for rtype in [RecordType::A, RecordType::AAAA] {
        for (how, r) in s.both(&ecs_query("www.example.com.", rtype, client, p)) {
            let a = one(&r);
            assert_eq!(
                a.is_ipv4(),
                rtype == RecordType::A,
                "{client} {how} {rtype}"
            );
            regions.insert(region_of(a));
        }
    }
    assert_eq!(regions.len(), 1, "{client}: answers disagree: {regions:?}");
    regions.into_iter().next().expect("one region")
}

#[test]
fn geo_nearest_region_by_great_circle_for_v4_and_v6_clients() {
    let s = geo_server(&city());
    for (client, want) in [
        ("81.2.69.160", EU),    // London
        ("216.160.83.57", US),  // Milton, WA
        ("214.0.1.1", US),      // Melbourne: nearer us-east on the great circle
        ("2001:218::1", EU),    // Tokyo: nearer eu-west on the great circle
        ("89.160.20.130", EU),  // Linköping
        ("149.101.100.1", US),  // US, no city
        ("2001:480:10::1", US), // San Diego
        ("2a02:cfc0::1", EU),   // France
        ("2a02:d180::1", EU),   // Germany
        ("175.16.199.1", EU),   // Changchun
        ("2a02:e700::1", EU),   // Libya
        ("2a02:d500::1", EU),   // no country, but continent and coordinates
    ] {
        assert_eq!(geo_region(&s, client), want, "{client}");
    }
}

#[test]
fn geo_via_source_address() {
    // Loopback is in no database; an override places 127.0.0.0/8 in London.
    let s = geo_server(&format!(
        "{}networks = [ {{ cidr = \"127.0.0.0/8\", location = {{ lat = 51.5, lon = -0.1 }} }} ]\n",
        city()
    ));
    for (how, r) in s.both(&query("www.example.com.", RecordType::A)) {
        assert_eq!(region_of(one(&r)), EU, "{how}");
    }
    for (how, r) in s.both(&query_edns("www.example.com.", RecordType::AAAA, 1232)) {
        assert_eq!(region_of(one(&r)), EU, "{how}");
    }
    // A US client subnet decides when its source prefix is non-zero...
    let r = s.udp(&ecs_query(
        "www.example.com.",
        RecordType::A,
        "216.160.83.57",
        32,
    ));
    assert_eq!(region_of(one(&r)), US);
    // ...but a source prefix of 0 says nothing: the source address (127.0.0.1) decides.
    for v in ["216.160.83.57", "2001:480:10::1"] {
        for (how, r) in s.both(&ecs_query("www.example.com.", RecordType::A, v, 0)) {
            assert_eq!(region_of(one(&r)), EU, "{v}/0 {how}");
            let e = ecs_of(&r).expect("ECS echoed");
            assert_eq!((e.source_prefix(), e.scope_prefix()), (0, 0), "{how}");
        }
    }

    // A region override for the source network.
    let s = geo_server(&format!(
        "{}networks = [ {{ cidr = \"127.0.0.0/8\", region = \"us-east\" }} ]\n",
        city()
    ));
    for (how, r) in s.both(&query("www.example.com.", RecordType::A)) {
        assert_eq!(region_of(one(&r)), US, "{how}");
    }
    let r = s.tcp(&ecs_query(
        "www.example.com.",
        RecordType::AAAA,
        "81.2.69.160",
        0,
    ));
    assert_eq!(region_of(one(&r)), US);
}

#[test]
fn geo_country_and_continent_mapping_beat_distance() {
    // JP mapped to us-east though eu-west is nearer Tokyo; OC mapped to eu-west though
    // us-east is nearer Melbourne.
    let s = start(&geo_config(
        &city(),
        "countries = [\"JP\"]",
        "continents = [\"OC\"]",
        false,
    ));
    assert_eq!(geo_region(&s, "2001:218::1"), US);
    assert_eq!(geo_region(&s, "214.0.1.1"), EU);
    // Clients not mapped still go by distance.
    assert_eq!(geo_region(&s, "81.2.69.160"), EU);
    assert_eq!(geo_region(&s, "216.160.83.57"), US);
    assert_eq!(geo_region(&s, "175.16.199.1"), EU);

    // A mapped region without a healthy endpoint does not win: the nearest healthy one does.
    set_healthy(&s, "www.example.com", "192.0.2.1", false);
    set_healthy(&s, "www.example.com", "2001:db8::1", false);
    assert_eq!(geo_region(&s, "2001:218::1"), EU);
}

#[test]
fn geo_overrides_beat_the_database() {
    let s = geo_server(&format!(
        r#"{}networks = [
  {{ cidr = "81.2.0.0/16", region = "eu-west" }},
  {{ cidr = "81.2.69.0/24", region = "us-east" }},
  {{ cidr = "216.160.83.0/24", location = {{ lat = 52.0, lon = -8.0 }} }},
  {{ cidr = "2001:218::/32", country = "US" }},
  {{ cidr = "2a02:cfc0::/29", country = "CA" }},
]
"#,
        city()
    ));
    assert_eq!(geo_region(&s, "81.2.69.160"), US, "longest prefix /24 wins");
    assert_eq!(geo_region(&s, "81.2.70.1"), EU, "the /16 covers the rest");
    assert_eq!(geo_region(&s, "216.160.83.57"), EU, "location override");
    assert_eq!(
        geo_region(&s, "2001:218::1"),
        US,
        "country override: US centroid"
    );
    assert_eq!(
        geo_region(&s, "2a02:cfc0::1"),
        US,
        "country override: CA centroid"
    );
    // Untouched addresses still come from the database.
    assert_eq!(geo_region(&s, "89.160.20.130"), EU);
    assert_eq!(geo_region(&s, "149.101.100.1"), US);
    // An override's own network is the scope the answer depended on.
    let r = s.udp(&ecs_query(
        "www.example.com.",
        RecordType::A,
        "81.2.69.160",
        32,
    ));
    assert_eq!(ecs_of(&r).expect("ECS").scope_prefix(), 24);
}

#[test]
fn geo_unknown_client_falls_back_to_site_location() {
    // In no database; 214.1.1.1 has a record, but one with nothing but `is_anycast`.
    let unknown = ["1.1.1.1", "8.8.8.8", "2001:db8:ffff::1", "214.1.1.1"];
    let near_us = geo_server(&format!(
        "[site]\nlocation = {{ lat = 40.7, lon = -74.0 }}\n{}",
        city()
    ));
    let near_eu = geo_server(&format!(
        "[site]\nid = \"fra1\"\nlocation = {{ lat = 50.11, lon = 8.68 }}\n{}",
        city()
    ));
    for c in unknown {
        for _ in 0..5 {
            assert_eq!(geo_region(&near_us, c), US, "{c}");
            assert_eq!(geo_region(&near_eu, c), EU, "{c}");
        }
    }
    // Known clients still go by their own location.
    assert_eq!(geo_region(&near_us, "81.2.69.160"), EU);
    assert_eq!(geo_region(&near_eu, "216.160.83.57"), US);
    // The source address 127.0.0.1 is unknown too.
    assert_eq!(
        region_of(one(&near_us.udp(&query("www.example.com.", RecordType::A)))),
        US
    );
    assert_eq!(
        region_of(one(&near_eu.tcp(&query("www.example.com.", RecordType::A)))),
        EU
    );

    // Without a site location every region counts as equally near: both are seen.
    for extra in [city(), String::new()] {
        let s = geo_server(&extra);
        let mut c = s.udp_client();
        for client in ["1.1.1.1", "2001:db8:ffff::1"] {
            let seen: BTreeSet<&str> = (0..100)
                .map(|_| {
                    let q = ecs_query("www.example.com.", RecordType::A, client, 32);
                    region_of(one(&c.ask(&q)))
                })
                .collect();
            assert_eq!(seen, [US, EU].into(), "{client} with [geoip] `{extra}`");
        }
    }
}

#[test]
fn geo_country_only_database_uses_country_centroids() {
    let s = geo_server(&format!(
        "[geoip]\ndatabase = \"{}\"\n",
        db("GeoIP2-Country-Test.mmdb")
    ));
    for (client, want) in [
        ("216.160.83.57", US), // US centroid
        ("2a02:cfc0::1", EU),  // FR centroid
        ("81.2.69.160", EU),   // GB centroid
        ("2001:480:10::1", US),
        ("50.114.0.1", US),  // only in the Country files
        ("217.65.48.1", EU), // GI, only in the Country files
    ] {
        assert_eq!(geo_region(&s, client), want, "{client}");
    }
}

#[test]
fn geo_next_nearest_region_takes_over() {
    let s = start(&geo_config(&city(), "", "", true));
    // Tokyo: ap (Singapore) nearest, then eu-west, then us-east.
    assert_eq!(geo_region(&s, "2001:218::1"), AP);
    set_healthy(&s, "www.example.com", "192.0.2.3", false);
    set_drained(&s, "www.example.com", "2001:db8::3", true);
    assert_eq!(geo_region(&s, "2001:218::1"), EU);
    set_healthy(&s, "www.example.com", "192.0.2.2", false);
    set_healthy(&s, "www.example.com", "2001:db8::2", false);
    assert_eq!(geo_region(&s, "2001:218::1"), US);
    assert_eq!(geo_region(&s, "81.2.69.160"), US, "London too");
    // Back up: nearest again.
    set_healthy(&s, "www.example.com", "192.0.2.3", true);
    set_drained(&s, "www.example.com", "2001:db8::3", false);
    assert_eq!(geo_region(&s, "2001:218::1"), AP);
    assert_eq!(
        geo_region(&s, "81.2.69.160"),
        US,
        "eu-west still down: us-east (5898 km) is next for London, not ap (10870 km)"
    );
}

#[test]
fn geo_region_override_then_next_nearest_to_that_region() {
    let s = start(&geo_config(
        &format!(
            "{}networks = [ {{ cidr = \"127.0.0.0/8\", region = \"eu-west\" }} ]\n",
            city()
        ),
        "",
        "",
        true,
    ));
    let mut c = s.udp_client();
    let mut regions = |n: usize| -> BTreeSet<&'static str> {
        (0..n)
            .map(|_| region_of(one(&c.ask(&query("www.example.com.", RecordType::A)))))
            .collect()
    };
    assert_eq!(regions(16), [EU].into());
    // The override places the client in eu-west; with eu-west down, the region nearest to it
    // (us-east, 5,500 km from Dublin; ap is 11,000 km) takes over, every time.
    set_healthy(&s, "www.example.com", "192.0.2.2", false);
    assert_eq!(regions(32), [US].into());
}

#[test]
fn geo_continent_only_record_uses_mapping_else_site() {
    // 2.3.3.5 is only `continent EU` in the City test database: no country, no coordinates.
    let site = "[site]\nlocation = { lat = 40.7, lon = -74.0 }\n";
    let s = geo_server(&format!("{site}{}", city()));
    for _ in 0..5 {
        assert_eq!(
            geo_region(&s, "2.3.3.5"),
            US,
            "the site's location stands in"
        );
    }
    let s = start(&geo_config(
        &format!("{site}{}", city()),
        "",
        "continents = [\"EU\"]",
        false,
    ));
    for _ in 0..5 {
        assert_eq!(geo_region(&s, "2.3.3.5"), EU, "the continent mapping wins");
    }
}

// ---------------------------------------------------------------------------------------------
// ECS scope

/// The scope prefix echoed for `client`/`prefix`, checked equal over UDP and TCP; the echo
/// must repeat the source prefix and address of the query.
fn scope(s: &TestServer, name: &str, rtype: RecordType, client: &str, prefix: u8) -> u8 {
    let mut scopes = BTreeSet::new();
    for (how, r) in s.both(&ecs_query(name, rtype, client, prefix)) {
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{how}");
        let e = ecs_of(&r).unwrap_or_else(|| panic!("{how}: no ECS echoed for {client}/{prefix}"));
        assert_eq!(e.source_prefix(), prefix, "{how}: source prefix echoed");
        assert_eq!(
            e.addr(),
            masked(ip(client), prefix),
            "{how}: address echoed"
        );
        scopes.insert(e.scope_prefix());
    }
    assert_eq!(scopes.len(), 1, "{client}/{prefix}: {scopes:?}");
    scopes.into_iter().next().expect("one scope")
}

#[test]
fn ecs_scope_geo_is_the_database_network_capped_at_the_source() {
    let s = geo_server(&city());
    let www = "www.example.com.";
    assert_eq!(scope(&s, www, RecordType::A, "81.2.69.160", 32), 27);
    assert_eq!(scope(&s, www, RecordType::A, "81.2.69.160", 24), 24);
    assert_eq!(scope(&s, www, RecordType::AAAA, "81.2.69.160", 28), 27);
    assert_eq!(scope(&s, www, RecordType::A, "2001:218::1", 56), 32);
    assert_eq!(scope(&s, www, RecordType::A, "2001:218::1", 24), 24);
    assert_eq!(scope(&s, www, RecordType::A, "216.160.83.57", 32), 29);
    // IPv4 inside IPv6 (6to4, IPv4-mapped) is located as IPv4, but the scope is a prefix of
    // the address the client sent: the /27 lies 16 (6to4) or 96 (mapped) bits further in.
    assert_eq!(scope(&s, www, RecordType::A, "2002:5102:45a0::", 48), 43);
    assert_eq!(
        scope(&s, www, RecordType::A, "::ffff:81.2.69.160", 128),
        123
    );
    assert_eq!(
        scope(&s, www, RecordType::A, "::ffff:81.2.69.160", 120),
        120
    );
    assert_eq!(geo_region(&s, "2002:5102:45a0::1"), EU);
    // Static data at or beside the balanced name is the same for everyone.
    assert_eq!(scope(&s, www, RecordType::TXT, "81.2.69.160", 32), 0);
    assert_eq!(
        scope(&s, "mail.example.com.", RecordType::A, "81.2.69.160", 32),
        0
    );
}

#[test]
fn ecs_scope_hash_is_slash_24_or_56_capped_at_the_source() {
    let s = start(HASH);
    let www = "www.example.com.";
    assert_eq!(scope(&s, www, RecordType::A, "198.18.5.77", 32), 24);
    assert_eq!(scope(&s, www, RecordType::A, "198.18.5.77", 24), 24);
    assert_eq!(scope(&s, www, RecordType::A, "198.18.5.77", 20), 20);
    assert_eq!(scope(&s, www, RecordType::AAAA, "2001:db8:1:2::1", 128), 56);
    assert_eq!(scope(&s, www, RecordType::A, "2001:db8:1:2::1", 64), 56);
    assert_eq!(scope(&s, www, RecordType::AAAA, "2001:db8:1:2::1", 48), 48);
    assert_eq!(scope(&s, www, RecordType::A, "198.18.5.77", 0), 0);
    // 6to4 and IPv4-mapped clients hash as their IPv4 /24, stated in their own family.
    assert_eq!(scope(&s, www, RecordType::A, "2002:c612:54d::", 48), 40);
    assert_eq!(
        scope(&s, www, RecordType::A, "::ffff:198.18.5.77", 128),
        120
    );
    let v4 = one(&s.udp(&ecs_query(www, RecordType::A, "198.18.5.77", 32)));
    for v6 in ["2002:c612:54d::", "::ffff:198.18.5.77"] {
        let p = if v6.starts_with("2002") { 48 } else { 128 };
        assert_eq!(
            one(&s.udp(&ecs_query(www, RecordType::A, v6, p))),
            v4,
            "{v6}"
        );
    }
}

#[test]
fn ecs_scope_zero_for_policies_that_ignore_the_client_and_for_static_names() {
    for policy in ["weighted", "round-robin", "failover"] {
        let s = start(&format!(
            r#"
[[service]]
name = "www.example.com"
policy = "{policy}"
ttl = 30
endpoints = [
  {{ address = "192.0.2.1", priority = 1 }},
  {{ address = "192.0.2.2", priority = 2 }},
  {{ address = "2001:db8::1" }},
]
"#
        ));
        let www = "www.example.com.";
        assert_eq!(
            scope(&s, www, RecordType::A, "81.2.69.160", 32),
            0,
            "{policy}"
        );
        assert_eq!(
            scope(&s, www, RecordType::AAAA, "2001:218::1", 56),
            0,
            "{policy}"
        );
        assert_eq!(
            scope(&s, www, RecordType::A, "198.18.5.0", 24),
            0,
            "{policy}"
        );
        assert_eq!(
            scope(&s, "mail.example.com.", RecordType::A, "81.2.69.160", 32),
            0,
            "{policy}: static name"
        );
        // NODATA and NXDOMAIN carry the option too; scope 0.
        assert_eq!(scope(&s, www, RecordType::MX, "81.2.69.160", 32), 0);
        for (how, r) in s.both(&ecs_query(
            "nope.example.com.",
            RecordType::A,
            "81.2.69.160",
            32,
        )) {
            assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{how}");
            assert_eq!(ecs_of(&r).map(|e| e.scope_prefix()), Some(0), "{how}");
        }
    }
}

#[test]
fn no_ecs_in_the_query_means_none_in_the_response() {
    for cfg in [geo_config(&city(), "", "", false), HASH.to_string()] {
        let s = start(&cfg);
        for (how, r) in s.both(&query_edns("www.example.com.", RecordType::A, 1232)) {
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{how}");
            assert!(r.edns.is_some(), "{how}: EDNS answered with EDNS");
            assert!(ecs_of(&r).is_none(), "{how}: no ECS was asked: {r}");
        }
        for (how, r) in s.both(&query("www.example.com.", RecordType::A)) {
            assert!(r.edns.is_none(), "{how}: no OPT without EDNS");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// explain

/// A config folder for `meridian explain`: the geo service with the City test database.
fn explain_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("zones")).expect("mkdir");
    std::fs::write(dir.path().join("zones/example.com.zone"), ZONE).expect("zone");
    let cfg = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nzones = \"zones\"\n{}",
        geo_config(&city(), "", "", false)
    );
    std::fs::write(dir.path().join("meridian.toml"), cfg).expect("config");
    dir
}

fn explain(dir: &tempfile::TempDir, args: &[&str]) -> String {
    let cfg = dir.path().join("meridian.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("explain")
        .arg("www.example.com")
        .args(args)
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("run meridian");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "explain {args:?} exited {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn explain_json(dir: &tempfile::TempDir, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = explain(dir, &a);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

/// The number before "km" on a line.
fn km(line: &str) -> f64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words
        .iter()
        .position(|w| *w == "km")
        .unwrap_or_else(|| panic!("no distance on `{line}`"));
    words[i - 1]
        .parse()
        .unwrap_or_else(|_| panic!("no number before km on `{line}`"))
}

#[test]
fn explain_geo_human_and_json() {
    let dir = explain_dir();
    let text = explain(&dir, &["--client", "81.2.69.160"]);
    assert!(text.contains("81.2.69.160"), "client address:\n{text}");
    assert!(
        text.to_lowercase().contains("database"),
        "located by database:\n{text}"
    );
    assert!(text.contains("GB"), "country:\n{text}");
    let line_of = |addr: &str| {
        text.lines()
            .find(|l| l.contains(addr) && !l.trim_start().starts_with("answer"))
            .unwrap_or_else(|| panic!("no candidate line for {addr}:\n{text}"))
    };
    let eu = line_of("192.0.2.2");
    let us = line_of("192.0.2.1");
    assert!(eu.contains(EU) && us.contains(US), "regions:\n{text}");
    assert!((km(eu) - 465.0).abs() <= 3.0, "eu-west distance: {eu}");
    assert!((km(us) - 5898.0).abs() <= 3.0, "us-east distance: {us}");
    assert!(eu.contains("PICKED"), "eu-west picked:\n{text}");
    assert!(!us.contains("PICKED"), "us-east not picked:\n{text}");
    let answers: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("answer"))
        .collect();
    assert_eq!(answers.len(), 1, "one answer line:\n{text}");
    assert!(answers[0].contains("192.0.2.2"), "answer line:\n{text}");

    let j = explain_json(&dir, &["--client", "81.2.69.160"]);
    assert_eq!(j["answer"], serde_json::json!(["192.0.2.2"]), "{j}");
    assert_eq!(j["client"]["country"], "GB", "{j}");
    assert_eq!(j["client"]["located_by"], "database", "{j}");

    let j = explain_json(&dir, &["--client", "81.2.69.160", "--down", "eu-west"]);
    assert_eq!(j["answer"], serde_json::json!(["192.0.2.1"]), "{j}");
    let j = explain_json(&dir, &["--client", "81.2.69.160", "--down", "192.0.2.2"]);
    assert_eq!(j["answer"], serde_json::json!(["192.0.2.1"]), "{j}");

    // ECS stands for the client: Tokyo, nearer eu-west.
    let j = explain_json(&dir, &["--ecs", "2001:218::/48"]);
    assert_eq!(j["answer"], serde_json::json!(["192.0.2.2"]), "{j}");
    assert_eq!(j["client"]["country"], "JP", "{j}");
    assert_eq!(j["ecs_scope"], 32, "{j}");
    let j = explain_json(&dir, &["--ecs", "2001:218::/48", "--type", "AAAA"]);
    assert_eq!(j["answer"], serde_json::json!(["2001:db8::2"]), "{j}");
    let text = explain(&dir, &["--ecs", "2001:218::/48"]);
    assert!(text.contains("2001:218::/48"), "ECS client shown:\n{text}");
    assert!(text.contains("JP"), "{text}");

    // Melbourne via ECS: us-east by great circle.
    let j = explain_json(&dir, &["--ecs", "214.0.1.0/24"]);
    assert_eq!(j["answer"], serde_json::json!(["192.0.2.1"]), "{j}");
}
