//! The request handler: query bytes in, response bytes out. It knows nothing of sockets, so UDP,
//! TCP, tests and benchmarks all call the same function, and a faster transport can replace
//! the current one without touching answer logic.
//!
//! Flow: header checks → parse → EDNS (version, payload, NSID, cookie, ECS) → class (IN / CHAOS) →
//! zone lookup with CNAME chasing → sections → encode, truncating to the client's limit.

use std::net::SocketAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption, NSIDPayload};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::base::net::mask;
use crate::geo::AddrSource;
use crate::metrics;
use crate::policy::{self, Client, Family, Service, Trace};
use crate::snapshot::Snapshot;
use crate::zone::{wire_lower, Found, Node, Zone};

/// What the request handler learnt about one query, recorded once when its response is made
/// (`metrics::record_query`, which hands it to the query log). It lives on the answer floor,
/// which makes it, so the floors above read it without reaching for each other.
#[derive(Debug, Default)]
pub struct QueryOutcome<'a> {
    /// The zone the query name fell in; `None` outside every zone.
    pub zone: Option<&'a crate::zone::stats::ZoneStats>,
    pub qtype: Option<RecordType>,
    /// The balanced name whose policy computed the answer, if one did.
    pub service: Option<&'a Service>,
    /// Indices of the endpoints answered.
    pub picks: crate::policy::Picks,
    /// Every endpoint of the family was down (`when_all_down` applied).
    pub all_down: bool,
    /// The query came over TCP (the `transport` label); UDP otherwise.
    pub tcp: bool,
}

/// How the query arrived; it decides the response size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Longest CNAME chain followed inside our zones before answering with what we have.
const MAX_CNAME_CHAIN: usize = 12;
/// Size limit without EDNS (RFC 1035 §4.2.1).
const PLAIN_UDP_LIMIT: usize = 512;

/// Answers one query. `None` means send nothing: the packet had no readable header or was
/// itself a response (answering those would let two servers reflect packets at each other).
pub fn handle(
    snap: &Snapshot,
    packet: &[u8],
    src: SocketAddr,
    transport: Transport,
) -> Option<Vec<u8>> {
    handle_counted(snap, packet, src, transport, None, true)
}

/// [`handle`], recording in `trace` how a balanced name was decided (for `explain`). An
/// explanation is not a served query: it leaves the query and answer counters of the metrics
/// (and the query log) alone, so that `/api/v1/explain` cannot skew them.
pub fn handle_traced(
    snap: &Snapshot,
    packet: &[u8],
    src: SocketAddr,
    transport: Transport,
    trace: Option<&mut Trace>,
) -> Option<Vec<u8>> {
    handle_counted(snap, packet, src, transport, trace, false)
}

fn handle_counted(
    snap: &Snapshot,
    packet: &[u8],
    src: SocketAddr,
    transport: Transport,
    trace: Option<&mut Trace>,
    count: bool,
) -> Option<Vec<u8>> {
    let mut outcome = QueryOutcome {
        tcp: transport == Transport::Tcp,
        ..QueryOutcome::default()
    };
    let Some((bytes, rcode)) = respond(snap, packet, src, transport, trace, &mut outcome) else {
        // Nothing to send: a packet without a whole header is a malformed query; one with QR
        // set is a response sent to us, not a query at all, and an empty one is how a stopping
        // server wakes its own UDP threads.
        if count && !packet.is_empty() && packet.len() < 12 {
            metrics::record_malformed(outcome.tcp);
        }
        return None;
    };
    // The one place every response passes: count it.
    if count {
        metrics::record_query(&outcome, rcode);
    }
    bytes
}

/// A response (or `None` if encoding failed) and its response code, for the metrics; `None`
/// when nothing is to be sent.
type Reply = Option<(Option<Vec<u8>>, ResponseCode)>;

fn done(resp: Message, limit: usize, glue_needed: bool) -> Reply {
    let rcode = resp.metadata.response_code;
    Some((encode(resp, limit, glue_needed), rcode))
}

