//! Answers at the NIC (SPEC "Answers at the NIC"; build feature `xdp`): on the interfaces of
//! `[server] xdp`, an XDP program hands UDP queries to our listen addresses and port to AF_XDP
//! sockets, one per receive queue, each served by its own thread; everything else goes to the
//! kernel. Queries are answered by [`super::udp::answer`], the same function as the socket
//! path (fast path, reference, RRL, cookies, ECS, NSID), inside the same query-log wrapper and
//! with the same metrics, so the DNS bytes are the same; only the Ethernet/IP/UDP headers are
//! written here (`packet.rs`).
//!
//! Why hand-written (docs/performance.md, "AF_XDP"): the crates (xsk-rs → libxdp-sys →
//! libbpf-sys) build libxdp and libbpf from C with bindgen and compile their BPF objects with
//! clang at build time, and the program they load redirects every packet of a queue, TCP and
//! ARP included. Here the rings are ~300 lines over `libc`, and the program (`bpf.rs`) is
//! assembled at start with our addresses and port in it: nothing to build but Rust.
//!
//! An interface that cannot do it (missing, no XDP in the kernel, no privilege, another XDP
//! program attached) is logged at start with the reason, and its queries go on reaching the
//! UDP sockets, which are bound whatever happens here.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::answer::log::{LogHandle, Tap};
use crate::base::counters;
use crate::base::liveness::{Beat, Liveness};
use crate::dns::Transport;
use crate::snapshot::SharedSnapshot;

mod bpf;
pub mod packet;
mod xsk;

/// Frames taken from RX per round.
const BATCH: usize = 64;
/// How long an idle thread waits for frames before it looks at the stop flag.
const IDLE_POLL_MS: i32 = 200;

/// What `/status` and the metrics show of one interface served over AF_XDP.
#[derive(Debug)]
pub struct Interface {
    pub name: String,
    pub queues: u32,
    /// `native` (the driver's hook) or `generic` (the kernel's, any driver).
    pub mode: &'static str,
    /// `zerocopy` or `copy`.
    pub copy: &'static str,
    /// Replies sent from this interface's sockets.
    pub answered: AtomicU64,
    /// Queries not answered here: replies too large for the link (an XDP send cannot fragment),
    /// or a frame that was not a plain UDP datagram after all.
    pub dropped: AtomicU64,
}

/// The interfaces one server serves over AF_XDP now (empty when none, or without the
/// feature): a handle of that server (`crate::server::ServerHandle::xdp`), passed to what
/// reads it (`/status` `xdp` through the admin API's state, the metrics exposition), not
/// process-wide state. Clones share.
#[derive(Debug, Clone, Default)]
pub struct Interfaces(Arc<Mutex<Vec<Arc<Interface>>>>);

impl Interfaces {
    /// The interfaces served over AF_XDP, for `/status` and the metrics.
    pub fn list(&self) -> Vec<Arc<Interface>> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// `/status` `"xdp"`: one object per interface served over AF_XDP (SPEC: interface,
    /// queues, mode), with the copy mode and the counters.
    pub fn status_json(&self) -> serde_json::Value {
        self.list()
            .iter()
            .map(|i| {
                serde_json::json!({
                    "interface": i.name,
                    "queues": i.queues,
                    "mode": i.mode,
                    "copy": i.copy,
                    "answered": i.answered.load(Ordering::Relaxed),
                    "dropped": i.dropped.load(Ordering::Relaxed),
                })
            })
            .collect()
    }

    fn add(&self, iface: Arc<Interface>) {
        if let Ok(mut v) = self.0.lock() {
            v.push(iface);
        }
    }
}

/// What holds one interface's program in place: the link (dropping it detaches the program),
/// the program and the socket map. Shared by the interface's threads; the last one to end
/// drops it.
struct Attached {
    _link: OwnedFd,
    _prog: OwnedFd,
    _map: OwnedFd,
    iface: Arc<Interface>,
    running: Interfaces,
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Ok(mut v) = self.running.0.lock() {
            v.retain(|i| !Arc::ptr_eq(i, &self.iface));
        }
        tracing::info!(interface = %self.iface.name, "xdp: program detached");
    }
}

