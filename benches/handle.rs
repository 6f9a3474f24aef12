//! Per-query CPU cost of the request handler, without sockets: packet bytes in, response bytes
//! out, for the query kinds of the benchmark mix (`bench/` measures the whole server under
//! dnsperf). Run: `cargo bench --bench handle`; `MERIDIAN_BENCH_PAIRED=1 cargo bench --bench
//! handle` for the RRL and cookie overheads measured side by side ([`paired`]).

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use criterion::{criterion_group, Criterion};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};

use meridian::dns::{handle, Transport};
use meridian::fast::{self, Fast};
use meridian::geo::{AddrSource, GeoDb, Locator};
use meridian::snapshot::Snapshot;

fn query(name: &str, t: RecordType, ecs: Option<(IpAddr, u8)>) -> Vec<u8> {
    query_cookie(name, t, ecs, None)
}

/// A query with a COOKIE option of `cookie`'s bytes (client cookie, optionally a server one).
fn query_cookie(
    name: &str,
    t: RecordType,
    ecs: Option<(IpAddr, u8)>,
    cookie: Option<&[u8]>,
) -> Vec<u8> {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), t));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    if let Some(c) = cookie {
        e.options_mut().insert(EdnsOption::Unknown(10, c.to_vec()));
    }
    if let Some((ip, p)) = ecs {
        e.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(ip, p, 0)));
    }
    m.set_edns(e);
    m.to_vec().expect("encode")
}

/// The benchmark harness's zone and services (bench/meridian-bench.toml.in), plus `extra`
/// config at the end.
fn snapshot(extra: &str) -> Snapshot {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(dir.join("zones")).expect("mkdir");
    let zone = std::fs::read_to_string(root.join("../shared/bench/configs/zone-static.inc"))
        .unwrap_or_else(|_| {
            include_str!("../zones/example.com.zone").replace("api     IN CNAME www\n", "")
        });
    std::fs::write(dir.join("zones/example.com.zone"), zone).expect("zone");
    let cfg = include_str!("../bench/meridian-bench.toml.in")
        .replace("@PORT@", "0")
        .replace("@ZONES@", "zones")
        + extra;
    std::fs::write(dir.join("m.toml"), cfg).expect("config");
    Snapshot::load(&dir.join("m.toml")).unwrap_or_else(|p| panic!("{p}"))
}

fn bench(c: &mut Criterion) {
    let snap = snapshot("");
    let src: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let cases = [
        ("static A", query("mail.example.com.", RecordType::A, None)),
        (
            "nxdomain",
            query("nx-123456.example.com.", RecordType::A, None),
        ),
        ("weighted A", query("www.example.com.", RecordType::A, None)),
        (
            "geo A + ECS",
            query(
                "geo.example.com.",
                RecordType::A,
                Some(("10.1.2.0".parse().expect("ip"), 24)),
            ),
        ),
    ];
    for (name, packet) in &cases {
        assert!(handle(&snap, packet, src, Transport::Udp).is_some());
        c.bench_function(&format!("reference: {name}"), |b| {
            b.iter(|| handle(black_box(&snap), black_box(packet), src, Transport::Udp))
        });
        let mut out = Vec::with_capacity(1232);
        assert_eq!(
            fast::answer(&snap, packet, src, &mut out),
            Fast::Answered,
            "{name}"
        );
        c.bench_function(&format!("fast path: {name}"), |b| {
            b.iter(|| fast::answer(black_box(&snap), black_box(packet), src, &mut out))
        });
    }
    rrl_and_cookies(c, &cases);
    tiers(c);
    dnssec(c);
    spill(c);
    scaling(c);
    // What the UDP loop adds for the metrics (server/udp.rs), per full batch of 32 packets:
    // two clock reads and one histogram observation per batch, a TC check per reply. Divide by
    // 32 for the cost per packet; compare with one clock read alone, the per-packet
    // alternative.
    let reply = vec![0x12, 0x34, 0x84, 0x00];
    c.bench_function("udp loop: metrics per 32-packet batch", |b| {
        b.iter(|| {
            let started = std::time::Instant::now();
            for _ in 0..32 {
                meridian::metrics::record_sent(false, black_box(&reply));
            }
            meridian::metrics::observe_batch(false, started.elapsed(), 32);
        })
    });
    c.bench_function("udp loop: one clock read", |b| {
        b.iter(std::time::Instant::now)
    });
    // A service of `target` endpoints: one CNAME out of the zone, answered by the reference
    // handler (the fast path falls back by design).
    let lb = snapshot(
        "\n[[service]]\nname = \"lb-cname.example.com\"\npolicy = \"weighted\"\nendpoints = [ { target = \"app-use1.elb.example.net.\" }, { target = \"app-euw1.elb.example.net.\" } ]\n",
    );
    let packet = query("lb-cname.example.com.", RecordType::A, None);
    let mut out = Vec::with_capacity(1232);
    assert_eq!(fast::answer(&lb, &packet, src, &mut out), Fast::Fallback);
    assert!(handle(&lb, &packet, src, Transport::Udp).is_some());
    c.bench_function("reference: target CNAME", |b| {
        b.iter(|| handle(black_box(&lb), black_box(&packet), src, Transport::Udp))
    });
    c.bench_function("udp path (fast, then reference): target CNAME", |b| {
        b.iter(|| {
            if fast::answer(black_box(&lb), black_box(&packet), src, &mut out) == Fast::Fallback {
                handle(&lb, &packet, src, Transport::Udp)
            } else {
                None
            }
        })
    });
    // The GeoIP lookup alone, in the shipped country database and the MaxMind city test data.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ip: IpAddr = "81.2.69.160".parse().expect("ip");
    for (label, file) in [
        ("geoip lookup (default db)", root.join("geoip/default.mmdb")),
        (
            "geoip lookup (city test db)",
            root.join("tests/data/geoip/GeoIP2-City-Test.mmdb"),
        ),
    ] {
        let Ok(db) = GeoDb::open(&file) else { continue };
        let loc = Locator::new(Vec::new(), vec![db], None);
        c.bench_function(label, |b| {
            b.iter(|| loc.locate(black_box(ip), AddrSource::SourceIp))
        });
    }
}