fn respond<'s>(
    snap: &'s Snapshot,
    packet: &[u8],
    src: SocketAddr,
    transport: Transport,
    trace: Option<&mut Trace>,
    outcome: &mut QueryOutcome<'s>,
) -> Reply {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return None;
    }
    let req = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(_) => {
            let rcode = ResponseCode::FormErr;
            return Some((Some(header_only_error(packet, rcode)), rcode));
        }
    };
    if let [q] = &req.queries[..] {
        outcome.qtype = Some(q.query_type());
    }
    let mut resp = Message::new(req.metadata.id, MessageType::Response, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    // CD stays clear: nothing here is signed, and RFC 4035 §3.1.6 leaves CD to resolvers.
    resp.add_queries(req.queries.iter().cloned());

    let limit = match (transport, &req.edns) {
        (Transport::Tcp, _) => u16::MAX as usize,
        (Transport::Udp, None) => PLAIN_UDP_LIMIT,
        (Transport::Udp, Some(e)) => {
            (e.max_payload().max(512)).min(snap.wire.max_udp_payload) as usize
        }
    };

    if let Some(req_edns) = &req.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(snap.wire.max_udp_payload);
        edns.set_version(0);
        edns.set_dnssec_ok(req_edns.flags().dnssec_ok);
        if req_edns.version() > 0 {
            // RFC 6891 §6.1.3: answer BADVERS with the highest version we support, keeping
            // the question so that resolvers can match the reply to what they asked.
            resp.set_edns(edns);
            resp.metadata.response_code = ResponseCode::BADVERS;
            return done(resp, limit, false);
        }
        // RFC 7871 §6, checked on the bytes with the fast path's own check (crate::ecs):
        // hickory reads ECS leniently (extra address bytes, bits past the prefix, a scope).
        if crate::ecs::check_query(packet).is_err() {
            resp.set_edns(edns);
            resp.metadata.response_code = ResponseCode::FormErr;
            return done(resp, limit, false);
        }
        if tcp_keepalive(snap, req_edns, transport, &mut edns).is_err() {
            resp.set_edns(edns);
            resp.metadata.response_code = ResponseCode::FormErr;
            return done(resp, limit, false);
        }
        if req_edns.option(EdnsCode::NSID).is_some() {
            if let Some(id) = &snap.wire.site_id {
                if let Ok(p) = NSIDPayload::new(id.as_bytes().to_vec()) {
                    edns.options_mut().insert(EdnsOption::NSID(p));
                }
            }
        }
        // DNS Cookies (crate::cookie): the client cookie back with a server cookie; a
        // malformed COOKIE option is FORMERR (RFC 7873 §5.2.2).
        match crate::cookie::edns_reply(&snap.cookie_secret, req_edns, src.ip()) {
            Ok(Some(cookie)) => edns.options_mut().insert(cookie),
            Ok(None) => {}
            Err(()) => {
                resp.set_edns(edns);
                resp.metadata.response_code = ResponseCode::FormErr;
                return done(resp, limit, false);
            }
        }
        resp.set_edns(edns);
    }
    let ecs = match req.edns.as_ref().and_then(|e| e.option(EdnsCode::Subnet)) {
        Some(EdnsOption::Subnet(ecs)) => Some(*ecs),
        _ => None,
    };
    // RFC 7871: the client subnet stands for the client when it says anything (source > 0).
    let client = match &ecs {
        Some(e) if e.source_prefix() > 0 => (
            mask(e.addr(), e.source_prefix()),
            AddrSource::Ecs(e.source_prefix()),
        ),
        _ => (src.ip(), AddrSource::SourceIp),
    };

    if req.metadata.op_code == OpCode::Notify && !snap.config.config.secondary.is_empty() {
        // RFC 1996: from a listed primary of a secondary zone, wake its refresh; else REFUSED.
        // A server with no secondary zones keeps answering NOTIFY with NOTIMP, as before.
        let ok = matches!(&req.queries[..], [q] if q.query_type() == RecordType::SOA
            && (snap.notify)(&snap.config, q.name(), src.ip()));
        resp.metadata.authoritative = ok;
        resp.metadata.response_code = if ok {
            ResponseCode::NoError
        } else {
            ResponseCode::Refused
        };
        return done(resp, limit, false);
    }
    if req.metadata.op_code != OpCode::Query {
        resp.metadata.response_code = ResponseCode::NotImp;
        extended_error(&mut resp, EDE_NOT_SUPPORTED);
        return done(resp, limit, false);
    }
    if req.queries.len() != 1 {
        resp.metadata.response_code = ResponseCode::FormErr;
        return done(resp, limit, false);
    }
    let query = &req.queries[0];
    match query.query_class() {
        DNSClass::IN => {}
        DNSClass::CH => {
            chaos(snap, query, &mut resp);
            return done(resp, limit, false);
        }
        _ => {
            resp.metadata.response_code = ResponseCode::Refused;
            extended_error(&mut resp, EDE_NOT_AUTHORITATIVE);
            return done(resp, limit, false);
        }
    }
    match query.query_type() {
        RecordType::OPT => {
            resp.metadata.response_code = ResponseCode::FormErr;
            return done(resp, limit, false);
        }
        RecordType::AXFR | RecordType::IXFR => {
            // Zone transfers are not offered; say so rather than pretend the zone is empty.
            resp.metadata.response_code = ResponseCode::Refused;
            extended_error(&mut resp, EDE_PROHIBITED);
            return done(resp, limit, false);
        }
        _ => {}
    }

    let mut client = Client::new(client.0, client.1, &snap.locator);
    let mut scope = 0u8;
    let glue_needed = answer(
        snap,
        query,
        &mut client,
        &mut scope,
        &mut resp,
        trace,
        outcome,
    );
    if let (Some(mut echo), Some(edns)) = (ecs, resp.edns.as_mut()) {
        // The scope the answer depended on, never more specific than the client asked
        // (RFC 7871 §7.2.1); static answers say 0: valid for every client. Policies measure
        // it on the IPv4 address inside a 6to4 or IPv4-mapped one; state it in the client's.
        let scope = crate::geo::prefix_in(client.addr, scope);
        echo.set_scope_prefix(scope.min(echo.source_prefix()));
        edns.options_mut().insert(EdnsOption::Subnet(echo));
    }
    done(resp, limit, glue_needed)
}

