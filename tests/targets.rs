//! Endpoints by name (SPEC "Config": `target`): a service of regional load balancers known by
//! name answers one CNAME to the chosen target for every query type, with every policy; an
//! in-zone target is chased; probes go to the target name through the system resolver. Real
//! DNS over UDP and TCP on loopback, real HTTP health servers on 127.0.0.1 reached as
//! `localhost`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, RecordType};

const ZONE: &str = "$TTL 3600
@        IN SOA ns1 hostmaster ( 7 3600 600 86400 300 )
         IN NS   ns1
ns1      IN A    192.0.2.53
lb-in    IN A    192.0.2.80
         IN AAAA 2001:db8::80
";

const REGIONS: &str = r#"
[site]
location = { lat = 50.0, lon = 8.0 }
[regions.us-east]
location = { lat = 38.9, lon = -77.0 }
[regions.eu-west]
location = { lat = 53.35, lon = -6.26 }
"#;

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("name")
}

/// The CNAME targets in the answer section, after checking UDP and TCP agree.
fn cnames(s: &TestServer, qname: &str, t: RecordType) -> Vec<(Name, Name, u32)> {
    let mut views = Vec::new();
    for (how, m) in s.both(&query(qname, t)) {
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "{how} {t}: {m}"
        );
        assert!(m.metadata.authoritative, "{how}: {m}");
        let v: Vec<(Name, Name, u32)> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::CNAME(c) => Some((r.name.clone(), c.0.clone(), r.ttl)),
                _ => None,
            })
            .collect();
        views.push(v);
    }
    // Random policies may pick differently per query; the shape is the same.
    let shape = |v: &Vec<(Name, Name, u32)>| {
        v.iter()
            .map(|(o, _, t)| (o.clone(), *t))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        shape(&views[0]),
        shape(&views[1]),
        "UDP and TCP differ for {qname} {t}"
    );
    views.swap_remove(0)
}

#[test]
fn every_policy_answers_one_cname_for_every_type() {
    let mut cfg = String::from(REGIONS);
    for policy in meridian::config::POLICIES {
        cfg += &format!(
            r#"
[[service]]
name = "{policy}.example.com"
policy = "{policy}"
ttl = 45
max_answers = 2
endpoints = [
  {{ region = "us-east", target = "lb-use1.elb.example.net." }},
  {{ region = "eu-west", target = "lb-euw1.elb.example.net", weight = 2 }},
]
"#
        );
    }
    let s = TestServer::start(&[("example.com.zone", ZONE)], &cfg);
    for policy in meridian::config::POLICIES {
        let qname = format!("{policy}.example.com.");
        let mut seen = std::collections::BTreeSet::new();
        for t in [
            RecordType::A,
            RecordType::AAAA,
            RecordType::TXT,
            RecordType::MX,
            RecordType::CNAME,
            RecordType::ANY,
        ] {
            for _ in 0..4 {
                let got = cnames(&s, &qname, t);
                assert_eq!(
                    got.len(),
                    1,
                    "{policy} {t}: one CNAME, max_answers does not apply"
                );
                let (owner, target, ttl) = &got[0];
                assert_eq!(owner, &name(&qname));
                assert_eq!(*ttl, 45);
                assert!(
                    [
                        name("lb-use1.elb.example.net."),
                        name("lb-euw1.elb.example.net.")
                    ]
                    .contains(target),
                    "{policy}: {target}"
                );
                seen.insert(target.to_string());
            }
        }
        if *policy == "geo" {
            // The site (Frankfurt) is nearest eu-west.
            assert_eq!(seen.len(), 1, "{seen:?}");
            assert!(seen.contains("lb-euw1.elb.example.net."), "{seen:?}");
        }
    }
    // The fast path leaves these answers to the reference handler (by design); its own
    // NODATA for a target name would be wrong, so check UDP explicitly with EDNS too.
    let m = s.udp(&query_edns("geo.example.com.", RecordType::A, 1232));
    assert_eq!(m.answers.len(), 1, "{m}");
    assert_eq!(m.answers[0].record_type(), RecordType::CNAME, "{m}");
}

