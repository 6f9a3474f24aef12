//! The configuration file: its schema, how it is read, and every check that can be made
//! without the zones. Each error names the file, the line and column, and the key's path, because
//! an operator fixing a config at 3 a.m. should not have to guess which of forty endpoints is wrong.
//!
//! Checks that need the zones (a service name must lie inside a served zone) live where the
//! snapshot is built, but report through the same [`Problem`] type.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;

/// One problem found in a config or zone file, printed as `file:line:col: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl Problem {
    pub fn new(file: &Path, line: usize, col: usize, message: impl Into<String>) -> Self {
        Problem {
            file: file.to_path_buf(),
            line,
            col,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// A list of problems; loading fails with all of them rather than the first.
#[derive(Debug, Clone, Default)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// The whole config file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub site: Option<SiteConfig>,
    pub geoip: Option<GeoipConfig>,
    pub admin: Option<AdminConfig>,
    #[serde(default)]
    pub health: BTreeMap<String, Spanned<HealthProfile>>,
    #[serde(default)]
    pub regions: BTreeMap<String, Spanned<RegionConfig>>,
    #[serde(default)]
    pub service: Vec<Spanned<ServiceConfig>>,
    pub rrl: Option<Spanned<RrlConfig>>,
}

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
    /// Connections served at once over TCP; further ones wait in the kernel backlog.
    #[serde(default = "default_tcp_max_connections")]
    pub tcp_max_connections: Spanned<usize>,
    /// UDP sockets (SO_REUSEPORT) per listen address; 0 = one per CPU.
    #[serde(default)]
    pub udp_sockets: usize,
    /// DNS Cookies: the SipHash key of server cookies, 32 hex digits, the same at every site
    /// behind one anycast address; random per start when absent.
    pub cookie_secret: Option<Spanned<String>>,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub id: Option<Spanned<String>>,
    pub location: Option<Spanned<Location>>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoipConfig {
    pub database: Option<Spanned<String>>,
    #[serde(default)]
    pub networks: Vec<Spanned<NetworkOverride>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkOverride {
    pub cidr: Spanned<String>,
    pub region: Option<Spanned<String>>,
    pub location: Option<Location>,
    pub country: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: Spanned<String>,
    pub token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthProfile {
    pub kind: Spanned<String>,
    pub path: Option<String>,
    pub port: Option<u16>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub rise: Option<Spanned<u32>>,
    pub fall: Option<Spanned<u32>>,
    pub expect_status: Option<Spanned<StatusSpec>>,
    pub expect_body: Option<String>,
    pub host: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub tls_verify: Option<bool>,
    pub initial: Option<Spanned<String>>,
}

/// `expect_status` as written: one code, a range string, or a list of either.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StatusSpec {
    Code(u16),
    Text(String),
    List(Vec<StatusSpec>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    pub location: Option<Location>,
    #[serde(default)]
    pub countries: Vec<Spanned<String>>,
    #[serde(default)]
    pub continents: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: Spanned<String>,
    pub policy: Spanned<String>,
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    #[serde(default = "default_max_answers")]
    pub max_answers: Spanned<usize>,
    pub health: Option<Spanned<String>>,
    pub when_all_down: Option<Spanned<String>>,
    pub endpoints: Spanned<Vec<Spanned<EndpointConfig>>>,
}

fn default_ttl() -> u32 {
    30
}
fn default_max_answers() -> Spanned<usize> {
    Spanned::new(0..0, 1)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub region: Option<Spanned<String>>,
    pub address: Spanned<String>,
    pub weight: Option<Spanned<f64>>,
    pub priority: Option<u32>,
    pub check: Option<Spanned<String>>,
}

/// `[rrl]`: response rate limiting (see [`crate::rrl`]); absent keys take the defaults there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RrlConfig {
    pub responses_per_second: Option<Spanned<u32>>,
    pub nxdomains_per_second: Option<Spanned<u32>>,
    pub errors_per_second: Option<Spanned<u32>>,
    pub window: Option<Spanned<String>>,
    pub slip: Option<Spanned<u32>>,
    pub ipv4_prefix: Option<Spanned<u8>>,
    pub ipv6_prefix: Option<Spanned<u8>>,
    #[serde(default)]
    pub exempt: Vec<Spanned<String>>,
    #[serde(default)]
    pub log_only: bool,
    pub table_size: Option<Spanned<usize>>,
}

pub const POLICIES: &[&str] = &[
    "round-robin",
    "weighted",
    "geo",
    "failover",
    "hash",
    "latency",
    "least-loaded",
];

/// A config that parsed and passed the checks that need no zones, with paths made absolute.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub path: PathBuf,
    pub text: String,
    pub config: Config,
    pub listen: Vec<SocketAddr>,
    pub zones_dir: PathBuf,
    pub geoip_database: Option<PathBuf>,
    pub tcp_idle_timeout: Duration,
    /// `[rrl]` checked and with its defaults; `None` when the section is absent.
    pub rrl: Option<crate::rrl::Settings>,
    /// `server.cookie_secret` when set.
    pub cookie_secret: Option<crate::cookie::Secret>,
}

impl LoadedConfig {
    /// Turns a byte span of the config text into a problem at its line and column.
    pub fn problem_at(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> Problem {
        let (line, col) = line_col(&self.text, span.start);
        Problem::new(&self.path, line, col, message)
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map(|nl| before[nl + 1..].chars().count() + 1)
        .unwrap_or(before.chars().count() + 1);
    (line, col)
}

/// Parses a humantime duration ("500ms", "5s", "1m").
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{e} (expected a duration like \"500ms\", \"5s\", \"1m\")"))
}

/// Resolves `p` against the config file's folder unless it is absolute.
fn resolve(config_path: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config_path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(p)
    }
}

