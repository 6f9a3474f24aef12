//! `meridian simulate`: what a change would do to real traffic, before it is made (SPEC "Day
//! two"). Recorded queries — a dnstap capture as the query log writes it, or text lines
//! `qname qtype client [ecs]` — are replayed through the request handler that answers on the
//! wire ([`crate::dns::handle_traced`], as `explain` uses it) twice: once with the config as it
//! is (every endpoint up, nothing drained) and once under the change (`--down`, `--drain`, or
//! another config with `--new-config`). It prints, per service and region, the share of answers
//! in each case and how many client networks would be answered from a different set of regions.
//!
//! Both runs use their own freshly loaded snapshot (its own health table and round-robin
//! counters), and each query gets the same random numbers in both ([`crate::policy::seed_random`]),
//! so a weighted or round-robin answer differs between them only because of the change.
//!
//! A "client network" is the ECS subnet a query carried, or its source address without one (a
//! resolver). A network moves to another region when the regions it is answered from
//! (endpoints, for endpoints without a region) are not the same set in the two runs; to another
//! endpoint when the endpoints it is answered with are not (a move inside a region still
//! empties caches and connection pools).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use serde_json::{json, Value};

use crate::cli::{EXIT_INVALID, EXIT_OK};
use crate::dns::{handle_traced, Transport};
use crate::policy::Trace;
use crate::querylog::{dnstap, framestream};
use crate::snapshot::Snapshot;

/// The arguments of `meridian simulate`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["dnstap", "queries"])))]
pub struct Args {
    /// A dnstap capture (Frame Streams file), e.g. written by `[log] dnstap = "file:PATH"`.
    #[arg(long, value_name = "FILE")]
    pub dnstap: Option<PathBuf>,
    /// A text file of queries, one per line: `qname qtype client [ecs]` (`#` starts a comment).
    #[arg(long, value_name = "FILE")]
    pub queries: Option<PathBuf>,
    /// The config the queries are answered under.
    #[arg(long, default_value = "config/meridian.toml")]
    pub config: PathBuf,
    /// Compare with this config instead (e.g. changed weights); `--down`/`--drain` apply to it.
    #[arg(long, value_name = "PATH")]
    pub new_config: Option<PathBuf>,
    /// Under the change, this endpoint (address or target) or region is down; repeatable.
    #[arg(long, value_name = "X")]
    pub down: Vec<String>,
    /// Under the change, this endpoint (address or target) or region is drained; repeatable.
    /// (`X:SHARE`, a partial drain, is not supported: meridian drains whole endpoints or regions.)
    #[arg(long, value_name = "X")]
    pub drain: Vec<String>,
    /// One JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One recorded query: the bytes as the client sent them and who sent them.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub packet: Vec<u8>,
    pub client: IpAddr,
}

/// Largest dnstap frame read: a DNS message is at most 64 KiB, twice (query and response)
/// with the envelope fits far below this; a bigger length means the file is not dnstap.
const MAX_FRAME: usize = 1 << 20;

/// Reads the AUTH_QUERY messages of a dnstap Frame Streams file. A capture cut short (no
/// `STOP`: the server was killed, the disk filled) is read up to its last whole frame.
pub fn read_dnstap(path: &Path) -> Result<Vec<Recorded>, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut r = BufReader::new(file);
    let bad = |what: String| format!("{}: not a dnstap capture: {what}", path.display());
    let (kind, types) = framestream::read_control(&mut r).map_err(|e| bad(e.to_string()))?;
    if kind != framestream::START {
        return Err(bad(format!("the first control frame is {kind}, not START")));
    }
    if !types.is_empty() && !types.iter().any(|t| t == framestream::CONTENT_TYPE) {
        return Err(bad("its content type is not protobuf:dnstap.Dnstap".into()));
    }
    let mut out = Vec::new();
    let mut word = [0u8; 4];
    loop {
        match r.read_exact(&mut word) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        let len = u32::from_be_bytes(word) as usize;
        if len == 0 {
            // A control frame: STOP ends the capture; anything else is skipped.
            if r.read_exact(&mut word).is_err() {
                break;
            }
            let clen = u32::from_be_bytes(word) as usize;
            if !(4..=512).contains(&clen) {
                return Err(bad(format!("control frame of {clen} bytes")));
            }
            let mut body = vec![0u8; clen];
            if r.read_exact(&mut body).is_err() {
                break;
            }
            if body[..4] == framestream::STOP.to_be_bytes() {
                break;
            }
            continue;
        }
        if len > MAX_FRAME {
            return Err(bad(format!("a frame of {len} bytes")));
        }
        let mut payload = vec![0u8; len];
        if r.read_exact(&mut payload).is_err() {
            break; // cut short: keep what was whole
        }
        let msg = <dnstap::Dnstap as prost::Message>::decode(payload.as_slice())
            .map_err(|e| bad(format!("frame {}: {e}", out.len() + 1)))?;
        let Some(m) = msg.message else { continue };
        if m.r#type != dnstap::MessageType::AuthQuery as i32 {
            continue;
        }
        let (Some(q), Some(addr)) = (m.query_message, m.query_address) else {
            continue;
        };
        let client = match addr.len() {
            4 => IpAddr::from(
                <[u8; 4]>::try_from(addr.as_slice()).map_err(|_| bad("address".into()))?,
            ),
            16 => IpAddr::from(
                <[u8; 16]>::try_from(addr.as_slice()).map_err(|_| bad("address".into()))?,
            ),
            n => return Err(bad(format!("a client address of {n} bytes"))),
        };
        out.push(Recorded { packet: q, client });
    }
    Ok(out)
}

