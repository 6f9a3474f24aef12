//! Test support: start a real meridian server on ephemeral loopback ports from config and zone
//! text, and talk to it with real DNS packets over UDP and TCP (hickory-proto as client codec);
//! or run the real `meridian` binary as a [`ServerProcess`].
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};

use meridian::querylog::QueryLog;
use meridian::server::{self, ListenSettings};
use meridian::snapshot::{self, SharedSnapshot, Snapshot};

pub const EXAMPLE_ZONE: &str = include_str!("../../zones/example.com.zone");
pub const EXAMPLE_CONFIG: &str = include_str!("../../config/meridian.toml");

/// The shipped config after its `[server]` table (site, GeoIP, regions, services), with the
/// site id `test-site` and the GeoIP path made absolute, to append to a test `[server]`.
pub fn example_config() -> String {
    let rest = &EXAMPLE_CONFIG[EXAMPLE_CONFIG
        .find("[site]")
        .expect("shipped config has [site]")..];
    let geoip = concat!(env!("CARGO_MANIFEST_DIR"), "/geoip/");
    rest.replace("id = \"dev1\"", "id = \"test-site\"")
        .replace("\"../geoip/", &format!("\"{geoip}"))
}

/// A running server with its own temporary config folder.
pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub shared: SharedSnapshot,
    rt: Option<tokio::runtime::Runtime>,
    handle: Option<server::ServerHandle>,
}

impl TestServer {
    /// `zones` are (file name, text) pairs written to `zones/`; `extra` is appended to the config
    /// after a `[server]` section listening on 127.0.0.1:0.
    pub fn start(zones: &[(&str, &str)], extra: &str) -> TestServer {
        Self::start_with(
            zones,
            "tcp_idle_timeout = \"2s\"\ntcp_max_connections = 8\n",
            extra,
        )
    }

    /// [`TestServer::start`] with `server` (more `[server]` keys) in place of the default
    /// `tcp_idle_timeout = "2s"` and `tcp_max_connections = 8`.
    pub fn start_with(zones: &[(&str, &str)], server: &str, extra: &str) -> TestServer {
        let (dir, cpath) = config_dir(
            zones,
            &format!(
                "[server]\nlisten = [\"127.0.0.1:0\"]\nzones = \"zones\"\nudp_sockets = 1\n{server}{extra}"
            ),
        );
        let snap = Snapshot::load(&cpath).unwrap_or_else(|p| panic!("config rejected:\n{p}"));
        let settings = ListenSettings::from_config(&snap.config);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let shared = snapshot::shared(snap);
        let handle = rt
            .block_on(async {
                let log = QueryLog::start(shared.clone())?;
                server::start(shared.clone(), &settings, log.handle())
            })
            .expect("server start");
        TestServer {
            addr: handle.addrs[0],
            dir,
            shared,
            rt: Some(rt),
            handle: Some(handle),
        }
    }

    /// The shipped example zone with a site id.
    pub fn example() -> TestServer {
        Self::start(&[("example.com.zone", EXAMPLE_ZONE)], &example_config())
    }

    /// The live health state of endpoint `addr` of service `svc` in the current snapshot.
    pub fn endpoint_state(
        &self,
        svc: &str,
        addr: &str,
    ) -> std::sync::Arc<meridian::health::EndpointState> {
        let snap = self.shared.load();
        let mut name = Name::from_ascii(svc).expect("name").to_lowercase();
        name.set_fqdn(true);
        let want: std::net::IpAddr = addr.parse().expect("endpoint address");
        snap.services
            .iter()
            .find(|x| x.name == name)
            .unwrap_or_else(|| panic!("no service {svc}"))
            .endpoints
            .iter()
            .find(|e| e.addr == want)
            .unwrap_or_else(|| panic!("no endpoint {addr} in {svc}"))
            .state
            .clone()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("meridian.toml")
    }

