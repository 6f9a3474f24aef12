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
use crate::zone::ZoneSet;

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
}

static GENERATION: AtomicU64 = AtomicU64::new(0);

impl Snapshot {
    /// Reads config, zones and the checks between them; nothing is served from a snapshot that
    /// failed any check.
    pub fn load(config_path: &Path) -> Result<Snapshot, Problems> {
        let config = config::load(config_path)?;
        Self::from_config(config)
    }

    pub fn from_config(config: LoadedConfig) -> Result<Snapshot, Problems> {
        let zones = ZoneSet::load_dir(&config.zones_dir).map_err(Problems)?;
        let mut problems = Vec::new();
        check_services(&config, &zones, &mut problems);
        if !problems.is_empty() {
            return Err(Problems(problems));
        }
        let c = &config.config;
        let wire = WireSettings {
            max_udp_payload: *c.server.max_udp_payload.get_ref(),
            site_id: c
                .site
                .as_ref()
                .and_then(|s| s.id.as_ref())
                .map(|s| s.get_ref().clone()),
        };
        Ok(Snapshot {
            generation: GENERATION.fetch_add(1, Ordering::Relaxed) + 1,
            loaded_at: SystemTime::now(),
            config,
            zones,
            wire,
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
                if let Some(node) = zone.node(&name) {
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

/// The served snapshot, shared by every listener.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

pub fn shared(s: Snapshot) -> SharedSnapshot {
    Arc::new(ArcSwap::from_pointee(s))
}
