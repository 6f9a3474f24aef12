//! The copy of a secondary zone kept in `state_dir/secondary/`: a versioned binary file of the
//! records exactly as received, and beside it the time of the last successful refresh.
//!
//! Why binary and not a master file: a copy is data, never directives. Presentation format
//! needs an escaping rule per rdata field to read back what was written (HINFO, NAPTR and CAA
//! strings with spaces, quotes, backslashes, empty strings, non-printable bytes, names with
//! any byte), and any slip turns a primary's data into `$INCLUDE` lines or breaks the copy.
//! Here each record is its owner name and rdata in uncompressed wire form, so there is nothing
//! to escape and nothing the loader could follow; reading is a bounds-checked decode. It is
//! also smaller and faster to read than text (docs/secondary.md has the figures), and
//! `meridian copy-dump`-style inspection is one `dig`-like decode away.
//!
//! Layout (all integers big endian):
//!   magic `MERIDIAN-COPY\n` (14 bytes), version u8 = 1, zone name (wire), record count u64,
//!   then per record: owner (wire), type u16, class u16, ttl u32, rdlength u16, rdata.
//!
//! The refresh time is a separate small file (`<zone>.refreshed`, Unix seconds as text),
//! rewritten at every successful refresh without rewriting the copy.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder, NameEncoding,
};

use crate::config::LoadedConfig;
use crate::zone::parse::ParsedRecord;
use crate::zone::{Builder, DirLoad, Zone};

const MAGIC: &[u8; 14] = b"MERIDIAN-COPY\n";
const VERSION: u8 = 1;

/// Where the copy of `zone` is kept.
pub fn path(state_dir: &Path, zone: &Name) -> PathBuf {
    state_dir
        .join("secondary")
        .join(format!("{}.copy", file_stem(zone)))
}

/// Where the time of the last successful refresh of `zone` is kept.
pub fn refreshed_path(state_dir: &Path, zone: &Name) -> PathBuf {
    state_dir
        .join("secondary")
        .join(format!("{}.refreshed", file_stem(zone)))
}

fn file_stem(zone: &Name) -> String {
    // Zone names from the config are host names; anything else is written as hex so that a
    // name can never step out of the folder.
    let n = zone.to_lowercase().to_ascii();
    let n = n.trim_end_matches('.');
    if !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && !n.starts_with('.')
    {
        n.to_string()
    } else {
        n.bytes().map(|b| format!("{b:02x}")).collect()
    }
}

fn name_wire(name: &Name, out: &mut Vec<u8>) -> Result<(), String> {
    // An encoder writes from offset 0 of its buffer: a name is encoded on its own.
    let mut buf = Vec::with_capacity(64);
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_name_encoding(NameEncoding::Uncompressed);
    name.emit(&mut enc)
        .map_err(|e| format!("name {name}: {e}"))?;
    out.extend_from_slice(&buf);
    Ok(())
}

/// The copy's bytes for `records` (SOA first) of `zone`.
pub fn encode(zone: &Name, records: &[Record]) -> Result<Vec<u8>, String> {
    let mut w = Writer::new(zone)?;
    for r in records {
        w.push(r)?;
    }
    Ok(w.finish())
}

/// Writes a copy one record at a time, so that a transfer is encoded as it arrives and never
/// held as parsed records (a hickory `Record` takes several times its encoded size).
pub struct Writer {
    buf: Vec<u8>,
    count_at: usize,
    count: u64,
}

impl Writer {
    pub fn new(zone: &Name) -> Result<Writer, String> {
        let mut buf = Vec::with_capacity(4096);
        buf.extend_from_slice(MAGIC);
        buf.push(VERSION);
        name_wire(zone, &mut buf)?;
        let count_at = buf.len();
        buf.extend_from_slice(&0u64.to_be_bytes());
        Ok(Writer {
            buf,
            count_at,
            count: 0,
        })
    }

