//! RRSIGs for RRsets: the canonical signed data (RFC 4034 §3.1.8.1, §6), aligned validity
//! windows, and the bounded signature cache online signing answers from.
//!
//! The signed data is built here, not by hickory's `TBS::from_input`, because the cache key
//! is that same byte string: RDATA in canonical form, sorted as octet strings and
//! deduplicated (§6.3), so a set in any order, with any name case, gives the same bytes, the
//! same cache entry and the same signature. Health changes need no invalidation: a different
//! set of records is a different key.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
use hickory_proto::ProtoError;

use super::key::{SignError, SigningKey};

/// The owner name in canonical form: uncompressed, lowercase (RFC 4034 §6.2).
pub fn canonical_name(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    push_canonical_name(&mut out, name);
    out
}

/// RDATA in canonical form: names in the RFC 4034 §6.2 / RFC 6840 §5.1 types lowercased and
/// uncompressed (hickory's canonical encoder knows which types those are).
pub fn canonical_rdata(rdata: &RData) -> Result<Vec<u8>, ProtoError> {
    let mut buf = Vec::new();
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_canonical_form(true);
    enc.set_name_encoding(NameEncoding::Uncompressed);
    rdata.emit(&mut enc)?;
    Ok(buf)
}

/// RRSIG validity: `validity` long, in windows of a quarter of it aligned to the Unix epoch,
/// so every site with the same keys and the same clock (± a window) puts the same times in
/// its signatures, and a signature always has at least ¾ of `validity` left when served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    validity: u64,
    window: u64,
}

/// How far inception is backdated: resolvers with slow clocks (Unbound allows 10 % of the
/// validity as skew, clamped to 1–24 h) still accept a fresh signature.
pub const INCEPTION_BACKDATE: u64 = 3600;

/// The times of the signatures made in one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// Start of the window, Unix seconds.
    pub start: u64,
    /// RRSIG inception: window start − 1 h (RFC 1982 serial, the low 32 bits).
    pub inception: u32,
    /// RRSIG expiration: window start + validity.
    pub expiration: u32,
}

impl Validity {
    /// `validity` must be at least 4 hours (shorter windows would re-sign every RRset every
    /// hour) and at most 68 years (the RFC 1982 serial horizon).
    pub fn new(validity: Duration) -> Result<Self, String> {
        // The bounds are the config's rule (`config::dnssec`, which `check` applies).
        let secs = crate::config::dnssec::validity_secs(validity)?;
        Ok(Self {
            validity: secs,
            window: secs / 4,
        })
    }

    pub fn validity(&self) -> u64 {
        self.validity
    }
    pub fn window_len(&self) -> u64 {
        self.window
    }

    /// The window `now` (Unix seconds) falls in.
    pub fn at(&self, now: u64) -> Window {
        let start = now - now % self.window;
        Window {
            start,
            inception: start.saturating_sub(INCEPTION_BACKDATE) as u32,
            expiration: (start + self.validity) as u32,
        }
    }

    /// The window at the current system time.
    pub fn now(&self) -> Window {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.at(now)
    }
}

/// The RRSIG to-be-signed bytes for one RRset (RFC 4034 §3.1.8.1), and where the RRSIG RDATA
/// part ends (everything before the RRs; the RRSIG RDATA is that prefix ‖ signature).
pub fn signed_data(
    key: &SigningKey,
    owner: &Name,
    rtype: RecordType,
    ttl: u32,
    window: Window,
    rdatas: &[&[u8]],
) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let prefix = signed_data_into(&mut out, key, owner, rtype, ttl, window, rdatas);
    (out, prefix)
}

/// [`signed_data`] appended to `out` (after whatever it holds: the cache key's key id), so a
/// cache probe costs one allocation. Returns the RRSIG RDATA prefix length.
fn signed_data_into(
    out: &mut Vec<u8>,
    key: &SigningKey,
    owner: &Name,
    rtype: RecordType,
    ttl: u32,
    window: Window,
    rdatas: &[&[u8]],
) -> usize {
    let owner = canonical_name(owner);
    signed_data_wire(
        out,
        key,
        &owner,
        rrsig_labels_wire(&owner),
        rtype,
        ttl,
        window,
        rdatas,
    )
}

/// The RRSIG Labels field of an owner in canonical wire form: its labels, a leading `*` not
/// counted (RFC 4034 §3.1.3).
pub fn rrsig_labels_wire(owner: &[u8]) -> u8 {
    let mut n = 0u8;
    let mut i = 0;
    while let Some(&len) = owner.get(i) {
        if len == 0 {
            break;
        }
        if !(i == 0 && len == 1 && owner.get(1) == Some(&b'*')) {
            n += 1;
        }
        i += usize::from(len) + 1;
    }
    n
}