    /// Sends raw bytes over UDP; `None` if nothing came back within the timeout.
    pub fn udp_raw(&self, packet: &[u8], timeout: Duration) -> Option<Vec<u8>> {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(timeout)).expect("timeout");
        sock.send_to(packet, self.addr).expect("send");
        let mut buf = vec![0u8; 65535];
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => Some(buf[..n].to_vec()),
            Err(_) => None,
        }
    }

    pub fn udp(&self, msg: &Message) -> Message {
        let bytes = msg.to_vec().expect("encode");
        let resp = self
            .udp_raw(&bytes, Duration::from_secs(3))
            .expect("no UDP response");
        let m = Message::from_vec(&resp).expect("decode response");
        assert_eq!(m.metadata.id, msg.metadata.id, "response id");
        m
    }

    /// Sends several messages on one TCP connection back to back (pipelined) and reads as many
    /// responses.
    pub fn tcp_many(&self, msgs: &[Message]) -> Vec<Message> {
        let mut s = TcpStream::connect(self.addr).expect("tcp connect");
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let mut out = Vec::new();
        for m in msgs {
            let b = m.to_vec().expect("encode");
            out.extend_from_slice(&(b.len() as u16).to_be_bytes());
            out.extend_from_slice(&b);
        }
        s.write_all(&out).expect("tcp write");
        msgs.iter()
            .map(|_| {
                let mut len = [0u8; 2];
                s.read_exact(&mut len).expect("tcp read length");
                let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
                s.read_exact(&mut buf).expect("tcp read body");
                Message::from_vec(&buf).expect("decode tcp response")
            })
            .collect()
    }

    pub fn tcp(&self, msg: &Message) -> Message {
        self.tcp_many(std::slice::from_ref(msg)).remove(0)
    }

    /// Sends raw bytes over UDP and returns the raw response; panics if none came back.
    pub fn udp_bytes(&self, packet: &[u8]) -> Vec<u8> {
        self.udp_raw(packet, Duration::from_secs(3))
            .expect("no UDP response")
    }

    /// Sends raw bytes as one length-prefixed TCP message on a fresh connection and returns
    /// the raw response, or `None` if the server sent nothing (or closed) within `timeout`.
    pub fn tcp_raw(&self, packet: &[u8], timeout: Duration) -> Option<Vec<u8>> {
        let mut s = TcpStream::connect(self.addr).expect("tcp connect");
        s.set_read_timeout(Some(timeout)).expect("timeout");
        let mut out = (packet.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(packet);
        s.write_all(&out).expect("tcp write");
        read_tcp_message(&mut s)
    }

    /// The same query over UDP and over TCP, labelled by transport.
    pub fn both(&self, msg: &Message) -> Vec<(&'static str, Message)> {
        vec![("udp", self.udp(msg)), ("tcp", self.tcp(msg))]
    }

    /// Raw bytes over UDP and over TCP, labelled by transport; both must answer.
    pub fn both_raw(&self, packet: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
        let tcp = self
            .tcp_raw(packet, Duration::from_secs(3))
            .expect("no TCP response");
        vec![("udp", self.udp_bytes(packet)), ("tcp", tcp)]
    }
}

