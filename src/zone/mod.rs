//! Static zone data: loading master files from the zones folder, the checks a zone checker
//! makes, and meridian's own index for answering from them.
//!
//! Names are keyed by their lower-cased wire form. The suffixes of a name's wire form are the
//! wire forms of its ancestors, so every closest-encloser and zone-cut question is answered with
//! a handful of hash lookups on slices of one buffer, whatever the zone's size: a
//! random-subdomain flood costs the same as any other query (hickory's stock handler scans the
//! zone linearly for negative answers; see `shared/notes/hickory-0.26.md`).
//!
//! Each record is kept once, as its rdata in uncompressed wire form inside its RRset's one
//! buffer: that is what the fast path copies into answers. Code that wants hickory `Record`s
//! (the reference handler, transfers, the checks) decodes them from it on demand.

pub mod copy;
pub mod parse;
pub mod stats;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, Restrict};

use crate::base::problem::Problem;
use parse::ParsedRecord;

/// Lower-cased uncompressed wire form of a name; the key of every index here.
pub type WireKey = Box<[u8]>;

/// The maps every query looks names up in (two to four lookups a query). Their keys come from
/// zone files and transfers, never from queries, so a query cannot fill a map with colliding
/// names: what SipHash defends against cannot happen here, and it was a fifth of the fast
/// path's time (`cargo bench --bench handle`). foldhash is seeded per map all the same.
pub type NameMap<V> = HashMap<WireKey, V, foldhash::fast::RandomState>;

/// Writes the lower-cased wire form of `name` into `buf`, returning the offsets where each
/// label starts (the last entry is the root label).
pub fn wire_lower(name: &Name, buf: &mut Vec<u8>, starts: &mut Vec<u8>) {
    buf.clear();
    starts.clear();
    // A name's wire form is at most 255 bytes, so every label starts below 255.
    for label in name.iter() {
        starts.push(buf.len() as u8);
        buf.push(label.len() as u8);
        buf.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    starts.push(buf.len() as u8);
    buf.push(0);
}

pub fn wire_key(name: &Name) -> WireKey {
    let (mut buf, mut starts) = (Vec::new(), Vec::new());
    wire_lower(name, &mut buf, &mut starts);
    buf.into_boxed_slice()
}

/// The name whose (lower-cased) wire form this is.
pub fn key_name(key: &[u8]) -> Option<Name> {
    Name::read(&mut BinDecoder::new(key)).ok()
}

/// All records of one type at one name: a small header and every record's rdata in
/// uncompressed wire form, each preceded by its length (two bytes, big endian), in one buffer.
#[derive(Debug, Clone)]
pub struct RRset {
    pub rtype: RecordType,
    /// One TTL per RRset (RFC 2181 §5.2): the first record's.
    pub ttl: u32,
    data: Box<[u8]>,
}

impl RRset {
    /// Each record's rdata in uncompressed wire form, in the order the file gave them. Names
    /// inside rdata are written in full: a compression pointer would point into this buffer,
    /// not into the message the record lands in.
    pub fn rdata(&self) -> Rdatas<'_> {
        Rdatas(&self.data)
    }

    pub fn len(&self) -> usize {
        self.rdata().count()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The records' rdata decoded (the slow path's view). Loading checked that each decodes.
    pub fn rdata_values(&self) -> impl Iterator<Item = RData> + '_ {
        self.rdata()
            .filter_map(move |w| decode_rdata(self.rtype, w))
    }

    /// The records, owned by `owner`.
    pub fn records<'a>(&'a self, owner: &'a Name) -> impl Iterator<Item = Record> + 'a {
        self.rdata_values().map(move |d| {
            let mut r = Record::from_rdata(owner.clone(), self.ttl, d);
            r.dns_class = DNSClass::IN;
            r
        })
    }

    fn push(&mut self, rdata: &[u8]) {
        let mut v = std::mem::take(&mut self.data).into_vec();
        v.reserve_exact(2 + rdata.len());
        v.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        v.extend_from_slice(rdata);
        self.data = v.into_boxed_slice();
    }
}

/// The rdata of an [`RRset`], one slice per record.
#[derive(Debug, Clone)]
pub struct Rdatas<'a>(&'a [u8]);

impl<'a> Iterator for Rdatas<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let [h, l, rest @ ..] = self.0 else {
            return None;
        };
        let n = usize::from(u16::from_be_bytes([*h, *l]));
        let (one, rest) = rest.split_at_checked(n)?;
        self.0 = rest;
        Some(one)
    }
}

/// Uncompressed wire form of one rdata (see [`RRset::rdata`]).
pub fn rdata_wire(rdata: &RData) -> Option<Vec<u8>> {
    use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
    let mut buf = Vec::with_capacity(32);
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_name_encoding(NameEncoding::Uncompressed);
    rdata.emit(&mut enc).ok()?;
    Some(buf)
}

/// Reads an rdata back from its wire form.
pub fn decode_rdata(rtype: RecordType, wire: &[u8]) -> Option<RData> {
    let len = u16::try_from(wire.len()).ok()?;
    let mut d = BinDecoder::new(wire);
    let data = RData::read(&mut d, rtype, Restrict::new(len)).ok()?;
    d.is_empty().then_some(data)
}

/// Whether two rdata of one type are the same record: names inside compare without regard to
/// case (as hickory's `RData` equality does), everything else byte for byte.
fn same_rdata(rtype: RecordType, a: &[u8], b: &[u8]) -> bool {
    // Bytes before the one name at the end of the rdata, for the types that hold one.
    let fixed = match rtype {
        RecordType::NS | RecordType::CNAME | RecordType::PTR | RecordType::DNAME => 0,
        RecordType::MX => 2,
        RecordType::SRV => 6,
        _ => return a == b,
    };
    a.len() == b.len()
        && a.len() >= fixed
        && a[..fixed] == b[..fixed]
        && a[fixed..].eq_ignore_ascii_case(&b[fixed..])
}

