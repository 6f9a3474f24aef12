//! Per-query CPU cost of the request handler, without sockets: packet bytes in, response bytes
//! out, for the query kinds of the benchmark mix (`bench/` measures the whole server under
//! dnsperf). Run: `cargo bench --bench handle`.

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};

use meridian::dns::{handle, Transport};
use meridian::fast::{self, Fast};
use meridian::geo::{AddrSource, GeoDb, Locator};
use meridian::snapshot::Snapshot;

fn query(name: &str, t: RecordType, ecs: Option<(IpAddr, u8)>) -> Vec<u8> {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), t));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    if let Some((ip, p)) = ecs {
        e.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(ip, p, 0)));
    }
    m.set_edns(e);
    m.to_vec().expect("encode")
}

/// The benchmark harness's zone and services (bench/meridian-bench.toml.in).
fn snapshot() -> Snapshot {
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
        .replace("@ZONES@", "zones");
    std::fs::write(dir.join("m.toml"), cfg).expect("config");
    Snapshot::load(&dir.join("m.toml")).unwrap_or_else(|p| panic!("{p}"))
}

fn bench(c: &mut Criterion) {
    let snap = snapshot();
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

criterion_group!(benches, bench);
criterion_main!(benches);
