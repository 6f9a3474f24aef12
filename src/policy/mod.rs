//! Balanced names and the steering policies that answer them.
//!
//! Following pingora-load-balancing's split, a policy only puts the *eligible* endpoints (the
//! address family asked for, healthy and not drained) in order of preference; health, drain,
//! "next nearest takes over" and `when_all_down` live once, in [`select`], not in every policy.
//! Each policy is one small file with one `rank` function.

pub mod drains;
mod failover;
mod geo;
mod hash;
mod index;
mod latency;
mod least_loaded;
mod round_robin;
pub mod spill;
mod stats;
pub mod tier;
mod weighted;

pub use stats::ServiceStats;

use std::net::IpAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use hickory_proto::rr::Name;

use crate::geo::{AddrSource, ClientLocation, Coords, Locator};
use crate::health::EndpointState;

/// Endpoint indices; on the stack for services of up to 8 endpoints (no allocation per query).
pub type Picks = smallvec::SmallVec<[usize; 8]>;

/// In the order of [`crate::config::POLICIES`]: metrics index their labels by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    RoundRobin,
    Weighted,
    Geo,
    Failover,
    Hash,
    Latency,
    LeastLoaded,
}

impl PolicyKind {
    pub fn parse(s: &str) -> Option<PolicyKind> {
        Some(match s {
            "round-robin" => PolicyKind::RoundRobin,
            "weighted" => PolicyKind::Weighted,
            "geo" => PolicyKind::Geo,
            "failover" => PolicyKind::Failover,
            "hash" => PolicyKind::Hash,
            "latency" => PolicyKind::Latency,
            "least-loaded" => PolicyKind::LeastLoaded,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::RoundRobin => "round-robin",
            PolicyKind::Weighted => "weighted",
            PolicyKind::Geo => "geo",
            PolicyKind::Failover => "failover",
            PolicyKind::Hash => "hash",
            PolicyKind::Latency => "latency",
            PolicyKind::LeastLoaded => "least-loaded",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Region {
    pub name: String,
    pub location: Option<Coords>,
    pub countries: Vec<[u8; 2]>,
    pub continents: Vec<[u8; 2]>,
    /// `bias` (−99…99): distances to the region count × (1 − bias/100).
    pub bias: f64,
}

impl Region {
    /// What a geo distance to this region counts as, after its `bias`.
    pub fn biased(&self, km: f64) -> f64 {
        if self.bias == 0.0 {
            km
        } else {
            km * (1.0 - self.bias / 100.0)
        }
    }
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The answered address; for a `target` endpoint a stand-in that is never answered (an
    /// address of the RFC 6666 discard prefix 100::/64 derived from the name), so that health
    /// state, metrics and hashing keep one key type.
    pub addr: IpAddr,
    /// `target`: the name answered as a CNAME (fully qualified, lower case).
    pub target: Option<Name>,
    /// Index into the snapshot's regions.
    pub region: Option<usize>,
    pub weight: f64,
    /// What the endpoint can take (`capacity`, default its weight), for `spill = "capacity"`.
    pub capacity: f64,
    pub priority: u32,
    /// Probe target (the `check` URL, or derived from the profile).
    pub probe: String,
    /// The health profile that probes it: its pool's, or its service's for an inline
    /// endpoint; `None` = never probed.
    pub health: Option<String>,
    /// The `[pool.NAME]` it comes from; `None` when inline.
    pub pool: Option<String>,
    pub state: Arc<EndpointState>,
}

impl Endpoint {
    /// How the endpoint is named to people (metrics labels, status): its target or address.
    pub fn label(&self) -> String {
        match &self.target {
            Some(t) => t.to_ascii().trim_end_matches('.').to_string(),
            None => self.addr.to_string(),
        }
    }

    /// The stand-in address of a `target` endpoint (see [`Endpoint::addr`]): stable across
    /// restarts and sites, so that `hash` keeps each client on its target.
    pub fn target_addr(target: &Name) -> IpAddr {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325; // FNV-1a
        for b in target.to_ascii().to_ascii_lowercase().bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        IpAddr::V6(std::net::Ipv6Addr::from((0x0100u128 << 112) | h as u128))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenAllDown {
    ServeAll,
    Empty,
    /// SERVFAIL: resolvers try the next nameserver, e.g. another DNS provider's.
    Servfail,
}

#[derive(Debug)]
pub struct Service {
    pub name: Name,
    pub policy: PolicyKind,
    pub ttl: u32,
    /// TTL of answers given around a failure ([`Selection::degraded`]); `ttl` unless
    /// `ttl_degraded` is set, so that resolvers come back soon after the endpoint recovers.
    pub ttl_degraded: u32,
    pub max_answers: usize,
    pub when_all_down: WhenAllDown,
    pub health: Option<String>,
    pub endpoints: Vec<Endpoint>,
    /// Endpoints are `target`s: every query type at the name is answered with a CNAME.
    pub targets: bool,
    /// Where a geo region's clients go when it cannot answer (`spill`).
    pub spill: spill::Spill,
    /// Some endpoint has a partial drain ([`drains`]): who is up then depends on the client's
    /// network, so [`select`] looks at each endpoint's share; set by the drain rules.
    pub(crate) partial: std::sync::atomic::AtomicBool,
    /// Answer counters per endpoint, for metrics.
    pub stats: ServiceStats,
    rr_next: AtomicUsize,
    /// The endpoints grouped for the policies, built with the service.
    index: index::Index,
    /// `[[service.tier]]`s and `fallback`: `None` for a service of one policy (the common
    /// case pays one branch for them in [`select`]).
    pub tiers: Option<Box<tier::Tiers>>,
}

impl Service {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: Name,
        policy: PolicyKind,
        ttl: u32,
        max_answers: usize,
        when_all_down: WhenAllDown,
        health: Option<String>,
        endpoints: Vec<Endpoint>,
    ) -> Service {
        let stats = ServiceStats::new(&name, endpoints.iter().map(|e| e.addr));
        Service {
            name,
            policy,
            ttl,
            ttl_degraded: ttl,
            max_answers,
            when_all_down,
            health,
            targets: endpoints.first().is_some_and(|e| e.target.is_some()),
            spill: spill::Spill::Nearest,
            partial: std::sync::atomic::AtomicBool::new(false),
            index: index::Index::new(&endpoints),
            endpoints,
            stats,
            rr_next: AtomicUsize::new(0),
            tiers: None,
        }
    }
}

impl Service {
    /// The TTL of an answer made from `sel`.
    pub fn answer_ttl(&self, sel: &Selection) -> u32 {
        if sel.degraded {
            self.ttl_degraded
        } else {
            self.ttl
        }
    }
}

/// Which address family a query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
    /// Every endpoint: the query is answered with a name (`target` endpoints), whatever its type.
    Any,
}

impl Family {
    pub fn matches(self, ip: &IpAddr) -> bool {
        matches!(
            (self, ip),
            (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_)) | (Family::Any, _)
        )
    }
}

/// The client as the query presents it; its location is looked up only if a policy asks.
pub struct Client<'a> {
    pub addr: IpAddr,
    pub source: AddrSource,
    pub locator: &'a Locator,
    located: Option<ClientLocation>,
}

impl<'a> Client<'a> {
    pub fn new(addr: IpAddr, source: AddrSource, locator: &'a Locator) -> Client<'a> {
        Client {
            addr,
            source,
            locator,
            located: None,
        }
    }
    pub fn location(&mut self) -> &ClientLocation {
        let (addr, source, locator) = (self.addr, self.source, self.locator);
        self.located
            .get_or_insert_with(|| locator.locate(addr, source))
    }
    pub fn located(&self) -> Option<&ClientLocation> {
        self.located.as_ref()
    }
}

/// Why an endpoint was or was not picked, for `explain`.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub notes: Vec<String>,
    /// Distance in km from the client, per endpoint index (geo only).
    pub distance_km: Vec<(usize, f64)>,
    /// Region chosen by geo, and why.
    pub chosen_region: Option<(usize, String)>,
    pub all_down: bool,
    /// Filled by the request handler: the balanced name that decided, where the client was
    /// placed, what was picked, and the ECS scope the answer depended on.
    pub service: Option<Name>,
    pub client: Option<ClientLocation>,
    pub picks: Picks,
    pub scope: u8,
    /// Endpoints the caller treats as down whatever their health (`explain --down`): [`select`]
    /// applies it to its `up`, so an explanation never writes into the health state.
    pub down: Down,
    /// A service with tiers: every tier tried, in order, and what became of it.
    pub tiers: Vec<tier::TierTrace>,
    /// No tier had enough: the service's `fallback` addresses answered.
    pub fallback: bool,
}

/// Endpoints taken as down for one traced query: by address, or every endpoint of a region.
#[derive(Debug, Clone, Default)]
pub struct Down {
    pub addrs: Vec<std::net::IpAddr>,
    /// Region indices (into the snapshot's regions).
    pub regions: Vec<usize>,
}

impl Down {
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty() && self.regions.is_empty()
    }

    /// Whether `e` is taken as down.
    pub fn covers(&self, e: &Endpoint) -> bool {
        self.addrs.contains(&e.addr) || e.region.is_some_and(|r| self.regions.contains(&r))
    }
}

/// The outcome of a selection.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Endpoint indices, best first, at most `max_answers`.
    pub picks: Picks,
    /// Prefix length of the client address the answer depended on (ECS scope, before capping
    /// at the query's source prefix).
    pub scope: u8,
    /// Every endpoint of the family was down (`when_all_down` applied).
    pub all_down: bool,
    /// The answer goes around a failure: an endpoint the policy would have preferred for this
    /// client is down or drained, or all are. Answered with `ttl_degraded`.
    pub degraded: bool,
    /// All down with `when_all_down = "servfail"`: the response is SERVFAIL.
    pub servfail: bool,
}

/// What policies see.
pub struct Ctx<'a, 'c> {
    pub svc: &'a Service,
    pub regions: &'a [Region],
    pub client: &'a mut Client<'c>,
    pub trace: Option<&'a mut Trace>,
    /// The endpoints of the family asked for.
    fam: &'a index::FamilyIndex,
    /// Whether an endpoint (of `fam`) may be picked.
    ok: &'a dyn Fn(usize) -> bool,
    /// Every member of `fam` passes `ok`: the precomputed groups are the eligible ones.
    all_ok: bool,
    /// How many members of `fam` pass `ok`.
    n_ok: usize,
    /// How many endpoints the answer holds (`max_answers`): policies rank only that many.
    k: usize,
    /// The groups' up-counts at the health epoch the selection started at.
    counts: Counts<'a>,
}

/// Who is up, for one selection: the live health state (a group's count read once per health
/// epoch), or under `explain --down` that state with the forced-down endpoints taken out.
#[derive(Clone, Copy)]
struct Counts<'a> {
    epoch: u64,
    endpoints: &'a [Endpoint],
    forced: Option<&'a Down>,
    /// The client network's [`spill::drain_unit`] when the service has a partial drain: an
    /// endpoint whose drain share is above it counts as drained for this client.
    drain_h: Option<f64>,
}