/// Where something was written: line, column and which of the zone's files (the file itself
/// or an `$INCLUDE`d one), for problems found once the whole file is read.
#[derive(Debug, Clone, Copy, Default)]
struct Pos {
    line: u32,
    col: u16,
    file: u16,
}

/// One name in a zone. A node with no rrsets is an empty non-terminal: it exists (NODATA, not
/// NXDOMAIN) because names below it do.
#[derive(Debug, Clone, Default)]
pub struct Node {
    /// Sorted by type.
    pub rrsets: Box<[RRset]>,
    /// A balanced name: its A/AAAA answers come from the policy of the snapshot's service at
    /// this index, plus one (see [`Node::service`]).
    service: Option<NonZeroU32>,
    /// Where the name was first written.
    at: Pos,
    /// NS records at a name other than the apex: a delegation to another server.
    pub cut: bool,
}

impl Node {
    pub fn rrset(&self, rtype: RecordType) -> Option<&RRset> {
        self.rrsets.iter().find(|r| r.rtype == rtype)
    }

    /// The index of the snapshot's service that answers at this name (`Snapshot::service_of`).
    pub fn service(&self) -> Option<usize> {
        self.service.map(|i| i.get() as usize - 1)
    }
}

/// A loaded zone.
#[derive(Debug)]
pub struct Zone {
    pub origin: Name,
    pub file: PathBuf,
    pub soa: Record,
    pub nodes: NameMap<Node>,
    /// Records in the file, for `check` and status output.
    pub record_count: usize,
    /// Query counters, carried over by a reload that keeps the zone (exported by
    /// `metrics`).
    pub stats: Arc<stats::ZoneStats>,
    /// The SOA's rdata split for the fast path, which compresses its two names against the
    /// message as hickory's encoder does, and the negative-answer TTL, min(SOA TTL, MINIMUM)
    /// per RFC 2308.
    pub soa_parts: SoaParts,
    pub negative_ttl: u32,
    /// A secondary zone past its SOA expire with no successful refresh: every name in it
    /// answers SERVFAIL until a transfer succeeds (SPEC "Trust boundaries"). Always false for
    /// zone files.
    pub expired: bool,
    /// The zone arrived signed (a DNSKEY at its apex or RRSIGs in it, from a primary or a
    /// file signed elsewhere): served as it is, its RRSIG/NSEC/NSEC3 given to DO queries
    /// ([`Presigned`]); never signed online, and no balanced name may live in it.
    pub presigned: Option<Presigned>,
}

/// What answering a presigned zone needs beyond its records: the owners of its NSEC records
/// in canonical order (RFC 4034 §6.1), to find the NSEC that covers a name that does not
/// exist, and whether it denies with NSEC3 instead.
#[derive(Debug, Default)]
pub struct Presigned {
    /// Wire keys of the names holding an NSEC, sorted canonically.
    pub nsec_owners: Vec<WireKey>,
    /// The zone has an NSEC3PARAM at its apex (NSEC3 denial, RFC 5155).
    pub nsec3: bool,
}

/// The labels of a wire name (without the root), left to right.
fn wire_labels(w: &[u8]) -> smallvec::SmallVec<[&[u8]; 16]> {
    let mut out = smallvec::SmallVec::new();
    let mut i = 0;
    while let Some(&len) = w.get(i) {
        if len == 0 {
            break;
        }
        let len = usize::from(len);
        match w.get(i + 1..i + 1 + len) {
            Some(l) => out.push(l),
            None => break,
        }
        i += 1 + len;
    }
    out
}

/// Canonical DNS name order (RFC 4034 §6.1) of two lower-cased wire names: label by label
/// from the right, each label as an octet string.
pub fn canonical_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let (la, lb) = (wire_labels(a), wire_labels(b));
    for (x, y) in la.iter().rev().zip(lb.iter().rev()) {
        match x.cmp(y) {
            std::cmp::Ordering::Equal => continue,
            o => return o,
        }
    }
    la.len().cmp(&lb.len())
}

impl Presigned {
    /// The owner of the NSEC that covers (or matches) `name` (a lower-cased wire name): the
    /// last owner not after it in canonical order.
    pub fn covering(&self, name: &[u8]) -> Option<&[u8]> {
        let i = self
            .nsec_owners
            .partition_point(|o| canonical_cmp(o, name) != std::cmp::Ordering::Greater);
        // Before the first owner (the apex): the last NSEC wraps round to it.
        let i = if i == 0 { self.nsec_owners.len() } else { i };
        self.nsec_owners.get(i.checked_sub(1)?).map(|k| &k[..])
    }
}

/// An SOA's rdata in pieces: MNAME and RNAME in uncompressed wire form, and the five numbers.
#[derive(Debug, Default)]
pub struct SoaParts {
    pub mname: Box<[u8]>,
    pub rname: Box<[u8]>,
    pub numbers: [u8; 20],
}