/// `MERIDIAN_BENCH_PAIRED=1 cargo bench --bench handle`: the cost of RRL and cookies measured
/// in interleaved batches, each variant's best batch of 200 rounds. On a machine shared with
/// other work (criterion's means then drift with the load), the best batch of each variant,
/// taken under the same conditions, compares them fairly.
fn paired() {
    let plain = snapshot("");
    let on = snapshot("\n[rrl]\nresponses_per_second = 1000000\nwindow = \"1h\"\n");
    let rrl = on.rrl.as_ref().expect("rrl on");
    let src: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let client = [1u8, 2, 3, 4, 5, 6, 7, 8];
    let valid = |snap: &Snapshot| {
        let sc = meridian::cookie::server_cookie(
            &snap.cookie_secret,
            &client,
            src.ip(),
            meridian::cookie::unix_now(),
        );
        [&client[..], &sc[..]].concat()
    };
    let (vp, vo) = (valid(&plain), valid(&on));
    let q = |c: Option<&[u8]>| query_cookie("mail.example.com.", RecordType::A, None, c);
    let (q0, qc, qvp, qvo) = (q(None), q(Some(&client)), q(Some(&vp)), q(Some(&vo)));
    let mut out = Vec::with_capacity(1232);
    // (name, snapshot, packet, RRL on, client networks): with 65,536 networks the table's
    // lines come from memory rather than cache, as with real traffic.
    type Case<'a> = (&'a str, &'a Snapshot, &'a [u8], bool, u32);
    let cases: [Case<'_>; 7] = [
        ("fast path: static A", &plain, &q0, false, 1),
        ("fast path + RRL: static A", &on, &q0, true, 1),
        (
            "fast path + RRL: static A, 65536 networks",
            &on,
            &q0,
            true,
            65536,
        ),
        ("fast path: static A, client cookie", &plain, &qc, false, 1),
        (
            "fast path + RRL: static A, client cookie",
            &on,
            &qc,
            true,
            1,
        ),
        (
            "fast path: static A, valid server cookie",
            &plain,
            &qvp,
            false,
            1,
        ),
        (
            "fast path + RRL: static A, valid server cookie",
            &on,
            &qvo,
            true,
            1,
        ),
    ];
    let mut best = [f64::MAX; 7];
    let mut n = 0u32;
    const BATCH: u32 = 2000;
    for _ in 0..200 {
        for (i, &(_, snap, packet, limit, nets)) in cases.iter().enumerate() {
            let t = std::time::Instant::now();
            for _ in 0..BATCH {
                let src = if nets > 1 {
                    n = n.wrapping_add(1);
                    let ip = std::net::Ipv4Addr::from(0x0A00_0000 | (n % nets) << 8);
                    SocketAddr::new(IpAddr::V4(ip), 4000)
                } else {
                    src
                };
                let ok = fast::answer(black_box(snap), black_box(packet), src, &mut out)
                    == Fast::Answered;
                if limit {
                    black_box(ok && rrl.allow(packet, src.ip(), &mut out, &snap.cookie_secret));
                }
            }
            best[i] = best[i].min(t.elapsed().as_nanos() as f64 / f64::from(BATCH));
        }
    }
    for (i, (name, ..)) in cases.iter().enumerate() {
        println!(
            "{name:50} {:7.1} ns/query ({:+.1} ns vs plain)",
            best[i],
            best[i] - best[0]
        );
    }
    paired_spill();
}

