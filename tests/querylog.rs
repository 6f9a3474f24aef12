//! The query log as an operator meets it: the real `meridian serve` binary on loopback, real
//! queries over UDP and TCP, and what comes out read back — JSON and text lines on stderr,
//! sampling, reload, a dnstap file read by BIND's `dnstap-read`, a dnstap collector on a unix
//! socket (handshake, data, STOP/FINISH, reconnection), and drops counted in /metrics when the
//! collector does not read.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{RData, RecordType};
use prost::Message as _;
use serde_json::Value;

use common::{example_config, query, serve_command, write_config_dir, ServerProcess, EXAMPLE_ZONE};
use meridian::querylog::dnstap::{Dnstap, MessageType, SocketFamily, SocketProtocol};
use meridian::querylog::framestream::{self, ACCEPT, FINISH, READY, START, STOP};

/// `meridian serve` in a folder of its own, its stderr collected line by line.
struct Server {
    process: ServerProcess,
    dir: tempfile::TempDir,
    dns: SocketAddr,
    admin: SocketAddr,
}

fn config(log: &str) -> String {
    let rest = example_config().replace("listen = \"127.0.0.1:9053\"", "listen = \"127.0.0.1:0\"");
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nzones = \"zones\"\nudp_sockets = 1\n{rest}\n[log]\n{log}\n"
    )
}

/// `address=` of a text log line or `"address"` of a JSON one, for a line containing `what`.
fn address_in(lines: &[String], what: &str) -> Option<SocketAddr> {
    let l = lines.iter().find(|l| l.contains(what))?;
    if let Ok(v) = serde_json::from_str::<Value>(l) {
        return v["address"].as_str()?.parse().ok();
    }
    l.split_whitespace()
        .find_map(|w| w.strip_prefix("address="))?
        .parse()
        .ok()
}

impl Server {
    fn start(log: &str) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        write_dir(dir.path(), &config(log));
        Self::start_in(dir)
    }

    fn start_in(dir: tempfile::TempDir) -> Server {
        let mut process = ServerProcess::spawn(
            serve_command(&dir.path().join("meridian.toml")).env("MERIDIAN_LOG", "info"),
        );
        let (dns, admin) = process.wait_until("meridian serving", Duration::from_secs(20), |p| {
            let l = p.stderr_lines();
            l.iter().any(|l| l.contains("serving")).then(|| {
                let dns = address_in(&l, "listening on UDP and TCP").expect("dns address");
                let admin = address_in(&l, "admin API listening").expect("admin address");
                (dns, admin)
            })
        });
        Server {
            process,
            dir,
            dns,
            admin,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.process.stderr_lines()
    }

    /// Lines containing `what`, waiting up to 5 s for at least `n`.
    fn wait_lines(&self, what: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found: Vec<String> = self
                .lines()
                .into_iter()
                .filter(|l| l.contains(what))
                .collect();
            if found.len() >= n || Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: i32) {
        self.process.signal(sig);
    }

    /// SIGTERM, and waits for the exit (the query log is flushed and a stream stopped).
    fn stop(&mut self) -> Vec<String> {
        self.process.terminate(Duration::from_secs(5));
        self.lines()
    }

    fn udp(&self, sock: &UdpSocket, msg: &Message) -> Message {
        sock.send_to(&msg.to_vec().expect("encode"), self.dns)
            .expect("send");
        let mut buf = [0u8; 4096];
        loop {
            let (n, _) = sock.recv_from(&mut buf).expect("no UDP answer");
            let m = Message::from_vec(&buf[..n]).expect("decode");
            if m.metadata.id == msg.metadata.id {
                return m;
            }
        }
    }

    fn tcp(&self, msg: &Message) -> (Message, SocketAddr) {
        let mut s = TcpStream::connect(self.dns).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let local = s.local_addr().unwrap();
        let b = msg.to_vec().expect("encode");
        let mut out = (b.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&b);
        s.write_all(&out).expect("write");
        let resp = common::read_tcp_message(&mut s).expect("no TCP answer");
        (Message::from_vec(&resp).expect("decode"), local)
    }

    fn metrics(&self) -> String {
        let mut s = TcpStream::connect(self.admin).expect("admin connect");
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body
    }

    fn metric(&self, series: &str) -> Option<u64> {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }
}

