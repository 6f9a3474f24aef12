//! A real meridian server in this process on ephemeral loopback ports ([`TestServer`]), from
//! config and zone text, and real DNS packets to it over UDP and TCP (hickory-proto as the
//! client codec); its prober, reloads and admin API beside it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};

use meridian::querylog::QueryLog;
use meridian::server::{self, ListenSettings};
use meridian::snapshot::{self, SharedSnapshot, Snapshot};

use super::*;

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
        // One UDP socket (and one TCP thread) unless the test asks for more.
        let sockets = if server.contains("udp_sockets") {
            ""
        } else {
            "udp_sockets = 1\n"
        };
        let (dir, cpath) = config_dir(
            zones,
            &format!(
                "[server]\nlisten = [\"127.0.0.1:0\"]\nzones = \"zones\"\n{sockets}{server}{extra}"
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
    pub fn start_prober(&self) -> meridian::prober::ProberHandle {
        let _guard = self.rt.as_ref().expect("runtime").enter();
        meridian::prober::start(self.shared.clone())
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