impl SoaParts {
    fn of(rdata: &RData) -> SoaParts {
        let RData::SOA(s) = rdata else {
            return SoaParts::default();
        };
        let name = |n: &Name| {
            let mut buf = Vec::with_capacity(n.len() + 1);
            for label in n.iter() {
                buf.push(label.len() as u8);
                buf.extend_from_slice(label);
            }
            buf.push(0);
            buf.into_boxed_slice()
        };
        let mut numbers = [0u8; 20];
        numbers[0..4].copy_from_slice(&s.serial.to_be_bytes());
        numbers[4..8].copy_from_slice(&s.refresh.to_be_bytes());
        numbers[8..12].copy_from_slice(&s.retry.to_be_bytes());
        numbers[12..16].copy_from_slice(&s.expire.to_be_bytes());
        numbers[16..20].copy_from_slice(&s.minimum.to_be_bytes());
        SoaParts {
            mname: name(&s.mname),
            rname: name(&s.rname),
            numbers,
        }
    }
}

/// What the zone holds for a query name, following RFC 1034 §4.3.2.
pub enum Found<'a> {
    /// The name exists (possibly as an empty non-terminal).
    Node(&'a Node),
    /// The name does not exist but a wildcard at its closest encloser covers it.
    Wildcard(&'a Node),
    /// The name is at or below a zone cut: refer to the child's servers. The key is the cut's.
    Delegation(&'a [u8], &'a Node),
    NxDomain,
}

impl Zone {
    /// Looks a name up, given its lower-cased wire form and label offsets (see [`wire_lower`]).
    /// `ds_query` makes a cut answer for its own DS records instead of referring, since DS lives
    /// on the parent side (RFC 4035 §3.1.4.1).
    pub fn find<'a>(&'a self, wire: &[u8], starts: &[u8], ds_query: bool) -> Found<'a> {
        let origin_labels = self.origin.num_labels() as usize + 1; // with the root label
        let labels = starts.len();
        if labels < origin_labels {
            return Found::NxDomain;
        }
        // Walk from just below the apex down to the name, stopping at a cut or a missing name.
        let mut closest = labels - origin_labels; // index into `starts` of the closest encloser
        if closest == 0 {
            return self.nodes.get(wire).map_or(Found::NxDomain, Found::Node);
        }
        for i in (0..labels - origin_labels).rev() {
            match self.nodes.get_key_value(&wire[usize::from(starts[i])..]) {
                Some((key, node)) => {
                    if node.cut && !(ds_query && i == 0) {
                        return Found::Delegation(key, node);
                    }
                    if i == 0 {
                        return Found::Node(node);
                    }
                    closest = i;
                }
                None => break,
            }
        }
        // RFC 4592: a wildcard child of the closest encloser stands in for the missing name.
        // On the stack: every NXDOMAIN comes here, and a random-subdomain flood is all
        // NXDOMAINs (a heap buffer was a malloc and a free per query).
        let ce = &wire[usize::from(starts[closest])..];
        // `*.<ce>` longer than a name may be (255) is no name in the zone.
        let mut wild = [0u8; 255];
        let Some(rest) = wild.get_mut(2..2 + ce.len()) else {
            return Found::NxDomain;
        };
        rest.copy_from_slice(ce);
        wild[..2].copy_from_slice(&[1, b'*']);
        match self.nodes.get(&wild[..2 + ce.len()]) {
            Some(node) => Found::Wildcard(node),
            None => Found::NxDomain,
        }
    }

    /// The node at a name, also below a zone cut (glue lives there).
    pub fn node(&self, name: &Name) -> Option<&Node> {
        self.nodes.get(&*wire_key(name))
    }

    /// [`Zone::node`] by wire key (lower-case wire form with the root label).
    pub fn node_at(&self, key: &[u8]) -> Option<&Node> {
        self.nodes.get(key)
    }

    pub fn contains(&self, name: &Name) -> bool {
        self.origin.zone_of(name)
    }

    /// Attaches a balanced name (the index of its service), creating its node and any empty
    /// non-terminals above it.
    pub fn attach_service(&mut self, name: &Name, service: usize) {
        let key = wire_key(name);
        let origin_len = wire_key(&self.origin).len();
        let mut i = 0;
        while key.len() - i > origin_len {
            i += key[i] as usize + 1;
            if key.len() - i > origin_len {
                self.nodes.entry(key[i..].into()).or_default();
            }
        }
        let id = u32::try_from(service + 1).ok().and_then(NonZeroU32::new);
        self.nodes.entry(key).or_default().service = id;
    }

    /// Builds a zone from parsed records, making the checks that `named-checkzone` makes.
    pub fn build(
        origin: Name,
        file: &Path,
        records: Vec<ParsedRecord>,
    ) -> Result<Zone, Vec<Problem>> {
        match Zone::build_checked(origin, file, records, &[]) {
            (Some(zone), problems) if problems.is_empty() => Ok(zone),
            (_, problems) => Err(problems),
        }
    }

    /// Builds what can be built from the records that were read, making every check. `unread`
    /// are the file's entries that could not be read: a record *missing* from the zone that
    /// one of them may have been is not reported again. The zone comes back whenever it has
    /// an SOA, problems or not, so that `check` can still test services against it.
    pub fn build_checked(
        origin: Name,
        file: &Path,
        records: Vec<ParsedRecord>,
        unread: &[parse::Unread],
    ) -> (Option<Zone>, Vec<Problem>) {
        let mut b = Builder::new(origin, file);
        for pr in records {
            b.add(pr);
        }
        b.finish(unread)
    }
}

/// Builds a zone one record at a time, as the parser reads them, so that loading holds no
/// more than the zone being built (and the file's text): a reload's peak is the old snapshot
/// plus the new one.
pub struct Builder {
    origin: Name,
    origin_key: WireKey,
    file: PathBuf,
    /// The files records came from (the zone file and its `$INCLUDE`s), indexed by `Pos::file`.
    files: Vec<PathBuf>,
    nodes: NameMap<Node>,
    soa: Option<Record>,
    record_count: usize,
    /// Where each NS record was written, by a hash of its owner and target, so that its
    /// problems point at it (NS records only: a collision merely moves a problem's line).
    ns_at: HashMap<u64, Pos>,
    problems: Vec<Problem>,
    buf: Vec<u8>,
}

