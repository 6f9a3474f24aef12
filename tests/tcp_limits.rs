//! TCP limits (SPEC "Abuse resistance"): many idle connections, slow senders, the per-client
//! and per-connection limits, what happens at the global limit, and EDNS TCP keepalive
//! (RFC 7828). A real server on loopback, real sockets; client addresses other than 127.0.0.1
//! are other addresses of the loopback network (127.0.0.0/8 is all local on Linux).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::RecordType;
use socket2::{Domain, Protocol, Socket, Type};

const ZONE: &str = "$TTL 3600
@        IN SOA ns1 hostmaster ( 1 3600 600 86400 300 )
         IN NS  ns1
ns1      IN A   192.0.2.53
mail     IN A   192.0.2.25
";

fn server(keys: &str) -> TestServer {
    TestServer::start_with(&[("limits.test.zone", ZONE)], keys, "")
}

fn mail() -> Message {
    query("mail.limits.test.", RecordType::A)
}

/// A TCP connection to `to` from `from` (any port).
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let ip: IpAddr = from.parse().expect("address");
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    s.bind(&SocketAddr::new(ip, 0).into()).expect("bind source");
    s.connect_timeout(&to.into(), Duration::from_secs(5))
        .expect("connect");
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

fn send(s: &mut TcpStream, msg: &Message) -> std::io::Result<()> {
    let b = msg.to_vec().expect("encode");
    let mut out = (b.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&b);
    s.write_all(&out)
}

/// One query and its answer on an open connection; `None` if the server closed instead.
fn ask(s: &mut TcpStream, msg: &Message) -> Option<Message> {
    send(s, msg).ok()?;
    let resp = read_tcp_message(s)?;
    let m = Message::from_vec(&resp).expect("decode");
    assert_eq!(m.metadata.id, msg.metadata.id);
    Some(m)
}

fn assert_mail(m: &Message) {
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1, "{m:?}");
    assert_eq!(m.answers[0].data.to_string(), "192.0.2.25");
}

/// True when the server has closed `s` (EOF or reset) within `within`; false if it is open.
fn closed(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut b = [0u8; 512];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(n) => panic!("unexpected {n} bytes from the server"),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(_) => true,
    }
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
        assert!(
            r.rlim_cur as u64 >= want,
            "RLIMIT_NOFILE hard limit {} is below {want}",
            r.rlim_max
        );
    }
}

#[test]
fn a_thousand_idle_connections_and_others_are_still_answered() {
    // 1,000 client sockets and 1,000 server sockets live in this one process.
    raise_nofile(2400);
    let s = server("tcp_idle_timeout = \"60s\"\ntcp_max_connections = 1100\n");
    // 100 client addresses with 10 connections each: under tcp_max_per_client (16).
    let mut idle = Vec::with_capacity(1000);
    for a in 1..=100 {
        for _ in 0..10 {
            idle.push(connect_from(&format!("127.0.1.{a}"), s.addr));
        }
    }
    let mut udp = s.udp_client();
    for round in 0..10 {
        for _ in 0..20 {
            assert_mail(&udp.ask(&mail()));
        }
        let mut c = connect_from("127.0.0.1", s.addr);
        assert_mail(&ask(&mut c, &mail()).unwrap_or_else(|| panic!("TCP round {round}")));
    }
    // Every idle connection was held all along: each still answers.
    for (i, c) in idle.iter_mut().enumerate() {
        let m = ask(c, &mail()).unwrap_or_else(|| panic!("idle connection {i} was closed"));
        assert_mail(&m);
    }
}

