//! Answers around a failure (SPEC "Config": `ttl_degraded`, `when_all_down = "servfail"`): real
//! HTTP health servers on 127.0.0.1 that the tests flip, the real prober, and real DNS over UDP
//! and TCP on loopback.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

const ZONE: &str = "$TTL 3600
@        IN SOA ns1 hostmaster ( 7 3600 600 86400 300 )
         IN NS   ns1
ns1      IN A    192.0.2.53
";

/// An HTTP server answering every request with the status the test sets.
struct Health {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
}

impl Health {
    fn start() -> Health {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let status = Arc::new(AtomicU16::new(200));
        let h = Health {
            addr: listener.local_addr().expect("addr"),
            status: status.clone(),
        };
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 2048];
                let _ = conn.read(&mut buf);
                let code = status.load(Ordering::Relaxed);
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    )
                    .as_bytes(),
                );
            }
        });
        h
    }
    fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }
    fn set(&self, code: u16) {
        self.status.store(code, Ordering::Relaxed);
    }
}

fn start(services: &str) -> TestServer {
    TestServer::start(
        &[("example.com.zone", ZONE)],
        &format!(
            "[health.web]\nkind = \"http\"\ninterval = \"200ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 1\n{services}"
        ),
    )
}

/// (address, TTL) of the A answers over UDP and TCP; the two must agree.
fn answers(s: &TestServer, name: &str) -> Vec<(IpAddr, u32)> {
    let q = query(name, RecordType::A);
    let mut got: Vec<Vec<(IpAddr, u32)>> = s
        .both(&q)
        .into_iter()
        .map(|(how, m)| {
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::NoError,
                "{how}: {m}"
            );
            let mut v: Vec<(IpAddr, u32)> = m
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some((IpAddr::V4(a.0), r.ttl)),
                    _ => None,
                })
                .collect();
            v.sort();
            v
        })
        .collect();
    let tcp = got.pop().expect("tcp");
    let udp = got.pop().expect("udp");
    assert_eq!(udp, tcp, "UDP and TCP answers differ");
    udp
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(5), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[test]
fn ttl_degraded_while_a_preferred_endpoint_is_down() {
    let (a, b) = (Health::start(), Health::start());
    let s = start(&format!(
        r#"
[[service]]
name = "fo.example.com"
policy = "failover"
ttl = 300
ttl_degraded = 5
health = "web"
endpoints = [
  {{ address = "192.0.2.1", priority = 1, check = "{a}" }},
  {{ address = "192.0.2.2", priority = 2, check = "{b}" }},
]
[[service]]
name = "rr.example.com"
policy = "round-robin"
max_answers = 2
ttl = 60
ttl_degraded = 7
health = "web"
endpoints = [
  {{ address = "192.0.2.1", check = "{a}" }},
  {{ address = "192.0.2.2", check = "{b}" }},
]
[[service]]
name = "plain.example.com"
policy = "failover"
ttl = 40
health = "web"
endpoints = [
  {{ address = "192.0.2.1", priority = 1, check = "{a}" }},
  {{ address = "192.0.2.2", priority = 2, check = "{b}" }},
]
"#,
        a = a.url(),
        b = b.url()
    ));
    let _prober = s.start_prober();
    let st = s.endpoint_state("fo.example.com", "192.0.2.1");
    wait_for("first probe", || st.last_probe().is_some());
    assert_eq!(answers(&s, "fo.example.com."), vec![(ip("192.0.2.1"), 300)]);
    assert_eq!(
        answers(&s, "rr.example.com."),
        vec![(ip("192.0.2.1"), 60), (ip("192.0.2.2"), 60)]
    );

    // The backup going down changes nothing for failover: nobody would have had it.
    b.set(503);
    let sb = s.endpoint_state("fo.example.com", "192.0.2.2");
    wait_for("backup down", || !sb.healthy());
    assert_eq!(answers(&s, "fo.example.com."), vec![(ip("192.0.2.1"), 300)]);
    // Round-robin would have answered it: degraded.
    assert_eq!(answers(&s, "rr.example.com."), vec![(ip("192.0.2.1"), 7)]);
    b.set(200);
    wait_for("backup up", || sb.healthy());

    // The primary down: the backup answers with the short TTL, so that resolvers come back
    // to the primary soon after it recovers.
    a.set(503);
    wait_for("primary down", || !st.healthy());
    assert_eq!(answers(&s, "fo.example.com."), vec![(ip("192.0.2.2"), 5)]);
    assert_eq!(answers(&s, "rr.example.com."), vec![(ip("192.0.2.2"), 7)]);
    // Without ttl_degraded the TTL stays.
    assert_eq!(
        answers(&s, "plain.example.com."),
        vec![(ip("192.0.2.2"), 40)]
    );

    // Everything down, served all the same (serve-all): still degraded.
    b.set(503);
    wait_for("all down", || !sb.healthy());
    assert_eq!(answers(&s, "fo.example.com."), vec![(ip("192.0.2.1"), 5)]);

    // Recovery: the normal TTL again.
    a.set(200);
    b.set(200);
    wait_for("all up", || st.healthy() && sb.healthy());
    assert_eq!(answers(&s, "fo.example.com."), vec![(ip("192.0.2.1"), 300)]);
    assert_eq!(
        answers(&s, "rr.example.com."),
        vec![(ip("192.0.2.1"), 60), (ip("192.0.2.2"), 60)]
    );
}

