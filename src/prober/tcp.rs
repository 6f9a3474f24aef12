//! TCP for probes through tokio: the connect that HTTPS probes and probes of a name start with
//! (a `tcp://` check of a name is only that), from the profile's `source` address when one is
//! set, and with a name resolved at each probe. Plain probes of an address connect on the
//! prober's own epoll set instead (`super::plain`).

use std::net::{IpAddr, SocketAddr};

use super::probe::Outcome;

/// Where a probe connects to.
#[derive(Debug, Clone)]
pub(super) enum Dest {
    /// An address in the URL: parsed once, when the probe is made.
    Addr(SocketAddr),
    /// `host:port` with a name, looked up through the system resolver at every probe (the
    /// addresses of a load balancer change).
    Name(String),
}

impl Dest {
    /// `host:port`, the host as in a URL (IPv6 in brackets).
    pub fn parse(host_port: &str) -> Dest {
        match host_port.parse::<SocketAddr>() {
            Ok(a) => Dest::Addr(a),
            Err(_) => Dest::Name(host_port.to_string()),
        }
    }
}

/// A `tcp://` check: healthy when the connection is accepted.
#[derive(Debug)]
pub(super) struct TcpProbe {
    pub dest: Dest,
    pub source: Option<IpAddr>,
}

impl TcpProbe {
    pub async fn run(&self) -> Outcome {
        match connect(&self.dest, self.source).await {
            Ok(s) => {
                close_now(&s);
                Outcome::ok(None)
            }
            Err(o) => o,
        }
    }
}

pub(super) fn io_failure(e: &std::io::Error) -> Outcome {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => Outcome::fail("refused", "refused"),
        std::io::ErrorKind::TimedOut => Outcome::fail("timeout", "timeout"),
        _ => Outcome::fail("connect", format!("connect error: {e}")),
    }
}

/// Connects to `dest`, from `source` when given (bound before connect, so the endpoint and a
/// firewall see the address the profile names). A name that does not resolve is reported as
/// such rather than as a connect error.
pub(super) async fn connect(
    dest: &Dest,
    source: Option<IpAddr>,
) -> Result<tokio::net::TcpStream, Outcome> {
    match dest {
        Dest::Addr(a) => connect_one(*a, source).await.map_err(|e| io_failure(&e)),
        Dest::Name(dest) => {
            let host = dest.rsplit_once(':').map_or(dest.as_str(), |(h, _)| h);
            let addrs: Vec<SocketAddr> = match tokio::net::lookup_host(dest.as_str()).await {
                Ok(a) => a.collect(),
                Err(e) => {
                    return Err(Outcome::fail(
                        "resolve",
                        format!("cannot resolve {host}: {e}"),
                    ))
                }
            };
            let mut last = Outcome::fail("resolve", format!("cannot resolve {host}: no addresses"));
            if let Some(src) = source {
                if !addrs.iter().any(|a| a.is_ipv4() == src.is_ipv4()) {
                    last = Outcome::fail(
                        "connect",
                        format!("{dest} has no address of the family of source {src}"),
                    );
                }
            }
            for a in addrs {
                if source.is_some_and(|src| src.is_ipv4() != a.is_ipv4()) {
                    continue;
                }
                match connect_one(a, source).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = io_failure(&e),
                }
            }
            Err(last)
        }
    }
}

async fn connect_one(
    a: SocketAddr,
    source: Option<IpAddr>,
) -> std::io::Result<tokio::net::TcpStream> {
    match source {
        Some(src) if src.is_ipv4() != a.is_ipv4() => Err(std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("{a} is not of the family of source {src}"),
        )),
        Some(src) => {
            let sock = if src.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            }?;
            sock.bind(SocketAddr::new(src, 0))?;
            sock.connect(a).await
        }
        None => tokio::net::TcpStream::connect(a).await,
    }
}

/// Ends a probe's connection with a reset rather than a FIN exchange (SO_LINGER 0), as
/// HAProxy's checks do: the probe has what it came for, and thousands of probes a second
/// would otherwise leave as many sockets in TIME_WAIT and cost two more packets each.
pub(super) fn close_now(s: &tokio::net::TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(std::time::Duration::ZERO));
}
