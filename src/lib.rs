//! meridian: an authoritative DNS server that does global server load balancing.
//!
//! A query flows one way: socket ([`server`]) → request handler ([`dns`]) → the current
//! [`snapshot::Snapshot`] (zones from [`zone`], settings from [`config`]) → response bytes.
//! Nothing on that path takes a lock; reloads build a new snapshot and swap it in whole.
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the TOML schema, its checks, and `file:line:col` problems |
//! | [`zone`] | master-file parsing, zone checks, the name index for lookups |
//! | [`geo`] | locating a client: ECS or source, overrides, GeoIP database, site |
//! | [`policy`] | balanced names and the seven steering policies |
//! | [`health`] | endpoint health state, read lock-free by the query path |
//! | [`snapshot`] | everything a query needs, swapped atomically |
//! | [`dns`] | query bytes → response bytes, independent of transport |
//! | [`fast`] | the UDP fast path for the common queries, byte to byte |
//! | [`server`] | UDP and TCP listeners |
//! | [`explain`] | `meridian explain`: an answer and the decision behind it |
//! | [`metrics`] | Prometheus counters (lock-free on the query path) and their exposition |
//! | [`reload`] | SIGHUP / API reloads: rebuild off the query path, swap, record the result |
//! | [`admin`] | the admin HTTP API: status, metrics, drain, reload |
//! | [`status_page`] | `GET /`: the status page for people, self-contained |
//! | [`history`] | recent events and last-minute answer shares for `/status` and the page |
//! | [`cli`] | the `meridian` command line |

pub mod admin;
pub mod cli;
pub mod config;
pub mod dns;
pub mod explain;
pub mod fast;
pub mod geo;
pub mod health;
pub mod history;
pub mod metrics;
pub mod policy;
pub mod reload;
pub mod server;
pub mod snapshot;
pub mod status_page;
pub mod zone;
