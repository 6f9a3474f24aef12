//! One query per TCP connection, as many connections at once as asked: the load dnsperf cannot
//! make (`-m tcp` keeps a few connections open and pipelines on them). Each connection is
//! opened, sends one query from a dnsperf query file ("name TYPE" lines), reads the answer and
//! is closed by the client (FIN), the way a resolver falling back to TCP after a truncated
//! answer uses it; then a new connection takes its place.
//!
//! One thread, non-blocking sockets on one edge-triggered epoll set, so that a single core
//! drives more than a server core answers. Source addresses rotate over 127.0.0.2.. so that
//! per-client connection limits (meridian's `tcp_max_per_client`) do not apply, and
//! IP_BIND_ADDRESS_NO_PORT leaves the port to connect(), which may then reuse loopback
//! TIME_WAIT ports (net.ipv4.tcp_tw_reuse).
//!
//! Prints dnsperf's summary lines (the harness in ../shared/bench parses them):
//!   tcp1perf -s 127.0.0.1 -p 5314 -d queries.txt -l 15 -c 64 -t 2 [-a 64]
//! -c connections in flight, -t seconds before a query counts as lost, -a source addresses.
//! Only loopback targets are accepted.

use std::collections::HashMap;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const IP_BIND_ADDRESS_NO_PORT: libc::c_int = 24;

struct Args {
    server: Ipv4Addr,
    port: u16,
    file: String,
    secs: f64,
    conns: usize,
    timeout: f64,
    sources: u8,
}

fn usage() -> ! {
    eprintln!("usage: tcp1perf -s 127.0.0.1 -p PORT -d QUERYFILE [-l SECS] [-c CONNS] [-t SECS] [-a SOURCES]");
    std::process::exit(1)
}

fn args() -> Args {
    let mut a = Args {
        server: Ipv4Addr::LOCALHOST,
        port: 53,
        file: String::new(),
        secs: 10.0,
        conns: 64,
        timeout: 2.0,
        sources: 64,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).cloned().unwrap_or_else(|| usage());
        match v[i].as_str() {
            "-s" => a.server = val.parse().unwrap_or_else(|_| usage()),
            "-p" => a.port = val.parse().unwrap_or_else(|_| usage()),
            "-d" => a.file = val,
            "-l" => a.secs = val.parse().unwrap_or_else(|_| usage()),
            "-c" => a.conns = val.parse().unwrap_or_else(|_| usage()),
            "-t" => a.timeout = val.parse().unwrap_or_else(|_| usage()),
            "-a" => a.sources = val.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
        i += 2;
    }
    if a.file.is_empty() || a.conns == 0 || a.sources == 0 || a.sources > 250 {
        usage()
    }
    if !a.server.is_loopback() {
        eprintln!("tcp1perf: only loopback targets");
        std::process::exit(1)
    }
    a
}

fn qtype(s: &str) -> Option<u16> {
    Some(match s.to_ascii_uppercase().as_str() {
        "A" => 1,
        "NS" => 2,
        "CNAME" => 5,
        "SOA" => 6,
        "PTR" => 12,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        "SRV" => 33,
        "DS" => 43,
        "ANY" => 255,
        "CAA" => 257,
        _ => return None,
    })
}

/// A query with its two-byte TCP length prefix, ID 0 (patched per send), RD set as dnsperf does.
fn encode(name: &str, t: u16) -> Option<Vec<u8>> {
    let mut m = vec![0, 0, 0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&t.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    let len = (m.len() - 2) as u16;
    m[..2].copy_from_slice(&len.to_be_bytes());
    Some(m)
}

fn load(path: &str) -> io::Result<Vec<Vec<u8>>> {
    let text = std::fs::read_to_string(path)?;
    let qs: Vec<Vec<u8>> = text
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            encode(w.next()?, qtype(w.next()?)?)
        })
        .collect();
    if qs.is_empty() {
        return Err(io::Error::other("no queries in the file"));
    }
    Ok(qs)
}

struct Conn {
    fd: libc::c_int,
    sent_at: Instant,
    id: u16,
    written: bool,
    got: Vec<u8>,
}

