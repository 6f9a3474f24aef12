//! The `/status` document (SPEC "Admin HTTP API"), typed: built by the admin API
//! ([`crate::admin`]) and read by `meridian status` ([`crate::ctl`]), so both sides share one
//! definition instead of `json!` on one side and `v["…"]` on the other.
//!
//! The JSON is the document serialised through `serde_json::Value` (whose objects keep their
//! keys sorted), then extended by [`crate::history`] (`regions`, `events`, and `answers_1m` /
//! `share_1m` per endpoint), so the bytes are what the `json!` objects gave before. Fields
//! that a kind of entry does not have are left out, not null (a failed zone has no `records`,
//! a loaded one no `file`); every field reads with a default, so `meridian status` also reads
//! the document of an older or newer server.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// `GET /status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    pub site: Option<String>,
    pub version: String,
    pub generation: u64,
    /// RFC 3339, milliseconds.
    pub loaded_at: String,
    pub loaded_at_unix: f64,
    pub config_path: Option<String>,
    /// `None` before the first reload.
    pub last_reload: Option<LastReload>,
    /// By name.
    pub zones: Vec<Zone>,
    pub services: Vec<Service>,
    /// The `[anycast]` controller's own object (`crate::anycast::Anycast::status_json`).
    pub anycast: Option<Value>,
    /// `[server] xdp`: one object per interface answering over AF_XDP (`server::xdp`); an
    /// empty list without it.
    #[serde(default)]
    pub xdp: Value,
    /// The `[fleet]` member's own object.
    pub fleet: Option<Value>,
    pub secondary: Vec<crate::secondary::ZoneStatus>,
    /// The health prober's CPU budget and what it does (`[prober]`); left out by a server
    /// that has none to show.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prober: Option<Prober>,
    /// The drain rules in force, oldest first.
    pub drains: Vec<Drain>,
    pub drains_state: DrainsState,
    /// Added by [`crate::history`]: regions with their answer shares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<Value>>,
    /// Added by [`crate::history`]: recent events, newest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Value>>,
}

/// The health prober's CPU: its budget, what it used, and how far it spreads probes out to
/// stay within it (`crate::prober::budget`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Prober {
    /// `[prober] cpu_budget` as a share of one core; null when off.
    pub cpu_budget: Option<f64>,
    /// The prober thread's CPU over the last second, share of one core.
    pub cpu: Option<f64>,
    /// The factor every probe interval is stretched by now: 1 = as configured.
    pub interval_stretch: f64,
    /// Whether intervals are being stretched now (`interval_stretch` > 1).
    pub stretched: bool,
    /// Seconds the intervals have been stretched since start.
    pub stretched_seconds: f64,
    /// The cores the prober thread is kept on; empty when not pinned (two cores or fewer).
    pub cores: Vec<usize>,
}

impl From<crate::prober::Reading> for Prober {
    fn from(r: crate::prober::Reading) -> Prober {
        Prober {
            cpu_budget: r.cpu_budget,
            cpu: r.cpu,
            interval_stretch: r.interval_stretch,
            stretched: r.interval_stretch > 1.0,
            stretched_seconds: r.stretched_seconds,
            cores: r.cores,
        }
    }
}

/// The outcome of the last reload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LastReload {
    pub ok: bool,
    /// The generation it made (`ok`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Why it was rejected (not `ok`): every problem, one per line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub at: String,
}

/// A zone served, or one whose file failed to load (SERVFAIL for its names).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Zone {
    pub name: String,
    /// A document that leaves it out means a zone served.
    #[serde(default = "yes")]
    pub loaded: bool,
    pub error: Option<String>,
    pub origin: Option<String>,
    /// Loaded zones only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<usize>,
    /// Failed zones only: the file that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Signed zones only (`[[dnssec]]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dnssec: Option<Dnssec>,
}

/// A signed zone's keys, the validity window its signatures carry now, and its signer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Dnssec {
    pub keys: Vec<DnssecKey>,
    /// RRSIG validity (`validity`), seconds.
    pub validity_secs: u64,
    /// The current window's RRSIG inception and expiration, RFC 3339 and Unix seconds.
    pub inception: String,
    pub expiration: String,
    pub inception_unix: u64,
    pub expiration_unix: u64,
    /// The signing budget (0: none).
    pub signatures_per_second: u32,
    pub cache_entries: usize,
    pub cache_capacity: usize,
}

