//! The smallest end-to-end checks: the shipped zone answers SOA over UDP and TCP, in process
//! on 127.0.0.1 and with the real binary on IPv6 loopback ([::1]); and a reload that changes
//! a listen address says a restart is needed.

mod common;
use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

#[test]
fn soa_over_udp_and_tcp() {
    let s = TestServer::example();
    for r in [
        s.udp(&query("example.com.", RecordType::SOA)),
        s.tcp(&query("example.com.", RecordType::SOA)),
    ] {
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].record_type(), RecordType::SOA);
    }
}

/// `listen = ["[::1]:PORT"]` serves UDP and TCP on IPv6 loopback: the real binary, real
/// IPv6 sockets, an answer to each transport from the address asked.
#[test]
fn udp_and_tcp_on_ipv6_loopback() {
    use std::io::Write;
    use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
    use std::time::Duration;
    // A port free for both UDP and TCP on [::1].
    let port = (0..50)
        .find_map(|_| {
            let u = UdpSocket::bind("[::1]:0").ok()?;
            let p = u.local_addr().ok()?.port();
            TcpListener::bind(("::1", p)).ok().map(|_| p)
        })
        .expect("IPv6 loopback ([::1]) must be usable; this test does not skip");
    let (_dir, cfg) = config_dir(
        &[("example.com.zone", EXAMPLE_ZONE)],
        &format!("[server]\nlisten = [\"[::1]:{port}\"]\nzones = \"zones\"\nudp_sockets = 1\n"),
    );
    let mut serve = ServerProcess::serve(&cfg);
    let addr: SocketAddr = format!("[::1]:{port}").parse().expect("addr");
    let q = query("example.com.", RecordType::SOA);
    let bytes = q.to_vec().expect("encode");
    let sock = UdpSocket::bind("[::1]:0").expect("bind [::1]");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let udp = serve.wait_until("a UDP answer over [::1]", Duration::from_secs(10), |_| {
        sock.send_to(&bytes, addr).ok()?;
        let (n, from) = sock.recv_from(&mut buf).ok()?;
        assert_eq!(from, addr, "answered from the address asked");
        Some(buf[..n].to_vec())
    });
    let mut tcp = TcpStream::connect(addr).expect("TCP connect to [::1]");
    tcp.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    tcp.write_all(&framed).expect("send");
    let tcp = read_tcp_message(&mut tcp).expect("TCP answer over [::1]");
    for (t, raw) in [("udp", udp), ("tcp", tcp)] {
        let r = Message::from_vec(&raw).expect("decode");
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{t}");
        assert!(r.metadata.authoritative, "{t}");
        assert_eq!(r.answers.len(), 1, "{t}");
        assert_eq!(r.answers[0].record_type(), RecordType::SOA, "{t}");
    }
    serve.stop(Duration::from_secs(5));
}

/// A reload that changes `server.listen` or `admin.listen` says in the log that a restart is
/// needed, and the old addresses keep answering (SPEC "Reload"; docs/operations.md).
#[test]
fn a_listen_change_on_reload_says_restart() {
    use std::net::SocketAddr;
    use std::time::Duration;
    let (dns, other, admin, other_admin) = (free_port(), free_port(), free_port(), free_port());
    let config = |dns: u16, admin: u16| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:{dns}\"]\nzones = \"zones\"\nudp_sockets = 1\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n"
        )
    };
    let (dir, cfg) = config_dir(&[("example.com.zone", EXAMPLE_ZONE)], &config(dns, admin));
    let mut serve = ServerProcess::serve(&cfg);
    let addr: SocketAddr = format!("127.0.0.1:{dns}").parse().expect("addr");
    let q = query("example.com.", RecordType::SOA)
        .to_vec()
        .expect("encode");
    serve.wait_udp(addr, &q, Duration::from_secs(10));
    write_config_dir(
        dir.path(),
        &[("example.com.zone", EXAMPLE_ZONE)],
        &config(other, other_admin),
    );
    serve.signal(libc::SIGHUP);
    let warned = |s: &ServerProcess, what: &str| {
        s.stderr_lines()
            .iter()
            .any(|l| l.contains(what) && l.contains("after a restart"))
    };
    serve.wait_until("the restart warnings", Duration::from_secs(10), |s| {
        (warned(s, "server.listen changed") && warned(s, "admin.listen changed")).then_some(())
    });
    // The old DNS address still answers; the new one is not bound.
    serve.wait_udp(addr, &q, Duration::from_secs(2));
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    sock.send_to(&q, ("127.0.0.1", other)).expect("send");
    let mut buf = [0u8; 512];
    assert!(
        sock.recv_from(&mut buf).is_err(),
        "the new listen address answered before a restart"
    );
    // Back to the addresses it listens on: a reload says nothing of the kind.
    let before = serve.stderr_lines().len();
    write_config_dir(
        dir.path(),
        &[("example.com.zone", EXAMPLE_ZONE)],
        &config(dns, admin),
    );
    serve.signal(libc::SIGHUP);
    serve.wait_until("the second reload", Duration::from_secs(10), |s| {
        (s.stderr_lines()[before..]
            .iter()
            .any(|l| l.contains("reloaded")))
        .then_some(())
    });
    assert!(
        !serve.stderr_lines()[before..]
            .iter()
            .any(|l| l.contains("after a restart")),
        "{}",
        serve.stderr()
    );
    serve.stop(Duration::from_secs(5));
}
