//! Response rate limiting on a real server over loopback: a flooder bound to 127.0.0.5 sends a
//! paced UDP flood of real queries and counts what comes back (full answers, TC=1 slips,
//! nothing), while a client in another /24 (127.0.1.6) asks at a modest rate beside it.
//! Floods are bounded: at most a couple of thousand packets over about a second each.

mod common;

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use common::TestServer;

pub const FLOODER: &str = "127.0.0.5";
pub const OTHER: &str = "127.0.1.6";

fn zone(extra_names: usize) -> String {
    let mut z = String::from(
        "$TTL 300\n@ SOA ns1 hostmaster 1 7200 1800 1209600 120\n  NS ns1\nns1 A 192.0.2.53\nwww A 192.0.2.80\n",
    );
    for i in 0..extra_names {
        z += &format!("n{i} A 192.0.2.{}\n", i % 250 + 1);
    }
    z
}

pub fn start(rrl: &str, extra_names: usize) -> TestServer {
    let z = zone(extra_names);
    TestServer::start(&[("rrl.test.zone", &z)], rrl)
}

pub fn packet(id: u16, name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), t));
    m.to_vec().expect("encode")
}

/// What one client got back.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub sent: usize,
    /// Responses with records (or, for negative and error queries, with their rcode and SOA).
    pub full: usize,
    /// TC=1 responses without records.
    pub slips: usize,
    pub secs: f64,
}

impl Tally {
    pub fn lost(&self) -> usize {
        self.sent - self.full - self.slips
    }
    pub fn full_per_sec(&self) -> f64 {
        self.full as f64 / self.secs
    }
}

/// Whether `r` is a slip: TC=1, the question, no records in any section but the OPT.
pub fn is_slip(r: &Message) -> bool {
    r.metadata.truncation
        && r.answers.is_empty()
        && r.authorities.is_empty()
        && r.additionals.is_empty()
        && r.queries.len() == 1
}

/// Sends `count` queries made by `make(i)` from `src` to `server`, paced evenly over `over`,
/// and counts the responses (by id) until 300 ms after the last send.
pub fn flood(
    server: SocketAddr,
    src: &str,
    count: usize,
    over: Duration,
    make: impl Fn(u16) -> Vec<u8>,
) -> Tally {
    let sock = UdpSocket::bind((src, 0)).expect("bind flooder (127.0.0.0/8 is local on Linux)");
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let rx = sock.try_clone().expect("clone");
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut seen = vec![0u8; 65536];
            let mut buf = vec![0u8; 4096];
            let (mut full, mut slips) = (0, 0);
            loop {
                match rx.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        let Ok(m) = Message::from_vec(&buf[..n]) else {
                            continue;
                        };
                        let id = m.metadata.id as usize;
                        if seen[id] != 0 {
                            continue;
                        }
                        seen[id] = 1;
                        if is_slip(&m) {
                            slips += 1;
                        } else {
                            full += 1;
                        }
                    }
                    Err(_) if done.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
            (full, slips)
        })
    };
    let start = Instant::now();
    for i in 0..count {
        let due = start + over.mul_f64(i as f64 / count as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        sock.send_to(&make(i as u16), server).expect("send");
    }
    let secs = start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let (full, slips) = reader.join().expect("reader");
    Tally {
        sent: count,
        full,
        slips,
        secs,
    }
}

/// `meridian_rrl_total{action}` and the evictions counter from the server's metrics.
pub fn rrl_metric(s: &TestServer, what: &str) -> u64 {
    let text = meridian::metrics::render(&s.shared.load_full());
    let key = match what {
        "evictions" => "meridian_rrl_evictions_total ".to_string(),
        a => format!("meridian_rrl_total{{action=\"{a}\"}} "),
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in\n{text}"))
}

/// One client asking one query at a time, from `src`.
struct Client {
    sock: UdpSocket,
    server: SocketAddr,
}

impl Client {
    fn new(server: SocketAddr, src: &str) -> Client {
        let sock = UdpSocket::bind((src, 0)).expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        Client { sock, server }
    }

    fn ask(&self, p: &[u8]) -> Option<Message> {
        self.sock.send_to(p, self.server).expect("send");
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, _) = self.sock.recv_from(&mut buf).ok()?;
            let m = Message::from_vec(&buf[..n]).ok()?;
            if m.metadata.id == u16::from_be_bytes([p[0], p[1]]) {
                return Some(m);
            }
        }
    }
}

