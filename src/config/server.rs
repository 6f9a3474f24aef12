//! `[server]`: listeners, the zones folder, the UDP/TCP limits, `state_dir` and the cookie
//! secret.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;

use super::{parse_duration, Cx, Problem};
use crate::base::secret::Secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: Spanned<Vec<Spanned<String>>>,
    pub zones: Spanned<String>,
    /// Largest UDP response we send to an EDNS client (RFC 6891 and the DNS flag day 2020
    /// recommendation of 1232 to avoid IP fragmentation).
    #[serde(default = "default_max_udp_payload")]
    pub max_udp_payload: Spanned<u16>,
    /// Idle time after which a TCP connection is closed (RFC 7766 §6.2.3).
    #[serde(default = "default_tcp_idle_timeout")]
    pub tcp_idle_timeout: Spanned<String>,
    /// TCP connections open at once; at the limit a new one takes the slot of the connection
    /// idle the longest (RFC 7766 §6.2.3).
    #[serde(default = "default_tcp_max_connections")]
    pub tcp_max_connections: Spanned<usize>,
    /// TCP connections open at once from one client address; more are closed at once.
    #[serde(default = "default_tcp_max_per_client")]
    pub tcp_max_per_client: Spanned<usize>,
    /// Queries answered on one TCP connection before it is closed; 0 = no limit (the default).
    #[serde(default = "default_tcp_max_queries")]
    pub tcp_max_queries: Spanned<usize>,
    /// UDP sockets (SO_REUSEPORT) per listen address; 0 = one per CPU.
    #[serde(default)]
    pub udp_sockets: usize,
    /// TCP threads, each with its own SO_REUSEPORT listener per address and epoll loop;
    /// 0 = as many as UDP sockets.
    #[serde(default)]
    pub tcp_threads: usize,
    /// Folder for state that must outlive the process (drains); default `state/` beside the
    /// config file. See [`LoadedConfig::state_dir`].
    pub state_dir: Option<Spanned<String>>,
    /// DNS Cookies: the SipHash key of server cookies, 32 hex digits, the same at every site
    /// behind one anycast address; random per start when absent.
    pub cookie_secret: Option<Spanned<String>>,
    /// Interfaces whose UDP queries are answered over AF_XDP (feature `xdp`, `config/xdp.rs`).
    #[serde(default)]
    pub xdp: Vec<Spanned<String>>,
}

fn default_max_udp_payload() -> Spanned<u16> {
    Spanned::new(0..0, 1232)
}
fn default_tcp_idle_timeout() -> Spanned<String> {
    Spanned::new(0..0, "10s".to_string())
}
fn default_tcp_max_connections() -> Spanned<usize> {
    Spanned::new(0..0, 1024)
}
fn default_tcp_max_per_client() -> Spanned<usize> {
    Spanned::new(0..0, 16)
}
fn default_tcp_max_queries() -> Spanned<usize> {
    // No limit, as Knot, NSD and gdnsd: closing a pipelined stream loses the queries in flight.
    Spanned::new(0..0, 0)
}

/// `[server]` as the rest of the program reads it, as far as it could be read (the section is
/// required, so there is always one).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The addresses of `listen` that parse.
    pub listen: Vec<SocketAddr>,
    pub tcp_idle_timeout: Duration,
    pub cookie_secret: Option<Secret>,
}

/// `tcp_idle_timeout` when it does not read.
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks `[server]`; `zones_dir` is `zones` resolved against the config's folder.
pub fn check(c: &ServerConfig, cx: &Cx, zones_dir: &Path, out: &mut Vec<Problem>) -> Settings {
    let mut s = Settings {
        tcp_idle_timeout: DEFAULT_TCP_IDLE_TIMEOUT,
        ..Settings::default()
    };
    if c.listen.get_ref().is_empty() {
        out.push(cx.at(
            c.listen.span(),
            "server.listen: at least one address is needed",
        ));
    }
    for l in c.listen.get_ref() {
        match l.get_ref().parse::<SocketAddr>() {
            Ok(a) => s.listen.push(a),
            Err(_) => out.push(cx.at(
                l.span(),
                format!(
                    "server.listen: `{}` is not an address with a port (e.g. \"127.0.0.1:5300\" or \"[::1]:5300\")",
                    l.get_ref()
                ),
            )),
        }
    }
    let payload = *c.max_udp_payload.get_ref();
    if payload < 512 {
        out.push(cx.at(
            c.max_udp_payload.span(),
            "server.max_udp_payload: must be at least 512",
        ));
    }
    match parse_duration(c.tcp_idle_timeout.get_ref()) {
        Ok(d) if d.is_zero() => out.push(cx.at(
            c.tcp_idle_timeout.span(),
            "server.tcp_idle_timeout: must be more than 0",
        )),
        Ok(d) => s.tcp_idle_timeout = d,
        Err(e) => out.push(cx.at(
            c.tcp_idle_timeout.span(),
            format!("server.tcp_idle_timeout: {e}"),
        )),
    }
    for (key, v) in [
        ("tcp_max_connections", &c.tcp_max_connections),
        ("tcp_max_per_client", &c.tcp_max_per_client),
    ] {
        if *v.get_ref() == 0 {
            out.push(cx.at(v.span(), format!("server.{key}: must be at least 1")));
        }
    }
    if let Some(secret) = &c.cookie_secret {
        match Secret::parse_hex(secret.get_ref()) {
            Some(k) => s.cookie_secret = Some(k),
            None => out.push(cx.at(
                secret.span(),
                "server.cookie_secret: must be 32 hex digits (128 bits, e.g. from `openssl rand -hex 16`)",
            )),
        }
    }
    if !zones_dir.is_dir() {
        out.push(cx.at(
            c.zones.span(),
            format!("server.zones: `{}` is not a folder", zones_dir.display()),
        ));
    }
    s
}