#[test]
fn in_zone_targets_are_chased() {
    let cfg = r#"
[[service]]
name = "app.example.com"
policy = "failover"
ttl = 20
endpoints = [ { target = "lb-in.example.com." } ]
[[service]]
name = "chain.example.com"
policy = "round-robin"
endpoints = [ { target = "pool.example.com" } ]
[[service]]
name = "pool.example.com"
policy = "round-robin"
ttl = 15
endpoints = [ { address = "192.0.2.91" }, { address = "2001:db8::91" } ]
[[service]]
name = "gone.example.com"
policy = "round-robin"
endpoints = [ { target = "nothing-here.example.com" } ]
"#;
    let s = TestServer::start(&[("example.com.zone", ZONE)], cfg);
    for (how, m) in s.both(&query("APP.example.com.", RecordType::A)) {
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "{how}: {m}"
        );
        assert_eq!(m.answers.len(), 2, "{how}: CNAME then A: {m}");
        assert_eq!(
            m.answers[0].name,
            name("APP.example.com."),
            "{how}: owner as asked"
        );
        assert_eq!(
            m.answers[0].data,
            RData::CNAME(hickory_proto::rr::rdata::CNAME(name("lb-in.example.com."))),
            "{how}"
        );
        assert_eq!(m.answers[1].name, name("lb-in.example.com."));
        assert_eq!(
            m.answers[1].data,
            RData::A("192.0.2.80".parse().expect("ip"))
        );
    }
    let m = s.tcp(&query("app.example.com.", RecordType::AAAA));
    assert_eq!(m.answers.len(), 2, "{m}");
    assert!(matches!(m.answers[1].data, RData::AAAA(_)), "{m}");
    // Asking for the CNAME itself is not chased.
    let m = s.udp(&query("app.example.com.", RecordType::CNAME));
    assert_eq!(m.answers.len(), 1, "{m}");
    // A target that is another balanced name gets that service's answer.
    let m = s.udp(&query("chain.example.com.", RecordType::AAAA));
    assert_eq!(m.answers.len(), 2, "{m}");
    assert_eq!(
        m.answers[1].data,
        RData::AAAA("2001:db8::91".parse().expect("ip"))
    );
    assert_eq!(m.answers[1].ttl, 15);
    // A target in the zone that does not exist: NXDOMAIN with the CNAME (RFC 6604).
    let m = s.udp(&query("gone.example.com.", RecordType::A));
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{m}");
    assert_eq!(m.answers.len(), 1, "{m}");
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA, "{m}");
}

/// An HTTP server that records the Host header of the last request.
struct Health {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    host: Arc<Mutex<String>>,
}

impl Health {
    fn start() -> Health {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let status = Arc::new(AtomicU16::new(200));
        let host = Arc::new(Mutex::new(String::new()));
        let h = Health {
            addr: listener.local_addr().expect("addr"),
            status: status.clone(),
            host: host.clone(),
        };
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 2048];
                let n = conn.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                if let Some(l) = head
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("host:"))
                {
                    *host.lock().expect("lock") = l[5..].trim().to_string();
                }
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
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(5), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn target_state(s: &TestServer, svc: &str, target: &str) -> Arc<meridian::health::EndpointState> {
    let snap = s.shared.load();
    let mut want = name(target).to_lowercase();
    want.set_fqdn(true);
    snap.services
        .iter()
        .find(|x| x.name == name(svc))
        .expect("service")
        .endpoints
        .iter()
        .find(|e| e.target.as_ref() == Some(&want))
        .expect("endpoint")
        .state
        .clone()
}

#[test]
fn probes_go_to_the_target_name_and_a_name_that_does_not_resolve_fails() {
    let h = Health::start();
    let cfg = format!(
        r#"
[health.lb]
kind = "http"
port = {port}
path = "/healthz"
interval = "200ms"
timeout = "1s"
rise = 1
fall = 1
[[service]]
name = "app.example.com"
policy = "failover"
ttl = 60
ttl_degraded = 6
health = "lb"
endpoints = [
  {{ target = "no-such-lb.invalid", priority = 1 }},
  {{ target = "localhost", priority = 2 }},
]
"#,
        port = h.addr.port()
    );
    let s = TestServer::start(&[("example.com.zone", ZONE)], &cfg);
    let _prober = s.start_prober();
    let bad = target_state(&s, "app.example.com.", "no-such-lb.invalid.");
    let good = target_state(&s, "app.example.com.", "localhost.");
    wait_for("probes", || {
        bad.last_probe().is_some() && good.last_probe().is_some() && !bad.healthy()
    });
    let reason = bad
        .last_probe()
        .map(|p| p.reason.clone())
        .unwrap_or_default();
    assert!(
        reason.contains("resolve") && reason.contains("no-such-lb.invalid"),
        "{reason}"
    );
    assert!(good.healthy(), "{:?}", good.last_probe());
    assert_eq!(
        *h.host.lock().expect("lock"),
        format!("localhost:{}", h.addr.port()),
        "Host is the target"
    );
    // The preferred target cannot be resolved: the other answers, with the degraded TTL.
    let got = cnames(&s, "app.example.com.", RecordType::A);
    assert_eq!(got, vec![(name("app.example.com."), name("localhost."), 6)]);

    // The load balancer's health goes bad: all down, served all the same (fail open).
    h.status.store(503, Ordering::Relaxed);
    wait_for("localhost down", || !good.healthy());
    let reason = good
        .last_probe()
        .map(|p| p.reason.clone())
        .unwrap_or_default();
    assert_eq!(reason, "status 503");
    assert_eq!(cnames(&s, "app.example.com.", RecordType::TXT).len(), 1);
}

