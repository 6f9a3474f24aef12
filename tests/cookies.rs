//! DNS Cookies (RFC 7873, RFC 9018 server cookies) on a real server: echo and fresh server
//! cookies over UDP and TCP, validation, FORMERR for malformed options, the shared secret of
//! anycast sites, the exemption from rate limiting, and interop with `dig` and `kdig`.

mod common;

use std::net::{IpAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::RecordType;

use meridian::cookie::{self, Secret};

use common::TestServer;

const SECRET: &str = "e5e973e5a6b2a43f48e7dc849e37bfcf";
const ZONE: &str = "$TTL 300\n@ SOA ns1 hostmaster 1 7200 1800 1209600 120\n  NS ns1\nns1 A 192.0.2.53\nwww A 192.0.2.80\n";
const CLIENT: [u8; 8] = [0x24, 0x64, 0xc4, 0xab, 0xcf, 0x10, 0xc9, 0x57];

fn secret() -> Secret {
    Secret::parse_hex(SECRET).expect("secret")
}

fn server(extra: &str) -> TestServer {
    TestServer::start(&[("cookie.test.zone", ZONE)], extra)
}

fn with_secret() -> TestServer {
    server(&format!("cookie_secret = \"{SECRET}\"\n"))
}

/// A query for www.cookie.test A with one COOKIE option of `data` (or the raw options given).
fn query_with_options(options: &[u8]) -> Vec<u8> {
    common::with_raw_opt(
        &common::query("www.cookie.test.", RecordType::A),
        1232,
        0,
        0,
        options,
    )
}

fn cookie_opt(data: &[u8]) -> Vec<u8> {
    let mut o = vec![0, 10];
    o.extend_from_slice(&(data.len() as u16).to_be_bytes());
    o.extend_from_slice(data);
    o
}

fn query(data: &[u8]) -> Vec<u8> {
    query_with_options(&cookie_opt(data))
}

/// The COOKIE option of a response.
fn cookie_of(m: &Message) -> Option<Vec<u8>> {
    match m.edns.as_ref()?.option(EdnsCode::Cookie)? {
        EdnsOption::Unknown(10, d) => Some(d.clone()),
        _ => None,
    }
}

fn ts_of(server_cookie: &[u8]) -> u32 {
    u32::from_be_bytes([
        server_cookie[4],
        server_cookie[5],
        server_cookie[6],
        server_cookie[7],
    ])
}

fn localhost() -> IpAddr {
    "127.0.0.1".parse().expect("ip")
}

/// Checks that `c` is the client cookie followed by a server cookie of ours for `ip`, made
/// within a few seconds of now, and returns the server cookie.
fn assert_fresh(c: &[u8], ip: IpAddr) -> Vec<u8> {
    assert_eq!(c.len(), 24, "client (8) + server cookie (16): {c:02x?}");
    assert_eq!(&c[..8], &CLIENT, "the client cookie comes back");
    let sc = &c[8..];
    assert_eq!(sc[0], 1, "version 1");
    assert_eq!(&sc[1..4], &[0, 0, 0], "reserved");
    let ts = ts_of(sc);
    assert!(
        (i64::from(cookie::unix_now()) - i64::from(ts)).abs() <= 5,
        "timestamp {ts} is now"
    );
    let mut client = [0u8; 8];
    client.copy_from_slice(&c[..8]);
    assert_eq!(
        sc,
        cookie::server_cookie(&secret(), &client, ip, ts),
        "RFC 9018 server cookie"
    );
    sc.to_vec()
}

#[test]
fn a_client_cookie_gets_itself_back_with_a_fresh_server_cookie() {
    let s = with_secret();
    for (transport, bytes) in s.both_raw(&query(&CLIENT)) {
        let m = Message::from_vec(&bytes).expect("decode");
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "{transport}"
        );
        assert_eq!(m.answers.len(), 1, "{transport}: answered as usual");
        let c = cookie_of(&m).unwrap_or_else(|| panic!("{transport}: no cookie in {m:?}"));
        assert_fresh(&c, localhost());
    }
    // Without a cookie in the query there is none in the response.
    let m = Message::from_vec(&s.udp_bytes(&query_with_options(&[]))).expect("decode");
    assert!(cookie_of(&m).is_none());
}