impl Counts<'_> {
    fn up(&self, i: usize) -> bool {
        let e = &self.endpoints[i];
        e.state.up()
            && !self.forced.is_some_and(|d| d.covers(e))
            && !self.drain_h.is_some_and(|h| h < e.state.drain_share())
    }

    /// How many members of `g` are up: one load of its cached count, unless forced or
    /// partially drained (then per client).
    fn n_up(&self, g: &index::Group) -> usize {
        match (self.forced, self.drain_h) {
            (None, None) => g.n_up(self.epoch, self.endpoints),
            _ => g.members.iter().filter(|&&i| self.up(i)).count(),
        }
    }
}

impl Ctx<'_, '_> {
    fn note(&mut self, f: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_deref_mut() {
            t.notes.push(f());
        }
    }

    /// Whether `g` has a member that may be picked: one load of its up-count, not a pass
    /// over its members.
    fn any_ok(&self, g: &index::Group) -> bool {
        !g.members.is_empty() && (self.all_ok || self.counts.n_up(g) > 0)
    }

    /// The eligible endpoints in index order (what a policy ranks); allocates, so only for
    /// the cases that need the list itself.
    fn eligible(&self) -> Picks {
        let ok = self.ok;
        self.fam
            .all
            .members
            .iter()
            .copied()
            .filter(|&i| ok(i))
            .collect()
    }

