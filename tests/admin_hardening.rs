//! Admin API hardening (SPEC "Abuse resistance", "Admin HTTP API"): the 64 KiB body cap,
//! request timeouts against slow clients, tokens kept out of logs and error messages, and no
//! non-loopback API without a token. Raw HTTP/1.1 over loopback; the log checks run the real
//! binary.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

use meridian::admin;

const TOKEN: &str = "tok-7c1f9a2e44d0";

const ZONE: &str = "$TTL 3600
@        IN SOA ns1 hostmaster ( 1 3600 600 86400 300 )
         IN NS  ns1
ns1      IN A   192.0.2.53
";

const SERVICE: &str = r#"
[[service]]
name = "www.harden.test"
policy = "round-robin"
endpoints = [ { address = "192.0.2.10" } ]
"#;

/// A DNS server with the admin API beside it, its timeouts set short for the tests.
fn start(header: Duration, request: Duration) -> (TestServer, SocketAddr) {
    let server = TestServer::start(
        &[("harden.test.zone", ZONE)],
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n{SERVICE}"),
    );
    let addr = server
        .start_admin_with(|state| {
            state.header_timeout = header;
            state.request_timeout = request;
        })
        .addr;
    // The handle is not needed: the API runs until the server's runtime stops.
    (server, addr)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

/// Everything the server sends until it closes (or 10 s pass).
fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> Option<u16> {
    response.split(' ').nth(1)?.parse().ok()
}

fn drain_head(len: &str) -> String {
    format!(
        "POST /api/v1/drain HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nConnection: close\r\n{len}\r\n"
    )
}

#[test]
fn a_body_over_64_kib_is_refused_with_413() {
    let (_s, admin) = start(admin::HEADER_TIMEOUT, admin::REQUEST_TIMEOUT);

    // Announced by Content-Length: refused before the body is sent.
    let mut c = connect(admin);
    c.write_all(drain_head("Content-Length: 70000\r\n").as_bytes())
        .expect("write");
    let resp = read_all(&mut c);
    assert_eq!(status_of(&resp), Some(413), "{resp}");

    // Chunked, with no length up front: cut while it is read.
    let mut c = connect(admin);
    c.write_all(drain_head("Transfer-Encoding: chunked\r\n").as_bytes())
        .expect("write");
    let chunk = format!("4000\r\n{}\r\n", " ".repeat(0x4000));
    for _ in 0..5 {
        // 80 KiB in all; the server may stop reading (and close) once it has seen too much.
        if c.write_all(chunk.as_bytes()).is_err() {
            break;
        }
    }
    let _ = c.write_all(b"0\r\n\r\n");
    let resp = read_all(&mut c);
    assert_eq!(status_of(&resp), Some(413), "{resp}");

    // At the cap it is read (and rejected as the bad JSON it is, not for its size).
    let mut c = connect(admin);
    let body = " ".repeat(admin::MAX_BODY);
    c.write_all(drain_head(&format!("Content-Length: {}\r\n", body.len())).as_bytes())
        .expect("write");
    c.write_all(body.as_bytes()).expect("write body");
    let resp = read_all(&mut c);
    assert_eq!(status_of(&resp), Some(400), "{resp}");
}

#[test]
fn a_slowloris_client_is_cut_off_and_others_are_served() {
    let (_s, admin) = start(Duration::from_secs(1), Duration::from_secs(2));

    // Headers a byte every 200 ms, never finished.
    let mut slow = connect(admin);
    slow.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let started = Instant::now();
    let head = b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut_after = None;
    let mut buf = [0u8; 1024];
    for b in head {
        if slow.write_all(std::slice::from_ref(b)).is_err() {
            cut_after = Some(started.elapsed());
            break;
        }
        match slow.read(&mut buf) {
            // Closed (hyper may send a 408 first, which also means cut off).
            Ok(_) => {
                cut_after = Some(started.elapsed());
                break;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                cut_after = Some(started.elapsed());
                break;
            }
        }
        // Meanwhile another client is answered.
        if started.elapsed() < Duration::from_millis(700) {
            let mut c = connect(admin);
            c.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .expect("write");
            assert_eq!(status_of(&read_all(&mut c)), Some(200));
        }
    }
    let after = cut_after.expect("the slow client was never cut off");
    eprintln!("slow headers cut off after {after:?}");
    // A 1 s header timeout; generous for a loaded machine, far below the ~10 s of the headers.
    assert!(
        after < Duration::from_secs(5),
        "cut off only after {after:?}"
    );

    // A body that never finishes: the request times out (408).
    let mut c = connect(admin);
    c.write_all(drain_head("Content-Length: 100\r\n").as_bytes())
        .expect("write");
    c.write_all(b"{\"service\":").expect("write");
    let started = Instant::now();
    let resp = read_all(&mut c);
    assert_eq!(status_of(&resp), Some(408), "{resp}");
    assert!(started.elapsed() < Duration::from_secs(8));
}

// ---------------------------------------------------------------------------------------------
// The real binary: config problems and logs.

fn meridian() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_meridian"));
    c.env("RUST_BACKTRACE", "1");
    c
}

