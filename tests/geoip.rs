//! `[geoip] database` as a list: the first file that knows an address wins, an IPv4-only file
//! is never asked about IPv6 (and IPv6 falls through to the next file), a bad entry is a config
//! problem with its position, and a reload (SIGHUP to the real binary) re-reads the files.

mod common;

use std::net::IpAddr;

use meridian::geo::{AddrSource, LocatedBy};
use meridian::snapshot::Snapshot;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/geoip");

fn load(database: &str) -> Result<Snapshot, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("zones")).expect("mkdir");
    std::fs::write(
        dir.path().join("zones/geo.test.zone"),
        "@ 300 SOA ns h 1 2 3 4 5\n@ 300 NS ns\nns 300 A 192.0.2.1\n",
    )
    .expect("zone");
    let cfg = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nzones = \"zones\"\n[geoip]\ndatabase = {database}\n"
    );
    std::fs::write(dir.path().join("m.toml"), cfg).expect("config");
    Snapshot::load(&dir.path().join("m.toml")).map_err(|p| p.to_string())
}

fn at(snap: &Snapshot, ip: &str) -> (LocatedBy, Option<(f64, f64)>) {
    let ip: IpAddr = ip.parse().expect("ip");
    let loc = snap.locator.locate(ip, AddrSource::SourceIp);
    (loc.by, loc.coords.map(|c| (c.lat, c.lon)))
}

#[test]
fn the_first_database_that_knows_an_address_wins() {
    let country = format!("\"{DATA}/GeoLite2-Country-Test.mmdb\"");
    let city = format!("\"{DATA}/GeoIP2-City-Test.mmdb\"");
    // Country first: 81.2.69.160 is known there, so it sits at the GB centroid.
    let snap = load(&format!("[{country}, {city}]")).expect("loads");
    let (by, gb_centroid) = at(&snap, "81.2.69.160");
    assert_eq!(by, LocatedBy::Database);
    // A country database places the address at its country's centroid (about 54 N, 2 W);
    // `None` here would make the order check below pass on nothing.
    let gb_centroid = gb_centroid.expect("the country file's centroid for GB");
    assert!(
        (gb_centroid.0 - 54.0).abs() < 2.0 && (gb_centroid.1 + 2.0).abs() < 2.0,
        "{gb_centroid:?}"
    );
    // City first: the city file's own coordinates (London, per the test data's README).
    let snap = load(&format!("[{city}, {country}]")).expect("loads");
    let (_, london) = at(&snap, "81.2.69.160");
    let london = london.expect("coordinates");
    assert!((london.0 - 51.5).abs() < 0.5, "{london:?}");
    assert_ne!(london, gb_centroid, "the order decides");
    // One file as a plain string still works.
    let snap = load(&city).expect("loads");
    assert_eq!(at(&snap, "81.2.69.160").1, Some(london));
}