    /// Runs the service's policy: `out` gets up to `k` endpoints, best first.
    fn rank(&mut self, out: &mut Picks) -> u8 {
        match self.svc.policy {
            PolicyKind::RoundRobin => round_robin::rank(self, out),
            PolicyKind::Weighted => weighted::rank(self, out),
            PolicyKind::Geo => geo::rank(self, out),
            PolicyKind::Failover => failover::rank(self, out),
            PolicyKind::Hash => hash::rank(self, out),
            PolicyKind::Latency => latency::rank(self, out),
            PolicyKind::LeastLoaded => least_loaded::rank(self, out),
        }
    }
}

/// Picks the endpoints that answer a query for `family` at `svc`, by their live health
/// (healthy and not drained: [`EndpointState::up`]; `explain --down` and `simulate` mark
/// endpoints down in a private copy of the snapshot).
///
/// The cost does not grow with the number of endpoints: whether anything is down (the TTL
/// and the all-down rules depend on it) is a group's up-count, counted once per health epoch
/// ([`index::Group::n_up`]), and the groups policies choose among are built with the snapshot
/// ([`index`]), with weighted draws by binary search. What is still a pass over the family:
/// the policies that rank by a figure of every endpoint (hash, latency, least-loaded), and
/// round-robin while some endpoint is down (it lists the eligible ones).
pub fn select(
    svc: &Service,
    regions: &[Region],
    family: Family,
    client: &mut Client<'_>,
    trace: Option<&mut Trace>,
) -> Selection {
    if let Some(tiers) = &svc.tiers {
        return tier::select(svc, tiers, regions, family, client, trace);
    }
    select_in(svc, regions, family, client, trace, false)
}