/// The spill cases of [`spill`] measured the same way (interleaved batches, best batch of
/// each): the ratio of a spilling `spill = "capacity"` answer to a plain geo answer.
fn paired_spill() {
    let snap = spill_snapshot();
    let src: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let ecs = Some(("10.1.2.0".parse().expect("ip"), 24));
    let packets = [
        query("geo.example.com.", RecordType::A, ecs),
        query("spill.example.com.", RecordType::A, ecs),
    ];
    let mut out = Vec::with_capacity(1232);
    let mut best = [f64::MAX; 2];
    const BATCH: u32 = 2000;
    for _ in 0..200 {
        for (i, packet) in packets.iter().enumerate() {
            let t = std::time::Instant::now();
            for _ in 0..BATCH {
                black_box(fast::answer(
                    black_box(&snap),
                    black_box(packet),
                    src,
                    &mut out,
                ));
            }
            best[i] = best[i].min(t.elapsed().as_nanos() as f64 / f64::from(BATCH));
        }
    }
    println!(
        "{:50} {:7.1} ns/query\n{:50} {:7.1} ns/query ({:.2}x the plain geo answer)",
        "fast path: plain geo A + ECS",
        best[0],
        "fast path: geo spill=capacity A + ECS, spilling",
        best[1],
        best[1] / best[0]
    );
}

/// A service of `n` IPv4 endpoints under `policy`, spread over the bench config's three regions
/// with weights 1..=4 and priorities 1..=2 (failover: the group of priority 1 is half of them).
fn many_endpoints(name: &str, policy: &str, n: usize) -> String {
    let regions = ["us-east", "eu-west", "ap-south"];
    let mut s = format!("\n[[service]]\nname = \"{name}\"\npolicy = \"{policy}\"\nendpoints = [\n");
    for i in 0..n {
        s += &format!(
            "  {{ region = \"{}\", address = \"10.{}.{}.{}\", weight = {}, priority = {} }},\n",
            regions[i % 3],
            100 + i / 65536,
            (i / 256) % 256,
            i % 256,
            1 + i % 4,
            1 + (i / 2) % 2,
        );
    }
    s + "]\n"
}

/// The fast path on a balanced name of each policy with 2 and 1,000 endpoints (no health
/// checks, so every endpoint is up): what a query costs as services grow. `scale:` cases.
fn scaling(c: &mut Criterion) {
    let policies = meridian::config::POLICIES;
    let mut extra = String::new();
    for p in policies {
        for n in [2usize, 1000] {
            extra += &many_endpoints(&format!("{p}-{n}.example.com"), p, n);
        }
    }
    let snap = snapshot(&extra);
    let src: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let mut out = Vec::with_capacity(1232);
    for p in policies {
        for n in [2usize, 1000] {
            // ECS from 10/8: the bench config maps it to eu-west (geo), and hash sees a subnet.
            let packet = query(
                &format!("{p}-{n}.example.com."),
                RecordType::A,
                Some(("10.1.2.0".parse().expect("ip"), 24)),
            );
            assert_eq!(fast::answer(&snap, &packet, src, &mut out), Fast::Answered);
            c.bench_function(&format!("scale: {p}, {n} endpoints"), |b| {
                b.iter(|| fast::answer(black_box(&snap), black_box(&packet), src, &mut out))
            });
        }
    }
    // The same services with 10 of the 1,000 endpoints down (spread over the regions and
    // priority groups): the degraded answers, where something is down and the up-count and
    // "would the client have had it" decide the TTL.
    let snap = snapshot(&extra);
    for svc in snap.services.iter().filter(|s| s.endpoints.len() == 1000) {
        for e in &svc.endpoints[..10] {
            e.state.set_healthy(false);
        }
    }
    for p in policies {
        let packet = query(
            &format!("{p}-1000.example.com."),
            RecordType::A,
            Some(("10.1.2.0".parse().expect("ip"), 24)),
        );
        assert_eq!(fast::answer(&snap, &packet, src, &mut out), Fast::Answered);
        c.bench_function(&format!("scale: {p}, 1000 endpoints, 10 down"), |b| {
            b.iter(|| fast::answer(black_box(&snap), black_box(&packet), src, &mut out))
        });
    }
}

