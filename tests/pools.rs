//! Pools and tiers (SPEC "Pools, several monitors, tiers"; issue 20 items 1 and 3): a real
//! server on loopback, the real prober, real HTTP health servers the tests run and stop, the
//! admin API for drains, `/status` and live `explain`.
//!
//! - a pool shared by three services is one endpoint for health and for drains, and a reload
//!   that gives it one more service answers from the pool's known health at once;
//! - 100 services over one 10-endpoint pool make 10 probes per interval, counted at the
//!   health servers;
//! - a DR tier takes over when the first tier drops below `min_up`, with `ttl_degraded` and its
//!   own ECS scope; then the `fallback` addresses; `when_all_down` without a fallback;
//! - `explain` (offline and live) names every tier tried and why it was passed over;
//! - `check` names file:line and key for pool and tier mistakes.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{RData, RecordType};
use serde_json::Value;

const TOKEN: &str = "pool-test-token";

fn zone() -> String {
    "$TTL 3600
@        IN SOA ns1 hostmaster ( 1 3600 600 86400 300 )
         IN NS  ns1
ns1      IN A   192.0.2.53
"
    .to_string()
}

fn start(config: &str) -> TestServer {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_ansi(false)
        .try_init();
    TestServer::start(&[("example.com.zone", &zone())], config)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("IP address")
}

fn set(addrs: &[&str]) -> BTreeSet<IpAddr> {
    addrs.iter().map(|a| ip(a)).collect()
}

fn addrs(m: &Message) -> BTreeSet<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

fn answered(s: &TestServer, name: &str) -> BTreeSet<IpAddr> {
    let m = s.udp(&query(name, RecordType::A));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
    addrs(&m)
}

fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> (u16, String) {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: \
         application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (code, _, body) = http_exchange(addr, &req).expect("admin answers");
    (code, body)
}

fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (code, _, body) = http_exchange(addr, &req).expect("admin answers");
    (code, body)
}

