//! `[geoip] database` as a list: the first file that knows an address wins, an IPv4-only file
//! is never asked about IPv6, and a bad entry is a config problem with its position.

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
    // City first: the city file's own coordinates (London, per the test data's README).
    let snap = load(&format!("[{city}, {country}]")).expect("loads");
    let (_, london) = at(&snap, "81.2.69.160");
    let london = london.expect("coordinates");
    assert!((london.0 - 51.5).abs() < 0.5, "{london:?}");
    assert_ne!(Some(london), gb_centroid, "the order decides");
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