/// Reads and checks a config file. On failure every problem found is returned.
pub fn load(path: &Path) -> Result<LoadedConfig, Problems> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Problems(vec![Problem::new(
            path,
            1,
            1,
            format!("cannot read config: {e}"),
        )])
    })?;
    parse(path, text)
}

/// Parses config text that was read from `path` (used by tests and by [`load`]).
pub fn parse(path: &Path, text: String) -> Result<LoadedConfig, Problems> {
    let config: Config = {
        let de = toml::de::Deserializer::parse(&text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(&text, s.start)).unwrap_or((1, 1));
            Problems(vec![Problem::new(path, line, col, e.message().trim())])
        })?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            // Spanned<T> fields add a private segment to serde's path; operators never wrote it.
            let key = e
                .path()
                .to_string()
                .replace(".$__serde_spanned_private_value", "");
            let inner = e.into_inner();
            let (line, col) = inner
                .span()
                .map(|s| line_col(&text, s.start))
                .unwrap_or((1, 1));
            let msg = inner.message().trim().to_string();
            let msg = if key.is_empty() || key == "." {
                msg
            } else {
                format!("{key}: {msg}")
            };
            Problems(vec![Problem::new(path, line, col, msg)])
        })?
    };
    let mut loaded = LoadedConfig {
        path: path.to_path_buf(),
        zones_dir: resolve(path, config.server.zones.get_ref()),
        geoip_database: config
            .geoip
            .as_ref()
            .and_then(|g| g.database.as_ref())
            .map(|d| resolve(path, d.get_ref())),
        text,
        listen: Vec::new(),
        tcp_idle_timeout: Duration::from_secs(10),
        rrl: None,
        cookie_secret: None,
        config,
    };
    let mut problems = Vec::new();
    check(&mut loaded, &mut problems);
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(Problems(problems))
    }
}