fn check(cfg: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("zones")).expect("mkdir");
    std::fs::write(dir.path().join("zones/example.com.zone"), ZONE).expect("zone");
    let path = dir.path().join("m.toml");
    std::fs::write(
        &path,
        format!("[server]\nlisten = [\"127.0.0.1:0\"]\nzones = \"zones\"\n{cfg}"),
    )
    .expect("config");
    meridian::snapshot::check(&path)
        .problems
        .iter()
        .map(|p| {
            let s = p.to_string();
            s[s.find("m.toml:").expect("file named")..].to_string()
        })
        .collect()
}

#[test]
fn check_rejects_mixed_kinds_bad_names_and_loops_with_positions() {
    let problems = check(
        r#"[[service]]
name = "mixed.example.com"
policy = "round-robin"
endpoints = [ { address = "192.0.2.1" }, { target = "lb.example.net" } ]
[[service]]
name = "bad.example.com"
policy = "round-robin"
endpoints = [ { target = "not a name!" }, { target = "a..b" } ]
[[service]]
name = "loop.example.com"
policy = "round-robin"
endpoints = [ { target = "LOOP.example.com." } ]
[[service]]
name = "both.example.com"
policy = "round-robin"
endpoints = [ { address = "192.0.2.1", target = "lb.example.net" } ]
[[service]]
name = "ns1.example.com"
policy = "round-robin"
endpoints = [ { target = "lb.example.net" } ]
"#,
    );
    let expect = [
        ("m.toml:7:53:", "`target` endpoints, not both"),
        (
            "m.toml:11:26:",
            "is not a valid domain name: ` ` is not allowed",
        ),
        (
            "m.toml:11:54:",
            "is not a valid domain name: it has an empty label",
        ),
        ("m.toml:15:26:", "a loop"),
        ("m.toml:19:49:", "either `address` or `target`, not both"),
        ("m.toml:21:8:", "has records in"),
    ];
    for (at, what) in expect {
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(at) && p.contains(what)),
            "no `{at} … {what}` in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    // A good service of targets passes.
    let ok = check(
        "[[service]]\nname = \"ok.example.com\"\npolicy = \"hash\"\nendpoints = [ { target = \"localhost\" }, { target = \"lb-1.example.net.\" } ]\n",
    );
    assert!(ok.is_empty(), "{ok:#?}");
}

fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("admin");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer t0ken\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

#[test]
fn a_target_is_drained_by_its_name() {
    let s = TestServer::start(
        &[("example.com.zone", ZONE)],
        r#"
[admin]
listen = "127.0.0.1:0"
token = "t0ken"
[[service]]
name = "app.example.com"
policy = "failover"
ttl = 60
ttl_degraded = 9
endpoints = [
  { target = "lb-a.example.net", priority = 1 },
  { target = "lb-b.example.net", priority = 2 },
]
"#,
    );
    let admin = s.start_admin();
    assert_eq!(
        cnames(&s, "app.example.com.", RecordType::A),
        vec![(name("app.example.com."), name("lb-a.example.net."), 60)]
    );
    let (code, body) = post(
        admin.addr,
        "/api/v1/drain",
        r#"{"service": "app.example.com", "endpoint": "lb-a.example.net"}"#,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        cnames(&s, "app.example.com.", RecordType::A),
        vec![(name("app.example.com."), name("lb-b.example.net."), 9)],
        "drained: the backup answers, with ttl_degraded"
    );
    let (code, body) = post(
        admin.addr,
        "/api/v1/drain",
        r#"{"service": "app.example.com", "endpoint": "not a name!"}"#,
    );
    assert_eq!(code, 400, "{body}");
}