/// One key of a signed zone, as its DNSKEY says.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DnssecKey {
    pub tag: u16,
    pub algorithm: u8,
    /// 257 (SEP: KSK or CSK) or 256 (ZSK).
    pub flags: u16,
}

/// A balanced name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Service {
    pub name: String,
    pub policy: String,
    /// `serve-all`, `empty` or `servfail`.
    pub when_all_down: String,
    pub ttl: u32,
    pub ttl_degraded: u32,
    pub max_answers: usize,
    /// The health profile.
    pub health: Option<String>,
    pub endpoints_up: usize,
    pub endpoints: Vec<Endpoint>,
    /// The `[pool.NAME]`s it answers with (its own and its tiers'), by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<String>,
    /// `[[service.tier]]`s, in the order tried; left out for a service without them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<Tier>,
    /// `fallback` addresses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fallback: Vec<String>,
}

/// One tier of a service and whether it would answer now.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Tier {
    /// 1-based, as people count them.
    pub tier: usize,
    pub policy: String,
    pub min_up: usize,
    pub pools: Vec<String>,
    pub endpoints: usize,
    pub endpoints_up: usize,
    /// The first tier with `min_up` endpoints up: the one answering now (per address family
    /// the count may differ; this counts every endpoint).
    pub answering: bool,
}

/// One endpoint of a service, with its live state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Endpoint {
    /// Its address, or its `target` name.
    pub address: String,
    pub target: Option<String>,
    pub region: Option<String>,
    pub weight: f64,
    pub priority: u32,
    /// What probes it (`profile:NAME`, a URL); `None` when nothing does.
    pub probe: Option<String>,
    pub healthy: bool,
    pub drained: bool,
    /// A partial drain: the share of client networks for which it counts as drained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_share: Option<f64>,
    pub up: bool,
    pub last_probe: Option<LastProbe>,
    /// With health profiles: each profile's result on this endpoint, in the order of the
    /// `health` list.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
    /// With health profiles: how many must pass (`health_min`, default all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_min: Option<usize>,
    /// With health profiles: which decided the verdict, for people (`up: web passes (1 of 2,
    /// needs 1)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    pub rtt_ms: Option<f64>,
    pub load: Option<f64>,
    /// The `[pool.NAME]` it comes from; left out when inline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The tier it belongs to (1-based); left out for a service without tiers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<usize>,
    /// A `fallback` address (never probed).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fallback: bool,
    /// The fleet's view of it: `null` without a fleet member, left out only by documents that
    /// do not know the field (a `meridian status` table shows its column when it is there).
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub fleet: Option<Value>,
    /// Added by [`crate::history`] (`null` until it has sampled): answers over the last
    /// minute.
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub answers_1m: Option<Value>,
    /// Added by [`crate::history`]: its share of its service's answers over the last minute.
    #[serde(deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub share_1m: Option<Value>,
}

/// One health profile's result on one endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Check {
    pub profile: String,
    /// `http`, `https`, `tcp`, `exec` or `push`.
    pub kind: String,
    /// This profile's verdict (its rise/fall applied; a pushed state as given).
    pub healthy: bool,
    /// Whether this profile's result decided the endpoint's verdict: when the endpoint is
    /// up, the passing profiles; when down, the failing ones.
    pub decided: bool,
    pub last_probe: Option<LastProbe>,
}

/// The last probe of an endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LastProbe {
    pub ok: bool,
    /// The fixed word of the metrics (`ok`, `timeout`, ...).
    pub result: String,
    /// For people.
    pub reason: String,
    pub at: String,
    pub duration_ms: f64,
}

/// A drain rule in force, and how many endpoints it covers now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Drain {
    #[serde(flatten)]
    pub rule: crate::policy::drains::Rule,
    /// `None` only in a document that does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<usize>,
}

/// Whether the drains saved in `state_dir` could be read at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DrainsState {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Default for DrainsState {
    fn default() -> Self {
        DrainsState {
            ok: true,
            error: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// A field that is there, even as `null`, reads as `Some` (`#[serde(default)]` makes a missing
/// one `None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}