/// Reads one length-prefixed DNS message from a TCP stream; `None` on EOF, error or timeout.
pub fn read_tcp_message(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    Some(buf)
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let (Some(rt), Some(h)) = (self.rt.take(), self.handle.take()) {
            rt.block_on(h.shutdown());
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// A query for `name`/`rtype` in class IN, RD clear, without EDNS.
pub fn query(name: &str, rtype: RecordType) -> Message {
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    let mut q = Query::query(Name::from_ascii(name).expect("name"), rtype);
    q.set_query_class(DNSClass::IN);
    m.add_query(q);
    m
}

/// A query in any class, RD clear, without EDNS.
pub fn query_class(name: &str, rtype: RecordType, class: DNSClass) -> Message {
    let mut m = query(name, rtype);
    m.queries[0].set_query_class(class);
    m
}

/// Encodes `msg` (which must carry no EDNS) and appends an OPT record written by hand, so that
/// values hickory's encoder would normalise (payload below 512, versions, flags, raw options)
/// reach the server exactly as given. `options` is the raw option list (code, length, data)*.
pub fn with_raw_opt(
    msg: &Message,
    payload: u16,
    version: u8,
    flags: u16,
    options: &[u8],
) -> Vec<u8> {
    assert!(msg.edns.is_none(), "with_raw_opt adds the OPT itself");
    let mut b = msg.to_vec().expect("encode");
    let ar = u16::from_be_bytes([b[10], b[11]]) + 1;
    b[10..12].copy_from_slice(&ar.to_be_bytes());
    b.push(0); // root owner
    b.extend_from_slice(&41u16.to_be_bytes()); // TYPE OPT
    b.extend_from_slice(&payload.to_be_bytes()); // CLASS = payload size
    b.push(0); // extended RCODE
    b.push(version);
    b.extend_from_slice(&flags.to_be_bytes());
    b.extend_from_slice(&(options.len() as u16).to_be_bytes());
    b.extend_from_slice(options);
    b
}

/// The same with an EDNS OPT advertising `payload`.
pub fn query_edns(name: &str, rtype: RecordType, payload: u16) -> Message {
    let mut m = query(name, rtype);
    let mut e = Edns::new();
    e.set_max_payload(payload);
    m.set_edns(e);
    m
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(4242);
    NEXT.fetch_add(7919, Ordering::Relaxed)
}

/// One UDP socket reused for many queries sent and answered one after another, for loops of
/// thousands of queries (a fresh socket per query would cost a bind each time).
pub struct UdpClient {
    sock: UdpSocket,
    server: SocketAddr,
    buf: Vec<u8>,
}

impl TestServer {
    pub fn udp_client(&self) -> UdpClient {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        UdpClient {
            sock,
            server: self.addr,
            buf: vec![0u8; 65535],
        }
    }
}

impl UdpClient {
    /// Sends `msg` and returns the response with its id; panics if none comes within 3 s.
    /// Datagrams with another id (late answers to earlier queries) are skipped.
    pub fn ask(&mut self, msg: &Message) -> Message {
        let bytes = msg.to_vec().expect("encode");
        self.sock.send_to(&bytes, self.server).expect("send");
        loop {
            let (n, from) = self.sock.recv_from(&mut self.buf).expect("no UDP response");
            if from != self.server {
                continue;
            }
            let m = Message::from_vec(&self.buf[..n]).expect("decode response");
            if m.metadata.id == msg.metadata.id {
                return m;
            }
        }
    }
}

impl TestServer {
    /// Starts the health prober on this server's runtime, following `self.shared` (reloads
    /// included). It stops with the server's runtime.
    pub fn start_prober(&self) -> meridian::health::ProberHandle {
        let _guard = self.rt.as_ref().expect("runtime").enter();
        meridian::health::start(self.shared.clone())
    }

    /// Re-reads this server's config file into a new snapshot that keeps the health registry,
    /// and swaps it in (what SIGHUP does).
    pub fn reload(&self) {
        let snap = Snapshot::load_with(&self.config_path(), self.shared.load().health.clone())
            .unwrap_or_else(|p| panic!("reload rejected:\n{p}"));
        self.shared.store(std::sync::Arc::new(snap));
    }
}

impl TestServer {
    /// Runs a future on the server's runtime, e.g. to start the admin API beside the server:
    /// what it spawns keeps running there until the server is dropped.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.as_ref().expect("runtime").block_on(f)
    }
}

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
// The real binary as a process

/// A loopback port free for both UDP and TCP right now (DNS listens on both).
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let Ok(u) = UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = u.local_addr().map(|a| a.port()) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port");
}

