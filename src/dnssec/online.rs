//! One signed zone as a snapshot serves it: its keys, the signer with its cache, the apex
//! records that exist only because the zone is signed (DNSKEY, CDS, CDNSKEY, RFC 7344) in
//! wire form, and the zone's signing budget. Built where the snapshot is built (the keys are
//! opened there), so a reload swaps keys, cache and budget together with the zone data.
//!
//! Which key signs what (SPEC "DNSSEC"): keys with the SEP flag sign DNSKEY, CDS and CDNSKEY;
//! the others sign every other RRset. A zone with SEP keys only (one key: a CSK) signs
//! everything with them. Every key of a role signs, so a key added to `keys` is published and
//! signs at once (the double-signature rollover, docs/dnssec.md).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use hickory_proto::rr::{Name, RecordType};

use super::config::ZoneKeys;
use super::key::{SignError, SigningKey};
use super::sign::{Signer, Validity};

/// Signatures each signed zone's cache holds (about 300 bytes each with their keys): a zone
/// with 20k names, each with a few answer sets per window, fits; beyond it CLOCK evicts one
/// entry at a time.
pub const CACHE_ENTRIES: usize = 65_536;

/// The RRSIG RDATAs over one RRset, one per signing key.
pub type Rrsigs = smallvec::SmallVec<[Arc<[u8]>; 2]>;

/// A signed zone's online signing state.
pub struct Online {
    pub zone: Name,
    pub keys: Vec<SigningKey>,
    pub validity: Validity,
    signer: Signer,
    budget: Budget,
    /// The RDATA (wire form) of the apex DNSKEY, CDS and CDNSKEY sets, and their TTL.
    pub dnskey: Vec<Vec<u8>>,
    pub cds: Vec<Vec<u8>>,
    pub cdnskey: Vec<Vec<u8>>,
    pub apex_ttl: u32,
}

impl std::fmt::Debug for Online {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Online")
            .field("zone", &self.zone.to_string())
            .field("keys", &self.keys)
            .finish()
    }
}

impl Online {
    /// The signing state of a zone whose keys were loaded and checked; `apex_ttl` is the TTL
    /// of its DNSKEY, CDS and CDNSKEY sets (the zone's SOA TTL, as Knot's default).
    pub fn new(keys: ZoneKeys, apex_ttl: u32) -> Self {
        let emit = |r: hickory_proto::rr::RData| crate::dnssec::sign::canonical_rdata(&r).ok();
        let dnskey = keys.keys.iter().map(SigningKey::dnskey_rdata).collect();
        let sep = || keys.keys.iter().filter(|k| k.is_sep());
        let cds = sep()
            .filter_map(|k| {
                emit(hickory_proto::rr::RData::DNSSEC(
                    hickory_proto::dnssec::rdata::DNSSECRData::CDS(k.cds()),
                ))
            })
            .collect();
        let cdnskey = sep()
            .filter_map(|k| {
                emit(hickory_proto::rr::RData::DNSSEC(
                    hickory_proto::dnssec::rdata::DNSSECRData::CDNSKEY(k.cdnskey()),
                ))
            })
            .collect();
        Self {
            zone: keys.zone,
            validity: keys.validity,
            signer: Signer::new(CACHE_ENTRIES),
            budget: Budget::new(keys.signatures_per_second),
            keys: keys.keys,
            dnskey,
            cds,
            cdnskey,
            apex_ttl,
        }
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The signing budget (0: none).
    pub fn signatures_per_second(&self) -> u32 {
        self.budget.rate
    }

    /// The apex RRset of `rtype` that signing adds (DNSKEY, CDS, CDNSKEY), if it is one.
    pub fn apex_set(&self, rtype: RecordType) -> Option<&[Vec<u8>]> {
        match rtype {
            RecordType::DNSKEY => Some(&self.dnskey),
            RecordType::CDS => Some(&self.cds),
            RecordType::CDNSKEY => Some(&self.cdnskey),
            _ => None,
        }
    }

    /// The keys that sign an RRset of `rtype`.
    pub fn keys_for(&self, rtype: RecordType) -> impl Iterator<Item = &SigningKey> {
        let sep_only = matches!(
            rtype,
            RecordType::DNSKEY | RecordType::CDS | RecordType::CDNSKEY
        ) || self.keys.iter().all(SigningKey::is_sep);
        self.keys.iter().filter(move |k| k.is_sep() == sep_only)
    }

    /// The RRSIG RDATAs (one per signing key) over the RRset `owner`/`rtype`/`ttl` with
    /// `rdatas` in canonical form. `Ok(None)` when a signature is not cached and `limited`
    /// (a UDP query without a valid server cookie) finds the budget spent.
    pub fn sign(
        &self,
        owner: &Name,
        rtype: RecordType,
        ttl: u32,
        rdatas: &[&[u8]],
        limited: bool,
    ) -> Result<Option<Vec<Arc<[u8]>>>, SignError> {
        let window = self.validity.now();
        let mut out = Vec::with_capacity(1);
        for key in self.keys_for(rtype) {
            let mut may = || !limited || self.budget.take();
            match self
                .signer
                .sign_rrset_with(key, owner, rtype, ttl, window, rdatas, &mut may)?
            {
                Some(sig) => out.push(sig),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    }
}

impl Online {
    /// [`Online::sign`] for an owner in canonical wire form (lower case, no `*` label): what
    /// the fast path has. At most two keys sign one RRset without a rollover, so no heap.
    pub fn sign_wire(
        &self,
        owner: &[u8],
        rtype: RecordType,
        ttl: u32,
        rdatas: &[&[u8]],
        limited: bool,
    ) -> Result<Option<Rrsigs>, SignError> {
        let window = self.validity.now();
        let labels = super::sign::rrsig_labels_wire(owner);
        let mut out = smallvec::SmallVec::new();
        for key in self.keys_for(rtype) {
            let mut may = || !limited || self.budget.take();
            match self
                .signer
                .sign_owner_wire(key, owner, labels, rtype, ttl, window, rdatas, &mut may)?
            {
                Some(sig) => out.push(sig),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    }
}

/// A token bucket of signatures per second with one second of credit; only cache misses
/// take from it, so the lock is taken next to a 20 µs signature, never on a hit.
struct Budget {
    rate: u32,
    state: Mutex<(f64, Instant)>,
}

impl Budget {
    fn new(rate: u32) -> Self {
        Self {
            rate,
            state: Mutex::new((f64::from(rate), Instant::now())),
        }
    }

    /// Takes one signature's worth of credit; false when there is none.
    fn take(&self) -> bool {
        if self.rate == 0 {
            return true;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let rate = f64::from(self.rate);
        s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * rate).min(rate);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}