fn config_dir(config: &str) -> (tempfile::TempDir, PathBuf) {
    common::config_dir(&[("harden.test.zone", ZONE)], config)
}

#[test]
fn a_non_loopback_admin_without_a_token_is_a_located_config_problem() {
    let (_d, path) = config_dir(
        "[server]\nlisten = [\"127.0.0.1:5300\"]\nzones = \"zones\"\n\n[admin]\nlisten = \"0.0.0.0:9053\"\n",
    );
    for cmd in ["check", "serve"] {
        let out = meridian()
            .args([cmd, "--config"])
            .arg(&path)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {stderr}");
        let want = format!("{}:6:10: admin.listen:", path.display());
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&want) && l.contains("token")),
            "{cmd}: want {want}…\n{stderr}"
        );
    }
    // An empty token counts as none.
    let (_d, path) = config_dir(
        "[server]\nlisten = [\"127.0.0.1:5300\"]\nzones = \"zones\"\n\n[admin]\nlisten = \"[::]:9053\"\ntoken = \"\"\n",
    );
    let out = meridian()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_token_of_the_wrong_type_is_not_echoed() {
    let (_d, path) = config_dir(
        "[server]\nlisten = [\"127.0.0.1:5300\"]\nzones = \"zones\"\n\n[admin]\nlisten = \"127.0.0.1:9053\"\ntoken = 918273645546372819\n",
    );
    let out = meridian()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!("{}:7:", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("admin.token"), "{stderr}");
    assert!(!stderr.contains("918273645546372819"), "{stderr}");
}

/// One request with `Connection: close`; the status, or `None` when the API is not up yet.
fn request(addr: SocketAddr, head: &str, body: &str) -> Option<(u16, String)> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    c.write_all(head.as_bytes()).ok()?;
    c.write_all(body.as_bytes()).ok()?;
    let resp = read_all(&mut c);
    Some((status_of(&resp)?, resp))
}

fn post(addr: SocketAddr, path: &str, token: &str, body: &str) -> Option<(u16, String)> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    request(addr, &head, body)
}

fn write_config(path: &Path, dns: u16, admin: u16, token: &str) {
    std::fs::write(
        path,
        format!(
            "[server]\nlisten = [\"127.0.0.1:{dns}\"]\nzones = \"zones\"\n\n[admin]\nlisten = \
             \"127.0.0.1:{admin}\"\ntoken = {token}\n{SERVICE}"
        ),
    )
    .expect("write config");
}

