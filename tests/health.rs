//! The health prober and DNS failover (SPEC "Health", "Reload", policies `latency` and
//! `least-loaded`): real HTTP, HTTPS and TCP servers in this process on 127.0.0.1 whose answers
//! the tests flip, the real DNS server on loopback, and the prober on the server's snapshot.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use meridian::health::EndpointState;

const ZONE: &str = "$TTL 3600
@        IN SOA ns1 hostmaster ( 7 3600 600 86400 300 )
         IN NS   ns1
ns1      IN A    192.0.2.53
";

// ---------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 server whose answer the test can change at any time

#[derive(Debug, Clone)]
struct Behaviour {
    status: u16,
    body: String,
    delay: Duration,
    load: Option<String>,
}

#[derive(Debug, Default)]
struct Seen {
    /// Request head of the last request (request line and headers).
    head: String,
    /// TLS server name the last client sent.
    sni: Option<String>,
}

struct HttpServer {
    addr: SocketAddr,
    behaviour: Arc<Mutex<Behaviour>>,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
}

impl HttpServer {
    fn start() -> HttpServer {
        Self::start_with(None)
    }

    fn start_tls(cfg: Arc<rustls::ServerConfig>) -> HttpServer {
        Self::start_with(Some(cfg))
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind http");
        let s = HttpServer {
            addr: listener.local_addr().expect("addr"),
            behaviour: Arc::new(Mutex::new(Behaviour {
                status: 200,
                body: "ok".into(),
                delay: Duration::ZERO,
                load: None,
            })),
            hits: Arc::new(AtomicUsize::new(0)),
            seen: Arc::new(Mutex::new(Seen::default())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (behaviour, hits, seen, stop) = (
            s.behaviour.clone(),
            s.hits.clone(),
            s.seen.clone(),
            s.stop.clone(),
        );
        std::thread::Builder::new()
            .name("httpd".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let (behaviour, hits, seen, tls) =
                        (behaviour.clone(), hits.clone(), seen.clone(), tls.clone());
                    let _ = std::thread::Builder::new()
                        .name("httpd".into())
                        .spawn(move || {
                            let _ = conn.set_read_timeout(Some(Duration::from_secs(3)));
                            match tls {
                                None => serve_one(conn, None, &behaviour, &hits, &seen),
                                Some(cfg) => {
                                    let Ok(sc) = rustls::ServerConnection::new(cfg) else {
                                        return;
                                    };
                                    let mut stream = rustls::StreamOwned::new(sc, conn);
                                    // Drive the handshake so the SNI is known; a client that
                                    // rejects our certificate ends here.
                                    while stream.conn.is_handshaking() {
                                        if stream.conn.complete_io(&mut stream.sock).is_err() {
                                            return;
                                        }
                                    }
                                    let sni = stream.conn.server_name().map(str::to_string);
                                    serve_one(stream, sni, &behaviour, &hits, &seen);
                                }
                            }
                        });
                }
            })
            .expect("spawn httpd");
        s
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.addr)
    }

    fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.behaviour.lock().unwrap())
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

fn serve_one(
    mut s: impl Read + Write,
    sni: Option<String>,
    behaviour: &Mutex<Behaviour>,
    hits: &AtomicUsize,
    seen: &Mutex<Seen>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    hits.fetch_add(1, Ordering::Relaxed);
    *seen.lock().unwrap() = Seen {
        head: String::from_utf8_lossy(&head).into_owned(),
        sni,
    };
    let b = behaviour.lock().unwrap().clone();
    std::thread::sleep(b.delay);
    let load = b
        .load
        .as_ref()
        .map(|l| format!("X-Load: {l}\r\n"))
        .unwrap_or_default();
    let resp = format!(
        "HTTP/1.1 {} Test\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{load}Connection: close\r\n\r\n{}",
        b.status,
        b.body.len(),
        b.body
    );
    let _ = s.write_all(resp.as_bytes());
    let _ = s.flush();
}