fn ns_hash(owner: &[u8], target: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    owner.hash(&mut h);
    target.hash(&mut h);
    h.finish()
}

impl Builder {
    pub fn new(origin: Name, file: &Path) -> Builder {
        Builder::with_capacity(origin, file, 0)
    }

    /// A builder with room for about `names` names: a map that grows while a large zone loads
    /// holds its old table beside the new one at every doubling, a peak a reload pays on top
    /// of the snapshot being served.
    pub fn with_capacity(origin: Name, file: &Path, names: usize) -> Builder {
        Builder {
            origin_key: wire_key(&origin),
            origin,
            file: file.to_path_buf(),
            files: Vec::new(),
            nodes: NameMap::with_capacity_and_hasher(names, Default::default()),
            soa: None,
            record_count: 0,
            ns_at: HashMap::new(),
            problems: Vec::new(),
            buf: Vec::new(),
        }
    }

    fn pos(&mut self, pr: &ParsedRecord) -> Pos {
        let file = match self.files.iter().rposition(|f| *f == pr.file) {
            Some(i) => i,
            None => {
                self.files.push(pr.file.clone());
                self.files.len() - 1
            }
        };
        Pos {
            line: u32::try_from(pr.line).unwrap_or(u32::MAX),
            col: u16::try_from(pr.col).unwrap_or(u16::MAX),
            file: u16::try_from(file).unwrap_or(u16::MAX),
        }
    }

    fn problem_at(&self, at: Pos, message: String) -> Problem {
        let file = self.files.get(usize::from(at.file)).unwrap_or(&self.file);
        Problem::new(file, at.line as usize, usize::from(at.col), message)
    }

    /// Adds one record, making the checks that need only what came before it.
    pub fn add(&mut self, pr: ParsedRecord) {
        self.record_count += 1;
        let problem = |m: String| Problem::new(&pr.file, pr.line, pr.col, m);
        let name = &pr.record.name;
        if !self.origin.zone_of(name) {
            let p = problem(format!("`{name}` is outside the zone {}", self.origin));
            self.problems.push(p);
            return;
        }
        let rtype = pr.record.record_type();
        let mut key = std::mem::take(&mut self.buf);
        let mut starts = Vec::new();
        wire_lower(name, &mut key, &mut starts);
        let is_apex = key[..] == self.origin_key[..];
        if rtype == RecordType::SOA {
            if !is_apex {
                let p = problem(format!(
                    "SOA at `{name}`: an SOA belongs only at the apex {}",
                    self.origin
                ));
                self.problems.push(p);
                self.buf = key;
                return;
            }
            if self.soa.is_some() {
                let p = problem("a second SOA record: a zone has exactly one".into());
                self.problems.push(p);
                self.buf = key;
                return;
            }
            self.soa = Some(pr.record.clone());
        }
        let Some(rdata) = rdata_wire(&pr.record.data)
            .filter(|w| w.len() <= usize::from(u16::MAX) && decode_rdata(rtype, w).is_some())
        else {
            let p = problem(format!(
                "`{name}` {rtype}: the record cannot be written in wire form"
            ));
            self.problems.push(p);
            self.buf = key;
            return;
        };
        let at = self.pos(&pr);
        if rtype == RecordType::NS {
            self.ns_at
                .entry(ns_hash(&key, &rdata.to_ascii_lowercase()))
                .or_insert(at);
        }
        let node = match self.nodes.get_mut(&key[..]) {
            Some(n) => n,
            None => {
                self.add_ancestors(&key);
                let n = self.nodes.entry(key.as_slice().into()).or_default();
                n.at = at;
                n
            }
        };
        if n_is_ent(node) {
            node.at = at;
        }
        if rtype == RecordType::NS && !is_apex {
            node.cut = true;
        }
        let conflict_before = cname_conflict(node);
        match node.rrsets.iter_mut().find(|r| r.rtype == rtype) {
            Some(set) => {
                if !set.rdata().any(|w| same_rdata(rtype, w, &rdata)) {
                    if rtype == RecordType::CNAME {
                        let p = problem(format!("`{name}` has more than one CNAME"));
                        self.problems.push(p);
                        self.buf = key;
                        return;
                    }
                    set.push(&rdata);
                }
            }
            None => {
                let mut set = RRset {
                    rtype,
                    ttl: pr.record.ttl,
                    data: Box::default(),
                };
                set.push(&rdata);
                let mut sets = std::mem::take(&mut node.rrsets).into_vec();
                let i = sets.partition_point(|r| u16::from(r.rtype) < u16::from(rtype));
                sets.insert(i, set);
                node.rrsets = sets.into_boxed_slice();
            }
        }
        if !conflict_before && cname_conflict(node) {
            let at = node.at;
            let p = self.problem_at(
                at,
                format!("`{name}` has a CNAME and other data; a CNAME must stand alone (RFC 1034 §3.6.2)"),
            );
            self.problems.push(p);
        }
        self.buf = key;
    }

    /// Empty non-terminals: every ancestor of a name, up to the apex, exists. An ancestor that
    /// exists already had its own made when it was added.
    fn add_ancestors(&mut self, key: &[u8]) {
        let apex_len = self.origin_key.len();
        let mut i = 0;
        while key.len() - i > apex_len {
            i += key[i] as usize + 1;
            let anc = &key[i..];
            if anc.len() <= apex_len || self.nodes.contains_key(anc) {
                break;
            }
            self.nodes.insert(anc.into(), Node::default());
        }
    }