    pub fn push(&mut self, r: &Record) -> Result<(), String> {
        let out = &mut self.buf;
        name_wire(&r.name, out)?;
        out.extend_from_slice(&u16::from(r.record_type()).to_be_bytes());
        out.extend_from_slice(&u16::from(r.dns_class).to_be_bytes());
        out.extend_from_slice(&r.ttl.to_be_bytes());
        let data = crate::zone::rdata_wire(&r.data)
            .ok_or_else(|| format!("{} {}: rdata cannot be encoded", r.name, r.record_type()))?;
        let len = u16::try_from(data.len()).map_err(|_| "rdata longer than 65535 bytes")?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&data);
        self.count += 1;
        Ok(())
    }

    /// Appends one record already in the copy's record form (a [`Raw::bytes`] of another
    /// copy), as it is.
    pub fn push_raw(&mut self, raw: &[u8]) {
        self.buf.extend_from_slice(raw);
        self.count += 1;
    }

    /// Records written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn finish(mut self) -> Vec<u8> {
        let at = self.count_at;
        self.buf[at..at + 8].copy_from_slice(&self.count.to_be_bytes());
        self.buf.shrink_to_fit();
        self.buf
    }
}

/// Reads a copy back: its zone name and each record in order, handed to `sink`. `Err` on
/// anything but a whole, well-formed copy of this version.
pub fn decode(bytes: &[u8], sink: &mut dyn FnMut(Record)) -> Result<Name, String> {
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or("not a meridian copy (no header)")?;
    let (&version, rest) = rest.split_first().ok_or("copy truncated")?;
    if version != VERSION {
        return Err(format!(
            "copy format version {version}, this meridian reads {VERSION}"
        ));
    }
    let mut d = BinDecoder::new(rest);
    let bad = |what: &str| format!("copy is damaged ({what})");
    let zone = Name::read(&mut d).map_err(|_| bad("zone name"))?;
    let count = d
        .read_slice(8)
        .map_err(|_| bad("count"))?
        .unverified()
        .iter()
        .fold(0u64, |a, &b| (a << 8) | u64::from(b));
    for i in 0..count {
        let what = || bad(&format!("record {}", i + 1));
        let name = Name::read(&mut d).map_err(|_| what())?;
        let u16_at =
            |d: &mut BinDecoder<'_>| d.read_u16().map(|v| v.unverified()).map_err(|_| what());
        let rtype = RecordType::from(u16_at(&mut d)?);
        let class = DNSClass::from(u16_at(&mut d)?);
        let ttl = d.read_u32().map_err(|_| what())?.unverified();
        let len = usize::from(u16_at(&mut d)?);
        let data = d.read_slice(len).map_err(|_| what())?.unverified();
        let rdata = crate::zone::decode_rdata(rtype, data).ok_or_else(what)?;
        let mut r = Record::from_rdata(name, ttl, rdata);
        r.dns_class = class;
        sink(r);
    }
    if !d.is_empty() {
        return Err(bad("bytes after the last record"));
    }
    Ok(zone)
}

/// One record of a copy, as its bytes there.
#[derive(Debug, Clone, Copy)]
pub struct Raw<'a> {
    /// The whole record in the copy's record form.
    pub bytes: &'a [u8],
    /// Owner name, uncompressed wire form as received (case kept).
    pub owner: &'a [u8],
    pub rtype: u16,
    pub rdata: &'a [u8],
}

/// An uncompressed wire name at `i`: its end.
fn wire_name_end(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let n = usize::from(*b.get(i)?);
        if n > 63 {
            return None;
        }
        i += 1 + n;
        if n == 0 {
            return (i <= b.len()).then_some(i);
        }
    }
}

/// The record of a copy starting at byte `off` (from [`raw_offsets`]).
pub fn raw_at(b: &[u8], off: usize) -> Option<Raw<'_>> {
    let name_end = wire_name_end(b, off)?;
    let h = b.get(name_end..name_end + 10)?;
    let rtype = u16::from_be_bytes([h[0], h[1]]);
    let len = usize::from(u16::from_be_bytes([h[8], h[9]]));
    let end = name_end + 10 + len;
    Some(Raw {
        bytes: b.get(off..end)?,
        owner: &b[off..name_end],
        rtype,
        rdata: b.get(name_end + 10..end)?,
    })
}

