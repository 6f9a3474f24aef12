//! The `Snapshot`: everything a query needs, built off the query path from the config, zones
//! and GeoIP data, and published atomically through an `ArcSwap`. A query loads the current
//! snapshot once and answers from it without taking a lock; a reload builds a whole new
//! snapshot and swaps the pointer, so no query sees half of an old and half of a new config.

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub mod ratelimit;
mod registry;
pub use registry::{restore_drains_at_start, HealthRegistry};

use arc_swap::ArcSwap;
use hickory_proto::rr::{Name, RecordType};

use crate::base::problem::{Problem, Problems};
use crate::config::{self, LoadedConfig};
use crate::geo::{self, Coords, GeoDb, Locator, Override, OverrideTarget};
use crate::health::EndpointKey;
use crate::policy::spill::Spill;
use crate::policy::{Endpoint, PolicyKind, Region, Service, WhenAllDown};
use crate::zone::{Found, ZoneSet};

/// Settings of the wire protocol that come from `[server]` and `[site]`.
#[derive(Debug, Clone)]
pub struct WireSettings {
    /// Largest UDP payload we send (RFC 6891), whatever the client offers above it.
    pub max_udp_payload: u16,
    /// Answered to NSID and CHAOS `id.server` / `hostname.bind`.
    pub site_id: Option<String>,
}

/// One immutable generation of served data.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub loaded_at: SystemTime,
    pub config: LoadedConfig,
    pub zones: ZoneSet,
    pub wire: WireSettings,
    pub regions: Vec<Region>,
    pub locator: Locator,
    pub services: Vec<Arc<Service>>,
    /// Endpoint states, shared with the snapshots before and after this one.
    pub health: Arc<HealthRegistry>,
    /// `[rrl]`, applied to UDP responses by the server loop; `None` = no limiting.
    pub rrl: Option<ratelimit::Rrl>,
    /// The key of DNS server cookies: `server.cookie_secret`, else random per config file.
    pub cookie_secret: crate::base::secret::Secret,
    /// The `[[secondary]]` zones and their primaries' addresses (canonical, see
    /// [`geo::canonical`]): a NOTIFY (RFC 1996) is accepted only from one of those (§3.10).
    pub notify_from: Vec<(Name, Vec<IpAddr>)>,
    /// What the control floor registered with this server (the NOTIFY hook); one value for
    /// every snapshot of a server, which a reload hands on to the next (`crate::reload`).
    pub registrations: Arc<Registrations>,
    /// The signed zones (`[[dnssec]]`), by the wire key of their origin: keys, signer and
    /// cache, built with this snapshot and swapped with it.
    pub dnssec: crate::zone::NameMap<Arc<crate::dnssec::online::Online>>,
}

/// What a NOTIFY for an accepted zone wakes: registered by the secondary side.
pub type NotifyHook = Box<dyn Fn(&Name) + Send + Sync>;

/// Hooks the control floor registers for the floors below to call without naming it: the
/// secondary side registers what an accepted NOTIFY does (wake the zone's refresh), and `dns`
/// answers NOTIFY through [`Snapshot::notify`], so neither the answer floor nor the snapshot
/// names `secondary`. Also what the secondary side hands to the next snapshot build.
#[derive(Default)]
pub struct Registrations {
    notify: arc_swap::ArcSwapOption<NotifyHook>,
    /// Zones a transfer has just built and checked, waiting for the reload that serves them
    /// (`crate::zone::copy::add_copies` takes them): this server's, not process-wide.
    pub prebuilt: crate::zone::copy::Prebuilt,
}

impl std::fmt::Debug for Registrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrations")
            .field("notify", &self.notify.load().is_some())
            .field("prebuilt", &self.prebuilt)
            .finish()
    }
}

impl Registrations {
    /// Registers what an accepted NOTIFY for a zone does (the last registration wins).
    pub fn on_notify(&self, hook: NotifyHook) {
        self.notify.store(Some(Arc::new(hook)));
    }

    fn notified(&self, zone: &Name) {
        if let Some(hook) = &*self.notify.load() {
            hook(zone);
        }
    }
}

