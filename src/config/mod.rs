//! The configuration file (floor 1, importing only `base`): its schema, how it is read, and
//! every check that can be made without the zones. Each error names the file, the line and
//! column, and the key's path, because an operator fixing a config at 3 a.m. should not have to
//! guess which of forty endpoints is wrong.
//!
//! Checks that need the zones or other files (a service name must lie inside a served zone, a
//! GeoIP database or a DNSSEC key must open) live where the snapshot is built, but report
//! through the same [`Problem`] type.
//!
//! ## Where things are
//!
//! - this file: [`Config`] (the whole file as written), [`LoadedConfig`] (after the checks),
//!   the value types and parsers several sections share ([`Location`], [`parse_duration`],
//!   [`parse_cidr`], [`resolve`]) and [`Cx`], what every section's check is handed;
//! - `load.rs`: reading a file, also a broken one, as far as it goes: syntax and type errors
//!   located at `file:line:col` with the key path, stand-ins for broken sections
//!   ([`examine`], [`load`], [`parse`], [`sort_problems`]);
//! - `check.rs`: the one pass over every section ([`LoadedConfig`] is filled there), the
//!   checks that tie one section to another (a service's `health` profile and `region`s, a
//!   GeoIP network's `region`), and [`warnings`];
//! - one file per section, named by its key: `server`, `site`, `geoip`, `admin`, `log`,
//!   `health`, `regions`, `pool`, `service`, `rrl`, `anycast`, `fleet`, `secondary`, `dnssec`,
//!   `prober`.
//!
//! ## One convention for a section
//!
//! `config/<key>.rs` owns everything about the table `[<key>]` (or `[[<key>]]`):
//!
//! 1. the table as written: `<Name>Config`, serde with `deny_unknown_fields`, each value a
//!    problem may point at kept `Spanned`;
//! 2. when other code wants checked values rather than text: `Settings`, with defaults filled
//!    in and paths resolved, and the `DEFAULT_*` / `MAX_*` constants the check applies (the
//!    subsystem that runs the section imports these from here, never the other way round);
//! 3. `pub fn check(table, cx: &Cx, out: &mut Vec<Problem>)`, returning `Option<Settings>`
//!    (`None` when it found a problem; `[server]`, which is required, returns its `Settings` as
//!    far as they read) or nothing when there are no settings. It reports the problems of that
//!    table alone; anything else it needs comes as an argument after `cx` (`[server]` the
//!    resolved zones folder, `[fleet]` the `[site] id`), and references to another section's
//!    names are checked in `check.rs`.
//!
//! A new section adds its file, its field in [`Config`] (and in [`LoadedConfig`] if it has
//! `Settings`), and one call in `check.rs`.

pub mod admin;
pub mod anycast;
mod check;
pub mod dnssec;
pub mod fleet;
pub mod geoip;
pub mod health;
mod load;
pub mod log;
pub mod pool;
pub mod prober;
pub mod regions;
pub mod rrl;
pub mod secondary;
pub mod server;
pub mod service;
pub mod site;
#[cfg(test)]
mod tests;
pub mod xdp;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;

pub use crate::base::problem::{Problem, Problems};

pub use self::admin::AdminConfig;
pub use self::check::warnings;
pub use self::geoip::{GeoipConfig, NetworkOverride};
pub use self::health::{status_ranges, HealthProfile, HealthRef, StatusSpec};
pub use self::load::{examine, examine_text, line_col, load, parse, sort_problems, Examined};
pub use self::log::LogConfig;
pub use self::regions::RegionConfig;
pub use self::rrl::RrlConfig;
pub use self::server::ServerConfig;
pub use self::service::{service_key, EndpointConfig, ServiceConfig, MAX_TTL, POLICIES};
pub use self::site::SiteConfig;

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
    /// `[pool.NAME]`: endpoints services share (`config::pool`).
    #[serde(default)]
    pub pool: BTreeMap<String, Spanned<pool::PoolConfig>>,
    #[serde(default)]
    pub service: Vec<Spanned<ServiceConfig>>,
    pub anycast: Option<anycast::AnycastConfig>,
    pub rrl: Option<Spanned<RrlConfig>>,
    pub fleet: Option<Spanned<fleet::FleetConfig>>,
    /// `[[secondary]]`: zones transferred from a primary (run by `crate::secondary`).
    #[serde(default)]
    pub secondary: Vec<Spanned<secondary::SecondaryConfig>>,
    #[serde(default)]
    pub dnssec: Vec<Spanned<dnssec::DnssecConfig>>,
    /// `[prober]`: the health prober's CPU budget (`config::prober`).
    pub prober: Option<prober::ProberConfig>,
}

/// A latitude and longitude as written (`[site]`, `[regions.x]`, `[geoip] networks`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
}

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
    pub anycast: Option<anycast::Settings>,
    /// `[rrl]` checked and with its defaults; `None` when the section is absent.
    pub rrl: Option<rrl::Settings>,
    /// `server.cookie_secret` when set.
    pub cookie_secret: Option<crate::base::secret::Secret>,
    /// `[fleet]` after its checks; `None` without the table.
    pub fleet: Option<fleet::Settings>,
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
        self.cx().at(span, message)
    }

    /// What a section's check is handed, for checks made after loading (the zones', keys').
    pub fn cx(&self) -> Cx<'_> {
        Cx::new(&self.path, &self.text)
    }
}

/// What every section's `check` is handed: the config file (to resolve the paths inside it)
/// and its text (to turn a value's byte span into a located [`Problem`]).
#[derive(Debug, Clone, Copy)]
pub struct Cx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl<'a> Cx<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Cx<'a> {
        Cx { path, text }
    }

    /// A problem at the line and column of a byte span of the config text.
    pub fn at(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> Problem {
        let (line, col) = line_col(self.text, span.start);
        Problem::new(self.path, line, col, message)
    }

    /// The config file.
    pub fn path(&self) -> &'a Path {
        self.path
    }

    /// A path written in the config, resolved against the config file's folder.
    pub fn resolve(&self, p: &str) -> PathBuf {
        resolve(self.path, p)
    }
}

/// Parses a humantime duration ("500ms", "5s", "1m").
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{e} (expected a duration like \"500ms\", \"5s\", \"1m\")"))
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

/// Parses "addr/len" into the network address and prefix length.
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = s.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

/// A location's coordinates must lie on the globe.
fn check_location(
    loc: &Location,
    key: &str,
    span: std::ops::Range<usize>,
    cx: &Cx,
    out: &mut Vec<Problem>,
) {
    if !(-90.0..=90.0).contains(&loc.lat) || !(-180.0..=180.0).contains(&loc.lon) {
        out.push(cx.at(
            span,
            format!("{key}: lat must lie in -90..90 and lon in -180..180"),
        ));
    }
}

fn is_country_code(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase())
}
