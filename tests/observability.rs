//! Observability (SPEC "Observability"): the status page at `GET /`, what `/status` adds for it
//! (regions, events, answer shares over the last minute), and the metrics a GSLB dashboard
//! needs: queries by transport, answers by region, truncated responses, malformed queries, the
//! query duration histogram and the `process_*` metrics. A real server and admin API on
//! loopback, real DNS packets over UDP and TCP, then a scrape of `/metrics`.

mod common;

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use hickory_proto::rr::RecordType;
use serde_json::Value;

const TOKEN: &str = "obs-token";

/// The metrics are process-wide: every test here takes its turn, so deltas are exact.
fn turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn zone() -> String {
    // `big` does not fit in 512 bytes: a plain (no EDNS) UDP query gets TC.
    let txt = format!("\"{}\"", "x".repeat(200));
    format!(
        "$TTL 3600
@        IN SOA ns1 hostmaster ( 1 3600 600 86400 300 )
         IN NS  ns1
ns1      IN A   192.0.2.53
big      IN TXT {txt}
big      IN TXT {txt} \"1\"
big      IN TXT {txt} \"2\"
"
    )
}

fn config(origin: &str) -> String {
    format!(
        r#"
[site]
id = "obs-site"

[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"

[regions.us-east]
location = {{ lat = 38.9, lon = -77.0 }}
[regions.eu-west]
location = {{ lat = 53.35, lon = -6.26 }}

[[service]]
name = "www.{origin}"
policy = "round-robin"
ttl = 30
max_answers = 1
endpoints = [
  {{ region = "us-east", address = "192.0.2.10" }},
  {{ region = "us-east", address = "192.0.2.11" }},
  {{ region = "eu-west", address = "192.0.2.20" }},
  {{ region = "eu-west", address = "192.0.2.21" }},
]
"#
    )
}

struct Fixture {
    server: TestServer,
    admin: SocketAddr,
    origin: String,
}

impl Fixture {
    fn new(origin: &str) -> Fixture {
        let server = TestServer::start(&[(&format!("{origin}.zone"), &zone())], &config(origin));
        Fixture {
            admin: server.start_admin().addr,
            server,
            origin: origin.to_string(),
        }
    }

    fn name(&self, label: &str) -> String {
        format!("{label}.{}", self.origin)
    }

    fn get(&self, path: &str) -> (u16, String, String) {
        http(self.admin, "GET", path, None, "")
    }

    fn status(&self) -> Value {
        let (code, _, body) = self.get("/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("status is JSON")
    }

    fn metrics(&self) -> String {
        let (code, _, body) = self.get("/metrics");
        assert_eq!(code, 200, "{body}");
        body
    }
}

/// One HTTP/1.1 request with `Connection: close`: (status, headers, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    common::http_exchange(addr, &req).expect("an HTTP response")
}

/// The sum of every sample of `name` whose labels include all of `labels`; 0 when none.
fn value(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let (n, lbl) = match series.split_once('{') {
                Some((n, lbl)) => (n, lbl),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            labels
                .iter()
                .all(|(k, want)| lbl.contains(&format!("{k}=\"{want}\"")))
                .then(|| v.parse::<f64>().ok())?
        })
        .sum()
}