static GENERATION: AtomicU64 = AtomicU64::new(0);

impl Snapshot {
    /// Things that load but will not do what the operator likely means; `check` prints them
    /// and still exits 0.
    pub fn warnings(&self) -> Vec<Problem> {
        let mut out = config::warnings(&self.config);
        for f in &self.zones.skipped {
            out.push(Problem::new(
                f,
                1,
                1,
                "warning: not loaded: only files named *.zone in the zones folder are zones",
            ));
        }
        let Some(key) = self
            .config
            .config
            .geoip
            .as_ref()
            .and_then(|g| g.database.as_ref())
        else {
            return out;
        };
        if self.locator.dbs.is_empty() || self.locator.dbs.iter().any(GeoDb::has_coordinates) {
            return out;
        }
        // A country-level database puts every client of a country on its centroid: regions
        // told apart only by distance (or two regions claiming one country) cannot split that
        // country's clients, e.g. us-east and us-west.
        for svc in self.services.iter().filter(|s| s.policy == PolicyKind::Geo) {
            let mut used: Vec<&Region> = svc
                .endpoints
                .iter()
                .filter_map(|e| e.region.and_then(|r| self.regions.get(r)))
                .collect();
            used.sort_by(|a, b| a.name.cmp(&b.name));
            used.dedup_by(|a, b| a.name == b.name);
            if used.len() < 2 {
                continue;
            }
            let by_distance: Vec<&str> = used
                .iter()
                .filter(|r| r.countries.is_empty() && r.continents.is_empty())
                .map(|r| r.name.as_str())
                .collect();
            let shared: Vec<String> = used
                .iter()
                .flat_map(|r| r.countries.iter())
                .filter(|c| used.iter().filter(|r| r.countries.contains(c)).count() > 1)
                .map(geo::code_str)
                .map(str::to_string)
                .collect();
            if by_distance.is_empty() && shared.is_empty() {
                continue;
            }
            let why = if shared.is_empty() {
                format!(
                    "regions {} are chosen by distance alone",
                    by_distance.join(", ")
                )
            } else {
                format!("several regions claim {}", shared[0])
            };
            out.push(self.config.problem_at(
                key.span(),
                format!(
                    "warning: service {}: the GeoIP database has countries but no coordinates, \
                     so every client of a country sits at its centroid and {why}: clients \
                     inside one country cannot be split between regions (e.g. us-east and \
                     us-west); map regions with `countries`/`continents`, or install a city \
                     database (geoip/update.sh dbip)",
                    svc.name
                ),
            ));
        }
        out
    }

    /// Reads config, zones and the checks between them; nothing is served from a snapshot that
    /// failed any check.
    pub fn load(config_path: &Path) -> Result<Snapshot, Problems> {
        Self::load_with(config_path, Arc::new(HealthRegistry::default()))
    }

    /// Loads with an existing health registry, so endpoints that did not change keep their
    /// state (reload).
    pub fn load_with(
        config_path: &Path,
        health: Arc<HealthRegistry>,
    ) -> Result<Snapshot, Problems> {
        Self::load_serving(config_path, health, &Tolerate::Nothing)
    }

    /// Loads for serving, leaving out the zone files `tolerate` allows to fail (SPEC "Day
    /// two"): at start any zone (the others serve, its names get SERVFAIL), at a reload only
    /// those already failing, so a reload that would break a served zone is rejected whole.
    pub fn load_serving(
        config_path: &Path,
        health: Arc<HealthRegistry>,
        tolerate: &Tolerate,
    ) -> Result<Snapshot, Problems> {
        Self::load_serving_for(config_path, health, tolerate, Arc::default())
    }

    /// [`Snapshot::load_serving`] for a server that already has its [`Registrations`] (a
    /// reload): the new snapshot carries them, and takes the zones a transfer left in them
    /// ([`Registrations::prebuilt`]).
    pub fn load_serving_for(
        config_path: &Path,
        health: Arc<HealthRegistry>,
        tolerate: &Tolerate,
        registrations: Arc<Registrations>,
    ) -> Result<Snapshot, Problems> {
        let checked = check_with(config_path, tolerate, &registrations.prebuilt);
        match checked.config {
            Some(config) if checked.problems.is_empty() => Self::build(
                config,
                checked.zones,
                checked.geo_dbs,
                checked.dnssec,
                health,
                registrations,
            ),
            _ => Err(Problems(checked.problems)),
        }
    }