/// edns-tcp-keepalive (RFC 7828): over TCP a query carrying the option gets it back with the
/// idle timeout the server keeps to, in units of 100 ms (§3.3.2); over UDP the option is
/// ignored and never sent (§3.2.1, §3.3.2). A client must send it empty: one that carries a
/// TIMEOUT over TCP is malformed (§3.2.1), which `Err` reports for a FORMERR.
fn tcp_keepalive(
    snap: &Snapshot,
    req: &Edns,
    transport: Transport,
    resp: &mut Edns,
) -> Result<(), ()> {
    if transport != Transport::Tcp {
        return Ok(());
    }
    match req.option(EdnsCode::Keepalive) {
        None => Ok(()),
        Some(EdnsOption::Unknown(_, data)) if data.is_empty() => {
            let units = (snap.tcp_idle_timeout().as_millis() / 100).min(u16::MAX as u128) as u16;
            resp.options_mut().insert(EdnsOption::Unknown(
                u16::from(EdnsCode::Keepalive),
                units.to_be_bytes().to_vec(),
            ));
            Ok(())
        }
        Some(_) => Err(()),
    }
}

/// Fills the response for an IN query. Returns true when the additional section holds glue that
/// a referral cannot do without (RFC 9471), so truncation must set TC rather than drop it.
fn answer<'s>(
    snap: &'s Snapshot,
    query: &Query,
    client: &mut Client<'_>,
    scope: &mut u8,
    resp: &mut Message,
    mut trace: Option<&mut Trace>,
    outcome: &mut QueryOutcome<'s>,
) -> bool {
    let qtype = query.query_type();
    let (mut wire, mut starts) = (Vec::with_capacity(64), Vec::with_capacity(8));
    wire_lower(query.name(), &mut wire, &mut starts);
    // A zone whose file failed to load: its data exists but we lost it (SPEC "Day two").
    if snap.zones.failing(&wire, &starts) {
        servfail(resp);
        return false;
    }
    let Some(zone) = snap.zones.find_for(&wire, &starts, qtype == RecordType::DS) else {
        resp.metadata.response_code = ResponseCode::Refused;
        extended_error(resp, EDE_NOT_AUTHORITATIVE);
        return false;
    };
    outcome.zone = Some(&zone.stats);
    if zone.expired {
        // A secondary zone past its SOA expire (RFC 1035 §4.3.5): no longer authoritative.
        servfail(resp);
        return false;
    }
    resp.metadata.authoritative = true;

    // The owner of answer records is spelled as the client spelled the question (0x20).
    let mut owner: Name = query.name().clone();
    for _hop in 0..MAX_CNAME_CHAIN {
        match zone.find(&wire, &starts, qtype == RecordType::DS) {
            Found::Delegation(cut_key, cut) => {
                // Also after a CNAME that led below a cut: RFC 1034 §4.3.2 step 3b goes on
                // with the referral, and the CNAME keeps the answer authoritative.
                return referral(zone, cut_key, cut, resp);
            }
            Found::NxDomain => {
                resp.metadata.response_code = ResponseCode::NXDomain;
                negative(zone, &owner, resp);
                return false;
            }
            Found::Node(node) | Found::Wildcard(node) => {
                if let Some(svc) = snap.service_of(node).filter(|s| s.targets) {
                    let target = target_cname(
                        snap,
                        svc,
                        &owner,
                        client,
                        scope,
                        resp,
                        trace.as_deref_mut(),
                        outcome,
                    );
                    // Chased as any in-zone CNAME (below), unless the CNAME itself was asked.
                    match target {
                        Some(t)
                            if qtype != RecordType::CNAME
                                && qtype != RecordType::ANY
                                && zone.contains(&t)
                                && !resp.answers.iter().any(|r| r.name == t) =>
                        {
                            owner = t;
                            wire_lower(&owner, &mut wire, &mut starts);
                            continue;
                        }
                        _ => return false,
                    }
                }
                if let Some(svc) = snap.service_of(node) {
                    balanced(
                        snap,
                        svc,
                        node,
                        qtype,
                        &owner,
                        client,
                        scope,
                        resp,
                        trace.as_deref_mut(),
                        outcome,
                    );
                    return false;
                }
                if node.rrsets.is_empty() {
                    negative(zone, &owner, resp);
                    return false;
                }
                if let Some(cname) = node.rrset(RecordType::CNAME) {
                    if qtype != RecordType::CNAME && qtype != RecordType::ANY {
                        let target = match cname.rdata_values().next() {
                            Some(RData::CNAME(t)) => t.0,
                            _ => return false,
                        };
                        push_rrset(&mut resp.answers, cname, &owner);
                        // Out of the zone, or a loop back to a name already answered: stop
                        // here rather than repeat records until the hop limit.
                        if !zone.contains(&target) || resp.answers.iter().any(|r| r.name == target)
                        {
                            return false;
                        }
                        owner = target;
                        wire_lower(&owner, &mut wire, &mut starts);
                        continue;
                    }
                }
                let set = if qtype == RecordType::ANY {
                    // RFC 8482: one RRset stands for all of them.
                    node.rrsets.iter().find(|r| r.rtype != RecordType::RRSIG)
                } else {
                    node.rrset(qtype)
                };
                match set {
                    Some(set) => {
                        push_rrset(&mut resp.answers, set, &owner);
                        additional_for(zone, set, &mut resp.additionals);
                    }
                    None => negative(zone, &owner, resp),
                }
                return false;
            }
        }
    }
    false
}

