//! Behaviour on the wire (SPEC "Behaviour on the wire"), bad input: unknown opcodes get
//! NOTIMP, malformed queries FORMERR, unreadable packets silence, over UDP and TCP.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::wire::*;
use common::*;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::RecordType;

// ---------------------------------------------------------------------------------------------
// Opcodes and malformed input

#[test]
fn unknown_opcodes_get_notimp() {
    let s = server();
    for op in [
        OpCode::Status,
        OpCode::Update,
        OpCode::Unknown(3),
        OpCode::Unknown(15),
    ] {
        let mut m = Message::new(4711, MessageType::Query, op);
        m.add_query(Query::query(name("example.com."), RecordType::SOA));
        for (t, r) in s.both(&m) {
            assert_eq!(r.metadata.response_code, ResponseCode::NotImp, "{t} {op}");
            assert_eq!(r.metadata.op_code, op, "{t}: opcode echoed");
            assert!(!r.metadata.authoritative, "{t} {op}");
            assert!(r.answers.is_empty() && r.authorities.is_empty(), "{t} {op}");
        }
    }
    // NOTIFY (4) is not implemented either without [[secondary]] zones (tests/secondary.rs).
    let mut m = Message::new(4712, MessageType::Query, OpCode::Notify);
    m.add_query(Query::query(name("example.com."), RecordType::SOA));
    assert_eq!(s.udp(&m).metadata.response_code, ResponseCode::NotImp);
}

#[test]
fn malformed_queries_get_formerr() {
    let s = server();
    let q = question_bytes("www.example.com.", 1, 1);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated qname", {
            let mut b = header(0x1001, 0x0100, 1, 0, 0, 0);
            b.extend_from_slice(&q[..9]);
            b
        }),
        ("question without type/class", {
            let mut b = header(0x1002, 0x0100, 1, 0, 0, 0);
            b.extend_from_slice(&q[..q.len() - 4]);
            b
        }),
        ("qdcount=2", {
            let mut b = header(0x1003, 0x0100, 2, 0, 0, 0);
            b.extend_from_slice(&q);
            b.extend_from_slice(&question_bytes("api.example.com.", 1, 1));
            b
        }),
        ("qdcount=0", header(0x1004, 0x0100, 0, 0, 0, 0)),
        ("arcount beyond the packet", {
            let mut b = header(0x1005, 0x0100, 1, 0, 0, 2);
            b.extend_from_slice(&q);
            b
        }),
        ("compression pointer loop", {
            let mut b = header(0x1006, 0x0100, 1, 0, 0, 0);
            b.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
            b
        }),
        ("label longer than 63", {
            let mut b = header(0x1007, 0x0100, 1, 0, 0, 0);
            b.push(64);
            b.extend_from_slice(&[b'a'; 64]);
            b.extend_from_slice(&[0, 0, 1, 0, 1]);
            b
        }),
    ];
    for (what, pkt) in &cases {
        let id = u16::from_be_bytes([pkt[0], pkt[1]]);
        for (t, raw) in s.both_raw(pkt) {
            let r = decode_reply(&format!("{t} {what}"), id, &raw);
            assert_eq!(
                r.metadata.response_code,
                ResponseCode::FormErr,
                "{t} {what}\n{r}"
            );
            assert!(r.metadata.recursion_desired, "{t} {what}: RD copied");
            assert!(!r.metadata.authoritative, "{t} {what}");
            assert!(r.answers.is_empty(), "{t} {what}");
        }
    }
}

#[test]
fn unreadable_packets_get_silence() {
    let s = server();
    let wait = Duration::from_millis(300);
    for len in [0usize, 1, 2, 5, 11] {
        let pkt = vec![0x42u8; len];
        assert_eq!(s.udp_raw(&pkt, wait), None, "{len}-byte packet answered");
    }
    // A response (QR=1) is never answered, lest two servers bounce packets forever.
    let resp = s.udp_bytes(
        &query("www.example.com.", RecordType::A)
            .to_vec()
            .expect("encode"),
    );
    assert_eq!(resp[2] & 0x80, 0x80);
    assert_eq!(s.udp_raw(&resp, wait), None, "QR=1 packet answered");
    let mut qr = header(0x2001, 0x8000, 1, 0, 0, 0);
    qr.extend_from_slice(&question_bytes("www.example.com.", 1, 1));
    assert_eq!(s.udp_raw(&qr, wait), None, "QR=1 query answered");

    // Over TCP the same packets get nothing, and the connection goes on answering.
    let mut c = TcpStream::connect(s.addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let good = query("www.example.com.", RecordType::A);
    let mut out = Vec::new();
    for p in [vec![1u8, 2, 3, 4, 5], qr.clone(), resp.clone()] {
        out.extend_from_slice(&(p.len() as u16).to_be_bytes());
        out.extend_from_slice(&p);
    }
    let g = good.to_vec().expect("encode");
    out.extend_from_slice(&(g.len() as u16).to_be_bytes());
    out.extend_from_slice(&g);
    c.write_all(&out).expect("write");
    let first = read_tcp_message(&mut c).expect("answer on the same connection");
    let r = decode_reply("tcp", good.metadata.id, &first);
    assert_eq!(r.answers.len(), 1);
}