/// A copy's zone name and where each of its records starts (the framing checked, not the
/// rdata: the copy was checked as a zone when it was written).
pub fn raw_offsets(b: &[u8]) -> Result<(Name, Vec<u32>), String> {
    let bad = |what: &str| format!("copy is damaged ({what})");
    let rest = b
        .strip_prefix(MAGIC.as_slice())
        .ok_or("not a meridian copy (no header)")?;
    if rest.first() != Some(&VERSION) {
        return Err("copy format version differs".into());
    }
    let zs = MAGIC.len() + 1;
    let ze = wire_name_end(b, zs).ok_or_else(|| bad("zone name"))?;
    let zone = Name::read(&mut BinDecoder::new(&b[zs..ze])).map_err(|_| bad("zone name"))?;
    let count = b
        .get(ze..ze + 8)
        .ok_or_else(|| bad("count"))?
        .iter()
        .fold(0u64, |a, &x| (a << 8) | u64::from(x));
    let mut offs = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(b.len() / 11));
    let mut off = ze + 8;
    for _ in 0..count {
        let r = raw_at(b, off).ok_or_else(|| bad("record framing"))?;
        offs.push(u32::try_from(off).map_err(|_| bad("copy larger than 4 GB"))?);
        off += r.bytes.len();
    }
    if off != b.len() {
        return Err(bad("bytes after the last record"));
    }
    Ok((zone, offs))
}

/// Reads a copy from `r` one record at a time, as [`decode`] does from bytes (same checks,
/// same errors), so that loading never holds the whole file beside the zone it builds.
fn decode_from(r: &mut dyn std::io::Read, sink: &mut dyn FnMut(Record)) -> Result<Name, String> {
    let bad = |what: &str| format!("copy is damaged ({what})");
    let mut head = [0u8; 15];
    r.read_exact(&mut head)
        .map_err(|_| "not a meridian copy (no header)".to_string())?;
    if head[..14] != MAGIC[..] {
        return Err("not a meridian copy (no header)".into());
    }
    if head[14] != VERSION {
        return Err(format!(
            "copy format version {}, this meridian reads {VERSION}",
            head[14]
        ));
    }
    let mut name = Vec::with_capacity(256);
    let zone = read_name(r, &mut name)
        .and_then(|()| Name::read(&mut BinDecoder::new(&name)).ok())
        .ok_or_else(|| bad("zone name"))?;
    let mut count = [0u8; 8];
    r.read_exact(&mut count).map_err(|_| bad("count"))?;
    let count = u64::from_be_bytes(count);
    let mut rdata = Vec::with_capacity(512);
    for i in 0..count {
        let what = || bad(&format!("record {}", i + 1));
        read_name(r, &mut name).ok_or_else(what)?;
        let owner = Name::read(&mut BinDecoder::new(&name)).map_err(|_| what())?;
        let mut h = [0u8; 10];
        r.read_exact(&mut h).map_err(|_| what())?;
        let rtype = RecordType::from(u16::from_be_bytes([h[0], h[1]]));
        let class = DNSClass::from(u16::from_be_bytes([h[2], h[3]]));
        let ttl = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        rdata.resize(usize::from(u16::from_be_bytes([h[8], h[9]])), 0);
        r.read_exact(&mut rdata).map_err(|_| what())?;
        let data = crate::zone::decode_rdata(rtype, &rdata).ok_or_else(what)?;
        let mut rec = Record::from_rdata(owner, ttl, data);
        rec.dns_class = class;
        sink(rec);
    }
    let mut more = [0u8; 1];
    match r.read(&mut more) {
        Ok(0) => Ok(zone),
        Ok(_) => Err(bad("bytes after the last record")),
        Err(e) => Err(format!("cannot read the copy: {e}")),
    }
}

/// Reads one uncompressed wire name into `out` (at most 255 bytes, labels of at most 63).
fn read_name(r: &mut dyn std::io::Read, out: &mut Vec<u8>) -> Option<()> {
    out.clear();
    loop {
        let mut len = [0u8; 1];
        r.read_exact(&mut len).ok()?;
        let n = usize::from(len[0]);
        if n > 63 || out.len() + 1 + n > 255 {
            return None;
        }
        out.push(len[0]);
        if n == 0 {
            return Some(());
        }
        let at = out.len();
        out.resize(at + n, 0);
        r.read_exact(&mut out[at..]).ok()?;
    }
}