/// A service with `[[service.tier]]`s (issue 20) beside the same endpoints as one tier: the
/// cost of trying tiers, when the first answers and when it is passed over for the second.
fn tiers(c: &mut Criterion) {
    let snap = snapshot(
        r#"
[[service]]
name = "tiers.example.com"
fallback = ["192.0.2.99"]
[[service.tier]]
policy = "weighted"
endpoints = [{ address = "192.0.2.61", weight = 3 }, { address = "192.0.2.62" }]
min_up = 2
[[service.tier]]
policy = "weighted"
endpoints = [{ address = "192.0.2.63" }]
"#,
    );
    let src: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let packet = query("tiers.example.com.", RecordType::A, None);
    let mut out = Vec::with_capacity(1232);
    assert_eq!(fast::answer(&snap, &packet, src, &mut out), Fast::Answered);
    c.bench_function("fast path: tiers A, first tier answers", |b| {
        b.iter(|| fast::answer(black_box(&snap), black_box(&packet), src, &mut out))
    });
    let svc = snap
        .services
        .iter()
        .find(|s| s.name.to_ascii() == "tiers.example.com.")
        .expect("tiered service");
    svc.endpoints[0].state.set_healthy(false);
    c.bench_function("fast path: tiers A, second tier answers", |b| {
        b.iter(|| fast::answer(black_box(&snap), black_box(&packet), src, &mut out))
    });
}

/// `spill = "capacity"` while spilling against a plain geo answer (SPEC "Spill-over by
/// capacity": at most 1.3×), both on the fast path with the client (ECS 10.1.2.0/24) in
/// eu-west. The spilling service has eu-west down: its clients are spread by capacity over
/// the other regions (distances from eu-west, the spill set, one rendezvous hash per region).
fn spill(c: &mut Criterion) {
    let snap = spill_snapshot();
    let src: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let mut out = Vec::with_capacity(1232);
    let ecs = Some(("10.1.2.0".parse().expect("ip"), 24));
    for (label, name) in [
        ("spill: plain geo A + ECS", "geo.example.com."),
        (
            "spill: geo spill=capacity A + ECS, spilling",
            "spill.example.com.",
        ),
    ] {
        let packet = query(name, RecordType::A, ecs);
        assert_eq!(fast::answer(&snap, &packet, src, &mut out), Fast::Answered);
        c.bench_function(label, |b| {
            b.iter(|| fast::answer(black_box(&snap), black_box(&packet), src, &mut out))
        });
    }
}

/// The bench config plus `spill.example.com`: geo with `spill = "capacity"` over the three
/// regions, its eu-west endpoint (where ECS 10/8 is placed) down, so its answers spill.
fn spill_snapshot() -> Snapshot {
    let snap = snapshot(
        "\n[[service]]\nname = \"spill.example.com\"\npolicy = \"geo\"\nspill = \"capacity\"\n\
         endpoints = [\n  { region = \"eu-west\", address = \"192.0.2.2\", capacity = 500 },\n  \
         { region = \"us-east\", address = \"192.0.2.1\", capacity = 300 },\n  \
         { region = \"ap-south\", address = \"192.0.2.3\", capacity = 300 },\n]\n",
    );
    for s in snap.services.iter() {
        if s.name.to_ascii() == "spill.example.com." {
            s.endpoints[0].state.set_healthy(false);
        }
    }
    snap
}

criterion_group!(benches, bench);