/// The shipped zone and `config` in `dir`.
fn write_dir(dir: &Path, config: &str) {
    write_config_dir(dir, &[("example.com.zone", EXAMPLE_ZONE)], config);
}

fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s
}

fn with_ecs(mut m: Message, net: &str, prefix: u8) -> Message {
    let mut e = Edns::new();
    e.set_max_payload(1232);
    e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
        net.parse().unwrap(),
        prefix,
        0,
    )));
    m.set_edns(e);
    m
}

fn addresses(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

fn query_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "query")
        .collect()
}

#[test]
fn json_lines_over_udp_and_tcp() {
    let mut s = Server::start("format = \"json\"\nqueries = \"all\"");
    let sock = client();
    let port = sock.local_addr().unwrap().port();
    let udp = s.udp(&sock, &query("www.example.com.", RecordType::A));
    let (tcp, tcp_local) = s.tcp(&with_ecs(
        query("WWW.example.com.", RecordType::A),
        "81.2.69.0",
        24,
    ));
    let nx = s.udp(&sock, &query("nope.example.com.", RecordType::AAAA));
    s.wait_lines("\"message\":\"query\"", 3);
    let lines = s.stop();

    // format = json: every line of the log is one JSON object, not only the query lines.
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{l}");
    }
    let q = query_lines(&lines);
    assert_eq!(q.len(), 3, "{lines:#?}");

    let a = &q[0];
    assert_eq!(a["transport"], "udp");
    assert_eq!(a["client"], "127.0.0.1");
    assert_eq!(a["port"], port);
    assert_eq!(a["qname"], "www.example.com.");
    assert_eq!(a["qtype"], "A");
    assert_eq!(a["rcode"], "NOERROR");
    assert_eq!(a["ecs"], Value::Null);
    assert_eq!(a["policy"], "geo");
    assert_eq!(a["service"], "www.example.com");
    assert_eq!(a["site"], "test-site");
    assert_eq!(a["target"], "meridian::query");
    let want: Vec<Value> = addresses(&udp).into_iter().map(Value::from).collect();
    assert!(!want.is_empty());
    assert_eq!(a["answer"], Value::from(want));
    assert!(
        a["us"].as_f64().is_some_and(|us| us > 0.0 && us < 1e6),
        "{a}"
    );

    let t = &q[1];
    assert_eq!(t["transport"], "tcp");
    assert_eq!(t["port"], tcp_local.port());
    assert_eq!(
        t["qname"], "WWW.example.com.",
        "the name as the client spelled it"
    );
    assert_eq!(t["ecs"], "81.2.69.0/24");
    let want: Vec<Value> = addresses(&tcp).into_iter().map(Value::from).collect();
    assert_eq!(t["answer"], Value::from(want));

    let n = &q[2];
    assert_eq!(n["rcode"], "NXDOMAIN");
    assert_eq!(n["qtype"], "AAAA");
    assert_eq!(n["policy"], "static");
    assert_eq!(n["service"], Value::Null);
    assert_eq!(n["answer"], Value::from(Vec::<Value>::new()));
    assert!(nx.answers.is_empty());
}

