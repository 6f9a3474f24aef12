//! Sockets: UDP and TCP listeners on every `listen` address, feeding
//! [`crate::answer::respond`].
//!
//! UDP uses several SO_REUSEPORT sockets per address, one blocking thread each with batched
//! system calls ([`udp`]); the hickory-server loop copies, spawns and crosses a channel per
//! query (~20 % of a core's throughput, `shared/notes/hickory-0.26.md`). TCP ([`tcp`]) follows
//! RFC 7766: queries on one connection are answered in order as they arrive (pipelining), each
//! query must arrive within the idle timeout, and connections are bounded in total, per client
//! address and in queries.
//!
//! [`ServerHandle::shutdown`] is the graceful stop of SIGTERM: listeners close first, UDP
//! threads answer the packets they have read (and what is already queued on their socket),
//! TCP connections answer the queries they have received and close between two answers.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::answer::log::{LogHandle, Tap};
use crate::answer::Transport;
use crate::base::liveness::Liveness;
use crate::config::LoadedConfig;
use crate::snapshot::SharedSnapshot;

mod tcp;
pub mod udp;
/// Compiled in every build (so its tests and lints run by default); only the `xdp` feature
/// lets `start` use it.
pub mod xdp;

/// Listener settings fixed at start (changing them needs a restart).
#[derive(Debug, Clone)]
pub struct ListenSettings {
    pub addrs: Vec<SocketAddr>,
    pub udp_sockets: usize,
    /// TCP threads; 0 = as many as UDP sockets.
    pub tcp_threads: usize,
    pub tcp_max_connections: usize,
    pub tcp_max_per_client: usize,
    /// `[server] xdp`: interfaces whose queries are taken over AF_XDP (feature `xdp`).
    pub xdp: Vec<String>,
}

impl ListenSettings {
    /// The settings a config asks for.
    pub fn from_config(c: &LoadedConfig) -> ListenSettings {
        let s = &c.config.server;
        ListenSettings {
            addrs: c.listen.clone(),
            udp_sockets: s.udp_sockets,
            tcp_threads: s.tcp_threads,
            tcp_max_connections: *s.tcp_max_connections.get_ref(),
            tcp_max_per_client: *s.tcp_max_per_client.get_ref(),
            xdp: s.xdp.iter().map(|i| i.get_ref().clone()).collect(),
        }
    }
}

/// A running server; dropping it does not stop it, [`ServerHandle::shutdown`] does.
pub struct ServerHandle {
    /// The addresses actually bound (ports filled in when 0 was asked for).
    pub addrs: Vec<SocketAddr>,
    /// One heartbeat per UDP thread and TCP accept loop, for the systemd watchdog.
    pub liveness: Liveness,
    udp_stop: Arc<AtomicBool>,
    udp_threads: Vec<std::thread::JoinHandle<()>>,
    tcp: tcp::TcpThreads,
    querylog: LogHandle,
    /// The interfaces this server answers on over AF_XDP (`[server] xdp`), for `/status` and
    /// the metrics (`crate::admin::AdminState::xdp`); empty without the `xdp` feature.
    pub xdp: xdp::Interfaces,
}

impl ServerHandle {
    /// Stops accepting, answers what was received, and waits for the tasks: about 1.5 s at
    /// most, so that SIGTERM ends the process within the SPEC's 2 s.
    pub async fn shutdown(mut self) {
        // TCP first: its threads close their listeners at once and connections begin to
        // finish, while the UDP threads are being stopped below.
        let tcp_threads = self.tcp.stop();
        self.udp_stop.store(true, Ordering::Relaxed);
        // Wake the blocked receivers now rather than at their next poll: an empty datagram to
        // each address (the loopback one for a wildcard bind), one per socket.
        if let Ok(waker) = std::net::UdpSocket::bind("127.0.0.1:0") {
            let waker6 = std::net::UdpSocket::bind("[::1]:0").ok();
            for a in &self.addrs {
                let mut to = *a;
                if to.ip().is_unspecified() {
                    to.set_ip(if to.is_ipv4() {
                        std::net::Ipv4Addr::LOCALHOST.into()
                    } else {
                        std::net::Ipv6Addr::LOCALHOST.into()
                    });
                }
                for _ in 0..self.udp_threads.len() {
                    let _ = match (&waker6, to.is_ipv6()) {
                        (Some(w6), true) => w6.send_to(&[], to),
                        _ => waker.send_to(&[], to),
                    };
                }
            }
        }
        let threads = std::mem::take(&mut self.udp_threads);
        let udp_done = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        // The TCP threads bound their own wait (tcp::SHUTDOWN_WAIT); this is the backstop.
        let tcp_done = tokio::task::spawn_blocking(move || {
            for t in tcp_threads {
                let _ = t.join();
            }
        });
        let _ =
            tokio::time::timeout(tcp::SHUTDOWN_WAIT + Duration::from_millis(300), tcp_done).await;
        // UDP threads stop within their drain bound (udp::STOP_DRAIN) plus one poll interval.
        let _ = tokio::time::timeout(Duration::from_millis(500), udp_done).await;
        // Then the query log: what is queued is written and a dnstap stream ends with STOP.
        let log = self.querylog.sink.clone();
        let _ = tokio::task::spawn_blocking(move || log.shutdown(Duration::from_millis(400))).await;
    }
}