    pub fn from_config(
        config: LoadedConfig,
        health: Arc<HealthRegistry>,
    ) -> Result<Snapshot, Problems> {
        let registrations = Arc::<Registrations>::default();
        let mut zones = ZoneSet::load_dir_checked(&config.zones_dir);
        crate::zone::copy::add_copies(&config, &mut zones, &registrations.prebuilt);
        let mut problems = zones.problems;
        check_services(&config, &zones.zones, &zones.unbuilt, &mut problems);
        let db = open_geo_db(&config, &mut problems);
        let signed =
            crate::dnssec::config::load(&config.config.dnssec, &config.cx(), &mut problems);
        check_signed_zones(&config, &zones.zones, &zones.unbuilt, &mut problems);
        if !problems.is_empty() {
            config::sort_problems(&mut problems, &config.path);
            return Err(Problems(problems));
        }
        Self::build(config, zones.zones, db, signed, health, registrations)
    }

    /// Builds the snapshot from parts that passed every check.
    fn build(
        config: LoadedConfig,
        mut zones: ZoneSet,
        dbs: Vec<GeoDb>,
        signed: Vec<crate::dnssec::config::ZoneKeys>,
        health: Arc<HealthRegistry>,
        registrations: Arc<Registrations>,
    ) -> Result<Snapshot, Problems> {
        let regions = build_regions(&config);
        let locator = build_locator(&config, dbs);
        let services = build_services(&config, &regions, &health);
        health.mark_built();
        // Drains are rules, not flags: a region drain covers endpoints new in this config.
        health.drains.apply(&services, &regions);
        for (i, svc) in services.iter().enumerate() {
            let zone = zones.find_name(&svc.name).map(|z| wire_key_of(&z.origin));
            if let Some(zone) = zone.and_then(|k| zones.zones.get_mut(&k)) {
                if let Some(z) = Arc::get_mut(zone) {
                    z.attach_service(&svc.name, i);
                }
            }
        }
        // States of endpoints that are gone are dropped with their last snapshot. One set of
        // what this snapshot has, rather than a scan of every service per state: that was
        // quadratic, 2.2 s to load 4,000 services.
        let live: std::collections::HashSet<(String, std::net::IpAddr, &str)> = services
            .iter()
            .flat_map(|s| {
                let name = s.name.to_ascii();
                s.endpoints
                    .iter()
                    .map(move |e| (name.clone(), e.addr, e.probe.as_str()))
            })
            .collect();
        health.retain(&|k| live.contains(&(k.service.clone(), k.address, k.probe.as_str())));
        let c = &config.config;
        let wire = WireSettings {
            max_udp_payload: *c.server.max_udp_payload.get_ref(),
            site_id: c
                .site
                .as_ref()
                .and_then(|s| s.id.as_ref())
                .map(|s| s.get_ref().clone()),
        };
        let rrl = config
            .rrl
            .clone()
            .map(|s| ratelimit::Rrl::new(s, &config.path));
        let notify_from = c
            .secondary
            .iter()
            .filter_map(|s| {
                let s = s.get_ref();
                let from = s.primary_addrs().map(|p| geo::canonical(p.ip())).collect();
                Some((s.origin()?, from))
            })
            .collect();
        let cookie_secret = config
            .cookie_secret
            .unwrap_or_else(|| crate::base::secret::Secret::random_for(&config.path));
        let dnssec = signed
            .into_iter()
            .filter_map(|keys| {
                let key = wire_key_of(&keys.zone);
                let ttl = zones.zones.get(&key)?.soa.ttl;
                Some((key, Arc::new(crate::dnssec::online::Online::new(keys, ttl))))
            })
            .collect();
        Ok(Snapshot {
            dnssec,
            rrl,
            cookie_secret,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed) + 1,
            loaded_at: SystemTime::now(),
            config,
            zones,
            wire,
            regions,
            locator,
            services,
            health,
            notify_from,
            registrations,
        })
    }

    /// The signing state of `zone` when it is signed (`[[dnssec]]`). Free while no zone is.
    #[inline]
    pub fn signing(&self, zone: &crate::zone::Zone) -> Option<&crate::dnssec::online::Online> {
        if self.dnssec.is_empty() {
            return None;
        }
        self.dnssec.get(&*wire_key_of(&zone.origin)).map(|o| &**o)
    }

    /// [`Snapshot::signing`] by the origin's wire key (the fast path has it as a slice).
    #[inline]
    pub fn signing_key(&self, origin: &[u8]) -> Option<&crate::dnssec::online::Online> {
        if self.dnssec.is_empty() {
            return None;
        }
        self.dnssec.get(origin).map(|o| &**o)
    }

    /// The service that answers at a balanced name's node.
    pub fn service_of(&self, node: &crate::zone::Node) -> Option<&Service> {
        node.service()
            .and_then(|i| self.services.get(i))
            .map(|s| &**s)
    }

    /// A NOTIFY (RFC 1996) for `zone` from `src`: accepted (NOERROR) when `zone` is a
    /// secondary zone and `src` one of its primaries' addresses, which calls the registered
    /// hook (the secondary side wakes the zone's refresh); refused otherwise (§3.10: a NOTIFY
    /// from elsewhere must not trigger transfers).
    pub fn notify(&self, zone: &Name, src: IpAddr) -> bool {
        let zone = zone.to_lowercase();
        let src = geo::canonical(src);
        let accepted = self
            .notify_from
            .iter()
            .any(|(z, from)| *z == zone && from.contains(&src));
        if accepted {
            self.registrations.notified(&zone);
        }
        accepted
    }

    pub fn tcp_idle_timeout(&self) -> Duration {
        self.config.tcp_idle_timeout
    }
}

