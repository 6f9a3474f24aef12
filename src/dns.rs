//! The request handler: query bytes in, response bytes out. It knows nothing of sockets, so UDP,
//! TCP, tests and benchmarks all call the same function, and a faster transport can replace
//! the current one without touching answer logic.
//!
//! Flow: header checks → parse → EDNS (version, payload, NSID, cookie, ECS) → class (IN / CHAOS) →
//! zone lookup with CNAME chasing → sections → DNSSEC (a DO query: RRSIGs and compact denial
//! for a zone signed here, `sign_response`; the zone's own RRSIGs and NSECs for one that
//! arrived signed, `presigned_response`) → encode, truncating to the client's limit.

use std::net::SocketAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption, NSIDPayload};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::edns;
pub use crate::edns::Transport;
use crate::policy::{Client, Family, Service, Trace};
use crate::snapshot::Snapshot;
use crate::zone::{wire_lower, Found, Node, Zone};

/// What answering one query came to, made by either path and returned with the response
/// bytes ([`crate::answer::respond`]): the transport hands it to the counters
/// ([`crate::answer::count`]) and to the query log. It lives on the answer floor, which makes
/// it, so the floors above read it without reaching for each other.
#[derive(Debug, Default)]
pub struct QueryOutcome<'a> {
    /// The response code of the response made; `None` when none was (nothing is counted but
    /// an [`unreadable`](Self::unreadable) packet).
    pub rcode: Option<ResponseCode>,
    /// A packet shorter than a header (not an empty one): nothing is sent, and it is counted
    /// as a malformed query.
    pub unreadable: bool,
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

/// Longest CNAME chain followed inside our zones before answering with what we have.
const MAX_CNAME_CHAIN: usize = 12;

/// Answers one query. `None` means send nothing: the packet had no readable header or was
/// itself a response (answering those would let two servers reflect packets at each other).
/// Counts nothing: a served query is counted by its transport from the outcome
/// ([`crate::answer::respond`], [`crate::answer::count`]).
pub fn handle(
    snap: &Snapshot,
    packet: &[u8],
    src: SocketAddr,
    transport: Transport,
) -> Option<Vec<u8>> {
    reference(snap, packet, src, transport, None).0
}

/// [`handle`], recording in `trace` how a balanced name was decided (for `explain`). An
/// explanation is not a served query: nothing counts it or logs it, so that
/// `/api/v1/explain` cannot skew the metrics.
pub fn handle_traced(
    snap: &Snapshot,
    packet: &[u8],
    src: SocketAddr,
    transport: Transport,
    trace: Option<&mut Trace>,
) -> Option<Vec<u8>> {
    reference(snap, packet, src, transport, trace).0
}

