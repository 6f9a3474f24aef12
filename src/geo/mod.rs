//! Locating a client: which address stands for it (ECS or source), and where that address is,
//! from `geoip.networks` overrides (longest prefix), then the GeoIP database, then this site's
//! own location (under anycast the receiving site is near the client), else nowhere (every
//! region counts as equally near).
//!
//! Also reports the prefix length the answer depended on, which becomes the ECS scope.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;

use crate::base::net::mask;

/// Latitude and longitude in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coords {
    pub lat: f64,
    pub lon: f64,
}

/// Great-circle distance in km (haversine, R = 6371 km). Flat lat/lon distance gets
/// Melbourne and Tokyo wrong (see `tests/data/geoip/README.md`).
pub fn distance_km(a: Coords, b: Coords) -> f64 {
    let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = la2 - la1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

/// Two-letter code (country or continent) without a heap allocation.
pub type Code = [u8; 2];

pub fn code(s: &str) -> Option<Code> {
    let b = s.as_bytes();
    (b.len() == 2).then(|| [b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()])
}

pub fn code_str(c: &Code) -> &str {
    std::str::from_utf8(c).unwrap_or("??")
}

/// Country → (continent, centroid), from `countries.tsv`.
pub fn country_info(cc: Code) -> Option<(Code, Coords)> {
    static TABLE: OnceLock<HashMap<Code, (Code, Coords)>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            include_str!("countries.tsv")
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let mut f = l.split('\t');
                    let cc = code(f.next()?)?;
                    let ct = code(f.next()?)?;
                    let lat = f.next()?.parse().ok()?;
                    let lon = f.next()?.parse().ok()?;
                    Some((cc, (ct, Coords { lat, lon })))
                })
                .collect()
        })
        .get(&cc)
        .copied()
}

/// IPv4-mapped (`::ffff:a.b.c.d`) and 6to4 (`2002:aabb:ccdd::/48`) addresses stand for the IPv4
/// address inside them.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[0] == 0x2002 {
                return IpAddr::V4(Ipv4Addr::new(
                    (s[1] >> 8) as u8,
                    s[1] as u8,
                    (s[2] >> 8) as u8,
                    s[2] as u8,
                ));
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

/// `prefix`, a prefix length of `canonical(addr)`, as a prefix length of `addr` itself: the
/// IPv4 address sits 96 bits into an IPv4-mapped address and 16 bits into a 6to4 one.
pub fn prefix_in(addr: IpAddr, prefix: u8) -> u8 {
    match (addr, canonical(addr)) {
        (IpAddr::V6(v6), IpAddr::V4(_)) if prefix > 0 => {
            let base = if v6.to_ipv4_mapped().is_some() {
                96
            } else {
                16
            };
            base + prefix.min(32)
        }
        _ => prefix,
    }
}

/// What a `geoip.networks` entry says about the addresses it covers.
#[derive(Debug, Clone)]
pub enum OverrideTarget {
    Region(String),
    Location(Coords),
    Country(Code),
}

#[derive(Debug, Clone)]
pub struct Override {
    pub net: IpAddr,
    pub prefix: u8,
    pub target: OverrideTarget,
}

/// What the database knows of one address.
#[derive(Debug, Clone, Default)]
pub struct DbHit {
    pub country: Option<Code>,
    pub continent: Option<Code>,
    pub coords: Option<Coords>,
    /// Prefix length of the database network holding the address (found or not).
    pub prefix: u8,
    pub found: bool,
}

/// A memory-mapped GeoIP database: MaxMind GeoIP2/GeoLite2 City or Country, or the DB-IP /
/// ip-location-db flat schema.
pub struct GeoDb {
    pub path: PathBuf,
    reader: maxminddb::Reader<maxminddb::Mmap>,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GeoDb({})", self.path.display())
    }
}

#[derive(Deserialize)]
struct IsoCode<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
}
#[derive(Deserialize)]
struct ContinentCode<'a> {
    #[serde(borrow)]
    code: Option<&'a str>,
}
#[derive(Deserialize)]
struct LatLon {
    latitude: Option<Degrees>,
    longitude: Option<Degrees>,
}

