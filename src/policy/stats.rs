//! Answer counters of one service, owned by the policy layer whose answers they count; the
//! metrics exporter only reads them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use hickory_proto::rr::Name;

use crate::zone::stats::{carried, name_label};

/// Answer counters of one service, indexed like its endpoints.
#[derive(Debug, Default)]
pub struct ServiceStats {
    /// Answers that carried each endpoint.
    answers: Vec<Arc<AtomicU64>>,
    /// Answers given while every endpoint of the family was down: `serve-all` answered them
    /// all anyway ("answering blind"), `empty` answered NODATA, `servfail` refused to.
    pub all_down_served: Arc<AtomicU64>,
    pub all_down_empty: Arc<AtomicU64>,
    pub all_down_servfail: Arc<AtomicU64>,
}

fn counter(key: String) -> Arc<AtomicU64> {
    static COUNTERS: OnceLock<Mutex<HashMap<String, Weak<AtomicU64>>>> = OnceLock::new();
    carried(COUNTERS.get_or_init(Default::default), key, || {
        AtomicU64::new(0)
    })
}

impl ServiceStats {
    /// Counters for a service and its endpoint addresses, carried over from the previous
    /// snapshot for what did not change. Called once per service when a snapshot is built.
    pub fn new(name: &Name, endpoints: impl Iterator<Item = IpAddr>) -> ServiceStats {
        let svc = name_label(name);
        ServiceStats {
            answers: endpoints
                .map(|a| counter(format!("answers\0{svc}\0{a}")))
                .collect(),
            all_down_served: counter(format!("all-down\0{svc}\0serve-all")),
            all_down_empty: counter(format!("all-down\0{svc}\0empty")),
            all_down_servfail: counter(format!("all-down\0{svc}\0servfail")),
        }
    }

    /// Answers that carried the endpoint at index `i` so far (0 for an index out of range).
    pub fn answers(&self, i: usize) -> u64 {
        self.answers.get(i).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Counts one answer that carried the endpoint at index `i`.
    pub fn add_answer(&self, i: usize) {
        if let Some(c) = self.answers.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}