/// The checks that need nothing but the config itself.
fn check(lc: &mut LoadedConfig, out: &mut Vec<Problem>) {
    let c = lc.config.clone();
    let (path, text) = (lc.path.clone(), lc.text.clone());
    let at = |span: std::ops::Range<usize>, msg: String| {
        let (line, col) = line_col(&text, span.start);
        Problem::new(&path, line, col, msg)
    };

    if c.server.listen.get_ref().is_empty() {
        out.push(at(
            c.server.listen.span(),
            "server.listen: at least one address is needed".into(),
        ));
    }
    for l in c.server.listen.get_ref() {
        match l.get_ref().parse::<SocketAddr>() {
            Ok(a) => lc.listen.push(a),
            Err(_) => out.push(at(
                l.span(),
                format!(
                    "server.listen: `{}` is not an address with a port (e.g. \"127.0.0.1:5300\" or \"[::1]:5300\")",
                    l.get_ref()
                ),
            )),
        }
    }
    let payload = *c.server.max_udp_payload.get_ref();
    if payload < 512 {
        out.push(at(
            c.server.max_udp_payload.span(),
            "server.max_udp_payload: must be at least 512".into(),
        ));
    }
    match parse_duration(c.server.tcp_idle_timeout.get_ref()) {
        Ok(d) => lc.tcp_idle_timeout = d,
        Err(e) => out.push(at(
            c.server.tcp_idle_timeout.span(),
            format!("server.tcp_idle_timeout: {e}"),
        )),
    }
    if *c.server.tcp_max_connections.get_ref() == 0 {
        out.push(at(
            c.server.tcp_max_connections.span(),
            "server.tcp_max_connections: must be at least 1".into(),
        ));
    }
    if let Some(secret) = &c.server.cookie_secret {
        match crate::cookie::Secret::parse_hex(secret.get_ref()) {
            Some(s) => lc.cookie_secret = Some(s),
            None => out.push(at(
                secret.span(),
                "server.cookie_secret: must be 32 hex digits (128 bits, e.g. from `openssl rand -hex 16`)"
                    .into(),
            )),
        }
    }
    if let Some(rrl) = &c.rrl {
        lc.rrl = check_rrl(rrl.get_ref(), &at, out);
    }
    if !lc.zones_dir.is_dir() {
        out.push(at(
            c.server.zones.span(),
            format!("server.zones: `{}` is not a folder", lc.zones_dir.display()),
        ));
    }

    if let Some(site) = &c.site {
        if let Some(id) = &site.id {
            if id.get_ref().is_empty() || id.get_ref().len() > 255 {
                out.push(at(id.span(), "site.id: must be 1 to 255 bytes long".into()));
            }
        }
        if let Some(loc) = &site.location {
            check_location(loc.get_ref(), "site.location", loc.span(), &at, out);
        }
    }

    if let Some(geoip) = &c.geoip {
        if let (Some(db), Some(path)) = (&geoip.database, &lc.geoip_database) {
            if !path.is_file() {
                out.push(at(
                    db.span(),
                    format!("geoip.database: `{}` does not exist", path.display()),
                ));
            }
        }
        for (i, n) in geoip.networks.iter().enumerate() {
            let key = format!("geoip.networks[{i}]");
            let net = n.get_ref();
            if parse_cidr(net.cidr.get_ref()).is_none() {
                out.push(at(
                    net.cidr.span(),
                    format!(
                        "{key}.cidr: `{}` is not a network (e.g. \"10.0.0.0/8\")",
                        net.cidr.get_ref()
                    ),
                ));
            }
            let targets = net.region.is_some() as u8
                + net.location.is_some() as u8
                + net.country.is_some() as u8;
            if targets != 1 {
                out.push(at(
                    n.span(),
                    format!("{key}: give exactly one of region, location or country"),
                ));
            }
            if let Some(r) = &net.region {
                if !c.regions.contains_key(r.get_ref()) {
                    out.push(at(
                        r.span(),
                        format!("{key}.region: no region `{}` is defined", r.get_ref()),
                    ));
                }
            }
            if let Some(loc) = &net.location {
                check_location(loc, &format!("{key}.location"), n.span(), &at, out);
            }
            if let Some(cc) = &net.country {
                if !is_country_code(cc.get_ref()) {
                    out.push(at(
                        cc.span(),
                        format!(
                            "{key}.country: `{}` is not an ISO 3166-1 alpha-2 code",
                            cc.get_ref()
                        ),
                    ));
                }
            }
        }
    }

    if let Some(admin) = &c.admin {
        match admin.listen.get_ref().parse::<SocketAddr>() {
            Err(_) => out.push(at(
                admin.listen.span(),
                format!(
                    "admin.listen: `{}` is not an address with a port",
                    admin.listen.get_ref()
                ),
            )),
            // Drain and reload from anywhere on the network without a token is an outage
            // waiting to happen.
            Ok(a) if !a.ip().is_loopback() && admin.token.as_deref().is_none_or(str::is_empty) => {
                out.push(at(
                    admin.listen.span(),
                    format!(
                        "admin.listen: `{a}` is not a loopback address, so admin.token must be set"
                    ),
                ))
            }
            Ok(_) => {}
        }
    }

    for (name, profile) in &c.health {
        let key = format!("health.{name}");
        let p = profile.get_ref();
        if !["http", "https", "tcp"].contains(&p.kind.get_ref().as_str()) {
            out.push(at(
                p.kind.span(),
                format!(
                    "{key}.kind: `{}` is not one of http, https, tcp",
                    p.kind.get_ref()
                ),
            ));
        }
        if p.kind.get_ref() == "tcp" && p.port.is_none() {
            out.push(at(
                profile.span(),
                format!("{key}.port: a tcp check needs a port"),
            ));
        }
        for (k, d) in [("interval", &p.interval), ("timeout", &p.timeout)] {
            if let Some(d) = d {
                if let Err(e) = parse_duration(d.get_ref()) {
                    out.push(at(d.span(), format!("{key}.{k}: {e}")));
                }
            }
        }
        for (k, v) in [("rise", &p.rise), ("fall", &p.fall)] {
            if let Some(v) = v {
                if *v.get_ref() == 0 {
                    out.push(at(v.span(), format!("{key}.{k}: must be at least 1")));
                }
            }
        }
        if let Some(s) = &p.expect_status {
            if let Err(e) = status_ranges(s.get_ref()) {
                out.push(at(s.span(), format!("{key}.expect_status: {e}")));
            }
        }
        for (h, v) in &p.headers {
            // RFC 9110 §5.1 token characters; values without control characters.
            let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if h.is_empty() || !h.bytes().all(tchar) {
                out.push(at(
                    profile.span(),
                    format!("{key}.headers: `{h}` is not a valid HTTP header name"),
                ));
            }
            if v.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                out.push(at(
                    profile.span(),
                    format!("{key}.headers.{h}: the value has control characters"),
                ));
            }
        }
        if let Some(i) = &p.initial {
            if !["up", "down"].contains(&i.get_ref().as_str()) {
                out.push(at(
                    i.span(),
                    format!("{key}.initial: `{}` is not one of up, down", i.get_ref()),
                ));
            }
        }
    }

    for (name, region) in &c.regions {
        let key = format!("regions.{name}");
        let r = region.get_ref();
        if let Some(loc) = &r.location {
            check_location(loc, &format!("{key}.location"), region.span(), &at, out);
        }
        for cc in &r.countries {
            if !is_country_code(cc.get_ref()) {
                out.push(at(
                    cc.span(),
                    format!(
                        "{key}.countries: `{}` is not an ISO 3166-1 alpha-2 code",
                        cc.get_ref()
                    ),
                ));
            }
        }
        for ct in &r.continents {
            if !["AF", "AN", "AS", "EU", "NA", "OC", "SA"].contains(&ct.get_ref().as_str()) {
                out.push(at(
                    ct.span(),
                    format!(
                        "{key}.continents: `{}` is not one of AF AN AS EU NA OC SA",
                        ct.get_ref()
                    ),
                ));
            }
        }
    }

    let mut seen_services = std::collections::HashSet::new();
    for (i, svc) in c.service.iter().enumerate() {
        let s = svc.get_ref();
        let key = format!("service[{i}]");
        let lname = s.name.get_ref().trim_end_matches('.').to_ascii_lowercase();
        if !seen_services.insert(lname) {
            out.push(at(
                s.name.span(),
                format!("{key}.name: `{}` is defined twice", s.name.get_ref()),
            ));
        }
        if !POLICIES.contains(&s.policy.get_ref().as_str()) {
            out.push(at(
                s.policy.span(),
                format!(
                    "{key}.policy: `{}` is not one of {}",
                    s.policy.get_ref(),
                    POLICIES.join(", ")
                ),
            ));
        }
        if *s.max_answers.get_ref() == 0 {
            out.push(at(
                s.max_answers.span(),
                format!("{key}.max_answers: must be at least 1"),
            ));
        }
        if let Some(h) = &s.health {
            if !c.health.contains_key(h.get_ref()) {
                out.push(at(
                    h.span(),
                    format!(
                        "{key}.health: no health profile `{}` is defined",
                        h.get_ref()
                    ),
                ));
            }
        }
        if let Some(w) = &s.when_all_down {
            if !["serve-all", "empty"].contains(&w.get_ref().as_str()) {
                out.push(at(
                    w.span(),
                    format!(
                        "{key}.when_all_down: `{}` is not one of serve-all, empty",
                        w.get_ref()
                    ),
                ));
            }
        }
        if s.endpoints.get_ref().is_empty() {
            out.push(at(
                s.endpoints.span(),
                format!("{key}.endpoints: at least one endpoint is needed"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (j, ep) in s.endpoints.get_ref().iter().enumerate() {
            let e = ep.get_ref();
            let ekey = format!("{key}.endpoints[{j}]");
            match e.address.get_ref().parse::<IpAddr>() {
                Ok(a) => {
                    if !seen.insert(a) {
                        out.push(at(
                            e.address.span(),
                            format!("{ekey}.address: `{a}` is listed twice"),
                        ));
                    }
                }
                Err(_) => out.push(at(
                    e.address.span(),
                    format!(
                        "{ekey}.address: `{}` is not an IPv4 or IPv6 address",
                        e.address.get_ref()
                    ),
                )),
            }
            if let Some(r) = &e.region {
                if !c.regions.contains_key(r.get_ref()) {
                    out.push(at(
                        r.span(),
                        format!("{ekey}.region: no region `{}` is defined", r.get_ref()),
                    ));
                }
            } else if s.policy.get_ref() == "geo" {
                out.push(at(
                    ep.span(),
                    format!("{ekey}.region: the geo policy needs a region for every endpoint"),
                ));
            }
            if let Some(w) = &e.weight {
                let w = *w.get_ref();
                if !(w.is_finite() && w > 0.0) {
                    out.push(at(
                        e.weight.as_ref().map(|w| w.span()).unwrap_or(ep.span()),
                        format!("{ekey}.weight: must be a positive number"),
                    ));
                }
            }
            if let Some(chk) = &e.check {
                let u = chk.get_ref();
                if !(u.starts_with("http://")
                    || u.starts_with("https://")
                    || u.starts_with("tcp://"))
                {
                    out.push(at(
                        chk.span(),
                        format!("{ekey}.check: `{u}` must start with http://, https:// or tcp://"),
                    ));
                }
            }
        }
    }
}

/// Checks `[rrl]` and fills in its defaults; `None` when a value is wrong (reported in `out`).
fn check_rrl(
    r: &RrlConfig,
    at: &impl Fn(std::ops::Range<usize>, String) -> Problem,
    out: &mut Vec<Problem>,
) -> Option<crate::rrl::Settings> {
    use crate::rrl;
    let before = out.len();
    let mut rate = |key: &str, v: &Option<Spanned<u32>>, default: u32| match v {
        Some(v) if *v.get_ref() > rrl::MAX_RATE => {
            out.push(at(
                v.span(),
                format!(
                    "rrl.{key}: must be at most {} (0 = unlimited)",
                    rrl::MAX_RATE
                ),
            ));
            default
        }
        Some(v) => *v.get_ref(),
        None => default,
    };
    let responses = rate(
        "responses_per_second",
        &r.responses_per_second,
        rrl::DEFAULT_RATE,
    );
    // As in BIND: the other rates default to the answer rate.
    let nxdomains = rate("nxdomains_per_second", &r.nxdomains_per_second, responses);
    let errors = rate("errors_per_second", &r.errors_per_second, responses);
    let window = match &r.window {
        None => rrl::DEFAULT_WINDOW,
        Some(w) => match parse_duration(w.get_ref()) {
            Ok(d) if d >= Duration::from_secs(1) && d <= rrl::MAX_WINDOW => d,
            Ok(_) => {
                out.push(at(
                    w.span(),
                    "rrl.window: must lie between 1s and 1h".into(),
                ));
                rrl::DEFAULT_WINDOW
            }
            Err(e) => {
                out.push(at(w.span(), format!("rrl.window: {e}")));
                rrl::DEFAULT_WINDOW
            }
        },
    };
    let slip = match &r.slip {
        Some(s) if *s.get_ref() > rrl::MAX_SLIP => {
            out.push(at(
                s.span(),
                format!(
                    "rrl.slip: must lie between 0 (drop every limited response) and {}",
                    rrl::MAX_SLIP
                ),
            ));
            rrl::DEFAULT_SLIP
        }
        Some(s) => *s.get_ref(),
        None => rrl::DEFAULT_SLIP,
    };
    let mut prefix = |key: &str, v: &Option<Spanned<u8>>, default: u8, max: u8| match v {
        Some(p) if *p.get_ref() == 0 || *p.get_ref() > max => {
            out.push(at(
                p.span(),
                format!("rrl.{key}: must lie between 1 and {max}"),
            ));
            default
        }
        Some(p) => *p.get_ref(),
        None => default,
    };
    let ipv4_prefix = prefix("ipv4_prefix", &r.ipv4_prefix, 24, 32);
    let ipv6_prefix = prefix("ipv6_prefix", &r.ipv6_prefix, 56, 128);
    let mut exempt = Vec::new();
    for (i, e) in r.exempt.iter().enumerate() {
        match parse_cidr(e.get_ref()) {
            Some((ip, len)) => exempt.push((crate::geo::mask(ip, len), len)),
            None => out.push(at(
                e.span(),
                format!(
                    "rrl.exempt[{i}]: `{}` is not a network (e.g. \"10.0.0.0/8\")",
                    e.get_ref()
                ),
            )),
        }
    }
    let table_size = match &r.table_size {
        Some(t) if *t.get_ref() == 0 || *t.get_ref() > rrl::MAX_TABLE_SIZE => {
            out.push(at(
                t.span(),
                format!(
                    "rrl.table_size: must lie between 1 and {}",
                    rrl::MAX_TABLE_SIZE
                ),
            ));
            rrl::DEFAULT_TABLE_SIZE
        }
        Some(t) => *t.get_ref(),
        None => rrl::DEFAULT_TABLE_SIZE,
    };
    (out.len() == before).then_some(rrl::Settings {
        responses_per_second: responses,
        nxdomains_per_second: nxdomains,
        errors_per_second: errors,
        window,
        slip,
        ipv4_prefix,
        ipv6_prefix,
        exempt,
        log_only: r.log_only,
        table_size,
    })
}

fn check_location(
    loc: &Location,
    key: &str,
    span: std::ops::Range<usize>,
    at: &impl Fn(std::ops::Range<usize>, String) -> Problem,
    out: &mut Vec<Problem>,
) {
    if !(-90.0..=90.0).contains(&loc.lat) || !(-180.0..=180.0).contains(&loc.lon) {
        out.push(at(
            span,
            format!("{key}: lat must lie in -90..90 and lon in -180..180"),
        ));
    }
}

fn is_country_code(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase())
}

/// Parses "addr/len" into the network address and prefix length.
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = s.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

/// Expands an `expect_status` into inclusive ranges.
pub fn status_ranges(spec: &StatusSpec) -> Result<Vec<(u16, u16)>, String> {
    let check = |c: u16| {
        if (100..=599).contains(&c) {
            Ok(c)
        } else {
            Err(format!("{c} is not an HTTP status code"))
        }
    };
    match spec {
        StatusSpec::Code(c) => Ok(vec![(check(*c)?, *c)]),
        StatusSpec::Text(t) => {
            let t = t.trim();
            let (a, b) = t.split_once('-').unwrap_or((t, t));
            let parse = |x: &str| {
                x.trim()
                    .parse::<u16>()
                    .map_err(|_| format!("`{t}` is not a status code or range like \"200-299\""))
                    .and_then(check)
            };
            let (a, b) = (parse(a)?, parse(b)?);
            if a > b {
                return Err(format!("`{t}`: range start is above its end"));
            }
            Ok(vec![(a, b)])
        }
        StatusSpec::List(items) => {
            let mut out = Vec::new();
            for i in items {
                out.extend(status_ranges(i)?);
            }
            if out.is_empty() {
                return Err("the list is empty".into());
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<LoadedConfig, Problems> {
        let dir = std::env::temp_dir();
        parse(&dir.join("t.toml"), s.to_string())
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = parse_str("[server]\nlisten = [\"127.0.0.1:53\"]\nzones = \".\"\nlisen = 1\n")
            .unwrap_err();
        let p = &err.0[0];
        assert_eq!((p.line, p.col), (4, 1), "{p}");
        assert!(p.message.contains("server"), "{p}");
        assert!(p.message.contains("lisen"), "{p}");
    }

    #[test]
    fn bad_listen_address_is_located() {
        let err = parse_str("[server]\nlisten = [\"127.0.0.1\"]\nzones = \".\"\n").unwrap_err();
        let p = &err.0[0];
        assert_eq!(p.line, 2, "{p}");
        assert_eq!(p.col, 11, "{p}");
        assert!(p.message.starts_with("server.listen:"), "{p}");
    }

    #[test]
    fn wrong_type_names_nested_key() {
        let err =
            parse_str("[server]\nlisten = [\"127.0.0.1:1\"]\nzones = \".\"\n[site]\nid = 5\n")
                .unwrap_err();
        let p = &err.0[0];
        assert_eq!(p.line, 5, "{p}");
        assert!(p.message.contains("site.id"), "{p}");
    }

    #[test]
    fn status_specs() {
        assert_eq!(
            status_ranges(&StatusSpec::Text("200-299".into())).unwrap(),
            vec![(200, 299)]
        );
        assert!(status_ranges(&StatusSpec::Text("299-200".into())).is_err());
        assert!(status_ranges(&StatusSpec::Code(42)).is_err());
    }

    #[test]
    fn bad_health_header_is_a_problem() {
        let err = parse_str(
            "[server]\nlisten = [\"127.0.0.1:1\"]\nzones = \".\"\n[health.h]\nkind = \"http\"\nheaders = { \"Bad Name\" = \"x\" }\n",
        )
        .unwrap_err();
        assert!(
            err.0.iter().any(|p| p.message.contains("health.h.headers")),
            "{err}"
        );
    }

    #[test]
    fn rrl_defaults_follow_bind() {
        let base = "[server]\nlisten = [\"127.0.0.1:1\"]\nzones = \".\"\n";
        assert!(parse_str(base).unwrap().rrl.is_none());
        let r = parse_str(&format!("{base}[rrl]\nresponses_per_second = 7\n"))
            .unwrap()
            .rrl
            .unwrap();
        assert_eq!(
            (
                r.responses_per_second,
                r.nxdomains_per_second,
                r.errors_per_second
            ),
            (7, 7, 7)
        );
        assert_eq!((r.slip, r.ipv4_prefix, r.ipv6_prefix), (2, 24, 56));
        assert_eq!(r.window, Duration::from_secs(5));
        assert_eq!(r.table_size, crate::rrl::DEFAULT_TABLE_SIZE);
        assert!(!r.log_only && r.exempt.is_empty());
    }

    #[test]
    fn cookie_secret_is_32_hex_digits() {
        let cfg = |v: &str| {
            format!(
                "[server]\nlisten = [\"127.0.0.1:1\"]\nzones = \".\"\ncookie_secret = \"{v}\"\n"
            )
        };
        assert!(parse_str(&cfg("000102030405060708090a0b0c0d0e0f"))
            .unwrap()
            .cookie_secret
            .is_some());
        let err = parse_str(&cfg("0001")).unwrap_err();
        assert_eq!((err.0[0].line, err.0[0].col), (4, 17), "{err}");
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 3), (2, 1));
        assert_eq!(line_col("ab\ncd", 1), (1, 2));
    }
}