/// A TLS server config with a fresh self-signed certificate for `localhost` and
/// `probe.example.test`.
fn self_signed() -> Arc<rustls::ServerConfig> {
    let ck = rcgen::generate_simple_self_signed(vec![
        "localhost".to_string(),
        "probe.example.test".to_string(),
    ])
    .expect("certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .expect("server config");
    Arc::new(cfg)
}

// ---------------------------------------------------------------------------------------------
// DNS and state helpers

fn start(services: &str) -> TestServer {
    // The prober's log (state changes at info) shows in the output of a failing test.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_ansi(false)
        .try_init();
    TestServer::start(&[("example.com.zone", ZONE)], services)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("IP address")
}

fn ask(s: &TestServer, name: &str) -> Message {
    s.udp(&query(name, RecordType::A))
}

/// The A records answered for `name`.
fn answered(s: &TestServer, name: &str) -> BTreeSet<IpAddr> {
    let m = ask(s, name);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

fn set(addrs: &[&str]) -> BTreeSet<IpAddr> {
    addrs.iter().map(|a| ip(a)).collect()
}

/// The live state of endpoint `addr` of service `svc` in the current snapshot.
fn state(s: &TestServer, svc: &str, addr: &str) -> Arc<EndpointState> {
    s.endpoint_state(svc, addr)
}

/// Polls `cond` every 20 ms until it holds; returns how long that took, or `None` after `limit`.
fn reason(st: &EndpointState) -> String {
    st.last_probe()
        .map_or_else(|| "(not probed)".into(), |r| r.reason.clone())
}

/// Waits until every listed endpoint has been probed at least once.
fn wait_probed(s: &TestServer, svc: &str, addrs: &[&str], limit: Duration) {
    let ok = wait_for(limit, || {
        addrs
            .iter()
            .all(|a| state(s, svc, a).last_probe().is_some())
    });
    assert!(ok.is_some(), "{svc}: {addrs:?} not probed within {limit:?}");
}

// ---------------------------------------------------------------------------------------------
// SPEC bound: interval = 1s, fall = 2, rise = 2 → out within 3 s, back within 3 s

#[test]
fn failing_endpoint_leaves_answers_within_3s_and_returns_within_3s() {
    let a = HttpServer::start();
    let b = HttpServer::start();
    let s = start(&format!(
        r#"
[health.web]
kind = "http"
interval = "1s"
timeout = "500ms"
rise = 2
fall = 2
[[service]]
name = "www.example.com"
policy = "round-robin"
max_answers = 2
health = "web"
endpoints = [
  {{ address = "192.0.2.1", check = "{}" }},
  {{ address = "192.0.2.2", check = "{}" }},
]
"#,
        a.url("http", "/health"),
        b.url("http", "/health")
    ));
    let _prober = s.start_prober();
    wait_probed(
        &s,
        "www.example.com",
        &["192.0.2.1", "192.0.2.2"],
        Duration::from_secs(3),
    );
    assert_eq!(
        answered(&s, "www.example.com."),
        set(&["192.0.2.1", "192.0.2.2"])
    );

    a.set(|b| b.status = 503);
    let out = wait_for(Duration::from_secs(6), || {
        !answered(&s, "www.example.com.").contains(&ip("192.0.2.1"))
    })
    .expect("failing endpoint never left the answers");
    let st = state(&s, "www.example.com", "192.0.2.1");
    assert_eq!(reason(&st), "status 503");
    assert!(!st.healthy());
    assert_eq!(answered(&s, "www.example.com."), set(&["192.0.2.2"]));

    a.set(|b| b.status = 200);
    let back = wait_for(Duration::from_secs(6), || {
        answered(&s, "www.example.com.").contains(&ip("192.0.2.1"))
    })
    .expect("recovered endpoint never came back");
    println!(
        "interval=1s fall=2 rise=2: left answers after {:.2} s, back after {:.2} s",
        out.as_secs_f64(),
        back.as_secs_f64()
    );
    assert!(
        out <= Duration::from_secs(3),
        "left after {out:?}, SPEC: within 3 s"
    );
    assert!(
        back <= Duration::from_secs(3),
        "back after {back:?}, SPEC: within 3 s"
    );
    assert_eq!(reason(&st), "ok");
    assert!(st.rtt_us().is_some());
}

// ---------------------------------------------------------------------------------------------
// What counts as a failure

#[test]
fn body_mismatch_and_timeout_are_failures() {
    let (a, b, c) = (
        HttpServer::start(),
        HttpServer::start(),
        HttpServer::start(),
    );
    let s = start(&format!(
        r#"
[health.body]
kind = "http"
interval = "200ms"
timeout = "300ms"
rise = 1
fall = 2
expect_body = "ok"
[[service]]
name = "www.example.com"
policy = "round-robin"
max_answers = 3
health = "body"
endpoints = [
  {{ address = "192.0.2.1", check = "{}" }},
  {{ address = "192.0.2.2", check = "{}" }},
  {{ address = "192.0.2.3", check = "{}" }},
]
"#,
        a.url("http", "/"),
        b.url("http", "/"),
        c.url("http", "/")
    ));
    let _prober = s.start_prober();
    let all = ["192.0.2.1", "192.0.2.2", "192.0.2.3"];
    wait_probed(&s, "www.example.com", &all, Duration::from_secs(2));
    assert_eq!(answered(&s, "www.example.com."), set(&all));

    a.set(|x| x.body = "not fine".into()); // 200, but without the expected text
    b.set(|x| x.delay = Duration::from_millis(800)); // longer than the 300 ms timeout
    let t = wait_for(Duration::from_secs(4), || {
        answered(&s, "www.example.com.") == set(&["192.0.2.3"])
    });
    assert!(
        t.is_some(),
        "body mismatch and timeout did not take 1 and 2 out"
    );
    assert_eq!(
        reason(&state(&s, "www.example.com", "192.0.2.1")),
        "body mismatch"
    );
    let rb = state(&s, "www.example.com", "192.0.2.2")
        .last_probe()
        .unwrap();
    assert_eq!((rb.reason.as_str(), rb.class), ("timeout", "timeout"));
    assert!(
        rb.duration < Duration::from_millis(600),
        "the probe was cut at its timeout: {:?}",
        rb.duration
    );

    a.set(|x| x.body = "all ok here".into());
    b.set(|x| x.delay = Duration::ZERO);
    let t = wait_for(Duration::from_secs(3), || {
        answered(&s, "www.example.com.") == set(&all)
    });
    assert!(t.is_some(), "endpoints did not come back");
}

#[test]
fn tcp_checks_listening_port_up_closed_port_down() {
    let open = TcpListener::bind("127.0.0.1:0").expect("bind");
    let open_port = open.local_addr().unwrap().port();
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().unwrap().port()
    };
    // Connections are accepted by the kernel backlog; drain them so it never fills.
    std::thread::spawn(move || for _ in open.incoming() {});
    let s = start(&format!(
        r#"
[health.tcp]
kind = "tcp"
port = {open_port}
interval = "200ms"
timeout = "500ms"
rise = 2
fall = 2
initial = "down"
[[service]]
name = "www.example.com"
policy = "round-robin"
max_answers = 3
health = "tcp"
endpoints = [
  {{ address = "127.0.0.1" }},
  {{ address = "192.0.2.2", check = "tcp://127.0.0.1:{open_port}" }},
  {{ address = "192.0.2.3", check = "tcp://127.0.0.1:{closed_port}" }},
]
"#
    ));
    let prober = s.start_prober();
    // `initial = "down"`: nothing is up yet, so every endpoint is served (fail open).
    assert!(!state(&s, "www.example.com", "127.0.0.1").healthy());
    let t = wait_for(Duration::from_secs(3), || {
        answered(&s, "www.example.com.") == set(&["127.0.0.1", "192.0.2.2"])
    });
    assert!(t.is_some(), "the listening port did not come up");
    let closed = state(&s, "www.example.com", "192.0.2.3");
    assert!(!closed.healthy());
    // The first result decides at once (SPEC), so the open port may be up before the closed
    // one's first probe has been recorded.
    let t = wait_for(Duration::from_secs(3), || closed.last_probe().is_some());
    assert!(t.is_some(), "the closed port was not probed");
    assert!(!closed.healthy());
    assert_eq!(reason(&closed), "refused");
    // 127.0.0.1 with the profile's port is the same target as the explicit check: one probe.
    assert_eq!(prober.targets(), 2);
}

#[test]
fn https_self_signed_rejected_unless_tls_verify_false() {
    let srv = HttpServer::start_tls(self_signed());
    let port = srv.addr.port();
    let s = start(&format!(
        r#"
[health.strict]
kind = "https"
port = {port}
path = "/health"
interval = "200ms"
timeout = "1s"
rise = 1
fall = 1
[health.lax]
kind = "https"
port = {port}
path = "/health"
interval = "200ms"
timeout = "1s"
rise = 1
fall = 1
tls_verify = false
host = "probe.example.test"
headers = {{ "X-Probe" = "meridian" }}
[[service]]
name = "strict.example.com"
policy = "round-robin"
health = "strict"
endpoints = [ {{ address = "127.0.0.1" }} ]
[[service]]
name = "lax.example.com"
policy = "round-robin"
health = "lax"
endpoints = [ {{ address = "127.0.0.1" }} ]
"#
    ));
    let _prober = s.start_prober();
    let strict = state(&s, "strict.example.com", "127.0.0.1");
    let lax = state(&s, "lax.example.com", "127.0.0.1");
    let t = wait_for(Duration::from_secs(3), || {
        !strict.healthy() && lax.last_probe().is_some_and(|r| r.ok)
    });
    assert!(
        t.is_some(),
        "strict: {} / lax: {}",
        reason(&strict),
        reason(&lax)
    );
    let r = strict.last_probe().unwrap();
    assert_eq!(r.class, "tls", "{}", r.reason);
    assert!(r.reason.starts_with("tls error:"), "{}", r.reason);
    assert!(lax.healthy());
    // `host` is both the TLS server name and the Host header, though the probe connects to
    // the endpoint's address; custom headers are sent.
    let seen = wait_for(Duration::from_secs(2), || {
        srv.seen.lock().unwrap().sni.as_deref() == Some("probe.example.test")
    });
    assert!(seen.is_some(), "SNI: {:?}", srv.seen.lock().unwrap().sni);
    let head = srv.seen.lock().unwrap().head.to_ascii_lowercase();
    assert!(head.starts_with("get /health http/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nhost: probe.example.test\r\n"), "{head}");
    assert!(head.contains("\r\nx-probe: meridian\r\n"), "{head}");
}

// ---------------------------------------------------------------------------------------------
// Every endpoint down

#[test]
fn all_down_serve_all_answers_everything_and_empty_answers_nodata() {
    let srv = HttpServer::start();
    srv.set(|b| b.status = 500);
    let url = srv.url("http", "/health");
    let s = start(&format!(
        r#"
[health.web]
kind = "http"
interval = "200ms"
timeout = "500ms"
rise = 1
fall = 1
[[service]]
name = "open.example.com"
policy = "round-robin"
max_answers = 2
health = "web"
when_all_down = "serve-all"
endpoints = [ {{ address = "192.0.2.1", check = "{url}" }}, {{ address = "192.0.2.2", check = "{url}" }} ]
[[service]]
name = "closed.example.com"
policy = "round-robin"
max_answers = 2
health = "web"
when_all_down = "empty"
endpoints = [ {{ address = "192.0.2.1", check = "{url}" }}, {{ address = "192.0.2.2", check = "{url}" }} ]
"#
    ));
    let prober = s.start_prober();
    let states = [
        state(&s, "open.example.com", "192.0.2.1"),
        state(&s, "open.example.com", "192.0.2.2"),
        state(&s, "closed.example.com", "192.0.2.1"),
        state(&s, "closed.example.com", "192.0.2.2"),
    ];
    let t = wait_for(Duration::from_secs(3), || {
        states.iter().all(|st| !st.healthy())
    });
    assert!(t.is_some(), "endpoints did not go down");
    assert_eq!(prober.targets(), 1, "one URL with one profile is one probe");
    assert_eq!(
        answered(&s, "open.example.com."),
        set(&["192.0.2.1", "192.0.2.2"])
    );
    let m = ask(&s, "closed.example.com.");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
    assert!(m.answers.is_empty(), "NODATA: {m}");
    assert_eq!(m.authorities.len(), 1, "{m}");
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA, "{m}");
}