/// A coordinate as any MaxMind DB number: MaxMind writes doubles, ip-location-db writes 32-bit
/// floats, and other converters write integers or strings. Asking the decoder for "any" rather
/// than a double takes them all.
#[derive(Debug, Clone, Copy)]
struct Degrees(f64);

impl<'de> Deserialize<'de> for Degrees {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Degrees;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of degrees")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Degrees, E> {
                Ok(Degrees(v))
            }
            fn visit_f32<E: serde::de::Error>(self, v: f32) -> Result<Degrees, E> {
                // Through the shortest decimal form: 51.5074f32 becomes 51.5074, not
                // 51.50740051269531.
                Ok(Degrees(v.to_string().parse().unwrap_or(f64::from(v))))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Degrees, E> {
                Ok(Degrees(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Degrees, E> {
                Ok(Degrees(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Degrees, E> {
                v.trim()
                    .parse()
                    .map(Degrees)
                    .map_err(|_| E::custom(format!("`{v}` is not a number")))
            }
        }
        d.deserialize_any(V)
    }
}

/// Both schemas at once: MaxMind nests (`country.iso_code`), DB-IP / ip-location-db is flat
/// (`country_code`, `latitude`, `longitude`).
#[derive(Deserialize)]
struct GeoRecord<'a> {
    #[serde(borrow)]
    country: Option<IsoCode<'a>>,
    #[serde(borrow)]
    continent: Option<ContinentCode<'a>>,
    location: Option<LatLon>,
    #[serde(borrow)]
    country_code: Option<&'a str>,
    #[serde(borrow)]
    continent_code: Option<&'a str>,
    latitude: Option<Degrees>,
    longitude: Option<Degrees>,
}

impl GeoDb {
    pub fn open(path: &Path) -> Result<GeoDb, String> {
        // SAFETY: the file is opened read-only. A reload opens the new file as a new mapping;
        // operators replace database files by rename (geoip/update.sh does), which leaves the
        // old mapping's inode intact until the old snapshot is dropped.
        let reader = unsafe { maxminddb::Reader::open_mmap(path) }
            .map_err(|e| format!("cannot open GeoIP database `{}`: {e}", path.display()))?;
        let db = GeoDb {
            path: path.to_path_buf(),
            reader,
        };
        // A database whose records decode to neither schema is almost certainly the wrong file.
        let probe = ["81.2.69.160", "8.8.8.8", "2001:218::1", "1.0.0.1"];
        for p in probe {
            if let Ok(ip) = p.parse::<IpAddr>() {
                if !db.covers(ip) {
                    continue;
                }
                db.try_lookup(ip).map_err(|e| {
                    format!("GeoIP database `{}` is not readable: {e}", path.display())
                })?;
            }
        }
        Ok(db)
    }

    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// Whether the database can hold the (canonical) address at all: ip-location-db ships
    /// IPv4 and IPv6 as separate files, and an IPv4-only tree cannot be asked for IPv6.
    pub fn covers(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() || self.reader.metadata().ip_version == 6
    }

    /// Whether any record carries coordinates, judged from well-known addresses: a
    /// country-level database puts every client of a country on one point.
    pub fn has_coordinates(&self) -> bool {
        [
            "81.2.69.160",
            "8.8.8.8",
            "2001:218::1",
            "1.0.0.1",
            "2a00:1450::1",
        ]
        .iter()
        .filter_map(|p| p.parse::<IpAddr>().ok())
        .filter(|ip| self.covers(*ip))
        .any(|ip| self.lookup(ip).coords.is_some())
    }

    fn try_lookup(&self, ip: IpAddr) -> Result<DbHit, maxminddb::MaxMindDbError> {
        let r = self.reader.lookup(ip)?;
        let prefix = r.network().map(|n| n.prefix()).unwrap_or(0);
        let Some(rec) = r.decode::<GeoRecord<'_>>()? else {
            return Ok(DbHit {
                prefix,
                ..DbHit::default()
            });
        };
        let country = rec
            .country
            .and_then(|c| c.iso_code)
            .or(rec.country_code)
            .and_then(code);
        let continent = rec
            .continent
            .and_then(|c| c.code)
            .or(rec.continent_code)
            .and_then(code)
            .or_else(|| country.and_then(country_info).map(|(ct, _)| ct));
        let coords = match (rec.location, rec.latitude, rec.longitude) {
            (
                Some(LatLon {
                    latitude: Some(lat),
                    longitude: Some(lon),
                }),
                _,
                _,
            ) => Some(Coords {
                lat: lat.0,
                lon: lon.0,
            }),
            (_, Some(lat), Some(lon)) => Some(Coords {
                lat: lat.0,
                lon: lon.0,
            }),
            _ => None,
        };
        // Out-of-range coordinates would put the client nowhere sensible; ignore them.
        let coords = coords.filter(|c| c.lat.abs() <= 90.0 && c.lon.abs() <= 180.0);
        Ok(DbHit {
            country,
            continent,
            coords,
            prefix,
            found: true,
        })
    }

    /// Looks an address up; a decode error counts as "not found" so one bad record cannot
    /// fail a query.
    pub fn lookup(&self, ip: IpAddr) -> DbHit {
        if !self.covers(ip) {
            return DbHit::default();
        }
        self.try_lookup(ip).unwrap_or_default()
    }
}

/// Where the client address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrSource {
    /// EDNS Client Subnet with this source prefix length.
    Ecs(u8),
    SourceIp,
}

/// How the client's location was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocatedBy {
    Override,
    Database,
    Site,
    Unknown,
}