/// About how many names a copy holds, to size the zone's name map once instead of growing it
/// by doublings (each of which holds the old table beside the new one): the records whose
/// owner differs from the record before (a primary sends a name's records together), read
/// from the file without keeping it. 0 when the file cannot be walked; [`decode_from`] then
/// says why.
fn names_hint(path: &Path) -> usize {
    let Ok(f) = std::fs::File::open(path) else {
        return 0;
    };
    let mut r = std::io::BufReader::with_capacity(1 << 16, f);
    let r: &mut dyn std::io::Read = &mut r;
    let mut head = [0u8; 15];
    let (mut prev, mut name) = (Vec::with_capacity(256), Vec::with_capacity(256));
    let mut count = [0u8; 8];
    if r.read_exact(&mut head).is_err()
        || read_name(r, &mut name).is_none()
        || r.read_exact(&mut count).is_err()
    {
        return 0;
    }
    let mut names = 0usize;
    for _ in 0..u64::from_be_bytes(count) {
        let mut h = [0u8; 10];
        if read_name(r, &mut name).is_none() || r.read_exact(&mut h).is_err() {
            return 0;
        }
        let len = u64::from(u16::from_be_bytes([h[8], h[9]]));
        let mut rdata = <&mut dyn std::io::Read as std::io::Read>::take(&mut *r, len);
        if std::io::copy(&mut rdata, &mut std::io::sink()).ok() != Some(len) {
            return 0;
        }
        if !name.eq_ignore_ascii_case(&prev) {
            names += 1;
            std::mem::swap(&mut name, &mut prev);
        }
    }
    names
}

/// Loads a copy into a zone, with the checks a zone file gets. The copy's zone must be
/// `expect`. The file is read as it is decoded, never held whole: what loading holds is the
/// zone being built.
pub fn load(path: &Path, expect: &Name) -> Result<Zone, String> {
    let names = names_hint(path);
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read the copy: {e}"))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 16, f);
    let mut builder = Builder::with_capacity(expect.clone(), path, names);
    let mut line = 0usize;
    let zone = decode_from(&mut reader, &mut |record| {
        line += 1;
        builder.add(ParsedRecord {
            record,
            file: PathBuf::new(),
            line,
            col: 1,
        })
    })?;
    drop(reader);
    if zone != *expect {
        return Err(format!("the copy is of {zone}, not {expect}"));
    }
    match builder.finish(&[]) {
        (Some(z), p) if p.is_empty() => Ok(z),
        (_, p) => Err(format!(
            "the copy fails the zone checks: {}",
            p.first().map(|p| p.message.clone()).unwrap_or_default()
        )),
    }
}

/// Writes `bytes` to `path` atomically (a temporary file beside it, synced, then renamed).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let dir = path.parent().ok_or("no state folder")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let mut tmp_name = path.file_name().ok_or("no file name")?.to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut f = std::fs::File::create(&tmp).map_err(|e| format!("write {}: {e}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("rename to {}: {e}", path.display()))
}