/// Sends DNS-over-TCP queries from `src` on one connection and returns the responses.
fn tcp_from(server: SocketAddr, src: &str, packets: &[Vec<u8>]) -> Vec<Message> {
    use socket2::{Domain, Socket, Type};
    use std::io::{Read, Write};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let from: SocketAddr = format!("{src}:0").parse().expect("addr");
    s.bind(&from.into()).expect("bind tcp source");
    s.connect(&server.into()).expect("connect");
    let mut s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut out = Vec::new();
    for p in packets {
        out.extend_from_slice(&(p.len() as u16).to_be_bytes());
        out.extend_from_slice(p);
    }
    s.write_all(&out).expect("write");
    packets
        .iter()
        .map(|_| {
            let mut len = [0u8; 2];
            s.read_exact(&mut len).expect("tcp length");
            let mut b = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut b).expect("tcp body");
            Message::from_vec(&b).expect("decode")
        })
        .collect()
}

const RATE: f64 = 20.0;
const WINDOW: f64 = 1.0;

/// The most full answers one bucket may give over `secs`: the credit (rate × window, plus the
/// first response) and the rate over the flood, with 100 ms of slack for the coarse clock and
/// scheduling.
fn max_full(secs: f64) -> usize {
    (RATE * (WINDOW + secs + 0.1)) as usize + 1
}

