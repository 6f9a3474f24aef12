//! Per-query CPU cost of the query log, without sockets: the UDP thread's steps (`Tap::begin`,
//! `answer::respond` — the fast path for these queries —, `Tap::end` with the outcome), with logging off, `sample:100`, every query as a line, and
//! every query as dnstap to a file. Prints, per variant, the DNS thread's time per query and
//! the whole process's CPU per query (getrusage: the writer thread included), and what was
//! dropped. A second measure beside `bench/querylog.sh` for a machine too busy for clean QPS
//! figures. Run: `cargo bench --bench querylog` (QUERIES=N to change the 400,000 per variant).

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

use meridian::answer::log::Tap;
use meridian::answer::{self, Transport};
use meridian::querylog::{self, QueryLog};
use meridian::snapshot::{self, Snapshot};

fn query(name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), t));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    m.set_edns(e);
    m.to_vec().expect("encode")
}

fn snapshot(dir: &Path, log: &str) -> Snapshot {
    std::fs::create_dir_all(dir.join("zones")).expect("mkdir");
    let zone = include_str!("../zones/example.com.zone").replace("api     IN CNAME www\n", "");
    std::fs::write(dir.join("zones/example.com.zone"), zone).expect("zone");
    let cfg = include_str!("../bench/meridian-bench.toml.in")
        .replace("@PORT@", "0")
        .replace("@ZONES@", "zones");
    std::fs::write(dir.join("m.toml"), format!("{cfg}\n[log]\n{log}\n")).expect("config");
    Snapshot::load(&dir.join("m.toml")).unwrap_or_else(|p| panic!("{p}"))
}

fn cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(r.ru_utime) + tv(r.ru_stime)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` (CI) does not, and then a short
    // once-through checks that every variant still builds, answers and shuts down, unmeasured.
    let measuring = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("QUERIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if measuring { 400_000 } else { 200 });
    let dir = tempfile::tempdir().expect("tempdir");
    let packets = [
        query("www.example.com.", RecordType::A),
        query("www.example.com.", RecordType::AAAA),
        query("nx-1.example.com.", RecordType::A),
        query("example.com.", RecordType::SOA),
    ];
    let src: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let dnstap = format!(
        "dnstap = \"file:{}\"",
        dir.path().join("q.dnstap").display()
    );
    println!("variant        thread_ns/q  process_cpu_ns/q  dropped");
    for round in 0..2 {
        for (name, log) in [
            ("off", "queries = \"off\"".to_string()),
            ("sample:100", "queries = \"sample:100\"".to_string()),
            ("dnstap all", dnstap.clone()),
        ] {
            let shared = snapshot::shared(snapshot(dir.path(), &log));
            let ql: Arc<QueryLog> = QueryLog::start(shared.clone()).expect("query log");
            let tap = Tap::new(
                &ql.handle(),
                Transport::Udp,
                "127.0.0.1:53".parse().expect("a"),
            );
            let answer = |p: &[u8], s, out: &mut Vec<u8>| {
                let begun = tap.begin();
                let snap = shared.load();
                let (send, outcome) = answer::respond(&snap, p, s, Transport::Udp, out);
                if let Some(b) = begun {
                    tap.end(b, s, p, send.then_some(&out[..]), &outcome);
                }
                send
            };
            let mut out = Vec::with_capacity(1232);
            let dropped0 = querylog::dropped("dnstap") + querylog::dropped("log");
            std::thread::sleep(Duration::from_millis(100));
            let (t0, c0) = (Instant::now(), cpu());
            for i in 0..n {
                black_box(answer(&packets[i % packets.len()], src, &mut out));
            }
            let wall = t0.elapsed();
            // Let the writer finish what is queued: its CPU is part of the cost.
            ql.shutdown(Duration::from_secs(30));
            let used = cpu() - c0;
            let dropped = querylog::dropped("dnstap") + querylog::dropped("log") - dropped0;
            if round == 1 {
                println!(
                    "{name:<14} {:>11.0} {:>17.0} {dropped:>8}",
                    wall.as_nanos() as f64 / n as f64,
                    used.as_nanos() as f64 / n as f64
                );
            }
            let _ = std::fs::remove_file(dir.path().join("q.dnstap"));
        }
    }
}
