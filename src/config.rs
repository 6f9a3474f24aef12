//! The configuration file: its schema, how it is read, and every check that can be made
//! without the zones. Each error names the file, the line and column, and the key's path, because
//! an operator fixing a config at 3 a.m. should not have to guess which of forty endpoints is wrong.
//!
//! Checks that need the zones (a service name must lie inside a served zone) live where the
//! snapshot is built, but report through the same [`Problem`] type.

pub mod log;
pub mod xdp;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;

pub use crate::base::problem::{Problem, Problems};

/// The whole config file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub site: Option<SiteConfig>,
    pub geoip: Option<GeoipConfig>,
    pub admin: Option<AdminConfig>,
    pub log: Option<LogConfig>,
    #[serde(default)]
    pub health: BTreeMap<String, Spanned<HealthProfile>>,
    #[serde(default)]
    pub regions: BTreeMap<String, Spanned<RegionConfig>>,
    #[serde(default)]
    pub service: Vec<Spanned<ServiceConfig>>,
    /// `[anycast]`: schema and checks in [`crate::anycast::config`].
    pub anycast: Option<crate::anycast::config::AnycastConfig>,
    pub rrl: Option<Spanned<RrlConfig>>,
    /// `[fleet]`: schema and checks in [`crate::fleet::config`].
    pub fleet: Option<Spanned<crate::fleet::config::FleetConfig>>,
    /// `[[secondary]]`: zones transferred from a primary ([`crate::secondary`]).
    #[serde(default)]
    pub secondary: Vec<Spanned<crate::secondary::SecondaryConfig>>,
    /// `[[dnssec]]`: schema and checks in [`crate::dnssec::config`].
    #[serde(default)]
    pub dnssec: Vec<Spanned<crate::dnssec::config::DnssecConfig>>,
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
    /// One file or a list of files (e.g. separate IPv4 and IPv6 databases), as written.
    pub database: Option<Spanned<toml::Value>>,
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

/// `[log]`: values as written, checked and read by [`crate::querylog`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`, for every log line (needs a restart).
    pub format: Option<Spanned<String>>,
    /// `off`, `all` or `sample:N`.
    pub queries: Option<Spanned<String>>,
    /// `unix:PATH` or `file:PATH`.
    pub dnstap: Option<Spanned<String>>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: Spanned<String>,
    pub token: Option<String>,
}

/// By hand so that no `{:?}` of a config (in a log line or a panic) can print the token.
impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
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
    /// The local address probes leave from (bind before connect).
    pub source: Option<Spanned<String>>,
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
    /// TTL while the service answers around a failure (see [`crate::policy::Selection`]).
    pub ttl_degraded: Option<u32>,
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
    /// An endpoint is an `address` (answered as A/AAAA) or a `target` name (answered as a
    /// CNAME to it: a regional load balancer known by name, such as an ALB).
    pub address: Option<Spanned<String>>,
    pub target: Option<Spanned<String>>,
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
    /// `[geoip] database` resolved against the config's folder, in the order given.
    pub geoip_databases: Vec<PathBuf>,
    pub tcp_idle_timeout: Duration,
    /// `[anycast]` after its checks; `None` without the table.
    pub anycast: Option<crate::anycast::config::Settings>,
    /// `[rrl]` checked and with its defaults; `None` when the section is absent.
    pub rrl: Option<crate::rrl::Settings>,
    /// `server.cookie_secret` when set.
    pub cookie_secret: Option<crate::base::secret::Secret>,
    /// `[fleet]` after its checks; `None` without the table.
    pub fleet: Option<crate::fleet::config::Settings>,
}