#[test]
fn returned_server_cookies_are_validated() {
    let s = with_secret();
    let sec = secret();
    let now = cookie::unix_now();
    let good = cookie::server_cookie(&sec, &CLIENT, localhost(), now);
    let mut full = CLIENT.to_vec();
    full.extend_from_slice(&good);
    // Valid and young: echoed as it is, over UDP (fast path) and TCP (reference handler).
    for (transport, bytes) in s.both_raw(&query(&full)) {
        let m = Message::from_vec(&bytes).expect("decode");
        assert_eq!(cookie_of(&m).as_deref(), Some(&full[..]), "{transport}");
    }
    let mut forged = full.clone();
    forged[23] ^= 0x55;
    let expired = cookie::server_cookie(&sec, &CLIENT, localhost(), now - 4000);
    let future = cookie::server_cookie(&sec, &CLIENT, localhost(), now + 600);
    let renew = cookie::server_cookie(&sec, &CLIENT, localhost(), now - 2000);
    let other_secret = cookie::server_cookie(&Secret([9; 16]), &CLIENT, localhost(), now);
    let other_ip = cookie::server_cookie(&sec, &CLIENT, "127.0.0.9".parse().expect("ip"), now);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![("forged", forged)];
    for (what, sc) in [
        ("expired", &expired),
        ("from the future", &future),
        ("older than half an hour", &renew),
        ("another secret", &other_secret),
        ("another client address", &other_ip),
    ] {
        let mut c = CLIENT.to_vec();
        c.extend_from_slice(sc);
        cases.push((what, c));
    }
    let mut short = CLIENT.to_vec();
    short.extend_from_slice(&[1; 8]);
    cases.push(("8-byte server cookie", short));
    let mut long = CLIENT.to_vec();
    long.extend_from_slice(&[1; 32]);
    cases.push(("32-byte server cookie", long));
    for (what, c) in cases {
        for (transport, bytes) in s.both_raw(&query(&c)) {
            let m = Message::from_vec(&bytes).expect("decode");
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            assert_eq!(m.answers.len(), 1, "{what}: answered as usual");
            let got = cookie_of(&m).expect("cookie");
            assert_ne!(got, c, "{what} ({transport}): must not be echoed");
            assert_fresh(&got, localhost());
        }
    }
}

#[test]
fn malformed_cookie_options_get_formerr() {
    let s = with_secret();
    for len in [0usize, 1, 7, 9, 15, 41, 60] {
        let data = vec![0xAB; len];
        for (transport, bytes) in s.both_raw(&query(&data)) {
            let m = Message::from_vec(&bytes).expect("decode");
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::FormErr,
                "length {len} over {transport}"
            );
            assert_eq!(m.queries.len(), 1, "FORMERR keeps the question");
            assert!(m.answers.is_empty());
        }
    }
    // Two COOKIE options.
    let mut two = cookie_opt(&CLIENT);
    two.extend_from_slice(&cookie_opt(&CLIENT));
    for (transport, bytes) in s.both_raw(&query_with_options(&two)) {
        let m = Message::from_vec(&bytes).expect("decode");
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::FormErr,
            "{transport}"
        );
    }
}

#[test]
fn anycast_sites_with_one_secret_give_the_same_server_cookie() {
    let (a, b) = (with_secret(), with_secret());
    let other = server("");
    for _ in 0..3 {
        let ca = cookie_of(&Message::from_vec(&a.udp_bytes(&query(&CLIENT))).expect("a"))
            .expect("cookie a");
        let cb = cookie_of(&Message::from_vec(&b.udp_bytes(&query(&CLIENT))).expect("b"))
            .expect("cookie b");
        let co = cookie_of(&Message::from_vec(&other.udp_bytes(&query(&CLIENT))).expect("o"))
            .expect("cookie other");
        if ts_of(&ca[8..]) != ts_of(&cb[8..]) || ts_of(&ca[8..]) != ts_of(&co[8..]) {
            continue; // a second boundary fell between the queries
        }
        assert_eq!(ca, cb, "same secret, same client, same second: same cookie");
        assert_ne!(ca, co, "a server without the secret has a random one");
        // Site B accepts site A's cookie: it is echoed.
        let cb2 = cookie_of(&Message::from_vec(&b.udp_bytes(&query(&ca))).expect("b2"))
            .expect("cookie b2");
        assert_eq!(cb2, ca);
        return;
    }
    panic!("three second boundaries in a row");
}

#[test]
fn a_random_secret_survives_a_reload() {
    let s = server("");
    let c = cookie_of(&Message::from_vec(&s.udp_bytes(&query(&CLIENT))).expect("m")).expect("c");
    s.reload();
    let again = cookie_of(&Message::from_vec(&s.udp_bytes(&query(&c))).expect("m")).expect("c");
    assert_eq!(
        again, c,
        "the cookie learnt before the reload is still valid"
    );
}