// ---------------------------------------------------------------------------------------------
// Policies fed by the prober

/// www.example.com under `policy` with 192.0.2.1 and 192.0.2.2 checked at `checks` every
/// 200 ms with `timeout`, its prober running: the server, the prober and the two endpoints'
/// states.
fn start_pair(
    policy: &str,
    timeout: &str,
    checks: [String; 2],
) -> (
    TestServer,
    meridian::prober::ProberHandle,
    Arc<EndpointState>,
    Arc<EndpointState>,
) {
    let [one, two] = checks;
    let s = start(&format!(
        r#"
[health.web]
kind = "http"
interval = "200ms"
timeout = "{timeout}"
[[service]]
name = "www.example.com"
policy = "{policy}"
health = "web"
endpoints = [
  {{ address = "192.0.2.1", check = "{one}" }},
  {{ address = "192.0.2.2", check = "{two}" }},
]
"#
    ));
    let prober = s.start_prober();
    let one = state(&s, "www.example.com", "192.0.2.1");
    let two = state(&s, "www.example.com", "192.0.2.2");
    (s, prober, one, two)
}

#[test]
fn latency_policy_picks_the_fastest_health_server() {
    let (fast, slow) = (HttpServer::start(), HttpServer::start());
    slow.set(|b| b.delay = Duration::from_millis(120));
    let (s, _prober, one, two) = start_pair(
        "latency",
        "1s",
        [fast.url("http", "/"), slow.url("http", "/")],
    );
    let t = wait_for(Duration::from_secs(3), || {
        one.rtt_us().is_some() && two.rtt_us().is_some()
    });
    assert!(t.is_some(), "round-trip times were not measured");
    for _ in 0..20 {
        assert_eq!(answered(&s, "www.example.com."), set(&["192.0.2.1"]));
    }
    println!(
        "rtt fast {} us, slow {} us",
        one.rtt_us().unwrap(),
        two.rtt_us().unwrap()
    );
    assert!(two.rtt_us().unwrap() >= 100_000, "{:?}", two.rtt_us());

    // The slow one speeds up and the fast one slows down: the answer follows.
    slow.set(|b| b.delay = Duration::ZERO);
    fast.set(|b| b.delay = Duration::from_millis(120));
    let t = wait_for(Duration::from_secs(5), || {
        answered(&s, "www.example.com.") == set(&["192.0.2.2"])
    });
    assert!(
        t.is_some(),
        "latency did not follow: {:?} vs {:?}",
        one.rtt_us(),
        two.rtt_us()
    );
}

