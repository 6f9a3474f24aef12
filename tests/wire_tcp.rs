//! Behaviour on the wire (SPEC "Behaviour on the wire"), TCP: pipelined queries answered in
//! order, idle connections closed, the connection limit, AXFR refused.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::wire::*;
use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

// ---------------------------------------------------------------------------------------------
// TCP

#[test]
fn tcp_pipelined_queries_answered_in_order() {
    let s = server();
    let qs = vec![
        query("www.example.com.", RecordType::A),
        query("nope.example.com.", RecordType::A),
        query("api.example.com.", RecordType::AAAA),
        query("www.example.org.", RecordType::A),
        query_edns("big.wire.test.", RecordType::TXT, 512),
        query("example.com.", RecordType::MX),
    ];
    let rs = s.tcp_many(&qs);
    assert_eq!(rs.len(), qs.len());
    for (q, r) in qs.iter().zip(&rs) {
        assert_eq!(r.metadata.id, q.metadata.id, "order");
        assert_eq!(r.queries, q.queries, "question");
    }
    let codes: Vec<ResponseCode> = rs.iter().map(|r| r.metadata.response_code).collect();
    assert_eq!(
        codes,
        vec![
            ResponseCode::NoError,
            ResponseCode::NXDomain,
            ResponseCode::NoError,
            ResponseCode::Refused,
            ResponseCode::NoError,
            ResponseCode::NoError,
        ]
    );
    assert_eq!(rs[0].answers.len(), 1);
    assert_eq!(rs[2].answers.len(), 2);
    assert_eq!(rs[4].answers.len(), 12);
    assert!(!rs[4].metadata.truncation);
}

#[test]
fn tcp_idle_connection_is_closed() {
    let s = server();
    let started = Instant::now();
    let mut c = TcpStream::connect(s.addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(6)))
        .expect("timeout");
    let mut b = [0u8; 16];
    let n = c.read(&mut b).expect("read ends in EOF, not a timeout");
    let took = started.elapsed();
    assert_eq!(n, 0, "data on an idle connection");
    assert!(
        took >= Duration::from_millis(1500),
        "closed too early: {took:?}"
    );
    assert!(took <= Duration::from_secs(4), "closed too late: {took:?}");
}

#[test]
fn tcp_connection_limit() {
    let s = server();
    let q = query("www.example.com.", RecordType::A);
    let qb = q.to_vec().expect("encode");
    let mut framed = (qb.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&qb);
    let ask = |c: &mut TcpStream| -> Option<Vec<u8>> {
        c.write_all(&framed).ok()?;
        read_tcp_message(c)
    };
    // Eight connections, each proven accepted and served (and so holding a slot).
    let mut held: Vec<TcpStream> = (0..8)
        .map(|i| {
            let mut c = TcpStream::connect(s.addr).expect("connect");
            c.set_read_timeout(Some(Duration::from_secs(1)))
                .expect("timeout");
            assert!(ask(&mut c).is_some(), "connection {i} not served");
            c
        })
        .collect();
    // Over the limit the newcomer is served and the connection idle longest (the first)
    // gives up its slot (RFC 7766 §6.2.3; docs/operations.md "TCP limits").
    let started = Instant::now();
    let mut ninth = TcpStream::connect(s.addr).expect("connect");
    ninth
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let raw = ask(&mut ninth).expect("the ninth connection is served");
    let r = decode_reply("tcp", q.metadata.id, &raw);
    assert_eq!(r.answers.len(), 1);
    let mut b = [0u8; 64];
    match held[0].read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("evicted connection got {n} bytes"),
        Err(e) => panic!("the idlest connection was not closed: {e}"),
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the slot came only from the idle timeout"
    );
    // The others still work.
    for (i, c) in held.iter_mut().enumerate().skip(1) {
        assert!(ask(c).is_some(), "held connection {i} broken");
    }
}

#[test]
fn axfr_is_refused() {
    let s = server();
    for qn in ["example.com.", "wire.test."] {
        for qt in [RecordType::AXFR, RecordType::IXFR] {
            let r = s.tcp(&query(qn, qt));
            assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{qn} {qt}");
            assert!(r.answers.is_empty(), "{qn} {qt}");
        }
    }
    let r = s.udp(&query("example.com.", RecordType::AXFR));
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
}