/// What reading a config with its zones and GeoIP database found: everything that could be
/// read, and every problem (sorted by file and position, without repeats).
#[derive(Debug)]
pub struct Checked {
    /// The config; with `problems` empty it is whole and served as is.
    pub config: Option<LoadedConfig>,
    pub zones: ZoneSet,
    pub geo_dbs: Vec<GeoDb>,
    /// The `[[dnssec]]` zones whose keys loaded.
    pub dnssec: Vec<crate::dnssec::config::ZoneKeys>,
    pub problems: Vec<Problem>,
}

/// Reads the config, the zones and the GeoIP database, each as far as it goes, and makes every
/// check, so that one run of `meridian check` reports every problem: a broken config does not
/// hide the zones' problems, nor one bad zone line the next (SPEC "CLI").
pub fn check(config_path: &Path) -> Checked {
    check_tolerating(config_path, &Tolerate::Nothing)
}

/// Which zone files may fail to load while the rest is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tolerate {
    /// None (`check`, `explain`): every problem counts.
    Nothing,
    /// Any (start): a server with one bad zone file serves the others.
    AnyZone,
    /// These zones (by name, as `/status` writes it), already failing before a reload.
    Failing(Vec<String>),
}

impl Tolerate {
    fn allows(&self, zone: &str) -> bool {
        match self {
            Tolerate::Nothing => false,
            Tolerate::AnyZone => true,
            Tolerate::Failing(names) => names.iter().any(|n| n == zone),
        }
    }
}

/// [`check`], with the zone files `tolerate` allows taken out of service instead of counted
/// as problems.
pub fn check_tolerating(config_path: &Path, tolerate: &Tolerate) -> Checked {
    check_with(
        config_path,
        tolerate,
        &crate::zone::copy::Prebuilt::default(),
    )
}