/// Reads text queries: `qname qtype client [ecs]` per line, blank lines and `#` comments
/// skipped. Any line that does not read is an error naming its line.
pub fn read_queries(path: &Path) -> Result<Vec<Recorded>, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
        let text = line.split('#').next().unwrap_or("").trim();
        if text.is_empty() {
            continue;
        }
        let at = |msg: String| format!("{}:{}: {msg}", path.display(), n + 1);
        let words: Vec<&str> = text.split_whitespace().collect();
        let (name, rtype, client, ecs) = match words[..] {
            [n, t, c] => (n, t, c, None),
            [n, t, c, e] => (n, t, c, Some(e)),
            _ => return Err(at(format!("`{text}`: expected `qname qtype client [ecs]`"))),
        };
        let rtype = RecordType::from_str(&rtype.to_ascii_uppercase())
            .map_err(|_| at(format!("`{rtype}` is not a record type")))?;
        let client = client
            .parse::<IpAddr>()
            .map_err(|_| at(format!("client `{client}` is not an IP address")))?;
        let ecs = match ecs {
            None => None,
            Some(e) => Some(
                crate::config::parse_cidr(e)
                    .ok_or_else(|| at(format!("ecs `{e}` is not a network like 81.2.69.0/24")))?,
            ),
        };
        let packet = query_packet(name, rtype, ecs).map_err(at)?;
        out.push(Recorded { packet, client });
    }
    Ok(out)
}

/// A query as a resolver would send it: EDNS with a 1232-byte payload, ECS if given.
pub fn query_packet(
    name: &str,
    rtype: RecordType,
    ecs: Option<(IpAddr, u8)>,
) -> Result<Vec<u8>, String> {
    let mut qname =
        Name::from_ascii(name).map_err(|e| format!("`{name}` is not a domain name: {e}"))?;
    qname.set_fqdn(true);
    let mut msg = Message::new(0x5349, MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(qname, rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    if let Some((ip, prefix)) = ecs {
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(ip, prefix, 0)));
    }
    msg.set_edns(edns);
    msg.to_vec()
        .map_err(|e| format!("cannot encode the query for {name}: {e}"))
}

/// The client network of a query: its ECS subnet, else the source address.
fn network_of(q: &Recorded) -> String {
    let ecs = Message::from_vec(&q.packet).ok().and_then(|m| {
        match m.edns.as_ref()?.option(EdnsCode::Subnet)? {
            EdnsOption::Subnet(s) if s.source_prefix() > 0 => Some(format!(
                "{}/{}",
                truncate(s.addr(), s.source_prefix()),
                s.source_prefix()
            )),
            _ => None,
        }
    });
    ecs.unwrap_or_else(|| q.client.to_canonical().to_string())
}

fn truncate(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

/// How one query was answered at a balanced name.
#[derive(Debug, Clone)]
struct Answer {
    service: String,
    /// The region (or endpoint, without a region) of each answered endpoint; empty for NODATA
    /// or SERVFAIL.
    places: Vec<String>,
    /// The answered endpoints (address or target).
    endpoints: Vec<String>,
    servfail: bool,
}

/// Answers every query against `snap`; `None` for queries that are not at a balanced name.
fn run(snap: &Snapshot, queries: &[Recorded]) -> Vec<Option<Answer>> {
    queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            crate::policy::seed_random(i as u64);
            let mut trace = Trace::default();
            let resp = handle_traced(
                snap,
                &q.packet,
                SocketAddr::new(q.client, 53000),
                Transport::Tcp,
                Some(&mut trace),
            )?;
            let name = trace.service.as_ref()?;
            let svc = snap.services.iter().find(|s| &s.name == name)?;
            let endpoints = trace
                .picks
                .iter()
                .filter_map(|&i| svc.endpoints.get(i))
                .map(|e| e.label())
                .collect();
            let places = trace
                .picks
                .iter()
                .filter_map(|&i| svc.endpoints.get(i))
                .map(|e| match e.region {
                    Some(r) => snap.regions[r].name.clone(),
                    None => e.label(),
                })
                .collect();
            Some(Answer {
                service: name.to_ascii().trim_end_matches('.').to_string(),
                places,
                endpoints,
                servfail: resp.get(3).is_some_and(|b| b & 0x0f == 2),
            })
        })
        .collect()
}