/// Answers at a balanced name: A/AAAA (and ANY) from the policy, other types from the zone.
#[allow(clippy::too_many_arguments)]
fn balanced<'s>(
    snap: &Snapshot,
    svc: &'s Service,
    node: &Node,
    qtype: RecordType,
    owner: &Name,
    client: &mut Client<'_>,
    scope: &mut u8,
    resp: &mut Message,
    mut trace: Option<&mut Trace>,
    outcome: &mut QueryOutcome<'s>,
) {
    let family = match qtype {
        RecordType::A => Some(Family::V4),
        RecordType::AAAA => Some(Family::V6),
        RecordType::ANY => Some(if svc.endpoints.iter().any(|e| e.addr.is_ipv4()) {
            Family::V4
        } else {
            Family::V6
        }),
        _ => None,
    };
    let Some(family) = family else {
        match node.rrset(qtype) {
            Some(set) => push_rrset(&mut resp.answers, set, owner),
            None => negative_for(snap, owner, resp),
        }
        return;
    };
    let sel = policy::select(svc, &snap.regions, family, client, trace.as_deref_mut());
    *scope = (*scope).max(sel.scope);
    outcome.service = Some(svc);
    outcome.all_down = sel.all_down;
    if let Some(t) = trace {
        t.service = Some(svc.name.clone());
        t.client = client.located().cloned();
        t.picks = sel.picks.clone();
        t.scope = sel.scope;
    }
    if sel.servfail {
        servfail(resp);
        return;
    }
    if sel.picks.is_empty() {
        negative_for(snap, owner, resp);
        return;
    }
    let ttl = svc.answer_ttl(&sel);
    for &i in &sel.picks {
        let rdata = match svc.endpoints[i].addr {
            std::net::IpAddr::V4(a) => RData::A(a.into()),
            std::net::IpAddr::V6(a) => RData::AAAA(a.into()),
        };
        resp.answers
            .push(Record::from_rdata(owner.clone(), ttl, rdata));
    }
    outcome.picks = sel.picks;
}