/// The reference answer to one query and its outcome. The bytes are `None` when nothing is to
/// be sent (or encoding failed: then `outcome.rcode` still says a response was made).
pub fn reference<'s>(
    snap: &'s Snapshot,
    packet: &[u8],
    src: SocketAddr,
    transport: Transport,
    trace: Option<&mut Trace>,
) -> (Option<Vec<u8>>, QueryOutcome<'s>) {
    let mut outcome = QueryOutcome {
        tcp: transport == Transport::Tcp,
        ..QueryOutcome::default()
    };
    let Some((bytes, rcode)) = respond(snap, packet, src, transport, trace, &mut outcome) else {
        // Nothing to send: a packet without a whole header is a malformed query; one with QR
        // set is a response sent to us, not a query at all, and an empty one is how a stopping
        // server wakes its own UDP threads.
        outcome.unreadable = !packet.is_empty() && packet.len() < 12;
        return (None, outcome);
    };
    outcome.rcode = Some(rcode);
    (bytes, outcome)
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
    // CD stays clear, signed or not: RFC 4035 §3.1.6 leaves CD to resolvers (as Knot does).
    resp.add_queries(req.queries.iter().cloned());

    let limit = edns::size_limit(
        transport,
        req.edns.as_ref().map(Edns::max_payload),
        snap.wire.max_udp_payload,
    );

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
    if req.metadata.op_code == OpCode::Notify && !snap.config.config.secondary.is_empty() {
        // RFC 1996: from a listed primary of a secondary zone, wake its refresh; else REFUSED.
        // A server with no secondary zones keeps answering NOTIFY with NOTIMP, as before.
        let ok = matches!(&req.queries[..], [q] if q.query_type() == RecordType::SOA
            && snap.notify(q.name(), src.ip()));
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
        // NXNAME (RFC 9824 §3.5) only ever appears in NSEC bitmaps: asking for it is an error.
        RecordType::OPT | crate::dnssec::denial::NXNAME => {
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

    let dnssec_ok = req.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
    let mut ctx = Ctx {
        snap,
        dnssec_ok,
        // The signing budget limits UDP queries without a valid server cookie only.
        limited: dnssec_ok
            && transport == Transport::Udp
            && !crate::cookie::find_in_query(packet).is_some_and(|c| {
                crate::cookie::valid(&snap.cookie_secret, c, src.ip(), crate::cookie::unix_now())
            }),
        denial: None,
        wildcards: Vec::new(),
        client: edns::client(
            snap,
            ecs.as_ref().map(|e| (e.source_prefix(), e.addr())),
            src.ip(),
        ),
        scope: 0,
        resp: &mut resp,
        trace,
        outcome,
    };
    let glue_needed = answer(&mut ctx, query);
    let (client, scope) = (ctx.client.addr, ctx.scope);
    if let (Some(mut echo), Some(edns)) = (ecs, resp.edns.as_mut()) {
        // The scope the answer depended on (static answers say 0: valid for every client).
        echo.set_scope_prefix(edns::echo_scope(client, scope, echo.source_prefix()));
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

/// One query being answered at a zone: what every step below reads and writes, in one value
/// rather than a parameter each.
struct Ctx<'s, 'a> {
    snap: &'s Snapshot,
    /// Who the policies answer (ECS or source, [`edns::client`]).
    client: Client<'s>,
    /// The widest ECS scope an answer depended on so far.
    scope: u8,
    resp: &'a mut Message,
    /// The query had DO set.
    dnssec_ok: bool,
    /// Cache misses take from the zone's signing budget (UDP without a valid cookie).
    limited: bool,
    /// What a negative answer denies, for its NSEC when the zone is signed.
    denial: Option<Denial>,
    /// Names answered from a wildcard (a presigned zone proves they do not exist).
    wildcards: Vec<Name>,
    /// How a balanced name was decided, for `explain`.
    trace: Option<&'a mut Trace>,
    outcome: &'a mut QueryOutcome<'s>,
}

/// Fills the response for an IN query. Returns true when the additional section holds glue that
/// a referral cannot do without (RFC 9471), so truncation must set TC rather than drop it.
fn answer(ctx: &mut Ctx<'_, '_>, query: &Query) -> bool {
    let snap = ctx.snap;
    let qtype = query.query_type();
    let (mut wire, mut starts) = (Vec::with_capacity(64), Vec::with_capacity(8));
    wire_lower(query.name(), &mut wire, &mut starts);
    // A zone whose file failed to load: its data exists but we lost it (SPEC "Day two").
    if snap.zones.failing(&wire, &starts) {
        servfail(ctx.resp);
        return false;
    }
    let Some(zone) = snap.zones.find_for(&wire, &starts, qtype == RecordType::DS) else {
        ctx.resp.metadata.response_code = ResponseCode::Refused;
        extended_error(ctx.resp, EDE_NOT_AUTHORITATIVE);
        return false;
    };
    ctx.outcome.zone = Some(&zone.stats);
    if zone.expired {
        // A secondary zone past its SOA expire (RFC 1035 §4.3.5): no longer authoritative.
        servfail(ctx.resp);
        return false;
    }
    ctx.resp.metadata.authoritative = true;
    let online = snap.signing(zone);
    let glue_needed = answer_in(ctx, query, zone, online, &mut wire, &mut starts);
    if let Some(online) = online.filter(|_| ctx.dnssec_ok) {
        sign_response(ctx, query.query_type(), zone, online);
    } else if let Some(pre) = zone.presigned.as_ref().filter(|_| ctx.dnssec_ok) {
        presigned_response(ctx, zone, pre);
    }
    glue_needed
}

/// What a negative answer denies (RFC 9824 compact denial), for the NSEC a signed zone adds.
#[derive(Debug)]
enum Denial {
    /// The name does not exist.
    NxName(Name),
    /// The name exists with these types (the asked one is not among them).
    NoData(Name, Vec<RecordType>),
    /// A delegation without DS: the NSEC at the cut proves it unsigned.
    Cut(Name),
}

/// The types a node has for its NODATA NSEC: its RRsets, its service's (A and/or AAAA by
/// the endpoints' families, or CNAME), and at a signed apex DNSKEY, CDS and CDNSKEY.
fn node_types(
    snap: &Snapshot,
    zone: &Zone,
    node: &Node,
    owner: &Name,
    online: Option<&crate::dnssec::online::Online>,
) -> Vec<RecordType> {
    let mut types: Vec<RecordType> = node.rrsets.iter().map(|r| r.rtype).collect();
    if let Some(svc) = snap.service_of(node) {
        if svc.targets {
            types.push(RecordType::CNAME);
        } else {
            if svc.endpoints.iter().any(|e| e.addr.is_ipv4()) {
                types.push(RecordType::A);
            }
            if svc.endpoints.iter().any(|e| e.addr.is_ipv6()) {
                types.push(RecordType::AAAA);
            }
        }
    }
    if online.is_some() && zone.origin == *owner {
        types.extend([RecordType::DNSKEY, RecordType::CDS, RecordType::CDNSKEY]);
    }
    types
}

/// The answer from `zone` once it is known: CNAME chain, balanced names, referrals,
/// negatives; `ctx.denial` says what a negative answer denies.
fn answer_in(
    ctx: &mut Ctx<'_, '_>,
    query: &Query,
    zone: &Zone,
    online: Option<&crate::dnssec::online::Online>,
    wire: &mut Vec<u8>,
    starts: &mut Vec<u8>,
) -> bool {
    let snap = ctx.snap;
    let qtype = query.query_type();
    // The owner of answer records is spelled as the client spelled the question (0x20).
    let mut owner: Name = query.name().clone();
    for _hop in 0..MAX_CNAME_CHAIN {
        let found = zone.find(wire, starts, qtype == RecordType::DS);
        // What DNSSEC needs to know is only recorded for DO queries: the others pay nothing.
        if ctx.dnssec_ok && matches!(found, Found::Wildcard(_)) {
            ctx.wildcards.push(owner.clone());
        }
        match found {
            Found::Delegation(cut_key, cut) => {
                // Also after a CNAME that led below a cut: RFC 1034 §4.3.2 step 3b goes on
                // with the referral, and the CNAME keeps the answer authoritative.
                return referral(ctx, zone, cut_key, cut);
            }
            Found::NxDomain => {
                ctx.resp.metadata.response_code = ResponseCode::NXDomain;
                negative(zone, &owner, ctx.resp);
                ctx.denial = Some(Denial::NxName(owner));
                return false;
            }
            Found::Node(node) | Found::Wildcard(node) => {
                if let Some(svc) = snap.service_of(node).filter(|s| s.targets) {
                    let target = target_cname(ctx, svc, &owner);
                    // Chased as any in-zone CNAME (below), unless the CNAME itself was asked.
                    match target {
                        Some(t)
                            if qtype != RecordType::CNAME
                                && qtype != RecordType::ANY
                                && zone.contains(&t)
                                && !ctx.resp.answers.iter().any(|r| r.name == t) =>
                        {
                            owner = t;
                            wire_lower(&owner, wire, starts);
                            continue;
                        }
                        _ => {
                            fill_types(ctx, snap, zone, node, &owner, online);
                            return false;
                        }
                    }
                }
                if let Some(svc) = snap.service_of(node) {
                    balanced(ctx, svc, node, qtype, &owner);
                    fill_types(ctx, snap, zone, node, &owner, online);
                    return false;
                }
                // DNSKEY, CDS and CDNSKEY at the apex of a signed zone exist with or without
                // DO (SPEC "DNSSEC"), made from the configured keys.
                if let Some(set) = online
                    .filter(|o| o.zone == owner)
                    .and_then(|o| o.apex_set(qtype).map(|s| (o.apex_ttl, s)))
                {
                    for w in set.1 {
                        if let Some(d) = crate::zone::decode_rdata(qtype, w) {
                            ctx.resp
                                .answers
                                .push(Record::from_rdata(owner.clone(), set.0, d));
                        }
                    }
                    return false;
                }
                let resp = &mut *ctx.resp;
                if node.rrsets.is_empty() {
                    negative(zone, &owner, resp);
                    ctx.denial = Some(Denial::NoData(owner, Vec::new()));
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
                        wire_lower(&owner, wire, starts);
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
                    None => {
                        negative(zone, &owner, resp);
                        // DS asked at a cut without DS: the cut's own NSEC says so.
                        ctx.denial = ctx.dnssec_ok.then(|| {
                            if node.cut {
                                Denial::Cut(owner)
                            } else {
                                Denial::NoData(
                                    owner.clone(),
                                    node_types(snap, zone, node, &owner, online),
                                )
                            }
                        });
                    }
                }
                return false;
            }
        }
    }
    false
}

/// Answers at a balanced name: A/AAAA (and ANY) from the policy, other types from the zone.
fn balanced<'s>(
    ctx: &mut Ctx<'s, '_>,
    svc: &'s Service,
    node: &Node,
    qtype: RecordType,
    owner: &Name,
) {
    let snap = ctx.snap;
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
            Some(set) => push_rrset(&mut ctx.resp.answers, set, owner),
            None => negative_for(ctx, owner),
        }
        return;
    };
    let sel = edns::pick(snap, svc, family, &mut ctx.client, ctx.trace.as_deref_mut());
    ctx.scope = ctx.scope.max(sel.scope);
    ctx.outcome.service = Some(svc);
    ctx.outcome.all_down = sel.all_down;
    if let Some(t) = ctx.trace.as_deref_mut() {
        t.service = Some(svc.name.clone());
        t.client = ctx.client.located().cloned();
        t.picks = sel.picks.clone();
        t.scope = sel.scope;
    }
    if sel.servfail {
        servfail(ctx.resp);
        return;
    }
    if sel.picks.is_empty() {
        negative_for(ctx, owner);
        return;
    }
    let ttl = svc.answer_ttl(&sel);
    for &i in &sel.picks {
        let rdata = match svc.endpoints[i].addr {
            std::net::IpAddr::V4(a) => RData::A(a.into()),
            std::net::IpAddr::V6(a) => RData::AAAA(a.into()),
        };
        ctx.resp
            .answers
            .push(Record::from_rdata(owner.clone(), ttl, rdata));
    }
    ctx.outcome.picks = sel.picks;
}

/// Answers at a balanced name of `target` endpoints: one CNAME to the chosen target, for every
/// query type. Returns the target, for the caller to chase inside the zone.
fn target_cname<'s>(ctx: &mut Ctx<'s, '_>, svc: &'s Service, owner: &Name) -> Option<Name> {
    let snap = ctx.snap;
    let sel = edns::pick(
        snap,
        svc,
        Family::Any,
        &mut ctx.client,
        ctx.trace.as_deref_mut(),
    );
    ctx.scope = ctx.scope.max(sel.scope);
    ctx.outcome.service = Some(svc);
    ctx.outcome.all_down = sel.all_down;
    // One CNAME: `max_answers` does not apply (an alias has a single target).
    let first = sel.picks.first().copied();
    if let Some(t) = ctx.trace.as_deref_mut() {
        t.service = Some(svc.name.clone());
        t.client = ctx.client.located().cloned();
        t.picks = first.into_iter().collect();
        t.scope = sel.scope;
    }
    if sel.servfail {
        servfail(ctx.resp);
        return None;
    }
    let Some(first) = first else {
        negative_for(ctx, owner);
        return None;
    };
    let target = svc.endpoints[first].target.clone()?;
    ctx.outcome.picks = std::iter::once(first).collect();
    ctx.resp.answers.push(Record::from_rdata(
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

/// NODATA at a balanced name; its types are filled in by the caller ([`fill_types`]).
fn negative_for(ctx: &mut Ctx<'_, '_>, name: &Name) {
    if let Some(zone) = ctx.snap.zones.find_name(name) {
        negative(zone, name, ctx.resp);
        if ctx.dnssec_ok {
            ctx.denial = Some(Denial::NoData(name.clone(), Vec::new()));
        }
    }
}

/// The types of a NODATA at a balanced name, once its node is known.
fn fill_types(
    ctx: &mut Ctx<'_, '_>,
    snap: &Snapshot,
    zone: &Zone,
    node: &Node,
    owner: &Name,
    online: Option<&crate::dnssec::online::Online>,
) {
    if online.is_none() || !ctx.dnssec_ok {
        return;
    }
    if let Some(Denial::NoData(_, types)) = &mut ctx.denial {
        *types = node_types(snap, zone, node, owner, online);
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

/// A referral to a delegated child: NS in authority, glue in additional. In a signed zone
/// with DO, the cut's DS (signed by this zone), or the NSEC proving there is none.
fn referral(ctx: &mut Ctx<'_, '_>, zone: &Zone, cut_key: &[u8], cut: &Node) -> bool {
    let resp = &mut *ctx.resp;
    // A CNAME already in the answer is ours, and keeps AA set (as Knot and BIND do).
    resp.metadata.authoritative = !resp.answers.is_empty();
    let (Some(ns), Some(cut_name)) = (cut.rrset(RecordType::NS), crate::zone::key_name(cut_key))
    else {
        return false;
    };
    resp.authorities.extend(ns.records(&cut_name));
    if ctx.dnssec_ok && (ctx.snap.signing(zone).is_some() || zone.presigned.is_some()) {
        match cut.rrset(RecordType::DS) {
            Some(ds) => resp.authorities.extend(ds.records(&cut_name)),
            None => ctx.denial = Some(Denial::Cut(cut_name)),
        }
    }
    let before = resp.additionals.len();
    additional_for(zone, ns, &mut resp.additionals);
    resp.additionals.len() > before
}

/// Adds the RRSIGs of a signed zone to a response for a query with DO: over every RRset in
/// answer and authority (not a referral's NS, which is the child's), and the compact-denial
/// NSEC of a negative answer (RFC 9824: a name that does not exist answers NOERROR). Past
/// the zone's signing budget the reply is TC=1 with no records, so the resolver retries
/// over TCP, where it is not limited.
fn sign_response(
    ctx: &mut Ctx<'_, '_>,
    qtype: RecordType,
    zone: &Zone,
    online: &crate::dnssec::online::Online,
) {
    let resp = &mut *ctx.resp;
    if resp.metadata.response_code == ResponseCode::ServFail {
        return;
    }
    if let Some(denial) = ctx.denial.take() {
        let nsec = match denial {
            Denial::NxName(n) => crate::dnssec::denial::nxname(&n, &zone.origin),
            Denial::NoData(n, mut types) => {
                types.retain(|t| *t != qtype);
                crate::dnssec::denial::nodata(&n, &zone.origin, &types)
            }
            Denial::Cut(n) => crate::dnssec::denial::unsigned_delegation(&n, &zone.origin),
        };
        if resp.metadata.response_code == ResponseCode::NXDomain {
            resp.metadata.response_code = ResponseCode::NoError;
        }
        if let Some(d) = crate::zone::decode_rdata(RecordType::NSEC, &nsec.rdata_wire()) {
            let r = Record::from_rdata(nsec.owner.clone(), zone.negative_ttl, d);
            resp.authorities.push(r);
        }
    }
    let apex = &zone.origin;
    let limited = ctx.limited;
    let answers = signed(&resp.answers, online, limited, |_| true);
    // NS anywhere but the apex is a referral's: the child's data, never signed here. Not
    // asked for once the answer section was refused (the reply is truncated anyway).
    let authorities = answers.as_ref().and_then(|_| {
        signed(&resp.authorities, online, limited, |r| {
            r.record_type() != RecordType::NS || r.name == *apex
        })
    });
    match (answers, authorities) {
        (Some(a), Some(n)) => {
            resp.answers = a;
            resp.authorities = n;
        }
        _ => {
            resp.answers.clear();
            resp.authorities.clear();
            resp.additionals.clear();
            resp.metadata.truncation = true;
            crate::dnssec::sign::record_refused();
        }
    }
}

/// `records` with the RRSIGs of each RRset (consecutive records of one owner and type) for
/// which `sign` says yes put after it; `None` when the signing budget ran out.
fn signed(
    records: &[Record],
    online: &crate::dnssec::online::Online,
    limited: bool,
    sign: impl Fn(&Record) -> bool,
) -> Option<Vec<Record>> {
    with_sigs(records, sign, |first, set| {
        let rdatas: Vec<Vec<u8>> = set
            .iter()
            .filter_map(|r| crate::dnssec::sign::canonical_rdata(&r.data).ok())
            .collect();
        let refs: Vec<&[u8]> = rdatas.iter().map(Vec::as_slice).collect();
        // A signing error (a key ring refuses) leaves the RRset unsigned: the resolver
        // finds it bogus and tries another server, which is what a broken key should cause.
        let Ok(sigs) = online.sign(&first.name, first.record_type(), first.ttl, &refs, limited)
        else {
            return Some(Vec::new());
        };
        Some(
            sigs?
                .iter()
                .filter_map(|sig| crate::zone::decode_rdata(RecordType::RRSIG, sig))
                .map(|d| Record::from_rdata(first.name.clone(), first.ttl, d))
                .collect(),
        )
    })
}

/// `records` with, after each RRset for which `want` says yes, the RRSIGs `sigs` gives for it
/// (`None`: give up, the answer is truncated).
fn with_sigs(
    records: &[Record],
    want: impl Fn(&Record) -> bool,
    mut sigs: impl FnMut(&Record, &[Record]) -> Option<Vec<Record>>,
) -> Option<Vec<Record>> {
    let mut out = Vec::with_capacity(records.len() * 2);
    let mut i = 0;
    while i < records.len() {
        let first = &records[i];
        let rtype = first.record_type();
        let end = i + records[i..]
            .iter()
            .take_while(|r| r.record_type() == rtype && r.name == first.name)
            .count();
        let set = &records[i..end];
        out.extend_from_slice(set);
        i = end;
        if !want(first) || rtype == RecordType::RRSIG {
            continue;
        }
        out.extend(sigs(first, set)?);
    }
    Some(out)
}

/// The RRSIGs of a presigned zone covering `rtype` at `owner` (at the wildcard that made it,
/// for a synthesised answer: the RRSIG's labels field says so), owned by `owner`.
fn presigned_sigs(zone: &Zone, owner: &Name, rtype: RecordType, ttl: u32) -> Vec<Record> {
    let (mut wire, mut starts) = (Vec::new(), Vec::new());
    wire_lower(owner, &mut wire, &mut starts);
    let node = match zone.nodes.get(&wire[..]) {
        Some(n) => Some(n),
        None => match zone.find(&wire, &starts, rtype == RecordType::DS) {
            Found::Wildcard(n) => Some(n),
            _ => None,
        },
    };
    let Some(sigs) = node.and_then(|n| n.rrset(RecordType::RRSIG)) else {
        return Vec::new();
    };
    let covered = u16::from(rtype).to_be_bytes();
    sigs.rdata()
        .filter(|w| w.starts_with(&covered))
        .filter_map(|w| crate::zone::decode_rdata(RecordType::RRSIG, w))
        .map(|d| Record::from_rdata(owner.clone(), ttl, d))
        .collect()
}

/// The NSEC record(s) at the owner `key` (a wire key of the zone), with their RRSIGs.
fn presigned_nsec_at(zone: &Zone, key: &[u8], out: &mut Vec<Record>) {
    let Some((node, name)) = zone.nodes.get(key).zip(crate::zone::key_name(key)) else {
        return;
    };
    let Some(nsec) = node.rrset(RecordType::NSEC) else {
        return;
    };
    if out
        .iter()
        .any(|r| r.record_type() == RecordType::NSEC && r.name == name)
    {
        return;
    }
    out.extend(nsec.records(&name));
    out.extend(presigned_sigs(zone, &name, RecordType::NSEC, nsec.ttl));
}

/// The NSEC covering `name` (proving it does not exist) and the one covering the wildcard at
/// its closest encloser (proving no wildcard made it), RFC 4035 §3.1.3.2.
fn presigned_nxdomain_proof(
    zone: &Zone,
    pre: &crate::zone::Presigned,
    name: &Name,
    out: &mut Vec<Record>,
) {
    let key = crate::zone::wire_key(name);
    if let Some(cover) = pre.covering(&key) {
        presigned_nsec_at(zone, cover, out);
    }
    // The closest encloser: the longest existing ancestor.
    let mut i = 0;
    while i < key.len() && key[i] != 0 {
        i += usize::from(key[i]) + 1;
        if zone.nodes.contains_key(&key[i..]) {
            let mut wild = vec![1, b'*'];
            wild.extend_from_slice(&key[i..]);
            if let Some(cover) = pre.covering(&wild) {
                presigned_nsec_at(zone, cover, out);
            }
            break;
        }
    }
}

/// A presigned zone's answer to a DO query, served as it arrived: after each RRset its
/// RRSIGs from the zone; a negative answer gets the zone's own NSEC records (at the name for
/// NODATA and an unsigned cut, covering ones for a name that does not exist, and for a
/// wildcard answer the NSEC proving the query name itself does not exist). NSEC3 zones get
/// their RRSIGs; their NSEC3 denial is not built yet (docs/dnssec.md).
fn presigned_response(ctx: &mut Ctx<'_, '_>, zone: &Zone, pre: &crate::zone::Presigned) {
    let resp = &mut *ctx.resp;
    if resp.metadata.response_code == ResponseCode::ServFail {
        return;
    }
    let apex = &zone.origin;
    let mut extra = Vec::new();
    if !pre.nsec3 {
        match ctx.denial.take() {
            Some(Denial::NxName(n)) => presigned_nxdomain_proof(zone, pre, &n, &mut extra),
            Some(Denial::NoData(n, _)) | Some(Denial::Cut(n)) => {
                let key = crate::zone::wire_key(&n);
                match zone.nodes.get(&key) {
                    Some(node) if node.rrset(RecordType::NSEC).is_some() => {
                        presigned_nsec_at(zone, &key, &mut extra);
                    }
                    // An empty non-terminal has no NSEC: the one before it covers it.
                    Some(_) => {
                        if let Some(cover) = pre.covering(&key) {
                            presigned_nsec_at(zone, cover, &mut extra);
                        }
                    }
                    None => {
                        // NODATA at a name a wildcard stands for: the wildcard's NSEC, and
                        // the one proving the name itself does not exist.
                        presigned_nxdomain_proof(zone, pre, &n, &mut extra);
                    }
                }
            }
            None => {}
        }
        for w in std::mem::take(&mut ctx.wildcards) {
            let key = crate::zone::wire_key(&w);
            if let Some(cover) = pre.covering(&key) {
                presigned_nsec_at(zone, cover, &mut extra);
            }
        }
    }
    let answers = with_sigs(
        &resp.answers,
        |_| true,
        |first, _| {
            Some(presigned_sigs(
                zone,
                &first.name,
                first.record_type(),
                first.ttl,
            ))
        },
    );
    let authorities = with_sigs(
        &resp.authorities,
        |r| r.record_type() != RecordType::NS || r.name == *apex,
        |first, _| {
            Some(presigned_sigs(
                zone,
                &first.name,
                first.record_type(),
                first.ttl,
            ))
        },
    );
    if let (Some(a), Some(mut n)) = (answers, authorities) {
        n.extend(extra);
        resp.answers = a;
        resp.authorities = n;
    }
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