fn has(metrics: &str, name: &str) -> bool {
    metrics
        .lines()
        .any(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
}

fn wait_until(what: &str, within: Duration, ok: impl FnMut() -> bool) {
    if wait_for(within, ok).is_none() {
        panic!("not within {within:?}: {what}");
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn the_status_page_is_served_without_a_token_and_self_contained() {
    let _turn = turn();
    let f = Fixture::new("page.test");
    let (code, head, body) = f.get("/");
    assert_eq!(code, 200, "{body}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(body.contains("<svg id=\"map\""));
    assert!(body.contains("class=\"land\""), "the world map is inline");
    assert!(body.contains("fetch(\"/status\""));
    for outside in ["src=\"http", "href=\"http", "src=\"//", "@import", "url("] {
        assert!(!body.contains(outside), "refers outside: {outside}");
    }
}

#[test]
fn status_adds_regions_events_and_answer_shares() {
    let _turn = turn();
    let f = Fixture::new("share.test");
    // The sampler takes its first sample when the API starts; answers after it count.
    wait_until("a first sample", Duration::from_secs(3), || {
        f.status()["services"][0]["endpoints"][0]["answers_1m"].is_u64()
    });
    let www = f.name("www");
    for _ in 0..40 {
        f.server.udp(&query(&www, RecordType::A));
    }
    let st = f.status();
    // Backward compatible: the old keys are all there.
    for key in [
        "site",
        "version",
        "generation",
        "loaded_at",
        "zones",
        "services",
    ] {
        assert!(!st[key].is_null(), "{key} missing");
    }
    assert_eq!(st["site"], "obs-site");
    let regions = st["regions"].as_array().expect("regions");
    let eu = regions
        .iter()
        .find(|r| r["name"] == "eu-west")
        .expect("eu-west listed");
    assert_eq!(eu["lat"], 53.35);
    assert_eq!(eu["lon"], -6.26);

    let eps = st["services"][0]["endpoints"]
        .as_array()
        .expect("endpoints");
    let answers: Vec<u64> = eps
        .iter()
        .map(|e| e["answers_1m"].as_u64().expect("answers_1m"))
        .collect();
    assert_eq!(answers.iter().sum::<u64>(), 40, "{answers:?}");
    // Round robin with one answer each: 10 apiece, a quarter of the answers each.
    for e in eps {
        assert_eq!(e["answers_1m"], 10, "{e}");
        let share = e["share_1m"].as_f64().expect("share_1m");
        assert!((share - 0.25).abs() < 1e-9, "{e}");
    }

    // A drain shows as an event within a sampler pass; a reload at once.
    let (code, _, body) = http(
        f.admin,
        "POST",
        "/api/v1/drain",
        Some(TOKEN),
        &format!(r#"{{"service": "{www}", "endpoint": "192.0.2.20"}}"#),
    );
    assert_eq!(code, 200, "{body}");
    wait_until("the drain event", Duration::from_secs(3), || {
        f.status()["events"].as_array().is_some_and(|ev| {
            ev.iter().any(|e| {
                e["kind"] == "drain"
                    && e["endpoint"] == "192.0.2.20"
                    && e["region"] == "eu-west"
                    && e["from"] == "undrained"
                    && e["to"] == "drained"
            })
        })
    });
    // Generations count every snapshot of the process, so take the one being served.
    let generation = f.status()["generation"].as_u64().expect("generation");
    let (code, _, body) = http(f.admin, "POST", "/api/v1/reload", Some(TOKEN), "");
    assert_eq!(code, 200, "{body}");
    let st = f.status();
    let events = st["events"].as_array().expect("events");
    let last = events.last().expect("an event");
    assert_eq!(last["kind"], "reload", "{last}");
    assert_eq!(last["from"], format!("generation {generation}"));
    assert_eq!(last["to"], format!("generation {}", st["generation"]));
    assert_eq!(last["reason"], "ok");
    assert!(last["time"].is_string() && last["time_unix"].is_f64());
    // The drain survived the reload, and the shares carried over with the counters.
    assert_eq!(st["services"][0]["endpoints"][2]["drained"], true);
    assert_eq!(st["services"][0]["endpoints"][2]["answers_1m"], 10);
}

#[test]
fn metrics_count_transports_truncation_malformed_regions_and_durations() {
    let _turn = turn();
    let f = Fixture::new("metrics-obs.test");
    let www = f.name("www");
    let before = f.metrics();

    for _ in 0..12 {
        f.server.udp(&query(&www, RecordType::A));
    }
    let tcp = f.server.tcp_many(&vec![query(&www, RecordType::A); 5]);
    assert_eq!(tcp.len(), 5);
    // Three 200-byte TXT strings do not fit in 512 bytes.
    let big = f.server.udp(&query(&f.name("big"), RecordType::TXT));
    assert!(big.metadata.truncation, "TC expected");
    // A header that promises a question and has none: FORMERR over both transports.
    let no_question = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    let r = f
        .server
        .udp_raw(&no_question, Duration::from_secs(2))
        .expect("FORMERR over UDP");
    assert_eq!(r[3] & 0x0f, 1);
    let r = f
        .server
        .tcp_raw(&no_question, Duration::from_secs(2))
        .expect("FORMERR over TCP");
    assert_eq!(r[3] & 0x0f, 1);
    // Shorter than a header: dropped, and counted.
    assert!(f
        .server
        .udp_raw(&[1, 2, 3, 4, 5], Duration::from_millis(300))
        .is_none());

    let after = f.metrics();
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let udp = [("transport", "udp")];
    let tcp = [("transport", "tcp")];
    // 12 A + the TXT + the FORMERR over UDP; 5 A + the FORMERR over TCP.
    assert_eq!(delta("meridian_dns_queries_by_transport_total", &udp), 14.0);
    assert_eq!(delta("meridian_dns_queries_by_transport_total", &tcp), 6.0);
    assert_eq!(delta("meridian_dns_truncated_responses_total", &udp), 1.0);
    assert_eq!(delta("meridian_dns_truncated_responses_total", &tcp), 0.0);
    assert_eq!(delta("meridian_dns_malformed_queries_total", &udp), 2.0);
    assert_eq!(delta("meridian_dns_malformed_queries_total", &tcp), 1.0);

    // 17 answers of one endpoint each, round robin over two regions of two endpoints.
    let svc = ("service", www.as_str());
    let us = delta(
        "meridian_answers_by_region_total",
        &[svc, ("region", "us-east")],
    );
    let eu = delta(
        "meridian_answers_by_region_total",
        &[svc, ("region", "eu-west")],
    );
    assert_eq!(us + eu, 17.0, "us {us} eu {eu}");
    assert!((8.0..=9.0).contains(&us), "us {us} eu {eu}");
    // The per-endpoint series keep their labels (no region added to them).
    assert!(after.contains(&format!(
        "meridian_answers_total{{service=\"{www}\",endpoint=\"192.0.2.10\"}}"
    )));

    // Every packet read is timed, the dropped one included; over TCP every query.
    let count = |t: &[(&str, &str)]| delta("meridian_query_duration_seconds_count", t);
    assert!(count(&udp) >= 15.0, "udp {}", count(&udp));
    assert!(count(&tcp) >= 6.0, "tcp {}", count(&tcp));
    assert!(delta("meridian_query_duration_seconds_sum", &udp) > 0.0);
    let inf = [("transport", "udp"), ("le", "+Inf")];
    assert_eq!(
        value(&after, "meridian_query_duration_seconds_bucket", &inf),
        value(&after, "meridian_query_duration_seconds_count", &udp)
    );
    assert!(after.contains("# TYPE meridian_query_duration_seconds histogram"));
}

#[test]
fn process_metrics_use_the_standard_names() {
    let _turn = turn();
    let f = Fixture::new("process.test");
    // This process (the server runs in it) uses a known amount of CPU first, then the metric
    // must lie between getrusage's reading before the scrape and after it: within a clock
    // tick (10 ms) and a little, since /proc counts ticks and getrusage microseconds.
    let mut x = 0u64;
    while cpu_seconds() < 0.2 {
        for _ in 0..100_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    let cpu_before = cpu_seconds();
    let m = f.metrics();
    let cpu_after = cpu_seconds();
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(has(&m, name), "{name} missing");
    }
    let cpu = value(&m, "process_cpu_seconds_total", &[]);
    assert!(
        cpu >= cpu_before - 0.05 && cpu <= cpu_after + 0.05,
        "process_cpu_seconds_total {cpu}, getrusage {cpu_before}..{cpu_after}"
    );
    assert!(value(&m, "process_resident_memory_bytes", &[]) > 1e6);
    let fds = value(&m, "process_open_fds", &[]);
    assert!(fds >= 3.0 && fds <= value(&m, "process_max_fds", &[]));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let start = value(&m, "process_start_time_seconds", &[]);
    assert!(
        start <= now + 2.0 && start > now - 86_400.0,
        "{start} vs {now}"
    );
    assert!(m.contains("# TYPE process_cpu_seconds counter"));
}

/// This process's user + system CPU time so far (getrusage), in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) }, 0);
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(r.ru_utime) + tv(r.ru_stime)
}
