//! The `Snapshot`: everything a query needs, built off the query path from the config, zones
//! and GeoIP data, and published atomically through an `ArcSwap`. A query loads the current
//! snapshot once and answers from it without taking a lock; a reload builds a whole new
//! snapshot and swaps the pointer, so no query sees half of an old and half of a new config.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use hickory_proto::rr::{Name, RecordType};

use crate::config::{self, LoadedConfig, Problem, Problems};
use crate::geo::{self, Coords, GeoDb, Locator, Override, OverrideTarget};
use crate::health::{EndpointKey, HealthRegistry};
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
    pub rrl: Option<crate::rrl::Rrl>,
    /// The key of DNS server cookies: `server.cookie_secret`, else random per config file.
    pub cookie_secret: crate::cookie::Secret,
}

static GENERATION: AtomicU64 = AtomicU64::new(0);

impl Snapshot {
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
        let config = config::load(config_path)?;
        Self::from_config(config, health)
    }

    pub fn from_config(
        config: LoadedConfig,
        health: Arc<HealthRegistry>,
    ) -> Result<Snapshot, Problems> {
        let mut zones = ZoneSet::load_dir(&config.zones_dir).map_err(Problems)?;
        let mut problems = Vec::new();
        check_services(&config, &zones, &mut problems);
        let db = match (
            &config.geoip_database,
            config
                .config
                .geoip
                .as_ref()
                .and_then(|g| g.database.as_ref()),
        ) {
            (Some(path), Some(key)) => match GeoDb::open(path) {
                Ok(db) => Some(db),
                Err(e) => {
                    problems.push(config.problem_at(key.span(), format!("geoip.database: {e}")));
                    None
                }
            },
            _ => None,
        };
        if !problems.is_empty() {
            return Err(Problems(problems));
        }
        let regions = build_regions(&config);
        let locator = build_locator(&config, db);
        let services = build_services(&config, &regions, &health);
        for svc in &services {
            let zone = zones.find_name(&svc.name).map(|z| wire_key_of(&z.origin));
            if let Some(zone) = zone.and_then(|k| zones.zones.get_mut(&k)) {
                if let Some(z) = Arc::get_mut(zone) {
                    z.attach_service(svc.clone());
                }
            }
        }
        // States of endpoints that are gone are dropped with their last snapshot.
        health.retain(&|k| {
            services.iter().any(|s| {
                s.name.to_ascii() == k.service
                    && s.endpoints
                        .iter()
                        .any(|e| e.addr == k.address && e.probe == k.probe)
            })
        });
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
            .map(|s| crate::rrl::Rrl::new(s, &config.path));
        let cookie_secret = config
            .cookie_secret
            .unwrap_or_else(|| crate::cookie::Secret::random_for(&config.path));
        Ok(Snapshot {
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
        })
    }

    pub fn tcp_idle_timeout(&self) -> Duration {
        self.config.tcp_idle_timeout
    }
}

/// Checks that tie services to zones: a balanced name must lie inside a served zone and must not
/// also carry static A/AAAA records, which would make its answers ambiguous.
fn check_services(config: &LoadedConfig, zones: &ZoneSet, out: &mut Vec<Problem>) {
    for (i, svc) in config.config.service.iter().enumerate() {
        let s = svc.get_ref();
        let at = |m: String| config.problem_at(s.name.span(), m);
        let name = match Name::from_ascii(s.name.get_ref()) {
            Ok(mut n) => {
                n.set_fqdn(true);
                n
            }
            Err(e) => {
                out.push(at(format!(
                    "service[{i}].name: `{}` is not a domain name: {e}",
                    s.name.get_ref()
                )));
                continue;
            }
        };
        match zones.find_name(&name) {
            None => out.push(at(format!(
                "service[{i}].name: `{}` is not inside any zone in the zones folder",
                s.name.get_ref()
            ))),
            Some(zone) => {
                let (mut wire, mut starts) = (Vec::new(), Vec::new());
                crate::zone::wire_lower(&name, &mut wire, &mut starts);
                if let Found::Delegation(..) = zone.find(&wire, &starts, false) {
                    out.push(at(format!(
                        "service[{i}].name: `{}` lies in a subzone delegated away from {}",
                        s.name.get_ref(),
                        zone.origin
                    )));
                }
                if let Some(node) = zone.node(&name) {
                    if node.rrset(RecordType::CNAME).is_some() {
                        out.push(at(format!(
                            "service[{i}].name: `{}` is a CNAME in {}; a balanced name cannot also be an alias",
                            s.name.get_ref(),
                            zone.file.display()
                        )));
                    }
                    for t in [RecordType::A, RecordType::AAAA] {
                        if node.rrset(t).is_some() {
                            out.push(at(format!(
                                "service[{i}].name: `{}` also has static {t} records in {}; remove them from the zone or the service",
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
            }
        })
        .collect()
}

fn build_locator(config: &LoadedConfig, db: Option<GeoDb>) -> Locator {
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
                net: geo::mask(geo::canonical(ip), prefix),
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
    Locator::new(overrides, db, site)
}

fn build_services(
    config: &LoadedConfig,
    regions: &[Region],
    health: &HealthRegistry,
) -> Vec<Arc<Service>> {
    let c = &config.config;
    c.service
        .iter()
        .filter_map(|svc| {
            let s = svc.get_ref();
            let mut name = Name::from_ascii(s.name.get_ref()).ok()?;
            name.set_fqdn(true);
            let name = name.to_lowercase();
            let profile = s.health.as_ref().map(|h| h.get_ref().clone());
            let initially_up = profile
                .as_ref()
                .and_then(|p| c.health.get(p))
                .and_then(|p| p.get_ref().initial.as_ref())
                .is_none_or(|i| i.get_ref() != "down");
            let endpoints = s
                .endpoints
                .get_ref()
                .iter()
                .filter_map(|e| {
                    let e = e.get_ref();
                    let addr = e.address.get_ref().parse().ok()?;
                    let probe = match (&e.check, &profile) {
                        (Some(url), _) => url.get_ref().clone(),
                        (None, Some(p)) => format!("profile:{p}"),
                        (None, None) => String::new(),
                    };
                    let state = health.state(
                        EndpointKey {
                            service: name.to_ascii(),
                            address: addr,
                            probe: probe.clone(),
                        },
                        initially_up,
                    );
                    Some(Endpoint {
                        addr,
                        region: e
                            .region
                            .as_ref()
                            .and_then(|r| regions.iter().position(|x| &x.name == r.get_ref())),
                        weight: e.weight.as_ref().map_or(1.0, |w| *w.get_ref()),
                        priority: e.priority.unwrap_or(1),
                        probe,
                        state,
                    })
                })
                .collect();
            Some(Arc::new(Service::new(
                name,
                PolicyKind::parse(s.policy.get_ref())?,
                s.ttl,
                *s.max_answers.get_ref(),
                match s.when_all_down.as_ref().map(|w| w.get_ref().as_str()) {
                    Some("empty") => WhenAllDown::Empty,
                    _ => WhenAllDown::ServeAll,
                },
                profile,
                endpoints,
            )))
        })
        .collect()
}

/// The served snapshot, shared by every listener.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

pub fn shared(s: Snapshot) -> SharedSnapshot {
    Arc::new(ArcSwap::from_pointee(s))
}
