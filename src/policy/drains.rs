//! Drains as rules, kept on disk so that they survive restarts (SPEC "Drains survive restarts").
//!
//! A drain is stored as what the operator asked for — "endpoint 192.0.2.10 of
//! www.example.com", "region eu-west", "region eu-west of www.example.com" — not as the
//! endpoints it happened to match, so a region drain also covers endpoints that a later reload
//! adds to that region, and an endpoint whose probe changed (a new [`super::EndpointState`])
//! stays drained.
//!
//! Rules are ordered; for an endpoint the last rule that matches it decides (drained or not),
//! as in an access list. That makes "drain region eu-west, then undrain one endpoint in it to
//! try it" work without special cases. Each change compacts the list: rules that the new rule
//! covers are dropped (they can no longer decide anything), and an undrain that leaves nothing
//! to undo is not stored at all, so the list stays as short as what is actually drained.
//!
//! The rules live in the `snapshot::HealthRegistry`, which every snapshot shares, and are
//! written to `state_dir/drains.json` after each change: temp file, fsync, rename, fsync of the
//! folder, so a crash leaves the old file or the new one, never half of one. A file that
//! cannot be read is logged at ERROR, moved aside, and the server starts without drains: a
//! broken state file must never keep a DNS server from serving; but it must not pass silently
//! either, so the reason is kept ([`Drains::state_error`]) for `/status` and
//! `meridian_drains_state_ok` until an operator drains or undrains again.
//!
//! Drains never lapse silently (SPEC "Day two"): a rule that a reload left matching nothing is
//! kept, reported with its `matches` and warned about at the reload, and an undrain with the
//! words it was made with removes it ([`Drains::would_undo`]).

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::policy::{Region, Service};

/// The file in `state_dir` that holds the drains.
pub const FILE: &str = "drains.json";
/// Version of the file's format; a file of another version is not read.
const VERSION: u32 = 1;

/// What a drain or undrain names: an endpoint (by address) of one service, or a whole region,
/// of every service or of one. The same fields as the API body.
// No `deny_unknown_fields` here or on `Rule`: serde does not support it with `flatten`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// Service name in lower case without the final dot; required with `endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

impl Scope {
    /// Whether the endpoint `addr` of `service` in `region` falls under this scope.
    pub fn matches(&self, service: &str, addr: IpAddr, region: Option<&str>) -> bool {
        if self.service.as_deref().is_some_and(|s| s != service) {
            return false;
        }
        match (&self.endpoint, &self.region) {
            (Some(a), _) => *a == addr,
            (None, Some(r)) => region == Some(r.as_str()),
            (None, None) => false,
        }
    }

    /// For people and logs: `region eu-west`, `endpoint 192.0.2.10 of www.example.com`.
    pub fn describe(&self) -> String {
        match (&self.endpoint, &self.region, &self.service) {
            (Some(a), _, Some(s)) => format!("endpoint {a} of {s}"),
            (Some(a), _, None) => format!("endpoint {a}"),
            (None, Some(r), Some(s)) => format!("region {r} of {s}"),
            (None, Some(r), None) => format!("region {r}"),
            (None, None, _) => "nothing".into(),
        }
    }
}

/// One drain or undrain, in the order it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// true = drain, false = undrain (an exception to an earlier, wider drain).
    pub drain: bool,
    #[serde(flatten)]
    pub scope: Scope,
    /// A partial drain: the share (0 < share < 1) of client networks that treat what it names
    /// as drained, chosen by [`crate::policy::spill::drain_unit`]; absent = all (a full drain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<f64>,
    /// When it was made (RFC 3339), for `/status`.
    pub at: String,
}

impl Rule {
    /// The share of client networks it drains: 1 for a full drain, 0 for an undrain.
    pub fn drained_share(&self) -> f64 {
        match (self.drain, self.share) {
            (false, _) => 0.0,
            (true, Some(s)) => s,
            (true, None) => 1.0,
        }
    }
}