/// Starts AF_XDP on each interface of `ifaces` for the bound listen addresses `addrs`. Every
/// interface that cannot do it is logged (with why) and left to the sockets. Returns the
/// threads, which end when `stop` is set; the interfaces served are kept in `running` (the
/// server's own [`Interfaces`]) while they are.
pub fn start(
    ifaces: &[String],
    running: &Interfaces,
    addrs: &[SocketAddr],
    snapshot: &SharedSnapshot,
    stop: &Arc<AtomicBool>,
    liveness: &mut Liveness,
    querylog: &LogHandle,
) -> Vec<std::thread::JoinHandle<()>> {
    let mut threads = Vec::new();
    for name in ifaces {
        match start_one(name, running, addrs, snapshot, stop, liveness, querylog) {
            Ok(t) => threads.extend(t),
            Err(e) => tracing::warn!(
                interface = %name,
                "xdp: not used on {name}: {e}; its queries are answered by the UDP sockets"
            ),
        }
    }
    threads
}

fn ifindex(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::other("bad interface name"))?;
    // SAFETY: a NUL-terminated string that lives across the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::other(format!("no interface named {name}")))
    } else {
        Ok(i)
    }
}

/// Receive queues of the interface (`/sys/class/net/NAME/queues/rx-N`).
fn rx_queues(name: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{name}/queues"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(1)
        .max(1)
}

fn mtu(name: &str) -> usize {
    std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1500)
}

fn targets(addrs: &[SocketAddr]) -> io::Result<bpf::Targets> {
    let Some(first) = addrs.first() else {
        return Err(io::Error::other("no listen address"));
    };
    let mut t = bpf::Targets {
        port: first.port(),
        ..Default::default()
    };
    for a in addrs {
        if a.port() != t.port {
            return Err(io::Error::other(
                "the listen addresses use more than one port (the program matches one)",
            ));
        }
        match a.ip() {
            IpAddr::V4(v) if v.is_unspecified() => t.any4 = true,
            IpAddr::V4(v) => t.v4.push(v),
            IpAddr::V6(v) if v.is_unspecified() => t.any6 = true,
            IpAddr::V6(v) => t.v6.push(v),
        }
    }
    Ok(t)
}

