//! Counting a query from its outcome ([`count`]): the cells of the zone's counter table
//! (qtype, rcode, policy slots, and their label values, which the exposition in `metrics`
//! reads), the per-transport counters of [`crate::base::counters`], and the service's answers
//! per endpoint. It sits on the answer floor because it reads what that floor makes (the
//! outcome) and what the model floor owns (zone and service counters); the transports call it.

use std::sync::atomic::Ordering;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::base::counters;
use crate::dns::QueryOutcome;
use crate::policy::{PolicyKind, WhenAllDown};
use crate::zone::stats::{self, ZoneStats};

// ---------------------------------------------------------------------------------------------
// Label slots

/// `qtype` label values; anything else counts as `other`.
pub const QTYPES: [&str; 17] = [
    "A", "AAAA", "NS", "CNAME", "SOA", "PTR", "MX", "TXT", "SRV", "NAPTR", "DS", "DNSKEY", "SVCB",
    "HTTPS", "CAA", "ANY", "other",
];

pub(crate) fn qtype_slot(t: Option<RecordType>) -> usize {
    match t {
        Some(RecordType::A) => 0,
        Some(RecordType::AAAA) => 1,
        Some(RecordType::NS) => 2,
        Some(RecordType::CNAME) => 3,
        Some(RecordType::SOA) => 4,
        Some(RecordType::PTR) => 5,
        Some(RecordType::MX) => 6,
        Some(RecordType::TXT) => 7,
        Some(RecordType::SRV) => 8,
        Some(RecordType::NAPTR) => 9,
        Some(RecordType::DS) => 10,
        Some(RecordType::DNSKEY) => 11,
        Some(RecordType::SVCB) => 12,
        Some(RecordType::HTTPS) => 13,
        Some(RecordType::CAA) => 14,
        Some(RecordType::ANY) => 15,
        _ => 16,
    }
}

/// `rcode` label values; anything else counts as `other`.
pub const RCODES: [&str; 8] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS", "other",
];

pub(crate) fn rcode_slot(r: ResponseCode) -> usize {
    match r {
        ResponseCode::NoError => 0,
        ResponseCode::FormErr => 1,
        ResponseCode::ServFail => 2,
        ResponseCode::NXDomain => 3,
        ResponseCode::NotImp => 4,
        ResponseCode::Refused => 5,
        ResponseCode::BADVERS => 6,
        _ => 7,
    }
}

/// `policy` label values: `static` for answers from the zone, `none` for queries answered
/// without a zone (REFUSED, FORMERR, NOTIMP, BADVERS, CHAOS), then the seven policies in the
/// order of [`crate::config::POLICIES`] (which `PolicyKind` follows).
const POLICY_SLOTS: usize = 2 + crate::config::POLICIES.len();

pub fn policy_label(slot: usize) -> &'static str {
    match slot {
        0 => "static",
        1 => "none",
        n => crate::config::POLICIES
            .get(n - 2)
            .copied()
            .unwrap_or("other"),
    }
}

pub(crate) fn policy_slot(p: Option<PolicyKind>, zone: bool) -> usize {
    match p {
        None if zone => 0,
        None => 1,
        Some(k) => 2 + k as usize,
    }
}

// The zone's counter table has one cell per label combination.
const _: () = assert!(QTYPES.len() == stats::QTYPE_SLOTS);
const _: () = assert!(RCODES.len() == stats::RCODE_SLOTS);
const _: () = assert!(POLICY_SLOTS == stats::SOURCE_SLOTS);

// ---------------------------------------------------------------------------------------------
// Per-query counters

/// Queries answered outside every zone.
pub static NO_ZONE: ZoneStats = ZoneStats::fixed("none");

/// Counts one query from its outcome: a response made (by zone, type, rcode and policy; by
/// transport; by service endpoint), or a packet too short to read. A handful of relaxed atomic
/// adds; no allocation, no lock.
#[inline]
pub fn count(o: &QueryOutcome<'_>) {
    match o.rcode {
        Some(rcode) => record_query(o, rcode),
        None if o.unreadable => counters::record_malformed(o.tcp),
        None => {}
    }
}

fn record_query(o: &QueryOutcome<'_>, rcode: ResponseCode) {
    let zone = o.zone.unwrap_or(&NO_ZONE);
    zone.add(
        qtype_slot(o.qtype),
        rcode_slot(rcode),
        policy_slot(o.service.map(|s| s.policy), o.zone.is_some()),
    );
    counters::record_response(o.tcp, rcode == ResponseCode::FormErr);
    if let Some(svc) = o.service {
        for &i in &o.picks {
            svc.stats.add_answer(i);
        }
        if o.all_down {
            let c = if svc.when_all_down == WhenAllDown::Servfail {
                &svc.stats.all_down_servfail
            } else if o.picks.is_empty() {
                &svc.stats.all_down_empty
            } else {
                &svc.stats.all_down_served
            };
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_cells_have_labels() {
        let z = ZoneStats::fixed("t");
        z.add(
            qtype_slot(Some(RecordType::A)),
            rcode_slot(ResponseCode::NoError),
            policy_slot(None, true),
        );
        z.add(
            qtype_slot(None),
            rcode_slot(ResponseCode::Refused),
            policy_slot(None, false),
        );
        let mut cells: Vec<_> = z
            .cells()
            .map(|(q, r, p, v)| (QTYPES[q], RCODES[r], policy_label(p), v))
            .collect();
        cells.sort();
        assert_eq!(
            cells,
            vec![
                ("A", "NOERROR", "static", 1),
                ("other", "REFUSED", "none", 1)
            ]
        );
    }
}
