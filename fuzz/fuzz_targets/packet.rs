//! Fuzz target `packet`: arbitrary bytes as a query, through the UDP fast path
//! (`meridian::fast::answer`) and the reference handler (`meridian::dns::handle`, over UDP and
//! TCP), against one snapshot that has every kind of name the handlers treat differently.
//!
//! Checks, beyond "no panic": every reply decodes with hickory (or is a 12-byte header-only
//! error), echoes the id with QR set and RA clear, fits the UDP size limit, and silence comes
//! only for packets without a readable header or with QR set. And it is a differential fuzzer:
//! when the fast path answers, its bytes must equal the reference's UDP reply exactly, with two
//! documented exceptions (see `explained`). A query with a malformed ECS option (by
//! `meridian::ecs`, the check both paths share) must get FORMERR from every path.
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use hickory_proto::op::Message;
use hickory_proto::rr::Record;
use libfuzzer_sys::fuzz_target;

use meridian::dns::{self, Transport};
use meridian::fast::{self, Fast};
use meridian::snapshot::Snapshot;

const ZONE: &str = r#"$TTL 300
@       SOA ns1 hostmaster 2026010101 7200 1800 1209600 120
        NS  ns1
        NS  ns2
        MX  10 mail
        MX  20 mx.other.test.
        TXT "v=spf1 -all" "second string"
        CAA 0 issue "ca.example.net"
ns1     A 192.0.2.53
        AAAA 2001:db8::53
ns2     A 198.51.100.53
mail    A 192.0.2.25
        AAAA 2001:db8::25
_sip._udp SRV 0 5 5060 mail
_x._tcp SRV 0 5 443 geo
ptr     PTR mail
alias   CNAME mail
chain1  CNAME chain2
chain2  CNAME chain3
chain3  CNAME mail
loop1   CNAME loop2
loop2   CNAME loop1
self    CNAME self
toout   CNAME www.example.org.
toother CNAME www.other.test.
togeo   CNAME geo
tohash  CNAME hash
torr    CNAME rr
tonx    CNAME nothere
towild  CNAME x.wild
tosub   CNAME www.sub
tochild CNAME www.child
*.wild  A 192.0.2.99
        TXT "wild"
*.wcname CNAME mail
*.wgeo  CNAME geo
a.b.c   A 192.0.2.7
sub     NS ns.sub
        NS ns.other.test.
ns.sub  A 192.0.2.77
        AAAA 2001:db8::77
child   NS ns1
geo     TXT "balanced, with static text"
unk     TYPE65280 \# 3 010203
hinfo   HINFO \# 7 03637075026f73
big     TXT "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb" "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc" "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd" "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee" "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
"#;

const CHILD_ZONE: &str = "$TTL 60
@     SOA ns1.fuzz.test. hostmaster.fuzz.test. 1 7200 1800 1209600 30
      NS  ns1.fuzz.test.
www   A 192.0.2.80
";

const OTHER_ZONE: &str = "$TTL 60
@     SOA ns hostmaster 1 7200 1800 1209600 60
      NS  ns
ns    A 203.0.113.53
www   CNAME alias.fuzz.test.
mx    A 203.0.113.25
";