#[test]
fn a_flood_is_cut_to_the_rate_and_another_network_sees_no_change() {
    let s = start(
        "[rrl]\nresponses_per_second = 20\nwindow = \"1s\"\nslip = 2\n",
        0,
    );
    let www = |i| packet(i, "www.rrl.test.", RecordType::A);
    // The other network asks 10 queries a second (half its own limit) during the flood.
    let other = {
        let addr = s.addr;
        std::thread::spawn(move || {
            let c = Client::new(addr, OTHER);
            let start = Instant::now();
            let (mut full, mut sent) = (0, 0);
            while start.elapsed() < Duration::from_millis(1500) {
                sent += 1;
                if let Some(m) = c.ask(&www(sent as u16)) {
                    if !m.answers.is_empty() && !m.metadata.truncation {
                        full += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Tally {
                sent,
                full,
                slips: 0,
                secs: start.elapsed().as_secs_f64(),
            }
        })
    };
    let f = flood(s.addr, FLOODER, 2000, Duration::from_millis(1500), www);
    // The flood's last send was 300 ms before `flood` returned (the reader's tail).
    let last_send = Instant::now() - Duration::from_millis(300);
    let o = other.join().expect("other client");
    println!(
        "flooder {FLOODER}: sent {} in {:.2}s, {} full answers ({:.1}/s), {} slips, {} dropped; \
         other client {OTHER}: {} of {} answered in full ({:.1}/s)",
        f.sent,
        f.secs,
        f.full,
        f.full_per_sec(),
        f.slips,
        f.lost(),
        o.full,
        o.sent,
        o.full_per_sec()
    );
    assert_eq!(o.full, o.sent, "the other network must be answered in full");
    assert!(
        f.full <= max_full(f.secs),
        "{} full answers in {:.2}s exceed the rate",
        f.full,
        f.secs
    );
    assert!(
        f.full as f64 >= RATE * WINDOW,
        "the credit of rate × window must be served: {f:?}"
    );
    // slip = 2: every second limited response is a slip, the others are dropped.
    let limited = f.sent - f.full;
    assert!(
        (f.slips * 2).abs_diff(limited) <= 4,
        "slips {} of {limited} limited",
        f.slips
    );
    let (dropped, slipped) = (rrl_metric(&s, "dropped"), rrl_metric(&s, "slipped"));
    assert!(slipped as usize >= f.slips && dropped as usize >= limited - slipped as usize - 4);
    assert_eq!(rrl_metric(&s, "logged"), 0);

    // TCP from the flooder's own address is never limited, even now that its bucket is empty.
    let queries: Vec<Vec<u8>> = (0..50).map(|i| www(60000 + i)).collect();
    for r in tcp_from(s.addr, FLOODER, &queries) {
        assert_eq!(r.answers.len(), 1, "TCP answer {r:?}");
        assert!(!r.metadata.truncation);
    }
    // Still limited over UDP: only the credit that accrued since the flood (at the rate).
    let again = flood(s.addr, FLOODER, 50, Duration::from_millis(10), www);
    let accrued = (RATE * last_send.elapsed().as_secs_f64()).ceil() as usize;
    assert!(again.full <= accrued + 2, "{again:?}, {accrued} accrued");
}

#[test]
fn slips_carry_the_question_and_tc_and_slip_settings_apply() {
    for (slip, want_slip_share) in [(1u32, 1.0), (0, 0.0), (3, 1.0 / 3.0)] {
        let s = start(
            &format!("[rrl]\nresponses_per_second = 5\nwindow = \"1s\"\nslip = {slip}\n"),
            0,
        );
        let f = flood(s.addr, FLOODER, 300, Duration::from_millis(200), |i| {
            packet(i, "www.rrl.test.", RecordType::A)
        });
        let limited = (f.sent - f.full) as f64;
        let share = f.slips as f64 / limited;
        println!("slip {slip}: {f:?}, slip share {share:.2}");
        assert!(f.full <= 5 + 2 + 1, "slip {slip}: {f:?}");
        assert!(
            (share - want_slip_share).abs() < 0.05,
            "slip {slip}: {} slips of {limited} limited",
            f.slips
        );
    }
    // What a slip looks like.
    let s = start(
        "[rrl]\nresponses_per_second = 1\nwindow = \"1s\"\nslip = 1\n",
        0,
    );
    let c = Client::new(s.addr, FLOODER);
    let mut slip = None;
    for i in 0..10 {
        let m = c
            .ask(&common::with_raw_opt(
                &common::query("WwW.rrl.test.", RecordType::A),
                1232,
                0,
                0,
                &[],
            ))
            .expect("slip=1 answers every query");
        let _ = i;
        if m.metadata.truncation {
            slip = Some(m);
            break;
        }
    }
    let m = slip.expect("a slip after the credit");
    assert!(is_slip(&m), "{m:?}");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.queries[0].name().to_string(), "WwW.rrl.test.");
    assert!(m.edns.is_some(), "the slip keeps the OPT record");
}

#[test]
fn negative_answers_are_limited_per_zone_and_errors_per_network() {
    let s = start(
        "[rrl]\nresponses_per_second = 50\nnxdomains_per_second = 5\nerrors_per_second = 5\nwindow = \"1s\"\nslip = 0\n",
        0,
    );
    // A random-subdomain flood: every name differs, one zone bucket limits them all.
    let nx = flood(s.addr, FLOODER, 300, Duration::from_millis(300), |i| {
        packet(i, &format!("nx-{i}.rrl.test."), RecordType::A)
    });
    // Names outside every zone: REFUSED, one bucket per network whatever the name.
    let refused = flood(s.addr, FLOODER, 300, Duration::from_millis(300), |i| {
        packet(i, &format!("x{i}.example.org."), RecordType::A)
    });
    println!("nxdomain flood {nx:?}; refused flood {refused:?}");
    for f in [nx, refused] {
        assert!(f.full <= 5 + 2 + 1 && f.full >= 5, "{f:?}");
        assert_eq!(f.slips, 0, "slip = 0 drops all");
    }
    // Answers have their own buckets, untouched by those floods.
    let c = Client::new(s.addr, FLOODER);
    let m = c
        .ask(&packet(1, "www.rrl.test.", RecordType::A))
        .expect("answer");
    assert_eq!(m.answers.len(), 1);
}

#[test]
fn exempt_networks_are_never_limited() {
    let s = start(
        "[rrl]\nresponses_per_second = 5\nwindow = \"1s\"\nexempt = [\"10.0.0.0/8\", \"127.0.0.0/29\"]\n",
        0,
    );
    let f = flood(s.addr, FLOODER, 300, Duration::from_millis(300), |i| {
        packet(i, "www.rrl.test.", RecordType::A)
    });
    assert_eq!(f.full, f.sent, "{f:?}");
    assert_eq!(rrl_metric(&s, "dropped") + rrl_metric(&s, "slipped"), 0);
    // 127.0.1.6 is not in the exempt networks: limited.
    let o = flood(s.addr, OTHER, 300, Duration::from_millis(300), |i| {
        packet(i, "www.rrl.test.", RecordType::A)
    });
    assert!(o.full <= 5 + 2 + 1, "{o:?}");
}

#[test]
fn log_only_counts_but_limits_nothing() {
    let s = start(
        "[rrl]\nresponses_per_second = 5\nwindow = \"1s\"\nlog_only = true\n",
        0,
    );
    let f = flood(s.addr, FLOODER, 300, Duration::from_millis(300), |i| {
        packet(i, "www.rrl.test.", RecordType::A)
    });
    assert_eq!(f.full, f.sent, "{f:?}");
    let logged = rrl_metric(&s, "logged");
    println!("log_only: {f:?}, logged {logged}");
    assert!(logged as usize >= f.sent - 5 - 3, "logged {logged}");
    assert_eq!(rrl_metric(&s, "dropped") + rrl_metric(&s, "slipped"), 0);
}

#[test]
fn a_full_table_fails_open_for_new_keys_and_keeps_the_flooder() {
    // One line of 8 entries for everything.
    let s = start(
        "[rrl]\nresponses_per_second = 5\nwindow = \"1s\"\nslip = 0\ntable_size = 8\n",
        64,
    );
    let www = |i| packet(i, "www.rrl.test.", RecordType::A);
    let f = flood(s.addr, FLOODER, 200, Duration::from_millis(100), www);
    let last_send = Instant::now() - Duration::from_millis(300);
    assert!(f.full <= 8, "{f:?}");
    // 64 different answers from another network, two each: far more keys than slots. Each new
    // key takes the slot closest to its credit, so all are answered, and the flooder, deepest
    // in debt, keeps its entry.
    let c = Client::new(s.addr, OTHER);
    for round in 0..2u16 {
        for i in 0..64u16 {
            let m = c
                .ask(&packet(
                    round * 64 + i,
                    &format!("n{i}.rrl.test."),
                    RecordType::A,
                ))
                .expect("a key of a full table is answered");
            assert_eq!(m.answers.len(), 1);
        }
    }
    let evicted = rrl_metric(&s, "evictions");
    println!("full table: flooder {f:?}, evictions {evicted}");
    assert!(evicted > 0, "the table was full");
    let again = flood(s.addr, FLOODER, 50, Duration::from_millis(10), www);
    let accrued = (5.0 * last_send.elapsed().as_secs_f64()).ceil() as usize;
    assert!(
        again.full <= accrued + 1,
        "the flooder kept its debt: {again:?}, {accrued} accrued"
    );
}

#[test]
fn the_table_survives_a_reload_and_new_rates_apply() {
    let s = start(
        "[rrl]\nresponses_per_second = 5\nwindow = \"1s\"\nslip = 0\n",
        0,
    );
    let www = |i| packet(i, "www.rrl.test.", RecordType::A);
    let f = flood(s.addr, FLOODER, 100, Duration::from_millis(50), www);
    let last_send = Instant::now() - Duration::from_millis(300);
    assert!(f.full <= 8, "{f:?}");
    s.reload();
    let again = flood(s.addr, FLOODER, 50, Duration::from_millis(10), www);
    let accrued = (5.0 * last_send.elapsed().as_secs_f64()).ceil() as usize;
    assert!(
        again.full <= accrued + 1,
        "a reload must not hand out fresh credit: {again:?}, {accrued} accrued"
    );
    // Without [rrl] after a reload, nothing is limited.
    let cfg = std::fs::read_to_string(s.config_path()).expect("config");
    let cut = cfg.find("[rrl]").expect("rrl section");
    std::fs::write(s.config_path(), &cfg[..cut]).expect("write");
    s.reload();
    let off = flood(s.addr, FLOODER, 100, Duration::from_millis(50), www);
    assert_eq!(off.full, off.sent, "{off:?}");
}

#[test]
fn config_problems_are_located() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("zones")).expect("mkdir");
    let path = dir.path().join("m.toml");
    for (text, line, key) in [
        ("[rrl]\nslip = 11\n", 5, "rrl.slip"),
        ("[rrl]\nwindow = \"soon\"\n", 5, "rrl.window"),
        ("[rrl]\nipv4_prefix = 33\n", 5, "rrl.ipv4_prefix"),
        (
            "[rrl]\nexempt = [\"10.0.0.0/8\", \"nope\"]\n",
            5,
            "rrl.exempt[1]",
        ),
        ("[rrl]\ntable_size = 0\n", 5, "rrl.table_size"),
        ("[rrl]\nrps = 5\n", 5, "rrl"),
        ("cookie_secret = \"abc\"\n", 4, "server.cookie_secret"),
    ] {
        let cfg = format!("[server]\nlisten = [\"127.0.0.1:0\"]\nzones = \"zones\"\n{text}");
        let err = meridian::config::parse(&path, cfg).expect_err(text);
        let p = &err.0[0];
        assert_eq!(p.line, line, "{p}");
        assert!(p.message.starts_with(key), "{p}");
    }
}

