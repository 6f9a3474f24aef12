//! Promises of the prober that only show with the real `meridian serve` binary and real
//! sockets (SPEC "Health", docs/operations.md): probes never block answering (DNS answers over
//! UDP and TCP come while hundreds of probes hang on a server that accepts and never replies),
//! and at most 256 probes are in flight at once (counted at that server); and `[prober]
//! cpu_budget`: past it the probe intervals are stretched, visibly in `/status` and the metrics.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

const ZONE: &str = "$TTL 300
@    IN SOA ns1 hostmaster ( 1 3600 600 86400 300 )
     IN NS  ns1
ns1  IN A   192.0.2.53
";

/// A TCP server that accepts every connection and never answers: each connection stays open
/// until its client gives up. Counts connections accepted and those still open.
struct Holder {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    /// Kept so that the server side never closes first.
    _held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Holder {
    fn start() -> Holder {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind holder");
        let addr = l.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (a, o, h) = (accepted.clone(), open.clone(), held.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let Ok(mut reader) = c.try_clone() else {
                    continue;
                };
                h.lock().unwrap().push(c);
                let o = o.clone();
                // Reads (and ignores) the request; EOF or reset is the client giving up.
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Holder {
            addr,
            accepted,
            open,
            _held: held,
        }
    }
}

/// `n` endpoints of one service, each with a check URL of its own at `holder` (so `n`
/// distinct targets), probed every 30 s with a 10 s timeout: the first probes of all of them go
/// out at start and hang for 10 s.
fn config(port: u16, holder: SocketAddr, n: usize) -> String {
    let mut c = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nzones = \"zones\"\nudp_sockets = 1\n\
         [health.held]\nkind = \"http\"\ninterval = \"30s\"\ntimeout = \"10s\"\n\
         [[service]]\nname = \"www.held.test\"\npolicy = \"round-robin\"\nmax_answers = 2\n\
         health = \"held\"\nendpoints = [\n"
    );
    for i in 0..n {
        c.push_str(&format!(
            "  {{ address = \"10.9.{}.{}\", check = \"http://{holder}/e{i}\" }},\n",
            i / 250,
            i % 250 + 1
        ));
    }
    c.push_str("]\n");
    c
}

fn tcp_ask(addr: SocketAddr, msg: &Message, within: Duration) -> Option<Message> {
    let mut s = TcpStream::connect_timeout(&addr, within).ok()?;
    s.set_read_timeout(Some(within)).ok()?;
    let bytes = msg.to_vec().ok()?;
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    std::io::Write::write_all(&mut s, &framed).ok()?;
    Message::from_vec(&read_tcp_message(&mut s)?).ok()
}

#[test]
fn hanging_probes_never_block_answering_and_at_most_256_are_in_flight() {
    let holder = Holder::start();
    let port = free_port();
    let n = 300;
    let (_dir, cfg) = config_dir(&[("held.test.zone", ZONE)], &config(port, holder.addr, n));
    let mut serve = ServerProcess::serve(&cfg);
    let dns: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let q = query("www.held.test.", RecordType::A);
    serve.wait_udp(dns, &q.to_vec().expect("encode"), Duration::from_secs(10));

    // The first probes: 256 connections, and no more while none has timed out (10 s).
    let full = serve.wait_until("256 probes hanging", Duration::from_secs(5), |_| {
        (holder.accepted.load(Ordering::SeqCst) >= 256).then(Instant::now)
    });

    // While they hang: UDP and TCP queries, one after another, each answered (NOERROR, two
    // addresses) within 1 s, for 2 s.
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let (mut udp, mut tcp) = (0, 0);
    let mut id = 0u16;
    while full.elapsed() < Duration::from_secs(2) {
        id = id.wrapping_add(1);
        let mut q = query("www.held.test.", RecordType::A);
        q.metadata.id = id;
        sock.send_to(&q.to_vec().expect("encode"), dns)
            .expect("send");
        let (len, _) = sock
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("UDP query {id} not answered within 1 s: {e}"));
        let m = Message::from_vec(&buf[..len]).expect("decode");
        assert_eq!(m.metadata.id, id);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 2, "{m}");
        udp += 1;
        if udp % 10 == 0 {
            let m = tcp_ask(dns, &q, Duration::from_secs(1))
                .unwrap_or_else(|| panic!("TCP query not answered within 1 s"));
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            assert_eq!(m.answers.len(), 2, "{m}");
            tcp += 1;
        }
    }
    let (accepted, open) = (
        holder.accepted.load(Ordering::SeqCst),
        holder.open.load(Ordering::SeqCst),
    );
    println!(
        "{udp} UDP and {tcp} TCP queries answered while {open} probes hung ({accepted} accepted)"
    );
    assert!(udp >= 10 && tcp >= 1, "{udp} UDP, {tcp} TCP queries");
    // Still within the first timeout: nothing has been let go, so every connection accepted
    // is in flight at once. Exactly the bound: 300 targets want to go.
    assert!(
        full.elapsed() < Duration::from_secs(8),
        "the check outlived the 10 s timeout"
    );
    assert_eq!(accepted, 256, "probes in flight at once (of {n} targets)");
    assert_eq!(open, 256, "probes in flight at once (of {n} targets)");
    // The endpoints keep their initial state until a probe decides.
    let m = serve.wait_udp(dns, &q.to_vec().expect("encode"), Duration::from_secs(1));
    assert_eq!(
        Message::from_vec(&m)
            .expect("decode")
            .metadata
            .response_code,
        ResponseCode::NoError
    );
}