#[test]
fn text_lines_and_reload_turns_them_on() {
    let mut s = Server::start("queries = \"off\"");
    let sock = client();
    let port = sock.local_addr().unwrap().port();
    s.udp(&sock, &query("www.example.com.", RecordType::A));
    // Turned on by a reload (SIGHUP), no restart.
    let path = s.dir.path().join("meridian.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("queries = \"off\"", "queries = \"all\""),
    )
    .unwrap();
    s.signal(libc::SIGHUP);
    assert_eq!(s.wait_lines("query log settings applied", 1).len(), 1);
    s.udp(&sock, &query("www.example.com.", RecordType::TXT));
    let (_, tcp_local) = s.tcp(&query("www.example.com.", RecordType::A));
    let found = s.wait_lines("meridian::query: query", 2);
    let lines = s.stop();
    let q: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("meridian::query: query"))
        .collect();
    assert_eq!(q.len(), 2, "off until the reload:\n{lines:#?}");
    assert_eq!(found.len(), 2);
    assert!(
        q[0].contains(&format!(
            "query transport=udp client=127.0.0.1 port={port} ecs=- qname=www.example.com. qtype=TXT rcode=NOERROR"
        )),
        "{}",
        q[0]
    );
    assert!(
        q[0].contains(" policy=static service=- site=test-site us="),
        "{}",
        q[0]
    );
    assert!(
        q[1].contains(&format!(
            "transport=tcp client=127.0.0.1 port={}",
            tcp_local.port()
        )),
        "{}",
        q[1]
    );
    assert!(
        q[1].contains(" policy=geo service=www.example.com "),
        "{}",
        q[1]
    );
}

#[test]
fn sample_logs_one_query_in_n() {
    let mut s = Server::start("format = \"json\"\nqueries = \"sample:10\"");
    let sock = client();
    for _ in 0..100 {
        s.udp(&sock, &query("www.example.com.", RecordType::A));
    }
    s.wait_lines("\"message\":\"query\"", 10);
    std::thread::sleep(Duration::from_millis(300));
    let lines = s.stop();
    // One UDP thread (udp_sockets = 1) sees all 100: exactly every tenth is logged.
    assert_eq!(query_lines(&lines).len(), 10);
}

fn dnstap_messages(path: &Path) -> Vec<Dnstap> {
    let bytes = std::fs::read(path).expect("dnstap file");
    let mut r = &bytes[..];
    let mut out = Vec::new();
    assert_eq!(framestream::read_frame(&mut r).unwrap(), Err(START));
    loop {
        match framestream::read_frame(&mut r).expect("frame") {
            Ok(payload) => out.push(Dnstap::decode(&payload[..]).expect("dnstap")),
            Err(kind) => {
                assert_eq!(kind, STOP);
                break;
            }
        }
    }
    assert!(r.is_empty(), "bytes after STOP");
    out
}

