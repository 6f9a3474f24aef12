//! What a probe is: a profile's settings with its defaults ([`Settings`]), the target they make
//! with an endpoint's address or check URL ([`Target`], shared by endpoints that are probed the
//! same way), and the ready-made [`Probe`] of a target, an HTTP(S) exchange ([`super::http`]) or
//! a TCP connect ([`super::tcp`]), with its [`Outcome`].
//!
//! When probes go out and what their outcomes do live in [`super::schedule`] and
//! [`super::verdict`]; the names they export are repeated here for the paths of old.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::rr::Name;

use super::http::HttpProbe;
use super::tcp::{Dest, TcpProbe};
use super::tls::TlsConfigs;
use crate::config::{self, HealthProfile};

pub use super::schedule::{
    start, start_with, ProbeEvent, ProbeObserver, ProbedEndpoint, ProberHandle, ProberOptions,
    DEFAULT_MAX_IN_FLIGHT, POLL,
};
pub use super::verdict::RTT_ALPHA;

/// Defaults of a `[health.NAME]` profile for keys it leaves out.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;
pub const DEFAULT_EXPECT_STATUS: (u16, u16) = (200, 299);
/// How much of a body `expect_body` searches.
pub const BODY_LIMIT: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Http,
    Https,
    Tcp,
    /// A program run per endpoint ([`super::exec`]).
    Exec,
    /// No probe: states come from `PUT /api/v1/health`; the prober only expires them.
    Push,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Https => "https",
            Kind::Tcp => "tcp",
            Kind::Exec => "exec",
            Kind::Push => "push",
        }
    }
}

/// The settings of a profile with its defaults filled in: interval 5 s, timeout 2 s (at most
/// the interval), rise 2, fall 3, expect_status 200-299, path `/`, port 80 (http) or 443
/// (https), tls_verify true.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Settings {
    pub kind: Kind,
    pub path: String,
    pub port: Option<u16>,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub expect_status: Vec<(u16, u16)>,
    pub expect_body: Option<String>,
    pub host: Option<String>,
    pub headers: Vec<(String, String)>,
    pub tls_verify: bool,
    /// `source`: the local address probes leave from.
    pub source: Option<IpAddr>,
    /// `exec`: the command as written, placeholders unexpanded.
    pub command: Vec<String>,
    /// `push`: how long a pushed state holds (default 3 × interval).
    pub expire: Duration,
}

impl Settings {
    pub fn from_profile(p: &HealthProfile) -> Settings {
        let kind = match p.kind.get_ref().as_str() {
            "https" => Kind::Https,
            "tcp" => Kind::Tcp,
            "exec" => Kind::Exec,
            "push" => Kind::Push,
            _ => Kind::Http,
        };
        let duration = |d: &Option<serde_spanned::Spanned<String>>, default: Duration| {
            d.as_ref()
                .and_then(|d| config::parse_duration(d.get_ref()).ok())
                .filter(|d| !d.is_zero())
                .unwrap_or(default)
        };
        let path = p.path.clone().unwrap_or_else(|| "/".into());
        let interval = duration(&p.interval, DEFAULT_INTERVAL);
        Settings {
            kind,
            path: if path.starts_with('/') {
                path
            } else {
                format!("/{path}")
            },
            port: p.port,
            interval,
            // Probes of one target never overlap, so a timeout above the interval would stretch
            // the interval (and the SPEC's failover bound); gdnsd refuses such a profile.
            timeout: duration(&p.timeout, DEFAULT_TIMEOUT).min(interval),
            rise: p
                .rise
                .as_ref()
                .map_or(DEFAULT_RISE, |r| *r.get_ref())
                .max(1),
            fall: p
                .fall
                .as_ref()
                .map_or(DEFAULT_FALL, |f| *f.get_ref())
                .max(1),
            expect_status: p
                .expect_status
                .as_ref()
                .and_then(|s| config::status_ranges(s.get_ref()).ok())
                .unwrap_or_else(|| vec![DEFAULT_EXPECT_STATUS]),
            expect_body: p.expect_body.clone().filter(|b| !b.is_empty()),
            host: p.host.clone().filter(|h| !h.is_empty()),
            headers: p
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            tls_verify: p.tls_verify.unwrap_or(true),
            source: p.source.as_ref().and_then(|a| a.get_ref().parse().ok()),
            command: p
                .command
                .as_ref()
                .map(|c| c.get_ref().clone())
                .unwrap_or_default(),
            expire: duration(&p.expire, interval * 3),
        }
    }
}