/// [`check_tolerating`], taking the zones waiting in `prebuilt` instead of loading their
/// copies again.
fn check_with(
    config_path: &Path,
    tolerate: &Tolerate,
    prebuilt: &crate::zone::copy::Prebuilt,
) -> Checked {
    let examined = config::examine(config_path);
    let mut problems = examined.problems.clone();
    let mut zones = match &examined.zones_dir {
        Some(dir) => ZoneSet::load_dir_checked(dir),
        None => crate::zone::DirLoad::default(),
    };
    if let Some(config) = &examined.config {
        crate::zone::copy::add_copies(config, &mut zones, prebuilt);
    }
    for b in std::mem::take(&mut zones.broken) {
        let name = b.name();
        if !tolerate.allows(&name) {
            continue;
        }
        zones.problems.retain(|p| !b.problems.contains(p));
        if let Some(o) = &b.origin {
            // Services inside it are not checked against data that is not there.
            zones.unbuilt.push(o.clone());
        }
        let error = b
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        zones.zones.mark_failed(crate::zone::FailedZone {
            origin: b.origin,
            file: b.path,
            error,
        });
    }
    problems.extend(zones.problems);
    let mut geo_dbs = Vec::new();
    let mut dnssec = Vec::new();
    if let Some(config) = &examined.config {
        let mut more = Vec::new();
        // Without a zones folder (a misspelt `[sever]` left only a stand-in) every service
        // would be "not inside any zone": that only repeats the problem already reported.
        if examined.zones_dir.is_some() {
            check_services(config, &zones.zones, &zones.unbuilt, &mut more);
        }
        geo_dbs = open_geo_db(config, &mut more);
        // `[[dnssec]]` keys are opened here, as the GeoIP database is; what the config's own
        // check already said about the section (zone, validity) comes again and goes with the
        // repeats when the problems are sorted.
        dnssec = crate::dnssec::config::load(&config.config.dnssec, &config.cx(), &mut more);
        if examined.zones_dir.is_some() {
            check_signed_zones(config, &zones.zones, &zones.unbuilt, &mut more);
        }
        more.retain(|p| !examined.is_artefact(p));
        problems.append(&mut more);
    }
    config::sort_problems(&mut problems, config_path);
    Checked {
        config: examined.config,
        zones: zones.zones,
        geo_dbs,
        dnssec,
        problems,
    }
}

/// Checks that tie `[[dnssec]]` to zones: a signed zone must be served (a zone file or a
/// `[[secondary]]`); a zone whose file failed to build is not checked again.
fn check_signed_zones(
    config: &LoadedConfig,
    zones: &ZoneSet,
    unbuilt: &[Name],
    out: &mut Vec<Problem>,
) {
    for (i, d) in config.config.dnssec.iter().enumerate() {
        let d = d.get_ref();
        let Ok(mut name) = Name::from_ascii(d.zone.get_ref().trim_end_matches('.')) else {
            continue; // the config's check reports it
        };
        name.set_fqdn(true);
        let name = name.to_lowercase();
        if let Some(z) = zones.zones.get(&*wire_key_of(&name)) {
            if z.presigned.is_some() {
                out.push(config.problem_at(
                    d.zone.span(),
                    format!(
                        "dnssec[{i}].zone: `{name}` arrives signed ({}): it is served as signed there, not signed again here; remove this [[dnssec]] or serve the zone unsigned",
                        z.file.display()
                    ),
                ));
            }
            continue;
        }
        // A secondary zone before its first transfer: signed once it arrives.
        let secondary = config.config.secondary.iter().any(|s| {
            s.get_ref()
                .origin()
                .is_some_and(|o| o.to_lowercase() == name)
        });
        if unbuilt.contains(&name) || secondary {
            continue;
        }
        out.push(config.problem_at(
            d.zone.span(),
            format!(
                "dnssec[{i}].zone: `{name}` is not a zone served here (no {name}zone file in the zones folder, no [[secondary]])"
            ),
        ));
    }
}

/// Opens the configured GeoIP database. A file that does not exist is already a config
/// problem, so it is only opened when it is there.
fn open_geo_db(config: &LoadedConfig, out: &mut Vec<Problem>) -> Vec<GeoDb> {
    let Some(key) = config
        .config
        .geoip
        .as_ref()
        .and_then(|g| g.database.as_ref())
    else {
        return Vec::new();
    };
    // A missing file is reported by the config's own checks.
    let paths = config.geoip_databases.iter().filter(|p| p.is_file());
    paths
        .filter_map(|path| match GeoDb::open(path) {
            Ok(db) => Some(db),
            Err(e) => {
                out.push(config.problem_at(key.span(), format!("geoip.database: {e}")));
                None
            }
        })
        .collect()
}