impl LoadedConfig {
    /// `[server] state_dir` resolved against the config's folder; `state/` beside the config
    /// file when it is not set (SPEC "Drains survive restarts").
    pub fn state_dir(&self) -> PathBuf {
        let dir = self
            .config
            .server
            .state_dir
            .as_ref()
            .map(|d| d.get_ref().as_str());
        resolve(&self.path, dir.filter(|d| !d.is_empty()).unwrap_or("state"))
    }

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
/// `[geoip] database` as file names: a string or an array of strings.
fn database_list(v: &toml::Value) -> Option<Vec<String>> {
    match v {
        toml::Value::String(s) => Some(vec![s.clone()]),
        toml::Value::Array(a) => a.iter().map(|x| x.as_str().map(str::to_string)).collect(),
        _ => None,
    }
}

/// Resolves `p` against the config file's folder unless it is absolute (SPEC "CLI": relative
/// paths inside a config resolve against the config file's own folder).
pub(crate) fn resolve(config_path: &Path, p: &str) -> PathBuf {
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
    examine(path).into_result()
}

/// Parses config text that was read from `path` (used by tests and by [`load`]).
pub fn parse(path: &Path, text: String) -> Result<LoadedConfig, Problems> {
    examine_text(path, text).into_result()
}

// ---- Reading a broken config as far as it goes (`meridian check`) -------------------------
//
// `check` must report every problem in one run (SPEC "CLI"), but serde stops at the first type
// error and the TOML parser at the first syntax error. So the text is parsed with the parser's
// own error recovery, and when the typed read fails, the section that failed is set aside (an
// optional one removed, a required or referenced one replaced by a harmless stand-in) and the
// read is tried again, until the rest deserializes. The checks then run on that config, and
// whatever they say about a stand-in is dropped: the section's own error already stands for it.
// `serve` and reloads still reject such a config whole; only the report is fuller.

/// Everything one read of a config file found.
#[derive(Debug)]
pub struct Examined {
    /// The config as far as it could be made out (with stand-ins for broken sections), or
    /// `None` when the file could not be read or even the stand-ins did not help.
    pub config: Option<LoadedConfig>,
    /// Every problem found in the config, in no particular order.
    pub problems: Vec<Problem>,
    /// The zones folder, if `server.zones` names one that exists, even when the rest of the
    /// config is broken: the zones are worth checking all the same.
    pub zones_dir: Option<PathBuf>,
    /// `file:line:col` of each stand-in; see [`Examined::is_artefact`].
    stand_ins: Vec<(usize, usize)>,
    /// The config file read.
    pub path: PathBuf,
}

impl Examined {
    /// Whether a problem found by a check on [`Examined::config`] is about a stand-in rather
    /// than anything the operator wrote.
    pub fn is_artefact(&self, p: &Problem) -> bool {
        self.path == p.file && self.stand_ins.contains(&(p.line, p.col))
    }