/// [`signed_data_into`] for an owner already in canonical wire form (lower case,
/// uncompressed) with `labels` for the RRSIG's Labels field.
#[allow(clippy::too_many_arguments)]
fn signed_data_wire(
    out: &mut Vec<u8>,
    key: &SigningKey,
    owner: &[u8],
    labels: u8,
    rtype: RecordType,
    ttl: u32,
    window: Window,
    rdatas: &[&[u8]],
) -> usize {
    let start = out.len();
    let mut sorted: smallvec::SmallVec<[&[u8]; 8]> = rdatas.iter().copied().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let owner_len = owner.len();
    let signer_len = key.zone().iter().map(|l| l.len() + 1).sum::<usize>() + 1;
    let rr_len: usize = sorted.iter().map(|r| owner_len + 10 + r.len()).sum();
    out.reserve(18 + signer_len + rr_len);
    out.extend_from_slice(&u16::from(rtype).to_be_bytes());
    out.push(u8::from(key.algorithm()));
    out.push(labels);
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&window.expiration.to_be_bytes());
    out.extend_from_slice(&window.inception.to_be_bytes());
    out.extend_from_slice(&key.tag().to_be_bytes());
    push_canonical_name(out, key.zone());
    let prefix = out.len() - start;
    for r in sorted.iter() {
        out.extend_from_slice(owner);
        out.extend_from_slice(&u16::from(rtype).to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes()); // class IN
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(r.len() as u16).to_be_bytes());
        out.extend_from_slice(r);
    }
    prefix
}

fn push_canonical_name(out: &mut Vec<u8>, name: &Name) {
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
}

/// Signs RRsets, answering repeats from a [`SigCache`].
pub struct Signer {
    cache: SigCache,
}

impl Signer {
    /// A signer whose cache holds at most `capacity` signatures.
    pub fn new(capacity: usize) -> Self {
        Self {
            cache: SigCache::new(capacity),
        }
    }

    pub fn cache(&self) -> &SigCache {
        &self.cache
    }

    /// The RRSIG RDATA (wire form, signer name uncompressed) over the RRset `owner`/`rtype`
    /// with `rdatas` (each in canonical form, see [`canonical_rdata`]; order and duplicates do
    /// not matter), TTL `ttl`, valid for `window`.
    pub fn sign_rrset(
        &self,
        key: &SigningKey,
        owner: &Name,
        rtype: RecordType,
        ttl: u32,
        window: Window,
        rdatas: &[&[u8]],
    ) -> Result<Arc<[u8]>, SignError> {
        self.sign_rrset_with(key, owner, rtype, ttl, window, rdatas, &mut || true)
            .map(|s| s.unwrap_or_else(|| Arc::from(&[][..])))
    }

    /// [`Signer::sign_rrset`], asking `may_sign` before making a signature the cache does
    /// not hold (the zone's signing budget): `Ok(None)` when it says no.
    #[allow(clippy::too_many_arguments)]
    pub fn sign_rrset_with(
        &self,
        key: &SigningKey,
        owner: &Name,
        rtype: RecordType,
        ttl: u32,
        window: Window,
        rdatas: &[&[u8]],
        may_sign: &mut dyn FnMut() -> bool,
    ) -> Result<Option<Arc<[u8]>>, SignError> {
        let owner = canonical_name(owner);
        let labels = rrsig_labels_wire(&owner);
        self.sign_owner_wire(key, &owner, labels, rtype, ttl, window, rdatas, may_sign)
    }

    /// [`Signer::sign_rrset_with`] for an owner in canonical wire form (the fast path has
    /// it): no name is built.
    #[allow(clippy::too_many_arguments)]
    pub fn sign_owner_wire(
        &self,
        key: &SigningKey,
        owner: &[u8],
        labels: u8,
        rtype: RecordType,
        ttl: u32,
        window: Window,
        rdatas: &[&[u8]],
        may_sign: &mut dyn FnMut() -> bool,
    ) -> Result<Option<Arc<[u8]>>, SignError> {
        // Cache key: which key (two keys can share tag and algorithm, so part of the public
        // key too), then the signed data, which holds owner, type, TTL, window and the RDATA
        // set.
        let id = &key.public_key()[..16.min(key.public_key().len())];
        let mut ck = Vec::with_capacity(160);
        ck.extend_from_slice(id);
        self.sign_wire_with(key, owner, labels, rtype, ttl, window, rdatas, may_sign, ck)
    }

