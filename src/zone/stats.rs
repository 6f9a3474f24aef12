//! The query counters a zone carries: plain atomics, owned here so that the zone depends on no
//! other part of meridian. What the cells mean (the qtype, rcode and policy labels) is the
//! business of the layer that counts and exports them (`metrics`); this module only
//! fixes the table's shape, which `metrics` checks at compile time.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use hickory_proto::rr::Name;

/// Rows of the table: query types told apart (the last one is "other").
pub const QTYPE_SLOTS: usize = 17;
/// Response codes told apart (the last one is "other").
pub const RCODE_SLOTS: usize = 8;
/// What made the answer: the zone's data, nothing (no zone), or one of the policies.
pub const SOURCE_SLOTS: usize = 9;

const ROW: usize = RCODE_SLOTS * SOURCE_SLOTS;

/// Query counters of one zone: one row of rcode × source cells per qtype, allocated the first
/// time that qtype is asked (a zone asked only A and AAAA costs two rows of 72 counters).
#[derive(Debug)]
pub struct ZoneStats {
    /// The `zone` label: the origin without its final dot (`.` for the root), or `none`.
    label: Cow<'static, str>,
    rows: [OnceLock<Box<[AtomicU64; ROW]>>; QTYPE_SLOTS],
}

impl ZoneStats {
    /// Counters under a fixed label (queries outside every zone).
    pub const fn fixed(label: &'static str) -> ZoneStats {
        ZoneStats {
            label: Cow::Borrowed(label),
            rows: [const { OnceLock::new() }; QTYPE_SLOTS],
        }
    }

    fn named(label: String) -> ZoneStats {
        ZoneStats {
            label: Cow::Owned(label),
            rows: [const { OnceLock::new() }; QTYPE_SLOTS],
        }
    }

    /// The counters of the zone with this origin; the same ones as the previous snapshot's if
    /// it had the zone (counters never go back). Called once per zone when zones are loaded.
    pub fn for_origin(origin: &Name) -> Arc<ZoneStats> {
        static ZONES: OnceLock<Mutex<HashMap<String, Weak<ZoneStats>>>> = OnceLock::new();
        let label = name_label(origin);
        carried(ZONES.get_or_init(Default::default), label.clone(), || {
            ZoneStats::named(label)
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Adds one to a cell. Slots out of range count in the last ("other") slot.
    pub fn add(&self, qtype: usize, rcode: usize, source: usize) {
        let (q, r, s) = (
            qtype.min(QTYPE_SLOTS - 1),
            rcode.min(RCODE_SLOTS - 1),
            source.min(SOURCE_SLOTS - 1),
        );
        let row = self.rows[q].get_or_init(|| Box::new([const { AtomicU64::new(0) }; ROW]));
        row[r * SOURCE_SLOTS + s].fetch_add(1, Ordering::Relaxed);
    }

    /// Every non-zero cell as (qtype, rcode, source, count) slots.
    pub fn cells(&self) -> impl Iterator<Item = (usize, usize, usize, u64)> + '_ {
        self.rows.iter().enumerate().flat_map(|(q, row)| {
            row.get().into_iter().flat_map(move |row| {
                row.iter().enumerate().filter_map(move |(i, c)| {
                    let v = c.load(Ordering::Relaxed);
                    (v > 0).then_some((q, i / SOURCE_SLOTS, i % SOURCE_SLOTS, v))
                })
            })
        })
    }
}

/// The label for a zone origin or service name: lower case, without the final dot.
pub fn name_label(name: &Name) -> String {
    let s = name.to_lowercase().to_ascii();
    match s.strip_suffix('.') {
        Some("") | None => s,
        Some(t) => t.to_string(),
    }
}

/// A registry of counters by key that hands out the live one if a snapshot still holds it, so
/// that a reload keeping a zone (or an endpoint) keeps its counts.
pub fn carried<T>(
    map: &Mutex<HashMap<String, Weak<T>>>,
    key: String,
    make: impl FnOnce() -> T,
) -> Arc<T> {
    let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = m.get(&key).and_then(Weak::upgrade) {
        return s;
    }
    // Forget what no snapshot holds any more, now and then rather than on every call.
    if m.len() >= 64 && m.len().is_power_of_two() {
        m.retain(|_, w| w.strong_count() > 0);
    }
    let s = Arc::new(make());
    m.insert(key, Arc::downgrade(&s));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_count_and_list() {
        let z = ZoneStats::fixed("t");
        z.add(0, 0, 0);
        z.add(0, 0, 0);
        z.add(16, 5, 1);
        let mut cells: Vec<_> = z.cells().collect();
        cells.sort();
        assert_eq!(cells, vec![(0, 0, 0, 2), (16, 5, 1, 1)]);
    }

    #[test]
    fn labels_drop_the_final_dot() {
        assert_eq!(
            name_label(&Name::from_ascii("WWW.Example.COM.").unwrap()),
            "www.example.com"
        );
        assert_eq!(name_label(&Name::root()), ".");
    }

    #[test]
    fn carry_over_while_held() {
        let n = Name::from_ascii("carry.test.").unwrap();
        let a = ZoneStats::for_origin(&n);
        let b = ZoneStats::for_origin(&n);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.label(), "carry.test");
    }
}