/// The Unix time of the last successful refresh of `zone`, if one was recorded.
pub fn last_refresh(state_dir: &Path, zone: &Name) -> Option<u64> {
    std::fs::read_to_string(refreshed_path(state_dir, zone))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Records a successful refresh of `zone` at `unix` seconds.
pub fn set_last_refresh(state_dir: &Path, zone: &Name, unix: u64) -> Result<(), String> {
    write_atomic(
        &refreshed_path(state_dir, zone),
        format!("{unix}\n").as_bytes(),
    )
}

// ---- The copies in the snapshot ---------------------------------------------------------------
//
// Every snapshot (start, reload, `check`) serves the copies of the `[[secondary]]` zones that
// the config lists; the secondary side (`crate::secondary`) only writes them and hands over the
// zone it has just built from one ([`Prebuilt::put`], held by the server's
// `crate::snapshot::Registrations`), so building a snapshot never calls it.

/// Adds the on-disk copies of the secondary zones to the zones loaded from the zones folder.
/// A zone with no copy yet (or an unreadable one) is listed as unbuilt, so that the services
/// inside it are not rejected before the first transfer; a copy past its SOA expire with no
/// successful refresh is served as SERVFAIL ([`crate::zone::Zone::expired`]).
/// A zone waiting in `prebuilt` for its copy is taken instead of loading the copy again.
pub fn add_copies(config: &LoadedConfig, zones: &mut DirLoad, prebuilt: &Prebuilt) {
    let state = config.state_dir();
    for s in &config.config.secondary {
        let Some(origin) = s.get_ref().origin() else {
            continue;
        };
        let key = crate::zone::wire_key(&origin);
        if zones.zones.zones.contains_key(&key) {
            // A file zone of the same name wins; `check` says so.
            continue;
        }
        let path = path(&state, &origin);
        // The zone a transfer has just built and checked from this very copy, when there is
        // one: building it a second time would only double the work and the memory.
        let loaded = prebuilt
            .take(&path)
            .map_or_else(|| load(&path, &origin), Ok);
        let mut zone = match loaded {
            Ok(z) => z,
            Err(e) => {
                if path.exists() {
                    tracing::warn!(zone = %origin, "copy not loaded: {e}");
                }
                zones.unbuilt.push(origin);
                continue;
            }
        };
        if expired(&zone, &state, &origin) {
            tracing::warn!(zone = %origin, "copy has expired (SOA expire passed without a successful refresh): SERVFAIL until a transfer succeeds");
            zone.expired = true;
        }
        zones.zones.zones.insert(key, Arc::new(zone));
    }
}

pub fn soa_timers(r: &Record) -> Option<(u32, u32, u32, u32)> {
    match &r.data {
        RData::SOA(s) => Some((s.serial, s.refresh as u32, s.retry as u32, s.expire as u32)),
        _ => None,
    }
}

/// When the copy of `origin` last refreshed successfully (Unix seconds): the time kept beside
/// the copy, else the copy's own modification time (it was written by a transfer).
pub fn last_refresh_or_written(state: &Path, origin: &Name) -> Option<u64> {
    last_refresh(state, origin).or_else(|| {
        std::fs::metadata(path(state, origin))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
    })
}

fn expired(zone: &crate::zone::Zone, state: &Path, origin: &Name) -> bool {
    let Some((_, _, _, expire)) = soa_timers(&zone.soa) else {
        return false;
    };
    let Some(at) = last_refresh_or_written(state, origin) else {
        return true;
    };
    unix_now().saturating_sub(at) > u64::from(expire)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Zones built and checked from a new copy by the secondary side, by the copy's path, waiting
/// for the reload that serves them ([`add_copies`] takes them). One per server, held by its
/// `crate::snapshot::Registrations` (which each reload hands on), not process-wide: two
/// servers in one process never take each other's zones.
#[derive(Default)]
pub struct Prebuilt(Mutex<HashMap<PathBuf, Built>>);

impl std::fmt::Debug for Prebuilt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prebuilt")
            .field("waiting", &self.lock().len())
            .finish()
    }
}

/// A zone built from the copy at a path, and that file's length and modification time then:
/// if the file changed since, the zone is not the copy's any more and the copy is loaded.
struct Built {
    len: u64,
    modified: Option<SystemTime>,
    zone: crate::zone::Zone,
}

fn file_stamp(path: &Path) -> Option<(u64, Option<SystemTime>)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()))
}

impl Prebuilt {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Built>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `zone`, just built from the copy at `path`, for the next reload.
    pub fn put(&self, path: &Path, zone: crate::zone::Zone) {
        let Some((len, modified)) = file_stamp(path) else {
            return;
        };
        let p = Built {
            len,
            modified,
            zone,
        };
        // The zone replaced (a refresh whose reload never came) is dropped outside the lock.
        let _old = self.lock().insert(path.to_path_buf(), p);
    }

