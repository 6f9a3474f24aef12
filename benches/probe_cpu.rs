//! What probing costs: N endpoints (default 1,000; `MERIDIAN_PROBE_ENDPOINTS=10000` for the
//! SPEC's 10k target, a multiple of 100) probed over HTTP every second by the prober as `serve`
//! runs it (its own thread named `prober`, `prober::spawn_thread`), against a small HTTP server
//! in this process on 127.0.0.1. Prints the probes done, the prober thread's CPU (from
//! /proc/self/task) as a share of one core and per probe, the endpoints healthy, and the RSS
//! growth. A measurement, not a test: it used to be an `#[ignore]`d test in tests/health.rs
//! that asserted nothing.
//!
//! `[prober] cpu_budget` is `off` unless `MERIDIAN_PROBE_BUDGET` says otherwise (`"20%"`): the
//! cost per probe is measured unstretched; with a budget it shows the stretch it came to.
//!
//! Run: `cargo bench --bench probe_cpu` (10 s measured after 2 s of warm-up). Without
//! `--bench` (`cargo test --benches`, as CI runs it) it does a short once-through with 100
//! endpoints, unmeasured, and checks its own sanity: every endpoint probed and healthy.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian::snapshot::{self, Snapshot};

/// Answers every request `200 ok` and counts them: a few threads, each blocking in `accept`
/// on the one listener and serving one connection at a time (a probe sends its request
/// right after connecting and closes after one answer). Not a thread per connection: at
/// 10,000 probes a second, making and ending that many threads cost the 2-core machine more
/// than the prober did, and took the prober's core from it.
fn http_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind http");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    for _ in 0..4 {
        let listener = listener.try_clone().expect("listener");
        let h = hits.clone();
        std::thread::spawn(move || {
            let mut head = Vec::new();
            let mut buf = [0u8; 2048];
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(3)));
                head.clear();
                let mut whole = true;
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => {
                            whole = false;
                            break;
                        }
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if !whole {
                    continue;
                }
                h.fetch_add(1, Ordering::Relaxed);
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
        });
    }
    (addr, hits)
}

/// utime + stime, in clock ticks, of this process's threads named `name`.
fn thread_cpu_ticks(name: &str) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc") {
        let Ok(task) = task else { continue };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != name {
            continue;
        }
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // After the comm: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
        total += f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
    }
    total
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("MERIDIAN_PROBE_ENDPOINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if measuring { 1000 } else { 100 });
    let (warm, window) = if measuring {
        (Duration::from_secs(2), Duration::from_secs(10))
    } else {
        (Duration::from_millis(1500), Duration::from_secs(1))
    };
    let (http, hits) = http_server();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("zones")).expect("mkdir");
    std::fs::write(
        dir.path().join("zones/example.com.zone"),
        "$TTL 3600\n@ IN SOA ns1 hostmaster ( 7 3600 600 86400 300 )\n  IN NS ns1\nns1 IN A 192.0.2.53\n",
    )
    .expect("zone");
    let budget = std::env::var("MERIDIAN_PROBE_BUDGET").unwrap_or_else(|_| "off".into());
    let mut cfg = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nzones = \"zones\"\n\
         [prober]\ncpu_budget = \"{budget}\"\n\
         [health.web]\nkind = \"http\"\ninterval = \"1s\"\ntimeout = \"1s\"\nexpect_body = \"ok\"\n",
    );
    for svc in 0..n.div_ceil(100) {
        cfg.push_str(&format!(
            "[[service]]\nname = \"s{svc}.example.com\"\npolicy = \"latency\"\nhealth = \"web\"\nendpoints = [\n"
        ));
        for e in 0..100.min(n - svc * 100) {
            cfg.push_str(&format!(
                "  {{ address = \"10.{}.{}.{e}\", check = \"http://{http}/s{svc}/e{e}\" }},\n",
                svc / 256,
                svc % 256,
            ));
        }
        cfg.push_str("]\n");
    }
    std::fs::write(dir.path().join("m.toml"), cfg).expect("config");
    let snap = Snapshot::load(&dir.path().join("m.toml")).unwrap_or_else(|p| panic!("{p}"));
    let shared = snapshot::shared(snap);
    let rss0 = rss_kib();
    let opts = meridian::prober::ProberOptions::default();
    let meter = opts.meter.clone();
    let prober = meridian::prober::spawn_thread(shared.clone(), opts).expect("prober");
    std::thread::sleep(warm);
    assert_eq!(prober.targets(), n, "one target per endpoint");
    let (c0, h0, t0) = (
        thread_cpu_ticks("prober"),
        hits.load(Ordering::Relaxed),
        Instant::now(),
    );
    std::thread::sleep(window);
    let (c1, h1, dt) = (
        thread_cpu_ticks("prober"),
        hits.load(Ordering::Relaxed),
        t0.elapsed(),
    );
    let healthy = shared
        .load()
        .services
        .iter()
        .flat_map(|x| x.endpoints.iter())
        .filter(|e| e.state.healthy() && e.state.last_probe().is_some_and(|r| r.ok))
        .count();
    let probes = h1 - h0;
    if !measuring {
        // Sanity only: every endpoint probed and up, and probing went on in the window.
        assert_eq!(healthy, n, "endpoints healthy after {warm:?}");
        assert!(probes > 0, "no probes in {window:?}");
        println!("probe_cpu: once through, {n} endpoints probed and healthy (not measured)");
        prober.shutdown();
        return;
    }
    let hz = 100.0; // USER_HZ on Linux
    let cpu = (c1 - c0) as f64 / hz;
    println!(
        "{n} endpoints, interval 1 s: {probes} probes in {:.1} s, prober CPU {cpu:.2} s = {:.1} % of one core, {:.0} us per probe; {healthy} healthy; RSS +{} KiB",
        dt.as_secs_f64(),
        100.0 * cpu / dt.as_secs_f64(),
        1e6 * cpu / probes.max(1) as f64,
        rss_kib().saturating_sub(rss0)
    );
    let r = meter.reading();
    println!(
        "cpu_budget {budget}: interval stretch x{:.2} at the end, stretched {:.0} s; the prober's last second {:.1} % of a core",
        r.interval_stretch,
        r.stretched_seconds,
        100.0 * r.cpu.unwrap_or(0.0)
    );
    prober.shutdown();
}