#[test]
fn least_loaded_follows_x_load_and_flips() {
    let (a, b) = (HttpServer::start(), HttpServer::start());
    a.set(|x| x.load = Some("0.2".into()));
    b.set(|x| x.load = Some("0.9".into()));
    let (s, _prober, one, two) = start_pair(
        "least-loaded",
        "500ms",
        [a.url("http", "/load"), b.url("http", "/load")],
    );
    let t = wait_for(Duration::from_secs(3), || {
        one.load() == Some(0.2) && two.load() == Some(0.9)
    });
    assert!(t.is_some(), "loads {:?} {:?}", one.load(), two.load());
    for _ in 0..20 {
        assert_eq!(answered(&s, "www.example.com."), set(&["192.0.2.1"]));
    }

    a.set(|x| x.load = Some("5".into()));
    b.set(|x| x.load = Some("1.5".into()));
    let t = wait_for(Duration::from_secs(3), || {
        answered(&s, "www.example.com.") == set(&["192.0.2.2"])
    });
    assert!(t.is_some(), "loads {:?} {:?}", one.load(), two.load());

    // A response without X-Load reports no load.
    a.set(|x| x.load = None);
    let t = wait_for(Duration::from_secs(3), || one.load().is_none());
    assert!(t.is_some(), "load stayed {:?}", one.load());
}

