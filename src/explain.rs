//! `meridian explain`: the answer a query would get and the whole decision behind it, computed
//! by the same request handler that serves queries, without serving. `--down` marks endpoints
//! (by address) or whole regions down in this private snapshot only.
//!
//! [`live`] is the same on the served snapshot, for `GET /api/v1/explain` and
//! `meridian explain --live`: the answer with the server's real health, drains and RTTs. It
//! never marks anything down (that would change what the server answers).

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::{json, Value};

use crate::dns::{handle_traced, Transport};
use crate::geo::{code_str, distance_km, AddrSource};
use crate::policy::{Down, Trace};
use crate::snapshot::Snapshot;

pub struct Request {
    pub name: String,
    pub rtype: RecordType,
    pub client: IpAddr,
    pub ecs: Option<(IpAddr, u8)>,
    pub down: Vec<String>,
    /// What the caller wants said first (offline: which saved drains were applied).
    pub notes: Vec<String>,
}

/// What [`live`] returns: the JSON of `explain --json`, or (`format=text`) the text.
#[derive(Debug)]
pub enum Live {
    Json(Value),
    Text(String),
}

/// Explains a query given as URL query parameters (`name`, `type` = A, `client` = 127.0.0.1,
/// `ecs`, `format` = json | text) against `snap`. Errors are for the requester: a missing
/// name, a parameter that does not parse or is unknown.
pub fn live(snap: &Snapshot, query: &str) -> Result<Live, String> {
    // The url crate (through reqwest) does the percent-decoding of `a=b&c=d`.
    let url = reqwest::Url::parse(&format!("http://x/?{query}"))
        .map_err(|e| format!("query string: {e}"))?;
    let (mut name, mut rtype, mut client, mut ecs, mut text) =
        (None, RecordType::A, None, None, false);
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "name" => name = Some(v.into_owned()),
            "type" => {
                rtype = RecordType::from_str(&v.to_ascii_uppercase())
                    .map_err(|_| format!("type `{v}` is not a record type"))?
            }
            "client" => {
                client = Some(
                    v.parse::<IpAddr>()
                        .map_err(|_| format!("client `{v}` is not an IP address"))?,
                )
            }
            "ecs" if v.is_empty() => {}
            "ecs" => {
                ecs = Some(
                    crate::config::parse_cidr(&v)
                        .ok_or_else(|| format!("ecs `{v}` is not a network like 81.2.69.0/24"))?,
                )
            }
            "format" => {
                text = match v.as_ref() {
                    "json" => false,
                    "text" => true,
                    _ => return Err(format!("format `{v}` is not one of json, text")),
                }
            }
            other => {
                return Err(format!(
                    "unknown parameter `{other}` (name, type, client, ecs, format)"
                ))
            }
        }
    }
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or("name is required, e.g. /api/v1/explain?name=www.example.com&type=A")?;
    let req = Request {
        name,
        rtype,
        client: client.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        ecs,
        down: Vec::new(),
        notes: Vec::new(),
    };
    let (t, v) = explain(snap, &req)?;
    Ok(if text { Live::Text(t) } else { Live::Json(v) })
}

/// Runs the query and returns (human text, JSON), or an error for bad arguments.
pub fn explain(snap: &Snapshot, req: &Request) -> Result<(String, Value), String> {
    // `--down` goes to `select` through the trace (its `up` override): the snapshot's health
    // state is not written, so explaining on a served snapshot could not change its answers.
    let mut down = Down::default();
    for d in &req.down {
        let by_addr = d.parse::<IpAddr>().ok();
        let mut matched = false;
        for svc in &snap.services {
            for e in &svc.endpoints {
                let region = e.region.map(|r| snap.regions[r].name.as_str());
                if Some(e.addr) == by_addr || region == Some(d.as_str()) {
                    matched = true;
                }
            }
        }
        if let Some(a) = by_addr {
            down.addrs.push(a);
        }
        if let Some(r) = snap.regions.iter().position(|r| r.name == *d) {
            down.regions.push(r);
        }
        if !matched {
            return Err(format!(
                "--down {d}: no endpoint address or region of that name"
            ));
        }
    }

    let mut name = Name::from_ascii(&req.name)
        .map_err(|e| format!("`{}` is not a domain name: {e}", req.name))?;
    name.set_fqdn(true);
    let mut msg = Message::new(0x4d45, MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(name.clone(), req.rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    if let Some((ip, prefix)) = req.ecs {
        // Host bits of `--ecs 81.2.69.160/24` cleared: sent as given they would make the
        // option malformed (RFC 7871 §6), which the handler answers with FORMERR.
        let ip = crate::base::net::mask(ip, prefix);
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(ip, prefix, 0)));
    }
    msg.set_edns(edns);
    let packet = msg
        .to_vec()
        .map_err(|e| format!("cannot encode query: {e}"))?;
    let mut trace = Trace {
        down,
        ..Trace::default()
    };
    let resp = handle_traced(
        snap,
        &packet,
        SocketAddr::new(req.client, 53000),
        Transport::Tcp,
        Some(&mut trace),
    )
    .ok_or("no response")?;
    let resp = Message::from_vec(&resp).map_err(|e| format!("cannot decode response: {e}"))?;
    Ok(render(snap, req, &name, &resp, &trace))
}