/// Answers at a balanced name of `target` endpoints: one CNAME to the chosen target, for every
/// query type. Returns the target, for the caller to chase inside the zone.
#[allow(clippy::too_many_arguments)]
fn target_cname<'s>(
    snap: &Snapshot,
    svc: &'s Service,
    owner: &Name,
    client: &mut Client<'_>,
    scope: &mut u8,
    resp: &mut Message,
    mut trace: Option<&mut Trace>,
    outcome: &mut QueryOutcome<'s>,
) -> Option<Name> {
    let sel = policy::select(
        svc,
        &snap.regions,
        Family::Any,
        client,
        trace.as_deref_mut(),
    );
    *scope = (*scope).max(sel.scope);
    outcome.service = Some(svc);
    outcome.all_down = sel.all_down;
    // One CNAME: `max_answers` does not apply (an alias has a single target).
    let first = sel.picks.first().copied();
    if let Some(t) = trace {
        t.service = Some(svc.name.clone());
        t.client = client.located().cloned();
        t.picks = first.into_iter().collect();
        t.scope = sel.scope;
    }
    if sel.servfail {
        servfail(resp);
        return None;
    }
    let Some(first) = first else {
        negative_for(snap, owner, resp);
        return None;
    };
    let target = svc.endpoints[first].target.clone()?;
    outcome.picks = std::iter::once(first).collect();
    resp.answers.push(Record::from_rdata(
        owner.clone(),
        svc.answer_ttl(&sel),
        RData::CNAME(hickory_proto::rr::rdata::CNAME(target.clone())),
    ));
    Some(target)
}

/// `when_all_down = "servfail"` with every endpoint down: SERVFAIL, so that resolvers try the
/// next nameserver of the zone (another provider's). Not authoritative: there is no data.
fn servfail(resp: &mut Message) {
    resp.metadata.response_code = ResponseCode::ServFail;
    resp.metadata.authoritative = false;
}

fn negative_for(snap: &Snapshot, name: &Name, resp: &mut Message) {
    if let Some(zone) = snap.zones.find_name(name) {
        negative(zone, name, resp);
    }
}

/// The reference path decodes the RRset's records from their wire form: the slow path by
/// design (the fast path copies the wire form itself).
fn push_rrset(out: &mut Vec<Record>, set: &crate::zone::RRset, owner: &Name) {
    out.extend(set.records(owner));
}

/// NODATA / NXDOMAIN for `name`: the SOA in authority with the negative TTL of RFC 2308 §5.
/// Its owner is the apex as `name` spells it, so that it compresses to a pointer into the
/// question whatever case the client used (0x20), as the fast path writes it.
fn negative(zone: &Zone, name: &Name, resp: &mut Message) {
    let mut soa = zone.soa.clone();
    if let RData::SOA(s) = &soa.data {
        soa.ttl = soa.ttl.min(s.minimum);
    }
    if zone.origin.zone_of(name) {
        soa.name = name.trim_to(zone.origin.num_labels() as usize);
    }
    resp.authorities.push(soa);
}

/// Extended DNS Error codes (RFC 8914 §4) used here.
const EDE_PROHIBITED: u16 = 18;
const EDE_NOT_AUTHORITATIVE: u16 = 20;
const EDE_NOT_SUPPORTED: u16 = 21;
/// The EDNS option code of Extended DNS Errors, which hickory 0.26 does not name.
const EDNS_EDE: u16 = 15;

/// Adds an Extended DNS Error (RFC 8914) to a response whose client speaks EDNS.
fn extended_error(resp: &mut Message, code: u16) {
    if let Some(edns) = resp.edns.as_mut() {
        let option = EdnsOption::Unknown(EDNS_EDE, code.to_be_bytes().to_vec());
        edns.options_mut().insert(option);
    }
}