    #[allow(clippy::too_many_arguments)]
    fn sign_wire_with(
        &self,
        key: &SigningKey,
        owner: &[u8],
        labels: u8,
        rtype: RecordType,
        ttl: u32,
        window: Window,
        rdatas: &[&[u8]],
        may_sign: &mut dyn FnMut() -> bool,
        mut ck: Vec<u8>,
    ) -> Result<Option<Arc<[u8]>>, SignError> {
        let id_len = ck.len();
        let prefix = signed_data_wire(&mut ck, key, owner, labels, rtype, ttl, window, rdatas);
        if let Some(hit) = self.cache.get(&ck) {
            SIGNATURES_HIT.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(hit));
        }
        if !may_sign() {
            // Not counted here: the fast path asks first and hands the query to the
            // reference, which asks again; the answer sent TC=1 is counted once, where it is
            // made (`record_refused`).
            return Ok(None);
        }
        let data = &ck[id_len..];
        let sig = key.sign(data)?;
        SIGNATURES_MISS.fetch_add(1, Ordering::Relaxed);
        let mut rrsig = Vec::with_capacity(prefix + sig.len());
        rrsig.extend_from_slice(&data[..prefix]);
        rrsig.extend_from_slice(&sig);
        let rrsig: Arc<[u8]> = rrsig.into();
        self.cache.insert(ck.into(), rrsig.clone());
        Ok(Some(rrsig))
    }
}

/// Signatures served from a cache / made on a miss, by every signer of the process (the
/// metric `meridian_dnssec_signatures_total{cache}`): process-wide counters, so that a
/// reload, which builds new signers, does not reset them.
static SIGNATURES_HIT: AtomicU64 = AtomicU64::new(0);
static SIGNATURES_MISS: AtomicU64 = AtomicU64::new(0);
/// DO answers sent TC=1 because a signature they needed was past the signing budget.
static SIGNATURES_REFUSED: AtomicU64 = AtomicU64::new(0);

/// Counts one answer truncated because the signing budget refused a signature it needed.
pub fn record_refused() {
    SIGNATURES_REFUSED.fetch_add(1, Ordering::Relaxed);
}

/// (hits, misses, refused) of every signer so far: RRSIGs answered from a cache, made, and
/// answers truncated because the zone's signing budget was spent.
pub fn signature_counts() -> (u64, u64, u64) {
    (
        SIGNATURES_HIT.load(Ordering::Relaxed),
        SIGNATURES_MISS.load(Ordering::Relaxed),
        SIGNATURES_REFUSED.load(Ordering::Relaxed),
    )
}

const SHARDS: usize = 16;

/// A bounded map from signed content to RRSIG RDATA, evicting one entry at a time by CLOCK
/// (second chance): an entry read since the hand last passed it survives one more sweep.
/// Never a whole flush (PowerDNS's weekly/at-cap clear stalled answering for seconds, pdns
/// #12899). Sharded by hash so that threads rarely meet on one lock; each lock is held for a
/// map probe, never across signing.
pub struct SigCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: foldhash::fast::FixedState,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

struct Slot {
    key: Arc<[u8]>,
    value: Arc<[u8]>,
    referenced: bool,
}

struct Shard {
    map: HashMap<Arc<[u8]>, usize>,
    slots: Vec<Slot>,
    hand: usize,
    cap: usize,
}

/// Counters of a [`SigCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub entries: usize,
}

impl SigCache {
    /// At most `capacity` entries in all (at least one per shard).
    pub fn new(capacity: usize) -> Self {
        let per = capacity.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        slots: Vec::new(),
                        hand: 0,
                        cap: per,
                    })
                })
                .collect(),
            hasher: foldhash::fast::FixedState::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        let h = self.hasher.hash_one(key);
        &self.shards[(h as usize) % SHARDS]
    }

    /// The largest number of entries the cache holds.
    pub fn capacity(&self) -> usize {
        self.shards.len() * self.shards.first().map_or(0, |s| lock(s).cap)
    }

    /// The cached value, counting a hit or a miss.
    pub fn get(&self, key: &[u8]) -> Option<Arc<[u8]>> {
        let found = {
            let mut s = lock(self.shard(key));
            match s.map.get(key).copied() {
                Some(i) => {
                    s.slots[i].referenced = true;
                    Some(s.slots[i].value.clone())
                }
                None => None,
            }
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub fn insert(&self, key: Arc<[u8]>, value: Arc<[u8]>) {
        let mut guard = lock(self.shard(&key));
        let s = &mut *guard;
        if let Some(&i) = s.map.get(&key) {
            s.slots[i].value = value;
            return;
        }
        if s.slots.len() < s.cap {
            s.map.insert(key.clone(), s.slots.len());
            s.slots.push(Slot {
                key,
                value,
                referenced: false,
            });
            return;
        }
        // Sweep: clear reference bits until an unreferenced slot; at most one full turn plus
        // one, since the turn clears every bit.
        loop {
            let i = s.hand;
            s.hand = (s.hand + 1) % s.slots.len();
            if s.slots[i].referenced {
                s.slots[i].referenced = false;
                continue;
            }
            let old = std::mem::replace(
                &mut s.slots[i],
                Slot {
                    key: key.clone(),
                    value,
                    referenced: false,
                },
            );
            s.map.remove(&old.key);
            s.map.insert(key, i);
            self.evictions.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            entries: self.shards.iter().map(|s| lock(s).slots.len()).sum(),
        }
    }
}

/// A poisoned shard only means a panic elsewhere mid-probe; the map is still consistent
/// (every mutation completes before the guard drops), so keep serving from it.
fn lock(m: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