/// A drain's share as asked (`0.25`, from the API or `--share 25%`): in (0, 1]; 1 (or none)
/// is a full drain, stored without a share.
pub fn check_share(share: Option<f64>) -> Result<Option<f64>, String> {
    match share {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s < 1.0 => Ok(Some(s)),
        Some(1.0) => Ok(None),
        Some(s) => Err(format!(
            "share {s} is not in (0, 1]: give the share of client networks to move away, \
             e.g. 0.25"
        )),
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    drains: Vec<Rule>,
}

/// The drain rules in force; shared by every snapshot through the health registry.
#[derive(Debug, Default)]
pub struct Drains {
    rules: Mutex<Vec<Rule>>,
    /// Why the state file could not be read at start, until an operator drains or undrains
    /// again (SPEC "Day two"): the drains it held are unknown, and `/status`, the metrics and
    /// the status page say so rather than show an empty list as if nothing were drained.
    state_error: Mutex<Option<String>>,
}

/// Where each endpoint of a snapshot lies: (service, address) → region name.
type RegionOf<'a> = dyn Fn(&str, IpAddr) -> Option<&'a str> + 'a;

impl Drains {
    /// The rules in force, oldest first.
    pub fn rules(&self) -> Vec<Rule> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Rule>> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why the drain state could not be read at start; `None` once it was, or once an
    /// operator has drained or undrained since.
    pub fn state_error(&self) -> Option<String> {
        self.state_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_state_error(&self, e: Option<String>) {
        *self.state_error.lock().unwrap_or_else(|e| e.into_inner()) = e;
    }

    /// An operator drained or undrained: what is in force is what they now decided, so a lost
    /// state file no longer hides anything.
    pub fn operator_acted(&self) {
        self.set_state_error(None);
    }

    /// Whether undrain `scope` would take away a rule in force (one it covers): an undrain of
    /// a drain that matches nothing any more is still allowed, with the words it was made with.
    pub fn would_undo(&self, scope: &Scope, services: &[Arc<Service>], regions: &[Region]) -> bool {
        let region_of = |svc: &str, addr: IpAddr| region_of(services, regions, svc, addr);
        self.lock()
            .iter()
            .any(|r| covers(scope, &r.scope, &region_of))
    }

    /// The rules in force, each with `matches`: how many endpoints of `services` it covers
    /// now. A rule that matches nothing is kept (its names may come back), and shown with 0.
    pub fn status_json(
        &self,
        services: &[Arc<Service>],
        regions: &[Region],
    ) -> Vec<serde_json::Value> {
        self.lock()
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["matches"] = matches(&r.scope, services, regions).into();
                v
            })
            .collect()
    }

    /// Rules that cover no endpoint of `services` (after a reload renamed or removed what they
    /// named), for the reload's warning.
    pub fn unmatched(&self, services: &[Arc<Service>], regions: &[Region]) -> Vec<Rule> {
        self.lock()
            .iter()
            .filter(|r| matches(&r.scope, services, regions) == 0)
            .cloned()
            .collect()
    }

    /// Records a drain (`drain`) or undrain of `scope`, sets the drained flag of every
    /// endpoint of `services`, and writes the rules to `state_dir`. The rules change even when
    /// writing fails (the drain holds until the process ends); the error says why it will not
    /// survive a restart.
    #[allow(clippy::too_many_arguments)]
    pub fn change(
        &self,
        scope: Scope,
        drain: bool,
        share: Option<f64>,
        services: &[Arc<Service>],
        regions: &[Region],
        state_dir: &Path,
    ) -> Result<(), String> {
        let mut rules = self.lock();
        let region_of = |svc: &str, addr: IpAddr| region_of(services, regions, svc, addr);
        push(&mut rules, scope, drain, share, &region_of);
        apply_rules(&rules, services, regions);
        self.operator_acted();
        // Saved under the lock: two changes at once reach the disk in the order they were made.
        save(state_dir, &rules)
    }

    /// Sets the drained flag of every endpoint of `services` from the rules (a new snapshot,
    /// or after a change).
    pub fn apply(&self, services: &[Arc<Service>], regions: &[Region]) {
        apply_rules(&self.lock(), services, regions);
    }

    /// Replaces the rules with those in `state_dir` (at start). A missing file means no
    /// drains; a file that cannot be read is moved aside (`drains.json.corrupt`) and counts as
    /// none, with the reason returned for the log. Returns how many rules were restored.
    pub fn restore(&self, state_dir: &Path) -> Result<usize, String> {
        let r = self.restore_inner(state_dir);
        self.set_state_error(r.as_ref().err().cloned());
        r
    }

    fn restore_inner(&self, state_dir: &Path) -> Result<usize, String> {
        let path = state_dir.join(FILE);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let parsed: Result<File, String> = serde_json::from_slice::<File>(&text)
            .map_err(|e| e.to_string())
            .and_then(|f| match f.version {
                VERSION => Ok(f),
                v => Err(format!("version {v} is not {VERSION}")),
            });
        match parsed {
            Ok(f) => {
                let n = f.drains.len();
                *self.lock() = f.drains;
                Ok(n)
            }
            Err(e) => {
                // Kept for a post-mortem, and out of the way of the next save.
                let aside = state_dir.join(format!("{FILE}.corrupt"));
                let moved = std::fs::rename(&path, &aside)
                    .map(|_| format!("; moved to {}", aside.display()))
                    .unwrap_or_default();
                Err(format!(
                    "{} is not a drains file ({e}){moved}",
                    path.display()
                ))
            }
        }
    }
}