// ---------------------------------------------------------------------------------------------
// Reload

/// Replaces everything after the `[server]` section of the server's config with `extra`.
fn rewrite_config(s: &TestServer, extra: &str) {
    let text = std::fs::read_to_string(s.config_path()).unwrap();
    let head = &text[..text.find("\n[health.").expect("a [health.*] section")];
    std::fs::write(s.config_path(), format!("{head}\n{extra}")).unwrap();
}

fn reload_config(fail_url: &str, ok_url: &str, new_url: Option<&str>, keep_ok: bool) -> String {
    let mut eps = vec![format!(
        "{{ address = \"192.0.2.1\", check = \"{fail_url}\" }}"
    )];
    if keep_ok {
        eps.push(format!(
            "{{ address = \"192.0.2.2\", check = \"{ok_url}\" }}"
        ));
    }
    if let Some(u) = new_url {
        eps.push(format!("{{ address = \"192.0.2.3\", check = \"{u}\" }}"));
    }
    format!(
        r#"
[health.web]
kind = "http"
interval = "200ms"
timeout = "500ms"
rise = 3
fall = 1
[[service]]
name = "www.example.com"
policy = "round-robin"
max_answers = 3
health = "web"
endpoints = [ {} ]
"#,
        eps.join(", ")
    )
}