/// Checks that tie services to zones: a balanced name must lie inside a served zone and must not
/// also carry static A/AAAA records, which would make its answers ambiguous. Names inside a zone
/// file too broken to build are not checked: that file's problems are reported already.
fn check_services(
    config: &LoadedConfig,
    zones: &ZoneSet,
    unbuilt: &[Name],
    out: &mut Vec<Problem>,
) {
    for svc in &config.config.service {
        let s = svc.get_ref();
        let key = config::service_key(s.name.get_ref());
        let at = |m: String| config.problem_at(s.name.span(), m);
        let name = match Name::from_ascii(s.name.get_ref()) {
            Ok(mut n) => {
                n.set_fqdn(true);
                n
            }
            Err(e) => {
                out.push(at(format!(
                    "{key}.name: `{}` is not a domain name: {e}",
                    s.name.get_ref()
                )));
                continue;
            }
        };
        // The zone the name belongs to may be one that could not be built; then a parent
        // zone that was built says nothing about it.
        let unbuilt_labels = unbuilt
            .iter()
            .filter(|o| o.zone_of(&name))
            .map(Name::num_labels)
            .max();
        let zone = zones.find_name(&name);
        if unbuilt_labels.is_some_and(|u| zone.is_none_or(|z| z.origin.num_labels() < u)) {
            continue;
        }
        match zone {
            None => out.push(at(format!(
                "{key}.name: `{}` is not inside any zone in the zones folder",
                s.name.get_ref()
            ))),
            Some(zone) => {
                let (mut wire, mut starts) = (Vec::new(), Vec::new());
                crate::zone::wire_lower(&name, &mut wire, &mut starts);
                if let Found::Delegation(..) = zone.find(&wire, &starts, false) {
                    out.push(at(format!(
                        "{key}.name: `{}` lies in a subzone delegated away from {}",
                        s.name.get_ref(),
                        zone.origin
                    )));
                }
                if zone.presigned.is_some() {
                    out.push(at(format!(
                        "{key}.name: `{}` lies in {}, which arrives signed ({}): a balanced name's answers are made per query and cannot carry the zone's own signatures; serve the zone unsigned and name it in [[dnssec]] to sign it online, or delegate the name to an unsigned subzone",
                        s.name.get_ref(),
                        zone.origin,
                        zone.file.display()
                    )));
                }
                let targets = config::pool::layout(&config.config, s)
                    .members()
                    .any(|m| m.endpoint.get_ref().target.is_some());
                if let Some(node) = zone.node(&name).filter(|n| targets && !n.rrsets.is_empty()) {
                    out.push(at(format!(
                        "{key}.name: `{}` has records in {}; a service of `target` endpoints answers every type with a CNAME, which can have no other data at its name",
                        s.name.get_ref(),
                        zone.file.display()
                    )));
                    let _ = node;
                } else if let Some(node) = zone.node(&name) {
                    if node.rrset(RecordType::CNAME).is_some() {
                        out.push(at(format!(
                            "{key}.name: `{}` is a CNAME in {}; a balanced name cannot also be an alias",
                            s.name.get_ref(),
                            zone.file.display()
                        )));
                    }
                    for t in [RecordType::A, RecordType::AAAA] {
                        if node.rrset(t).is_some() {
                            out.push(at(format!(
                                "{key}.name: `{}` also has static {t} records in {}; remove them from the zone or the service",
                                s.name.get_ref(),
                                zone.file.display()
                            )));
                        }
                    }
                }
            }
        }
    }
}

fn wire_key_of(n: &Name) -> crate::zone::WireKey {
    crate::zone::wire_key(n)
}

fn loc(l: &config::Location) -> Coords {
    Coords {
        lat: l.lat,
        lon: l.lon,
    }
}