/// A referral to a delegated child: NS in authority, glue in additional.
fn referral(zone: &Zone, cut_key: &[u8], cut: &Node, resp: &mut Message) -> bool {
    // A CNAME already in the answer is ours, and keeps AA set (as Knot and BIND do).
    resp.metadata.authoritative = !resp.answers.is_empty();
    let (Some(ns), Some(cut_name)) = (cut.rrset(RecordType::NS), crate::zone::key_name(cut_key))
    else {
        return false;
    };
    resp.authorities.extend(ns.records(&cut_name));
    let before = resp.additionals.len();
    additional_for(zone, ns, &mut resp.additionals);
    resp.additionals.len() > before
}

/// Addresses of the names that NS, MX and SRV records point at, when this zone holds them.
fn additional_for(zone: &Zone, set: &crate::zone::RRset, out: &mut Vec<Record>) {
    if !matches!(set.rtype, RecordType::NS | RecordType::MX | RecordType::SRV) {
        return;
    }
    for data in set.rdata_values() {
        let target = match &data {
            RData::NS(n) => &n.0,
            RData::MX(mx) => &mx.exchange,
            RData::SRV(srv) => &srv.target,
            _ => continue,
        };
        if !zone.contains(target) {
            continue;
        }
        if let Some(node) = zone.node(target) {
            for t in [RecordType::A, RecordType::AAAA] {
                if let Some(addrs) = node.rrset(t) {
                    for a in addrs.records(target) {
                        if !out.contains(&a) {
                            out.push(a);
                        }
                    }
                }
            }
        }
    }
}

/// CHAOS class: the server's identity (RFC 4892) and version.
fn chaos(snap: &Snapshot, query: &Query, resp: &mut Message) {
    let name = query.name().to_lowercase().to_ascii();
    let qtype = query.query_type();
    let text = match name.trim_end_matches('.') {
        "id.server" | "hostname.bind" => snap.wire.site_id.clone(),
        "version.server" | "version.bind" => {
            Some(format!("meridian {}", env!("CARGO_PKG_VERSION")))
        }
        _ => None,
    };
    let Some(text) = text else {
        resp.metadata.response_code = ResponseCode::Refused;
        extended_error(resp, EDE_NOT_AUTHORITATIVE);
        return;
    };
    resp.metadata.authoritative = true;
    if qtype == RecordType::TXT || qtype == RecordType::ANY {
        let mut r = Record::from_rdata(query.name().clone(), 0, RData::TXT(TXT::new(vec![text])));
        r.dns_class = DNSClass::CH;
        resp.answers.push(r);
    }
}

/// Encodes the response within `limit` bytes. Optional additional records are dropped first;
/// when the answer itself does not fit, TC is set and the sections are emptied so the client
/// retries over TCP (RFC 2181 §9, RFC 7766).
fn encode(mut resp: Message, limit: usize, glue_needed: bool) -> Option<Vec<u8>> {
    let full = resp.to_vec().ok()?;
    if full.len() <= limit {
        return Some(full);
    }
    if !resp.additionals.is_empty() {
        resp.additionals.clear();
        if glue_needed {
            resp.metadata.truncation = true;
        }
        if let Ok(b) = resp.to_vec() {
            if b.len() <= limit {
                return Some(b);
            }
        }
    }
    resp.answers.clear();
    resp.authorities.clear();
    resp.additionals.clear();
    resp.metadata.truncation = true;
    let b = resp.to_vec().ok()?;
    if b.len() <= limit {
        return Some(b);
    }
    // Even the question and OPT do not fit (a 512-byte limit and a huge OPT cannot happen, but
    // a header alone always fits).
    resp.queries.clear();
    resp.edns = None;
    resp.to_vec().ok()
}

/// A response made of the request's header alone, for requests that could not be parsed.
fn header_only_error(packet: &[u8], rcode: ResponseCode) -> Vec<u8> {
    let mut out = vec![0u8; 12];
    out[0] = packet[0];
    out[1] = packet[1];
    // QR=1, opcode copied, RD copied; AA/TC clear.
    out[2] = 0x80 | (packet[2] & 0x79);
    out[3] = (u16::from(rcode) & 0x0f) as u8;
    out
}