fn render(
    snap: &Snapshot,
    req: &Request,
    name: &Name,
    resp: &Message,
    trace: &Trace,
) -> (String, Value) {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<11}{v}\n"));
    line("query", format!("{name} {}", req.rtype));
    for n in &req.notes {
        line("note", n.clone());
    }
    let (client_addr, client_src) = match req.ecs {
        Some((ip, p)) if p > 0 => (format!("{ip}/{p}"), "ECS (EDNS Client Subnet)"),
        _ => (req.client.to_string(), "source address"),
    };
    line("client", format!("{client_addr} ({client_src})"));

    let mut client_json = json!({"address": client_addr, "source": if req.ecs.is_some_and(|e| e.1 > 0) { "ecs" } else { "source" }});
    if let Some(loc) = &trace.client {
        let mut parts = Vec::new();
        if let Some(c) = &loc.country {
            parts.push(format!("country {}", code_str(c)));
        }
        if let Some(c) = &loc.continent {
            parts.push(format!("continent {}", code_str(c)));
        }
        if let Some(r) = &loc.region {
            parts.push(format!("region {r}"));
        }
        if let Some(c) = loc.coords {
            parts.push(format!("{:.4},{:.4}", c.lat, c.lon));
        }
        if parts.is_empty() {
            parts.push("nowhere known".into());
        }
        let src = match loc.by {
            crate::geo::LocatedBy::Override => format!("geoip.networks override /{}", loc.prefix),
            crate::geo::LocatedBy::Database => format!("GeoIP database, network /{}", loc.prefix),
            crate::geo::LocatedBy::Site => {
                "no coordinates known: this site's location stands in".into()
            }
            crate::geo::LocatedBy::Unknown => {
                "not found and no site location: all regions equal".into()
            }
        };
        line("location", format!("{} ({src})", parts.join(", ")));
        client_json["located_by"] = json!(loc.by.as_str());
        client_json["country"] = json!(loc.country.as_ref().map(|c| code_str(c).to_string()));
        client_json["continent"] = json!(loc.continent.as_ref().map(|c| code_str(c).to_string()));
        client_json["region"] = json!(loc.region);
        client_json["lat"] = json!(loc.coords.map(|c| c.lat));
        client_json["lon"] = json!(loc.coords.map(|c| c.lon));
        client_json["prefix"] = json!(loc.prefix);
        let _ = AddrSource::SourceIp;
    }

    let mut candidates = Vec::new();
    let mut tiers_json: Vec<Value> = Vec::new();
    let mut policy_json = Value::Null;
    if let Some(svc) = trace
        .service
        .as_ref()
        .and_then(|n| snap.services.iter().find(|s| &s.name == n))
    {
        line(
            "service",
            format!(
                "{} policy {}, max_answers {}, ttl {}, when_all_down {}",
                svc.name,
                match &svc.tiers {
                    None => svc.policy.as_str().to_string(),
                    Some(t) => format!(
                        "by tier ({})",
                        t.list
                            .iter()
                            .map(|x| x.svc.policy.as_str())
                            .collect::<Vec<_>>()
                            .join(" → ")
                    ),
                },
                svc.max_answers,
                svc.ttl,
                match svc.when_all_down {
                    crate::policy::WhenAllDown::ServeAll => "serve-all",
                    crate::policy::WhenAllDown::Empty => "empty",
                    crate::policy::WhenAllDown::Servfail => "servfail",
                }
            ),
        );
        policy_json = json!(svc.policy.as_str());
        // Tiers: every one tried, in order, and why it answered or was passed over.
        let tier_of = |i: usize| -> Option<usize> {
            let t = svc.tiers.as_ref()?;
            t.list.iter().position(|x| x.map.contains(&i))
        };
        let is_fallback = |i: usize| svc.tiers.as_ref().is_some_and(|t| t.fallback.contains(&i));
        if let Some(tiers) = &svc.tiers {
            out.push_str("tiers\n");
            for (k, t) in tiers.list.iter().enumerate() {
                let tried = trace.tiers.iter().find(|x| x.index == k);
                let pools = if t.pools.is_empty() {
                    String::new()
                } else {
                    format!(", pools {}", t.pools.join(" "))
                };
                let why = tried.map_or_else(
                    || "not tried: an earlier tier answered".to_string(),
                    |x| x.why.clone(),
                );
                out.push_str(&format!(
                    "  tier {} ({}{pools}, min_up {}): {why}\n",
                    k + 1,
                    t.svc.policy.as_str(),
                    t.min_up
                ));
                tiers_json.push(json!({
                    "tier": k + 1,
                    "policy": t.svc.policy.as_str(),
                    "pools": t.pools,
                    "min_up": t.min_up,
                    "tried": tried.is_some(),
                    "endpoints": tried.map(|x| x.endpoints),
                    "up": tried.map(|x| x.up),
                    "answered": tried.is_some_and(|x| x.answered),
                    "why": why,
                }));
            }
            if !tiers.fallback.is_empty() {
                let fb: Vec<String> = tiers
                    .fallback
                    .iter()
                    .map(|&i| svc.endpoints[i].label())
                    .collect();
                out.push_str(&format!(
                    "  fallback {}: {}\n",
                    fb.join(" "),
                    if trace.fallback {
                        "answers: no tier has enough"
                    } else {
                        "not used"
                    }
                ));
            }
        }
        out.push_str("candidates\n");
        out.push_str(&format!(
            "  {:<12} {:<28} {:>9} {:>7} {:>4} {:<9} {}\n",
            "region", "address", "distance", "weight", "prio", "health", "result"
        ));
        let client_coords = trace.client.as_ref().and_then(|l| l.coords);
        for (i, e) in svc.endpoints.iter().enumerate() {
            let region = e.region.map(|r| snap.regions[r].name.clone());
            let dist = trace
                .distance_km
                .iter()
                .find(|(j, _)| *j == i)
                .map(|(_, d)| *d)
                .or_else(|| {
                    let rl = e.region.and_then(|r| snap.regions[r].location)?;
                    Some(distance_km(client_coords?, rl))
                });
            let family_ok = match req.rtype {
                _ if e.target.is_some() => true,
                RecordType::AAAA => e.addr.is_ipv6(),
                _ => e.addr.is_ipv4(),
            };
            let forced = trace.down.covers(e);
            let healthy = e.state.healthy() && !forced;
            // A partial drain that covers this client's network counts as a drain here.
            let share = e.state.drain_share();
            let partly = share > 0.0
                && trace
                    .client
                    .as_ref()
                    .is_some_and(|c| crate::policy::spill::drain_unit(c.addr) < share);
            let health = if e.state.drained() {
                "drained"
            } else if partly {
                "drained (partial)"
            } else if healthy {
                "up"
            } else {
                "down"
            };
            let picked = trace.picks.contains(&i);
            let tier = tier_of(i);
            let tier_trace = tier.and_then(|k| trace.tiers.iter().find(|x| x.index == k));
            let result = if picked {
                "PICKED".to_string()
            } else if is_fallback(i) {
                "fallback, not used".into()
            } else if let (Some(k), None) = (tier, tier_trace) {
                format!("tier {} not tried", k + 1)
            } else if let Some(x) = tier_trace.filter(|x| !x.answered && x.endpoints > 0) {
                if (!e.state.up() || forced) && !trace.all_down {
                    format!("skipped: {health}; tier {} passed over", x.index + 1)
                } else {
                    format!("tier {} passed over", x.index + 1)
                }
            } else if !family_ok {
                format!("other family (query is {})", req.rtype)
            } else if (!e.state.up() || forced || partly) && !trace.all_down {
                format!("skipped: {health}")
            } else if let Some((r, _)) = &trace.chosen_region {
                if e.region != Some(*r) {
                    format!("not in chosen region {}", snap.regions[*r].name)
                } else {
                    "not drawn".into()
                }
            } else {
                "not drawn".into()
            };
            out.push_str(&format!(
                "  {:<12} {:<28} {:>9} {:>7} {:>4} {:<9} {}\n",
                region.as_deref().unwrap_or("-"),
                e.label(),
                dist.filter(|d| d.is_finite())
                    .map_or("-".into(), |d| format!("{d:.0} km")),
                format!("{}", e.weight),
                e.priority,
                health,
                result
            ));
            // Several monitors: each profile's result, and which decided.
            let d = e.state.decision();
            let checks: Vec<Value> = e
                .state
                .checks()
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let last = c.last_probe();
                    json!({
                        "profile": c.profile,
                        "healthy": c.healthy(),
                        "decided": d.by.contains(&i),
                        "reason": last.as_ref().map(|r| r.reason.clone()),
                    })
                })
                .collect();
            if let Some(why) = e.state.decided_by() {
                let parts: Vec<String> = e
                    .state
                    .checks()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        format!(
                            "{}{} {} ({})",
                            c.profile,
                            if d.by.contains(&i) { "*" } else { "" },
                            if c.healthy() { "up" } else { "down" },
                            c.last_probe()
                                .map_or_else(|| "not probed yet".into(), |r| r.reason.clone())
                        )
                    })
                    .collect();
                out.push_str(&format!(
                    "  {:<12} checks: {}; {why}\n",
                    "",
                    parts.join(", ")
                ));
            }
            candidates.push(json!({
                "checks": checks,
                "decided_by": e.state.decided_by(),
                "address": e.label(),
                "region": region,
                "distance_km": dist.filter(|d| d.is_finite()).map(|d| (d * 10.0).round() / 10.0),
                "weight": e.weight,
                "priority": e.priority,
                "healthy": healthy,
                "drained": e.state.drained() || partly,
                "drain_share": (share > 0.0).then_some(share),
                "rtt_ms": e.state.rtt_us().map(|u| u as f64 / 1000.0),
                "load": e.state.load(),
                "picked": picked,
                "result": result,
                "pool": e.pool,
                "tier": tier.map(|k| k + 1),
                "fallback": is_fallback(i),
            }));
        }
        for n in &trace.notes {
            out.push_str(&format!("{:<11}{n}\n", "decision"));
        }
    } else {
        let (mut wire, mut starts) = (Vec::new(), Vec::new());
        crate::zone::wire_lower(name, &mut wire, &mut starts);
        let decision = if snap.zones.failing(&wire, &starts) {
            "its zone failed to load: SERVFAIL until the zone file is fixed and reloaded".into()
        } else {
            match snap.zones.find_name(name) {
                None => "outside every zone served here: REFUSED (not authoritative)".to_string(),
                Some(z) => format!("static data from zone {} (not a balanced name)", z.origin),
            }
        };
        out.push_str(&format!("{:<11}{decision}\n", "decision"));
    }

    let answers: Vec<String> = resp
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    let records: Vec<String> = resp.answers.iter().map(|r| r.to_string()).collect();
    out.push_str(&format!("{:<11}{}\n", "rcode", resp.metadata.response_code));
    if records.is_empty() {
        out.push_str(&format!("{:<11}(no records)\n", "answer"));
    }
    for r in &records {
        out.push_str(&format!("{:<11}{r}\n", "answer"));
    }
    let ecs_scope = resp.edns.as_ref().and_then(|e| {
        match e.option(hickory_proto::rr::rdata::opt::EdnsCode::Subnet) {
            Some(EdnsOption::Subnet(s)) => Some(s.scope_prefix()),
            _ => None,
        }
    });
    match ecs_scope {
        Some(s) => out.push_str(&format!(
            "{:<11}/{s} (the answer holds for the client's /{s})\n",
            "ecs scope"
        )),
        None => out.push_str(&format!(
            "{:<11}/{} would be returned to an ECS query\n",
            "ecs scope", trace.scope
        )),
    }
    let ttl = resp.answers.first().map(|r| r.ttl);
    let json = json!({
        "query": {"name": name.to_string(), "type": req.rtype.to_string()},
        "client": client_json,
        "service": trace.service.as_ref().map(|n| n.to_string()),
        "policy": policy_json,
        "candidates": candidates,
        "notes": req.notes.iter().chain(trace.notes.iter()).collect::<Vec<_>>(),
        "rcode": resp.metadata.response_code.to_string(),
        "answer": answers,
        "records": records,
        "ttl": ttl,
        "ecs_scope": ecs_scope.unwrap_or(trace.scope),
        "all_down": trace.all_down,
        "tiers": tiers_json,
        "fallback": trace.fallback,
    });
    (out, json)
}
