//! Compact denial of existence (RFC 9824): the one NSEC record a negative answer carries,
//! made at answer time, so there is no NSEC chain to keep and nothing to walk.
//!
//! - a name that does not exist: NOERROR, NSEC at the query name, next `\000.<qname>`,
//!   types RRSIG NSEC NXNAME;
//! - NODATA: NSEC at the name, next `\000.<name>`, the types the name has plus RRSIG NSEC;
//! - an unsigned delegation: NSEC at the cut, types NS RRSIG NSEC, next `sub\000.<parent>`
//!   (the cut's first label with a zero octet appended): a next name *below* the cut
//!   (`\000.sub.zone`) fails validation in Unbound (its issue #441), since the NSEC would
//!   then seem to prove names under the delegation.

use hickory_proto::dnssec::rdata::NSEC;
use hickory_proto::rr::{Name, RecordType};

/// NXNAME (RFC 9824 §2): a meta-type, only ever in NSEC bitmaps; hickory has no name for it.
pub const NXNAME: RecordType = RecordType::Unknown(128);

const MAX_NAME: usize = 255;
const MAX_LABEL: usize = 63;

/// One NSEC record to add (signed) to the authority section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsecRecord {
    pub owner: Name,
    pub next: Name,
    /// Sorted, without repeats.
    pub types: Vec<RecordType>,
}

impl NsecRecord {
    fn new(owner: &Name, next: Name, types: impl IntoIterator<Item = RecordType>) -> Self {
        let mut types: Vec<RecordType> = types.into_iter().collect();
        types.sort_by_key(|t| u16::from(*t));
        types.dedup();
        Self {
            owner: owner.clone(),
            next,
            types,
        }
    }

    pub fn rdata(&self) -> NSEC {
        NSEC::new(self.next.clone(), self.types.iter().copied())
    }

    /// The NSEC RDATA in wire form: next name lowercased, type bitmap windows. RFC 6840 §5.1
    /// keeps the next name's case in the signed data, so serve exactly these bytes: signed
    /// and served then agree whatever case the query had.
    pub fn rdata_wire(&self) -> Vec<u8> {
        let mut out = super::sign::canonical_name(&self.next);
        out.extend_from_slice(&type_bitmap(&self.types));
        out
    }
}

/// The RFC 4034 §4.1.2 type bitmap: per 256-type window, its number, its length, its bits.
pub fn type_bitmap(types: &[RecordType]) -> Vec<u8> {
    let mut codes: Vec<u16> = types.iter().map(|t| u16::from(*t)).collect();
    codes.sort_unstable();
    codes.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < codes.len() {
        let window = (codes[i] >> 8) as u8;
        let mut bits = [0u8; 32];
        let mut len = 0;
        while i < codes.len() && (codes[i] >> 8) as u8 == window {
            let low = (codes[i] & 0xff) as usize;
            bits[low / 8] |= 0x80 >> (low % 8);
            len = low / 8 + 1;
            i += 1;
        }
        out.push(window);
        out.push(len as u8);
        out.extend_from_slice(&bits[..len]);
    }
    out
}

/// The NSEC for a name that does not exist (RFC 9824 §3.1).
pub fn nxname(qname: &Name, apex: &Name) -> NsecRecord {
    NsecRecord::new(
        qname,
        compact_next(qname, apex),
        [RecordType::RRSIG, RecordType::NSEC, NXNAME],
    )
}

/// The NSEC for NODATA at a name that has `types` (RFC 9824 §3.2).
pub fn nodata(qname: &Name, apex: &Name, types: &[RecordType]) -> NsecRecord {
    NsecRecord::new(
        qname,
        compact_next(qname, apex),
        types
            .iter()
            .copied()
            .chain([RecordType::RRSIG, RecordType::NSEC]),
    )
}

/// The NSEC proving a delegation at `cut` is unsigned (no DS): NS RRSIG NSEC.
pub fn unsigned_delegation(cut: &Name, apex: &Name) -> NsecRecord {
    NsecRecord::new(
        cut,
        sibling_next(cut, apex),
        [RecordType::NS, RecordType::RRSIG, RecordType::NSEC],
    )
}

fn labels(name: &Name) -> Vec<Vec<u8>> {
    name.iter().map(|l| l.to_vec()).collect()
}

fn wire_len(labels: &[Vec<u8>]) -> usize {
    labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1
}

fn to_name(labels: &[Vec<u8>], apex: &Name) -> Name {
    // Labels come from a valid name, grown within the limits checked by the callers, so this
    // cannot fail; should it ever, the apex ("last name of the zone") still covers the qname.
    match Name::from_labels(labels.iter().map(|l| l.as_slice())) {
        Ok(mut n) => {
            n.set_fqdn(true);
            n
        }
        Err(_) => {
            let mut a = apex.clone();
            a.set_fqdn(true);
            a
        }
    }
}

/// The next name after `qname` in canonical order, as Knot's `online_nsec_next`: `\000.qname`
/// when it fits in 255 octets; else the first label (from the left) that can be incremented is,
/// and the labels left of it are dropped; else the apex.
pub fn compact_next(qname: &Name, apex: &Name) -> Name {
    let ls = labels(qname);
    if wire_len(&ls) + 2 <= MAX_NAME {
        let mut next = vec![vec![0u8]];
        next.extend(ls);
        return to_name(&next, apex);
    }
    increment_from(ls, apex)
}

/// The next name after `cut` that is not below it: `cut`'s first label with a zero octet
/// appended when that fits, else incremented as [`compact_next`] does.
pub fn sibling_next(cut: &Name, apex: &Name) -> Name {
    let mut ls = labels(cut);
    let total = wire_len(&ls);
    if let Some(first) = ls.first_mut() {
        if first.len() < MAX_LABEL && total < MAX_NAME {
            first.push(0);
            return to_name(&ls, apex);
        }
    }
    increment_from(ls, apex)
}

fn increment_from(mut ls: Vec<Vec<u8>>, apex: &Name) -> Name {
    let apex_labels = apex.iter().count();
    while ls.len() > apex_labels {
        if inc_label(&mut ls) {
            return to_name(&ls, apex);
        }
        ls.remove(0);
    }
    let mut a = apex.clone();
    a.set_fqdn(true);
    a
}

/// Knot's `inc_label` on the first label: raise its last octet that is not 0xff (skipping
/// the upper-case letters, which sort as lower case) and zero the ones after; if all are
/// 0xff, append a zero octet when the label and the name have room.
fn inc_label(ls: &mut [Vec<u8>]) -> bool {
    let total = wire_len(ls);
    let Some(label) = ls.first_mut() else {
        return false;
    };
    if let Some(pos) = label.iter().rposition(|&b| b != 0xff) {
        label[pos] = if label[pos] == b'A' - 1 {
            b'Z' + 1
        } else {
            label[pos] + 1
        };
        for b in &mut label[pos + 1..] {
            *b = 0;
        }
        return true;
    }
    if label.len() < MAX_LABEL && total < MAX_NAME {
        label.push(0);
        return true;
    }
    false
}
