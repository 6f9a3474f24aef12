//! Sockets: UDP and TCP listeners on every `listen` address, feeding [`crate::dns::handle`].
//!
//! UDP uses several SO_REUSEPORT sockets per address, one blocking thread each with batched
//! system calls ([`udp`]); the hickory-server loop copies, spawns and crosses a channel per
//! query (~20 % of a core's throughput, `shared/notes/hickory-0.26.md`). TCP follows
//! RFC 7766: queries on one connection are answered in order as they arrive (pipelining),
//! idle connections are closed, and the number of connections at once is bounded.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::dns::{handle, Transport};
use crate::snapshot::SharedSnapshot;

pub mod udp;

/// Listener settings fixed at start (changing them needs a restart).
#[derive(Debug, Clone)]
pub struct ListenSettings {
    pub addrs: Vec<SocketAddr>,
    pub udp_sockets: usize,
    pub tcp_max_connections: usize,
}

/// A running server; dropping it does not stop it, [`ServerHandle::shutdown`] does.
pub struct ServerHandle {
    /// The addresses actually bound (ports filled in when 0 was asked for).
    pub addrs: Vec<SocketAddr>,
    udp_stop: Arc<AtomicBool>,
    udp_threads: Vec<std::thread::JoinHandle<()>>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl ServerHandle {
    /// Stops accepting, lets in-flight TCP answers finish, and waits for the tasks.
    pub async fn shutdown(mut self) {
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
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        let _ = self.stop.send(true);
        let deadline = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                r = self.tasks.join_next() => if r.is_none() { break },
                _ = &mut deadline => { self.tasks.abort_all(); break }
            }
        }
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
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// Binds UDP and TCP on one address. With port 0 the UDP port is chosen by the kernel and TCP
/// must take the same one; if another process holds it for TCP, try another port.
fn bind_pair(
    addr: SocketAddr,
    udp_count: usize,
) -> io::Result<(Vec<std::net::UdpSocket>, std::net::TcpListener)> {
    let tries = if addr.port() == 0 { 20 } else { 1 };
    let mut last_err = None;
    for _ in 0..tries {
        let first = udp_socket(addr)?;
        let bound = first.local_addr()?;
        match tcp_listener(bound) {
            Ok(tcp) => {
                let mut udps = vec![first];
                for _ in 1..udp_count {
                    udps.push(udp_socket(bound)?);
                }
                return Ok((udps, tcp));
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("could not bind")))
}

/// Binds every listener and starts serving. Must run inside a tokio runtime.
pub fn start(snapshot: SharedSnapshot, settings: &ListenSettings) -> io::Result<ServerHandle> {
    let (stop, stop_rx) = watch::channel(false);
    let udp_stop = Arc::new(AtomicBool::new(false));
    let mut udp_threads = Vec::new();
    let mut tasks = JoinSet::new();
    let mut addrs = Vec::new();
    let udp_count = if settings.udp_sockets == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        settings.udp_sockets
    };
    let tcp_slots = Arc::new(Semaphore::new(settings.tcp_max_connections));
    for &addr in &settings.addrs {
        let (udps, tcp) = bind_pair(addr, udp_count)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        addrs.push(tcp.local_addr()?);
        for u in udps {
            let (snapshot, stop) = (snapshot.clone(), udp_stop.clone());
            udp_threads.push(
                std::thread::Builder::new()
                    .name(format!("udp {addr}"))
                    .spawn(move || udp::run(u, snapshot, stop))?,
            );
        }
        let listener = TcpListener::from_std(tcp)?;
        tasks.spawn(tcp_accept_loop(
            listener,
            snapshot.clone(),
            tcp_slots.clone(),
            stop_rx.clone(),
        ));
    }
    Ok(ServerHandle {
        addrs,
        udp_stop,
        udp_threads,
        stop,
        tasks,
    })
}

async fn tcp_accept_loop(
    listener: TcpListener,
    snapshot: SharedSnapshot,
    slots: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("tcp accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Over the limit: close at once rather than let it wait (RFC 7766 §6.2.2).
            drop(stream);
            continue;
        };
        let snapshot = snapshot.clone();
        let stop = stop.clone();
        conns.spawn(async move {
            let _ = tcp_conn(stream, peer, snapshot, stop).await;
            drop(permit);
        });
    }
    // Give open connections a moment to finish the answer they are writing.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
}

async fn tcp_conn(
    mut stream: TcpStream,
    peer: SocketAddr,
    snapshot: SharedSnapshot,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(512);
    loop {
        let idle = snapshot.load().tcp_idle_timeout();
        let mut len = [0u8; 2];
        tokio::select! {
            r = tokio::time::timeout(idle, stream.read_exact(&mut len)) => match r {
                Ok(Ok(_)) => {}
                _ => return Ok(()), // idle timeout, EOF or error: close
            },
            _ = stop.changed() => return Ok(()),
        }
        let n = u16::from_be_bytes(len) as usize;
        if n == 0 {
            return Ok(());
        }
        buf.resize(n, 0);
        match tokio::time::timeout(idle, stream.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let resp = {
            let snap = snapshot.load();
            handle(&snap, &buf, peer, Transport::Tcp)
        };
        if let Some(resp) = resp {
            let mut out = Vec::with_capacity(resp.len() + 2);
            out.extend_from_slice(&(resp.len() as u16).to_be_bytes());
            out.extend_from_slice(&resp);
            stream.write_all(&out).await?;
        }
    }
}