/// Marks endpoints down or drained in `snap` (a private copy): by address, target name or
/// region name.
fn apply(snap: &Snapshot, what: &str, drain: bool) -> Result<(), String> {
    let flag = if drain { "--drain" } else { "--down" };
    let by_addr = what.parse::<IpAddr>().ok();
    let mut matched = false;
    for svc in &snap.services {
        for e in &svc.endpoints {
            let region = e.region.map(|r| snap.regions[r].name.as_str());
            if Some(e.addr) == by_addr
                || (e.target.is_some() && e.label().eq_ignore_ascii_case(what))
                || region == Some(what)
            {
                if drain {
                    e.state.set_drained(true);
                } else {
                    e.state.set_healthy(false);
                }
                matched = true;
            }
        }
    }
    if matched {
        return Ok(());
    }
    // `X:SHARE`: a partial drain. An IPv6 address also has colons, so this is asked only once
    // the whole word matched nothing.
    if let Some((x, share)) = what.rsplit_once(':') {
        let share_ok = share.trim_end_matches('%').parse::<f64>().is_ok();
        if drain && share_ok && !x.is_empty() {
            return Err(format!(
                "--drain {what}: partial drains (X:SHARE) are not supported: meridian drains \
                 whole endpoints and regions; simulate `--drain {x}`, or a weight change with \
                 --new-config"
            ));
        }
    }
    Err(format!(
        "{flag} {what}: no endpoint address, target or region of that name"
    ))
}

/// Per service: answers per place in each run, and the places each network was answered from.
#[derive(Default)]
struct Tally {
    answers: [f64; 2],
    share: BTreeMap<String, [f64; 2]>,
    networks: BTreeMap<String, [BTreeSet<String>; 2]>,
    /// The endpoints each network was answered with.
    endpoints: BTreeMap<String, [BTreeSet<String>; 2]>,
}

/// What the two runs came to: the JSON of `--json`; the table is made from it.
fn compare(
    queries: &[Recorded],
    now: &[Option<Answer>],
    after: &[Option<Answer>],
) -> (BTreeMap<String, Tally>, usize) {
    let mut services: BTreeMap<String, Tally> = BTreeMap::new();
    let mut balanced = 0;
    for (i, q) in queries.iter().enumerate() {
        if now[i].is_none() && after[i].is_none() {
            continue;
        }
        balanced += 1;
        let network = network_of(q);
        for (run, answer) in [&now[i], &after[i]].into_iter().enumerate() {
            let Some(a) = answer else { continue };
            let t = services.entry(a.service.clone()).or_default();
            t.answers[run] += 1.0;
            let places: Vec<String> = if a.places.is_empty() {
                vec![if a.servfail {
                    "(servfail)"
                } else {
                    "(no address)"
                }
                .to_string()]
            } else {
                a.places.clone()
            };
            let part = 1.0 / places.len() as f64;
            for p in &places {
                t.share.entry(p.clone()).or_default()[run] += part;
            }
            t.networks.entry(network.clone()).or_default()[run].extend(places);
            t.endpoints.entry(network.clone()).or_default()[run].extend(a.endpoints.clone());
        }
    }
    (services, balanced)
}

fn pct(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        (part / whole * 1000.0).round() / 10.0
    } else {
        0.0
    }
}

/// The report as JSON: `{queries, balanced, change, services: [{name, answers, regions:
/// [{region, now, after, change}], networks, moved, moved_endpoint}]}`; shares and changes in
/// percent.
fn report_json(
    queries: usize,
    balanced: usize,
    change: &[String],
    services: &BTreeMap<String, Tally>,
) -> Value {
    let services: Vec<Value> = services
        .iter()
        .map(|(name, t)| {
            let regions: Vec<Value> = t
                .share
                .iter()
                .map(|(r, v)| {
                    let (now, after) = (pct(v[0], t.answers[0]), pct(v[1], t.answers[1]));
                    // The change from the unrounded shares: 66.7 − 33.3 is 33.3 here, not 33.4.
                    let raw = |i: usize| {
                        if t.answers[i] > 0.0 {
                            v[i] / t.answers[i] * 100.0
                        } else {
                            0.0
                        }
                    };
                    let change = ((raw(1) - raw(0)) * 10.0).round() / 10.0 + 0.0; // no "-0.0"
                    json!({"region": r, "now": now, "after": after, "change": change})
                })
                .collect();
            let moved = t.networks.values().filter(|[a, b]| a != b).count();
            let moved_endpoint = t.endpoints.values().filter(|[a, b]| a != b).count();
            json!({
                "name": name,
                "answers": {"now": t.answers[0] as u64, "after": t.answers[1] as u64},
                "regions": regions,
                "networks": t.networks.len(),
                "moved": moved,
                "moved_endpoint": moved_endpoint,
            })
        })
        .collect();
    json!({"queries": queries, "balanced": balanced, "change": change, "services": services})
}