#[test]
fn a_bad_database_entry_is_a_positioned_problem() {
    let err = load("[42]").expect_err("a number is no file name");
    assert!(err.contains("m.toml:5:12: geoip.database"), "{err}");
    let err = load("[]").expect_err("an empty list");
    assert!(err.contains("geoip.database"), "{err}");
    let err = load(&format!(
        "[\"{DATA}/GeoIP2-City-Test.mmdb\", \"nope.mmdb\"]"
    ))
    .expect_err("a missing file");
    assert!(
        err.contains("nope.mmdb") && err.contains("does not exist"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// An IPv4-only database (ip-location-db ships IPv4 and IPv6 as separate files)

/// MaxMind DB data-section encoders (the MaxMind DB format spec, "Data Section").
fn mm_ctrl(out: &mut Vec<u8>, kind: u8, size: usize) {
    assert!(size < 29, "short sizes only");
    if kind <= 7 {
        out.push(kind << 5 | size as u8);
    } else {
        out.push(size as u8);
        out.push(kind - 7);
    }
}
fn mm_str(out: &mut Vec<u8>, s: &str) {
    mm_ctrl(out, 2, s.len());
    out.extend_from_slice(s.as_bytes());
}
fn mm_f64(out: &mut Vec<u8>, v: f64) {
    mm_ctrl(out, 3, 8);
    out.extend_from_slice(&v.to_be_bytes());
}
fn mm_uint(out: &mut Vec<u8>, kind: u8, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    mm_ctrl(out, kind, 8 - skip);
    out.extend_from_slice(&bytes[skip..]);
}

/// Writes an IPv4-only (ip_version 4) MaxMind DB holding one network, `net`/`prefix`, with a
/// country and coordinates: the smallest file of the kind `[geoip] database` may list.
fn ipv4_only_mmdb(
    path: &std::path::Path,
    net: [u8; 4],
    prefix: usize,
    country: &str,
    at: (f64, f64),
) {
    // Data: { country: { iso_code }, location: { latitude, longitude } }
    let mut data = Vec::new();
    mm_ctrl(&mut data, 7, 2);
    mm_str(&mut data, "country");
    mm_ctrl(&mut data, 7, 1);
    mm_str(&mut data, "iso_code");
    mm_str(&mut data, country);
    mm_str(&mut data, "location");
    mm_ctrl(&mut data, 7, 2);
    mm_str(&mut data, "latitude");
    mm_f64(&mut data, at.0);
    mm_str(&mut data, "longitude");
    mm_f64(&mut data, at.1);
    // Tree: one node per bit of the prefix; the network's branch goes on (the last one to the
    // data, at offset 0), the other branch is empty (= node_count). 24-bit records.
    let node_count = prefix as u32;
    let data_ptr = node_count + 16;
    let mut tree = Vec::new();
    for depth in 0..prefix {
        let bit = net[depth / 8] >> (7 - depth % 8) & 1;
        let on = if depth + 1 == prefix {
            data_ptr
        } else {
            depth as u32 + 1
        };
        let (left, right) = if bit == 0 {
            (on, node_count)
        } else {
            (node_count, on)
        };
        tree.extend_from_slice(&left.to_be_bytes()[1..]);
        tree.extend_from_slice(&right.to_be_bytes()[1..]);
    }
    let mut meta = Vec::new();
    mm_ctrl(&mut meta, 7, 9);
    mm_str(&mut meta, "binary_format_major_version");
    mm_uint(&mut meta, 5, 2);
    mm_str(&mut meta, "binary_format_minor_version");
    mm_uint(&mut meta, 5, 0);
    mm_str(&mut meta, "build_epoch");
    mm_uint(&mut meta, 9, 1_700_000_000);
    mm_str(&mut meta, "database_type");
    mm_str(&mut meta, "ipv4-test");
    mm_str(&mut meta, "description");
    mm_ctrl(&mut meta, 7, 0);
    mm_str(&mut meta, "ip_version");
    mm_uint(&mut meta, 5, 4);
    mm_str(&mut meta, "languages");
    mm_ctrl(&mut meta, 11, 0);
    mm_str(&mut meta, "node_count");
    mm_uint(&mut meta, 6, u64::from(node_count));
    mm_str(&mut meta, "record_size");
    mm_uint(&mut meta, 5, 24);
    let file = [
        &tree[..],
        &[0u8; 16],
        &data,
        b"\xab\xcd\xefMaxMind.com",
        &meta,
    ]
    .concat();
    std::fs::write(path, file).expect("write mmdb");
}

/// An IPv4-only file first in the list: it answers for its IPv4 network (also asked as an
/// IPv4-mapped IPv6 address), and every IPv6 address goes on to the next file without the
/// IPv4 file being asked (the reader refuses IPv6 there: asking would fail the load, which
/// probes IPv6 addresses, and would leave IPv6 clients unlocated).
#[test]
fn an_ipv4_only_file_is_never_asked_about_ipv6_and_ipv6_falls_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v4 = dir.path().join("v4.mmdb");
    let berlin = (52.52, 13.40);
    ipv4_only_mmdb(&v4, [81, 2, 69, 0], 24, "DE", berlin);
    let city = format!("\"{DATA}/GeoIP2-City-Test.mmdb\"");
    let snap = load(&format!("[\"{}\", {city}]", v4.display()))
        .unwrap_or_else(|e| panic!("an IPv4-only file first in the list must load: {e}"));
    // Its own network: the IPv4 file decides (the city file says London).
    assert_eq!(
        at(&snap, "81.2.69.160"),
        (LocatedBy::Database, Some(berlin))
    );
    assert_eq!(
        at(&snap, "::ffff:81.2.69.160"),
        (LocatedBy::Database, Some(berlin))
    );
    // IPv6: the city file answers, as it does alone.
    let alone = load(&city).expect("loads");
    for ip in ["2001:218::1", "2a02:d280::1", "2001:480::1"] {
        let want = at(&alone, ip);
        if want.0 != LocatedBy::Database {
            continue;
        }
        assert_eq!(at(&snap, ip), want, "{ip} falls through to the next file");
    }
    let (by, coords) = at(&snap, "2001:218::1");
    assert_eq!(
        by,
        LocatedBy::Database,
        "2001:218::1 is in the city test data"
    );
    assert!(coords.is_some());
    // An IPv4 address the IPv4 file does not know falls through too.
    assert_eq!(at(&snap, "216.160.83.56"), at(&alone, "216.160.83.56"));
    assert_eq!(at(&alone, "216.160.83.56").0, LocatedBy::Database);
}

// ---------------------------------------------------------------------------------------------
// Reload re-reads the database

/// `www.geo.test`'s answer for a client in 81.2.69.0/24 (given by ECS), from the server at
/// `dns`; `None` while no answer comes.
fn geo_answer(dns: std::net::SocketAddr) -> Option<Vec<IpAddr>> {
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
    use hickory_proto::rr::{Name, RData, RecordType};
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii("www.geo.test.").expect("name"),
        RecordType::A,
    ));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
        "81.2.69.0".parse().expect("ip"),
        24,
        0,
    )));
    m.set_edns(e);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .expect("timeout");
    sock.send_to(&m.to_vec().expect("encode"), dns).ok()?;
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    let r = Message::from_vec(&buf[..n]).ok()?;
    Some(
        r.answers
            .iter()
            .filter_map(|a| match &a.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                _ => None,
            })
            .collect(),
    )
}

