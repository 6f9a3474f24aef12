//! The health registry of a server: the endpoint states every snapshot of it shares, reused
//! for an unchanged endpoint across reloads, and the drain rules (`policy::drains`) applied to
//! each snapshot built. It sits here, at the top of the model floor, because it holds both
//! `health`'s states and `policy`'s drains (neither of which imports the other's container).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::health::{EndpointKey, EndpointState};

/// Hands out endpoint states, reusing the old state for an unchanged endpoint. Used only when a
/// snapshot is built, never per query.
#[derive(Debug, Default)]
pub struct HealthRegistry {
    states: Mutex<HashMap<EndpointKey, Arc<EndpointState>>>,
    /// The key each (service, address) was last given a checked state under: when a reload
    /// changes its `health` list (so its key), the new checks go on from the old verdicts.
    last_key: Mutex<HashMap<(String, std::net::IpAddr), EndpointKey>>,
    /// A state of each (address, probe) in `states`, to seed the state of the same endpoint
    /// in one more service ([`HealthRegistry::state`]).
    by_target: Mutex<HashMap<(std::net::IpAddr, String), std::sync::Weak<EndpointState>>>,
    /// Drains as the operator made them, applied to every snapshot built (`policy::drains`).
    pub drains: crate::policy::drains::Drains,
    /// Set once the first snapshot is built: an endpoint new after that (a reload added it)
    /// starts down, as it was never seen working (SPEC "Behaviour on the wire", health).
    built: std::sync::atomic::AtomicBool,
}

impl HealthRegistry {
    /// Whether a snapshot was built with this registry before (so this one is a reload's).
    pub fn built_before(&self) -> bool {
        self.built.load(Ordering::Relaxed)
    }
    pub fn mark_built(&self) {
        self.built.store(true, Ordering::Relaxed)
    }

    /// The state of `key`: the one it had, else a new one. A new state of an address and probe
    /// that another service already has (a pool a reload gives one more service) starts from
    /// that one's health, as the probe that writes both is already running: one address is
    /// one endpoint for health, whatever the services using it.
    pub fn state(&self, key: EndpointKey, initially_up: bool) -> Arc<EndpointState> {
        let mut m = self.states.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = m.get(&key) {
            return s.clone();
        }
        let mut by = self.by_target.lock().unwrap_or_else(|e| e.into_inner());
        let target = (key.address, key.probe.clone());
        let state = Arc::new(EndpointState::new(initially_up));
        if !key.probe.is_empty() {
            if let Some(known) = by.get(&target).and_then(std::sync::Weak::upgrade) {
                state.seed_from(&known);
            }
            by.insert(target, Arc::downgrade(&state));
        }
        m.insert(key, state.clone());
        state
    }

    /// The state of an endpoint checked by `checks` (profile name, initially up), healthy
    /// while `min` of them pass (0 = all): the old one when it had the same profiles in the
    /// same order (its `health_min` updated), else a new one (a changed list starts over).
    pub fn checked_state(
        &self,
        key: EndpointKey,
        checks: &[(String, bool)],
        min: usize,
    ) -> Arc<EndpointState> {
        let names: Vec<String> = checks.iter().map(|(n, _)| n.clone()).collect();
        let mut m = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let mut last = self.last_key.lock().unwrap_or_else(|e| e.into_inner());
        let endpoint = (key.service.clone(), key.address);
        if let Some(st) = m.get(&key).filter(|st| st.checked_by(&names)) {
            st.set_min(min);
            last.insert(endpoint, key);
            return st.clone();
        }
        // Its profiles changed (a list edited, a profile renamed): each check goes on from
        // the verdict answers used — the old check of the same profile, else the endpoint's —
        // rather than from `initial` (a profile added to a running endpoint must not take it
        // out of answers until that profile's first probe).
        // A new service on an address and probe that another service already has (a pool a
        // reload gives one more service) goes on from that one's verdicts: the probe that
        // writes both is already running, and one address is one endpoint for health.
        let mut by = self.by_target.lock().unwrap_or_else(|e| e.into_inner());
        let target = (key.address, key.probe.clone());
        let sibling = by
            .get(&target)
            .and_then(std::sync::Weak::upgrade)
            .filter(|o| o.checked_by(&names));
        let old = last
            .get(&endpoint)
            .and_then(|k| m.get(k))
            .or_else(|| m.get(&key))
            .cloned()
            .or_else(|| sibling.clone());
        let carried: Vec<(String, bool)> = match &old {
            Some(o) => checks
                .iter()
                .map(|(n, _)| {
                    let v = o
                        .checks()
                        .iter()
                        .find(|c| &c.profile == n)
                        .map_or_else(|| o.healthy(), |c| c.healthy());
                    (n.clone(), v)
                })
                .collect(),
            None => checks.to_vec(),
        };
        let st = Arc::new(EndpointState::with_checks(&carried, min));
        if let Some(known) = &sibling {
            st.seed_from(known);
        }
        by.insert(target, Arc::downgrade(&st));
        m.insert(key.clone(), st.clone());
        last.insert(endpoint, key);
        st
    }

    /// Forgets endpoints that the current config no longer has.
    pub fn retain(&self, keep: &dyn Fn(&EndpointKey) -> bool) {
        let mut m = self.states.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|k, _| keep(k));
        let mut last = self.last_key.lock().unwrap_or_else(|e| e.into_inner());
        last.retain(|_, k| m.contains_key(k));
        let mut by = self.by_target.lock().unwrap_or_else(|e| e.into_inner());
        by.retain(|_, w| w.strong_count() > 0);
    }
}

/// At start: restores the drains saved in the snapshot's `state_dir` and applies them, logging
/// what was restored, or why nothing could be (the server then starts without drains).
pub fn restore_drains_at_start(snap: &super::Snapshot) {
    let dir = snap.config.state_dir();
    let drains = &snap.health.drains;
    match drains.restore(&dir) {
        Ok(0) => {}
        Ok(n) => {
            drains.apply(&snap.services, &snap.regions);
            for r in drains.rules() {
                tracing::info!(
                    since = r.at,
                    "restored {}: {}",
                    if r.drain { "drain" } else { "undrain" },
                    r.scope.describe()
                );
            }
            tracing::info!(rules = n, state_dir = %dir.display(), "drains restored");
        }
        // ERROR, and kept for /status and the metrics: the drains the file held are unknown,
        // so endpoints an operator took out may be answered again.
        Err(e) => tracing::error!("drain state lost, starting without drains: {e}"),
    }
}