/// The figures docs/operations.md quotes: a sustained flood from one network, measured in two
/// parts, against `responses_per_second = 20`, `window = "2s"`, `slip = 2`. The accounting is
/// Knot-like (a token bucket whose credit never goes below zero), not BIND's (whose balance
/// sinks to −window × rate under a flood, so a sustained flood gets no full answers): after
/// its burst the flooder gets the rate in full answers, every second limited response as a
/// slip, the rest dropped. This test holds the server to that model; it prints the figures.
#[test]
fn a_sustained_flood_gets_the_rate_in_full_answers_after_its_burst() {
    const R: f64 = 20.0;
    const W: f64 = 2.0;
    let s = start(
        "[rrl]\nresponses_per_second = 20\nwindow = \"2s\"\nslip = 2\n",
        0,
    );
    let www = |i| packet(i, "www.rrl.test.", RecordType::A);
    // Part 1: 3,000 queries over 3 s (1,000/s) from a fresh network: the burst, then the rate.
    let a = flood(s.addr, FLOODER, 3000, Duration::from_secs(3), www);
    // `flood` returns 300 ms after its last send (the reader's tail).
    let a_last_send = Instant::now() - Duration::from_millis(300);
    // Part 2, at once: 2,000 more over 2 s. The burst is spent; only the rate is left.
    let b = flood(s.addr, FLOODER, 2000, Duration::from_secs(2), |i| {
        www(i.wrapping_add(3000))
    });
    for (part, t) in [("1 (fresh)", &a), ("2 (sustained)", &b)] {
        println!(
            "RRL flood part {part}: sent {} in {:.2} s ({:.0}/s): {} full answers ({:.1}/s), \
             {} slips, {} dropped",
            t.sent,
            t.secs,
            t.sent as f64 / t.secs,
            t.full,
            t.full_per_sec(),
            t.slips,
            t.lost()
        );
    }
    // Part 1: at most the burst (rate × window, plus the first) and the rate over the flood
    // (slack: 300 ms of the reader's tail and scheduling); at least the rate over the flood.
    let burst = (R * W) as usize + 1;
    assert!(
        a.full <= burst + (R * (a.secs + 0.4)) as usize,
        "part 1: {} full answers, more than the burst and the rate: {a:?}",
        a.full
    );
    assert!(
        a.full as f64 >= R * 3.0,
        "part 1: the burst and the rate are served: {a:?}"
    );
    // Part 2: the rate, not zero (BIND's accounting would give ~0 here) and not a new burst.
    assert!(
        b.full as f64 >= R * 2.0 * 0.7,
        "part 2: a sustained flood still gets about the rate: {b:?}"
    );
    // Credit accrues at the rate from part 1's last answer on, whatever the pause between the
    // parts; 100 ms of slack for scheduling.
    let since = a_last_send.elapsed().as_secs_f64();
    assert!(
        b.full as f64 <= R * (since + 0.1) + 1.0,
        "part 2: no fresh burst while flooding: {b:?} over {since:.2} s"
    );
    // slip = 2 throughout.
    for t in [&a, &b] {
        let limited = t.sent - t.full;
        assert!((t.slips * 2).abs_diff(limited) <= 4, "slips {t:?}");
    }
}