#[test]
fn reload_keeps_health_of_unchanged_endpoints_and_probes_new_ones() {
    let (bad, good, new) = (
        HttpServer::start(),
        HttpServer::start(),
        HttpServer::start(),
    );
    bad.set(|b| b.status = 502);
    let (bad_url, good_url, new_url) = (
        bad.url("http", "/health"),
        good.url("http", "/health"),
        new.url("http", "/health"),
    );
    let s = start(&reload_config(&bad_url, &good_url, None, true));
    let prober = s.start_prober();
    let down = state(&s, "www.example.com", "192.0.2.1");
    let t = wait_for(Duration::from_secs(3), || !down.healthy());
    assert!(t.is_some(), "192.0.2.1 did not go down");
    assert_eq!(answered(&s, "www.example.com."), set(&["192.0.2.2"]));

    // Add an endpoint. The failing one must not come back with a fresh "initially up" state.
    let gen_before = s.shared.load().generation;
    rewrite_config(
        &s,
        &reload_config(&bad_url, &good_url, Some(&new_url), true),
    );
    s.reload();
    assert!(Arc::ptr_eq(
        &down,
        &state(&s, "www.example.com", "192.0.2.1")
    ));
    assert!(!state(&s, "www.example.com", "192.0.2.1").healthy());
    // The new endpoint was never seen working: not answered until its first probe passes
    // (SPEC, health), which then decides at once (rise = 3 does not hold it back).
    assert_eq!(answered(&s, "www.example.com."), set(&["192.0.2.2"]));
    let t = wait_for(Duration::from_secs(3), || {
        state(&s, "www.example.com", "192.0.2.3")
            .last_probe()
            .is_some()
            && prober.generation() > gen_before
    });
    assert!(t.is_some(), "the new endpoint was not probed");
    let t = wait_for(Duration::from_secs(3), || {
        answered(&s, "www.example.com.") == set(&["192.0.2.2", "192.0.2.3"])
    });
    assert!(
        t.is_some(),
        "the new endpoint did not join after its first good probe"
    );
    assert!(new.hits() > 0);
    assert_eq!(prober.targets(), 3);
    // The failing endpoint's counters were kept: with rise = 3 it needs three good probes
    // after it recovers, not a fresh start.
    assert!(!down.healthy());

    // Remove an endpoint: its probe stops.
    rewrite_config(
        &s,
        &reload_config(&bad_url, &good_url, Some(&new_url), false),
    );
    s.reload();
    let t = wait_for(Duration::from_secs(2), || prober.targets() == 2);
    assert!(t.is_some(), "targets {}", prober.targets());
    // The removed target's task was aborted before the count changed; a probe it had already
    // sent may still land, so at most one more request, over five intervals that a live
    // target would have probed five times.
    let hits = good.hits();
    let more = hits_during(&good, Duration::from_millis(200) * 5) - hits;
    assert!(
        more <= 1,
        "the removed endpoint is still probed: {more} requests in 5 intervals"
    );
}