/// Writes a dnstap file (a UDP query answered, a TCP query for a missing name) and checks it
/// with our own reader: the fields BIND's `dnstap-read` does not print. Returns the stopped
/// server (its folder holds the file) and the file's path.
fn written_dnstap_file() -> (Server, PathBuf) {
    let mut s = Server::start("dnstap = \"file:queries.dnstap\"");
    let sock = client();
    let port = sock.local_addr().unwrap().port();
    s.udp(&sock, &query("www.example.com.", RecordType::A));
    let (_, tcp_local) = s.tcp(&query("nope.example.com.", RecordType::AAAA));
    let file = s.dir.path().join("queries.dnstap");
    s.wait_lines("dnstap: stream started", 1);
    let lines = s.stop();
    assert!(
        !lines.iter().any(|l| l.contains("meridian::query: query")),
        "dnstap replaces the lines"
    );

    // Our own reading first: the fields BIND does not print.
    let msgs = dnstap_messages(&file);
    assert_eq!(
        msgs.len(),
        4,
        "a query and a response for each of two queries"
    );
    let version = format!("meridian {}", env!("CARGO_PKG_VERSION"));
    for (i, d) in msgs.iter().enumerate() {
        assert_eq!(d.identity.as_deref(), Some(&b"test-site"[..]));
        assert_eq!(d.version.as_deref(), Some(version.as_bytes()));
        let m = d.message.as_ref().expect("message");
        let kind = if i % 2 == 0 {
            MessageType::AuthQuery
        } else {
            MessageType::AuthResponse
        };
        assert_eq!(m.r#type, kind as i32);
        assert_eq!(m.socket_family, Some(SocketFamily::Inet as i32));
        assert_eq!(m.query_address.as_deref(), Some(&[127, 0, 0, 1][..]));
        assert_eq!(m.response_port, Some(u32::from(s_port(&lines))));
        assert!(m.query_time_sec.is_some_and(|t| t > 1_600_000_000));
        if kind == MessageType::AuthQuery {
            assert!(m.query_message.is_some() && m.response_message.is_none());
        } else {
            let r = Message::from_vec(m.response_message.as_deref().expect("response"))
                .expect("response parses");
            assert!(r.metadata.message_type == hickory_proto::op::MessageType::Response);
            assert!(m.response_time_sec >= m.query_time_sec);
        }
    }
    let (udp_q, tcp_q) = (
        msgs[0].message.as_ref().unwrap(),
        msgs[2].message.as_ref().unwrap(),
    );
    assert_eq!(udp_q.socket_protocol, Some(SocketProtocol::Udp as i32));
    assert_eq!(udp_q.query_port, Some(u32::from(port)));
    assert_eq!(tcp_q.socket_protocol, Some(SocketProtocol::Tcp as i32));
    assert_eq!(tcp_q.query_port, Some(u32::from(tcp_local.port())));
    assert_eq!(
        msgs[1].extra.as_deref(),
        Some(&b"policy=geo service=www.example.com"[..])
    );
    (s, file)
}

#[test]
fn dnstap_file_holds_the_queries_and_responses() {
    written_dnstap_file();
}

#[test]
#[ignore = "needs dnstap-read (bind9-dnsutils)"]
fn dnstap_file_is_read_by_dnstap_read() {
    let (_s, file) = written_dnstap_file();
    let version = format!("meridian {}", env!("CARGO_PKG_VERSION"));
    // BIND's reader: it must list both kinds with the names asked.
    let out = Command::new("dnstap-read")
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "dnstap-read could not be run ({e}): install bind9-dnsutils (.ci/run does); \
             this test does not skip without it"
            )
        });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dnstap-read failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 4, "{text}");
    assert!(
        rows[0].contains(" AQ ") && rows[0].contains("www.example.com/IN/A"),
        "{text}"
    );
    assert!(
        rows[1].contains(" AR ") && rows[1].contains("www.example.com/IN/A"),
        "{text}"
    );
    assert!(
        rows[2].contains(" AQ ") && rows[2].contains("nope.example.com/IN/AAAA"),
        "{text}"
    );
    assert!(rows[2].contains("TCP") && rows[0].contains("UDP"), "{text}");
    assert!(
        rows[3].contains(" AR ") && rows[3].contains("nope.example.com/IN/AAAA"),
        "{text}"
    );
    // The YAML form shows identity, version and the full messages.
    let y = Command::new("dnstap-read")
        .arg("-y")
        .arg(&file)
        .output()
        .expect("dnstap-read -y");
    let yaml = String::from_utf8_lossy(&y.stdout);
    assert!(yaml.contains("identity: test-site"), "{yaml}");
    assert!(yaml.contains(&format!("version: {version}")), "{yaml}");
    assert!(
        yaml.contains("type: AUTH_RESPONSE") && yaml.contains("NXDOMAIN"),
        "{yaml}"
    );
}

/// The DNS port from the "listening" line (for the response_port of dnstap messages).
fn s_port(lines: &[String]) -> u16 {
    address_in(lines, "listening on UDP and TCP")
        .expect("listening line")
        .port()
}

/// A minimal dnstap collector: accepts one connection and does the bidirectional handshake.
fn collector_accept(l: &UnixListener) -> UnixStream {
    let (mut c, _) = l.accept().expect("accept");
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (kind, types) = framestream::read_control(&mut c).expect("READY");
    assert_eq!(kind, READY);
    assert!(types.iter().any(|t| t == framestream::CONTENT_TYPE));
    c.write_all(&framestream::control(ACCEPT, true)).unwrap();
    let (kind, _) = framestream::read_control(&mut c).expect("START");
    assert_eq!(kind, START);
    c
}

fn read_data(c: &mut UnixStream, n: usize) -> Vec<Dnstap> {
    (0..n)
        .map(|_| match framestream::read_frame(c).expect("frame") {
            Ok(p) => Dnstap::decode(&p[..]).expect("dnstap"),
            Err(k) => panic!("control frame {k} before data"),
        })
        .collect()
}