#[test]
fn tokens_never_reach_the_log() {
    let (dns, admin_port) = (free_port(), free_port());
    let (_d, path) = config_dir("");
    write_config(&path, dns, admin_port, &format!("\"{TOKEN}\""));
    let mut serve = ServerProcess::spawn(
        meridian()
            .args(["serve", "--config"])
            .arg(&path)
            .env("MERIDIAN_LOG", "trace"),
    );
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();

    let body = r#"{"service": "www.harden.test", "endpoint": "192.0.2.10"}"#;
    let guess = "guess-5d41402abc4b2a76";
    let (code, resp) = serve.wait_until("the admin API", Duration::from_secs(10), |_| {
        post(admin, "/api/v1/drain", guess, body)
    });
    assert_eq!(code, 401, "{resp}");
    assert!(!resp.contains(guess));
    let (code, resp) = post(admin, "/api/v1/drain", TOKEN, body).expect("drain");
    assert_eq!(code, 200, "{resp}");
    // A reload that fails on the token: the error names the key, not the value.
    write_config(&path, dns, admin_port, "918273645546372819");
    let (code, resp) = post(admin, "/api/v1/reload", TOKEN, "").expect("reload");
    assert_eq!(code, 422, "{resp}");
    assert!(resp.contains("admin.token"), "{resp}");
    assert!(!resp.contains("918273645546372819"), "{resp}");
    let status = request(
        admin,
        "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "",
    )
    .expect("status");
    assert!(!status.1.contains("918273645546372819"));
    assert!(!status.1.contains(TOKEN));

    serve.terminate(Duration::from_secs(10));
    let log = serve.stderr();
    assert!(log.contains("drained"), "the log is there:\n{log}");
    assert!(
        log.contains("admin.token"),
        "the reload error is logged:\n{log}"
    );
    for secret in [TOKEN, guess, "918273645546372819"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

// ---------------------------------------------------------------------------------------------
// Connections: a per-address cap and idle connections closed.

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let ip: std::net::IpAddr = from.parse().expect("address");
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .expect("socket");
    s.bind(&SocketAddr::new(ip, 0).into()).expect("bind source");
    s.connect_timeout(&to.into(), Duration::from_secs(5))
        .expect("connect");
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

/// `GET path` from `from` on a fresh connection; the status and body, `None` if the
/// connection was closed or timed out without a response.
fn get_from(from: &str, admin: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut c = connect_from(from, admin);
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let resp = read_all(&mut c);
    Some((status_of(&resp)?, resp))
}

/// Raises the soft limit on open files to at least `want` (up to the hard limit).
fn raise_nofile(want: u64) {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        if (r.rlim_cur as u64) < want {
            r.rlim_cur = (want as libc::rlim_t).min(r.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0);
        }
        assert!(r.rlim_cur as u64 >= want, "RLIMIT_NOFILE too low");
    }
}

#[test]
fn one_address_holding_idle_connections_cannot_lock_out_another() {
    raise_nofile(2000);
    // The default timeouts (10 s for headers and idle keep-alive): the idle connections are
    // held for the whole test unless the per-address cap closes them.
    let (_s, admin) = start(admin::HEADER_TIMEOUT, admin::REQUEST_TIMEOUT);
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(connect_from("127.0.0.2", admin));
    }
    // Let the accept loop see every one of them.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (mut ok, mut failed) = (0, Vec::new());
    while started.elapsed() < Duration::from_secs(3) {
        match get_from("127.0.0.1", admin, "/metrics") {
            Some((200, body)) if body.contains("meridian_dns_queries") => ok += 1,
            other => failed.push(other.map(|(s, _)| s)),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        failed.is_empty(),
        "{} of {} scrapes failed beside 300 idle connections from another address: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    assert!(ok >= 10, "only {ok} scrapes");
    // The address holding them was held to its cap: all but 16 were closed.
    let mut open = 0;
    for c in &mut idle {
        c.set_read_timeout(Some(Duration::from_millis(5)))
            .expect("timeout");
        let mut b = [0u8; 64];
        if matches!(c.read(&mut b), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
        {
            open += 1;
        }
    }
    assert!(
        open <= admin::MAX_CONNS_PER_CLIENT,
        "{open} connections from one address still open"
    );
    // Its 16 still work.
    let mut served = 0;
    for c in idle.iter_mut() {
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        if c.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .is_ok()
            && status_of(&read_all(c)) == Some(200)
        {
            served += 1;
        }
    }
    assert_eq!(served, open, "every connection left open is served");
}

#[test]
fn idle_connections_are_closed() {
    let (_s, admin) = start(Duration::from_secs(1), Duration::from_secs(2));
    // One that never sends a byte, and one kept alive after a request.
    let mut silent = connect_from("127.0.0.3", admin);
    let mut kept = connect_from("127.0.0.3", admin);
    kept.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut buf = vec![0u8; 1 << 16];
    let n = kept.read(&mut buf).expect("response");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    for (what, c) in [("silent", &mut silent), ("kept-alive", &mut kept)] {
        c.set_read_timeout(Some(Duration::from_secs(8)))
            .expect("timeout");
        loop {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => continue, // a 408 before the close is fine
            }
        }
        let after = started.elapsed();
        assert!(
            after < Duration::from_secs(5),
            "{what} connection closed only after {after:?}"
        );
    }
}

/// The sum of the values of the metric lines that start with `prefix` and contain `label`.
fn metric_sum(text: &str, prefix: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn explain_calls_are_not_counted_as_served_queries() {
    let (s, admin) = start(admin::HEADER_TIMEOUT, admin::REQUEST_TIMEOUT);
    let counters = || {
        let (code, body) = get_from("127.0.0.1", admin, "/metrics").expect("scrape");
        assert_eq!(code, 200);
        (
            metric_sum(&body, "meridian_dns_queries", "zone=\"harden.test"),
            metric_sum(&body, "meridian_answers_total", "www.harden.test"),
        )
    };
    let before = counters();
    for _ in 0..5 {
        let (code, body) = get_from(
            "127.0.0.1",
            admin,
            "/api/v1/explain?name=www.harden.test&type=A",
        )
        .expect("explain");
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("192.0.2.10"), "{body}");
    }
    assert_eq!(counters(), before, "explain changed the query counters");
    // A real query does move them (so the check above can fail).
    let m = s.udp(&query("www.harden.test.", hickory_proto::rr::RecordType::A));
    assert_eq!(m.answers.len(), 1);
    let after = counters();
    assert_eq!(after.0, before.0 + 1.0, "one query counted");
    assert_eq!(after.1, before.1 + 1.0, "one answer counted");
}