/// An HTTP server on `ip`:`port` answering `200 ok` to every request; counts them.
fn http_ok(ip: &str, port: u16) -> Arc<AtomicUsize> {
    let l = TcpListener::bind((ip, port)).unwrap_or_else(|e| panic!("bind {ip}:{port}: {e}"));
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let h = h.clone();
            std::thread::spawn(move || {
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                h.fetch_add(1, Ordering::SeqCst);
                let _ = std::io::Write::write_all(
                    &mut c,
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            });
        }
    });
    hits
}

/// A `target` endpoint's name is resolved through the system resolver at every probe, not
/// once: the server runs in a mount namespace of its own whose /etc/hosts (a bind mount of a
/// file this test rewrites) first points the name at 127.0.0.2, then at 127.0.0.3; probes
/// must follow. A lookup cached at start (or at the first probe) would keep probing .2.
#[test]
#[ignore = "needs root and unshare, mount (util-linux) for a private /etc/hosts"]
fn target_names_are_resolved_at_every_probe() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (a mount namespace with its own /etc/hosts); it does not skip"
    );
    for tool in ["unshare", "mount"] {
        assert!(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .any(|d| d.join(tool).is_file()),
            "`{tool}` is not on PATH: install util-linux / mount; this test does not skip"
        );
    }
    let port = free_port();
    let (first, second) = (http_ok("127.0.0.2", port), http_ok("127.0.0.3", port));
    let dns_port = free_port();
    let (dir, cfg) = config_dir(
        &[("tgt.test.zone", ZONE)],
        &format!(
            "[server]\nlisten = [\"127.0.0.1:{dns_port}\"]\nzones = \"zones\"\nudp_sockets = 1\n\
             [health.web]\nkind = \"http\"\nport = {port}\npath = \"/health\"\n\
             interval = \"200ms\"\ntimeout = \"500ms\"\n\
             [[service]]\nname = \"app.tgt.test\"\npolicy = \"round-robin\"\nhealth = \"web\"\n\
             endpoints = [ {{ target = \"probe-target.meridian.test.\" }} ]\n"
        ),
    );
    let hosts = dir.path().join("hosts");
    let point_at = |ip: &str| {
        // Rewritten in place (same inode), so the bind mount shows the new text.
        std::fs::write(
            &hosts,
            format!("127.0.0.1 localhost\n{ip} probe-target.meridian.test\n"),
        )
        .expect("write hosts");
    };
    point_at("127.0.0.2");
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$1\" /etc/hosts && exec \"$2\" serve --config \"$3\"")
        .arg("sh")
        .arg(&hosts)
        .arg(env!("CARGO_BIN_EXE_meridian"))
        .arg(&cfg);
    let mut serve = ServerProcess::spawn(&mut cmd);
    let dns: SocketAddr = format!("127.0.0.1:{dns_port}").parse().expect("addr");
    let q = query("app.tgt.test.", RecordType::A);
    serve.wait_udp(dns, &q.to_vec().expect("encode"), Duration::from_secs(10));
    serve.wait_until("probes at 127.0.0.2", Duration::from_secs(5), |_| {
        (first.load(Ordering::SeqCst) >= 2).then_some(())
    });
    assert_eq!(
        second.load(Ordering::SeqCst),
        0,
        "127.0.0.3 probed too early"
    );

    point_at("127.0.0.3");
    // Within a few 200 ms intervals every probe goes to the new address.
    serve.wait_until("probes at 127.0.0.3", Duration::from_secs(5), |_| {
        (second.load(Ordering::SeqCst) >= 2).then_some(())
    });
    let at_first = first.load(Ordering::SeqCst);
    let at_second = second.load(Ordering::SeqCst);
    serve.wait_until("more probes at 127.0.0.3", Duration::from_secs(5), |_| {
        (second.load(Ordering::SeqCst) >= at_second + 3).then_some(())
    });
    assert!(
        first.load(Ordering::SeqCst) <= at_first + 1,
        "127.0.0.2 still probed after the name moved"
    );
    serve.stop(Duration::from_secs(5));
}