#[derive(Default)]
struct Stats {
    sent: u64,
    completed: u64,
    lost: u64,
    rcodes: [u64; 16],
    lat_sum: f64,
    lat_min: f64,
    lat_max: f64,
}

const RCODES: [&str; 11] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
    "NXRRSET", "NOTAUTH", "NOTZONE",
];

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut sa: libc::sockaddr_in = unsafe { zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = port.to_be();
    sa.sin_addr.s_addr = u32::from(ip).to_be();
    sa
}

/// A new non-blocking socket connecting from `src` to `dst`, on `ep` for in and out (edge).
fn open(ep: libc::c_int, src: Ipv4Addr, dst: &libc::sockaddr_in) -> io::Result<libc::c_int> {
    // SAFETY: plain system calls on a socket this function owns; pointers are to locals.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let one: libc::c_int = 1;
        let len = size_of::<libc::c_int>() as libc::socklen_t;
        let p = (&one as *const libc::c_int).cast();
        libc::setsockopt(fd, libc::IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, p, len);
        libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, p, len);
        let s = sockaddr(src, 0);
        let salen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, (&s as *const libc::sockaddr_in).cast(), salen) != 0 {
            let e = io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        let r = libc::connect(fd, (dst as *const libc::sockaddr_in).cast(), salen);
        if r != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINPROGRESS) {
            let e = io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLET | libc::EPOLLRDHUP) as u32,
            u64: fd as u64,
        };
        if libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) != 0 {
            let e = io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        Ok(fd)
    }
}

fn close(fd: libc::c_int) {
    // SAFETY: fd is a socket this program opened and has not closed yet; close also removes it
    // from the epoll set.
    unsafe {
        libc::close(fd);
    }
}

/// What one readiness event did to a connection.
enum Step {
    Waiting,
    Answered(u8),
    Failed,
}

fn step(c: &mut Conn, query: &[u8]) -> Step {
    if !c.written {
        // SAFETY: writes from a live buffer to our own socket.
        let n = unsafe { libc::write(c.fd, query.as_ptr().cast(), query.len()) };
        if n < 0 {
            return match io::Error::last_os_error().kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected => Step::Waiting,
                _ => Step::Failed,
            };
        }
        if n as usize != query.len() {
            return Step::Failed; // a query is ~40 bytes: a short write means trouble
        }
        c.written = true;
    }
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reads into a local buffer of the stated size.
        let n = unsafe { libc::read(c.fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return match io::Error::last_os_error().kind() {
                io::ErrorKind::WouldBlock => Step::Waiting,
                _ => Step::Failed,
            };
        }
        if n == 0 {
            return Step::Failed; // closed before a whole answer came
        }
        c.got.extend_from_slice(&buf[..n as usize]);
        if c.got.len() >= 2 {
            let len = u16::from_be_bytes([c.got[0], c.got[1]]) as usize;
            if c.got.len() >= 2 + len && len >= 12 {
                if u16::from_be_bytes([c.got[2], c.got[3]]) != c.id {
                    return Step::Failed;
                }
                return Step::Answered(c.got[5] & 0x0F);
            }
        }
    }
}