impl LocatedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            LocatedBy::Override => "override",
            LocatedBy::Database => "database",
            LocatedBy::Site => "site",
            LocatedBy::Unknown => "unknown",
        }
    }
}

/// Everything known about where a client is.
#[derive(Debug, Clone)]
pub struct ClientLocation {
    pub addr: IpAddr,
    pub source: AddrSource,
    pub by: LocatedBy,
    /// Set by a `geoip.networks` entry that names a region.
    pub region: Option<String>,
    pub country: Option<Code>,
    pub continent: Option<Code>,
    pub coords: Option<Coords>,
    /// Prefix length of the network whose data decided (override or database network).
    pub prefix: u8,
}

/// The client-locating part of a snapshot.
#[derive(Debug, Default)]
pub struct Locator {
    /// Sorted longest prefix first.
    pub overrides: Vec<Override>,
    /// `[geoip] database`, one file or several (e.g. separate IPv4 and IPv6 files): the
    /// first that knows an address wins.
    pub dbs: Vec<GeoDb>,
    pub site: Option<Coords>,
}

impl Locator {
    pub fn new(mut overrides: Vec<Override>, dbs: Vec<GeoDb>, site: Option<Coords>) -> Locator {
        overrides.sort_by_key(|o| std::cmp::Reverse(o.prefix));
        Locator {
            overrides,
            dbs,
            site,
        }
    }

    fn find_override(&self, ip: IpAddr) -> Option<&Override> {
        self.overrides
            .iter()
            .find(|o| o.net.is_ipv4() == ip.is_ipv4() && mask(ip, o.prefix) == o.net)
    }