    /// Makes the checks that need the whole zone and returns it (when it has an SOA).
    pub fn finish(mut self, unread: &[parse::Unread]) -> (Option<Zone>, Vec<Problem>) {
        let origin = self.origin.clone();
        let might_be = |name: &Name, t: RecordType| unread.iter().any(|u| u.could_be(name, t));
        let apex = self.nodes.get(&self.origin_key);
        let has_apex_ns = apex.is_some_and(|n| n.rrset(RecordType::NS).is_some());
        if !has_apex_ns && !might_be(&origin, RecordType::NS) {
            let p = match apex.filter(|n| !n.rrsets.is_empty()) {
                Some(n) => {
                    self.problem_at(n.at, format!("zone {origin} has no NS records at its apex"))
                }
                None => Problem::new(
                    &self.file,
                    1,
                    1,
                    format!("zone {origin} has no NS records at its apex"),
                ),
            };
            self.problems.push(p);
        }

        // Every NS target inside this zone (in-zone or glue) needs an address.
        let mut ns_problems = Vec::new();
        for (key, node) in &self.nodes {
            let Some(ns) = node.rrset(RecordType::NS) else {
                continue;
            };
            for w in ns.rdata() {
                let Some(target) = key_name(w) else { continue };
                if !origin.zone_of(&target) {
                    continue;
                }
                let target_key = w.to_ascii_lowercase();
                let has_addr = self.nodes.get(&target_key[..]).is_some_and(|n| {
                    n.rrset(RecordType::A).is_some() || n.rrset(RecordType::AAAA).is_some()
                });
                if has_addr
                    || might_be(&target, RecordType::A)
                    || might_be(&target, RecordType::AAAA)
                {
                    continue;
                }
                let at = self
                    .ns_at
                    .get(&ns_hash(key, &target_key))
                    .copied()
                    .unwrap_or(node.at);
                let owner = key_name(key).unwrap_or_else(Name::root);
                ns_problems.push(self.problem_at(
                    at,
                    format!("NS `{target}` at `{owner}` has no A or AAAA records in the zone"),
                ));
            }
        }
        ns_problems.sort_by_key(|p| (p.line, p.col));
        self.problems.extend(ns_problems);

        let Some(soa) = self.soa else {
            if !might_be(&origin, RecordType::SOA) {
                self.problems.push(Problem::new(
                    &self.file,
                    1,
                    1,
                    format!("zone {origin} has no SOA record at its apex"),
                ));
            }
            return (None, self.problems);
        };
        let mut nodes = self.nodes;
        // The apex node must not be marked as a cut.
        if let Some(n) = nodes.get_mut(&self.origin_key) {
            n.cut = false;
        }
        nodes.shrink_to_fit();
        let apex = nodes.get(&self.origin_key);
        let signed = apex.is_some_and(|n| n.rrset(RecordType::DNSKEY).is_some())
            || nodes.values().any(|n| n.rrset(RecordType::RRSIG).is_some());
        let presigned = signed.then(|| {
            let mut nsec_owners: Vec<WireKey> = nodes
                .iter()
                .filter(|(_, n)| n.rrset(RecordType::NSEC).is_some())
                .map(|(k, _)| k.clone())
                .collect();
            nsec_owners.sort_by(|a, b| canonical_cmp(a, b));
            Presigned {
                nsec_owners,
                nsec3: apex.is_some_and(|n| n.rrset(RecordType::NSEC3PARAM).is_some()),
            }
        });
        let zone = Zone {
            presigned,
            origin: origin.clone(),
            file: self.file,
            nodes,
            record_count: self.record_count,
            stats: stats::ZoneStats::for_origin(&origin),
            soa_parts: SoaParts::of(&soa.data),
            negative_ttl: match &soa.data {
                RData::SOA(s) => soa.ttl.min(s.minimum),
                _ => soa.ttl,
            },
            soa,
            expired: false,
        };
        (Some(zone), self.problems)
    }
}

/// A node made as an ancestor of another name, with no records of its own yet.
fn n_is_ent(node: &Node) -> bool {
    node.rrsets.is_empty() && node.at.line == 0
}

/// A CNAME beside other data (RRSIG and NSEC may stand beside it).
fn cname_conflict(node: &Node) -> bool {
    node.rrset(RecordType::CNAME).is_some()
        && node.rrsets.iter().any(|r| {
            !matches!(
                r.rtype,
                RecordType::CNAME | RecordType::RRSIG | RecordType::NSEC
            )
        })
}

/// Every zone served, by origin, and the zones whose file failed to load.
#[derive(Debug, Default)]
pub struct ZoneSet {
    pub zones: NameMap<Arc<Zone>>,
    /// Zone files that failed to load while the rest are served (SPEC "Day two"): their names
    /// get SERVFAIL, not REFUSED, and `/status` and the metrics list them.
    pub failed: Vec<FailedZone>,
    /// Origins of `failed`, for the query path.
    failed_keys: NameMap<()>,
    /// Files in the zones folder not named `*.zone`: not loaded, which `check` warns about.
    pub skipped: Vec<PathBuf>,
}

/// A zone file that failed to load and is not served.
#[derive(Debug, Clone)]
pub struct FailedZone {
    /// The origin (file name or `$ORIGIN`); `None` when the file name is not a zone name.
    pub origin: Option<Name>,
    pub file: PathBuf,
    /// Its problems as `file:line:col: message`, one per line.
    pub error: String,
}