fn udp_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_port(true)?;
    // Bursts queue in the kernel instead of being dropped while a worker is busy.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    Ok(s.into())
}

fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    // One listener per TCP thread, the kernel spreading connections over them.
    s.set_reuse_port(true)?;
    // Accepted sockets inherit it, which saves a setsockopt per connection.
    s.set_tcp_nodelay(true)?;
    tcp::sys::defer_accept(&s);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// Fails ("address in use") when any other socket holds `addr` for UDP or TCP. SO_REUSEPORT,
/// which lets our own threads' sockets share a port, would as quietly let a second process of
/// the same user (a second meridian started by mistake) share it, each answering a part of the
/// queries; so the port is first bound once without it, which fails as a plain bind does.
/// SO_REUSEADDR on the TCP probe: connections of a previous run in TIME_WAIT own nothing.
fn check_free(addr: SocketAddr) -> io::Result<()> {
    let domain = Domain::for_address(addr);
    let udp = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    let tcp = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        udp.set_only_v6(true)?;
        tcp.set_only_v6(true)?;
    }
    tcp.set_reuse_address(true)?;
    udp.bind(&addr.into())?;
    tcp.bind(&addr.into())?;
    Ok(())
}

/// Binds UDP and TCP on one address, `udp_count` UDP sockets and `tcp_count` TCP listeners.
/// With port 0 the UDP port is chosen by the kernel and TCP must take the same one; if another
/// process holds it for TCP, try another port.
fn bind_pair(
    addr: SocketAddr,
    udp_count: usize,
    tcp_count: usize,
) -> io::Result<(Vec<std::net::UdpSocket>, Vec<std::net::TcpListener>)> {
    let tries = if addr.port() == 0 { 20 } else { 1 };
    let mut last_err = None;
    for _ in 0..tries {
        let first = udp_socket(addr)?;
        let bound = first.local_addr()?;
        match tcp_listener(bound) {
            Ok(tcp) => {
                let mut udps = vec![first];
                let mut tcps = vec![tcp];
                for _ in 1..udp_count {
                    udps.push(udp_socket(bound)?);
                }
                for _ in 1..tcp_count {
                    tcps.push(tcp_listener(bound)?);
                }
                return Ok((udps, tcps));
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("could not bind")))
}

/// Binds every listener and starts serving, logging queries to `querylog` (the control
/// floor's query log, `QueryLog::handle`; it is shut down with the server, after the
/// listeners). Must run inside a tokio runtime.
pub fn start(
    snapshot: SharedSnapshot,
    settings: &ListenSettings,
    querylog: LogHandle,
) -> io::Result<ServerHandle> {
    let udp_stop = Arc::new(AtomicBool::new(false));
    let mut udp_threads = Vec::new();
    let mut addrs = Vec::new();
    let mut liveness = Liveness::default();
    let udp_count = if settings.udp_sockets == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        settings.udp_sockets
    };
    let tcp_slots = tcp::Slots::new(settings.tcp_max_connections, settings.tcp_max_per_client);
    let tcp_count = match settings.tcp_threads {
        0 => udp_count,
        n => n,
    };
    // TCP thread i accepts from the i-th listener of every address.
    let mut tcp_listeners: Vec<Vec<tcp::Listen>> = (0..tcp_count).map(|_| Vec::new()).collect();
    // All checked before any is bound: a wildcard and a specific address on one port (both
    // ours) would otherwise look taken to each other.
    for &addr in settings.addrs.iter().filter(|a| a.port() != 0) {
        check_free(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    }
    for &addr in &settings.addrs {
        let (udps, tcps) = bind_pair(addr, udp_count, tcp_count)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        let local = tcps[0].local_addr()?;
        addrs.push(local);
        for (i, u) in udps.into_iter().enumerate() {
            let (snapshot, stop) = (snapshot.clone(), udp_stop.clone());
            let beat = liveness.add(format!("udp {addr} #{i}"));
            let log = Tap::new(&querylog, Transport::Udp, local);
            udp_threads.push(
                std::thread::Builder::new()
                    .name(format!("udp {addr}"))
                    .spawn(move || {
                        crate::base::sched::answering();
                        udp::run(u, snapshot, stop, beat, log)
                    })?,
            );
        }
        for (i, sock) in tcps.into_iter().enumerate() {
            tcp_listeners[i].push(tcp::Listen {
                sock,
                tap: Tap::new(&querylog, Transport::Tcp, local),
            });
        }
    }
    let per_thread = tcp_listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| (l, liveness.add(format!("tcp #{i}"))))
        .collect();
    let tcp = tcp::TcpThreads::start(per_thread, &snapshot, &tcp_slots)?;
    let running_xdp = xdp::Interfaces::default();
    // After the sockets are bound: an interface XDP cannot serve falls back to them.
    #[cfg(feature = "xdp")]
    udp_threads.extend(xdp::start(
        &settings.xdp,
        &running_xdp,
        &addrs,
        &snapshot,
        &udp_stop,
        &mut liveness,
        &querylog,
    ));
    #[cfg(not(feature = "xdp"))]
    if !settings.xdp.is_empty() {
        tracing::warn!(
            "[server] xdp is set but this build has no `xdp` feature; the UDP sockets answer \
             every query"
        );
    }
    Ok(ServerHandle {
        addrs,
        liveness,
        udp_stop,
        udp_threads,
        tcp,
        querylog,
        xdp: running_xdp,
    })
}