fn report_text(v: &Value, source: &str, config: &str) -> String {
    let mut out = String::new();
    let n = v["queries"].as_u64().unwrap_or(0);
    let b = v["balanced"].as_u64().unwrap_or(0);
    out.push_str(&format!(
        "replayed {n} queries from {source}: {b} at balanced names, {} elsewhere (not shown)\n",
        n - b.min(n)
    ));
    out.push_str(&format!(
        "now:   {config}, every endpoint up, nothing drained\n"
    ));
    let change: Vec<&str> = v["change"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    out.push_str(&format!("after: {}\n", change.join(" ")));
    let empty = Vec::new();
    for s in v["services"].as_array().unwrap_or(&empty) {
        out.push('\n');
        out.push_str(&format!(
            "{:<24} {:<16} {:>7} {:>7} {:>7}\n",
            "service", "region", "now", "after", "change"
        ));
        let name = s["name"].as_str().unwrap_or("");
        for (i, r) in s["regions"].as_array().unwrap_or(&empty).iter().enumerate() {
            let (a, b, c) = (
                r["now"].as_f64().unwrap_or(0.0),
                r["after"].as_f64().unwrap_or(0.0),
                r["change"].as_f64().unwrap_or(0.0),
            );
            out.push_str(&format!(
                "{:<24} {:<16} {:>6.1}% {:>6.1}% {:>+7.1}\n",
                if i == 0 { name } else { "" },
                r["region"].as_str().unwrap_or(""),
                a,
                b,
                c
            ));
        }
        out.push_str(&format!(
            "{:<24} client networks that move: {} of {} to another region, {} to another endpoint\n",
            "",
            s["moved"].as_u64().unwrap_or(0),
            s["networks"].as_u64().unwrap_or(0),
            s["moved_endpoint"].as_u64().unwrap_or(0)
        ));
    }
    out
}

fn load(path: &Path) -> Result<Snapshot, i32> {
    Snapshot::load(path).map_err(|problems| {
        for p in &problems.0 {
            eprintln!("{p}");
        }
        EXIT_INVALID
    })
}

/// `meridian simulate`: exit 0 with the report, 1 for input that does not read.
pub fn main(args: Args) -> i32 {
    let (source, read) = match (&args.dnstap, &args.queries) {
        (Some(p), _) => (p, read_dnstap(p)),
        (None, Some(p)) => (p, read_queries(p)),
        (None, None) => {
            eprintln!("meridian simulate: give --dnstap FILE or --queries FILE");
            return EXIT_INVALID;
        }
    };
    let queries = match read {
        Ok(q) => q,
        Err(e) => {
            eprintln!("meridian simulate: {e}");
            return EXIT_INVALID;
        }
    };
    let now = match load(&args.config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let after = match load(args.new_config.as_deref().unwrap_or(&args.config)) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut change = Vec::new();
    if let Some(p) = &args.new_config {
        change.push(format!("--new-config {}", p.display()));
    }
    for (list, drain) in [(&args.down, false), (&args.drain, true)] {
        for x in list {
            if let Err(e) = apply(&after, x, drain) {
                eprintln!("meridian simulate: {e}");
                return EXIT_INVALID;
            }
            change.push(format!("{} {x}", if drain { "--drain" } else { "--down" }));
        }
    }
    if change.is_empty() {
        change.push("(no change given: both runs are the same)".into());
    }
    let a = run(&now, &queries);
    let b = run(&after, &queries);
    let (services, balanced) = compare(&queries, &a, &b);
    let v = report_json(queries.len(), balanced, &change, &services);
    let text = if args.json {
        format!("{v}\n")
    } else {
        report_text(
            &v,
            &source.display().to_string(),
            &args.config.display().to_string(),
        )
    };
    // A closed pipe (`meridian simulate … | head`) ends the output quietly, not with a panic.
    let mut out = io::stdout().lock();
    let _ =
        io::Write::write_all(&mut out, text.as_bytes()).and_then(|()| io::Write::flush(&mut out));
    EXIT_OK
}