#[test]
fn at_the_connection_limit_the_idlest_connection_makes_room() {
    let s = server("tcp_idle_timeout = \"60s\"\ntcp_max_connections = 10\n");
    let mut held = Vec::new();
    for a in 1..=10 {
        let mut c = connect_from(&format!("127.0.2.{a}"), s.addr);
        // Answered, so accepted and holding a slot, in this order.
        assert_mail(&ask(&mut c, &mail()).expect("answered under the limit"));
        held.push(c);
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut newcomer = connect_from("127.0.0.1", s.addr);
    assert_mail(&ask(&mut newcomer, &mail()).expect("a new client is served at the limit"));
    assert!(
        closed(&mut held[0], Duration::from_secs(5)),
        "the connection idle longest was closed"
    );
    for (i, c) in held.iter_mut().enumerate().skip(1) {
        assert!(ask(c, &mail()).is_some(), "connection {i} kept its slot");
    }
}

/// With several TCP threads (one per `udp_sockets`, each with its own SO_REUSEPORT listener)
/// the connections of one client, and the idlest connection of all, may sit on any thread: the
/// limits are the server's, not a thread's, and eviction reaches across threads.
#[test]
fn the_limits_and_eviction_hold_across_tcp_threads() {
    let s = server(
        "udp_sockets = 4\ntcp_idle_timeout = \"60s\"\ntcp_max_connections = 6\n\
         tcp_max_per_client = 3\n",
    );
    let mut same: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut c = connect_from("127.0.3.1", s.addr);
            assert_mail(&ask(&mut c, &mail()).expect("under the per-client limit"));
            c
        })
        .collect();
    for _ in 0..4 {
        // Whatever thread each lands on, a fourth from the same client is one too many.
        let mut extra = connect_from("127.0.3.1", s.addr);
        assert!(
            ask(&mut extra, &mail()).is_none(),
            "a fourth connection from one client"
        );
    }
    for c in &mut same {
        assert!(ask(c, &mail()).is_some(), "the first three are kept");
    }
    drop(same);
    // Six held, oldest first; then six newcomers, each taking the slot of the idlest held one.
    let mut held = Vec::new();
    for a in 1..=6 {
        let deadline = Instant::now() + Duration::from_secs(5);
        let c = loop {
            // The three closed above are released once the server has read their EOF.
            let mut c = connect_from(&format!("127.0.4.{a}"), s.addr);
            if let Some(m) = ask(&mut c, &mail()) {
                assert_mail(&m);
                break c;
            }
            assert!(
                Instant::now() < deadline,
                "held connection {a} never admitted"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        held.push(c);
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut newcomers = Vec::new();
    for (k, idlest) in held.iter_mut().enumerate() {
        let mut n = connect_from(&format!("127.0.5.{}", k + 1), s.addr);
        assert_mail(&ask(&mut n, &mail()).expect("a newcomer is served at the limit"));
        assert!(
            closed(idlest, Duration::from_secs(5)),
            "newcomer {k}: the idlest connection ({k}) was closed"
        );
        newcomers.push(n);
        std::thread::sleep(Duration::from_millis(20));
    }
    for (i, n) in newcomers.iter_mut().enumerate() {
        assert!(ask(n, &mail()).is_some(), "newcomer {i} kept its slot");
    }
    // The graceful stop reaches every thread: idle connections are closed and the server is
    // gone well within the SPEC's 2 s.
    let started = Instant::now();
    drop(s);
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "shutdown took {:?}",
        started.elapsed()
    );
    for (i, n) in newcomers.iter_mut().enumerate() {
        assert!(
            closed(n, Duration::from_secs(1)),
            "newcomer {i} closed at the stop"
        );
    }
}

#[test]
fn a_one_byte_a_second_sender_is_closed_at_the_idle_timeout() {
    let idle = Duration::from_secs(2);
    let s = server("tcp_idle_timeout = \"2s\"\ntcp_max_connections = 8\n");
    let b = mail().to_vec().expect("encode");
    let mut frame = (b.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&b);
    assert!(
        frame.len() > 20,
        "the query takes far longer than the timeout"
    );

    let mut slow = connect_from("127.0.0.1", s.addr);
    let started = Instant::now();
    let mut udp = s.udp_client();
    let mut shut_after = None;
    for byte in &frame {
        if slow.write_all(std::slice::from_ref(byte)).is_err() {
            shut_after = Some(started.elapsed());
            break;
        }
        // Others are answered meanwhile, over UDP and TCP.
        assert_mail(&udp.ask(&mail()));
        let mut other = connect_from("127.0.0.2", s.addr);
        assert_mail(&ask(&mut other, &mail()).expect("TCP answered beside the slow sender"));
        // About a second per byte: waiting for the server to close takes the rest of it.
        if closed(&mut slow, Duration::from_millis(900)) {
            shut_after = Some(started.elapsed());
            break;
        }
    }
    let after = shut_after.expect("the slow sender was never closed");
    eprintln!("slow sender closed after {after:?}");
    assert!(
        after >= idle - Duration::from_millis(100),
        "closed after {after:?}, before the idle timeout"
    );
    // Generous for a loaded machine, and far below the ~30 s the query would take.
    assert!(
        after <= idle + Duration::from_secs(3),
        "closed only after {after:?}"
    );
}

#[test]
fn one_client_address_is_held_to_tcp_max_per_client() {
    // tcp_max_per_client is left at its default, 16.
    let s = server("tcp_idle_timeout = \"60s\"\ntcp_max_connections = 64\n");
    let mut mine = Vec::new();
    for i in 0..16 {
        let mut c = connect_from("127.0.0.1", s.addr);
        assert_mail(&ask(&mut c, &mail()).unwrap_or_else(|| panic!("connection {i}")));
        mine.push(c);
    }
    let mut over = connect_from("127.0.0.1", s.addr);
    assert!(
        ask(&mut over, &mail()).is_none(),
        "the 17th connection from one address is closed, not answered"
    );
    let mut other = connect_from("127.0.0.7", s.addr);
    assert_mail(&ask(&mut other, &mail()).expect("another address is answered"));
    for (i, c) in mine.iter_mut().enumerate() {
        assert!(ask(c, &mail()).is_some(), "connection {i} kept its slot");
    }
    // Closing one frees its slot once the server sees the close.
    drop(mine.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = connect_from("127.0.0.1", s.addr);
        if let Some(m) = ask(&mut again, &mail()) {
            assert_mail(&m);
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn frames(qs: &[Message]) -> Vec<u8> {
    let mut out = Vec::new();
    for q in qs {
        let b = q.to_vec().expect("encode");
        out.extend_from_slice(&(b.len() as u16).to_be_bytes());
        out.extend_from_slice(&b);
    }
    out
}

#[test]
fn tcp_max_queries_answers_every_query_read_then_closes() {
    let s = server("tcp_idle_timeout = \"10s\"\ntcp_max_connections = 8\ntcp_max_queries = 5\n");
    // Pipelined: eight sent in one write, so read at once; the limit is reached inside the
    // batch, and all eight are answered, in order, before the connection ends (SPEC: every
    // query read before the close is answered).
    let mut c = connect_from("127.0.0.1", s.addr);
    let qs: Vec<Message> = (0..8).map(|_| mail()).collect();
    c.write_all(&frames(&qs)).expect("write");
    for (i, q) in qs.iter().enumerate() {
        let resp = read_tcp_message(&mut c).unwrap_or_else(|| panic!("answer {i} of 8"));
        let m = Message::from_vec(&resp).expect("decode");
        assert_eq!(m.metadata.id, q.metadata.id, "answers in order");
        assert_mail(&m);
    }
    assert!(
        closed(&mut c, Duration::from_secs(5)),
        "closed after the batch"
    );

    // One at a time: five answered, then the close.
    let mut c = connect_from("127.0.0.1", s.addr);
    for i in 0..5 {
        assert!(ask(&mut c, &mail()).is_some(), "query {i} answered");
    }
    assert!(closed(&mut c, Duration::from_secs(5)), "closed after 5");
}

#[test]
fn by_default_a_connection_has_no_query_limit() {
    // tcp_max_queries left out: 0, no limit (SPEC; Knot, NSD and gdnsd have none). 1,500
    // queries, more than the 1,000 the limit once defaulted to, pipelined 100 at a time.
    let s = server("tcp_idle_timeout = \"10s\"\ntcp_max_connections = 8\n");
    let mut c = connect_from("127.0.0.1", s.addr);
    for round in 0..15 {
        let qs: Vec<Message> = (0..100).map(|_| mail()).collect();
        c.write_all(&frames(&qs)).expect("write");
        for (i, q) in qs.iter().enumerate() {
            let resp = read_tcp_message(&mut c)
                .unwrap_or_else(|| panic!("answer {} closed", round * 100 + i));
            assert_eq!(
                Message::from_vec(&resp).expect("decode").metadata.id,
                q.metadata.id
            );
        }
    }
    assert_mail(&ask(&mut c, &mail()).expect("still open after 1,500"));
}

/// mail.limits.test A with an OPT carrying `options` (raw code/length/data).
fn with_options(options: &[u8]) -> (Message, Vec<u8>) {
    let q = mail();
    let bytes = with_raw_opt(&q, 1232, 0, 0, options);
    (q, bytes)
}

fn keepalive(m: &Message) -> Option<Vec<u8>> {
    match m.edns.as_ref()?.option(EdnsCode::Keepalive)? {
        EdnsOption::Unknown(11, data) => Some(data.clone()),
        other => panic!("keepalive option as {other:?}"),
    }
}

#[test]
fn edns_tcp_keepalive_over_tcp_only() {
    // The default harness idle timeout is 2 s: 20 units of 100 ms.
    let s = server("tcp_idle_timeout = \"2s\"\n");
    let (q, bytes) = with_options(&[0, 11, 0, 0]);

    let tcp = s
        .tcp_raw(&bytes, Duration::from_secs(5))
        .expect("TCP answer");
    let m = Message::from_vec(&tcp).expect("decode");
    assert_eq!(m.metadata.id, q.metadata.id);
    assert_mail(&m);
    assert_eq!(
        keepalive(&m),
        Some(vec![0, 20]),
        "idle timeout in 100 ms units"
    );

    let udp = Message::from_vec(&s.udp_bytes(&bytes)).expect("decode");
    assert_mail(&udp);
    assert!(udp.edns.is_some());
    assert_eq!(keepalive(&udp), None, "never over UDP");

    // Without the option in the query, none in the answer.
    let (_, plain) = with_options(&[]);
    let m = Message::from_vec(
        &s.tcp_raw(&plain, Duration::from_secs(5))
            .expect("TCP answer"),
    )
    .expect("decode");
    assert_eq!(keepalive(&m), None);
}

#[test]
fn edns_tcp_keepalive_with_a_timeout_in_a_query_is_formerr() {
    let s = server("tcp_idle_timeout = \"2s\"\n");
    let (q, bytes) = with_options(&[0, 11, 0, 2, 0, 50]);
    let m = Message::from_vec(
        &s.tcp_raw(&bytes, Duration::from_secs(5))
            .expect("TCP answer"),
    )
    .expect("decode");
    assert_eq!(m.metadata.id, q.metadata.id);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert!(
        m.edns.is_some(),
        "FORMERR about an option carries an OPT (RFC 6891 §7)"
    );
    assert_eq!(m.queries.len(), 1, "the question is kept");
    assert!(m.answers.is_empty());
    // Over UDP the option is ignored (RFC 7828 §3.3.2 speaks of TCP only).
    let udp = Message::from_vec(&s.udp_bytes(&bytes)).expect("decode");
    assert_mail(&udp);
    assert_eq!(keepalive(&udp), None);
}

#[test]
fn a_long_idle_timeout_is_capped_in_the_option() {
    // 2 hours is 72,000 units: more than the 16-bit field holds.
    let s = server("tcp_idle_timeout = \"2h\"\n");
    let (_, bytes) = with_options(&[0, 11, 0, 0]);
    let m = Message::from_vec(
        &s.tcp_raw(&bytes, Duration::from_secs(5))
            .expect("TCP answer"),
    )
    .expect("decode");
    assert_eq!(keepalive(&m), Some(vec![0xff, 0xff]));
}

#[test]
fn one_read_of_mixed_queries_is_answered_in_order_each_as_tcp() {
    // Sent in one write, so that the server reads them at once and answers them as one batch:
    // a fast-path answer, one with edns-tcp-keepalive (the reference handler's), a NXDOMAIN,
    // and a plain one again.
    let s = server("tcp_idle_timeout = \"2s\"\n");
    let (q1, b1) = with_options(&[]);
    let (q2, b2) = with_options(&[0, 11, 0, 0]);
    let q3 = query("nope.limits.test.", RecordType::A);
    let b3 = q3.to_vec().expect("encode");
    let q4 = mail();
    let b4 = q4.to_vec().expect("encode");
    let mut out = Vec::new();
    for b in [&b1, &b2, &b3, &b4] {
        out.extend_from_slice(&(b.len() as u16).to_be_bytes());
        out.extend_from_slice(b);
    }
    let mut c = connect_from("127.0.0.1", s.addr);
    c.write_all(&out).expect("write");
    let mut got = Vec::new();
    for i in 0..4 {
        let resp = read_tcp_message(&mut c).unwrap_or_else(|| panic!("answer {i}"));
        got.push(Message::from_vec(&resp).expect("decode"));
    }
    let ids: Vec<u16> = got.iter().map(|m| m.metadata.id).collect();
    let want: Vec<u16> = [&q1, &q2, &q3, &q4].iter().map(|q| q.metadata.id).collect();
    assert_eq!(ids, want, "answers in the order of the queries");
    assert_mail(&got[0]);
    assert_eq!(keepalive(&got[0]), None);
    assert_mail(&got[1]);
    assert_eq!(
        keepalive(&got[1]),
        Some(vec![0, 20]),
        "keepalive in a batch"
    );
    assert_eq!(got[2].metadata.response_code, ResponseCode::NXDomain);
    assert_mail(&got[3]);
    // The connection stays open for more.
    assert_mail(&ask(&mut c, &mail()).expect("answered after the batch"));
}

/// The server's own sockets connected to `port` (the listener excluded), by client address:
/// the sockets of this process (client and server live in it) whose local port is the
/// server's. Connections still in the kernel's accept queue have no descriptor and are not
/// counted; a socket the server has closed is gone from its descriptors at once.
fn server_sockets(port: u16) -> std::collections::HashMap<IpAddr, usize> {
    use std::collections::HashMap;
    let mut inodes: HashMap<u64, IpAddr> = HashMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] == "0A" {
                continue; // short or LISTEN
            }
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port != Some(port) {
                continue;
            }
            let remote = f[2].split(':').next().unwrap_or("");
            // IPv4 in /proc/net/tcp is one little-endian 32-bit hex word.
            let ip = match u32::from_str_radix(remote, 16) {
                Ok(v) if remote.len() == 8 => IpAddr::from(v.swap_bytes().to_be_bytes()),
                _ => continue,
            };
            if let Ok(inode) = f[9].parse::<u64>() {
                if inode != 0 {
                    inodes.insert(inode, ip);
                }
            }
        }
    }
    let mut held = HashMap::new();
    for fd in std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
    {
        let Ok(link) = std::fs::read_link(fd.path()) else {
            continue;
        };
        let link = link.to_string_lossy();
        let Some(inode) = link
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if let Some(ip) = inodes.get(&inode) {
            *held.entry(*ip).or_insert(0) += 1;
        }
    }
    held
}

/// A TXT answer of about 9 KB: 40 strings of 200 bytes.
fn big_zone() -> String {
    let mut z = String::from(ZONE);
    for i in 0..40 {
        z += &format!("big IN TXT \"{:0>200}\"\n", i);
    }
    z
}

/// Connects from `from` with a small receive buffer, sends `n` pipelined queries for the big
/// TXT answer and never reads. Errors after connecting are the server closing on us: fine.
fn pipeliner(from: &str, to: SocketAddr, n: usize) -> Option<TcpStream> {
    let ip: IpAddr = from.parse().expect("address");
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    s.set_recv_buffer_size(4096).expect("rcvbuf");
    s.bind(&SocketAddr::new(ip, 0).into()).expect("bind source");
    s.connect_timeout(&to.into(), Duration::from_secs(5)).ok()?;
    let mut s: TcpStream = s.into();
    let qs: Vec<Message> = (0..n)
        .map(|_| query("big.limits.test.", RecordType::TXT))
        .collect();
    let _ = s.write_all(&frames(&qs));
    Some(s)
}

#[test]
fn non_reading_pipeliners_never_hold_more_than_the_caps() {
    raise_nofile(1000);
    const TOTAL: usize = 12;
    const PER_CLIENT: usize = 4;
    // The idle timeout (also the write deadline) is far longer than the test: any socket the
    // server holds beyond the caps would still be there when it is counted.
    let z = big_zone();
    let s = TestServer::start_with(
        &[("limits.test.zone", &z)],
        &format!(
            "tcp_idle_timeout = \"30s\"\ntcp_max_connections = {TOTAL}\ntcp_max_per_client = {PER_CLIENT}\n"
        ),
        "",
    );
    // The answer really is large: one well-behaved client gets it whole.
    let mut c = connect_from("127.0.0.1", s.addr);
    let m = ask(&mut c, &query("big.limits.test.", RecordType::TXT)).expect("big answer");
    assert_eq!(m.answers.len(), 40);
    drop(c);

    // 6 addresses x 10 connections, round robin, and one heavy address (127.0.5.1) with 3
    // per round, each with 1,000 queries for ~9 KB (9 MB of
    // answers per connection, more than the socket buffers grow to: 4 MB by default) and never reading.
    let port = s.addr.port();
    let mut clients = Vec::new();
    let (mut worst_total, mut worst_one) = (0, 0);
    let over = |held: &std::collections::HashMap<IpAddr, usize>| {
        let total: usize = held.values().sum();
        let one = held.values().copied().max().unwrap_or(0);
        (total, one, total > TOTAL || one > PER_CLIENT)
    };
    for round in 0..10 {
        for a in 1..=9 {
            let from = if a <= 6 {
                format!("127.0.4.{a}")
            } else {
                "127.0.5.1".to_string()
            };
            if let Some(c) = pipeliner(&from, s.addr, 1000) {
                clients.push(c);
            }
            std::thread::sleep(Duration::from_millis(30));
            let mut held = server_sockets(port);
            if over(&held).2 {
                // A newcomer being admitted while the one it evicted closes is held for a
                // moment (at most 0.5 s, then it is admitted or closed); a leak is still there
                // after that.
                std::thread::sleep(Duration::from_millis(600));
                held = server_sockets(port);
            }
            let (total, one, bad) = over(&held);
            worst_total = worst_total.max(total);
            worst_one = worst_one.max(one);
            assert!(
                !bad,
                "round {round}, client {a}: the server holds {total} connections (cap {TOTAL}), \
                 {one} from one address (cap {PER_CLIENT}): {held:?}"
            );
        }
    }
    eprintln!(
        "{} pipeliners: the server held at most {worst_total} connections, {worst_one} from one address",
        clients.len()
    );
    assert!(
        worst_total >= TOTAL - 1,
        "the pipeliners did fill the table"
    );
    // Well-behaved clients are still answered, from a fresh address and from a flooding one.
    for from in ["127.0.0.1", "127.0.4.1"] {
        let mut c = connect_from(from, s.addr);
        assert_mail(&ask(&mut c, &mail()).unwrap_or_else(|| panic!("{from} answered")));
    }
}

#[test]
fn a_client_reading_a_byte_at_a_time_holds_its_slot_no_longer_than_the_idle_timeout() {
    // The write deadline: answers queued for a client that reads ten bytes a second must not
    // hold the connection past the idle timeout (plus what the socket buffers absorb at once).
    let idle = Duration::from_secs(2);
    let z = big_zone();
    let s = TestServer::start_with(
        &[("limits.test.zone", &z)],
        "tcp_idle_timeout = \"2s\"\ntcp_max_connections = 8\n",
        "",
    );
    let mut c = pipeliner("127.0.0.1", s.addr, 1000).expect("connect");
    let started = Instant::now();
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let port = s.addr.port();
    let mut b = [0u8; 1];
    // Counted on the server's side: after a reset the client could still read what its own
    // buffer holds for a long while.
    let mut held_once = false;
    let ended = loop {
        let held: usize = server_sockets(port).values().sum();
        held_once |= held > 0;
        if held_once && held == 0 {
            break started.elapsed();
        }
        let _ = c.read(&mut b);
        assert!(
            started.elapsed() < idle * 5,
            "a slow reader still held after {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("slow reader's connection closed by the server after {ended:?}");
    assert!(
        ended >= idle - Duration::from_millis(100),
        "closed early: {ended:?}"
    );
    // A new client is answered at once.
    let mut other = connect_from("127.0.0.2", s.addr);
    assert_mail(&ask(&mut other, &mail()).expect("answered"));
}

/// TCP_DEFER_ACCEPT: a connection that has sent nothing is not the server's yet, so silent
/// connections cannot take the slots (or force the eviction) that a client with a query
/// needs; and once the kernel hands one over, the time it spent silent counts toward its idle
/// timeout. Before the listeners deferred, the query's connection evicted the idlest of the
/// two silent ones (it read EOF at once).
#[test]
fn silent_connections_take_no_slot_and_still_close_at_the_idle_timeout() {
    let s = server("tcp_idle_timeout = \"2s\"\ntcp_max_connections = 2\n");
    let started = Instant::now();
    let mut silent: Vec<TcpStream> = (0..2)
        .map(|i| connect_from(&format!("127.0.0.{}", 20 + i), s.addr))
        .collect();
    let mut c = connect_from("127.0.0.30", s.addr);
    let m = ask(&mut c, &mail()).expect("the query's connection is answered");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    drop(c);
    for q in &mut silent {
        q.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut b = [0u8; 4];
        match q.read(&mut b) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("a silent connection was evicted for a query's: {other:?}"),
        }
    }
    // Each is closed about tcp_idle_timeout after it connected, not a defer period later.
    for q in &mut silent {
        q.set_read_timeout(Some(Duration::from_secs(6)))
            .expect("timeout");
        let mut b = [0u8; 4];
        assert_eq!(q.read(&mut b).expect("EOF, not a timeout"), 0);
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took <= Duration::from_millis(2800),
        "silent connections closed after {took:?} (idle timeout 2 s)"
    );
}