    /// The config, if it has no problem at all (what `serve` and reloads accept).
    pub fn into_result(self) -> Result<LoadedConfig, Problems> {
        match self.config {
            Some(c) if self.problems.is_empty() => Ok(c),
            _ => {
                let mut problems = self.problems;
                sort_problems(&mut problems, &self.path);
                Err(Problems(problems))
            }
        }
    }
}

/// Orders problems by file (the config file first, then the rest by name), line and column,
/// and drops exact repeats, so that output reads top to bottom through each file.
pub fn sort_problems(problems: &mut Vec<Problem>, config: &Path) {
    problems.sort_by(|a, b| {
        let key = |p: &Problem| (p.file != config, p.file.clone(), p.line, p.col);
        key(a).cmp(&key(b))
    });
    // A problem can be found twice (say, by the config's own checks and again by a pass that
    // reads it raw); the report names it once.
    let mut seen = std::collections::HashSet::new();
    problems.retain(|p| seen.insert((p.file.clone(), p.line, p.col, p.message.clone())));
}

/// Reads a config file for [`examine_text`].
pub fn examine(path: &Path) -> Examined {
    match std::fs::read_to_string(path) {
        Ok(text) => examine_text(path, text),
        Err(e) => Examined {
            config: None,
            problems: vec![Problem::new(path, 1, 1, format!("cannot read config: {e}"))],
            zones_dir: None,
            stand_ins: Vec::new(),
            path: path.to_path_buf(),
        },
    }
}

/// Reads config text as far as it goes, collecting every syntax, type and semantic problem.
pub fn examine_text(path: &Path, text: String) -> Examined {
    use toml::de::DeTable;

    let mut problems = Vec::new();
    let (mut table, syntax) = DeTable::parse_recoverable(&text);
    for e in &syntax {
        let (line, col) = e.span().map(|s| line_col(&text, s.start)).unwrap_or((1, 1));
        let mut msg = e.message().trim().to_string();
        // toml says only "duplicate key"; the operator wants to know which.
        if msg == "duplicate key" {
            if let Some(k) = e.span().and_then(|s| text.get(s)).map(str::trim) {
                msg = format!("duplicate key `{}`", k.trim_matches('"'));
            }
        }
        problems.push(Problem::new(path, line, col, msg));
    }
    // Services are named by their `name` in problems, also when their table does not read.
    let service_names: Vec<Option<String>> = match table.get_ref().get("service") {
        Some(v) => match v.get_ref() {
            toml::de::DeValue::Array(a) => a
                .iter()
                .map(|s| {
                    s.get_ref()
                        .as_table()
                        .and_then(|t| t.get("name"))
                        .and_then(|n| n.get_ref().as_str().map(str::to_string))
                })
                .collect(),
            _ => Vec::new(),
        },
        None => Vec::new(),
    };
    // Where `server.zones` points, read from the raw table: a broken `[server]` is replaced
    // by a stand-in below, but its zones are still worth checking.
    let raw_zones = table
        .get_ref()
        .get("server")
        .and_then(|s| s.get_ref().get("zones"))
        .and_then(|z| z.get_ref().as_str().map(|s| (s.to_string(), z.span())));

    let mut stand_in_spans: Vec<std::ops::Range<usize>> = Vec::new();
    let mut server_stood_in = false;
    let mut config = None;
    // Each round sets aside one section, so the sections bound the rounds; the cap is a guard.
    for _ in 0..256 {
        let de = toml::de::Deserializer::from(table.clone());
        match serde_path_to_error::deserialize::<_, Config>(de) {
            Ok(c) => {
                config = Some(c);
                break;
            }
            Err(e) => {
                let segments: Vec<String> = e
                    .path()
                    .iter()
                    .filter_map(|s| match s {
                        serde_path_to_error::Segment::Map { key }
                            if key != "$__serde_spanned_private_value" =>
                        {
                            Some(key.clone())
                        }
                        serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                        _ => None,
                    })
                    .collect();
                let (problem, located) = type_problem(path, &text, e, &service_names);
                // The parser's recovery from a syntax error can leave a document whose shape
                // is wrong as a whole: a section gone, or the keys of a broken `[table]`
                // header landing at the top level. Errors about the document's top level
                // then only repeat the syntax error.
                if syntax.is_empty() || (located && segments.len() > 1) {
                    problems.push(problem);
                }
                let set_aside = set_aside(table.get_mut(), &segments, &mut stand_in_spans);
                match set_aside {
                    SetAside::No => break,
                    SetAside::Server => server_stood_in = true,
                    SetAside::Yes => {}
                }
            }
        }
    }

    let stand_ins = stand_in_spans
        .iter()
        .map(|s| line_col(&text, s.start))
        .collect();
    let mut zones_dir = None;
    if server_stood_in {
        if let Some((z, span)) = &raw_zones {
            let dir = resolve(path, z);
            if dir.is_dir() {
                zones_dir = Some(dir);
            } else {
                let (line, col) = line_col(&text, span.start);
                problems.push(Problem::new(
                    path,
                    line,
                    col,
                    format!("server.zones: `{}` is not a folder", dir.display()),
                ));
            }
        }
    }
    let Some(config) = config else {
        return Examined {
            config: None,
            problems,
            zones_dir,
            stand_ins,
            path: path.to_path_buf(),
        };
    };
    let mut loaded = LoadedConfig {
        path: path.to_path_buf(),
        zones_dir: resolve(path, config.server.zones.get_ref()),
        geoip_databases: config
            .geoip
            .as_ref()
            .and_then(|g| g.database.as_ref())
            .map(|d| {
                database_list(d.get_ref())
                    .unwrap_or_default()
                    .iter()
                    .map(|f| resolve(path, f))
                    .collect()
            })
            .unwrap_or_default(),
        text,
        listen: Vec::new(),
        tcp_idle_timeout: Duration::from_secs(10),
        anycast: None,
        rrl: None,
        cookie_secret: None,
        fleet: None,
        config,
    };
    let mut examined = Examined {
        config: None,
        problems: Vec::new(),
        zones_dir,
        stand_ins,
        path: path.to_path_buf(),
    };
    let mut semantic = Vec::new();
    check(&mut loaded, &mut semantic);
    if !server_stood_in && loaded.zones_dir.is_dir() {
        examined.zones_dir = Some(loaded.zones_dir.clone());
    }
    examined.config = Some(loaded);
    semantic.retain(|p| !examined.is_artefact(p));
    problems.append(&mut semantic);
    examined.problems = problems;
    examined
}

/// A serde error as a problem at its key, with the key path as the operator wrote it, and
/// whether the error had a position of its own (rather than the document's start).
fn type_problem(
    path: &Path,
    text: &str,
    e: serde_path_to_error::Error<toml::de::Error>,
    service_names: &[Option<String>],
) -> (Problem, bool) {
    // Spanned<T> fields add a private segment to serde's path; operators never wrote it.
    let mut key = e
        .path()
        .to_string()
        .replace(".$__serde_spanned_private_value", "");
    // `service[0]` is the service the operator calls by its name.
    if let Some(rest) = key.strip_prefix("service[") {
        if let Some((i, tail)) = rest.split_once(']') {
            if let Some(Some(name)) = i.parse::<usize>().ok().and_then(|i| service_names.get(i)) {
                key = format!("{}{tail}", service_key(name));
            }
        }
    }
    let inner = e.into_inner();
    let located = inner.span().is_some_and(|s| s.start > 0);
    let (line, col) = inner
        .span()
        .map(|s| line_col(text, s.start))
        .unwrap_or((1, 1));
    // serde's messages quote the offending value ("invalid type: integer `123`"); for the
    // token that value is the secret, and this message reaches logs and /status.
    let msg = if key == "admin.token" {
        "must be a string".to_string()
    } else {
        toml_words(inner.message().trim())
    };
    let msg = if key.is_empty() || key == "." {
        msg
    } else {
        format!("{key}: {msg}")
    };
    (Problem::new(path, line, col, msg), located)
}

/// serde's type errors in TOML's words: `invalid type: string "30", expected u32` becomes
/// `expected an integer, found a string`.
fn toml_words(msg: &str) -> String {
    fn kind(rust: &str) -> String {
        let r = rust.trim();
        let ints = [
            "u8", "u16", "u32", "u64", "usize", "i8", "i16", "i32", "i64", "isize",
        ];
        if ints.contains(&r) || r.starts_with("integer") {
            "an integer".into()
        } else if r == "f32" || r == "f64" || r.starts_with("floating point") {
            "a number".into()
        } else if r.starts_with("string") || r == "a string" || r == "a borrowed string" {
            "a string".into()
        } else if r.starts_with("boolean") || r == "a boolean" {
            "a boolean (true or false)".into()
        } else if r.starts_with("sequence") || r == "a sequence" || r.starts_with("an array") {
            "an array".into()
        } else if r.starts_with("map") || r == "a map" || r.starts_with("struct ") {
            "a table".into()
        } else {
            r.to_string()
        }
    }
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.rsplit_once(", expected ") {
            return format!("expected {}, found {}", kind(expected), kind(found));
        }
    }
    if let Some(rest) = msg.strip_prefix("invalid value: ") {
        if let Some((found, expected)) = rest.rsplit_once(", expected ") {
            let bits = expected.trim().trim_start_matches(['u', 'i']);
            if let Ok(bits) = bits.parse::<u32>() {
                let (lo, hi) = if expected.trim().starts_with('u') {
                    (0i128, (1i128 << bits) - 1)
                } else {
                    (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
                };
                return format!("{found} is out of range: expected an integer from {lo} to {hi}");
            }
        }
    }
    msg.to_string()
}

enum SetAside {
    /// Nothing more could be set aside; the typed read gives up.
    No,
    Yes,
    /// `[server]` was replaced by a stand-in.
    Server,
}

/// Sets aside the section at the start of a failed key path. Sections that others refer to by
/// name (`[health.x]`, `[regions.x]`) and each `[[service]]` (whose index names it in every
/// message) are replaced by stand-ins where they were; anything else is optional and removed.
fn set_aside(
    table: &mut toml::de::DeTable<'_>,
    segments: &[String],
    stand_in_spans: &mut Vec<std::ops::Range<usize>>,
) -> SetAside {
    // Stand-ins that pass every check; what the checks say about them is dropped anyway.
    const SERVER: &str = "listen = []\nzones = \"\"\n";
    const HEALTH: &str = "kind = \"http\"\n";
    const REGION: &str = "";
    const SERVICE: &str =
        "name = \"stand-in.invalid.\"\npolicy = \"round-robin\"\nendpoints = [{ address = \"192.0.2.1\" }]\n";

    let Some(top) = segments.first() else {
        // A problem with the document as a whole: only a missing `[server]` can be helped.
        if table.contains_key("server") {
            return SetAside::No;
        }
        table.insert(
            serde_spanned::Spanned::new(0..0, "server".into()),
            stand_in(SERVER, 0..0),
        );
        stand_in_spans.push(0..0);
        return SetAside::Server;
    };
    let Some((key, value)) = table.get_key_value(top.as_str()) else {
        return SetAside::No;
    };
    let (key, span) = (key.clone(), value.span());
    match (top.as_str(), segments.get(1)) {
        ("server", _) => {
            if stand_in_spans.contains(&span) {
                return SetAside::No; // the stand-in itself failed: nothing left to try
            }
            table.insert(key, stand_in(SERVER, span.clone()));
            stand_in_spans.push(span);
            SetAside::Server
        }
        (section @ ("health" | "regions"), Some(name)) => {
            let Some(entries) = table.get_mut(section).and_then(|v| match v.get_mut() {
                toml::de::DeValue::Table(t) => Some(t),
                _ => None,
            }) else {
                return SetAside::No;
            };
            let Some((k, v)) = entries.get_key_value(name.as_str()) else {
                return SetAside::No;
            };
            let (k, span) = (k.clone(), v.span());
            if stand_in_spans.contains(&span) {
                return SetAside::No;
            }
            let text = if section == "health" { HEALTH } else { REGION };
            entries.insert(k, stand_in(text, span.clone()));
            stand_in_spans.push(span);
            SetAside::Yes
        }
        ("service", Some(index)) => {
            let Some(list) = table.get_mut("service").and_then(|v| match v.get_mut() {
                toml::de::DeValue::Array(a) => Some(a),
                _ => None,
            }) else {
                return SetAside::No;
            };
            let Some(slot) = index.parse::<usize>().ok().and_then(|i| list.get_mut(i)) else {
                return SetAside::No;
            };
            let span = slot.span();
            if stand_in_spans.contains(&span) {
                return SetAside::No;
            }
            *slot = stand_in(SERVICE, span.clone());
            stand_in_spans.push(span);
            SetAside::Yes
        }
        // Optional sections (and keys that are not part of the schema at all) go entirely.
        _ => {
            table.remove(top.as_str());
            SetAside::Yes
        }
    }
}

/// Parses a stand-in table and places every part of it at `span`, so that whatever a check
/// says about it is recognised as being about the stand-in.
fn stand_in<'i>(
    text: &'static str,
    span: std::ops::Range<usize>,
) -> serde_spanned::Spanned<toml::de::DeValue<'i>> {
    fn respan<'i>(
        v: serde_spanned::Spanned<toml::de::DeValue<'i>>,
        span: &std::ops::Range<usize>,
    ) -> serde_spanned::Spanned<toml::de::DeValue<'i>> {
        use toml::de::DeValue;
        let v = match v.into_inner() {
            DeValue::Table(t) => {
                DeValue::Table(t.into_iter().map(|(k, v)| (k, respan(v, span))).collect())
            }
            DeValue::Array(a) => DeValue::Array(a.into_iter().map(|v| respan(v, span)).collect()),
            other => other,
        };
        serde_spanned::Spanned::new(span.clone(), v)
    }
    let table = toml::de::DeTable::parse(text)
        .map(|t| t.into_inner())
        .unwrap_or_default();
    respan(
        serde_spanned::Spanned::new(span.clone(), toml::de::DeValue::Table(table)),
        &span,
    )
}