/// One probe target: what is probed and how. Endpoints with equal targets share one probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub kind: Kind,
    /// `http://…` / `https://…` URL, or `tcp://host:port`; `exec:` and the command line;
    /// `push:PROFILE/ENDPOINT`.
    pub url: String,
    pub settings: Settings,
    /// `exec`: the program and its arguments, placeholders filled in.
    pub argv: Vec<String>,
}

impl Target {
    /// The target of an endpoint at `addr` whose probe is `probe` (its `check` URL, or
    /// `profile:NAME` for the profile's own kind, port and path).
    pub fn new(addr: IpAddr, probe: &str, settings: &Settings) -> Target {
        let (kind, url) = if probe.starts_with("profile:") || probe.is_empty() {
            let kind = settings.kind;
            let port = settings.port.unwrap_or(match kind {
                Kind::Https => 443,
                _ => 80,
            });
            let sa = SocketAddr::new(addr, port); // brackets IPv6
            let url = match kind {
                Kind::Tcp => format!("tcp://{sa}"),
                _ => format!("{}://{sa}{}", kind.as_str(), settings.path),
            };
            (kind, url)
        } else {
            let kind = if probe.starts_with("https://") {
                Kind::Https
            } else if probe.starts_with("tcp://") {
                Kind::Tcp
            } else {
                Kind::Http
            };
            (kind, probe.to_string())
        };
        Target {
            kind,
            url,
            settings: settings.clone(),
            argv: Vec::new(),
        }
    }

    /// The target of a profile whose kind is not a network probe (exec, push) for the
    /// endpoint named `label` (its address or target name); `None` for a network kind.
    pub fn local(profile: &str, label: &str, settings: &Settings) -> Option<Target> {
        match settings.kind {
            Kind::Exec => {
                let port = settings.port.map(|p| p.to_string()).unwrap_or_default();
                let argv: Vec<String> = settings
                    .command
                    .iter()
                    .map(|a| a.replace("{address}", label).replace("{port}", &port))
                    .collect();
                Some(Target {
                    kind: Kind::Exec,
                    url: format!("exec:{}", argv.join(" ")),
                    settings: settings.clone(),
                    argv,
                })
            }
            // Named by the profile too: two push profiles with the same settings are two
            // states an outside monitor sets apart.
            Kind::Push => Some(Target {
                kind: Kind::Push,
                url: format!("push:{profile}/{label}"),
                settings: settings.clone(),
                argv: Vec::new(),
            }),
            _ => None,
        }
    }
}

impl Target {
    /// The target of a `target` endpoint: the profile's kind, port and path at the name
    /// (`{kind}://{target}:{port}{path}`), so that Host and SNI are the target and the name is
    /// resolved through the system resolver at every probe (a load balancer's addresses
    /// change). A `check` URL is used as given.
    pub fn for_name(name: &Name, probe: &str, settings: &Settings) -> Target {
        if !(probe.starts_with("profile:") || probe.is_empty()) {
            return Target::new(IpAddr::from([0, 0, 0, 0]), probe, settings);
        }
        let host = name.to_ascii();
        let host = host.trim_end_matches('.');
        let kind = settings.kind;
        let port = settings.port.unwrap_or(match kind {
            Kind::Https => 443,
            _ => 80,
        });
        let url = match kind {
            Kind::Tcp => format!("tcp://{host}:{port}"),
            _ => format!("{}://{host}:{port}{}", kind.as_str(), settings.path),
        };
        Target {
            kind,
            url,
            settings: settings.clone(),
            argv: Vec::new(),
        }
    }
}