    /// The zone built from the copy at `path`, if one waits and the file is still that copy.
    pub fn take(&self, path: &Path) -> Option<crate::zone::Zone> {
        let p = self.lock().remove(path)?;
        (file_stamp(path) == Some((p.len, p.modified))).then_some(p.zone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::RData;

    #[test]
    fn hostile_strings_and_names_round_trip() {
        let zone = Name::from_ascii("example.net.").expect("n");
        let mut records = Vec::new();
        let soa = crate::zone::decode_rdata(
            RecordType::SOA,
            b"\x03ns1\x00\x01h\x00\x00\x00\x00\x05\x00\x00\x0e\x10\x00\x00\x02\x58\x00\x12\x75\x00\x00\x00\x00\x3c",
        )
        .expect("soa");
        records.push(Record::from_rdata(zone.clone(), 300, soa));
        // HINFO with spaces and a directive; NAPTR with backslashes; CAA with quotes;
        // empty strings and non-printable bytes; an owner with a dot, a space and a `$`.
        let strings = |parts: &[&[u8]]| {
            let mut w = Vec::new();
            for p in parts {
                w.push(p.len() as u8);
                w.extend_from_slice(p);
            }
            w
        };
        let mut naptr = vec![0, 10, 0, 100];
        naptr.extend(strings(&[b"U", b"E2U+sip", b"!^.*$!\\\\1\\\"x\"!"]));
        naptr.push(0);
        let mut caa = vec![0, 5];
        caa.extend_from_slice(b"issue");
        caa.extend_from_slice(b"ca.example.net; key=\"v a\\\"l\"");
        let raw: Vec<(RecordType, Vec<u8>)> = vec![
            (
                RecordType::HINFO,
                strings(&[b"Intel Xeon", b"\n$INCLUDE /etc/passwd"]),
            ),
            (RecordType::HINFO, strings(&[b"", b""])),
            (RecordType::NAPTR, naptr),
            (RecordType::CAA, caa),
            (RecordType::TXT, strings(&[b"", b"\x00\xff\x7f\"\\"])),
            (RecordType::Unknown(65280), vec![1, 2, 0]),
        ];
        for (t, w) in &raw {
            let d = crate::zone::decode_rdata(*t, w).unwrap_or_else(|| panic!("{t} rdata"));
            records.push(Record::from_rdata(zone.clone(), 60, d));
        }
        let odd = Name::from_labels(vec![&b"a.b $INCLUDE"[..], b"example", b"net"]).expect("n");
        records.push(Record::from_rdata(
            odd,
            1,
            RData::A("192.0.2.1".parse().expect("ip")),
        ));
        let bytes = encode(&zone, &records).expect("encode");
        let mut back = Vec::new();
        let z = decode(&bytes, &mut |r| back.push(r)).expect("decode");
        assert_eq!(z, zone);
        assert_eq!(back, records);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(
                crate::zone::rdata_wire(&back[i].data),
                crate::zone::rdata_wire(&r.data)
            );
            assert_eq!(back[i].name.to_ascii(), r.name.to_ascii());
        }
        // Truncated or trailing bytes: an error, never a panic.
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], &mut |_| {}).is_err());
        }
        let mut more = bytes.clone();
        more.push(0);
        assert!(decode(&more, &mut |_| {}).is_err());
        // Read from a file as `load` does: the same records, the same refusals.
        let mut streamed = Vec::new();
        let z = decode_from(&mut &bytes[..], &mut |r| streamed.push(r)).expect("streamed");
        assert_eq!(z, zone);
        assert_eq!(streamed, records);
        for cut in 0..bytes.len() {
            assert!(decode_from(&mut &bytes[..cut], &mut |_| {}).is_err());
        }
        assert!(decode_from(&mut &more[..], &mut |_| {}).is_err());
    }

    fn rec(name: &str, ttl: u32, t: RecordType, wire: &[u8]) -> Record {
        let d = crate::zone::decode_rdata(t, wire).unwrap_or_else(|| panic!("{t} rdata"));
        Record::from_rdata(Name::from_ascii(name).expect("n"), ttl, d)
    }

    /// `load` reads the file as it decodes it and sizes the zone from a first walk: a whole
    /// copy loads with every record, and a damaged one (cut short, bytes after the end, a
    /// wrong zone) is refused, never half loaded.
    #[test]
    fn load_reads_whole_copies_and_refuses_damaged_ones() {
        let zone = Name::from_ascii("example.net.").expect("n");
        let mut records = vec![
            rec(
                "example.net.",
                300,
                RecordType::SOA,
                b"\x03ns1\x07example\x03net\x00\x01h\x00\x00\x00\x00\x05\x00\x00\x0e\x10\x00\x00\x02\x58\x00\x12\x75\x00\x00\x00\x00\x3c",
            ),
            rec(
                "example.net.",
                300,
                RecordType::NS,
                b"\x03ns1\x07example\x03net\x00",
            ),
            rec("ns1.example.net.", 300, RecordType::A, &[192, 0, 2, 53]),
        ];
        for i in 0..50u8 {
            let owner = format!("h{i}.example.net.");
            records.push(rec(&owner, 60, RecordType::A, &[10, 0, 0, i]));
            records.push(rec(&owner, 60, RecordType::A, &[10, 0, 1, i]));
        }
        let bytes = encode(&zone, &records).expect("encode");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("example.net.copy");
        std::fs::write(&path, &bytes).expect("write");
        assert_eq!(names_hint(&path), 52, "one per run of an owner");
        let z = load(&path, &zone).expect("loads");
        assert_eq!(z.record_count, records.len());
        assert_eq!(z.nodes.len(), 52);
        assert!(load(&path, &Name::from_ascii("example.org.").expect("n")).is_err());
        for cut in [0, 14, 15, 20, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..cut]).expect("write");
            assert!(load(&path, &zone).is_err(), "cut at {cut}");
        }
        let mut more = bytes.clone();
        more.push(0);
        std::fs::write(&path, &more).expect("write");
        assert!(load(&path, &zone).is_err(), "a byte after the end");
    }
}