#[test]
fn dnstap_unix_collector_gets_the_stream_and_is_reconnected() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path: PathBuf = dir.path().join("dnstap.sock");
    write_dir(
        dir.path(),
        &config(&format!("dnstap = \"unix:{}\"", sock_path.display())),
    );
    // The server starts before the collector: entries are dropped (and counted) meanwhile,
    // and the server connects by itself once the collector is there.
    let s = Server::start_in(dir);
    let sock = client();
    s.udp(&sock, &query("www.example.com.", RecordType::A));
    let listener = UnixListener::bind(&sock_path).expect("bind collector");
    let mut c = collector_accept(&listener);
    assert!(
        s.metric("meridian_querylog_dropped_total{sink=\"dnstap\"}")
            .unwrap_or(0)
            >= 1
    );
    s.udp(&sock, &query("www.example.com.", RecordType::AAAA));
    let m = read_data(&mut c, 2);
    let kinds: Vec<i32> = m
        .iter()
        .map(|d| d.message.as_ref().unwrap().r#type)
        .collect();
    assert_eq!(
        kinds,
        [
            MessageType::AuthQuery as i32,
            MessageType::AuthResponse as i32
        ]
    );
    let q = Message::from_vec(
        m[0].message
            .as_ref()
            .unwrap()
            .query_message
            .as_deref()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(q.queries[0].query_type(), RecordType::AAAA);

    // The collector goes away; the next entries find the connection broken, and the server
    // comes back to the collector's next accept.
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    listener.set_nonblocking(true).unwrap();
    let mut c = loop {
        s.udp(&sock, &query("www.example.com.", RecordType::A));
        if let Ok((c, _)) = listener.accept() {
            break c;
        }
        assert!(Instant::now() < deadline, "no reconnection");
        std::thread::sleep(Duration::from_millis(100));
    };
    c.set_nonblocking(false).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(framestream::read_control(&mut c).unwrap().0, READY);
    c.write_all(&framestream::control(ACCEPT, true)).unwrap();
    assert_eq!(framestream::read_control(&mut c).unwrap().0, START);
    s.udp(&sock, &query("www.example.com.", RecordType::TXT));
    let m = read_data(&mut c, 2);
    assert_eq!(
        m[1].message.as_ref().unwrap().r#type,
        MessageType::AuthResponse as i32
    );

    // On SIGTERM: STOP, answered with FINISH.
    let stopper = std::thread::spawn(move || {
        let mut s = s;
        s.stop()
    });
    loop {
        match framestream::read_frame(&mut c).expect("frame") {
            Ok(_) => continue,
            Err(kind) => {
                assert_eq!(kind, STOP);
                break;
            }
        }
    }
    c.write_all(&framestream::control(FINISH, false)).unwrap();
    stopper.join().unwrap();
}

#[test]
fn drops_are_counted_when_the_collector_does_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("dnstap.sock");
    // Bound and never accepted: connections succeed (the backlog) and the handshake never
    // gets an answer.
    let _listener = UnixListener::bind(&sock_path).unwrap();
    write_dir(
        dir.path(),
        &config(&format!(
            "queries = \"all\"\ndnstap = \"unix:{}\"",
            sock_path.display()
        )),
    );
    let s = Server::start_in(dir);
    let sock = client();
    let started = Instant::now();
    for _ in 0..200 {
        let r = s.udp(&sock, &query("www.example.com.", RecordType::A));
        assert!(!r.answers.is_empty());
    }
    // Answering never waited for the sink: 200 answers in far less than one handshake
    // timeout per query.
    assert!(started.elapsed() < Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(10);
    let dropped = loop {
        let d = s
            .metric("meridian_querylog_dropped_total{sink=\"dnstap\"}")
            .unwrap_or(0);
        if d >= 200 || Instant::now() >= deadline {
            break d;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(dropped, 200, "every entry dropped and counted");
    assert_eq!(
        s.metric("meridian_querylog_written_total{sink=\"dnstap\"}"),
        Some(0)
    );
}