fn main() {
    let a = args();
    let queries = load(&a.file).unwrap_or_else(|e| {
        eprintln!("tcp1perf: {}: {e}", a.file);
        std::process::exit(1)
    });
    let dst = sockaddr(a.server, a.port);
    // SAFETY: creates an epoll instance owned by this process for its lifetime.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        eprintln!("tcp1perf: epoll: {}", io::Error::last_os_error());
        std::process::exit(1)
    }
    let timeout = Duration::from_secs_f64(a.timeout);
    let run_for = Duration::from_secs_f64(a.secs);
    let mut conns: HashMap<libc::c_int, Conn> = HashMap::with_capacity(a.conns * 2);
    let mut stats = Stats {
        lat_min: f64::MAX,
        ..Stats::default()
    };
    let mut next_query = 0usize;
    let mut next_src = 0u8;
    let mut next_id = 0u16;
    let mut connect_errors = 0u64;
    let mut qbuf = Vec::new();
    let started = Instant::now();
    let mut last_sweep = started;
    let mut events: Vec<libc::epoll_event> = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    println!(
        "[Status] tcp1perf: one query per TCP connection to {}:{}, {} at once, {} s",
        a.server, a.port, a.conns, a.secs
    );
    loop {
        let now = Instant::now();
        let running = now.duration_since(started) < run_for;
        // Keep the pipe full: a new connection for every one that ended.
        while running && conns.len() < a.conns {
            let src = Ipv4Addr::new(127, 0, 0, 2 + next_src % a.sources);
            next_src = next_src.wrapping_add(1) % a.sources;
            match open(ep, src, &dst) {
                Ok(fd) => {
                    next_id = next_id.wrapping_add(1);
                    conns.insert(
                        fd,
                        Conn {
                            fd,
                            sent_at: Instant::now(),
                            id: next_id,
                            written: false,
                            got: Vec::new(),
                        },
                    );
                    stats.sent += 1;
                }
                Err(_) => {
                    connect_errors += 1;
                    if connect_errors > 1000 && stats.completed == 0 {
                        eprintln!("tcp1perf: cannot connect: {}", io::Error::last_os_error());
                        std::process::exit(1)
                    }
                    break;
                }
            }
        }
        if !running && conns.is_empty() {
            break;
        }
        if now.duration_since(last_sweep) >= Duration::from_millis(100) {
            last_sweep = now;
            let expired: Vec<libc::c_int> = conns
                .values()
                .filter(|c| now.duration_since(c.sent_at) >= timeout)
                .map(|c| c.fd)
                .collect();
            for fd in expired {
                conns.remove(&fd);
                close(fd);
                stats.lost += 1;
            }
        }
        // SAFETY: the events buffer is live and its length is passed.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 50) };
        for ev in events.iter().take(n.max(0) as usize) {
            let fd = ev.u64 as libc::c_int;
            let Some(c) = conns.get_mut(&fd) else {
                continue;
            };
            let q = &queries[next_query % queries.len()];
            qbuf.clear();
            qbuf.extend_from_slice(q);
            qbuf[2..4].copy_from_slice(&c.id.to_be_bytes());
            let was_written = c.written;
            let r = step(c, &qbuf);
            if !was_written && c.written {
                next_query += 1;
            }
            match r {
                Step::Waiting => {}
                Step::Answered(rcode) => {
                    let lat = c.sent_at.elapsed().as_secs_f64();
                    stats.completed += 1;
                    stats.rcodes[rcode as usize] += 1;
                    stats.lat_sum += lat;
                    stats.lat_min = stats.lat_min.min(lat);
                    stats.lat_max = stats.lat_max.max(lat);
                    conns.remove(&fd);
                    close(fd);
                }
                Step::Failed => {
                    conns.remove(&fd);
                    close(fd);
                    stats.lost += 1;
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let pct = |x: u64| {
        if stats.sent > 0 {
            x as f64 * 100.0 / stats.sent as f64
        } else {
            0.0
        }
    };
    println!();
    println!("Statistics:");
    println!();
    println!("  Queries sent:         {}", stats.sent);
    println!(
        "  Queries completed:    {} ({:.2}%)",
        stats.completed,
        pct(stats.completed)
    );
    println!(
        "  Queries lost:         {} ({:.2}%)",
        stats.lost,
        pct(stats.lost)
    );
    println!();
    let codes: Vec<String> = stats
        .rcodes
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(i, &n)| {
            let name = RCODES
                .get(i)
                .map_or_else(|| format!("RCODE{i}"), |s| s.to_string());
            let share = if stats.completed > 0 {
                n as f64 * 100.0 / stats.completed as f64
            } else {
                0.0
            };
            format!("{name} {n} ({share:.2}%)")
        })
        .collect();
    println!("  Response codes:       {}", codes.join(", "));
    println!("  Run time (s):         {elapsed:.6}");
    println!(
        "  Queries per second:   {:.6}",
        stats.completed as f64 / elapsed
    );
    println!();
    let (avg, min) = if stats.completed > 0 {
        (stats.lat_sum / stats.completed as f64, stats.lat_min)
    } else {
        (0.0, 0.0)
    };
    println!(
        "  Average Latency (s):  {avg:.6} (min {min:.6}, max {:.6})",
        stats.lat_max
    );
    println!("  Connect errors:       {connect_errors}");
}