/// Balanced names. Deterministic policies (geo with one endpoint per region and family,
/// failover with one per priority group and family, hash, and a round-robin whose
/// `max_answers` is the whole family so every turn starts at 0) are compared byte for byte.
/// The others draw at random or rotate per call; `ROTATING` lists them.
const SERVICES: &str = r#"
[[service]]
name = "geo.fuzz.test"
policy = "geo"
ttl = 20
endpoints = [
  { region = "us", address = "192.0.2.1" }, { region = "us", address = "2001:db8::1" },
  { region = "eu", address = "192.0.2.2" }, { region = "eu", address = "2001:db8::2" },
  { region = "ap", address = "192.0.2.3" },
]
[[service]]
name = "geo2.fuzz.test"
policy = "geo"
max_answers = 2
endpoints = [
  { region = "us", address = "192.0.2.4", weight = 3 }, { region = "us", address = "192.0.2.5" },
  { region = "eu", address = "192.0.2.6" }, { region = "ap", address = "2001:db8::6" },
]
[[service]]
name = "hash.fuzz.test"
policy = "hash"
max_answers = 2
endpoints = [
  { address = "192.0.2.11" }, { address = "192.0.2.12" }, { address = "192.0.2.13", weight = 2 },
  { address = "2001:db8::11" }, { address = "2001:db8::12" },
]
[[service]]
name = "failover.fuzz.test"
policy = "failover"
when_all_down = "empty"
endpoints = [
  { address = "192.0.2.21", priority = 1 }, { address = "192.0.2.22", priority = 2 },
  { address = "2001:db8::22", priority = 2 },
]
[[service]]
name = "rr2.fuzz.test"
policy = "round-robin"
max_answers = 2
endpoints = [ { address = "192.0.2.31" }, { address = "192.0.2.32" } ]
[[service]]
name = "rr.fuzz.test"
policy = "round-robin"
endpoints = [
  { address = "192.0.2.41" }, { address = "192.0.2.42" }, { address = "192.0.2.43" },
  { address = "2001:db8::41" },
]
[[service]]
name = "weighted.fuzz.test"
policy = "weighted"
max_answers = 2
endpoints = [
  { address = "192.0.2.51", weight = 5 }, { address = "192.0.2.52" }, { address = "192.0.2.53" },
  { address = "2001:db8::51" }, { address = "2001:db8::52" },
]
[[service]]
name = "latency.fuzz.test"
policy = "latency"
endpoints = [ { address = "192.0.2.61" }, { address = "192.0.2.62" } ]
[[service]]
name = "ll.fuzz.test"
policy = "least-loaded"
endpoints = [ { address = "192.0.2.71" }, { address = "2001:db8::71" }, { address = "2001:db8::72" } ]
[[service]]
name = "v4only.fuzz.test"
policy = "failover"
endpoints = [ { address = "192.0.2.81" } ]
"#;

/// Services whose answers may differ between two calls with the same input.
const ROTATING: &[&str] = &[
    "geo2.fuzz.test.",
    "rr.fuzz.test.",
    "weighted.fuzz.test.",
    "latency.fuzz.test.",
    "ll.fuzz.test.",
];

/// Client addresses, picked by the query id's first byte: they reach different regions through
/// the GeoIP test database (GB, US, JP, SE, CN), the `networks` overrides, IPv4-mapped and 6to4
/// forms, and an address nobody knows (the site's location).
const SOURCES: &[&str] = &[
    "127.0.0.1",
    "81.2.69.160",
    "216.160.83.56",
    "2001:218::1",
    "89.160.20.112",
    "175.16.199.1",
    "10.1.2.3",
    "192.168.7.7",
    "172.16.1.1",
    "::ffff:81.2.69.142",
    "2002:d8a0:5338::1",
    "2001:db8:ffff::1",
];

struct World {
    _dir: tempfile::TempDir,
    snap: Snapshot,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let zones = dir.path().join("zones");
        std::fs::create_dir(&zones).expect("mkdir zones");
        for (file, text) in [
            ("fuzz.test.zone", ZONE),
            ("child.fuzz.test.zone", CHILD_ZONE),
            ("other.test.zone", OTHER_ZONE),
        ] {
            std::fs::write(zones.join(file), text).expect("write zone");
        }
        let db = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/geoip/GeoIP2-City-Test.mmdb"
        );
        let config = format!(
            r#"[server]
listen = ["127.0.0.1:0"]
zones = "zones"
[site]
id = "fuzz-site"
location = {{ lat = 50.11, lon = 8.68 }}
[geoip]
database = "{db}"
networks = [
  {{ cidr = "10.0.0.0/8", region = "us" }},
  {{ cidr = "192.168.0.0/16", country = "JP" }},
  {{ cidr = "172.16.0.0/12", location = {{ lat = 1.3, lon = 103.8 }} }},
]
[regions.us]
location = {{ lat = 38.9, lon = -77.0 }}
countries = ["US", "CA"]
[regions.eu]
location = {{ lat = 53.35, lon = -6.26 }}
continents = ["EU", "AF"]
[regions.ap]
location = {{ lat = 1.35, lon = 103.82 }}
continents = ["AS", "OC"]
{SERVICES}"#
        );
        let path = dir.path().join("meridian.toml");
        std::fs::write(&path, config).expect("write config");
        let snap = Snapshot::load(&path).unwrap_or_else(|p| panic!("fuzz config rejected:\n{p}"));
        World { _dir: dir, snap }
    })
}

