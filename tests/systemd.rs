//! `meridian serve` under a stand-in for systemd (docs/running.md): a Unix datagram socket as
//! `$NOTIFY_SOCKET` receives READY=1 only once queries are answered, STATUS= lines,
//! RELOADING=1/READY=1 around reloads (accepted and rejected), WATCHDOG=1 pings at half of
//! `$WATCHDOG_USEC`, and STOPPING=1 at SIGTERM.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{query, serve_command, ServerProcess};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

/// A config folder with the shipped example zone, listening on a kernel-chosen port.
fn setup() -> (tempfile::TempDir, PathBuf, UnixDatagram, PathBuf) {
    let (dir, config) = common::config_dir(
        &[("example.com.zone", common::EXAMPLE_ZONE)],
        &good_config(),
    );
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    (dir, config, sock, sock_path)
}

fn good_config() -> String {
    "[server]\nlisten = [\"127.0.0.1:0\"]\nzones = \"zones\"\n".to_string()
}

fn spawn(
    config: &Path,
    notify: &Path,
    watchdog_usec: &str,
    watchdog_pid: Option<&str>,
) -> ServerProcess {
    let mut c = serve_command(config);
    c.env("NOTIFY_SOCKET", notify)
        .env("WATCHDOG_USEC", watchdog_usec)
        .env_remove("WATCHDOG_PID");
    if let Some(pid) = watchdog_pid {
        c.env("WATCHDOG_PID", pid);
    }
    ServerProcess::spawn(&mut c)
}

/// Datagrams received until one satisfies `done` (returned last), or panics after `within`.
fn until(sock: &UnixDatagram, within: Duration, done: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            Instant::now() < deadline,
            "no matching notification within {within:?}; got {seen:?}"
        );
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let hit = done(&msg);
            seen.push(msg);
            if hit {
                return seen;
            }
        }
    }
}

/// Every datagram received during `d`.
fn during(sock: &UnixDatagram, d: Duration) -> Vec<String> {
    let end = Instant::now() + d;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    seen
}

fn has_line(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

fn status_of(msg: &str) -> Option<&str> {
    msg.lines().find_map(|l| l.strip_prefix("STATUS="))
}

fn ask(addr: SocketAddr) -> Option<Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let q = query("mail.example.com.", RecordType::A);
    sock.send_to(&q.to_vec().expect("encode"), addr).ok()?;
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    Message::from_vec(&buf[..n]).ok()
}

#[test]
fn ready_watchdog_reload_and_stop_are_notified() {
    let (_dir, config, sock, sock_path) = setup();
    // 600 ms watchdog: pings every 300 ms.
    let mut running = spawn(&config, &sock_path, "600000", None);

    let seen = until(&sock, Duration::from_secs(15), |m| has_line(m, "READY=1"));
    let ready = seen.last().expect("a READY message");
    let status = status_of(ready).expect("READY carries STATUS=");
    assert!(status.starts_with("serving 1 zones"), "{status}");
    // The STATUS names the bound address: READY means that address answers right now.
    let addr: SocketAddr = status
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {status}"));
    let answer = ask(addr).expect("an answer right after READY=1");
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative);

    let pings = during(&sock, Duration::from_millis(1300))
        .iter()
        .filter(|m| has_line(m, "WATCHDOG=1"))
        .count();
    assert!((2..=8).contains(&pings), "{pings} watchdog pings in 1.3 s");

    // An accepted reload: RELOADING=1 with MONOTONIC_USEC, then READY=1.
    running.signal(libc::SIGHUP);
    let seen = until(&sock, Duration::from_secs(10), |m| {
        has_line(m, "READY=1") && status_of(m).is_some_and(|s| s.contains("reloaded"))
    });
    let reloading = seen
        .iter()
        .find(|m| has_line(m, "RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1 before READY=1: {seen:?}"));
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading}"
    );

    // A rejected reload: still RELOADING=1 then READY=1 (the old config serves), and the
    // STATUS says so.
    std::fs::write(&config, "[server]\nlisten = 5\n").expect("break config");
    running.signal(libc::SIGHUP);
    let seen = until(&sock, Duration::from_secs(10), |m| has_line(m, "READY=1"));
    assert!(seen.iter().any(|m| has_line(m, "RELOADING=1")), "{seen:?}");
    let status = status_of(seen.last().expect("READY")).expect("STATUS");
    assert!(status.contains("rejected"), "{status}");
    assert!(ask(addr).is_some(), "the old config keeps answering");

    running.signal(libc::SIGTERM);
    until(&sock, Duration::from_secs(5), |m| has_line(m, "STOPPING=1"));
    let code = running
        .wait_exit(Duration::from_secs(5))
        .expect("serve did not stop on SIGTERM")
        .code();
    assert_eq!(code, Some(0));
}

#[test]
fn no_watchdog_pings_for_another_process() {
    // WATCHDOG_PID names someone else (as when the variables leak to a child): no pings, but
    // readiness is still reported.
    let (_dir, config, sock, sock_path) = setup();
    let mut running = spawn(&config, &sock_path, "200000", Some("1"));
    until(&sock, Duration::from_secs(15), |m| has_line(m, "READY=1"));
    let pings = during(&sock, Duration::from_millis(500))
        .iter()
        .filter(|m| has_line(m, "WATCHDOG=1"))
        .count();
    assert_eq!(pings, 0);
    running.stop(Duration::from_secs(10));
}