/// `n` endpoints, each its own check URL at `http` (so `n` targets), probed every second, and
/// `[prober] cpu_budget = budget`; the admin API on `admin`.
fn budget_config(port: u16, admin: u16, http: SocketAddr, n: usize, budget: &str) -> String {
    let mut c = format!(
        "[server]\nlisten = [\"127.0.0.1:{port}\"]\nzones = \"zones\"\nudp_sockets = 1\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
         [prober]\ncpu_budget = \"{budget}\"\n\
         [health.web]\nkind = \"http\"\ninterval = \"1s\"\ntimeout = \"1s\"\n\
         [[service]]\nname = \"www.held.test\"\npolicy = \"round-robin\"\n\
         health = \"web\"\nendpoints = [\n"
    );
    for i in 0..n {
        c.push_str(&format!(
            "  {{ address = \"10.9.{}.{}\", check = \"http://{http}/e{i}\" }},\n",
            i / 250,
            i % 250 + 1
        ));
    }
    c.push_str("]\n");
    c
}

fn prober_status(admin: SocketAddr) -> Option<meridian::status::Prober> {
    let req = "GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (code, _, body) = http_exchange(admin, req)?;
    if code != 200 {
        return None;
    }
    serde_json::from_str::<meridian::status::Status>(&body)
        .ok()?
        .prober
}