fn source(data: &[u8]) -> SocketAddr {
    let pick = data.first().copied().unwrap_or(0) as usize % SOURCES.len();
    let port = 1024 + u16::from(data.get(1).copied().unwrap_or(0));
    let ip: IpAddr = SOURCES[pick].parse().expect("source address");
    SocketAddr::new(ip, port)
}

/// The UDP limit the spec promises: the client's EDNS payload, at least 512, at most our 1232.
fn udp_limit(query: Option<&Message>) -> usize {
    match query.and_then(|m| m.edns.as_ref()) {
        Some(e) => usize::from(e.max_payload()).clamp(512, 1232),
        None => 512,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Checks one reply of the reference handler.
fn check_reply(data: &[u8], query: Option<&Message>, reply: &Option<Vec<u8>>, t: Transport) {
    let readable = data.len() >= 12 && data[2] & 0x80 == 0;
    let Some(r) = reply else {
        assert!(
            !readable,
            "{t:?}: no reply to a query with a readable header"
        );
        return;
    };
    assert!(
        readable,
        "{t:?}: a reply to a packet without a query header"
    );
    assert!(r.len() >= 12, "{t:?}: reply shorter than a header");
    assert_eq!(r[..2], data[..2], "{t:?}: reply id");
    assert!(r[2] & 0x80 != 0, "{t:?}: reply without QR");
    assert!(r[3] & 0x80 == 0, "{t:?}: RA set");
    // SPEC: CD is never set in replies (nothing here is signed).
    assert!(r[3] & 0x10 == 0, "{t:?}: CD set");
    match t {
        Transport::Udp => assert!(
            r.len() <= udp_limit(query),
            "UDP reply of {} bytes over the limit {}",
            r.len(),
            udp_limit(query)
        ),
        Transport::Tcp => assert!(r.len() <= usize::from(u16::MAX), "TCP reply too long"),
    }
    if r.len() == 12 {
        assert!(
            r[4..].iter().all(|&b| b == 0),
            "{t:?}: 12-byte reply with section counts"
        );
        return;
    }
    let reply = match Message::from_vec(r) {
        Ok(m) => m,
        Err(e) => panic!(
            "{t:?}: reply does not decode: {e}\nquery {}\nreply {}",
            hex(data),
            hex(r)
        ),
    };
    // SPEC: every reply that can carry the question does, BADVERS included (16 = BADVERS,
    // which hickory also names BADSIG).
    if let Some(q) = query {
        if u16::from(reply.metadata.response_code) == 16 && q.queries.len() == 1 {
            assert_eq!(reply.queries, q.queries, "{t:?}: BADVERS without the question");
        }
    }
}

/// A record as text; `exact_owner` false lower-cases the owner, `any_of` replaces an address
/// drawn from that set with `*` (after checking it is one of them).
fn record(r: &Record, exact_owner: bool, any_of: Option<&[IpAddr]>) -> String {
    let owner = if exact_owner {
        r.name.to_string()
    } else {
        r.name.to_lowercase().to_string()
    };
    let data = match (any_of, r.data.ip_addr()) {
        (Some(set), Some(ip)) => {
            assert!(
                set.contains(&ip),
                "answer {ip} is no endpoint of the service"
            );
            "*".to_string()
        }
        _ => r.data.to_string(),
    };
    format!(
        "{owner} {} {} {} {data}\n",
        r.ttl,
        r.dns_class,
        r.record_type()
    )
}

/// Everything a client can see of a reply, as text.
fn view(m: &Message, exact_authority_owner: bool, any_of: Option<&[IpAddr]>) -> String {
    let h = &m.metadata;
    let mut s = format!(
        "id={} op={:?} rcode={:?} aa={} tc={} rd={} ra={} cd={} ad={}\n",
        h.id,
        h.op_code,
        h.response_code,
        h.authoritative,
        h.truncation,
        h.recursion_desired,
        h.recursion_available,
        h.checking_disabled,
        h.authentic_data
    );
    for q in &m.queries {
        s += &format!("Q {} {} {}\n", q.name(), q.query_type(), q.query_class());
    }
    for r in &m.answers {
        s += &format!("AN {}", record(r, true, any_of));
    }
    for r in &m.authorities {
        s += &format!("NS {}", record(r, exact_authority_owner, None));
    }
    for r in &m.additionals {
        s += &format!("AR {}", record(r, true, None));
    }
    if let Some(e) = &m.edns {
        s += &format!(
            "OPT payload={} do={} v={} rcode_high={} {:?}\n",
            e.max_payload(),
            e.flags().dnssec_ok,
            e.version(),
            e.rcode_high(),
            e.options()
        );
    }
    s
}

/// The fast path's bytes differ from the reference's; is that a difference by design? Only for
/// services in `ROTATING`, which may pick other endpoints on the next call: the replies must
/// agree in everything but which endpoints (each one of the service's), and in length.
/// Everything else must be the same byte for byte: names inside rdata are compressed alike
/// (the fast path follows hickory's rules), and both paths spell the SOA owner of a negative
/// answer as the question does.
fn explained(query: &Message, fast: &[u8], reference: &[u8]) -> bool {
    let (Ok(f), Ok(r)) = (Message::from_vec(fast), Message::from_vec(reference)) else {
        return false;
    };
    let Some(q) = query.queries.first() else {
        return false;
    };
    let lower = q.name().to_lowercase().to_ascii();
    let Some(endpoints) = ROTATING
        .contains(&lower.as_str())
        .then(|| {
            world()
                .snap
                .services
                .iter()
                .find(|s| s.name.to_ascii() == lower)
                .map(|s| s.endpoints.iter().map(|e| e.addr).collect::<Vec<IpAddr>>())
        })
        .flatten()
    else {
        return false;
    };
    view(&f, true, Some(&endpoints)) == view(&r, true, Some(&endpoints))
        && fast.len() == reference.len()
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let src = source(data);
    let query = Message::from_vec(data).ok();

    let mut out = Vec::new();
    let fast = fast::answer(&w.snap, data, src, &mut out);
    let udp = dns::handle(&w.snap, data, src, Transport::Udp);
    let tcp = dns::handle(&w.snap, data, src, Transport::Tcp);
    check_reply(data, query.as_ref(), &udp, Transport::Udp);
    check_reply(data, query.as_ref(), &tcp, Transport::Tcp);

    // ECS (RFC 7871 §6, `meridian::ecs`): a malformed option is FORMERR from every path (or
    // BADVERS, which an EDNS version above 0 gets first); the fast path never answers it.
    if meridian::ecs::check_query(data).is_err() {
        assert_ne!(
            fast,
            Fast::Answered,
            "fast path answered a malformed ECS: {}",
            hex(data)
        );
        for (t, reply) in [("udp", &udp), ("tcp", &tcp)] {
            let Some(r) = reply else { continue };
            let rcode = match Message::from_vec(r) {
                Ok(m) => u16::from(m.metadata.response_code),
                Err(_) => u16::from(r[3] & 0x0f),
            };
            assert!(
                rcode == 1 || rcode == 16,
                "{t}: malformed ECS answered with rcode {rcode}: {}",
                hex(data)
            );
        }
    }

    if fast == Fast::Answered {
        let Some(reference) = udp else {
            panic!("fast path answered, reference is silent: {}", hex(data));
        };
        if out != reference {
            let query = query.unwrap_or_else(|| {
                panic!(
                    "fast path answered a query hickory cannot parse: {}",
                    hex(data)
                )
            });
            if !explained(&query, &out, &reference) {
                panic!(
                    "fast path and reference differ\nquery     {}\nfast      {}\nreference {}\n{:?}\n{:?}",
                    hex(data),
                    hex(&out),
                    hex(&reference),
                    Message::from_vec(&out).map(|m| view(&m, true, None)),
                    Message::from_vec(&reference).map(|m| view(&m, true, None)),
                );
            }
        }
    }
});