/// SIGHUP re-reads the GeoIP files: the real binary serves a geo name with the city test
/// database (81.2.69.0/24 is London: the eu-west endpoint); the file is replaced by rename (as
/// geoip/update.sh does) with one that puts that network in Singapore, and after a reload
/// the same query gets the ap-southeast endpoint.
#[test]
fn reload_rereads_the_geoip_database() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("geo.mmdb");
    std::fs::copy(format!("{DATA}/GeoIP2-City-Test.mmdb"), &db).expect("copy db");
    let port = common::free_port();
    std::fs::create_dir(dir.path().join("zones")).expect("mkdir");
    std::fs::write(
        dir.path().join("zones/geo.test.zone"),
        "@ 300 SOA ns h 1 2 3 4 5\n@ 300 NS ns\nns 300 A 192.0.2.1\n",
    )
    .expect("zone");
    let cfg = dir.path().join("meridian.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nzones = \"zones\"\nudp_sockets = 1\n\
             [site]\nid = \"t\"\nlocation = {{ lat = 50.11, lon = 8.68 }}\n\
             [geoip]\ndatabase = \"geo.mmdb\"\n\
             [regions.eu-west]\nlocation = {{ lat = 53.35, lon = -6.26 }}\n\
             [regions.ap-southeast]\nlocation = {{ lat = 1.35, lon = 103.82 }}\n\
             [[service]]\nname = \"www.geo.test\"\npolicy = \"geo\"\nendpoints = [\n\
             {{ region = \"eu-west\", address = \"192.0.2.10\" }},\n\
             {{ region = \"ap-southeast\", address = \"192.0.2.30\" }},\n]\n"
        ),
    )
    .expect("config");
    let serve = common::ServerProcess::serve(&cfg);
    let dns: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let wait = |want: &str| {
        let want: IpAddr = want.parse().expect("ip");
        let t0 = Instant::now();
        loop {
            let got = geo_answer(dns);
            if got.as_deref() == Some(&[want][..]) {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "still {got:?}, want {want}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait("192.0.2.10"); // London: eu-west
    let new = dir.path().join("geo.mmdb.new");
    ipv4_only_mmdb(&new, [81, 2, 69, 0], 24, "SG", (1.29, 103.85));
    std::fs::rename(&new, &db).expect("replace the database");
    serve.signal(libc::SIGHUP);
    wait("192.0.2.30"); // now Singapore: ap-southeast
}