#[test]
fn when_all_down_servfail_answers_servfail_and_is_counted() {
    let a = Health::start();
    let s = start(&format!(
        r#"
[[service]]
name = "sf.example.com"
policy = "weighted"
health = "web"
when_all_down = "servfail"
endpoints = [
  {{ address = "192.0.2.1", check = "{a}" }},
  {{ address = "2001:db8::1", check = "{a}" }},
]
"#,
        a = a.url()
    ));
    let _prober = s.start_prober();
    let st = s.endpoint_state("sf.example.com", "192.0.2.1");
    wait_for("first probe", || st.last_probe().is_some());
    assert_eq!(answers(&s, "sf.example.com."), vec![(ip("192.0.2.1"), 30)]);

    a.set(500);
    let st6 = s.endpoint_state("sf.example.com", "2001:db8::1");
    wait_for("down", || !st.healthy() && !st6.healthy());
    let before = servfail_count(&s);
    for t in [RecordType::A, RecordType::AAAA] {
        for (how, m) in s.both(&query("sf.example.com.", t)) {
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::ServFail,
                "{how} {t}: {m}"
            );
            assert!(
                m.answers.is_empty() && m.authorities.is_empty(),
                "{how}: {m}"
            );
            assert!(
                !m.metadata.authoritative,
                "{how}: SERVFAIL carries no data: {m}"
            );
        }
    }
    assert_eq!(
        servfail_count(&s) - before,
        4.0,
        "every SERVFAIL is counted"
    );
    // Other types at the name are static data, not the policy's: NODATA as before.
    let m = s.udp(&query("sf.example.com.", RecordType::TXT));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");

    a.set(200);
    wait_for("up", || st.healthy());
    assert_eq!(answers(&s, "sf.example.com."), vec![(ip("192.0.2.1"), 30)]);
}

fn servfail_count(s: &TestServer) -> f64 {
    let text = meridian::metrics::render(&s.shared.load_full());
    let series =
        "meridian_answers_all_down_total{service=\"sf.example.com\",when_all_down=\"servfail\"}";
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[test]
fn servfail_is_accepted_by_check_and_unknown_modes_are_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("zones")).expect("mkdir");
    std::fs::write(dir.path().join("zones/example.com.zone"), ZONE).expect("zone");
    let cfg = |mode: &str| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nzones = \"zones\"\n[[service]]\nname = \"x.example.com\"\npolicy = \"failover\"\nttl_degraded = 3\nwhen_all_down = \"{mode}\"\nendpoints = [ {{ address = \"192.0.2.1\" }} ]\n"
        )
    };
    let path = dir.path().join("m.toml");
    std::fs::write(&path, cfg("servfail")).expect("config");
    assert!(meridian::snapshot::check(&path).problems.is_empty());
    std::fs::write(&path, cfg("refuse")).expect("config");
    let problems = meridian::snapshot::check(&path).problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    let text = problems[0].to_string();
    assert!(
        text.contains("m.toml:8:17:") && text.contains("serve-all, empty, servfail"),
        "{text}"
    );
}