impl Service {
    /// Marks whether some endpoint has a partial drain (who is up then depends on the
    /// client's network), on the service and on each of its tiers, which answer from clones
    /// of its endpoints.
    pub(crate) fn set_partial(&self, v: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        self.partial.store(v, Relaxed);
        for t in self.tiers.iter().flat_map(|t| t.list.iter()) {
            t.svc.partial.store(v, Relaxed);
        }
    }
}

/// [`select`] over the endpoints of `svc` alone (a service without tiers, or one tier);
/// `serve_all`: answer as if every endpoint were up (a tiered service's `when_all_down =
/// "serve-all"`, decided by its caller).
#[inline(always)]
fn select_in(
    svc: &Service,
    regions: &[Region],
    family: Family,
    client: &mut Client<'_>,
    mut trace: Option<&mut Trace>,
    serve_all: bool,
) -> Selection {
    let fam = svc.index.family(family);
    let family_count = fam.all.members.len();
    if family_count == 0 {
        return Selection::default();
    }
    // Read before any endpoint's flags (see `health::epoch`).
    let epoch = crate::health::epoch();
    // A traced query may take endpoints as down (`explain --down`): then up-counts are
    // counted here, not read from the groups (which hold the live state). An untraced query
    // pays one branch here and nothing per endpoint.
    let forced = trace
        .as_deref()
        .filter(|t| !t.down.is_empty())
        .map(|t| t.down.clone());
    // A partial drain makes who is up depend on the client's network (one hash, only for
    // services that have one).
    let drain_h = svc
        .partial
        .load(std::sync::atomic::Ordering::Relaxed)
        .then(|| spill::drain_unit(client.addr));
    let counts = Counts {
        epoch,
        endpoints: &svc.endpoints,
        forced: forced.as_ref(),
        drain_h,
    };
    if let (Some(h), Some(t)) = (drain_h, trace.as_deref_mut()) {
        partial_notes(svc, regions, fam, client.addr, h, t);
    }
    let is_up = |i: usize| counts.up(i);
    let n_up = counts.n_up(&fam.all);
    let mut all_down = false;
    if n_up == 0 || serve_all {
        if !serve_all && svc.when_all_down != WhenAllDown::ServeAll {
            let servfail = svc.when_all_down == WhenAllDown::Servfail;
            if let Some(t) = trace.as_deref_mut() {
                t.all_down = true;
                t.notes.push(if servfail {
                    "every endpoint is down; when_all_down = servfail: SERVFAIL".into()
                } else {
                    "every endpoint is down; when_all_down = empty: NODATA".into()
                });
            }
            return Selection {
                all_down: true,
                degraded: true,
                servfail,
                ..Selection::default()
            };
        }
        // Fail open (Route 53's behaviour): answer as if every endpoint were healthy.
        all_down = true;
        if let Some(t) = trace.as_deref_mut() {
            t.all_down = true;
            t.notes.push(if serve_all {
                "no tier can answer and there is no fallback; when_all_down = serve-all: the \
                 first tier answers as if all were up"
                    .into()
            } else {
                "every endpoint is down; when_all_down = serve-all: answering as if all were up"
                    .into()
            });
        }
    }
    // Only when something is down is it worth asking whether the client would have had it:
    // the healthy case pays one comparison.
    let degraded = all_down
        || (n_up < family_count && preferred_down(svc, regions, fam, client, counts, &is_up));
    if degraded {
        if let Some(t) = trace.as_deref_mut() {
            t.notes.push(format!(
                "an endpoint this client would have had is down or drained: ttl_degraded {}",
                svc.ttl_degraded
            ));
        }
    }
    let everyone = |_: usize| true;
    let all_ok = all_down || n_up == family_count;
    let ok: &dyn Fn(usize) -> bool = if all_ok { &everyone } else { &is_up };
    let mut ctx = Ctx {
        svc,
        regions,
        client,
        trace,
        fam,
        ok,
        all_ok,
        n_ok: if all_ok { family_count } else { n_up },
        k: svc.max_answers,
        counts,
    };
    let mut picks = Picks::new();
    let mut scope = ctx.rank(&mut picks);
    if drain_h.is_some() {
        // Which networks a partial drain moves is decided per /24 (/56).
        scope = scope.max(spill::network(ctx.client.addr).1);
    }
    picks.truncate(svc.max_answers);
    Selection {
        picks,
        scope,
        all_down,
        degraded,
        servfail: false,
    }
}