impl FailedZone {
    /// The zone's name as `/status` writes it (lower case, no final dot), else the file name.
    pub fn name(&self) -> String {
        match &self.origin {
            Some(o) => stats::name_label(o),
            None => self.file.display().to_string(),
        }
    }
}

/// One zone of `/status` and `meridian_zone_loaded`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneStatus {
    pub name: String,
    pub loaded: bool,
    pub error: Option<String>,
}

impl ZoneSet {
    /// Takes the zone of `file` out of service: its names answer SERVFAIL from now on.
    pub fn mark_failed(&mut self, f: FailedZone) {
        if let Some(o) = &f.origin {
            let key = wire_key(o);
            self.zones.remove(&key);
            self.failed_keys.insert(key, ());
        }
        self.failed.push(f);
    }

    /// Whether the name (wire form and label offsets) lies in a zone that failed to load, with
    /// no served zone closer to it: that query gets SERVFAIL (its data exists, we lost it).
    /// Free on the query path while every zone loaded.
    pub fn failing(&self, wire: &[u8], starts: &[u8]) -> bool {
        if self.failed_keys.is_empty() {
            return false;
        }
        for &s in starts {
            let suffix = &wire[usize::from(s)..];
            if self.failed_keys.contains_key(suffix) {
                return true;
            }
            if self.zones.contains_key(suffix) {
                return false;
            }
        }
        false
    }

    /// Every zone, served or failed, sorted by name.
    pub fn status(&self) -> Vec<ZoneStatus> {
        let mut out: Vec<ZoneStatus> = self
            .zones
            .values()
            .map(|z| ZoneStatus {
                name: stats::name_label(&z.origin),
                loaded: true,
                error: None,
            })
            .chain(self.failed.iter().map(|f| ZoneStatus {
                name: f.name(),
                loaded: false,
                error: Some(f.error.clone()),
            }))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The most specific zone containing the name whose wire form and label offsets are given.
    pub fn find(&self, wire: &[u8], starts: &[u8]) -> Option<&Arc<Zone>> {
        starts
            .iter()
            .find_map(|&s| self.zones.get(&wire[usize::from(s)..]))
    }

    /// The zone that answers a query: the most specific one, except that DS at the apex of a
    /// served zone is the parent's data (RFC 4035 §3.1.4.1), so a served parent answers it.
    pub fn find_for(&self, wire: &[u8], starts: &[u8], ds_query: bool) -> Option<&Arc<Zone>> {
        let (i, zone) = starts
            .iter()
            .enumerate()
            .find_map(|(i, &s)| self.zones.get(&wire[usize::from(s)..]).map(|z| (i, z)))?;
        if ds_query && i == 0 {
            if let Some(parent) = starts[1..]
                .iter()
                .find_map(|&s| self.zones.get(&wire[usize::from(s)..]))
            {
                return Some(parent);
            }
        }
        Some(zone)
    }

    pub fn find_name(&self, name: &Name) -> Option<&Arc<Zone>> {
        let (mut buf, mut starts) = (Vec::new(), Vec::new());
        wire_lower(name, &mut buf, &mut starts);
        self.find(&buf, &starts)
    }

    /// Loads every `*.zone` file in a folder. The origin is the file name without `.zone`
    /// unless the file sets `$ORIGIN` before its first record.
    pub fn load_dir(dir: &Path) -> Result<ZoneSet, Vec<Problem>> {
        let loaded = ZoneSet::load_dir_checked(dir);
        if loaded.problems.is_empty() {
            Ok(loaded.zones)
        } else {
            Err(loaded.problems)
        }
    }

    /// Reads every zone file of the folder to its end and builds what can be built, collecting
    /// every problem of every file: `check` reports them all in one run.
    pub fn load_dir_checked(dir: &Path) -> DirLoad {
        let mut out = DirLoad::default();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                out.problems.push(Problem::new(
                    dir,
                    1,
                    1,
                    format!("cannot read zones folder: {e}"),
                ));
                return out;
            }
        };
        let (mut files, mut skipped): (Vec<PathBuf>, Vec<PathBuf>) = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .partition(|p| p.extension().is_some_and(|x| x == "zone"));
        // Dot files (editor swap files, `.keep`) are nobody's zone.
        skipped.retain(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        });
        skipped.sort();
        out.zones.skipped = skipped;
        files.sort();
        // Files a zone pulls in with $INCLUDE are read, whatever their name: not "skipped".
        let included: std::collections::HashSet<PathBuf> = files
            .iter()
            .flat_map(|f| include_targets(f, 0))
            .filter_map(|p| p.canonicalize().ok())
            .collect();
        out.zones
            .skipped
            .retain(|p| p.canonicalize().map_or(true, |c| !included.contains(&c)));
        let mut origins: HashMap<WireKey, PathBuf> = HashMap::new();
        for path in files {
            let (origin, zone, mut problems) = load_file_checked(&path);
            if !problems.is_empty() {
                out.broken.push(BrokenFile {
                    path: path.clone(),
                    origin: origin.clone(),
                    problems: problems.clone(),
                });
            }
            out.problems.append(&mut problems);
            let Some(origin) = origin else { continue };
            let key = wire_key(&origin);
            if let Some(prev) = origins.get(&key) {
                let p = Problem::new(
                    &path,
                    1,
                    1,
                    format!("zone {origin} is also defined in {}", prev.display()),
                );
                // The first file keeps serving; this one is the broken copy, known by its path.
                match out.broken.iter_mut().find(|b| b.path == path) {
                    Some(b) => {
                        b.origin = None;
                        b.problems.push(p.clone());
                    }
                    None => out.broken.push(BrokenFile {
                        path: path.clone(),
                        origin: None,
                        problems: vec![p.clone()],
                    }),
                }
                out.problems.push(p);
                continue;
            }
            origins.insert(key.clone(), path.clone());
            match zone {
                Some(zone) => {
                    out.zones.zones.insert(key, Arc::new(zone));
                }
                None => out.unbuilt.push(origin),
            }
        }
        out
    }
}