fn main() {
    if std::env::var_os("MERIDIAN_BENCH_PAIRED").is_some() {
        paired();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

/// A query with DO set (and EDNS payload 1232).
fn query_do(name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::from_vec(&query(name, t, None)).expect("decode");
    if let Some(e) = m.edns.as_mut() {
        e.set_dnssec_ok(true);
    }
    m.to_vec().expect("encode")
}

/// The zone signed (`[[dnssec]]`, one ECDSA P-256 CSK): the same queries without and with DO
/// through `answer::respond` (the fast path, else the reference), the signatures warm in the
/// cache, beside the unsigned zone's: docs/dnssec.md "Speed".
fn dnssec(c: &mut Criterion) {
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let keydir = tempfile::tempdir().expect("tempdir").keep();
    let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .expect("key");
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}-----END PRIVATE KEY-----\n",
        data_encoding::BASE64_MIME.encode(der.as_ref())
    );
    std::fs::write(keydir.join("k.pem"), pem).expect("key file");
    let signed = snapshot(&format!(
        "\n[[dnssec]]\nzone = \"example.com\"\nkeys = [\"{}\"]\n",
        keydir.join("k.pem").display()
    ));
    let plain = snapshot("");
    let src: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let mut out = Vec::with_capacity(1232);
    for (label, name, t) in [
        ("static A", "mail.example.com.", RecordType::A),
        ("weighted A", "www.example.com.", RecordType::A),
        ("nxdomain", "nx-123456.example.com.", RecordType::A),
    ] {
        let plain_q = query(name, t, None);
        let do_q = query_do(name, t);
        for (what, snap, packet) in [
            ("unsigned zone", &plain, &plain_q),
            ("signed zone, no DO", &signed, &plain_q),
            ("signed zone, DO", &signed, &do_q),
        ] {
            // Warm the cache (every weighted set) before measuring.
            for _ in 0..64 {
                meridian::answer::respond(snap, packet, src, Transport::Udp, &mut out);
            }
            c.bench_function(&format!("respond: {label}, {what}"), |b| {
                b.iter(|| {
                    meridian::answer::respond(
                        black_box(snap),
                        black_box(packet),
                        src,
                        Transport::Udp,
                        &mut out,
                    )
                })
            });
        }
    }
}

/// The UDP loop's work with `[rrl]` on (fast path, then the limiter on its response) and with
/// cookies, against the plain fast path above. The RRL rate is set so high (10^6/s, 1 h window)
/// that nothing is limited: this measures the accounting every answered query pays.
fn rrl_and_cookies(c: &mut Criterion, cases: &[(&str, Vec<u8>)]) {
    let snap = snapshot("\n[rrl]\nresponses_per_second = 1000000\nwindow = \"1h\"\n");
    let rrl = snap.rrl.as_ref().expect("rrl on");
    let src: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let mut out = Vec::with_capacity(1232);
    for (name, packet) in cases {
        c.bench_function(&format!("fast path + RRL: {name}"), |b| {
            b.iter(|| {
                fast::answer(black_box(&snap), black_box(packet), src, &mut out) == Fast::Answered
                    && rrl.allow(packet, src.ip(), &mut out, &snap.cookie_secret)
            })
        });
    }
    // Many clients: a /24 per query out of 65,536, so the table's lines miss the cache as
    // they would under real traffic.
    let packet = &cases[0].1;
    let mut i = 0u32;
    c.bench_function("fast path + RRL: static A, 65536 networks", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0A00_0000 | (i & 0xFFFF) << 8));
            fast::answer(
                black_box(&snap),
                black_box(packet),
                SocketAddr::new(ip, 4000),
                &mut out,
            ) == Fast::Answered
                && rrl.allow(packet, ip, &mut out, &snap.cookie_secret)
        })
    });

    let client = [1u8, 2, 3, 4, 5, 6, 7, 8];
    let server = meridian::cookie::server_cookie(
        &snap.cookie_secret,
        &client,
        src.ip(),
        meridian::cookie::unix_now(),
    );
    let valid = [&client[..], &server[..]].concat();
    for (label, cookie) in [
        ("client cookie", &client[..]),
        ("valid server cookie", &valid[..]),
    ] {
        let packet = query_cookie("mail.example.com.", RecordType::A, None, Some(cookie));
        assert_eq!(fast::answer(&snap, &packet, src, &mut out), Fast::Answered);
        c.bench_function(&format!("fast path: static A, {label}"), |b| {
            b.iter(|| fast::answer(black_box(&snap), black_box(&packet), src, &mut out))
        });
        c.bench_function(&format!("fast path + RRL: static A, {label}"), |b| {
            b.iter(|| {
                fast::answer(black_box(&snap), black_box(&packet), src, &mut out) == Fast::Answered
                    && rrl.allow(&packet, src.ip(), &mut out, &snap.cookie_secret)
            })
        });
        c.bench_function(&format!("reference: static A, {label}"), |b| {
            b.iter(|| handle(black_box(&snap), black_box(&packet), src, Transport::Udp))
        });
    }
}