/// Probes of each health server so far (every path, every source).
fn probes<'a>(stubs: impl IntoIterator<Item = &'a HealthStub>) -> Vec<u64> {
    stubs.into_iter().map(|s| s.hits().values().sum()).collect()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn a_pool_shared_by_three_services_is_one_endpoint_for_health_and_drains() {
    let a = HealthStub::start();
    let b = HealthStub::start();
    let (url_a, url_b) = (a.url("/health"), b.url("/health"));
    let config = |services: &str| {
        format!(
            r#"
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"
[health.web]
kind = "http"
interval = "1s"
timeout = "500ms"
rise = 1
fall = 1
[regions.us-east]
location = {{ lat = 38.9, lon = -77.0 }}
[pool.web]
region = "us-east"
health = "web"
endpoints = [
  {{ address = "192.0.2.1", check = "{}" }},
  {{ address = "192.0.2.2", check = "{}" }},
]
{services}"#,
            url_a, url_b
        )
    };
    let three = ["www", "api", "img"]
        .iter()
        .map(|n| {
            format!(
                "[[service]]\nname = \"{n}.example.com\"\npolicy = \"round-robin\"\nmax_answers = \
                 4\npools = [\"web\"]\n"
            )
        })
        .collect::<String>();
    let s = start(&config(&three));
    let _prober = s.start_prober();
    let admin = s.start_admin();
    let names = ["www.example.com.", "api.example.com.", "img.example.com."];
    let both = set(&["192.0.2.1", "192.0.2.2"]);
    assert!(wait_until(Duration::from_secs(5), || {
        ["www", "api", "img"].iter().all(|n| {
            ["192.0.2.1", "192.0.2.2"].iter().all(|a| {
                s.endpoint_state(&format!("{n}.example.com"), a)
                    .last_probe()
                    .is_some()
            })
        })
    }));
    for n in names {
        assert_eq!(answered(&s, n), both, "{n}");
    }

    // One probe per endpoint per interval, however many services: over ~3 s at 1 s, each
    // health server sees about 4 probes (the first at once), not 3 × that.
    let before = probes([&a, &b]);
    std::thread::sleep(Duration::from_millis(3200));
    let after = probes([&a, &b]);
    let made: Vec<u64> = after.iter().zip(&before).map(|(x, y)| x - y).collect();
    println!("3 services over one 2-endpoint pool, 3.2 s at interval 1 s: probes per health server {made:?}");
    for m in &made {
        assert!(
            (2..=5).contains(m),
            "each endpoint is probed once per interval whatever the services: {made:?}"
        );
    }

    // One drain, named by the address alone, takes it out of every service using the pool.
    let (code, body) = post(admin.addr, "/api/v1/drain", r#"{"endpoint": "192.0.2.1"}"#);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        v["count"], 3,
        "the drain matched the endpoint in each service: {v}"
    );
    for n in names {
        assert_eq!(answered(&s, n), set(&["192.0.2.2"]), "{n} after the drain");
    }
    let (code, _) = post(
        admin.addr,
        "/api/v1/undrain",
        r#"{"endpoint": "192.0.2.1"}"#,
    );
    assert_eq!(code, 200);
    for n in names {
        assert_eq!(answered(&s, n), both, "{n} after the undrain");
    }

    // One health: the health server of 192.0.2.2 stops; it leaves every service together.
    drop(b);
    assert!(
        wait_until(Duration::from_secs(4), || names.iter().all(|n| answered(
            &s, n
        ) == set(
            &["192.0.2.1"]
        ))),
        "a failed pool endpoint leaves every service using the pool"
    );
    // /status shows where each endpoint comes from.
    let (code, body) = get(admin.addr, "/status");
    assert_eq!(code, 200);
    let st: Value = serde_json::from_str(&body).expect("json");
    let www = st["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|x| x["name"] == "www.example.com")
        .expect("www in /status");
    assert_eq!(www["pools"], serde_json::json!(["web"]), "{www}");
    assert!(
        www["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .all(|e| e["pool"] == "web"),
        "{www}"
    );

    // A reload gives the pool a fourth service: it answers from the pool's known health at
    // once (192.0.2.2 down, 192.0.2.1 up), not as a stranger waiting for its first probe
    // (with when_all_down = "empty", an unprobed pool would answer nothing).
    let four = format!(
        "{three}[[service]]\nname = \"new.example.com\"\npolicy = \"round-robin\"\nmax_answers = \
         4\nwhen_all_down = \"empty\"\npools = [\"web\"]\n"
    );
    std::fs::write(
        s.config_path(),
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nzones = \"zones\"\nudp_sockets = 1\n{}",
            config(&four)
        ),
    )
    .expect("rewrite config");
    s.reload();
    assert_eq!(
        answered(&s, "new.example.com."),
        set(&["192.0.2.1"]),
        "the new service shares the pool's health from its first query"
    );
}

#[test]
fn a_hundred_services_over_one_ten_endpoint_pool_make_ten_probes_per_interval() {
    let stubs: Vec<HealthStub> = (0..10).map(|_| HealthStub::start()).collect();
    let endpoints: String = stubs
        .iter()
        .enumerate()
        .map(|(i, st)| {
            format!(
                "  {{ address = \"192.0.2.{}\", check = \"{}\" }},\n",
                i + 1,
                st.url("/health")
            )
        })
        .collect();
    let services: String = (0..100)
        .map(|i| {
            format!(
                "[[service]]\nname = \"s{i}.example.com\"\npolicy = \"weighted\"\npools = \
                 [\"shared\"]\n"
            )
        })
        .collect();
    let s = start(&format!(
        r#"
[health.web]
kind = "http"
interval = "500ms"
timeout = "400ms"
[regions.us-east]
location = {{ lat = 38.9, lon = -77.0 }}
[pool.shared]
region = "us-east"
health = "web"
endpoints = [
{endpoints}]
{services}"#
    ));
    let prober = s.start_prober();
    assert!(wait_until(Duration::from_secs(5), || probes(&stubs)
        .iter()
        .all(|&n| n > 0)));
    assert_eq!(prober.targets(), 10, "one probe task per pooled endpoint");
    // Six intervals of 500 ms: each endpoint is probed about 6 times, whatever the 100
    // services; one probe per (service, endpoint) would be about 600 at each.
    let before = probes(&stubs);
    std::thread::sleep(Duration::from_millis(3000));
    let made: Vec<u64> = probes(&stubs)
        .iter()
        .zip(&before)
        .map(|(x, y)| x - y)
        .collect();
    let total: u64 = made.iter().sum();
    println!(
        "100 services over one 10-endpoint pool, 3 s at interval 500 ms: {total} probes in \
         all ({:.1} per interval), per health server {made:?}",
        total as f64 / 6.0
    );
    for m in &made {
        assert!((4..=8).contains(m), "per endpoint: {made:?}");
    }
    assert!(total <= 80, "10 probes per interval, not 1,000: {total}");
    // Every service answers from the shared pool.
    for i in [0, 57, 99] {
        assert_eq!(answered(&s, &format!("s{i}.example.com.")).len(), 1);
    }
}

fn ecs_query(name: &str, client: &str, prefix: u8) -> Message {
    let mut m = query_edns(name, RecordType::A, 1232);
    let subnet = ClientSubnet::new(ip(client), prefix, 0);
    m.edns
        .as_mut()
        .expect("edns")
        .options_mut()
        .insert(EdnsOption::Subnet(subnet));
    m
}

fn scope_of(m: &Message) -> Option<u8> {
    match m.edns.as_ref()?.option(EdnsCode::Subnet) {
        Some(EdnsOption::Subnet(s)) => Some(s.scope_prefix()),
        _ => None,
    }
}

fn ttls(m: &Message) -> BTreeSet<u32> {
    m.answers.iter().map(|r| r.ttl).collect()
}

#[test]
fn a_dr_tier_takes_over_below_min_up_then_the_fallback_answers() {
    let use1 = HealthStub::start();
    let euw1 = HealthStub::start();
    let dr = HealthStub::start();
    let s = start(&format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"
[geoip]
networks = [{{ cidr = "10.0.0.0/8", region = "us-east" }}]
[health.web]
kind = "http"
interval = "500ms"
timeout = "400ms"
rise = 1
fall = 1
[regions.us-east]
location = {{ lat = 38.9, lon = -77.0 }}
[regions.eu-west]
location = {{ lat = 53.35, lon = -6.26 }}
[regions.dr]
location = {{ lat = 45.0, lon = 7.0 }}
[pool.api-use1]
region = "us-east"
health = "web"
endpoints = [{{ address = "192.0.2.10", check = "{}" }}]
[pool.api-euw1]
region = "eu-west"
health = "web"
endpoints = [{{ address = "192.0.2.20", check = "{}" }}]

[[service]]
name = "api.example.com"
ttl = 60
ttl_degraded = 5
health = "web"                            # the DR tier's inline endpoint
fallback = ["192.0.2.99"]
[[service.tier]]
policy = "geo"
pools = ["api-use1", "api-euw1"]
min_up = 2
[[service.tier]]
policy = "weighted"
endpoints = [{{ region = "dr", address = "198.51.100.7", check = "{}" }}]

[[service]]
name = "nofb.example.com"
ttl = 60
ttl_degraded = 5
when_all_down = "empty"
[[service.tier]]
policy = "geo"
pools = ["api-use1", "api-euw1"]
min_up = 2
"#,
        use1.url("/health"),
        euw1.url("/health"),
        dr.url("/health"),
    ));
    let _prober = s.start_prober();
    let admin = s.start_admin();
    assert!(wait_until(Duration::from_secs(5), || [
        "192.0.2.10",
        "192.0.2.20",
        "198.51.100.7"
    ]
    .iter()
    .all(|a| s
        .endpoint_state("api.example.com", a)
        .last_probe()
        .is_some())));

    // The first tier answers: geo, so the ECS scope is what placed the client (the /8 of
    // its `geoip.networks` entry), full TTL.
    let m = s.udp(&ecs_query("api.example.com.", "10.1.2.0", 24));
    assert_eq!(addrs(&m), set(&["192.0.2.10"]), "{m}");
    assert_eq!(ttls(&m), BTreeSet::from([60]), "{m}");
    assert_eq!(scope_of(&m), Some(8), "geo's scope: {m}");

    // One endpoint of the first tier fails: 1 of 2 is below min_up 2, the DR tier answers,
    // with ttl_degraded and the weighted policy's scope (0: it does not depend on the client).
    drop(use1);
    assert!(
        wait_until(Duration::from_secs(4), || answered(&s, "api.example.com.")
            == set(&["198.51.100.7"])),
        "the DR tier never took over"
    );
    let m = s.udp(&ecs_query("api.example.com.", "10.1.2.0", 24));
    assert_eq!(addrs(&m), set(&["198.51.100.7"]), "{m}");
    assert_eq!(
        ttls(&m),
        BTreeSet::from([5]),
        "ttl_degraded while the DR tier answers: {m}"
    );
    assert_eq!(scope_of(&m), Some(0), "the answering tier's scope: {m}");
    // Without a fallback or a second tier: when_all_down = "empty" answers NODATA.
    let m = s.udp(&query("nofb.example.com.", RecordType::A));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
    assert!(m.answers.is_empty(), "when_all_down = empty: {m}");

    // Live explain names every tier tried and why.
    let (code, body) = get(
        admin.addr,
        "/api/v1/explain?name=api.example.com&type=A&client=10.1.2.3",
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    let tiers = v["tiers"].as_array().expect("tiers in explain");
    assert_eq!(tiers.len(), 2, "{v}");
    assert_eq!(tiers[0]["answered"], false, "{v}");
    assert!(
        tiers[0]["why"]
            .as_str()
            .is_some_and(|w| w.contains("below min_up 2") && w.contains("passed over")),
        "{v}"
    );
    assert_eq!(tiers[1]["answered"], true, "{v}");
    assert_eq!(v["answer"], serde_json::json!(["198.51.100.7"]), "{v}");
    // /status says which tier answers now.
    let (_, body) = get(admin.addr, "/status");
    let st: Value = serde_json::from_str(&body).expect("json");
    let api = st["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|x| x["name"] == "api.example.com")
        .expect("api in /status");
    assert_eq!(api["tiers"][0]["answering"], false, "{api}");
    assert_eq!(api["tiers"][1]["answering"], true, "{api}");
    assert_eq!(api["fallback"], serde_json::json!(["192.0.2.99"]), "{api}");
    // `meridian status` prints the tiers table from that document.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["status", "--admin", &format!("http://{}", admin.addr)])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let row = |tier: &str| {
        text.lines()
            .find(|l| l.starts_with("api.example.com") && l.split_whitespace().nth(1) == Some(tier))
            .unwrap_or_else(|| panic!("no tier {tier} row in:\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(row("1").last(), Some(&"-"), "{text}");
    assert_eq!(row("2").last(), Some(&"yes"), "tier 2 answers now:\n{text}");
    assert_eq!(row("fallback")[3], "192.0.2.99", "{text}");

    // The DR site fails too: no tier has enough, the fallback address answers (degraded).
    drop(dr);
    assert!(
        wait_until(Duration::from_secs(4), || answered(&s, "api.example.com.")
            == set(&["192.0.2.99"])),
        "the fallback never answered"
    );
    let m = s.udp(&ecs_query("api.example.com.", "10.1.2.0", 24));
    assert_eq!(ttls(&m), BTreeSet::from([5]), "{m}");
    let (_, body) = get(
        admin.addr,
        "/api/v1/explain?name=api.example.com&type=A&client=10.1.2.3",
    );
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["fallback"], true, "{v}");
    assert_eq!(v["tiers"][1]["answered"], false, "{v}");
}

#[test]
fn explain_offline_lists_every_tier_tried_and_why() {
    let (dir, cpath) = config_dir(
        &[("example.com.zone", &zone())],
        r#"
[server]
listen = ["127.0.0.1:0"]
zones = "zones"
[regions.us-east]
location = { lat = 38.9, lon = -77.0 }
[regions.dr]
location = { lat = 45.0, lon = 7.0 }
[pool.main]
region = "us-east"
endpoints = [{ address = "192.0.2.10" }, { address = "192.0.2.11" }]
[[service]]
name = "api.example.com"
ttl = 60
ttl_degraded = 5
[[service.tier]]
policy = "weighted"
pools = ["main"]
min_up = 2
[[service.tier]]
policy = "round-robin"
endpoints = [{ region = "dr", address = "198.51.100.7" }]
"#,
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args([
            "explain",
            "api.example.com",
            "--down",
            "192.0.2.10",
            "--config",
        ])
        .arg(&cpath)
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("tier 1 (weighted, pools main, min_up 2): 1 of 2 endpoints eligible, below min_up 2: passed over"),
        "{text}"
    );
    assert!(
        text.contains(
            "tier 2 (round-robin, min_up 1): 1 of 1 endpoints eligible, min_up 1: answers"
        ),
        "{text}"
    );
    assert!(
        text.contains("api.example.com. 5 IN A 198.51.100.7"),
        "{text}"
    );
    // Nothing down: tier 1 answers, tier 2 is not tried.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["explain", "api.example.com", "--json", "--config"])
        .arg(&cpath)
        .output()
        .expect("runs");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["tiers"][0]["answered"], true, "{v}");
    assert_eq!(v["tiers"][1]["tried"], false, "{v}");
    assert_eq!(v["ttl"], 60, "{v}");
    drop(dir);
}

#[test]
fn check_names_file_line_and_key_for_pool_and_tier_mistakes() {
    let (_dir, cpath) = config_dir(
        &[("example.com.zone", &zone())],
        r#"[server]
listen = ["127.0.0.1:0"]
zones = "zones"
[regions.us-east]
location = { lat = 38.9, lon = -77.0 }
[pool.empty]
endpoints = []
[pool.web]
region = "nowhere"
health = "missing"
endpoints = [{ address = "192.0.2.300" }]
[[service]]
name = "www.example.com"
policy = "geo"
pools = ["web", "nope"]
[[service]]
name = "api.example.com"
fallback = ["not-an-ip"]
[[service.tier]]
policy = "weighted"
endpoints = [{ address = "192.0.2.10" }]
min_up = 3
"#,
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["check", "--config"])
        .arg(&cpath)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let p = cpath.display().to_string();
    for want in [
        format!("{p}:7:13: pool.empty.endpoints: a pool needs at least one endpoint"),
        format!("{p}:9:10: pool.web.region: no region `nowhere` is defined"),
        format!("{p}:10:10: pool.web.health: no health profile `missing` is defined"),
        format!("{p}:11:26: pool.web.endpoints[0].address: `192.0.2.300` is not an IPv4 or IPv6 address"),
        format!("{p}:15:17: service \"www.example.com\".pools[1]: no pool `nope` is defined (pools: empty, web)"),
        format!("{p}:18:13: service \"api.example.com\".fallback[0]: `not-an-ip` is not an IPv4 or IPv6 address"),
        format!("{p}:22:10: service \"api.example.com\".tier[0].min_up: 3 is more than the tier's 1 endpoint(s): it could never answer"),
    ] {
        assert!(text.contains(&want), "missing `{want}` in:\n{text}");
    }

    // An unused pool is a warning: the config is valid.
    let (_dir2, cpath2) = config_dir(
        &[("example.com.zone", &zone())],
        r#"[server]
listen = ["127.0.0.1:0"]
zones = "zones"
[pool.spare]
endpoints = [{ address = "192.0.2.50" }]
[[service]]
name = "www.example.com"
policy = "weighted"
endpoints = [{ address = "192.0.2.10" }]
"#,
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["check", "--config"])
        .arg(&cpath2)
        .output()
        .expect("runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!(
            "{}:4:1: warning: pool.spare: no service uses this pool",
            cpath2.display()
        )),
        "{text}"
    );
}

#[test]
fn simulate_replays_queries_through_the_tiers() {
    let (dir, cpath) = config_dir(
        &[("example.com.zone", &zone())],
        r#"
[server]
listen = ["127.0.0.1:0"]
zones = "zones"
[regions.us-east]
location = { lat = 38.9, lon = -77.0 }
[regions.dr]
location = { lat = 45.0, lon = 7.0 }
[pool.main]
region = "us-east"
endpoints = [{ address = "192.0.2.10" }, { address = "192.0.2.11" }]
[[service]]
name = "api.example.com"
fallback = ["192.0.2.99"]
[[service.tier]]
policy = "weighted"
pools = ["main"]
min_up = 2
[[service.tier]]
policy = "round-robin"
endpoints = [{ region = "dr", address = "198.51.100.7" }]
"#,
    );
    let queries = dir.path().join("q.txt");
    let lines: String = (0..20)
        .map(|i| format!("api.example.com A 127.0.0.1 10.0.{i}.0/24\n"))
        .collect();
    std::fs::write(&queries, lines).expect("write queries");
    let run = |down: &[&str]| -> Value {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"));
        cmd.arg("simulate").arg("--queries").arg(&queries);
        cmd.arg("--config").arg(&cpath).arg("--json");
        for d in down {
            cmd.args(["--down", d]);
        }
        let out = cmd.output().expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    };
    // (place → share after) of api.example.com.
    let after = |v: &Value| -> std::collections::BTreeMap<String, f64> {
        v["services"][0]["regions"]
            .as_array()
            .expect("regions")
            .iter()
            .map(|r| {
                (
                    r["region"].as_str().expect("region").to_string(),
                    r["after"].as_f64().expect("after"),
                )
            })
            .collect()
    };
    // One of the two main endpoints down: below min_up 2, every client moves to the DR tier.
    let v = run(&["192.0.2.10"]);
    let a = after(&v);
    assert_eq!(a.get("dr").copied(), Some(100.0), "{v}");
    assert_eq!(a.get("us-east").copied().unwrap_or(0.0), 0.0, "{v}");
    // The DR host down too: the fallback address answers them all.
    let v = run(&["192.0.2.10", "dr"]);
    let a = after(&v);
    assert_eq!(a.get("192.0.2.99").copied(), Some(100.0), "{v}");
}