/// For `explain`: each partial drain of the family's endpoints, and whether it applies to this
/// client's network.
fn partial_notes(
    svc: &Service,
    regions: &[Region],
    fam: &index::FamilyIndex,
    addr: IpAddr,
    h: f64,
    t: &mut Trace,
) {
    let (_, prefix) = spill::network(addr);
    let net = crate::base::net::mask(crate::geo::canonical(addr), prefix);
    for &i in &fam.all.members {
        let e = &svc.endpoints[i];
        let share = e.state.drain_share();
        if share <= 0.0 {
            continue;
        }
        let region = e
            .region
            .and_then(|r| regions.get(r))
            .map(|r| format!(" ({})", r.name))
            .unwrap_or_default();
        let applies = if h < share {
            "applies: this client network is among the moved, the endpoint counts as drained"
        } else {
            "does not apply: this client network stays"
        };
        t.notes.push(format!(
            "partial drain: endpoint {}{region} drained {:.0} % of client networks; {applies} \
             ({net}/{prefix}, hash {h:.3})",
            e.label(),
            share * 100.0
        ));
    }
}

/// Whether an endpoint that the policy would have preferred for this client, were every
/// endpoint up, is down or drained now. The policy ranks the whole family as if all were up;
/// what counts as "preferred" follows what the ranking means: the chosen region for `geo`, the
/// lowest priority group for `failover`, the top `max_answers` for the deterministic
/// rankings (hash, latency, least-loaded), and every endpoint for the random ones
/// (round-robin, weighted), whose every endpoint has its turn. Groups answer from their
/// up-counts; only the deterministic rankings look at endpoints.
fn preferred_down(
    svc: &Service,
    regions: &[Region],
    fam: &index::FamilyIndex,
    client: &mut Client<'_>,
    counts: Counts<'_>,
    up: &dyn Fn(usize) -> bool,
) -> bool {
    let any_down = |g: &index::Group| counts.n_up(g) < g.members.len();
    let mut ctx = Ctx {
        svc,
        regions,
        client,
        trace: None,
        fam,
        ok: &|_| true,
        all_ok: true,
        n_ok: fam.all.members.len(),
        k: svc.max_answers,
        counts,
    };
    match svc.policy {
        PolicyKind::RoundRobin | PolicyKind::Weighted => any_down(&fam.all),
        PolicyKind::Geo => match geo::choose(&mut ctx) {
            Some((g, _)) => any_down(&fam.regions[g].1),
            None => any_down(&fam.all),
        },
        PolicyKind::Failover => fam.priorities.first().is_some_and(|(_, g)| any_down(g)),
        PolicyKind::Hash | PolicyKind::Latency | PolicyKind::LeastLoaded => {
            let mut all = Picks::new();
            ctx.rank(&mut all);
            all.iter().take(svc.max_answers).any(|&i| !up(i))
        }
    }
}

#[cfg(test)]
mod tests;