/// Runs `serve` with `n` endpoints probed at 1 s under `budget` for a while; returns the
/// prober's `/status` object once it has measured a few windows, the probes the endpoints
/// answered over the 6 s after that, and the metrics text.
fn probe_under_budget(budget: &str, n: usize) -> (meridian::status::Prober, usize, String) {
    let http_port = free_port();
    let hits = http_ok("127.0.0.1", http_port);
    let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().expect("addr");
    let (port, admin_port) = (free_port(), free_port());
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().expect("addr");
    let (_dir, cfg) = config_dir(
        &[("held.test.zone", ZONE)],
        &budget_config(port, admin_port, http, n, budget),
    );
    let mut serve = ServerProcess::serve(&cfg);
    serve.wait_http(admin, "/status", Duration::from_secs(10));
    // The first probes' burst (2 s, not measured), then four budget windows: enough for a
    // stretch to double its way up (1, 2, 4, 8, 10).
    std::thread::sleep(Duration::from_secs(7));
    let status = prober_status(admin).expect("the prober object in /status");
    let before = hits.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(6));
    let probes = hits.load(Ordering::SeqCst) - before;
    let req = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (_, _, metrics) = http_exchange(admin, req).expect("metrics");
    serve.stop(Duration::from_secs(5));
    (status, probes, metrics)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `[prober] cpu_budget`: past it the prober spreads its probes out instead of taking more
/// CPU, and says so in `/status` and the metrics; without a budget it probes every endpoint
/// every interval. 300 endpoints at 1 s cost the prober a few % of a core; a budget of 0.1 %
/// is far below that.
#[test]
fn a_cpu_budget_stretches_probe_intervals_visibly_and_none_does_not() {
    let n = 300;
    let (tight, tight_probes, tight_metrics) = probe_under_budget("0.1%", n);
    println!("budget 0.1%: {tight:?}, {tight_probes} probes in 6 s");
    assert_eq!(tight.cpu_budget, Some(0.001));
    let cpu = tight.cpu.expect("the prober thread's CPU measured");
    assert!(
        cpu > 0.001,
        "the prober used {cpu} of a core: not over 0.1 %?"
    );
    assert!(
        tight.stretched && tight.interval_stretch >= 4.0,
        "intervals not stretched under a 0.1 % budget: {tight:?}"
    );
    assert!(tight.stretched_seconds >= 1.0, "{tight:?}");
    // Unstretched, 6 s are 1,800 probes; at a stretch of 4 or more, at most a quarter of
    // that (and some slack for the probes due before the stretch grew).
    assert!(
        tight_probes <= 6 * n / 3,
        "{tight_probes} probes in 6 s under a stretch of {}",
        tight.interval_stretch
    );
    // Stretched ×10 at most, the targets' phases spread over the stretched period: any 6 s
    // hold at least about 6/10 of them (half of that here, for the probes the stretch still
    // holds back). Stretching by adding the period to each target's last probe kept them in
    // one burst every 10 s, and a 6 s window could see none (CI, stop 28).
    assert!(
        tight_probes >= 6 * n / 20,
        "{tight_probes} probes in 6 s: the stretched probes came in bursts, not spread"
    );
    let m = metric(&tight_metrics, "meridian_prober_interval_stretch").expect("stretch metric");
    assert!(m >= 4.0, "meridian_prober_interval_stretch {m}");
    assert_eq!(
        metric(&tight_metrics, "meridian_prober_cpu_budget_ratio"),
        Some(0.001)
    );
    assert!(metric(&tight_metrics, "meridian_prober_cpu_ratio").is_some());
    let secs = metric(&tight_metrics, "meridian_prober_stretched_seconds_total");
    assert!(secs.is_some_and(|s| s >= 1.0), "stretched seconds {secs:?}");

    let (off, off_probes, off_metrics) = probe_under_budget("off", n);
    println!("no budget: {off:?}, {off_probes} probes in 6 s");
    assert_eq!(off.cpu_budget, None);
    assert!(off.cpu.is_some(), "CPU is measured without a budget too");
    assert!(!off.stretched && off.interval_stretch == 1.0, "{off:?}");
    assert!(
        off_probes >= 6 * n * 8 / 10,
        "{off_probes} probes in 6 s of {} due, with no budget",
        6 * n
    );
    assert_eq!(
        metric(&off_metrics, "meridian_prober_interval_stretch"),
        Some(1.0)
    );
    assert_eq!(
        metric(&off_metrics, "meridian_prober_cpu_budget_ratio"),
        None
    );
}
