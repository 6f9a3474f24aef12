//! HTTP on loopback for tests: one raw request and its whole response, and a health server
//! ([`HealthStub`]) for the checks of a real server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Sends one raw HTTP/1.1 request (which should say `Connection: close`) and reads the whole
/// response: (status, head, body, de-chunked). `None` when nothing connected or answered.
pub fn http_exchange(addr: SocketAddr, request: &str) -> Option<(u16, String, String)> {
    assert!(addr.ip().is_loopback(), "tests talk to loopback only");
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok())?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Some((code, head.to_string(), body))
}

/// The body of a chunked HTTP/1.1 response.
pub fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
// ---------------------------------------------------------------------------------------------
// A health endpoint for the real binary's HTTP checks

#[derive(Default)]
struct HealthStubState {
    /// (path, source) pairs answered 503; a source of `None` fails the path for everyone.
    failing: std::collections::HashSet<(String, Option<std::net::IpAddr>)>,
    hits: std::collections::HashMap<(String, std::net::IpAddr), u64>,
    /// When each path was first asked.
    first: std::collections::HashMap<String, Instant>,
}

/// An HTTP/1.1 health server on loopback: every path answers `200 OK` unless set failing
/// (`503`), for everyone or for one source address; it counts the requests per (path, source)
/// and notes when each path was first asked.
pub struct HealthStub {
    pub addr: SocketAddr,
    state: Arc<Mutex<HealthStubState>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl HealthStub {
    pub fn start() -> HealthStub {
        use std::sync::atomic::{AtomicBool, Ordering};
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind health");
        let addr = l.local_addr().expect("addr");
        let state: Arc<Mutex<HealthStubState>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (st, stp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                if stp.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut c) = c else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let Ok(peer) = c.peer_addr() else { return };
                    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match c.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&head).into_owned();
                    let path = line.split(' ').nth(1).unwrap_or("").to_string();
                    let fail = {
                        let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
                        *s.hits.entry((path.clone(), peer.ip())).or_default() += 1;
                        s.first.entry(path.clone()).or_insert_with(Instant::now);
                        s.failing.contains(&(path.clone(), None))
                            || s.failing.contains(&(path, Some(peer.ip())))
                    };
                    let status = if fail { "503 Nope" } else { "200 OK" };
                    let _ = c.write_all(
                        format!(
                            "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                        )
                        .as_bytes(),
                    );
                });
            }
        });
        HealthStub { addr, state, stop }
    }

    fn lock(&self) -> MutexGuard<'_, HealthStubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Makes `path` answer 503 (`fail`) or 200 again, to requests from `from` or from all.
    pub fn set_failing(&self, path: &str, from: Option<&str>, fail: bool) {
        let key = (path.to_string(), from.map(|f| f.parse().expect("ip")));
        let mut s = self.lock();
        if fail {
            s.failing.insert(key);
        } else {
            s.failing.remove(&key);
        }
    }

    /// Requests so far per (path, source).
    pub fn hits(&self) -> std::collections::HashMap<(String, std::net::IpAddr), u64> {
        self.lock().hits.clone()
    }

    /// When `path` was first asked.
    pub fn first_hit(&self, path: &str) -> Option<Instant> {
        self.lock().first.get(path).copied()
    }
}

impl Drop for HealthStub {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}