/// The files `$INCLUDE`d by the zone file at `path`, and by those in turn (a textual scan of
/// directive lines, for `check`'s warning about files that are not zones; the parser reads
/// them for real).
fn include_targets(path: &Path, depth: usize) -> Vec<PathBuf> {
    if depth > 8 {
        return Vec::new();
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if !line.starts_with('$')
            || !words
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case("$INCLUDE"))
        {
            continue;
        }
        let Some(file) = words.next().map(|w| w.trim_matches('"')) else {
            continue;
        };
        let p = dir.join(file);
        out.extend(include_targets(&p, depth + 1));
        out.push(p);
    }
    out
}

/// What [`ZoneSet::load_dir_checked`] found.
#[derive(Debug, Default)]
pub struct DirLoad {
    /// The zones that could be built, with or without problems.
    pub zones: ZoneSet,
    /// Origins of zone files too broken to build (no SOA, unreadable): names inside them
    /// cannot be checked against their data.
    pub unbuilt: Vec<Name>,
    pub problems: Vec<Problem>,
    /// Files with problems of their own (each also in `problems`): the zones a server can
    /// start without (SPEC "Day two").
    pub broken: Vec<BrokenFile>,
}

/// A zone file that has problems.
#[derive(Debug, Clone)]
pub struct BrokenFile {
    pub path: PathBuf,
    pub origin: Option<Name>,
    pub problems: Vec<Problem>,
}

impl BrokenFile {
    /// The name it is known by in `/status` and in the tolerance of a reload.
    pub fn name(&self) -> String {
        match &self.origin {
            Some(o) => stats::name_label(o),
            None => self.path.display().to_string(),
        }
    }
}

/// Reads and checks one zone file.
pub fn load_file(path: &Path) -> Result<Zone, Vec<Problem>> {
    match load_file_checked(path) {
        (_, Some(zone), problems) if problems.is_empty() => Ok(zone),
        (_, _, problems) => Err(problems),
    }
}

/// Lines that start with an owner name: about the number of names in a zone file (exact for
/// one record per name, an overestimate when a name is written on each of its lines, which
/// `Builder::finish` trims).
fn owner_lines(text: &str) -> usize {
    let starts = |l: &[u8]| !matches!(l.first(), None | Some(b' ' | b'\t' | b'\r' | b';' | b'$'));
    text.as_bytes()
        .split(|&b| b == b'\n')
        .filter(|l| starts(l))
        .count()
}

