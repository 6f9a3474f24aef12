//! meridian: an authoritative DNS server that does global server load balancing.
//!
//! A query flows one way: socket ([`server`]) → [`answer::respond`] (the [`fast`] path, else the
//! reference handler, [`dns`]) → the current
//! [`snapshot::Snapshot`] (zones from [`zone`], settings from [`config`]) → response bytes.
//! Nothing on that path takes a lock; reloads build a new snapshot and swap it in whole.
//!
//! | module | owns |
//! |---|---|
//! | [`base`] | the ground floor: clock, randomness, CIDR masks, `Problem`, the DNS byte walker |
//! | [`config`] | the TOML schema, its checks, and `file:line:col` problems |
//! | [`cookie`] | DNS Cookies (RFC 7873, RFC 9018 server cookies) |
//! | [`zone`] | master-file parsing, zone checks, the name index for lookups |
//! | [`geo`] | locating a client: ECS or source, overrides, GeoIP database, site |
//! | [`policy`] | balanced names and the seven steering policies |
//! | [`health`] | endpoint health state, read lock-free by the query path |
//! | [`snapshot`] | everything a query needs, swapped atomically |
//! | [`answer`] | `respond`: fast path else reference, the reply and its outcome; counting it; the query log's tap |
//! | [`dns`] | query bytes → response bytes, independent of transport |
//! | [`edns`] | what both paths decide alike: size limit, client (ECS or source), pick, ECS scope |
//! | [`dnssec`] | keys, RRSIGs and their cache, compact denial, each signed zone's state in a snapshot |
//! | [`fast`] | the UDP fast path for the common queries, byte to byte |
//! | [`server`] | UDP and TCP listeners |
//! | [`explain`] | `meridian explain`: an answer and the decision behind it |
//! | [`querylog`] | query logging: lines or dnstap, off the query path through a bounded queue |
//! | [`metrics`] | the Prometheus exposition of every counter (the counters: [`base::counters`], zones, services) |
//! | [`ecs`] | EDNS Client Subnet in queries: the one validation (RFC 7871 §6) both answering paths use |
//! | [`rrl`] | response rate limiting of UDP responses: a fixed table of atomic token buckets |
//! | [`secondary`] | zones from a primary: AXFR/IXFR in, NOTIFY, TSIG, the copy in `state_dir` |
//! | [`reload`] | SIGHUP / API reloads: rebuild off the query path, swap, record the result |
//! | [`admin`] | the admin HTTP API: status, metrics, drain, reload |
//! | [`anycast`] | BGP announce/withdraw of the site's prefixes by self-check (BIRD, ExaBGP) |
//! | [`status`] | the typed `/status` document, built by [`admin`] and read by [`ctl`] |
//! | [`status_page`] | `GET /`: the status page for people, self-contained |
//! | [`history`] | recent events and last-minute answer shares for `/status` and the page |
//! | [`fleet`] | `[fleet]`: verdicts, probe shares and drains shared between sites through etcd |
//! | [`cli`] | the `meridian` command line |
//! | [`ctl`] | `status`, `drain`, `undrain`, `reload`, `explain --live`: the admin API from the shell |
//! | [`manpage`] | `meridian man`: the man pages, from the clap definitions |
//! | [`base::liveness`] | listener heartbeats, for the watchdog |
//! | [`systemd`] | sd_notify readiness, reload, stop and the watchdog thread |
//!
//! Modules are crate-private (`pub(crate)`) unless a test, bench or fuzz target (`fuzz/`)
//! needs them; `cli` is public for the binary (`main.rs`).

pub mod admin;
pub mod answer;
pub mod anycast;
pub(crate) mod base;
pub mod cli;
pub mod config;
pub mod cookie;
pub(crate) mod ctl;
pub mod dns;
pub mod dnssec;
pub mod ecs;
pub mod edns;
pub mod explain;
pub mod fast;
pub(crate) mod fleet;
pub mod geo;
pub mod health;
pub(crate) mod history;
pub(crate) mod manpage;
pub mod metrics;
pub(crate) mod policy;
pub mod prober;
pub mod querylog;
pub mod reload;
pub(crate) mod rrl;
pub mod secondary;
pub mod server;
pub(crate) mod simulate;
pub mod snapshot;
pub mod status;
pub(crate) mod status_page;
pub(crate) mod systemd;
pub mod zone;