/// The server's request count after `window` has passed: for the absence of probes, where no
/// event can be polled for, over a window of a known number of probe intervals.
fn hits_during(srv: &HttpServer, window: Duration) -> usize {
    std::thread::sleep(window);
    srv.hits()
}

#[test]
fn identical_targets_are_probed_once_profile_changes_make_new_ones_shutdown_stops() {
    let srv = HttpServer::start();
    let url = srv.url("http", "/shared");
    let s = start(&format!(
        r#"
[health.a]
kind = "http"
interval = "250ms"
timeout = "500ms"
[health.b]
kind = "http"
interval = "250ms"
timeout = "500ms"
[[service]]
name = "one.example.com"
policy = "round-robin"
health = "a"
endpoints = [ {{ address = "192.0.2.1", check = "{url}" }} ]
[[service]]
name = "two.example.com"
policy = "round-robin"
health = "b"
endpoints = [ {{ address = "192.0.2.2", check = "{url}" }}, {{ address = "192.0.2.3", check = "{url}" }} ]
"#
    ));
    let prober = s.start_prober();
    wait_probed(
        &s,
        "two.example.com",
        &["192.0.2.2", "192.0.2.3"],
        Duration::from_secs(2),
    );
    wait_probed(
        &s,
        "one.example.com",
        &["192.0.2.1"],
        Duration::from_secs(2),
    );
    assert_eq!(prober.targets(), 1, "same URL and same settings: one probe");
    // Counted at the server: over 12 intervals of 250 ms one target makes 12 requests (its
    // probes keep a fixed grid, a late one is followed by an early one), three make 36. At
    // most 12 + 2 (a window edge on each side) is one target and cannot be two (24); at least
    // 6 says it is probing, with room for a busy machine.
    let h0 = srv.hits();
    let n = hits_during(&srv, Duration::from_millis(250) * 12) - h0;
    assert!(
        (6..=14).contains(&n),
        "{n} requests in 12 intervals: one shared target makes 12, three make 36"
    );

    // Profile `b` changes: its endpoints get a target of their own, and keep their state.
    let before = state(&s, "two.example.com", "192.0.2.2");
    let text = std::fs::read_to_string(s.config_path()).unwrap();
    let changed = text.replacen(
        "[health.b]\nkind = \"http\"\ninterval = \"250ms\"",
        "[health.b]\nkind = \"http\"\ninterval = \"300ms\"",
        1,
    );
    assert_ne!(text, changed);
    std::fs::write(s.config_path(), changed).unwrap();
    s.reload();
    assert!(Arc::ptr_eq(
        &before,
        &state(&s, "two.example.com", "192.0.2.2")
    ));
    let t = wait_for(Duration::from_secs(2), || prober.targets() == 2);
    assert!(t.is_some(), "targets {}", prober.targets());

    // Shutdown stops every probe: the two targets' probes already sent may land, nothing
    // more over four intervals in which they would have made eight.
    let hits = srv.hits();
    prober.shutdown();
    let more = hits_during(&srv, Duration::from_millis(300) * 4) - hits;
    assert!(more <= 2, "probes went on after shutdown: {more} requests");
}