/// What one probe found.
#[derive(Debug)]
pub(super) struct Outcome {
    pub ok: bool,
    pub class: &'static str,
    pub reason: String,
    /// `Some` when an HTTP response came back: the `X-Load` it carried, if any.
    pub load: Option<Option<f64>>,
}

impl Outcome {
    pub fn ok(load: Option<Option<f64>>) -> Outcome {
        Outcome {
            ok: true,
            class: "ok",
            reason: "ok".into(),
            load,
        }
    }
    pub fn fail(class: &'static str, reason: impl Into<String>) -> Outcome {
        Outcome {
            ok: false,
            class,
            reason: reason.into(),
            load: None,
        }
    }
}

/// A ready-made probe of one target: everything that does not change between two probes is
/// worked out once, here.
pub(super) enum Probe {
    Http(Box<HttpProbe>),
    Tcp(TcpProbe),
    Exec(super::exec::ExecProbe),
}

impl Probe {
    pub fn new(t: &Target, tls: Option<&TlsConfigs>) -> Result<Probe, String> {
        match t.kind {
            Kind::Tcp => Ok(Probe::Tcp(TcpProbe {
                dest: Dest::parse(t.url["tcp://".len()..].trim_end_matches('/')),
                source: t.settings.source,
            })),
            Kind::Http | Kind::Https => HttpProbe::new(t, tls).map(|p| Probe::Http(Box::new(p))),
            Kind::Exec => super::exec::ExecProbe::new(t).map(Probe::Exec),
            Kind::Push => Err("a push profile has no probe".into()),
        }
    }

    /// One probe; plain HTTP and TCP to an address go through `reactor`, the prober's own
    /// epoll set, when there is one.
    pub async fn run(&self, reactor: Option<&std::sync::Arc<super::reactor::Reactor>>) -> Outcome {
        match self {
            Probe::Http(p) => p.run(reactor).await,
            Probe::Tcp(p) => match (&p.dest, reactor) {
                (Dest::Addr(to), Some(r)) => super::plain::tcp_check(r, *to, p.source).await,
                _ => p.run().await,
            },
            Probe::Exec(p) => p.run().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(kind: Kind, port: Option<u16>) -> Settings {
        Settings {
            kind,
            path: "/health".into(),
            port,
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            rise: 2,
            fall: 3,
            expect_status: vec![DEFAULT_EXPECT_STATUS],
            expect_body: None,
            host: None,
            headers: Vec::new(),
            tls_verify: true,
            source: None,
            command: Vec::new(),
            expire: DEFAULT_INTERVAL * 3,
        }
    }

    #[test]
    fn derived_targets() {
        let v4: IpAddr = "192.0.2.10".parse().unwrap();
        let v6: IpAddr = "2001:db8::20".parse().unwrap();
        let t = |a, k, p| Target::new(a, "profile:web", &settings(k, p)).url;
        assert_eq!(t(v4, Kind::Http, None), "http://192.0.2.10:80/health");
        assert_eq!(
            t(v6, Kind::Https, None),
            "https://[2001:db8::20]:443/health"
        );
        assert_eq!(t(v6, Kind::Tcp, Some(25)), "tcp://[2001:db8::20]:25");
        let c = Target::new(v4, "tcp://127.0.0.1:9", &settings(Kind::Http, None));
        assert_eq!((c.kind, c.url.as_str()), (Kind::Tcp, "tcp://127.0.0.1:9"));
    }

    #[test]
    fn equal_targets_are_shared() {
        let s = settings(Kind::Http, None);
        let a = Target::new("192.0.2.1".parse().unwrap(), "http://127.0.0.1:1/h", &s);
        let b = Target::new("192.0.2.2".parse().unwrap(), "http://127.0.0.1:1/h", &s);
        assert_eq!(a, b);
        let mut s2 = s.clone();
        s2.fall = 4;
        let c = Target::new("192.0.2.2".parse().unwrap(), "http://127.0.0.1:1/h", &s2);
        assert_ne!(a, c);
    }
}