    /// Locates the client given by `addr` (already the ECS address when there was one).
    pub fn locate(&self, addr: IpAddr, source: AddrSource) -> ClientLocation {
        let ip = canonical(addr);
        let mut loc = ClientLocation {
            addr,
            source,
            by: LocatedBy::Unknown,
            region: None,
            country: None,
            continent: None,
            coords: None,
            prefix: 0,
        };
        if let Some(o) = self.find_override(ip) {
            loc.by = LocatedBy::Override;
            loc.prefix = o.prefix;
            match &o.target {
                OverrideTarget::Region(r) => loc.region = Some(r.clone()),
                OverrideTarget::Location(c) => loc.coords = Some(*c),
                OverrideTarget::Country(cc) => {
                    loc.country = Some(*cc);
                    if let Some((ct, c)) = country_info(*cc) {
                        loc.continent = Some(ct);
                        loc.coords = Some(c);
                    }
                }
            }
            return loc;
        }
        let mut db_prefix: Option<u8> = None;
        for db in self.dbs.iter().filter(|db| db.covers(ip)) {
            let hit = db.lookup(ip);
            // The database's network bounds how far the answer can be shared; for IPv4
            // looked up through its mapped form the prefix is already IPv4-relative. With
            // several files, "not found" holds only as far as every one of them says so.
            db_prefix = Some(db_prefix.map_or(hit.prefix, |p| p.max(hit.prefix)));
            if hit.found
                && (hit.country.is_some() || hit.coords.is_some() || hit.continent.is_some())
            {
                loc.by = LocatedBy::Database;
                loc.prefix = hit.prefix;
                loc.country = hit.country;
                loc.continent = hit.continent;
                // A country-only database places the client at its country's centroid.
                loc.coords = hit
                    .coords
                    .or_else(|| hit.country.and_then(country_info).map(|(_, c)| c));
                // A record with a continent alone says nothing of distance: this site's
                // location stands in (the continent still counts for `continents` mappings).
                if loc.coords.is_none() {
                    if let Some(c) = self.site {
                        loc.by = LocatedBy::Site;
                        loc.coords = Some(c);
                    }
                }
                return loc;
            }
        }
        // Unknown to overrides and database: the answer depends only on not being found, so
        // it holds for the database's whole empty network (or, without a database, for the
        // client's whole family unless overrides could match it).
        loc.prefix = match db_prefix {
            Some(p) => p,
            None if self
                .overrides
                .iter()
                .any(|o| o.net.is_ipv4() == ip.is_ipv4()) =>
            {
                if ip.is_ipv4() {
                    24
                } else {
                    56
                }
            }
            None => 0,
        };
        match self.site {
            Some(c) => {
                loc.by = LocatedBy::Site;
                loc.coords = Some(c);
            }
            None => loc.by = LocatedBy::Unknown,
        }
        loc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haversine_known_distances() {
        let us_east = Coords {
            lat: 38.9,
            lon: -77.0,
        };
        let eu_west = Coords {
            lat: 53.35,
            lon: -6.26,
        };
        let melbourne = Coords {
            lat: -37.8159,
            lon: 144.9669,
        };
        let d1 = distance_km(melbourne, us_east);
        let d2 = distance_km(melbourne, eu_west);
        assert!((d1 - 16387.0).abs() < 5.0, "{d1}");
        assert!((d2 - 17219.0).abs() < 5.0, "{d2}");
    }

    #[test]
    fn mapped_and_6to4_are_ipv4() {
        let v4: IpAddr = "81.2.69.160".parse().unwrap();
        assert_eq!(canonical("::ffff:81.2.69.160".parse().unwrap()), v4);
        assert_eq!(canonical("2002:5102:45a0::".parse().unwrap()), v4);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }

    #[test]
    fn prefixes_of_ipv4_inside_ipv6() {
        let at = |s: &str, p| prefix_in(s.parse().unwrap(), p);
        assert_eq!(at("81.2.69.160", 27), 27);
        assert_eq!(at("2001:db8::1", 56), 56);
        assert_eq!(at("::ffff:81.2.69.160", 27), 123);
        assert_eq!(at("2002:5102:45a0::", 27), 43);
        assert_eq!(at("2002:5102:45a0::", 0), 0);
    }

    #[test]
    fn centroid_table_has_countries() {
        let (ct, c) = country_info(*b"JP").unwrap();
        assert_eq!(&ct, b"AS");
        assert!((c.lat - 36.0).abs() < 2.0);
        assert_eq!(country_info(*b"BR").unwrap().0, *b"SA");
        assert!(country_info(*b"ZZ").is_none());
    }

    #[test]
    fn overrides_longest_prefix_wins() {
        let l = Locator::new(
            vec![
                Override {
                    net: "10.0.0.0".parse().unwrap(),
                    prefix: 8,
                    target: OverrideTarget::Region("a".into()),
                },
                Override {
                    net: "10.1.0.0".parse().unwrap(),
                    prefix: 16,
                    target: OverrideTarget::Region("b".into()),
                },
            ],
            Vec::new(),
            None,
        );
        let loc = l.locate("10.1.2.3".parse().unwrap(), AddrSource::SourceIp);
        assert_eq!(loc.region.as_deref(), Some("b"));
        assert_eq!(loc.prefix, 16);
        let loc = l.locate("10.2.2.3".parse().unwrap(), AddrSource::SourceIp);
        assert_eq!(loc.region.as_deref(), Some("a"));
        let loc = l.locate("11.2.2.3".parse().unwrap(), AddrSource::SourceIp);
        assert_eq!(loc.by, LocatedBy::Unknown);
    }
}