impl Drains {
    /// Reads the drains saved in `state_dir` without changing anything on disk (no corrupt
    /// file moved aside) and puts them in force for `services`: what `meridian explain` does
    /// offline, so that its answer is the one the server would give after a restart.
    pub fn load_read_only(
        &self,
        state_dir: &Path,
        services: &[Arc<Service>],
        regions: &[Region],
    ) -> Result<usize, String> {
        let rules = read_saved(state_dir)?;
        let n = rules.len();
        let mut held = self.lock();
        *held = rules;
        apply_rules(&held, services, regions);
        Ok(n)
    }
}

/// The rules saved in `state_dir`, read only: none when there is no file, an error naming the
/// file when it cannot be read or decoded. (`explain` and `simulate` read them this way.)
pub fn read_saved(state_dir: &Path) -> Result<Vec<Rule>, String> {
    let path = state_dir.join(FILE);
    match std::fs::read(&path) {
        Ok(t) => Drains::decode(&t).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

// ---- [fleet] (crate::fleet): etcd holds the rules; these let it read, change and replace them.
impl Drains {
    /// The rules after a drain (`drain`) or undrain of `scope` is added to `rules`, with the
    /// same compaction as [`Drains::change`], without touching the rules in force.
    pub fn with_change(
        rules: &[Rule],
        scope: Scope,
        drain: bool,
        share: Option<f64>,
        services: &[Arc<Service>],
        regions: &[Region],
    ) -> Vec<Rule> {
        let region_of = |svc: &str, addr: IpAddr| region_of(services, regions, svc, addr);
        let mut rules = rules.to_vec();
        push(&mut rules, scope, drain, share, &region_of);
        rules
    }

    /// Puts `rules` in force (the fleet's copy), applies them to `services`, and keeps them in
    /// `state_dir` as well, so a site that restarts while etcd is away still has them.
    pub fn replace(
        &self,
        rules: Vec<Rule>,
        services: &[Arc<Service>],
        regions: &[Region],
        state_dir: &Path,
    ) -> Result<(), String> {
        let mut held = self.lock();
        *held = rules;
        apply_rules(&held, services, regions);
        save(state_dir, &held)
    }

    /// The JSON that etcd holds for `rules`: the same format as `drains.json`.
    pub fn encode(rules: &[Rule]) -> Vec<u8> {
        serde_json::to_vec(&File {
            version: VERSION,
            drains: rules.to_vec(),
        })
        .unwrap_or_default()
    }

    /// Reads what [`Drains::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<Vec<Rule>, String> {
        let f: File = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if f.version != VERSION {
            return Err(format!("version {} is not {VERSION}", f.version));
        }
        Ok(f.drains)
    }
}

/// How many endpoints of `services` fall under `scope`.
pub fn matches(scope: &Scope, services: &[Arc<Service>], regions: &[Region]) -> usize {
    services
        .iter()
        .map(|s| {
            let name = service_label(s);
            s.endpoints
                .iter()
                .filter(|e| {
                    let region = e
                        .region
                        .and_then(|r| regions.get(r))
                        .map(|r| r.name.as_str());
                    scope.matches(&name, e.addr, region)
                })
                .count()
        })
        .sum()
}

/// A service's name as the API and the rules write it: lower case, no final dot.
pub fn service_label(s: &Service) -> String {
    crate::zone::stats::name_label(&s.name)
}

/// Puts `rules` in force on the endpoints of `services`: the last matching rule decides. A
/// partial drain sets the endpoint's drain share (the policy compares it with each client
/// network's hash) and marks its service as having one.
pub fn apply_rules(rules: &[Rule], services: &[Arc<Service>], regions: &[Region]) {
    for s in services {
        let name = service_label(s);
        let mut partial = false;
        for e in &s.endpoints {
            let region = e
                .region
                .and_then(|r| regions.get(r))
                .map(|r| r.name.as_str());
            let share = drained_share(rules, &name, e.addr, region);
            // Share first: a query that sees the flag must find the share in place.
            e.state
                .set_drain_share(if share < 1.0 { share } else { 0.0 });
            e.state.set_drained(share >= 1.0);
            partial |= share > 0.0 && share < 1.0;
        }
        s.set_partial(partial);
    }
}

/// The share of client networks for which the endpoint is drained: the last rule that matches
/// decides (0 = not drained, 1 = fully).
fn drained_share(rules: &[Rule], service: &str, addr: IpAddr, region: Option<&str>) -> f64 {
    rules
        .iter()
        .rev()
        .find(|r| r.scope.matches(service, addr, region))
        .map_or(0.0, Rule::drained_share)
}

#[cfg(test)]
fn drained_by(rules: &[Rule], service: &str, addr: IpAddr, region: Option<&str>) -> bool {
    drained_share(rules, service, addr, region) >= 1.0
}

/// Whether every endpoint under `old` is also under `new` (so `old` can never decide again
/// once `new` follows it). Endpoint rules lie under a region rule when the endpoint is in
/// that region now.
fn covers(new: &Scope, old: &Scope, region_of: &RegionOf<'_>) -> bool {
    if new == old {
        return true;
    }
    let service_ok = new.service.is_none() || new.service == old.service;
    match (&new.endpoint, &new.region, &old.endpoint, &old.region) {
        (None, Some(r), None, Some(r_old)) => r == r_old && service_ok,
        (None, Some(r), Some(a), _) => {
            service_ok
                && old
                    .service
                    .as_deref()
                    .is_some_and(|s| region_of(s, *a) == Some(r.as_str()))
        }
        _ => false,
    }
}

/// Whether some endpoint could be under both scopes.
fn overlaps(a: &Scope, b: &Scope, region_of: &RegionOf<'_>) -> bool {
    if covers(a, b, region_of) || covers(b, a, region_of) {
        return true;
    }
    let services_meet = a.service.is_none() || b.service.is_none() || a.service == b.service;
    match (&a.endpoint, &a.region, &b.endpoint, &b.region) {
        (None, Some(ra), None, Some(rb)) => ra == rb && services_meet,
        _ => false,
    }
}

fn push(
    rules: &mut Vec<Rule>,
    scope: Scope,
    drain: bool,
    share: Option<f64>,
    region_of: &RegionOf<'_>,
) {
    rules.retain(|r| !covers(&scope, &r.scope, region_of));
    // An undrain matters only as an exception to a wider drain still in force.
    if !drain
        && !rules
            .iter()
            .any(|r| r.drain && overlaps(&scope, &r.scope, region_of))
    {
        return;
    }
    rules.push(Rule {
        drain,
        scope,
        share: if drain { share } else { None },
        at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    });
}

/// Writes the rules atomically: a temp file beside the target, fsync, rename, fsync of the
/// folder (so the rename itself is on disk).
fn save(state_dir: &Path, rules: &[Rule]) -> Result<(), String> {
    let path = state_dir.join(FILE);
    let fail = |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", path.display());
    std::fs::create_dir_all(state_dir).map_err(|e| fail("create the folder of", e))?;
    let body = serde_json::to_vec_pretty(&File {
        version: VERSION,
        drains: rules.to_vec(),
    })
    .map_err(|e| format!("cannot encode drains: {e}"))?;
    let tmp: PathBuf = state_dir.join(format!(".{FILE}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.write_all(b"\n")?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail("write", e));
    }
    if let Err(e) = std::fs::rename(&tmp, &path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail("replace", e));
    }
    if let Ok(d) = std::fs::File::open(state_dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The region of endpoint `addr` of service `svc` in this config, if it has one.
fn region_of<'a>(
    services: &[Arc<Service>],
    regions: &'a [Region],
    svc: &str,
    addr: IpAddr,
) -> Option<&'a str> {
    services
        .iter()
        .find(|s| service_label(s) == svc)?
        .endpoints
        .iter()
        .find(|e| e.addr == addr)?
        .region
        .and_then(|r| regions.get(r))
        .map(|r| r.name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str, a: &str) -> Scope {
        Scope {
            service: Some(s.into()),
            endpoint: Some(a.parse().unwrap()),
            region: None,
        }
    }
    fn region(r: &str, s: Option<&str>) -> Scope {
        Scope {
            service: s.map(str::to_string),
            endpoint: None,
            region: Some(r.into()),
        }
    }
    /// www has .10 in us, .20 in eu; api has .30 in eu.
    fn where_is(_s: &str, a: IpAddr) -> Option<&'static str> {
        match a.to_string().as_str() {
            "192.0.2.10" => Some("us"),
            _ => Some("eu"),
        }
    }
    fn drained(rules: &[Rule], s: &str, a: &str) -> bool {
        let a: IpAddr = a.parse().unwrap();
        drained_by(rules, s, a, where_is(s, a))
    }

    #[test]
    fn last_matching_rule_decides_and_the_list_stays_short() {
        let mut r = Vec::new();
        push(&mut r, region("eu", None), true, None, &where_is);
        assert!(drained(&r, "www", "192.0.2.20") && drained(&r, "api", "192.0.2.30"));
        assert!(!drained(&r, "www", "192.0.2.10"));
        // An exception inside the drained region.
        push(&mut r, ep("www", "192.0.2.20"), false, None, &where_is);
        assert!(!drained(&r, "www", "192.0.2.20") && drained(&r, "api", "192.0.2.30"));
        assert_eq!(r.len(), 2);
        // Undraining the region clears the exception too.
        push(&mut r, region("eu", None), false, None, &where_is);
        assert!(r.is_empty(), "{r:?}");
        // An undrain of something never drained is not stored.
        push(&mut r, ep("www", "192.0.2.10"), false, None, &where_is);
        assert!(r.is_empty());
        // Drain twice, undrain once.
        push(&mut r, ep("www", "192.0.2.10"), true, None, &where_is);
        push(&mut r, ep("www", "192.0.2.10"), true, None, &where_is);
        assert_eq!(r.len(), 1);
        push(&mut r, ep("www", "192.0.2.10"), false, None, &where_is);
        assert!(r.is_empty());
        // A region drain of one service; undrain the region of that service only.
        push(&mut r, region("eu", None), true, None, &where_is);
        push(&mut r, region("eu", Some("api")), false, None, &where_is);
        assert!(drained(&r, "www", "192.0.2.20") && !drained(&r, "api", "192.0.2.30"));
        // A new endpoint drain inside a drained region, then the region undrained: the
        // endpoint drain goes with it (as it did when drains were flags).
        push(&mut r, ep("www", "192.0.2.20"), true, None, &where_is);
        push(&mut r, region("eu", None), false, None, &where_is);
        assert!(r.is_empty(), "{r:?}");
    }

    #[test]
    fn save_and_restore_and_a_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = Drains::default();
        push(&mut d.lock(), region("eu", None), true, None, &where_is);
        save(dir.path(), &d.lock()).unwrap();
        let back = Drains::default();
        assert_eq!(back.restore(dir.path()), Ok(1));
        assert_eq!(back.rules(), d.rules());
        assert_eq!(Drains::default().restore(&dir.path().join("none")), Ok(0));
        std::fs::write(dir.path().join(FILE), "{\"version\": 1, \"drains\": [").unwrap();
        let e = Drains::default().restore(dir.path()).unwrap_err();
        assert!(e.contains("is not a drains file"), "{e}");
        assert!(dir.path().join("drains.json.corrupt").exists());
        assert!(!dir.path().join(FILE).exists());
    }
}