/// Sends `n` queries from 127.0.0.5 back to back and counts the full answers.
fn burst(s: &TestServer, packet: &[u8], n: usize) -> usize {
    let sock = UdpSocket::bind("127.0.0.5:0").expect("bind 127.0.0.5");
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    for i in 0..n {
        let mut p = packet.to_vec();
        p[..2].copy_from_slice(&(i as u16).to_be_bytes());
        sock.send_to(&p, s.addr).expect("send");
    }
    let mut buf = [0u8; 2048];
    let mut full = 0;
    while let Ok((len, _)) = sock.recv_from(&mut buf) {
        if let Ok(m) = Message::from_vec(&buf[..len]) {
            if !m.answers.is_empty() && !m.metadata.truncation {
                full += 1;
            }
        }
    }
    full
}

#[test]
fn a_valid_server_cookie_is_never_rate_limited() {
    let s = server(&format!(
        "cookie_secret = \"{SECRET}\"\n[rrl]\nresponses_per_second = 5\nwindow = \"1s\"\nslip = 0\n"
    ));
    let flooder: IpAddr = "127.0.0.5".parse().expect("ip");
    let mut good = CLIENT.to_vec();
    good.extend_from_slice(&cookie::server_cookie(
        &secret(),
        &CLIENT,
        flooder,
        cookie::unix_now(),
    ));
    let mut forged = good.clone();
    forged[20] ^= 1;
    // Forged and client-only cookies prove nothing: limited (one bucket for all three kinds,
    // the same answer to the same network).
    let f = burst(&s, &query(&forged), 100);
    let c = burst(&s, &query(&CLIENT), 100);
    assert!(f + c <= 5 + 5 + 2, "forged {f}, client-only {c}");
    // A valid one: every query answered, though the bucket is empty.
    let g = burst(&s, &query(&good), 100);
    println!("rate 5/s: forged cookie {f} of 100, client cookie only {c} of 100, valid server cookie {g} of 100");
    assert_eq!(g, 100, "a valid server cookie is exempt");
}

/// Runs a DNS tool; the test fails (does not skip) when it is missing. The tests that use it
/// are `#[ignore]`d, so that `cargo test` passes with Rust alone; CI runs them with
/// `--include-ignored` after installing the tools.
fn run(tool: &str, args: &[String]) -> String {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!("`{tool}` is required for this test (apt-get install bind9-dnsutils knot-dnsutils): {e}")
    });
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{tool} {args:?} failed:\n{text}");
    text
}

fn tool_args(s: &TestServer, extra: &[&str]) -> Vec<String> {
    let mut a = vec![
        format!("@{}", s.addr.ip()),
        "-p".into(),
        s.addr.port().to_string(),
        "www.cookie.test".into(),
        "A".into(),
    ];
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

#[test]
#[ignore = "needs dig (bind9-dnsutils)"]
fn dig_accepts_our_cookies_and_we_accept_dig_s() {
    let s = with_secret();
    for transport in ["+notcp", "+tcp"] {
        let first = run("dig", &tool_args(&s, &["+cookie", transport]));
        let line = first
            .lines()
            .find(|l| l.starts_with("; COOKIE: "))
            .unwrap_or_else(|| panic!("no COOKIE in dig's output:\n{first}"));
        assert!(line.ends_with(" (good)"), "{line}");
        let hex = line["; COOKIE: ".len()..].split(' ').next().expect("hex");
        assert_eq!(hex.len(), 48, "client + server cookie: {line}");
        // Sent back: accepted and echoed unchanged.
        let second = run(
            "dig",
            &tool_args(&s, &[&format!("+cookie={hex}"), transport]),
        );
        assert!(
            second.contains(&format!("; COOKIE: {hex} (good)")),
            "dig {transport} second reply:\n{second}"
        );
        assert!(second.contains("status: NOERROR"), "{second}");
    }
}

#[test]
#[ignore = "needs kdig (knot-dnsutils)"]
fn kdig_accepts_our_cookies_and_we_accept_kdig_s() {
    let s = with_secret();
    for transport in ["+notcp", "+tcp"] {
        let first = run("kdig", &tool_args(&s, &["+cookie", transport]));
        let line = first
            .lines()
            .find(|l| l.starts_with(";; COOKIE: "))
            .unwrap_or_else(|| panic!("no COOKIE in kdig's output:\n{first}"));
        let hex = line[";; COOKIE: ".len()..].trim().to_ascii_lowercase();
        assert_eq!(hex.len(), 48, "client + server cookie: {line}");
        assert!(!first.contains("WARNING"), "{first}");
        let second = run(
            "kdig",
            &tool_args(&s, &[&format!("+cookie={hex}"), transport]),
        );
        assert!(
            second
                .to_ascii_lowercase()
                .contains(&format!(";; cookie: {hex}")),
            "kdig {transport} second reply:\n{second}"
        );
        assert!(second.contains("status: NOERROR"), "{second}");
    }
}