// ---- end of reading a broken config ---------------------------------------------------------

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
        Ok(d) if d.is_zero() => out.push(at(
            c.server.tcp_idle_timeout.span(),
            "server.tcp_idle_timeout: must be more than 0".into(),
        )),
        Ok(d) => lc.tcp_idle_timeout = d,
        Err(e) => out.push(at(
            c.server.tcp_idle_timeout.span(),
            format!("server.tcp_idle_timeout: {e}"),
        )),
    }
    for (key, v) in [
        ("tcp_max_connections", &c.server.tcp_max_connections),
        ("tcp_max_per_client", &c.server.tcp_max_per_client),
    ] {
        if *v.get_ref() == 0 {
            out.push(at(v.span(), format!("server.{key}: must be at least 1")));
        }
    }
    if let Some(secret) = &c.server.cookie_secret {
        match crate::base::secret::Secret::parse_hex(secret.get_ref()) {
            Some(s) => lc.cookie_secret = Some(s),
            None => out.push(at(
                secret.span(),
                "server.cookie_secret: must be 32 hex digits (128 bits, e.g. from `openssl rand -hex 16`)"
                    .into(),
            )),
        }
    }
    for (span, msg) in xdp::problems(&c.server.xdp) {
        out.push(at(span, msg));
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
        if let Some(db) = &geoip.database {
            match database_list(db.get_ref()) {
                Some(list) if !list.is_empty() => {
                    for path in &lc.geoip_databases {
                        if !path.is_file() {
                            out.push(at(
                                db.span(),
                                format!("geoip.database: `{}` does not exist", path.display()),
                            ));
                        }
                    }
                }
                _ => out.push(at(
                    db.span(),
                    "geoip.database: expected a file name or a non-empty list of file names".into(),
                )),
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

    if let Some(log) = &c.log {
        let dir = path.parent().unwrap_or(Path::new("."));
        for (span, msg) in log::check(log, dir) {
            out.push(at(span, msg));
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
                match parse_duration(d.get_ref()) {
                    // Zero would not mean "never" or "at once": it ran as the default.
                    Ok(v) if v.is_zero() => {
                        out.push(at(d.span(), format!("{key}.{k}: must be more than 0")))
                    }
                    Ok(_) => {}
                    Err(e) => out.push(at(d.span(), format!("{key}.{k}: {e}"))),
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
        if let Some(src) = &p.source {
            if src.get_ref().parse::<std::net::IpAddr>().is_err() {
                out.push(at(
                    src.span(),
                    format!("{key}.source: `{}` is not an IP address", src.get_ref()),
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

    if let Some(a) = &c.anycast {
        lc.anycast = crate::anycast::config::check(a, &path, &at, out);
    }
    if let Some(f) = &c.fleet {
        let site = c.site.as_ref().and_then(|s| s.id.as_ref());
        lc.fleet = crate::fleet::config::check(f, site.map(|s| s.get_ref().as_str()), &at, out)
            .map(|mut s| {
                // TLS files, like every path in the config, are relative to its folder.
                for p in [&mut s.ca, &mut s.cert, &mut s.key].into_iter().flatten() {
                    *p = resolve(&path, &p.to_string_lossy());
                }
                s
            });
    }
    crate::secondary::check(&c.secondary, &at, out);
    crate::dnssec::config::check(&c.dnssec, &path, &at, out);

    let mut seen_services = std::collections::HashSet::new();
    for svc in &c.service {
        let s = svc.get_ref();
        let key = service_key(s.name.get_ref());
        // RFC 2181 §8: a TTL above 2^31 - 1 is read as 0 by resolvers.
        for (k, v) in [("ttl", Some(s.ttl)), ("ttl_degraded", s.ttl_degraded)] {
            if v.is_some_and(|v| v > MAX_TTL) {
                out.push(at(
                    svc.span(),
                    format!("{key}.{k}: must be at most {MAX_TTL} (2^31 - 1, RFC 2181)"),
                ));
            }
        }
        if let Some(d) = s.ttl_degraded.filter(|&d| d > s.ttl) {
            out.push(at(
                svc.span(),
                format!(
                    "{key}.ttl_degraded: {d} is above ttl {}; the TTL while answering around a \
                     failure is meant to be shorter",
                    s.ttl
                ),
            ));
        }
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
            if !["serve-all", "empty", "servfail"].contains(&w.get_ref().as_str()) {
                out.push(at(
                    w.span(),
                    format!(
                        "{key}.when_all_down: `{}` is not one of serve-all, empty, servfail",
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
        let mut seen_targets = std::collections::HashSet::new();
        // The kind of the first endpoint (true = target); a service answers one kind only.
        let mut kind: Option<bool> = None;
        for (j, ep) in s.endpoints.get_ref().iter().enumerate() {
            let e = ep.get_ref();
            let ekey = format!("{key}.endpoints[{j}]");
            match (&e.address, &e.target) {
                (Some(_), Some(t)) => out.push(at(
                    t.span(),
                    format!("{ekey}: an endpoint has either `address` or `target`, not both"),
                )),
                (None, None) => out.push(at(
                    ep.span(),
                    format!("{ekey}: an endpoint needs `address` or `target`"),
                )),
                (Some(a), None) | (None, Some(a)) => {
                    let is_target = e.target.is_some();
                    match kind {
                        None => kind = Some(is_target),
                        Some(k) if k != is_target => out.push(at(
                            a.span(),
                            format!(
                                "{key}.endpoints: a service has `address` endpoints or `target` endpoints, not both (endpoint {j} is the first `{}`)",
                                if is_target { "target" } else { "address" }
                            ),
                        )),
                        Some(_) => {}
                    }
                }
            }
            if let Some(t) = &e.target {
                let name = t.get_ref();
                let lower = name.trim_end_matches('.').to_ascii_lowercase();
                if let Err(why) = check_target_name(name) {
                    out.push(at(
                        t.span(),
                        format!("{ekey}.target: `{name}` is not a valid domain name: {why}"),
                    ));
                } else if lower == s.name.get_ref().trim_end_matches('.').to_ascii_lowercase() {
                    out.push(at(
                        t.span(),
                        format!("{ekey}.target: `{name}` is the service's own name: the CNAME would point at itself (a loop)"),
                    ));
                } else if !seen_targets.insert(lower) {
                    out.push(at(
                        t.span(),
                        format!("{ekey}.target: `{name}` is listed twice"),
                    ));
                }
            }
            if let Some(addr) = &e.address {
                match addr.get_ref().parse::<IpAddr>() {
                    Ok(a) => {
                        if !seen.insert(a) {
                            out.push(at(
                                addr.span(),
                                format!("{ekey}.address: `{a}` is listed twice"),
                            ));
                        }
                    }
                    Err(_) => out.push(at(
                        addr.span(),
                        format!(
                            "{ekey}.address: `{}` is not an IPv4 or IPv6 address",
                            addr.get_ref()
                        ),
                    )),
                }
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

/// Largest TTL a resolver keeps as given (RFC 2181 §8).
pub const MAX_TTL: u32 = (1 << 31) - 1;

/// How problems name a service: by its `name`, as the operator knows it, not its index.
pub fn service_key(name: &str) -> String {
    format!("service \"{name}\"")
}

/// Things in a config that load but will not do what the operator likely means (SPEC "Day
/// two"): `check` prints them and still exits 0.
pub fn warnings(lc: &LoadedConfig) -> Vec<Problem> {
    let c = &lc.config;
    let mut out = Vec::new();
    for svc in &c.service {
        let s = svc.get_ref();
        if s.health.is_some() {
            continue;
        }
        let checked = s
            .endpoints
            .get_ref()
            .iter()
            .filter(|e| e.get_ref().check.is_some());
        if let Some(first) = checked.clone().next() {
            out.push(lc.problem_at(
                first.span(),
                format!(
                    "warning: {}: {} endpoint(s) have a `check` URL but the service has no \
                     `health` profile, so they are never probed (always up)",
                    service_key(s.name.get_ref()),
                    checked.count()
                ),
            ));
        }
    }
    for (name, profile) in &c.health {
        let used = c.service.iter().any(|s| {
            s.get_ref()
                .health
                .as_ref()
                .is_some_and(|h| h.get_ref() == name)
        });
        if !used {
            out.push(lc.problem_at(
                profile.span(),
                format!("warning: health.{name}: no service uses this profile"),
            ));
        }
    }
    for (span, msg) in xdp::warnings(&c.server.xdp) {
        out.push(lc.problem_at(span, msg));
    }
    out
}

/// A `target` must be a host name that resolvers and the system resolver both accept:
/// letters, digits, `-` and `_` in labels of 1 to 63 bytes, at most 253 bytes in all.
fn check_target_name(name: &str) -> Result<(), String> {
    let body = name.strip_suffix('.').unwrap_or(name);
    if body.is_empty() {
        return Err("it is empty".into());
    }
    if body.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    for label in body.split('.') {
        if label.is_empty() {
            return Err("it has an empty label".into());
        }
        if label.len() > 63 {
            return Err(format!("label `{label}` is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("`{c}` is not allowed in a host name"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label `{label}` starts or ends with `-`"));
        }
    }
    Ok(())
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
            Some((ip, len)) => exempt.push((crate::base::net::mask(ip, len), len)),
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

    fn positions(e: &Problems) -> Vec<(usize, usize)> {
        e.0.iter().map(|p| (p.line, p.col)).collect()
    }

    #[test]
    fn a_type_error_per_section_is_reported() {
        let err = parse_str(concat!(
            "[server]\nlisten = \"x\"\nzones = \".\"\n",        // 1-3
            "[site]\nid = 5\n",                                 // 4-5
            "[regions.eu]\ncountries = \"DE\"\n",               // 6-7
            "[[service]]\nname = \"a.example.\"\npolicy = 1\n", // 8-10
            "endpoints = [{ address = \"192.0.2.1\" }]\n",      // 11
            "[[service]]\nname = \"b.example.\"\npolicy = \"round-robin\"\n", // 12-14
            "endpoints = [{ address = \"192.0.2.1\" }]\nbogus = 1\n", // 15-16
        ))
        .unwrap_err();
        assert_eq!(
            positions(&err),
            [(2, 10), (5, 6), (7, 13), (10, 10), (16, 1)],
            "{err}"
        );
        // Services are named by their name; serde's words become TOML's.
        assert!(
            err.0[3]
                .message
                .starts_with("service \"a.example.\".policy: expected a string, found an integer"),
            "{err}"
        );
        assert!(
            err.0[4]
                .message
                .starts_with("service \"b.example.\".bogus:"),
            "{err}"
        );
    }

    #[test]
    fn semantic_checks_run_beside_type_errors() {
        // service[0] does not deserialize; service[1] does and has its own problems, which
        // name it by its own name. Nothing is said about the stand-in for service[0], nor
        // about the region whose type is wrong but which service[1] refers to.
        let err = parse_str(concat!(
            "[server]\nlisten = [\"127.0.0.1:1\"]\nzones = \".\"\ntcp_idle_timeout = \"soon\"\n", // 1-4
            "[regions.eu]\ncountries = \"DE\"\n", // 5-6
            "[[service]]\nname = \"a.example.\"\npolicy = 1\n", // 7-9
            "endpoints = [{ address = \"192.0.2.1\" }]\n", // 10
            "[[service]]\nname = \"b.example.\"\npolicy = \"fastest\"\n", // 11-13
            "endpoints = [{ address = \"192.0.2.1\", region = \"eu\" }, { address = \"x\" }]\n", // 14
        ))
        .unwrap_err();
        let msgs: Vec<String> = err.0.iter().map(|p| p.message.clone()).collect();
        assert_eq!(
            positions(&err),
            [(4, 20), (6, 13), (9, 10), (13, 10), (14, 68)],
            "{err}"
        );
        assert!(msgs[0].starts_with("server.tcp_idle_timeout:"), "{err}");
        assert!(
            msgs[3].starts_with("service \"b.example.\".policy:"),
            "{err}"
        );
        assert!(
            msgs[4].starts_with("service \"b.example.\".endpoints[1].address:"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_are_located_and_the_rest_still_checked() {
        let err = parse_str(
            "[server]\nlisten = [\"127.0.0.1:1\"]\nzones = \".\"\nfoo = = 1\n[site]\nid = \"\"\n",
        )
        .unwrap_err();
        assert!(
            err.0
                .iter()
                .any(|p| (p.line, p.col) == (4, 7) && p.message.contains("`=`")),
            "{err}"
        );
        assert!(
            err.0.iter().any(|p| p.message.starts_with("site.id:")),
            "{err}"
        );
        // A broken header leaves the document's shape in doubt: only the syntax error shows.
        let err = parse_str("[server\nlisten = [\"127.0.0.1:1\"]\nzones = \".\"\n").unwrap_err();
        assert_eq!(positions(&err), [(1, 8)], "{err}");
    }

    #[test]
    fn a_broken_server_section_still_names_the_zones_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        let e = examine_text(&path, "[server]\nlisten = 1\nzones = \".\"\n".into());
        assert_eq!(e.zones_dir.as_deref(), Some(dir.path()));
        assert_eq!(e.problems.len(), 1, "{:?}", e.problems);
        let e = examine_text(&path, "[server]\nlisten = 1\nzones = \"nope\"\n".into());
        assert_eq!(e.zones_dir, None);
        let mut p = e.problems;
        sort_problems(&mut p, &path);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[1].message.starts_with("server.zones:"), "{p:?}");
    }

    #[test]
    fn sorted_problems_have_no_repeats() {
        let f = Path::new("a.toml");
        let path = f.to_path_buf();
        let z = Path::new("z/a.zone");
        let mut p = vec![
            Problem::new(z, 1, 1, "z"),
            Problem::new(f, 3, 1, "b"),
            Problem::new(f, 1, 2, "a"),
            Problem::new(f, 3, 1, "c"),
            Problem::new(f, 3, 1, "b"),
        ];
        sort_problems(&mut p, &path);
        let got: Vec<String> = p.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "a.toml:1:2: a",
                "a.toml:3:1: b",
                "a.toml:3:1: c",
                "z/a.zone:1:1: z"
            ]
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