/// An AF_XDP socket on queue `q`, retried while the queue is busy for up to [`BUSY_WAIT`]: the
/// kernel frees a dead process's socket on a queue a moment after the process is gone, so a
/// restart right after a crash (systemd's `Restart=`) would otherwise find the queue taken and
/// fall back to the UDP sockets for the whole run (the lab's SIGKILL-then-restart saw EBUSY).
fn open_socket(index: u32, q: u32) -> io::Result<xsk::Socket> {
    let deadline = std::time::Instant::now() + BUSY_WAIT;
    loop {
        match xsk::Socket::new(index, q) {
            Err(e)
                if e.raw_os_error() == Some(libc::EBUSY)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

/// How long a busy queue is waited for at start (see [`open_socket`]).
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

fn start_one(
    name: &str,
    running: &Interfaces,
    addrs: &[SocketAddr],
    snapshot: &SharedSnapshot,
    stop: &Arc<AtomicBool>,
    liveness: &mut Liveness,
    querylog: &LogHandle,
) -> io::Result<Vec<std::thread::JoinHandle<()>>> {
    let index = ifindex(name)?;
    let t = targets(addrs)?;
    let queues = rx_queues(name);
    let map = bpf::xskmap(queues).map_err(|e| explain("cannot create the socket map", e))?;
    let prog = bpf::load(&map, &t)?;
    // Sockets first, in the map, then the program: a frame redirected before its queue has a
    // socket would be passed to the kernel anyway (XDP_PASS in the redirect's flags).
    let mut socks = Vec::new();
    for q in 0..queues {
        match open_socket(index, q) {
            Ok(s) => {
                bpf::set_socket(&map, q, s.raw_fd())?;
                socks.push(s);
            }
            Err(e) if q == 0 => {
                return Err(explain("cannot open an AF_XDP socket on queue 0", e));
            }
            // sysfs lists the queues allocated, which can be more than the driver has active
            // (`ethtool -l`); frames of a queue without a socket go to the kernel.
            Err(e) => {
                tracing::warn!(
                    interface = %name,
                    "xdp: no AF_XDP socket on queue {q} of {name} ({e}); serving queues 0 to {}",
                    q - 1
                );
                break;
            }
        }
    }
    let queues = socks.len() as u32;
    let (link, mode) = match bpf::attach(&prog, index, bpf::XDP_FLAGS_DRV_MODE) {
        Ok(l) => (l, "native"),
        Err(native) => match bpf::attach(&prog, index, bpf::XDP_FLAGS_SKB_MODE) {
            Ok(l) => (l, "generic"),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                return Err(io::Error::other(
                    "another XDP program is attached to it (`ip link show` names it)",
                ))
            }
            Err(e) => {
                return Err(explain(
                    &format!("cannot attach the program (native: {native})"),
                    e,
                ))
            }
        },
    };
    let copy = if socks.iter().all(|s| s.bind == xsk::Copy::ZeroCopy) {
        "zerocopy"
    } else {
        "copy"
    };
    let iface = Arc::new(Interface {
        name: name.to_string(),
        queues,
        mode,
        copy,
        answered: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
    });
    let attached = Arc::new(Attached {
        _link: link,
        _prog: prog,
        _map: map,
        iface: iface.clone(),
        running: running.clone(),
    });
    running.add(iface.clone());
    tracing::info!(
        interface = %name,
        "xdp: answering UDP to {addrs:?} on {name}: {queues} queue(s), {mode} mode, {copy}"
    );
    let max_frame = mtu(name) + 14;
    let mut threads = Vec::new();
    for (q, sock) in socks.into_iter().enumerate() {
        let beat = liveness.add(format!("xdp {name} queue {q}"));
        // One query-log tap per listen address: a query is logged with the address it was
        // sent to, as the socket path logs its socket's.
        let taps: Vec<(SocketAddr, Tap)> = addrs
            .iter()
            .map(|&a| (a, Tap::new(querylog, Transport::Udp, a)))
            .collect();
        let (snapshot, stop, attached) = (snapshot.clone(), stop.clone(), attached.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("xdp {name}/{q}"))
                .spawn(move || {
                    crate::base::sched::answering();
                    serve(sock, snapshot, stop, beat, taps, attached, max_frame)
                })?,
        );
    }
    Ok(threads)
}

/// An error with what was being done, and the usual cause of EPERM.
fn explain(what: &str, e: io::Error) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => " (needs CAP_NET_ADMIN, CAP_BPF or root)",
        Some(libc::EAFNOSUPPORT) => " (the kernel has no AF_XDP: CONFIG_XDP_SOCKETS)",
        _ => "",
    };
    io::Error::new(e.kind(), format!("{what}: {e}{hint}"))
}

/// The listen address a query to `local` came in on (the tap that logs it).
fn tap_index<T>(taps: &[(SocketAddr, T)], local: SocketAddr) -> usize {
    taps.iter()
        .position(|(a, _)| a.ip() == local.ip())
        .or_else(|| {
            taps.iter()
                .position(|(a, _)| a.ip().is_unspecified() && a.is_ipv4() == local.is_ipv4())
        })
        .unwrap_or(0)
}