/// Reads one zone file to its end: its origin (if the file name or `$ORIGIN` gives one), the
/// zone if one could be built, and every problem.
fn load_file_checked(path: &Path) -> (Option<Name>, Option<Zone>, Vec<Problem>) {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let origin = Name::from_ascii(&stem).map(|mut o| {
        o.set_fqdn(true);
        o
    });
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            let p = Problem::new(path, 1, 1, format!("cannot read zone file: {e}"));
            return (origin.ok(), None, vec![p]);
        }
    };
    let origin = match origin {
        Ok(o) => o,
        Err(e) => {
            let p = Problem::new(
                path,
                1,
                1,
                format!("file name `{stem}` is not a zone name: {e}"),
            );
            return (None, None, vec![p]);
        }
    };
    // Records go into the zone as they are read: nothing holds them all in parsed form.
    let names = owner_lines(&text);
    let mut builder: Option<Builder> = None;
    let read = parse::read_zone_stream(path, &text, origin, &mut |apex, pr| {
        builder
            .get_or_insert_with(|| Builder::with_capacity(apex.clone(), path, names))
            .add(pr)
    });
    drop(text);
    let mut problems = read.problems;
    let builder = builder.unwrap_or_else(|| Builder::new(read.origin.clone(), path));
    let (zone, mut more) = builder.finish(&read.unread);
    problems.append(&mut more);
    (Some(read.origin), zone, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(text: &str) -> Result<Zone, Vec<Problem>> {
        let origin = Name::from_ascii("example.com.").unwrap();
        let (origin, recs) = parse::parse_zone_file(Path::new("t.zone"), text, origin)?;
        Zone::build(origin, Path::new("t.zone"), recs)
    }

    const BASE: &str = "$TTL 300\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nns1 A 192.0.2.1\n";

    fn find<'a>(z: &'a Zone, name: &str) -> Found<'a> {
        let (mut b, mut s) = (Vec::new(), Vec::new());
        wire_lower(&Name::from_ascii(name).unwrap(), &mut b, &mut s);
        // Leak the buffer so the result can borrow it in tests only.
        let b: &'static [u8] = Box::leak(b.into_boxed_slice());
        let s: &'static [u8] = Box::leak(s.into_boxed_slice());
        z.find(b, s, false)
    }

    /// RFC 4034 §6.1's example names in canonical order, and the NSEC owner covering a name.
    #[test]
    fn canonical_order_and_the_covering_nsec() {
        let names: [&[&[u8]]; 9] = [
            &[b"example"],
            &[b"a", b"example"],
            &[b"yljkjljk", b"a", b"example"],
            &[b"Z", b"a", b"example"],
            &[b"zABC", b"a", b"EXAMPLE"],
            &[b"z", b"example"],
            &[b"\x01", b"z", b"example"],
            &[b"*", b"z", b"example"],
            &[b"\xc8", b"z", b"example"],
        ];
        let keys: Vec<WireKey> = names
            .iter()
            .map(|ls| wire_key(&Name::from_labels(ls.iter().copied()).unwrap()))
            .collect();
        let mut sorted = keys.clone();
        sorted.reverse();
        sorted.sort_by(|a, b| canonical_cmp(a, b));
        assert_eq!(sorted, keys);
        let pre = Presigned {
            nsec_owners: vec![keys[0].clone(), keys[1].clone(), keys[5].clone()],
            nsec3: false,
        };
        let k = |n: &str| wire_key(&Name::from_ascii(n).unwrap());
        assert_eq!(pre.covering(&k("b.example.")), Some(&keys[1][..]));
        assert_eq!(pre.covering(&k("x.a.example.")), Some(&keys[1][..]));
        assert_eq!(pre.covering(&k("a.example.")), Some(&keys[1][..]));
        assert_eq!(pre.covering(&k("zz.example.")), Some(&keys[5][..]));
        assert_eq!(pre.covering(&k("y.z.example.")), Some(&keys[5][..]));
    }

    #[test]
    fn ent_wildcard_delegation_nxdomain() {
        let z = zone(&format!(
            "{BASE}a.b.c A 192.0.2.2\n*.w A 192.0.2.3\nsub NS ns.sub\nns.sub A 192.0.2.4\n"
        ))
        .unwrap();
        assert!(matches!(find(&z, "b.c.example.com."), Found::Node(n) if n.rrsets.is_empty()));
        assert!(matches!(find(&z, "A.B.C.example.com."), Found::Node(n) if !n.rrsets.is_empty()));
        assert!(matches!(find(&z, "x.w.example.com."), Found::Wildcard(_)));
        assert!(matches!(find(&z, "y.x.w.example.com."), Found::Wildcard(_)));
        assert!(matches!(
            find(&z, "deep.ns.sub.example.com."),
            Found::Delegation(..)
        ));
        assert!(matches!(
            find(&z, "sub.example.com."),
            Found::Delegation(..)
        ));
        assert!(matches!(find(&z, "nope.example.com."), Found::NxDomain));
        assert!(matches!(find(&z, "x.a.b.c.example.com."), Found::NxDomain));
    }

    /// Reads like `load_file` does: every bad line, then the zone checks on the rest.
    fn all_problems(text: &str) -> Vec<Problem> {
        let origin = Name::from_ascii("example.com.").unwrap();
        let z = parse::read_zone_file(Path::new("t.zone"), text, origin);
        let mut problems = z.problems;
        let (_, more) = Zone::build_checked(z.origin, Path::new("t.zone"), z.records, &z.unread);
        problems.extend(more);
        problems.sort_by_key(|p| (p.line, p.col));
        problems
    }

    #[test]
    fn zone_checks_run_beside_bad_lines() {
        let e = all_problems(&format!(
            "{BASE}bad A 1.2.3\nc CNAME x\nc A 192.0.2.9\nwww.other.org. A 192.0.2.1\n"
        ));
        let got: Vec<(usize, bool)> = e
            .iter()
            .map(|p| (p.line, p.message.contains("IPv4")))
            .collect();
        assert_eq!(got, [(5, true), (6, false), (8, false)], "{e:?}");
        assert!(e[1].message.contains("CNAME and other data"), "{e:?}");
        assert!(e[2].message.contains("outside the zone"), "{e:?}");
        // Without an SOA the other zone checks still run.
        let e = all_problems("$TTL 1\n@ NS ns1\nns1 A 192.0.2.1\nsub NS ns.sub\n");
        assert!(e.iter().any(|p| p.message.contains("no SOA")), "{e:?}");
        assert!(
            e.iter().any(|p| p.message.contains("no A or AAAA")),
            "{e:?}"
        );
    }

    #[test]
    fn a_bad_line_is_not_reported_again_as_missing_data() {
        // The SOA line is bad: "no SOA" would only repeat it.
        let e = all_problems("$TTL 1\n@ SOA ns1 h 1 2 3 4 x\n@ NS ns1\nns1 A 192.0.2.1\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, 2);
        // Nor does a bad glue line make its NS "without address".
        let e = all_problems(&format!("{BASE}sub NS ns.sub\nns.sub A 300.0.0.1\n"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, 6);
        // A bad line elsewhere does not excuse a missing apex NS.
        let e = all_problems("$TTL 1\n@ SOA ns1 h 1 2 3 4 5\nns1 A 192.0.2.1\nx A y\n");
        assert!(e.iter().any(|p| p.message.contains("no NS")), "{e:?}");
    }

    #[test]
    fn checker_rejections() {
        let e = zone(&format!("{BASE}c CNAME x\nc A 192.0.2.9\n")).unwrap_err();
        assert!(e[0].message.contains("CNAME and other data"), "{e:?}");
        assert_eq!(e[0].line, 5);
        let e = zone("$TTL 1\n@ NS ns1\nns1 A 192.0.2.1\n").unwrap_err();
        assert!(e[0].message.contains("no SOA"), "{e:?}");
        let e = zone(&format!("{BASE}www.other.org. A 192.0.2.1\n")).unwrap_err();
        assert!(e[0].message.contains("outside the zone"), "{e:?}");
        assert_eq!(e[0].line, 5);
        let e = zone(&format!("{BASE}sub NS ns.sub\n")).unwrap_err();
        assert!(e[0].message.contains("no A or AAAA"), "{e:?}");
        let e = zone("$TTL 1\n@ SOA ns1 h 1 2 3 4 5\nns1 A 192.0.2.1\n").unwrap_err();
        assert!(e[0].message.contains("no NS"), "{e:?}");
    }
}