#[cfg(test)]
mod handover_tests {
    use super::*;
    use crate::zone::copy;

    /// The zone a transfer built is handed to the next reload only while the copy on disk is
    /// the one it was built from, and only once.
    #[test]
    fn prebuilt_zone_is_taken_once_and_only_for_the_same_copy() {
        let zone = Name::from_ascii("prebuilt.test.").expect("n");
        let wire = |t, w: &[u8]| crate::zone::decode_rdata(t, w).expect("rdata");
        use hickory_proto::rr::RecordType as T;
        let records = vec![
            Record::from_rdata(
                zone.clone(),
                300,
                wire(
                    T::SOA,
                    b"\x03ns1\x08prebuilt\x04test\x00\x01h\x00\x00\x00\x00\x07\x00\x00\x0e\x10\x00\x00\x02\x58\x00\x12\x75\x00\x00\x00\x00\x3c",
                ),
            ),
            Record::from_rdata(zone.clone(), 300, wire(T::NS, b"\x03ns1\x08prebuilt\x04test\x00")),
            Record::from_rdata(
                Name::from_ascii("ns1.prebuilt.test.").expect("n"),
                300,
                wire(T::A, &[192, 0, 2, 1]),
            ),
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let path = copy::path(dir.path(), &zone);
        copy::write_atomic(&path, &copy::encode(&zone, &records).expect("encode")).expect("w");
        let built = || copy::load(&path, &zone).expect("loads");
        let prebuilt = Prebuilt::default();
        prebuilt.put(&path, built());
        let z = prebuilt.take(&path).expect("handed over");
        assert_eq!(z.record_count, 3);
        assert!(prebuilt.take(&path).is_none(), "only once");
        // The copy changed since the zone was built: the zone is not handed over.
        prebuilt.put(&path, built());
        let mut longer = records.clone();
        longer.push(Record::from_rdata(
            Name::from_ascii("x.prebuilt.test.").expect("n"),
            300,
            wire(T::A, &[192, 0, 2, 2]),
        ));
        copy::write_atomic(&path, &copy::encode(&zone, &longer).expect("encode")).expect("w");
        assert!(prebuilt.take(&path).is_none(), "another copy");
    }
}