/// One queue's loop: receive a batch, answer each frame in place, send the replies, give the
/// rest back to the kernel. Mirrors `udp::run_batched_beating`: the beat per round, the same
/// metrics, and after `stop` what is already received is answered for at most the UDP drain.
fn serve(
    mut sock: xsk::Socket,
    snapshot: SharedSnapshot,
    stop: Arc<AtomicBool>,
    beat: Arc<Beat>,
    taps: Vec<(SocketAddr, Tap)>,
    attached: Arc<Attached>,
    max_frame: usize,
) {
    let iface = attached.iface.clone();
    let mut rx: Vec<(u64, u32)> = Vec::with_capacity(BATCH);
    let mut tx: Vec<(u64, u32)> = Vec::with_capacity(BATCH);
    let mut back: Vec<u64> = Vec::with_capacity(BATCH * 2);
    let mut out: Vec<u8> = Vec::with_capacity(1232);
    let mut drain_until: Option<Instant> = None;
    loop {
        beat.stamp();
        if stop.load(Ordering::Relaxed) {
            let until = *drain_until.get_or_insert_with(|| Instant::now() + super::udp::STOP_DRAIN);
            if Instant::now() >= until || !sock.has_rx() {
                break;
            }
        }
        // Frames sent since last round go back to the kernel for receiving.
        back.clear();
        sock.completed(&mut back);
        let done = back.len();
        sock.refill(back.drain(..done));
        rx.clear();
        sock.receive(&mut rx, BATCH);
        if rx.is_empty() {
            if drain_until.is_none() {
                sock.wait(IDLE_POLL_MS);
            }
            continue;
        }
        let started = Instant::now();
        // One snapshot per batch, as the UDP loop loads it.
        let snap = snapshot.load();
        let answer = |i: usize, p: &[u8], s: SocketAddr, o: &mut Vec<u8>| {
            super::udp::answer(&snap, &taps[i].1, p, s, o)
        };
        tx.clear();
        let umem = sock.umem();
        for &(addr, len) in &rx {
            let (addr_us, len_us) = (addr as usize, len as usize);
            let chunk_end = (addr_us - addr_us % xsk::FRAME + xsk::FRAME).min(umem.len());
            if addr_us + len_us > chunk_end {
                back.push(addr);
                continue;
            }
            let frame = &mut umem[addr_us..chunk_end];
            // A broadcast or multicast destination (a wildcard listen address matches them)
            // must not become the source of a reply.
            let Some(d) = packet::parse(&frame[..len_us]).filter(|d| unicast(d.local.ip())) else {
                iface.dropped.fetch_add(1, Ordering::Relaxed);
                back.push(addr);
                continue;
            };
            let i = tap_index(&taps, d.local);
            let sent = answer(i, &frame[d.payload.clone()], d.client, &mut out);
            if !sent {
                back.push(addr);
                continue;
            }
            match packet::write_reply(frame, &d, &out, max_frame) {
                Some(n) => {
                    counters::record_sent(false, &out);
                    tx.push((addr, n as u32));
                }
                None => {
                    iface.dropped.fetch_add(1, Ordering::Relaxed);
                    back.push(addr);
                }
            }
        }
        counters::observe_batch(false, started.elapsed(), rx.len());
        let queued = sock.transmit(&tx);
        iface.answered.fetch_add(queued as u64, Ordering::Relaxed);
        // Replies that found no room in the TX ring are lost like a full socket buffer's.
        back.extend(tx[queued..].iter().map(|&(a, _)| a));
        let n = back.len();
        sock.refill(back.drain(..n));
    }
    // Let the last replies leave before the socket (and perhaps the program) goes.
    let deadline = Instant::now() + Duration::from_millis(50);
    while Instant::now() < deadline {
        back.clear();
        sock.completed(&mut back);
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(sock);
    drop(attached);
}

fn unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => !v.is_multicast() && !v.is_broadcast(),
        IpAddr::V6(v) => !v.is_multicast(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_reply_comes_from_a_broadcast_or_multicast_address() {
        for ip in ["255.255.255.255", "224.0.0.251", "ff02::fb"] {
            assert!(!unicast(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["192.0.2.1", "2001:db8::1"] {
            assert!(unicast(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_query_is_logged_with_the_listen_address_it_came_in_on() {
        let taps: Vec<(SocketAddr, ())> = ["0.0.0.0:53", "[2001:db8::1]:53", "192.0.2.1:53"]
            .iter()
            .map(|a| (a.parse().unwrap(), ()))
            .collect();
        assert_eq!(
            tap_index(&taps, "192.0.2.1:53".parse().unwrap()),
            2,
            "exact first"
        );
        assert_eq!(
            tap_index(&taps, "192.0.2.9:53".parse().unwrap()),
            0,
            "else the wildcard"
        );
        assert_eq!(tap_index(&taps, "[2001:db8::1]:53".parse().unwrap()), 1);
    }

    #[test]
    fn targets_take_one_port_and_split_wildcards_by_family() {
        let a: Vec<SocketAddr> = vec![
            "0.0.0.0:53".parse().unwrap(),
            "[2001:db8::1]:53".parse().unwrap(),
        ];
        let t = targets(&a).unwrap();
        assert!(t.any4 && !t.any6 && t.v4.is_empty() && t.v6.len() == 1 && t.port == 53);
        let b: Vec<SocketAddr> = vec![
            "192.0.2.1:53".parse().unwrap(),
            "192.0.2.1:5300".parse().unwrap(),
        ];
        assert!(targets(&b).is_err());
    }
}
