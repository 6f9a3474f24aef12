//! A home-made fuzzer on the wire: packets mutated from valid seeds (deterministic xorshift)
//! sent to a real server and to the handler in process; the server must answer a valid query
//! after every batch and never panic. `fuzz/` holds the cargo-fuzz targets.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::wire::*;
use common::*;
use hickory_proto::op::Message;
use hickory_proto::rr::{DNSClass, RecordType};

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Valid packets to mutate: plain, EDNS with options, CHAOS, referral, wildcard.
fn fuzz_seeds() -> Vec<Vec<u8>> {
    let mut seeds = vec![
        query("www.example.com.", RecordType::A)
            .to_vec()
            .expect("encode"),
        query("api.example.com.", RecordType::AAAA)
            .to_vec()
            .expect("encode"),
        query("x.w.wire.test.", RecordType::ANY)
            .to_vec()
            .expect("encode"),
        query("host.lab.example.com.", RecordType::NS)
            .to_vec()
            .expect("encode"),
        query_class("version.bind.", RecordType::TXT, DNSClass::CH)
            .to_vec()
            .expect("encode"),
    ];
    let mut ecs = opt_option(8, &[0, 1, 24, 0, 192, 0, 2]);
    ecs.extend(opt_option(3, &[]));
    ecs.extend(opt_option(65001, b"junk"));
    seeds.push(with_raw_opt(
        &query("big.wire.test.", RecordType::TXT),
        1232,
        0,
        0x8000,
        &ecs,
    ));
    seeds
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut p = seeds[rng.below(seeds.len())].clone();
    match rng.below(6) {
        0 => {
            // Pure noise of any length up to 600.
            let n = rng.below(600);
            p = (0..n).map(|_| rng.next() as u8).collect();
        }
        1 => {
            // Truncate anywhere.
            let n = rng.below(p.len() + 1);
            p.truncate(n);
        }
        2 => {
            // Flip bits.
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(p.len());
                p[i] ^= 1 << rng.below(8);
            }
        }
        3 => {
            // Overwrite header counts with random values.
            let i = 4 + 2 * rng.below(4);
            p[i] = rng.next() as u8;
            p[i + 1] = rng.next() as u8;
        }
        4 => {
            // Insert random bytes somewhere.
            let i = rng.below(p.len() + 1);
            for _ in 0..1 + rng.below(20) {
                p.insert(i, rng.next() as u8);
            }
        }
        _ => {
            // Random bytes past the header, keeping it (so FORMERR paths run).
            for b in p.iter_mut().skip(12) {
                if rng.below(4) == 0 {
                    *b = rng.next() as u8;
                }
            }
        }
    }
    // Mostly keep QR clear so the parser really runs.
    if p.len() > 2 && rng.below(8) != 0 {
        p[2] &= 0x7f;
    }
    p
}

#[test]
fn fuzzed_packets_never_kill_the_server() {
    let s = server();
    let seeds = fuzz_seeds();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_nonblocking(true).expect("nonblocking");
    let mut buf = vec![0u8; 65535];
    let mut answered = 0usize;
    for i in 0..4000 {
        let p = mutate(&mut rng, &seeds);
        sock.send_to(&p, s.addr).expect("send");
        if i % 32 == 31 {
            // Pace a little so the server sees the packets rather than a full socket buffer.
            std::thread::sleep(Duration::from_millis(1));
        }
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            answered += 1;
            assert!(n >= 12, "runt response");
            assert!(n <= 1232, "UDP response of {n} bytes exceeds the cap");
            assert_eq!(buf[2] & 0x80, 0x80, "response without QR");
        }
    }
    assert!(answered > 100, "only {answered} fuzz packets answered");
    // Some fuzz over TCP, each on its own connection.
    for _ in 0..100 {
        let p = mutate(&mut rng, &seeds);
        let _ = s.tcp_raw(&p, Duration::from_millis(200));
    }
    // Still serving, over both transports.
    for (t, r) in s.both(&query("www.example.com.", RecordType::A)) {
        assert_eq!(r.answers.len(), 1, "{t}: server stopped answering");
    }
}

/// The same handler called directly, many more packets: every reply must be a well-formed
/// response to its query.
#[test]
fn fuzzed_packets_in_process() {
    use meridian::dns::{handle, Transport};
    let s = server();
    let snap = s.shared.load();
    let seeds = fuzz_seeds();
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let src = "127.0.0.1:5353".parse().expect("addr");
    // What the run did, so that it cannot pass by answering nothing (or by dropping nothing):
    // packets answered, dropped, and answered with each rcode.
    let (mut answered, mut silent) = (0usize, 0usize);
    let mut rcodes = std::collections::BTreeMap::<u8, usize>::new();
    for _ in 0..20_000 {
        let p = mutate(&mut rng, &seeds);
        for tr in [Transport::Udp, Transport::Tcp] {
            let Some(r) = handle(&snap, &p, src, tr) else {
                silent += 1;
                continue;
            };
            answered += 1;
            *rcodes.entry(r[3] & 0x0f).or_default() += 1;
            assert!(p.len() >= 12 && p[2] & 0x80 == 0, "answered {p:02x?}");
            assert_eq!(&r[..2], &p[..2], "id not copied for {p:02x?}");
            assert_eq!(r[2] & 0x80, 0x80, "QR");
            if tr == Transport::Udp {
                assert!(r.len() <= 1232, "{} bytes over UDP", r.len());
            }
            if let Err(e) = Message::from_vec(&r) {
                panic!("undecodable response {e} to {p:02x?}: {r:02x?}");
            }
        }
    }
    println!("fuzzed: {answered} answered, {silent} dropped, rcodes {rcodes:?}");
    // The mutations keep most packets queries: most get an answer, some are dropped (too
    // short, QR set), and the answers span NOERROR, FORMERR and NXDOMAIN at least.
    assert!(answered >= 40_000 / 4, "only {answered} of 40000 answered");
    assert!(
        silent > 0,
        "nothing dropped: the mutations made no broken headers"
    );
    for rc in [0u8, 1, 3] {
        assert!(
            rcodes.get(&rc).is_some_and(|&n| n > 0),
            "no rcode {rc}: {rcodes:?}"
        );
    }
}
