//! Test support, by concern:
//!
//! | file | owns |
//! |---|---|
//! | `server.rs` | [`TestServer`]: a real server in this process on loopback, real DNS packets to it over UDP and TCP, its prober, reloads and admin API |
//! | `process.rs` | [`ServerProcess`]: the real `meridian` binary (or etcd) as a child process, config folders, free ports |
//! | `http.rs` | one raw HTTP request on loopback, and [`HealthStub`], a health server for real checks |
//! | `wire.rs` | the `wire.test` zone and raw packet builders of the wire tests |
//!
//! Everything but `wire` is re-exported here, so `use common::*` reaches it; waiting for a
//! condition ([`wait_for`], [`wait_until`]) lives in this file.
#![allow(dead_code)]

mod http;
mod process;
mod server;
pub mod wire;

// Each test file uses a part of these; the rest is not "unused" for the others' sake.
#[allow(unused_imports)]
pub use http::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use server::*;

pub const EXAMPLE_ZONE: &str = include_str!("../../zones/example.com.zone");
pub const EXAMPLE_CONFIG: &str = include_str!("../../config/meridian.toml");

/// The shipped config after its `[server]` table (site, GeoIP, regions, services), with the
/// site id `test-site` and the GeoIP path made absolute, to append to a test `[server]`.
pub fn example_config() -> String {
    let rest = &EXAMPLE_CONFIG[EXAMPLE_CONFIG
        .find("[site]")
        .expect("shipped config has [site]")..];
    let geoip = concat!(env!("CARGO_MANIFEST_DIR"), "/geoip/");
    rest.replace("id = \"dev1\"", "id = \"test-site\"")
        .replace("\"../geoip/", &format!("\"{geoip}"))
}

/// Polls `cond` every 20 ms until it holds or `limit` has passed (then once more); how long it
/// took, or `None` if it never held.
pub fn wait_for(
    limit: std::time::Duration,
    mut cond: impl FnMut() -> bool,
) -> Option<std::time::Duration> {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < limit {
        if cond() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    cond().then(|| t0.elapsed())
}

/// [`wait_for`], saying only whether `cond` came to hold within `limit`.
pub fn wait_until(limit: std::time::Duration, cond: impl FnMut() -> bool) -> bool {
    wait_for(limit, cond).is_some()
}