fn build_regions(config: &LoadedConfig) -> Vec<Region> {
    config
        .config
        .regions
        .iter()
        .map(|(name, r)| {
            let r = r.get_ref();
            Region {
                name: name.clone(),
                location: r.location.as_ref().map(loc),
                countries: r
                    .countries
                    .iter()
                    .filter_map(|c| geo::code(c.get_ref()))
                    .collect(),
                continents: r
                    .continents
                    .iter()
                    .filter_map(|c| geo::code(c.get_ref()))
                    .collect(),
                bias: r.bias.as_ref().map_or(0.0, |b| *b.get_ref() as f64),
            }
        })
        .collect()
}

fn build_locator(config: &LoadedConfig, dbs: Vec<GeoDb>) -> Locator {
    let c = &config.config;
    let overrides = c
        .geoip
        .iter()
        .flat_map(|g| g.networks.iter())
        .filter_map(|n| {
            let n = n.get_ref();
            let (ip, prefix) = config::parse_cidr(n.cidr.get_ref())?;
            let target = if let Some(r) = &n.region {
                OverrideTarget::Region(r.get_ref().clone())
            } else if let Some(l) = &n.location {
                OverrideTarget::Location(loc(l))
            } else {
                OverrideTarget::Country(geo::code(n.country.as_ref()?.get_ref())?)
            };
            Some(Override {
                net: crate::base::net::mask(geo::canonical(ip), prefix),
                prefix,
                target,
            })
        })
        .collect();
    let site = c
        .site
        .as_ref()
        .and_then(|s| s.location.as_ref())
        .map(|l| loc(l.get_ref()));
    Locator::new(overrides, dbs, site)
}

fn build_services(
    config: &LoadedConfig,
    regions: &[Region],
    health: &HealthRegistry,
) -> Vec<Arc<Service>> {
    let c = &config.config;
    c.service
        .iter()
        .filter_map(|svc| build_service(c, svc.get_ref(), regions, health).map(Arc::new))
        .collect()
}

