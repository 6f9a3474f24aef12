//! The admin HTTP API (SPEC "Admin HTTP API", "Reload"): a real DNS server and the admin API
//! on loopback, spoken to with hand-written HTTP/1.1 requests and real DNS packets.

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use serde_json::Value;

const TOKEN: &str = "s3cret-admin-token";

/// Reload counters, the last-reload gauge and probe series are process-wide; tests that reload
/// or read them take turns so each sees its own outcome there.
fn reload_turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn zone(extra: &str) -> String {
    format!(
        "$TTL 3600
@        IN SOA ns1 hostmaster ( 1 3600 600 86400 300 )
         IN NS  ns1
ns1      IN A   192.0.2.53
mail     IN A   192.0.2.25
{extra}"
    )
}

/// Config after `[server]`: the admin API (with `token` if given) and two balanced names in
/// `origin`, each answering with every endpoint that is up.
fn config(origin: &str, admin: &str) -> String {
    format!(
        r#"
[site]
id = "admin-test"

{admin}

[regions.us-east]
location = {{ lat = 38.9, lon = -77.0 }}
[regions.eu-west]
location = {{ lat = 53.35, lon = -6.26 }}

[[service]]
name = "www.{origin}"
policy = "round-robin"
ttl = 30
max_answers = 8
endpoints = [
  {{ region = "us-east", address = "192.0.2.10", weight = 3 }},
  {{ region = "us-east", address = "192.0.2.11" }},
  {{ region = "eu-west", address = "192.0.2.20", priority = 2 }},
]

[[service]]
name = "api.{origin}"
policy = "round-robin"
when_all_down = "empty"
max_answers = 8
endpoints = [
  {{ region = "us-east", address = "198.51.100.10" }},
  {{ region = "eu-west", address = "198.51.100.20" }},
]
"#
    )
}

fn admin_with_token() -> String {
    format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"")
}

/// A DNS server for `origin` with the admin API beside it.
struct Fixture {
    server: TestServer,
    admin: SocketAddr,
    origin: String,
}

impl Fixture {
    fn start(origin: &str, admin: &str) -> Fixture {
        let server = TestServer::start(
            &[(&format!("{origin}.zone"), &zone(""))],
            &config(origin, admin),
        );
        Fixture {
            admin: server.start_admin().addr,
            server,
            origin: origin.to_string(),
        }
    }

    fn new(origin: &str) -> Fixture {
        Self::start(origin, &admin_with_token())
    }

    fn name(&self, label: &str) -> String {
        format!("{label}.{}", self.origin)
    }

    /// The addresses answered for `label` (A), and the response code.
    fn answer(&self, label: &str) -> (ResponseCode, BTreeSet<String>) {
        let resp = self.server.udp(&query(&self.name(label), RecordType::A));
        (resp.metadata.response_code, addrs(&resp))
    }

    fn addrs(&self, label: &str) -> BTreeSet<String> {
        self.answer(label).1
    }

    fn get(&self, path: &str) -> (u16, String) {
        http(self.admin, "GET", path, None, "")
    }

    fn post(&self, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
        http(self.admin, "POST", path, token, body)
    }

    fn status(&self) -> Value {
        let (code, body) = self.get("/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("status is JSON")
    }

    fn metrics(&self) -> String {
        let (code, body) = self.get("/metrics");
        assert_eq!(code, 200, "{body}");
        body
    }

    fn write_zone(&self, extra: &str) {
        let path = self
            .server
            .dir
            .path()
            .join("zones")
            .join(format!("{}.zone", self.origin));
        std::fs::write(path, zone(extra)).expect("write zone");
    }

    fn reload(&self) -> (u16, Value) {
        let (code, body) = self.post("/api/v1/reload", Some(TOKEN), "");
        (
            code,
            serde_json::from_str(&body).expect("reload answers JSON"),
        )
    }
}

fn addrs(resp: &Message) -> BTreeSet<String> {
    resp.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// One HTTP/1.1 request with `Connection: close`; returns the status and the body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let (code, _, body) = http_full(
        addr,
        method,
        path,
        token.map(|t| format!("Bearer {t}")),
        body,
    );
    (code, body)
}

