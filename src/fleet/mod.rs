//! `[fleet]` (SPEC "Fleet"): sites share health verdicts and drains through etcd (v3 API).
//!
//! Layout under `prefix` (see docs/fleet.md):
//! - `PREFIX/sites/SITE`: this site's report, JSON `{"site", "verdicts": {"SERVICE/ADDR": bool}}`,
//!   put with a lease of `report_ttl` that a keep-alive refreshes every third of it. The key
//!   is also the site's membership: a site that dies drops out when its lease expires. A
//!   report counts only with a lease and with `site` equal to its key's SITE; others are
//!   ignored, logged and counted (SPEC "Trust boundaries"; docs/fleet.md).
//! - `PREFIX/drains`: the drain rules of the whole fleet, the same JSON as `drains.json`,
//!   changed only by compare-and-swap transactions so two sites draining at once both count.
//!
//! One task per process holds the session: it reads everything under the prefix, watches it
//! from that revision on, publishes its own report when it changes, and every [`TICK`] (and
//! after every watch event) recomputes for each endpoint who probes it (rendezvous hash with
//! bounded loads over the counting sites, `probers`) and the fleet verdict (`quorum` over the
//! reports of its assigned probers). The
//! verdict goes into the endpoint's `healthy` atomic, which is all the query path reads:
//! nothing that answers a query ever waits on etcd.
//!
//! When the session fails (etcd down, a timeout, a lost lease), every endpoint goes back to
//! this site's own probes and verdicts at once, drains stay as they were, and the task
//! reconnects every [`RETRY`] until etcd answers again; then etcd's copy wins. A reload that
//! changes `[fleet]` ends the member and starts one with the new settings ([`reconfigure`]).

//!
//! The etcd client is behind the `fleet` cargo feature (it needs protoc to build): without it
//! `[fleet]` is a config problem that says how to get a build with it, and [`Slot::get`] is
//! always `None`, so the rest of the server has nothing to special-case.

/// Where one server keeps its fleet member: made empty with the server's
/// [`crate::reload::Reloader`], filled by [`start`] and [`reconfigure`], read by `/status`, the
/// metrics, drains through the admin API and shutdown. A handle, not a process-wide static.
#[derive(Debug, Clone, Default)]
pub struct Slot(std::sync::Arc<arc_swap::ArcSwapOption<Fleet>>);

impl Slot {
    /// The member running now; `None` without `[fleet]` (always, in a build without it).
    pub fn get(&self) -> Option<std::sync::Arc<Fleet>> {
        self.0.load_full()
    }

    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    fn set(&self, f: Option<std::sync::Arc<Fleet>>) {
        self.0.store(f);
    }
}

#[cfg(feature = "fleet")]
mod member;
#[cfg(feature = "fleet")]
pub use member::*;

#[cfg(not(feature = "fleet"))]
mod absent {
    use std::net::IpAddr;
    use std::sync::Arc;

    use serde_json::Value;

    use crate::config::fleet::Settings;
    use crate::health::EndpointState;
    use crate::policy::drains::Scope;
    use crate::snapshot::{SharedSnapshot, Snapshot};

    /// No fleet member can exist in a build without the `fleet` feature.
    #[derive(Debug)]
    pub enum Fleet {}

    /// Never reached: the config check refuses `[fleet]` in this build.
    pub fn start(_: &super::Slot, _: SharedSnapshot, _: Settings) -> Option<Arc<Fleet>> {
        tracing::error!("[fleet] needs a meridian built with `--features fleet`");
        None
    }

    /// Nothing to restart: no member ever runs in this build.
    pub async fn reconfigure(_: &super::Slot, _: &SharedSnapshot, _: Option<Settings>) {}

    impl Fleet {
        pub fn connected(&self) -> bool {
            match *self {}
        }
        pub fn status_json(&self) -> Value {
            match *self {}
        }
        pub fn ignored_counts(&self) -> Vec<(&'static str, u64)> {
            match *self {}
        }
        pub fn endpoint_json(&self, _: &str, _: IpAddr, _: &EndpointState) -> Value {
            match *self {}
        }
        pub async fn change_drain(
            &self,
            _: Scope,
            _: bool,
            _: Option<f64>,
            _: &Snapshot,
        ) -> Result<(), String> {
            match *self {}
        }
        pub async fn shutdown(&self) {
            match *self {}
        }
    }
}
#[cfg(not(feature = "fleet"))]
pub use absent::*;