/// One `[[service]]`: its inline and pooled endpoints resolved by `config::pool::layout`; with
/// `[[service.tier]]`s or `fallback`, each tier a service of its own
/// (`crate::policy::tier`) over clones of the service's endpoints.
fn build_service(
    c: &config::Config,
    s: &config::ServiceConfig,
    regions: &[Region],
    health: &HealthRegistry,
) -> Option<Service> {
    let mut name = Name::from_ascii(s.name.get_ref()).ok()?;
    name.set_fqdn(true);
    let name = name.to_lowercase();
    let service_profile = s.health.as_ref().map(|h| h.get_ref().display());
    let profile_up = |p: &str| {
        c.health
            .get(p)
            .and_then(|p| p.get_ref().initial.as_ref())
            .is_none_or(|i| i.get_ref() != "down")
    };
    // A probed endpoint a reload adds was never seen working: down until its first probe
    // passes. At start, endpoints follow `initial` (up unless told otherwise).
    let reloading = health.built_before();
    let endpoint = |m: &config::pool::Member<'_>| -> Option<Endpoint> {
        let e = m.endpoint.get_ref();
        // The profiles that apply (its pool's, or the service's for an inline endpoint).
        let profiles: Vec<String> = m
            .health
            .map(|h| h.get_ref().names().to_vec())
            .unwrap_or_default();
        let initially_up = profiles.iter().all(|p| profile_up(p));
        let health_min = m
            .health
            .map_or(0, |h| h.get_ref().min(m.health_min.map(|m| *m.get_ref())));
        let target = match &e.target {
            Some(t) => {
                let mut n = Name::from_ascii(t.get_ref()).ok()?;
                n.set_fqdn(true);
                Some(n.to_lowercase())
            }
            None => None,
        };
        let addr = match (&target, &e.address) {
            (Some(t), _) => Endpoint::target_addr(t),
            (None, Some(a)) => a.get_ref().trim().parse().ok()?,
            (None, None) => return None,
        };
        let probe = match &e.check {
            Some(url) => url.get_ref().clone(),
            None if profiles.is_empty() => String::new(),
            None => format!("profile:{}", profiles.join(",")),
        };
        let key = EndpointKey {
            service: name.to_ascii(),
            address: addr,
            probe: probe.clone(),
        };
        // One check per profile, each with its own verdict (`health_min`).
        let state = if profiles.is_empty() {
            health.state(key, initially_up && (probe.is_empty() || !reloading))
        } else {
            let checks: Vec<(String, bool)> = profiles
                .iter()
                .map(|p| (p.clone(), profile_up(p) && !reloading))
                .collect();
            health.checked_state(key, &checks, health_min)
        };
        Some(Endpoint {
            addr,
            target,
            region: m
                .region
                .and_then(|r| regions.iter().position(|x| &x.name == r.get_ref())),
            weight: e.weight.as_ref().map_or(1.0, |w| *w.get_ref()),
            capacity: e
                .capacity
                .as_ref()
                .or(e.weight.as_ref())
                .map_or(1.0, |c| *c.get_ref()),
            priority: e.priority.unwrap_or(1),
            probe,
            health: m.health.map(|h| h.get_ref().display()),
            pool: m.pool.map(str::to_string),
            state,
        })
    };
    let when_all_down = match s.when_all_down.as_ref().map(|w| w.get_ref().as_str()) {
        Some("empty") => WhenAllDown::Empty,
        Some("servfail") => WhenAllDown::Servfail,
        _ => WhenAllDown::ServeAll,
    };
    let ttl_degraded = s.ttl_degraded.unwrap_or(s.ttl);
    let spill = s
        .spill
        .as_ref()
        .and_then(|v| Spill::parse(v.get_ref()))
        .unwrap_or(Spill::Nearest);
    let lay = config::pool::layout(c, s);
    let policy_of = |t: &config::pool::TierLayout<'_>| PolicyKind::parse(t.policy?.get_ref());
    let new = |policy, when_all_down, endpoints| {
        let mut svc = Service::new(
            name.clone(),
            policy,
            s.ttl,
            *s.max_answers.get_ref(),
            when_all_down,
            service_profile.clone(),
            endpoints,
        );
        svc.ttl_degraded = ttl_degraded;
        svc.spill = spill;
        svc
    };
    if !lay.tiered && lay.fallback.is_empty() {
        let t = lay.tiers.first()?;
        let endpoints = t.members.iter().filter_map(endpoint).collect();
        return Some(new(policy_of(t)?, when_all_down, endpoints));
    }
    // Tiers (a service with `fallback` but no tiers is one tier of its own).
    let mut all: Vec<Endpoint> = Vec::new();
    let mut list = Vec::new();
    for t in &lay.tiers {
        let eps: Vec<Endpoint> = t.members.iter().filter_map(endpoint).collect();
        let map = (all.len()..all.len() + eps.len()).collect();
        all.extend(eps.iter().cloned());
        list.push(crate::policy::tier::Tier {
            // A tier that qualified has an endpoint up; serve-all only covers a count that
            // changed in between.
            svc: new(policy_of(t)?, WhenAllDown::ServeAll, eps),
            map,
            min_up: t.min_up,
            pools: t.pools.iter().map(|p| p.to_string()).collect(),
        });
    }
    let mut fallback = Vec::new();
    for a in &lay.fallback {
        let addr: std::net::IpAddr = a.get_ref().trim().parse().ok()?;
        fallback.push(all.len());
        all.push(Endpoint {
            addr,
            target: None,
            region: None,
            weight: 1.0,
            capacity: 1.0,
            priority: 1,
            probe: String::new(),
            health: None,
            pool: None,
            state: health.state(
                EndpointKey {
                    service: name.to_ascii(),
                    address: addr,
                    probe: String::new(),
                },
                true,
            ),
        });
    }
    let first = list.first()?.svc.policy;
    let mut svc = new(first, when_all_down, all);
    svc.tiers = Some(Box::new(crate::policy::tier::Tiers { list, fallback }));
    Some(svc)
}

/// The served snapshot, shared by every listener.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

pub fn shared(s: Snapshot) -> SharedSnapshot {
    Arc::new(ArcSwap::from_pointee(s))
}