fn http_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<String>,
    body: &str,
) -> (u16, String, String) {
    assert!(addr.ip().is_loopback());
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(a) = authorization {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    if method != "GET" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    common::http_exchange(addr, &req).expect("an HTTP response")
}

/// The value of the sample line that starts with `series` (name and labels), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

// ---------------------------------------------------------------------------------------------

#[test]
fn status_lists_site_generation_services_and_endpoints() {
    let f = Fixture::new("status.test");
    let s = f.status();
    assert_eq!(s["site"], "admin-test");
    assert_eq!(s["generation"], f.server.shared.load().generation);
    assert!(s["loaded_at"].as_str().unwrap().ends_with('Z'), "{s}");
    assert!(s["loaded_at_unix"].as_f64().unwrap() > 1.6e9);
    assert_eq!(
        s["config_path"],
        f.server.config_path().display().to_string()
    );
    assert!(s["last_reload"].is_null());
    assert_eq!(s["zones"][0]["origin"], "status.test.");

    let services = s["services"].as_array().unwrap();
    assert_eq!(services.len(), 2);
    let www = &services[0];
    assert_eq!(www["name"], "www.status.test");
    assert_eq!(www["policy"], "round-robin");
    assert_eq!(www["when_all_down"], "serve-all");
    assert_eq!(www["ttl"], 30);
    assert_eq!(www["endpoints_up"], 3);
    assert_eq!(services[1]["when_all_down"], "empty");
    let eps = www["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 3);
    let e = &eps[0];
    assert_eq!(e["address"], "192.0.2.10");
    assert_eq!(e["region"], "us-east");
    assert_eq!(e["weight"], 3.0);
    assert_eq!(e["priority"], 1);
    assert_eq!(e["healthy"], true);
    assert_eq!(e["drained"], false);
    assert_eq!(e["up"], true);
    assert!(e["last_probe"].is_null(), "no health check, no probe: {e}");
    assert!(e["rtt_ms"].is_null());
    assert!(e["load"].is_null());
    assert_eq!(eps[2]["region"], "eu-west");
    assert_eq!(eps[2]["priority"], 2);

    // Unknown paths and wrong methods.
    assert_eq!(f.get("/nope").0, 404);
    assert_eq!(f.get("/api/v1/drain").0, 405);
}

#[test]
fn metrics_count_queries_answers_health_and_reloads() {
    // Probe series are process-wide and a reload in another test prunes those of services it
    // does not have: take the reload turn so none runs between recording and scraping.
    let _turn = reload_turn();
    let f = Fixture::new("metrics.test");
    for _ in 0..5 {
        assert_eq!(f.addrs("www").len(), 3);
    }
    for _ in 0..2 {
        assert_eq!(f.answer("missing").0, ResponseCode::NXDomain);
    }
    let mx = f.server.udp(&query(&f.name("mail"), RecordType::MX));
    assert_eq!(mx.metadata.response_code, ResponseCode::NoError);
    let refused = f.server.udp(&query("elsewhere.invalid", RecordType::A));
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    // Drain both api endpoints: when_all_down = empty answers NODATA.
    for ep in ["198.51.100.10", "198.51.100.20"] {
        let body = format!(r#"{{"service": "api.metrics.test", "endpoint": "{ep}"}}"#);
        assert_eq!(f.post("/api/v1/drain", Some(TOKEN), &body).0, 200);
    }
    assert!(f.addrs("api").is_empty());
    // What the prober reports after each probe.
    let ms = Duration::from_millis;
    meridian::metrics::record_probe("www.metrics.test.", "192.0.2.10", true, "", ms(3));
    meridian::metrics::record_probe("www.metrics.test", "192.0.2.10", false, "timeout", ms(40));
    meridian::metrics::record_probe("gone.metrics.test", "192.0.2.99", true, "", ms(1));

    let (code, head, m) = http_full(f.admin, "GET", "/metrics", None, "");
    assert_eq!(code, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(m.ends_with("# EOF\n"));
    let q = |qtype: &str, rcode: &str, policy: &str| {
        sample(
            &m,
            &format!(
                "meridian_dns_queries_total{{zone=\"metrics.test\",qtype=\"{qtype}\",rcode=\"{rcode}\",policy=\"{policy}\"}}"
            ),
        )
    };
    assert_eq!(q("A", "NOERROR", "round-robin"), Some(6.0), "{m}");
    assert_eq!(q("A", "NXDOMAIN", "static"), Some(2.0), "{m}");
    assert_eq!(q("MX", "NOERROR", "static"), Some(1.0), "{m}");
    assert!(
        sample(
            &m,
            "meridian_dns_queries_total{zone=\"none\",qtype=\"A\",rcode=\"REFUSED\",policy=\"none\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "{m}"
    );
    for ep in ["192.0.2.10", "192.0.2.11", "192.0.2.20"] {
        assert_eq!(
            sample(
                &m,
                &format!(
                    "meridian_answers_total{{service=\"www.metrics.test\",endpoint=\"{ep}\"}}"
                )
            ),
            Some(5.0),
            "{m}"
        );
    }
    assert_eq!(
        sample(
            &m,
            "meridian_answers_all_down_total{service=\"api.metrics.test\",when_all_down=\"empty\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "meridian_endpoint_healthy{service=\"www.metrics.test\",endpoint=\"192.0.2.10\",region=\"us-east\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "meridian_endpoint_drained{service=\"api.metrics.test\",endpoint=\"198.51.100.10\",region=\"us-east\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "meridian_endpoint_up{service=\"api.metrics.test\",endpoint=\"198.51.100.20\",region=\"eu-west\"}"
        ),
        Some(0.0),
        "{m}"
    );
    for series in [
        "meridian_reloads_total",
        "meridian_reload_failures_total",
        "meridian_last_reload_successful",
        "meridian_config_generation",
    ] {
        assert!(sample(&m, series).is_some(), "{series} missing:\n{m}");
    }
    assert!(m.contains("# TYPE meridian_probe_duration_seconds histogram"));
    let series = |s: &str| sample(&m, s);
    assert_eq!(
        series("meridian_probes_total{service=\"www.metrics.test\",endpoint=\"192.0.2.10\",result=\"ok\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        series("meridian_probes_total{service=\"www.metrics.test\",endpoint=\"192.0.2.10\",result=\"timeout\"}"),
        Some(1.0)
    );
    assert_eq!(
        series("meridian_probe_duration_seconds_count{service=\"www.metrics.test\",endpoint=\"192.0.2.10\"}"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        series("meridian_probe_duration_seconds_bucket{le=\"0.005\",service=\"www.metrics.test\",endpoint=\"192.0.2.10\"}"),
        Some(1.0),
        "{m}"
    );
    assert!(
        !m.contains("gone.metrics.test"),
        "endpoints not served are left out"
    );
    assert!(m.contains("meridian_build_info{version=\""));
}

#[test]
fn drain_and_undrain_an_endpoint() {
    let f = Fixture::new("drain.test");
    let all = set(&["192.0.2.10", "192.0.2.11", "192.0.2.20"]);
    assert_eq!(f.addrs("www"), all);

    // Service names match with or without the final dot, in any case.
    let body = r#"{"service": "WWW.Drain.Test.", "endpoint": "192.0.2.10"}"#;
    let (code, resp) = f.post("/api/v1/drain", Some(TOKEN), body);
    assert_eq!(code, 200, "{resp}");
    let resp: Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(resp["count"], 1);
    assert_eq!(resp["endpoints"][0]["endpoint"], "192.0.2.10");
    for _ in 0..5 {
        assert_eq!(f.addrs("www"), set(&["192.0.2.11", "192.0.2.20"]));
    }
    let s = f.status();
    let ep = &s["services"][0]["endpoints"][0];
    assert_eq!(
        (ep["drained"].clone(), ep["up"].clone()),
        (true.into(), false.into())
    );
    assert_eq!(s["services"][0]["endpoints_up"], 2);

    let (code, _) = f.post("/api/v1/undrain", Some(TOKEN), body);
    assert_eq!(code, 200);
    assert_eq!(f.addrs("www"), all);
    assert_eq!(f.status()["services"][0]["endpoints"][0]["drained"], false);
}

#[test]
fn mutating_calls_need_the_right_token() {
    let f = Fixture::new("auth.test");
    let body = r#"{"service": "www.auth.test", "endpoint": "192.0.2.10"}"#;
    for path in ["/api/v1/drain", "/api/v1/undrain", "/api/v1/reload"] {
        let (code, head, _) = http_full(f.admin, "POST", path, None, body);
        assert_eq!(code, 401, "{path} without a token");
        assert!(head
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"));
        for auth in [
            "Bearer wrong".to_string(),
            format!("Bearer {TOKEN}x"),
            format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
            format!("Basic {TOKEN}"),
            TOKEN.to_string(),
        ] {
            let (code, _, _) = http_full(f.admin, "POST", path, Some(auth.clone()), body);
            assert_eq!(code, 401, "{path} with `{auth}`");
        }
    }
    assert_eq!(f.addrs("www").len(), 3, "nothing was drained");
    assert_eq!(f.status()["generation"], f.server.shared.load().generation);

    // Right token, bad bodies: 400; nothing matching: 404.
    for bad in [
        "",
        "not json",
        r#"{"service": "www.auth.test"}"#,
        r#"{"endpoint": "not-an-address"}"#,
        r#"{"endpoint": "192.0.2.10", "colour": "red"}"#,
        r#"["192.0.2.10"]"#,
    ] {
        let (code, resp) = f.post("/api/v1/drain", Some(TOKEN), bad);
        assert_eq!(code, 400, "body `{bad}`: {resp}");
        let v: Value = serde_json::from_str(&resp).expect("JSON error");
        assert!(v["error"].is_string());
    }
    for none in [
        r#"{"service": "nope.auth.test", "endpoint": "192.0.2.10"}"#,
        r#"{"service": "www.auth.test", "endpoint": "203.0.113.9"}"#,
        r#"{"region": "mars"}"#,
    ] {
        let (code, resp) = f.post("/api/v1/drain", Some(TOKEN), none);
        assert_eq!(code, 404, "body `{none}`: {resp}");
        assert!(serde_json::from_str::<Value>(&resp).unwrap()["error"].is_string());
    }
    assert_eq!(f.addrs("www").len(), 3);
}

#[test]
fn without_a_configured_token_mutations_are_forbidden() {
    let f = Fixture::start("notoken.test", "[admin]\nlisten = \"127.0.0.1:0\"");
    let body = r#"{"service": "www.notoken.test", "endpoint": "192.0.2.10"}"#;
    for path in ["/api/v1/drain", "/api/v1/undrain", "/api/v1/reload"] {
        for auth in [None, Some(TOKEN)] {
            let (code, resp) = f.post(path, auth, body);
            assert_eq!(code, 403, "{path}: {resp}");
            assert!(resp.contains("admin.token"), "{resp}");
        }
    }
    assert_eq!(f.addrs("www").len(), 3);
    assert_eq!(f.get("/status").0, 200);
    assert_eq!(f.get("/metrics").0, 200);
}

#[test]
fn region_drain_takes_a_region_out_of_every_service_or_one() {
    let f = Fixture::new("region.test");
    let (code, resp) = f.post("/api/v1/drain", Some(TOKEN), r#"{"region": "us-east"}"#);
    assert_eq!(code, 200, "{resp}");
    assert_eq!(serde_json::from_str::<Value>(&resp).unwrap()["count"], 3);
    assert_eq!(f.addrs("www"), set(&["192.0.2.20"]));
    assert_eq!(f.addrs("api"), set(&["198.51.100.20"]));

    assert_eq!(
        f.post("/api/v1/undrain", Some(TOKEN), r#"{"region": "us-east"}"#)
            .0,
        200
    );
    assert_eq!(f.addrs("www").len(), 3);
    assert_eq!(f.addrs("api").len(), 2);

    let one = r#"{"region": "us-east", "service": "api.region.test"}"#;
    assert_eq!(f.post("/api/v1/drain", Some(TOKEN), one).0, 200);
    assert_eq!(f.addrs("www").len(), 3, "www keeps its us-east endpoints");
    assert_eq!(f.addrs("api"), set(&["198.51.100.20"]));
    assert_eq!(f.post("/api/v1/undrain", Some(TOKEN), one).0, 200);
    assert_eq!(f.addrs("api").len(), 2);
}

#[test]
fn reload_through_the_api_serves_the_changed_zone() {
    let _turn = reload_turn();
    let f = Fixture::new("reload.test");
    let before = f.server.shared.load().generation;
    assert_eq!(f.answer("new").0, ResponseCode::NXDomain);

    f.write_zone("new IN A 192.0.2.77\n");
    let (code, v) = f.reload();
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["ok"], true);
    let generation = v["generation"].as_u64().unwrap();
    assert!(generation > before);
    assert_eq!(f.server.shared.load().generation, generation);
    assert_eq!(
        f.answer("new"),
        (ResponseCode::NoError, set(&["192.0.2.77"]))
    );

    let s = f.status();
    assert_eq!(s["generation"], generation);
    assert_eq!(s["last_reload"]["ok"], true);
    assert_eq!(s["last_reload"]["generation"], generation);
    let m = f.metrics();
    assert_eq!(sample(&m, "meridian_last_reload_successful"), Some(1.0));
    assert_eq!(
        sample(&m, "meridian_config_generation"),
        Some(generation as f64)
    );
}

#[test]
fn a_broken_config_is_rejected_and_the_old_one_keeps_serving() {
    let _turn = reload_turn();
    let f = Fixture::new("broken.test");
    let before = f.server.shared.load().generation;
    let failures = |m: &str| sample(m, "meridian_reload_failures_total").unwrap();
    let failures_before = failures(&f.metrics());

    let path = f.server.config_path();
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        good.replace("policy = \"round-robin\"", "policy = \"fastest\""),
    )
    .unwrap();
    let (code, v) = f.reload();
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["ok"], false);
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("meridian.toml:") && error.contains("fastest"),
        "{error}"
    );

    assert_eq!(f.server.shared.load().generation, before);
    assert_eq!(f.addrs("www").len(), 3, "old answers still served");
    let s = f.status();
    assert_eq!(s["generation"], before);
    assert_eq!(s["last_reload"]["ok"], false);
    assert!(s["last_reload"]["error"]
        .as_str()
        .unwrap()
        .contains("fastest"));
    let m = f.metrics();
    assert_eq!(failures(&m), failures_before + 1.0);
    assert_eq!(sample(&m, "meridian_last_reload_successful"), Some(0.0));

    // A broken zone is rejected the same way.
    std::fs::write(&path, &good).unwrap();
    f.write_zone("bad IN A not-an-address\n");
    let (code, v) = f.reload();
    assert_eq!(code, 422, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("broken.test.zone"),
        "{v}"
    );
    assert_eq!(f.addrs("www").len(), 3);

    f.write_zone("");
    let (code, v) = f.reload();
    assert_eq!(code, 200, "{v}");
    assert_eq!(f.status()["last_reload"]["ok"], true);
    assert_eq!(
        sample(&f.metrics(), "meridian_last_reload_successful"),
        Some(1.0)
    );
}

#[test]
fn reloads_under_a_query_loop_lose_no_query() {
    let _turn = reload_turn();
    let f = Fixture::new("load.test");
    let server = f.server.addr;
    let www = f.name("www");
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU32::new(0));
    let client = {
        let (stop, progress) = (stop.clone(), progress.clone());
        std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let mut buf = vec![0u8; 4096];
            let (mut sent, mut failed) = (0u32, 0u32);
            let start = Instant::now();
            // Until told to stop, and 2,000 queries at least; the 60 s bound only keeps a hung
            // server from hanging the test (how fast queries go is bench/extra.sh's to say).
            while (!stop.load(Ordering::Relaxed) || sent < 2000)
                && start.elapsed() < Duration::from_secs(60)
            {
                let q = query(&www, RecordType::A);
                sock.send_to(&q.to_vec().unwrap(), server).unwrap();
                sent += 1;
                progress.store(sent, Ordering::Relaxed);
                let ok = loop {
                    match sock.recv_from(&mut buf) {
                        Ok((n, _)) => match Message::from_vec(&buf[..n]) {
                            Ok(m) if m.metadata.id != q.metadata.id => continue,
                            Ok(m) => {
                                break m.metadata.response_code == ResponseCode::NoError
                                    && addrs(&m).len() == 3
                            }
                            Err(_) => break false,
                        },
                        Err(_) => break false,
                    }
                };
                if !ok {
                    failed += 1;
                }
            }
            (sent, failed)
        })
    };
    let first = f.server.shared.load().generation;
    while progress.load(Ordering::Relaxed) < 200 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let before = progress.load(Ordering::Relaxed);
    // Five reloads at least, and more until 100 queries at least went out while reloading: a
    // slow machine reloads more times, it does not fail.
    let mut reloads = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while reloads < 5 || progress.load(Ordering::Relaxed) - before < 100 {
        assert!(Instant::now() < deadline, "the query loop stalled");
        std::thread::sleep(Duration::from_millis(40));
        f.write_zone(&format!("ver IN TXT \"v{reloads}\"\n"));
        let (code, v) = f.reload();
        assert_eq!(code, 200, "{v}");
        reloads += 1;
    }
    let during = progress.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = client.join().unwrap();
    assert!(sent >= 2000, "only {sent} queries sent");
    assert!(during >= 100, "only {during} queries while reloading");
    assert_eq!(failed, 0, "{failed} of {sent} queries failed or were lost");
    assert!(f.server.shared.load().generation >= first + reloads);
    let txt = f.server.udp(&query(&f.name("ver"), RecordType::TXT));
    let last = format!("v{}", reloads - 1);
    assert!(
        txt.answers
            .iter()
            .any(|r| r.data.to_string().contains(&last)),
        "{txt:?}"
    );
}

#[test]
fn drains_survive_a_reload() {
    let _turn = reload_turn();
    let f = Fixture::new("keep.test");
    let body = r#"{"service": "www.keep.test", "endpoint": "192.0.2.11"}"#;
    assert_eq!(f.post("/api/v1/drain", Some(TOKEN), body).0, 200);
    assert_eq!(
        f.post(
            "/api/v1/drain",
            Some(TOKEN),
            r#"{"region": "eu-west", "service": "api.keep.test"}"#
        )
        .0,
        200
    );

    // Change the zone and a weight: the endpoints themselves are unchanged.
    f.write_zone("extra IN A 192.0.2.99\n");
    let path = f.server.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("weight = 3", "weight = 5")).unwrap();
    let (code, v) = f.reload();
    assert_eq!(code, 200, "{v}");

    assert_eq!(f.addrs("extra"), set(&["192.0.2.99"]), "new config serves");
    assert_eq!(f.addrs("www"), set(&["192.0.2.10", "192.0.2.20"]));
    assert_eq!(f.addrs("api"), set(&["198.51.100.10"]));
    let s = f.status();
    assert_eq!(s["services"][0]["endpoints"][0]["weight"], 5.0);
    assert_eq!(s["services"][0]["endpoints"][1]["drained"], true);
    assert_eq!(s["services"][1]["endpoints"][1]["drained"], true);

    assert_eq!(f.post("/api/v1/undrain", Some(TOKEN), body).0, 200);
    assert_eq!(f.addrs("www").len(), 3);
}

#[test]
fn admin_refuses_a_public_address_without_a_token() {
    // Refused when the config is read (so `meridian check` says it too), naming the key and line.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("zones")).expect("mkdir");
    let path = dir.path().join("meridian.toml");
    let text = "[server]\nlisten = [\"127.0.0.1:0\"]\nzones = \"zones\"\n[admin]\nlisten = \"0.0.0.0:0\"\n";
    let err = meridian::config::parse(&path, text.to_string()).expect_err("must be refused");
    let p = &err.0[0];
    assert_eq!((p.line, p.col), (5, 10), "{p}");
    assert!(
        p.message.starts_with("admin.listen:")
            && p.message.contains("admin.token")
            && p.message.contains("loopback"),
        "{p}"
    );
    // With a token it is accepted.
    let ok = format!("{text}token = \"t0k3n\"\n");
    assert!(meridian::config::parse(&path, ok).is_ok());
}

#[test]
fn shutdown_stops_the_api() {
    let server = TestServer::start(
        &[("stop.test.zone", &zone(""))],
        &config("stop.test", &admin_with_token()),
    );
    let handle = server.start_admin();
    let addr = handle.addr;
    assert_eq!(http(addr, "GET", "/status", None, "").0, 200);
    server.block_on(handle.shutdown());
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening after shutdown"
    );
}

/// A state folder that cannot be written (its parent is a file, which stops root too): the
/// drain holds in answers, the API says `"persisted": false` with a warning, and once the
/// folder can be made the next drain says `"persisted": true`.
#[test]
fn an_unwritable_state_dir_answers_persisted_false_and_the_drain_holds() {
    let origin = "nostate.test";
    let server = TestServer::start_with(
        &[(&format!("{origin}.zone"), &zone(""))],
        "state_dir = \"blocker/state\"\n",
        &config(origin, &admin_with_token()),
    );
    let blocker = server.dir.path().join("blocker");
    std::fs::write(&blocker, "a file where the state folder's parent should be").expect("file");
    let f = Fixture {
        admin: server.start_admin().addr,
        server,
        origin: origin.to_string(),
    };
    let drain = |endpoint: &str| -> Value {
        let body = format!(r#"{{"service": "www.{origin}", "endpoint": "{endpoint}"}}"#);
        let (code, resp) = f.post("/api/v1/drain", Some(TOKEN), &body);
        assert_eq!(code, 200, "{resp}");
        serde_json::from_str(&resp).expect("JSON")
    };
    let v = drain("192.0.2.10");
    assert_eq!(v["persisted"], false, "{v}");
    assert!(
        v["warning"]
            .as_str()
            .is_some_and(|w| w.contains("not saved")),
        "{v}"
    );
    assert!(
        !f.addrs("www").contains("192.0.2.10"),
        "the drain holds though it was not saved"
    );
    std::fs::remove_file(&blocker).expect("rm");
    let v = drain("192.0.2.11");
    assert_eq!(v["persisted"], true, "{v}");
    assert!(v.get("warning").is_none(), "{v}");
    assert!(f
        .server
        .dir
        .path()
        .join("blocker/state/drains.json")
        .is_file());
}