/// Writes `zones` ((file name, text) pairs) into `dir/zones/` and `config` into
/// `dir/meridian.toml`; returns the config's path.
pub fn write_config_dir(dir: &Path, zones: &[(&str, &str)], config: &str) -> PathBuf {
    let zdir = dir.join("zones");
    std::fs::create_dir_all(&zdir).expect("mkdir zones");
    for (name, text) in zones {
        std::fs::write(zdir.join(name), text).expect("write zone");
    }
    let path = dir.join("meridian.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

/// [`write_config_dir`] into a new temp folder: the folder and the config's path.
pub fn config_dir(zones: &[(&str, &str)], config: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config_dir(dir.path(), zones, config);
    (dir, path)
}

/// `meridian serve --config CONFIG`, for [`ServerProcess::spawn`] after more args or env.
pub fn serve_command(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_meridian"));
    c.args(["serve", "--config"]).arg(config);
    c
}

/// Lines a child wrote on one of its pipes, read on a thread as they come.
#[derive(Default)]
struct Lines {
    /// The lines so far, and whether the pipe has reached EOF.
    state: Mutex<(Vec<String>, bool)>,
    more: Condvar,
}

impl Lines {
    fn collect(pipe: impl Read + Send + 'static) -> Arc<Lines> {
        let lines = Arc::new(Lines::default());
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().0.push(l);
                sink.more.notify_all();
            }
            sink.lock().1 = true;
            sink.more.notify_all();
        });
        lines
    }

    fn lock(&self) -> MutexGuard<'_, (Vec<String>, bool)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Line `i` (from 0), waiting up to `within` for it; `None` at EOF or timeout.
    fn get(&self, i: usize, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        let mut st = self.lock();
        loop {
            if let Some(l) = st.0.get(i) {
                return Some(l.clone());
            }
            if st.1 {
                return None;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            st = self
                .more
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits up to `within` for EOF (the reader has everything once the process is gone).
    fn wait_eof(&self, within: Duration) {
        let st = self.lock();
        let _ = self.more.wait_timeout_while(st, within, |st| !st.1);
    }
}

/// A child process (`meridian serve`, or a helper such as etcd) that is killed when dropped,
/// so that a failing test never leaves it behind. Its stdout and stderr are read into lines as
/// they come; its stdin is a pipe kept open until the handle goes.
pub struct ServerProcess {
    child: Child,
    exited: Option<ExitStatus>,
    stdin: Option<ChildStdin>,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
    /// How far [`ServerProcess::next_stdout_line`] has read.
    stdout_read: usize,
}

impl ServerProcess {
    /// `meridian serve --config CONFIG` with nothing else set.
    pub fn serve(config: &Path) -> ServerProcess {
        Self::spawn(&mut serve_command(config))
    }

    /// Starts `cmd` with its stdio piped; panics if it cannot start.
    pub fn spawn(cmd: &mut Command) -> ServerProcess {
        Self::try_spawn(cmd).unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
    }

    pub fn try_spawn(cmd: &mut Command) -> std::io::Result<ServerProcess> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = Lines::collect(child.stdout.take().expect("stdout"));
        let stderr = Lines::collect(child.stderr.take().expect("stderr"));
        Ok(ServerProcess {
            stdin: child.stdin.take(),
            child,
            exited: None,
            stdout,
            stderr,
            stdout_read: 0,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it wrote on stderr so far, one entry a line (all of it, once it has exited).
    pub fn stderr_lines(&self) -> Vec<String> {
        self.lines(&self.stderr)
    }

    /// What it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr_lines().join("\n")
    }

    /// What it wrote on stdout so far, one entry a line (all of it, once it has exited).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.lines(&self.stdout)
    }

    fn lines(&self, pipe: &Lines) -> Vec<String> {
        if self.exited.is_some() {
            // The reader thread may still be taking in the last lines.
            pipe.wait_eof(Duration::from_secs(1));
        }
        pipe.lock().0.clone()
    }

    /// Its exit status and all it wrote, as [`Command::output`] gives them; it must have exited.
    pub fn output(&self) -> Output {
        let status = self.exited.expect("output() of a process still running");
        let text = |lines: Vec<String>| lines.iter().map(|l| format!("{l}\n")).collect::<String>();
        Output {
            status,
            stdout: text(self.stdout_lines()).into_bytes(),
            stderr: text(self.stderr_lines()).into_bytes(),
        }
    }

    /// The next stdout line not yet returned here, waiting up to `within` for it.
    pub fn next_stdout_line(&mut self, within: Duration) -> Option<String> {
        let l = self.stdout.get(self.stdout_read, within)?;
        self.stdout_read += 1;
        Some(l)
    }

    /// The child's stdin.
    pub fn stdin(&mut self) -> &mut ChildStdin {
        self.stdin.as_mut().expect("stdin")
    }

    /// Sends `sig` (libc::SIGTERM, SIGHUP, ...); panics if it has exited or kill(2) fails.
    pub fn signal(&self, sig: libc::c_int) {
        assert!(
            self.exited.is_none(),
            "signal {sig} to a process that exited"
        );
        // SAFETY: kill(2) on the pid of our child, which has not been reaped (`exited`).
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.child.id());
    }

    /// Its exit status if it has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited
    }

    /// Waits up to `within` for it to exit (polling every 10 ms); `None` if it is still running.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.try_exit() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, and its exit status within `within`; panics (with its stderr) if it lingers.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(within).unwrap_or_else(|| {
            panic!(
                "pid {} did not stop within {within:?} of SIGTERM; stderr:\n{}",
                self.pid(),
                self.stderr()
            )
        })
    }

    /// Cleans up: SIGTERM, up to `within` for it to exit, then SIGKILL. Never panics; a
    /// process that has exited is left alone.
    pub fn stop(&mut self, within: Duration) {
        if self.exited.is_some() {
            return;
        }
        // SAFETY: as in `signal`.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        if self.wait_exit(within).is_none() {
            self.kill();
        }
    }

    /// SIGKILL and reap (a crash, as far as the process can tell).
    pub fn kill(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = Some(self.child.wait().expect("wait"));
        }
    }

    /// Polls `ready` every 20 ms for up to `within` until it gives a value. Panics, with the
    /// process's stderr, if the time runs out or the process exits first; `what` says what
    /// was awaited.
    pub fn wait_until<T>(
        &mut self,
        what: &str,
        within: Duration,
        mut ready: impl FnMut(&Self) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(t) = ready(self) {
                return t;
            }
            if let Some(st) = self.try_exit() {
                panic!(
                    "{what}: the process exited ({st}); stderr:\n{}",
                    self.stderr()
                );
            }
            if Instant::now() >= deadline {
                panic!("{what}: not within {within:?}; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `packet` to `addr` over UDP (again every 100 ms) until an answer comes, for up to
    /// `within`; returns the answer. Panics as [`ServerProcess::wait_until`].
    pub fn wait_udp(&mut self, addr: SocketAddr, packet: &[u8], within: Duration) -> Vec<u8> {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let mut buf = vec![0u8; 65535];
        self.wait_until(&format!("a UDP answer from {addr}"), within, |_| {
            let _ = sock.send_to(packet, addr);
            let (n, _) = sock.recv_from(&mut buf).ok()?;
            Some(buf[..n].to_vec())
        })
    }

    /// Waits up to `within` until `GET path` at `addr` answers 200. Panics as
    /// [`ServerProcess::wait_until`].
    pub fn wait_http(&mut self, addr: SocketAddr, path: &str, within: Duration) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        self.wait_until(&format!("200 from GET {path} at {addr}"), within, |_| {
            http_exchange(addr, &req)
                .filter(|(code, _, _)| *code == 200)
                .map(|_| ())
        });
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl TestServer {
    /// Starts the admin API of this server's `[admin]` table beside it; it runs on the
    /// server's runtime until the server is dropped or the handle is shut down.
    pub fn start_admin(&self) -> meridian::admin::AdminHandle {
        self.start_admin_with(|_| {})
    }

    /// [`TestServer::start_admin`] after `tune` (e.g. shorter timeouts) has had its state.
    pub fn start_admin_with(
        &self,
        tune: impl FnOnce(&mut meridian::admin::AdminState),
    ) -> meridian::admin::AdminHandle {
        let reloader = meridian::reload::Reloader::new(self.shared.clone(), self.config_path());
        let mut state =
            meridian::admin::AdminState::from_config(reloader).expect("config has [admin]");
        tune(&mut state);
        self.block_on(meridian::admin::start(state))
            .expect("admin API starts")
    }
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
